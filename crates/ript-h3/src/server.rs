//! The RIPT server (ript-profile §2): trunk groups, handlers, certificates, customer TGs,
//! calls, signaling byways, media byways and datagram media.
//!
//! One task per QUIC connection accepts requests; one task per request answers it; one task
//! per call owns that call's [`ServerCall`] machine and media state with `&mut`, fed by
//! commands from the request tasks and the application.

use crate::ca::CertAuthority;
use crate::media::{CallEvent, MediaEndpoint, MediaStats, OutgoingMedia};
use crate::tls::{self, Identity};
use crate::{Error, datagram, lock, now, wall_ms};
use bytes::{Buf, Bytes};
use h3::error::Code;
use http::{Method, Response, StatusCode};
use ript_proto::adv::{Advertisement, negotiate};
use ript_proto::call::{ServerCall, ServerCommand, ServerOutput};
use ript_proto::chunk::MediaDirection;
use ript_proto::events::{EventDecoder, EventEncoder, EventKind};
use ript_proto::media::{Downlink, DownlinkOutput, GetId};
use ript_proto::model::{
    CallCreate, CallDescription, CallDirection, CallTimers, CallUpdate, CustomerTg, Handler,
    Policy, ProviderTgs, Reason, Tg, TgSummary, parse_json_body,
};
use ript_proto::pattern::NumberPattern;
use ript_proto::{Error as Rerr, limits, problem};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{Instrument, debug, info, info_span, warn};

type SrvStream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// What [`ServerApp::authenticate`] returns: the answer may need a database lookup.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Option<String>> + Send + 'a>>;

/// What the embedding application decides (the gateway binary implements it).
pub trait ServerApp: Send + Sync + 'static {
    /// The tenant (customer) a bearer token belongs to; `None` answers 401. Every request but
    /// a certificate fetch asks, media PUTs included: an answer that needs I/O is worth caching
    /// (the application's business).
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a>;

    /// Last word on a new call after the TG policy passed: `Err(DestinationUnreachable)`
    /// answers 404, `Err(Overloaded)` 503, and so on.
    fn admit_call(&self, _tenant: &str, _tg: &HostedTg, _call: &CallCreate) -> Result<(), Rerr> {
        Ok(())
    }

    /// The certificate chain (DER, leaf first) an `x5u` names, when it is not one of ours.
    fn passport_chain(&self, _x5u: &str) -> Option<Vec<Vec<u8>>> {
        None
    }

    /// Told after `tenant` registered or replaced (`Some`) or removed (`None`) customer TG
    /// `id` through `{root}/customertgs`, before the client gets its answer; not told about
    /// [`ServerHandle::set_customer_tgs`]. Runs on the request task: must be quick and not
    /// block (hand persistence to a task of its own).
    fn customer_tg_changed(&self, _tenant: &str, _id: &str, _tg: Option<&CustomerTg>) {}
}

/// Told about each request this server answers: its route template (`/providertgs/{tg}/calls`,
/// never the raw path) and the status of the response head, `None` when the request ended
/// without one (the peer went away). Called as the head is sent, so long-lived requests
/// (event byways, media sessions) count when they start. Must be quick and not block.
pub trait RequestObserver: Send + Sync + std::fmt::Debug {
    fn request(&self, resource: &'static str, status: Option<u16>);
}

/// The route template of a request path, from a fixed set; `"other"` for unknown paths.
pub fn resource_template(path: &str) -> &'static str {
    if path == ript_proto::OAUTH_PATH {
        return "/oauth";
    }
    let Some(rest) = path.strip_prefix(ript_proto::ROOT_PATH) else {
        return "other";
    };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["providertgs"] => "/providertgs",
        ["providertgs", _] => "/providertgs/{tg}",
        ["providertgs", _, "handlers"] => "/providertgs/{tg}/handlers",
        ["providertgs", _, "handlers", _] => "/providertgs/{tg}/handlers/{id}",
        ["providertgs", _, "certs"] => "/providertgs/{tg}/certs",
        ["providertgs", _, "certs", _] => "/providertgs/{tg}/certs/{id}",
        ["providertgs", _, "calls"] => "/providertgs/{tg}/calls",
        ["providertgs", _, "calls", _] => "/providertgs/{tg}/calls/{call}",
        ["providertgs", _, "calls", _, "events"] => "/providertgs/{tg}/calls/{call}/events",
        ["providertgs", _, "calls", _, "media"] => "/providertgs/{tg}/calls/{call}/media",
        ["customertgs"] => "/customertgs",
        ["customertgs", _] => "/customertgs/{id}",
        _ => "other",
    }
}

/// The request task's report, reached from wherever its response head is sent.
struct Tracker {
    observer: Arc<dyn RequestObserver>,
    resource: &'static str,
    reported: std::cell::Cell<bool>,
}

impl Tracker {
    fn report(&self, status: Option<u16>) {
        if !self.reported.replace(true) {
            self.observer.request(self.resource, status);
        }
    }
}

tokio::task_local! {
    static TRACKER: Tracker;
}

/// Sends a response head, telling the request's observer (if any) its status.
async fn send_head(
    stream: &mut SrvStream,
    resp: Response<()>,
) -> Result<(), h3::error::StreamError> {
    let status = resp.status().as_u16();
    let _ = TRACKER.try_with(|t| t.report(Some(status)));
    stream.send_response(resp).await
}

/// A trunk group this server hosts.
#[derive(Debug, Clone)]
pub struct HostedTg {
    /// Path segment under `providertgs/`.
    pub id: String,
    pub name: String,
    pub description: String,
    /// Tenants whose tokens may use this TG; others get 404.
    pub tenants: Vec<String>,
    /// Destinations callers may reach (TG `outbound.destinations`).
    pub destinations: NumberPattern,
    /// Numbers this server issues RFC 8226 certificates for.
    pub vouch: NumberPattern,
    pub advertisement: Advertisement,
    pub timers: CallTimers,
    /// Refuse calls without a valid passport (403).
    pub require_passport: bool,
    /// Extra trust anchors for passports (DER), besides this TG's own CA.
    pub trust_anchors: Vec<Vec<u8>>,
    /// The CA issuing this TG's RFC 8226 certificates (its `outbound.origins`), e.g. one
    /// persisted from [`ServerHandle::tg_ca`] and loaded with [`CertAuthority::from_pem`].
    /// `None`: the TG keeps the CA it already has under this id, else a new one is generated.
    pub ca: Option<Arc<CertAuthority>>,
}

/// A customer TG registration (ript-inbound, `{root}/customertgs/{id}`).
#[derive(Clone, PartialEq, Eq)]
pub struct Registration {
    /// The tenant that registered it; only that tenant's token sees it.
    pub tenant: String,
    /// The last segment of its URI: unreserved URL characters only (`A-Z a-z 0-9 - . _ ~`).
    pub id: String,
    /// The registration; the server sets `uri` from its own authority.
    pub tg: CustomerTg,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret we present to the customer: never in logs.
        f.debug_struct("Registration")
            .field("tenant", &self.tenant)
            .field("id", &self.id)
            .field("tg", &self.tg.tg)
            .field("destinations", &self.tg.outbound.destinations)
            .finish_non_exhaustive()
    }
}

/// How to start a server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub listen: SocketAddr,
    /// `host:port` written into URIs; defaults to the bound address.
    pub authority: Option<String>,
    pub identity: Identity,
    pub tgs: Vec<HostedTg>,
    /// Customer TG registrations to start with (e.g. persisted through
    /// [`ServerApp::customer_tg_changed`] before a restart).
    pub customer_tgs: Vec<Registration>,
    /// End-to-end media key (ript-profile §6), when configured.
    pub media_key: Option<[u8; 16]>,
    /// Advertise SETTINGS_H3_DATAGRAM (on by default; off forces clients onto byways).
    pub enable_datagrams: bool,
    /// ript-profile §7's 30 s; shorter only in tests.
    pub no_byway_timeout: std::time::Duration,
    /// Told about every request (see [`RequestObserver`]); none by default.
    pub observer: Option<Arc<dyn RequestObserver>>,
}

