//! Every RFC 4475 torture message against the running gateway's UDP and TCP listeners, inside
//! a private network namespace that has only loopback (`unshare --net`): the messages name
//! other hosts, and nothing may leave the machine even on a bug.

use super::*;
use sip_proto::msg;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

const TEST: &str = "torture::rfc4475_torture_messages_over_udp_and_tcp_in_a_private_netns";

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/sip-torture/rfc4475"
    );
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "dat"))
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    assert_eq!(v.len(), 50, "the RFC 4475 archive has 50 members");
    v
}

/// The Call-ID a message carries, read leniently (invalid messages included).
fn call_id(bytes: &[u8]) -> Option<String> {
    msg::salvage_request(bytes)
        .and_then(|h| h.call_id().ok().map(str::to_owned))
        .or_else(|| {
            msg::parse(bytes)
                .ok()
                .and_then(|(m, _)| m.headers().call_id().ok().map(str::to_owned))
        })
}

fn status_of(bytes: &[u8]) -> Option<u16> {
    let line = bytes.split(|b| *b == b'\r').next()?;
    let s = std::str::from_utf8(line).ok()?.strip_prefix("SIP/2.0 ")?;
    s.get(..3)?.parse().ok()
}

/// Responses carry their request's Call-ID even when it echoes a defect.
fn call_id_of_response(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .find_map(|l| l.strip_prefix("Call-ID:").or_else(|| l.strip_prefix("i:")))
        .map(|v| v.trim().to_owned())
}

/// RFC 4475 §3.1.2 messages that must be refused with this status over UDP.
const REFUSED: &[(&str, u16)] = &[
    ("badinv01", 400),
    ("clerr", 400),
    ("ncl", 400),
    ("scalar02", 400),
    ("quotbal", 400),
    ("ltgtruri", 400),
    ("lwsruri", 400),
    ("lwsstart", 400),
    ("trws", 400),
    ("escruri", 400),
    ("badaspec", 400),
    ("mcl01", 400),
    ("badvers", 505),
];
/// Responses: never answered.
const RESPONSES: &[&str] = &["unreason", "noreason", "scalarlg", "bigcode"];
/// Valid requests (RFC 4475 §3.1.1) from an allow-listed source: answered, but not as malformed.
const VALID: &[&str] = &[
    "wsinv",
    "intmeth",
    "esc01",
    "escnull",
    "esc02",
    "lwsdisp",
    "longreq",
    "dblreq",
    "semiuri",
    "transports",
    "mpart01",
];

