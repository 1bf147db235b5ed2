//! RFC 3261 §17.1.3 / §17.2.3 matching through the transaction layer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
#![allow(clippy::disallowed_methods)]

use sip_proto::layer::{LayerError, LayerOutput, TxnLayer, TxnMessage};
use sip_proto::txn::{Reliability, Timer, TimerConfig};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
struct M {
    method: Option<&'static str>,
    status: Option<u16>,
    branch: Option<&'static str>,
    sent_by: &'static str,
    cseq: &'static str,
}

fn req(method: &'static str, branch: &'static str) -> M {
    M {
        method: Some(method),
        status: None,
        branch: Some(branch),
        sent_by: "192.0.2.1:5060",
        cseq: method,
    }
}

fn resp(code: u16, branch: &'static str, cseq: &'static str) -> M {
    M {
        method: None,
        status: Some(code),
        branch: Some(branch),
        sent_by: "192.0.2.1:5060",
        cseq,
    }
}

impl TxnMessage for M {
    fn method(&self) -> Option<&str> {
        self.method
    }
    fn status(&self) -> Option<u16> {
        self.status
    }
    fn branch(&self) -> Option<String> {
        self.branch.map(str::to_owned)
    }
    fn sent_by(&self) -> Option<String> {
        Some(self.sent_by.to_owned())
    }
    fn cseq_method(&self) -> Option<String> {
        Some(self.cseq.to_owned())
    }
    fn ack_for(&self, _response: &Self) -> Option<Self> {
        Some(M {
            method: Some("ACK"),
            cseq: "ACK",
            ..self.clone()
        })
    }
    fn trying(&self) -> Option<Self> {
        Some(M {
            method: None,
            status: Some(100),
            cseq: "INVITE",
            ..self.clone()
        })
    }
}

fn drain(l: &mut TxnLayer<M>) -> Vec<LayerOutput<M>> {
    std::iter::from_fn(|| l.poll_output()).collect()
}

const B1: &str = "z9hG4bK-1";
const UDP: Reliability = Reliability::Unreliable;

#[test]
fn new_invite_is_delivered_once_and_retransmissions_get_the_last_response() {
    let t0 = Instant::now();
    let mut l = TxnLayer::new(TimerConfig::default());
    l.handle_message(t0, req("INVITE", B1), UDP).unwrap();
    let out = drain(&mut l);
    let id = match &out[..] {
        [
            LayerOutput::Request {
                txn, cancels: None, ..
            },
            LayerOutput::Transmit(t2, m),
        ] => {
            assert_eq!(txn, t2);
            assert_eq!(m.status, Some(100), "100 Trying at once");
            *txn
        }
        o => panic!("{o:?}"),
    };
    l.handle_message(t0 + Duration::from_millis(500), req("INVITE", B1), UDP)
        .unwrap();
    assert!(
        matches!(&drain(&mut l)[..], [LayerOutput::Transmit(t, m)] if *t == id && m.status == Some(100))
    );
    // A different sent-by is a different transaction (RFC 3261 §17.2.3).
    let mut other = req("INVITE", B1);
    other.sent_by = "198.51.100.7:5060";
    l.handle_message(t0, other, UDP).unwrap();
    assert!(matches!(drain(&mut l).first(), Some(LayerOutput::Request { txn, .. }) if *txn != id));
}

#[test]
fn ack_of_non_2xx_is_absorbed_ack_of_2xx_goes_to_the_tu() {
    let t0 = Instant::now();
    let mut l = TxnLayer::new(TimerConfig::default());
    l.handle_message(t0, req("INVITE", B1), UDP).unwrap();
    let id = match drain(&mut l).first() {
        Some(LayerOutput::Request { txn, .. }) => *txn,
        o => panic!("{o:?}"),
    };
    l.send_response(t0, id, resp(486, B1, "INVITE")).unwrap();
    let _ = drain(&mut l);
    l.handle_message(t0, req("ACK", B1), UDP).unwrap();
    assert!(
        drain(&mut l).is_empty(),
        "ACK of a 486 stays in the transaction"
    );

    const B2: &str = "z9hG4bK-2";
    l.handle_message(t0, req("INVITE", B2), UDP).unwrap();
    let id2 = match drain(&mut l).first() {
        Some(LayerOutput::Request { txn, .. }) => *txn,
        o => panic!("{o:?}"),
    };
    l.send_response(t0, id2, resp(200, B2, "INVITE")).unwrap();
    let _ = drain(&mut l);
    l.handle_message(t0, req("ACK", B2), UDP).unwrap();
    assert!(matches!(&drain(&mut l)[..], [LayerOutput::AckForTu(t, _)] if *t == id2));
    // A 2xx ACK with its own branch (RFC 3261 §17.1.1.3) matches no transaction.
    l.handle_message(t0, req("ACK", "z9hG4bK-new"), UDP)
        .unwrap();
    assert!(matches!(&drain(&mut l)[..], [LayerOutput::StrayAck(_)]));
}

