//! The four RFC 3261 §17 transaction machines, with the RFC 6026 `Accepted` state for INVITE.
//!
//! Machines are generic over the message type `M` (the transaction layer instantiates them
//! with the facade's messages) and know only what the RFC makes them know: the request, the
//! status codes of responses, whether the transport is reliable, and time.
//! Contract (house style): inputs `handle_*(now, …)`, outputs drained with `poll_output()`,
//! one deadline from `poll_timeout()`; a spurious timeout does nothing.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// RFC 3261 §17 timer base values (Table 4), configurable per transport profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate, 500 ms by default.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses, 4 s.
    pub t2: Duration,
    /// Maximum duration a message remains in the network, 5 s.
    pub t4: Duration,
    /// How long an INVITE server transaction waits in Proceeding for the TU's final
    /// response before it gives up and reports [`Timer::Guard`], 5 minutes. The TU is
    /// expected to answer (or its no-answer logic to reject) long before; this only bounds
    /// what a lost or buggy TU can leak.
    pub invite_server_guard: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            invite_server_guard: Duration::from_secs(300),
        }
    }
}

/// Timers by their RFC letters (RFC 3261 Table 4; L and M from RFC 6026).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    A,
    B,
    D,
    E,
    F,
    G,
    H,
    I,
    J,
    K,
    L,
    M,
    /// Not an RFC letter: the bound on a transaction that the RFC timers alone would keep
    /// forever: an INVITE client transaction in Proceeding after its CANCEL (RFC 3261 §9.1,
    /// 64·T1; reported as [`Timer::B`]), a server transaction whose TU never sends a final
    /// response (non-INVITE: 64·T1, silent; INVITE: `invite_server_guard`, reported).
    Guard,
}

/// What a transaction asks its owner to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output<M> {
    /// Send this message to the transaction's peer (a request, a response or an ACK).
    Transmit(M),
    /// Hand this message to the transaction user (a response for client transactions, the
    /// ACK of a non-2xx for server INVITE transactions is absorbed and never delivered).
    Deliver(M),
    /// The transaction timed out (Timer B, F or H): for a client, the TU treats it as a 408.
    Timeout(Timer),
    /// The transaction is over; the layer forgets it.
    Terminated,
}

/// Whether the transport retransmits for us (TCP, TLS) or not (UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reliability {
    Reliable,
    Unreliable,
}

fn class(code: u16) -> u16 {
    code / 100
}

/// The deadlines a machine holds, kept in one small list so `poll_timeout` is uniform.
#[derive(Debug, Clone, Default)]
struct Deadlines(Vec<(Timer, Instant)>);

impl Deadlines {
    fn set(&mut self, t: Timer, at: Instant) {
        self.cancel(t);
        self.0.push((t, at));
    }
    fn cancel(&mut self, t: Timer) {
        self.0.retain(|(x, _)| *x != t);
    }
    fn clear(&mut self) {
        self.0.clear();
    }
    /// Removes and returns the timers due at `now`, earliest first.
    fn take_due(&mut self, now: Instant) -> Vec<Timer> {
        let mut due: Vec<(Timer, Instant)> = self
            .0
            .iter()
            .copied()
            .filter(|(_, at)| *at <= now)
            .collect();
        due.sort_by_key(|(_, at)| *at);
        self.0.retain(|(_, at)| *at > now);
        due.into_iter().map(|(t, _)| t).collect()
    }
    fn next(&self) -> Option<(Instant, Timer)> {
        self.0
            .iter()
            .map(|(t, at)| (*at, *t))
            .min_by_key(|(at, _)| *at)
    }
}

// ---------------------------------------------------------------------------------------
// Client INVITE transaction (RFC 3261 §17.1.1, RFC 6026 §7.2)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IctState {
    Calling,
    Proceeding,
    /// RFC 6026: a 2xx was received; further 2xx are passed to the TU until Timer M.
    Accepted,
    Completed,
    Terminated,
}

#[derive(Debug)]
pub struct ClientInvite<M> {
    state: IctState,
    cfg: TimerConfig,
    rel: Reliability,
    request: M,
    ack: Option<M>,
    a_interval: Duration,
    timers: Deadlines,
    out: VecDeque<Output<M>>,
}

