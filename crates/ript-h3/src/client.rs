//! The RIPT client: TG discovery, handlers, certificates, customer TGs, calls, signaling
//! byways, datagram media with fallback to media byways, ping/pong, migration and
//! reconnection with `retry-backoff`. One QUIC connection per peer, shared by all calls.

use crate::media::{CallEvent, MediaEndpoint, MediaStats, OutgoingMedia};
use crate::tls::{self, Trust};
use crate::{Error, datagram, lock, now, wall_ms};
use bytes::{Buf, Bytes};
use http::{Method, Request};
use ript_proto::call::{ClientCall, ClientOutput, MediaPath};
use ript_proto::chunk::MediaDirection;
use ript_proto::events::{Event, EventDecoder, EventEncoder};
use ript_proto::media::MediaBuffer;
use ript_proto::model::{
    CallCreate, CallDescription, CallTimers, CallUpdate, CustomerTg, Handler, ProviderTgs, Reason,
    Tg,
};
use ript_proto::{Problem, limits};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, info_span};

type SendReq = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// How a client reaches and authenticates to RIPT servers.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub trust: Trust,
    pub token: String,
    /// Try datagram media first (ript-profile §6: preferred), falling back to byways.
    pub prefer_datagrams: bool,
    pub media_key: Option<[u8; 16]>,
    /// Give up on a request after this long.
    pub request_timeout: Duration,
}

impl ClientOptions {
    pub fn new(trust: Trust, token: impl Into<String>) -> Self {
        ClientOptions {
            trust,
            token: token.into(),
            prefer_datagrams: true,
            media_key: None,
            request_timeout: Duration::from_secs(10),
        }
    }
}

type DemuxMap = Arc<Mutex<HashMap<u64, mpsc::Sender<Internal>>>>;

#[derive(Clone)]
struct Conn {
    quinn: quinn::Connection,
    send: SendReq,
    demux: DemuxMap,
    dg_out: datagram::DatagramOut,
}

struct Inner {
    opts: ClientOptions,
    config: quinn::ClientConfig,
    endpoints: Mutex<HashMap<bool, quinn::Endpoint>>,
    conns: tokio::sync::Mutex<HashMap<String, Conn>>,
}

/// A RIPT client; cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

/// A response as received.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn problem(&self) -> Option<Problem> {
        serde_json::from_slice(&self.body).ok()
    }

    fn ok(self) -> Result<Resp, Error> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            Err(Error::Status {
                status: self.status,
                problem: self.problem(),
            })
        }
    }

    fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|_| Error::Unexpected("response body is not the expected json"))
    }
}

/// Splits `https://authority/path` into (authority, host for SNI).
fn target(url: &str) -> Result<(String, String, http::Uri), Error> {
    let uri: http::Uri = url.parse().map_err(|_| Error::Url(url.to_owned()))?;
    if uri.scheme_str() != Some("https") {
        // ript-profile §1: plain HTTP is never offered.
        return Err(Error::Url(url.to_owned()));
    }
    let auth = uri.authority().ok_or_else(|| Error::Url(url.to_owned()))?;
    let host = auth
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let authority = if auth.port().is_some() {
        auth.as_str().to_owned()
    } else {
        format!("{}:443", auth.as_str())
    };
    Ok((authority, host, uri))
}

async fn read_all<S: h3::quic::RecvStream>(
    s: &mut h3::client::RequestStream<S, Bytes>,
    cap: usize,
) -> Result<Bytes, Error> {
    let mut body = Vec::new();
    while let Some(mut c) = s.recv_data().await? {
        if body.len() + c.remaining() > cap {
            return Err(Error::Unexpected("response body too large"));
        }
        while c.has_remaining() {
            let ch = c.chunk();
            body.extend_from_slice(ch);
            let n = ch.len();
            c.advance(n);
        }
    }
    Ok(Bytes::from(body))
}

