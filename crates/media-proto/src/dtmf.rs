//! RFC 4733 telephone-events and the SIP INFO bodies that carry DTMF
//! (`application/dtmf-relay` and `application/dtmf`): the payload codec, a sender that turns
//! digits into the packet sequence of RFC 4733 §2.5.1, and a receiver that turns a lossy packet
//! stream back into digits (§2.5.2). Both are sans-IO: time comes in as `now`.

use crate::Error;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One telephone-event payload (RFC 4733 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// 0–9, 10 = `*`, 11 = `#`, 12–15 = A–D, 16 = flash (RFC 4733 §3.2).
    pub event: u8,
    pub end: bool,
    /// Power level, 0 to −63 dBm0, written as 0..=63.
    pub volume: u8,
    /// In timestamp units of the stream's clock.
    pub duration: u16,
}

impl TelephoneEvent {
    pub fn encode(&self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3f),
            d[0],
            d[1],
        ]
    }

    pub fn decode(b: &[u8]) -> Result<Self, Error> {
        match b {
            [event, flags, d0, d1, ..] => Ok(TelephoneEvent {
                event: *event,
                end: flags & 0x80 != 0,
                volume: flags & 0x3f,
                duration: u16::from_be_bytes([*d0, *d1]),
            }),
            _ => Err(Error::Event),
        }
    }
}

/// The RFC 4733 event code of a DTMF character.
pub fn event_of(c: char) -> Option<u8> {
    match c.to_ascii_uppercase() {
        d @ '0'..='9' => Some(d as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        l @ 'A'..='D' => Some(l as u8 - b'A' + 12),
        _ => None,
    }
}

/// The DTMF character of an RFC 4733 event code (16 = flash has none).
pub fn char_of(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

/// A digit from a SIP INFO body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoDigit {
    pub digit: char,
    /// Milliseconds; `application/dtmf` has none (callers use their default).
    pub duration_ms: Option<u32>,
}

/// Parses `application/dtmf-relay` (`Signal=5\r\nDuration=160\r\n`) or `application/dtmf`
/// (`5`) by content type (case-insensitive, parameters ignored).
pub fn parse_info(content_type: &str, body: &[u8]) -> Result<InfoDigit, Error> {
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let text = std::str::from_utf8(body).map_err(|_| Error::DtmfBody)?;
    if body.len() > 1024 {
        return Err(Error::DtmfBody);
    }
    match ct.as_str() {
        "application/dtmf-relay" => {
            let mut digit = None;
            let mut duration = None;
            for line in text.lines() {
                let Some((k, v)) = line.split_once('=') else {
                    continue;
                };
                match k.trim().to_ascii_lowercase().as_str() {
                    "signal" => digit = v.trim().chars().next().filter(|c| event_of(*c).is_some()),
                    "duration" => duration = v.trim().parse::<u32>().ok().filter(|d| *d <= 60_000),
                    _ => {}
                }
            }
            let digit = digit.ok_or(Error::DtmfBody)?;
            Ok(InfoDigit {
                digit: digit.to_ascii_uppercase(),
                duration_ms: duration,
            })
        }
        "application/dtmf" => {
            let t = text.trim();
            let mut cs = t.chars();
            match (cs.next(), cs.next()) {
                (Some(c), None) if event_of(c).is_some() => Ok(InfoDigit {
                    digit: c.to_ascii_uppercase(),
                    duration_ms: None,
                }),
                _ => Err(Error::DtmfBody),
            }
        }
        _ => Err(Error::DtmfBody),
    }
}

/// The `application/dtmf-relay` body for a digit.
pub fn dtmf_relay_body(digit: char, duration_ms: u32) -> String {
    format!("Signal={digit}\r\nDuration={duration_ms}\r\n")
}

/// Largest value of the 16-bit duration field; longer events go out in segments
/// (RFC 4733 §2.5.1.3).
const MAX_SEGMENT: u32 = 0xFFFF;
/// RFC 4733 §2.5.1.4: the final packet of an event, and of each segment of a long one, is sent
/// three times in all, one update interval apart.
const FINAL_COPIES: u8 = 3;
/// Longest digit the sender plays; `parse_info` drops longer INFO durations too.
const MAX_DIGIT: Duration = Duration::from_secs(60);

/// `d` in units of a `rate` Hz clock, saturating (event durations).
fn units(d: Duration, rate: u32) -> u32 {
    let u = d.as_nanos().saturating_mul(u128::from(rate)) / 1_000_000_000;
    u32::try_from(u).unwrap_or(u32::MAX)
}

/// `d` in units of a `rate` Hz clock, modulo 2^32 (RTP timestamp arithmetic).
fn units_wrapping(d: Duration, rate: u32) -> u32 {
    // Truncation is the point: RTP timestamps are modulo 2^32 (RFC 3550 §5.1).
    (d.as_nanos().saturating_mul(u128::from(rate)) / 1_000_000_000) as u32
}

/// Milliseconds of `units` of a `rate` Hz clock, rounded to nearest.
fn millis(units: u32, rate: u32) -> u32 {
    let rate = u64::from(rate.max(1));
    u32::try_from((u64::from(units) * 1000 + rate / 2) / rate).unwrap_or(u32::MAX)
}

/// Settings of a [`DtmfSender`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderConfig {
    /// Clock rate of the negotiated `telephone-event` rtpmap (8000, or 48000 beside Opus).
    pub clock_rate: u32,
    /// Time between two updates of a running event: the stream's ptime, else 50 ms.
    pub interval: Duration,
    /// Power level written in every packet, 0..=63 standing for 0 to −63 dBm0.
    pub volume: u8,
    /// Pause between the end of one digit and the start of the next queued one.
    pub min_gap: Duration,
    /// Shortest digit played; shorter requests are lengthened (receivers and DTMF detectors
    /// behind them ignore very short tones).
    pub min_duration: Duration,
    /// Length of digits whose source gives none (`application/dtmf`).
    pub default_duration: Duration,
    /// Digits that may wait behind the one being played (an INFO burst).
    pub max_queue: usize,
}

