//! REGISTER client (RFC 3261 §10.2) for one binding: the gateway registering itself with an
//! upstream registrar, with digest authentication (RFC 3261 §22, RFC 8760 algorithms).
//!
//! Sans-IO like the rest of the crate. Inputs: [`Registration::register`],
//! [`Registration::unregister`], [`Registration::handle_response`],
//! [`Registration::handle_timeout_of_request`] and [`Registration::handle_timeout`], each
//! with `now`. Outputs: [`Registration::poll_action`] (requests to send and events) and
//! [`Registration::poll_timeout`]. Randomness (Call-ID, From tag, cnonce, jitter) comes from
//! a caller-supplied `FnMut() -> u64`.
//!
//! # What goes on the wire
//! Every REGISTER carries Max-Forwards, To and From (the AOR; From with our tag), Call-ID,
//! CSeq, Contact, Expires, Supported, User-Agent when configured, and credentials when a
//! challenge is cached. It has no Via: the transport adds it with a fresh branch, and runs
//! the non-INVITE client transaction. RFC 3261 §10.2.4: one Call-ID for every REGISTER of
//! this machine (its "boot cycle"), the CSeq one higher each time.
//!
//! # Timing rules
//! * The binding's lifetime counts from when the REGISTER was *sent*, not when the 2xx
//!   arrived: the registrar started its clock somewhere in between, so this errs early.
//! * Granted lifetime `E`: our contact's `expires` parameter in the 2xx, else the 2xx's
//!   Expires header, else what we asked for (RFC 3261 §10.2.4).
//! * The refresh goes out `max(E/2, E − 64·T1)` after the previous REGISTER was sent
//!   (64·T1 = Timer F = 32 s by default): a refresh that runs into a full transaction
//!   timeout still ends before the binding does. E=3600 → 3568 s, E=600 → 568 s,
//!   E=60 → 30 s.
//! * Failures (408, transaction timeout, 5xx, 6xx, other 4xx): retry after
//!   `min(base·2^(n−1), cap)` for the n-th failure in a row (30 s … 30 min by default), moved
//!   by a uniform jitter of ±`jitter_percent` and then clamped to `cap`, so the cap holds
//!   strictly. A Retry-After header (RFC 3261 §20.33, e.g. on 503) replaces the computed
//!   delay, without jitter: it is the registrar's instruction.
//! * 403, 404, rejected credentials and challenges we cannot answer (unknown algorithm,
//!   another realm): retry after `rejected` (1 h by default) ± jitter and say why in
//!   [`Action::Failed`]: these need an operator, hammering will not help.
//! * A failed refresh does not end the binding: the registrar still holds it until it
//!   expires. [`Action::BindingLost`] is emitted at that expiry time if no refresh succeeded
//!   by then — the hook for failing over.
//!
//! # Authentication
//! A 401/407 is answered with the first challenge (RFC 8760 §2.4 order) that is answerable,
//! in the configured realm if one is set, and — with a stored H(A1) — of the hash family
//! that H(A1) was made with. `qop=auth` with `nc` counting per nonce and a fresh cnonce per
//! request. The challenge is cached and later REGISTERs (refreshes, retries, unregister)
//! carry credentials for it pre-emptively with the next `nc`. Within one attempt (the
//! requests between a trigger and a final outcome):
//! * `stale=true` → answered again with the new nonce; not a failure (the registrar said
//!   the password was right). A nonce is never answered twice in one attempt.
//! * a challenge after a pre-emptive answer (cached nonce) → answered once: the registrar
//!   may simply have forgotten the nonce.
//! * a non-stale challenge after we answered a challenge of this attempt → the credentials
//!   are wrong: [`Action::Failed`], no further retry until the `rejected` back-off.
//!
//! # Transaction timeouts
//! The transport reports a timed-out REGISTER transaction (Timer F, or a transport error,
//! RFC 3261 §8.1.3.1) with [`Registration::handle_timeout_of_request`] or by handing in a
//! synthetic 408. As a safety net the machine treats a REGISTER without a final response
//! for 64·T1 + T4 as timed out itself.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::digest::{self, Challenge, Role, Secret};
use crate::msg::{Contacts, MAX_CSEQ, Method, MsgError, NameAddr, Request, Response};
use crate::txn::TimerConfig;