impl Client {
    pub fn new(opts: ClientOptions) -> Result<Self, Error> {
        let config = tls::client_config(&opts.trust)?;
        Ok(Client {
            inner: Arc::new(Inner {
                opts,
                config,
                endpoints: Mutex::default(),
                conns: tokio::sync::Mutex::default(),
            }),
        })
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    fn endpoint(&self, v6: bool) -> Result<quinn::Endpoint, Error> {
        let mut eps = lock(&self.inner.endpoints);
        if let Some(e) = eps.get(&v6) {
            return Ok(e.clone());
        }
        let bind: SocketAddr = if v6 { "[::]:0" } else { "0.0.0.0:0" }
            .parse()
            .map_err(|_| Error::Url("bind".into()))?;
        let mut ep = tls::endpoint(bind, None)?;
        ep.set_default_client_config(self.inner.config.clone());
        eps.insert(v6, ep.clone());
        Ok(ep)
    }

    /// The shared connection to `authority`, opened on first use and reopened when lost.
    async fn conn(&self, authority: &str, host: &str) -> Result<Conn, Error> {
        let mut conns = self.inner.conns.lock().await;
        if let Some(c) = conns.get(authority) {
            if c.quinn.close_reason().is_none() {
                return Ok(c.clone());
            }
            conns.remove(authority);
        }
        let addr = tokio::net::lookup_host(authority)
            .await?
            .next()
            .ok_or_else(|| Error::Url(authority.to_owned()))?;
        let ep = self.endpoint(addr.is_ipv6())?;
        let quinn = tokio::time::timeout(self.inner.opts.request_timeout, ep.connect(addr, host)?)
            .await
            .map_err(|_| Error::Timeout("quic handshake"))??;
        let (mut driver, send) = h3::client::builder()
            .enable_datagram(true)
            .enable_extended_connect(true)
            .build::<_, _, Bytes>(h3_quinn::Connection::new(quinn.clone()))
            .await?;
        tokio::spawn(async move {
            let e = driver.wait_idle().await;
            if !e.is_h3_no_error() {
                debug!(error = %e, "ript connection closed");
            }
        });
        let demux: DemuxMap = Arc::default();
        let dg_out = spawn_datagram_io(quinn.clone(), demux.clone());
        let c = Conn {
            quinn,
            send,
            demux,
            dg_out,
        };
        conns.insert(authority.to_owned(), c.clone());
        Ok(c)
    }

    fn build(
        &self,
        method: Method,
        uri: http::Uri,
        ctype: Option<&str>,
        auth: bool,
    ) -> Result<Request<()>, Error> {
        let mut b = Request::builder().method(method).uri(uri);
        if auth {
            b = b.header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.inner.opts.token),
            );
        }
        if let Some(ct) = ctype {
            b = b.header(http::header::CONTENT_TYPE, ct);
        }
        b.body(())
            .map_err(|_| Error::Unexpected("cannot build request"))
    }

    /// One request with a complete body; the whole response is read (capped at 1 MiB).
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        ctype: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<Resp, Error> {
        self.request_with(method, url, ctype, body, true).await
    }

    async fn request_with(
        &self,
        method: Method,
        url: &str,
        ctype: Option<&str>,
        body: Option<Bytes>,
        auth: bool,
    ) -> Result<Resp, Error> {
        let fut = async {
            let (authority, host, uri) = target(url)?;
            let conn = self.conn(&authority, &host).await?;
            let mut send = conn.send.clone();
            let req = self.build(method, uri, ctype, auth)?;
            let mut s = send.send_request(req).await?;
            if let Some(b) = body {
                s.send_data(b).await?;
            }
            s.finish().await?;
            let resp = s.recv_response().await?;
            let body = read_all(&mut s, 1 << 20).await?;
            Ok(Resp {
                status: resp.status().as_u16(),
                headers: resp.headers().clone(),
                body,
            })
        };
        tokio::time::timeout(self.inner.opts.request_timeout, fut)
            .await
            .map_err(|_| Error::Timeout("request"))?
    }

    async fn json_req<T: serde::Serialize>(
        &self,
        method: Method,
        url: &str,
        v: &T,
    ) -> Result<Resp, Error> {
        let body = serde_json::to_vec(v).map_err(|_| Error::Unexpected("cannot encode json"))?;
        self.request(
            method,
            url,
            Some("application/json"),
            Some(Bytes::from(body)),
        )
        .await?
        .ok()
    }

    /// Opens a request stream and leaves body and response to the caller (tools, tests).
    pub async fn open_raw(
        &self,
        method: Method,
        url: &str,
        ctype: Option<&str>,
    ) -> Result<RawStream, Error> {
        let (authority, host, uri) = target(url)?;
        let conn = self.conn(&authority, &host).await?;
        let mut send = conn.send.clone();
        let req = self.build(method, uri, ctype, true)?;
        Ok(RawStream {
            inner: send.send_request(req).await?,
        })
    }

    pub async fn provider_tgs(&self, root: &str) -> Result<ProviderTgs, Error> {
        self.request(Method::GET, &format!("{root}/providertgs"), None, None)
            .await?
            .ok()?
            .json()
    }

    pub async fn tg(&self, tg_uri: &str) -> Result<Tg, Error> {
        self.request(Method::GET, tg_uri, None, None)
            .await?
            .ok()?
            .json()
    }

    pub async fn register_handler(&self, tg_uri: &str, h: &Handler) -> Result<Handler, Error> {
        let r = self
            .json_req(Method::POST, &format!("{tg_uri}/handlers"), h)
            .await?;
        if r.status != 201 || r.header("location").is_none() {
            return Err(Error::Unexpected(
                "handler registration did not answer 201 with a location",
            ));
        }
        r.json()
    }

    pub async fn get_handler(&self, uri: &str) -> Result<Handler, Error> {
        self.request(Method::GET, uri, None, None)
            .await?
            .ok()?
            .json()
    }

    pub async fn put_handler(&self, uri: &str, h: &Handler) -> Result<Handler, Error> {
        self.json_req(Method::PUT, uri, h).await?.json()
    }

    pub async fn delete(&self, uri: &str) -> Result<(), Error> {
        self.request(Method::DELETE, uri, None, None)
            .await?
            .ok()
            .map(|_| ())
    }

    /// `POST {tg}/certs` with a PEM CSR: (the cert's URL for `x5u`, the PEM chain).
    pub async fn enroll_cert(
        &self,
        tg_uri: &str,
        csr_pem: &str,
    ) -> Result<(String, String), Error> {
        let r = self
            .request(
                Method::POST,
                &format!("{tg_uri}/certs"),
                Some("application/pkcs10"),
                Some(Bytes::from(csr_pem.to_owned())),
            )
            .await?
            .ok()?;
        let loc = r
            .header("location")
            .ok_or(Error::Unexpected("certificate without location"))?
            .to_owned();
        Ok((loc, String::from_utf8_lossy(&r.body).into_owned()))
    }

    /// A certificate as a verifier fetches it (no token, ript-profile §2).
    pub async fn fetch_cert(&self, url: &str) -> Result<String, Error> {
        let r = self
            .request_with(Method::GET, url, None, None, false)
            .await?
            .ok()?;
        Ok(String::from_utf8_lossy(&r.body).into_owned())
    }

    pub async fn register_customer_tg(
        &self,
        root: &str,
        c: &CustomerTg,
    ) -> Result<CustomerTg, Error> {
        self.json_req(Method::POST, &format!("{root}/customertgs"), c)
            .await?
            .json()
    }

    pub async fn get_customer_tg(&self, uri: &str) -> Result<CustomerTg, Error> {
        self.request(Method::GET, uri, None, None)
            .await?
            .ok()?
            .json()
    }

    pub async fn put_customer_tg(&self, uri: &str, c: &CustomerTg) -> Result<CustomerTg, Error> {
        self.json_req(Method::PUT, uri, c).await?.json()
    }

    pub async fn create_call(
        &self,
        tg_uri: &str,
        c: &CallCreate,
    ) -> Result<CallDescription, Error> {
        let r = self
            .json_req(Method::POST, &format!("{tg_uri}/calls"), c)
            .await?;
        if r.status != 201 {
            return Err(Error::Unexpected("call creation did not answer 201"));
        }
        r.json()
    }

    pub async fn get_call(&self, uri: &str) -> Result<CallDescription, Error> {
        self.request(Method::GET, uri, None, None)
            .await?
            .ok()?
            .json()
    }

    pub async fn update_call(&self, uri: &str, u: &CallUpdate) -> Result<CallDescription, Error> {
        self.json_req(Method::POST, uri, u).await?.json()
    }

    /// Starts the signaling and media of a created call.
    pub fn start_call(&self, description: &CallDescription, timers: CallTimers) -> OutboundCall {
        let (app_tx, app_rx) = mpsc::channel(4096);
        let (ev_tx, ev_rx) = mpsc::channel(4096);
        let (int_tx, int_rx) = mpsc::channel(4096);
        let t = now();
        let opts = &self.inner.opts;
        let task = CallTask {
            client: self.clone(),
            call: ClientCall::new(t, description.uri.clone(), timers, opts.prefer_datagrams),
            media: MediaEndpoint::new(MediaDirection::C2s, opts.media_key),
            buffer: MediaBuffer::default(),
            pending_events: VecDeque::new(),
            path: Path::None,
            tasks: Vec::new(),
            dg_task: None,
            fwd: None,
            fwd_task: None,
            generation: 0,
            internal: int_tx,
            events: ev_tx,
            ack_flush_at: None,
            last_put: t,
            media_handler: None,
            puts: Arc::new(tokio::sync::Semaphore::new(limits::CLIENT_PENDING_PUTS)),
            puts_dropped: 0,
        };
        let span = info_span!("ript_call", call = %description.uri, role = "client");
        tokio::spawn(task.run(int_rx, app_rx).instrument(span));
        OutboundCall {
            uri: description.uri.clone(),
            events: ev_rx,
            control: ClientCallControl { tx: app_tx },
        }
    }
}

