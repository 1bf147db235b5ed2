//! INVITE session scenarios (RFC 3261 §13-15, RFC 3262, RFC 3311, RFC 4028) in virtual time:
//! a caller session (A) and a callee session (B), each on its own real transaction layer,
//! joined by a link that serialises and re-parses every message and can drop some.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
#![allow(clippy::disallowed_methods)]

use sip_proto::dialog::DialogState;
use sip_proto::layer::{LayerOutput, TxnId, TxnLayer};
use sip_proto::msg::{self, Message, Method, Request};
use sip_proto::sdp::Sdp;
use sip_proto::session::*;
use sip_proto::txn::{Reliability, Timer, TimerConfig};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

fn origin() -> Instant {
    Instant::now()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const UDP: Reliability = Reliability::Unreliable;

fn sdp(version: u32, port: u16, dir: &str) -> Vec<u8> {
    format!(
        "v=0\r\no=- 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na={dir}\r\n"
    )
    .into_bytes()
}

fn offer() -> Vec<u8> {
    sdp(1, 4000, "sendrecv")
}

fn answer() -> Vec<u8> {
    sdp(1, 5000, "sendrecv")
}

fn cfg_a() -> SessionConfig {
    SessionConfig::new(
        "<sip:alice@127.0.0.1:5060>",
        "SIP/2.0/UDP 127.0.0.1:5060",
        11,
    )
}

fn cfg_b() -> SessionConfig {
    SessionConfig::new("<sip:bob@127.0.0.2:5060>", "SIP/2.0/UDP 127.0.0.2:5060", 22)
}

fn invite(body: Option<Vec<u8>>) -> Request {
    let mut r = Request::new(Method::Invite, "sip:bob@127.0.0.2:5060")
        .unwrap()
        .with_header("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-inv-1")
        .unwrap()
        .with_header("Max-Forwards", "70")
        .unwrap()
        .with_header("From", "<sip:alice@127.0.0.1>;tag=alice-1")
        .unwrap()
        .with_header("To", "<sip:bob@127.0.0.2>")
        .unwrap()
        .with_header("Call-ID", "call-1@127.0.0.1")
        .unwrap()
        .with_header("CSeq", "1 INVITE")
        .unwrap()
        .with_header("Contact", "<sip:alice@127.0.0.1:5060>")
        .unwrap();
    if let Some(b) = body {
        r.headers_mut()
            .push("Content-Type", "application/sdp")
            .unwrap();
        r.set_body(b);
    }
    r
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// One user agent: a transaction layer and the shell glue of the module docs.
struct Ua {
    layer: TxnLayer<Message>,
    session: Option<InviteSession>,
    cfg: SessionConfig,
    sent: HashMap<TxnId, Request>,
    events: Vec<(Instant, SessionEvent)>,
    /// Answer (or offer, for an offerless re-INVITE) given at once to mid-call offers.
    auto_answer: Option<Vec<u8>>,
}

impl Ua {
    fn new(cfg: SessionConfig) -> Ua {
        Ua {
            layer: TxnLayer::new(TimerConfig::default()),
            session: None,
            cfg,
            sent: HashMap::new(),
            events: Vec::new(),
            auto_answer: None,
        }
    }

    /// Moves session actions into the layer and layer outputs into the session until both
    /// are quiet; returns what the layer transmitted.
    fn pump(&mut self, now: Instant) -> Vec<Message> {
        let mut wire = Vec::new();
        loop {
            let mut busy = false;
            let mut auto = false;
            while let Some(a) = self.session.as_mut().and_then(|s| s.poll_action()) {
                busy = true;
                match a {
                    Action::Respond(txn, r) => {
                        let _ = self.layer.send_response(now, txn, Message::Response(r));
                    }
                    Action::SendRequest(r) => {
                        let id = self
                            .layer
                            .send_request(now, Message::Request(r.clone()), UDP)
                            .unwrap();
                        self.sent.insert(id, r);
                    }
                    Action::SendAck(r) => {
                        self.layer
                            .send_request(now, Message::Request(r), UDP)
                            .unwrap();
                    }
                    Action::Event(e) => {
                        auto |= matches!(
                            e,
                            SessionEvent::RemoteOffer {
                                kind: OfferKind::Reinvite | OfferKind::Update | OfferKind::Final,
                                ..
                            } | SessionEvent::OfferRequested
                        );
                        self.events.push((now, e));
                    }
                }
            }
            if auto && let (Some(body), Some(s)) = (self.auto_answer.clone(), self.session.as_mut())
            {
                s.answer(now, body).unwrap();
            }
            while let Some(o) = self.layer.poll_output() {
                busy = true;
                match o {
                    LayerOutput::Transmit(_, m) => wire.push(m),
                    LayerOutput::Request { txn, request, .. } => {
                        let m = request;
                        let req = m.as_request().unwrap();
                        match &mut self.session {
                            Some(s) => s.handle_request(now, txn, req),
                            None if req.method() == &Method::Invite => {
                                match InviteSession::uas(now, txn, req, "bob-1", self.cfg.clone()) {
                                    Ok(s) => self.session = Some(s),
                                    Err(rej) => {
                                        let r = rej.response(req, "bob-1").unwrap();
                                        self.layer
                                            .send_response(now, txn, Message::Response(r))
                                            .unwrap();
                                    }
                                }
                            }
                            None => {}
                        }
                    }
                    LayerOutput::Response(_, Message::Response(r)) => {
                        if let Some(s) = &mut self.session {
                            s.handle_response(now, &r);
                        }
                    }
                    // RFC 3261 §17.1.3: a stray response is dropped, except a 2xx to an
                    // INVITE (a retransmission the session acknowledges again).
                    LayerOutput::StrayResponse(Message::Response(r))
                        if r.headers().cseq().is_ok_and(|(_, m)| m == Method::Invite) =>
                    {
                        if let Some(s) = &mut self.session {
                            s.handle_response(now, &r);
                        }
                    }
                    LayerOutput::AckForTu(_, Message::Request(r))
                    | LayerOutput::StrayAck(Message::Request(r)) => {
                        if let Some(s) = &mut self.session {
                            s.handle_ack(now, &r);
                        }
                    }
                    LayerOutput::Timeout(txn, Timer::B | Timer::F) => {
                        if let (Some(s), Some(r)) = (&mut self.session, self.sent.get(&txn)) {
                            s.handle_txn_timeout(now, r);
                        }
                    }
                    _ => {}
                }
            }
            if !busy {
                return wire;
            }
        }
    }
}

struct Sent {
    at: Instant,
    from: Side,
    msg: Message,
}

type DropFn = Box<dyn FnMut(Side, &Message) -> bool>;

struct World {
    t0: Instant,
    now: Instant,
    a: Ua,
    b: Ua,
    link: VecDeque<(Side, Vec<u8>)>,
    log: Vec<Sent>,
    drop: DropFn,
}

impl World {
    /// A's session sends `invite`; nothing is delivered yet.
    fn new(a: SessionConfig, b: SessionConfig, invite: Request) -> World {
        let t0 = origin();
        let mut ua_a = Ua::new(a.clone());
        ua_a.session = Some(InviteSession::uac(t0, invite, a).unwrap());
        World {
            t0,
            now: t0,
            a: ua_a,
            b: Ua::new(b),
            link: VecDeque::new(),
            log: Vec::new(),
            drop: Box::new(|_, _| false),
        }
    }

    /// A basic call with an early offer, up to the confirmed dialog.
    fn call(a: SessionConfig, b: SessionConfig) -> World {
        let mut w = World::new(a, b, invite(Some(offer())));
        w.settle();
        w.act(Side::B, |s, now| s.provisional(now, 180, None));
        w.act(Side::B, |s, now| s.accept(now, Some(answer())));
        w.settle();
        assert_eq!(w.session(Side::A).state(), SessionState::Confirmed);
        assert_eq!(w.session(Side::B).state(), SessionState::Confirmed);
        w
    }

    fn ua(&mut self, side: Side) -> &mut Ua {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    fn session(&mut self, side: Side) -> &mut InviteSession {
        self.ua(side).session.as_mut().unwrap()
    }

    fn act(
        &mut self,
        side: Side,
        f: impl FnOnce(&mut InviteSession, Instant) -> Result<(), SessionError>,
    ) {
        let now = self.now;
        f(self.session(side), now).unwrap();
    }

    fn send(&mut self, from: Side, msgs: Vec<Message>) {
        for m in msgs {
            let dropped = (self.drop)(from, &m);
            if !dropped {
                self.link.push_back((from.other(), m.to_bytes()));
            }
            self.log.push(Sent {
                at: self.now,
                from,
                msg: m,
            });
        }
    }

    /// Delivers everything in flight at the current instant.
    fn settle(&mut self) {
        loop {
            let now = self.now;
            let out = self.a.pump(now);
            self.send(Side::A, out);
            let out = self.b.pump(now);
            self.send(Side::B, out);
            let Some((to, bytes)) = self.link.pop_front() else {
                return;
            };
            let (m, _) = msg::parse(&bytes).expect("the peer's message parses");
            m.validate().unwrap();
            self.ua(to).layer.handle_message(now, m, UDP).unwrap();
        }
    }

    /// Runs virtual time forward by `d`, stepping from deadline to deadline.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.settle();
            let next = [
                self.a.layer.poll_timeout(),
                self.b.layer.poll_timeout(),
                self.a
                    .session
                    .as_ref()
                    .and_then(InviteSession::poll_timeout),
                self.b
                    .session
                    .as_ref()
                    .and_then(InviteSession::poll_timeout),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    self.a.layer.handle_timeout(now);
                    self.b.layer.handle_timeout(now);
                    for s in [&mut self.a.session, &mut self.b.session]
                        .into_iter()
                        .flatten()
                    {
                        s.handle_timeout(now);
                    }
                }
                _ => break,
            }
        }
        self.now = end;
        self.settle();
    }

    fn events(&self, side: Side) -> Vec<SessionEvent> {
        let ua = match side {
            Side::A => &self.a,
            Side::B => &self.b,
        };
        ua.events.iter().map(|(_, e)| e.clone()).collect()
    }

    /// When (since t0) and why `side` ended.
    fn ended(&self, side: Side) -> Option<(Duration, EndReason, Option<u16>)> {
        let ua = match side {
            Side::A => &self.a,
            Side::B => &self.b,
        };
        ua.events.iter().find_map(|(t, e)| match e {
            SessionEvent::Terminated { reason, status } => Some((*t - self.t0, *reason, *status)),
            _ => None,
        })
    }

    /// Times (since t0) at which `from` put a matching message on the link.
    fn sent(&self, from: Side, what: impl Fn(&Message) -> bool) -> Vec<Duration> {
        self.log
            .iter()
            .filter(|s| s.from == from && what(&s.msg))
            .map(|s| s.at - self.t0)
            .collect()
    }

    fn last(&self, from: Side, what: impl Fn(&Message) -> bool) -> Message {
        self.log
            .iter()
            .rev()
            .find(|s| s.from == from && what(&s.msg))
            .map(|s| s.msg.clone())
            .expect("such a message was sent")
    }

    /// Sends a request into `to`'s transaction layer as if from the peer.
    fn inject(&mut self, to: Side, req: Request) {
        self.link.push_back((to, req.to_bytes()));
        self.settle();
    }
}

