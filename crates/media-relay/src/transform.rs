//! Per-direction media transforms of a bridge: what one leg's peer sends, rewritten for what
//! the other leg's peer speaks. Payload types are remapped, G.711 is converted between µ-law
//! and A-law in place, RFC 4733 telephone-events are remapped, decoded into digits (toward a
//! leg that wants SIP INFO) or injected (digits from the other side's INFO), and RFC 3389
//! comfort noise is remapped or dropped. The outbound stream owns its SSRC, sequence numbers
//! and timeline so that dropped and injected packets leave no gaps or duplicates.
//!
//! Sans-IO like the `media-proto` machines it drives: time comes in as `now`, packets are
//! rewritten in the caller's buffer, digits come out of `poll_event`, injected packets out of
//! `poll_transmit`, and `poll_timeout` says when to call back.

use crate::Error;
use media_proto::dtmf::{
    DtmfEvent, DtmfReceiver, DtmfSender, InfoDigit, ReceiverConfig, SenderConfig, char_of,
};
use media_proto::g711;
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// Longest encoding name kept (`telephone-event` is 15; audio encodings are shorter).
const MAX_NAME: usize = 16;

/// An audio encoding as SDP's rtpmap names it (RFC 4566 §6): encoding name, compared
/// case-insensitively, and clock rate.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Codec {
    /// Upper-case ASCII, zero-padded.
    name: [u8; MAX_NAME],
    len: u8,
    clock_rate: u32,
}

impl Codec {
    /// G.711 µ-law, static payload type 0 (RFC 3551 §6).
    pub const PCMU: Codec = Codec::known(b"PCMU", 8000);
    /// G.711 A-law, static payload type 8 (RFC 3551 §6).
    pub const PCMA: Codec = Codec::known(b"PCMA", 8000);

    // A const fn has no iterators; the loop is bounded by both lengths.
    #[allow(clippy::indexing_slicing)]
    const fn known(name: &[u8], clock_rate: u32) -> Codec {
        let mut n = [0u8; MAX_NAME];
        let mut i = 0;
        while i < name.len() && i < MAX_NAME {
            n[i] = name[i].to_ascii_uppercase();
            i += 1;
        }
        Codec {
            name: n,
            len: i as u8,
            clock_rate,
        }
    }

    /// The encoding `name` (e.g. `opus`, `PCMA`) at `clock_rate` Hz. Refused: an empty name,
    /// one longer than 16 bytes or not ASCII, and a zero clock rate.
    pub fn new(name: &str, clock_rate: u32) -> Result<Codec, Error> {
        if name.is_empty() || name.len() > MAX_NAME || !name.is_ascii() || clock_rate == 0 {
            return Err(Error::Misuse(
                "codec needs a short ascii name and a clock rate",
            ));
        }
        Ok(Codec::known(name.as_bytes(), clock_rate))
    }

    pub fn name(&self) -> &str {
        self.name
            .get(..usize::from(self.len))
            .and_then(|n| std::str::from_utf8(n).ok())
            .unwrap_or("")
    }

    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.name(), self.clock_rate)
    }
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Codec({self})")
    }
}

/// How a leg's peer carries DTMF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfMode {
    /// RFC 4733 telephone-events with this payload type, on the audio codec's clock.
    Rfc4733 { pt: u8 },
    /// SIP INFO (or no DTMF at all): the peer neither sends nor receives telephone-events, so
    /// digits toward it are reported as [`BridgeEvent::Digit`] for the call task to send.
    Info,
}

/// What the peer of one leg speaks, as negotiated in SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegMedia {
    /// Payload type of the audio codec.
    pub audio_pt: u8,
    pub codec: Codec,
    pub dtmf: DtmfMode,
    /// Payload type of RFC 3389 comfort noise (13 when negotiated), or `None`.
    pub cn: Option<u8>,
}

impl LegMedia {
    /// `codec` on payload type `audio_pt`, telephone-events on `dtmf`, and no CN.
    pub fn new(audio_pt: u8, codec: Codec, dtmf: DtmfMode) -> Self {
        LegMedia {
            audio_pt,
            codec,
            dtmf,
            cn: None,
        }
    }