impl SenderConfig {
    pub fn new(clock_rate: u32) -> Self {
        SenderConfig {
            clock_rate,
            interval: Duration::from_millis(50),
            volume: 10,
            min_gap: Duration::from_millis(50),
            min_duration: Duration::from_millis(40),
            default_duration: Duration::from_millis(100),
            max_queue: 32,
        }
    }
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig::new(8000)
    }
}

/// One telephone-event packet for the outbound stream. The shell gives it the stream's SSRC,
/// next sequence number and the negotiated telephone-event payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfPacket {
    /// RFC 4733 §2.5.1.2: set on the first packet of an event and on no other.
    pub marker: bool,
    /// Start of the event (of the segment, for long events) on the stream's RTP clock; the same
    /// in every packet of one segment.
    pub timestamp: u32,
    pub payload: TelephoneEvent,
}

#[derive(Debug, Clone, Copy)]
struct Queued {
    event: u8,
    duration: Duration,
    at: Instant,
}

/// The event being played.
#[derive(Debug, Clone, Copy)]
struct Playing {
    event: u8,
    volume: u8,
    start: Instant,
    end: Instant,
    /// RTP timestamp of the first segment.
    ts: u32,
    /// Whole duration in clock units.
    total: u32,
    /// Duration reported by the last packet, counted from the event's start across segments.
    reported: u32,
    /// Updates go out at `start + k·interval`; this is the next `k`.
    next_tick: u32,
    marker: bool,
    /// The last closed segment's final packet and how many copies are still owed.
    segment_final: Option<(u32, u8)>,
    /// The end packet, once sent, for its repetitions.
    end_packet: Option<DtmfPacket>,
    ends_sent: u8,
    next_end: Instant,
}

/// Which segment (0, 1, …) a duration counted from the event's start falls in; a duration of
/// exactly k·0xFFFF is the final packet of segment k−1, not an empty segment k.
fn segment_of(elapsed: u32) -> u32 {
    elapsed.saturating_sub(1) / MAX_SEGMENT
}

impl Playing {
    fn packet(&mut self, timestamp: u32, duration: u32, end: bool) -> DtmfPacket {
        DtmfPacket {
            marker: std::mem::take(&mut self.marker),
            timestamp,
            payload: TelephoneEvent {
                event: self.event,
                end,
                volume: self.volume,
                duration: u16::try_from(duration).unwrap_or(u16::MAX),
            },
        }
    }

    /// One owed copy of a closed segment's final packet goes out with each later packet.
    fn owed_segment_final(&mut self, out: &mut VecDeque<DtmfPacket>) {
        if let Some((ts, left)) = self.segment_final {
            let p = self.packet(ts, MAX_SEGMENT, false);
            out.push_back(p);
            self.segment_final = (left > 1).then(|| (ts, left - 1));
        }
    }

    /// Reports `elapsed` units since the start: closes every segment boundary crossed since the
    /// last report (RFC 4733 §2.5.1.3: the next segment's timestamp is the previous one plus
    /// its 0xFFFF duration, and only the event's last packets carry E), then the report itself.
    fn report(&mut self, elapsed: u32, end: bool, out: &mut VecDeque<DtmfPacket>) {
        self.owed_segment_final(out);
        for s in segment_of(self.reported)..segment_of(elapsed) {
            let ts = self.ts.wrapping_add(s.wrapping_mul(MAX_SEGMENT));
            let p = self.packet(ts, MAX_SEGMENT, false);
            out.push_back(p);
            self.segment_final = Some((ts, FINAL_COPIES - 1));
        }
        let seg = segment_of(elapsed);
        let p = self.packet(
            self.ts.wrapping_add(seg.wrapping_mul(MAX_SEGMENT)),
            elapsed - seg * MAX_SEGMENT,
            end,
        );
        out.push_back(p);
        if end {
            self.end_packet = Some(DtmfPacket { marker: false, ..p });
        }
        self.reported = elapsed;
    }
}

/// RFC 4733 sender for one outbound stream: digits in (from a SIP INFO or a RIPT event), the
/// §2.5.1 packet sequence out at the right times, one digit after another.
///
/// Contract: after every `handle_*`, drain [`poll_transmit`](Self::poll_transmit) and arm one
/// timer at [`poll_timeout`](Self::poll_timeout). While
/// [`suppress_audio`](Self::suppress_audio) says so, the shell sends no audio on the stream
/// (the receiver plays the event for that span instead). Sequence numbers, SSRC and payload
/// type stay with the shell's stream.
#[derive(Debug, Clone)]
pub struct DtmfSender {
    cfg: SenderConfig,
    /// A point of the stream's RTP clock: timestamp `.1` at `.0`.
    clock: (Instant, u32),
    last_now: Instant,
    queue: VecDeque<Queued>,
    playing: Option<Playing>,
    /// The next digit starts no earlier than this (gap after the previous one).
    not_before: Option<Instant>,
    out: VecDeque<DtmfPacket>,
}

impl DtmfSender {
    /// `rtp_ts` is the stream's RTP timestamp at `now` (the one the next audio packet would
    /// carry); event timestamps continue that clock.
    pub fn new(cfg: SenderConfig, now: Instant, rtp_ts: u32) -> Self {
        let cfg = SenderConfig {
            // A zero interval would never let time advance between updates.
            interval: cfg.interval.max(Duration::from_millis(1)),
            ..cfg
        };
        DtmfSender {
            cfg,
            clock: (now, rtp_ts),
            last_now: now,
            queue: VecDeque::new(),
            playing: None,
            not_before: None,
            out: VecDeque::new(),
        }
    }

    fn advance_now(&mut self, now: Instant) -> Instant {
        // A `now` earlier than the last one counts as the last one.
        if now > self.last_now {
            self.last_now = now;
        }
        self.last_now
    }

