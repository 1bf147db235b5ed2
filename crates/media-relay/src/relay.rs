//! A two-leg RTP/RTCP relay: symmetric RTP with latching, per-leg counters (RFC 3550
//! statistics), RTP timeout, and SRTP/SRTCP per leg (either leg may be plain, so the relay
//! bridges SRTP ⇄ RTP). One task owns both legs' sockets and state: no per-packet locking or
//! task hop, and no allocation unless a leg uses SRTP.

use crate::ports::RtpPair;
use media_proto::rtp::RecvStats;
use media_proto::srtp::{SessionKeys, SrtpSession};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How a leg decides where to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latch {
    /// Send to the address from SDP; accept only packets from it.
    Fixed,
    /// Symmetric RTP (RFC 4961) / comedia: send to the SDP address until the first packet
    /// arrives, then to that packet's source, and accept only that source afterwards (a
    /// NATed peer's SDP address is useless; a late packet from elsewhere cannot hijack).
    FirstSource,
}

#[derive(Debug, Clone, Copy)]
pub struct LegConfig {
    /// The peer's RTP address from SDP, if known (RTCP is the next port).
    pub remote: Option<SocketAddr>,
    pub latch: Latch,
    /// RTP clock rate, for jitter in timestamp units.
    pub clock_rate: u32,
    /// SDES keys when this peer speaks SRTP: what arrives is authenticated and decrypted
    /// with `inbound`, what is sent to it encrypted with `outbound`. `None`: plain RTP.
    pub srtp: Option<SessionKeys>,
}

/// Counters of one leg (what it received).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LegStats {
    pub packets: u64,
    pub bytes: u64,
    pub lost: i64,
    pub jitter_ms: f64,
    /// Packets refused and not forwarded: not RTP, from a non-latched source, or (plain
    /// RTP/RTCP headed for an SRTP peer) not encryptable.
    pub dropped: u64,
    /// SRTP packets refused by authentication or the replay check; they neither latch the
    /// leg nor keep it alive.
    pub srtp_failed: u64,
    /// SRTCP packets refused likewise (not counted in `rtcp`).
    pub srtcp_failed: u64,
    /// Packets forwarded but not counted in `packets`: RFC 3550 A.1 sequence validation had
    /// them on probation or saw a jump (a new or restarted source).
    pub unvalidated: u64,
    pub rtcp: u64,
    pub latched: Option<SocketAddr>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BridgeStats {
    pub a: LegStats,
    pub b: LegStats,
}

/// Why a bridge stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeEnd {
    /// No RTP from leg A (`false`) or B (`true`) for the timeout.
    Timeout {
        leg_b: bool,
    },
    Stopped,
    Io,
    /// A leg's SRTP keys were unusable.
    Srtp,
}

enum Cmd {
    Stats(oneshot::Sender<BridgeStats>),
}

/// A running relay; dropping it stops the relay.
#[derive(Debug)]
pub struct Bridge {
    cmd: mpsc::Sender<Cmd>,
    task: JoinHandle<BridgeEnd>,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Leg {
    pair: RtpPair,
    cfg: LegConfig,
    srtp: Option<SrtpSession>,
    peer: Option<SocketAddr>,
    stats: RecvStats,
    counters: LegStats,
    last_rx: Instant,
    started: Instant,
}

impl Leg {
    fn new(pair: RtpPair, cfg: LegConfig, now: Instant) -> Result<Self, media_proto::Error> {
        Ok(Leg {
            pair,
            peer: cfg.remote,
            srtp: cfg.srtp.as_ref().map(SrtpSession::new).transpose()?,
            cfg,
            stats: RecvStats::default(),
            counters: LegStats::default(),
            last_rx: now,
            started: now,
        })
    }

