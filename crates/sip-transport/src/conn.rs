//! Stream transports (TCP and TLS): accept loops with a connection cap, outgoing connects,
//! and one framing loop for both (RFC 3261 §18.3) with an idle timeout.

use crate::driver::{Cmd, Conn};
use crate::listen::Transport;
use sip_proto::msg::{self, StreamItem};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, warn};

/// Bytes queued toward one connection before senders see it as full.
const WRITE_QUEUE: usize = 256;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_conn_id() -> u64 {
    NEXT_CONN.fetch_add(1, Ordering::Relaxed)
}

/// Connection counters of one endpoint.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub connected: AtomicU64,
}

/// A snapshot of an endpoint's connection counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Inbound TCP/TLS connections accepted (TLS: before the handshake).
    pub accepted: u64,
    /// Inbound connections closed at once because the cap was reached.
    pub refused: u64,
    /// Outgoing TCP/TLS connections established.
    pub connected: u64,
}

impl Counters {
    pub fn snapshot(&self) -> Stats {
        Stats {
            accepted: self.accepted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
        }
    }
}

/// What every stream connection of an endpoint shares.
#[derive(Debug, Clone)]
pub(crate) struct StreamSettings {
    pub cmd: mpsc::Sender<Cmd>,
    pub max_message: usize,
    pub idle: Duration,
    /// Bounds the TCP connect and the TLS handshake.
    pub setup_timeout: Duration,
    pub counters: Arc<Counters>,
}

/// A new connection's write queue, created before the connection exists so messages can be
/// queued while it is being set up.
pub(crate) fn write_queue() -> (mpsc::Sender<Vec<u8>>, mpsc::Receiver<Vec<u8>>) {
    mpsc::channel(WRITE_QUEUE)
}

pub(crate) async fn accept_loop(
    lst: TcpListener,
    transport: Transport,
    tls: Option<tokio_rustls::TlsAcceptor>,
    permits: Arc<Semaphore>,
    s: StreamSettings,
) {
    loop {
        let (stream, peer) = match lst.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on the error.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            s.counters.refused.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "inbound connection cap reached: closed");
            continue;
        };
        s.counters.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let s = s.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let id = next_conn_id();
            let (wtx, wrx) = write_queue();
            match tls {
                None => {
                    drive_stream(stream, peer, transport, id, wtx, wrx, &s, Origin::Inbound).await
                }
                Some(acc) => {
                    match tokio::time::timeout(s.setup_timeout, acc.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            drive_stream(tls, peer, transport, id, wtx, wrx, &s, Origin::Inbound)
                                .await
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "tls handshake failed"),
                        Err(_) => debug!(%peer, "tls handshake timed out"),
                    }
                }
            }
        });
    }
}

/// Connects to `peer` (and runs the TLS handshake when `tls` is given), then drives the
/// connection; the driver learns of a failure through `Cmd::ConnFailed`.
pub(crate) async fn connect(
    peer: SocketAddr,
    transport: Transport,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    id: u64,
    wtx: mpsc::Sender<Vec<u8>>,
    wrx: mpsc::Receiver<Vec<u8>>,
    s: StreamSettings,
) {
    let tcp = match tokio::time::timeout(s.setup_timeout, TcpStream::connect(peer)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "connect failed");
            let _ = s.cmd.send(Cmd::ConnFailed { id }).await;
            return;
        }
        Err(_) => {
            debug!(%peer, "connect timed out");
            let _ = s.cmd.send(Cmd::ConnFailed { id }).await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    match tls {
        None => {
            s.counters.connected.fetch_add(1, Ordering::Relaxed);
            drive_stream(tcp, peer, transport, id, wtx, wrx, &s, Origin::Outbound).await;
        }
        Some((connector, name)) => {
            match tokio::time::timeout(s.setup_timeout, connector.connect(name, tcp)).await {
                Ok(Ok(t)) => {
                    s.counters.connected.fetch_add(1, Ordering::Relaxed);
                    drive_stream(t, peer, transport, id, wtx, wrx, &s, Origin::Outbound).await;
                }
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "tls handshake failed");
                    let _ = s.cmd.send(Cmd::ConnFailed { id }).await;
                }
                Err(_) => {
                    debug!(%peer, "tls handshake timed out");
                    let _ = s.cmd.send(Cmd::ConnFailed { id }).await;
                }
            }
        }
    }
}

