//! Per-direction media transforms of a bridge: what one leg's peer sends, rewritten for what
//! the other leg's peer speaks. Payload types are remapped, G.711 is converted between µ-law
//! and A-law in place or transcoded to and from Opus (`media-codec`), RFC 4733
//! telephone-events are remapped (rescaled between 8 and 48 kHz beside Opus), decoded into
//! digits (toward a leg that wants SIP INFO) or injected (digits from the other side's INFO),
//! and RFC 3389 comfort noise is remapped or dropped. The outbound stream owns its SSRC,
//! sequence numbers and timeline so that dropped and injected packets leave no gaps or
//! duplicates.
//!
//! Sans-IO like the `media-proto` machines it drives: time comes in as `now`, packets are
//! rewritten in the caller's buffer, transcoded audio comes out of `poll_transcoded`, digits
//! out of `poll_event`, injected packets out of `poll_transmit`, and `poll_timeout` says when
//! to call back.

use crate::Error;
use media_codec::{G711Law, G711ToOpus, OpusToG711, TimestampMap, TranscoderConfig};
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
    /// Opus, whose rtpmap is `opus/48000/2` whatever the audio's rate and channels: the RTP
    /// clock is 48 kHz (RFC 7587 §4.1, §7). Dynamic payload type.
    pub const OPUS: Codec = Codec::known(b"OPUS", 48_000);

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
    /// RFC 4733 telephone-events with this payload type, on the audio codec's clock
    /// (`telephone-event/48000` beside Opus, RFC 7587 §4.1; the bridge rescales timestamps
    /// and durations when the other leg's clock differs).
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
    /// Audio packets transcoded between G.711 and Opus.
    pub transcoded: u64,
    /// Audio packets the codec refused (corrupt Opus, G.711 that is not whole 10 ms): dropped.
    pub codec_errors: u64,
    /// Gaps in the inbound Opus sequence (lost or corrupt packets) filled with concealment.
    pub concealed: u64,
    /// Packets dropped on a transcoding path for arriving after a later one of their source.
    pub late: u64,
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
/// the same, the two G.711 laws, or G.711 and Opus.
pub(crate) fn check_pair(a: &LegMedia, b: &LegMedia) -> Result<(), Error> {
    a.check()?;
    b.check()?;
    if a.codec == b.codec
        || law(a.codec, b.codec).is_some()
        || transcode(a.codec, b.codec).is_some()
    {
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

fn g711_law(c: Codec) -> Option<G711Law> {
    match c {
        Codec::PCMU => Some(G711Law::Ulaw),
        Codec::PCMA => Some(G711Law::Alaw),
        _ => None,
    }
}

/// Which way a direction transcodes, if it does: G.711 (either law) ⇄ Opus.
fn transcode(from: Codec, to: Codec) -> Option<Coding> {
    match (g711_law(from), g711_law(to)) {
        (Some(law), None) if to == Codec::OPUS => Some(Coding::ToOpus(law)),
        (None, Some(law)) if from == Codec::OPUS => Some(Coding::FromOpus(law)),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    /// G.711 of this law in, Opus out.
    ToOpus(G711Law),
    /// Opus in, G.711 of this law out.
    FromOpus(G711Law),
}

/// The codec of one transcoding direction, built at a source's first audio packet so that its
/// timestamps start where the outbound stream stands.
#[derive(Debug)]
enum Coder {
    None,
    Encode(G711ToOpus),
    Decode(OpusToG711),
}

/// Longest inbound gap concealed, in 48 kHz ticks: 120 ms, the most one concealment call
/// covers (RFC 6716 §3.2.5). Beyond it PLC has faded to silence anyway (libopus attenuates
/// within a few frames), so the rest of a longer gap is left as a timestamp gap.
const MAX_CONCEAL: u32 = 5_760;
/// RFC 3550 §A.1's bounds on a sequence number jump that is still loss (ahead) or
/// reordering (behind); a larger one is a restarted source.
const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;
/// Concealment works in whole 2.5 ms frames (RFC 6716 §2.1.4), in 48 kHz ticks.
const CONCEAL_UNIT: u32 = 120;
/// G.711 toward the outbound peer goes out in packets of 20 ms (160 samples), the usual
/// telephony ptime (RFC 3551 §4.5), whatever frame size the Opus peer chose.
const G711_PACKET: usize = 160;

/// G.711 ⇄ Opus state of a direction. The codec's timestamps are the outbound ones, so the
/// outbound timeline is kept here per inbound source rather than as an offset.
#[derive(Debug)]
struct Transcoder {
    coding: Coding,
    coder: Coder,
    /// The inbound source's timestamps on the outbound clock (×6 or ÷6), anchored where the
    /// outbound stream stood when the source appeared; events and the codec share it.
    ts_map: TimestampMap,
    /// The last inbound sequence number taken from this source.
    last_seq: Option<u16>,
    /// Transcoded packets for the outbound peer, as complete RTP packets.
    queue: VecDeque<Vec<u8>>,
}

impl Transcoder {
    fn new(coding: Coding) -> Self {
        Transcoder {
            coding,
            coder: Coder::None,
            ts_map: Transcoder::map(coding, 0),
            last_seq: None,
            queue: VecDeque::new(),
        }
    }

    fn map(coding: Coding, out_base: u32) -> TimestampMap {
        match coding {
            Coding::ToOpus(_) => TimestampMap::g711_to_opus(out_base),
            Coding::FromOpus(_) => TimestampMap::opus_to_g711(out_base),
        }
    }

    /// A new inbound source whose first packet maps to `out_base`: a new codec follows (the
    /// Opus stream it decodes, or the one it encodes for, restarts with it).
    fn follow_source(&mut self, out_base: u32) {
        self.ts_map = Transcoder::map(self.coding, out_base);
        self.coder = Coder::None;
        self.last_seq = None;
    }

    /// An RFC 4733 payload's duration fields rescaled between the legs' clocks; a duration
    /// ×6 beyond 16 bits is cut to 65535 ticks (1.36 s at 48 kHz: RFC 4733 §2.5.1.3 long
    /// events are segmented by their sender, which the 8 kHz one did not need to do yet).
    fn rescale_event(&self, payload: &mut [u8]) {
        for e in payload.chunks_exact_mut(4) {
            if let [_, _, d0, d1] = e {
                let d = u32::from(u16::from_be_bytes([*d0, *d1]));
                let scaled = match self.coding {
                    Coding::ToOpus(_) => d * media_codec::OPUS_TICKS_PER_G711_SAMPLE,
                    Coding::FromOpus(_) => d / media_codec::OPUS_TICKS_PER_G711_SAMPLE,
                };
                let [h, l] = u16::try_from(scaled).unwrap_or(u16::MAX).to_be_bytes();
                (*d0, *d1) = (h, l);
            }
        }
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
    /// G.711 ⇄ Opus; `None` when the audio passes as it is (or as the other G.711 law).
    transcoder: Option<Transcoder>,
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
        // The inbound events run on the inbound leg's clock (48 kHz beside Opus).
        let receiver_cfg = ReceiverConfig::new(from.codec.clock_rate.max(1));
        let transcoder = transcode(from.codec, to.codec).map(Transcoder::new);
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
            // Opus has no RFC 3389 CN (it has DTX, RFC 7587 §3.1.3): CN is dropped either way.
            cn: from.cn.map(|f| (f, to.cn.filter(|_| transcoder.is_none()))),
            receiver: matches!(events, EventRoute::Decode { .. })
                .then(|| DtmfReceiver::new(receiver_cfg)),
            receiver_cfg,
            sender,
            transcoder,
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
        if let Some(t) = &mut self.transcoder {
            t.follow_source(self.out.ts_at(now));
        }
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
        if self.transcoder.is_some() {
            return self.handle_transcoded(now, pkt, &p);
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

    /// [`handle_rtp`](Self::handle_rtp) on a transcoding direction: audio is transcoded into
    /// the [`poll_transcoded`](Self::poll_transcoded) queue, telephone-events are rescaled to
    /// the outbound clock in place (or decoded into digits), CN is dropped. Outbound sequence
    /// numbers are taken as packets leave: one inbound packet may give none, one or several.
    fn handle_transcoded(&mut self, now: Instant, pkt: &mut [u8], p: &Rtp) -> bool {
        let suppress = self.suppressing(now);
        let here = self.out.ts_at(now);
        let Some(t) = self.transcoder.as_mut() else {
            return false;
        };
        if let Some(last) = t.last_seq {
            let ahead = p.seq.wrapping_sub(last);
            if ahead > MAX_DROPOUT && ahead <= u16::MAX - MAX_MISORDER {
                // RFC 3550 §A.1: a jump this far is the source restarting (same SSRC, new
                // seq and timestamps), not loss or reordering: follow it like a new source.
                t.follow_source(here);
            } else if !seq_after(p.seq, last) {
                // Its moment has passed (the decoder concealed it, the encoder moved on),
                // and sending it now would put the outbound sequence out of order.
                self.counters.late += 1;
                return false;
            }
        }
        let prev_seq = t.last_seq.replace(p.seq);
        let ts = t.ts_map.map(p.ts);
        if p.pt == self.in_audio {
            if suppress {
                // RFC 4733 §2.5.1.2: no audio while an injected event plays.
                self.counters.suppressed += 1;
            } else {
                let payload = pkt.get(p.payload.0..p.payload.1).unwrap_or_default();
                self.transcode_audio(now, p, prev_seq, ts, payload);
            }
            return false;
        }
        match self.events {
            EventRoute::Remap { from, to } if p.pt == from => {
                if suppress {
                    // Our injected digit owns the event timeline toward the peer now.
                    self.counters.dropped_events += 1;
                    return false;
                }
                // RFC 4733 §2.3: timestamp and duration count the event's clock, which is
                // the audio's (8 kHz for G.711, 48 kHz for Opus, RFC 7587 §4.1).
                if let Some(payload) = pkt.get_mut(p.payload.0..p.payload.1) {
                    t.rescale_event(payload);
                }
                self.out.max_seq = self.out.max_seq.wrapping_add(1);
                write_header(pkt, p.marker, to, self.out.max_seq, ts, self.out.ssrc);
                true
            }
            EventRoute::Decode { from } if p.pt == from => {
                self.counters.dropped_events += 1;
                let payload = pkt.get(p.payload.0..p.payload.1).unwrap_or_default();
                if let Some(r) = &mut self.receiver {
                    // A malformed payload is not a digit; it is dropped all the same.
                    let _ = r.handle_packet(now, p.ts, p.marker, payload);
                }
                self.finish_receiver(now);
                false
            }
            _ => {
                if self.cn.is_some_and(|(cn, _)| cn == p.pt) {
                    self.counters.dropped_cn += 1;
                } else {
                    self.counters.dropped += 1;
                }
                false
            }
        }
    }

    /// Transcodes one inbound audio payload whose timestamp maps to `ts` on the outbound
    /// clock; `prev_seq` is the inbound sequence number taken before it.
    fn transcode_audio(
        &mut self,
        now: Instant,
        p: &Rtp,
        prev_seq: Option<u16>,
        ts: u32,
        payload: &[u8],
    ) {
        let Some(t) = self.transcoder.as_mut() else {
            return;
        };
        if matches!(t.coder, Coder::None) {
            // The codec's timeline starts at this packet's place on the outbound one, which
            // events of the same source share through `ts_map`.
            let built = match t.coding {
                Coding::ToOpus(law) => {
                    G711ToOpus::new(law, &TranscoderConfig::default(), ts).map(Coder::Encode)
                }
                Coding::FromOpus(law) => OpusToG711::new(law, ts).map(Coder::Decode),
            };
            match built {
                Ok(c) => t.coder = c,
                Err(_) => {
                    self.counters.codec_errors += 1;
                    return;
                }
            }
        }
        let mut out = Emitter {
            out: &mut self.out,
            sender: &mut self.sender,
            queue: &mut t.queue,
            now,
            pt: self.out_audio,
        };
        match &mut t.coder {
            Coder::None => {}
            Coder::Encode(e) => match e.transcode(p.ts, payload) {
                Ok(packets) => {
                    self.counters.transcoded += 1;
                    for (i, q) in packets.iter().enumerate() {
                        out.audio(q.marker || (i == 0 && p.marker), q.timestamp, &q.payload);
                    }
                }
                Err(_) => self.counters.codec_errors += 1,
            },
            Coder::Decode(d) => {
                // A gap in sequence numbers is loss (RFC 3550 §A.1); a gap in timestamps
                // with consecutive sequence numbers is the peer's DTX pause (RFC 7587 §3.1.3),
                // which stays silence.
                let lost = prev_seq.is_some_and(|prev| p.seq.wrapping_sub(prev) > 1);
                if lost && let Some(expected) = d.expected_timestamp() {
                    let gap = p.ts.wrapping_sub(expected);
                    let ticks = gap.min(MAX_CONCEAL) / CONCEAL_UNIT * CONCEAL_UNIT;
                    // A gap "backwards" is an overlap, not a loss.
                    if gap < 0x8000_0000 && ticks > 0 {
                        // The packet at hand may carry FEC for the end of the gap.
                        match d.conceal(expected, ticks, Some(payload)) {
                            Ok(c) => {
                                self.counters.concealed += 1;
                                out.g711(false, c.timestamp, &c.payload);
                            }
                            Err(_) => self.counters.codec_errors += 1,
                        }
                    }
                }
                match d.transcode(p.ts, payload) {
                    Ok(g) => {
                        self.counters.transcoded += 1;
                        out.g711(p.marker, g.timestamp, &g.payload);
                    }
                    Err(_) => {
                        self.counters.codec_errors += 1;
                        // Not taken: the next packet sees it as lost and conceals its time.
                        t.last_seq = prev_seq;
                    }
                }
            }
        }
    }

    /// The next transcoded packet for the outbound peer, as a complete RTP packet; drain
    /// after each [`handle_rtp`](Self::handle_rtp).
    pub fn poll_transcoded(&mut self) -> Option<Vec<u8>> {
        self.transcoder.as_mut()?.queue.pop_front()
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

/// Transcoded packets waiting beyond this are dropped, oldest first: the relay drains the
/// queue after every packet, so only a caller that does not can fill it.
const MAX_QUEUED: usize = 32;

/// Puts transcoded audio on the outbound stream: the next sequence numbers, and the audio
/// clock that injected events start on.
struct Emitter<'a> {
    out: &'a mut OutStream,
    sender: &'a mut Option<(DtmfSender, u8)>,
    queue: &'a mut VecDeque<Vec<u8>>,
    now: Instant,
    pt: u8,
}

impl Emitter<'_> {
    fn audio(&mut self, marker: bool, ts: u32, payload: &[u8]) {
        self.out.max_seq = self.out.max_seq.wrapping_add(1);
        let mut pkt = Vec::with_capacity(12 + payload.len());
        // Version 2, no padding, extension or CSRCs; the header is filled in below.
        pkt.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        pkt.extend_from_slice(payload);
        write_header(
            &mut pkt,
            marker,
            self.pt,
            self.out.max_seq,
            ts,
            self.out.ssrc,
        );
        if self.queue.len() >= MAX_QUEUED {
            self.queue.pop_front();
        }
        self.queue.push_back(pkt);
        self.out.audio_sent(self.now, ts);
        if let Some((s, _)) = self.sender
            && !s.is_idle()
        {
            // A digit queued behind another one starts on this clock.
            s.handle_media_clock(self.now, ts);
        }
    }

    /// G.711 starting at `ts`, in packets of [`G711_PACKET`] samples (one byte each).
    fn g711(&mut self, marker: bool, ts: u32, payload: &[u8]) {
        let mut at = ts;
        for (i, chunk) in payload.chunks(G711_PACKET).enumerate() {
            self.audio(marker && i == 0, at, chunk);
            at = at.wrapping_add(chunk.len() as u32);
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
    fn pairs_refused_for_untranslated_codecs_and_clashing_payload_types() {
        let opus = LegMedia::new(
            111,
            Codec::new("opus", 48000).unwrap(),
            DtmfMode::Rfc4733 { pt: 101 },
        );
        let a = pcmu(0, DtmfMode::Info, None);
        assert!(check_pair(&a, &opus).is_ok(), "g711 ⇄ opus: transcoded");
        assert!(check_pair(&opus, &a).is_ok());
        let g722 = LegMedia::new(9, Codec::new("G722", 8000).unwrap(), DtmfMode::Info);
        let opus16 = LegMedia::new(111, Codec::new("opus", 16000).unwrap(), DtmfMode::Info);
        for other in [g722, opus16] {
            assert!(matches!(
                check_pair(&a, &other),
                Err(Error::UnsupportedCodecs { .. })
            ));
        }
        assert!(matches!(
            check_pair(&g722, &opus),
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

    fn opus(pt: u8, dtmf: DtmfMode) -> LegMedia {
        LegMedia::new(pt, Codec::OPUS, dtmf)
    }

    /// µ-law of a 1 kHz sine at 8 kHz, samples `from..from + n`.
    fn tone(from: usize, n: usize) -> Vec<u8> {
        (from..from + n)
            .map(|i| {
                let x = 8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 8000.0).sin();
                g711::linear_to_ulaw(x as i16)
            })
            .collect()
    }

    fn drain(d: &mut Direction) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| d.poll_transcoded()).collect()
    }

    #[test]
    fn g711_to_opus_takes_its_own_seqs_and_a_48_khz_timeline() {
        let t0 = Instant::now();
        let mut d = pair(pcmu(0, DtmfMode::Info, None), opus(111, DtmfMode::Info), t0);
        let mut out = Vec::new();
        // 20 ms packets, then 30 ms ones (20 + 10 ms of Opus each), then 10 ms ones.
        let mut ts = 4_000u32;
        let mut at = 0usize;
        for (i, len) in [160usize, 160, 160, 240, 240, 80, 80]
            .into_iter()
            .enumerate()
        {
            let mut p = rtp(0, 100 + i as u16, ts, 9, &tone(at, len));
            assert!(!d.handle_rtp(t0 + ms(20 * i as u64), &mut p), "queued");
            out.extend(drain(&mut d));
            ts += len as u32;
            at += len;
        }
        let durations = [960u32, 960, 960, 960, 480, 960, 480, 480, 480];
        assert_eq!(out.len(), durations.len());
        let first = hdr(&out[0]);
        let mut want_ts = first.2;
        for (k, p) in out.iter().enumerate() {
            let h = hdr(p);
            assert_eq!(h.0, 111, "payload type remapped");
            assert_eq!(h.1, first.1.wrapping_add(k as u16), "seq continuous");
            assert_eq!(h.2, want_ts, "packet {k}");
            assert_eq!(h.3, first.3);
            assert!(
                p.len() > 13 && p.len() < 12 + 120,
                "an opus packet, {} bytes",
                p.len()
            );
            want_ts = want_ts.wrapping_add(durations[k]);
        }
        assert_eq!(d.counters.transcoded, 7);
        // A payload that is not whole 10 ms is refused and the stream goes on.
        let mut bad = rtp(0, 107, ts, 9, &[0xff; 100]);
        assert!(!d.handle_rtp(t0 + ms(140), &mut bad));
        assert!(drain(&mut d).is_empty());
        assert_eq!(d.counters.codec_errors, 1);
        let mut p = rtp(0, 108, ts, 9, &tone(0, 160));
        d.handle_rtp(t0 + ms(160), &mut p);
        let after_bad = drain(&mut d);
        assert_eq!(after_bad.len(), 1);
        let after_bad = hdr(&after_bad[0]);
        assert_eq!(after_bad.1, hdr(&out[8]).1.wrapping_add(1));
        // A late packet is not sent: its time has passed.
        let mut late = rtp(0, 106, ts - 80, 9, &tone(0, 80));
        assert!(!d.handle_rtp(t0 + ms(170), &mut late));
        assert!(drain(&mut d).is_empty());
        assert_eq!(d.counters.late, 1);
        // The source restarts on the same SSRC far back in seq and time (RFC 3550 §A.1): it
        // is followed, and its audio continues the outbound stream 20 ms on.
        let mut p = rtp(0, 50_000, 3, 9, &tone(160, 160));
        d.handle_rtp(t0 + ms(180), &mut p);
        let restarted = drain(&mut d);
        assert_eq!(restarted.len(), 1, "not taken for late");
        let restarted = hdr(&restarted[0]);
        assert_eq!(restarted.1, after_bad.1.wrapping_add(1));
        assert_eq!(restarted.2.wrapping_sub(after_bad.2), 960);
        assert_eq!(d.counters.late, 1);
    }

    /// The Opus packets of `n` 20 ms frames of the 1 kHz tone, as `media-codec` encodes them.
    fn opus_frames(n: usize) -> Vec<Vec<u8>> {
        let mut e = G711ToOpus::new(G711Law::Ulaw, &TranscoderConfig::default(), 0).unwrap();
        (0..n)
            .map(|k| {
                let mut p = e.transcode(160 * k as u32, &tone(160 * k, 160)).unwrap();
                p.remove(0).payload
            })
            .collect()
    }

    #[test]
    fn opus_to_g711_conceals_lost_and_corrupt_packets_and_keeps_dtx_pauses() {
        let t0 = Instant::now();
        let mut d = pair(opus(111, DtmfMode::Info), pcmu(0, DtmfMode::Info, None), t0);
        let frames = opus_frames(12);
        let mut out = Vec::new();
        let mut send = |d: &mut Direction, k: usize, seq: u16, payload: &[u8]| {
            let mut p = rtp(111, seq, 90_000 + 960 * k as u32, 3, payload);
            assert!(!d.handle_rtp(t0 + ms(20 * k as u64), &mut p));
            let got = drain(d);
            out.extend(got.iter().map(|p| (hdr(p), p.len() - 12)));
            got.len()
        };
        for (k, frame) in frames.iter().enumerate().take(3) {
            assert_eq!(send(&mut d, k, 10 + k as u16, frame), 1);
        }
        // Frames 3 and 4 are lost: frame 5 brings 40 ms of concealment before it.
        assert_eq!(send(&mut d, 5, 15, &frames[5]), 3);
        assert_eq!(d.counters.concealed, 1);
        // Frame 6 is corrupt: refused, then concealed when frame 7 comes.
        assert_eq!(send(&mut d, 6, 16, &[0x03]), 0);
        assert_eq!(d.counters.codec_errors, 1);
        assert_eq!(send(&mut d, 7, 17, &frames[7]), 2);
        assert_eq!(d.counters.concealed, 2);
        // Frame 8 was never sent (DTX): consecutive seqs, a timestamp gap, no concealment.
        assert_eq!(send(&mut d, 9, 18, &frames[9]), 1);
        // An empty payload stands for one frame of the peer's size.
        assert_eq!(send(&mut d, 10, 19, &[]), 1);
        // A long gap is concealed for 120 ms only: 6 packets, then the frame.
        assert_eq!(send(&mut d, 20, 30, &frames[11]), 7);
        assert_eq!(d.counters.concealed, 3);
        assert_eq!(d.counters.transcoded, 8);
        let first = out[0].0;
        for (k, (h, len)) in out.iter().enumerate() {
            assert_eq!(h.0, 0);
            assert_eq!(h.1, first.1.wrapping_add(k as u16), "seq continuous");
            assert_eq!(*len, 160, "20 ms of G.711 per packet");
        }
        // Every output packet sits at its frame's place on the 8 kHz timeline: 0, 1, 2, the
        // concealed 3 and 4, 5, concealed 6, 7, a DTX gap at 8, 9, 10, then 11–16 concealed
        // and a gap up to 20.
        let places: Vec<u32> = out
            .iter()
            .map(|(h, _)| h.2.wrapping_sub(first.2) / 160)
            .collect();
        assert_eq!(
            places,
            [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 20]
        );
    }

    #[test]
    fn telephone_events_are_rescaled_between_8_and_48_khz() {
        let t0 = Instant::now();
        let te = |end, duration| {
            TelephoneEvent {
                event: 5,
                end,
                volume: 10,
                duration,
            }
            .encode()
        };
        // G.711 → Opus: an event 40 ms after the first audio packet, 20 ms long.
        let mut d = pair(
            pcmu(0, DtmfMode::Rfc4733 { pt: 101 }, Some(13)),
            opus(111, DtmfMode::Rfc4733 { pt: 110 }),
            t0,
        );
        let mut a = rtp(0, 1, 1_000, 4, &tone(0, 160));
        d.handle_rtp(t0, &mut a);
        let audio = hdr(&drain(&mut d)[0]);
        let mut e = rtp(101, 2, 1_320, 4, &te(false, 160));
        assert!(d.handle_rtp(t0 + ms(40), &mut e), "forwarded in place");
        let h = hdr(&e);
        assert_eq!(
            (h.0, h.1, h.2.wrapping_sub(audio.2)),
            (110, audio.1 + 1, 1_920)
        );
        assert_eq!(TelephoneEvent::decode(&e[12..]).unwrap().duration, 960);
        // Long events saturate rather than wrap.
        let mut e = rtp(101, 3, 1_320, 4, &te(true, 20_000));
        d.handle_rtp(t0 + ms(60), &mut e);
        assert_eq!(TelephoneEvent::decode(&e[12..]).unwrap().duration, u16::MAX);
        // Opus has no CN.
        let mut cn = rtp(13, 4, 1_480, 4, &[40]);
        assert!(!d.handle_rtp(t0 + ms(80), &mut cn));
        assert_eq!(d.counters.dropped_cn, 1);

        // Opus → G.711: ÷6.
        let mut d = pair(
            opus(111, DtmfMode::Rfc4733 { pt: 110 }),
            pcmu(0, DtmfMode::Rfc4733 { pt: 101 }, None),
            t0,
        );
        let mut a = rtp(111, 1, 48_000, 4, &opus_frames(1)[0]);
        d.handle_rtp(t0, &mut a);
        let audio = hdr(&drain(&mut d)[0]);
        let mut e = rtp(110, 2, 48_000 + 1_920, 4, &te(false, 960));
        assert!(d.handle_rtp(t0 + ms(40), &mut e));
        let h = hdr(&e);
        assert_eq!((h.0, h.2.wrapping_sub(audio.2)), (101, 320));
        assert_eq!(TelephoneEvent::decode(&e[12..]).unwrap().duration, 160);

        // Opus → an INFO leg: the events decode on the 48 kHz clock.
        let mut d = pair(
            opus(111, DtmfMode::Rfc4733 { pt: 110 }),
            pcmu(0, DtmfMode::Info, None),
            t0,
        );
        for (i, (end, dur)) in [(false, 960), (false, 1_920), (true, 2_880)]
            .iter()
            .enumerate()
        {
            let mut e = rtp(110, i as u16, 7_000, 4, &te(*end, *dur));
            assert!(!d.handle_rtp(t0 + ms(20 * i as u64), &mut e));
        }
        assert_eq!(
            d.poll_event(),
            Some(BridgeEvent::Digit {
                from_leg_b: false,
                digit: '5',
                duration_ms: 60
            })
        );
    }

    #[test]
    fn arbitrary_packets_on_transcoding_paths_never_panic() {
        let t0 = Instant::now();
        let mut rng = Seeds::new(99);
        let g = pcmu(0, DtmfMode::Rfc4733 { pt: 101 }, Some(13));
        let o = opus(111, DtmfMode::Rfc4733 { pt: 110 });
        for (from, to) in [(g, o), (o, g)] {
            let mut d = pair(from, to, t0);
            for i in 0..3_000u64 {
                let r = rng.next_u64();
                let pt = [0, 101, 13, 111, 110, 96][(r % 6) as usize];
                // Mostly in-order seqs, some jumps; payloads of any length and content.
                let seq = if r & 0x100 == 0 {
                    i as u16
                } else {
                    (r >> 16) as u16
                };
                let len = ((r >> 32) % 400) as usize;
                let payload: Vec<u8> = (0..len)
                    .map(|k| (rng.next_u64() >> (k % 56)) as u8)
                    .collect();
                let mut p = rtp(pt, seq, (r >> 40) as u32, 5, &payload);
                if r & 0x200 != 0 {
                    p[0] |= 0x20; // padding bit with whatever the last byte says
                }
                let now = t0 + ms(20 * i);
                d.handle_rtp(now, &mut p);
                drain(&mut d);
                d.handle_timeout(now);
                while d.poll_transmit(now).is_some() {}
                while d.poll_event().is_some() {}
            }
            assert!(d.counters.codec_errors + d.counters.dropped > 0);
        }
    }
}
