//! Calls from the PBX to the SIP core through both gateways.

use super::*;
use std::time::Duration;

const PBX_HZ: f64 = 1000.0;
const CORE_HZ: f64 = 440.0;

/// baresip (PBX, playing 1 kHz) calls baresip (SIP core, playing 440 Hz); after a few
/// seconds the PBX hangs up. Each side must have decoded the other's tone.
fn two_way_tone(media_mode: &'static str) {
    two_way_tone_with(media_mode, |_| {});
}

/// [`two_way_tone`], running `meanwhile` (other calls) while the call is up.
fn two_way_tone_with(media_mode: &'static str, meanwhile: impl FnOnce(&Pair)) {
    let pbx_port = free_port();
    let mut core = Baresip::start("core", "+14085552000", CORE_HZ, free_port());
    let pair = Pair::start(Peers {
        pbx: SocketAddr::from(([127, 0, 0, 1], pbx_port)),
        core: core.sip,
        media_mode,
        ..Peers::default()
    });
    let mut pbx = Baresip::start("pbx", "+14085551000", PBX_HZ, pbx_port);
    pbx.command(
        "dial",
        &format!("sip:+14085552000@{}", pair.customer.sip_udp),
    );
    pbx.wait_for("Call established", Duration::from_secs(15));
    core.wait_for("Call established", Duration::from_secs(5));
    // An RFC 4733 digit from the PBX reaches the core as RFC 4733 (a telephone-event chunk
    // in between), while three seconds of audio flow each way.
    std::thread::sleep(Duration::from_millis(1500));
    pbx.command("sndcode", "7");
    let digit = core.wait_event("CALL_DTMF_START", Duration::from_secs(5));
    assert_eq!(digit["param"], "7", "{digit}");
    meanwhile(&pair);
    std::thread::sleep(Duration::from_millis(1500));
    pbx.command("hangup", "");
    let (rate, at_core) = core.decoded();
    let (rate_pbx, at_pbx) = pbx.decoded();

    let heard_core = voiced(&at_core);
    assert!(
        heard_core.len() > rate as usize,
        "the core decoded {} loud samples",
        heard_core.len()
    );
    let share = tone_share(&heard_core, PBX_HZ, f64::from(rate));
    assert!(
        share > 0.8,
        "the PBX's 1 kHz holds {share:.2} at the core (440 Hz: {:.2}, {} audible of {})",
        tone_share(&heard_core, CORE_HZ, f64::from(rate)),
        heard_core.len(),
        at_core.len()
    );
    let heard_pbx = voiced(&at_pbx);
    assert!(
        heard_pbx.len() > rate_pbx as usize,
        "the PBX decoded {} loud samples",
        heard_pbx.len()
    );
    let share = tone_share(&heard_pbx, CORE_HZ, f64::from(rate_pbx));
    assert!(share > 0.8, "the core's 440 Hz holds {share:.2} at the PBX");

    // The media path the customer's RIPT client took (its call task logs it).
    let path = if media_mode == "byways" {
        "MediaPath(Byways)"
    } else {
        "MediaPath(Datagrams)"
    };
    assert!(
        pair.customer.log().contains(path),
        "no {path} in the customer's log"
    );
    for gw in [&pair.customer, &pair.provider] {
        // The tone call's CDR (other calls may have come and gone meanwhile).
        let cdr = &gw.cdr_where("of the tone call", |c| {
            c["callee"] == "+14085552000" && c["answered_at"].is_i64()
        });
        assert_eq!(cdr["sip_status"], 200, "{}: {cdr}", gw.name);
        assert!(cdr["answered_at"].is_i64(), "{}: {cdr}", gw.name);
        assert_eq!(cdr["ript_codec"], "PCMU", "{}: {cdr}", gw.name);
        assert!(
            cdr["media"]["ript_chunks_in"].as_u64().unwrap() > 100,
            "{}: {cdr}",
            gw.name
        );
        assert!(
            cdr["media"]["ript_chunks_out"].as_u64().unwrap() > 100,
            "{}: {cdr}",
            gw.name
        );
    }
}

