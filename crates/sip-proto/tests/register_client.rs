//! REGISTER client scenarios (RFC 3261 §10.2, RFC 8760 digest) in virtual time against a
//! registrar built from the crate's own `Challenger`. Every message crosses the wire form:
//! the client's request gets a Via (as the transport adds it), is printed and parsed, and
//! the registrar's response is printed and parsed before the client sees it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
#![allow(clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sip_proto::digest::{Challenger, Credentials, NonceCounts, NonceIssuer, Role, Secret};
use sip_proto::msg::{DEFAULT_MAX_MESSAGE_SIZE, Message, Request, Response, parse_datagram};
use sip_proto::register::{Action, RegisterError, Registration, RegistrationConfig};

const AOR: &str = "sip:gw@example.com";
const REGISTRAR: &str = "sip:example.com";
const CONTACT: &str = "sip:gw@192.0.2.10:5060;transport=tcp";
const USER: &str = "gw";
const PASSWORD: &str = "s3cret";
const REALM: &str = "example.com";
/// Timer F with the default T1: when the transport reports a lost REGISTER.
const TIMER_F: Duration = Duration::from_secs(32);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// xorshift64*: deterministic, well spread, and `Send`.
fn rng(seed: u64) -> impl FnMut() -> u64 + Send + 'static {
    let mut s = seed.max(1);
    move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        s.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn config(password: &str) -> RegistrationConfig {
    let mut c = RegistrationConfig::new(
        AOR,
        REGISTRAR,
        CONTACT,
        USER,
        Secret::Password(password.into()),
    );
    c.user_agent = Some("ript-gateway test".into());
    c
}

/// What the registrar does with the next request instead of its normal processing.
#[derive(Debug, Clone)]
enum Script {
    Reply(u16, &'static str, Vec<(&'static str, String)>),
    Drop,
}

/// A registrar: digest (`Challenger::verify_counted`) when `auth`, Min-Expires, a cap on
/// the granted lifetime, and a script of overrides consumed one request at a time.
struct Registrar {
    challenger: Challenger,
    counts: NonceCounts,
    auth: bool,
    min_expires: Option<u32>,
    max_expires: u32,
    script: VecDeque<Script>,
    nonce_seed: u8,
    t0: Instant,
    /// Every request as the registrar parsed it.
    seen: Vec<Request>,
    /// Verdict of `Challenger::verify` on each request's Authorization (None: absent).
    verdicts: Vec<Option<Result<(), String>>>,
}

impl Registrar {
    fn new(t0: Instant, nonce_lifetime: Duration) -> Self {
        let issuer = NonceIssuer::new(&[7u8; 32]).unwrap();
        Registrar {
            challenger: Challenger::new(REALM, Role::Uas, issuer)
                .with_nonce_lifetime(nonce_lifetime),
            counts: NonceCounts::new(64),
            auth: true,
            min_expires: None,
            max_expires: 3600,
            script: VecDeque::new(),
            nonce_seed: 0,
            t0,
            seen: Vec::new(),
            verdicts: Vec::new(),
        }
    }

    /// Wall clock in ms: a fixed epoch offset plus virtual time.
    fn wall_ms(&self, now: Instant) -> u64 {
        1_800_000_000_000 + u64::try_from((now - self.t0).as_millis()).unwrap()
    }

    fn reply(req: &Request, status: u16, reason: &str) -> Response {
        Response::for_request(req, status, reason, "reg-tag").unwrap()
    }

    fn challenge(&mut self, req: &Request, now: Instant, stale: bool) -> Response {
        self.nonce_seed = self.nonce_seed.wrapping_add(1);
        let mut r = Self::reply(req, 401, "Unauthorized");
        for c in self
            .challenger
            .challenges(self.wall_ms(now), &[self.nonce_seed; 16], stale)
        {
            r.headers_mut()
                .push("WWW-Authenticate", &c.to_header_value().unwrap())
                .unwrap();
        }
        r
    }