impl ServerOptions {
    pub fn new(listen: SocketAddr, identity: Identity, tgs: Vec<HostedTg>) -> Self {
        ServerOptions {
            listen,
            authority: None,
            identity,
            tgs,
            customer_tgs: Vec::new(),
            media_key: None,
            enable_datagrams: true,
            no_byway_timeout: ript_proto::call::NO_SIGNALING_BYWAY,
            observer: None,
        }
    }
}

/// A call a client created, handed to the application.
#[derive(Debug)]
pub struct IncomingCall {
    pub description: CallDescription,
    pub tenant: String,
    pub tg: String,
    /// The claims of the call's passport, verified at creation (ript-profile §8).
    pub passport: Option<ript_proto::passport::Claims>,
    /// That passport as the client sent it (compact JWS, `header.claims.signature`), so it
    /// can travel on as an RFC 8224 `Identity` header; `None` exactly when `passport` is.
    pub passport_jws: Option<String>,
    pub control: CallControl,
    pub events: mpsc::Receiver<CallEvent>,
}

/// The application's handle on a server-side call.
#[derive(Debug, Clone)]
pub struct CallControl {
    tx: mpsc::Sender<Cmd>,
}

impl CallControl {
    async fn send(&self, cmd: Cmd) -> Result<(), Error> {
        self.tx.send(cmd).await.map_err(|_| Error::CallGone)
    }

    /// Moves the call to `kind` (alerting, answered, declined, ...).
    pub async fn state(&self, kind: EventKind, reason: Option<Reason>) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::App(ServerCommand::State(kind, reason), tx))
            .await?;
        rx.await.map_err(|_| Error::CallGone)?.map_err(Error::Proto)
    }

    /// Asks the client to migrate (graceful, ript-profile §7), optionally to a new URI.
    pub async fn migrate(&self, uri: Option<String>) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::App(ServerCommand::Migrate(uri), tx)).await?;
        rx.await.map_err(|_| Error::CallGone)?.map_err(Error::Proto)
    }

    /// Queues media toward the client; never waits on the network.
    pub fn send_media(&self, m: OutgoingMedia) -> Result<(), Error> {
        self.tx.try_send(Cmd::SendMedia(m)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::Backpressure,
            mpsc::error::TrySendError::Closed(_) => Error::CallGone,
        })
    }

    /// From now on the call's received media goes to `h` instead of [`CallEvent::Media`]
    /// events (media already queued as events stays there).
    pub async fn set_media_handler(&self, h: crate::MediaHandler) -> Result<(), Error> {
        self.send(Cmd::MediaHandler(h)).await
    }

    pub async fn stats(&self) -> Result<MediaStats, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Stats(tx)).await?;
        rx.await.map_err(|_| Error::CallGone)
    }

    /// Tells the client its call now has another handler (ript-inbound `handler-changed`).
    pub async fn handler_changed(&self, handler: String) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::App(ServerCommand::HandlerChanged(handler), tx))
            .await?;
        rx.await.map_err(|_| Error::CallGone)?.map_err(Error::Proto)
    }

    /// Ends this call's reverse signaling byways without a final state, as a load balancer
    /// losing an instance would; the client detects it and migrates (ript-profile §7).
    pub async fn drop_byways(&self) -> Result<(), Error> {
        self.send(Cmd::DropByways).await
    }
}

enum GetAnswer {
    Body(Vec<u8>),
    NoContent,
    NotFound,
}

struct PutResult {
    acks: Vec<u8>,
    media: usize,
    invalid: Option<ript_proto::ChunkError>,
}

enum Cmd {
    Describe(oneshot::Sender<CallDescription>),
    Update(
        Option<String>,
        oneshot::Sender<Result<CallDescription, Rerr>>,
    ),
    OpenReverse(mpsc::Sender<Bytes>, oneshot::Sender<Result<(), Rerr>>),
    OpenForward(oneshot::Sender<Result<watch::Receiver<bool>, Rerr>>),
    BywayClosed,
    /// Boxed: an event is large and rare next to media, and every slot of the queue (tokio
    /// allocates 32 at a time per call) would be its size.
    ClientEvent(Box<ript_proto::events::Event>),
    MediaPut(Bytes, oneshot::Sender<Result<PutResult, Rerr>>),
    MediaGet(GetId, oneshot::Sender<GetAnswer>),
    DatagramOpen(DatagramTx, oneshot::Sender<Result<(), Rerr>>),
    DatagramClosed {
        stream_id: u64,
        conn_id: usize,
    },
    MediaGetGone(GetId),
    DatagramIn(Bytes),
    App(ServerCommand, oneshot::Sender<Result<(), Rerr>>),
    SendMedia(OutgoingMedia),
    MediaHandler(crate::MediaHandler),
    Stats(oneshot::Sender<MediaStats>),
    DropByways,
}

/// Where a call's datagrams go: the connection's sender and the CONNECT stream id.
#[derive(Clone)]
struct DatagramTx {
    out: datagram::DatagramOut,
    stream_id: u64,
    /// quinn's stable id of the connection: a late close of an older session must not end
    /// the current one.
    conn_id: usize,
}

struct TgEntry {
    /// `cfg.ca` is `Some(ca)`.
    cfg: HostedTg,
    ca: Arc<CertAuthority>,
}

type TgMap = HashMap<String, Arc<TgEntry>>;

struct HandlerEntry {
    tenant: String,
    tg: String,
    handler: Handler,
}

struct CallEntry {
    tenant: String,
    tg: String,
    tx: mpsc::Sender<Cmd>,
}

