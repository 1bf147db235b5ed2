//! An INVITE dialog's transaction-level traffic between a UAC and a UAS endpoint.

use crate::*;
use sip_proto::layer::TxnId;

async fn next_request(ep: &mut Endpoint) -> Incoming {
    match guard(ep.next_event()).await.unwrap() {
        Event::Request(inc) => inc,
        other => panic!("expected a request, got {other:?}"),
    }
}

/// The ACK of a 2xx (RFC 3261 §13.2.2.4), built by the UAC's dialog.
fn ack_for_2xx(ok: &Response, via: Option<&str>) -> Request {
    let mut ack = Request::new(Method::Ack, "sip:peer@example.com")
        .unwrap()
        .with_header("From", ok.headers().get("From").unwrap())
        .unwrap()
        .with_header("To", ok.headers().get("To").unwrap())
        .unwrap()
        .with_header("Call-ID", ok.headers().call_id().unwrap())
        .unwrap()
        .with_header("CSeq", "1 ACK")
        .unwrap();
    if let Some(v) = via {
        ack.headers_mut().push_front("Via", v).unwrap();
    }
    ack
}

async fn invite_dialog(transport: Transport) {
    let spec = match transport {
        Transport::Udp => "udp:127.0.0.1:0",
        _ => "tcp:127.0.0.1:0",
    };
    let mut uac = endpoint(spec).await;
    let mut uas = endpoint(spec).await;
    let to_uas = target(&uas, transport);
    let invite = request(Method::Invite, "call-1", 1)
        .with_header("Contact", "<sip:alice@127.0.0.1>")
        .unwrap();
    let mut txn = guard(uac.handle().request(invite, to_uas.clone()))
        .await
        .unwrap();

    let inc = next_request(&mut uas).await;
    assert_eq!(inc.request.method(), &Method::Invite);
    let ringing = Response::for_request(&inc.request, 180, "Ringing", "uas1").unwrap();
    guard(uas.handle().respond(inc.txn, ringing)).await.unwrap();
    let ok = Response::for_request(&inc.request, 200, "OK", "uas1").unwrap();
    guard(uas.handle().respond(inc.txn, ok.clone()))
        .await
        .unwrap();

    // The UAS transaction sends 100 Trying itself (RFC 3261 §17.2.1).
    let mut statuses = Vec::new();
    let mut final_ok = None;
    while let Some(r) = guard(txn.next()).await {
        statuses.push(r.status());
        if r.status() == 200 {
            final_ok = Some(r);
        }
    }
    assert_eq!(statuses, [100, 180, 200]);
    let final_ok = final_ok.unwrap();

    // The ACK of the 2xx with its own branch matches no transaction: a dialog event.
    guard(
        uac.handle()
            .send_ack(ack_for_2xx(&final_ok, None), to_uas.clone()),
    )
    .await
    .unwrap();
    match guard(uas.next_event()).await.unwrap() {
        Event::Ack {
            ack,
            txn: matched,
            transport: t,
            ..
        } => {
            assert_eq!(matched, None);
            assert_eq!(t, transport);
            assert_eq!(ack.headers().call_id().unwrap(), "call-1");
            assert_eq!(ack.headers().cseq().unwrap(), (1, Method::Ack));
            let via = ack.headers().top_via().unwrap();
            assert!(via.has_rfc3261_branch());
            assert_ne!(
                via.branch,
                txn.request().headers().top_via().unwrap().branch
            );
        }
        other => panic!("expected the ACK, got {other:?}"),
    }

    // An ACK reusing the INVITE's branch meets the transaction in Accepted (RFC 6026).
    let invite_via = txn.request().headers().get("Via").unwrap().to_owned();
    guard(
        uac.handle()
            .send_ack(ack_for_2xx(&final_ok, Some(&invite_via)), to_uas),
    )
    .await
    .unwrap();
    match guard(uas.next_event()).await.unwrap() {
        Event::Ack { txn, .. } => assert_eq!(txn, Some(inc.txn)),
        other => panic!("expected the ACK, got {other:?}"),
    }

    // The UAS core retransmits its 2xx (RFC 3261 §13.3.1.4): the UAC's transaction is over,
    // so it reaches the UAC's TU as a stray response, named after the transaction.
    guard(uas.handle().respond(inc.txn, ok)).await.unwrap();
    match guard(uac.next_event()).await.unwrap() {
        Event::StrayResponse {
            response, txn: t, ..
        } => {
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers().call_id().unwrap(), "call-1");
            assert_eq!(t, Some(txn.id()));
        }
        other => panic!("expected the 2xx retransmission, got {other:?}"),
    }
}

#[tokio::test]
async fn invite_180_200_ack_and_2xx_retransmission_over_udp() {
    invite_dialog(Transport::Udp).await;
}

#[tokio::test]
async fn invite_180_200_ack_and_2xx_retransmission_over_tcp() {
    invite_dialog(Transport::Tcp).await;
}

#[tokio::test]
async fn rfc3261_17_2_1_timer_h_reaches_the_tu() {
    let mut cfg = EndpointConfig {
        listen: listen("udp:127.0.0.1:0"),
        ..Default::default()
    };
    cfg.timers.t1 = Duration::from_millis(10);
    let mut uas = Endpoint::bind(cfg).await.unwrap();
    let to = uas.local_addr(Transport::Udp).unwrap();
    // A UAC that never acknowledges.
    let raw = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = raw.local_addr().unwrap();
    let invite = format!(
        "INVITE sip:peer@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bKnoack1;rport\r\n\
         From: <sip:alice@example.com>;tag=a1\r\n\
         To: <sip:peer@example.com>\r\n\
         Call-ID: noack-1\r\n\
         CSeq: 1 INVITE\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    );
    raw.send_to(invite.as_bytes(), to).await.unwrap();
    let inc = next_request(&mut uas).await;
    let busy = Response::for_request(&inc.request, 486, "Busy Here", "uas1").unwrap();
    guard(uas.handle().respond(inc.txn, busy)).await.unwrap();
    let expected: TxnId = inc.txn;
    match guard(uas.next_event()).await.unwrap() {
        Event::ServerTimeout { txn } => assert_eq!(txn, expected),
        other => panic!("expected Timer H, got {other:?}"),
    }
    // Timer G retransmitted the 486 toward the silent UAC meanwhile.
    let mut buf = vec![0u8; 4096];
    let mut busy_seen = 0;
    while let Ok((n, _)) = raw.try_recv_from(&mut buf) {
        if buf[..n].starts_with(b"SIP/2.0 486") {
            busy_seen += 1;
        }
    }
    assert!(busy_seen >= 2, "the 486 was retransmitted ({busy_seen})");
}
