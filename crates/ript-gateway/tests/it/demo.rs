//! `ript-gateway demo`: the newcomer's one command must work.

use super::*;

#[test]
fn the_demo_calls_through_two_gateways_and_detects_tones_and_digits() {
    let out = Command::new(BIN)
        .arg("demo")
        .env_remove("DATABASE_URL")
        .env_remove("RIPT_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    // The detections, and a ladder with both protocols on both gateways.
    assert!(stdout.contains("digits \"123\""), "{stdout}");
    assert!(
        percent(&stdout, "% of its audio at 1 kHz") >= 90,
        "{stdout}"
    );
    assert!(
        percent(&stdout, "% of its audio at 440 Hz") >= 90,
        "{stdout}"
    );
    for line in [
        "customer | SIP  <- INVITE",
        "provider | RIPT <- /providertgs/{tg}/calls 201",
        "provider | RIPT -> event answered",
        "customer | RIPT -> event end",
        "core | SIP  <- BYE",
    ] {
        assert!(stdout.contains(line), "no {line:?} in\n{stdout}");
    }
    assert!(stdout.contains("ok: tones heard both ways"), "{stdout}");
    // Quiet by default: the gateways log nothing at warn level on a good run.
    assert!(!stderr.contains("WARN"), "{stderr}");
}

/// The number printed right before `what` (`…, 99 % of its audio at 1 kHz`).
fn percent(out: &str, what: &str) -> u32 {
    let at = out
        .find(what)
        .unwrap_or_else(|| panic!("no {what:?} in {out}"));
    out[..at]
        .trim_end()
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