fn is_req(m: &Message, method: Method) -> bool {
    m.as_request().is_some_and(|r| r.method() == &method)
}

fn is_resp(m: &Message, status: u16, method: Method) -> bool {
    m.as_response().is_some_and(|r| {
        r.status() == status && r.headers().cseq().is_ok_and(|(_, cm)| cm == method)
    })
}

fn req(method: Method) -> impl Fn(&Message) -> bool {
    move |m| is_req(m, method.clone())
}

fn resp(status: u16, method: Method) -> impl Fn(&Message) -> bool {
    move |m| is_resp(m, status, method.clone())
}

fn has(events: &[SessionEvent], e: &SessionEvent) -> bool {
    events.contains(e)
}

// ---------------------------------------------------------------------------------------
// Basic calls

#[test]
fn rfc3261_13_early_offer_call_and_caller_bye() {
    let mut w = World::call(cfg_a(), cfg_b());
    let a = w.events(Side::A);
    assert_eq!(
        &a[..],
        &[
            SessionEvent::Progress { status: 180 },
            SessionEvent::Answered,
            SessionEvent::RemoteAnswer { body: answer() },
            SessionEvent::Confirmed,
        ]
    );
    assert!(has(
        &w.events(Side::B),
        &SessionEvent::RemoteOffer {
            body: offer(),
            kind: OfferKind::Invite
        }
    ));
    assert!(has(&w.events(Side::B), &SessionEvent::Confirmed));
    // The 2xx carries our Contact and the answer.
    let ok = w.last(Side::B, resp(200, Method::Invite));
    assert_eq!(ok.body(), &answer()[..]);
    assert!(
        ok.headers()
            .get("Contact")
            .unwrap()
            .contains("bob@127.0.0.2")
    );
    w.act(Side::A, |s, now| s.bye(now));
    w.settle();
    assert_eq!(w.ended(Side::A).unwrap().1, EndReason::LocalBye);
    assert_eq!(w.ended(Side::B).unwrap().1, EndReason::RemoteBye);
    assert_eq!(w.sent(Side::B, resp(200, Method::Bye)).len(), 1);
    // The BYE went to the callee's Contact, inside the dialog.
    let bye = w.last(Side::A, req(Method::Bye));
    assert_eq!(bye.as_request().unwrap().uri(), "sip:bob@127.0.0.2:5060");
    // Nothing keeps running once the transactions have drained.
    w.advance(secs(40));
    assert!(w.a.layer.is_empty() && w.b.layer.is_empty());
    assert_eq!(w.session(Side::A).poll_timeout(), None);
    assert_eq!(w.session(Side::B).poll_timeout(), None);
}

