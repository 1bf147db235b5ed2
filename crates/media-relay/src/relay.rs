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
use bytes::Bytes;
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
    /// Symmetric RTP (RFC 4961) / comedia: send to the SDP address until a source is
    /// latched, then to that source, and accept only it afterwards (a NATed peer's SDP
    /// address is useless). Like Asterisk's `strictrtp`, a source is latched at once when it
    /// is the SDP address or passes SRTP authentication; any other plain RTP source must
    /// first send [`LEARN_PACKETS`] consecutive sequence numbers, its packets dropped
    /// meanwhile, so one stray or forged packet cannot take the leg. After
    /// [`RELATCH_SILENCE`] without RTP from the latched source (a NAT rebinding moved the
    /// peer's port), another source may be latched by the same rule.
    FirstSource,
}

/// Consecutive RTP sequence numbers a plain source other than the SDP address sends before
/// a [`Latch::FirstSource`] leg latches to it (Asterisk's `probation` default).
pub const LEARN_PACKETS: u8 = 4;

/// Silence of a latched source after which a [`Latch::FirstSource`] leg learns another: a
/// NAT rebinding, or a peer that moved without a re-INVITE.
pub const RELATCH_SILENCE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
pub struct LegConfig {
    /// The peer's RTP address from SDP, if known (RTCP is sent to the next port until the
    /// peer's own RTCP shows where it comes from).
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
    /// The peer is on hold and sends nothing (its SDP says recvonly or inactive): its
    /// silence does not end the bridge.
    pub hold: bool,
}

