//! OPTIONS over every transport and address family, and the failures a client sees.

use crate::*;
use sip_transport::Error;

/// Sends an OPTIONS from `client` to `server_target` and checks the 200 came back and what
/// the server saw in the Via.
async fn options_round_trip(client: &Endpoint, server: Endpoint, transport: Transport) {
    let to = target(&server, transport);
    let mut seen = serve_200(server);
    let mut txn = guard(
        client
            .handle()
            .request(request(Method::Options, "opt-1", 1), to),
    )
    .await
    .unwrap();
    let resp = guard(txn.next()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().call_id().unwrap(), "opt-1");
    assert!(
        guard(txn.next()).await.is_none(),
        "the txn ends after its final response"
    );

    let inc = guard(seen.recv()).await.unwrap();
    assert_eq!(inc.transport, transport);
    let via = inc.request.headers().top_via().unwrap();
    assert_eq!(via.transport, transport.as_str());
    // sent-by is our listener of that transport (IPv6 in brackets, RFC 5118 §4.5).
    let ours = client.local_addr(transport).unwrap();
    assert_eq!(via.sent_by(), ours.to_string());
    assert!(via.has_rfc3261_branch());
    assert!(via.rport.is_some());
    assert_eq!(inc.request.headers().max_forwards(), Some(70));
    // UDP leaves from the listening socket: the source is the sent-by (symmetric, rport).
    if transport == Transport::Udp {
        assert_eq!(inc.source, ours);
    }
    // The request the ClientTxn reports is the one sent, Via included (CANCEL copies it).
    let sent = txn.request().headers().top_via().unwrap();
    assert_eq!(sent.branch, via.branch);
}

#[tokio::test]
async fn options_over_udp() {
    let a = endpoint("udp:127.0.0.1:0").await;
    let b = endpoint("udp:127.0.0.1:0").await;
    options_round_trip(&a, b, Transport::Udp).await;
}

#[tokio::test]
async fn options_over_tcp() {
    let a = endpoint("tcp:127.0.0.1:0").await;
    let b = endpoint("tcp:127.0.0.1:0").await;
    options_round_trip(&a, b, Transport::Tcp).await;
}

#[tokio::test]
async fn options_over_tls() {
    let cert = self_signed();
    let a = tls_endpoint("tls:127.0.0.1:0", &cert, &cert.0).await;
    let b = tls_endpoint("tls:127.0.0.1:0", &cert, &cert.0).await;
    options_round_trip(&a, b, Transport::Tls).await;
}

#[tokio::test]
async fn options_over_ipv6_udp_tcp_tls() {
    let cert = self_signed();
    let specs = "udp:[::1]:0,tcp:[::1]:0,tls:[::1]:0";
    for transport in [Transport::Udp, Transport::Tcp, Transport::Tls] {
        let a = tls_endpoint(specs, &cert, &cert.0).await;
        let b = tls_endpoint(specs, &cert, &cert.0).await;
        assert!(b.local_addr(transport).unwrap().is_ipv6());
        options_round_trip(&a, b, transport).await;
    }
}

#[tokio::test]
async fn tls_server_name_comes_from_the_target() {
    let cert = self_signed();
    let good_client = tls_endpoint("tls:127.0.0.1:0", &cert, &cert.0).await;
    let bad_client = tls_endpoint("tls:127.0.0.1:0", &cert, &cert.0).await;
    let b = tls_endpoint("tls:127.0.0.1:0", &cert, &cert.0).await;
    let good = target(&b, Transport::Tls).with_server_name("localhost");
    let bad = target(&b, Transport::Tls).with_server_name("other.example.com");
    let _seen = serve_200(b);
    let mut txn = guard(
        good_client
            .handle()
            .request(request(Method::Options, "sni-1", 1), good),
    )
    .await
    .unwrap();
    assert_eq!(guard(txn.next()).await.unwrap().status(), 200);
    // A name the certificate does not carry fails the handshake, hence the transaction.
    let mut txn = guard(
        bad_client
            .handle()
            .request(request(Method::Options, "sni-2", 1), bad),
    )
    .await
    .unwrap();
    assert_eq!(guard(txn.next()).await.unwrap().status(), 503);
}

#[tokio::test]
async fn rfc3261_17_1_2_2_timer_f_gives_a_synthetic_408() {
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = EndpointConfig {
        listen: listen("udp:127.0.0.1:0"),
        ..Default::default()
    };
    cfg.timers.t1 = Duration::from_millis(10);
    let a = Endpoint::bind(cfg).await.unwrap();
    let to = Target::new(Transport::Udp, silent.local_addr().unwrap());
    let mut txn = guard(
        a.handle()
            .request(request(Method::Options, "lost-1", 7), to),
    )
    .await
    .unwrap();
    let resp = guard(txn.next()).await.unwrap();
    assert_eq!(resp.status(), 408);
    assert_eq!(resp.headers().call_id().unwrap(), "lost-1");
    assert_eq!(resp.headers().cseq().unwrap().0, 7);
    assert!(guard(txn.next()).await.is_none());
    // The request really went out (and was retransmitted: Timer E).
    let mut buf = vec![0u8; 4096];
    let (n, _) = guard(silent.recv_from(&mut buf)).await.unwrap();
    assert!(buf[..n].starts_with(b"OPTIONS sip:peer@example.com SIP/2.0\r\n"));
}