fn spawn_datagram_io(conn: quinn::Connection, demux: DemuxMap) -> datagram::DatagramOut {
    let out = datagram::DatagramOut::new(conn.clone());
    tokio::spawn(async move {
        while let Ok(raw) = conn.read_datagram().await {
            if let Some((sid, payload)) = datagram::decode(&raw) {
                let t = lock(&demux).get(&sid).cloned();
                if let Some(t) = t {
                    let _ = t.try_send(Internal::DatagramIn(payload));
                }
            }
        }
    });
    out
}

/// A request stream with its body and response left to the caller.
pub struct RawStream {
    inner: h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
}

impl std::fmt::Debug for RawStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawStream")
    }
}

impl RawStream {
    pub async fn send(&mut self, b: impl Into<Bytes>) -> Result<(), Error> {
        Ok(self.inner.send_data(b.into()).await?)
    }
    pub async fn finish(&mut self) -> Result<(), Error> {
        Ok(self.inner.finish().await?)
    }
    /// The response status.
    pub async fn response(&mut self) -> Result<u16, Error> {
        Ok(self.inner.recv_response().await?.status().as_u16())
    }
    /// The next piece of the response body; `None` at its end.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, Error> {
        Ok(self
            .inner
            .recv_data()
            .await?
            .map(|mut c| c.copy_to_bytes(c.remaining())))
    }
    /// The rest of the response body.
    pub async fn body(&mut self) -> Result<Bytes, Error> {
        read_all(&mut self.inner, 1 << 20).await
    }
}

