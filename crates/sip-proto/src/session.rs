//! The INVITE session usage (RFC 3261 §13-15) on top of a [`Dialog`]: offer/answer
//! bookkeeping (RFC 3264, RFC 6337), reliable provisional responses (RFC 3262), UPDATE
//! (RFC 3311), session timers (RFC 4028) and the TU's 2xx/ACK duties (RFC 6026).
//!
//! Sans-IO like the rest of the crate: inputs are `handle_*(now, …)` and the app's commands,
//! outputs are drained with [`InviteSession::poll_action`], and [`InviteSession::poll_timeout`]
//! is the one deadline to arm. Randomness (branches, RSeq, back-offs) comes from
//! [`SessionConfig::seed`].
//!
//! # Contract with the shell (the owner of the [`TxnLayer`](crate::layer::TxnLayer))
//! * [`Action::SendRequest`] starts a client transaction; [`Action::SendAck`] is sent
//!   outside any transaction; [`Action::Respond`] answers the server transaction named by
//!   the `TxnId` the shell passed in. A 2xx to an INVITE is repeated with `Respond` on the
//!   same transaction (RFC 6026 Accepted passes it through); a `Respond` to a transaction
//!   the layer has already forgotten may be dropped.
//! * Requests of the dialog go to [`InviteSession::handle_request`] (a CANCEL too: the layer
//!   names the INVITE it cancels); ACKs (`AckForTu`, `StrayAck`) to
//!   [`InviteSession::handle_ack`]; responses (`Response`, and `StrayResponse` for 2xx
//!   retransmissions) to [`InviteSession::handle_response`]; Timer B/F of a client
//!   transaction to [`InviteSession::handle_txn_timeout`] with the request that started it.
//!   Timer H needs nothing: the session retransmits its 2xx and gives up on its own.
//! * The server INVITE transaction already sends 100 (Trying); the session never does.
//!
//! # What the application does
//! It supplies every SDP body (offers and answers) and learns the peer's through
//! [`SessionEvent`]s. The session only tracks who owes an answer and refuses what offer/answer
//! forbids: an offer while ours is unanswered gets 491, while theirs is unanswered 500 with
//! Retry-After. INFO is answered 200 at once and handed up. Our session refreshes are an
//! UPDATE without a body when the peer allows UPDATE, else a re-INVITE repeating our last
//! SDP unchanged (RFC 4028 §10, RFC 3264 §8).

use crate::dialog::{Dialog, DialogError, DialogState, creating_response};
use crate::layer::TxnId;
use crate::msg::{Headers, Method, MsgError, Request, Response};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, PRACK, UPDATE, INFO";
const SDP: &str = "application/sdp";

/// Whether we use reliable provisional responses (RFC 3262).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rel100 {
    Disabled,
    /// Advertised; a UAS sends its provisionals reliably when the peer supports them.
    Supported,
    /// A UAC requires them; a UAS refuses (421) callers that do not support them.
    Required,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    pub t1: Duration,
    pub t2: Duration,
    pub rel100: Rel100,
    /// The session interval we ask for (RFC 4028); `None`: we do not support session timers.
    pub session_expires: Option<u32>,
    /// The smallest session interval we accept (RFC 4028 §5, at least 90).
    pub min_se: u32,
    /// Our Contact (name-addr), put in dialog-creating and target refresh messages.
    pub local_contact: String,
    /// The Via of requests the session originates, without branch (`SIP/2.0/UDP host:port`).
    pub via: String,
    pub user_agent: Option<String>,
    /// Seeds the branches, RSeq start and back-offs; draw it from the shell's RNG per session.
    pub seed: u64,
}

impl SessionConfig {
    /// RFC defaults: T1 500 ms, T2 4 s, 100rel supported, 1800 s session interval, Min-SE 90.
    pub fn new(local_contact: &str, via: &str, seed: u64) -> Self {
        SessionConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            rel100: Rel100::Supported,
            session_expires: Some(1800),
            min_se: 90,
            local_contact: local_contact.to_owned(),
            via: via.to_owned(),
            user_agent: None,
            seed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Respond on the server transaction `TxnId`.
    Respond(TxnId, Response),
    /// Start a client transaction with this request.
    SendRequest(Request),
    /// Send this ACK (of a 2xx) outside any transaction.
    SendAck(Request),
    Event(SessionEvent),
}

/// Where an offer travelled; it decides where its answer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferKind {
    /// The initial INVITE: the UAS answers in [`InviteSession::provisional`] (reliable) or
    /// [`InviteSession::accept`].
    Invite,
    /// A reliable provisional response to an offerless INVITE: answered in the PRACK.
    Provisional,
    /// The 2xx to an offerless INVITE or re-INVITE: answered in the ACK.
    Final,
    Reinvite,
    Update,
}

