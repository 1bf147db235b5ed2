//! The gateway's SIP side on loopback: OPTIONS, INVITE without a route, unknown methods,
//! malformed requests, and admission by allow-list or digest.

use super::*;
use sip_proto::digest::{self, Challenge};
use sip_proto::msg::{self, Message};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

pub(crate) fn request(
    method: &str,
    target: SocketAddr,
    local: SocketAddr,
    call_id: &str,
    extra: &str,
) -> String {
    let transport = "UDP";
    format!(
        "{method} sip:+14085551000@{target} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {local};branch=z9hG4bK-{call_id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:pbx@{local}>;tag=f-{call_id}\r\n\
         To: <sip:+14085551000@{target}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:pbx@{local}>\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    )
}

pub(crate) struct Udp {
    sock: UdpSocket,
    to: SocketAddr,
}

impl Udp {
    pub(crate) fn new(to: SocketAddr) -> Udp {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Udp { sock, to }
    }
    pub(crate) fn local(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }
    pub(crate) fn send(&self, text: &str) {
        self.sock.send_to(text.as_bytes(), self.to).unwrap();
    }
    /// The next final response (provisionals are skipped).
    pub(crate) fn final_response(&self) -> msg::Response {
        let mut buf = [0u8; 65536];
        loop {
            let (n, _) = self
                .sock
                .recv_from(&mut buf)
                .expect("no response within 5 s");
            match msg::parse(&buf[..n]).unwrap().0 {
                Message::Response(r) if r.status() >= 200 => return r,
                Message::Response(_) => continue,
                Message::Request(r) => panic!("unexpected request {r:?}"),
            }
        }
    }
    fn transact(&self, method: &str, call_id: &str, extra: &str) -> msg::Response {
        self.send(&request(method, self.to, self.local(), call_id, extra));
        self.final_response()
    }
}

#[test]
fn options_invite_unknown_and_malformed_over_udp_and_tcp() {
    let r = start();
    let u = Udp::new(r.sip_udp);
    let ok = u.transact("OPTIONS", "opt-1", "");
    assert_eq!(ok.status(), 200);
    assert!(ok.headers().get("Allow").unwrap().contains("INVITE"));
    // rport was filled in with our port and received with our address.
    let via = ok.headers().top_via().unwrap();
    assert_eq!(via.rport, Some(Some(u.local().port())));
    let busy = u.transact("INVITE", "inv-1", "");
    assert_eq!(busy.status(), 404, "no route yet");
    assert!(
        busy.headers().to().unwrap().tag.is_some(),
        "final responses carry a To tag"
    );
    let foo = u.transact("FOO", "foo-1", "");
    assert_eq!(foo.status(), 405);
    assert!(foo.headers().get("Allow").is_some());
    let bye = u.transact("BYE", "bye-1", "");
    assert_eq!(bye.status(), 481, "no such dialog");
    // An overlarge CSeq is malformed (RFC 4475 §3.1.2.4): 400, and the gateway keeps serving.
    let bad = request("OPTIONS", r.sip_udp, u.local(), "bad-1", "")
        .replace("CSeq: 1 OPTIONS", "CSeq: 99999999999 OPTIONS");
    u.send(&bad);
    // The 400 copies the defective CSeq (RFC 3261 §8.2.6), so read its status line raw.
    let mut buf = [0u8; 65536];
    let (n, _) = u.sock.recv_from(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"SIP/2.0 400 "),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert_eq!(u.transact("OPTIONS", "opt-2", "").status(), 200);

    // TCP: two requests on one connection, framed by Content-Length.
    let mut t = TcpStream::connect(r.sip_tcp).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let local = t.local_addr().unwrap();
    let both = format!(
        "{}{}",
        request("OPTIONS", r.sip_tcp, local, "tcp-1", "").replace("/UDP", "/TCP"),
        request("INVITE", r.sip_tcp, local, "tcp-2", "").replace("/UDP", "/TCP")
    );
    t.write_all(both.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut statuses = Vec::new();
    let mut buf = [0u8; 8192];
    while statuses.iter().filter(|s| **s >= 200).count() < 2 {
        let n = t.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed early");
        got.extend_from_slice(&buf[..n]);
        while let Ok(msg::StreamItem::Message(Message::Response(resp), used)) =
            msg::parse_stream(&got, 65535)
        {
            statuses.push(resp.status());
            got.drain(..used);
        }
    }
    assert!(
        statuses.contains(&200) && statuses.contains(&404),
        "{statuses:?}"
    );
}

#[test]
fn digest_admits_a_pbx_that_is_not_allow_listed() {
    let r = start_with(&[("RIPT_SIP_ALLOW", ""), ("RIPT_SIP_USERS", "pbx:s3cret")]);
    let u = Udp::new(r.sip_udp);
    let ch = u.transact("REGISTER", "reg-1", "Expires: 300\r\n");
    assert_eq!(ch.status(), 401);
    let challenges: Vec<Challenge> = ch
        .headers()
        .get_all("WWW-Authenticate")
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(challenges.len() >= 2, "SHA-256 and MD5 offered (RFC 8760)");
    let chosen = digest::select_challenge(challenges.iter()).unwrap();
    let uri = format!("sip:+14085551000@{}", r.sip_udp);
    let answer = |pass: &str| {
        let creds = digest::respond(chosen, "pbx", pass, "REGISTER", &uri, "0a4f113b", 1).unwrap();
        format!(
            "Authorization: {}\r\nExpires: 300\r\n",
            creds.to_header_value().unwrap()
        )
    };
    let wrong = u.transact("REGISTER", "reg-2", &answer("nope"));
    assert_eq!(wrong.status(), 401);
    let ok = u.transact("REGISTER", "reg-3", &answer("s3cret"));
    assert_eq!(ok.status(), 200);
    let contact = ok.headers().get("Contact").unwrap();
    assert!(contact.contains("expires="), "{contact}");
    // Without credentials the INVITE is challenged too; OPTIONS is answered for anyone.
    assert_eq!(u.transact("INVITE", "inv-9", "").status(), 401);
    assert_eq!(u.transact("OPTIONS", "opt-9", "").status(), 200);
}

#[test]
fn peers_neither_listed_nor_configured_are_refused() {
    let r = start_with(&[("RIPT_SIP_ALLOW", "192.0.2.0/24")]);
    let u = Udp::new(r.sip_udp);
    assert_eq!(u.transact("INVITE", "inv-x", "").status(), 403);
    assert_eq!(u.transact("REGISTER", "reg-x", "").status(), 403);
}

#[test]
fn options_over_tls_with_the_dev_certificate() {
    let r = start_with(&[(
        "RIPT_SIP_LISTEN",
        "udp:127.0.0.1:0,tcp:127.0.0.1:0,tls:127.0.0.1:0",
    )]);
    let tls = r.sip_tls.expect("no sip tls listener line");
    let cert = std::fs::read(r.dir.join("ript-cert.pem")).unwrap();
    let key = std::fs::read(r.dir.join("ript-key.pem")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sip_transport::{Endpoint, EndpointConfig, Target, Transport, tls};
        let ep = Endpoint::bind(EndpointConfig {
            listen: vec!["tls:127.0.0.1:0".parse().unwrap()],
            tls_server: Some(tls::server_config_from_pem(&cert, &key).unwrap()),
            tls_client: Some(tls::client_config(Some(&cert), false).unwrap()),
            ..EndpointConfig::default()
        })
        .await
        .unwrap();
        let mut req =
            msg::Request::new(msg::Method::Options, &format!("sip:{tls};transport=tls")).unwrap();
        for (k, v) in [
            ("From", "<sip:pbx@127.0.0.1>;tag=tls1"),
            ("To", "<sip:gw@127.0.0.1>"),
            ("Call-ID", "options-over-tls"),
            ("CSeq", "1 OPTIONS"),
        ] {
            req.headers_mut().push(k, v).unwrap();
        }
        let target = Target::new(Transport::Tls, tls).with_server_name("localhost");
        let mut txn = ep.handle().request(req, target).await.unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), txn.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()
                .top_via()
                .unwrap()
                .to_string()
                .contains("SIP/2.0/TLS"),
            "{resp:?}"
        );
    });
}

/// `sip.rate_per_sec` reaches the transport: at 1 message per second (2 s of burst) a burst
/// of ten OPTIONS from one source gets at most a few answers, the rest dropped.
#[test]
fn the_per_source_sip_rate_is_configurable() {
    let r = start_with(&[("RIPT_SIP_RATE", "1")]);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_millis(700)))
        .unwrap();
    let (to, local) = (r.sip_udp, sock.local_addr().unwrap());
    for i in 0..10 {
        let options = format!(
            "OPTIONS sip:gw@{to} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-rate-{i}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:pbx@{local}>;tag=f-rate\r\n\
             To: <sip:gw@{to}>\r\n\
             Call-ID: rate-{i}\r\n\
             CSeq: 1 OPTIONS\r\n\
             Content-Length: 0\r\n\r\n"
        );
        sock.send_to(options.as_bytes(), to).unwrap();
    }
    let mut buf = [0u8; 65536];
    let mut answered = 0;
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        if buf[..n].starts_with(b"SIP/2.0 200 ") {
            answered += 1;
        }
    }
    assert!((1..=3).contains(&answered), "{answered} of 10 answered");
}