    /// Validates, decrypts (SRTP) and accounts one received RTP packet; returns what to
    /// forward, in the clear.
    fn accept_rtp<'a>(
        &mut self,
        buf: &'a [u8],
        from: SocketAddr,
        now: Instant,
    ) -> Option<Cow<'a, [u8]>> {
        // RFC 3550 §5.1 fixed header, version 2; RTCP demultiplexed away (RFC 5761 §4).
        let (Some(b0), Some(b1)) = (buf.first(), buf.get(1)) else {
            self.counters.dropped += 1;
            return None;
        };
        if buf.len() < 12 || b0 >> 6 != 2 || (200..=204).contains(b1) {
            self.counters.dropped += 1;
            return None;
        }
        let latch_now = match (self.cfg.latch, self.counters.latched) {
            (Latch::FirstSource, None) => true,
            (Latch::FirstSource, Some(l)) if l != from => {
                self.counters.dropped += 1;
                return None;
            }
            (Latch::Fixed, _) if self.cfg.remote.is_some_and(|r| r != from) => {
                self.counters.dropped += 1;
                return None;
            }
            _ => false,
        };
        // Authenticate before latching: otherwise anyone who guesses the port could take the
        // leg over with one forged packet, which is what SRTP is meant to prevent.
        let buf = match &mut self.srtp {
            Some(s) => match s.unprotect_rtp(buf) {
                Ok(clear) => Cow::Owned(Vec::from(clear)),
                Err(_) => {
                    self.counters.srtp_failed += 1;
                    return None;
                }
            },
            None => Cow::Borrowed(buf),
        };
        if latch_now {
            self.counters.latched = Some(from);
            self.peer = Some(from);
        }
        let seq = u16::from_be_bytes([
            buf.get(2).copied().unwrap_or(0),
            buf.get(3).copied().unwrap_or(0),
        ]);
        let ts = u32::from_be_bytes([
            buf.get(4).copied().unwrap_or(0),
            buf.get(5).copied().unwrap_or(0),
            buf.get(6).copied().unwrap_or(0),
            buf.get(7).copied().unwrap_or(0),
        ]);
        let arrival_units = (now.duration_since(self.started).as_micros() as u64
            * u64::from(self.cfg.clock_rate)
            / 1_000_000) as u32;
        self.last_rx = now;
        self.stats
            .update(seq, ts, buf.len().saturating_sub(12), arrival_units);
        Some(buf)
    }

    /// Sends one clear RTP or RTCP packet to this leg's peer, encrypting it for an SRTP peer.
    /// Returns false when it could not be encrypted.
    fn send(&mut self, clear: &[u8], rtcp: bool) -> bool {
        let Some(dst) = (if rtcp { self.rtcp_peer() } else { self.peer }) else {
            return true;
        };
        let sock = if rtcp {
            &self.pair.rtcp
        } else {
            &self.pair.rtp
        };
        match &mut self.srtp {
            None => {
                let _ = sock.try_send_to(clear, dst);
                true
            }
            Some(s) => {
                let wire = if rtcp {
                    s.protect_rtcp(clear)
                } else {
                    s.protect_rtp(clear)
                };
                match wire {
                    Ok(w) => {
                        let _ = sock.try_send_to(&w, dst);
                        true
                    }
                    Err(_) => false,
                }
            }
        }
    }

    fn snapshot(&self) -> LegStats {
        let mut c = self.counters.clone();
        c.packets = self.stats.packets;
        c.bytes = self.stats.bytes;
        c.lost = self.stats.lost();
        c.unvalidated = self.stats.invalid;
        c.jitter_ms = self.stats.jitter() * 1000.0 / f64::from(self.cfg.clock_rate.max(1));
        c
    }

    fn rtcp_peer(&self) -> Option<SocketAddr> {
        self.peer
            .map(|p| SocketAddr::new(p.ip(), p.port().wrapping_add(1)))
    }
}