struct Shared {
    app: Arc<dyn ServerApp>,
    authority: String,
    /// Replaced whole by `set_tgs`; a request works on the snapshot it took.
    tgs: Mutex<Arc<TgMap>>,
    /// Held by `set_tgs` while it builds the new map (CA generation takes a while), so two
    /// concurrent updates cannot lose each other's CAs; readers never wait for it.
    tgs_update: Mutex<()>,
    handlers: Mutex<HashMap<String, HandlerEntry>>,
    customertgs: Mutex<HashMap<String, (String, CustomerTg)>>,
    certs: Mutex<HashMap<String, (String, String)>>,
    calls: Mutex<HashMap<String, CallEntry>>,
    incoming: mpsc::Sender<IncomingCall>,
    media_key: Option<[u8; 16]>,
    enable_datagrams: bool,
    no_byway_timeout: std::time::Duration,
    observer: Option<Arc<dyn RequestObserver>>,
    next_get: std::sync::atomic::AtomicU64,
    connections: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn root(&self) -> String {
        format!("https://{}{}", self.authority, ript_proto::ROOT_PATH)
    }
    fn tg_uri(&self, tg: &str) -> String {
        format!("{}/providertgs/{tg}", self.root())
    }
    fn tgs(&self) -> Arc<TgMap> {
        lock(&self.tgs).clone()
    }
    fn tg_for(&self, tenant: &str, tg: &str) -> Result<Arc<TgEntry>, Rerr> {
        self.tgs()
            .get(tg)
            .filter(|e| e.cfg.tenants.iter().any(|t| t == tenant))
            .cloned()
            .ok_or(Rerr::NotFound)
    }
    fn set_tgs(&self, tgs: Vec<HostedTg>) -> Result<(), Error> {
        let _writer = lock(&self.tgs_update);
        let map = build_tgs(&self.tgs(), tgs)?;
        *lock(&self.tgs) = Arc::new(map);
        Ok(())
    }
    fn tg_ca(&self, tg: &str) -> Option<Arc<CertAuthority>> {
        self.tgs().get(tg).map(|e| e.ca.clone())
    }
    fn customertg_uri(&self, id: &str) -> String {
        format!("{}/customertgs/{id}", self.root())
    }
    fn set_customer_tgs(&self, regs: Vec<Registration>) {
        let mut map = HashMap::new();
        for r in regs {
            if !url_segment_ok(&r.id) {
                warn!(tenant = %r.tenant, "customer tg registration with an unusable id skipped");
                continue;
            }
            let mut c = r.tg;
            c.uri = Some(self.customertg_uri(&r.id));
            map.insert(r.id, (r.tenant, c));
        }
        *lock(&self.customertgs) = map;
    }
    fn customer_tgs(&self, tenant: &str) -> Vec<Registration> {
        let mut list: Vec<Registration> = lock(&self.customertgs)
            .iter()
            .filter(|(_, (t, _))| t == tenant)
            .map(|(id, (t, c))| Registration {
                tenant: t.clone(),
                id: id.clone(),
                tg: c.clone(),
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }
    fn tg_object(&self, e: &TgEntry) -> Tg {
        Tg {
            uri: self.tg_uri(&e.cfg.id),
            name: e.cfg.name.clone(),
            description: e.cfg.description.clone(),
            outbound: Policy {
                origins: Some(e.ca.cert_pem().to_owned()),
                destinations: e.cfg.destinations.clone(),
            },
            inbound: None,
            advertisement: e.cfg.advertisement.to_string(),
            retry_backoff: Some(e.cfg.timers.retry_backoff_ms),
            media_timeout: Some(e.cfg.timers.media_timeout_ms),
            ack_timeout: Some(e.cfg.timers.ack_timeout_ms),
        }
    }
    fn call_tx(&self, tenant: &str, tg: &str, call: &str) -> Result<mpsc::Sender<Cmd>, Rerr> {
        lock(&self.calls)
            .get(call)
            .filter(|c| c.tenant == tenant && c.tg == tg)
            .map(|c| c.tx.clone())
            .ok_or(Rerr::NotFound)
    }
}

/// The TGs `tgs` describe, each with its CA: the one it carries, else the one `old` has under
/// its id, else a new one. A later duplicate id wins.
fn build_tgs(old: &TgMap, tgs: Vec<HostedTg>) -> Result<TgMap, Error> {
    let mut map = HashMap::with_capacity(tgs.len());
    for mut cfg in tgs {
        let ca = match (&cfg.ca, old.get(&cfg.id)) {
            (Some(ca), _) => ca.clone(),
            (None, Some(e)) => e.ca.clone(),
            (None, None) => Arc::new(
                CertAuthority::generate(&format!("RIPT TG {}", cfg.name))
                    .map_err(|_| Error::Certificate("tg certificate authority"))?,
            ),
        };
        cfg.ca = Some(ca.clone());
        map.insert(cfg.id.clone(), Arc::new(TgEntry { cfg, ca }));
    }
    Ok(map)
}

/// A path segment made of RFC 3986 unreserved characters only, so it appears in a URI as is.
fn url_segment_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
        && s != "."
        && s != ".."
}

/// A cloneable handle on a running [`Server`]'s configuration, for tasks that follow a
/// configuration source while another owns the `Server` (and its [`Server::next_call`]).
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("authority", &self.shared.authority)
            .finish()
    }
}

impl ServerHandle {
    /// Replaces the hosted TGs. Calls in progress go on (they do not consult the TG again);
    /// new requests on a TG no longer listed answer 404. A TG whose id stays keeps its CA
    /// unless it carries another. On error (a CA could not be generated) nothing changes.
    pub fn set_tgs(&self, tgs: Vec<HostedTg>) -> Result<(), Error> {
        self.shared.set_tgs(tgs)
    }

    /// The ids of the hosted TGs, sorted.
    pub fn tg_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.shared.tgs().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// A TG's issuing CA, to persist ([`CertAuthority::cert_pem`] and `key_pem`) and hand
    /// back through [`HostedTg::ca`] after a restart.
    pub fn tg_ca(&self, tg: &str) -> Option<Arc<CertAuthority>> {
        self.shared.tg_ca(tg)
    }

    /// PEM of a TG's issuing CA (its `outbound.origins`), a passport trust anchor.
    pub fn tg_ca_pem(&self, tg: &str) -> Option<String> {
        self.shared.tg_ca(tg).map(|ca| ca.cert_pem().to_owned())
    }

    /// Replaces every customer TG registration (without telling
    /// [`ServerApp::customer_tg_changed`]). Entries whose id is not a plain URL segment are
    /// skipped with a warning.
    pub fn set_customer_tgs(&self, regs: Vec<Registration>) {
        self.shared.set_customer_tgs(regs)
    }

    /// The customer TGs `tenant` registered, sorted by id: where calls toward that customer go.
    pub fn customer_tgs(&self, tenant: &str) -> Vec<Registration> {
        self.shared.customer_tgs(tenant)
    }
}

/// A running RIPT server.
pub struct Server {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    incoming: mpsc::Receiver<IncomingCall>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("authority", &self.shared.authority)
            .finish()
    }
}

impl Server {
    pub async fn bind(opts: ServerOptions, app: Arc<dyn ServerApp>) -> Result<Self, Error> {
        let endpoint = tls::endpoint(opts.listen, Some(tls::server_config(&opts.identity)?))?;
        let local = endpoint.local_addr()?;
        let authority = opts.authority.clone().unwrap_or_else(|| local.to_string());
        let tgs = build_tgs(&HashMap::new(), opts.tgs)?;
        let (tx, incoming) = mpsc::channel(1024);
        let shared = Arc::new(Shared {
            app,
            authority,
            tgs: Mutex::new(Arc::new(tgs)),
            tgs_update: Mutex::default(),
            handlers: Mutex::default(),
            customertgs: Mutex::default(),
            certs: Mutex::default(),
            calls: Mutex::default(),
            incoming: tx,
            media_key: opts.media_key,
            enable_datagrams: opts.enable_datagrams,
            no_byway_timeout: opts.no_byway_timeout,
            observer: opts.observer,
            next_get: std::sync::atomic::AtomicU64::new(1),
            connections: std::sync::atomic::AtomicU64::new(0),
        });
        shared.set_customer_tgs(opts.customer_tgs);
        let ep = endpoint.clone();
        let sh = shared.clone();
        tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                let sh = sh.clone();
                tokio::spawn(async move {
                    let peer = incoming.remote_address();
                    match incoming.await {
                        Ok(conn) => {
                            sh.connections
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            drive_connection(sh, conn).await
                        }
                        Err(e) => debug!(%peer, error = %e, "handshake failed"),
                    }
                });
            }
        });
        Ok(Server {
            endpoint,
            shared,
            incoming,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        Ok(self.endpoint.local_addr()?)
    }

    /// `https://{authority}/.well-known/ript/v1`.
    pub fn root_url(&self) -> String {
        self.shared.root()
    }

    pub fn tg_url(&self, tg: &str) -> String {
        self.shared.tg_uri(tg)
    }

    /// A handle on this server's configuration that other tasks can keep.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: self.shared.clone(),
        }
    }

    /// See [`ServerHandle::set_tgs`].
    pub fn set_tgs(&self, tgs: Vec<HostedTg>) -> Result<(), Error> {
        self.shared.set_tgs(tgs)
    }

    /// See [`ServerHandle::tg_ca`].
    pub fn tg_ca(&self, tg: &str) -> Option<Arc<CertAuthority>> {
        self.shared.tg_ca(tg)
    }

    /// PEM of a TG's issuing CA (its `outbound.origins`), a passport trust anchor.
    pub fn tg_ca_pem(&self, tg: &str) -> Option<String> {
        self.shared.tg_ca(tg).map(|ca| ca.cert_pem().to_owned())
    }

    /// See [`ServerHandle::set_customer_tgs`].
    pub fn set_customer_tgs(&self, regs: Vec<Registration>) {
        self.shared.set_customer_tgs(regs)
    }

    /// See [`ServerHandle::customer_tgs`].
    pub fn customer_tgs(&self, tenant: &str) -> Vec<Registration> {
        self.shared.customer_tgs(tenant)
    }

    /// The next call a client created.
    pub async fn next_call(&mut self) -> Option<IncomingCall> {
        self.incoming.recv().await
    }

    /// Number of calls the server still remembers (live or within retention).
    pub fn calls(&self) -> usize {
        lock(&self.shared.calls).len()
    }

    /// QUIC connections accepted since start.
    pub fn connections_accepted(&self) -> u64 {
        self.shared
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn close(&self) {
        self.endpoint
            .close(quinn::VarInt::from_u32(0x100), b"shutdown");
    }
}

