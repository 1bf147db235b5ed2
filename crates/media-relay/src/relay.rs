//! A two-leg RTP/RTCP relay: symmetric RTP with latching, per-leg counters (RFC 3550
//! statistics), RTP timeout, SRTP/SRTCP per leg (either leg may be plain, so the relay
//! bridges SRTP ⇄ RTP), and, when both legs describe their peer's media, the transforms of
//! [`crate::transform`] (payload type mapping, G.711 law conversion, G.711 ⇄ Opus
//! transcoding, RFC 4733 ⇄ SIP INFO, comfort noise). One task owns both legs' sockets and
//! state: no per-packet locking or task hop. Without transforms a packet is forwarded byte for
//! byte, with no allocation unless a leg uses SRTP; only transcoding allocates per packet.

use crate::Error;
use crate::ports::RtpPair;
use crate::transform::{self, BridgeEvent, DirCounters, Direction, LegMedia, Seeds};
use media_proto::rtp::RecvStats;
use media_proto::srtp::{SessionKeys, SrtpSession};
use std::borrow::Cow;
use std::hash::{BuildHasher, Hasher};
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
    /// What this leg's peer speaks (payload types, codec, DTMF mode, CN). Given for both
    /// legs, the bridge translates between them and owns each outbound stream's SSRC,
    /// sequence numbers and timeline; `None` on both: packets pass byte for byte.
    pub media: Option<LegMedia>,
}

impl Default for LegConfig {
    /// No SDP address yet, latch to the first source, 8 kHz, plain RTP, no transforms.
    fn default() -> Self {
        LegConfig {
            remote: None,
            latch: Latch::FirstSource,
            clock_rate: 8000,
            srtp: None,
            media: None,
        }
    }
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
    /// Digits this leg's peer sent as telephone-events, reported as [`BridgeEvent::Digit`]
    /// because the other leg wants SIP INFO.
    pub digits_in: u64,
    /// Digits queued toward this leg's peer as telephone-events ([`Bridge::send_digit`]).
    pub digits_out: u64,
    /// Audio packets from this leg converted between µ-law and A-law.
    pub converted: u64,
    /// Telephone-events from this leg not forwarded: the other leg wants SIP INFO, or a
    /// digit injected toward it was playing.
    pub dropped_events: u64,
    /// Comfort noise from this leg not forwarded: the other leg did not negotiate CN.
    pub dropped_cn: u64,
    /// Audio (and CN) from this leg held back while a digit injected toward the other leg
    /// played (RFC 4733 §2.5.1.2).
    pub suppressed: u64,
    /// Audio packets from this leg transcoded between G.711 and Opus.
    pub transcoded: u64,
    /// Audio packets from this leg its codec refused (corrupt Opus, G.711 that is not a
    /// whole number of 10 ms): dropped, the stream goes on.
    pub codec_errors: u64,
    /// Gaps in this leg's Opus (lost packets: a gap in sequence numbers; corrupt ones)
    /// filled with concealed audio toward the other leg, up to 120 ms per gap.
    pub concealed: u64,
    /// Packets from this leg dropped by the transcoder for arriving after a later one.
    pub late: u64,
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
    Digit {
        to_leg_b: bool,
        digit: char,
        duration_ms: Option<u32>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
}

/// Digits waiting for the call task beyond this are dropped: the media path never waits for
/// it, and a peer flooding telephone-events cannot grow memory.
const EVENT_QUEUE: usize = 64;

/// A running relay; dropping it stops the relay.
#[derive(Debug)]
pub struct Bridge {
    cmd: mpsc::Sender<Cmd>,
    task: JoinHandle<BridgeEnd>,
    events: Option<mpsc::Receiver<BridgeEvent>>,
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

