//! The endpoint: listener tasks parse and frame, one driver task owns the transaction layer.

use crate::Error;
use crate::listen::{Listen, Transport};
use sip_proto::layer::{LayerOutput, TxnId, TxnLayer};
use sip_proto::msg::{self, Headers, Message, MsgError, Request, Response, StreamItem};
use sip_proto::txn::{Reliability, TimerConfig};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Methods this endpoint's transaction user handles; others get 405 with this `Allow`.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, INFO, PRACK, UPDATE";

#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub listen: Vec<Listen>,
    /// Largest message accepted (RFC 3261 §18.1.1's 65535 for UDP by default).
    pub max_message: usize,
    /// Messages per second per source IP, with a burst of twice that.
    pub rate_per_sec: u32,
    pub timers: TimerConfig,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            listen: vec![],
            max_message: 65535,
            rate_per_sec: 200,
            timers: TimerConfig::default(),
        }
    }
}

/// Where a response goes.
#[derive(Debug, Clone)]
enum Conn {
    Udp(Arc<UdpSocket>),
    Tcp(mpsc::Sender<Vec<u8>>),
}

#[derive(Debug, Clone)]
struct Dest {
    conn: Conn,
    addr: SocketAddr,
}

enum Cmd {
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
    },
    Respond {
        txn: TxnId,
        resp: Response,
    },
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

/// Sends responses on server transactions.
#[derive(Debug, Clone)]
pub struct Responder {
    tx: mpsc::Sender<Cmd>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
    }
}

impl Responder {
    pub async fn respond(&self, txn: TxnId, resp: Response) -> Result<(), Error> {
        self.tx
            .send(Cmd::Respond { txn, resp })
            .await
            .map_err(|_| Error::Closed)
    }
}

#[derive(Debug)]
pub struct Endpoint {
    incoming: mpsc::Receiver<Incoming>,
    responder: Responder,
    local: Vec<Listen>,
}

impl Endpoint {
    /// Binds every listener and starts the driver.
    pub async fn bind(cfg: EndpointConfig) -> Result<Endpoint, Error> {
        let (cmd_tx, cmd_rx) = mpsc::channel::<Cmd>(8192);
        let (in_tx, incoming) = mpsc::channel(4096);
        let mut local = Vec::new();
        for l in &cfg.listen {
            match l.transport {
                Transport::Udp => {
                    let sock = Arc::new(udp_socket(l.addr)?);
                    local.push(Listen {
                        transport: Transport::Udp,
                        addr: sock.local_addr()?,
                    });
                    tokio::spawn(udp_loop(sock, cmd_tx.clone(), cfg.max_message));
                }
                Transport::Tcp => {
                    let lst = TcpListener::bind(l.addr).await?;
                    local.push(Listen {
                        transport: Transport::Tcp,
                        addr: lst.local_addr()?,
                    });
                    tokio::spawn(tcp_accept(lst, cmd_tx.clone(), cfg.max_message));
                }
            }
        }
        let driver = Driver {
            layer: TxnLayer::new(cfg.timers),
            dests: HashMap::new(),
            incoming: in_tx,
            rate: RateLimit::new(cfg.rate_per_sec),
            tags: Tags::default(),
            pending_dest: None,
        };
        tokio::spawn(driver.run(cmd_rx));
        Ok(Endpoint {
            incoming,
            responder: Responder { tx: cmd_tx },
            local,
        })
    }

    /// The bound addresses (ephemeral ports resolved).
    pub fn local(&self) -> &[Listen] {
        &self.local
    }

    pub fn responder(&self) -> Responder {
        self.responder.clone()
    }

    pub async fn next_request(&mut self) -> Option<Incoming> {
        self.incoming.recv().await
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

async fn udp_loop(sock: Arc<UdpSocket>, tx: mpsc::Sender<Cmd>, max: usize) {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, source) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            // ICMP errors from earlier sends surface here; they are not fatal.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(e) => {
                warn!(error = %e, "udp listener failed");
                return;
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
            },
        };
        if tx.try_send(cmd).is_err() {
            debug!(%source, "driver overloaded, datagram dropped");
        }
    }
}