/// A call this client placed.
#[derive(Debug)]
pub struct OutboundCall {
    pub uri: String,
    pub events: mpsc::Receiver<CallEvent>,
    pub control: ClientCallControl,
}

#[derive(Debug, Clone)]
pub struct ClientCallControl {
    tx: mpsc::Sender<AppCmd>,
}

enum AppCmd {
    Media(OutgoingMedia),
    MediaHandler(crate::MediaHandler),
    End(Option<Reason>),
    Stats(oneshot::Sender<MediaStats>),
}

impl ClientCallControl {
    /// Queues media; buffered (≥ 5 s) while no media path is up.
    pub fn send_media(&self, m: OutgoingMedia) -> Result<(), Error> {
        self.tx.try_send(AppCmd::Media(m)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::Backpressure,
            mpsc::error::TrySendError::Closed(_) => Error::CallGone,
        })
    }

    pub async fn end(&self, reason: Option<Reason>) -> Result<(), Error> {
        self.tx
            .send(AppCmd::End(reason))
            .await
            .map_err(|_| Error::CallGone)
    }

    /// From now on the call's received media goes to `h` instead of [`CallEvent::Media`]
    /// events (media already queued as events stays there).
    pub async fn set_media_handler(&self, h: crate::MediaHandler) -> Result<(), Error> {
        self.tx
            .send(AppCmd::MediaHandler(h))
            .await
            .map_err(|_| Error::CallGone)
    }

    pub async fn stats(&self) -> Result<MediaStats, Error> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(AppCmd::Stats(tx))
            .await
            .map_err(|_| Error::CallGone)?;
        rx.await.map_err(|_| Error::CallGone)
    }
}

// ---------------------------------------------------------------------------------------
// The call task

enum Internal {
    SignalingOpen(u64, mpsc::Sender<Bytes>, JoinHandle<()>),
    SignalingFailed(u64, Option<u16>),
    /// Boxed: an event is large and rare next to media, and every slot of the queue (tokio
    /// allocates 32 at a time per call) would be its size.
    ServerEvent(u64, Box<Event>),
    BywayReset(u64),
    MediaBody(Bytes),
    DatagramIn(Bytes),
    DatagramsUp(u64, datagram::DatagramOut, u64),
    DatagramsRefused(u64),
    DatagramsDown(u64),
    CallGone(u64),
}

enum Path {
    None,
    Datagrams {
        out: datagram::DatagramOut,
        stream_id: u64,
    },
    Byways,
}

struct CallTask {
    client: Client,
    call: ClientCall,
    media: MediaEndpoint,
    buffer: MediaBuffer,
    pending_events: VecDeque<Event>,
    path: Path,
    tasks: Vec<JoinHandle<()>>,
    /// The datagram session (CONNECT stream) task, aborted on fallback to byways.
    dg_task: Option<JoinHandle<()>>,
    fwd: Option<(mpsc::Sender<Bytes>, EventEncoder)>,
    fwd_task: Option<JoinHandle<()>>,
    generation: u64,
    internal: mpsc::Sender<Internal>,
    events: mpsc::Sender<CallEvent>,
    ack_flush_at: Option<Instant>,
    last_put: Instant,
    media_handler: Option<crate::MediaHandler>,
    /// Media PUTs in flight (`limits::CLIENT_PENDING_PUTS`).
    puts: Arc<tokio::sync::Semaphore>,
    puts_dropped: u64,
}