/// Default requested binding lifetime, seconds.
pub const DEFAULT_EXPIRES: u32 = 3600;
/// Most REGISTERs one attempt may send (challenges from a proxy and a registrar, a stale
/// nonce, a 423): a registrar that keeps re-challenging cannot make us loop.
const MAX_REQUESTS_PER_ATTEMPT: u8 = 6;
/// Longest Retry-After we honour; longer ones are cut to this (keeps `Instant` arithmetic
/// safe and a broken registrar from silencing us for years).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Longest delay the machine schedules; longer lifetimes are treated as this.
const MAX_DELAY: Duration = Duration::from_secs(366 * 24 * 3600);

/// Why a registration cannot be set up or a message not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The configuration cannot produce a valid REGISTER (our caller's fault).
    #[error("invalid registration {what}: {reason}")]
    Misuse {
        what: &'static str,
        reason: &'static str,
    },
    /// A URI or header value of the configuration breaks the message grammar.
    #[error("invalid registration config: {0}")]
    Msg(#[from] MsgError),
    /// The response is not for the REGISTER outstanding (other Call-ID, older CSeq, or none
    /// outstanding): a late retransmission, harmless to drop.
    #[error("response matches no outstanding register")]
    Unmatched,
}

/// Retry timing (see the module docs for the rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure in a row; doubles with each further one.
    pub base: Duration,
    /// Upper bound of the doubling delay, jitter included.
    pub cap: Duration,
    /// Uniform jitter, ± this percentage of the delay (0..=100).
    pub jitter_percent: u8,
    /// Delay after 403, 404 or rejected credentials.
    pub rejected: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(30),
            cap: Duration::from_secs(30 * 60),
            jitter_percent: 10,
            rejected: Duration::from_secs(3600),
        }
    }
}

/// One binding to maintain.
#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    /// Address of record: the To and From URI, e.g. `sip:gw@example.com`.
    pub aor: String,
    /// Request-URI: the registrar's domain, e.g. `sip:example.com` (RFC 3261 §10.2).
    pub registrar: String,
    /// Our contact URI, e.g. `sip:gw@192.0.2.10:5060;transport=tcp`.
    pub contact: String,
    /// Digest user name.
    pub username: String,
    /// Password, or H(A1) as made by [`digest::ha1`] (32 hex digits: answers MD5
    /// challenges; 64: SHA-256 or SHA-512-256, whichever it was made for).
    pub secret: Secret,
    /// Answer only challenges of this realm (required in practice with an H(A1), which is
    /// bound to its realm).
    pub realm: Option<String>,
    /// Requested lifetime in seconds, above 0 (a 423 may raise it).
    pub expires: u32,
    /// User-Agent header value.
    pub user_agent: Option<String>,
    /// Option tags for the Supported header; empty leaves it out.
    pub supported: Vec<String>,
    /// `+sip.instance` for the Contact (RFC 5626 §4.1), e.g. `urn:uuid:…`, without `<>`:
    /// lets us recognise our binding in a 2xx even if the registrar rewrote the URI.
    pub instance_id: Option<String>,
    /// Retry timing.
    pub backoff: Backoff,
    /// Transaction timers: 64·T1 sets the refresh margin and the safety-net timeout.
    pub timers: TimerConfig,
}

impl RegistrationConfig {
    /// A configuration with the defaults: [`DEFAULT_EXPIRES`], `Supported: path` (we
    /// accept a registrar recording a Path to us, RFC 3327; nothing to do on our side), no
    /// User-Agent, no realm restriction, no instance id, [`Backoff::default`] and the
    /// RFC 3261 timer values.
    pub fn new(
        aor: impl Into<String>,
        registrar: impl Into<String>,
        contact: impl Into<String>,
        username: impl Into<String>,
        secret: Secret,
    ) -> Self {
        RegistrationConfig {
            aor: aor.into(),
            registrar: registrar.into(),
            contact: contact.into(),
            username: username.into(),
            secret,
            realm: None,
            expires: DEFAULT_EXPIRES,
            user_agent: None,
            supported: vec!["path".to_owned()],
            instance_id: None,
            backoff: Backoff::default(),
            timers: TimerConfig::default(),
        }
    }
}

/// What the owner must do or learn. Drain with [`Registration::poll_action`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this REGISTER in a new non-INVITE client transaction (add the Via).
    SendRegister(Request),
    /// The registrar holds our binding for `expires` seconds. `contacts` are all the
    /// bindings of the AOR the 2xx listed (ours and other devices').
    Registered {
        expires: u32,
        contacts: Vec<NameAddr>,
    },
    /// An attempt failed; the next one starts at `retry_at`. `status` is the final
    /// response's (408 for a timeout, 500 for a request we could not build). A binding
    /// that still exists stays until it expires ([`Action::BindingLost`]).
    Failed {
        status: u16,
        reason: String,
        retry_at: Instant,
    },
    /// Our binding has expired without a successful refresh: calls can no longer reach
    /// us through this registrar. Retries go on.
    BindingLost,
    /// [`Registration::unregister`] is done (2xx, or a failure after one try).
    Unregistered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Register,
    Unregister,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    /// Nothing to maintain (new, or after [`Action::Unregistered`]).
    Idle,
    /// Keep the binding up.
    Active,
    /// Remove the binding, then go idle.
    Removing,
}