    /// Re-anchors the event clock: `rtp_ts` is the stream's timestamp at `now` (say, of the
    /// audio packet just sent), so events keep to the audio timeline however it drifted.
    pub fn handle_media_clock(&mut self, now: Instant, rtp_ts: u32) {
        let now = self.advance_now(now);
        self.clock = (now, rtp_ts);
    }

    /// Queues one event (RFC 4733 §3.2 code: 0–9, 10 = `*`, 11 = `#`, 12–15 = A–D, 16 = flash)
    /// lasting `duration`, clamped to [`SenderConfig::min_duration`] and 60 s.
    pub fn handle_digit(
        &mut self,
        now: Instant,
        event: u8,
        duration: Duration,
    ) -> Result<(), Error> {
        let now = self.advance_now(now);
        if self.queue.len() >= self.cfg.max_queue {
            return Err(Error::Misuse("dtmf queue is full"));
        }
        let duration = duration.max(self.cfg.min_duration).min(MAX_DIGIT);
        self.queue.push_back(Queued {
            event,
            duration,
            at: now,
        });
        Ok(())
    }

    /// Queues the digit of a SIP INFO (see [`parse_info`]); without a duration in the body,
    /// [`SenderConfig::default_duration`] applies.
    pub fn handle_info(&mut self, now: Instant, info: &InfoDigit) -> Result<(), Error> {
        let event = event_of(info.digit).ok_or(Error::Misuse("not a dtmf digit"))?;
        let duration = info.duration_ms.map_or(self.cfg.default_duration, |ms| {
            Duration::from_millis(u64::from(ms))
        });
        self.handle_digit(now, event, duration)
    }

    /// The next packet due at `now`, if any. Updates the shell was too late for are merged
    /// into one (each update supersedes the previous); end packets are never dropped.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<DtmfPacket> {
        let now = self.advance_now(now);
        if self.out.is_empty() {
            self.advance(now);
        }
        self.out.pop_front()
    }

    /// When to call [`poll_transmit`](Self::poll_transmit) next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.out.is_empty() {
            return Some(self.last_now);
        }
        match &self.playing {
            Some(p) if p.ends_sent == 0 => Some(self.tick_time(p, p.next_tick).min(p.end)),
            Some(p) => Some(p.next_end),
            None => self.next_start(),
        }
    }

    /// True while an event covers `now`: the shell holds back audio on the stream.
    #[must_use]
    pub fn suppress_audio(&self, now: Instant) -> bool {
        let now = now.max(self.last_now);
        match &self.playing {
            Some(p) => now < p.end,
            None => self.next_start().is_some_and(|s| s <= now),
        }
    }

    /// Nothing playing, queued or waiting to be polled.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.playing.is_none() && self.queue.is_empty() && self.out.is_empty()
    }

    fn next_start(&self) -> Option<Instant> {
        self.queue
            .front()
            .map(|q| self.not_before.map_or(q.at, |nb| q.at.max(nb)))
    }

    fn tick_time(&self, p: &Playing, k: u32) -> Instant {
        self.cfg
            .interval
            .checked_mul(k)
            .and_then(|d| p.start.checked_add(d))
            .unwrap_or(p.end)
    }

    fn ts_at(&self, t: Instant) -> u32 {
        let (at, ts) = self.clock;
        match t.checked_duration_since(at) {
            Some(d) => ts.wrapping_add(units_wrapping(d, self.cfg.clock_rate)),
            None => ts.wrapping_sub(units_wrapping(
                at.saturating_duration_since(t),
                self.cfg.clock_rate,
            )),
        }
    }

    fn advance(&mut self, now: Instant) {
        loop {
            let Some(mut p) = self.playing else {
                match (self.next_start(), self.queue.front().copied()) {
                    (Some(start), Some(q)) if start <= now => {
                        self.queue.pop_front();
                        let end = start.checked_add(q.duration).unwrap_or(start);
                        self.playing = Some(Playing {
                            event: q.event,
                            volume: self.cfg.volume & 0x3f,
                            start,
                            end,
                            ts: self.ts_at(start),
                            total: units(q.duration, self.cfg.clock_rate),
                            reported: 0,
                            next_tick: 1,
                            marker: true,
                            segment_final: None,
                            end_packet: None,
                            ends_sent: 0,
                            next_end: end,
                        });
                        continue;
                    }
                    _ => return,
                }
            };
            if p.ends_sent == 0 {
                if now >= p.end {
                    p.report(p.total, true, &mut self.out);
                    p.ends_sent = 1;
                    p.next_end = p.end.checked_add(self.cfg.interval).unwrap_or(p.end);
                } else {
                    let since = now.saturating_duration_since(p.start).as_nanos();
                    let k = u32::try_from(since / self.cfg.interval.as_nanos()).unwrap_or(u32::MAX);
                    if k < p.next_tick {
                        return;
                    }
                    let at = self.tick_time(&p, k);
                    let elapsed = units(at.saturating_duration_since(p.start), self.cfg.clock_rate)
                        .min(p.total);
                    p.report(elapsed, false, &mut self.out);
                    p.next_tick = k.saturating_add(1);
                }
                self.playing = Some(p);
                return;
            }
            if now < p.next_end {
                return;
            }
            p.owed_segment_final(&mut self.out);
            if let Some(e) = p.end_packet {
                self.out.push_back(e);
            }
            p.ends_sent += 1;
            if p.ends_sent >= FINAL_COPIES {
                // The next digit waits for the gap and for this one's last end packet, so a
                // receiver never sees two events interleaved.
                let gap_end = p.end.checked_add(self.cfg.min_gap).unwrap_or(p.end);
                self.not_before = Some(gap_end.max(p.next_end));
                self.playing = None;
            } else {
                p.next_end = p
                    .next_end
                    .checked_add(self.cfg.interval)
                    .unwrap_or(p.next_end);
                self.playing = Some(p);
            }
            return;
        }
    }
}

/// Settings of a [`DtmfReceiver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverConfig {
    /// Clock rate of the negotiated `telephone-event` rtpmap.
    pub clock_rate: u32,
    /// An event with no packet for this long has ended (its end packets were lost).
    pub timeout: Duration,
}