impl<M: Clone> ClientInvite<M> {
    /// Starts the transaction: the INVITE goes out at once.
    pub fn new(now: Instant, request: M, rel: Reliability, cfg: TimerConfig) -> Self {
        let mut t = ClientInvite {
            state: IctState::Calling,
            cfg,
            rel,
            request: request.clone(),
            ack: None,
            a_interval: cfg.t1,
            timers: Deadlines::default(),
            out: VecDeque::new(),
        };
        t.out.push_back(Output::Transmit(request));
        // RFC 3261 §17.1.1.2: Timer A only for unreliable transports; Timer B always.
        if rel == Reliability::Unreliable {
            t.timers.set(Timer::A, now + cfg.t1);
        }
        t.timers.set(Timer::B, now + 64 * cfg.t1);
        t
    }

    pub fn state(&self) -> IctState {
        self.state
    }

    /// A response matched to this transaction. `make_ack` builds the ACK of a non-2xx final
    /// response (RFC 3261 §17.1.1.3); it is called at most once.
    pub fn handle_response(
        &mut self,
        now: Instant,
        code: u16,
        resp: M,
        make_ack: impl FnOnce(&M, &M) -> Option<M>,
    ) {
        match (self.state, class(code)) {
            (IctState::Calling | IctState::Proceeding, 1) => {
                // RFC 3261 §17.1.1.2 (figure 5): Timer B runs in Calling only; a ringing call
                // is ended by the TU's CANCEL, not by the transaction.
                self.state = IctState::Proceeding;
                self.timers.cancel(Timer::A);
                self.timers.cancel(Timer::B);
                self.out.push_back(Output::Deliver(resp));
            }
            (IctState::Calling | IctState::Proceeding, 2) => {
                // RFC 6026 §7.2: Accepted, Timer M; the TU (not the transaction) ACKs a 2xx.
                self.state = IctState::Accepted;
                self.timers.clear();
                self.timers.set(Timer::M, now + 64 * self.cfg.t1);
                self.out.push_back(Output::Deliver(resp));
            }
            (IctState::Calling | IctState::Proceeding, 3..=6) => {
                // None: the response lacks what an ACK copies; it is still passed up.
                self.ack = make_ack(&self.request, &resp);
                if let Some(ack) = &self.ack {
                    self.out.push_back(Output::Transmit(ack.clone()));
                }
                self.out.push_back(Output::Deliver(resp));
                self.state = IctState::Completed;
                self.timers.clear();
                let d = match self.rel {
                    // RFC 3261 §17.1.1.2: at least 32 s for unreliable transports.
                    Reliability::Unreliable => Duration::from_secs(32).max(64 * self.cfg.t1),
                    Reliability::Reliable => Duration::ZERO,
                };
                self.timers.set(Timer::D, now + d);
                self.expire_zero(now);
            }
            (IctState::Accepted, 2) => self.out.push_back(Output::Deliver(resp)),
            (IctState::Completed, 3..=6) => {
                // A retransmitted final response: ACK again, do not pass it up.
                if let Some(ack) = &self.ack {
                    self.out.push_back(Output::Transmit(ack.clone()));
                }
            }
            // Anything else (late provisionals, a non-2xx after a 2xx...) is absorbed.
            _ => {}
        }
    }

    /// The TU sent a CANCEL for this INVITE. RFC 3261 §9.1: if no final response arrives
    /// within 64·T1 of the CANCEL, the transaction is destroyed; without this a callee that
    /// sent a 1xx and then went silent would keep the transaction (Timer B stops on a 1xx)
    /// for ever. Reported as Timer B so the TU treats it as a 408.
    pub fn handle_cancel_sent(&mut self, now: Instant) {
        if matches!(self.state, IctState::Calling | IctState::Proceeding) {
            self.timers.set(Timer::Guard, now + 64 * self.cfg.t1);
        }
    }

    /// A transport error sending to the peer (RFC 3261 §17.1.1.2, §18.4).
    pub fn handle_transport_error(&mut self, _now: Instant) {
        if matches!(self.state, IctState::Calling | IctState::Proceeding) {
            self.out.push_back(Output::Timeout(Timer::B));
            self.terminate();
        }
    }

    fn expire_zero(&mut self, now: Instant) {
        self.handle_timeout(now);
    }