    fn check(&self) -> Result<(), Error> {
        let te = match self.dtmf {
            DtmfMode::Rfc4733 { pt } => Some(pt),
            DtmfMode::Info => None,
        };
        let pts = [Some(self.audio_pt), te, self.cn];
        // RFC 3550 §5.1: seven bits.
        if pts.iter().flatten().any(|pt| *pt > 127) {
            return Err(Error::Misuse("payload type above 127"));
        }
        if te == Some(self.audio_pt)
            || self.cn == Some(self.audio_pt)
            || (te.is_some() && te == self.cn)
        {
            return Err(Error::Misuse("one payload type used for two formats"));
        }
        Ok(())
    }
}

/// What a bridge reports to its call task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BridgeEvent {
    /// A digit the peer of leg A (`from_leg_b == false`) or B sent as RFC 4733
    /// telephone-events toward a leg that wants SIP INFO: the call task sends it on as INFO.
    /// Reported once per key press, when it ended (its duration is known then).
    Digit {
        from_leg_b: bool,
        digit: char,
        duration_ms: u32,
    },
}

/// Counters of one direction, folded into the two legs' [`crate::LegStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DirCounters {
    /// Packets of the inbound leg with an unknown payload type or a malformed header.
    pub dropped: u64,
    pub converted: u64,
    pub dropped_events: u64,
    pub dropped_cn: u64,
    pub suppressed: u64,
    pub digits_in: u64,
    /// Digits queued toward the outbound leg.
    pub digits_out: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Law {
    UlawToAlaw,
    AlawToUlaw,
}

/// What happens to the inbound leg's telephone-events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventRoute {
    /// The inbound peer sends none (it uses INFO).
    None,
    Remap {
        from: u8,
        to: u8,
    },
    /// Decoded into digits and dropped: the outbound peer wants INFO.
    Decode {
        from: u8,
    },
}

/// Payload types and clock of the outbound stream.
#[derive(Debug, Clone, Copy)]
struct OutStream {
    ssrc: u32,
    /// Highest sequence number sent.
    max_seq: u16,
    /// Added to an inbound seq (wrapping) to give the outbound one.
    seq_off: u16,
    /// Added to an inbound timestamp (wrapping) to give the outbound one.
    ts_off: u32,
    /// The last audio packet sent: when, and its timestamp (the first sample's).
    last_audio: (Instant, u32),
    /// Timestamp step between the last two audio packets (20 ms until two are seen).
    frame: u32,
    rate: u32,
}

/// `d` in units of a `rate` Hz clock, modulo 2^32 (RTP timestamp arithmetic).
fn units_wrapping(d: Duration, rate: u32) -> u32 {
    // Truncation is the point: RTP timestamps are modulo 2^32 (RFC 3550 §5.1).
    (d.as_nanos().saturating_mul(u128::from(rate)) / 1_000_000_000) as u32
}

impl OutStream {
    fn since_audio(&self, now: Instant) -> u32 {
        units_wrapping(now.saturating_duration_since(self.last_audio.0), self.rate)
    }

    /// The timestamp a packet starting at `now` takes: the time since the last audio packet,
    /// but at least that packet's length on (it covers its own frame).
    fn ts_at(&self, now: Instant) -> u32 {
        let (_, ts) = self.last_audio;
        ts.wrapping_add(self.since_audio(now).max(self.frame))
    }

    /// The audio timeline at `now`, projected from the last audio packet: an event starting
    /// now starts there. Audio is held back by wall time while the event plays, so the
    /// event's timestamps and the audio's stay one timeline; a key pressed mid-frame starts
    /// mid-frame.
    fn clock_at(&self, now: Instant) -> u32 {
        let (_, ts) = self.last_audio;
        ts.wrapping_add(self.since_audio(now))
    }

    /// An audio packet with timestamp `ts` goes out at `now`.
    fn audio_sent(&mut self, now: Instant, ts: u32) {
        let (_, prev) = self.last_audio;
        let step = ts.wrapping_sub(prev);
        // Reordered or older packets move nothing; a step above one second is a gap in the
        // talk (silence suppression), not a frame length.
        if step >= 0x8000_0000 {
            return;
        }
        if step > 0 && step < self.rate {
            self.frame = step;
        }
        self.last_audio = (now, ts);
    }