const ACK_FLUSH: Duration = Duration::from_millis(100);

impl CallTask {
    async fn run(
        mut self,
        mut int_rx: mpsc::Receiver<Internal>,
        mut app_rx: mpsc::Receiver<AppCmd>,
    ) {
        let uri = self.call.uri().to_owned();
        self.open_signaling(uri);
        let mut app_open = true;
        loop {
            let deadline = [self.call.poll_timeout().map(|(d, _)| d), self.ack_flush_at]
                .into_iter()
                .flatten()
                .min();
            tokio::select! {
                m = int_rx.recv() => if let Some(m) = m { self.handle_internal(m).await },
                c = app_rx.recv(), if app_open => match c {
                    Some(c) => self.handle_app(c),
                    None => {
                        app_open = false;
                        self.call.end(now(), wall_ms(), None);
                    }
                },
                _ = sleep_until_opt(deadline) => {
                    let t = now();
                    if self.ack_flush_at.is_some_and(|d| t >= d) {
                        self.ack_flush_at = None;
                        self.flush_acks();
                    }
                    self.call.handle_timeout(t, wall_ms());
                }
            }
            if self.drain().await {
                break;
            }
        }
        self.close_all(true);
    }

    fn emit(&self, e: CallEvent) {
        let _ = self.events.try_send(e);
    }

    fn handle_app(&mut self, c: AppCmd) {
        let t = now();
        match c {
            AppCmd::Media(m) => {
                let frame = self.media.encode(t, m);
                self.send_frame(t, frame);
            }
            AppCmd::MediaHandler(h) => self.media_handler = Some(h),
            AppCmd::End(reason) => self.call.end(t, wall_ms(), reason),
            AppCmd::Stats(r) => {
                let mut s = self
                    .media
                    .stats(matches!(self.path, Path::Datagrams { .. }));
                s.puts_dropped = self.puts_dropped;
                let _ = r.send(s);
            }
        }
    }

    fn send_frame(&mut self, t: Instant, mut frame: Vec<u8>) {
        match &self.path {
            Path::Datagrams { out, stream_id } => {
                frame.extend(self.media.take_acks());
                let _ = out.send(*stream_id, &frame);
                self.call.handle_media_sent(t);
            }
            Path::Byways => {
                frame.extend(self.media.take_acks());
                self.put_media(frame);
                self.call.handle_media_sent(t);
            }
            Path::None => self.buffer.push(t, frame),
        }
    }

    fn put_media(&mut self, body: Vec<u8>) {
        self.last_put = now();
        self.ack_flush_at = None;
        // A PUT per frame: when the server or the path falls behind, unbounded PUTs would
        // pile up tasks and memory (tens of MB on an overloaded box) for media nobody can
        // use any more.
        let Ok(permit) = Arc::clone(&self.puts).try_acquire_owned() else {
            self.puts_dropped += 1;
            debug!(
                dropped = self.puts_dropped,
                "too many media PUTs in flight, frame dropped"
            );
            return;
        };
        let (client, uri, generation, tx) = (
            self.client.clone(),
            format!("{}/media", self.call.uri()),
            self.generation,
            self.internal.clone(),
        );
        tokio::spawn(async move {
            match client
                .request(
                    Method::PUT,
                    &uri,
                    Some("application/octet-stream"),
                    Some(Bytes::from(body)),
                )
                .await
            {
                Ok(r) if r.status == 200 => {
                    if !r.body.is_empty() {
                        let _ = tx.send(Internal::MediaBody(r.body)).await;
                    }
                }
                Ok(r) if r.status == 404 => {
                    let _ = tx.send(Internal::CallGone(generation)).await;
                }
                Ok(r) => debug!(status = r.status, "media put refused"),
                Err(e) => debug!(error = %e, "media put failed"),
            }
            drop(permit);
        });
    }

    /// ript-profile §9: acks go out at least every 100 ms while chunks arrive.
    fn flush_acks(&mut self) {
        if !self.media.has_acks() {
            return;
        }
        match &self.path {
            Path::Datagrams { out, stream_id } => {
                let acks = self.media.take_acks();
                let _ = out.send(*stream_id, &acks);
            }
            Path::Byways => {
                let acks = self.media.take_acks();
                self.put_media(acks);
            }
            Path::None => {}
        }
    }

