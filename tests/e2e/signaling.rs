//! Call outcomes across both gateways with SIPp as the PBX and the SIP core: each status
//! reaches the far side mapped through RIPT (ript-profile §5), and each side writes its CDR.

use super::*;
use serde_json::json;

fn pair(core: u16, pbx: u16, pbx_extra: serde_json::Value) -> Pair {
    Pair::start(Peers {
        pbx: SocketAddr::from(([127, 0, 0, 1], pbx)),
        core: SocketAddr::from(([127, 0, 0, 1], core)),
        pbx_extra,
        ..Peers::default()
    })
}

#[track_caller]
fn ok(run: (bool, String), who: &str, pair: &Pair) {
    assert!(
        run.0,
        "{who} failed: {}\n--- customer ---\n{}\n--- provider ---\n{}",
        run.1,
        pair.customer.log(),
        pair.provider.log()
    );
}

/// The core refuses with `status`; the PBX must see `expect`, and both CDRs say so.
fn refused_by_core(status: u16, phrase: &str, expect: u16) {
    let (core_port, pbx_port) = (free_port(), free_port());
    let pair = pair(core_port, pbx_port, json!({}));
    let core = core(
        "e2e_core_reject",
        vec![
            ("STATUS", status.to_string()),
            ("PHRASE", phrase.to_owned()),
            ("PAUSE", "300".into()),
        ],
        core_port,
    );
    let run = pbx(
        "e2e_pbx_final",
        &[("STATUS", &expect.to_string())],
        &pair.customer,
        pbx_port,
        "+14085552000",
    );
    ok(run, "the PBX", &pair);
    ok(core.join().unwrap(), "the core", &pair);
    let c = &pair.customer.cdrs(1)[0];
    assert_eq!(c["sip_status"], expect, "customer: {c}");
    assert!(c["answered_at"].is_null(), "customer: {c}");
    let p = &pair.provider.cdrs(1)[0];
    assert_eq!(p["sip_status"], status, "provider: {p}");
    assert!(
        p["ript_reason"]
            .as_str()
            .unwrap_or("")
            .contains(&status.to_string()),
        "provider: {p}"
    );
}

#[test]
fn busy_486_is_declined_and_486_again() {
    refused_by_core(486, "Busy Here", 486);
}

#[test]
fn no_answer_480_is_noanswer_and_480_again() {
    refused_by_core(480, "Temporarily Unavailable", 480);
}

#[test]
fn cancel_before_answer_reaches_the_core() {
    let (core_port, pbx_port) = (free_port(), free_port());
    let pair = pair(core_port, pbx_port, json!({}));
    let core = core("uas_cancel", vec![], core_port);
    let run = pbx(
        "e2e_pbx_cancel",
        &[],
        &pair.customer,
        pbx_port,
        "+14085552000",
    );
    ok(run, "the PBX", &pair);
    ok(core.join().unwrap(), "the core", &pair);
    let c = &pair.customer.cdrs(1)[0];
    assert_eq!(c["sip_status"], 487, "customer: {c}");
    let p = &pair.provider.cdrs(1)[0];
    assert_eq!(p["sip_status"], 487, "provider: {p}");
}

#[test]
fn bye_from_the_core_ends_the_pbx_call() {
    let (core_port, pbx_port) = (free_port(), free_port());
    let pair = pair(core_port, pbx_port, json!({}));
    let core = core("e2e_core_answer_bye", vec![], core_port);
    let run = pbx(
        "e2e_pbx_answered",
        &[],
        &pair.customer,
        pbx_port,
        "+14085552000",
    );
    ok(core.join().unwrap(), "the core", &pair);
    ok(run, "the PBX", &pair);
    for gw in [&pair.customer, &pair.provider] {
        let c = &gw.cdrs(1)[0];
        assert_eq!(c["sip_status"], 200, "{}: {c}", gw.name);
        assert!(c["answered_at"].is_i64(), "{}: {c}", gw.name);
    }
}

#[test]
fn a_number_without_a_route_is_404_at_either_gateway() {
    let (core_port, pbx_port) = (free_port(), free_port());
    let pair = pair(core_port, pbx_port, json!({}));
    // No route at the customer gateway (+44 is not +1*).
    let run = pbx(
        "e2e_pbx_final",
        &[("STATUS", "404")],
        &pair.customer,
        pbx_port,
        "+442079460000",
    );
    ok(run, "the PBX", &pair);
    // Routed by the customer, but the provider routes only +1408 to its core.
    let run = pbx(
        "e2e_pbx_final",
        &[("STATUS", "404")],
        &pair.customer,
        pbx_port,
        "+12125550000",
    );
    ok(run, "the PBX", &pair);
    // The provider refused the call creation itself (ript-profile §2: 404), and says so.
    let p = &pair.provider.cdrs(1)[0];
    assert_eq!(p["sip_status"], 404, "provider: {p}");
    assert_eq!(p["callee"], "+12125550000", "provider: {p}");
    let c = pair.customer.cdrs(2);
    assert_eq!(
        (c[0]["sip_status"].clone(), c[1]["sip_status"].clone()),
        (json!(404), json!(404))
    );
}

