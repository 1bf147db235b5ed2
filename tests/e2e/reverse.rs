//! Calls from the SIP core to the PBX: SIP core → provider gateway → RIPT → the customer TG
//! the customer gateway registered with the provider (`POST /customertgs` on start-up) →
//! customer gateway → PBX.

use super::*;
use std::time::Duration;

const PBX_HZ: f64 = 1000.0;
const CORE_HZ: f64 = 440.0;

/// baresip (SIP core, playing 440 Hz) calls baresip (PBX, playing 1 kHz, auto-answering)
/// through the provider and the customer's registered customer TG; after a few seconds the
/// core hangs up. Each side must have decoded the other's tone, and both gateways keep a CDR.
#[test]
fn core_to_pbx_two_way_audio_through_the_registered_customer_tg() {
    core_to_pbx(true);
}

/// The same over media byways: the customer's RIPT server offers no datagrams.
#[test]
fn core_to_pbx_two_way_audio_over_byways() {
    core_to_pbx(false);
}

fn core_to_pbx(customer_datagrams: bool) {
    // Both started first: a port kept free for later can be taken by the gateways' sockets.
    let mut pbx = Baresip::start("pbx", "+14085551000", PBX_HZ, free_port());
    let mut core = Baresip::start("core", "+14085552000", CORE_HZ, free_port());
    let pair = Pair::start(Peers {
        pbx: pbx.sip,
        core: core.sip,
        customer_datagrams,
        ..Peers::default()
    });
    let inbound = pair.reverse();
    core.command(
        "dial",
        &format!("sip:+14085551000@{}", pair.provider.sip_udp),
    );
    core.wait_for("Call established", Duration::from_secs(15));
    // The caller's number arrives (a passport signed with a certificate the customer's TG
    // issued to the provider, then the From user).
    let answered = pbx.wait_for("answering call", Duration::from_secs(5));
    assert!(answered.contains("from sip:+14085552000@"), "{answered}");
    pbx.wait_for("Call established", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(3));
    core.command("hangup", "");
    let (rate, at_pbx) = pbx.decoded();
    let (rate_core, at_core) = core.decoded();

    let heard_pbx = voiced(&at_pbx);
    assert!(
        heard_pbx.len() > rate as usize,
        "the PBX decoded {} loud samples",
        heard_pbx.len()
    );
    let share = tone_share(&heard_pbx, CORE_HZ, f64::from(rate));
    assert!(
        share > 0.8,
        "the core's 440 Hz holds {share:.2} at the PBX (1 kHz: {:.2}, {} audible of {})",
        tone_share(&heard_pbx, PBX_HZ, f64::from(rate)),
        heard_pbx.len(),
        at_pbx.len()
    );
    let heard_core = voiced(&at_core);
    assert!(
        heard_core.len() > rate_core as usize,
        "the core decoded {} loud samples",
        heard_core.len()
    );
    let share = tone_share(&heard_core, PBX_HZ, f64::from(rate_core));
    assert!(share > 0.8, "the PBX's 1 kHz holds {share:.2} at the core");

    // The media path the provider's RIPT client took (its call task logs it).
    let path = if customer_datagrams {
        "MediaPath(Datagrams)"
    } else {
        "MediaPath(Byways)"
    };
    assert!(
        pair.provider.log().contains(path),
        "no {path} in the provider's log"
    );
    // The provider: from the core peer toward the customer's hosted TG (its customer TG).
    let cdrs = pair.provider.cdrs(1);
    let cdr = &cdrs[0];
    assert_eq!(cdr["source"]["kind"], "sip_peer", "{cdr}");
    assert_eq!(cdr["source"]["id"], pair.core_peer.as_str(), "{cdr}");
    assert_eq!(cdr["target"]["kind"], "hosted_tg", "{cdr}");
    assert_eq!(cdr["target"]["id"], pair.hosted_tg.as_str(), "{cdr}");
    // The customer: from its hosted TG (the provider's calls) toward the PBX.
    let cdrs = pair.customer.cdrs(1);
    let cdr = &cdrs[0];
    assert_eq!(cdr["source"]["kind"], "hosted_tg", "{cdr}");
    assert_eq!(cdr["source"]["id"], inbound.as_str(), "{cdr}");
    assert_eq!(cdr["target"]["kind"], "sip_peer", "{cdr}");
    assert_eq!(cdr["target"]["id"], pair.pbx_peer.as_str(), "{cdr}");
    for gw in [&pair.customer, &pair.provider] {
        let cdrs = gw.cdrs(1);
        let cdr = &cdrs[0];
        assert_eq!(cdr["caller"], "+14085552000", "{}: {cdr}", gw.name);
        assert_eq!(cdr["callee"], "+14085551000", "{}: {cdr}", gw.name);
        assert_eq!(cdr["sip_status"], 200, "{}: {cdr}", gw.name);
        assert!(cdr["answered_at"].is_i64(), "{}: {cdr}", gw.name);
        assert_eq!(cdr["ript_codec"], "PCMU", "{}: {cdr}", gw.name);
        for counter in ["ript_chunks_in", "ript_chunks_out"] {
            assert!(
                cdr["media"][counter].as_u64().unwrap() > 100,
                "{}: {cdr}",
                gw.name
            );
        }
    }
}