    fn handle(&mut self, now: Instant, req: &Request) -> Option<Response> {
        self.seen.push(req.clone());
        let verdict = req.headers().get("Authorization").map(|v| {
            let creds = Credentials::parse(v).map_err(|e| e.to_string())?;
            let lookup = |_: &_, _: &_, _: &_| Some(Secret::Password(PASSWORD.into()));
            self.challenger
                .verify_counted(
                    &creds,
                    req.method().as_str(),
                    req.uri(),
                    self.wall_ms(now),
                    lookup,
                    &mut self.counts,
                )
                .map_err(|e| e.to_string())
        });
        self.verdicts.push(verdict.clone());
        match self.script.pop_front() {
            Some(Script::Drop) => return None,
            Some(Script::Reply(status, reason, headers)) => {
                let mut r = Self::reply(req, status, reason);
                for (n, v) in headers {
                    r.headers_mut().push(n, &v).unwrap();
                }
                return Some(r);
            }
            None => {}
        }
        if self.auth {
            match verdict {
                None => return Some(self.challenge(req, now, false)),
                Some(Err(e)) => {
                    let stale = e == "nonce is stale";
                    return Some(self.challenge(req, now, stale));
                }
                Some(Ok(())) => {}
            }
        }
        let asked = req.headers().expires().unwrap().unwrap_or(3600);
        if let Some(min) = self.min_expires
            && asked != 0
            && asked < min
        {
            let r = Self::reply(req, 423, "Interval Too Brief")
                .with_header("Min-Expires", &min.to_string())
                .unwrap();
            return Some(r);
        }
        let granted = asked.min(self.max_expires);
        let mut r = Self::reply(req, 200, "OK");
        if granted > 0 {
            // Another device of the AOR first: the client must pick out its own binding.
            r.headers_mut()
                .push("Contact", "<sip:phone@198.51.100.7>;expires=3000")
                .unwrap();
            r.headers_mut()
                .push(
                    "Contact",
                    &format!("<sip:gw@192.0.2.10:5060;transport=TCP>;expires={granted}"),
                )
                .unwrap();
        }
        Some(r)
    }
}

/// Round trip through the wire form.
fn wire_request(req: &Request, cseq_branch: usize) -> Request {
    let mut req = req.clone();
    req.headers_mut()
        .push_front(
            "Via",
            &format!("SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bK-reg{cseq_branch}"),
        )
        .unwrap();
    match parse_datagram(&req.to_bytes(), DEFAULT_MAX_MESSAGE_SIZE)
        .unwrap()
        .0
    {
        Message::Request(r) => {
            r.validate().unwrap();
            r
        }
        Message::Response(_) => panic!("not a request"),
    }
}

