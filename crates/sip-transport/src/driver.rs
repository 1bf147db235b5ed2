//! The endpoint: listener and connection tasks parse and frame, one driver task owns the
//! transaction layer and the connection pool.

use crate::Error;
use crate::conn::{self, Counters, Stats, StreamSettings};
use crate::listen::{Listen, Target, Transport};
use crate::observe::{self, Direction, Observer};
use sip_proto::layer::{LayerOutput, TxnId, TxnLayer};
use sip_proto::msg::{self, Headers, Message, MsgError, Request, Response};
use sip_proto::txn::{Reliability, Timer, TimerConfig};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{debug, info, warn};

/// Methods this endpoint's transaction user handles; others get 405 with this `Allow`.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, INFO, PRACK, UPDATE";

/// Responses a client transaction buffers before further ones are dropped.
const CLIENT_QUEUE: usize = 32;

#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub listen: Vec<Listen>,
    /// Largest message accepted (RFC 3261 §18.1.1's 65535 for UDP by default).
    pub max_message: usize,
    /// Messages per second per source IP, with a burst of twice that.
    pub rate_per_sec: u32,
    pub timers: TimerConfig,
    /// Certificate and key of `tls:` listeners (see [`crate::tls`]).
    pub tls_server: Option<Arc<rustls::ServerConfig>>,
    /// Trust for outgoing TLS connections; without it TLS targets are refused.
    pub tls_client: Option<Arc<rustls::ClientConfig>>,
    /// A TCP/TLS connection we opened is closed after this long without traffic. Inbound
    /// connections are left to the peer (bounded by `max_inbound_connections`).
    pub idle_timeout: Duration,
    /// Inbound TCP and TLS connections open at once; further ones are closed on accept.
    pub max_inbound_connections: usize,
    /// Bound on an outgoing connect, and on a TLS handshake in either direction.
    pub connect_timeout: Duration,
    /// Told about every message in and out (see [`Observer`]); none by default.
    pub observer: Option<Arc<dyn Observer>>,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            listen: vec![],
            max_message: 65535,
            rate_per_sec: 200,
            timers: TimerConfig::default(),
            tls_server: None,
            tls_client: None,
            idle_timeout: Duration::from_secs(300),
            max_inbound_connections: 1024,
            connect_timeout: Duration::from_secs(10),
            observer: None,
        }
    }
}

/// Where bytes go: a UDP socket, or the write queue of one TCP/TLS connection.
#[derive(Debug, Clone)]
pub(crate) enum Conn {
    Udp(Arc<UdpSocket>),
    Stream { id: u64, tx: mpsc::Sender<Vec<u8>> },
}

impl Conn {
    fn stream_id(&self) -> Option<u64> {
        match self {
            Conn::Stream { id, .. } => Some(*id),
            Conn::Udp(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Dest {
    conn: Conn,
    addr: SocketAddr,
    transport: Transport,
}

pub(crate) enum Cmd {
    Inbound {
        msg: Message,
        source: SocketAddr,
        conn: Conn,
        transport: Transport,
    },
    Malformed {
        err: MsgError,
        bytes: Vec<u8>,
        source: SocketAddr,
        conn: Conn,
        transport: Transport,
    },
    Respond {
        txn: TxnId,
        resp: Response,
    },
    Request {
        req: Request,
        target: Target,
        responses: mpsc::Sender<Box<Response>>,
        reply: oneshot::Sender<Result<(TxnId, Request), Error>>,
    },
    Ack {
        ack: Request,
        target: Target,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// A connection ended (closed by either side, idle, or broken).
    ConnClosed {
        id: u64,
    },
    /// An outgoing connection could not be set up (connect or TLS handshake).
    ConnFailed {
        id: u64,
    },
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
    }
}

/// A new request for the transaction user.
#[derive(Debug)]
pub struct Incoming {
    pub txn: TxnId,
    pub request: Request,
    /// The packet's source (the address admission decisions use).
    pub source: SocketAddr,
    pub transport: Transport,
    /// For a CANCEL: the INVITE server transaction it targets.
    pub cancels: Option<TxnId>,
}

/// What the endpoint hands its transaction user.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A new request on a new server transaction; answer it with [`Handle::respond`].
    Request(Incoming),
    /// The ACK of a 2xx (RFC 3261 §13.3.1.4), for the dialog it names. `txn` is the INVITE
    /// server transaction when the ACK reused its branch (RFC 6026 Accepted state); an ACK
    /// with its own branch, as RFC 3261 §13.2.2.4 UACs send it, matches none.
    Ack {
        ack: Request,
        txn: Option<TxnId>,
        source: SocketAddr,
        transport: Transport,
    },
    /// A response no running client transaction takes: chiefly 2xx retransmissions
    /// (RFC 3261 §13.2.2.4), which the UAC answers with another ACK. `txn` is the client
    /// transaction it belonged to when that is still known.
    StrayResponse {
        response: Response,
        txn: Option<TxnId>,
        source: SocketAddr,
        transport: Transport,
    },
    /// Timer H (RFC 3261 §17.2.1): a final non-2xx response of this INVITE server
    /// transaction was never acknowledged, or the transport failed sending it; or the
    /// transaction's guard (`TimerConfig::invite_server_guard`): the TU never answered it.
    ServerTimeout { txn: TxnId },
}

/// Sends responses on server transactions, requests on new client transactions and ACKs;
/// cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::Sender<Cmd>,
    counters: Arc<Counters>,
}

/// The name this type had when the endpoint only served requests.
pub type Responder = Handle;

impl Handle {
    /// The endpoint's connection counters.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    pub async fn respond(&self, txn: TxnId, resp: Response) -> Result<(), Error> {
        self.tx
            .send(Cmd::Respond { txn, resp })
            .await
            .map_err(|_| Error::Closed)
    }

    /// Starts a client transaction sending `req` to `target`.
    ///
    /// Without a Via, the endpoint adds `SIP/2.0/{UDP|TCP|TLS} {sent-by};branch=…;rport`
    /// (plus `alias` on TCP/TLS, RFC 5923) where sent-by is the address of our listener of
    /// that transport; Max-Forwards 70 when missing; Content-Length always. A CANCEL copies
    /// the INVITE's Via from [`ClientTxn::request`] (RFC 3261 §9.1).
    pub async fn request(&self, req: Request, target: Target) -> Result<ClientTxn, Error> {
        let (responses, rx) = mpsc::channel(CLIENT_QUEUE);
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Cmd::Request {
                req,
                target,
                responses,
                reply,
            })
            .await
            .map_err(|_| Error::Closed)?;
        let (id, request) = answer.await.map_err(|_| Error::Closed)??;
        Ok(ClientTxn { id, request, rx })
    }