/// The customer gateway restarts (its RIPT server comes back on another port): it replaces
/// its registration at the provider (`PUT` to the URI it recorded) rather than adding a
/// second one, and the provider's next call reaches the PBX through the new URL.
#[test]
fn a_restarted_customer_replaces_its_registration() {
    let mut pbx = Baresip::start("pbx", "+14085551000", PBX_HZ, free_port());
    let mut core = Baresip::start("core", "+14085552000", CORE_HZ, free_port());
    let mut pair = Pair::start(Peers {
        pbx: pbx.sip,
        core: core.sip,
        ..Peers::default()
    });
    let inbound = pair.reverse();
    // From here on the provider's configuration changes only by the registration.
    let reloads = "gateway_config_reloads_total";
    let before = pair.provider.metric(reloads).unwrap();
    let old_url = pair.customer.ript_url.clone();
    pair.customer.restart();
    assert_ne!(pair.customer.ript_url, old_url);
    let path = format!("/api/v1/hosted-tgs/{}", pair.hosted_tg);
    let want = format!(
        "{}{}/providertgs/{inbound}",
        pair.customer.ript_url,
        ript_proto::ROOT_PATH
    );
    let mut seen = serde_json::Value::Null;
    let replaced = within(Duration::from_secs(15), || {
        let (_, tg) = pair.provider.api("GET", &path, None);
        seen = tg["customer_tgs"].clone();
        seen.as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["url"] == want.as_str())
    });
    assert!(
        replaced,
        "customer tgs at the provider: {seen}, want one at {want}\n{}",
        pair.customer.log()
    );
    assert!(
        within(Duration::from_secs(10), || {
            pair.provider.metric(reloads).is_some_and(|n| n > before)
        }),
        "the provider never reloaded the registration"
    );

    core.command(
        "dial",
        &format!("sip:+14085551000@{}", pair.provider.sip_udp),
    );
    core.wait_for("Call established", Duration::from_secs(15));
    pbx.wait_for("Call established", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(1));
    core.command("hangup", "");
    let cdrs = pair.customer.cdrs(1);
    let cdr = &cdrs[0];
    assert_eq!(cdr["source"]["id"], inbound.as_str(), "{cdr}");
    assert_eq!(cdr["sip_status"], 200, "{cdr}");
    assert!(cdr["answered_at"].is_i64(), "{cdr}");
}

/// The provider's operator lists a customer TG the customer refuses (a wrong token) before
/// the registered one: the call creation it refuses fails over to the next customer TG.
#[test]
fn a_refusing_customer_tg_fails_over_to_the_next() {
    let mut pbx = Baresip::start("pbx", "+14085551000", PBX_HZ, free_port());
    let mut core = Baresip::start("core", "+14085552000", CORE_HZ, free_port());
    let pair = Pair::start(Peers {
        pbx: pbx.sip,
        core: core.sip,
        ..Peers::default()
    });
    let inbound = pair.reverse();
    let reloads = "gateway_config_reloads_total";
    let before = pair.provider.metric(reloads).unwrap();
    let path = format!("/api/v1/hosted-tgs/{}", pair.hosted_tg);
    let (status, mut tg) = pair.provider.api("GET", &path, None);
    assert_eq!(status, 200, "{tg}");
    let registered = tg["customer_tgs"][0].clone();
    // The registered entry keeps its token ("***"); the stale one comes first.
    tg["customer_tgs"] = serde_json::json!([
        {"name": "stale", "url": registered["url"], "token": "not-the-customers-token"},
        registered,
    ]);
    let (status, v) = pair.provider.api("PUT", &path, Some(&tg));
    assert_eq!(status, 200, "{v}");
    assert!(
        within(Duration::from_secs(10), || {
            pair.provider.metric(reloads).is_some_and(|n| n > before)
        }),
        "the provider never reloaded its hosted tg"
    );

    core.command(
        "dial",
        &format!("sip:+14085551000@{}", pair.provider.sip_udp),
    );
    core.wait_for("Call established", Duration::from_secs(15));
    pbx.wait_for("Call established", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(1));
    core.command("hangup", "");
    let log = pair.provider.log();
    assert!(
        log.contains("tg=stale") && log.contains("trying the next"),
        "{log}"
    );
    let cdrs = pair.customer.cdrs(1);
    assert_eq!(cdrs[0]["source"]["id"], inbound.as_str(), "{}", cdrs[0]);
    assert_eq!(cdrs[0]["sip_status"], 200, "{}", cdrs[0]);
}
