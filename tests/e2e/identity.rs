//! Caller identity (ript-profile §8) across both gateways: the customer gateway enrols a
//! certificate for the PBX's caller number at the provider's TG and signs a PASSporT per
//! call; the provider verifies it and hands it to the SIP core as an RFC 8224 `Identity`
//! header with the caller as From user. Passports that are missing (on a TG requiring them),
//! forged, self-issued, stale or for another number are refused with 403 at call creation.

use super::*;
use ript_h3::client::{Client, ClientOptions};
use ript_h3::tls::Trust;
use ript_proto::model::{CallCreate, Handler};
use ript_proto::passport::{Claims, sign};
use serde_json::json;

const CALLER: &str = "+14085551000";
const CALLED: &str = "+14085552000";
/// What the core expects of the Identity header: a full-form PASSporT (three base64url
/// parts), `info` naming a certificate the provider issued, `alg=ES256` (a POSIX ERE inside
/// an XML attribute, hence the entities).
const ANY_IDENTITY_RE: &str = r"^ *[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+;info=&lt;https://[^&gt;]+/certs/[0-9a-f]+&gt;;alg=ES256";
/// The From user is the caller the passport names.
const FROM_RE: &str = r"sip:\+14085551000@";

fn strict_pair(core: u16, pbx: u16, hosted: serde_json::Value) -> Pair {
    Pair::start(Peers {
        pbx: SocketAddr::from(([127, 0, 0, 1], pbx)),
        core: SocketAddr::from(([127, 0, 0, 1], core)),
        hosted_extra: hosted,
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

/// A RIPT client of the provider's hosted TG with a credential of its own (the customer's
/// tenant), and that TG's URI.
fn direct_client(pair: &Pair) -> (Client, String) {
    let (status, cred) = pair.provider.api(
        "POST",
        &format!("/api/v1/hosted-tgs/{}/credentials", pair.hosted_tg),
        Some(&json!({"name": "identity-test", "kind": "token"})),
    );
    assert_eq!(status, 201, "{cred}");
    let trust = Trust::from_pem(pair.provider.cert_pem().as_bytes()).unwrap();
    let client = Client::new(ClientOptions::new(trust, cred["secret"].as_str().unwrap())).unwrap();
    let tg = format!(
        "{}{}/providertgs/{}",
        pair.provider.ript_url,
        ript_proto::ROOT_PATH,
        pair.hosted_tg
    );
    (client, tg)
}

fn now_s() -> u64 {
    ript_h3::wall_ms() / 1000
}

/// PBX → customer → provider (requiring passports) → core: the core sees a verified
/// Identity header and the caller as From user; both CDRs name the caller.
#[test]
fn the_core_sees_the_callers_identity() {
    let (core_port, pbx_port) = (free_port(), free_port());
    let pair = strict_pair(core_port, pbx_port, json!({"require_passport": true}));
    let core = core(
        "e2e_core_identity",
        vec![
            ("IDENTITY_RE", ANY_IDENTITY_RE.to_owned()),
            ("FROM_RE", FROM_RE.to_owned()),
        ],
        core_port,
    );
    let run = pbx("e2e_pbx_answered", &[], &pair.customer, pbx_port, CALLED);
    ok(core.join().unwrap(), "the core", &pair);
    ok(run, "the PBX", &pair);
    for gw in [&pair.customer, &pair.provider] {
        let c = &gw.cdrs(1)[0];
        assert_eq!(c["sip_status"], 200, "{}: {c}", gw.name);
        assert_eq!(c["caller"], CALLER, "{}: {c}", gw.name);
    }
    assert!(
        pair.customer.log().contains("caller certificate enrolled"),
        "{}",
        pair.customer.log()
    );
}

/// A caller number the provider does not vouch for gets no certificate; on a TG requiring
/// passports its call is then refused with 403, which reaches the PBX as 403.
#[test]
fn an_unvouched_caller_on_a_strict_tg_is_403() {
    let (core_port, pbx_port) = (free_port(), free_port());
    let pair = strict_pair(
        core_port,
        pbx_port,
        json!({"require_passport": true, "vouched_numbers": ["+1212555*"]}),
    );
    let run = pbx(
        "e2e_pbx_final",
        &[("STATUS", "403")],
        &pair.customer,
        pbx_port,
        CALLED,
    );
    ok(run, "the PBX", &pair);
    let c = &pair.customer.cdrs(1)[0];
    assert_eq!(c["sip_status"], 403, "customer: {c}");
    assert!(
        pair.customer.log().contains("no caller certificate"),
        "{}",
        pair.customer.log()
    );
}

/// The PBX already signed: its INVITE carries a valid Identity header (a certificate the
/// provider issued, the right caller and destination). The customer gateway passes that
/// very PASSporT on instead of signing its own, and the core receives it unchanged.
#[test]
fn a_valid_identity_from_the_pbx_travels_through() {
    let (core_port, pbx_port) = (free_port(), free_port());
    let pair = strict_pair(core_port, pbx_port, json!({"require_passport": true}));
    let (client, tg) = direct_client(&pair);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (key, csr) = ript_h3::ca::make_csr(&[CALLER]).unwrap();
    let (x5u, _) = rt.block_on(client.enroll_cert(&tg, &csr)).unwrap();
    let claims = Claims::new(
        CALLER,
        CALLED,
        now_s(),
        "7f4f1c56-1d3b-4a52-9f0e-000000000001",
    );
    let jws = sign(&claims, &x5u, &key);
    let header = format!("{jws};info=<{x5u}>;alg=ES256");
    let exact = format!(
        "^ *{};info=&lt;{}&gt;;alg=ES256",
        jws.replace('.', r"\."),
        x5u.replace('.', r"\.")
    );
    let core = core(
        "e2e_core_identity",
        vec![("IDENTITY_RE", exact), ("FROM_RE", FROM_RE.to_owned())],
        core_port,
    );
    let run = pbx(
        "e2e_pbx_identity",
        &[("IDENTITY", &header)],
        &pair.customer,
        pbx_port,
        CALLED,
    );
    ok(core.join().unwrap(), "the core", &pair);
    ok(run, "the PBX", &pair);
    let log = pair.customer.log();
    assert!(log.contains("Identity travels on as the passport"), "{log}");
    assert!(!log.contains("caller certificate enrolled"), "{log}");
}

/// Call creations straight at the provider's TG (which requires passports): every bad
/// passport is refused with 403 and says why.
#[test]
fn forged_stale_and_missing_passports_are_refused_403() {
    let pair = strict_pair(free_port(), free_port(), json!({"require_passport": true}));
    let (client, tg) = direct_client(&pair);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let handler = client
            .register_handler(
                &tg,
                &Handler {
                    handler_id: "identity-test".into(),
                    advertisement: "1 in: PCMU; 1 out: PCMU;".into(),
                    uri: None,
                },
            )
            .await
            .unwrap()
            .uri
            .unwrap();
        // A genuine certificate for the caller, issued by the provider.
        let (key, csr) = ript_h3::ca::make_csr(&[CALLER]).unwrap();
        let (x5u, _) = client.enroll_cert(&tg, &csr).await.unwrap();
        // A fresh key the provider never certified; a CA of our own certifying it.
        let (fresh_key, fresh_csr) = ript_h3::ca::make_csr(&[CALLER]).unwrap();
        let own_ca = ript_h3::ca::CertAuthority::generate("not the provider").unwrap();
        let own = own_ca
            .issue(fresh_csr.as_bytes(), |_| true, std::time::SystemTime::now())
            .unwrap();
        let own_x5u = format!("{tg}/certs/{}", own.id);
        let claims = |orig: &str, iat: u64| Claims::new(orig, CALLED, iat, "origid-e2e");
        let now = now_s();
        let cases: Vec<(&str, Option<String>, &str)> = vec![
            ("missing", None, "passport"),
            (
                "forged: signed by a key the certificate does not hold",
                Some(sign(&claims(CALLER, now), &x5u, &fresh_key)),
                "signature",
            ),
            (
                "self-issued: a certificate the provider never issued",
                Some(sign(&claims(CALLER, now), &own_x5u, &fresh_key)),
                "trust anchor",
            ),
            (
                "stale: iat two minutes ago",
                Some(sign(&claims(CALLER, now - 120), &x5u, &key)),
                "iat",
            ),
            (
                "another caller than the certificate's",
                Some(sign(&claims("+14085551001", now), &x5u, &key)),
                "tnauthlist",
            ),
            ("not a JWS", Some("a.b.c".into()), "passport"),
        ];
        for (what, passport, why) in cases {
            let create = CallCreate {
                handler: handler.clone(),
                destination: CALLED.into(),
                passport,
            };
            let e = client.create_call(&tg, &create).await.unwrap_err();
            assert_eq!(e.status(), Some(403), "{what}: {e}");
            assert!(
                e.to_string().to_ascii_lowercase().contains(why),
                "{what}: {e}"
            );
        }
    });
    // None of them became a call.
    assert!(
        !pair.provider.log().contains("call created"),
        "{}",
        pair.provider.log()
    );
}
