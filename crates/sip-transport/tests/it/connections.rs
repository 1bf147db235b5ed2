//! Connection reuse, the idle timeout and the inbound connection cap.

use crate::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// RFC 3261 §18.1.1 / RFC 5923: once A opened a connection to B, B's requests to A's
/// listener and A's further requests to B all ride on it.
async fn one_connection_both_ways(
    specs: &str,
    transport: Transport,
    cert: Option<(String, String)>,
) {
    let (a, b) = match &cert {
        Some(c) => (
            tls_endpoint(specs, c, &c.0).await,
            tls_endpoint(specs, c, &c.0).await,
        ),
        None => (endpoint(specs).await, endpoint(specs).await),
    };
    let (to_a, to_b) = (target(&a, transport), target(&b, transport));
    let (ha, hb) = (a.handle(), b.handle());
    let mut seen_a = serve_200(a);
    let mut seen_b = serve_200(b);

    let mut txn = guard(ha.request(request(Method::Options, "reuse-1", 1), to_b.clone()))
        .await
        .unwrap();
    assert_eq!(guard(txn.next()).await.unwrap().status(), 200);
    let at_b = guard(seen_b.recv()).await.unwrap();
    assert!(
        at_b.request
            .headers()
            .top_via()
            .unwrap()
            .param("alias")
            .is_some(),
        "our stream Vias carry alias"
    );

    // B → A's listener: B has no connection to that address but A's aliased one.
    let mut txn = guard(hb.request(request(Method::Options, "reuse-2", 1), to_a))
        .await
        .unwrap();
    assert_eq!(guard(txn.next()).await.unwrap().status(), 200);
    let at_a = guard(seen_a.recv()).await.unwrap();
    // It came from B's listening address, i.e. over the connection A opened to it; a new
    // connection from B would have had an ephemeral source port.
    assert_eq!(at_a.source, to_b.addr);
    // A → B again: the pooled connection.
    let mut txn = guard(ha.request(request(Method::Options, "reuse-3", 1), to_b))
        .await
        .unwrap();
    assert_eq!(guard(txn.next()).await.unwrap().status(), 200);

    let (sa, sb) = (ha.stats(), hb.stats());
    assert_eq!(sa.connected, 1, "A connected once");
    assert_eq!(sb.accepted, 1, "B accepted once");
    assert_eq!(sa.accepted, 0, "B never connected to A");
    assert_eq!(sb.connected, 0, "B reused the inbound connection");
}

#[tokio::test]
async fn tcp_connection_is_reused_in_both_directions() {
    one_connection_both_ways("tcp:127.0.0.1:0", Transport::Tcp, None).await;
}

#[tokio::test]
async fn tls_connection_is_reused_in_both_directions() {
    one_connection_both_ways("tls:127.0.0.1:0", Transport::Tls, Some(self_signed())).await;
}

#[tokio::test]
async fn ipv6_tcp_connection_is_reused_in_both_directions() {
    one_connection_both_ways("tcp:[::1]:0", Transport::Tcp, None).await;
}

/// RFC 5626 spirit: the peer owns the connections it opened (a dialog may route our
/// requests back over one), so only connections we opened are idle-closed.
#[tokio::test]
async fn only_connections_we_opened_are_idle_closed() {
    let ep = Endpoint::bind(EndpointConfig {
        listen: listen("tcp:127.0.0.1:0"),
        idle_timeout: Duration::from_millis(50),
        ..Default::default()
    })
    .await
    .unwrap();
    let h = ep.handle();
    let listener = ep.local_addr(Transport::Tcp).unwrap();
    let _seen = serve_200(ep);
    let mut inbound = tokio::net::TcpStream::connect(listener).await.unwrap();
    // A peer listening on raw TCP; the endpoint connects to it and then goes quiet.
    let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to = Target::new(Transport::Tcp, peer.local_addr().unwrap());
    let _txn = guard(h.request(request(Method::Options, "idle-1", 1), to))
        .await
        .unwrap();
    let (mut outbound, _) = guard(peer.accept()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    // The endpoint closes its own connection once idle: we read the request, then the end.
    while guard(outbound.read(&mut buf)).await.unwrap() != 0 {}
    // The inbound one has been silent for longer than that, and is still served
    // (CRLFCRLF ping → CRLF pong, RFC 5626 §4.4.1).
    inbound.write_all(b"\r\n\r\n").await.unwrap();
    let n = guard(inbound.read(&mut buf)).await.unwrap();
    assert_eq!(&buf[..n], b"\r\n");
}

#[tokio::test]
async fn inbound_connections_are_capped() {
    let ep = Endpoint::bind(EndpointConfig {
        listen: listen("tcp:127.0.0.1:0"),
        max_inbound_connections: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let addr = ep.local_addr(Transport::Tcp).unwrap();
    let h = ep.handle();
    let _seen = serve_200(ep);
    let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    // The second is closed at once; the first still gets answers (CRLFCRLF ping → CRLF pong,
    // RFC 5626 §4.4.1).
    assert_eq!(guard(second.read(&mut buf)).await.unwrap(), 0);
    first.write_all(b"\r\n\r\n").await.unwrap();
    let n = guard(first.read(&mut buf)).await.unwrap();
    assert_eq!(&buf[..n], b"\r\n");
    assert_eq!(h.stats().accepted, 1);
    assert_eq!(h.stats().refused, 1);
}