impl ReceiverConfig {
    pub fn new(clock_rate: u32) -> Self {
        ReceiverConfig {
            clock_rate,
            timeout: Duration::from_millis(200),
        }
    }
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig::new(8000)
    }
}

/// Why the receiver considers an event over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCause {
    /// A packet with the E bit arrived.
    EndBit,
    /// Another event started before any end packet arrived.
    NextEvent,
    /// No packet for [`ReceiverConfig::timeout`].
    Timeout,
}

/// What the receiver reports: each event begins once and ends once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfEvent {
    /// The first packet of an event arrived (whichever survived): enough to relay the digit
    /// with low latency.
    Began { event: u8, timestamp: u32 },
    /// The event is over. `duration` is in clock units across all segments (the final one when
    /// an end packet arrived, else the longest seen); `duration_ms` the same in milliseconds.
    Ended {
        event: u8,
        timestamp: u32,
        duration: u32,
        duration_ms: u32,
        cause: EndCause,
    },
}

impl DtmfEvent {
    pub fn event(&self) -> u8 {
        match self {
            DtmfEvent::Began { event, .. } | DtmfEvent::Ended { event, .. } => *event,
        }
    }

    /// The DTMF character, if the event is a digit.
    pub fn digit(&self) -> Option<char> {
        char_of(self.event())
    }

    /// RTP timestamp of the event's start (its first segment).
    pub fn timestamp(&self) -> u32 {
        match self {
            DtmfEvent::Began { timestamp, .. } | DtmfEvent::Ended { timestamp, .. } => *timestamp,
        }
    }

    /// The `application/dtmf-relay` body announcing an ended digit.
    pub fn info_body(&self) -> Option<String> {
        match self {
            DtmfEvent::Ended { duration_ms, .. } => {
                self.digit().map(|d| dtmf_relay_body(d, *duration_ms))
            }
            DtmfEvent::Began { .. } => None,
        }
    }
}

/// The event the receiver follows.
#[derive(Debug, Clone, Copy)]
struct Tracked {
    event: u8,
    /// Timestamp of the first packet seen (the identity reported in `Began`).
    ts: u32,
    /// Timestamp of the current segment.
    seg_ts: u32,
    /// Units of the segments before the current one.
    seg_base: u32,
    /// Longest duration seen in the current segment (reordering never shortens it).
    seg_dur: u16,
    last_rx: Instant,
    ended: Option<EndCause>,
}

/// Ended events remembered so their late and duplicate packets are recognised.
const RECENT: usize = 16;
/// Most segments one event may span: 60 s at 48 kHz is 44.
const MAX_SEGMENTS: u32 = 64;

/// RFC 4733 receiver for one inbound stream: telephone-event payloads in, each event reported
/// exactly once as [`DtmfEvent::Began`] then [`DtmfEvent::Ended`], despite a lost first
/// packet, lost or duplicated end packets, reordering, and events that never end.
///
/// Contract: after every `handle_*`, drain [`poll_event`](Self::poll_event) and arm one timer
/// at [`poll_timeout`](Self::poll_timeout). One receiver per SSRC.
#[derive(Debug, Clone)]
pub struct DtmfReceiver {
    cfg: ReceiverConfig,
    last_now: Option<Instant>,
    cur: Option<Tracked>,
    /// (segment timestamp, event code) of ended events.
    recent: VecDeque<(u32, u8)>,
    events: VecDeque<DtmfEvent>,
}