#[derive(Debug, Clone, Copy)]
struct Outstanding {
    cseq: u32,
    kind: Kind,
    sent_at: Instant,
    /// Safety net: treated as a timeout if no final response by then.
    give_up_at: Instant,
    expires: u32,
}

/// A cached challenge, answered pre-emptively in later requests.
#[derive(Debug, Clone)]
struct CachedAuth {
    role: Role,
    challenge: Challenge,
    /// The last nonce count used with this nonce.
    nc: u32,
}

/// The requests between one trigger (start, refresh, retry, unregister) and its outcome.
#[derive(Debug, Clone, Default)]
struct Attempt {
    requests: u8,
    /// Roles (401 / 407) whose challenge of this attempt we answered.
    answered: Vec<Role>,
    /// Nonces answered in this attempt.
    nonces: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
struct Binding {
    expires_at: Instant,
}

/// How to schedule the retry after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Exponential back-off.
    Transient,
    /// The fixed long delay (403, 404, rejected credentials).
    Rejected,
}

/// The randomness source: any `FnMut() -> u64` (an OS RNG in the shell, a counter in tests).
type Rng = Box<dyn FnMut() -> u64 + Send>;

/// The REGISTER client for one binding. See the module docs.
pub struct Registration {
    cfg: RegistrationConfig,
    rng: Rng,
    call_id: String,
    from_tag: String,
    /// The last CSeq sent.
    cseq: u32,
    /// Lifetime to ask for: the configured one, raised by 423 Min-Expires.
    requested: u32,
    intent: Intent,
    out: Option<Outstanding>,
    attempt: Attempt,
    /// When the next attempt starts (refresh or retry), while nothing is outstanding.
    next_attempt: Option<Instant>,
    binding: Option<Binding>,
    /// Transient failures in a row.
    failures: u32,
    auth: Vec<CachedAuth>,
    /// Whether a REGISTER went out since the machine was created or last unregistered.
    sent_any: bool,
    last_now: Option<Instant>,
    actions: VecDeque<Action>,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("aor", &self.cfg.aor)
            .field("call_id", &self.call_id)
            .field("cseq", &self.cseq)
            .field("intent", &self.intent)
            .field("outstanding", &self.out)
            .field("next_attempt", &self.next_attempt)
            .field("binding", &self.binding)
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// A machine for `cfg`, idle until [`register`](Self::register). `rng` supplies the
    /// Call-ID, the From tag, every cnonce and the jitter; it should be unpredictable in
    /// production (the cnonce guards against chosen-plaintext registrars).
    ///
    /// Fails with [`RegisterError`] if the configuration cannot make a valid REGISTER.
    pub fn new(
        cfg: RegistrationConfig,
        rng: impl FnMut() -> u64 + Send + 'static,
    ) -> Result<Self, RegisterError> {
        check_config(&cfg)?;
        let mut rng: Rng = Box::new(rng);
        let call_id = format!("{:016x}{:016x}", rng(), rng());
        let from_tag = format!("{:016x}", rng());
        let reg = Registration {
            requested: cfg.expires,
            cfg,
            rng,
            call_id,
            from_tag,
            cseq: 0,
            intent: Intent::Idle,
            out: None,
            attempt: Attempt::default(),
            next_attempt: None,
            binding: None,
            failures: 0,
            auth: Vec::new(),
            sent_any: false,
            last_now: None,
            actions: VecDeque::new(),
        };
        // Every header the configuration feeds into must print and parse back.
        let probe = reg.base_request(1, reg.requested)?;
        let h = probe.headers();
        h.to()?;
        h.from()?;
        h.contacts()?;
        Ok(reg)
    }

    /// Our Call-ID, the same for every REGISTER of this machine.
    #[must_use]
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Our From tag.
    #[must_use]
    pub fn from_tag(&self) -> &str {
        &self.from_tag
    }

    /// Whether the registrar holds our binding as far as we know.
    #[must_use]
    pub fn is_registered(&self) -> bool {
        self.binding.is_some()
    }