#[test]
fn rfc4475_torture_messages_over_udp_and_tcp_in_a_private_netns() {
    if std::env::var_os("RIPT_IN_NETNS").is_none() {
        // Re-run this very test inside a new network namespace with only loopback up.
        let exe = std::env::current_exe().unwrap();
        let out = Command::new("unshare")
            .args([
                "--net",
                "--",
                "sh",
                "-c",
                "ip link set lo up && exec \"$0\" \"$@\"",
            ])
            .arg(&exe)
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env("RIPT_IN_NETNS", "1")
            .output()
            .expect("unshare (util-linux) is needed to run the torture test");
        let all = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "torture test in a private netns failed (root is required):\n{all}"
        );
        assert!(
            all.contains("1 passed"),
            "the inner run did not run the test:\n{all}"
        );
        return;
    }
    let r = start();
    // Replies follow RFC 3261 §18.2.2: to the source IP and the Via's sent-by port (5060 in
    // every torture message), so the sender owns 127.0.0.1:5060.
    // 5050 and 5070 are the sent-by ports of two other messages.
    let sock = UdpSocket::bind("127.0.0.1:5060").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let others: Vec<UdpSocket> = [5050u16, 5070]
        .iter()
        .map(|p| {
            let s = UdpSocket::bind(("127.0.0.1", *p)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            s
        })
        .collect();
    let files = corpus();
    for (_, bytes) in &files {
        sock.send_to(bytes, r.sip_udp).unwrap();
    }
    let mut answers: HashMap<String, Vec<u16>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        let Some((n, from)) = std::iter::once(&sock)
            .chain(others.iter())
            .find_map(|s| s.recv_from(&mut buf).ok())
        else {
            continue;
        };
        assert_eq!(from, r.sip_udp, "replies come from the listener");
        let (Some(cid), Some(st)) = (call_id_of_response(&buf[..n]), status_of(&buf[..n])) else {
            panic!("unparseable reply: {}", String::from_utf8_lossy(&buf[..n]));
        };
        answers.entry(cid).or_default().push(st);
    }
    let by_name: HashMap<&str, Option<String>> = files
        .iter()
        .map(|(n, b)| (n.as_str(), call_id(b)))
        .collect();
    let got = |name: &str| -> Vec<u16> {
        by_name
            .get(name)
            .cloned()
            .flatten()
            .and_then(|c| answers.get(&c).cloned())
            .unwrap_or_default()
    };
    for (name, status) in REFUSED {
        assert!(
            got(name).contains(status),
            "{name}: expected {status}, got {:?} (call-id {:?}; all answers {answers:?})",
            got(name),
            by_name.get(name)
        );
    }
    for name in VALID {
        let finals: Vec<u16> = got(name).into_iter().filter(|s| *s >= 200).collect();
        assert!(!finals.is_empty(), "{name}: valid request not answered");
        assert!(
            finals.iter().all(|s| *s != 400 && *s != 505),
            "{name}: valid request refused: {finals:?}"
        );
    }
    for name in RESPONSES {
        assert!(
            got(name).is_empty(),
            "{name}: a response must not be answered: {:?}",
            got(name)
        );
    }
    // intmeth and esc02 carry methods we do not support: 405 with Allow.
    assert!(got("intmeth").contains(&405) && got("esc02").contains(&405));
    // wsinv is an INVITE whose To carries a tag: a request inside a dialog we do not know,
    // answered 481 (RFC 3261 §12.2.2) after the transaction's 100.
    assert!(
        got("wsinv").contains(&100) && got("wsinv").contains(&481),
        "{:?}",
        got("wsinv")
    );

    // TCP: each message on its own connection, all at once, against a fresh gateway (the same
    // messages' UDP transactions are still alive in the first one and would match them).
    let r2 = start();
    let handles: Vec<_> = files
        .iter()
        .cloned()
        .map(|(name, bytes)| {
            let addr = r2.sip_tcp;
            std::thread::spawn(move || {
                let mut t = TcpStream::connect(addr).unwrap();
                t.set_read_timeout(Some(Duration::from_millis(700)))
                    .unwrap();
                let _ = t.write_all(&bytes);
                let mut got = Vec::new();
                let mut chunk = [0u8; 8192];
                // Every message is answered or the connection closed: none hangs.
                while let Ok(n) = t.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&chunk[..n]);
                }
                let statuses: Vec<u16> = String::from_utf8_lossy(&got)
                    .split("SIP/2.0 ")
                    .filter_map(|s| s.get(..3).and_then(|c| c.parse().ok()))
                    .collect();
                (name, statuses)
            })
        })
        .collect();
    let tcp_status: HashMap<String, Vec<u16>> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        tcp_status["badvers"].contains(&505),
        "{:?}",
        tcp_status["badvers"]
    );
    assert!(
        tcp_status["wsinv"].contains(&481),
        "{:?}",
        tcp_status["wsinv"]
    );
    assert!(
        tcp_status["scalar02"].contains(&400),
        "{:?}",
        tcp_status["scalar02"]
    );

    // And the gateway is still serving.
    let probe = format!(
        "OPTIONS sip:gw@{0} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-alive\r\nMax-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:gw@{0}>\r\nCall-ID: alive\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        r.sip_udp
    );
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(probe.as_bytes(), r.sip_udp).unwrap();
    // Unacknowledged final responses to the INVITEs above are still being retransmitted
    // (Timer G).
    loop {
        let (n, _) = sock.recv_from(&mut buf).unwrap();
        if call_id_of_response(&buf[..n]).as_deref() == Some("alive") {
            assert_eq!(status_of(&buf[..n]), Some(200));
            break;
        }
    }
}