    /// Sends the ACK of a 2xx (RFC 3261 §13.2.2.4): no transaction, a Via with a fresh
    /// branch added when it has none.
    pub async fn send_ack(&self, ack: Request, target: Target) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Cmd::Ack { ack, target, reply })
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }
}

/// One client transaction: yields every response, and ends after the final one. Timer B/F
/// yields a synthetic 408 and a transport failure (connect, TLS handshake, a lost
/// connection) a synthetic 503 (RFC 3261 §8.1.3.1). Responses after the final one (2xx
/// retransmissions) arrive as [`Event::StrayResponse`].
#[derive(Debug)]
pub struct ClientTxn {
    id: TxnId,
    request: Request,
    /// Boxed: a channel allocates its slots 32 at a time when it is created.
    rx: mpsc::Receiver<Box<Response>>,
}

impl ClientTxn {
    pub fn id(&self) -> TxnId {
        self.id
    }

    /// The request as sent (with the Via the endpoint added).
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The next response; `None` after the final one.
    pub async fn next(&mut self) -> Option<Response> {
        self.rx.recv().await.map(|r| *r)
    }
}

#[derive(Debug)]
pub struct Endpoint {
    events: mpsc::Receiver<Event>,
    handle: Handle,
    local: Vec<Listen>,
}

impl Endpoint {
    /// Binds every listener and starts the driver.
    pub async fn bind(cfg: EndpointConfig) -> Result<Endpoint, Error> {
        let (cmd_tx, cmd_rx) = mpsc::channel::<Cmd>(8192);
        let (ev_tx, events) = mpsc::channel(4096);
        let counters = Arc::new(Counters::default());
        let permits = Arc::new(Semaphore::new(
            cfg.max_inbound_connections.min(Semaphore::MAX_PERMITS),
        ));
        let streams = StreamSettings {
            cmd: cmd_tx.clone(),
            max_message: cfg.max_message,
            idle: cfg.idle_timeout,
            setup_timeout: cfg.connect_timeout,
            counters: counters.clone(),
        };
        // Bind everything before spawning anything: a failure leaves no listener running.
        let mut local = Vec::new();
        let mut udp = Vec::new();
        let mut streams_bound = Vec::new();
        for l in &cfg.listen {
            match l.transport {
                Transport::Udp => {
                    let sock = Arc::new(udp_socket(l.addr)?);
                    let addr = sock.local_addr()?;
                    local.push(Listen {
                        transport: Transport::Udp,
                        addr,
                    });
                    udp.push((addr, sock));
                }
                Transport::Tcp | Transport::Tls => {
                    let acceptor = match (l.transport, &cfg.tls_server) {
                        (Transport::Tls, Some(sc)) => {
                            Some(tokio_rustls::TlsAcceptor::from(sc.clone()))
                        }
                        (Transport::Tls, None) => {
                            return Err(Error::Misuse(
                                "a tls listener needs EndpointConfig::tls_server",
                            ));
                        }
                        _ => None,
                    };
                    let lst = TcpListener::bind(l.addr).await?;
                    local.push(Listen {
                        transport: l.transport,
                        addr: lst.local_addr()?,
                    });
                    streams_bound.push((lst, l.transport, acceptor));
                }
            }
        }
        for (_, sock) in &udp {
            tokio::spawn(udp_loop(sock.clone(), cmd_tx.clone(), cfg.max_message));
        }
        for (lst, transport, acceptor) in streams_bound {
            tokio::spawn(conn::accept_loop(
                lst,
                transport,
                acceptor,
                permits.clone(),
                streams.clone(),
            ));
        }
        let driver = Driver {
            layer: TxnLayer::new(cfg.timers),
            dests: HashMap::new(),
            events: ev_tx,
            rate: RateLimit::new(cfg.rate_per_sec),
            tags: Tags::default(),
            pending_dest: None,
            current: None,
            clients: HashMap::new(),
            pool: HashMap::new(),
            udp,
            local: local.clone(),
            tls_client: cfg.tls_client.map(tokio_rustls::TlsConnector::from),
            stream_template: StreamTemplate {
                cmd: cmd_tx.downgrade(),
                max_message: streams.max_message,
                idle: streams.idle,
                setup_timeout: streams.setup_timeout,
                counters: streams.counters.clone(),
            },
            observer: cfg.observer,
        };
        tokio::spawn(driver.run(cmd_rx));
        Ok(Endpoint {
            events,
            handle: Handle {
                tx: cmd_tx,
                counters,
            },
            local,
        })
    }