    /// Starts maintaining the binding: a REGISTER goes out now. While waiting for a
    /// refresh or retry it starts the next attempt at once; while a REGISTER is already
    /// outstanding it does nothing. An unregistration in progress is abandoned.
    pub fn register(&mut self, now: Instant) {
        let now = self.clock(now);
        if self.intent == Intent::Active && self.out.is_some() {
            return;
        }
        self.intent = Intent::Active;
        self.start_attempt(now, Kind::Register);
    }

    /// Removes the binding: a REGISTER with `Expires: 0` (same Call-ID, next CSeq), then
    /// [`Action::Unregistered`] on its 2xx or on its failure (one try, challenges
    /// answered). If nothing was ever sent, [`Action::Unregistered`] comes at once.
    pub fn unregister(&mut self, now: Instant) {
        let now = self.clock(now);
        if self.intent == Intent::Removing && self.out.is_some() {
            return;
        }
        if !self.sent_any {
            self.finish_unregister();
            return;
        }
        self.intent = Intent::Removing;
        self.start_attempt(now, Kind::Unregister);
    }

    /// A response to a REGISTER we sent. Provisional responses are ignored. A response for
    /// another Call-ID or an older CSeq is [`RegisterError::Unmatched`] and changes nothing.
    pub fn handle_response(&mut self, now: Instant, resp: &Response) -> Result<(), RegisterError> {
        let now = self.clock(now);
        let out = self.out.ok_or(RegisterError::Unmatched)?;
        let h = resp.headers();
        let matches = h.call_id().is_ok_and(|c| c == self.call_id)
            && h.cseq()
                .is_ok_and(|(n, m)| n == out.cseq && m == Method::Register);
        if !matches {
            return Err(RegisterError::Unmatched);
        }
        if resp.status() < 200 {
            return Ok(());
        }
        self.out = None;
        self.on_final(now, out, resp.status(), resp.reason(), Some(resp));
        Ok(())
    }

    /// The transport gave up on the REGISTER with this CSeq (Timer F or a transport
    /// error): handled as a 408. Another CSeq is [`RegisterError::Unmatched`].
    pub fn handle_timeout_of_request(
        &mut self,
        now: Instant,
        cseq: u32,
    ) -> Result<(), RegisterError> {
        let now = self.clock(now);
        match self.out {
            Some(out) if out.cseq == cseq => {
                self.out = None;
                self.on_final(now, out, 408, "Request Timeout", None);
                Ok(())
            }
            _ => Err(RegisterError::Unmatched),
        }
    }