    async fn handle_internal(&mut self, m: Internal) {
        let t = now();
        let current = self.generation;
        match m {
            Internal::SignalingOpen(g, fwd, writer) if g == current => {
                let mut enc = EventEncoder::default();
                // run_signaling already sent the array's `[` before waiting for the headers.
                let _ = enc.open();
                while let Some(ev) = self.pending_events.pop_front() {
                    let _ = fwd.try_send(Bytes::from(enc.encode(&ev)));
                }
                self.fwd = Some((fwd, enc));
                self.fwd_task = Some(writer);
                self.call.handle_signaling_open(t);
            }
            Internal::SignalingFailed(g, status) if g == current => {
                info!(?status, "signaling byways could not be opened");
                if status == Some(404) {
                    self.gone();
                } else {
                    self.call.handle_signaling_failed(t);
                }
            }
            Internal::ServerEvent(g, ev) if g == current => self.call.handle_server_event(t, &ev),
            Internal::BywayReset(g) if g == current => self.call.handle_byway_reset(t),
            Internal::MediaBody(body) | Internal::DatagramIn(body) => self.receive(t, &body),
            Internal::DatagramsUp(g, out, sid) if g == current => {
                self.path = Path::Datagrams {
                    out,
                    stream_id: sid,
                };
                self.emit(CallEvent::MediaPath(MediaPath::Datagrams));
                self.flush_buffer(t);
            }
            Internal::DatagramsRefused(g) if g == current => self.call.handle_datagrams_refused(t),
            Internal::DatagramsDown(g) if g == current => {
                if matches!(self.path, Path::Datagrams { .. }) && !self.call.is_ended() {
                    self.call.handle_datagrams_refused(t);
                }
            }
            Internal::CallGone(g) if g == current => self.gone(),
            _ => debug!("message from an earlier generation of byways ignored"),
        }
    }

    fn gone(&mut self) {
        // The server forgot the call (404 on a byway): it has ended.
        if !self.call.is_ended() {
            let ev = Event::new(
                ript_proto::events::EventDirection::S2c,
                wall_ms(),
                self.call.uri(),
                ript_proto::events::EventKind::End,
            )
            .with_reason(Some(Reason {
                sip: None,
                text: Some("call no longer exists".into()),
            }));
            self.call.handle_server_event(now(), &ev);
        }
    }

    fn receive(&mut self, t: Instant, body: &[u8]) {
        let got = self.media.receive(t, wall_ms(), body);
        if !got.media.is_empty() {
            self.call.handle_media_received(t);
            if self.ack_flush_at.is_none() {
                self.ack_flush_at = Some(t + ACK_FLUSH);
            }
        }
        if got.acks > 0 {
            self.call.handle_ack(t, self.media.outstanding());
        }
        for m in got.media {
            match &mut self.media_handler {
                Some(h) => h(m),
                None => self.emit(CallEvent::Media(m)),
            }
        }
    }

    fn flush_buffer(&mut self, t: Instant) {
        self.media.reset_path();
        for f in self.buffer.take(t, usize::MAX) {
            self.send_frame(t, f);
        }
    }

    /// Sends `end` on a fresh `PUT {call}/events` when no forward byway is open (migrating),
    /// so the server records the client's reason instead of timing the call out.
    async fn send_end_oneshot(&self, ev: &Event) {
        let mut enc = EventEncoder::default();
        let mut body = enc.encode(ev);
        body.extend_from_slice(enc.close());
        let url = format!("{}/events", self.call.uri());
        match self
            .client
            .request(
                Method::PUT,
                &url,
                Some("application/json"),
                Some(Bytes::from(body)),
            )
            .await
        {
            Ok(r) if r.status == 200 => {}
            Ok(r) => debug!(status = r.status, "one-shot end refused"),
            Err(e) => debug!(error = %e, "one-shot end failed"),
        }
    }