#[test]
fn cancel_names_the_invite_it_targets() {
    let t0 = Instant::now();
    let mut l = TxnLayer::new(TimerConfig::default());
    l.handle_message(t0, req("INVITE", B1), UDP).unwrap();
    let inv = match drain(&mut l).first() {
        Some(LayerOutput::Request { txn, .. }) => *txn,
        o => panic!("{o:?}"),
    };
    l.handle_message(t0, req("CANCEL", B1), UDP).unwrap();
    match &drain(&mut l)[..] {
        [
            LayerOutput::Request {
                txn,
                cancels: Some(c),
                request,
            },
        ] => {
            assert_ne!(*txn, inv, "CANCEL has its own transaction");
            assert_eq!(*c, inv);
            assert_eq!(request.method, Some("CANCEL"));
        }
        o => panic!("{o:?}"),
    }
    // A CANCEL for nothing still gets a transaction (the TU answers 481).
    l.handle_message(t0, req("CANCEL", "z9hG4bK-none"), UDP)
        .unwrap();
    assert!(matches!(
        &drain(&mut l)[..],
        [LayerOutput::Request { cancels: None, .. }]
    ));
}

#[test]
fn client_transactions_match_responses_by_branch_and_cseq_method() {
    let t0 = Instant::now();
    let mut l = TxnLayer::new(TimerConfig::default());
    let id = l.send_request(t0, req("INVITE", B1), UDP).unwrap();
    assert!(matches!(&drain(&mut l)[..], [LayerOutput::Transmit(t, _)] if *t == id));
    l.handle_message(t0, resp(180, B1, "INVITE"), UDP).unwrap();
    assert!(
        matches!(&drain(&mut l)[..], [LayerOutput::Response(t, m)] if *t == id && m.status == Some(180))
    );
    // Same branch, other CSeq method: not ours.
    l.handle_message(t0, resp(200, B1, "CANCEL"), UDP).unwrap();
    assert!(matches!(
        &drain(&mut l)[..],
        [LayerOutput::StrayResponse(_)]
    ));
    l.handle_message(t0, resp(486, B1, "INVITE"), UDP).unwrap();
    match &drain(&mut l)[..] {
        [LayerOutput::Transmit(_, ack), LayerOutput::Response(_, r)] => {
            assert_eq!(ack.method, Some("ACK"));
            assert_eq!(r.status, Some(486));
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn timer_b_through_the_layer_and_no_transaction_leaks() {
    let t0 = Instant::now();
    let mut l = TxnLayer::new(TimerConfig::default());
    let id = l.send_request(t0, req("INVITE", B1), UDP).unwrap();
    let _ = drain(&mut l);
    let mut timeouts = vec![];
    while let Some(at) = l.poll_timeout() {
        l.handle_timeout(at);
        for o in drain(&mut l) {
            if let LayerOutput::Timeout(t, tm) = o {
                timeouts.push((t, tm, at - t0));
            }
        }
    }
    assert_eq!(timeouts, vec![(id, Timer::B, Duration::from_secs(32))]);
    assert!(l.is_empty(), "terminated transactions are forgotten");
}

/// Runs the layer's timers to quiescence, returning every timeout and termination with
/// its time since `t0`.
fn run_timers(l: &mut TxnLayer<M>, t0: Instant) -> Vec<(LayerOutput<M>, Duration)> {
    let mut seen = vec![];
    while let Some(at) = l.poll_timeout() {
        l.handle_timeout(at);
        for o in drain(l) {
            if matches!(o, LayerOutput::Timeout(..) | LayerOutput::Terminated(_)) {
                seen.push((o, at - t0));
            }
        }
    }
    seen
}

#[test]
fn rfc3261_9_1_invite_cancelled_after_a_1xx_ends_64_t1_after_the_cancel() {
    let t0 = Instant::now();
    let mut l = TxnLayer::new(TimerConfig::default());
    let inv = l.send_request(t0, req("INVITE", B1), UDP).unwrap();
    l.handle_message(t0 + Duration::from_secs(1), resp(180, B1, "INVITE"), UDP)
        .unwrap();
    let _ = drain(&mut l);
    // The CANCEL goes out at 10 s and is answered; the callee never sends the 487.
    let t_cancel = t0 + Duration::from_secs(10);
    let cancel = l.send_request(t_cancel, req("CANCEL", B1), UDP).unwrap();
    l.handle_message(t_cancel, resp(200, B1, "CANCEL"), UDP)
        .unwrap();
    let _ = drain(&mut l);
    let seen = run_timers(&mut l, t0);
    let inv_end = Duration::from_secs(10 + 32);
    assert!(
        seen.contains(&(LayerOutput::Timeout(inv, Timer::B), inv_end)),
        "{seen:?}"
    );
    assert!(seen.contains(&(LayerOutput::Terminated(inv), inv_end)));
    assert!(seen.contains(&(LayerOutput::Terminated(cancel), Duration::from_secs(15))));
    assert!(l.is_empty(), "no transaction leaks");
}

#[test]
fn cancel_guard_does_not_end_an_invite_that_got_its_final_response() {
    let t0 = Instant::now();
    let mut l = TxnLayer::new(TimerConfig::default());
    let inv = l.send_request(t0, req("INVITE", B1), UDP).unwrap();
    l.handle_message(t0, resp(180, B1, "INVITE"), UDP).unwrap();
    let _ = l.send_request(t0, req("CANCEL", B1), UDP).unwrap();
    l.handle_message(t0, resp(200, B1, "CANCEL"), UDP).unwrap();
    l.handle_message(t0, resp(487, B1, "INVITE"), UDP).unwrap();
    let _ = drain(&mut l);
    let seen = run_timers(&mut l, t0);
    assert!(
        !seen
            .iter()
            .any(|(o, _)| matches!(o, LayerOutput::Timeout(..))),
        "{seen:?}"
    );
    assert!(seen.contains(&(LayerOutput::Terminated(inv), Duration::from_secs(32))));
    assert!(l.is_empty());
}

#[test]
fn rfc3261_17_2_2_unanswered_non_invite_server_transaction_ends_silently_after_64_t1() {
    let t0 = Instant::now();
    let mut l = TxnLayer::new(TimerConfig::default());
    l.handle_message(t0, req("OPTIONS", B1), UDP).unwrap();
    let id = match drain(&mut l).first() {
        Some(LayerOutput::Request { txn, .. }) => *txn,
        o => panic!("{o:?}"),
    };
    let seen = run_timers(&mut l, t0);
    assert_eq!(
        seen,
        vec![(LayerOutput::Terminated(id), Duration::from_secs(32))]
    );
    assert!(l.is_empty());
    // Answered in time, the guard does not cut Timer J short.
    l.handle_message(t0, req("OPTIONS", "z9hG4bK-2"), UDP)
        .unwrap();
    let id = match drain(&mut l).first() {
        Some(LayerOutput::Request { txn, .. }) => *txn,
        o => panic!("{o:?}"),
    };
    let t1 = t0 + Duration::from_secs(20);
    l.send_response(t1, id, resp(200, "z9hG4bK-2", "OPTIONS"))
        .unwrap();
    let _ = drain(&mut l);
    assert_eq!(
        run_timers(&mut l, t0),
        vec![(LayerOutput::Terminated(id), Duration::from_secs(52))]
    );
}

#[test]
fn unanswered_invite_server_transaction_reports_its_guard_timeout() {
    let t0 = Instant::now();
    let cfg = TimerConfig {
        invite_server_guard: Duration::from_secs(120),
        ..TimerConfig::default()
    };
    let mut l = TxnLayer::new(cfg);
    l.handle_message(t0, req("INVITE", B1), UDP).unwrap();
    let id = match drain(&mut l).first() {
        Some(LayerOutput::Request { txn, .. }) => *txn,
        o => panic!("{o:?}"),
    };
    // A 180 keeps the transaction in Proceeding: still bounded.
    l.send_response(t0, id, resp(180, B1, "INVITE")).unwrap();
    let _ = drain(&mut l);
    let at = Duration::from_secs(120);
    assert_eq!(
        run_timers(&mut l, t0),
        vec![
            (LayerOutput::Timeout(id, Timer::Guard), at),
            (LayerOutput::Terminated(id), at)
        ]
    );
    assert!(l.is_empty());
    assert_eq!(
        TimerConfig::default().invite_server_guard,
        Duration::from_secs(300)
    );
}

#[test]
fn messages_without_the_needed_headers_are_refused() {
    let t0 = Instant::now();
    let mut l = TxnLayer::new(TimerConfig::default());
    let mut m = req("OPTIONS", B1);
    m.branch = None;
    assert_eq!(
        l.handle_message(t0, m.clone(), UDP),
        Err(LayerError::Missing("Via branch"))
    );
    assert_eq!(
        l.send_request(t0, m, UDP),
        Err(LayerError::Missing("Via branch"))
    );
    assert!(l.is_empty());
}

mod with_the_facade {
    use super::*;
    use sip_proto::msg::{self, Message, Response};

    const INVITE: &str = "INVITE sip:bob@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-f1;rport\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:alice@127.0.0.1>;tag=a1\r\n\
        To: <sip:bob@127.0.0.1>\r\n\
        Call-ID: c1@127.0.0.1\r\n\
        CSeq: 1 INVITE\r\n\
        Content-Length: 0\r\n\r\n";

    const ACK: &str = "ACK sip:bob@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-f1;rport\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:alice@127.0.0.1>;tag=a1\r\n\
        To: <sip:bob@127.0.0.1>;tag=b1\r\n\
        Call-ID: c1@127.0.0.1\r\n\
        CSeq: 1 ACK\r\n\
        Content-Length: 0\r\n\r\n";

    fn parse(s: &str) -> Message {
        msg::parse(s.as_bytes()).unwrap().0
    }

    #[test]
    fn real_invite_gets_a_mirrored_100_and_its_486_ack_is_absorbed() {
        let t0 = Instant::now();
        let mut l: TxnLayer<Message> = TxnLayer::new(TimerConfig::default());
        l.handle_message(t0, parse(INVITE), UDP).unwrap();
        let out = std::iter::from_fn(|| l.poll_output()).collect::<Vec<_>>();
        let (id, trying) = match &out[..] {
            [
                LayerOutput::Request { txn, .. },
                LayerOutput::Transmit(_, Message::Response(r)),
            ] => (*txn, r.clone()),
            o => panic!("{o:?}"),
        };
        assert_eq!(trying.status(), 100);
        let h = trying.headers();
        assert_eq!(h.call_id().unwrap(), "c1@127.0.0.1");
        assert_eq!(h.top_via().unwrap().branch.as_deref(), Some("z9hG4bK-f1"));
        assert_eq!(h.cseq().unwrap().0, 1);
        assert_eq!(h.to().unwrap().tag, None, "no To tag on a 100");
        // The TU declines; the ACK with the same branch stays in the transaction.
        let Message::Request(req) = parse(INVITE) else {
            panic!()
        };
        let busy = Response::for_request(&req, 486, "Busy Here", "b1").unwrap();
        l.send_response(t0, id, Message::Response(busy)).unwrap();
        let sent: Vec<_> = std::iter::from_fn(|| l.poll_output()).collect();
        assert!(
            matches!(&sent[..], [LayerOutput::Transmit(_, Message::Response(r))] if r.status() == 486)
        );
        l.handle_message(t0, parse(ACK), UDP).unwrap();
        assert!(l.poll_output().is_none());
    }
}