fn wire_response(resp: &Response) -> Response {
    match parse_datagram(&resp.to_bytes(), DEFAULT_MAX_MESSAGE_SIZE)
        .unwrap()
        .0
    {
        Message::Response(r) => {
            r.validate().unwrap();
            r
        }
        Message::Request(_) => panic!("not a response"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Sent { cseq: u32, expires: u32, auth: bool },
    Registered(u32),
    Failed { status: u16, retry_in: Duration },
    Lost,
    Unregistered,
}

/// The client, the registrar, virtual time and the transport's Timer F reports.
struct World {
    reg: Registration,
    registrar: Registrar,
    t0: Instant,
    now: Instant,
    /// (when, CSeq): the transport reports a REGISTER the registrar dropped.
    shell_timeouts: Vec<(Instant, u32)>,
    /// Everything, with the time since t0.
    log: Vec<(Duration, Ev)>,
    /// The client's requests as sent (before the Via).
    sent: Vec<Request>,
    failed_reasons: Vec<String>,
    registered_contacts: Vec<usize>,
}

impl World {
    fn new(cfg: RegistrationConfig, nonce_lifetime: Duration) -> Self {
        let t0 = Instant::now();
        World {
            reg: Registration::new(cfg, rng(0x5eed)).unwrap(),
            registrar: Registrar::new(t0, nonce_lifetime),
            t0,
            now: t0,
            shell_timeouts: Vec::new(),
            log: Vec::new(),
            sent: Vec::new(),
            failed_reasons: Vec::new(),
            registered_contacts: Vec::new(),
        }
    }

    fn at(&self) -> Duration {
        self.now - self.t0
    }

    /// Drains the client's actions; requests reach the registrar and its answers come back
    /// at once (zero latency).
    fn pump(&mut self) {
        while let Some(a) = self.reg.poll_action() {
            let at = self.at();
            match a {
                Action::SendRegister(req) => {
                    let (cseq, _) = req.headers().cseq().unwrap();
                    let expires = req.headers().expires().unwrap().unwrap();
                    let auth = req.headers().contains("Authorization");
                    self.log.push((
                        at,
                        Ev::Sent {
                            cseq,
                            expires,
                            auth,
                        },
                    ));
                    self.sent.push(req.clone());
                    let on_wire = wire_request(&req, self.sent.len());
                    match self.registrar.handle(self.now, &on_wire) {
                        Some(resp) => self
                            .reg
                            .handle_response(self.now, &wire_response(&resp))
                            .unwrap(),
                        None => self.shell_timeouts.push((self.now + TIMER_F, cseq)),
                    }
                }
                Action::Registered { expires, contacts } => {
                    self.registered_contacts.push(contacts.len());
                    self.log.push((at, Ev::Registered(expires)));
                }
                Action::Failed {
                    status,
                    reason,
                    retry_at,
                } => {
                    self.failed_reasons.push(reason);
                    self.log.push((
                        at,
                        Ev::Failed {
                            status,
                            retry_in: retry_at - self.now,
                        },
                    ));
                }
                Action::BindingLost => self.log.push((at, Ev::Lost)),
                Action::Unregistered => self.log.push((at, Ev::Unregistered)),
            }
        }
    }

    /// Runs to `t0 + until`, stepping from deadline to deadline.
    fn run_until(&mut self, until: Duration) {
        let end = self.t0 + until;
        loop {
            self.pump();
            let shell = self.shell_timeouts.iter().map(|(t, _)| *t).min();
            let next = [self.reg.poll_timeout(), shell].into_iter().flatten().min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let due: Vec<u32> = self
                        .shell_timeouts
                        .iter()
                        .filter(|(at, _)| *at <= self.now)
                        .map(|(_, c)| *c)
                        .collect();
                    self.shell_timeouts.retain(|(at, _)| *at > self.now);
                    for cseq in due {
                        // A report for a REGISTER the client already gave up on is Unmatched.
                        let _ = self.reg.handle_timeout_of_request(self.now, cseq);
                    }
                    self.reg.handle_timeout(self.now);
                }
                _ => {
                    self.now = end;
                    self.pump();
                    return;
                }
            }
        }
    }

    fn events(&self) -> Vec<(u64, Ev)> {
        self.log
            .iter()
            .map(|(d, e)| (d.as_secs(), e.clone()))
            .collect()
    }

    fn sent_count(&self) -> usize {
        self.sent.len()
    }
}

fn sent(cseq: u32, expires: u32, auth: bool) -> Ev {
    Ev::Sent {
        cseq,
        expires,
        auth,
    }
}

fn auth_of(req: &Request) -> Credentials {
    Credentials::parse(req.headers().get("Authorization").unwrap()).unwrap()
}