    /// Carries out the machine's outputs; true when the call is over.
    async fn drain(&mut self) -> bool {
        let mut over = false;
        while let Some(o) = self.call.poll_output() {
            match o {
                ClientOutput::Send(ev) => {
                    let is_end = ev.event == ript_proto::events::EventKind::End;
                    match &mut self.fwd {
                        // The end must not be lost to a full queue.
                        Some((tx, enc)) if is_end => {
                            let _ = tx.send(Bytes::from(enc.encode(&ev))).await;
                        }
                        Some((tx, enc)) => {
                            let _ = tx.try_send(Bytes::from(enc.encode(&ev)));
                        }
                        // No forward byway (migrating): the end goes in a one-shot PUT.
                        None if is_end => self.send_end_oneshot(&ev).await,
                        None => self.pending_events.push_back(ev),
                    }
                }
                ClientOutput::State(k, r) => self.emit(CallEvent::State(k, r)),
                ClientOutput::MediaPanic => self.emit(CallEvent::MediaPanic),
                ClientOutput::HandlerChanged(h) => self.emit(CallEvent::HandlerChanged(h)),
                ClientOutput::Migrate { uri, trigger } => {
                    info!(?trigger, %uri, "migrating");
                    self.emit(CallEvent::Migrating(trigger.clone()));
                    self.close_all(false);
                    self.open_signaling(uri);
                }
                ClientOutput::OpenMedia(path) => self.open_media(path),
                ClientOutput::FallbackToByways => {
                    info!("media falls back to byways");
                    // Close the CONNECT stream so the server stops sending datagrams too.
                    if let Some(t) = self.dg_task.take() {
                        t.abort();
                    }
                    self.path = Path::None;
                    self.open_media(MediaPath::Byways);
                }
                ClientOutput::Ended(k, r) => {
                    // The final state reaches the application even when media filled its queue.
                    let _ = self.events.send(CallEvent::Ended(k, r)).await;
                    over = true;
                }
            }
        }
        over
    }

    /// Drops every byway of the current generation. The forward writer is allowed to finish
    /// (it sends `]`) when the call is over.
    fn close_all(&mut self, graceful_fwd: bool) {
        self.generation += 1;
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Some(t) = self.dg_task.take() {
            t.abort();
        }
        if let Some(w) = self.fwd_task.take()
            && !graceful_fwd
        {
            w.abort();
        }
        self.fwd = None;
        self.path = Path::None;
        self.media.reset_path();
    }

    fn open_signaling(&mut self, uri: String) {
        let (client, generation, tx) =
            (self.client.clone(), self.generation, self.internal.clone());
        // A closed connection is replaced by `Client::conn`; a live one is reused.
        let h = tokio::spawn(async move {
            if let Err(status) = run_signaling(client, generation, uri, tx.clone()).await {
                let _ = tx.send(Internal::SignalingFailed(generation, status)).await;
            }
        });
        self.tasks.push(h);
    }

    fn open_media(&mut self, path: MediaPath) {
        let (client, generation, tx, uri) = (
            self.client.clone(),
            self.generation,
            self.internal.clone(),
            format!("{}/media", self.call.uri()),
        );
        match path {
            MediaPath::Datagrams => {
                let h = tokio::spawn(async move {
                    if run_datagram_session(client, generation, uri, tx.clone())
                        .await
                        .is_err()
                    {
                        let _ = tx.send(Internal::DatagramsRefused(generation)).await;
                    }
                });
                self.dg_task = Some(h);
            }
            MediaPath::Byways => {
                self.emit(CallEvent::MediaPath(MediaPath::Byways));
                self.path = Path::Byways;
                for _ in 0..limits::CLIENT_PENDING_GETS {
                    let (client, tx, uri) = (client.clone(), tx.clone(), uri.clone());
                    self.tasks
                        .push(tokio::spawn(media_get_loop(client, generation, uri, tx)));
                }
                let t = now();
                self.flush_buffer(t);
            }
        }
    }
}

/// Opens `GET` and `PUT {call}/events`; reports `SignalingOpen` once both answered, then
/// forwards server events until the reverse byway ends. `Err(status)` if opening failed.
async fn run_signaling(
    client: Client,
    generation: u64,
    call_uri: String,
    tx: mpsc::Sender<Internal>,
) -> Result<(), Option<u16>> {
    let url = format!("{call_uri}/events");
    let (authority, host, uri) = target(&url).map_err(|_| None)?;
    let conn = client.conn(&authority, &host).await.map_err(|_| None)?;
    let mut send = conn.send.clone();
    let timeout = client.inner.opts.request_timeout;
    let get_req = client
        .build(Method::GET, uri.clone(), None, true)
        .map_err(|_| None)?;
    let put_req = client
        .build(Method::PUT, uri, Some("application/json"), true)
        .map_err(|_| None)?;
    let open = async {
        let mut get = send.send_request(get_req).await.map_err(|_| None)?;
        get.finish().await.map_err(|_| None)?;
        let r = get.recv_response().await.map_err(|_| None)?;
        if r.status() != 200 {
            return Err(Some(r.status().as_u16()));
        }
        let put = send.send_request(put_req).await.map_err(|_| None)?;
        let (mut put_tx, mut put_rx) = put.split();
        put_tx
            .send_data(Bytes::from_static(b"[\n"))
            .await
            .map_err(|_| None)?;
        let r = put_rx.recv_response().await.map_err(|_| None)?;
        if r.status() != 200 {
            return Err(Some(r.status().as_u16()));
        }
        Ok((get, put_tx, put_rx))
    };
    let (mut get, mut put_tx, put_rx) = tokio::time::timeout(timeout, open)
        .await
        .map_err(|_| None)??;
    let (ftx, mut frx) = mpsc::channel::<Bytes>(1024);
    let writer = tokio::spawn(async move {
        let _keep = put_rx;
        while let Some(b) = frx.recv().await {
            if put_tx.send_data(b).await.is_err() {
                return;
            }
        }
        let _ = put_tx.send_data(Bytes::from_static(b"]")).await;
        let _ = put_tx.finish().await;
    });
    if tx
        .send(Internal::SignalingOpen(generation, ftx, writer))
        .await
        .is_err()
    {
        return Ok(());
    }
    let mut dec = EventDecoder::new();
    // The server closes byways after a final state; any other end is a reset.
    while let Ok(Some(mut c)) = get.recv_data().await {
        let b = c.copy_to_bytes(c.remaining());
        match dec.feed(&b) {
            Ok(evs) => {
                for ev in evs {
                    let _ = tx
                        .send(Internal::ServerEvent(generation, Box::new(ev)))
                        .await;
                }
            }
            Err(e) => {
                info!(error = %e, "malformed reverse event byway");
                break;
            }
        }
    }
    let _ = tx.send(Internal::BywayReset(generation)).await;
    Ok(())
}