    /// Validates, decrypts (SRTP) and accounts one RTP packet received into `buf[..n]`;
    /// returns the length of what to forward, in the clear, at the start of `buf`.
    fn accept_rtp(
        &mut self,
        buf: &mut [u8],
        n: usize,
        from: SocketAddr,
        now: Instant,
    ) -> Option<usize> {
        let wire = buf.get(..n).unwrap_or_default();
        // RFC 3550 §5.1 fixed header, version 2; RTCP demultiplexed away (RFC 5761 §4).
        let (Some(b0), Some(b1)) = (wire.first(), wire.get(1)) else {
            self.counters.dropped += 1;
            return None;
        };
        if wire.len() < 12 || b0 >> 6 != 2 || (200..=204).contains(b1) {
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
        let len = match &mut self.srtp {
            // The clear packet is shorter than the wire one (no tag), so it fits in place.
            Some(s) => match s.unprotect_rtp(wire) {
                Ok(clear) => match buf.get_mut(..clear.len()) {
                    Some(dst) => {
                        dst.copy_from_slice(&clear);
                        clear.len()
                    }
                    None => {
                        self.counters.dropped += 1;
                        return None;
                    }
                },
                Err(_) => {
                    self.counters.srtp_failed += 1;
                    return None;
                }
            },
            None => n,
        };
        let buf = buf.get(..len).unwrap_or_default();
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
        Some(len)
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

    /// This leg's counters, with those of the direction from it (`inbound`) and the one
    /// toward it (`outbound`) when transforms run.
    fn snapshot(&self, inbound: Option<&Direction>, outbound: Option<&Direction>) -> LegStats {
        let mut c = self.counters.clone();
        if let Some(d) = inbound {
            let DirCounters {
                dropped,
                converted,
                dropped_events,
                dropped_cn,
                suppressed,
                digits_in,
                digits_out: _,
                transcoded,
                codec_errors,
                concealed,
                late,
            } = d.counters;
            c.dropped += dropped;
            c.converted = converted;
            c.dropped_events = dropped_events;
            c.dropped_cn = dropped_cn;
            c.suppressed = suppressed;
            c.digits_in = digits_in;
            c.transcoded = transcoded;
            c.codec_errors = codec_errors;
            c.concealed = concealed;
            c.late = late;
        }
        if let Some(d) = outbound {
            c.digits_out = d.counters.digits_out;
        }
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
    /// Outbound SSRCs, first sequence numbers and timestamps (with transforms) are random.
    ///
    /// Refused: media described for one leg only, a leg's description using one payload type
    /// twice or one above 127, and codecs that differ other than µ-law ⇄ A-law or G.711 ⇄
    /// `opus/48000`.
    pub fn start(
        a: RtpPair,
        a_cfg: LegConfig,
        b: RtpPair,
        b_cfg: LegConfig,
        timeout: Duration,
    ) -> Result<Bridge, Error> {
        // RandomState carries per-process random keys: randomness enough for RTP's SSRC and
        // initial values (RFC 3550 §5.1 wants them unpredictable, not secret).
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Bridge::start_seeded(a, a_cfg, b, b_cfg, timeout, seed)
    }

    /// [`start`](Self::start) with the outbound streams' random values drawn from `seed`.
    pub fn start_seeded(
        a: RtpPair,
        a_cfg: LegConfig,
        b: RtpPair,
        b_cfg: LegConfig,
        timeout: Duration,
        seed: u64,
    ) -> Result<Bridge, Error> {
        let (ab, ba) = match (&a_cfg.media, &b_cfg.media) {
            (None, None) => (None, None),
            (Some(ma), Some(mb)) => {
                transform::check_pair(ma, mb)?;
                let now = Instant::now().into_std();
                let mut seeds = Seeds::new(seed);
                (
                    Some(Direction::new(ma, mb, false, &mut seeds, now)),
                    Some(Direction::new(mb, ma, true, &mut seeds, now)),
                )
            }
            _ => {
                return Err(Error::Misuse(
                    "media described for one leg only: describe both or neither",
                ));
            }
        };
        let (cmd, rx) = mpsc::channel(8);
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let task = tokio::spawn(run(
            a,
            a_cfg,
            b,
            b_cfg,
            Dirs { ab, ba },
            timeout,
            rx,
            events_tx,
        ));
        Ok(Bridge {
            cmd,
            task,
            events: Some(events),
        })
    }

    pub async fn stats(&self) -> Option<BridgeStats> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Cmd::Stats(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Plays `digit` toward the peer of leg B (`to_leg_b`) or A as RFC 4733 telephone-events
    /// (say, for a SIP INFO that arrived on the other side), `duration_ms` long (default
    /// 100 ms), after any digits still queued; audio toward that peer pauses meanwhile.
    /// Refused when the bridge has no transforms, that leg wants SIP INFO itself, the
    /// character is no DTMF digit, or 32 digits are waiting.
    pub async fn send_digit(
        &self,
        to_leg_b: bool,
        digit: char,
        duration_ms: Option<u32>,
    ) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Digit {
                to_leg_b,
                digit,
                duration_ms,
                reply,
            })
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// The bridge's events (digits toward a SIP INFO leg), once; the channel closes when the
    /// bridge ends. Events beyond 64 unread ones are dropped.
    pub fn take_events(&mut self) -> Option<mpsc::Receiver<BridgeEvent>> {
        self.events.take()
    }

    /// Waits for the relay to end (RTP timeout).
    pub async fn ended(&mut self) -> BridgeEnd {
        (&mut self.task).await.unwrap_or(BridgeEnd::Stopped)
    }
}

/// Up to this many packets are drained per readiness wake-up (fairness between sockets).
const BURST: usize = 64;

/// Moves RTP from `from` to `to`, through `dir` when transforms run; `Err` on a socket
/// error other than "nothing to read".
fn pump_rtp(
    from: &mut Leg,
    to: &mut Leg,
    mut dir: Option<&mut Direction>,
    buf: &mut [u8],
    events: &mpsc::Sender<BridgeEvent>,
) -> Result<(), ()> {
    for _ in 0..BURST {
        match from.pair.rtp.try_recv_from(buf) {
            Ok((n, src)) => {
                let now = Instant::now();
                let Some(len) = from.accept_rtp(buf, n, src, now) else {
                    continue;
                };
                let Some(pkt) = buf.get_mut(..len) else {
                    continue;
                };
                if let Some(d) = dir.as_deref_mut() {
                    let forward = d.handle_rtp(now.into_std(), pkt);
                    report(d, events);
                    while let Some(t) = d.poll_transcoded() {
                        if !to.send(&t, false) {
                            from.counters.dropped += 1;
                        }
                    }
                    if !forward {
                        continue;
                    }
                }
                if !to.send(pkt, false) {
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

/// Hands a direction's digits to the call task without waiting: a full queue drops them.
fn report(dir: &mut Direction, events: &mpsc::Sender<BridgeEvent>) {
    while let Some(e) = dir.poll_event() {
        let _ = events.try_send(e);
    }
}

/// Runs a direction's timers due at `now`: ends inbound digits whose packets stopped and
/// sends the injected telephone-events that are due.
fn drive(dir: Option<&mut Direction>, to: &mut Leg, events: &mpsc::Sender<BridgeEvent>) {
    let Some(d) = dir else { return };
    let now = Instant::now().into_std();
    d.handle_timeout(now);
    while let Some(pkt) = d.poll_transmit(now) {
        // An injected packet SRTP cannot protect is lost like any other.
        let _ = to.send(&pkt, false);
    }
    report(d, events);
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

/// The two directions' transforms, when both legs describe their media: `ab` carries what
/// A's peer sends toward B's peer.
struct Dirs {
    ab: Option<Direction>,
    ba: Option<Direction>,
}

impl Dirs {
    fn poll_timeout(&self) -> Option<Instant> {
        let t = |d: &Option<Direction>| d.as_ref().and_then(Direction::poll_timeout);
        match (t(&self.ab), t(&self.ba)) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        }
        .map(Instant::from_std)
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    a: RtpPair,
    a_cfg: LegConfig,
    b: RtpPair,
    b_cfg: LegConfig,
    mut dirs: Dirs,
    timeout: Duration,
    mut cmd: mpsc::Receiver<Cmd>,
    events: mpsc::Sender<BridgeEvent>,
) -> BridgeEnd {
    let now = Instant::now();
    let (Ok(mut a), Ok(mut b)) = (Leg::new(a, a_cfg, now), Leg::new(b, b_cfg, now)) else {
        return BridgeEnd::Srtp;
    };
    let mut buf = [0u8; 2048];
    loop {
        let rtp_deadline = a.last_rx.min(b.last_rx) + timeout;
        let deadline = dirs
            .poll_timeout()
            .map_or(rtp_deadline, |t| t.min(rtp_deadline));
        let Dirs { ab, ba } = &mut dirs;
        let step = tokio::select! {
            r = a.pair.rtp.readable() => r.map_err(drop).and_then(|()| pump_rtp(&mut a, &mut b, ab.as_mut(), &mut buf, &events)),
            r = b.pair.rtp.readable() => r.map_err(drop).and_then(|()| pump_rtp(&mut b, &mut a, ba.as_mut(), &mut buf, &events)),
            r = a.pair.rtcp.readable() => r.map_err(drop).and_then(|()| pump_rtcp(&mut a, &mut b, &mut buf)),
            r = b.pair.rtcp.readable() => r.map_err(drop).and_then(|()| pump_rtcp(&mut b, &mut a, &mut buf)),
            c = cmd.recv() => match c {
                Some(Cmd::Stats(r)) => {
                    let _ = r.send(BridgeStats {
                        a: a.snapshot(ab.as_ref(), ba.as_ref()),
                        b: b.snapshot(ba.as_ref(), ab.as_ref()),
                    });
                    Ok(())
                }
                Some(Cmd::Digit { to_leg_b, digit, duration_ms, reply }) => {
                    let (dir, leg) = if to_leg_b { (ab.as_mut(), &mut b) } else { (ba.as_mut(), &mut a) };
                    let r = match dir {
                        Some(d) => {
                            let r = d.handle_digit(Instant::now().into_std(), digit, duration_ms);
                            drive(Some(d), leg, &events);
                            r
                        }
                        None => Err(Error::Misuse("the bridge has no media descriptions to send digits with")),
                    };
                    let _ = reply.send(r);
                    Ok(())
                }
                None => return BridgeEnd::Stopped,
            },
            _ = tokio::time::sleep_until(deadline) => {
                if Instant::now() >= rtp_deadline {
                    return BridgeEnd::Timeout { leg_b: b.last_rx < a.last_rx };
                }
                drive(ab.as_mut(), &mut b, &events);
                drive(ba.as_mut(), &mut a, &events);
                Ok(())
            }
        };
        if step.is_err() {
            return BridgeEnd::Io;
        }
    }
}