#[tokio::test]
async fn rfc3261_8_1_3_1_refused_connection_gives_a_503() {
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = gone.local_addr().unwrap();
    drop(gone);
    let a = endpoint("tcp:127.0.0.1:0").await;
    let mut txn = guard(a.handle().request(
        request(Method::Options, "refused-1", 1),
        Target::new(Transport::Tcp, addr),
    ))
    .await
    .unwrap();
    assert_eq!(guard(txn.next()).await.unwrap().status(), 503);
    assert!(guard(txn.next()).await.is_none());
}

#[tokio::test]
async fn untrusted_tls_certificate_gives_a_503() {
    let server_cert = self_signed();
    let other = self_signed();
    let a = tls_endpoint("tls:127.0.0.1:0", &other, &other.0).await;
    let b = tls_endpoint("tls:127.0.0.1:0", &server_cert, &server_cert.0).await;
    let to = target(&b, Transport::Tls);
    let mut seen = serve_200(b);
    let mut txn = guard(
        a.handle()
            .request(request(Method::Options, "untrusted-1", 1), to),
    )
    .await
    .unwrap();
    assert_eq!(guard(txn.next()).await.unwrap().status(), 503);
    assert!(guard(txn.next()).await.is_none());
    assert!(seen.try_recv().is_err(), "no request reached the server");
}

#[tokio::test]
async fn misuse_is_refused_before_sending() {
    let a = endpoint("udp:127.0.0.1:0").await;
    let h = a.handle();
    let v6 = Target::new(Transport::Udp, "[::1]:5060".parse().unwrap());
    assert!(matches!(
        h.request(request(Method::Options, "m-1", 1), v6).await,
        Err(Error::Misuse(_))
    ));
    let tls = Target::new(Transport::Tls, "127.0.0.1:5061".parse().unwrap());
    assert!(matches!(
        h.request(request(Method::Options, "m-2", 1), tls).await,
        Err(Error::Misuse(_))
    ));
    let udp = Target::new(Transport::Udp, "127.0.0.1:9".parse().unwrap());
    assert!(matches!(
        h.request(request(Method::Ack, "m-3", 1), udp.clone()).await,
        Err(Error::Misuse(_))
    ));
    assert!(matches!(
        h.send_ack(request(Method::Options, "m-4", 1), udp.clone())
            .await,
        Err(Error::Misuse(_))
    ));
    // No Call-ID: not a request we may send.
    let mut bad = request(Method::Options, "m-5", 1);
    bad.headers_mut().remove("Call-ID");
    assert!(matches!(h.request(bad, udp).await, Err(Error::Message(_))));
}

#[tokio::test]
async fn a_tls_listener_needs_a_certificate() {
    let r = Endpoint::bind(EndpointConfig {
        listen: listen("tls:127.0.0.1:0"),
        ..Default::default()
    })
    .await;
    assert!(matches!(r, Err(Error::Misuse(_))));
}

/// A request the parser refuses (its Content-Length overruns the datagram) but whose
/// headers still allow a stateless 400.
fn malformed(n: usize) -> Vec<u8> {
    format!(
        "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bK-bad{n}\r\n\
         From: <sip:b@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\n\
         Call-ID: bad-{n}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\
         Content-Length: 500\r\n\r\nshort"
    )
    .into_bytes()
}

#[tokio::test]
async fn malformed_floods_are_rate_limited_per_source() {
    let server = Endpoint::bind(EndpointConfig {
        listen: listen("udp:127.0.0.1:0"),
        rate_per_sec: 5,
        ..Default::default()
    })
    .await
    .unwrap();
    let to = server.local_addr(Transport::Udp).unwrap();
    let flooder = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // All of 127/8 is loopback on Linux: a second source address.
    let other = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    for n in 0..100 {
        flooder.send_to(&malformed(n), to).await.unwrap();
    }
    other.send_to(&malformed(1000), to).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = guard(other.recv_from(&mut buf)).await.unwrap();
    assert!(
        buf[..n].starts_with(b"SIP/2.0 400 "),
        "the other source is answered"
    );
    // The driver handles datagrams in order, so every answer to the flood is queued by now.
    let mut answered = 0;
    while flooder.try_recv_from(&mut buf).is_ok() {
        answered += 1;
    }
    assert!(
        (1..=12).contains(&answered),
        "a burst (10) answered, the rest dropped: {answered}"
    );
}
