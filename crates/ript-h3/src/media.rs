//! Per-call media bookkeeping shared by both roles: numbering and truncation of sent chunks,
//! extension of received ones, acknowledgements both ways, optional sealing, and statistics.

use ript_proto::ChunkError;
use ript_proto::call::{MediaPath, MigrateTrigger};
use ript_proto::chunk::{
    self, Ack, Chunk, Extender, MediaChunk, MediaDirection, MediaKey, Package, PayloadType,
    SeqState,
};
use ript_proto::events::EventKind;
use ript_proto::model::Reason;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// Media the application hands to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMedia {
    pub source: u8,
    pub sink: u8,
    pub payload_type: PayloadType,
    /// Wall-clock ms of the first sample.
    pub timestamp_ms: u64,
    pub media: Vec<u8>,
    pub marker: bool,
    pub audio_level: Option<u8>,
}

/// Media a call received, with seq and timestamp extended to full values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMedia {
    pub source: u8,
    pub sink: u8,
    pub seq: u64,
    pub timestamp_ms: Option<u64>,
    pub payload_type: PayloadType,
    pub media: Vec<u8>,
    pub marker: bool,
    pub audio_level: Option<u8>,
}

/// What a call reports to the application (both roles).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    State(EventKind, Option<Reason>),
    Media(ReceivedMedia),
    MediaPanic,
    HandlerChanged(String),
    Migrating(MigrateTrigger),
    MediaPath(MediaPath),
    Ended(EventKind, Option<Reason>),
}

/// Media counters of one call, from our side.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaStats {
    pub sent: u64,
    pub acked: u64,
    pub received: u64,
    pub invalid: u64,
    /// Received chunks that were acknowledged by us.
    pub acks_sent: u64,
    pub rtt_p50_ms: f64,
    pub rtt_p99_ms: f64,
    pub datagrams: bool,
}

const MAX_INFLIGHT: usize = 4096;
const MAX_RTT_SAMPLES: usize = 100_000;

#[derive(Debug)]
pub(crate) struct MediaEndpoint {
    out_dir: MediaDirection,
    key: Option<MediaKey>,
    send: HashMap<(u8, u8), SeqState>,
    recv_seq: HashMap<(u8, u8), Extender>,
    recv_ts: HashMap<(u8, u8), Extender>,
    inflight: VecDeque<((u8, u8, u64), Instant)>,
    pending_acks: Vec<u8>,
    rtts_us: Vec<u32>,
    stats: MediaStats,
}

impl MediaEndpoint {
    pub(crate) fn new(out_dir: MediaDirection, key: Option<[u8; 16]>) -> Self {
        MediaEndpoint {
            out_dir,
            key: key.and_then(|k| MediaKey::new(&k).ok()),
            send: HashMap::new(),
            recv_seq: HashMap::new(),
            recv_ts: HashMap::new(),
            inflight: VecDeque::new(),
            pending_acks: Vec::new(),
            rtts_us: Vec::new(),
            stats: MediaStats::default(),
        }
    }

    fn in_dir(&self) -> MediaDirection {
        match self.out_dir {
            MediaDirection::C2s => MediaDirection::S2c,
            MediaDirection::S2c => MediaDirection::C2s,
        }
    }

    /// Numbers, truncates (ript-profile §6) and frames one chunk.
    pub(crate) fn encode(&mut self, now: Instant, m: OutgoingMedia) -> Vec<u8> {
        let st = self
            .send
            .entry((m.source, m.sink))
            .or_insert_with(|| SeqState::new(1));
        let (seq, full) = st.next_seq();
        let (wseq, wts) = SeqState::wire(full, seq, m.timestamp_ms);
        let chunk = MediaChunk {
            seq: wseq,
            timestamp: Some(wts),
            payload_type: m.payload_type,
            source: m.source,
            sink: m.sink,
            marker: m.marker,
            reference: false,
            spatial: None,
            temporal: None,
            audio_level: m.audio_level,
            extensions: vec![],
            package: Package::Clear {
                media: m.media,
                extensions: vec![],
            },
        };
        let mut frame = Vec::with_capacity(200);
        let seal = self.key.as_ref().map(|k| (k, self.out_dir, seq));
        chunk.encode_frame(&mut frame, seal);
        self.stats.sent += 1;
        if self.inflight.len() >= MAX_INFLIGHT {
            self.inflight.pop_front();
        }
        self.inflight.push_back(((m.source, m.sink, seq), now));
        frame
    }

    /// A new media path (migration, reconnection, fallback): full values again.
    pub(crate) fn reset_path(&mut self) {
        for st in self.send.values_mut() {
            st.reset_path();
        }
    }