impl DtmfReceiver {
    pub fn new(cfg: ReceiverConfig) -> Self {
        DtmfReceiver {
            cfg,
            last_now: None,
            cur: None,
            recent: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    fn advance_now(&mut self, now: Instant) -> Instant {
        let now = self.last_now.map_or(now, |l| l.max(now));
        self.last_now = Some(now);
        now
    }

    /// One telephone-event payload that arrived at `now` in a packet with RTP timestamp
    /// `rtp_ts` and marker bit `marker` (for RIPT chunks: the chunk's timestamp on the same
    /// clock). Only the first event block is read: packing several events into one packet
    /// (RFC 4733 §2.5.1.5) is not supported.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        rtp_ts: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<(), Error> {
        let te = TelephoneEvent::decode(payload)?;
        let now = self.advance_now(now);
        self.expire(now);
        if self.recent.contains(&(rtp_ts, te.event)) {
            return Ok(());
        }
        if let Some(mut c) = self.cur {
            if c.seg_ts == rtp_ts && c.event == te.event {
                if c.ended.is_none() {
                    c.last_rx = now;
                    c.seg_dur = c.seg_dur.max(te.duration);
                    self.cur = Some(c);
                    if te.end {
                        self.finish(EndCause::EndBit);
                    }
                }
                return Ok(());
            }
            let ahead = rtp_ts.wrapping_sub(c.seg_ts);
            if c.event == te.event && !marker && self.continues(ahead, c.seg_dur) {
                match c.ended {
                    None => {
                        c.seg_base = c.seg_base.saturating_add(ahead);
                        c.seg_ts = rtp_ts;
                        c.seg_dur = te.duration;
                        c.last_rx = now;
                        self.cur = Some(c);
                        if te.end {
                            self.finish(EndCause::EndBit);
                        }
                        return Ok(());
                    }
                    // A later segment of an event given up on: the digit was reported already.
                    Some(EndCause::Timeout | EndCause::NextEvent) => return Ok(()),
                    // A new event that lost its marker packet, exactly 0xFFFF later.
                    Some(EndCause::EndBit) => {}
                }
            }
            let behind = c.seg_ts.wrapping_sub(rtp_ts);
            if behind != 0 && behind <= self.cfg.clock_rate.saturating_mul(10) {
                // A straggler from before the current segment (reordering); a timestamp far
                // behind is rather a sender that restarted its clock, and starts an event.
                // An earlier segment's packet of the running event (its final copies go out
                // after the next segment started) still shows the event is alive.
                if c.ended.is_none() && c.event == te.event && self.continues(behind, 0) {
                    c.last_rx = now;
                    self.cur = Some(c);
                }
                return Ok(());
            }
            if c.ended.is_none() {
                // RFC 4733 §2.5.2: an event with a new timestamp ends the previous one, whose
                // end packets were lost.
                self.finish(EndCause::NextEvent);
            }
        }
        self.events.push_back(DtmfEvent::Began {
            event: te.event,
            timestamp: rtp_ts,
        });
        self.cur = Some(Tracked {
            event: te.event,
            ts: rtp_ts,
            seg_ts: rtp_ts,
            seg_base: 0,
            seg_dur: te.duration,
            last_rx: now,
            ended: None,
        });
        if te.end {
            self.finish(EndCause::EndBit);
        }
        Ok(())
    }

    /// RFC 4733 §2.5.2.3: a long event's next segment starts where the previous one ended,
    /// 0xFFFF units on; a segment that a sender closed at its last update before 0xFFFF is
    /// accepted too (up to 100 ms short). Whole segments may be missing in between: lost, or sent after the
    /// receiver gave up on the event. A new press of the same digit after a lost end starts a
    /// short duration plus a gap later, so it does not qualify.
    fn continues(&self, ahead: u32, seg_dur: u16) -> bool {
        let slack = self.cfg.clock_rate / 10;
        let k = ahead.saturating_add(slack) / MAX_SEGMENT;
        (1..=MAX_SEGMENTS).contains(&k)
            && ahead <= k * MAX_SEGMENT
            && ahead >= u32::from(seg_dur)
            && ahead >= (k * MAX_SEGMENT).saturating_sub(slack)
    }

    fn finish(&mut self, cause: EndCause) {
        let Some(c) = self.cur.as_mut() else {
            return;
        };
        if c.ended.is_some() {
            return;
        }
        c.ended = Some(cause);
        let duration = c.seg_base.saturating_add(u32::from(c.seg_dur));
        self.events.push_back(DtmfEvent::Ended {
            event: c.event,
            timestamp: c.ts,
            duration,
            duration_ms: millis(duration, self.cfg.clock_rate),
            cause,
        });
        if self.recent.len() >= RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((c.seg_ts, c.event));
    }

    fn expire(&mut self, now: Instant) {
        if let Some(c) = &self.cur
            && c.ended.is_none()
            && now >= c.last_rx.checked_add(self.cfg.timeout).unwrap_or(c.last_rx)
        {
            self.finish(EndCause::Timeout);
        }
    }

    /// Ends an event whose packets stopped without an end packet.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance_now(now);
        self.expire(now);
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<DtmfEvent> {
        self.events.pop_front()
    }

    /// When the running event times out, if one runs.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.cur
            .as_ref()
            .filter(|c| c.ended.is_none())
            .map(|c| c.last_rx.checked_add(self.cfg.timeout).unwrap_or(c.last_rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4733_payload_round_trip() {
        let e = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 1280,
        };
        assert_eq!(e.encode(), [11, 0x8a, 0x05, 0x00]);
        assert_eq!(TelephoneEvent::decode(&e.encode()).unwrap(), e);
        assert!(TelephoneEvent::decode(&[1, 2, 3]).is_err());
    }

    #[test]
    fn digit_mapping_is_total_over_the_dtmf_alphabet() {
        for c in "0123456789*#ABCD".chars() {
            assert_eq!(char_of(event_of(c).unwrap()), Some(c));
        }
        assert_eq!(event_of('x'), None);
        assert_eq!(char_of(16), None);
    }

    #[test]
    fn info_bodies() {
        let d = parse_info("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n").unwrap();
        assert_eq!(
            d,
            InfoDigit {
                digit: '5',
                duration_ms: Some(160)
            }
        );
        let d = parse_info(
            "Application/DTMF-Relay; charset=x",
            b"signal= #\nduration=250",
        )
        .unwrap();
        assert_eq!(d.digit, '#');
        assert_eq!(parse_info("application/dtmf", b"b").unwrap().digit, 'B');
        for (ct, body) in [
            ("application/dtmf-relay", &b"Duration=160"[..]),
            ("application/dtmf-relay", b"Signal=x"),
            ("application/dtmf", b"12"),
            ("text/plain", b"5"),
            ("application/dtmf", b"\xff"),
        ] {
            assert!(parse_info(ct, body).is_err(), "{ct} {body:?}");
        }
        assert_eq!(
            parse_info(
                "application/dtmf-relay",
                dtmf_relay_body('7', 100).as_bytes()
            )
            .unwrap()
            .digit,
            '7'
        );
    }

    /// Any origin works: virtual time only ever adds to it.
    #[allow(clippy::disallowed_methods)]
    fn origin() -> Instant {
        Instant::now()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs a sender to idle in virtual time, as a shell would: sleep until `poll_timeout`,
    /// then drain `poll_transmit`. Returns (ms since `t0`, packet).
    fn drive(s: &mut DtmfSender, t0: Instant) -> Vec<(u64, DtmfPacket)> {
        let mut sent = Vec::new();
        while let Some(t) = s.poll_timeout() {
            while let Some(p) = s.poll_transmit(t) {
                sent.push(((t - t0).as_millis() as u64, p));
            }
            if s.is_idle() {
                break;
            }
        }
        sent
    }

    fn pkt(marker: bool, timestamp: u32, event: u8, end: bool, duration: u16) -> DtmfPacket {
        DtmfPacket {
            marker,
            timestamp,
            payload: TelephoneEvent {
                event,
                end,
                volume: 10,
                duration,
            },
        }
    }

    #[test]
    fn rfc4733_2_5_1_100ms_digit_at_8khz_20ms_field_by_field() {
        let t0 = origin();
        let cfg = SenderConfig {
            interval: ms(20),
            ..SenderConfig::new(8000)
        };
        let mut s = DtmfSender::new(cfg, t0, 1000);
        s.handle_digit(t0, 5, ms(100)).unwrap();
        assert!(
            s.suppress_audio(t0),
            "the event owns the stream from its start"
        );
        assert!(s.suppress_audio(t0 + ms(99)));
        let sent = drive(&mut s, t0);
        assert_eq!(
            sent,
            vec![
                // Each update reports the time elapsed since the start, on the start's timestamp.
                (20, pkt(true, 1000, 5, false, 160)),
                (40, pkt(false, 1000, 5, false, 320)),
                (60, pkt(false, 1000, 5, false, 480)),
                (80, pkt(false, 1000, 5, false, 640)),
                // The end, then its two repetitions one interval apart (§2.5.1.4).
                (100, pkt(false, 1000, 5, true, 800)),
                (120, pkt(false, 1000, 5, true, 800)),
                (140, pkt(false, 1000, 5, true, 800)),
            ]
        );
        assert!(
            !s.suppress_audio(t0 + ms(100)),
            "audio resumes when the tone ends"
        );
        assert_eq!(s.poll_timeout(), None);
        // The wire form of the first and last packets.
        assert_eq!(sent[0].1.payload.encode(), [5, 0x0a, 0x00, 0xa0]);
        assert_eq!(sent[6].1.payload.encode(), [5, 0x8a, 0x03, 0x20]);
    }

    #[test]
    fn event_timestamps_follow_the_stream_clock() {
        let t0 = origin();
        let mut s = DtmfSender::new(SenderConfig::default(), t0, 4_000_000_000);
        // Audio went out one second later with this timestamp; the digit starts 30 ms after.
        s.handle_media_clock(t0 + ms(1000), u32::MAX - 100);
        s.handle_digit(t0 + ms(1030), 11, ms(100)).unwrap();
        let sent = drive(&mut s, t0);
        assert!(
            sent.iter().all(|(_, p)| p.timestamp == 139),
            "wraps: {sent:?}"
        );
        // Default interval 50 ms: updates at 50 and 100 (the end), then two repetitions.
        let times: Vec<u64> = sent.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, vec![1080, 1130, 1180, 1230]);
        assert_eq!(sent[0].1.payload.duration, 400);
        assert!(sent[1].1.payload.end && sent[1].1.payload.duration == 800);
    }

    #[test]
    fn queued_digits_keep_the_gap_and_each_start_with_a_marker() {
        let t0 = origin();
        let cfg = SenderConfig {
            interval: ms(20),
            ..SenderConfig::new(8000)
        };
        let mut s = DtmfSender::new(cfg, t0, 0);
        let info = parse_info("application/dtmf-relay", b"Signal=1\r\nDuration=100\r\n").unwrap();
        s.handle_info(t0, &info).unwrap();
        s.handle_info(t0, &parse_info("application/dtmf", b"#").unwrap())
            .unwrap();
        let sent = drive(&mut s, t0);
        let first: Vec<_> = sent.iter().filter(|(_, p)| p.payload.event == 1).collect();
        let second: Vec<_> = sent.iter().filter(|(_, p)| p.payload.event == 11).collect();
        assert_eq!(first.len(), 7);
        assert_eq!(first.last().map(|(t, _)| *t), Some(140));
        // Second digit: starts 50 ms after the first ended (100 + 50 > its last end at 140),
        // default duration 100 ms.
        assert_eq!(second[0], &(170, pkt(true, 1200, 11, false, 160)));
        assert_eq!(second.iter().filter(|(_, p)| p.marker).count(), 1);
        assert_eq!(
            second
                .last()
                .map(|(t, p)| (*t, p.payload.end, p.payload.duration)),
            Some((290, true, 800))
        );
        assert!(
            !s.suppress_audio(t0 + ms(120)),
            "gap between the digits carries audio"
        );
        assert!(s.is_idle());
    }

    #[test]
    fn gap_also_waits_for_the_last_end_repetition() {
        let t0 = origin();
        let mut s = DtmfSender::new(SenderConfig::default(), t0, 0);
        s.handle_digit(t0, 2, ms(100)).unwrap();
        s.handle_digit(t0, 3, ms(100)).unwrap();
        let sent = drive(&mut s, t0);
        // 50 ms interval: the first digit's last end goes at 200, so the second starts there.
        let start2 = sent
            .iter()
            .find(|(_, p)| p.payload.event == 3)
            .map(|(t, p)| (*t, p.timestamp));
        assert_eq!(start2, Some((250, 1600)));
    }

    #[test]
    fn digit_shorter_than_the_interval_is_one_packet_with_marker_and_end() {
        let t0 = origin();
        let mut s = DtmfSender::new(SenderConfig::default(), t0, 0);
        s.handle_digit(t0, 0, ms(10)).unwrap();
        let sent = drive(&mut s, t0);
        // Lengthened to the 40 ms minimum.
        assert_eq!(
            sent,
            vec![
                (40, pkt(true, 0, 0, true, 320)),
                (90, pkt(false, 0, 0, true, 320)),
                (140, pkt(false, 0, 0, true, 320)),
            ]
        );
    }

    #[test]
    fn a_late_shell_gets_one_merged_update_and_every_end() {
        let t0 = origin();
        let cfg = SenderConfig {
            interval: ms(20),
            ..SenderConfig::new(8000)
        };
        let mut s = DtmfSender::new(cfg, t0, 0);
        s.handle_digit(t0, 7, ms(200)).unwrap();
        assert_eq!(
            s.poll_transmit(t0 + ms(70)),
            Some(pkt(true, 0, 7, false, 480))
        );
        assert_eq!(s.poll_transmit(t0 + ms(70)), None);
        assert_eq!(s.poll_timeout(), Some(t0 + ms(80)));
        // Woken long after the end: the end and, one by one as they fall due, its copies.
        assert_eq!(
            s.poll_transmit(t0 + ms(500)),
            Some(pkt(false, 0, 7, true, 1600))
        );
        assert_eq!(
            s.poll_transmit(t0 + ms(500)),
            Some(pkt(false, 0, 7, true, 1600))
        );
        assert_eq!(
            s.poll_transmit(t0 + ms(500)),
            Some(pkt(false, 0, 7, true, 1600))
        );
        assert_eq!(s.poll_transmit(t0 + ms(500)), None);
        assert!(s.is_idle());
        // Time going backwards counts as the last time seen.
        assert!(!s.suppress_audio(t0));
    }

    #[test]
    fn rfc4733_2_5_1_3_long_event_is_split_into_segments() {
        let t0 = origin();
        let cfg = SenderConfig {
            interval: ms(20),
            ..SenderConfig::new(48000)
        };
        let ts0 = u32::MAX - 1000;
        let mut s = DtmfSender::new(cfg, t0, ts0);
        // 3 s at 48 kHz = 144000 units = 65535 + 65535 + 12930.
        s.handle_digit(t0, 9, ms(3000)).unwrap();
        let sent = drive(&mut s, t0);
        let seg = |k: u32| ts0.wrapping_add(k * 0xFFFF);
        assert_eq!(sent.iter().filter(|(_, p)| p.marker).count(), 1);
        assert!(sent[0].1.marker);
        for k in 0..2 {
            let finals = sent
                .iter()
                .filter(|(_, p)| p.timestamp == seg(k) && p.payload.duration == 0xFFFF)
                .count();
            assert_eq!(finals, 3, "segment {k} final sent three times");
        }
        let ends: Vec<_> = sent.iter().filter(|(_, p)| p.payload.end).collect();
        assert_eq!(ends.len(), 3);
        assert!(
            ends.iter()
                .all(|(_, p)| p.timestamp == seg(2) && p.payload.duration == 12930)
        );
        // Crossing the first boundary at tick 69 (66240 units): close segment 0, then 705
        // units into segment 1.
        let at = sent.iter().position(|(t, _)| *t == 69 * 20).unwrap();
        assert_eq!(sent[at].1, pkt(false, seg(0), 9, false, 0xFFFF));
        assert_eq!(sent[at + 1].1, pkt(false, seg(1), 9, false, 705));
        // The next tick repeats segment 0's final before its update.
        assert_eq!(
            sent[at + 2],
            (70 * 20, pkt(false, seg(0), 9, false, 0xFFFF))
        );
        assert_eq!(sent[at + 3], (70 * 20, pkt(false, seg(1), 9, false, 1665)));
        // Durations never decrease within a segment.
        for k in 0..3 {
            let d: Vec<u16> = sent
                .iter()
                .filter(|(_, p)| p.timestamp == seg(k))
                .map(|(_, p)| p.payload.duration)
                .collect();
            assert!(d.windows(2).all(|w| w[0] <= w[1]), "segment {k}: {d:?}");
        }
        assert_eq!(sent.last().map(|(t, _)| *t), Some(3040));
    }

    #[test]
    fn sender_refuses_misuse() {
        let t0 = origin();
        let mut s = DtmfSender::new(
            SenderConfig {
                max_queue: 2,
                ..SenderConfig::default()
            },
            t0,
            0,
        );
        s.handle_digit(t0, 1, ms(100)).unwrap();
        s.handle_digit(t0, 2, ms(100)).unwrap();
        assert_eq!(
            s.handle_digit(t0, 3, ms(100)),
            Err(Error::Misuse("dtmf queue is full"))
        );
        let bad = InfoDigit {
            digit: 'x',
            duration_ms: None,
        };
        assert!(s.handle_info(t0, &bad).is_err());
    }

    /// Feeds one packet at `t` ms and returns what the receiver reported.
    fn feed(
        r: &mut DtmfReceiver,
        t0: Instant,
        t: u64,
        ts: u32,
        marker: bool,
        (event, end, duration): (u8, bool, u16),
    ) -> Vec<DtmfEvent> {
        let payload = TelephoneEvent {
            event,
            end,
            volume: 10,
            duration,
        }
        .encode();
        r.handle_packet(t0 + ms(t), ts, marker, &payload).unwrap();
        std::iter::from_fn(|| r.poll_event()).collect()
    }

    fn ended(event: u8, timestamp: u32, duration: u32, cause: EndCause) -> DtmfEvent {
        DtmfEvent::Ended {
            event,
            timestamp,
            duration,
            duration_ms: millis(duration, 8000),
            cause,
        }
    }

    #[test]
    fn rfc4733_2_5_2_receiver_reports_each_event_once() {
        let t0 = origin();
        let mut r = DtmfReceiver::new(ReceiverConfig::default());
        let began = DtmfEvent::Began {
            event: 5,
            timestamp: 1000,
        };
        assert_eq!(
            feed(&mut r, t0, 20, 1000, true, (5, false, 160)),
            vec![began]
        );
        assert_eq!(r.poll_timeout(), Some(t0 + ms(220)));
        assert!(
            feed(&mut r, t0, 40, 1000, true, (5, false, 160)).is_empty(),
            "duplicate"
        );
        assert!(feed(&mut r, t0, 60, 1000, false, (5, false, 480)).is_empty());
        assert!(
            feed(&mut r, t0, 61, 1000, false, (5, false, 320)).is_empty(),
            "reordered"
        );
        let end = ended(5, 1000, 800, EndCause::EndBit);
        assert_eq!(
            feed(&mut r, t0, 100, 1000, false, (5, true, 800)),
            vec![end]
        );
        assert_eq!(
            end.info_body().as_deref(),
            Some("Signal=5\r\nDuration=100\r\n")
        );
        assert!(
            feed(&mut r, t0, 101, 1000, false, (5, false, 640)).is_empty(),
            "late update"
        );
        assert!(feed(&mut r, t0, 120, 1000, false, (5, true, 800)).is_empty());
        assert!(feed(&mut r, t0, 140, 1000, false, (5, true, 800)).is_empty());
        assert_eq!(r.poll_timeout(), None);
        r.handle_timeout(t0 + ms(1000));
        assert_eq!(r.poll_event(), None);
    }

    #[test]
    fn receiver_tolerates_a_lost_start_and_lost_ends() {
        let t0 = origin();
        let mut r = DtmfReceiver::new(ReceiverConfig::default());
        // First packet (marker) lost: the digit begins with the second.
        assert_eq!(
            feed(&mut r, t0, 40, 8000, false, (1, false, 320)),
            vec![DtmfEvent::Began {
                event: 1,
                timestamp: 8000
            }]
        );
        assert!(feed(&mut r, t0, 60, 8000, false, (1, false, 480)).is_empty());
        // All three ends lost: 200 ms after the last packet it ends with what was seen.
        r.handle_timeout(t0 + ms(259));
        assert_eq!(r.poll_event(), None);
        assert_eq!(r.poll_timeout(), Some(t0 + ms(260)));
        r.handle_timeout(t0 + ms(260));
        assert_eq!(r.poll_event(), Some(ended(1, 8000, 480, EndCause::Timeout)));
        // Its end packets arriving after all change nothing.
        assert!(feed(&mut r, t0, 300, 8000, false, (1, true, 800)).is_empty());
        // The same digit again, its first packet lost too: a new press, not a continuation.
        let next = feed(&mut r, t0, 400, 9600, false, (1, false, 160));
        assert_eq!(
            next,
            vec![DtmfEvent::Began {
                event: 1,
                timestamp: 9600
            }]
        );
        // Ends only by the next event: no end packet, no timeout yet.
        let two = feed(&mut r, t0, 500, 11200, true, (2, true, 800));
        assert_eq!(
            two,
            vec![
                ended(1, 9600, 160, EndCause::NextEvent),
                DtmfEvent::Began {
                    event: 2,
                    timestamp: 11200
                },
                ended(2, 11200, 800, EndCause::EndBit),
            ]
        );
        // A straggler of digit 1 after digit 2 began is recognised as old.
        assert!(feed(&mut r, t0, 501, 9600, false, (1, false, 320)).is_empty());
        assert!(feed(&mut r, t0, 502, 8000, false, (1, false, 320)).is_empty());
    }

    #[test]
    fn receiver_follows_long_event_segments() {
        let t0 = origin();
        let mut r = DtmfReceiver::new(ReceiverConfig::default());
        let ts = u32::MAX - 10;
        assert_eq!(feed(&mut r, t0, 0, ts, true, (4, false, 400)).len(), 1);
        // Segment 0's final packets are all lost; the next segment starts 0xFFFF later.
        assert!(feed(&mut r, t0, 10, ts, false, (4, false, 65200)).is_empty());
        let seg1 = ts.wrapping_add(0xFFFF);
        assert!(feed(&mut r, t0, 20, seg1, false, (4, false, 100)).is_empty());
        // A late packet of segment 0 is no new event either.
        assert!(feed(&mut r, t0, 21, ts, false, (4, false, 0xFFFF)).is_empty());
        let end = feed(&mut r, t0, 30, seg1, false, (4, true, 5000));
        assert_eq!(end, vec![ended(4, ts, 65535 + 5000, EndCause::EndBit)]);
    }

    #[test]
    fn late_segments_of_a_timed_out_event_are_not_a_new_digit() {
        // Found by the loss property: a 2.7 s digit at 48 kHz timed out in segment 0 after a
        // run of losses; its segment 2 packets then arrived and must not begin another digit.
        let t0 = origin();
        let mut r = DtmfReceiver::new(ReceiverConfig::new(48000));
        assert_eq!(feed(&mut r, t0, 50, 100, true, (0, false, 2400)).len(), 1);
        r.handle_timeout(t0 + ms(250));
        assert!(matches!(
            r.poll_event(),
            Some(DtmfEvent::Ended {
                cause: EndCause::Timeout,
                duration: 2400,
                ..
            })
        ));
        let seg2 = 100 + 2 * 0xFFFF;
        assert!(feed(&mut r, t0, 2700, seg2, false, (0, false, 12)).is_empty());
        assert!(feed(&mut r, t0, 2750, seg2, false, (0, true, 18)).is_empty());
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn earlier_segment_finals_keep_a_long_event_alive() {
        // Found by the loss property: the receiver first heard segment 1, then only segment
        // 0's final copies for a while; they prove the event runs, so no timeout.
        let t0 = origin();
        let mut r = DtmfReceiver::new(ReceiverConfig::new(48000));
        let seg1 = 7 + 0xFFFF;
        assert_eq!(
            feed(&mut r, t0, 1400, seg1, false, (3, false, 1665)),
            vec![DtmfEvent::Began {
                event: 3,
                timestamp: seg1
            }]
        );
        assert!(feed(&mut r, t0, 1450, 7, false, (3, false, 0xFFFF)).is_empty());
        assert!(feed(&mut r, t0, 1500, 7, false, (3, false, 0xFFFF)).is_empty());
        r.handle_timeout(t0 + ms(1650));
        assert_eq!(r.poll_event(), None, "alive until 200 ms after 1500");
        assert_eq!(r.poll_timeout(), Some(t0 + ms(1700)));
        let end = feed(&mut r, t0, 1690, seg1, false, (3, true, 30513));
        assert!(matches!(
            end.as_slice(),
            [DtmfEvent::Ended {
                cause: EndCause::EndBit,
                duration: 30513,
                ..
            }]
        ));
    }

    #[test]
    fn receiver_refuses_malformed_payloads_and_restarted_clocks_start_events() {
        let t0 = origin();
        let mut r = DtmfReceiver::new(ReceiverConfig::default());
        assert_eq!(r.handle_packet(t0, 0, true, &[1, 2]), Err(Error::Event));
        assert_eq!(
            feed(&mut r, t0, 0, 5_000_000, true, (3, true, 800)).len(),
            2
        );
        // A timestamp far behind (a sender that restarted) is a new event, not a straggler.
        assert_eq!(feed(&mut r, t0, 100, 1000, true, (3, false, 160)).len(), 1);
    }
}