async fn tcp_accept(lst: TcpListener, tx: mpsc::Sender<Cmd>, max: usize) {
    loop {
        match lst.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(tcp_conn(stream, peer, tx.clone(), max));
            }
            Err(e) => {
                warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One TCP connection: Content-Length framing (RFC 3261 §18.3), keep-alive pongs (RFC 5626
/// §4.4.1), malformed messages answered when their framing survives, closed when it does not.
async fn tcp_conn(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tx: mpsc::Sender<Cmd>,
    max: usize,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(256);
    tokio::spawn(async move {
        while let Some(b) = wrx.recv().await {
            if wr.write_all(&b).await.is_err() {
                return;
            }
        }
    });
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16384];
    loop {
        loop {
            match msg::parse_stream(&buf, max) {
                Ok(StreamItem::Incomplete) => break,
                Ok(StreamItem::KeepAlive(n)) => {
                    if buf
                        .get(..n)
                        .is_some_and(|b| b.windows(4).any(|w| w == b"\r\n\r\n"))
                    {
                        let _ = wtx.try_send(b"\r\n".to_vec());
                    }
                    buf.drain(..n.min(buf.len()));
                }
                Ok(StreamItem::Message(m, n)) => {
                    buf.drain(..n.min(buf.len()));
                    let cmd = Cmd::Inbound {
                        msg: m,
                        source: peer,
                        conn: Conn::Tcp(wtx.clone()),
                        transport: Transport::Tcp,
                    };
                    if tx.send(cmd).await.is_err() {
                        return;
                    }
                }
                Ok(StreamItem::Malformed(err, n)) => {
                    let bytes: Vec<u8> = buf.drain(..n.min(buf.len())).collect();
                    let _ = tx
                        .send(Cmd::Malformed {
                            err,
                            bytes,
                            source: peer,
                            conn: Conn::Tcp(wtx.clone()),
                        })
                        .await;
                }
                Err(err) => {
                    // Framing is lost: answer if we can, then close (RFC 3261 §18.3).
                    let bytes = std::mem::take(&mut buf);
                    let _ = tx
                        .send(Cmd::Malformed {
                            err,
                            bytes,
                            source: peer,
                            conn: Conn::Tcp(wtx.clone()),
                        })
                        .await;
                    return;
                }
            }
        }
        if buf.len() > max {
            return;
        }
        match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
    }
}

/// Token bucket per source IP; the map is pruned when it grows.
struct RateLimit {
    per_sec: f64,
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl RateLimit {
    fn new(per_sec: u32) -> Self {
        RateLimit {
            per_sec: f64::from(per_sec.max(1)),
            buckets: HashMap::new(),
        }
    }

    fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.buckets.len() > 10_000 {
            self.buckets
                .retain(|_, (_, t)| now.duration_since(*t) < Duration::from_secs(10));
        }
        let burst = 2.0 * self.per_sec;
        let (tokens, last) = self.buckets.entry(ip).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_sec).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// To-tags for our responses: process-random, never repeating.
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
}

struct Driver {
    layer: TxnLayer<Message>,
    dests: HashMap<TxnId, Dest>,
    incoming: mpsc::Sender<Incoming>,
    rate: RateLimit,
    tags: Tags,
    /// Where the request just handed to the layer came from, for the transaction it creates.
    pending_dest: Option<Dest>,
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

    fn send(&self, dest: &Dest, bytes: Vec<u8>) {
        match &dest.conn {
            Conn::Udp(s) => {
                if let Err(e) = s.try_send_to(&bytes, dest.addr) {
                    debug!(to = %dest.addr, error = %e, "udp send failed");
                }
            }
            Conn::Tcp(tx) => {
                let _ = tx.try_send(bytes);
            }
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
                self.send(dest, r.to_bytes());
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
            } => {
                if !self.rate.allow(source.ip(), t) {
                    debug!(%source, "rate limit: message dropped");
                    return;
                }
                let rel = match transport {
                    Transport::Udp => Reliability::Unreliable,
                    Transport::Tcp => Reliability::Reliable,
                };
                match msg {
                    Message::Request(mut req) => {
                        let addr = match transport {
                            Transport::Tcp => Ok(source),
                            Transport::Udp => stamp_via(req.headers_mut(), source),
                        };
                        let dest = Dest {
                            conn,
                            addr: addr.unwrap_or(source),
                        };
                        if let Err(e) = req.validate().and(addr.map(|_| ())) {
                            info!(%source, error = %e, "malformed request");
                            // RFC 3261 §8.2 / RFC 4475 §3.1.2: answer only when a response
                            // can be built (Via, From, To, Call-ID, CSeq); never an ACK.
                            if req.method().as_str() != "ACK" && req.headers().is_answerable() {
                                let h = req.headers().clone();
                                self.respond_stateless(
                                    &h,
                                    e.status(),
                                    e.reason_phrase(),
                                    &dest,
                                    &[],
                                );
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
                        if let Err(e) = self.layer.handle_message(t, Message::Request(req), rel) {
                            debug!(error = %e, "request refused by the transaction layer");
                            return;
                        }
                        self.pending_dest = Some(dest);
                    }
                    Message::Response(resp) => {
                        if let Err(e) = self.layer.handle_message(t, Message::Response(resp), rel) {
                            debug!(error = %e, "response refused by the transaction layer");
                        }
                    }
                }
            }
            Cmd::Malformed {
                err,
                bytes,
                source,
                conn,
            } => {
                info!(%source, error = %err, "malformed message");
                if let Some(mut h) = msg::salvage_request(&bytes) {
                    let addr = stamp_via(&mut h, source).unwrap_or(source);
                    let addr = match conn {
                        Conn::Tcp(_) => source,
                        Conn::Udp(_) => addr,
                    };
                    let dest = Dest { conn, addr };
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
        }
    }

    fn drain(&mut self) {
        let pending = self.pending_dest.take();
        while let Some(o) = self.layer.poll_output() {
            match o {
                LayerOutput::Transmit(id, m) => {
                    if !self.dests.contains_key(&id)
                        && let Some(d) = &pending
                    {
                        self.dests.insert(id, d.clone());
                    }
                    if let Some(d) = self.dests.get(&id) {
                        self.send(d, m.to_bytes());
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
                    let (source, transport) = match self.dests.get(&txn) {
                        Some(Dest {
                            conn: Conn::Tcp(_),
                            addr,
                        }) => (*addr, Transport::Tcp),
                        Some(Dest { addr, .. }) => (*addr, Transport::Udp),
                        None => continue,
                    };
                    let inc = Incoming {
                        txn,
                        request,
                        source,
                        transport,
                        cancels,
                    };
                    if self.incoming.try_send(inc).is_err() {
                        warn!("transaction user overloaded: request not delivered");
                    }
                }
                LayerOutput::Terminated(id) => {
                    self.dests.remove(&id);
                }
                LayerOutput::Timeout(id, t) => debug!(?id, ?t, "transaction timed out"),
                LayerOutput::AckForTu(..)
                | LayerOutput::StrayAck(_)
                | LayerOutput::StrayResponse(_)
                | LayerOutput::Response(..) => {}
            }
        }
    }
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
