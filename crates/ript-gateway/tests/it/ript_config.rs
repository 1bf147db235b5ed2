//! RIPT configuration from the store: a hosted TG and a customer token made through the admin
//! API reach the running RIPT server without a restart, and customer TG registrations made
//! over RIPT are kept in the store across one.

use super::admin::http;
use super::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const HOSTED_TG: &str = r#"{"tenant":"acme","name":"acme-main","vouched_numbers":["+1408555*"],"destination_pattern":"+1*","advertisement":{"advertisement":"1 in: PCMU; 1 out: PCMU;"}}"#;

/// Creates the hosted TG and a token for it; returns the TG id and the token.
fn hosted_tg_with_token(admin: std::net::SocketAddr, admin_token: &str) -> (String, String) {
    let (status, body) = http(
        admin,
        "POST",
        "/api/v1/hosted-tgs",
        Some(admin_token),
        Some(HOSTED_TG),
    );
    assert_eq!(status, 201, "{body}");
    let tg: Value = serde_json::from_str(&body).unwrap();
    let id = tg["id"].as_str().unwrap().to_owned();
    let (status, body) = http(
        admin,
        "POST",
        &format!("/api/v1/hosted-tgs/{id}/credentials"),
        Some(admin_token),
        Some(r#"{"name":"acme-token","kind":"token"}"#),
    );
    assert_eq!(status, 201, "{body}");
    let issued: Value = serde_json::from_str(&body).unwrap();
    (id, issued["secret"].as_str().unwrap().to_owned())
}

/// Runs `probe` until it succeeds and its output contains `want` (the gateway reloads its
/// configuration on its own schedule; there is nothing to await but its answers).
fn probe_until(r: &Running, token: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out, err) = probe(r, token, &[]);
        if code == 0 && out.contains(want) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "probe never listed {want}: exit {code}\n{out}\n{err}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn hosted_tg_and_customer_token_from_the_admin_api_work_without_a_restart() {
    let r = start();
    let admin = r.admin.expect("no admin api line");
    let admin_token = std::fs::read_to_string(r.dir.join("admin-token")).unwrap();
    let (id, token) = hosted_tg_with_token(admin, admin_token.trim());

    let out = probe_until(&r, &token, &format!("/providertgs/{id}"));
    assert!(out.contains("trunk groups (1):"), "only its own TG: {out}");
    assert!(out.contains("acme-main"), "{out}");
    assert!(out.contains("destinations: +1*"), "{out}");
    assert!(
        out.contains("advertisement: 1 in: PCMU; 1 out: PCMU;"),
        "{out}"
    );

    // The static token keeps its echo TG and does not see the customer's.
    let (code, out, err) = probe(&r, TOKEN, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("/providertgs/default"), "{out}");
    assert!(!out.contains(&id), "{out}");

    // Issued tokens are URL-safe base64: one may start with '-' and is still a token.
    let (code, _, err) = probe(&r, "-not-an-issued-token-0123456789", &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("401"), "{err}");

    // Revoking the credential ends its access (after the next reload).
    let (status, body) = http(
        admin,
        "GET",
        "/api/v1/customer-credentials",
        Some(admin_token.trim()),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let cred = list["items"][0]["id"].as_str().unwrap().to_owned();
    let (status, body) = http(
        admin,
        "DELETE",
        &format!("/api/v1/customer-credentials/{cred}"),
        Some(admin_token.trim()),
        None,
    );
    assert_eq!(status, 204, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out, err) = probe(&r, &token, &[]);
        if code == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "revoked token still accepted: {out}\n{err}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn customer_tg_registrations_are_stored_and_survive_a_restart() {
    use ript_h3::client::{Client, ClientOptions};
    use ript_h3::tls::Trust;
    use ript_proto::model::{CustomerTg, DestinationPolicy};

    let mut first = start();
    let admin = first.admin.expect("no admin api line");
    let admin_token = std::fs::read_to_string(first.dir.join("admin-token")).unwrap();
    let admin_token = admin_token.trim().to_owned();
    let (id, token) = hosted_tg_with_token(admin, &admin_token);
    probe_until(&first, &token, &format!("/providertgs/{id}"));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let cert = std::fs::read(first.dir.join("ript-cert.pem")).unwrap();
    let client = |token: &str| {
        let mut o = ClientOptions::new(Trust::from_pem(&cert).unwrap(), token);
        o.request_timeout = Duration::from_secs(5);
        Client::new(o).unwrap()
    };
    let root = format!("{}{}", first.url, ript_proto::ROOT_PATH);
    let reg = CustomerTg {
        tg: "https://pbx.acme.test/.well-known/ript/v1/providertgs/in".into(),
        token: "acme-pbx-secret-42".into(),
        outbound: DestinationPolicy {
            destinations: "*".parse().unwrap(),
        },
        uri: None,
    };
    let c = client(&token);
    let (uri, ca_before) = rt.block_on(async {
        let created = c.register_customer_tg(&root, &reg).await.unwrap();
        let tg = c.tg(&format!("{root}/providertgs/{id}")).await.unwrap();
        (created.uri.unwrap(), tg.outbound.origins.unwrap())
    });
    let reg_id = uri.rsplit('/').next().unwrap().to_owned();

    // Kept in the tenant's hosted TG, token masked in the API.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored = loop {
        let (status, body) = http(
            admin,
            "GET",
            &format!("/api/v1/hosted-tgs/{id}"),
            Some(&admin_token),
            None,
        );
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["customer_tgs"].as_array().is_some_and(|a| !a.is_empty()) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "registration never stored: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        stored["customer_tgs"][0]["name"],
        reg_id.as_str(),
        "{stored}"
    );
    assert_eq!(
        stored["customer_tgs"][0]["url"],
        reg.tg.as_str(),
        "{stored}"
    );
    assert!(
        !stored.to_string().contains("acme-pbx-secret-42"),
        "{stored}"
    );

    let dir = first.dir.clone();
    first.keep_dir = true;
    drop(first);
    let second = start_in(dir, &[]);
    let root = format!("{}{}", second.url, ript_proto::ROOT_PATH);
    let c = client(&token);
    rt.block_on(async {
        // The TG is loaded before the server says it listens, with the CA it had.
        let tg = c.tg(&format!("{root}/providertgs/{id}")).await.unwrap();
        assert_eq!(tg.outbound.origins.as_deref(), Some(ca_before.as_str()));
        let uri = format!("{root}/customertgs/{reg_id}");
        let got = c.get_customer_tg(&uri).await.unwrap();
        assert_eq!(got.tg, reg.tg);
        assert_eq!(got.token, reg.token);
        // Removing it over RIPT removes it from the store.
        c.delete(&uri).await.unwrap();
    });
    let admin = second.admin.expect("no admin api line");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http(
            admin,
            "GET",
            &format!("/api/v1/hosted-tgs/{id}"),
            Some(&admin_token),
            None,
        );
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["customer_tgs"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "registration never removed: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