    /// Drives refreshes, retries, binding expiry and the safety-net timeout. A spurious
    /// call does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock(now);
        if let Some(out) = self.out
            && out.give_up_at <= now
        {
            self.out = None;
            self.on_final(now, out, 408, "Request Timeout", None);
        }
        if let Some(b) = self.binding
            && b.expires_at <= now
        {
            self.binding = None;
            if self.intent == Intent::Active {
                self.actions.push_back(Action::BindingLost);
            }
        }
        if self.out.is_none()
            && self.intent == Intent::Active
            && self.next_attempt.is_some_and(|at| at <= now)
        {
            self.start_attempt(now, Kind::Register);
        }
    }

    /// The next action, if any. Drain until `None` after every input.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let attempt = match self.out {
            Some(out) => Some(out.give_up_at),
            None => self.next_attempt,
        };
        let expiry = self.binding.map(|b| b.expires_at);
        [attempt, expiry].into_iter().flatten().min()
    }

    // --- internals -------------------------------------------------------------------------

    /// House rule: a `now` earlier than the last one counts as the last one.
    fn clock(&mut self, now: Instant) -> Instant {
        let now = self.last_now.map_or(now, |last| last.max(now));
        self.last_now = Some(now);
        now
    }

    fn start_attempt(&mut self, now: Instant, kind: Kind) {
        self.attempt = Attempt::default();
        self.next_attempt = None;
        self.send(now, kind);
    }

    fn send(&mut self, now: Instant, kind: Kind) {
        let expires = match kind {
            Kind::Register => self.requested,
            Kind::Unregister => 0,
        };
        if self.cseq >= MAX_CSEQ {
            // RFC 3261 §8.1.1.5 keeps CSeq below 2^31; a new Call-ID starts a new space.
            self.call_id = format!("{:016x}{:016x}", self.draw(), self.draw());
            self.cseq = 0;
        }
        self.cseq += 1;
        match self.build(self.cseq, expires) {
            Ok(req) => {
                self.attempt.requests = self.attempt.requests.saturating_add(1);
                self.sent_any = true;
                let t1 = self.cfg.timers.t1;
                let give_up = t1.saturating_mul(64).saturating_add(self.cfg.timers.t4);
                self.out = Some(Outstanding {
                    cseq: self.cseq,
                    kind,
                    sent_at: now,
                    give_up_at: later(now, give_up),
                    expires,
                });
                self.actions.push_back(Action::SendRegister(req));
            }
            // Unreachable with a checked configuration; never loop on it.
            Err(e) => {
                let reason = format!("cannot build the register: {e}");
                match kind {
                    Kind::Register => self.fail(now, 500, reason, Retry::Rejected, None),
                    Kind::Unregister => self.finish_unregister(),
                }
            }
        }
    }

    /// The headers every REGISTER has (no credentials).
    fn base_request(&self, cseq: u32, expires: u32) -> Result<Request, MsgError> {
        let c = &self.cfg;
        let mut contact = format!("<{}>", c.contact);
        if let Some(inst) = &c.instance_id {
            contact.push_str(&format!(";+sip.instance=\"<{inst}>\""));
        }
        let mut req = Request::new(Method::Register, &c.registrar)?
            .with_header("Max-Forwards", "70")?
            .with_header("To", &format!("<{}>", c.aor))?
            .with_header("From", &format!("<{}>;tag={}", c.aor, self.from_tag))?
            .with_header("Call-ID", &self.call_id)?
            .with_header("CSeq", &format!("{cseq} REGISTER"))?
            .with_header("Contact", &contact)?
            .with_header("Expires", &expires.to_string())?;
        if let Some(ua) = &c.user_agent {
            req.headers_mut().push("User-Agent", ua)?;
        }
        if !c.supported.is_empty() {
            req.headers_mut()
                .push("Supported", &c.supported.join(", "))?;
        }
        Ok(req)
    }

    fn build(&mut self, cseq: u32, expires: u32) -> Result<Request, MsgError> {
        let mut req = self.base_request(cseq, expires)?;
        // Pre-emptive credentials for every cached challenge (RFC 3261 §22.3), next nc.
        let mut cached = std::mem::take(&mut self.auth);
        cached.retain_mut(|a| {
            let cnonce = format!("{:016x}{:016x}", (self.rng)(), (self.rng)());
            a.nc = a.nc.saturating_add(1);
            let creds = match &self.cfg.secret {
                Secret::Password(p) => digest::respond(
                    &a.challenge,
                    &self.cfg.username,
                    p,
                    "REGISTER",
                    &self.cfg.registrar,
                    &cnonce,
                    a.nc,
                ),
                Secret::Ha1(ha1) => digest::respond_with_ha1(
                    &a.challenge,
                    &self.cfg.username,
                    ha1,
                    "REGISTER",
                    &self.cfg.registrar,
                    &cnonce,
                    a.nc,
                ),
            };
            // A challenge we cannot answer is dropped: the registrar will challenge again.
            match creds.and_then(|c| c.to_header_value()) {
                Ok(v) => req
                    .headers_mut()
                    .push(a.role.credentials_header(), &v)
                    .is_ok(),
                Err(_) => false,
            }
        });
        self.auth = cached;
        Ok(req)
    }

    fn on_final(
        &mut self,
        now: Instant,
        out: Outstanding,
        status: u16,
        phrase: &str,
        resp: Option<&Response>,
    ) {
        match out.kind {
            Kind::Register => self.on_register_final(now, out, status, phrase, resp),
            Kind::Unregister => {
                // One try: a challenge is answered, anything else ends it.
                let retried = matches!(status, 401 | 407)
                    && resp.is_some_and(|r| self.take_challenge(status, r).is_ok())
                    && self.attempt.requests < MAX_REQUESTS_PER_ATTEMPT;
                if retried {
                    self.send(now, Kind::Unregister);
                } else {
                    self.finish_unregister();
                }
            }
        }
    }

    fn on_register_final(
        &mut self,
        now: Instant,
        out: Outstanding,
        status: u16,
        phrase: &str,
        resp: Option<&Response>,
    ) {
        let retry_after = resp.and_then(|r| retry_after(r.headers().get("Retry-After")?));
        match (status, resp) {
            (200..=299, Some(r)) => self.on_success(now, out, r),
            (401 | 407, Some(r)) => match self.take_challenge(status, r) {
                Ok(()) if self.attempt.requests < MAX_REQUESTS_PER_ATTEMPT => {
                    self.send(now, Kind::Register);
                }
                Ok(()) => {
                    let reason = "registrar keeps challenging".to_owned();
                    self.fail(now, status, reason, Retry::Transient, retry_after);
                }
                Err(why) => {
                    let reason = format!("{why} ({status} {phrase})");
                    self.fail(now, status, reason, Retry::Rejected, retry_after);
                }
            },
            // RFC 3261 §10.2.8: retry with at least Min-Expires.
            (423, Some(r)) => {
                let min = r.headers().get("Min-Expires").and_then(leading_seconds);
                match min {
                    Some(m)
                        if m > out.expires && self.attempt.requests < MAX_REQUESTS_PER_ATTEMPT =>
                    {
                        self.requested = m;
                        self.send(now, Kind::Register);
                    }
                    _ => {
                        let reason = format!(
                            "interval too brief without a usable Min-Expires ({status} {phrase})"
                        );
                        self.fail(now, status, reason, Retry::Transient, retry_after);
                    }
                }
            }
            (403 | 404, _) => {
                let reason = format!("registrar refused the binding ({status} {phrase})");
                self.fail(now, status, reason, Retry::Rejected, retry_after);
            }
            _ => {
                let reason = format!("register failed ({status} {phrase})");
                self.fail(now, status, reason, Retry::Transient, retry_after);
            }
        }
    }

    fn on_success(&mut self, now: Instant, out: Outstanding, resp: &Response) {
        let h = resp.headers();
        let contacts = match h.contacts() {
            Ok(Contacts::Addrs(list)) => list,
            _ => Vec::new(),
        };
        let ours = contacts.iter().find(|c| self.is_ours(c));
        // RFC 3261 §10.2.4: the contact's expires, else the Expires header. A registrar that
        // leaves our contact out (or rewrites it past recognition) gets the lenient reading.
        let granted = ours
            .and_then(|c| c.param("expires").flatten())
            .and_then(leading_seconds)
            .or_else(|| h.expires().ok().flatten())
            .unwrap_or(out.expires);
        if granted == 0 {
            let reason = "registrar granted no lifetime".to_owned();
            self.fail(now, resp.status(), reason, Retry::Transient, None);
            return;
        }
        self.failures = 0;
        self.attempt = Attempt::default();
        let lifetime = Duration::from_secs(u64::from(granted));
        self.binding = Some(Binding {
            expires_at: later(out.sent_at, lifetime),
        });
        self.next_attempt = Some(later(out.sent_at, refresh_delay(lifetime, self.cfg.timers)));
        self.actions.push_back(Action::Registered {
            expires: granted,
            contacts,
        });
    }

    /// Whether a contact of a 2xx is our binding: the same `+sip.instance`, or the same URI
    /// (RFC 3261 §19.1.4).
    fn is_ours(&self, c: &NameAddr) -> bool {
        let same_instance = match (&self.cfg.instance_id, c.param("+sip.instance").flatten()) {
            (Some(ours), Some(theirs)) => {
                let theirs = theirs
                    .trim_matches('"')
                    .trim_start_matches('<')
                    .trim_end_matches('>');
                theirs.eq_ignore_ascii_case(ours)
            }
            _ => false,
        };
        same_instance || same_uri(&c.uri, &self.cfg.contact)
    }

    /// Caches the challenge of a 401/407 to answer in the next request, or says why not.
    fn take_challenge(&mut self, status: u16, resp: &Response) -> Result<(), &'static str> {
        let role = if status == 407 {
            Role::Proxy
        } else {
            Role::Uas
        };
        let parsed: Vec<Challenge> = resp
            .headers()
            .get_all(role.challenge_header())
            .filter_map(|v| Challenge::parse(v).ok())
            .filter(|c| self.cfg.realm.as_ref().is_none_or(|r| *r == c.realm))
            .filter(|c| match &self.cfg.secret {
                Secret::Password(_) => true,
                // An H(A1) only answers the hash family it was made with.
                Secret::Ha1(ha1) => c.algorithm.hex_len() == Some(ha1.len()),
            })
            .collect();
        let ch = digest::select_challenge(&parsed)
            .ok_or("no challenge we can answer")?
            .clone();
        if self.attempt.nonces.contains(&ch.nonce) {
            self.auth.retain(|a| a.role != role);
            return Err("credentials rejected");
        }
        // A non-stale challenge after answering one of this attempt: the password is wrong.
        if !ch.stale && self.attempt.answered.contains(&role) {
            self.auth.retain(|a| a.role != role);
            return Err("credentials rejected");
        }
        self.attempt.answered.push(role);
        self.attempt.nonces.push(ch.nonce.clone());
        self.auth.retain(|a| a.role != role);
        self.auth.push(CachedAuth {
            role,
            challenge: ch,
            nc: 0,
        });
        Ok(())
    }

    fn fail(
        &mut self,
        now: Instant,
        status: u16,
        reason: String,
        retry: Retry,
        retry_after: Option<Duration>,
    ) {
        let delay = match (retry_after, retry) {
            (Some(d), _) => d,
            (None, Retry::Rejected) => {
                let d = self.cfg.backoff.rejected;
                self.jitter(d)
            }
            (None, Retry::Transient) => {
                self.failures = self.failures.saturating_add(1);
                let b = self.cfg.backoff;
                let doubling = 1u32 << self.failures.saturating_sub(1).min(20);
                let d = b.base.saturating_mul(doubling).min(b.cap);
                self.jitter(d).min(b.cap)
            }
        };
        if retry == Retry::Rejected && retry_after.is_none() {
            // After an operator-level refusal the doubling starts over.
            self.failures = 0;
        }
        let retry_at = later(now, delay);
        self.attempt = Attempt::default();
        self.next_attempt = Some(retry_at);
        self.actions.push_back(Action::Failed {
            status,
            reason,
            retry_at,
        });
    }

    /// `d` moved uniformly within ±`jitter_percent`.
    fn jitter(&mut self, d: Duration) -> Duration {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let pct = u64::from(self.cfg.backoff.jitter_percent.min(100));
        let spread = ms / 100 * pct + ms % 100 * pct / 100;
        if spread == 0 {
            return d;
        }
        let offset = self.draw() % spread.saturating_mul(2).saturating_add(1);
        Duration::from_millis(ms.saturating_sub(spread).saturating_add(offset))
    }

    fn draw(&mut self) -> u64 {
        (self.rng)()
    }

    fn finish_unregister(&mut self) {
        self.intent = Intent::Idle;
        self.out = None;
        self.next_attempt = None;
        self.binding = None;
        self.failures = 0;
        self.sent_any = false;
        self.attempt = Attempt::default();
        self.actions.push_back(Action::Unregistered);
    }
}