// ---------------------------------------------------------------------------------------
// Connection and requests

type DemuxMap = Arc<Mutex<HashMap<u64, mpsc::Sender<Cmd>>>>;

const REQUEST_HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn drive_connection(shared: Arc<Shared>, conn: quinn::Connection) {
    let peer = conn.remote_address();
    let span = info_span!("ript_conn", %peer);
    async move {
        let h3c = h3::server::builder()
            .enable_extended_connect(shared.enable_datagrams)
            .enable_datagram(shared.enable_datagrams)
            .max_field_section_size(64 * 1024)
            .build::<_, Bytes>(h3_quinn::Connection::new(conn.clone()))
            .await;
        let mut h3c = match h3c {
            Ok(c) => c,
            Err(e) => return debug!(error = %e, "h3 setup failed"),
        };
        let demux: DemuxMap = Arc::default();
        let dg_out = spawn_datagram_io(conn.clone(), demux.clone());
        loop {
            match h3c.accept().await {
                Ok(Some(resolver)) => {
                    let (sh, dm, out, qc) =
                        (shared.clone(), demux.clone(), dg_out.clone(), conn.clone());
                    tokio::spawn(
                        async move {
                            // A peer that opens a stream and never sends headers must not park
                            // a task forever.
                            match tokio::time::timeout(
                                REQUEST_HEAD_TIMEOUT,
                                resolver.resolve_request(),
                            )
                            .await
                            {
                                Ok(Ok((req, stream))) => match sh.observer.clone() {
                                    Some(observer) => {
                                        let tracker = Tracker {
                                            observer,
                                            resource: resource_template(req.uri().path()),
                                            reported: std::cell::Cell::new(false),
                                        };
                                        TRACKER
                                            .scope(tracker, async move {
                                                handle_request(sh, dm, out, qc, req, stream).await;
                                                TRACKER.with(|t| t.report(None));
                                            })
                                            .await
                                    }
                                    None => handle_request(sh, dm, out, qc, req, stream).await,
                                },
                                Ok(Err(e)) => debug!(error = %e, "malformed request head"),
                                Err(_) => debug!("no request head within the timeout"),
                            }
                        }
                        .in_current_span(),
                    );
                }
                Ok(None) => break,
                Err(e) => {
                    if !e.is_h3_no_error() {
                        debug!(error = %e, "connection ended");
                    }
                    break;
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// The connection's datagram reader (demultiplexed by CONNECT stream id) and its sender
/// (see [`datagram::DatagramOut`]).
fn spawn_datagram_io(conn: quinn::Connection, demux: DemuxMap) -> datagram::DatagramOut {
    let out = datagram::DatagramOut::new(conn.clone());
    tokio::spawn(async move {
        let mut malformed = 0u64;
        while let Ok(raw) = conn.read_datagram().await {
            let Some((sid, payload)) = datagram::decode(&raw) else {
                malformed += 1;
                debug!(malformed, "datagram without a quarter stream id dropped");
                continue;
            };
            let target = lock(&demux).get(&sid).cloned();
            match target {
                Some(t) => {
                    let _ = t.try_send(Cmd::DatagramIn(payload));
                }
                None => debug!(sid, "datagram for no media session dropped"),
            }
        }
    });
    out
}

fn bearer(req: &http::Request<()>) -> Option<&str> {
    let v = req
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

async fn respond(
    stream: &mut SrvStream,
    status: u16,
    content_type: Option<&str>,
    headers: &[(&str, String)],
    body: Vec<u8>,
) {
    let mut b = Response::builder().status(status);
    if let Some(ct) = content_type {
        b = b.header(http::header::CONTENT_TYPE, ct);
    }
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    let Ok(resp) = b.body(()) else { return };
    if send_head(stream, resp).await.is_err() {
        return;
    }
    if !body.is_empty() && stream.send_data(Bytes::from(body)).await.is_err() {
        return;
    }
    let _ = stream.finish().await;
}

async fn respond_json<T: serde::Serialize>(
    stream: &mut SrvStream,
    status: u16,
    headers: &[(&str, String)],
    v: &T,
) {
    let body = serde_json::to_vec(v).unwrap_or_default();
    respond(stream, status, Some("application/json"), headers, body).await;
}

async fn respond_problem(stream: &mut SrvStream, err: &Rerr) {
    let p = err.problem();
    let mut headers: Vec<(&str, String)> = Vec::new();
    match err {
        Rerr::Unauthorized => headers.push(("www-authenticate", "Bearer".into())),
        Rerr::MethodNotAllowed { allow } => headers.push(("allow", (*allow).to_owned())),
        _ => {}
    }
    if p.status >= 500 && p.short_type() != "unknown-handler" {
        warn!(status = p.status, detail = %p.detail, "request failed");
    } else {
        debug!(status = p.status, detail = %p.detail, "request refused");
    }
    respond(
        stream,
        p.status,
        Some(problem::CONTENT_TYPE),
        &headers,
        p.to_json(),
    )
    .await;
}

/// Reads a whole request body, refusing more than `cap` bytes.
async fn read_body(stream: &mut SrvStream, cap: usize, what: &'static str) -> Result<Bytes, Rerr> {
    let mut body = Vec::new();
    loop {
        match stream.recv_data().await {
            Ok(Some(mut chunk)) => {
                if body.len() + chunk.remaining() > cap {
                    return Err(Rerr::TooLarge { what, limit: cap });
                }
                while chunk.has_remaining() {
                    let c = chunk.chunk();
                    body.extend_from_slice(c);
                    let n = c.len();
                    chunk.advance(n);
                }
            }
            Ok(None) => return Ok(Bytes::from(body)),
            Err(_) => {
                return Err(Rerr::Invalid {
                    what,
                    reason: "request body was reset",
                });
            }
        }
    }
}

async fn handle_request(
    shared: Arc<Shared>,
    demux: DemuxMap,
    dg_out: datagram::DatagramOut,
    conn: quinn::Connection,
    req: http::Request<()>,
    mut stream: SrvStream,
) {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if path == ript_proto::OAUTH_PATH {
        let page = b"<!doctype html><title>RIPT OAuth</title><p>Obtain a bearer token from your provider and present it as Authorization: Bearer.</p>".to_vec();
        return respond(
            &mut stream,
            200,
            Some("text/html; charset=utf-8"),
            &[],
            page,
        )
        .await;
    }
    let Some(rest) = path.strip_prefix(ript_proto::ROOT_PATH) else {
        return respond_problem(&mut stream, &Rerr::NotFound).await;
    };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    // ript-profile §2: certificates are fetched by verifiers elsewhere, without a token.
    if let (&Method::GET, ["providertgs", tg, "certs", id]) = (&method, segs.as_slice()) {
        let pem = lock(&shared.certs)
            .get(*id)
            .filter(|(t, _)| t == tg)
            .map(|(_, p)| p.clone());
        return match pem {
            Some(p) => {
                respond(
                    &mut stream,
                    200,
                    Some("application/pem-certificate-chain"),
                    &[],
                    p.into_bytes(),
                )
                .await
            }
            None => respond_problem(&mut stream, &Rerr::NotFound).await,
        };
    }
    let tenant = match bearer(&req) {
        Some(token) => shared.app.authenticate(token).await,
        None => None,
    };
    let Some(tenant) = tenant else {
        return respond_problem(&mut stream, &Rerr::Unauthorized).await;
    };
    let ctx = ConnCtx {
        demux,
        dg_out,
        conn,
    };
    let r = route(&shared, &ctx, &tenant, &method, &segs, &req, &mut stream).await;
    if let Err(e) = r {
        respond_problem(&mut stream, &e).await;
    }
}

/// What a request handler knows of its connection.
struct ConnCtx {
    demux: DemuxMap,
    dg_out: datagram::DatagramOut,
    conn: quinn::Connection,
}

async fn route(
    sh: &Arc<Shared>,
    ctx: &ConnCtx,
    tenant: &str,
    method: &Method,
    segs: &[&str],
    req: &http::Request<()>,
    stream: &mut SrvStream,
) -> Result<(), Rerr> {
    use Method as M;
    match (method, segs) {
        (&M::GET, ["providertgs"]) => {
            let mut list: Vec<TgSummary> = sh
                .tgs()
                .values()
                .filter(|e| e.cfg.tenants.iter().any(|t| t == tenant))
                .map(|e| TgSummary {
                    uri: sh.tg_uri(&e.cfg.id),
                    name: e.cfg.name.clone(),
                    description: e.cfg.description.clone(),
                })
                .collect();
            list.sort_by(|a, b| a.uri.cmp(&b.uri));
            respond_json(stream, 200, &[], &ProviderTgs { providertgs: list }).await;
        }
        (&M::GET, ["providertgs", tg]) => {
            let e = sh.tg_for(tenant, tg)?;
            respond_json(stream, 200, &[], &sh.tg_object(&e)).await;
        }
        (&M::POST, ["providertgs", tg, "handlers"]) => {
            sh.tg_for(tenant, tg)?;
            let body = read_body(stream, limits::JSON_BODY, "handler").await?;
            let mut h: Handler = parse_json_body("handler", &body)?;
            let adv: Advertisement = h.advertisement.parse()?;
            h.advertisement = adv.to_string();
            let id = uuid::Uuid::new_v4().to_string();
            let uri = format!("{}/handlers/{id}", sh.tg_uri(tg));
            h.uri = Some(uri.clone());
            lock(&sh.handlers).insert(
                id,
                HandlerEntry {
                    tenant: tenant.to_owned(),
                    tg: (*tg).to_owned(),
                    handler: h.clone(),
                },
            );
            respond_json(stream, 201, &[("location", uri)], &h).await;
        }
        (m, ["providertgs", tg, "handlers", id]) => {
            sh.tg_for(tenant, tg)?;
            let owned = |e: &HandlerEntry| e.tenant == tenant && e.tg == *tg;
            match *m {
                M::GET => {
                    let h = lock(&sh.handlers)
                        .get(*id)
                        .filter(|e| owned(e))
                        .map(|e| e.handler.clone());
                    respond_json(stream, 200, &[], &h.ok_or(Rerr::NotFound)?).await;
                }
                M::PUT => {
                    if !lock(&sh.handlers).get(*id).is_some_and(owned) {
                        return Err(Rerr::NotFound);
                    }
                    let body = read_body(stream, limits::JSON_BODY, "handler").await?;
                    let mut h: Handler = parse_json_body("handler", &body)?;
                    h.advertisement = h.advertisement.parse::<Advertisement>()?.to_string();
                    h.uri = Some(format!("{}/handlers/{id}", sh.tg_uri(tg)));
                    {
                        let mut map = lock(&sh.handlers);
                        let e = map
                            .get_mut(*id)
                            .filter(|e| owned(e))
                            .ok_or(Rerr::NotFound)?;
                        e.handler = h.clone();
                    }
                    respond_json(stream, 200, &[], &h).await;
                }
                M::DELETE => {
                    let removed = {
                        let mut map = lock(&sh.handlers);
                        if map.get(*id).is_some_and(owned) {
                            map.remove(*id)
                        } else {
                            None
                        }
                    };
                    removed.ok_or(Rerr::NotFound)?;
                    respond(stream, 204, None, &[], vec![]).await;
                }
                _ => {
                    return Err(Rerr::MethodNotAllowed {
                        allow: "GET, PUT, DELETE",
                    });
                }
            }
        }
        (&M::POST, ["providertgs", tg, "certs"]) => {
            let body = read_body(stream, limits::CSR_BODY, "csr").await?;
            let e = sh.tg_for(tenant, tg)?;
            let issued =
                e.ca.issue(
                    &body,
                    |n| e.cfg.vouch.matches(n),
                    std::time::SystemTime::now(),
                )
                .map_err(Rerr::from)?;
            let loc = format!("{}/certs/{}", sh.tg_uri(tg), issued.id);
            lock(&sh.certs).insert(issued.id.clone(), ((*tg).to_owned(), issued.pem.clone()));
            respond(
                stream,
                200,
                Some("application/pem-certificate-chain"),
                &[("location", loc)],
                issued.pem.into_bytes(),
            )
            .await;
        }
        (&M::POST, ["customertgs"]) => {
            let body = read_body(stream, limits::JSON_BODY, "customer tg").await?;
            let mut c: CustomerTg = parse_json_body("customer tg", &body)?;
            validate_customer_tg(&c)?;
            let id = uuid::Uuid::new_v4().to_string();
            let uri = sh.customertg_uri(&id);
            c.uri = Some(uri.clone());
            lock(&sh.customertgs).insert(id.clone(), (tenant.to_owned(), c.clone()));
            sh.app.customer_tg_changed(tenant, &id, Some(&c));
            respond_json(stream, 201, &[("location", uri)], &c).await;
        }
        (m, ["customertgs", id]) => match *m {
            M::GET => {
                let c = lock(&sh.customertgs)
                    .get(*id)
                    .filter(|(t, _)| t == tenant)
                    .map(|(_, c)| c.clone());
                respond_json(stream, 200, &[], &c.ok_or(Rerr::NotFound)?).await;
            }
            M::PUT => {
                if lock(&sh.customertgs)
                    .get(*id)
                    .is_none_or(|(t, _)| t != tenant)
                {
                    return Err(Rerr::NotFound);
                }
                let body = read_body(stream, limits::JSON_BODY, "customer tg").await?;
                let mut c: CustomerTg = parse_json_body("customer tg", &body)?;
                validate_customer_tg(&c)?;
                c.uri = Some(sh.customertg_uri(id));
                {
                    let mut map = lock(&sh.customertgs);
                    let slot = map
                        .get_mut(*id)
                        .filter(|(t, _)| t == tenant)
                        .ok_or(Rerr::NotFound)?;
                    slot.1 = c.clone();
                }
                sh.app.customer_tg_changed(tenant, id, Some(&c));
                respond_json(stream, 200, &[], &c).await;
            }
            M::DELETE => {
                let removed = {
                    let mut map = lock(&sh.customertgs);
                    if map.get(*id).is_some_and(|(t, _)| t == tenant) {
                        map.remove(*id)
                    } else {
                        None
                    }
                };
                removed.ok_or(Rerr::NotFound)?;
                sh.app.customer_tg_changed(tenant, id, None);
                respond(stream, 204, None, &[], vec![]).await;
            }
            _ => {
                return Err(Rerr::MethodNotAllowed {
                    allow: "GET, PUT, DELETE",
                });
            }
        },
        (&M::POST, ["providertgs", tg, "calls"]) => create_call(sh, tenant, tg, stream).await?,
        (m, ["providertgs", tg, "calls", call]) => {
            let tx = sh.call_tx(tenant, tg, call)?;
            match *m {
                M::GET => {
                    let (otx, orx) = oneshot::channel();
                    tx.send(Cmd::Describe(otx))
                        .await
                        .map_err(|_| Rerr::NotFound)?;
                    let d = orx.await.map_err(|_| Rerr::NotFound)?;
                    respond_json(stream, 200, &[], &d).await;
                }
                M::POST => {
                    let body = read_body(stream, limits::JSON_BODY, "call update").await?;
                    let upd: CallUpdate = if body.iter().all(u8::is_ascii_whitespace) {
                        CallUpdate::default()
                    } else {
                        parse_json_body("call update", &body)?
                    };
                    let (otx, orx) = oneshot::channel();
                    tx.send(Cmd::Update(upd.handler, otx))
                        .await
                        .map_err(|_| Rerr::NotFound)?;
                    let d = orx.await.map_err(|_| Rerr::NotFound)??;
                    respond_json(stream, 200, &[], &d).await;
                }

                _ => return Err(Rerr::MethodNotAllowed { allow: "GET, POST" }),
            }
        }
        (&M::GET, ["providertgs", tg, "calls", call, "events"]) => {
            let tx = sh.call_tx(tenant, tg, call)?;
            reverse_events(tx, &ctx.conn, stream).await?;
        }
        (&M::PUT, ["providertgs", tg, "calls", call, "events"]) => {
            let tx = sh.call_tx(tenant, tg, call)?;
            forward_events(tx, stream).await?;
        }
        (&M::PUT, ["providertgs", tg, "calls", call, "media"]) => {
            let tx = sh.call_tx(tenant, tg, call)?;
            let body = read_body(stream, limits::MEDIA_PUT, "media").await?;
            if body.is_empty() {
                return Err(Rerr::Chunk(ript_proto::ChunkError::Empty));
            }
            let (otx, orx) = oneshot::channel();
            tx.send(Cmd::MediaPut(body, otx))
                .await
                .map_err(|_| Rerr::NotFound)?;
            let r = orx.await.map_err(|_| Rerr::NotFound)??;
            if let Some(e) = r.invalid {
                return Err(Rerr::Chunk(e));
            }
            if r.media == 0 && r.acks.is_empty() {
                debug!("ack-only media put");
            }
            respond(stream, 200, Some("application/octet-stream"), &[], r.acks).await;
        }
        (&M::GET, ["providertgs", tg, "calls", call, "media"]) => {
            let tx = sh.call_tx(tenant, tg, call)?;
            let id = sh
                .next_get
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (otx, orx) = oneshot::channel();
            tx.send(Cmd::MediaGet(id, otx))
                .await
                .map_err(|_| Rerr::NotFound)?;
            let answer = tokio::select! {
                a = orx => a,
                _ = ctx.conn.closed() => {
                    // A dead pending GET must not be handed media (it would be lost).
                    let _ = tx.send(Cmd::MediaGetGone(id)).await;
                    return Ok(());
                }
            };
            match answer {
                Ok(GetAnswer::Body(b)) => {
                    respond(stream, 200, Some("application/octet-stream"), &[], b).await
                }
                Ok(GetAnswer::NoContent) => respond(stream, 204, None, &[], vec![]).await,
                Ok(GetAnswer::NotFound) | Err(_) => return Err(Rerr::NotFound),
            }
        }
        (&M::CONNECT, ["providertgs", tg, "calls", call, "media"]) => {
            let tx = sh.call_tx(tenant, tg, call)?;
            datagram_session(tx, ctx, req, stream).await?;
        }
        (_, ["providertgs"] | ["providertgs", _]) => {
            return Err(Rerr::MethodNotAllowed { allow: "GET" });
        }
        (_, ["customertgs"]) => return Err(Rerr::MethodNotAllowed { allow: "POST" }),
        (_, ["providertgs", _, "calls", _, "events"]) => {
            return Err(Rerr::MethodNotAllowed { allow: "GET, PUT" });
        }
        (_, ["providertgs", _, "calls", _, "media"]) => {
            return Err(Rerr::MethodNotAllowed {
                allow: "GET, PUT, CONNECT",
            });
        }
        (_, ["providertgs", _, "handlers" | "certs" | "calls"]) => {
            return Err(Rerr::MethodNotAllowed { allow: "POST" });
        }
        _ => return Err(Rerr::NotFound),
    }
    Ok(())
}

fn validate_customer_tg(c: &CustomerTg) -> Result<(), Rerr> {
    if !c.tg.starts_with("https://") {
        return Err(Rerr::Invalid {
            what: "tg",
            reason: "not an https url",
        });
    }
    if c.token.is_empty() {
        return Err(Rerr::Invalid {
            what: "token",
            reason: "empty",
        });
    }
    Ok(())
}

/// The advertisement of a handler URI registered on `tg` by `tenant`; anything else is
/// ript-profile §2's `500 unknown-handler`.
fn lookup_handler(sh: &Shared, tenant: &str, tg: &str, uri: &str) -> Result<Advertisement, Rerr> {
    let prefix = format!("{}/handlers/", sh.tg_uri(tg));
    let id = uri.strip_prefix(&prefix).ok_or(Rerr::UnknownHandler)?;
    let map = lock(&sh.handlers);
    let e = map
        .get(id)
        .filter(|e| e.tenant == tenant && e.tg == tg)
        .ok_or(Rerr::UnknownHandler)?;
    e.handler
        .advertisement
        .parse()
        .map_err(|_| Rerr::UnknownHandler)
}

async fn create_call(
    sh: &Arc<Shared>,
    tenant: &str,
    tg: &str,
    stream: &mut SrvStream,
) -> Result<(), Rerr> {
    let entry = sh.tg_for(tenant, tg)?;
    let body = read_body(stream, limits::JSON_BODY, "call").await?;
    let create: CallCreate = parse_json_body("call", &body)?;
    create.validate()?;
    let client_adv = lookup_handler(sh, tenant, tg, &create.handler)?;
    if !entry.cfg.destinations.matches(&create.destination) {
        return Err(Rerr::DestinationNotAllowed);
    }
    let claims = match &create.passport {
        Some(jws) => Some(verify_passport(sh, &entry, jws, &create.destination)?),
        None if entry.cfg.require_passport => {
            return Err(Rerr::Passport(ript_proto::PassportError::Format));
        }
        None => None,
    };
    sh.app.admit_call(tenant, &entry.cfg, &create)?;
    let n = negotiate(&client_adv, &entry.cfg.advertisement);
    let id = uuid::Uuid::new_v4().to_string();
    let uri = format!("{}/calls/{id}", sh.tg_uri(tg));
    let description = CallDescription {
        uri: uri.clone(),
        handler: create.handler.clone(),
        direction: CallDirection::Outbound,
        from: claims
            .as_ref()
            .map_or_else(|| "anonymous".to_owned(), |c| c.from_e164()),
        to: create.destination.clone(),
        state: "proceeding".into(),
        client_directives: n.client.to_string(),
        server_directives: n.server.to_string(),
        reason: None,
    };
    let (tx, rx) = mpsc::channel(1024);
    let (ev_tx, ev_rx) = mpsc::channel(4096);
    let incoming = IncomingCall {
        description: description.clone(),
        tenant: tenant.to_owned(),
        tg: tg.to_owned(),
        passport_jws: claims.as_ref().and(create.passport.clone()),
        passport: claims,
        control: CallControl { tx: tx.clone() },
        events: ev_rx,
    };
    if sh.incoming.try_send(incoming).is_err() {
        return Err(Rerr::Overloaded);
    }
    lock(&sh.calls).insert(
        id.clone(),
        CallEntry {
            tenant: tenant.to_owned(),
            tg: tg.to_owned(),
            tx,
        },
    );
    let task = CallTask {
        call: ServerCall::with_byway_timeout(now(), uri.clone(), sh.no_byway_timeout),
        description: description.clone(),
        server_adv: entry.cfg.advertisement.clone(),
        sh: sh.clone(),
        tenant: tenant.to_owned(),
        tg: tg.to_owned(),
        id: id.clone(),
        reverse: Vec::new(),
        forward_end: watch::channel(false).0,
        gets: HashMap::new(),
        downlink: Downlink::default(),
        media: MediaEndpoint::new(MediaDirection::S2c, sh.media_key),
        datagrams: None,
        events: ev_tx,
        media_handler: None,
    };
    let span = info_span!("ript_call", call = %id, role = "server");
    tokio::spawn(task.run(rx).instrument(span));
    info!(call = %id, tg, "call created");
    respond_json(stream, 201, &[("location", uri)], &description).await;
    Ok(())
}

fn verify_passport(
    sh: &Shared,
    tg: &TgEntry,
    jws: &str,
    destination: &str,
) -> Result<ript_proto::passport::Claims, Rerr> {
    let x5u = ript_proto::passport::x5u(jws)?;
    let own = x5u
        .rsplit_once("/certs/")
        .and_then(|(_, id)| lock(&sh.certs).get(id).map(|(_, pem)| pem.clone()));
    let chain: Vec<Vec<u8>> = match own {
        Some(pem) => rustls_pemfile::certs(&mut pem.as_bytes())
            .filter_map(Result::ok)
            .map(|c| c.to_vec())
            .collect(),
        None => sh
            .app
            .passport_chain(&x5u)
            .ok_or(ript_proto::PassportError::Untrusted)?,
    };
    let mut anchors = tg.cfg.trust_anchors.clone();
    anchors.push(tg.ca.cert_der().to_vec());
    let now_s = wall_ms() / 1000;
    let claims = ript_proto::passport::verify(jws, &chain, &anchors, now_s)?;
    if !claims.covers_destination(destination) {
        return Err(ript_proto::PassportError::DestinationMismatch.into());
    }
    Ok(claims)
}

async fn reverse_events(
    tx: mpsc::Sender<Cmd>,
    conn: &quinn::Connection,
    stream: &mut SrvStream,
) -> Result<(), Rerr> {
    let (btx, mut brx) = mpsc::channel::<Bytes>(256);
    let (otx, orx) = oneshot::channel();
    tx.send(Cmd::OpenReverse(btx, otx))
        .await
        .map_err(|_| Rerr::NotFound)?;
    orx.await.map_err(|_| Rerr::NotFound)??;
    let resp = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(());
    let ok = match resp {
        Ok(r) => send_head(stream, r).await.is_ok(),
        Err(_) => false,
    };
    if ok {
        let mut alive = true;
        loop {
            // A client that vanished without closing sends nothing: the connection's idle
            // timeout ends it, and with it this byway, so the 30 s timer can run.
            let next = tokio::select! {
                b = brx.recv() => b,
                _ = conn.closed() => {
                    alive = false;
                    break;
                }
            };
            let Some(b) = next else { break };
            if stream.send_data(b).await.is_err() {
                alive = false;
                break;
            }
        }
        if alive {
            let _ = stream.send_data(Bytes::from_static(b"]")).await;
            let _ = stream.finish().await;
        }
    }
    let _ = tx.send(Cmd::BywayClosed).await;
    Ok(())
}

async fn forward_events(tx: mpsc::Sender<Cmd>, stream: &mut SrvStream) -> Result<(), Rerr> {
    let (otx, orx) = oneshot::channel();
    tx.send(Cmd::OpenForward(otx))
        .await
        .map_err(|_| Rerr::NotFound)?;
    let mut ended = orx.await.map_err(|_| Rerr::NotFound)??;
    let resp = Response::builder().status(StatusCode::OK).body(());
    if let Ok(r) = resp
        && send_head(stream, r).await.is_ok()
    {
        let mut dec = EventDecoder::new();
        loop {
            tokio::select! {
                r = stream.recv_data() => match r {
                    Ok(Some(mut chunk)) => {
                        let bytes = chunk.copy_to_bytes(chunk.remaining());
                        match dec.feed(&bytes) {
                            Ok(events) => {
                                for ev in events {
                                    if tx.send(Cmd::ClientEvent(Box::new(ev))).await.is_err() {
                                        break;
                                    }
                                }
                            }
                            Err(e) => {
                                // ript-profile §9: a malformed object resets that byway only.
                                info!(error = %e, "forward event byway reset");
                                // h3-quinn 0.0.10 panics on stop_sending while its read future
                                // holds the stream; resetting our half and dropping the
                                // stream (quinn then sends STOP_SENDING) resets the byway.
                                stream.stop_stream(Code::H3_REQUEST_CANCELLED);
                                break;
                            }
                        }
                    }
                    Ok(None) => {
                        if let Err(e) = dec.finish() {
                            info!(error = %e, "forward event byway ended inside an object");
                        }
                        let _ = stream.finish().await;
                        break;
                    }
                    Err(_) => break,
                },
                _ = ended.changed() => {
                    let _ = stream.finish().await;
                    break;
                }
            }
        }
    }
    let _ = tx.send(Cmd::BywayClosed).await;
    Ok(())
}

async fn datagram_session(
    tx: mpsc::Sender<Cmd>,
    ctx: &ConnCtx,
    req: &http::Request<()>,
    stream: &mut SrvStream,
) -> Result<(), Rerr> {
    use h3::ConnectionState;
    if req.extensions().get::<h3::ext::Protocol>() != Some(&h3::ext::Protocol::WEB_TRANSPORT) {
        return Err(Rerr::Invalid {
            what: "connect",
            reason: ":protocol must be webtransport",
        });
    }
    // ript-profile §9: 400 when the client did not advertise SETTINGS_H3_DATAGRAM.
    if !stream.settings().enable_datagram() {
        return Err(Rerr::Invalid {
            what: "connect",
            reason: "client did not enable h3 datagrams",
        });
    }
    let sid = stream.id().into_inner();
    let (otx, orx) = oneshot::channel();
    let conn_id = ctx.conn.stable_id();
    let dtx = DatagramTx {
        out: ctx.dg_out.clone(),
        stream_id: sid,
        conn_id,
    };
    tx.send(Cmd::DatagramOpen(dtx, otx))
        .await
        .map_err(|_| Rerr::NotFound)?;
    orx.await.map_err(|_| Rerr::NotFound)??;
    lock(&ctx.demux).insert(sid, tx.clone());
    if let Ok(r) = Response::builder().status(200).body(())
        && send_head(stream, r).await.is_ok()
    {
        // The session lasts as long as the CONNECT stream.
        while let Ok(Some(_)) = stream.recv_data().await {}
        let _ = stream.finish().await;
    }
    lock(&ctx.demux).remove(&sid);
    let _ = tx
        .send(Cmd::DatagramClosed {
            stream_id: sid,
            conn_id,
        })
        .await;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The call task

struct CallTask {
    call: ServerCall,
    description: CallDescription,
    server_adv: Advertisement,
    sh: Arc<Shared>,
    tenant: String,
    tg: String,
    id: String,
    reverse: Vec<(mpsc::Sender<Bytes>, EventEncoder)>,
    forward_end: watch::Sender<bool>,
    gets: HashMap<GetId, oneshot::Sender<GetAnswer>>,
    downlink: Downlink,
    media: MediaEndpoint,
    datagrams: Option<DatagramTx>,
    events: mpsc::Sender<CallEvent>,
    media_handler: Option<crate::MediaHandler>,
}

impl CallTask {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        loop {
            let deadline = self
                .call
                .poll_timeout()
                .map(|(d, _)| tokio::time::Instant::from_std(d));
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(c) => self.handle(c),
                    None => break,
                },
                _ = sleep_until_opt(deadline) => self.call.handle_timeout(now(), wall_ms()),
            }
            if self.drain() {
                break;
            }
        }
        lock(&self.sh.calls).remove(&self.id);
        debug!("call forgotten");
    }

    fn describe(&self) -> CallDescription {
        let mut d = self.description.clone();
        d.state = self.call.state().name().to_owned();
        d.reason = self
            .call
            .is_ended()
            .then(|| self.call.reason().cloned().unwrap_or_default());
        d
    }

    fn handle(&mut self, cmd: Cmd) {
        let t = now();
        match cmd {
            Cmd::Describe(r) => {
                let _ = r.send(self.describe());
            }
            Cmd::Update(handler, r) => {
                if self.call.is_ended() {
                    let _ = r.send(Err(Rerr::CallEnded));
                    return;
                }
                let res = (|| {
                    if let Some(h) = handler {
                        let adv = lookup_handler(&self.sh, &self.tenant, &self.tg, &h)?;
                        self.description.handler = h;
                        let n = negotiate(&adv, &self.server_adv);
                        self.description.client_directives = n.client.to_string();
                        self.description.server_directives = n.server.to_string();
                    }
                    Ok(self.describe())
                })();
                let _ = r.send(res);
            }
            Cmd::OpenReverse(tx, r) => match self.call.handle_byway_opened(t) {
                Ok(()) => {
                    // A new signaling byway may be a migrated client or a new instance of it:
                    // back to full seq/timestamps until acknowledged (ript-profile §6).
                    self.media.reset_path();
                    let mut enc = EventEncoder::default();
                    let first = enc.encode(&self.call.current_state_event(wall_ms()));
                    let _ = tx.try_send(Bytes::from(first));
                    self.reverse.push((tx, enc));
                    let _ = r.send(Ok(()));
                }
                Err(e) => {
                    let _ = r.send(Err(e));
                }
            },
            Cmd::OpenForward(r) => {
                let res = self
                    .call
                    .handle_byway_opened(t)
                    .map(|()| self.forward_end.subscribe());
                let _ = r.send(res);
            }
            Cmd::BywayClosed => self.call.handle_byway_closed(t),
            Cmd::ClientEvent(ev) => {
                if !self.call.handle_client_event(t, wall_ms(), &ev) {
                    debug!(event = %ev.event, "client event ignored");
                }
            }
            Cmd::MediaPut(body, r) => {
                if self.call.is_ended() {
                    let _ = r.send(Err(Rerr::CallEnded));
                    return;
                }
                let got = self.media.receive(t, wall_ms(), &body);
                let media = got.media.len();
                self.deliver(got.media);
                // ript-profile §9: with an invalid chunk the answer is 400 and the valid
                // chunks' acks ride on the next answer.
                let acks = if got.invalid == 0 {
                    self.media.take_acks()
                } else {
                    vec![]
                };
                let invalid = (got.invalid > 0)
                    .then(|| got.first_error.unwrap_or(ript_proto::ChunkError::Empty));
                let _ = r.send(Ok(PutResult {
                    acks,
                    media,
                    invalid,
                }));
            }
            Cmd::MediaGet(id, r) => {
                if self.call.is_ended() {
                    let _ = r.send(GetAnswer::NotFound);
                    return;
                }
                self.gets.insert(id, r);
                self.downlink.handle_get(t, id);
            }
            Cmd::DatagramOpen(d, r) => {
                if self.call.is_ended() {
                    let _ = r.send(Err(Rerr::CallEnded));
                    return;
                }
                self.datagrams = Some(d);
                self.media.reset_path();
                // ript-profile §6: what was buffered while no path was open goes out now.
                for f in self.downlink.set_datagrams(t, true) {
                    self.send_datagram(&f);
                }
                let _ = r.send(Ok(()));
            }
            Cmd::DatagramClosed { stream_id, conn_id } => {
                let current = self
                    .datagrams
                    .as_ref()
                    .is_some_and(|d| d.stream_id == stream_id && d.conn_id == conn_id);
                if current {
                    self.datagrams = None;
                    let _ = self.downlink.set_datagrams(t, false);
                    self.media.reset_path();
                }
            }
            Cmd::MediaGetGone(id) => {
                self.gets.remove(&id);
                self.downlink.handle_get_gone(id);
            }
            Cmd::DatagramIn(payload) => {
                let got = self.media.receive(t, wall_ms(), &payload);
                self.deliver(got.media);
                let acks = self.media.take_acks();
                if !acks.is_empty() {
                    self.send_datagram(&acks);
                }
            }
            Cmd::App(c, r) => {
                let _ = r.send(self.call.handle_command(t, wall_ms(), c));
            }
            Cmd::SendMedia(m) => {
                if self.call.is_ended() {
                    return;
                }
                let frame = self.media.encode(t, m);
                if let Some(frame) = self.downlink.handle_media(t, frame) {
                    self.send_datagram(&frame);
                }
            }
            Cmd::Stats(r) => {
                let _ = r.send(self.media.stats(self.datagrams.is_some()));
            }
            Cmd::MediaHandler(h) => self.media_handler = Some(h),
            Cmd::DropByways => self.reverse.clear(),
        }
    }

    fn send_datagram(&self, payload: &[u8]) {
        if let Some(d) = &self.datagrams
            && !d.out.send(d.stream_id, payload)
        {
            debug!("datagram not queued (connection gone or too large), media dropped");
        }
    }

    fn deliver(&mut self, media: Vec<crate::ReceivedMedia>) {
        for m in media {
            match &mut self.media_handler {
                Some(h) => h(m),
                None => {
                    let _ = self.events.try_send(CallEvent::Media(m));
                }
            }
        }
    }

    /// Carries out the machines' outputs; true when the call is to be forgotten.
    fn drain(&mut self) -> bool {
        let t = now();
        while let Some(o) = self.downlink.poll_output() {
            match o {
                DownlinkOutput::Answer(id, body) => {
                    if let Some(r) = self.gets.remove(&id) {
                        let _ = r.send(GetAnswer::Body(body));
                    }
                }
                DownlinkOutput::NoContent(id) => {
                    if let Some(r) = self.gets.remove(&id) {
                        let _ = r.send(GetAnswer::NoContent);
                    }
                }
                DownlinkOutput::Panic => {
                    let _ = self
                        .call
                        .handle_command(t, wall_ms(), ServerCommand::MediaPanic);
                }
            }
        }
        let mut forget = false;
        while let Some(o) = self.call.poll_output() {
            match o {
                ServerOutput::Broadcast(ev) => {
                    self.reverse
                        .retain_mut(|(tx, enc)| tx.try_send(Bytes::from(enc.encode(&ev))).is_ok());
                }
                ServerOutput::CloseByways => {
                    self.reverse.clear();
                    let _ = self.forward_end.send(true);
                    for id in self.downlink.drain_pending() {
                        if let Some(r) = self.gets.remove(&id) {
                            let _ = r.send(GetAnswer::NotFound);
                        }
                    }
                }
                ServerOutput::Ended { by, state, reason } => {
                    info!(?by, state = %state, "call ended");
                    // The final state must reach the application even when media filled
                    // its queue.
                    let events = self.events.clone();
                    tokio::spawn(async move {
                        let _ = events.send(CallEvent::Ended(state, reason)).await;
                    });
                }
                ServerOutput::Forget => forget = true,
            }
        }
        forget
    }
}

async fn sleep_until_opt(d: Option<tokio::time::Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
