//! `/metrics` counts SIP messages by method and status and RIPT requests by route template.

use super::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

/// `GET /metrics` with the admin token: the status and the body.
pub(crate) fn scrape(addr: SocketAddr, token: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
    );
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

/// The value of the series `series` (name and labels exactly as rendered), if present.
pub(crate) fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn metrics_count_sip_messages_and_ript_requests() {
    let r = start();
    let admin = r.admin.expect("no admin api line");
    let token = std::fs::read_to_string(r.dir.join("admin-token")).unwrap();
    let token = token.trim();

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (to, local) = (r.sip_udp, sock.local_addr().unwrap());
    let options = format!(
        "OPTIONS sip:gw@{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-metrics-1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:pbx@{local}>;tag=f-metrics\r\n\
         To: <sip:gw@{to}>\r\n\
         Call-ID: metrics-1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    sock.send_to(options.as_bytes(), to).unwrap();
    let mut buf = [0u8; 65536];
    let (n, _) = sock.recv_from(&mut buf).expect("no OPTIONS response");
    assert!(
        buf[..n].starts_with(b"SIP/2.0 200 "),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );

    let (code, out, err) = probe(&r, TOKEN, &[]);
    assert_eq!(code, 0, "{out}\n{err}");

    let (status, text) = scrape(admin, token);
    assert_eq!(status, 200, "{text}");
    let inbound = r#"sip_messages_total{direction="in",kind="request",method="OPTIONS",status=""}"#;
    assert_eq!(value(&text, inbound), Some(1.0), "{text}");
    let answer =
        r#"sip_messages_total{direction="out",kind="response",method="OPTIONS",status="200"}"#;
    assert_eq!(value(&text, answer), Some(1.0), "{text}");
    // RIPT series carry route templates, never raw paths (the TG id, call ids).
    let ript: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("ript_requests_total{"))
        .collect();
    assert!(
        ript.iter()
            .any(|l| l.contains(r#"resource="/providertgs"#) && l.contains(r#"status="200""#)),
        "{text}"
    );
    assert!(
        ript.iter().all(|l| !l.contains("/default")),
        "raw path in a label: {text}"
    );
}