#[test]
fn rfc3261_10_2_challenge_answered_then_refreshed_at_the_documented_time() {
    let mut w = World::new(config(PASSWORD), secs(3600));
    w.registrar.max_expires = 600;
    w.reg.register(w.now);
    w.run_until(secs(1));
    assert_eq!(
        w.events(),
        vec![
            (0, sent(1, 3600, false)),
            (0, sent(2, 3600, true)),
            (0, Ev::Registered(600)),
        ]
    );
    assert!(w.reg.is_registered());
    // The registrar side: the authorized REGISTER verifies with the crate's Challenger.
    assert_eq!(w.registrar.verdicts, vec![None, Some(Ok(()))]);
    let second = &w.registrar.seen[1];
    w.registrar
        .challenger
        .verify(
            &auth_of(second),
            "REGISTER",
            second.uri(),
            w.registrar.wall_ms(w.now),
            |_, _, _| Some(Secret::Password(PASSWORD.into())),
        )
        .unwrap();
    let creds = auth_of(second);
    assert_eq!(
        creds.algorithm.as_str(),
        "SHA-256",
        "RFC 8760: the first offered"
    );
    assert_eq!(creds.nc, Some(1));
    assert_eq!(creds.uri, REGISTRAR);
    // Both contacts of the AOR are reported; ours was found despite `transport=TCP`.
    assert_eq!(w.registered_contacts, vec![2]);

    // Headers of the first REGISTER (RFC 3261 §10.2): no Via, the transport adds it.
    let h = w.sent[0].headers();
    assert_eq!(w.sent[0].uri(), REGISTRAR);
    assert!(!h.contains("Via"));
    assert_eq!(h.to().unwrap().uri, AOR);
    assert_eq!(h.to().unwrap().tag, None);
    assert_eq!(h.from().unwrap().uri, AOR);
    assert_eq!(h.from().unwrap().tag.as_deref(), Some(w.reg.from_tag()));
    assert_eq!(h.call_id().unwrap(), w.reg.call_id());
    assert_eq!(h.max_forwards(), Some(70));
    assert_eq!(h.get("User-Agent"), Some("ript-gateway test"));
    assert_eq!(h.get("Supported"), Some("path"));
    assert_eq!(h.get("Contact"), Some(format!("<{CONTACT}>").as_str()));

    // Refresh: max(600/2, 600 − 64·T1) = 568 s after the REGISTER was sent.
    assert_eq!(w.reg.poll_timeout(), Some(w.t0 + secs(568)));
    w.run_until(secs(567));
    assert_eq!(w.sent_count(), 2, "nothing before the refresh time");
    w.run_until(secs(569));
    assert_eq!(
        w.events()[3..],
        [(568, sent(3, 3600, true)), (568, Ev::Registered(600))]
    );
    // §10.2.4: same Call-ID and From tag, next CSeq; the cached nonce with the next nc.
    let refresh = &w.sent[2];
    assert_eq!(refresh.headers().call_id().unwrap(), w.reg.call_id());
    assert_eq!(
        refresh.headers().from().unwrap().tag,
        w.sent[0].headers().from().unwrap().tag
    );
    let pre = auth_of(refresh);
    assert_eq!(pre.nonce, creds.nonce);
    assert_eq!(pre.nc, Some(2));
    assert_ne!(pre.cnonce, creds.cnonce, "a fresh cnonce per request");
    assert_eq!(w.registrar.verdicts[2], Some(Ok(())));
    assert_eq!(w.reg.poll_timeout(), Some(w.t0 + secs(568 * 2)));
}

#[test]
fn rfc3261_10_2_8_interval_too_brief_retries_with_min_expires() {
    // Nonces outlive the refresh, so it needs no stale round.
    let mut w = World::new(config(PASSWORD), secs(8000));
    w.registrar.min_expires = Some(7200);
    w.registrar.max_expires = 7200;
    w.reg.register(w.now);
    w.run_until(secs(1));
    assert_eq!(
        w.events(),
        vec![
            (0, sent(1, 3600, false)),
            (0, sent(2, 3600, true)),
            (0, sent(3, 7200, true)),
            (0, Ev::Registered(7200)),
        ]
    );
    // The raised lifetime sticks for the refresh.
    w.run_until(secs(7200 - 32 + 1));
    assert_eq!(w.events()[4], (7168, sent(4, 7200, true)));
    assert_eq!(w.events()[5], (7168, Ev::Registered(7200)));
}