impl Default for LegConfig {
    /// No SDP address yet, latch to a learned source, 8 kHz, plain RTP, no transforms, not
    /// on hold.
    fn default() -> Self {
        LegConfig {
            remote: None,
            latch: Latch::FirstSource,
            clock_rate: 8000,
            srtp: None,
            media: None,
            hold: false,
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
    /// Packets refused and not forwarded: not RTP, from a source not latched (one still
    /// being learned included), RTCP from elsewhere than the RTCP source latched or the RTP
    /// peer's address, or (plain
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
    /// No RTP or RTCP from leg A (`false`) or B (`true`) for the timeout, that leg not on
    /// hold.
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
    /// Boxed: a `LegConfig` would make every queue slot (tokio allocates 32 at a time per
    /// bridge) its size, for a command that comes once per re-INVITE.
    Update {
        leg_b: bool,
        cfg: Box<LegConfig>,
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

/// Where a leg's packets come from and go: a UDP port pair toward its peer, or (the leg toward
/// an application in this process, e.g. a RIPT call) a pair of channels of clear RTP.
enum LegIo {
    Udp(RtpPair),
    Channel {
        inbox: mpsc::Receiver<Bytes>,
        /// Called with each outbound packet on the bridge's task: no queue, no task wake-up
        /// per packet (see [`Bridge::start_with_sink`]).
        outbox: PacketSink,
    },
}

/// Receives each clear RTP packet a channel leg sends toward its application. It runs on the
/// bridge's task, so it must not block: hand the packet on with a non-waiting send.
pub type PacketSink = Box<dyn FnMut(&[u8]) + Send>;

/// The source address a channel leg's packets carry (the leg is [`Latch::Fixed`] to it).
const CHANNEL_PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 9);

/// Packets waiting to enter a channel leg from its application; beyond it the bridge drops (it never
/// waits on its application). Deep because an application may hand over a burst in one go: a
/// RIPT call over byways gets all the chunks the server held while no GET was pending in one
/// response (a second or more of audio at the start of a call), and relays them without
/// yielding. tokio allocates a queue's slots as they fill, so an idle depth costs nothing.
const CHANNEL_DEPTH: usize = 1024;

struct Leg {
    io: LegIo,
    cfg: LegConfig,
    srtp: Option<SrtpSession>,
    peer: Option<SocketAddr>,
    /// A plain source being learned: its address, last sequence number and how many
    /// consecutive ones it sent.
    candidate: Option<(SocketAddr, u16, u8)>,
    /// The peer's RTCP source, latched apart from RTP: behind NAT it is not the RTP source's
    /// port + 1.
    rtcp_latched: Option<SocketAddr>,
    stats: RecvStats,
    counters: LegStats,
    /// When the peer last sent accepted RTP or RTCP (liveness).
    last_rx: Instant,
    /// When the latched source last sent accepted RTP.
    last_rtp: Instant,
    started: Instant,
}

impl Leg {
    fn new(io: LegIo, cfg: LegConfig, now: Instant) -> Result<Self, media_proto::Error> {
        Ok(Leg {
            io,
            peer: cfg.remote,
            candidate: None,
            rtcp_latched: None,
            srtp: cfg.srtp.as_ref().map(SrtpSession::new).transpose()?,
            cfg,
            stats: RecvStats::default(),
            counters: LegStats::default(),
            last_rx: now,
            last_rtp: now,
            started: now,
        })
    }

    /// Takes `cfg` from a re-INVITE or UPDATE, with `srtp` the session for its keys when
    /// they changed (`None`: keep the current one, its replay window and rollover counter).
    /// A moved peer (another SDP address or latch mode) is learned afresh.
    fn reconfigure(&mut self, cfg: LegConfig, srtp: Option<Option<SrtpSession>>, now: Instant) {
        if let Some(s) = srtp {
            self.srtp = s;
        }
        if cfg.remote != self.cfg.remote || cfg.latch != self.cfg.latch {
            self.peer = cfg.remote;
            self.counters.latched = None;
            self.candidate = None;
            self.rtcp_latched = None;
        }
        self.cfg = cfg;
        // The peer may just have started sending from its new place: its silence counts
        // from now, not from the old address's last packet.
        self.last_rx = now;
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
        let latch_now = match self.cfg.latch {
            Latch::Fixed if self.cfg.remote.is_some_and(|r| r != from) => {
                self.counters.dropped += 1;
                return None;
            }
            Latch::Fixed => false,
            Latch::FirstSource => match self.counters.latched {
                Some(l) if l == from => false,
                // The latched source keeps the leg while it talks.
                Some(_) if now.saturating_duration_since(self.last_rtp) < RELATCH_SILENCE => {
                    self.counters.dropped += 1;
                    return None;
                }
                _ => true,
            },
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
        let seq = u16::from_be_bytes([
            buf.get(2).copied().unwrap_or(0),
            buf.get(3).copied().unwrap_or(0),
        ]);
        if latch_now {
            // An authenticated SRTP packet, or one from where SDP said, proves the source;
            // a plain one from elsewhere could be anyone's until its stream goes on.
            if self.srtp.is_none() && self.cfg.remote != Some(from) {
                let run = match self.candidate {
                    Some((c, last, run)) if c == from && seq == last.wrapping_add(1) => {
                        run.saturating_add(1)
                    }
                    _ => 1,
                };
                self.candidate = Some((from, seq, run));
                if run < LEARN_PACKETS {
                    self.counters.dropped += 1;
                    return None;
                }
            }
            self.candidate = None;
            self.counters.latched = Some(from);
            self.peer = Some(from);
            if self.rtcp_latched.is_some_and(|r| r.ip() != from.ip()) {
                // The peer moved to another host: its RTCP will come from there too.
                self.rtcp_latched = None;
            }
        }
        let ts = u32::from_be_bytes([
            buf.get(4).copied().unwrap_or(0),
            buf.get(5).copied().unwrap_or(0),
            buf.get(6).copied().unwrap_or(0),
            buf.get(7).copied().unwrap_or(0),
        ]);
        let arrival_units = arrival_units(
            now.saturating_duration_since(self.started),
            self.cfg.clock_rate,
        );
        self.last_rx = now;
        self.last_rtp = now;
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
        let sock = match &mut self.io {
            LegIo::Udp(pair) if rtcp => &pair.rtcp,
            LegIo::Udp(pair) => &pair.rtp,
            LegIo::Channel { outbox, .. } => {
                // In-process: clear RTP only (no SRTP, no RTCP); a full channel drops.
                if !rtcp {
                    outbox(clear);
                }
                return true;
            }
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

    /// Where RTCP goes: the peer's latched RTCP source, else the port after its SDP RTP
    /// address (RFC 3550 §11), if there is one (none after 65535).
    fn rtcp_peer(&self) -> Option<SocketAddr> {
        self.rtcp_latched
            .or_else(|| self.cfg.remote.and_then(next_port))
    }

    /// Is RTCP from `src` this leg's peer's? Once latched, only from the RTCP source; before,
    /// from the host RTP is sent to (latched or from SDP). Nothing is accepted while that
    /// is unknown.
    fn rtcp_from_peer(&self, src: SocketAddr) -> bool {
        match (self.rtcp_latched, self.peer) {
            (Some(l), _) => l == src,
            (None, Some(p)) => p.ip() == src.ip(),
            (None, None) => false,
        }
    }
}

/// The arrival time of a packet `elapsed` into the leg, in units of the leg's RTP clock
/// modulo 2^32 (RFC 3550 A.8 jitter takes differences): any clock rate from SDP and any
/// call length, without overflow.
fn arrival_units(elapsed: Duration, clock_rate: u32) -> u32 {
    transform::units_wrapping(elapsed, clock_rate)
}

/// The address one port above `a`, if there is one.
fn next_port(a: SocketAddr) -> Option<SocketAddr> {
    Some(SocketAddr::new(a.ip(), a.port().checked_add(1)?))
}

impl Bridge {
    /// Relays between two legs until dropped or until one leg not on hold sends no RTP or
    /// RTCP for `timeout`.
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
        let mut seeds = Seeds::new(seed);
        let dirs = Dirs::new(&a_cfg, &b_cfg, &mut seeds, Instant::now())?;
        let (cmd, rx) = mpsc::channel(8);
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let task = tokio::spawn(run(
            LegIo::Udp(a),
            a_cfg,
            LegIo::Udp(b),
            b_cfg,
            dirs,
            seeds,
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

    /// A bridge whose leg B is not a peer on the network but an application in this process
    /// (say, a RIPT call): it exchanges clear RTP with the bridge, with all of leg B's
    /// transforms (`b_cfg.media`). Each outbound packet goes to `sink`, called on the bridge's
    /// own task so a media gateway saves a task hop (a wake-up and a context switch) per
    /// packet; the returned sender takes leg B's inbound packets, and dropping it stops the
    /// bridge. Leg B has no SRTP, no RTCP and no latching (`b_cfg`'s `remote`, `latch` and
    /// `srtp` are ignored); it is exempt from the RTP timeout (`hold`), only leg A's silence
    /// ends the bridge.
    pub fn start_with_sink(
        a: RtpPair,
        a_cfg: LegConfig,
        b_cfg: LegConfig,
        timeout: Duration,
        sink: PacketSink,
    ) -> Result<(Bridge, mpsc::Sender<Bytes>), Error> {
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let b_cfg = LegConfig {
            remote: Some(CHANNEL_PEER),
            latch: Latch::Fixed,
            srtp: None,
            hold: true,
            ..b_cfg
        };
        let mut seeds = Seeds::new(seed);
        let dirs = Dirs::new(&a_cfg, &b_cfg, &mut seeds, Instant::now())?;
        let (cmd, rx) = mpsc::channel(8);
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (to_bridge, inbox) = mpsc::channel(CHANNEL_DEPTH);
        let task = tokio::spawn(run(
            LegIo::Udp(a),
            a_cfg,
            LegIo::Channel {
                inbox,
                outbox: sink,
            },
            b_cfg,
            dirs,
            seeds,
            timeout,
            rx,
            events_tx,
        ));
        Ok((
            Bridge {
                cmd,
                task,
                events: Some(events),
            },
            to_bridge,
        ))
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

    /// Replaces leg B's (`leg_b`) or A's configuration mid-call, for a re-INVITE or UPDATE
    /// that moved the peer's media (a PBX stepping out of the media path, SBC failover):
    /// another SDP address or latch mode is learned afresh, new SRTP keys take over at once,
    /// and changed media rebuilds both directions' transforms, their outbound streams going
    /// on with the same SSRC and sequence numbers (digits still queued toward a leg are
    /// dropped). Refused like [`start`](Self::start) refuses, leaving the old configuration
    /// in place: media described for one leg only, or codecs not translated; also unusable
    /// SRTP keys.
    pub async fn update(&self, leg_b: bool, cfg: LegConfig) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Update {
                leg_b,
                cfg: Box::new(cfg),
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
/// error other than "nothing to read". `first` is a packet a channel leg already received.
fn pump_rtp(
    from: &mut Leg,
    to: &mut Leg,
    mut dir: Option<&mut Direction>,
    buf: &mut [u8],
    events: &mpsc::Sender<BridgeEvent>,
    mut first: Option<Bytes>,
) -> Result<(), ()> {
    for _ in 0..BURST {
        let (n, src) = match &mut from.io {
            LegIo::Udp(pair) => match pair.rtp.try_recv_from(buf) {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                // ICMP port unreachable from an earlier send shows up here on Linux: not fatal.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(_) => return Err(()),
            },
            LegIo::Channel { inbox, .. } => {
                let pkt = match first.take() {
                    Some(p) => p,
                    None => match inbox.try_recv() {
                        Ok(p) => p,
                        Err(_) => return Ok(()),
                    },
                };
                let Some(dst) = buf.get_mut(..pkt.len()) else {
                    from.counters.dropped += 1;
                    continue;
                };
                dst.copy_from_slice(&pkt);
                (pkt.len(), CHANNEL_PEER)
            }
        };
        forward_rtp(from, to, dir.as_deref_mut(), buf, n, src, events);
    }
    Ok(())
}

/// One RTP packet received into `buf[..n]` from `src`: accepted (latching, SRTP), transformed
/// and sent on.
fn forward_rtp(
    from: &mut Leg,
    to: &mut Leg,
    dir: Option<&mut Direction>,
    buf: &mut [u8],
    n: usize,
    src: SocketAddr,
    events: &mpsc::Sender<BridgeEvent>,
) {
    let now = Instant::now();
    let Some(len) = from.accept_rtp(buf, n, src, now) else {
        return;
    };
    let Some(pkt) = buf.get_mut(..len) else {
        return;
    };
    if let Some(d) = dir {
        let forward = d.handle_rtp(now.into_std(), pkt);
        report(d, events);
        while let Some(t) = d.poll_transcoded() {
            if !to.send(&t, false) {
                from.counters.dropped += 1;
            }
        }
        if !forward {
            return;
        }
    }
    if !to.send(pkt, false) {
        from.counters.dropped += 1;
    }
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
    let LegIo::Udp(pair) = &from.io else {
        return Ok(());
    };
    for _ in 0..BURST {
        match pair.rtcp.try_recv_from(buf) {
            Ok((n, src)) => {
                if !from.rtcp_from_peer(src) {
                    from.counters.dropped += 1;
                    continue;
                }
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
                // Latched only now: a forged SRTCP packet must not move where RTCP goes.
                from.rtcp_latched = Some(src);
                // RFC 3550 §6.2: a peer that is sending nothing still reports.
                from.last_rx = Instant::now();
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
    /// The transforms for two legs' configurations, checked as [`Bridge::start`] documents.
    fn new(a: &LegConfig, b: &LegConfig, seeds: &mut Seeds, now: Instant) -> Result<Dirs, Error> {
        match (&a.media, &b.media) {
            (None, None) => Ok(Dirs { ab: None, ba: None }),
            (Some(ma), Some(mb)) => {
                transform::check_pair(ma, mb)?;
                let now = now.into_std();
                Ok(Dirs {
                    ab: Some(Direction::new(ma, mb, false, seeds, now)),
                    ba: Some(Direction::new(mb, ma, true, seeds, now)),
                })
            }
            _ => Err(Error::Misuse(
                "media described for one leg only: describe both or neither",
            )),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let t = |d: &Option<Direction>| d.as_ref().and_then(Direction::poll_timeout);
        match (t(&self.ab), t(&self.ba)) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        }
        .map(Instant::from_std)
    }
}

/// Carries out [`Bridge::update`] on `leg`, whose other leg is configured as `other`: every
/// check and fallible step comes before the first change.
fn update(
    leg: &mut Leg,
    leg_b: bool,
    other: &LegConfig,
    cfg: LegConfig,
    dirs: &mut Dirs,
    seeds: &mut Seeds,
) -> Result<(), Error> {
    let srtp = if cfg.srtp == leg.cfg.srtp {
        None
    } else {
        let s = cfg.srtp.as_ref().map(SrtpSession::new).transpose();
        Some(s.map_err(|_| Error::Misuse("unusable srtp keys"))?)
    };
    let now = Instant::now();
    if cfg.media != leg.cfg.media {
        let (a, b) = if leg_b { (other, &cfg) } else { (&cfg, other) };
        let mut new = Dirs::new(a, b, seeds, now)?;
        // The peers keep seeing the streams they saw: same SSRC, next sequence numbers.
        for (new, old) in [(&mut new.ab, &dirs.ab), (&mut new.ba, &dirs.ba)] {
            if let (Some(n), Some(o)) = (new, old) {
                n.continue_stream(o);
            }
        }
        *dirs = new;
    }
    leg.reconfigure(cfg, srtp, now);
    Ok(())
}

/// What a leg has to read.
enum Ready {
    /// RTP: a readable socket (`None`), or a channel's first packet.
    Rtp(Option<Bytes>),
    Rtcp,
}

/// Waits until a leg has something to read. A closed channel (the application is gone) stops
/// the bridge like a socket error.
async fn leg_ready(io: &mut LegIo) -> Result<Ready, ()> {
    match io {
        LegIo::Udp(pair) => tokio::select! {
            r = pair.rtp.readable() => r.map(|()| Ready::Rtp(None)).map_err(drop),
            r = pair.rtcp.readable() => r.map(|()| Ready::Rtcp).map_err(drop),
        },
        LegIo::Channel { inbox, .. } => inbox.recv().await.map(|p| Ready::Rtp(Some(p))).ok_or(()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    a: LegIo,
    a_cfg: LegConfig,
    b: LegIo,
    b_cfg: LegConfig,
    mut dirs: Dirs,
    mut seeds: Seeds,
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
        // A leg on hold may be silent as long as it likes; no deadline past Instant's range.
        let live = |l: &Leg| (!l.cfg.hold).then_some(l.last_rx);
        let rtp_deadline = match (live(&a), live(&b)) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        }
        .and_then(|t| t.checked_add(timeout));
        let deadline = match (dirs.poll_timeout(), rtp_deadline) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        let Dirs { ab, ba } = &mut dirs;
        let step = tokio::select! {
            r = leg_ready(&mut a.io) => r.and_then(|ready| match ready {
                Ready::Rtp(first) => pump_rtp(&mut a, &mut b, ab.as_mut(), &mut buf, &events, first),
                Ready::Rtcp => pump_rtcp(&mut a, &mut b, &mut buf),
            }),
            r = leg_ready(&mut b.io) => r.and_then(|ready| match ready {
                Ready::Rtp(first) => pump_rtp(&mut b, &mut a, ba.as_mut(), &mut buf, &events, first),
                Ready::Rtcp => pump_rtcp(&mut b, &mut a, &mut buf),
            }),
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
                Some(Cmd::Update { leg_b, cfg, reply }) => {
                    let (leg, other) = if leg_b { (&mut b, &a.cfg) } else { (&mut a, &b.cfg) };
                    let _ = reply.send(update(leg, leg_b, other, *cfg, &mut dirs, &mut seeds));
                    Ok(())
                }
                None => return BridgeEnd::Stopped,
            },
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                if rtp_deadline.is_some_and(|d| Instant::now() >= d) {
                    let leg_b = !b.cfg.hold && (a.cfg.hold || b.last_rx < a.last_rx);
                    return BridgeEnd::Timeout { leg_b };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrival_time_wraps_for_any_clock_rate_and_call_length() {
        assert_eq!(arrival_units(Duration::from_millis(20), 8000), 160);
        // Ten days at a clock of 2^32 - 1 Hz: 864000 × (2^32 - 1) ≡ -864000 (mod 2^32).
        let ten_days = Duration::from_secs(864_000);
        assert_eq!(arrival_units(ten_days, u32::MAX), 864_000u32.wrapping_neg());
        // Neither the longest duration nor a zero clock panics.
        let _ = arrival_units(Duration::MAX, u32::MAX);
        assert_eq!(arrival_units(ten_days, 0), 0);
    }

    #[test]
    fn rtcp_goes_to_the_next_port_but_not_past_65535() {
        let a: SocketAddr = "192.0.2.1:5004".parse().unwrap();
        assert_eq!(next_port(a).map(|a| a.port()), Some(5005));
        assert_eq!(next_port(SocketAddr::new(a.ip(), 65535)), None);
    }
}