#[test]
fn pbx_to_core_two_way_audio_over_datagrams() {
    two_way_tone("datagrams");
}

#[test]
fn pbx_to_core_two_way_audio_over_byways() {
    two_way_tone("byways");
}

/// SIPp (the PBX) sends digit 5 as SIP INFO; baresip (the SIP core) receives it as RFC 4733
/// telephone-events, then hangs up: the BYE reaches the PBX.
#[test]
fn an_info_digit_arrives_as_rfc4733() {
    let pbx_port = free_port();
    let mut core = Baresip::start("core", "+14085552000", CORE_HZ, free_port());
    let pair = Pair::start(Peers {
        pbx: SocketAddr::from(([127, 0, 0, 1], pbx_port)),
        core: core.sip,
        pbx_dtmf: "info",
        ..Peers::default()
    });
    let customer = pair.customer.sip_udp;
    let run = std::thread::spawn(move || {
        let gw_fake = customer;
        sipp(
            "e2e_pbx_answered",
            &[],
            &[
                gw_fake.to_string(),
                "-p".into(),
                pbx_port.to_string(),
                "-s".into(),
                "+14085552000".into(),
            ],
        )
    });
    let digit = core.wait_event("CALL_DTMF_START", Duration::from_secs(15));
    assert_eq!(digit["param"], "5", "{digit}");
    core.command("hangup", "");
    let (ok, log) = run.join().unwrap();
    assert!(ok, "the PBX: {log}\n{}", pair.customer.log());
}

/// The PBX holds and resumes by re-INVITE and refreshes the session by UPDATE: each answered
/// by the customer gateway (hold is local to the SIP leg's media; the refresh stays local to
/// the SIP leg), the call goes on to a normal BYE at the core.
#[test]
fn hold_resume_and_session_refresh_from_the_pbx() {
    let pbx_port = free_port();
    let mut core = Baresip::start("core", "+14085552000", CORE_HZ, free_port());
    let pair = Pair::start(Peers {
        pbx: SocketAddr::from(([127, 0, 0, 1], pbx_port)),
        core: core.sip,
        ..Peers::default()
    });
    let (ok, log) = pbx(
        "e2e_pbx_hold",
        &[],
        &pair.customer,
        pbx_port,
        "+14085552000",
    );
    assert!(ok, "the PBX: {log}\n{}", pair.customer.log());
    core.wait_event("CALL_CLOSED", Duration::from_secs(10));
    for gw in [&pair.customer, &pair.provider] {
        let c = &gw.cdrs(1)[0];
        assert_eq!(c["sip_status"], 200, "{}: {c}", gw.name);
        assert!(c["answered_at"].is_i64(), "{}: {c}", gw.name);
    }
}

/// Refusals (an unlisted address: 403; an unknown number: 404) while a call is up leave that
/// call untouched: its audio and digits still flow both ways and it ends normally.
#[test]
fn refusals_leave_a_call_in_progress_untouched() {
    two_way_tone_with("datagrams", |pair| {
        let port = free_port().to_string();
        let gw = pair.customer.sip_udp.to_string();
        let (ok, log) = sipp(
            "e2e_pbx_final",
            &[("STATUS", "403")],
            &[
                gw.clone(),
                "-i".into(),
                "127.0.0.2".into(),
                "-p".into(),
                port.clone(),
                "-s".into(),
                "+14085552000".into(),
            ],
        );
        assert!(ok, "403: {log}");
        let (ok, log) = sipp(
            "e2e_pbx_final",
            &[("STATUS", "404")],
            &[gw, "-p".into(), port, "-s".into(), "+442079460000".into()],
        );
        assert!(ok, "404: {log}");
    });
}