#[test]
fn rfc8760_stale_nonce_is_answered_again_without_a_failure() {
    // Nonces live 300 s; the refresh at 568 s carries an expired one.
    let mut w = World::new(config(PASSWORD), secs(300));
    w.registrar.max_expires = 600;
    w.reg.register(w.now);
    w.run_until(secs(600));
    assert_eq!(
        w.events(),
        vec![
            (0, sent(1, 3600, false)),
            (0, sent(2, 3600, true)),
            (0, Ev::Registered(600)),
            (568, sent(3, 3600, true)),
            (568, sent(4, 3600, true)),
            (568, Ev::Registered(600)),
        ]
    );
    assert_eq!(w.registrar.verdicts[2], Some(Err("nonce is stale".into())));
    let (old, stale_retry) = (auth_of(&w.sent[2]), auth_of(&w.sent[3]));
    assert_ne!(old.nonce, stale_retry.nonce);
    assert_eq!(stale_retry.nc, Some(1), "a new nonce counts from 1");
    assert_eq!(w.registrar.verdicts[3], Some(Ok(())));
}

#[test]
fn rfc3261_22_wrong_password_is_one_retry_then_failed_without_loop() {
    let mut w = World::new(config("wrong"), secs(3600));
    w.reg.register(w.now);
    w.run_until(secs(3000));
    assert_eq!(
        w.sent_count(),
        2,
        "one answer to the challenge, then nothing"
    );
    let ev = w.events();
    let Ev::Failed { status, retry_in } = ev[2].1 else {
        panic!("{ev:?}");
    };
    assert_eq!(status, 401);
    assert!(w.failed_reasons[0].contains("credentials rejected"));
    // The long back-off: 1 h ± 10 %.
    assert!(
        retry_in >= secs(3240) && retry_in <= secs(3960),
        "{retry_in:?}"
    );
    assert!(!w.reg.is_registered());
    // After the back-off one more round (challenge, answer, failure), again no loop.
    w.run_until(retry_in + secs(1));
    assert_eq!(w.sent_count(), 4);
    assert!(matches!(w.log[5].1, Ev::Failed { status: 401, .. }));
    assert!(
        !w.sent[2].headers().contains("Authorization"),
        "the rejected challenge is not reused"
    );
}

#[test]
fn rfc3261_20_33_retry_after_on_503_is_honoured_exactly() {
    let mut w = World::new(config(PASSWORD), secs(3600));
    w.registrar.auth = false;
    w.registrar.script.push_back(Script::Reply(
        503,
        "Service Unavailable",
        vec![("Retry-After", "120 (maintenance)".into())],
    ));
    w.reg.register(w.now);
    w.run_until(secs(119));
    assert_eq!(
        w.events(),
        vec![
            (0, sent(1, 3600, false)),
            (
                0,
                Ev::Failed {
                    status: 503,
                    retry_in: secs(120)
                }
            ),
        ]
    );
    w.run_until(secs(121));
    assert_eq!(
        w.events()[2..],
        [(120, sent(2, 3600, false)), (120, Ev::Registered(3600))]
    );
}