impl Bridge {
    /// Relays between two legs until dropped or until one leg sends no RTP for `timeout`.
    pub fn start(
        a: RtpPair,
        a_cfg: LegConfig,
        b: RtpPair,
        b_cfg: LegConfig,
        timeout: Duration,
    ) -> Bridge {
        let (cmd, rx) = mpsc::channel(8);
        let task = tokio::spawn(run(a, a_cfg, b, b_cfg, timeout, rx));
        Bridge { cmd, task }
    }

    pub async fn stats(&self) -> Option<BridgeStats> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Cmd::Stats(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Waits for the relay to end (RTP timeout).
    pub async fn ended(&mut self) -> BridgeEnd {
        (&mut self.task).await.unwrap_or(BridgeEnd::Stopped)
    }
}

/// Up to this many packets are drained per readiness wake-up (fairness between sockets).
const BURST: usize = 64;

/// Moves RTP from `from` to `to`; `Err` on a socket error other than "nothing to read".
fn pump_rtp(from: &mut Leg, to: &mut Leg, buf: &mut [u8]) -> Result<(), ()> {
    for _ in 0..BURST {
        match from.pair.rtp.try_recv_from(buf) {
            Ok((n, src)) => {
                let pkt = buf.get(..n).unwrap_or_default();
                if let Some(clear) = from.accept_rtp(pkt, src, Instant::now())
                    && !to.send(&clear, false)
                {
                    from.counters.dropped += 1;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            // ICMP port unreachable from an earlier send shows up here on Linux: not fatal.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(_) => return Err(()),
        }
    }
    Ok(())
}

fn pump_rtcp(from: &mut Leg, to: &mut Leg, buf: &mut [u8]) -> Result<(), ()> {
    for _ in 0..BURST {
        match from.pair.rtcp.try_recv_from(buf) {
            Ok((n, _)) => {
                let pkt = buf.get(..n).unwrap_or_default();
                let clear = match &mut from.srtp {
                    Some(s) => match s.unprotect_rtcp(pkt) {
                        Ok(c) => Cow::Owned(Vec::from(c)),
                        Err(_) => {
                            from.counters.srtcp_failed += 1;
                            continue;
                        }
                    },
                    None => Cow::Borrowed(pkt),
                };
                from.counters.rtcp += 1;
                if !to.send(&clear, true) {
                    from.counters.dropped += 1;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(_) => return Err(()),
        }
    }
    Ok(())
}

async fn run(
    a: RtpPair,
    a_cfg: LegConfig,
    b: RtpPair,
    b_cfg: LegConfig,
    timeout: Duration,
    mut cmd: mpsc::Receiver<Cmd>,
) -> BridgeEnd {
    let now = Instant::now();
    let (Ok(mut a), Ok(mut b)) = (Leg::new(a, a_cfg, now), Leg::new(b, b_cfg, now)) else {
        return BridgeEnd::Srtp;
    };
    let mut buf = [0u8; 2048];
    loop {
        let deadline = a.last_rx.min(b.last_rx) + timeout;
        let step = tokio::select! {
            r = a.pair.rtp.readable() => r.map_err(drop).and_then(|()| pump_rtp(&mut a, &mut b, &mut buf)),
            r = b.pair.rtp.readable() => r.map_err(drop).and_then(|()| pump_rtp(&mut b, &mut a, &mut buf)),
            r = a.pair.rtcp.readable() => r.map_err(drop).and_then(|()| pump_rtcp(&mut a, &mut b, &mut buf)),
            r = b.pair.rtcp.readable() => r.map_err(drop).and_then(|()| pump_rtcp(&mut b, &mut a, &mut buf)),
            c = cmd.recv() => match c {
                Some(Cmd::Stats(r)) => {
                    let _ = r.send(BridgeStats { a: a.snapshot(), b: b.snapshot() });
                    Ok(())
                }
                None => return BridgeEnd::Stopped,
            },
            _ = tokio::time::sleep_until(deadline) => {
                return BridgeEnd::Timeout { leg_b: b.last_rx < a.last_rx };
            }
        };
        if step.is_err() {
            return BridgeEnd::Io;
        }
    }
}