async fn run_datagram_session(
    client: Client,
    generation: u64,
    url: String,
    tx: mpsc::Sender<Internal>,
) -> Result<(), Error> {
    use h3::ConnectionState;
    let (authority, host, uri) = target(&url)?;
    let conn = client.conn(&authority, &host).await?;
    let mut send = conn.send.clone();
    if !send.settings().enable_datagram() || !send.settings().enable_extended_connect() {
        return Err(Error::Unexpected(
            "server did not advertise h3 datagrams and extended connect",
        ));
    }
    let mut req = client.build(Method::CONNECT, uri, None, true)?;
    req.extensions_mut()
        .insert(h3::ext::Protocol::WEB_TRANSPORT);
    let mut s = send.send_request(req).await?;
    let sid = s.id().into_inner();
    lock(&conn.demux).insert(sid, tx.clone());
    // Removed however this task ends (finished, refused or aborted on fallback/migration):
    // the connection outlives the call.
    let _guard = DemuxGuard {
        demux: conn.demux.clone(),
        sid,
    };
    let r = tokio::time::timeout(client.inner.opts.request_timeout, s.recv_response())
        .await
        .map_err(|_| Error::Timeout("connect"))?;
    let ok = matches!(&r, Ok(resp) if resp.status().is_success());
    if !ok {
        return Err(Error::Unexpected("datagram session refused"));
    }
    let _ = tx
        .send(Internal::DatagramsUp(generation, conn.dg_out.clone(), sid))
        .await;
    // Held open for the session's life; its end sends media back to byways.
    while let Ok(Some(_)) = s.recv_data().await {}
    let _ = tx.send(Internal::DatagramsDown(generation)).await;
    Ok(())
}

struct DemuxGuard {
    demux: DemuxMap,
    sid: u64,
}

impl Drop for DemuxGuard {
    fn drop(&mut self) {
        lock(&self.demux).remove(&self.sid);
    }
}

async fn media_get_loop(client: Client, generation: u64, url: String, tx: mpsc::Sender<Internal>) {
    let Ok((authority, host, uri)) = target(&url) else {
        return;
    };
    loop {
        let Ok(conn) = client.conn(&authority, &host).await else {
            return;
        };
        let mut send = conn.send.clone();
        let Ok(req) = client.build(Method::GET, uri.clone(), None, true) else {
            return;
        };
        let res = async {
            let mut s = send.send_request(req).await?;
            s.finish().await?;
            let r = s.recv_response().await?;
            let body = read_all(&mut s, 4 * limits::MEDIA_PUT * limits::FLUSH_FRAMES).await?;
            Ok::<_, Error>((r.status().as_u16(), body))
        }
        .await;
        match res {
            Ok((200, body)) => {
                if tx.send(Internal::MediaBody(body)).await.is_err() {
                    return;
                }
            }
            Ok((204, _)) => {}
            Ok((404, _)) => {
                let _ = tx.send(Internal::CallGone(generation)).await;
                return;
            }
            Ok((status, _)) => {
                debug!(status, "media get refused");
                return;
            }
            Err(e) => {
                debug!(error = %e, "media get failed");
                return;
            }
        }
    }
}

async fn sleep_until_opt(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
