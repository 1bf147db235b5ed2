//! A SIP user agent over `sip-transport`: the async shell around sip-proto's sans-IO
//! [`InviteSession`](sip_proto::session::InviteSession) and
//! [`Registration`](sip_proto::register::Registration).
//!
//! One router task reads the endpoint's events and hands each to its owner: a new INVITE
//! becomes a session with its own task and reaches the application as an [`IncomingCall`];
//! requests, ACKs and stray 2xx retransmissions of a known Call-ID go to that call's task;
//! in-dialog requests of unknown calls get 481; other out-of-dialog requests (OPTIONS,
//! REGISTER, MESSAGE…) go to the application as [`UaEvent::Request`].
//!
//! Requests of a dialog always travel on the peer's flow — the address and transport the
//! dialog's first request came from or went to — and never to a host named in a Contact or
//! Record-Route: the peers of a gateway are configured, a Contact may name an unreachable
//! private address behind NAT, and a host taken from a message must never be contacted.

mod call;
mod registration;

pub use call::{Call, CallOptions, IncomingCall};
pub use registration::{RegState, RegistrationHandle};
pub use sip_proto::session::{EndReason, OfferKind, Rel100, SessionEvent};

use sip_proto::layer::TxnId;
use sip_proto::msg::{Method, MsgError, Request, Response};
use sip_proto::register::RegisterError;
use sip_proto::session::SessionError;
use sip_transport::{Endpoint, Event, Handle, Incoming, Listen, Target, Transport};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::mpsc;
use tracing::{debug, info_span, warn};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("transport: {0}")]
    Transport(#[from] sip_transport::Error),
    #[error("session: {0}")]
    Session(#[from] SessionError),
    #[error("message: {0}")]
    Msg(#[from] MsgError),
    #[error("registration: {0}")]
    Register(#[from] RegisterError),
    #[error("no {0} listener to send from")]
    NoListener(&'static str),
    #[error("digest: {0}")]
    Auth(String),
    #[error("the call has ended")]
    Gone,
}

/// What every session of this agent uses.
#[derive(Debug, Clone)]
pub struct UaConfig {
    /// The user part of our Contact.
    pub user: String,
    pub rel100: Rel100,
    /// The session interval we ask for and grant (RFC 4028); `None` disables session timers.
    pub session_expires: Option<u32>,
    /// The smallest session interval we accept. RFC 4028 says at least 90; tests lower it.
    pub min_se: u32,
    pub user_agent: Option<String>,
    pub t1: std::time::Duration,
    pub t2: std::time::Duration,
    /// An outgoing call still unanswered after this is cancelled: once a provisional has
    /// arrived no transaction timer ends it (RFC 3261 §17.1.1.2), the TU must.
    pub no_answer_timeout: std::time::Duration,
}

impl Default for UaConfig {
    fn default() -> Self {
        UaConfig {
            user: "gw".to_owned(),
            rel100: Rel100::Supported,
            session_expires: Some(1800),
            min_se: 90,
            user_agent: Some(concat!("ript-gateway/", env!("CARGO_PKG_VERSION")).to_owned()),
            t1: std::time::Duration::from_millis(500),
            t2: std::time::Duration::from_secs(4),
            no_answer_timeout: std::time::Duration::from_secs(180),
        }
    }
}

/// What the agent hands the application.
#[derive(Debug)]
#[non_exhaustive]
pub enum UaEvent {
    /// A new INVITE that passed the session's checks (Require, Session-Expires, body).
    Call(IncomingCall),
    /// An out-of-dialog request other than INVITE; answer it on `handle()`.
    Request(Incoming),
}

/// Input of one call task: the network's messages and the application's commands. They are
/// boxed: a channel allocates its slots in blocks of 32 when it is created, so every live
/// call pays 32 times the size of this enum.
#[derive(Debug)]
pub(crate) enum Input {
    Cmd(Box<call::Cmd>),
    Request(Box<Incoming>),
    Ack(Box<sip_proto::msg::Request>),
    Response(Box<Response>),
}

type Calls = Arc<Mutex<HashMap<String, mpsc::Sender<Input>>>>;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

pub(crate) fn random_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The per-agent state shared by the router and the call tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub handle: Handle,
    pub local: Vec<Listen>,
    pub cfg: UaConfig,
    pub calls: Calls,
}

impl Shared {
    fn listener(&self, t: Transport) -> Option<std::net::SocketAddr> {
        self.local.iter().find(|l| l.transport == t).map(|l| l.addr)
    }

    /// Our Contact and Via (without branch) for a dialog with `peer` on transport `t`. A
    /// wildcard listener (0.0.0.0, ::) is named by the address the kernel routes toward
    /// the peer from: peers send in-dialog requests to our Contact.
    pub fn contact_and_via(
        &self,
        t: Transport,
        peer: std::net::SocketAddr,
    ) -> Result<(String, String), Error> {
        let mut addr = self.listener(t).ok_or(Error::NoListener(t.as_str()))?;
        if addr.ip().is_unspecified()
            && let Some(ip) = local_ip_toward(addr.ip(), peer)
        {
            addr.set_ip(ip);
        }
        let host = match addr {
            std::net::SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
            std::net::SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        };
        let param = match t {
            Transport::Udp => String::new(),
            other => format!(";transport={}", other.as_str().to_ascii_lowercase()),
        };
        Ok((
            format!("<sip:{}@{host}{param}>", self.cfg.user),
            format!("SIP/2.0/{} {host}", t.as_str()),
        ))
    }

    pub fn session_config(
        &self,
        t: Transport,
        peer: std::net::SocketAddr,
    ) -> Result<sip_proto::session::SessionConfig, Error> {
        let (contact, via) = self.contact_and_via(t, peer)?;
        let mut c = sip_proto::session::SessionConfig::new(&contact, &via, rand::random());
        c.t1 = self.cfg.t1;
        c.t2 = self.cfg.t2;
        c.rel100 = self.cfg.rel100;
        c.session_expires = self.cfg.session_expires;
        c.min_se = self.cfg.min_se;
        c.user_agent.clone_from(&self.cfg.user_agent);
        Ok(c)
    }
}

/// The source address a datagram toward `peer` would leave from (no packet is sent).
fn local_ip_toward(
    unspecified: std::net::IpAddr,
    peer: std::net::SocketAddr,
) -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind((unspecified, 0)).ok()?;
    s.connect(peer).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// The agent: owns the endpoint's event stream through its router task.
#[derive(Debug)]
pub struct UserAgent {
    shared: Arc<Shared>,
    events: mpsc::Receiver<UaEvent>,
}

impl UserAgent {
    pub fn new(mut endpoint: Endpoint, cfg: UaConfig) -> UserAgent {
        let shared = Arc::new(Shared {
            handle: endpoint.handle(),
            local: endpoint.local().to_vec(),
            cfg,
            calls: Arc::default(),
        });
        let (tx, events) = mpsc::channel(1024);
        let s = shared.clone();
        tokio::spawn(async move {
            while let Some(ev) = endpoint.next_event().await {
                route(&s, ev, &tx).await;
            }
        });
        UserAgent { shared, events }
    }

    pub async fn next_event(&mut self) -> Option<UaEvent> {
        self.events.recv().await
    }

    /// The endpoint handle (to answer [`UaEvent::Request`]s or send other requests).
    pub fn handle(&self) -> Handle {
        self.shared.handle.clone()
    }

    pub fn local(&self) -> &[Listen] {
        &self.shared.local
    }

    /// Live calls (sessions whose task runs).
    pub fn active_calls(&self) -> usize {
        lock(&self.shared.calls)
            .values()
            .filter(|t| !t.is_closed())
            .count()
    }

    /// Places a call; the INVITE is on its way when this returns.
    pub async fn call(&self, opts: CallOptions) -> Result<Call, Error> {
        call::start_outgoing(self.shared.clone(), opts)
    }

    /// A cloneable handle that places calls, for call tasks while the agent's owner keeps
    /// reading [`UserAgent::next_event`].
    pub fn caller(&self) -> Caller {
        Caller {
            shared: self.shared.clone(),
        }
    }

    /// Starts keeping a registration with an upstream registrar.
    pub fn register(
        &self,
        cfg: sip_proto::register::RegistrationConfig,
        target: Target,
    ) -> Result<RegistrationHandle, Error> {
        registration::start(self.shared.handle.clone(), cfg, target)
    }
}

/// Places calls on a [`UserAgent`]'s endpoint ([`UserAgent::caller`]).
#[derive(Debug, Clone)]
pub struct Caller {
    shared: Arc<Shared>,
}

impl Caller {
    /// Places a call; the INVITE is on its way when this returns.
    pub async fn call(&self, opts: CallOptions) -> Result<Call, Error> {
        call::start_outgoing(self.shared.clone(), opts)
    }

    /// The endpoint handle.
    pub fn handle(&self) -> Handle {
        self.shared.handle.clone()
    }
}

/// Keeps a registration with an upstream registrar over `handle`'s endpoint, for a user of
/// the endpoint that does not run a [`UserAgent`].
pub fn register(
    handle: Handle,
    cfg: sip_proto::register::RegistrationConfig,
    target: Target,
) -> Result<RegistrationHandle, Error> {
    registration::start(handle, cfg, target)
}

async fn route(s: &Arc<Shared>, ev: Event, app: &mpsc::Sender<UaEvent>) {
    // The router never waits on a call or on the application: one slow consumer must not
    // stall every other call. What cannot be queued is refused (requests) or dropped
    // (ACKs and 2xx retransmissions, which their senders repeat).
    match ev {
        Event::Request(inc) => route_request(s, inc, app).await,
        Event::Ack { ack, .. } => {
            if let Some(tx) = owner(s, ack.headers().call_id().ok())
                && tx.try_send(Input::Ack(Box::new(ack))).is_err()
            {
                debug!("call busy: ACK dropped");
            }
        }
        Event::StrayResponse { response, .. } => {
            // Only a 2xx to an INVITE outlives its transaction (RFC 3261 §13.2.2.4); other
            // strays are dropped (§17.1.3) rather than shown to a session, where a forged
            // one could end or redirect a call knowing only its Call-ID.
            let invite_2xx = (200..300).contains(&response.status())
                && matches!(response.headers().cseq(), Ok((_, Method::Invite)));
            if invite_2xx
                && let Some(tx) = owner(s, response.headers().call_id().ok())
                && tx.try_send(Input::Response(Box::new(response))).is_err()
            {
                debug!("call busy: 2xx retransmission dropped");
            }
        }
        _ => {}
    }
}

fn owner(s: &Shared, call_id: Option<&str>) -> Option<mpsc::Sender<Input>> {
    let call_id = call_id?;
    lock(&s.calls)
        .get(call_id)
        .filter(|t| !t.is_closed())
        .cloned()
}

async fn route_request(s: &Arc<Shared>, inc: Incoming, app: &mpsc::Sender<UaEvent>) {
    let h = inc.request.headers();
    let call_id = h.call_id().unwrap_or_default().to_owned();
    let to_tag = h.to().ok().and_then(|t| t.tag).is_some();
    let method = inc.request.method().clone();
    if method == Method::Invite && !to_tag {
        if owner(s, Some(&call_id)).is_some() {
            // RFC 3261 §8.2.2.2: the same call arriving again by another path.
            answer(s, inc.txn, &inc.request, 482, "Loop Detected").await;
            return;
        }
        if app.capacity() == 0 {
            warn!("application overloaded: INVITE refused");
            answer(s, inc.txn, &inc.request, 503, "Service Unavailable").await;
            return;
        }
        let span = info_span!("call", call_id = %call_id);
        let _g = span.enter();
        let (txn, request) = (inc.txn, inc.request.clone());
        match call::start_incoming(s.clone(), inc) {
            Ok(Some(c)) => {
                // Should the queue have filled meanwhile, the dropped call answers 480.
                if app.try_send(UaEvent::Call(c)).is_err() {
                    warn!("application overloaded: incoming call dropped");
                }
            }
            Ok(None) => {}
            Err(e) => {
                warn!(error = %e, "incoming INVITE not taken");
                answer(s, txn, &request, 500, "Server Internal Error").await;
            }
        }
        return;
    }
    if let Some(tx) = owner(s, Some(&call_id)) {
        match tx.try_send(Input::Request(Box::new(inc))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Input::Request(inc))) => {
                answer(s, inc.txn, &inc.request, 503, "Service Unavailable").await;
            }
            Err(mpsc::error::TrySendError::Closed(Input::Request(inc))) => {
                answer(
                    s,
                    inc.txn,
                    &inc.request,
                    481,
                    "Call/Transaction Does Not Exist",
                )
                .await;
            }
            Err(_) => {}
        }
        return;
    }
    if to_tag || method == Method::Cancel || method == Method::Ack {
        if method != Method::Ack {
            answer(
                s,
                inc.txn,
                &inc.request,
                481,
                "Call/Transaction Does Not Exist",
            )
            .await;
        }
        return;
    }
    match app.try_send(UaEvent::Request(inc)) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(UaEvent::Request(inc))) => {
            answer(s, inc.txn, &inc.request, 503, "Service Unavailable").await;
        }
        Err(_) => warn!("no application: request dropped"),
    }
}

/// Answers `request` on its server transaction `txn` (never an ACK, which has none).
pub(crate) async fn answer(s: &Shared, txn: TxnId, request: &Request, status: u16, reason: &str) {
    if request.method() == &Method::Ack {
        return;
    }
    match Response::for_request(request, status, reason, &random_token()) {
        Ok(r) => {
            let _ = s.handle.respond(txn, r).await;
        }
        Err(e) => debug!(error = %e, "cannot answer"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_wildcard_listener_is_named_by_the_address_toward_the_peer() {
        let ep = Endpoint::bind(sip_transport::EndpointConfig {
            listen: vec!["udp:0.0.0.0:0".parse().unwrap()],
            ..Default::default()
        })
        .await
        .unwrap();
        let port = ep.local_addr(Transport::Udp).unwrap().port();
        let ua = UserAgent::new(ep, UaConfig::default());
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 5062));
        let (contact, via) = ua.shared.contact_and_via(Transport::Udp, peer).unwrap();
        assert_eq!(contact, format!("<sip:gw@127.0.0.1:{port}>"));
        assert_eq!(via, format!("SIP/2.0/UDP 127.0.0.1:{port}"));
    }
}