#[test]
fn a_caller_from_an_unlisted_address_is_403() {
    let (core_port, pbx_port) = (free_port(), free_port());
    let pair = pair(core_port, pbx_port, json!({"allow_list": ["127.0.0.1/32"]}));
    let run = sipp(
        "e2e_pbx_final",
        &[("STATUS", "403")],
        &[
            pair.customer.sip_udp.to_string(),
            "-i".into(),
            "127.0.0.2".into(),
            "-p".into(),
            pbx_port.to_string(),
            "-s".into(),
            "+14085552000".into(),
        ],
    );
    ok(run, "the PBX on 127.0.0.2", &pair);
}

#[test]
fn a_wrong_digest_password_is_challenged_again() {
    let (core_port, pbx_port) = (free_port(), free_port());
    let pair = pair(
        core_port,
        pbx_port,
        json!({
            "allow_list": ["127.0.0.9/32"],
            "inbound_auth": {"username": "pbx", "password": "right-password-1"},
        }),
    );
    let run = pbx(
        "e2e_pbx_auth",
        &[("STATUS", "401"), ("PASSWORD", "wrong-password")],
        &pair.customer,
        pbx_port,
        "+14085552000",
    );
    ok(run, "the PBX with a wrong password", &pair);
    // The right password gets through to the core, which is busy.
    let core = core(
        "e2e_core_reject",
        vec![
            ("STATUS", "486".into()),
            ("PHRASE", "Busy Here".into()),
            ("PAUSE", "0".into()),
        ],
        core_port,
    );
    let run = pbx(
        "e2e_pbx_auth",
        &[("STATUS", "486"), ("PASSWORD", "right-password-1")],
        &pair.customer,
        pbx_port,
        "+14085552000",
    );
    ok(run, "the PBX with the right password", &pair);
    ok(core.join().unwrap(), "the core", &pair);
}

#[test]
fn calls_beyond_the_cps_cap_get_503() {
    let (core_port, pbx_port) = (free_port(), free_port());
    let pair = pair(core_port, pbx_port, json!({"max_cps": 1}));
    let core = core(
        "e2e_core_reject",
        vec![
            ("STATUS", "486".into()),
            ("PHRASE", "Busy Here".into()),
            ("PAUSE", "0".into()),
        ],
        core_port,
    );
    let first = pbx(
        "e2e_pbx_final",
        &[("STATUS", "486")],
        &pair.customer,
        pbx_port,
        "+14085552000",
    );
    // Within the same second: over the cap.
    let second = pbx(
        "e2e_pbx_final",
        &[("STATUS", "503")],
        &pair.customer,
        pbx_port,
        "+14085552000",
    );
    ok(first, "the first call", &pair);
    ok(second, "the second call", &pair);
    ok(core.join().unwrap(), "the core", &pair);
    let cdrs = pair.customer.cdrs(2);
    assert_eq!(cdrs[0]["sip_status"], 503, "{cdrs:?}");
}

#[test]
fn early_media_from_the_core_reaches_the_pbx_as_183() {
    let (core_port, pbx_port) = (free_port(), free_port());
    let pair = pair(core_port, pbx_port, json!({}));
    // 3 s of a 440 Hz tone in raw µ-law, SIPp's rtp_stream format for payload type 0.
    let dir = scratch("early-media");
    let file = dir.join("tone.ulaw");
    let tone: Vec<u8> = (0..24_000)
        .map(|k| {
            let x = 8000.0 * (2.0 * std::f64::consts::PI * 440.0 * f64::from(k) / 8000.0).sin();
            media_proto::g711::linear_to_ulaw(x as i16)
        })
        .collect();
    std::fs::write(&file, tone).unwrap();
    let core = core(
        "e2e_core_early",
        vec![("FILE", file.display().to_string())],
        core_port,
    );
    let run = pbx(
        "e2e_pbx_early",
        &[],
        &pair.customer,
        pbx_port,
        "+14085552000",
    );
    ok(core.join().unwrap(), "the core", &pair);
    ok(run, "the PBX", &pair);
    for gw in [&pair.customer, &pair.provider] {
        let c = &gw.cdrs(1)[0];
        assert_eq!(c["sip_status"], 200, "{}: {c}", gw.name);
    }
    // The early media crossed RIPT: chunks reached the customer before the answer.
    let c = &pair.customer.cdrs(1)[0];
    assert!(c["media"]["ript_chunks_in"].as_u64().unwrap() > 50, "{c}");
    let _ = std::fs::remove_dir_all(dir);
}