fn check_config(c: &RegistrationConfig) -> Result<(), RegisterError> {
    let misuse = |what, reason| Err(RegisterError::Misuse { what, reason });
    if c.expires == 0 {
        return misuse("expires", "must be above 0");
    }
    if c.username.is_empty() {
        return misuse("username", "empty");
    }
    if let Secret::Ha1(h) = &c.secret {
        let families = [digest::Algorithm::Md5, digest::Algorithm::Sha256];
        let known_len = families.iter().any(|a| a.hex_len() == Some(h.len()));
        if !known_len || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return misuse("h(a1)", "not 32 or 64 hex digits");
        }
    }
    if let Some(inst) = &c.instance_id
        && (inst.is_empty()
            || inst
                .chars()
                .any(|ch| ch.is_control() || matches!(ch, '"' | '\\' | '<' | '>')))
    {
        return misuse("instance id", "empty or not printable inside <> in quotes");
    }
    let b = &c.backoff;
    if b.base.is_zero() || b.cap < b.base || b.rejected.is_zero() || b.jitter_percent > 100 {
        return misuse(
            "backoff",
            "needs 0 < base <= cap, rejected > 0, jitter <= 100%",
        );
    }
    if c.timers.t1.is_zero() {
        return misuse("timers", "t1 must be above 0");
    }
    Ok(())
}