    /// The bound addresses (ephemeral ports resolved).
    pub fn local(&self) -> &[Listen] {
        &self.local
    }

    /// The first bound address of `transport`.
    pub fn local_addr(&self, transport: Transport) -> Option<SocketAddr> {
        self.local
            .iter()
            .find(|l| l.transport == transport)
            .map(|l| l.addr)
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    pub fn responder(&self) -> Responder {
        self.handle.clone()
    }

    /// Connection counters.
    pub fn stats(&self) -> Stats {
        self.handle.stats()
    }

    /// The next event for the transaction user.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The next new request; other events are dropped (for a pure server).
    pub async fn next_request(&mut self) -> Option<Incoming> {
        loop {
            match self.events.recv().await? {
                Event::Request(inc) => return Some(inc),
                other => debug!(event = ?other, "event without a consumer dropped"),
            }
        }
    }
}

fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(4 << 20);
    if addr.is_ipv6() {
        let _ = s.set_only_v6(true);
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// Where `udp_loop` reads datagrams from: the socket, or a script in tests.
trait RecvFrom: Send + Sync {
    fn recv_from<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> impl std::future::Future<Output = std::io::Result<(usize, SocketAddr)>> + Send + 'a;
}

impl RecvFrom for UdpSocket {
    fn recv_from<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> impl std::future::Future<Output = std::io::Result<(usize, SocketAddr)>> + Send + 'a {
        UdpSocket::recv_from(self, buf)
    }
}

/// Longest pause after repeated receive errors.
const UDP_ERROR_BACKOFF_MAX: Duration = Duration::from_secs(1);

async fn udp_loop(sock: Arc<UdpSocket>, tx: mpsc::Sender<Cmd>, max: usize) {
    udp_loop_from(&*sock.clone(), sock, tx, max).await;
}

async fn udp_loop_from(
    src: &impl RecvFrom,
    sock: Arc<UdpSocket>,
    tx: mpsc::Sender<Cmd>,
    max: usize,
) {
    let mut buf = vec![0u8; 65536];
    let mut backoff = Duration::ZERO;
    loop {
        if tx.is_closed() {
            return;
        }
        let (n, source) = match src.recv_from(&mut buf).await {
            Ok(x) => {
                backoff = Duration::ZERO;
                x
            }
            // ICMP errors from earlier sends surface here; they are not fatal.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            // Any other error (ENOMEM, ENOBUFS, a transient EINTR...) must not stop UDP
            // signalling for good: log and go on, pausing a little more each time the
            // error repeats so a persistent one does not spin the task.
            Err(e) => {
                warn!(error = %e, backoff = ?backoff, "udp receive failed");
                if !backoff.is_zero() {
                    tokio::time::sleep(backoff).await;
                }
                backoff = (backoff * 2)
                    .max(Duration::from_millis(10))
                    .min(UDP_ERROR_BACKOFF_MAX);
                continue;
            }
        };
        let bytes = buf.get(..n).unwrap_or_default();
        // RFC 5626 keep-alives (CRLF) carry nothing to answer on UDP.
        if bytes.iter().all(|b| *b == b'\r' || *b == b'\n') {
            continue;
        }
        let conn = Conn::Udp(sock.clone());
        let cmd = match msg::parse_datagram(bytes, max) {
            Ok((msg, _)) => Cmd::Inbound {
                msg,
                source,
                conn,
                transport: Transport::Udp,
            },
            Err(err) => Cmd::Malformed {
                err,
                bytes: bytes.to_vec(),
                source,
                conn,
                transport: Transport::Udp,
            },
        };
        if tx.try_send(cmd).is_err() {
            debug!(%source, "driver overloaded, datagram dropped");
        }
    }
}

/// Source IPs tracked before the map is pruned.
const RATE_PRUNE_AT: usize = 10_000;
/// Source IPs tracked at most; beyond, unknown sources are refused until a prune makes room,
/// so a flood of spoofed UDP sources cannot grow the map without bound.
const RATE_MAX_SOURCES: usize = 100_000;

/// Token bucket per source IP, with a burst of two seconds' worth.
struct RateLimit {
    per_sec: f64,
    buckets: HashMap<IpAddr, (f64, Instant)>,
    max_sources: usize,
    /// A prune is O(n): at most one a second, not one per packet on the driver task.
    last_prune: Option<Instant>,
}

impl RateLimit {
    fn new(per_sec: u32) -> Self {
        Self::with_cap(per_sec, RATE_MAX_SOURCES)
    }

    fn with_cap(per_sec: u32, max_sources: usize) -> Self {
        RateLimit {
            per_sec: f64::from(per_sec.max(1)),
            buckets: HashMap::new(),
            max_sources,
            last_prune: None,
        }
    }

