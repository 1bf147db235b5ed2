//! Live calls through the admin API: a RIPT call answered by the running gateway is listed
//! under `/api/v1/calls`, hung up by `DELETE`, leaves a CDR and is counted in `/metrics`.

use super::admin::http;
use super::metrics::{scrape, value};
use super::*;
use std::time::{Duration, Instant};

/// Polls `GET /api/v1/calls` until it lists `n` calls (the probe call's set-up is an event
/// in another process: there is nothing to await but the API itself).
fn calls_until(admin: std::net::SocketAddr, token: &str, n: usize) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = http(admin, "GET", "/api/v1/calls", Some(token), None);
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["items"].as_array().map(Vec::len) == Some(n) {
            return v;
        }
        assert!(Instant::now() < deadline, "never {n} live calls: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_live_call_is_listed_hung_up_through_the_api_and_leaves_a_cdr() {
    let r = start_with(&[("RIPT_INSTANCE_ID", "gw-live-test")]);
    let admin = r.admin.expect("no admin api line");
    let token = std::fs::read_to_string(r.dir.join("admin-token")).unwrap();
    let token = token.trim();
    calls_until(admin, token, 0);

    // A 60 s tone call the operator ends after it is up.
    let probe = Command::new(BIN)
        .args(["probe", "--root", &r.url, "--token", TOKEN, "--ca"])
        .arg(r.dir.join("ript-cert.pem"))
        .args(["--call", "+14085551000", "--seconds", "60"])
        .env("RIPT_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut probe = probe;
    let listed = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = http(admin, "GET", "/api/v1/calls", Some(token), None);
            assert_eq!(status, 200, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            // Listed from its arrival; the echo answers it at once.
            if v["items"].as_array().map(Vec::len) == Some(1)
                && v["items"][0]["state"] == "answered"
            {
                break v;
            }
            // A probe that gave up says why.
            if let Some(status) = probe.try_wait().unwrap() {
                let out = probe.wait_with_output().unwrap();
                panic!(
                    "the probe exited ({status}) before its call was listed: {body}\n{}\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(
                Instant::now() < deadline,
                "the probe's call never listed: {body}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let call = &listed["items"][0];
    assert_eq!(call["instance_id"], "gw-live-test", "{listed}");
    assert_eq!(call["state"], "answered", "{listed}");
    let ript_call = call["ript_call_id"].as_str().unwrap();
    assert!(ript_call.starts_with("https://"), "{listed}");
    let id = call["id"].as_str().unwrap();
    let (status, body) = http(
        admin,
        "GET",
        &format!("/api/v1/calls/{id}"),
        Some(token),
        None,
    );
    assert_eq!(status, 200, "{body}");
    // The snapshot's cookies are session credentials and stay out of the API.
    assert!(!body.contains("cookies"), "{body}");

    let (status, body) = http(
        admin,
        "DELETE",
        "/api/v1/calls/no-such-call",
        Some(token),
        None,
    );
    assert_eq!(status, 404, "{body}");
    let (status, body) = http(admin, "DELETE", &format!("/api/v1/calls/{id}"), None, None);
    assert_eq!(status, 401, "{body}");
    let (status, body) = http(
        admin,
        "DELETE",
        &format!("/api/v1/calls/{id}"),
        Some(token),
        None,
    );
    assert_eq!(status, 202, "{body}");

    // The probe learns of the end from the gateway: its call stops long before 60 s.
    let out = probe.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("the call ended"), "{err}");
    calls_until(admin, token, 0);

    let (status, body) = http(admin, "GET", "/api/v1/cdrs", Some(token), None);
    assert_eq!(status, 200, "{body}");
    let cdrs: serde_json::Value = serde_json::from_str(&body).unwrap();
    let items = cdrs["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{body}");
    let cdr = &items[0];
    assert_eq!(cdr["call_id"], id, "{body}");
    assert_eq!(cdr["ript_call_id"], ript_call, "{body}");
    assert_eq!(cdr["callee"], "+14085551000", "{body}");
    assert_eq!(cdr["ript_reason"], "end", "{body}");
    assert_eq!(cdr["ript_codec"], "PCMU", "{body}");
    assert!(cdr["answered_at"].as_i64().is_some(), "{body}");
    let chunks_in = cdr["media"]["ript_chunks_in"].as_u64().unwrap();
    assert!(chunks_in > 0, "{body}");

    let (status, text) = scrape(admin, token);
    assert_eq!(status, 200, "{text}");
    let series = |s: &str| value(&text, s).unwrap_or_else(|| panic!("no {s} in {text}"));
    assert_eq!(
        series(r#"gateway_calls_started_total{direction="ript_to_sip"}"#),
        1.0
    );
    assert_eq!(
        series(r#"gateway_calls_ended_total{direction="ript_to_sip",bucket="answered"}"#),
        1.0
    );
    assert_eq!(series("gateway_calls_active"), 0.0);
    assert_eq!(
        series(r#"gateway_call_setup_seconds_count{direction="ript_to_sip"}"#),
        1.0
    );
    assert_eq!(
        series(r#"gateway_media_packets_total{leg="ript",direction="in"}"#),
        chunks_in as f64
    );
}