/// When to refresh a binding granted `lifetime`, counted from when its REGISTER was sent:
/// `max(lifetime/2, lifetime − 64·T1)` (see the module docs).
#[must_use]
pub fn refresh_delay(lifetime: Duration, timers: TimerConfig) -> Duration {
    let timer_f = timers.t1.saturating_mul(64);
    (lifetime / 2).max(lifetime.saturating_sub(timer_f))
}

fn later(from: Instant, d: Duration) -> Instant {
    from.checked_add(d.min(MAX_DELAY)).unwrap_or(from)
}

/// The delta-seconds that open a header value (`120`, `120 (maintenance);duration=60`).
fn leading_seconds(v: &str) -> Option<u32> {
    let v = v.trim_start();
    let end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let digits = v.get(..end).filter(|d| !d.is_empty())?;
    // An overlarge value is the longest lifetime there is (RFC 3261 §20.19 / §20.33).
    Some(digits.parse::<u32>().unwrap_or(u32::MAX))
}

/// RFC 3261 §20.33: `Retry-After: delta-seconds [comment] *(;param)`, cut to a day.
fn retry_after(v: &str) -> Option<Duration> {
    let secs = leading_seconds(v)?;
    Some(Duration::from_secs(u64::from(secs)).min(MAX_RETRY_AFTER))
}