    /// The next sequence number for a packet that has no inbound counterpart.
    fn next_injected(&mut self) -> u16 {
        self.max_seq = self.max_seq.wrapping_add(1);
        // The inbound packets after it move up one, so none reuses this number.
        self.seq_off = self.seq_off.wrapping_add(1);
        self.max_seq
    }
}

/// Offsets in an RTP packet, from a header already checked to be 12 bytes, version 2.
#[derive(Debug, Clone, Copy)]
struct Rtp {
    marker: bool,
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    /// The payload, without CSRCs, header extension and padding.
    payload: (usize, usize),
}

impl Rtp {
    /// RFC 3550 §5.1 / §5.3.1; `None` when the CSRCs, extension or padding overrun.
    fn parse(p: &[u8]) -> Option<Rtp> {
        let b: [u8; 12] = p.get(..12)?.try_into().ok()?;
        let [b0, b1, s0, s1, t0, t1, t2, t3, c0, c1, c2, c3] = b;
        let mut start = 12 + 4 * usize::from(b0 & 0x0f);
        if b0 & 0x10 != 0 {
            let len = u16::from_be_bytes([*p.get(start + 2)?, *p.get(start + 3)?]);
            start += 4 + 4 * usize::from(len);
        }
        let mut end = p.len();
        if b0 & 0x20 != 0 {
            let pad = usize::from(*p.last()?);
            if pad == 0 {
                return None;
            }
            end = end.checked_sub(pad)?;
        }
        if start > end {
            return None;
        }
        Some(Rtp {
            marker: b1 & 0x80 != 0,
            pt: b1 & 0x7f,
            seq: u16::from_be_bytes([s0, s1]),
            ts: u32::from_be_bytes([t0, t1, t2, t3]),
            ssrc: u32::from_be_bytes([c0, c1, c2, c3]),
            payload: (start, end),
        })
    }
}