    /// True while some sent chunk waits for its ack.
    pub(crate) fn outstanding(&self) -> bool {
        !self.inflight.is_empty()
    }

    /// Processes a body or datagram. Returns media received, the number of acks received and
    /// whether any chunk was invalid; acks for the media are queued for `take_acks`.
    pub(crate) fn receive(&mut self, now: Instant, wall_ms: u64, buf: &[u8]) -> Received {
        let mut out = Received::default();
        for raw in chunk::raw_frames_checked(buf) {
            let raw = match raw {
                Ok(r) => r,
                Err(e) => {
                    out.invalid += 1;
                    out.first_error.get_or_insert(e);
                    break;
                }
            };
            match chunk::decode_chunk(raw) {
                Ok(Chunk::Media(m)) => match self.accept_media(wall_ms, raw, m) {
                    Some(r) => out.media.push(r),
                    None => {
                        out.invalid += 1;
                        out.first_error.get_or_insert(ChunkError::Unseal);
                    }
                },
                Ok(Chunk::Ack(a)) => {
                    if a.direction == self.out_dir {
                        self.on_ack(now, a);
                        out.acks += 1;
                    } else {
                        out.invalid += 1;
                        out.first_error
                            .get_or_insert(ChunkError::BadValue(chunk::tag::ACK_DIRECTION));
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "invalid media chunk dropped");
                    out.invalid += 1;
                    out.first_error.get_or_insert(e);
                }
            }
        }
        self.stats.invalid += out.invalid as u64;
        self.stats.received += out.media.len() as u64;
        out
    }

    fn accept_media(&mut self, wall_ms: u64, raw: &[u8], m: MediaChunk) -> Option<ReceivedMedia> {
        let ids = (m.source, m.sink);
        let seq = self.recv_seq.entry(ids).or_default().extend(m.seq)?;
        let ts = match m.timestamp {
            Some(t) => self.recv_ts.entry(ids).or_default().extend(t),
            None => None,
        };
        let media = match m.package {
            Package::Clear { media, .. } => media,
            Package::Sealed(_) => {
                let key = self.key.as_ref()?;
                chunk::open(raw, key, self.in_dir(), seq).ok()?.0
            }
        };
        Ack {
            direction: self.in_dir(),
            source: m.source,
            sink: m.sink,
            seq,
            receive_time: Some(wall_ms),
        }
        .encode_frame(&mut self.pending_acks);
        self.stats.acks_sent += 1;
        Some(ReceivedMedia {
            source: m.source,
            sink: m.sink,
            seq,
            timestamp_ms: ts,
            payload_type: m.payload_type,
            media,
            marker: m.marker,
            audio_level: m.audio_level,
        })
    }

    fn on_ack(&mut self, now: Instant, a: Ack) {
        if let Some(st) = self.send.get_mut(&(a.source, a.sink)) {
            st.on_ack(a.seq);
        }
        let key = (a.source, a.sink, a.seq);
        if let Some(pos) = self.inflight.iter().position(|(k, _)| *k == key) {
            if let Some((_, sent_at)) = self.inflight.remove(pos) {
                self.stats.acked += 1;
                if self.rtts_us.len() < MAX_RTT_SAMPLES {
                    let us = now.saturating_duration_since(sent_at).as_micros();
                    self.rtts_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                }
            }
            // Older chunks of the same stream that were never acked are lost (acks are
            // sent in order per stream on one path).
            self.inflight
                .retain(|((s, k, q), _)| !(*s == a.source && *k == a.sink && *q < a.seq));
        }
    }

    pub(crate) fn take_acks(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending_acks)
    }

    pub(crate) fn has_acks(&self) -> bool {
        !self.pending_acks.is_empty()
    }

    pub(crate) fn stats(&self, datagrams: bool) -> MediaStats {
        let mut s = self.stats.clone();
        s.datagrams = datagrams;
        let mut v = self.rtts_us.clone();
        v.sort_unstable();
        let pct = |p: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            let idx = ((v.len() - 1) as f64 * p).round() as usize;
            f64::from(v.get(idx).copied().unwrap_or(0)) / 1000.0
        };
        s.rtt_p50_ms = pct(0.50);
        s.rtt_p99_ms = pct(0.99);
        s
    }
}

#[derive(Debug, Default)]
pub(crate) struct Received {
    pub(crate) media: Vec<ReceivedMedia>,
    pub(crate) acks: usize,
    pub(crate) invalid: usize,
    /// Why the first invalid chunk was refused (for the problem detail).
    pub(crate) first_error: Option<ChunkError>,
}