/// SIP URI equality, RFC 3261 §19.1.4, for the parts a Contact has: scheme and host
/// case-insensitive, user part exact, the port as written (no default filled in); `user`,
/// `ttl`, `method`, `maddr` and `transport` must agree when either side has them, other
/// parameters when both have them. Escapes are not decoded.
fn same_uri(a: &str, b: &str) -> bool {
    let (Some(a), Some(b)) = (UriParts::split(a), UriParts::split(b)) else {
        return a == b;
    };
    if !a.scheme.eq_ignore_ascii_case(b.scheme)
        || a.userinfo != b.userinfo
        || !a.hostport.eq_ignore_ascii_case(b.hostport)
        || a.headers != b.headers
    {
        return false;
    }
    const MUST_AGREE: [&str; 5] = ["user", "ttl", "method", "maddr", "transport"];
    let get = |params: &[(&str, Option<&str>)], name: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.map(str::to_ascii_lowercase))
    };
    let names = a.params.iter().chain(b.params.iter()).map(|(n, _)| *n);
    for name in names {
        match (get(&a.params, name), get(&b.params, name)) {
            (Some(x), Some(y)) if x != y => return false,
            (Some(_), None) | (None, Some(_))
                if MUST_AGREE.iter().any(|m| m.eq_ignore_ascii_case(name)) =>
            {
                return false;
            }
            _ => {}
        }
    }
    true
}

struct UriParts<'a> {
    scheme: &'a str,
    userinfo: Option<&'a str>,
    hostport: &'a str,
    params: Vec<(&'a str, Option<&'a str>)>,
    headers: Option<&'a str>,
}

impl<'a> UriParts<'a> {
    fn split(uri: &'a str) -> Option<Self> {
        let (scheme, rest) = uri.split_once(':')?;
        let (rest, headers) = match rest.split_once('?') {
            Some((r, h)) => (r, Some(h)),
            None => (rest, None),
        };
        // The user part may hold ';' (user parameters), so it ends at the last '@'.
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, rest),
        };
        let mut parts = rest.split(';');
        let hostport = parts.next()?;
        let params = parts
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (p, None),
            })
            .collect();
        Some(UriParts {
            scheme,
            userinfo,
            hostport,
            params,
            headers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timers() -> TimerConfig {
        TimerConfig::default()
    }

    #[test]
    fn refresh_rule_is_max_of_half_and_timer_f_margin() {
        let at = |s| refresh_delay(Duration::from_secs(s), timers()).as_secs();
        assert_eq!(at(3600), 3568);
        assert_eq!(at(600), 568);
        assert_eq!(at(64), 32);
        assert_eq!(at(60), 30);
        assert_eq!(at(1), 0);
        let fast = TimerConfig {
            t1: Duration::from_millis(100),
            ..timers()
        };
        assert_eq!(
            refresh_delay(Duration::from_secs(60), fast).as_millis(),
            53_600
        );
    }

    #[test]
    fn rfc3261_19_1_4_contact_uri_comparison() {
        assert!(same_uri("sip:gw@192.0.2.1:5060", "SIP:gw@192.0.2.1:5060"));
        assert!(same_uri("sip:gw@Example.COM", "sip:gw@example.com"));
        assert!(!same_uri("sip:GW@example.com", "sip:gw@example.com"));
        assert!(!same_uri("sip:gw@example.com", "sip:gw@example.com:5060"));
        assert!(same_uri(
            "sip:gw@h;transport=TCP;lr",
            "sip:gw@h;transport=tcp"
        ));
        assert!(!same_uri("sip:gw@h;transport=tcp", "sip:gw@h"));
        assert!(!same_uri("sip:gw@h;foo=1", "sip:gw@h;foo=2"));
        assert!(same_uri("sip:gw@h;foo=1", "sip:gw@h"));
        assert!(same_uri("sip:+1;npdi@h", "sip:+1;npdi@h"));
        assert!(!same_uri("sip:a@h", "sips:a@h"));
    }

    #[test]
    fn retry_after_and_min_expires_values() {
        assert_eq!(retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("18000;duration=3600"),
            Some(Duration::from_secs(18000))
        );
        assert_eq!(
            retry_after("120 (I'm in a meeting)"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(retry_after("99999999999999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after("soon"), None);
        assert_eq!(retry_after(""), None);
        assert_eq!(leading_seconds(" 3600"), Some(3600));
    }
}