#[test]
fn rfc3261_15_callee_hangs_up() {
    let mut w = World::call(cfg_a(), cfg_b());
    w.act(Side::B, |s, now| s.bye(now));
    w.settle();
    assert_eq!(w.ended(Side::B).unwrap().1, EndReason::LocalBye);
    assert_eq!(w.ended(Side::A).unwrap().1, EndReason::RemoteBye);
    let bye = w.last(Side::B, req(Method::Bye));
    let h = bye.headers();
    assert_eq!(bye.as_request().unwrap().uri(), "sip:alice@127.0.0.1:5060");
    assert_eq!(h.from().unwrap().tag.as_deref(), Some("bob-1"));
    assert_eq!(h.to().unwrap().tag.as_deref(), Some("alice-1"));
}

#[test]
fn rfc3264_late_offer_in_2xx_answer_in_ack() {
    let mut w = World::new(cfg_a(), cfg_b(), invite(None));
    w.settle();
    assert!(
        !w.events(Side::B)
            .iter()
            .any(|e| matches!(e, SessionEvent::RemoteOffer { .. }))
    );
    // The callee must offer in its 2xx.
    let now = w.now;
    assert!(matches!(
        w.session(Side::B).accept(now, None),
        Err(SessionError::Invalid(_))
    ));
    w.act(Side::B, |s, now| s.accept(now, Some(offer())));
    w.settle();
    assert!(has(
        &w.events(Side::A),
        &SessionEvent::RemoteOffer {
            body: offer(),
            kind: OfferKind::Final
        }
    ));
    assert!(
        w.sent(Side::A, req(Method::Ack)).is_empty(),
        "ACK waits for the answer"
    );
    assert_eq!(w.session(Side::A).state(), SessionState::Answered);
    w.act(Side::A, |s, now| s.answer(now, answer()));
    w.settle();
    let ack = w.last(Side::A, req(Method::Ack));
    assert_eq!(ack.body(), &answer()[..]);
    assert!(has(
        &w.events(Side::B),
        &SessionEvent::RemoteAnswer { body: answer() }
    ));
    assert!(has(&w.events(Side::B), &SessionEvent::Confirmed));
    assert!(has(&w.events(Side::A), &SessionEvent::Confirmed));
    assert_eq!(w.session(Side::A).state(), SessionState::Confirmed);
}