/// Who sends the session refreshes (RFC 4028).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    Local,
    Remote,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    LocalBye,
    RemoteBye,
    Cancelled,
    /// The initial INVITE got (or we sent) a final non-2xx response.
    Rejected,
    /// A request of ours timed out or got 408.
    Timeout,
    /// No ACK came for our 2xx within 64*T1 (RFC 3261 §13.3.1.4); we sent BYE.
    NoAck,
    /// No PRACK came for a reliable provisional within 64*T1 (RFC 3262 §3); we sent 504.
    NoPrack,
    /// The session interval passed without a refresh (RFC 4028 §10); we sent BYE.
    SessionExpired,
    /// The peer answered 481: it knows no such dialog.
    DialogGone,
    /// An offer went unanswered where an answer was due (e.g. an ACK without one); we sent BYE.
    OfferFailed,
    /// The peer broke the protocol (e.g. a 2xx without Contact).
    Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The peer's offer; answer with [`InviteSession::answer`] (or `provisional`/`accept`
    /// for [`OfferKind::Invite`]), or refuse it with [`InviteSession::reject_offer`].
    RemoteOffer {
        body: Vec<u8>,
        kind: OfferKind,
    },
    /// The peer's offerless re-INVITE wants an offer: give it with [`InviteSession::answer`].
    OfferRequested,
    RemoteAnswer {
        body: Vec<u8>,
    },
    /// An SDP in an unreliable provisional response: a preview of the answer (RFC 3960).
    EarlyMedia {
        body: Vec<u8>,
    },
    /// Our re-INVITE or UPDATE was refused (not 491, which is retried); the old session holds.
    OfferRejected {
        status: u16,
    },
    /// A provisional response above 100 reached us (UAC).
    Progress {
        status: u16,
    },
    /// A 2xx to the initial INVITE was received (UAC) or sent (UAS).
    Answered,
    /// The initial 2xx was acknowledged: ACK received (UAS) or sent (UAC).
    Confirmed,
    /// Our session refresh succeeded.
    RefreshDone,
    /// An INFO arrived; the session has answered it 200.
    Info(Request),
    Terminated {
        reason: EndReason,
        status: Option<u16>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    #[error("not possible now: {0}")]
    State(&'static str),
    #[error("an offer/answer exchange or in-dialog request is in progress")]
    Busy,
    #[error("the peer does not support {0}")]
    PeerLacks(&'static str),
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("message: {0}")]
    Msg(#[from] MsgError),
    #[error("dialog: {0}")]
    Dialog(#[from] DialogError),
}

/// Why [`InviteSession::uas`] refused an INVITE: the status and extra headers to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Rejection {
    fn new(status: u16, headers: &[(&str, &str)]) -> Self {
        Rejection {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// The response to send on the INVITE's server transaction.
    pub fn response(&self, invite: &Request, local_tag: &str) -> Result<Response, MsgError> {
        let mut r = Response::for_request(invite, self.status, reason(self.status), local_tag)?;
        for (n, v) in &self.headers {
            r.headers_mut().push(n, v)?;
        }
        Ok(r)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Uac,
    Uas,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// No final response to the initial INVITE yet.
    Early,
    /// 2xx sent and not yet acknowledged (UAS), or received with the ACK waiting for our
    /// answer (UAC).
    Answered,
    Confirmed,
    Terminated,
}

/// Offer/answer state: whose offer awaits an answer, and where it travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Oa {
    Idle,
    Local(OfferKind),
    Remote(OfferKind),
}

#[derive(Debug, Clone, Copy, Default)]
struct PeerCaps {
    rel100: bool,
    timer: bool,
    update: bool,
}

/// A response we retransmit until the peer acknowledges it (reliable 1xx, 2xx to INVITE).
#[derive(Debug, Clone)]
struct Retransmit {
    txn: TxnId,
    resp: Response,
    seq: u32,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

/// Our unacknowledged reliable provisional response.
#[derive(Debug, Clone)]
struct Reliable {
    rt: Retransmit,
    rseq: u32,
    has_sdp: bool,
}

/// Our re-INVITE or UPDATE in progress (or waiting to be retried after 491).
#[derive(Debug, Clone)]
struct OurReq {
    seq: u32,
    method: Method,
    offer: Option<Vec<u8>>,
    refresh: bool,
}

/// The peer's re-INVITE or UPDATE waiting for the app's body.
#[derive(Debug, Clone)]
struct TheirReq {
    txn: TxnId,
    req: Request,
    offer: bool,
    timer: Option<(u32, Refresher)>,
}

#[derive(Debug, Clone, Copy)]
struct SessTimer {
    interval: u32,
    refresher: Refresher,
    refresh_at: Option<Instant>,
    expire_at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancel {
    None,
    /// Asked before any provisional response: sent when one arrives (RFC 3261 §9.1).
    Wanted,
    Sent {
        give_up: Instant,
    },
}

/// SplitMix64: small, seedable, good enough for branches and back-offs.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi.saturating_sub(lo) + 1)
    }
}

#[derive(Debug)]
pub struct InviteSession {
    cfg: SessionConfig,
    role: Role,
    rng: Rng,
    state: SessionState,
    call_id: String,
    local_tag: String,
    /// The initial INVITE: received (UAS) or as last sent (UAC, after a 422 retry).
    invite: Request,
    invite_seq: u32,
    invite_txn: Option<TxnId>,
    dialog: Option<Dialog>,
    out: VecDeque<Action>,
    peer: PeerCaps,
    oa: Oa,
    initial_oa_done: bool,
    local_sdp: Option<Vec<u8>>,
    remote_sdp: Option<Vec<u8>>,
    /// UAS: the answer shown in an unreliable 1xx; the 2xx repeats it (RFC 3261 §13.3.1.1).
    early_answer: Option<Vec<u8>>,
    /// The peer's last offer and our answer to it, to repeat for an unchanged re-offer.
    last_exchange: Option<(Vec<u8>, Vec<u8>)>,
    // UAS, RFC 3262
    reliable: Option<Reliable>,
    next_rseq: u32,
    queued_1xx: VecDeque<(u16, Option<Vec<u8>>)>,
    deferred_accept: Option<Option<Vec<u8>>>,
    // UAC, RFC 3262
    last_rseq: Option<u32>,
    prack_waits_answer: Option<u32>,
    // 2xx and ACK
    pending_2xx: Option<Retransmit>,
    last_ack: Option<(u32, String, Request)>,
    /// The ACK of the initial 2xx, kept after re-INVITEs replace `last_ack`: a late
    /// retransmission of that 2xx is acknowledged again, never answered with a BYE.
    initial_ack: Option<(u32, String, Request)>,
    ack_waits_answer: Option<u32>,
    bye_after_ack: bool,
    got_1xx: bool,
    cancel: Cancel,
    ours: Option<OurReq>,
    retry: Option<(Instant, OurReq)>,
    theirs: Option<TheirReq>,
    // RFC 4028
    se_asked: u32,
    se_retried: bool,
    uas_timer: Option<(u32, Refresher)>,
    timer: Option<SessTimer>,
}

impl InviteSession {
    fn new(cfg: SessionConfig, role: Role, invite: Request, local_tag: &str) -> Self {
        let mut rng = Rng(cfg.seed);
        let next_rseq = u32::try_from(rng.range(1, 1 << 30)).unwrap_or(1);
        let se_asked = cfg.session_expires.unwrap_or(0);
        let (invite_seq, call_id) = match invite.headers().cseq() {
            Ok((s, _)) => (s, invite.headers().call_id().unwrap_or_default().to_owned()),
            Err(_) => (0, String::new()),
        };
        InviteSession {
            cfg,
            role,
            rng,
            state: SessionState::Early,
            call_id,
            local_tag: local_tag.to_owned(),
            invite,
            invite_seq,
            invite_txn: None,
            dialog: None,
            out: VecDeque::new(),
            peer: PeerCaps::default(),
            oa: Oa::Idle,
            initial_oa_done: false,
            local_sdp: None,
            remote_sdp: None,
            early_answer: None,
            last_exchange: None,
            reliable: None,
            next_rseq,
            queued_1xx: VecDeque::new(),
            deferred_accept: None,
            last_rseq: None,
            prack_waits_answer: None,
            pending_2xx: None,
            last_ack: None,
            initial_ack: None,
            ack_waits_answer: None,
            bye_after_ack: false,
            got_1xx: false,
            cancel: Cancel::None,
            ours: None,
            retry: None,
            theirs: None,
            se_asked,
            se_retried: false,
            uas_timer: None,
            timer: None,
        }
    }

    /// UAS: a session from a new INVITE (its server transaction is `txn`; the layer has sent
    /// 100 Trying). Checks Require (420), 100rel policy (421), Session-Expires against our
    /// Min-SE (422, only to callers supporting timers; others get their interval raised), a
    /// non-SDP body (415) and the dialog fields (400). An SDP body is reported as
    /// [`SessionEvent::RemoteOffer`].
    pub fn uas(
        _now: Instant,
        txn: TxnId,
        invite: &Request,
        local_tag: &str,
        cfg: SessionConfig,
    ) -> Result<InviteSession, Rejection> {
        if invite.method() != &Method::Invite || invite.validate().is_err() {
            return Err(Rejection::new(400, &[]));
        }
        let h = invite.headers();
        let unsupported = unsupported(&cfg, h);
        if !unsupported.is_empty() {
            return Err(Rejection::new(420, &[("Unsupported", &unsupported)]));
        }
        let peer = caps(h);
        if cfg.rel100 == Rel100::Required && !peer.rel100 {
            return Err(Rejection::new(421, &[("Require", "100rel")]));
        }
        let body = invite.body();
        if !body.is_empty() && !is_sdp(h, body) {
            return Err(Rejection::new(415, &[("Accept", SDP)]));
        }
        let timer = negotiate(&cfg, h)
            .map_err(|min| Rejection::new(422, &[("Min-SE", &min.to_string())]))?;
        let dialog =
            Dialog::uas(invite, local_tag, false).map_err(|e| Rejection::new(e.status(), &[]))?;
        let mut s = InviteSession::new(cfg, Role::Uas, invite.clone(), local_tag);
        s.invite_txn = Some(txn);
        s.dialog = Some(dialog);
        s.peer = peer;
        s.uas_timer = timer;
        if !body.is_empty() {
            s.remote_offer(body, OfferKind::Invite);
        }
        Ok(s)
    }

    /// UAC: a session for `invite` (built by the caller with Via branch, From tag, To, Call-ID,
    /// CSeq, Contact and, for an early offer, an SDP body). Adds Supported, Allow, Require:
    /// 100rel (if required), Session-Expires and Min-SE unless present, and emits it.
    pub fn uac(
        _now: Instant,
        mut invite: Request,
        cfg: SessionConfig,
    ) -> Result<InviteSession, SessionError> {
        if invite.method() != &Method::Invite {
            return Err(SessionError::Invalid("not an INVITE"));
        }
        invite.validate()?;
        let h = invite.headers();
        let tag = h
            .from()?
            .tag
            .ok_or(SessionError::Invalid("From has no tag"))?;
        if h.top_via()?.branch.is_none() {
            return Err(SessionError::Invalid("Via has no branch"));
        }
        let body = invite.body().to_vec();
        if !body.is_empty() && !is_sdp(h, &body) {
            return Err(SessionError::Invalid("the body is not SDP"));
        }
        let hm = invite.headers_mut();
        if !body.is_empty() && !hm.contains("Content-Type") {
            hm.push("Content-Type", SDP)?;
        }
        if !hm.contains("Allow") {
            hm.push("Allow", ALLOW)?;
        }
        if let Some(sup) = supported(&cfg)
            && !hm.contains("Supported")
        {
            hm.push("Supported", &sup)?;
        }
        if cfg.rel100 == Rel100::Required {
            hm.push("Require", "100rel")?;
        }
        if let Some(se) = cfg.session_expires
            && !hm.contains("Session-Expires")
        {
            hm.push("Session-Expires", &se.to_string())?;
            hm.push("Min-SE", &cfg.min_se.to_string())?;
        }
        if let Some(ua) = &cfg.user_agent
            && !hm.contains("User-Agent")
        {
            hm.push("User-Agent", ua)?;
        }
        let mut s = InviteSession::new(cfg, Role::Uac, invite.clone(), &tag);
        if let Some((se, _)) = session_expires(invite.headers()) {
            s.se_asked = se;
        }
        if !body.is_empty() {
            s.oa = Oa::Local(OfferKind::Invite);
            s.local_sdp = Some(body);
        }
        s.out.push_back(Action::SendRequest(invite));
        Ok(s)
    }

    // ---------------------------------------------------------------------------------
    // Accessors and outputs

    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn state(&self) -> SessionState {
        self.state
    }

    pub fn dialog(&self) -> Option<&Dialog> {
        self.dialog.as_ref()
    }

    pub fn is_terminated(&self) -> bool {
        self.state == SessionState::Terminated
    }

    /// The last SDP we sent (offer or answer) and the last the peer sent.
    pub fn local_sdp(&self) -> Option<&[u8]> {
        self.local_sdp.as_deref()
    }

    pub fn remote_sdp(&self) -> Option<&[u8]> {
        self.remote_sdp.as_deref()
    }

    /// The running session timer: interval in seconds and who refreshes.
    pub fn session_timer(&self) -> Option<(u32, Refresher)> {
        self.timer.map(|t| (t.interval, t.refresher))
    }

    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let rt = |r: &Retransmit| r.next.min(r.give_up);
        [
            self.reliable.as_ref().map(|r| rt(&r.rt)),
            self.pending_2xx.as_ref().map(rt),
            match self.cancel {
                Cancel::Sent { give_up } => Some(give_up),
                _ => None,
            },
            self.retry.as_ref().map(|(at, _)| *at),
            self.timer.and_then(|t| t.refresh_at),
            self.timer.map(|t| t.expire_at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == SessionState::Terminated {
            return;
        }
        let t2 = self.cfg.t2;
        if let Some(r) = &mut self.reliable {
            if now >= r.rt.give_up {
                // RFC 3262 §3: no PRACK within 64*T1: reject the INVITE with a 5xx.
                self.reliable = None;
                let _ = self.respond_invite(504);
                return self.terminate(EndReason::NoPrack, Some(504));
            }
            if now >= r.rt.next {
                // RFC 3262 §3: T1, doubling, without the T2 cap of 2xx retransmissions.
                self.out
                    .push_back(Action::Respond(r.rt.txn, r.rt.resp.clone()));
                r.rt.interval *= 2;
                r.rt.next = now + r.rt.interval;
            }
        }
        if let Some(p) = &mut self.pending_2xx {
            if now >= p.give_up {
                // RFC 3261 §13.3.1.4: no ACK for 64*T1: confirm the dialog, then end it.
                self.pending_2xx = None;
                if let Some(d) = &mut self.dialog {
                    d.confirm();
                }
                self.send_bye();
                return self.terminate(EndReason::NoAck, None);
            }
            if now >= p.next {
                self.out.push_back(Action::Respond(p.txn, p.resp.clone()));
                p.interval = (p.interval * 2).min(t2);
                p.next = now + p.interval;
            }
        }
        if let Cancel::Sent { give_up } = self.cancel
            && now >= give_up
        {
            // RFC 3261 §9.1: no final response 64*T1 after the CANCEL: consider it cancelled.
            return self.terminate(EndReason::Cancelled, None);
        }
        if let Some((at, _)) = &self.retry
            && now >= *at
        {
            self.fire_retry(now);
        }
        if let Some(t) = self.timer {
            if now >= t.expire_at {
                // RFC 4028 §10: BYE before the session expires without a refresh.
                self.send_bye();
                return self.terminate(EndReason::SessionExpired, None);
            }
            if t.refresh_at.is_some_and(|at| now >= at) {
                self.refresh(now);
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // UAS decisions

    /// Sends a provisional response (101..=199) to the initial INVITE. It is reliable
    /// (RFC 3262) when 100rel is enabled here and the caller supports it; while one reliable
    /// provisional awaits its PRACK, later ones are queued (and dropped if their body has
    /// become illegal by then). A body is the answer to the INVITE's offer (a preview when
    /// unreliable) or, reliable and with an offerless INVITE, our offer.
    pub fn provisional(
        &mut self,
        now: Instant,
        status: u16,
        body: Option<Vec<u8>>,
    ) -> Result<(), SessionError> {
        if self.role != Role::Uas
            || self.state != SessionState::Early
            || self.deferred_accept.is_some()
        {
            return Err(SessionError::State("provisional after the final response"));
        }
        if !(101..=199).contains(&status) {
            return Err(SessionError::Invalid("provisional status"));
        }
        if self.reliable.is_some() && self.sends_reliably() {
            self.queued_1xx.push_back((status, body));
            return Ok(());
        }
        self.send_provisional(now, status, body)
    }

    fn sends_reliably(&self) -> bool {
        self.cfg.rel100 != Rel100::Disabled && self.peer.rel100
    }

    fn send_provisional(
        &mut self,
        now: Instant,
        status: u16,
        body: Option<Vec<u8>>,
    ) -> Result<(), SessionError> {
        let reliable = self.sends_reliably();
        let oa = match (&body, self.oa) {
            (None, oa) => oa,
            (Some(_), Oa::Remote(OfferKind::Invite)) if reliable => Oa::Idle,
            (Some(_), Oa::Remote(OfferKind::Invite)) => Oa::Remote(OfferKind::Invite),
            (Some(_), Oa::Idle) if reliable && !self.initial_oa_done => {
                Oa::Local(OfferKind::Provisional)
            }
            (Some(_), _) => {
                return Err(SessionError::State(
                    "no SDP allowed in this provisional response",
                ));
            }
        };
        let mut resp = self.invite_response(status)?;
        if reliable {
            let rseq = self.next_rseq;
            self.next_rseq = self.next_rseq.wrapping_add(1);
            resp.headers_mut().push("Require", "100rel")?;
            resp.headers_mut().push("RSeq", &rseq.to_string())?;
            if let Some(b) = &body {
                set_sdp(resp.headers_mut())?;
                resp.set_body(b.clone());
            }
            self.reliable = Some(Reliable {
                rt: self.retransmit(now, self.invite_txn, resp.clone(), self.invite_seq),
                rseq,
                has_sdp: body.is_some(),
            });
        } else if let Some(b) = &body {
            set_sdp(resp.headers_mut())?;
            resp.set_body(b.clone());
        }
        if oa == Oa::Idle && body.is_some() {
            self.initial_oa_done = true;
        }
        if let Some(b) = body {
            if reliable {
                if oa == Oa::Idle {
                    self.answering(&b);
                }
                self.local_sdp = Some(b);
            } else {
                self.early_answer = Some(b);
            }
        }
        self.oa = oa;
        self.push_respond_invite(resp);
        Ok(())
    }

    /// Answers the initial INVITE with 200. The body is the answer to its offer (the answer
    /// of an unreliable 1xx is repeated when `None`), or our offer when the INVITE had none
    /// (the answer then comes in the ACK); no body once a reliable 1xx completed offer/answer.
    /// Waits for the PRACK of a reliable 1xx that carried SDP (RFC 3262 §3). The 2xx is
    /// retransmitted until the ACK; after 64*T1 without one the session sends BYE.
    pub fn accept(&mut self, now: Instant, body: Option<Vec<u8>>) -> Result<(), SessionError> {
        if self.role != Role::Uas
            || self.state != SessionState::Early
            || self.deferred_accept.is_some()
        {
            return Err(SessionError::State("accept after the final response"));
        }
        if self.reliable.as_ref().is_some_and(|r| r.has_sdp) {
            self.deferred_accept = Some(body);
            return Ok(());
        }
        let (body, oa) = match (self.oa, body) {
            (Oa::Remote(OfferKind::Invite), b) => (
                Some(
                    b.or_else(|| self.early_answer.clone())
                        .ok_or(SessionError::Invalid("the 2xx must carry the answer"))?,
                ),
                Oa::Idle,
            ),
            (Oa::Idle, None) if self.initial_oa_done => (None, Oa::Idle),
            (Oa::Idle, Some(_)) if self.initial_oa_done => {
                return Err(SessionError::Invalid("offer/answer is already complete"));
            }
            (Oa::Idle, Some(b)) => (Some(b), Oa::Local(OfferKind::Final)),
            (Oa::Idle, None) => {
                return Err(SessionError::Invalid("the 2xx must carry an offer"));
            }
            _ => return Err(SessionError::Busy),
        };
        let mut resp = self.invite_response(200)?;
        if let Some((se, refresher)) = self.uas_timer {
            push_timer(resp.headers_mut(), se, refresher, true)?;
        }
        if let Some(b) = &body {
            set_sdp(resp.headers_mut())?;
            resp.set_body(b.clone());
            self.local_sdp = Some(b.clone());
            if oa == Oa::Idle {
                self.answering(b);
            }
        }
        self.oa = oa;
        self.initial_oa_done = true;
        self.reliable = None;
        self.queued_1xx.clear();
        self.pending_2xx =
            Some(self.retransmit(now, self.invite_txn, resp.clone(), self.invite_seq));
        self.push_respond_invite(resp);
        if let Some(d) = &mut self.dialog {
            d.confirm();
        }
        self.state = SessionState::Answered;
        if let Some((se, r)) = self.uas_timer {
            self.start_timer(now, se, r);
        }
        self.event(SessionEvent::Answered);
        Ok(())
    }

    /// Refuses the initial INVITE with a final status (300..=699).
    pub fn reject(&mut self, _now: Instant, status: u16) -> Result<(), SessionError> {
        if self.role != Role::Uas || self.state != SessionState::Early {
            return Err(SessionError::State("reject after the final response"));
        }
        if !(300..=699).contains(&status) {
            return Err(SessionError::Invalid("reject status"));
        }
        self.respond_invite(status)?;
        self.terminate(EndReason::Rejected, Some(status));
        Ok(())
    }

    // ---------------------------------------------------------------------------------
    // Mid-call commands

    /// Sends a re-INVITE with `offer`, or without one (the peer then offers in its 2xx).
    /// A 491 is retried after the RFC 3261 §14.1 back-off.
    pub fn reinvite(&mut self, now: Instant, offer: Option<Vec<u8>>) -> Result<(), SessionError> {
        if self.state != SessionState::Confirmed {
            return Err(SessionError::State("re-INVITE outside a confirmed dialog"));
        }
        if !self.can_offer() {
            return Err(SessionError::Busy);
        }
        self.send_offer_req(now, Method::Invite, offer, false)
    }

    /// Sends an UPDATE with `offer` (RFC 3311): in a confirmed dialog, or in an early one
    /// once the initial offer/answer is complete. The peer must allow UPDATE.
    pub fn update(&mut self, now: Instant, offer: Vec<u8>) -> Result<(), SessionError> {
        let early_ok = self.state == SessionState::Early && self.initial_oa_done;
        if self.dialog.is_none() || !(self.state == SessionState::Confirmed || early_ok) {
            return Err(SessionError::State(
                "UPDATE needs a dialog with offer/answer done",
            ));
        }
        if !self.peer.update {
            return Err(SessionError::PeerLacks("UPDATE"));
        }
        if !self.can_offer() {
            return Err(SessionError::Busy);
        }
        self.send_offer_req(now, Method::Update, Some(offer), false)
    }

    /// Supplies the body the session waits for: the answer to a [`SessionEvent::RemoteOffer`]
    /// (re-INVITE, UPDATE, reliable 1xx, 2xx), or the offer an
    /// [`SessionEvent::OfferRequested`] asked for.
    pub fn answer(&mut self, now: Instant, body: Vec<u8>) -> Result<(), SessionError> {
        if self.state == SessionState::Terminated {
            return Err(SessionError::State("terminated"));
        }
        if self.theirs.is_some() {
            let offered = self.theirs.as_ref().is_some_and(|t| t.offer);
            self.oa = if offered {
                self.answering(&body);
                Oa::Idle
            } else {
                Oa::Local(OfferKind::Final)
            };
            return self.finish_theirs(now, 200, Some(body));
        }
        match self.oa {
            Oa::Remote(OfferKind::Provisional) => {
                let rseq = self
                    .prack_waits_answer
                    .take()
                    .ok_or(SessionError::State("no PRACK pending"))?;
                self.oa = Oa::Idle;
                self.initial_oa_done = true;
                self.answering(&body);
                self.send_prack(rseq, Some(body))
            }
            Oa::Remote(OfferKind::Final) => {
                let seq = self
                    .ack_waits_answer
                    .take()
                    .ok_or(SessionError::State("no ACK pending"))?;
                self.oa = Oa::Idle;
                self.initial_oa_done = true;
                self.answering(&body);
                self.send_ack(seq, Some(body))?;
                if seq == self.invite_seq {
                    self.confirmed_by_ack();
                }
                Ok(())
            }
            _ => Err(SessionError::State("no offer awaits an answer")),
        }
    }

    /// Refuses the peer's pending offer: a re-INVITE or UPDATE gets `status` (e.g. 488); an
    /// offer in a 2xx is acknowledged without answer and the session ended with BYE
    /// (RFC 3261 §13.2.2.4).
    pub fn reject_offer(&mut self, now: Instant, status: u16) -> Result<(), SessionError> {
        if self.theirs.is_some() {
            if !(300..=699).contains(&status) {
                return Err(SessionError::Invalid("reject status"));
            }
            self.oa = Oa::Idle;
            return self.finish_theirs(now, status, None);
        }
        if let (Oa::Remote(OfferKind::Final), Some(seq)) = (self.oa, self.ack_waits_answer.take()) {
            self.oa = Oa::Idle;
            self.send_ack(seq, None)?;
            self.send_bye();
            self.terminate(EndReason::OfferFailed, None);
            return Ok(());
        }
        Err(SessionError::State("no offer to reject"))
    }

    /// UAC before the final response: CANCEL (RFC 3261 §9.1), sent once a provisional
    /// response has arrived. A 2xx that still arrives is acknowledged and ended with BYE.
    pub fn cancel(&mut self, now: Instant) -> Result<(), SessionError> {
        if self.role != Role::Uac || self.state != SessionState::Early {
            return Err(SessionError::State("CANCEL after the final response"));
        }
        match self.cancel {
            Cancel::None if self.got_1xx => self.send_cancel(now),
            Cancel::None => {
                self.cancel = Cancel::Wanted;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Ends the call the way the state allows: BYE when confirmed, CANCEL (UAC) or 480
    /// (UAS) before the final response, BYE after the ACK when our 2xx awaits it
    /// (RFC 3261 §15).
    pub fn bye(&mut self, now: Instant) -> Result<(), SessionError> {
        match (self.state, self.role) {
            (SessionState::Terminated, _) => Err(SessionError::State("terminated")),
            (SessionState::Early, Role::Uac) => self.cancel(now),
            (SessionState::Early, Role::Uas) => self.reject(now, 480),
            (SessionState::Answered, Role::Uas) => {
                self.bye_after_ack = true;
                Ok(())
            }
            (SessionState::Answered, Role::Uac) => {
                if let Some(seq) = self.ack_waits_answer.take() {
                    self.send_ack(seq, None)?;
                }
                self.send_bye();
                self.terminate(EndReason::LocalBye, None);
                Ok(())
            }
            (SessionState::Confirmed, _) => {
                self.send_bye();
                self.terminate(EndReason::LocalBye, None);
                Ok(())
            }
        }
    }

    /// Sends an INFO (RFC 6086) with this body.
    pub fn info(
        &mut self,
        _now: Instant,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(), SessionError> {
        if self.state == SessionState::Terminated || self.dialog.is_none() {
            return Err(SessionError::State("INFO needs a dialog"));
        }
        let mut r = self.new_request(Method::Info)?;
        r.headers_mut().push("Content-Type", content_type)?;
        r.set_body(body);
        self.out.push_back(Action::SendRequest(r));
        Ok(())
    }

    // ---------------------------------------------------------------------------------
    // From the network

    /// A request of this session's dialog (or the CANCEL of its INVITE) on server
    /// transaction `txn`. ACKs may come here or to [`handle_ack`](Self::handle_ack).
    pub fn handle_request(&mut self, now: Instant, txn: TxnId, req: &Request) {
        match req.method() {
            Method::Ack => return self.handle_ack(now, req),
            Method::Cancel => return self.on_cancel(now, txn, req),
            _ => {}
        }
        if self.state == SessionState::Terminated || !self.in_dialog(req) {
            return self.reply(txn, req, 481, &[]);
        }
        let unsupported = unsupported(&self.cfg, req.headers());
        if !unsupported.is_empty() {
            return self.reply(txn, req, 420, &[("Unsupported", &unsupported)]);
        }
        let Some(d) = self.dialog.as_mut() else {
            return self.reply(txn, req, 481, &[]);
        };
        let glare = match d.handle_request(req) {
            Ok(_) => false,
            Err(DialogError::Glare) => true,
            Err(e) => return self.reply(txn, req, e.status(), &[]),
        };
        match req.method() {
            Method::Bye => {
                self.reply(txn, req, 200, &[]);
                if self.role == Role::Uas && self.state == SessionState::Early {
                    // RFC 3261 §15.1.2: the INVITE still pending gets 487.
                    let _ = self.respond_invite(487);
                }
                self.terminate(EndReason::RemoteBye, None);
            }
            Method::Invite | Method::Update => self.on_offer_request(now, txn, req, glare),
            Method::Prack => self.on_prack(now, txn, req),
            Method::Info => {
                self.reply(txn, req, 200, &[]);
                self.event(SessionEvent::Info(req.clone()));
            }
            Method::Options => {
                let sup = supported(&self.cfg);
                let mut headers = vec![("Allow", ALLOW), ("Accept", SDP)];
                if let Some(sup) = &sup {
                    headers.push(("Supported", sup));
                }
                self.reply(txn, req, 200, &headers);
            }
            _ => self.reply(txn, req, 405, &[("Allow", ALLOW)]),
        }
    }

    /// The ACK of one of our 2xx responses (`AckForTu` or `StrayAck` from the layer).
    pub fn handle_ack(&mut self, _now: Instant, ack: &Request) {
        let Ok((seq, _)) = ack.headers().cseq() else {
            return;
        };
        if self.pending_2xx.as_ref().is_none_or(|p| p.seq != seq) || !self.in_dialog(ack) {
            return;
        }
        self.pending_2xx = None;
        let initial = self.role == Role::Uas && seq == self.invite_seq;
        if self.oa == Oa::Local(OfferKind::Final) {
            // RFC 3261 §13.2.1: our offer was in the 2xx, so the ACK must carry the answer.
            if !is_sdp(ack.headers(), ack.body()) {
                self.oa = Oa::Idle;
                if initial {
                    self.confirmed_by_ack();
                }
                self.send_bye();
                return self.terminate(EndReason::OfferFailed, None);
            }
            self.oa = Oa::Idle;
            self.got_answer(ack.body());
        }
        if initial {
            self.confirmed_by_ack();
            if self.bye_after_ack {
                self.send_bye();
                self.terminate(EndReason::LocalBye, None);
            }
        } else if let Some(d) = &mut self.dialog {
            d.invite_done();
        }
    }

    fn confirmed_by_ack(&mut self) {
        self.state = SessionState::Confirmed;
        self.event(SessionEvent::Confirmed);
    }

    /// A response to one of our requests (also 2xx retransmissions the layer passes as
    /// `StrayResponse`).
    pub fn handle_response(&mut self, now: Instant, resp: &Response) {
        let h = resp.headers();
        let (Ok((seq, method)), Ok(call_id)) = (h.cseq(), h.call_id()) else {
            return;
        };
        if call_id != self.call_id {
            return;
        }
        let status = resp.status();
        let to_tag = h.to().ok().and_then(|t| t.tag).unwrap_or_default();
        if method == Method::Invite && (200..300).contains(&status) {
            if let Some((_, _, ack)) = [&self.last_ack, &self.initial_ack]
                .into_iter()
                .flatten()
                .find(|(s, tag, _)| *s == seq && *tag == to_tag)
            {
                // A retransmitted 2xx: our ACK was lost (RFC 3261 §13.2.2.4).
                self.out.push_back(Action::SendAck(ack.clone()));
                return;
            }
            if self.ack_waits_answer == Some(seq) {
                return;
            }
        }
        let ours = self
            .ours
            .as_ref()
            .is_some_and(|o| o.seq == seq && o.method == method);
        match method {
            Method::Invite if self.role == Role::Uac && seq == self.invite_seq => {
                self.on_invite_response(now, resp, to_tag)
            }
            Method::Invite | Method::Update if ours => self.on_our_response(now, resp),
            Method::Info | Method::Options if self.state != SessionState::Terminated => {
                self.in_dialog_failure(status)
            }
            _ => {}
        }
    }

    /// A client transaction of ours timed out (Timer B or F): like a 408 (RFC 3261 §8.1.3.1).
    pub fn handle_txn_timeout(&mut self, _now: Instant, req: &Request) {
        let Ok((seq, method)) = req.headers().cseq() else {
            return;
        };
        if self.state == SessionState::Terminated {
            return;
        }
        let ours = self
            .ours
            .as_ref()
            .is_some_and(|o| o.seq == seq && o.method == method);
        match method {
            Method::Invite
                if self.role == Role::Uac
                    && seq == self.invite_seq
                    && self.state == SessionState::Early =>
            {
                let reason = if self.cancel == Cancel::None {
                    EndReason::Timeout
                } else {
                    EndReason::Cancelled
                };
                self.terminate(reason, Some(408));
            }
            Method::Invite | Method::Update if ours => {
                self.ours = None;
                self.in_dialog_failure(408);
            }
            Method::Info | Method::Options => self.in_dialog_failure(408),
            _ => {}
        }
    }

    // ---------------------------------------------------------------------------------
    // UAC: responses to the initial INVITE

    fn on_invite_response(&mut self, now: Instant, resp: &Response, to_tag: String) {
        match resp.status() {
            100..=199 => self.on_invite_1xx(now, resp, to_tag),
            200..=299 => self.on_invite_2xx(now, resp, to_tag),
            status => {
                if self.state != SessionState::Early {
                    return;
                }
                if status == 422 && self.retry_422(resp).is_ok() {
                    return;
                }
                let reason = if self.cancel == Cancel::None {
                    EndReason::Rejected
                } else {
                    EndReason::Cancelled
                };
                self.terminate(reason, Some(status));
            }
        }
    }

    /// RFC 4028 §7.4: retry once with the interval the 422 asks for.
    fn retry_422(&mut self, resp: &Response) -> Result<(), SessionError> {
        let min = resp
            .headers()
            .get("Min-SE")
            .and_then(leading_u32)
            .ok_or(SessionError::Invalid("422 without Min-SE"))?;
        if self.se_retried || self.cfg.session_expires.is_none() || self.cancel != Cancel::None {
            return Err(SessionError::State("no second 422 retry"));
        }
        self.se_retried = true;
        self.se_asked = self.se_asked.max(min);
        let branch = self.branch();
        let mut inv = self.invite.clone();
        let seq = self.invite_seq.saturating_add(1);
        let h = inv.headers_mut();
        // A new transaction: a new branch. A UAC request has only its own Via.
        let mut via = h.top_via()?;
        via.branch = Some(branch);
        h.set("Via", &via.to_string())?;
        h.set("CSeq", &format!("{seq} INVITE"))?;
        h.set("Session-Expires", &self.se_asked.to_string())?;
        h.set("Min-SE", &self.se_asked.to_string())?;
        self.invite = inv.clone();
        self.invite_seq = seq;
        self.got_1xx = false;
        self.last_rseq = None;
        self.dialog = None;
        self.out.push_back(Action::SendRequest(inv));
        Ok(())
    }

    fn on_invite_1xx(&mut self, now: Instant, resp: &Response, to_tag: String) {
        if self.state != SessionState::Early {
            return;
        }
        self.got_1xx = true;
        if self.cancel == Cancel::Wanted {
            let _ = self.send_cancel(now);
        }
        let status = resp.status();
        if status == 100 || self.cancel != Cancel::None {
            return;
        }
        let h = resp.headers();
        self.learn_caps(h);
        if !to_tag.is_empty()
            && self
                .dialog
                .as_ref()
                .is_none_or(|d| d.id.remote_tag != to_tag)
            && let Ok(d) = Dialog::uac(&self.invite, resp)
        {
            // A new early dialog (another fork): its RSeq space starts over.
            self.dialog = Some(d);
            self.last_rseq = None;
        }
        let rseq = h.get("RSeq").and_then(leading_u32);
        let reliable = self.cfg.rel100 != Rel100::Disabled && has_tag(h, "Require", "100rel");
        let sdp = is_sdp(h, resp.body());
        match (reliable, rseq) {
            (true, Some(rseq)) => {
                // RFC 3262 §4: PRACK each reliable 1xx once, in RSeq order.
                if self
                    .last_rseq
                    .is_some_and(|last| rseq != last.wrapping_add(1))
                {
                    return;
                }
                self.last_rseq = Some(rseq);
                self.event(SessionEvent::Progress { status });
                let mut defer = false;
                if sdp {
                    match self.oa {
                        Oa::Local(OfferKind::Invite) => {
                            self.oa = Oa::Idle;
                            self.initial_oa_done = true;
                            self.got_answer(resp.body());
                        }
                        Oa::Idle if !self.initial_oa_done => {
                            self.prack_waits_answer = Some(rseq);
                            self.remote_offer(resp.body(), OfferKind::Provisional);
                            defer = true;
                        }
                        _ => {}
                    }
                }
                if !defer {
                    let _ = self.send_prack(rseq, None);
                }
            }
            _ => {
                self.event(SessionEvent::Progress { status });
                if sdp && self.oa == Oa::Local(OfferKind::Invite) {
                    self.event(SessionEvent::EarlyMedia {
                        body: resp.body().to_vec(),
                    });
                }
            }
        }
    }

    fn on_invite_2xx(&mut self, now: Instant, resp: &Response, to_tag: String) {
        let seq = self.invite_seq;
        if self.state != SessionState::Early {
            // Another fork's 2xx, or one after we ended: acknowledge it and end that dialog
            // (RFC 3261 §13.2.2.4).
            return self.ack_and_bye(resp);
        }
        if self.cancel != Cancel::None {
            // The 2xx won the race with our CANCEL (RFC 3261 §9.1): ACK, then BYE.
            self.ack_and_bye(resp);
            return self.terminate(EndReason::Cancelled, Some(resp.status()));
        }
        let dialog = match self.dialog.take() {
            Some(mut d) if d.id.remote_tag == to_tag => d.confirm_with(resp).map(|()| d),
            _ => Dialog::uac(&self.invite, resp),
        };
        let Ok(dialog) = dialog else {
            return self.terminate(EndReason::Protocol, Some(resp.status()));
        };
        self.dialog = Some(dialog);
        self.learn_caps(resp.headers());
        self.state = SessionState::Confirmed;
        self.start_timer_from_2xx(now, resp);
        self.event(SessionEvent::Answered);
        let sdp = is_sdp(resp.headers(), resp.body());
        match self.oa {
            Oa::Local(OfferKind::Invite) if sdp => {
                self.oa = Oa::Idle;
                self.got_answer(resp.body());
            }
            Oa::Idle if !self.initial_oa_done && sdp => {
                // Late offer: the answer goes in the ACK, once the app gives it.
                self.ack_waits_answer = Some(seq);
                self.state = SessionState::Answered;
                return self.remote_offer(resp.body(), OfferKind::Final);
            }
            Oa::Idle if self.initial_oa_done => {}
            _ => {
                // RFC 3261 §13.2.1: the 2xx lacked the answer (or offer) it owed.
                self.oa = Oa::Idle;
                let _ = self.send_ack(seq, None);
                self.send_bye();
                return self.terminate(EndReason::OfferFailed, Some(resp.status()));
            }
        }
        self.initial_oa_done = true;
        if self.send_ack(seq, None).is_ok() {
            self.event(SessionEvent::Confirmed);
        }
    }

    fn ack_and_bye(&mut self, resp: &Response) {
        let via = self.cfg.via.clone();
        let (b1, b2) = (self.branch(), self.branch());
        let tag = resp.headers().to().ok().and_then(|t| t.tag);
        // Our own early dialog keeps its CSeq space (a PRACK may have used the next number).
        let own = self
            .dialog
            .clone()
            .filter(|d| Some(&d.id.remote_tag) == tag.as_ref())
            .map(|mut d| {
                d.state = DialogState::Confirmed;
                d.confirm_with(resp).map(|()| d)
            });
        if let Ok(mut d) = own.unwrap_or_else(|| Dialog::uac(&self.invite, resp)) {
            if let Ok(ack) = d.ack(self.invite_seq, &via, &b1) {
                self.out.push_back(Action::SendAck(ack));
            }
            if let Ok(bye) = d.new_request(Method::Bye, &via, &b2) {
                self.out.push_back(Action::SendRequest(bye));
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // Our re-INVITE / UPDATE

    fn can_offer(&self) -> bool {
        self.oa == Oa::Idle
            && self.ours.is_none()
            && self.theirs.is_none()
            && self.retry.is_none()
            && self.pending_2xx.is_none()
            && self.ack_waits_answer.is_none()
    }

    fn send_offer_req(
        &mut self,
        _now: Instant,
        method: Method,
        offer: Option<Vec<u8>>,
        refresh: bool,
    ) -> Result<(), SessionError> {
        let mut r = self.new_request(method.clone())?;
        if let Some(se) = self.cfg.session_expires {
            let (interval, refresher) = match self.timer {
                Some(t) => (t.interval, t.refresher),
                None => (se, Refresher::Local),
            };
            // RFC 4028 §7.4: refresher=uac means the sender of this request.
            push_timer(r.headers_mut(), interval, refresher, false)?;
            r.headers_mut()
                .push("Min-SE", &self.cfg.min_se.to_string())?;
        }
        if let Some(b) = &offer {
            set_sdp(r.headers_mut())?;
            r.set_body(b.clone());
            self.local_sdp = Some(b.clone());
            self.oa = Oa::Local(if method == Method::Invite {
                OfferKind::Reinvite
            } else {
                OfferKind::Update
            });
        }
        let (seq, _) = r.headers().cseq()?;
        self.ours = Some(OurReq {
            seq,
            method,
            offer,
            refresh,
        });
        self.out.push_back(Action::SendRequest(r));
        Ok(())
    }

    fn on_our_response(&mut self, now: Instant, resp: &Response) {
        let status = resp.status();
        if status < 200 {
            return;
        }
        let Some(o) = self.ours.take() else {
            return;
        };
        let is_invite = o.method == Method::Invite;
        if o.offer.is_some() {
            self.oa = Oa::Idle;
        }
        if is_invite && let Some(d) = &mut self.dialog {
            d.invite_done();
        }
        match status {
            200..=299 => {
                if let Some(d) = &mut self.dialog {
                    d.refresh_target(resp);
                }
                self.start_timer_from_2xx(now, resp);
                let sdp = is_sdp(resp.headers(), resp.body());
                let mut ack_now = true;
                if o.offer.is_some() && sdp {
                    self.got_answer(resp.body());
                } else if o.offer.is_none() && is_invite && sdp {
                    self.ack_waits_answer = Some(o.seq);
                    self.remote_offer(resp.body(), OfferKind::Final);
                    ack_now = false;
                }
                if is_invite && ack_now {
                    let _ = self.send_ack(o.seq, None);
                }
                if o.refresh {
                    self.event(SessionEvent::RefreshDone);
                }
            }
            491 => {
                // RFC 3261 §14.1: retry after 2.1-4 s if we own the Call-ID, else 0-2 s, in
                // units of 10 ms.
                let ms = match self.role {
                    Role::Uac => self.rng.range(210, 400) * 10,
                    Role::Uas => self.rng.range(0, 200) * 10,
                };
                self.retry = Some((now + Duration::from_millis(ms), o));
            }
            408 | 481 => self.in_dialog_failure(status),
            _ => self.event(SessionEvent::OfferRejected { status }),
        }
    }

    fn fire_retry(&mut self, now: Instant) {
        let Some((_, o)) = self.retry.take() else {
            return;
        };
        if !self.can_offer() {
            // The peer's request (the one that won the glare) is still running.
            self.retry = Some((now + self.cfg.t2, o));
            return;
        }
        let _ = self.send_offer_req(now, o.method, o.offer, o.refresh);
    }

    /// RFC 3261 §12.2.1.2: 481 or 408 to an in-dialog request ends the dialog.
    fn in_dialog_failure(&mut self, status: u16) {
        match status {
            481 => self.terminate(EndReason::DialogGone, Some(481)),
            408 => {
                self.send_bye();
                self.terminate(EndReason::Timeout, Some(408));
            }
            _ => {}
        }
    }

    // ---------------------------------------------------------------------------------
    // UAS of in-dialog requests

    fn on_cancel(&mut self, now: Instant, txn: TxnId, req: &Request) {
        // RFC 3261 §9.2: a CANCEL matches the INVITE with its branch and CSeq number.
        let key = |r: &Request| {
            let h = r.headers();
            (
                h.cseq().ok().map(|c| c.0),
                h.top_via().ok().and_then(|v| v.branch),
            )
        };
        let theirs = self
            .theirs
            .as_ref()
            .is_some_and(|t| t.req.method() == &Method::Invite && key(&t.req) == key(req));
        if theirs {
            // Their pending re-INVITE: cancelled, the old session stays.
            self.reply(txn, req, 200, &[]);
            self.oa = Oa::Idle;
            let _ = self.finish_theirs(now, 487, None);
            return;
        }
        if self.role != Role::Uas || key(&self.invite) != key(req) {
            return self.reply(txn, req, 481, &[]);
        }
        // 200 to the CANCEL; 487 to the INVITE if it has no final response.
        self.reply(txn, req, 200, &[]);
        if self.state == SessionState::Early {
            self.reliable = None;
            let _ = self.respond_invite(487);
            self.terminate(EndReason::Cancelled, Some(487));
        }
    }

    fn on_offer_request(&mut self, now: Instant, txn: TxnId, req: &Request, glare: bool) {
        let is_invite = req.method() == &Method::Invite;
        let body = req.body();
        let offer = is_sdp(req.headers(), body);
        let retry_after = self.rng.range(0, 10).to_string();
        let busy_ours = self
            .ours
            .as_ref()
            .is_some_and(|o| o.method == Method::Invite);
        let refusal: Option<(u16, Vec<(&str, &str)>)> = if glare {
            // The dialog saw an INVITE in progress: ours is glare, theirs is a second one.
            Some(if busy_ours {
                (491, vec![])
            } else {
                (500, vec![("Retry-After", retry_after.as_str())])
            })
        } else if !body.is_empty() && !offer {
            Some((415, vec![("Accept", SDP)]))
        } else if is_invite && self.state == SessionState::Early && self.role == Role::Uac {
            Some((491, vec![]))
        } else if (is_invite || offer)
            && (self.theirs.is_some()
                || self.pending_2xx.is_some()
                || self.state == SessionState::Early && is_invite
                || matches!(self.oa, Oa::Remote(_)))
        {
            // RFC 3261 §14.2, RFC 3311 §5.2: their earlier offer or INVITE is unfinished.
            Some((500, vec![("Retry-After", retry_after.as_str())]))
        } else if (offer && matches!(self.oa, Oa::Local(_))) || (is_invite && busy_ours) {
            Some((491, vec![]))
        } else {
            None
        };
        if let Some((status, headers)) = refusal {
            if is_invite
                && !glare
                && let Some(d) = &mut self.dialog
            {
                d.invite_done();
            }
            return self.reply(txn, req, status, &headers);
        }
        let running = self.timer.map(|t| (t.interval, t.refresher));
        let timer = match negotiate(&self.cfg, req.headers()) {
            // RFC 4028 §9 lets a UAS add a timer the request did not ask for; in a dialog
            // with one running, that is the running one.
            Ok(_) if running.is_some() && !req.headers().contains("Session-Expires") => running,
            Ok(t) => t,
            Err(min) => {
                if is_invite && let Some(d) = &mut self.dialog {
                    d.invite_done();
                }
                return self.reply(txn, req, 422, &[("Min-SE", &min.to_string())]);
            }
        };
        self.learn_caps(req.headers());
        let t = TheirReq {
            txn,
            req: req.clone(),
            offer,
            timer,
        };
        if !is_invite && !offer {
            // An UPDATE without offer (a session refresh): answered at once, even while
            // another request of the peer waits for the app.
            let _ = self.respond_theirs(now, t, 200, None);
            return;
        }
        if let Some((old, ours)) = &self.last_exchange
            && offer
            && old.as_slice() == body
            && self.remote_sdp.as_deref() == Some(body)
        {
            // RFC 3264 §8: the same offer again (a session refresh) changes nothing; our
            // answer stays the same and the app need not hear of it.
            let ours = ours.clone();
            let _ = self.respond_theirs(now, t, 200, Some(ours));
            return;
        }
        self.theirs = Some(t);
        if offer {
            let kind = if is_invite {
                OfferKind::Reinvite
            } else {
                OfferKind::Update
            };
            self.remote_offer(body, kind);
        } else {
            self.event(SessionEvent::OfferRequested);
        }
    }

    /// Answers the peer's pending re-INVITE or UPDATE.
    fn finish_theirs(
        &mut self,
        now: Instant,
        status: u16,
        body: Option<Vec<u8>>,
    ) -> Result<(), SessionError> {
        let t = self
            .theirs
            .take()
            .ok_or(SessionError::State("no request pending"))?;
        self.respond_theirs(now, t, status, body)
    }

    fn respond_theirs(
        &mut self,
        now: Instant,
        t: TheirReq,
        status: u16,
        body: Option<Vec<u8>>,
    ) -> Result<(), SessionError> {
        let is_invite = t.req.method() == &Method::Invite;
        let mut resp = Response::for_request(&t.req, status, reason(status), &self.local_tag)?;
        let ok = (200..300).contains(&status);
        if ok {
            let h = resp.headers_mut();
            h.push("Contact", &self.cfg.local_contact)?;
            h.push("Allow", ALLOW)?;
            if let Some(sup) = supported(&self.cfg) {
                h.push("Supported", &sup)?;
            }
            if let Some((se, r)) = t.timer {
                push_timer(h, se, r, true)?;
                self.start_timer(now, se, r);
            }
        }
        if let Some(b) = &body {
            set_sdp(resp.headers_mut())?;
            resp.set_body(b.clone());
            self.local_sdp = Some(b.clone());
        }
        if is_invite && ok {
            let seq = t.req.headers().cseq()?.0;
            self.pending_2xx = Some(self.retransmit(now, Some(t.txn), resp.clone(), seq));
        } else if is_invite && let Some(d) = &mut self.dialog {
            d.invite_done();
        }
        self.out.push_back(Action::Respond(t.txn, resp));
        Ok(())
    }

    fn on_prack(&mut self, now: Instant, txn: TxnId, req: &Request) {
        // RFC 3262 §3: the PRACK must match the unacknowledged reliable 1xx, else 481.
        let rack = req.headers().get("RAck").and_then(parse_rack);
        let matched = match (&self.reliable, rack) {
            (Some(r), Some((rseq, cseq, m))) => {
                r.rseq == rseq && cseq == self.invite_seq && m.eq_ignore_ascii_case("INVITE")
            }
            _ => false,
        };
        if !matched {
            return self.reply(txn, req, 481, &[]);
        }
        self.reliable = None;
        self.reply(txn, req, 200, &[]);
        if self.oa == Oa::Local(OfferKind::Provisional) && is_sdp(req.headers(), req.body()) {
            self.oa = Oa::Idle;
            self.initial_oa_done = true;
            self.got_answer(req.body());
        }
        if let Some(body) = self.deferred_accept.take() {
            let _ = self.accept(now, body);
        } else {
            while let Some((status, body)) = self.queued_1xx.pop_front() {
                if self.send_provisional(now, status, body).is_ok() {
                    break;
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // Session timers (RFC 4028)

    /// The timer runs from the initial 2xx on; an UPDATE in the early dialog does not start it.
    fn start_timer(&mut self, now: Instant, interval: u32, refresher: Refresher) {
        if self.state == SessionState::Early {
            return;
        }
        let secs = |s: u32| Duration::from_secs(u64::from(s));
        self.timer = Some(SessTimer {
            interval,
            refresher,
            refresh_at: (refresher == Refresher::Local).then(|| now + secs(interval / 2)),
            // RFC 4028 §10: the non-refresher sends BYE at interval - min(32, interval/3)
            // without a refresh; the refresher, whose refresh failed, at the expiry itself.
            expire_at: now
                + match refresher {
                    Refresher::Local => secs(interval),
                    Refresher::Remote => secs(interval - (interval / 3).min(32)),
                },
        });
    }

    /// After a 2xx to our INVITE, re-INVITE or UPDATE (RFC 4028 §7.2).
    fn start_timer_from_2xx(&mut self, now: Instant, resp: &Response) {
        if self.cfg.session_expires.is_none() {
            return;
        }
        match session_expires(resp.headers()) {
            Some((se, r)) => {
                // The peer's value is not trusted: 1 s would make us refresh in a loop, 0
                // BYE at once, a huge one switch the timer off (RFC 4028 §7.4 forbids a 2xx
                // below our Min-SE; we take the Min-SE rather than fail the call).
                let se = clamp_interval(se, self.cfg.min_se);
                let refresher = if r.as_deref() == Some("uas") {
                    Refresher::Remote
                } else {
                    Refresher::Local
                };
                self.start_timer(now, se, refresher);
            }
            // The peer runs no timer; we may keep one and refresh ourselves.
            None => {
                let se = self.timer.map_or(self.se_asked, |t| t.interval);
                self.start_timer(now, se, Refresher::Local);
            }
        }
    }

    fn refresh(&mut self, now: Instant) {
        let busy = !self.can_offer() || self.state != SessionState::Confirmed;
        let Some(t) = &mut self.timer else {
            return;
        };
        if busy {
            // Another exchange is running; its 2xx refreshes the session too.
            t.refresh_at = Some(now + self.cfg.t2);
            return;
        }
        t.refresh_at = None;
        let (method, body) = if self.peer.update {
            (Method::Update, None)
        } else {
            (Method::Invite, self.local_sdp.clone())
        };
        let _ = self.send_offer_req(now, method, body, true);
    }

    // ---------------------------------------------------------------------------------
    // Helpers

    fn event(&mut self, e: SessionEvent) {
        self.out.push_back(Action::Event(e));
    }

    fn remote_offer(&mut self, body: &[u8], kind: OfferKind) {
        self.oa = Oa::Remote(kind);
        self.remote_sdp = Some(body.to_vec());
        self.event(SessionEvent::RemoteOffer {
            body: body.to_vec(),
            kind,
        });
    }

    /// We answer the peer's offer (now in `remote_sdp`) with `answer`.
    fn answering(&mut self, answer: &[u8]) {
        if let Some(offer) = &self.remote_sdp {
            self.last_exchange = Some((offer.clone(), answer.to_vec()));
        }
    }

    fn got_answer(&mut self, body: &[u8]) {
        self.remote_sdp = Some(body.to_vec());
        self.event(SessionEvent::RemoteAnswer {
            body: body.to_vec(),
        });
    }

    fn terminate(&mut self, why: EndReason, status: Option<u16>) {
        if self.state == SessionState::Terminated {
            return;
        }
        if let Some(t) = self.theirs.take()
            && let Ok(resp) = Response::for_request(&t.req, 487, reason(487), &self.local_tag)
        {
            self.out.push_back(Action::Respond(t.txn, resp));
        }
        self.state = SessionState::Terminated;
        self.reliable = None;
        self.queued_1xx.clear();
        self.pending_2xx = None;
        self.retry = None;
        self.timer = None;
        self.cancel = Cancel::None;
        if let Some(d) = &mut self.dialog {
            d.state = DialogState::Terminated;
        }
        self.event(SessionEvent::Terminated {
            reason: why,
            status,
        });
    }

    fn branch(&mut self) -> String {
        format!("z9hG4bK{:016x}", self.rng.next())
    }

    fn retransmit(&self, now: Instant, txn: Option<TxnId>, resp: Response, seq: u32) -> Retransmit {
        Retransmit {
            txn: txn.unwrap_or(TxnId(0)),
            resp,
            seq,
            next: now + self.cfg.t1,
            interval: self.cfg.t1,
            give_up: now + 64 * self.cfg.t1,
        }
    }

    fn in_dialog(&self, req: &Request) -> bool {
        let h = req.headers();
        let Some(d) = &self.dialog else {
            return false;
        };
        h.call_id().is_ok_and(|c| c == d.id.call_id)
            && h.to().ok().and_then(|t| t.tag).as_deref() == Some(d.id.local_tag.as_str())
            && h.from().ok().and_then(|f| f.tag).as_deref() == Some(d.id.remote_tag.as_str())
    }

    fn learn_caps(&mut self, h: &Headers) {
        let c = caps(h);
        self.peer.rel100 |= c.rel100;
        self.peer.timer |= c.timer;
        self.peer.update |= c.update;
    }

    /// A response to the initial INVITE with our tag, Contact, Allow and Supported.
    fn invite_response(&self, status: u16) -> Result<Response, SessionError> {
        let mut r = creating_response(
            &self.invite,
            status,
            reason(status),
            &self.local_tag,
            &self.cfg.local_contact,
        )?;
        let h = r.headers_mut();
        h.push("Allow", ALLOW)?;
        if let Some(sup) = supported(&self.cfg) {
            h.push("Supported", &sup)?;
        }
        if let Some(ua) = &self.cfg.user_agent {
            h.push("Server", ua)?;
        }
        Ok(r)
    }

    fn push_respond_invite(&mut self, resp: Response) {
        if let Some(txn) = self.invite_txn {
            self.out.push_back(Action::Respond(txn, resp));
        }
    }

    /// A final non-2xx to the initial INVITE.
    fn respond_invite(&mut self, status: u16) -> Result<(), SessionError> {
        let r = Response::for_request(&self.invite, status, reason(status), &self.local_tag)?;
        self.push_respond_invite(r);
        Ok(())
    }

    fn reply(&mut self, txn: TxnId, req: &Request, status: u16, headers: &[(&str, &str)]) {
        let tag = self.local_tag.clone();
        let built = Response::for_request(req, status, reason(status), &tag).and_then(|mut r| {
            for (n, v) in headers {
                r.headers_mut().push(n, v)?;
            }
            Ok(r)
        });
        if let Ok(r) = built {
            self.out.push_back(Action::Respond(txn, r));
        }
    }

    fn new_request(&mut self, method: Method) -> Result<Request, SessionError> {
        let branch = self.branch();
        let d = self
            .dialog
            .as_mut()
            .ok_or(SessionError::State("no dialog"))?;
        let mut r = d.new_request(method.clone(), &self.cfg.via, &branch)?;
        let h = r.headers_mut();
        if matches!(method, Method::Invite | Method::Update) {
            h.push("Contact", &self.cfg.local_contact)?;
            h.push("Allow", ALLOW)?;
            if let Some(sup) = supported(&self.cfg) {
                h.push("Supported", &sup)?;
            }
        }
        if let Some(ua) = &self.cfg.user_agent {
            h.push("User-Agent", ua)?;
        }
        Ok(r)
    }

    fn send_ack(&mut self, seq: u32, body: Option<Vec<u8>>) -> Result<(), SessionError> {
        let branch = self.branch();
        let d = self
            .dialog
            .as_ref()
            .ok_or(SessionError::State("no dialog"))?;
        let mut ack = d.ack(seq, &self.cfg.via, &branch)?;
        if let Some(b) = body {
            set_sdp(ack.headers_mut())?;
            ack.set_body(b.clone());
            self.local_sdp = Some(b);
        }
        let tag = d.id.remote_tag.clone();
        if seq == self.invite_seq && self.role == Role::Uac {
            self.initial_ack = Some((seq, tag.clone(), ack.clone()));
        }
        self.last_ack = Some((seq, tag, ack.clone()));
        self.out.push_back(Action::SendAck(ack));
        Ok(())
    }

    fn send_prack(&mut self, rseq: u32, body: Option<Vec<u8>>) -> Result<(), SessionError> {
        let mut r = self.new_request(Method::Prack)?;
        r.headers_mut()
            .push("RAck", &format!("{rseq} {} INVITE", self.invite_seq))?;
        if let Some(b) = body {
            set_sdp(r.headers_mut())?;
            r.set_body(b.clone());
            self.local_sdp = Some(b);
        }
        self.out.push_back(Action::SendRequest(r));
        Ok(())
    }

    /// Best effort: a BYE that cannot be built (no dialog) is skipped.
    fn send_bye(&mut self) {
        if let Ok(r) = self.new_request(Method::Bye) {
            self.out.push_back(Action::SendRequest(r));
        }
    }

    /// RFC 3261 §9.1: the CANCEL copies the INVITE's Request-URI, top Via (same branch),
    /// Call-ID, From, To, CSeq number and Route.
    fn send_cancel(&mut self, now: Instant) -> Result<(), SessionError> {
        let inv = &self.invite;
        let h = inv.headers();
        let mut c = Request::new(Method::Cancel, inv.uri())?;
        let via = h.top_via()?;
        c.headers_mut().push("Via", &via.to_string())?;
        for r in h.get_all("Route") {
            c.headers_mut().push("Route", r)?;
        }
        c.headers_mut().push("Max-Forwards", "70")?;
        for name in ["From", "To", "Call-ID"] {
            let v = h
                .get(name)
                .ok_or(MsgError::MissingHeader("From/To/Call-ID"))?;
            c.headers_mut().push(name, v)?;
        }
        c.headers_mut()
            .push("CSeq", &format!("{} CANCEL", self.invite_seq))?;
        self.cancel = Cancel::Sent {
            give_up: now + 64 * self.cfg.t1,
        };
        self.out.push_back(Action::SendRequest(c));
        Ok(())
    }
}

// -------------------------------------------------------------------------------------
// Header helpers

fn reason(status: u16) -> &'static str {
    match status {
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        400 => "Bad Request",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        603 => "Decline",
        _ => "",
    }
}

/// The lower-cased tokens of every `name` header (comma lists split).
fn tokens(h: &Headers, name: &str) -> Vec<String> {
    h.get_all(name)
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn has_tag(h: &Headers, name: &str, tag: &str) -> bool {
    tokens(h, name).iter().any(|t| t.eq_ignore_ascii_case(tag))
}

fn caps(h: &Headers) -> PeerCaps {
    let either = |tag| has_tag(h, "Supported", tag) || has_tag(h, "Require", tag);
    PeerCaps {
        rel100: either("100rel"),
        timer: either("timer"),
        update: has_tag(h, "Allow", "update"),
    }
}

/// Our Supported value, if we support any extension.
fn supported(cfg: &SessionConfig) -> Option<String> {
    let mut v = Vec::new();
    if cfg.rel100 != Rel100::Disabled {
        v.push("100rel");
    }
    if cfg.session_expires.is_some() {
        v.push("timer");
    }
    (!v.is_empty()).then(|| v.join(", "))
}

/// The Require tags we do not support, comma-joined (empty when all are fine).
fn unsupported(cfg: &SessionConfig, h: &Headers) -> String {
    tokens(h, "Require")
        .into_iter()
        .filter(|t| {
            !((t == "100rel" && cfg.rel100 != Rel100::Disabled)
                || (t == "timer" && cfg.session_expires.is_some()))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A body we treat as SDP: non-empty, typed application/sdp (or untyped).
fn is_sdp(h: &Headers, body: &[u8]) -> bool {
    !body.is_empty()
        && h.content_type().is_none_or(|c| {
            c.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case(SDP))
        })
}

fn set_sdp(h: &mut Headers) -> Result<(), MsgError> {
    h.set("Content-Type", SDP)
}

fn leading_u32(v: &str) -> Option<u32> {
    let digits: String = v.trim().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Session-Expires: delta-seconds and the refresher parameter, lower-cased.
fn session_expires(h: &Headers) -> Option<(u32, Option<String>)> {
    let v = h.get("Session-Expires")?;
    let mut parts = v.split(';');
    let se = leading_u32(parts.next()?)?;
    let refresher = parts.find_map(|p| {
        let (n, v) = p.split_once('=')?;
        n.trim()
            .eq_ignore_ascii_case("refresher")
            .then(|| v.trim().to_ascii_lowercase())
    });
    Some((se, refresher))
}

/// Writes Session-Expires with the refresher named from this message's view: in a response
/// (`is_response`) a Remote refresher is its "uac"; in a request a Local one is.
fn push_timer(
    h: &mut Headers,
    se: u32,
    refresher: Refresher,
    is_response: bool,
) -> Result<(), MsgError> {
    let uac = (refresher == Refresher::Remote) == is_response;
    let name = if uac { "uac" } else { "uas" };
    h.set("Session-Expires", &format!("{se};refresher={name}"))?;
    if is_response && uac {
        // RFC 4028 §9: a UAS naming the UAC refresher requires it to understand timers.
        h.push("Require", "timer")?;
    }
    Ok(())
}

/// Longest session interval we accept from a peer: a day. Beyond, the timer might as well
/// be off, and a dead peer would hold the call that long.
const MAX_SESSION_EXPIRES: u32 = 86_400;

/// A received session interval within [`min_se`, a day].
fn clamp_interval(se: u32, min_se: u32) -> u32 {
    se.max(min_se).min(MAX_SESSION_EXPIRES)
}

/// RFC 4028 §9, UAS side: the interval and refresher for our 2xx, `None` when we run no
/// timer, or `Err(min_se)` for a 422.
fn negotiate(cfg: &SessionConfig, h: &Headers) -> Result<Option<(u32, Refresher)>, u32> {
    let Some(ours) = cfg.session_expires else {
        return Ok(None);
    };
    let peer_timer = caps(h).timer;
    // A peer's huge Min-SE would otherwise switch the timer off.
    let floor = cfg
        .min_se
        .max(h.get("Min-SE").and_then(leading_u32).unwrap_or(0))
        .min(MAX_SESSION_EXPIRES);
    let Some((se, param)) = session_expires(h) else {
        // §9: the UAS may start a timer the UAC did not ask for.
        let r = if peer_timer {
            Refresher::Remote
        } else {
            Refresher::Local
        };
        return Ok(Some((ours.max(floor), r)));
    };
    if se < cfg.min_se && peer_timer {
        return Err(cfg.min_se);
    }
    // The UAS may lower the interval, never below Min-SE; a caller that cannot understand
    // 422 gets its too-small interval raised instead.
    let interval = clamp_interval(se.min(ours), floor);
    let refresher = match param.as_deref() {
        Some("uac") => Refresher::Remote,
        Some("uas") => Refresher::Local,
        _ if peer_timer => Refresher::Remote,
        _ => Refresher::Local,
    };
    Ok(Some((interval, refresher)))
}

/// RAck: response-num, CSeq-num, method (RFC 3262 §7.2).
fn parse_rack(v: &str) -> Option<(u32, u32, String)> {
    let mut it = v.split_whitespace();
    let rseq = it.next()?.parse().ok()?;
    let cseq = it.next()?.parse().ok()?;
    let method = it.next()?.to_owned();
    Some((rseq, cseq, method))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{Message, parse};

    #[allow(clippy::disallowed_methods)]
    fn origin() -> Instant {
        Instant::now()
    }

    fn cfg() -> SessionConfig {
        SessionConfig::new("<sip:b@192.0.2.2>", "SIP/2.0/UDP 192.0.2.2:5060", 7)
    }

    fn invite(extra: &str) -> Request {
        let text = format!(
            "INVITE sip:b@192.0.2.2 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-u1\r\n\
             From: <sip:a@192.0.2.1>;tag=a1\r\n\
             To: <sip:b@192.0.2.2>\r\n\
             Call-ID: u1@192.0.2.1\r\n\
             CSeq: 7 INVITE\r\n\
             Contact: <sip:a@192.0.2.1>\r\n\
             {extra}Content-Length: 0\r\n\r\n"
        );
        match parse(text.as_bytes()).unwrap().0 {
            Message::Request(r) => r,
            m => panic!("{m:?}"),
        }
    }

    fn headers(extra: &str) -> Headers {
        invite(extra).headers().clone()
    }

    fn uas(extra: &str, cfg: SessionConfig) -> Result<InviteSession, Rejection> {
        InviteSession::uas(origin(), TxnId(1), &invite(extra), "b1", cfg)
    }

    #[test]
    fn rfc3261_8_2_2_3_and_rfc3262_uas_refusals() {
        let r = uas("Require: 100rel, foo\r\n", cfg()).unwrap_err();
        assert_eq!(r.status, 420);
        assert_eq!(r.headers, vec![("Unsupported".into(), "foo".into())]);
        let mut no_rel = cfg();
        no_rel.rel100 = Rel100::Disabled;
        assert_eq!(uas("Require: 100rel\r\n", no_rel).unwrap_err().status, 420);
        let mut need_rel = cfg();
        need_rel.rel100 = Rel100::Required;
        let r = uas("", need_rel).unwrap_err();
        assert_eq!((r.status, r.headers[0].1.as_str()), (421, "100rel"));
        let r = uas("Content-Type: text/plain\r\n", cfg());
        assert!(r.is_ok(), "an empty body is no offer, whatever its type");
        let mut inv = invite("Content-Type: text/plain\r\n");
        inv.set_body(b"hi".to_vec());
        let r = InviteSession::uas(origin(), TxnId(1), &inv, "b1", cfg()).unwrap_err();
        assert_eq!(r.status, 415);
        let resp = r.response(&inv, "b1").unwrap();
        assert_eq!(resp.headers().get("Accept"), Some(SDP));
        assert_eq!(resp.headers().to().unwrap().tag.as_deref(), Some("b1"));
    }

    #[test]
    fn rfc4028_9_uas_negotiation() {
        let c = cfg();
        // Too small from a caller that understands 422.
        let h = headers("Supported: timer\r\nSession-Expires: 60\r\n");
        assert_eq!(negotiate(&c, &h), Err(90));
        // ...and from one that does not: raised, and we refresh.
        let h = headers("Session-Expires: 60\r\n");
        assert_eq!(negotiate(&c, &h), Ok(Some((90, Refresher::Local))));
        // No refresher named by a timer-capable caller: the caller refreshes.
        let h = headers("Supported: timer\r\nSession-Expires: 600\r\n");
        assert_eq!(negotiate(&c, &h), Ok(Some((600, Refresher::Remote))));
        let h = headers("Supported: timer\r\nSession-Expires: 600;refresher=uas\r\n");
        assert_eq!(negotiate(&c, &h), Ok(Some((600, Refresher::Local))));
        // We may lower the interval, never below the request's Min-SE.
        let h = headers("Session-Expires: 7200\r\nMin-SE: 2000\r\nk: timer\r\n");
        assert_eq!(negotiate(&c, &h), Ok(Some((2000, Refresher::Remote))));
        // Received intervals stay within [Min-SE, a day], whatever the peer asks.
        let h = headers("Session-Expires: 4000000000\r\nMin-SE: 4000000000\r\n");
        assert_eq!(negotiate(&c, &h), Ok(Some((86_400, Refresher::Local))));
        let h = headers("Session-Expires: 0\r\n");
        assert_eq!(negotiate(&c, &h), Ok(Some((90, Refresher::Local))));
        // No Session-Expires: we may still run our own timer.
        assert_eq!(
            negotiate(&c, &headers("")),
            Ok(Some((1800, Refresher::Local)))
        );
        let mut off = cfg();
        off.session_expires = None;
        assert_eq!(
            negotiate(&off, &headers("Session-Expires: 60\r\n")),
            Ok(None)
        );
        assert_eq!(
            unsupported(&off, &headers("Require: timer\r\n")),
            "timer",
            "no timer support: Require: timer is refused"
        );
    }

    #[test]
    fn rfc4028_refresher_names_follow_the_message_direction() {
        let mut h = Headers::new();
        push_timer(&mut h, 90, Refresher::Remote, true).unwrap();
        assert_eq!(h.get("Session-Expires"), Some("90;refresher=uac"));
        assert_eq!(h.get("Require"), Some("timer"));
        let mut h = Headers::new();
        push_timer(&mut h, 90, Refresher::Local, true).unwrap();
        assert_eq!(h.get("Session-Expires"), Some("90;refresher=uas"));
        assert_eq!(h.get("Require"), None);
        let mut h = Headers::new();
        push_timer(&mut h, 90, Refresher::Local, false).unwrap();
        assert_eq!(h.get("Session-Expires"), Some("90;refresher=uac"));
        h.set("x", "1800 ; Refresher = UAS").unwrap();
        assert_eq!(session_expires(&h), Some((1800, Some("uas".into()))));
    }

    #[test]
    fn header_helpers() {
        assert_eq!(
            parse_rack("776656 1 INVITE"),
            Some((776656, 1, "INVITE".into()))
        );
        assert_eq!(parse_rack("1 INVITE"), None);
        let h = headers("Content-Type: Application/SDP; charset=x\r\n");
        assert!(is_sdp(&h, b"v=0"));
        assert!(!is_sdp(&h, b""));
        assert!(!is_sdp(
            &headers("Content-Type: multipart/mixed\r\n"),
            b"v=0"
        ));
        assert!(
            is_sdp(&headers(""), b"v=0"),
            "untyped bodies are taken as SDP"
        );
        let c = caps(&headers("Allow: INVITE,update\r\nk: 100rel\r\n"));
        assert!(c.update && c.rel100 && !c.timer);
        let mut rng = Rng(1);
        assert!((0..1000).all(|_| (210..=400).contains(&rng.range(210, 400))));
    }

    #[test]
    fn rfc3261_13_2_1_uas_offer_answer_rules() {
        let t0 = origin();
        // Offerless INVITE: an unreliable 1xx may not carry an offer.
        let mut s = uas("", cfg()).unwrap();
        assert!(matches!(
            s.provisional(t0, 180, Some(b"v=0".to_vec())),
            Err(SessionError::State(_))
        ));
        assert!(s.provisional(t0, 180, None).is_ok());
        assert!(matches!(
            s.provisional(t0, 100, None),
            Err(SessionError::Invalid(_))
        ));
        // With an offer: an unreliable 1xx previews the answer, which the 2xx repeats.
        let mut inv = invite("Content-Type: application/sdp\r\n");
        inv.set_body(b"v=0 offer".to_vec());
        let mut s = InviteSession::uas(t0, TxnId(1), &inv, "b1", cfg()).unwrap();
        s.provisional(t0, 183, Some(b"v=0 answer".to_vec()))
            .unwrap();
        s.accept(t0, None).unwrap();
        let ok = std::iter::from_fn(|| s.poll_action())
            .filter_map(|a| match a {
                Action::Respond(_, r) if r.status() == 200 => Some(r),
                _ => None,
            })
            .last()
            .unwrap();
        assert_eq!(ok.body(), b"v=0 answer");
        assert_eq!(
            ok.headers().get("Session-Expires"),
            Some("1800;refresher=uas"),
            "the caller named no timer support: we refresh"
        );
        assert!(matches!(s.accept(t0, None), Err(SessionError::State(_))));
    }
}
