//! `ClientCall` / `ServerCall` state machines with the timers of ript-profile §7.
//!
//! Sans-IO: every input takes `now` (monotonic) and, where an event is stamped, `wall_ms`
//! (Unix-epoch ms). Outputs are drained with `poll_output()` and the single next deadline
//! with `poll_timeout()`. A spurious timeout does nothing.

use crate::Error;
use crate::events::{Event, EventDirection, EventKind};
use crate::model::{CallTimers, Reason};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Timers named after ript-profile §7 (plus the §2 retention of an ended call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    NoSignalingByway,
    PingInterval,
    PongTimeout,
    MediaTimeout,
    AckTimeout,
    RetryBackoff,
    /// ript-profile §2: `GET {call}` answers for at least 60 s after the end.
    Retention,
    /// Client: [`NO_SIGNALING_BYWAY`] without an open signaling byway; the call ends locally.
    GiveUp,
}

pub const NO_SIGNALING_BYWAY: Duration = Duration::from_secs(30);
pub const PING_INTERVAL: Duration = Duration::from_secs(5);
pub const PONG_TIMEOUT: Duration = Duration::from_secs(15);
pub const RETENTION: Duration = Duration::from_secs(60);

fn state_name(k: &EventKind) -> &'static str {
    match k {
        EventKind::Proceeding => "proceeding",
        EventKind::Alerting => "alerting",
        EventKind::Answered => "answered",
        EventKind::Declined => "declined",
        EventKind::Failed => "failed",
        EventKind::Noanswer => "noanswer",
        EventKind::End => "end",
        _ => "other",
    }
}