    /// Forgets sources whose bucket has refilled: a full bucket is the same as a new one,
    /// so this loses nothing. Refill takes burst / per_sec = 2 s.
    fn prune(&mut self, now: Instant) {
        if self
            .last_prune
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_prune = Some(now);
        self.buckets
            .retain(|_, (_, t)| now.saturating_duration_since(*t) < Duration::from_secs(2));
    }

    fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.buckets.len() >= RATE_PRUNE_AT.min(self.max_sources) {
            self.prune(now);
        }
        if self.buckets.len() >= self.max_sources && !self.buckets.contains_key(&ip) {
            return false;
        }
        let burst = 2.0 * self.per_sec;
        let (tokens, last) = self.buckets.entry(ip).or_insert((burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * self.per_sec)
            .min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// To-tags and branches: process-random, never repeating.
#[derive(Default)]
struct Tags {
    n: u64,
    seed: std::collections::hash_map::RandomState,
}

impl Tags {
    fn next(&mut self) -> String {
        self.n += 1;
        let mut h = self.seed.build_hasher();
        h.write_u64(self.n);
        format!("{:016x}", h.finish())
    }

    /// A Via branch with the RFC 3261 §8.1.1.7 magic cookie.
    fn branch(&mut self) -> String {
        format!("z9hG4bK{}", self.next())
    }
}

/// A client transaction as the driver tracks it.
struct Client {
    /// `None` once the final response went up.
    waiting: Option<Waiting>,
    /// The transport failed: the timeout that follows is reported as 503, not 408.
    transport_failed: bool,
}

/// What a client transaction needs until its final response: where responses go, and the
/// request a synthetic 408/503 is built from. Dropped at the final response: the transaction
/// may live on for 64×T1 (RFC 6026 Accepted, Timer D) without either.
struct Waiting {
    responses: mpsc::Sender<Box<Response>>,
    request: Request,
}

/// A pooled connection, reachable under its peer address and any RFC 5923 alias.
#[derive(Clone)]
struct Pooled {
    id: u64,
    tx: mpsc::Sender<Vec<u8>>,
}

struct Driver {
    layer: TxnLayer<Message>,
    dests: HashMap<TxnId, Dest>,
    events: mpsc::Sender<Event>,
    rate: RateLimit,
    tags: Tags,
    /// Where the request just handed to the layer came from, for the transaction it creates.
    pending_dest: Option<Dest>,
    /// Where the message just handed to the layer came from, for the events it causes.
    current: Option<(SocketAddr, Transport)>,
    clients: HashMap<TxnId, Client>,
    pool: HashMap<(Transport, SocketAddr), Pooled>,
    udp: Vec<(SocketAddr, Arc<UdpSocket>)>,
    local: Vec<Listen>,
    tls_client: Option<tokio_rustls::TlsConnector>,
    /// Settings for connections the driver opens; its sender is upgraded from a weak one so
    /// the driver does not keep its own command channel open.
    stream_template: StreamTemplate,
    observer: Option<Arc<dyn Observer>>,
}

struct StreamTemplate {
    cmd: mpsc::WeakSender<Cmd>,
    max_message: usize,
    idle: Duration,
    setup_timeout: Duration,
    counters: Arc<Counters>,
}

impl StreamTemplate {
    fn settings(&self) -> Option<StreamSettings> {
        Some(StreamSettings {
            cmd: self.cmd.upgrade()?,
            max_message: self.max_message,
            idle: self.idle,
            setup_timeout: self.setup_timeout,
            counters: self.counters.clone(),
        })
    }
}

/// RFC 3261 §18.2.1 + RFC 3581 §4: note where the request really came from in its top Via.
/// Returns the address responses go to: the packet's source IP, and the source port when the
/// client asked for rport, else the Via's sent-by port (5060 by default).
fn stamp_via(headers: &mut Headers, source: SocketAddr) -> Result<SocketAddr, MsgError> {
    let mut vias = headers.vias()?;
    let Some(top) = vias.first_mut() else {
        return Err(MsgError::MissingHeader("Via"));
    };
    let sent_by_is_source = top.sent_by_ip() == Some(source.ip());
    let wants_rport = top.rport.is_some();
    if !sent_by_is_source || wants_rport {
        top.received = Some(source.ip().to_string());
    }
    if wants_rport {
        top.rport = Some(Some(source.port()));
    }
    let port = if wants_rport {
        source.port()
    } else {
        top.sent_by_port.unwrap_or(5060)
    };
    let rendered: Vec<String> = vias.iter().map(ToString::to_string).collect();
    headers.remove("Via");
    for v in rendered.iter().rev() {
        headers.push_front("Via", v)?;
    }
    Ok(SocketAddr::new(source.ip(), port))
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        loop {
            let deadline = self.layer.poll_timeout();
            tokio::select! {
                c = rx.recv() => match c {
                    Some(c) => self.handle(c),
                    None => return,
                },
                _ = sleep_until_opt(deadline) => self.layer.handle_timeout(now()),
            }
            self.drain();
        }
    }

    /// Writes `bytes` toward `dest`; false when the transport failed (RFC 3261 §18.4).
    fn send(&mut self, dest: &Dest, bytes: Vec<u8>) -> bool {
        match &dest.conn {
            Conn::Udp(s) => match s.try_send_to(&bytes, dest.addr) {
                Ok(_) => true,
                // A full socket buffer is loss, which retransmissions cover.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
                Err(e) => {
                    debug!(to = %dest.addr, error = %e, "udp send failed");
                    false
                }
            },
            Conn::Stream { id, tx } => match tx.try_send(bytes) {
                Ok(()) => true,
                Err(e) => {
                    // Closed, or a peer that stopped reading: a stream must not lose
                    // messages silently, so both are failures.
                    debug!(to = %dest.addr, error = %e, "connection send failed");
                    if matches!(e, mpsc::error::TrySendError::Closed(_)) {
                        self.forget_conn(*id);
                    }
                    false
                }
            },
        }
    }

    fn emit(&self, ev: Event) {
        if self.events.try_send(ev).is_err() {
            warn!("transaction user overloaded: event dropped");
        }
    }

    fn forget_conn(&mut self, id: u64) {
        self.pool.retain(|_, p| p.id != id);
    }

    fn pool_insert(&mut self, key: (Transport, SocketAddr), id: u64, tx: &mpsc::Sender<Vec<u8>>) {
        match self.pool.get(&key) {
            // A live connection already serves this address: keep using it.
            Some(p) if p.id == id || !p.tx.is_closed() => {}
            _ => {
                self.pool.insert(key, Pooled { id, tx: tx.clone() });
            }
        }
    }

    /// RFC 5923 in spirit: a request whose top Via carries `alias` makes its connection
    /// reachable under the Via's sent-by, so our requests to that peer reuse it (RFC 3261
    /// §18.1.1 prefers an existing connection). Only an alias on the connection's own IP is
    /// taken, so a peer cannot capture traffic meant for another host.
    fn register_alias(&mut self, req: &Request, source: SocketAddr, transport: Transport) {
        let Some(Dest {
            conn: Conn::Stream { id, tx },
            ..
        }) = &self.pending_dest
        else {
            return;
        };
        let (id, tx) = (*id, tx.clone());
        let Ok(via) = req.headers().top_via() else {
            return;
        };
        if via.param("alias").is_none() || via.sent_by_ip() != Some(source.ip()) {
            return;
        }
        let port = via.sent_by_port.unwrap_or(transport.default_port());
        self.pool_insert((transport, SocketAddr::new(source.ip(), port)), id, &tx);
    }

    /// RFC 3261 §18.4: the TU hears a transport failure of a running client transaction as
    /// a 503; a server transaction just ends.
    fn transport_error(&mut self, t: Instant, txn: TxnId) {
        if let Some(c) = self.clients.get_mut(&txn) {
            c.transport_failed = true;
        }
        self.layer.handle_transport_error(t, txn);
    }

    /// A connection is gone: client transactions waiting for their final response on it fail.
    fn conn_gone(&mut self, t: Instant, id: u64) {
        self.forget_conn(id);
        let waiting: Vec<TxnId> = self
            .dests
            .iter()
            .filter(|(txn, d)| {
                d.conn.stream_id() == Some(id)
                    && self.clients.get(txn).is_some_and(|c| c.waiting.is_some())
            })
            .map(|(txn, _)| *txn)
            .collect();
        for txn in waiting {
            self.transport_error(t, txn);
        }
    }

    /// The address we put in Via for `target`: our listener of its transport (same address
    /// family first), so responses and retries come back where we listen (RFC 3261 §18.1.1).
    fn sent_by(&self, target: &Target) -> Result<SocketAddr, Error> {
        let of_transport = |l: &&Listen| l.transport == target.transport;
        let l = self
            .local
            .iter()
            .filter(of_transport)
            .find(|l| l.addr.is_ipv6() == target.addr.is_ipv6())
            .or_else(|| {
                // A stream can leave from any address; a UDP datagram leaves from its socket.
                if target.transport.is_stream() {
                    self.local.iter().find(of_transport)
                } else {
                    None
                }
            })
            .ok_or(Error::Misuse(
                "no listener of the target's transport and address family",
            ))?;
        let mut addr = l.addr;
        if addr.ip().is_unspecified()
            && let Some(ip) = local_ip_toward(target.addr)
        {
            addr.set_ip(ip);
        }
        Ok(addr)
    }

    /// Where bytes for `target` go: the UDP listener socket (symmetric with sent-by, so
    /// rport works through NAT), a pooled connection, or a new one being set up.
    fn dest(&mut self, target: &Target) -> Result<Dest, Error> {
        let conn = match target.transport {
            Transport::Udp => Conn::Udp(
                self.udp
                    .iter()
                    .find(|(a, _)| a.is_ipv6() == target.addr.is_ipv6())
                    .map(|(_, s)| s.clone())
                    .ok_or(Error::Misuse(
                        "no udp listener of the target's address family",
                    ))?,
            ),
            Transport::Tcp | Transport::Tls => self.stream_to(target)?,
        };
        Ok(Dest {
            conn,
            addr: target.addr,
            transport: target.transport,
        })
    }

    fn stream_to(&mut self, target: &Target) -> Result<Conn, Error> {
        let key = (target.transport, target.addr);
        if let Some(p) = self.pool.get(&key)
            && !p.tx.is_closed()
        {
            return Ok(Conn::Stream {
                id: p.id,
                tx: p.tx.clone(),
            });
        }
        let tls = match target.transport {
            Transport::Tls => {
                let connector = self
                    .tls_client
                    .clone()
                    .ok_or(Error::Misuse("tls targets need EndpointConfig::tls_client"))?;
                let name = match &target.server_name {
                    Some(n) => rustls::pki_types::ServerName::try_from(n.clone())
                        .map_err(|_| Error::Misuse("invalid tls server name"))?,
                    None => rustls::pki_types::ServerName::from(target.addr.ip()),
                };
                Some((connector, name))
            }
            Transport::Udp | Transport::Tcp => None,
        };
        let settings = self.stream_template.settings().ok_or(Error::Closed)?;
        let id = conn::next_conn_id();
        let (tx, wrx) = conn::write_queue();
        self.pool.insert(key, Pooled { id, tx: tx.clone() });
        tokio::spawn(conn::connect(
            target.addr,
            target.transport,
            tls,
            id,
            tx.clone(),
            wrx,
            settings,
        ));
        Ok(Conn::Stream { id, tx })
    }

    /// Via (when missing), Max-Forwards (when missing) and a validity check before sending.
    fn prepare(&mut self, req: &mut Request, target: &Target) -> Result<(), Error> {
        if req.headers().count("Via") == 0 {
            let sent_by = self.sent_by(target)?;
            let branch = self.tags.branch();
            // RFC 3581 rport always; RFC 5923 alias on connections so the peer reuses them.
            let alias = if target.transport.is_stream() {
                ";alias"
            } else {
                ""
            };
            let via = format!(
                "SIP/2.0/{} {sent_by};branch={branch};rport{alias}",
                target.transport.as_str()
            );
            req.headers_mut().push_front("Via", &via)?;
        }
        if !req.headers().contains("Max-Forwards") {
            req.headers_mut().push("Max-Forwards", "70")?;
        }
        req.validate()?;
        Ok(())
    }

    fn start_request(
        &mut self,
        t: Instant,
        mut req: Request,
        target: Target,
        responses: mpsc::Sender<Box<Response>>,
    ) -> Result<(TxnId, Request), Error> {
        if req.method().as_str().eq_ignore_ascii_case("ACK") {
            return Err(Error::Misuse("an ACK has no transaction: use send_ack"));
        }
        self.prepare(&mut req, &target)?;
        let dest = self.dest(&target)?;
        let rel = if target.transport.is_stream() {
            Reliability::Reliable
        } else {
            Reliability::Unreliable
        };
        let id = self
            .layer
            .send_request(t, Message::Request(req.clone()), rel)?;
        self.dests.insert(id, dest);
        self.clients.insert(
            id,
            Client {
                waiting: Some(Waiting {
                    responses,
                    request: req.clone(),
                }),
                transport_failed: false,
            },
        );
        Ok((id, req))
    }

    fn send_ack(&mut self, mut ack: Request, target: Target) -> Result<(), Error> {
        if !ack.method().as_str().eq_ignore_ascii_case("ACK") {
            return Err(Error::Misuse("send_ack sends only an ACK"));
        }
        self.prepare(&mut ack, &target)?;
        let dest = self.dest(&target)?;
        if self.send(&dest, ack.to_bytes()) {
            if let Some(o) = &self.observer {
                observe::request(o.as_ref(), Direction::Out, &ack);
            }
            Ok(())
        } else {
            Err(Error::Transport(target.addr))
        }
    }

    /// Answers outside any transaction (malformed requests, unsupported methods, overload).
    fn respond_stateless(
        &mut self,
        headers: &Headers,
        status: u16,
        reason: &str,
        dest: &Dest,
        extra: &[(&str, &str)],
    ) {
        let tag = self.tags.next();
        match Response::for_headers(headers, status, reason, &tag) {
            Ok(mut r) => {
                for (k, v) in extra {
                    let _ = r.headers_mut().push(k, v);
                }
                if self.send(dest, r.to_bytes())
                    && let Some(o) = &self.observer
                {
                    observe::response(o.as_ref(), Direction::Out, &r);
                }
            }
            Err(e) => debug!(error = %e, "cannot build a stateless response"),
        }
    }

    fn handle(&mut self, cmd: Cmd) {
        let t = now();
        match cmd {
            Cmd::Inbound {
                msg,
                source,
                conn,
                transport,
            } => self.handle_inbound(t, msg, source, conn, transport),
            Cmd::Malformed {
                err,
                bytes,
                source,
                conn,
                transport,
            } => {
                // Stateless 400s go to a source we cannot verify (UDP is spoofable): the
                // same per-source limit as for well-formed messages, or we amplify floods.
                if !self.rate.allow(source.ip(), t) {
                    debug!(%source, "rate limit: malformed message dropped");
                    return;
                }
                info!(%source, error = %err, "malformed message");
                if let Some(mut h) = msg::salvage_request(&bytes) {
                    let addr = stamp_via(&mut h, source).unwrap_or(source);
                    let addr = if transport.is_stream() { source } else { addr };
                    let dest = Dest {
                        conn,
                        addr,
                        transport,
                    };
                    self.respond_stateless(&h, err.status(), err.reason_phrase(), &dest, &[]);
                }
            }
            Cmd::Respond { txn, mut resp } => {
                if resp.status() > 100 && resp.headers().to().is_ok_and(|t| t.tag.is_none()) {
                    let tag = self.tags.next();
                    if let Ok(to) = resp.headers().to() {
                        let v = format!("{to};tag={tag}");
                        let _ = resp.headers_mut().set("To", &v);
                    }
                }
                if let Err(e) = self.layer.send_response(t, txn, Message::Response(resp)) {
                    debug!(error = %e, "response not sent");
                }
            }
            Cmd::Request {
                req,
                target,
                responses,
                reply,
            } => {
                let r = self.start_request(t, req, target, responses);
                let _ = reply.send(r);
            }
            Cmd::Ack { ack, target, reply } => {
                let r = self.send_ack(ack, target);
                let _ = reply.send(r);
            }
            Cmd::ConnClosed { id } | Cmd::ConnFailed { id } => self.conn_gone(t, id),
        }
    }

    fn handle_inbound(
        &mut self,
        t: Instant,
        msg: Message,
        source: SocketAddr,
        conn: Conn,
        transport: Transport,
    ) {
        if !self.rate.allow(source.ip(), t) {
            debug!(%source, "rate limit: message dropped");
            return;
        }
        if let Some(o) = &self.observer {
            observe::message(o.as_ref(), Direction::In, &msg);
        }
        let rel = if transport.is_stream() {
            Reliability::Reliable
        } else {
            Reliability::Unreliable
        };
        // RFC 3261 §18.2.2 / §18.1.1: a connection a peer opened (or we opened) carries our
        // next requests to that address too.
        if let Conn::Stream { id, tx } = &conn {
            self.pool_insert((transport, source), *id, tx);
        }
        self.current = Some((source, transport));
        match msg {
            Message::Request(mut req) => {
                let addr = if transport.is_stream() {
                    Ok(source)
                } else {
                    stamp_via(req.headers_mut(), source)
                };
                let dest = Dest {
                    conn,
                    addr: addr.unwrap_or(source),
                    transport,
                };
                if let Err(e) = req.validate().and(addr.map(|_| ())) {
                    info!(%source, error = %e, "malformed request");
                    // RFC 3261 §8.2 / RFC 4475 §3.1.2: answer only when a response can be
                    // built (Via, From, To, Call-ID, CSeq); never an ACK.
                    if req.method().as_str() != "ACK" && req.headers().is_answerable() {
                        let h = req.headers().clone();
                        self.respond_stateless(&h, e.status(), e.reason_phrase(), &dest, &[]);
                    }
                    return;
                }
                let method = req.method().as_str().to_ascii_uppercase();
                if !ALLOW.split(", ").any(|m| m == method) {
                    let h = req.headers().clone();
                    self.respond_stateless(
                        &h,
                        405,
                        "Method Not Allowed",
                        &dest,
                        &[("Allow", ALLOW)],
                    );
                    return;
                }
                self.pending_dest = Some(dest);
                if transport.is_stream() {
                    self.register_alias(&req, source, transport);
                }
                if let Err(e) = self.layer.handle_message(t, Message::Request(req), rel) {
                    debug!(error = %e, "request refused by the transaction layer");
                    self.pending_dest = None;
                }
            }
            Message::Response(resp) => {
                if let Err(e) = self.layer.handle_message(t, Message::Response(resp), rel) {
                    debug!(error = %e, "response refused by the transaction layer");
                }
            }
        }
    }

    /// A response for client transaction `id`: up to its ClientTxn until the final one,
    /// afterwards (2xx retransmissions in RFC 6026 Accepted) as a stray response.
    fn deliver(&mut self, id: TxnId, r: Response, from: Option<(SocketAddr, Transport)>) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        match &c.waiting {
            Some(w) => {
                let last = r.status() >= 200;
                if w.responses.try_send(Box::new(r)).is_err() {
                    debug!(?id, "client transaction not listening: response dropped");
                }
                if last {
                    c.waiting = None;
                }
            }
            None => {
                if let Some((source, transport)) = from {
                    self.emit(Event::StrayResponse {
                        response: r,
                        txn: Some(id),
                        source,
                        transport,
                    });
                }
            }
        }
    }