    fn terminate(&mut self) {
        self.state = IctState::Terminated;
        self.timers.clear();
        self.out.push_back(Output::Terminated);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for t in self.timers.take_due(now) {
            match (t, self.state) {
                (Timer::A, IctState::Calling) => {
                    self.out.push_back(Output::Transmit(self.request.clone()));
                    self.a_interval *= 2;
                    self.timers.set(Timer::A, now + self.a_interval);
                }
                (Timer::B, IctState::Calling)
                | (Timer::Guard, IctState::Calling | IctState::Proceeding) => {
                    self.out.push_back(Output::Timeout(Timer::B));
                    self.terminate();
                }
                (Timer::D, IctState::Completed) | (Timer::M, IctState::Accepted) => {
                    self.terminate()
                }
                _ => {}
            }
        }
    }

    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output<M>> {
        self.out.pop_front()
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        self.timers.next()
    }
}

// ---------------------------------------------------------------------------------------
// Client non-INVITE transaction (RFC 3261 §17.1.2)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NictState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

#[derive(Debug)]
pub struct ClientNonInvite<M> {
    state: NictState,
    cfg: TimerConfig,
    rel: Reliability,
    request: M,
    e_interval: Duration,
    timers: Deadlines,
    out: VecDeque<Output<M>>,
}

impl<M: Clone> ClientNonInvite<M> {
    pub fn new(now: Instant, request: M, rel: Reliability, cfg: TimerConfig) -> Self {
        let mut t = ClientNonInvite {
            state: NictState::Trying,
            cfg,
            rel,
            request: request.clone(),
            e_interval: cfg.t1,
            timers: Deadlines::default(),
            out: VecDeque::new(),
        };
        t.out.push_back(Output::Transmit(request));
        if rel == Reliability::Unreliable {
            t.timers.set(Timer::E, now + cfg.t1);
        }
        t.timers.set(Timer::F, now + 64 * cfg.t1);
        t
    }

    pub fn state(&self) -> NictState {
        self.state
    }

    pub fn handle_response(&mut self, now: Instant, code: u16, resp: M) {
        match (self.state, class(code)) {
            (NictState::Trying | NictState::Proceeding, 1) => {
                self.state = NictState::Proceeding;
                self.out.push_back(Output::Deliver(resp));
            }
            (NictState::Trying | NictState::Proceeding, 2..=6) => {
                self.out.push_back(Output::Deliver(resp));
                self.state = NictState::Completed;
                self.timers.clear();
                let k = match self.rel {
                    Reliability::Unreliable => self.cfg.t4,
                    Reliability::Reliable => Duration::ZERO,
                };
                self.timers.set(Timer::K, now + k);
                self.handle_timeout(now);
            }
            // Completed absorbs retransmitted finals (RFC 3261 §17.1.2.2).
            _ => {}
        }
    }

    pub fn handle_transport_error(&mut self, _now: Instant) {
        if matches!(self.state, NictState::Trying | NictState::Proceeding) {
            self.out.push_back(Output::Timeout(Timer::F));
            self.terminate();
        }
    }

    fn terminate(&mut self) {
        self.state = NictState::Terminated;
        self.timers.clear();
        self.out.push_back(Output::Terminated);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for t in self.timers.take_due(now) {
            match (t, self.state) {
                (Timer::E, NictState::Trying) => {
                    self.out.push_back(Output::Transmit(self.request.clone()));
                    self.e_interval = (self.e_interval * 2).min(self.cfg.t2);
                    self.timers.set(Timer::E, now + self.e_interval);
                }
                (Timer::E, NictState::Proceeding) => {
                    // RFC 3261 §17.1.2.2: in Proceeding retransmit every T2.
                    self.out.push_back(Output::Transmit(self.request.clone()));
                    self.timers.set(Timer::E, now + self.cfg.t2);
                }
                (Timer::F, NictState::Trying | NictState::Proceeding) => {
                    self.out.push_back(Output::Timeout(Timer::F));
                    self.terminate();
                }
                (Timer::K, NictState::Completed) => self.terminate(),
                _ => {}
            }
        }
    }

    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output<M>> {
        self.out.pop_front()
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        self.timers.next()
    }
}

// ---------------------------------------------------------------------------------------
// Server INVITE transaction (RFC 3261 §17.2.1, RFC 6026 §7.1)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IstState {
    Proceeding,
    /// RFC 6026: a 2xx was sent; retransmissions of the INVITE are absorbed, ACKs go to the TU.
    Accepted,
    Completed,
    Confirmed,
    Terminated,
}