/// Is `a` after `b` in RFC 3550 sequence space?
fn seq_after(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// SplitMix64: spreads one seed over the few random values a direction needs.
#[derive(Debug)]
pub(crate) struct Seeds(u64);

impl Seeds {
    pub fn new(seed: u64) -> Self {
        Seeds(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Interval between updates of an injected event: the usual 20 ms ptime of telephony audio
/// (RFC 4733 §2.5.1.2 asks for the audio's packetisation interval).
const EVENT_INTERVAL: Duration = Duration::from_millis(20);

/// Checks that two legs can be bridged: each description is consistent, and the codecs are
/// the same or the two G.711 laws.
pub(crate) fn check_pair(a: &LegMedia, b: &LegMedia) -> Result<(), Error> {
    a.check()?;
    b.check()?;
    if a.codec == b.codec || law(a.codec, b.codec).is_some() {
        Ok(())
    } else {
        Err(Error::UnsupportedCodecs {
            a: a.codec,
            b: b.codec,
        })
    }
}

fn law(from: Codec, to: Codec) -> Option<Law> {
    match (from, to) {
        (Codec::PCMU, Codec::PCMA) => Some(Law::UlawToAlaw),
        (Codec::PCMA, Codec::PCMU) => Some(Law::AlawToUlaw),
        _ => None,
    }
}

/// The transform of one direction: packets from the peer of leg `from` to the peer of leg
/// `to`, and digits injected toward `to`.
#[derive(Debug)]
pub(crate) struct Direction {
    from_b: bool,
    in_audio: u8,
    out_audio: u8,
    law: Option<Law>,
    events: EventRoute,
    /// CN payload types in and out; `Some((pt, None))` drops the inbound CN.
    cn: Option<(u8, Option<u8>)>,
    /// Decodes the inbound telephone-events when the outbound peer wants INFO.
    receiver: Option<DtmfReceiver>,
    receiver_cfg: ReceiverConfig,
    /// Plays digits toward an RFC 4733 outbound peer, with its telephone-event payload type.
    sender: Option<(DtmfSender, u8)>,
    out: OutStream,
    /// SSRC of the inbound source the offsets were taken for.
    in_ssrc: Option<u32>,
    digits: VecDeque<BridgeEvent>,
    pub counters: DirCounters,
}

impl Direction {
    /// `from` and `to` must have passed [`check_pair`].
    pub fn new(
        from: &LegMedia,
        to: &LegMedia,
        from_b: bool,
        seeds: &mut Seeds,
        now: Instant,
    ) -> Self {
        let rate = to.codec.clock_rate.max(1);
        let r = seeds.next_u64();
        // RFC 3550 §5.1: SSRC, first sequence number and first timestamp are random.
        let ssrc = (r >> 32) as u32;
        let first_seq = (r >> 16) as u16;
        let first_ts = seeds.next_u64() as u32;
        let events = match (from.dtmf, to.dtmf) {
            (DtmfMode::Info, _) => EventRoute::None,
            (DtmfMode::Rfc4733 { pt: f }, DtmfMode::Rfc4733 { pt: t }) => {
                EventRoute::Remap { from: f, to: t }
            }
            (DtmfMode::Rfc4733 { pt }, DtmfMode::Info) => EventRoute::Decode { from: pt },
        };
        let receiver_cfg = ReceiverConfig::new(rate);
        let sender = match to.dtmf {
            DtmfMode::Rfc4733 { pt } => {
                let cfg = SenderConfig {
                    interval: EVENT_INTERVAL,
                    ..SenderConfig::new(rate)
                };
                Some((DtmfSender::new(cfg, now, first_ts), pt))
            }
            DtmfMode::Info => None,
        };
        Direction {
            from_b,
            in_audio: from.audio_pt,
            out_audio: to.audio_pt,
            law: law(from.codec, to.codec),
            events,
            cn: from.cn.map(|f| (f, to.cn)),
            receiver: matches!(events, EventRoute::Decode { .. })
                .then(|| DtmfReceiver::new(receiver_cfg)),
            receiver_cfg,
            sender,
            out: OutStream {
                ssrc,
                max_seq: first_seq.wrapping_sub(1),
                seq_off: 0,
                ts_off: 0,
                last_audio: (now, first_ts),
                frame: rate / 50,
                rate,
            },
            in_ssrc: None,
            digits: VecDeque::new(),
            counters: DirCounters::default(),
        }
    }

    /// A new inbound source (the first one, or an SSRC change): its next packet continues
    /// the outbound stream where it is, in sequence and in time.
    fn follow_source(&mut self, now: Instant, p: &Rtp) {
        self.in_ssrc = Some(p.ssrc);
        self.out.seq_off = self.out.max_seq.wrapping_add(1).wrapping_sub(p.seq);
        self.out.ts_off = self.out.ts_at(now).wrapping_sub(p.ts);
        // RFC 4733 events are tracked per SSRC; a digit in progress on the old source ends
        // with it.
        if self.receiver.is_some() {
            self.finish_receiver(now);
            self.receiver = Some(DtmfReceiver::new(self.receiver_cfg));
        }
    }

    fn finish_receiver(&mut self, now: Instant) {
        if let Some(r) = &mut self.receiver {
            r.handle_timeout(now);
            while let Some(e) = r.poll_event() {
                if let DtmfEvent::Ended {
                    event, duration_ms, ..
                } = e
                    && let Some(digit) = char_of(event)
                {
                    self.counters.digits_in += 1;
                    self.digits.push_back(BridgeEvent::Digit {
                        from_leg_b: self.from_b,
                        digit,
                        duration_ms,
                    });
                }
            }
        }
    }

    fn suppressing(&self, now: Instant) -> bool {
        self.sender
            .as_ref()
            .is_some_and(|(s, _)| s.suppress_audio(now))
    }

    /// One clear RTP packet from the inbound peer, rewritten in place for the outbound
    /// peer. Returns false when it is not to be forwarded.
    pub fn handle_rtp(&mut self, now: Instant, pkt: &mut [u8]) -> bool {
        let Some(p) = Rtp::parse(pkt) else {
            self.counters.dropped += 1;
            return false;
        };
        if self.in_ssrc != Some(p.ssrc) {
            self.follow_source(now, &p);
        }
        let suppress = self.suppressing(now);
        let out_pt = if p.pt == self.in_audio {
            if suppress {
                // RFC 4733 §2.5.1.2: no audio while an injected event plays.
                self.counters.suppressed += 1;
                None
            } else {
                if let Some(law) = self.law
                    && let Some(payload) = pkt.get_mut(p.payload.0..p.payload.1)
                {
                    match law {
                        Law::UlawToAlaw => g711::ulaw_to_alaw_in_place(payload),
                        Law::AlawToUlaw => g711::alaw_to_ulaw_in_place(payload),
                    }
                    self.counters.converted += 1;
                }
                Some(self.out_audio)
            }
        } else {
            match self.events {
                EventRoute::Remap { from, to } if p.pt == from => {
                    if suppress {
                        // Our injected digit owns the event timeline toward the peer now.
                        self.counters.dropped_events += 1;
                        None
                    } else {
                        Some(to)
                    }
                }
                EventRoute::Decode { from } if p.pt == from => {
                    self.counters.dropped_events += 1;
                    let payload = pkt.get(p.payload.0..p.payload.1).unwrap_or_default();
                    if let Some(r) = &mut self.receiver {
                        // A malformed payload is not a digit; it is dropped all the same.
                        let _ = r.handle_packet(now, p.ts, p.marker, payload);
                    }
                    self.finish_receiver(now);
                    None
                }
                _ => match self.cn {
                    Some((from, Some(to))) if p.pt == from => {
                        if suppress {
                            self.counters.suppressed += 1;
                            None
                        } else {
                            Some(to)
                        }
                    }
                    Some((from, None)) if p.pt == from => {
                        // The outbound peer did not negotiate CN: it sees silence
                        // suppression instead (RFC 3389 §4).
                        self.counters.dropped_cn += 1;
                        None
                    }
                    _ => {
                        // Not negotiated on the inbound leg: the outbound peer would
                        // misread it under its own payload type numbering.
                        self.counters.dropped += 1;
                        None
                    }
                },
            }
        };
        let Some(out_pt) = out_pt else {
            // The packets after it move down one, so the dropped one leaves no gap.
            self.out.seq_off = self.out.seq_off.wrapping_sub(1);
            return false;
        };
        let seq = p.seq.wrapping_add(self.out.seq_off);
        if seq_after(seq, self.out.max_seq) {
            self.out.max_seq = seq;
        }
        let ts = p.ts.wrapping_add(self.out.ts_off);
        if out_pt == self.out_audio {
            // Audio anchors the outbound clock, for injected events and the next source.
            self.out.audio_sent(now, ts);
            if let Some((s, _)) = &mut self.sender
                && !s.is_idle()
            {
                // A digit queued behind another one starts on this clock.
                s.handle_media_clock(now, ts);
            }
        }
        write_header(pkt, p.marker, out_pt, seq, ts, self.out.ssrc);
        true
    }

    /// Queues a digit toward the outbound peer as RFC 4733 events.
    pub fn handle_digit(
        &mut self,
        now: Instant,
        digit: char,
        duration_ms: Option<u32>,
    ) -> Result<(), Error> {
        let Some((s, _)) = &mut self.sender else {
            return Err(Error::Misuse(
                "the leg takes dtmf as sip info, not telephone-events",
            ));
        };
        if s.is_idle() {
            s.handle_media_clock(now, self.out.clock_at(now));
        }
        s.handle_info(now, &InfoDigit { digit, duration_ms })
            .map_err(|e| match e {
                media_proto::Error::Misuse(m) => Error::Misuse(m),
                _ => Error::Misuse("digit refused"),
            })?;
        self.counters.digits_out += 1;
        Ok(())
    }

    /// Ends an inbound digit whose packets stopped.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.finish_receiver(now);
    }

    /// The next injected telephone-event packet due at `now`, as a complete RTP packet.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<[u8; 16]> {
        let (s, pt) = self.sender.as_mut()?;
        let pt = *pt;
        let e = s.poll_transmit(now)?;
        let seq = self.out.next_injected();
        let [p0, p1, p2, p3] = e.payload.encode();
        // Version 2, no padding, extension or CSRCs; the header is filled in below.
        let mut pkt = [0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, p0, p1, p2, p3];
        write_header(&mut pkt, e.marker, pt, seq, e.timestamp, self.out.ssrc);
        Some(pkt)
    }

    pub fn poll_event(&mut self) -> Option<BridgeEvent> {
        self.digits.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) and drain `poll_transmit`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let r = self.receiver.as_ref().and_then(DtmfReceiver::poll_timeout);
        let s = self.sender.as_ref().and_then(|(s, _)| s.poll_timeout());
        match (r, s) {
            (Some(r), Some(s)) => Some(r.min(s)),
            (r, s) => r.or(s),
        }
    }
}

/// Writes marker, payload type, seq, timestamp and SSRC into a header of at least 12 bytes,
/// keeping version, padding, extension and CSRC count.
fn write_header(pkt: &mut [u8], marker: bool, pt: u8, seq: u16, ts: u32, ssrc: u32) {
    let (s, t, c) = (seq.to_be_bytes(), ts.to_be_bytes(), ssrc.to_be_bytes());
    let h = [
        (u8::from(marker) << 7) | (pt & 0x7f),
        s[0],
        s[1],
        t[0],
        t[1],
        t[2],
        t[3],
        c[0],
        c[1],
        c[2],
        c[3],
    ];
    if let Some(dst) = pkt.get_mut(1..12) {
        dst.copy_from_slice(&h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use media_proto::dtmf::TelephoneEvent;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, pt];
        p.extend(seq.to_be_bytes());
        p.extend(ts.to_be_bytes());
        p.extend(ssrc.to_be_bytes());
        p.extend(payload);
        p
    }

    fn hdr(p: &[u8]) -> (u8, u16, u32, u32) {
        let r = Rtp::parse(p).unwrap();
        (r.pt, r.seq, r.ts, r.ssrc)
    }

    fn pcmu(pt: u8, dtmf: DtmfMode, cn: Option<u8>) -> LegMedia {
        LegMedia {
            cn,
            ..LegMedia::new(pt, Codec::PCMU, dtmf)
        }
    }

    fn pair(from: LegMedia, to: LegMedia, now: Instant) -> Direction {
        check_pair(&from, &to).unwrap();
        Direction::new(&from, &to, false, &mut Seeds::new(7), now)
    }

    #[test]
    fn codec_names_compare_case_insensitively_and_refuse_nonsense() {
        assert_eq!(Codec::new("pcmu", 8000).unwrap(), Codec::PCMU);
        let opus = Codec::new("opus", 48000).unwrap();
        assert_eq!(Codec::new("OPUS", 48000).unwrap(), opus);
        assert_ne!(Codec::new("opus", 16000).unwrap(), opus);
        assert_eq!(Codec::new("opus", 48000).unwrap().to_string(), "OPUS/48000");
        assert!(Codec::new("", 8000).is_err());
        assert!(Codec::new("x-a-very-long-name", 8000).is_err());
        assert!(Codec::new("pcmµ", 8000).is_err());
        assert!(Codec::new("PCMU", 0).is_err());
    }

    #[test]
    fn pairs_refused_for_other_codecs_and_clashing_payload_types() {
        let opus = LegMedia::new(
            111,
            Codec::new("opus", 48000).unwrap(),
            DtmfMode::Rfc4733 { pt: 101 },
        );
        let a = pcmu(0, DtmfMode::Info, None);
        assert!(matches!(
            check_pair(&a, &opus),
            Err(Error::UnsupportedCodecs { .. })
        ));
        assert!(check_pair(&opus, &opus).is_ok(), "same codec: remap only");
        let pcma = LegMedia::new(8, Codec::PCMA, DtmfMode::Info);
        assert!(check_pair(&a, &pcma).is_ok());
        let clash = pcmu(0, DtmfMode::Rfc4733 { pt: 13 }, Some(13));
        assert!(matches!(check_pair(&clash, &a), Err(Error::Misuse(_))));
        let clash = pcmu(101, DtmfMode::Rfc4733 { pt: 101 }, None);
        assert!(matches!(check_pair(&a, &clash), Err(Error::Misuse(_))));
        let big = pcmu(128, DtmfMode::Info, None);
        assert!(matches!(check_pair(&a, &big), Err(Error::Misuse(_))));
    }

    #[test]
    fn parse_finds_the_payload_behind_csrcs_and_extension_and_before_padding() {
        // Two CSRCs, a one-word extension, 4 payload bytes, 3 bytes of padding.
        let mut p = vec![0xb2, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        p.extend([0u8; 8]);
        p.extend([0xbe, 0xde, 0, 1, 1, 2, 3, 4]);
        p.extend([0xff, 0x7f, 0x00, 0x80]);
        p.extend([0, 0, 3]);
        assert_eq!(Rtp::parse(&p).unwrap().payload, (28, 32));
        // The extension claims more than there is; padding longer than the packet; zero.
        let mut long_ext = p.clone();
        long_ext[22] = 0xff;
        assert!(Rtp::parse(&long_ext).is_none());
        let mut pad = p.clone();
        *pad.last_mut().unwrap() = 200;
        assert!(Rtp::parse(&pad).is_none());
        *pad.last_mut().unwrap() = 0;
        assert!(Rtp::parse(&pad).is_none());
        assert!(Rtp::parse(&p[..11]).is_none());
    }

    #[test]
    fn law_conversion_touches_the_payload_only() {
        let t0 = Instant::now();
        let from = pcmu(0, DtmfMode::Info, None);
        let to = LegMedia::new(8, Codec::PCMA, DtmfMode::Info);
        let mut d = pair(from, to, t0);
        let payload: Vec<u8> = (0..=255u8).collect();
        let mut p = rtp(0, 10, 1000, 42, &payload);
        p[0] |= 0x20;
        p.extend([9, 9, 3]);
        assert!(d.handle_rtp(t0, &mut p));
        let mut want = payload.clone();
        g711::ulaw_to_alaw_in_place(&mut want);
        assert_eq!(&p[12..268], &want[..]);
        assert_eq!(&p[268..], &[9, 9, 3], "padding kept");
        assert_eq!(p[1], 8);
        assert_eq!(d.counters.converted, 1);
    }

    #[test]
    fn dropped_packets_and_a_new_source_leave_no_gap_in_seq_or_time() {
        let t0 = Instant::now();
        // The outbound leg has no CN: the inbound CN is dropped.
        let mut d = pair(
            pcmu(0, DtmfMode::Info, Some(13)),
            pcmu(0, DtmfMode::Info, None),
            t0,
        );
        let mut out = Vec::new();
        for i in 0..6u16 {
            let t = t0 + ms(20 * u64::from(i));
            let pt = if i == 3 { 13 } else { 0 };
            let mut p = rtp(pt, 500 + i, 9000 + 160 * u32::from(i), 42, &[0xff; 160]);
            if d.handle_rtp(t, &mut p) {
                out.push(hdr(&p));
            }
        }
        assert_eq!(d.counters.dropped_cn, 1);
        // A packet of a payload type nobody negotiated: dropped too.
        let mut junk = rtp(96, 506, 9960, 42, &[1]);
        assert!(!d.handle_rtp(t0 + ms(120), &mut junk));
        assert_eq!(d.counters.dropped, 1);
        // The source restarts with a new SSRC, seq and timestamp, 40 ms after the last one.
        for i in 0..3u16 {
            let t = t0 + ms(140 + 20 * u64::from(i));
            let mut p = rtp(0, 7 + i, 77 + 160 * u32::from(i), 99, &[0xff; 160]);
            assert!(d.handle_rtp(t, &mut p));
            out.push(hdr(&p));
        }
        let ssrc = out[0].3;
        assert!(out.iter().all(|h| h.3 == ssrc && h.0 == 0), "{out:?}");
        for w in out.windows(2) {
            assert_eq!(w[1].1, w[0].1.wrapping_add(1), "seq continuous: {out:?}");
        }
        // Inbound 4 follows 2 after the dropped CN: its time gap is kept.
        assert_eq!(out[3].2.wrapping_sub(out[2].2), 320);
        // The new source continues where the outbound clock is: 40 ms after the last audio.
        assert_eq!(out[5].2.wrapping_sub(out[4].2), 320);
        assert_eq!(out[6].2.wrapping_sub(out[5].2), 160);
    }

    #[test]
    fn injected_digit_takes_the_next_seqs_and_suppresses_audio_while_it_plays() {
        let t0 = Instant::now();
        let mut d = pair(
            pcmu(0, DtmfMode::Info, None),
            pcmu(0, DtmfMode::Rfc4733 { pt: 101 }, None),
            t0,
        );
        assert!(d.poll_timeout().is_none());
        let mut seqs = Vec::new();
        let mut events = Vec::new();
        let mut audio_ts = Vec::new();
        for i in 0..20u16 {
            let t = t0 + ms(20 * u64::from(i));
            if i == 3 {
                d.handle_digit(t, '9', Some(100)).unwrap();
            }
            while d.poll_timeout().is_some_and(|x| x <= t) {
                d.handle_timeout(t);
                let Some(p) = d.poll_transmit(t) else { break };
                let h = hdr(&p);
                assert_eq!(h.0, 101);
                seqs.push(h.1);
                events.push((
                    h.2,
                    p[1] & 0x80 != 0,
                    TelephoneEvent::decode(&p[12..]).unwrap(),
                ));
            }
            let mut p = rtp(0, 100 + i, 160 * u32::from(i), 5, &[0xff; 160]);
            if d.handle_rtp(t, &mut p) {
                let h = hdr(&p);
                seqs.push(h.1);
                audio_ts.push(h.2);
            }
        }
        for w in seqs.windows(2) {
            assert_eq!(w[1], w[0].wrapping_add(1), "{seqs:?}");
        }
        assert_eq!(d.counters.digits_out, 1);
        assert_eq!(d.counters.suppressed, 5, "100 ms of 20 ms packets");
        assert!(events[0].1, "marker on the first event packet");
        assert!(events.iter().all(|e| e.2.event == 9 && e.0 == events[0].0));
        let ends = events.iter().filter(|e| e.2.end).count();
        assert_eq!(ends, 3);
        assert_eq!(events.last().unwrap().2.duration, 800);
        // The event starts on the audio timeline: after the last audio before it.
        assert_eq!(events[0].0.wrapping_sub(audio_ts[2]), 160);
        assert!(matches!(
            d.handle_digit(t0, 'x', None),
            Err(Error::Misuse(_))
        ));
    }

    #[test]
    fn telephone_events_toward_an_info_leg_become_one_digit_each() {
        let t0 = Instant::now();
        let mut d = pair(
            pcmu(0, DtmfMode::Rfc4733 { pt: 101 }, None),
            pcmu(0, DtmfMode::Info, None),
            t0,
        );
        assert!(matches!(
            d.handle_digit(t0, '1', None),
            Err(Error::Misuse(_))
        ));
        let te = |end, duration| {
            TelephoneEvent {
                event: 11,
                end,
                volume: 10,
                duration,
            }
            .encode()
        };
        let mut seq = 0;
        let mut send = |d: &mut Direction, t, payload: [u8; 4]| {
            seq += 1;
            let mut p = rtp(101, seq, 4000, 1, &payload);
            assert!(!d.handle_rtp(t0 + ms(t), &mut p));
        };
        send(&mut d, 0, te(false, 160));
        send(&mut d, 20, te(false, 320));
        assert_eq!(d.poll_event(), None);
        send(&mut d, 40, te(true, 480));
        send(&mut d, 60, te(true, 480));
        assert_eq!(
            d.poll_event(),
            Some(BridgeEvent::Digit {
                from_leg_b: false,
                digit: '#',
                duration_ms: 60
            })
        );
        assert_eq!(d.poll_event(), None);
        assert_eq!(d.counters.dropped_events, 4);
        // A digit whose end packets are lost ends by timeout.
        let mut p = rtp(101, 50, 8000, 1, &te(false, 160));
        d.handle_rtp(t0 + ms(500), &mut p);
        let when = d.poll_timeout().unwrap();
        d.handle_timeout(when);
        assert!(matches!(
            d.poll_event(),
            Some(BridgeEvent::Digit {
                digit: '#',
                duration_ms: 20,
                ..
            })
        ));
        assert_eq!(d.counters.digits_in, 2);
    }
}