#[test]
fn rfc3261_13_2_1_ack_without_answer_to_an_offer_in_2xx_ends_the_call() {
    let mut w = World::new(cfg_a(), cfg_b(), invite(None));
    w.settle();
    w.act(Side::B, |s, now| s.accept(now, Some(offer())));
    w.settle();
    // The caller cannot use the offer: it acknowledges and hangs up at once.
    w.act(Side::A, |s, now| s.reject_offer(now, 488));
    w.settle();
    assert_eq!(w.ended(Side::A).unwrap().1, EndReason::OfferFailed);
    assert!(w.last(Side::A, req(Method::Ack)).body().is_empty());
    let b = w.ended(Side::B).unwrap().1;
    assert!(
        matches!(b, EndReason::RemoteBye | EndReason::OfferFailed),
        "{b:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 2xx reliability (RFC 3261 §13.3.1.4, RFC 6026)

#[test]
fn rfc3261_13_3_1_4_2xx_retransmitted_until_64_t1_then_bye() {
    let mut w = World::new(cfg_a(), cfg_b(), invite(Some(offer())));
    w.drop = Box::new(|from, m| from == Side::A && is_req(m, Method::Ack));
    w.settle();
    w.act(Side::B, |s, now| s.accept(now, Some(answer())));
    w.advance(secs(40));
    let oks = w.sent(Side::B, resp(200, Method::Invite));
    let want: Vec<Duration> = [
        0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500,
    ]
    .into_iter()
    .map(ms)
    .collect();
    assert_eq!(oks, want, "T1 doubling, capped at T2");
    // The caller acknowledged every copy (all lost).
    assert_eq!(w.sent(Side::A, req(Method::Ack)).len(), want.len());
    let (at, why, _) = w.ended(Side::B).unwrap();
    assert_eq!((at, why), (secs(32), EndReason::NoAck));
    assert_eq!(w.sent(Side::B, req(Method::Bye)), vec![secs(32)]);
    assert_eq!(w.ended(Side::A).unwrap().1, EndReason::RemoteBye);
}

#[test]
fn rfc3261_13_2_2_4_lost_ack_is_recovered_by_the_2xx_retransmission() {
    let mut w = World::new(cfg_a(), cfg_b(), invite(Some(offer())));
    let mut acks = 0;
    w.drop = Box::new(move |from, m| {
        if from == Side::A && is_req(m, Method::Ack) {
            acks += 1;
            return acks == 1;
        }
        false
    });
    w.settle();
    w.act(Side::B, |s, now| s.accept(now, Some(answer())));
    w.advance(secs(10));
    assert_eq!(
        w.sent(Side::B, resp(200, Method::Invite)),
        vec![ms(0), ms(500)]
    );
    assert_eq!(w.sent(Side::A, req(Method::Ack)), vec![ms(0), ms(500)]);
    let confirmed_at =
        w.b.events
            .iter()
            .find(|(_, e)| *e == SessionEvent::Confirmed)
            .map(|(t, _)| *t - w.t0);
    assert_eq!(confirmed_at, Some(ms(500)));
    assert!(w.ended(Side::A).is_none() && w.ended(Side::B).is_none());
    // The two ACKs are the same message (same branch): one ACK, retransmitted.
    let acks: Vec<_> = w
        .log
        .iter()
        .filter(|s| is_req(&s.msg, Method::Ack))
        .map(|s| s.msg.headers().top_via().unwrap().branch)
        .collect();
    assert_eq!(acks[0], acks[1]);
    assert_ne!(
        acks[0],
        w.log[0].msg.headers().top_via().unwrap().branch,
        "the ACK of a 2xx is its own transaction"
    );
}

// ---------------------------------------------------------------------------------------
// CANCEL (RFC 3261 §9)

#[test]
fn rfc3261_9_cancel_before_answer_gets_487_and_200() {
    let mut w = World::new(cfg_a(), cfg_b(), invite(Some(offer())));
    w.settle();
    w.act(Side::B, |s, now| s.provisional(now, 180, None));
    w.settle();
    w.act(Side::A, |s, now| s.cancel(now));
    w.settle();
    assert_eq!(w.sent(Side::B, resp(200, Method::Cancel)).len(), 1);
    assert_eq!(w.sent(Side::B, resp(487, Method::Invite)).len(), 1);
    assert_eq!(
        w.ended(Side::A).map(|e| (e.1, e.2)),
        Some((EndReason::Cancelled, Some(487)))
    );
    assert_eq!(
        w.ended(Side::B).map(|e| (e.1, e.2)),
        Some((EndReason::Cancelled, Some(487)))
    );
    // The CANCEL shares the INVITE's branch and CSeq number.
    let c = w.last(Side::A, req(Method::Cancel));
    assert_eq!(
        c.headers().top_via().unwrap().branch.as_deref(),
        Some("z9hG4bK-inv-1")
    );
    assert_eq!(c.headers().cseq().unwrap(), (1, Method::Cancel));
    // The 487 was acknowledged by the caller's transaction: B's transaction ends.
    w.advance(secs(40));
    assert!(w.b.layer.is_empty());
}

#[test]
fn rfc3261_9_1_cancel_waits_for_a_provisional_response() {
    let mut w = World::new(cfg_a(), cfg_b(), invite(Some(offer())));
    // Asked before anything came back: held until the 100 Trying.
    w.act(Side::A, |s, now| s.cancel(now));
    w.settle();
    let order: Vec<String> = w
        .log
        .iter()
        .map(|s| match &s.msg {
            Message::Request(r) => r.method().to_string(),
            Message::Response(r) => r.status().to_string(),
        })
        .collect();
    let trying = order.iter().position(|m| m == "100").unwrap();
    let cancel = order.iter().position(|m| m == "CANCEL").unwrap();
    assert!(trying < cancel, "{order:?}");
    assert_eq!(w.ended(Side::A).unwrap().2, Some(487));
}

#[test]
fn rfc3261_9_cancel_racing_the_2xx_caller_acks_then_byes() {
    let mut w = World::new(cfg_a(), cfg_b(), invite(Some(offer())));
    w.settle();
    w.act(Side::B, |s, now| s.provisional(now, 180, None));
    w.settle();
    // Both at the same instant: the 200 and the CANCEL cross on the link.
    w.act(Side::A, |s, now| s.cancel(now));
    w.act(Side::B, |s, now| s.accept(now, Some(answer())));
    w.settle();
    assert_eq!(w.sent(Side::B, resp(200, Method::Cancel)).len(), 1);
    assert!(
        w.sent(Side::B, resp(487, Method::Invite)).is_empty(),
        "200 won"
    );
    assert_eq!(w.sent(Side::A, req(Method::Ack)).len(), 1);
    assert_eq!(w.sent(Side::A, req(Method::Bye)).len(), 1);
    assert_eq!(
        w.ended(Side::A).map(|e| (e.1, e.2)),
        Some((EndReason::Cancelled, Some(200)))
    );
    assert_eq!(w.ended(Side::B).unwrap().1, EndReason::RemoteBye);
}

// ---------------------------------------------------------------------------------------
// Reliable provisional responses (RFC 3262)

fn reliable_183(a: SessionConfig) {
    let mut w = World::new(a, cfg_b(), invite(Some(offer())));
    w.settle();
    w.act(Side::B, |s, now| s.provisional(now, 183, Some(answer())));
    w.settle();
    let p = w.last(Side::B, resp(183, Method::Invite));
    assert_eq!(p.headers().get("Require"), Some("100rel"));
    let rseq = p.headers().get("RSeq").unwrap().to_owned();
    let prack = w.last(Side::A, req(Method::Prack));
    assert_eq!(
        prack.headers().get("RAck"),
        Some(format!("{rseq} 1 INVITE").as_str())
    );
    assert_eq!(w.sent(Side::B, resp(200, Method::Prack)).len(), 1);
    assert!(has(
        &w.events(Side::A),
        &SessionEvent::RemoteAnswer { body: answer() }
    ));
    // Offer/answer is done: the 2xx carries no SDP, and the caller takes it as is.
    w.act(Side::B, |s, now| s.accept(now, None));
    w.settle();
    assert!(w.last(Side::B, resp(200, Method::Invite)).body().is_empty());
    assert!(has(&w.events(Side::A), &SessionEvent::Confirmed));
    let answers = w
        .events(Side::A)
        .iter()
        .filter(|e| matches!(e, SessionEvent::RemoteAnswer { .. }))
        .count();
    assert_eq!(answers, 1);
    // No retransmission of the acknowledged 183.
    w.advance(secs(5));
    assert_eq!(w.sent(Side::B, resp(183, Method::Invite)).len(), 1);
}

#[test]
fn rfc3262_reliable_183_with_sdp_and_prack_when_supported() {
    reliable_183(cfg_a());
}

#[test]
fn rfc3262_reliable_183_with_sdp_and_prack_when_required() {
    let mut a = cfg_a();
    a.rel100 = Rel100::Required;
    reliable_183(a);
}

#[test]
fn rfc3262_3_lost_prack_retransmits_the_1xx_and_delays_the_2xx() {
    let mut w = World::new(cfg_a(), cfg_b(), invite(Some(offer())));
    let mut pracks = 0;
    w.drop = Box::new(move |from, m| {
        if from == Side::A && is_req(m, Method::Prack) {
            pracks += 1;
            return pracks == 1;
        }
        false
    });
    w.settle();
    w.act(Side::B, |s, now| s.provisional(now, 183, Some(answer())));
    // The 2xx must wait for the PRACK of a 1xx that carried SDP (RFC 3262 §3).
    w.act(Side::B, |s, now| s.accept(now, None));
    w.settle();
    assert!(w.sent(Side::B, resp(200, Method::Invite)).is_empty());
    w.advance(secs(5));
    assert_eq!(
        w.sent(Side::B, resp(183, Method::Invite)),
        vec![ms(0), ms(500)]
    );
    assert_eq!(w.sent(Side::A, req(Method::Prack)), vec![ms(0), ms(500)]);
    // The 1xx retransmission is not PRACKed again: the PRACK transaction retransmits.
    assert_eq!(w.sent(Side::B, resp(200, Method::Prack)), vec![ms(500)]);
    assert_eq!(w.sent(Side::B, resp(200, Method::Invite)), vec![ms(500)]);
    assert!(has(&w.events(Side::A), &SessionEvent::Confirmed));
}

#[test]
fn rfc3262_3_no_prack_within_64_t1_rejects_the_invite() {
    let mut w = World::new(cfg_a(), cfg_b(), invite(Some(offer())));
    w.drop = Box::new(|from, m| from == Side::A && is_req(m, Method::Prack));
    w.settle();
    w.act(Side::B, |s, now| s.provisional(now, 180, None));
    w.advance(secs(40));
    let want: Vec<Duration> = [0, 500, 1500, 3500, 7500, 15500, 31500]
        .into_iter()
        .map(ms)
        .collect();
    assert_eq!(
        w.sent(Side::B, resp(180, Method::Invite)),
        want,
        "T1 doubling"
    );
    assert_eq!(
        w.ended(Side::B),
        Some((secs(32), EndReason::NoPrack, Some(504)))
    );
    assert_eq!(
        w.sent(Side::B, resp(504, Method::Invite)).first(),
        Some(&secs(32))
    );
    // The caller ends at 32 s too, by the 504 (its INVITE transaction runs no Timer B once
    // a provisional has arrived, RFC 3261 §17.1.1.2).
    assert_eq!(
        w.ended(Side::A),
        Some((secs(32), EndReason::Rejected, Some(504)))
    );
}

#[test]
fn rfc3262_3_second_reliable_1xx_waits_for_the_first_prack() {
    let mut w = World::new(cfg_a(), cfg_b(), invite(Some(offer())));
    w.settle();
    w.act(Side::B, |s, now| s.provisional(now, 183, Some(answer())));
    w.act(Side::B, |s, now| s.provisional(now, 180, None));
    w.settle();
    let rseqs: Vec<u32> = w
        .log
        .iter()
        .filter(|s| s.from == Side::B)
        .filter_map(|s| s.msg.headers().get("RSeq").map(|v| v.parse().unwrap()))
        .collect();
    assert_eq!(rseqs.len(), 2);
    assert_eq!(rseqs[1], rseqs[0] + 1);
    assert_eq!(w.sent(Side::A, req(Method::Prack)).len(), 2);
    let events = w.events(Side::A);
    assert!(has(&events, &SessionEvent::Progress { status: 183 }));
    assert!(has(&events, &SessionEvent::Progress { status: 180 }));
}

#[test]
fn rfc3262_offer_in_reliable_1xx_answered_in_prack() {
    let mut w = World::new(cfg_a(), cfg_b(), invite(None));
    w.settle();
    w.act(Side::B, |s, now| s.provisional(now, 183, Some(offer())));
    w.settle();
    assert!(has(
        &w.events(Side::A),
        &SessionEvent::RemoteOffer {
            body: offer(),
            kind: OfferKind::Provisional
        }
    ));
    assert!(
        w.sent(Side::A, req(Method::Prack)).is_empty(),
        "PRACK waits for the answer"
    );
    w.act(Side::A, |s, now| s.answer(now, answer()));
    w.settle();
    assert_eq!(w.last(Side::A, req(Method::Prack)).body(), &answer()[..]);
    assert!(has(
        &w.events(Side::B),
        &SessionEvent::RemoteAnswer { body: answer() }
    ));
    w.act(Side::B, |s, now| s.accept(now, None));
    w.settle();
    assert_eq!(w.session(Side::A).state(), SessionState::Confirmed);
    assert_eq!(w.session(Side::B).state(), SessionState::Confirmed);
}

// ---------------------------------------------------------------------------------------
// Mid-call offers: hold, glare, UPDATE

#[test]
fn rfc3264_8_4_hold_and_resume_by_reinvite() {
    let mut w = World::call(cfg_a(), cfg_b());
    w.act(Side::A, |s, now| {
        s.reinvite(now, Some(sdp(2, 4000, "sendonly")))
    });
    w.settle();
    let remote = w.session(Side::B).remote_sdp().unwrap().to_vec();
    assert!(Sdp::parse(&remote).unwrap().is_hold(0));
    assert!(has(
        &w.events(Side::B),
        &SessionEvent::RemoteOffer {
            body: sdp(2, 4000, "sendonly"),
            kind: OfferKind::Reinvite
        }
    ));
    // While the answer is pending, a second offer from the callee is refused locally.
    let now = w.now;
    assert_eq!(
        w.session(Side::B).reinvite(now, Some(answer())),
        Err(SessionError::Busy)
    );
    w.act(Side::B, |s, now| s.answer(now, sdp(2, 5000, "recvonly")));
    w.settle();
    assert!(has(
        &w.events(Side::A),
        &SessionEvent::RemoteAnswer {
            body: sdp(2, 5000, "recvonly")
        }
    ));
    assert_eq!(w.sent(Side::A, req(Method::Ack)).len(), 2);
    w.act(Side::A, |s, now| {
        s.reinvite(now, Some(sdp(3, 4000, "sendrecv")))
    });
    w.settle();
    w.act(Side::B, |s, now| s.answer(now, sdp(3, 5000, "sendrecv")));
    w.settle();
    let remote = w.session(Side::B).remote_sdp().unwrap().to_vec();
    assert!(!Sdp::parse(&remote).unwrap().is_hold(0));
    assert_eq!(
        w.session(Side::A).remote_sdp(),
        Some(&sdp(3, 5000, "sendrecv")[..])
    );
    assert_eq!(w.sent(Side::A, req(Method::Ack)).len(), 3);
    // The re-INVITEs were acknowledged: no 2xx retransmissions.
    w.advance(secs(5));
    assert_eq!(w.sent(Side::B, resp(200, Method::Invite)).len(), 3);
}

#[test]
fn rfc3261_13_2_2_4_late_initial_2xx_after_a_reinvite_is_acked_again_not_byed() {
    let mut w = World::call(cfg_a(), cfg_b());
    let initial = w
        .log
        .iter()
        .find(|s| s.from == Side::B && resp(200, Method::Invite)(&s.msg))
        .map(|s| s.msg.clone())
        .unwrap();
    w.act(Side::A, |s, now| {
        s.reinvite(now, Some(sdp(2, 4000, "sendonly")))
    });
    w.settle();
    w.act(Side::B, |s, now| s.answer(now, sdp(2, 5000, "recvonly")));
    w.settle();
    let acks = w.sent(Side::A, req(Method::Ack)).len();
    // The initial 2xx arrives once more, late (a slow path, a proxy's retransmission).
    let Message::Response(late) = initial else {
        panic!("not a response")
    };
    w.act(Side::A, |s, now| {
        s.handle_response(now, &late);
        Ok(())
    });
    w.settle();
    assert_eq!(w.sent(Side::A, req(Method::Ack)).len(), acks + 1);
    assert!(w.sent(Side::A, req(Method::Bye)).is_empty());
    assert!(w.ended(Side::A).is_none() && w.ended(Side::B).is_none());
}

#[test]
fn rfc3261_14_1_reinvite_glare_491_then_backoff_retries() {
    let mut w = World::call(cfg_a(), cfg_b());
    w.a.auto_answer = Some(sdp(5, 4000, "sendrecv"));
    w.b.auto_answer = Some(sdp(5, 5000, "sendrecv"));
    let t = w.now - w.t0;
    w.act(Side::A, |s, now| {
        s.reinvite(now, Some(sdp(2, 4000, "sendonly")))
    });
    w.act(Side::B, |s, now| {
        s.reinvite(now, Some(sdp(2, 5000, "sendonly")))
    });
    w.advance(secs(10));
    assert_eq!(w.sent(Side::A, resp(491, Method::Invite)), vec![t]);
    assert_eq!(w.sent(Side::B, resp(491, Method::Invite)), vec![t]);
    let a_invites = w.sent(Side::A, req(Method::Invite));
    let b_invites = w.sent(Side::B, req(Method::Invite));
    assert_eq!(a_invites.len(), 3, "initial, glare, retry");
    assert_eq!(b_invites.len(), 2, "glare, retry");
    // The Call-ID owner (the caller) waits 2.1-4 s, the other side 0-2 s (RFC 3261 §14.1).
    let a_wait = a_invites[2] - t;
    let b_wait = b_invites[1] - t;
    assert!(a_wait >= ms(2100) && a_wait <= secs(4), "{a_wait:?}");
    assert!(b_wait <= secs(2), "{b_wait:?}");
    // Both offers went through in the end.
    assert!(has(
        &w.events(Side::A),
        &SessionEvent::RemoteAnswer {
            body: sdp(5, 5000, "sendrecv")
        }
    ));
    assert!(has(
        &w.events(Side::B),
        &SessionEvent::RemoteAnswer {
            body: sdp(5, 4000, "sendrecv")
        }
    ));
    assert!(w.ended(Side::A).is_none() && w.ended(Side::B).is_none());
}

#[test]
fn rfc3311_update_in_early_and_confirmed_dialog() {
    let mut w = World::new(cfg_a(), cfg_b(), invite(Some(offer())));
    w.settle();
    w.act(Side::B, |s, now| s.provisional(now, 183, Some(answer())));
    w.settle();
    // Early dialog, initial offer/answer complete: the caller updates.
    w.act(Side::A, |s, now| s.update(now, sdp(2, 4002, "sendrecv")));
    w.settle();
    assert!(has(
        &w.events(Side::B),
        &SessionEvent::RemoteOffer {
            body: sdp(2, 4002, "sendrecv"),
            kind: OfferKind::Update
        }
    ));
    w.act(Side::B, |s, now| s.answer(now, sdp(2, 5002, "sendrecv")));
    w.settle();
    assert!(has(
        &w.events(Side::A),
        &SessionEvent::RemoteAnswer {
            body: sdp(2, 5002, "sendrecv")
        }
    ));
    assert_eq!(w.session(Side::A).state(), SessionState::Early);
    w.act(Side::B, |s, now| s.accept(now, None));
    w.settle();
    // Confirmed: the callee updates; a second offer meanwhile is glare (491).
    w.act(Side::B, |s, now| s.update(now, sdp(3, 5003, "sendrecv")));
    w.act(Side::A, |s, now| s.update(now, sdp(3, 4003, "sendrecv")));
    w.settle();
    assert_eq!(w.sent(Side::A, resp(491, Method::Update)).len(), 1);
    assert_eq!(w.sent(Side::B, resp(491, Method::Update)).len(), 1);
    assert!(w.ended(Side::A).is_none() && w.ended(Side::B).is_none());
}

#[test]
fn rfc3311_5_2_update_while_their_offer_is_unanswered_gets_500_retry_after() {
    let mut w = World::call(cfg_a(), cfg_b());
    w.act(Side::A, |s, now| {
        s.reinvite(now, Some(sdp(2, 4000, "sendonly")))
    });
    w.settle();
    // B has not answered A's re-INVITE; an UPDATE offer from A breaks the rules.
    let mut d = w.session(Side::A).dialog().unwrap().clone();
    let mut upd = d
        .new_request(Method::Update, "SIP/2.0/UDP 127.0.0.1:5060", "z9hG4bK-upd")
        .unwrap();
    upd.headers_mut()
        .push("Content-Type", "application/sdp")
        .unwrap();
    upd.set_body(offer());
    w.inject(Side::B, upd);
    let r = w.last(Side::B, resp(500, Method::Update));
    let ra: u32 = r.headers().get("Retry-After").unwrap().parse().unwrap();
    assert!(ra <= 10);
}

#[test]
fn rfc3261_9_2_cancel_of_a_pending_reinvite_keeps_the_call() {
    let mut w = World::call(cfg_a(), cfg_b());
    w.act(Side::A, |s, now| {
        s.reinvite(now, Some(sdp(2, 4000, "sendonly")))
    });
    w.settle();
    // The callee's app has not answered yet; the caller's side cancels the re-INVITE.
    let re = w.last(Side::A, req(Method::Invite));
    let h = re.headers();
    let mut cancel = Request::new(Method::Cancel, re.as_request().unwrap().uri()).unwrap();
    for name in ["Via", "From", "To", "Call-ID"] {
        cancel
            .headers_mut()
            .push(name, h.get(name).unwrap())
            .unwrap();
    }
    let seq = h.cseq().unwrap().0;
    cancel
        .headers_mut()
        .push("CSeq", &format!("{seq} CANCEL"))
        .unwrap();
    w.inject(Side::B, cancel);
    assert_eq!(w.sent(Side::B, resp(200, Method::Cancel)).len(), 1);
    assert_eq!(w.sent(Side::B, resp(487, Method::Invite)).len(), 1);
    assert!(has(
        &w.events(Side::A),
        &SessionEvent::OfferRejected { status: 487 }
    ));
    // Both sides can offer again; the call is up.
    let now = w.now;
    assert_eq!(
        w.session(Side::B).answer(now, answer()),
        Err(SessionError::State("no offer awaits an answer"))
    );
    w.b.auto_answer = Some(sdp(3, 5000, "sendrecv"));
    w.act(Side::A, |s, now| {
        s.reinvite(now, Some(sdp(3, 4000, "sendrecv")))
    });
    w.settle();
    assert!(has(
        &w.events(Side::A),
        &SessionEvent::RemoteAnswer {
            body: sdp(3, 5000, "sendrecv")
        }
    ));
    assert!(w.ended(Side::A).is_none() && w.ended(Side::B).is_none());
}

#[test]
fn rfc3261_14_offerless_reinvite_offer_in_2xx_answer_in_ack() {
    let mut w = World::call(cfg_a(), cfg_b());
    w.act(Side::A, |s, now| s.reinvite(now, None));
    w.settle();
    assert!(has(&w.events(Side::B), &SessionEvent::OfferRequested));
    w.act(Side::B, |s, now| s.answer(now, sdp(2, 5000, "sendrecv")));
    w.settle();
    assert!(has(
        &w.events(Side::A),
        &SessionEvent::RemoteOffer {
            body: sdp(2, 5000, "sendrecv"),
            kind: OfferKind::Final
        }
    ));
    w.act(Side::A, |s, now| s.answer(now, sdp(2, 4000, "sendrecv")));
    w.settle();
    assert_eq!(
        w.last(Side::A, req(Method::Ack)).body(),
        &sdp(2, 4000, "sendrecv")[..]
    );
    assert!(has(
        &w.events(Side::B),
        &SessionEvent::RemoteAnswer {
            body: sdp(2, 4000, "sendrecv")
        }
    ));
    w.advance(secs(5));
    assert_eq!(w.sent(Side::B, resp(200, Method::Invite)).len(), 2);
}

// ---------------------------------------------------------------------------------------
// Session timers (RFC 4028)

fn timer_cfgs(se: u32) -> (SessionConfig, SessionConfig) {
    let mut a = cfg_a();
    a.session_expires = Some(se);
    (a, cfg_b())
}

#[test]
fn rfc4028_refresher_updates_at_half_interval_and_the_call_stays_up() {
    let (a, b) = timer_cfgs(90);
    let mut w = World::call(a, b);
    // The caller supports timers and named no refresher: the callee picks it (§9).
    let ok = w.last(Side::B, resp(200, Method::Invite));
    assert_eq!(
        ok.headers().get("Session-Expires"),
        Some("90;refresher=uac")
    );
    assert_eq!(ok.headers().get("Require"), Some("timer"));
    assert_eq!(
        w.session(Side::A).session_timer(),
        Some((90, Refresher::Local))
    );
    assert_eq!(
        w.session(Side::B).session_timer(),
        Some((90, Refresher::Remote))
    );
    let t = w.now - w.t0;
    w.advance(secs(600));
    let updates = w.sent(Side::A, req(Method::Update));
    let want: Vec<Duration> = (1..=13).map(|i| t + secs(45 * i)).collect();
    assert_eq!(updates, want);
    let refreshed = w
        .events(Side::A)
        .iter()
        .filter(|e| **e == SessionEvent::RefreshDone)
        .count();
    assert_eq!(refreshed, 13);
    assert!(w.ended(Side::A).is_none() && w.ended(Side::B).is_none());
    assert!(w.sent(Side::B, req(Method::Bye)).is_empty());
}

#[test]
fn rfc4028_refresh_by_reinvite_when_the_peer_lacks_update() {
    let (a, b) = timer_cfgs(90);
    let mut w = World::new(a, b, invite(Some(offer())));
    // The callee's app is not asked: an unchanged offer gets the same answer again.
    // Strip UPDATE from the callee's Allow on the way to the caller.
    w.settle();
    w.act(Side::B, |s, now| s.accept(now, Some(answer())));
    let mut out = w.b.pump(w.now);
    for m in &mut out {
        if m.as_response().is_some() {
            m.headers_mut()
                .set("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS")
                .unwrap();
        }
    }
    w.send(Side::B, out);
    w.settle();
    w.advance(secs(50));
    let reinvites = w.sent(Side::A, req(Method::Invite));
    assert_eq!(reinvites.len(), 2);
    let re = w.last(Side::A, req(Method::Invite));
    assert_eq!(re.body(), &offer()[..], "the same SDP: no change");
    assert_eq!(
        re.headers().get("Session-Expires"),
        Some("90;refresher=uac")
    );
    assert!(has(&w.events(Side::A), &SessionEvent::RefreshDone));
    assert_eq!(
        w.last(Side::B, resp(200, Method::Invite)).body(),
        &answer()[..]
    );
    assert!(!w.events(Side::B).iter().any(|e| matches!(
        e,
        SessionEvent::RemoteOffer {
            kind: OfferKind::Reinvite,
            ..
        }
    )));
    assert_eq!(w.session(Side::B).state(), SessionState::Confirmed);
}

/// A 2xx's Session-Expires is clamped to [our Min-SE, a day]: 1 would refresh in a loop,
/// 0 end the call at once, a huge value switch the timer off.
#[test]
fn rfc4028_session_expires_in_a_2xx_is_clamped() {
    for (se, want) in [("1", 90), ("0", 90), ("4000000000", 86_400)] {
        let (a, b) = timer_cfgs(90);
        let mut w = World::new(a, b, invite(Some(offer())));
        w.settle();
        w.act(Side::B, |s, now| s.accept(now, Some(answer())));
        let mut out = w.b.pump(w.now);
        for m in &mut out {
            if m.as_response().is_some_and(|r| r.status() == 200) {
                m.headers_mut()
                    .set("Session-Expires", &format!("{se};refresher=uac"))
                    .unwrap();
            }
        }
        w.send(Side::B, out);
        w.settle();
        assert_eq!(
            w.session(Side::A).session_timer(),
            Some((want, Refresher::Local)),
            "Session-Expires: {se}"
        );
        let t = w.now - w.t0;
        w.advance(secs(40));
        assert!(w.sent(Side::A, req(Method::Update)).is_empty(), "{se}");
        assert!(w.ended(Side::A).is_none(), "{se}");
        if want == 90 {
            w.advance(secs(10));
            assert_eq!(w.sent(Side::A, req(Method::Update)), vec![t + secs(45)]);
        }
    }
}

#[test]
fn rfc4028_10_no_refresh_non_refresher_byes_before_expiry() {
    let (a, b) = timer_cfgs(90);
    let mut w = World::call(a, b);
    let t = w.now - w.t0;
    w.drop = Box::new(|from, m| from == Side::A && is_req(m, Method::Update));
    w.advance(secs(120));
    // interval - min(32, interval/3) = 60 s after the 2xx.
    assert_eq!(
        w.ended(Side::B),
        Some((t + secs(60), EndReason::SessionExpired, None))
    );
    assert_eq!(w.sent(Side::B, req(Method::Bye)), vec![t + secs(60)]);
    assert_eq!(w.ended(Side::A).unwrap().1, EndReason::RemoteBye);
}

#[test]
fn rfc4028_7_4_422_retried_with_the_larger_interval() {
    let (a, mut b) = timer_cfgs(90);
    b.min_se = 300;
    let mut w = World::new(a, b, invite(Some(offer())));
    w.settle();
    let r422 = w.last(Side::B, resp(422, Method::Invite));
    assert_eq!(r422.headers().get("Min-SE"), Some("300"));
    let invites: Vec<Message> = w
        .log
        .iter()
        .filter(|s| is_req(&s.msg, Method::Invite))
        .map(|s| s.msg.clone())
        .collect();
    assert_eq!(invites.len(), 2);
    assert_eq!(invites[1].headers().cseq().unwrap().0, 2);
    assert_eq!(invites[1].headers().get("Session-Expires"), Some("300"));
    assert_ne!(
        invites[0].headers().top_via().unwrap().branch,
        invites[1].headers().top_via().unwrap().branch
    );
    // The callee refused the first INVITE without a session; the retry made one.
    w.act(Side::B, |s, now| s.accept(now, Some(answer())));
    w.settle();
    assert_eq!(
        w.session(Side::A).session_timer(),
        Some((300, Refresher::Local))
    );
    assert_eq!(w.session(Side::A).state(), SessionState::Confirmed);
    assert!(w.ended(Side::A).is_none());
}

// ---------------------------------------------------------------------------------------
// Refusals

#[test]
fn rfc3261_8_2_2_3_unknown_require_gets_420() {
    let mut inv = invite(Some(offer()));
    inv.headers_mut().push("Require", "foo, 100rel").unwrap();
    let mut w = World::new(cfg_a(), cfg_b(), inv);
    w.settle();
    let r = w.last(Side::B, resp(420, Method::Invite));
    assert_eq!(r.headers().get("Unsupported"), Some("foo"));
    assert_eq!(
        w.ended(Side::A),
        Some((ms(0), EndReason::Rejected, Some(420)))
    );
}

#[test]
fn rfc3261_12_2_2_request_on_an_ended_or_unknown_dialog_gets_481() {
    let mut w = World::call(cfg_a(), cfg_b());
    let mut d = w.session(Side::A).dialog().unwrap().clone();
    // A wrong remote tag is another dialog.
    let mut stranger = d
        .new_request(Method::Info, "SIP/2.0/UDP 127.0.0.1:5060", "z9hG4bK-x1")
        .unwrap();
    stranger
        .headers_mut()
        .set("To", "<sip:bob@127.0.0.2>;tag=someone-else")
        .unwrap();
    w.inject(Side::B, stranger);
    assert_eq!(w.sent(Side::B, resp(481, Method::Info)).len(), 1);
    w.act(Side::A, |s, now| s.bye(now));
    w.settle();
    d.state = DialogState::Confirmed;
    let late = d
        .new_request(Method::Info, "SIP/2.0/UDP 127.0.0.1:5060", "z9hG4bK-x2")
        .unwrap();
    w.inject(Side::B, late);
    assert_eq!(w.sent(Side::B, resp(481, Method::Info)).len(), 2);
}

#[test]
fn rfc3261_12_2_1_2_481_to_an_in_dialog_request_ends_the_call() {
    let mut w = World::call(cfg_a(), cfg_b());
    // The callee forgets the call without a BYE reaching the caller.
    w.drop = Box::new(|from, m| from == Side::B && is_req(m, Method::Bye));
    w.act(Side::B, |s, now| s.bye(now));
    w.settle();
    w.drop = Box::new(|_, _| false);
    w.act(Side::A, |s, now| {
        s.info(now, "application/dtmf-relay", b"Signal=5\r\n".to_vec())
    });
    w.settle();
    assert_eq!(
        w.ended(Side::A).map(|e| (e.1, e.2)),
        Some((EndReason::DialogGone, Some(481)))
    );
}

#[test]
fn rfc6086_info_is_answered_and_delivered() {
    let mut w = World::call(cfg_a(), cfg_b());
    w.act(Side::A, |s, now| {
        s.info(now, "application/dtmf-relay", b"Signal=5\r\n".to_vec())
    });
    w.settle();
    assert_eq!(w.sent(Side::B, resp(200, Method::Info)).len(), 1);
    assert!(
        w.events(Side::B)
            .iter()
            .any(|e| matches!(e, SessionEvent::Info(r) if r.body() == b"Signal=5\r\n"))
    );
}