/// ript-profile §5: proceeding → alerting → answered → end; final states before answer.
fn transition_allowed(from: &EventKind, to: &EventKind) -> bool {
    use EventKind::*;
    match (from, to) {
        (f, _) if f.is_final() => false,
        (Proceeding, Proceeding | Alerting | Answered) => true,
        (Alerting, Alerting | Answered) => true,
        (Proceeding | Alerting, Declined | Failed | Noanswer | End) => true,
        (Answered, End) => true,
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// Server

/// Who ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    Client,
    Server,
    /// ript-profile §7: 30 s without any signaling byway.
    NoSignalingByway,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOutput {
    /// Send on every open reverse signaling byway.
    Broadcast(Event),
    /// End every byway of the call (reverse event streams finish with `]`; pending media
    /// GETs answer 404).
    CloseByways,
    /// The call reached a final state.
    Ended {
        by: EndedBy,
        state: EventKind,
        reason: Option<Reason>,
    },
    /// Retention is over: forget the call (`GET {call}` becomes 404).
    Forget,
}

/// What the server application asks its call to do (the SIP side of a gateway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerCommand {
    State(EventKind, Option<Reason>),
    Migrate(Option<String>),
    MediaPanic,
    HandlerChanged(String),
}

#[derive(Debug)]
pub struct ServerCall {
    uri: String,
    state: EventKind,
    reason: Option<Reason>,
    no_byway_timeout: Duration,
    byways: usize,
    no_byway_deadline: Option<Instant>,
    forget_at: Option<Instant>,
    out: VecDeque<ServerOutput>,
}

impl ServerCall {
    /// A new call is `proceeding` at once (like a SIP 100 Trying; docs/protocol.md) and has
    /// 30 s to open its first signaling byway.
    pub fn new(now: Instant, uri: impl Into<String>) -> Self {
        Self::with_byway_timeout(now, uri, NO_SIGNALING_BYWAY)
    }

    /// Like `new` with another no-signaling-byway timeout (the profile's is 30 s).
    pub fn with_byway_timeout(now: Instant, uri: impl Into<String>, timeout: Duration) -> Self {
        ServerCall {
            uri: uri.into(),
            state: EventKind::Proceeding,
            reason: None,
            no_byway_timeout: timeout,
            byways: 0,
            no_byway_deadline: Some(now + timeout),
            forget_at: None,
            out: VecDeque::new(),
        }
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn state(&self) -> &EventKind {
        &self.state
    }

    pub fn reason(&self) -> Option<&Reason> {
        self.reason.as_ref()
    }

    pub fn is_ended(&self) -> bool {
        self.state.is_final()
    }

    fn event(&self, wall_ms: u64, kind: EventKind) -> Event {
        Event::new(EventDirection::S2c, wall_ms, &self.uri, kind)
    }

    /// The current state event, which a new reverse byway receives first (ript-profile §5).
    pub fn current_state_event(&self, wall_ms: u64) -> Event {
        self.event(wall_ms, self.state.clone())
            .with_reason(self.reason.clone())
    }

    /// A signaling byway (either direction) opened. `Err(CallEnded)` → answer 404.
    pub fn handle_byway_opened(&mut self, _now: Instant) -> Result<(), Error> {
        if self.is_ended() {
            return Err(Error::CallEnded);
        }
        self.byways += 1;
        self.no_byway_deadline = None;
        Ok(())
    }

    pub fn handle_byway_closed(&mut self, now: Instant) {
        self.byways = self.byways.saturating_sub(1);
        if self.byways == 0 && !self.is_ended() {
            self.no_byway_deadline = Some(now + self.no_byway_timeout);
        }
    }

    /// An event that arrived on a forward byway. Events not for a server (wrong direction,
    /// wrong call, unknown or server-only names) are ignored; `Ok(false)` says so, for the log.
    pub fn handle_client_event(&mut self, now: Instant, wall_ms: u64, ev: &Event) -> bool {
        if ev.direction != EventDirection::C2s || ev.call != self.uri || self.is_ended() {
            return false;
        }
        match &ev.event {
            EventKind::Ping => {
                let mut pong = self.event(wall_ms, EventKind::Pong);
                pong.nonce = ev.nonce.clone();
                self.out.push_back(ServerOutput::Broadcast(pong));
                true
            }
            EventKind::End => {
                self.finish(
                    now,
                    wall_ms,
                    EventKind::End,
                    ev.reason.clone(),
                    EndedBy::Client,
                );
                true
            }
            _ => false,
        }
    }

    /// A command from the server application.
    pub fn handle_command(
        &mut self,
        now: Instant,
        wall_ms: u64,
        cmd: ServerCommand,
    ) -> Result<(), Error> {
        if self.is_ended() {
            return Err(Error::CallEnded);
        }
        match cmd {
            ServerCommand::State(kind, reason) => {
                if !kind.is_state() || !transition_allowed(&self.state, &kind) {
                    return Err(Error::InvalidTransition {
                        state: state_name(&self.state),
                        event: state_name(&kind),
                    });
                }
                if kind.is_final() {
                    let reason = reason.or_else(|| Some(Reason::default()));
                    self.finish(now, wall_ms, kind, reason, EndedBy::Server);
                } else {
                    self.state = kind.clone();
                    self.out
                        .push_back(ServerOutput::Broadcast(self.event(wall_ms, kind)));
                }
            }
            ServerCommand::Migrate(uri) => {
                let mut ev = self.event(wall_ms, EventKind::Migrate);
                ev.uri = uri;
                self.out.push_back(ServerOutput::Broadcast(ev));
            }
            ServerCommand::MediaPanic => {
                self.out.push_back(ServerOutput::Broadcast(
                    self.event(wall_ms, EventKind::MediaPanic),
                ));
            }
            ServerCommand::HandlerChanged(h) => {
                let mut ev = self.event(wall_ms, EventKind::HandlerChanged);
                ev.handler = Some(h);
                self.out.push_back(ServerOutput::Broadcast(ev));
            }
        }
        Ok(())
    }

    fn finish(
        &mut self,
        now: Instant,
        wall_ms: u64,
        kind: EventKind,
        reason: Option<Reason>,
        by: EndedBy,
    ) {
        // ript-profile §9: a final state always has a reason.
        let reason = reason.or_else(|| Some(Reason::default()));
        self.state = kind.clone();
        self.reason = reason.clone();
        self.no_byway_deadline = None;
        self.forget_at = Some(now + RETENTION);
        self.out
            .push_back(ServerOutput::Broadcast(self.current_state_event(wall_ms)));
        self.out.push_back(ServerOutput::CloseByways);
        self.out.push_back(ServerOutput::Ended {
            by,
            state: kind,
            reason,
        });
    }

    pub fn handle_timeout(&mut self, now: Instant, wall_ms: u64) {
        if self.no_byway_deadline.is_some_and(|d| now >= d) {
            let reason = Some(Reason {
                sip: Some(408),
                text: Some("no signaling byway".into()),
            });
            self.finish(
                now,
                wall_ms,
                EventKind::End,
                reason,
                EndedBy::NoSignalingByway,
            );
        }
        if self.forget_at.is_some_and(|d| now >= d) {
            self.forget_at = None;
            self.out.push_back(ServerOutput::Forget);
        }
    }

    #[must_use]
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        self.out.pop_front()
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        match (self.no_byway_deadline, self.forget_at) {
            (Some(d), _) => Some((d, Timer::NoSignalingByway)),
            (None, Some(f)) => Some((f, Timer::Retention)),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Client

/// Why the client migrates (ript-profile §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrateTrigger {
    /// The server sent `migrate` (graceful).
    ServerRequest,
    PongTimeout,
    BywayReset,
    MediaTimeout,
    AckTimeout,
    ConnectionLost,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaPath {
    Datagrams,
    Byways,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOutput {
    /// Send on the forward signaling byway.
    Send(Event),
    /// The call moved to a new state (from the server).
    State(EventKind, Option<Reason>),
    /// The server reported that reverse media found no pending GET.
    MediaPanic,
    HandlerChanged(String),
    /// Close this call's byways and reopen `PUT`/`GET {uri}/events` without the session
    /// cookie; report `handle_signaling_open` once the response headers arrived.
    Migrate {
        uri: String,
        trigger: MigrateTrigger,
    },
    /// Signaling is up again: (re)open media on `path` and flush what was buffered; seq and
    /// timestamps go back to full values.
    OpenMedia(MediaPath),
    /// ript-profile §6: no acks in datagram mode → media byways.
    FallbackToByways,
    /// The call reached a final state; close everything.
    Ended(EventKind, Option<Reason>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the events byways' response headers.
    Opening,
    Up,
    /// Waiting for `retry_at` after a failed reconnection.
    Backoff,
    Ended,
}

#[derive(Debug)]
pub struct ClientCall {
    uri: String,
    timers: CallTimers,
    state: Option<EventKind>,
    phase: Phase,
    path: MediaPath,
    prefer_datagrams: bool,
    next_ping: Option<Instant>,
    pong_deadline: Option<Instant>,
    ping_counter: u64,
    media_deadline: Option<Instant>,
    ack_deadline: Option<Instant>,
    backoff: Duration,
    retry_at: Option<Instant>,
    /// Running while the call has no open signaling byway (Opening/Backoff); reaching it
    /// ends the call locally (mirrors the server's ript-profile §7 rule).
    give_up_at: Option<Instant>,
    /// Set once the call fell back to media byways (ack timeout in datagram mode, or the
    /// datagram session refused): later migrations stay on byways.
    byways_only: bool,
    out: VecDeque<ClientOutput>,
}

impl ClientCall {
    /// A call just created with `POST {tg}/calls`; the shell now opens the events byways and
    /// calls `handle_signaling_open`. The give-up deadline ([`NO_SIGNALING_BYWAY`]) starts now.
    pub fn new(
        now: Instant,
        uri: impl Into<String>,
        timers: CallTimers,
        prefer_datagrams: bool,
    ) -> Self {
        ClientCall {
            uri: uri.into(),
            timers,
            state: None,
            phase: Phase::Opening,
            path: if prefer_datagrams {
                MediaPath::Datagrams
            } else {
                MediaPath::Byways
            },
            prefer_datagrams,
            next_ping: None,
            pong_deadline: None,
            ping_counter: 0,
            media_deadline: None,
            ack_deadline: None,
            backoff: Duration::from_millis(timers.retry_backoff_ms),
            retry_at: None,
            give_up_at: Some(now + NO_SIGNALING_BYWAY),
            byways_only: false,
            out: VecDeque::new(),
        }
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn state(&self) -> Option<&EventKind> {
        self.state.as_ref()
    }

    pub fn media_path(&self) -> &MediaPath {
        &self.path
    }

    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    fn event(&self, wall_ms: u64, kind: EventKind) -> Event {
        Event::new(EventDirection::C2s, wall_ms, &self.uri, kind)
    }

    /// The events byways answered (response headers received). Clears the give-up deadline.
    pub fn handle_signaling_open(&mut self, now: Instant) {
        if self.phase == Phase::Ended {
            return;
        }
        self.phase = Phase::Up;
        self.backoff = Duration::from_millis(self.timers.retry_backoff_ms);
        self.retry_at = None;
        self.give_up_at = None;
        self.next_ping = Some(now + PING_INTERVAL);
        self.pong_deadline = Some(now + PONG_TIMEOUT);
        if self.media_deadline.is_some() {
            self.media_deadline = Some(now + Duration::from_millis(self.timers.media_timeout_ms));
        }
        self.ack_deadline = None;
        self.out
            .push_back(ClientOutput::OpenMedia(self.path.clone()));
    }

    /// Opening the events byways failed (connection refused, TLS, 5xx): back off, doubling.
    /// The retries stop when the give-up deadline passes ([`Timer::GiveUp`]).
    pub fn handle_signaling_failed(&mut self, now: Instant) {
        if self.phase == Phase::Ended {
            return;
        }
        self.phase = Phase::Backoff;
        self.start_give_up(now);
        self.retry_at = Some(now + self.backoff);
        self.backoff = self.backoff.saturating_mul(2);
    }

    pub fn handle_server_event(&mut self, now: Instant, ev: &Event) {
        if self.phase == Phase::Ended || ev.direction != EventDirection::S2c {
            return;
        }
        match &ev.event {
            k if k.is_state() => {
                // A new reverse byway repeats the current state: not a change.
                if self.state.as_ref() == Some(k) && !k.is_final() {
                    return;
                }
                self.state = Some(k.clone());
                if *k == EventKind::Answered {
                    self.media_deadline =
                        Some(now + Duration::from_millis(self.timers.media_timeout_ms));
                }
                if k.is_final() {
                    self.end_local();
                    self.out
                        .push_back(ClientOutput::Ended(k.clone(), ev.reason.clone()));
                } else {
                    self.out
                        .push_back(ClientOutput::State(k.clone(), ev.reason.clone()));
                }
            }
            // Any pong proves the path works, even one answering an older ping.
            EventKind::Pong if self.phase == Phase::Up => {
                self.pong_deadline = Some(now + PONG_TIMEOUT);
            }
            EventKind::Migrate => {
                if let Some(u) = &ev.uri {
                    self.uri = u.clone();
                }
                self.migrate(now, MigrateTrigger::ServerRequest);
            }
            EventKind::MediaPanic => self.out.push_back(ClientOutput::MediaPanic),
            EventKind::HandlerChanged => {
                if let Some(h) = &ev.handler {
                    self.out.push_back(ClientOutput::HandlerChanged(h.clone()));
                }
            }
            _ => {}
        }
    }

    /// Media arrived from the server (any path).
    pub fn handle_media_received(&mut self, now: Instant) {
        if self.media_deadline.is_some() && self.phase != Phase::Ended {
            self.media_deadline = Some(now + Duration::from_millis(self.timers.media_timeout_ms));
        }
    }

    /// We sent a media chunk: acks are now expected within `ack-timeout`.
    pub fn handle_media_sent(&mut self, now: Instant) {
        if self.phase == Phase::Up && self.ack_deadline.is_none() {
            self.ack_deadline = Some(now + Duration::from_millis(self.timers.ack_timeout_ms));
        }
    }

    /// An ack arrived; `outstanding` = sent chunks still unacknowledged.
    pub fn handle_ack(&mut self, now: Instant, outstanding: bool) {
        self.ack_deadline =
            outstanding.then(|| now + Duration::from_millis(self.timers.ack_timeout_ms));
    }

    /// The datagram session was refused (non-2xx CONNECT, missing SETTINGS). The call then
    /// stays on media byways, also after later migrations.
    pub fn handle_datagrams_refused(&mut self, _now: Instant) {
        self.byways_only = true;
        if self.path == MediaPath::Datagrams {
            self.path = MediaPath::Byways;
            self.ack_deadline = None;
            self.out.push_back(ClientOutput::FallbackToByways);
        }
    }

    /// A signaling byway was reset by the peer.
    pub fn handle_byway_reset(&mut self, now: Instant) {
        if self.phase == Phase::Up {
            self.migrate(now, MigrateTrigger::BywayReset);
        }
    }

    pub fn handle_connection_lost(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Up | Phase::Opening) {
            self.migrate(now, MigrateTrigger::ConnectionLost);
        }
    }

    /// The application hangs up: outputs `Send(end)` then `Ended(End, reason)`.
    ///
    /// The shell must deliver that `Send(end)` even when no forward signaling byway is open
    /// (the call is migrating or backing off, or never came up): it opens a `PUT
    /// {uri}/events` just to carry it (a body `[` + the event + `]`). The machine is ended
    /// after this call and asks for no further migration, so an undelivered `end` would
    /// leave the server holding the call until its own 30 s no-signaling-byway timer.
    pub fn end(&mut self, _now: Instant, wall_ms: u64, reason: Option<Reason>) {
        if self.phase == Phase::Ended {
            return;
        }
        let ev = self
            .event(wall_ms, EventKind::End)
            .with_reason(reason.clone());
        self.out.push_back(ClientOutput::Send(ev));
        self.state = Some(EventKind::End);
        self.end_local();
        self.out
            .push_back(ClientOutput::Ended(EventKind::End, reason));
    }

    fn end_local(&mut self) {
        self.phase = Phase::Ended;
        self.give_up_at = None;
        self.next_ping = None;
        self.pong_deadline = None;
        self.media_deadline = None;
        self.ack_deadline = None;
        self.retry_at = None;
    }

    /// Starts the give-up deadline unless it is already running.
    fn start_give_up(&mut self, now: Instant) {
        if self.give_up_at.is_none() {
            self.give_up_at = Some(now + NO_SIGNALING_BYWAY);
        }
    }

    fn migrate(&mut self, now: Instant, trigger: MigrateTrigger) {
        self.phase = Phase::Opening;
        self.next_ping = None;
        self.pong_deadline = None;
        self.ack_deadline = None;
        self.start_give_up(now);
        // A new media path may again be datagrams (a fresh connection may support them),
        // unless this call already fell back to byways.
        if self.prefer_datagrams && !self.byways_only {
            self.path = MediaPath::Datagrams;
        }
        self.out.push_back(ClientOutput::Migrate {
            uri: self.uri.clone(),
            trigger,
        });
    }

    pub fn handle_timeout(&mut self, now: Instant, wall_ms: u64) {
        let due = |d: Option<Instant>| d.is_some_and(|d| now >= d);
        if self.phase != Phase::Ended && due(self.give_up_at) {
            // No signaling byway for 30 s: stop retrying and end the call locally.
            self.state = Some(EventKind::End);
            self.end_local();
            self.out.push_back(ClientOutput::Ended(
                EventKind::End,
                Some(Reason {
                    sip: Some(408),
                    text: Some("no signaling byway".into()),
                }),
            ));
            return;
        }
        if due(self.retry_at) {
            self.retry_at = None;
            self.phase = Phase::Opening;
            self.out.push_back(ClientOutput::Migrate {
                uri: self.uri.clone(),
                trigger: MigrateTrigger::ConnectionLost,
            });
            return;
        }
        if self.phase != Phase::Up {
            return;
        }
        if due(self.pong_deadline) {
            return self.migrate(now, MigrateTrigger::PongTimeout);
        }
        if due(self.media_deadline) {
            self.media_deadline = Some(now + Duration::from_millis(self.timers.media_timeout_ms));
            return self.migrate(now, MigrateTrigger::MediaTimeout);
        }
        if due(self.ack_deadline) {
            self.ack_deadline = None;
            if self.path == MediaPath::Datagrams {
                // ript-profile §9: datagram mode first falls back to byways, for good.
                self.path = MediaPath::Byways;
                self.byways_only = true;
                self.out.push_back(ClientOutput::FallbackToByways);
                return;
            }
            return self.migrate(now, MigrateTrigger::AckTimeout);
        }
        if due(self.next_ping) {
            self.ping_counter += 1;
            let mut ping = self.event(wall_ms, EventKind::Ping);
            ping.nonce = Some(self.ping_counter.to_string());
            self.out.push_back(ClientOutput::Send(ping));
            self.next_ping = Some(now + PING_INTERVAL);
        }
    }

    #[must_use]
    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        self.out.pop_front()
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        // Only timers `handle_timeout` acts on in this phase: the media deadline stays armed
        // while (re)opening but only counts once signaling is up again, and reporting it
        // would make the shell wake up at a past deadline over and over.
        let up = |d: Option<Instant>| d.filter(|_| self.phase == Phase::Up);
        // On a tie the first wins, as in `handle_timeout`: giving up goes before a retry.
        [
            (self.give_up_at, Timer::GiveUp),
            (self.retry_at, Timer::RetryBackoff),
            (up(self.pong_deadline), Timer::PongTimeout),
            (up(self.media_deadline), Timer::MediaTimeout),
            (up(self.ack_deadline), Timer::AckTimeout),
            (up(self.next_ping), Timer::PingInterval),
        ]
        .into_iter()
        .filter_map(|(d, t)| d.map(|d| (d, t)))
        .min_by_key(|(d, _)| *d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any origin works: virtual time only ever adds to it.
    #[allow(clippy::disallowed_methods)]
    fn origin() -> Instant {
        Instant::now()
    }

    fn drain_server(c: &mut ServerCall) -> Vec<ServerOutput> {
        std::iter::from_fn(|| c.poll_output()).collect()
    }
    fn drain_client(c: &mut ClientCall) -> Vec<ClientOutput> {
        std::iter::from_fn(|| c.poll_output()).collect()
    }

    /// Runs a machine's timers in virtual time up to `until`.
    fn run_client(c: &mut ClientCall, now: &mut Instant, until: Instant) -> Vec<ClientOutput> {
        let mut out = vec![];
        while let Some((d, _)) = c.poll_timeout() {
            if d > until {
                break;
            }
            *now = d;
            c.handle_timeout(d, 0);
            out.extend(drain_client(c));
        }
        *now = until;
        out
    }

    #[test]
    fn ript7_server_ends_call_after_30s_without_byway_and_forgets_after_60s() {
        let t0 = origin();
        let mut c = ServerCall::new(t0, "https://s/calls/1");
        c.handle_byway_opened(t0).unwrap();
        c.handle_byway_closed(t0 + Duration::from_secs(10));
        assert_eq!(
            c.poll_timeout(),
            Some((t0 + Duration::from_secs(40), Timer::NoSignalingByway))
        );
        c.handle_timeout(t0 + Duration::from_secs(39), 0);
        assert!(
            drain_server(&mut c).is_empty(),
            "spurious timeout does nothing"
        );
        c.handle_timeout(t0 + Duration::from_secs(40), 0);
        let out = drain_server(&mut c);
        assert!(matches!(
            out.last(),
            Some(ServerOutput::Ended {
                by: EndedBy::NoSignalingByway,
                ..
            })
        ));
        assert!(
            c.handle_byway_opened(t0 + Duration::from_secs(41)).is_err(),
            "404 after end"
        );
        assert_eq!(
            c.poll_timeout(),
            Some((t0 + Duration::from_secs(100), Timer::Retention))
        );
        c.handle_timeout(t0 + Duration::from_secs(100), 0);
        assert_eq!(drain_server(&mut c), vec![ServerOutput::Forget]);
    }

    #[test]
    fn ript5_client_end_is_echoed_with_its_reason_then_byways_close() {
        let t0 = origin();
        let mut c = ServerCall::new(t0, "u");
        c.handle_command(t0, 0, ServerCommand::State(EventKind::Answered, None))
            .unwrap();
        let _ = drain_server(&mut c);
        let mut end = Event::new(EventDirection::C2s, 0, "u", EventKind::End);
        end.reason = Some(Reason::sip(200, "bye"));
        assert!(c.handle_client_event(t0, 0, &end));
        let out = drain_server(&mut c);
        match &out[0] {
            ServerOutput::Broadcast(e) => {
                assert_eq!(e.event, EventKind::End);
                assert_eq!(e.direction, EventDirection::S2c);
                assert_eq!(e.reason, Some(Reason::sip(200, "bye")));
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(out[1], ServerOutput::CloseByways);
    }

    #[test]
    fn server_rejects_illegal_transitions_and_ignores_foreign_events() {
        let t0 = origin();
        let mut c = ServerCall::new(t0, "u");
        assert!(
            c.handle_command(t0, 0, ServerCommand::State(EventKind::End, None))
                .is_ok()
        );
        assert!(matches!(
            c.handle_command(t0, 0, ServerCommand::State(EventKind::Answered, None)),
            Err(Error::CallEnded)
        ));
        let mut c = ServerCall::new(t0, "u");
        c.handle_command(t0, 0, ServerCommand::State(EventKind::Answered, None))
            .unwrap();
        assert!(
            c.handle_command(t0, 0, ServerCommand::State(EventKind::Alerting, None))
                .is_err()
        );
        let wrong_call = Event::new(EventDirection::C2s, 0, "other", EventKind::End);
        assert!(!c.handle_client_event(t0, 0, &wrong_call));
        let server_only = Event::new(EventDirection::C2s, 0, "u", EventKind::Answered);
        assert!(!c.handle_client_event(t0, 0, &server_only));
        let mut ping = Event::new(EventDirection::C2s, 0, "u", EventKind::Ping);
        ping.nonce = Some("n1".into());
        let _ = drain_server(&mut c);
        assert!(c.handle_client_event(t0, 0, &ping));
        match drain_server(&mut c).as_slice() {
            [ServerOutput::Broadcast(p)] => {
                assert_eq!(p.event, EventKind::Pong);
                assert_eq!(p.nonce.as_deref(), Some("n1"));
            }
            o => panic!("{o:?}"),
        }
    }

    fn up_client(t0: Instant) -> ClientCall {
        let mut c = ClientCall::new(t0, "u", CallTimers::default(), true);
        c.handle_signaling_open(t0);
        assert_eq!(
            drain_client(&mut c),
            vec![ClientOutput::OpenMedia(MediaPath::Datagrams)]
        );
        c
    }

    #[test]
    fn ript7_client_pings_every_5s_and_migrates_after_15s_without_pong() {
        let t0 = origin();
        let mut now = t0;
        let mut c = up_client(t0);
        let out = run_client(&mut c, &mut now, t0 + Duration::from_secs(14));
        let pings = out
            .iter()
            .filter(|o| matches!(o, ClientOutput::Send(e) if e.event == EventKind::Ping))
            .count();
        assert_eq!(pings, 2);
        let out = run_client(&mut c, &mut now, t0 + Duration::from_secs(15));
        assert_eq!(
            out,
            vec![ClientOutput::Migrate {
                uri: "u".into(),
                trigger: MigrateTrigger::PongTimeout
            }]
        );
    }

    #[test]
    fn pongs_keep_the_call_up() {
        let t0 = origin();
        let mut now = t0;
        let mut c = up_client(t0);
        for i in 1..=10u64 {
            let out = run_client(&mut c, &mut now, t0 + Duration::from_secs(5 * i));
            assert!(
                !out.iter()
                    .any(|o| matches!(o, ClientOutput::Migrate { .. })),
                "{out:?}"
            );
            let mut pong = Event::new(EventDirection::S2c, 0, "u", EventKind::Pong);
            pong.nonce = Some(i.to_string());
            c.handle_server_event(now, &pong);
        }
    }

    #[test]
    fn ript7_media_timeout_counts_from_answered() {
        let t0 = origin();
        let mut now = t0;
        let mut c = up_client(t0);
        let keep = |c: &mut ClientCall, now: Instant| {
            let pong = Event {
                nonce: Some("x".into()),
                ..Event::new(EventDirection::S2c, 0, "u", EventKind::Pong)
            };
            c.handle_server_event(now, &pong);
        };
        let out = run_client(&mut c, &mut now, t0 + Duration::from_secs(9));
        assert!(
            !out.iter()
                .any(|o| matches!(o, ClientOutput::Migrate { .. })),
            "no media timer before answer"
        );
        keep(&mut c, now);
        c.handle_server_event(
            now,
            &Event::new(EventDirection::S2c, 0, "u", EventKind::Answered),
        );
        assert_eq!(
            drain_client(&mut c),
            vec![ClientOutput::State(EventKind::Answered, None)]
        );
        let answered = now;
        c.handle_media_received(answered + Duration::from_secs(3));
        let out = run_client(&mut c, &mut now, answered + Duration::from_millis(7_999));
        assert!(
            !out.iter()
                .any(|o| matches!(o, ClientOutput::Migrate { .. }))
        );
        let out = run_client(&mut c, &mut now, answered + Duration::from_secs(8));
        assert!(out.contains(&ClientOutput::Migrate {
            uri: "u".into(),
            trigger: MigrateTrigger::MediaTimeout
        }));
    }

    #[test]
    fn ack_timeout_falls_back_to_byways_then_migrates() {
        let t0 = origin();
        let mut now = t0;
        let mut c = up_client(t0);
        c.handle_media_sent(t0);
        let out = run_client(&mut c, &mut now, t0 + Duration::from_millis(1000));
        assert_eq!(out, vec![ClientOutput::FallbackToByways]);
        assert_eq!(c.media_path(), &MediaPath::Byways);
        c.handle_media_sent(now);
        c.handle_ack(now + Duration::from_millis(500), true);
        let out = run_client(&mut c, &mut now, t0 + Duration::from_millis(2499));
        assert!(out.is_empty(), "{out:?}");
        let out = run_client(&mut c, &mut now, t0 + Duration::from_millis(2500));
        assert_eq!(
            out,
            vec![ClientOutput::Migrate {
                uri: "u".into(),
                trigger: MigrateTrigger::AckTimeout
            }]
        );
    }

    #[test]
    fn ript7_graceful_migration_and_retry_backoff_doubles() {
        let t0 = origin();
        let mut now = t0;
        let mut c = up_client(t0);
        let mut mig = Event::new(EventDirection::S2c, 0, "u", EventKind::Migrate);
        mig.uri = Some("https://b/calls/1".into());
        c.handle_server_event(t0, &mig);
        assert_eq!(
            drain_client(&mut c),
            vec![ClientOutput::Migrate {
                uri: "https://b/calls/1".into(),
                trigger: MigrateTrigger::ServerRequest
            }]
        );
        assert_eq!(c.uri(), "https://b/calls/1");
        c.handle_signaling_failed(t0);
        assert_eq!(
            c.poll_timeout(),
            Some((t0 + Duration::from_millis(2000), Timer::RetryBackoff))
        );
        let out = run_client(&mut c, &mut now, t0 + Duration::from_millis(2000));
        assert!(matches!(out.as_slice(), [ClientOutput::Migrate { .. }]));
        c.handle_signaling_failed(now);
        assert_eq!(
            c.poll_timeout(),
            Some((now + Duration::from_millis(4000), Timer::RetryBackoff))
        );
        c.handle_signaling_failed(now);
        assert_eq!(
            c.poll_timeout(),
            Some((now + Duration::from_millis(8000), Timer::RetryBackoff))
        );
        c.handle_signaling_open(now);
        assert_eq!(
            drain_client(&mut c),
            vec![ClientOutput::OpenMedia(MediaPath::Datagrams)]
        );
    }

    fn give_up_reason() -> Option<Reason> {
        Some(Reason {
            sip: Some(408),
            text: Some("no signaling byway".into()),
        })
    }

    /// Runs the client in virtual time up to `until`, failing every reconnection attempt.
    fn run_failing(c: &mut ClientCall, now: &mut Instant, until: Instant) -> Vec<ClientOutput> {
        let mut out = vec![];
        while let Some((d, _)) = c.poll_timeout() {
            if d > until {
                break;
            }
            *now = d;
            c.handle_timeout(d, 0);
            let step = drain_client(c);
            if step
                .iter()
                .any(|o| matches!(o, ClientOutput::Migrate { .. }))
            {
                c.handle_signaling_failed(d);
            }
            out.extend(step);
        }
        *now = until;
        out
    }

    #[test]
    fn ript7_client_gives_up_30s_after_creation_without_a_signaling_byway() {
        let t0 = origin();
        let mut now = t0;
        let mut c = ClientCall::new(t0, "u", CallTimers::default(), true);
        assert_eq!(
            c.poll_timeout(),
            Some((t0 + NO_SIGNALING_BYWAY, Timer::GiveUp))
        );
        c.handle_signaling_failed(t0);
        // Retries at 2, 6 and 14 s (backoff doubling); the 30 s retry loses to giving up.
        let out = run_failing(&mut c, &mut now, t0 + Duration::from_millis(29_999));
        let retries = out
            .iter()
            .filter(|o| matches!(o, ClientOutput::Migrate { .. }))
            .count();
        assert_eq!(retries, 3, "{out:?}");
        assert!(!c.is_ended());
        assert_eq!(
            c.poll_timeout(),
            Some((t0 + Duration::from_secs(30), Timer::GiveUp)),
            "the give-up deadline is not pushed back by retries"
        );
        let out = run_failing(&mut c, &mut now, t0 + Duration::from_secs(30));
        assert_eq!(
            out,
            vec![ClientOutput::Ended(EventKind::End, give_up_reason())]
        );
        assert!(c.is_ended());
        assert_eq!(c.state(), Some(&EventKind::End));
        assert_eq!(c.poll_timeout(), None, "no more retries");
        c.handle_timeout(t0 + Duration::from_secs(60), 0);
        c.handle_signaling_open(t0 + Duration::from_secs(60));
        assert!(drain_client(&mut c).is_empty(), "an ended call stays ended");
    }

    #[test]
    fn give_up_deadline_clears_on_open_and_restarts_on_migration() {
        let t0 = origin();
        let mut now = t0;
        let mut c = ClientCall::new(t0, "u", CallTimers::default(), false);
        // Opens just before the deadline: cleared.
        now += Duration::from_secs(29);
        c.handle_signaling_open(now);
        assert_eq!(
            drain_client(&mut c),
            vec![ClientOutput::OpenMedia(MediaPath::Byways)]
        );
        assert_ne!(c.poll_timeout().map(|(_, t)| t), Some(Timer::GiveUp));
        // Keep it alive with pongs well past the original 30 s.
        for _ in 0..4 {
            let until = now + Duration::from_secs(5);
            let out = run_client(&mut c, &mut now, until);
            assert!(!out.iter().any(|o| matches!(o, ClientOutput::Ended(..))));
            c.handle_server_event(
                now,
                &Event::new(EventDirection::S2c, 0, "u", EventKind::Pong),
            );
        }
        // The connection drops: the deadline restarts from the migration ...
        let lost = now;
        c.handle_connection_lost(lost);
        assert!(matches!(
            drain_client(&mut c).as_slice(),
            [ClientOutput::Migrate {
                trigger: MigrateTrigger::ConnectionLost,
                ..
            }]
        ));
        assert_eq!(
            c.poll_timeout(),
            Some((lost + NO_SIGNALING_BYWAY, Timer::GiveUp))
        );
        // ... and is not restarted by a second loss while still opening.
        c.handle_connection_lost(lost + Duration::from_secs(10));
        let _ = drain_client(&mut c);
        assert_eq!(
            c.poll_timeout(),
            Some((lost + NO_SIGNALING_BYWAY, Timer::GiveUp))
        );
        c.handle_signaling_failed(lost + Duration::from_secs(10));
        let out = run_failing(&mut c, &mut now, lost + NO_SIGNALING_BYWAY);
        assert_eq!(
            out.last(),
            Some(&ClientOutput::Ended(EventKind::End, give_up_reason()))
        );
        assert!(c.is_ended());
    }

    #[test]
    fn reconnecting_in_time_never_gives_up() {
        let t0 = origin();
        let mut now = t0;
        let mut c = up_client(t0);
        // Pong timeout at 15 s → migrate; reconnection fails, then succeeds at 44 s.
        let out = run_client(&mut c, &mut now, t0 + Duration::from_secs(15));
        assert!(out.contains(&ClientOutput::Migrate {
            uri: "u".into(),
            trigger: MigrateTrigger::PongTimeout
        }));
        c.handle_signaling_failed(now);
        let out = run_failing(&mut c, &mut now, t0 + Duration::from_secs(44));
        assert!(!out.iter().any(|o| matches!(o, ClientOutput::Ended(..))));
        c.handle_signaling_open(now);
        let _ = drain_client(&mut c);
        let out = run_client(&mut c, &mut now, t0 + Duration::from_secs(50));
        assert!(
            !out.iter().any(|o| matches!(o, ClientOutput::Ended(..))),
            "{out:?}"
        );
        assert!(!c.is_ended());
    }

    #[test]
    fn after_an_ack_timeout_fallback_migrations_stay_on_byways() {
        let t0 = origin();
        let mut now = t0;
        let mut c = up_client(t0);
        c.handle_server_event(
            t0,
            &Event::new(EventDirection::S2c, 0, "u", EventKind::Answered),
        );
        c.handle_media_received(t0);
        c.handle_media_sent(t0);
        let out = run_client(&mut c, &mut now, t0 + Duration::from_millis(1000));
        assert!(out.contains(&ClientOutput::FallbackToByways), "{out:?}");
        assert_eq!(c.media_path(), &MediaPath::Byways);
        let _ = drain_client(&mut c);
        // A graceful migration ...
        c.handle_server_event(
            now,
            &Event::new(EventDirection::S2c, 0, "u", EventKind::Migrate),
        );
        let _ = drain_client(&mut c);
        c.handle_signaling_open(now);
        assert_eq!(
            drain_client(&mut c),
            vec![ClientOutput::OpenMedia(MediaPath::Byways)]
        );
        // ... and a media timeout (8 s without media) both stay on byways.
        let keep = |c: &mut ClientCall, now: Instant| {
            c.handle_server_event(
                now,
                &Event::new(EventDirection::S2c, 0, "u", EventKind::Pong),
            );
        };
        let mut migrated = false;
        for _ in 0..4 {
            let until = now + Duration::from_secs(3);
            let out = run_client(&mut c, &mut now, until);
            keep(&mut c, now);
            if out.contains(&ClientOutput::Migrate {
                uri: "u".into(),
                trigger: MigrateTrigger::MediaTimeout,
            }) {
                migrated = true;
                break;
            }
        }
        assert!(migrated);
        assert_eq!(c.media_path(), &MediaPath::Byways);
        // Regression: while reopening, the (still armed) media deadline is not reported, so
        // the shell is not woken at a past deadline again and again; giving up is next.
        match c.poll_timeout() {
            Some((d, Timer::GiveUp)) => assert!(d > now + Duration::from_secs(25)),
            other => panic!("{other:?}"),
        }
        now += Duration::from_secs(20);
        c.handle_signaling_open(now);
        assert_eq!(
            drain_client(&mut c),
            vec![ClientOutput::OpenMedia(MediaPath::Byways)]
        );
    }

    #[test]
    fn after_datagrams_were_refused_migrations_stay_on_byways() {
        let t0 = origin();
        let mut c = up_client(t0);
        c.handle_datagrams_refused(t0);
        assert_eq!(drain_client(&mut c), vec![ClientOutput::FallbackToByways]);
        c.handle_byway_reset(t0 + Duration::from_secs(1));
        assert!(matches!(
            drain_client(&mut c).as_slice(),
            [ClientOutput::Migrate {
                trigger: MigrateTrigger::BywayReset,
                ..
            }]
        ));
        assert_eq!(c.media_path(), &MediaPath::Byways);
        c.handle_signaling_open(t0 + Duration::from_secs(2));
        assert_eq!(
            drain_client(&mut c),
            vec![ClientOutput::OpenMedia(MediaPath::Byways)]
        );
        // Without a fallback, a migration goes back to datagrams (control).
        let mut d = up_client(t0);
        d.handle_byway_reset(t0);
        d.handle_signaling_open(t0);
        assert_eq!(
            drain_client(&mut d).last(),
            Some(&ClientOutput::OpenMedia(MediaPath::Datagrams))
        );
    }

    #[test]
    fn final_state_from_server_ends_client_and_stops_timers() {
        let t0 = origin();
        let mut c = up_client(t0);
        let mut d = Event::new(EventDirection::S2c, 0, "u", EventKind::Declined);
        d.reason = Some(Reason::sip(486, "Busy Here"));
        c.handle_server_event(t0, &d);
        assert_eq!(
            drain_client(&mut c),
            vec![ClientOutput::Ended(
                EventKind::Declined,
                Some(Reason::sip(486, "Busy Here"))
            )]
        );
        assert!(c.is_ended());
        assert_eq!(c.poll_timeout(), None);
    }
}