/// Errors of the TU driving a server transaction wrongly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxnError {
    #[error("a final response was already sent")]
    AlreadyFinal,
    #[error("status code {0} is not a response class")]
    BadStatus(u16),
}

#[derive(Debug)]
pub struct ServerInvite<M> {
    state: IstState,
    cfg: TimerConfig,
    rel: Reliability,
    last_response: Option<M>,
    g_interval: Duration,
    timers: Deadlines,
    out: VecDeque<Output<M>>,
}

impl<M: Clone> ServerInvite<M> {
    /// A new INVITE arrived. `trying` is the 100 (Trying) to send: RFC 3261 §17.2.1 requires
    /// it unless the TU answers within 200 ms; sending it at once is always correct.
    pub fn new(
        now: Instant,
        request: M,
        trying: Option<M>,
        rel: Reliability,
        cfg: TimerConfig,
    ) -> Self {
        let mut t = ServerInvite {
            state: IstState::Proceeding,
            cfg,
            rel,
            last_response: None,
            g_interval: cfg.t1,
            timers: Deadlines::default(),
            out: VecDeque::new(),
        };
        t.out.push_back(Output::Deliver(request));
        // Proceeding has no RFC timer: bound it so a TU that never answers cannot leak us.
        t.timers.set(Timer::Guard, now + cfg.invite_server_guard);
        if let Some(tr) = trying {
            t.last_response = Some(tr.clone());
            t.out.push_back(Output::Transmit(tr));
        }
        t
    }

    pub fn state(&self) -> IstState {
        self.state
    }

    /// The TU sends a response.
    pub fn send_response(&mut self, now: Instant, code: u16, resp: M) -> Result<(), TxnError> {
        match (self.state, class(code)) {
            (_, 0 | 7..) => Err(TxnError::BadStatus(code)),
            (IstState::Proceeding, 1) => {
                self.last_response = Some(resp.clone());
                self.out.push_back(Output::Transmit(resp));
                Ok(())
            }
            (IstState::Proceeding, 2) => {
                // RFC 6026 §7.1: Accepted with Timer L; the TU retransmits the 2xx itself.
                self.out.push_back(Output::Transmit(resp));
                self.state = IstState::Accepted;
                self.timers.cancel(Timer::Guard);
                self.timers.set(Timer::L, now + 64 * self.cfg.t1);
                Ok(())
            }
            (IstState::Accepted, 2) => {
                // TU retransmissions of the 2xx pass through (RFC 6026 §7.1).
                self.out.push_back(Output::Transmit(resp));
                Ok(())
            }
            (IstState::Proceeding, 3..=6) => {
                self.last_response = Some(resp.clone());
                self.out.push_back(Output::Transmit(resp));
                self.state = IstState::Completed;
                self.timers.cancel(Timer::Guard);
                if self.rel == Reliability::Unreliable {
                    self.timers.set(Timer::G, now + self.cfg.t1);
                }
                self.timers.set(Timer::H, now + 64 * self.cfg.t1);
                Ok(())
            }
            _ => Err(TxnError::AlreadyFinal),
        }
    }

    /// The INVITE was retransmitted by the client.
    pub fn handle_retransmission(&mut self, _now: Instant) {
        if matches!(self.state, IstState::Proceeding | IstState::Completed)
            && let Some(r) = &self.last_response
        {
            self.out.push_back(Output::Transmit(r.clone()));
        }
    }

    /// An ACK matched this transaction: for a non-2xx it ends the Completed state; after a 2xx
    /// (Accepted) it belongs to the TU.
    pub fn handle_ack(&mut self, now: Instant, ack: M) {
        match self.state {
            IstState::Completed => {
                self.state = IstState::Confirmed;
                self.timers.cancel(Timer::G);
                self.timers.cancel(Timer::H);
                let i = match self.rel {
                    Reliability::Unreliable => self.cfg.t4,
                    Reliability::Reliable => Duration::ZERO,
                };
                self.timers.set(Timer::I, now + i);
                self.handle_timeout(now);
            }
            IstState::Accepted => self.out.push_back(Output::Deliver(ack)),
            _ => {}
        }
    }

    pub fn handle_transport_error(&mut self, _now: Instant) {
        if self.state != IstState::Terminated {
            self.out.push_back(Output::Timeout(Timer::H));
            self.terminate();
        }
    }