/// Who opened a connection, and so who decides when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The peer connected to our listener. It owns the connection's life (RFC 5626 spirit):
    /// a dialog may route our in-dialog requests back over it, and once closed we could only
    /// try the peer's ephemeral source port. Never idle-closed; the inbound cap bounds them.
    Inbound,
    /// We connected: closed after `idle` without traffic, reopened on demand.
    Outbound,
}

/// One connection, either direction: Content-Length framing (RFC 3261 §18.3), keep-alive
/// pongs (RFC 5626 §4.4.1), malformed messages answered when their framing survives, closed
/// when it does not, when either half fails, or (connections we opened) after `idle` without
/// traffic. The driver hears `Cmd::ConnClosed` at the end.
#[allow(clippy::too_many_arguments)]
async fn drive_stream<S>(
    stream: S,
    peer: SocketAddr,
    transport: Transport,
    id: u64,
    wtx: mpsc::Sender<Vec<u8>>,
    mut wrx: mpsc::Receiver<Vec<u8>>,
    s: &StreamSettings,
    origin: Origin,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let conn = Conn::Stream {
        id,
        tx: wtx.clone(),
    };
    let (mut rd, mut wr) = tokio::io::split(stream);
    let idle = match origin {
        Origin::Inbound => None,
        Origin::Outbound => Some(s.idle),
    };
    let base = Instant::now();
    let last_write = Arc::new(AtomicU64::new(0));
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let lw = last_write.clone();
    // A separate writer so a peer that stops reading cannot stall our reading (and the
    // other way round).
    let mut writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                b = wrx.recv() => match b {
                    Some(b) => {
                        // TLS buffers inside the session: flush pushes the records out.
                        if wr.write_all(&b).await.is_err() || wr.flush().await.is_err() {
                            break;
                        }
                        lw.store(millis_since(base), Ordering::Relaxed);
                    }
                    None => break,
                },
                _ = &mut stop_rx => break,
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut last_read = 0u64;
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16384];
    'conn: loop {
        loop {
            match msg::parse_stream(&buf, s.max_message) {
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
                        conn: conn.clone(),
                        transport,
                    };
                    if s.cmd.send(cmd).await.is_err() {
                        break 'conn;
                    }
                }
                Ok(StreamItem::Malformed(err, n)) => {
                    let bytes: Vec<u8> = buf.drain(..n.min(buf.len())).collect();
                    let _ = s
                        .cmd
                        .send(Cmd::Malformed {
                            err,
                            bytes,
                            source: peer,
                            conn: conn.clone(),
                            transport,
                        })
                        .await;
                }
                Err(err) => {
                    // Framing is lost: answer if we can, then close (RFC 3261 §18.3).
                    let bytes = std::mem::take(&mut buf);
                    let _ = s
                        .cmd
                        .send(Cmd::Malformed {
                            err,
                            bytes,
                            source: peer,
                            conn: conn.clone(),
                            transport,
                        })
                        .await;
                    break 'conn;
                }
            }
        }
        if buf.len() > s.max_message {
            break;
        }
        let idle_at = idle.and_then(|d| idle_deadline(base, last_read, &last_write, d));
        tokio::select! {
            r = rd.read(&mut chunk) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    last_read = millis_since(base);
                }
            },
            _ = &mut writer => break,
            _ = sleep_until_opt(idle_at) => {
                // The writer may have moved the deadline while we slept.
                if idle
                    .and_then(|d| idle_deadline(base, last_read, &last_write, d))
                    .is_some_and(|at| at <= Instant::now())
                {
                    debug!(%peer, "idle connection closed");
                    break;
                }
            }
        }
    }
    let _ = stop_tx.send(());
    let _ = s.cmd.send(Cmd::ConnClosed { id }).await;
}

/// When the connection counts as idle; `None` for an idle time too large to represent.
fn idle_deadline(
    base: Instant,
    last_read: u64,
    last_write: &AtomicU64,
    idle: Duration,
) -> Option<Instant> {
    let last = last_read.max(last_write.load(Ordering::Relaxed));
    base.checked_add(Duration::from_millis(last).checked_add(idle)?)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn millis_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX)
}