    fn drain(&mut self) {
        let pending = self.pending_dest.take();
        let current = self.current.take();
        let t = now();
        while let Some(o) = self.layer.poll_output() {
            match o {
                LayerOutput::Transmit(id, m) => {
                    if !self.dests.contains_key(&id)
                        && let Some(d) = &pending
                    {
                        self.dests.insert(id, d.clone());
                    }
                    if let Some(d) = self.dests.get(&id).cloned() {
                        if !self.send(&d, m.to_bytes()) {
                            self.transport_error(t, id);
                        } else if let Some(o) = &self.observer {
                            observe::message(o.as_ref(), Direction::Out, &m);
                        }
                    }
                }
                LayerOutput::Request {
                    txn,
                    request,
                    cancels,
                } => {
                    if let Some(d) = &pending {
                        self.dests.insert(txn, d.clone());
                    }
                    let Message::Request(request) = request else {
                        continue;
                    };
                    let Some(d) = self.dests.get(&txn) else {
                        continue;
                    };
                    self.emit(Event::Request(Incoming {
                        txn,
                        request,
                        source: d.addr,
                        transport: d.transport,
                        cancels,
                    }));
                }
                LayerOutput::Response(id, Message::Response(r)) => self.deliver(id, r, current),
                LayerOutput::AckForTu(id, Message::Request(ack)) => {
                    if let Some((source, transport)) = current {
                        self.emit(Event::Ack {
                            ack,
                            txn: Some(id),
                            source,
                            transport,
                        });
                    }
                }
                LayerOutput::StrayAck(Message::Request(ack)) => {
                    if let Some((source, transport)) = current {
                        self.emit(Event::Ack {
                            ack,
                            txn: None,
                            source,
                            transport,
                        });
                    }
                }
                LayerOutput::StrayResponse(Message::Response(response)) => {
                    if let Some((source, transport)) = current {
                        self.emit(Event::StrayResponse {
                            response,
                            txn: None,
                            source,
                            transport,
                        });
                    }
                }
                LayerOutput::Timeout(id, timer) => {
                    if let Some(c) = self.clients.get(&id) {
                        // RFC 3261 §8.1.3.1: a timeout counts as a 408, a transport error
                        // as a 503 (after the final response, nobody hears either).
                        let Some(w) = &c.waiting else { continue };
                        let (code, reason) = if c.transport_failed {
                            (503, "Service Unavailable")
                        } else {
                            (408, "Request Timeout")
                        };
                        let tag = self.tags.next();
                        match Response::for_request(&w.request, code, reason, &tag) {
                            Ok(r) => self.deliver(id, r, None),
                            Err(e) => {
                                debug!(error = %e, "cannot build the synthetic response");
                                if let Some(c) = self.clients.get_mut(&id) {
                                    c.waiting = None;
                                }
                            }
                        }
                    } else if matches!(timer, Timer::H | Timer::Guard) {
                        self.emit(Event::ServerTimeout { txn: id });
                    }
                }
                LayerOutput::Terminated(id) => {
                    self.dests.remove(&id);
                    self.clients.remove(&id);
                }
                LayerOutput::Response(..)
                | LayerOutput::AckForTu(..)
                | LayerOutput::StrayAck(_)
                | LayerOutput::StrayResponse(_) => {}
            }
        }
    }
}

/// The local address the kernel would use toward `peer`, for a Via when we listen on a
/// wildcard address. Connecting a UDP socket sends nothing; it only consults the routes.
fn local_ip_toward(peer: SocketAddr) -> Option<IpAddr> {
    let any = if peer.is_ipv6() {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
    };
    let s = std::net::UdpSocket::bind(any).ok()?;
    s.connect(peer).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn sleep_until_opt(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn rate_limit_refuses_a_flood_but_not_another_source() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(5);
        let allowed = (0..100).filter(|_| r.allow(ip(1), t0)).count();
        assert_eq!(allowed, 10, "a burst of two seconds' worth");
        assert!(r.allow(ip(2), t0), "another source is unaffected");
        assert!(r.allow(ip(1), t0 + Duration::from_millis(200)), "refilled");
    }

    #[test]
    fn rate_limit_map_is_capped_and_pruned_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut r = RateLimit::with_cap(5, 3);
        for n in 0..3 {
            assert!(r.allow(ip(n), t0));
        }
        // Full: unknown sources are refused, known ones still metered.
        assert!(!r.allow(ip(9), t0));
        assert!(r.allow(ip(0), t0));
        assert_eq!(r.buckets.len(), 3);
        // Within a second of the last prune nothing is pruned, even once idle sources refilled.
        let t1 = t0 + Duration::from_millis(500);
        assert!(!r.allow(ip(9), t1));
        // Later, refilled sources are forgotten and room is made.
        let t2 = t0 + Duration::from_secs(3);
        assert!(r.allow(ip(9), t2));
        assert_eq!(r.buckets.len(), 1);
    }