/// Failure delays of a registrar that never answers, with the transport reporting each
/// lost REGISTER after Timer F.
fn timeout_delays(seed_rng: impl FnMut() -> u64 + Send + 'static) -> Vec<Duration> {
    let mut w = World::new(config(PASSWORD), secs(3600));
    w.reg = Registration::new(config(PASSWORD), seed_rng).unwrap();
    w.registrar.script = std::iter::repeat_n(Script::Drop, 100).collect();
    w.reg.register(w.now);
    w.run_until(secs(6 * 3600));
    let mut last_sent = None;
    let mut delays = Vec::new();
    for (at, ev) in &w.log {
        match ev {
            Ev::Sent { .. } => {
                if let Some((failed_at, retry_in)) = last_sent.take() {
                    assert_eq!(*at, failed_at + retry_in, "the retry goes out at retry_at");
                }
            }
            Ev::Failed { status, retry_in } => {
                assert_eq!(*status, 408);
                last_sent = Some((*at, *retry_in));
                delays.push(*retry_in);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Each failure is reported Timer F after its REGISTER.
    assert!(
        w.log
            .chunks(2)
            .all(|p| p.len() < 2 || p[1].0 - p[0].0 == TIMER_F)
    );
    delays
}

#[test]
fn rfc3261_10_2_timeouts_back_off_exponentially_to_the_cap_with_bounded_jitter() {
    let cap = secs(1800);
    for (name, delays) in [
        ("xorshift", timeout_delays(rng(42))),
        ("lowest draw", timeout_delays(|| 0)),
        ("highest draw", timeout_delays(|| u64::MAX)),
    ] {
        assert!(delays.len() >= 10, "{name}: {delays:?}");
        for (n, d) in delays.iter().enumerate() {
            let nominal = (secs(30) * (1u32 << n.min(10))).min(cap);
            let low = nominal - nominal / 10;
            let high = (nominal + nominal / 10).min(cap);
            assert!(
                *d >= low && *d <= high,
                "{name}: failure {n}: {d:?} not in {low:?}..={high:?}"
            );
        }
        assert!(delays.iter().all(|d| *d <= cap), "{name}: the cap holds");
        assert!(
            delays[8..].iter().all(|d| *d >= cap - cap / 10),
            "{name}: capped"
        );
    }
    let spread = timeout_delays(rng(42));
    assert!(
        spread.windows(2).skip(7).any(|p| p[0] != p[1]),
        "jitter varies the capped delays: {spread:?}"
    );
    assert_eq!(
        timeout_delays(|| 0)[..3],
        [secs(27), secs(54), secs(108)],
        "lowest draw is −10 %"
    );
}

#[test]
fn rfc3261_17_1_2_2_safety_net_when_the_transport_never_reports() {
    let mut w = World::new(config(PASSWORD), secs(3600));
    w.registrar.script.push_back(Script::Drop);
    w.reg.register(w.now);
    w.pump();
    w.shell_timeouts.clear(); // the transport stays silent
    w.run_until(secs(38));
    // 64·T1 + T4 = 37 s, then a 408 failure and the first back-off.
    assert!(matches!(w.log[1], (d, Ev::Failed { status: 408, .. }) if d == secs(37)));
}

#[test]
fn rfc3261_10_2_4_registrar_shortening_expires_refreshes_earlier() {
    let mut w = World::new(config(PASSWORD), secs(3600));
    w.registrar.max_expires = 60;
    w.reg.register(w.now);
    w.run_until(secs(95));
    assert_eq!(
        w.events(),
        vec![
            (0, sent(1, 3600, false)),
            (0, sent(2, 3600, true)),
            (0, Ev::Registered(60)),
            (30, sent(3, 3600, true)),
            (30, Ev::Registered(60)),
            (60, sent(4, 3600, true)),
            (60, Ev::Registered(60)),
            (90, sent(5, 3600, true)),
            (90, Ev::Registered(60)),
        ]
    );
}

#[test]
fn failed_refreshes_lose_the_binding_at_its_expiry_not_before() {
    let mut w = World::new(config(PASSWORD), secs(3600));
    w.registrar.max_expires = 600;
    w.reg.register(w.now);
    w.run_until(secs(1));
    for _ in 0..10 {
        w.registrar
            .script
            .push_back(Script::Reply(500, "Server Internal Error", vec![]));
    }
    w.run_until(secs(599));
    assert!(
        w.reg.is_registered(),
        "still bound after the failed refresh"
    );
    assert!(!w.log.iter().any(|(_, e)| *e == Ev::Lost));
    assert!(matches!(w.log[4], (d, Ev::Failed { status: 500, .. }) if d == secs(568)));
    w.run_until(secs(601));
    let lost: Vec<_> = w.log.iter().filter(|(_, e)| *e == Ev::Lost).collect();
    assert_eq!(lost, [&(secs(600), Ev::Lost)]);
    assert!(!w.reg.is_registered());
    // Retries go on after the loss and a success registers again.
    w.registrar.script.clear();
    w.run_until(secs(700));
    assert!(w.reg.is_registered());
    assert!(matches!(w.log.last(), Some((_, Ev::Registered(600)))));
}

#[test]
fn rfc3261_10_2_2_unregister_sends_expires_zero_then_reports() {
    let mut w = World::new(config(PASSWORD), secs(3600));
    w.reg.register(w.now);
    w.run_until(secs(10));
    w.reg.unregister(w.now);
    w.run_until(secs(20));
    assert_eq!(
        w.events()[3..],
        [(10, sent(3, 0, true)), (10, Ev::Unregistered)]
    );
    let req = &w.sent[2];
    assert_eq!(req.headers().call_id().unwrap(), w.reg.call_id());
    assert_eq!(
        req.headers().get("Contact"),
        Some(format!("<{CONTACT}>").as_str())
    );
    assert_eq!(
        w.registrar.verdicts[2],
        Some(Ok(())),
        "pre-emptively authorized"
    );
    assert!(!w.reg.is_registered());
    assert_eq!(w.reg.poll_timeout(), None, "nothing left to do");
    w.run_until(secs(7200));
    assert_eq!(w.sent_count(), 3, "no refresh after unregistering");
}

#[test]
fn rfc3261_10_2_2_unregister_gives_up_after_one_try() {
    let mut w = World::new(config(PASSWORD), secs(3600));
    w.reg.register(w.now);
    w.run_until(secs(10));
    w.registrar.script.push_back(Script::Drop);
    w.reg.unregister(w.now);
    w.run_until(secs(3600));
    assert_eq!(
        w.events()[3..],
        [(10, sent(3, 0, true)), (42, Ev::Unregistered)]
    );
    // Before anything was sent there is nothing to remove.
    let mut fresh = Registration::new(config(PASSWORD), rng(1)).unwrap();
    fresh.unregister(w.now);
    assert_eq!(fresh.poll_action(), Some(Action::Unregistered));
    assert_eq!(fresh.poll_action(), None);
}

#[test]
fn stray_responses_are_unmatched_and_change_nothing() {
    let mut w = World::new(config(PASSWORD), secs(3600));
    w.registrar.script.push_back(Script::Drop);
    w.reg.register(w.now);
    w.pump();
    let req = wire_request(&w.sent[0], 1);
    let mut old = Response::for_request(&req, 200, "OK", "x").unwrap();
    old.headers_mut().set("CSeq", "7 REGISTER").unwrap();
    assert_eq!(
        w.reg.handle_response(w.now, &old),
        Err(RegisterError::Unmatched)
    );
    let mut other = Response::for_request(&req, 200, "OK", "x").unwrap();
    other.headers_mut().set("Call-ID", "someone-else").unwrap();
    assert_eq!(
        w.reg.handle_response(w.now, &other),
        Err(RegisterError::Unmatched)
    );
    let trying = Response::for_request(&req, 100, "Trying", "x").unwrap();
    assert_eq!(w.reg.handle_response(w.now, &trying), Ok(()));
    assert_eq!(w.reg.poll_action(), None);
    assert!(!w.reg.is_registered());
}

#[test]
fn instance_id_finds_a_rewritten_contact() {
    let mut cfg = config(PASSWORD);
    cfg.instance_id = Some("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6".into());
    let mut w = World::new(cfg, secs(3600));
    w.registrar.auth = false;
    w.registrar.script.push_back(Script::Reply(
        200,
        "OK",
        vec![
            ("Contact", "<sip:gw@203.0.113.5:41000>;expires=3000".into()),
            (
                "Contact",
                "<sip:gw@203.0.113.5:40000>;expires=900;+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\"".into(),
            ),
        ],
    ));
    w.reg.register(w.now);
    w.run_until(secs(1));
    assert_eq!(w.events()[1], (0, Ev::Registered(900)));
    assert_eq!(
        w.sent[0].headers().get("Contact"),
        Some(
            format!(
                "<{CONTACT}>;+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\""
            )
            .as_str()
        )
    );
}

#[test]
fn configuration_that_cannot_make_a_register_is_refused() {
    let bad = |f: fn(&mut RegistrationConfig)| {
        let mut c = config(PASSWORD);
        f(&mut c);
        Registration::new(c, rng(1)).is_err()
    };
    assert!(bad(|c| c.expires = 0));
    assert!(bad(|c| c.registrar = "not a uri".into()));
    assert!(bad(|c| c.aor = "sip:a@b>".into()));
    assert!(bad(|c| c.user_agent = Some("x\r\nVia: evil".into())));
    assert!(bad(|c| c.secret = Secret::Ha1("abc".into())));
    assert!(bad(|c| c.instance_id = Some("urn:\"x".into())));
    assert!(bad(|c| c.backoff.cap = std::time::Duration::from_secs(1)));
    assert!(!bad(|_| {}));
}

#[test]
fn rfc3261_22_3_proxy_and_registrar_challenges_are_both_answered() {
    let mut w = World::new(config(PASSWORD), secs(3600));
    let proxy = Challenger::new(
        "proxy.example.net",
        Role::Proxy,
        NonceIssuer::new(&[9u8; 32]).unwrap(),
    );
    let wall = w.registrar.wall_ms(w.now);
    let offers: Vec<(&'static str, String)> = proxy
        .challenges(wall, &[1; 16], false)
        .iter()
        .map(|c| ("Proxy-Authenticate", c.to_header_value().unwrap()))
        .collect();
    w.registrar
        .script
        .push_back(Script::Reply(407, "Proxy Authentication Required", offers));
    w.reg.register(w.now);
    w.run_until(secs(1));
    assert_eq!(
        w.events(),
        vec![
            (0, sent(1, 3600, false)),
            (0, sent(2, 3600, false)),
            (0, sent(3, 3600, true)),
            (0, Ev::Registered(3600)),
        ]
    );
    // The proxy's credentials ride along on every later request, with counting nc.
    for (i, nc) in [(1, 1), (2, 2)] {
        let req = &w.sent[i];
        let v = req.headers().get("Proxy-Authorization").unwrap();
        let creds = Credentials::parse(v).unwrap();
        assert_eq!(creds.nc, Some(nc));
        proxy
            .verify(&creds, "REGISTER", REGISTRAR, wall, |_, _, _| {
                Some(Secret::Password(PASSWORD.into()))
            })
            .unwrap();
    }
    assert_eq!(w.registrar.verdicts[2], Some(Ok(())));
}

#[test]
fn rfc8760_stored_ha1_answers_only_its_own_hash_family() {
    // An MD5 H(A1) skips the SHA-256 challenge the registrar offers first.
    let ha1 =
        sip_proto::digest::ha1(&sip_proto::digest::Algorithm::Md5, USER, REALM, PASSWORD).unwrap();
    let mut cfg = config(PASSWORD);
    cfg.secret = Secret::Ha1(ha1);
    cfg.realm = Some(REALM.into());
    let mut w = World::new(cfg, secs(3600));
    w.reg.register(w.now);
    w.run_until(secs(1));
    assert_eq!(w.events()[2], (0, Ev::Registered(3600)));
    assert_eq!(auth_of(&w.sent[1]).algorithm.as_str(), "MD5");
    assert_eq!(w.registrar.verdicts[1], Some(Ok(())));

    // A realm we were not configured for is not answered: no password goes to strangers.
    let mut cfg = config(PASSWORD);
    cfg.realm = Some("elsewhere.example".into());
    let mut w = World::new(cfg, secs(3600));
    w.reg.register(w.now);
    w.run_until(secs(1));
    assert_eq!(w.sent_count(), 1);
    assert!(matches!(w.log[1].1, Ev::Failed { status: 401, .. }));
    assert!(w.failed_reasons[0].contains("no challenge we can answer"));
}