    fn terminate(&mut self) {
        self.state = IstState::Terminated;
        self.timers.clear();
        self.out.push_back(Output::Terminated);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for t in self.timers.take_due(now) {
            match (t, self.state) {
                (Timer::G, IstState::Completed) => {
                    if let Some(r) = &self.last_response {
                        self.out.push_back(Output::Transmit(r.clone()));
                    }
                    self.g_interval = (self.g_interval * 2).min(self.cfg.t2);
                    self.timers.set(Timer::G, now + self.g_interval);
                }
                (Timer::H, IstState::Completed) => {
                    // RFC 3261 §17.2.1: no ACK: tell the TU (it may end the dialog).
                    self.out.push_back(Output::Timeout(Timer::H));
                    self.terminate();
                }
                (Timer::Guard, IstState::Proceeding) => {
                    // The TU never answered: tell it, so it can drop what it holds.
                    self.out.push_back(Output::Timeout(Timer::Guard));
                    self.terminate();
                }
                (Timer::I, IstState::Confirmed) | (Timer::L, IstState::Accepted) => {
                    self.terminate()
                }
                _ => {}
            }
        }
    }

    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output<M>> {
        self.out.pop_front()
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        self.timers.next()
    }
}

// ---------------------------------------------------------------------------------------
// Server non-INVITE transaction (RFC 3261 §17.2.2)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NistState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

#[derive(Debug)]
pub struct ServerNonInvite<M> {
    state: NistState,
    cfg: TimerConfig,
    rel: Reliability,
    last_response: Option<M>,
    timers: Deadlines,
    out: VecDeque<Output<M>>,
}

impl<M: Clone> ServerNonInvite<M> {
    pub fn new(now: Instant, request: M, rel: Reliability, cfg: TimerConfig) -> Self {
        let mut t = ServerNonInvite {
            state: NistState::Trying,
            cfg,
            rel,
            last_response: None,
            timers: Deadlines::default(),
            out: VecDeque::new(),
        };
        t.out.push_back(Output::Deliver(request));
        // RFC 3261 §17.1.2.2: the client gives up after Timer F (64·T1), so a request the TU
        // never answers is dead by then; end silently rather than live for ever.
        t.timers.set(Timer::Guard, now + 64 * cfg.t1);
        t
    }

    pub fn state(&self) -> NistState {
        self.state
    }

    pub fn send_response(&mut self, now: Instant, code: u16, resp: M) -> Result<(), TxnError> {
        match (self.state, class(code)) {
            (_, 0 | 7..) => Err(TxnError::BadStatus(code)),
            (NistState::Trying | NistState::Proceeding, 1) => {
                self.state = NistState::Proceeding;
                self.last_response = Some(resp.clone());
                self.out.push_back(Output::Transmit(resp));
                Ok(())
            }
            (NistState::Trying | NistState::Proceeding, 2..=6) => {
                self.state = NistState::Completed;
                self.last_response = Some(resp.clone());
                self.out.push_back(Output::Transmit(resp));
                self.timers.cancel(Timer::Guard);
                let j = match self.rel {
                    Reliability::Unreliable => 64 * self.cfg.t1,
                    Reliability::Reliable => Duration::ZERO,
                };
                self.timers.set(Timer::J, now + j);
                self.handle_timeout(now);
                Ok(())
            }
            _ => Err(TxnError::AlreadyFinal),
        }
    }

    /// The request was retransmitted: resend the last response, if any (RFC 3261 §17.2.2).
    pub fn handle_retransmission(&mut self, _now: Instant) {
        if matches!(self.state, NistState::Proceeding | NistState::Completed)
            && let Some(r) = &self.last_response
        {
            self.out.push_back(Output::Transmit(r.clone()));
        }
    }

    pub fn handle_transport_error(&mut self, _now: Instant) {
        if self.state != NistState::Terminated {
            self.terminate();
        }
    }

    fn terminate(&mut self) {
        self.state = NistState::Terminated;
        self.timers.clear();
        self.out.push_back(Output::Terminated);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for t in self.timers.take_due(now) {
            match (t, self.state) {
                (Timer::J, NistState::Completed)
                | (Timer::Guard, NistState::Trying | NistState::Proceeding) => self.terminate(),
                _ => {}
            }
        }
    }

    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output<M>> {
        self.out.pop_front()
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        self.timers.next()
    }
}
