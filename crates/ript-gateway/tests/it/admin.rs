//! The admin API of a running gateway: closed without the token, and configuration created
//! through it survives a restart (SQLite under the data directory, the embedded default).

use super::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One HTTP/1.1 request (connection closed after it): the status and the body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {out}"));
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

const PEER: &str = r#"{"name":"pbx-main","transport":"udp","addresses":["127.0.0.1:5070"],"allow_list":["127.0.0.1/32"],"inbound_auth":{"username":"pbx","password":"pbx-secret-9f"},"registration":"none","dtmf":"rfc4733","codecs":["PCMU","PCMA"],"srtp":"off","max_cps":10,"max_concurrent":100,"options_interval_s":30}"#;

#[test]
fn configuration_made_through_the_admin_api_survives_a_restart() {
    let mut first = start();
    let admin = first.admin.expect("no admin api line");
    let token = std::fs::read_to_string(first.dir.join("admin-token")).unwrap();
    let token = token.trim();

    let (status, body) = http(admin, "GET", "/api/v1/sip-peers", None, None);
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("\"status\":401"),
        "problem+json expected: {body}"
    );

    let (status, body) = http(admin, "POST", "/api/v1/sip-peers", Some(token), Some(PEER));
    assert_eq!(status, 201, "{body}");
    assert!(!body.contains("pbx-secret-9f"), "secret echoed: {body}");

    let dir = first.dir.clone();
    first.keep_dir = true;
    drop(first);

    let second = start_in(dir, &[]);
    let admin = second.admin.expect("no admin api line");
    let (status, body) = http(
        admin,
        "GET",
        "/api/v1/sip-peers?name=pbx-main",
        Some(token),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"pbx-main\""), "{body}");
    assert!(
        !body.contains("pbx-secret-9f"),
        "secret in a listing: {body}"
    );
    let (status, _) = http(admin, "GET", "/healthz", None, None);
    assert_eq!(status, 200);
}

/// A SIP peer created through the admin API admits its allow-listed source from the next
/// request on, without a restart (the gateway follows the store's configuration version).
#[test]
fn a_sip_peer_added_through_the_api_is_admitted_without_a_restart() {
    use super::sip::{Udp, request};
    let r = start_with(&[("RIPT_SIP_ALLOW", "")]);
    let admin = r.admin.expect("no admin api line");
    let token = std::fs::read_to_string(r.dir.join("admin-token")).unwrap();
    let udp = Udp::new(r.sip_udp);
    let register = |n: u32| {
        udp.send(&request(
            "REGISTER",
            r.sip_udp,
            udp.local(),
            &format!("reg-{n}"),
            "Expires: 60\r\n",
        ));
        udp.final_response().status()
    };
    assert_eq!(register(0), 403, "nobody is admitted yet");
    let peer = PEER.replace("pbx-main", "pbx-live");
    let (status, body) = http(
        admin,
        "POST",
        "/api/v1/sip-peers",
        Some(token.trim()),
        Some(&peer),
    );
    assert_eq!(status, 201, "{body}");
    // The gateway polls the configuration version once a second: the change lands within a
    // few polls, and never needs a restart.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut n = 1;
    loop {
        let s = register(n);
        if s == 200 {
            break;
        }
        assert_eq!(s, 403, "only 403 until the peer is loaded");
        assert!(std::time::Instant::now() < deadline, "peer never admitted");
        std::thread::sleep(Duration::from_millis(200)); // re-asking, not synchronising
        n += 1;
    }
}