    /// Datagrams and errors in order, then nothing for ever.
    struct Script(std::sync::Mutex<Vec<std::io::Result<Vec<u8>>>>);

    impl RecvFrom for Script {
        async fn recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
            let next = self.0.lock().ok().and_then(|mut v| v.pop());
            match next {
                Some(Ok(d)) => {
                    let n = d.len().min(buf.len());
                    buf[..n].copy_from_slice(&d[..n]);
                    Ok((n, SocketAddr::from(([127, 0, 0, 1], 5099))))
                }
                Some(Err(e)) => Err(e),
                None => std::future::pending().await,
            }
        }
    }

    #[tokio::test]
    async fn udp_loop_survives_receive_errors() {
        use std::io::{Error, ErrorKind};
        let sock = Arc::new(udp_socket(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap());
        let options = b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\n\
            Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-x\r\n\
            From: <sip:b@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\n\
            Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\
            Content-Length: 0\r\n\r\n"
            .to_vec();
        // Popped from the end: three errors of kinds that used to end the loop, then a request.
        let script = Script(std::sync::Mutex::new(vec![
            Ok(options),
            Err(Error::from(ErrorKind::OutOfMemory)),
            Err(Error::from(ErrorKind::Interrupted)),
            Err(Error::other("ENOBUFS")),
        ]));
        let (tx, mut rx) = mpsc::channel(4);
        let task = udp_loop_from(&script, sock, tx, 65535);
        let got = tokio::select! {
            () = task => None,
            c = rx.recv() => c,
        };
        assert!(
            matches!(got, Some(Cmd::Inbound { source, .. }) if source.port() == 5099),
            "the request after the errors is still received"
        );
    }
}
