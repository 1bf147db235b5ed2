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

/// Takes a call's received media on the call's own task, in place of [`CallEvent::Media`]
/// events (`set_media_handler` on either role's call control): a gateway relaying every chunk
/// saves a queue and a task wake-up per chunk. It must not block; hand the media on with a
/// non-waiting send.
pub type MediaHandler = Box<dyn FnMut(ReceivedMedia) + Send + Sync>;

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
    /// Frames a client dropped because `limits::CLIENT_PENDING_PUTS` media PUTs were in
    /// flight (byways only; always 0 on a server).
    pub puts_dropped: u64,
}

const MAX_INFLIGHT: usize = 4096;
/// Sent chunks older than this without an ack count as lost.
const INFLIGHT_AGE: std::time::Duration = std::time::Duration::from_secs(5);
/// RTT samples kept per call (the first ones; enough for p99 of a probe call).
const MAX_RTT_SAMPLES: usize = 8192;
/// Acks waiting for a ride are capped; beyond that the oldest are dropped (acks are advisory).
const MAX_PENDING_ACKS: usize = 16 * 1024;

/// A random first sequence number for a new stream: with one configured media key for many
/// calls, the AES-GCM nonce (direction, ids, seq) must not repeat across calls
/// (ript-profile §6; docs/protocol.md). Kept below 2^62 so it never wraps.
fn random_first_seq() -> u64 {
    let (hi, _) = uuid::Uuid::new_v4().as_u64_pair();
    (hi >> 2).max(1)
}

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
            .or_insert_with(|| SeqState::new(random_first_seq()));
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
        self.expire_inflight(now);
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

    /// Forgets sent chunks unacknowledged for longer than the media buffer age: they are lost.
    /// (Acks may arrive out of order, e.g. over parallel PUTs, so only age decides.)
    fn expire_inflight(&mut self, now: Instant) {
        while self
            .inflight
            .front()
            .is_some_and(|(_, at)| now.saturating_duration_since(*at) > INFLIGHT_AGE)
        {
            self.inflight.pop_front();
        }
    }

    /// Processes a body or datagram. Returns media received, the number of acks received and
    /// whether any chunk was invalid; acks for the media are queued for `take_acks`.
    pub(crate) fn receive(&mut self, now: Instant, wall_ms: u64, buf: &[u8]) -> Received {
        self.expire_inflight(now);
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
        let seq = self.recv_seq.entry(ids).or_default().peek(m.seq)?;
        let ts = match m.timestamp {
            Some(t) => self.recv_ts.entry(ids).or_default().peek(t),
            None => None,
        };
        let media = match m.package {
            Package::Clear { media, .. } => media,
            Package::Sealed(_) => {
                let key = self.key.as_ref()?;
                chunk::open(raw, key, self.in_dir(), seq).ok()?.0
            }
        };
        // Only an accepted (and, when sealed, authenticated) chunk moves the extenders: a
        // forged full seq must not shift every later short one.
        if let Some(x) = self.recv_seq.get_mut(&ids) {
            x.commit(m.seq, seq);
        }
        if let (Some(wire), Some(t), Some(x)) = (m.timestamp, ts, self.recv_ts.get_mut(&ids)) {
            x.commit(wire, t);
        }
        if self.pending_acks.len() > MAX_PENDING_ACKS {
            self.pending_acks.clear();
        }
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
        if let Some(pos) = self.inflight.iter().position(|(k, _)| *k == key)
            && let Some((_, sent_at)) = self.inflight.remove(pos)
        {
            self.stats.acked += 1;
            if self.rtts_us.len() < MAX_RTT_SAMPLES {
                let us = now.saturating_duration_since(sent_at).as_micros();
                self.rtts_us.push(u32::try_from(us).unwrap_or(u32::MAX));
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use ript_proto::chunk::{Chunk, frames};

    /// Any origin works: only differences of it are used.
    #[allow(clippy::disallowed_methods)]
    fn origin() -> Instant {
        Instant::now()
    }

    fn out(n: u8) -> OutgoingMedia {
        OutgoingMedia {
            source: 1,
            sink: 2,
            payload_type: PayloadType::PCMU,
            timestamp_ms: 1_795_460_220_000 + u64::from(n) * 20,
            media: vec![n; 160],
            marker: false,
            audio_level: None,
        }
    }

    fn seq_of(frame: &[u8]) -> ript_proto::chunk::Truncated {
        match frames(frame).next() {
            Some(Ok(Chunk::Media(m))) => m.seq,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ript6_full_values_until_acked_then_two_byte_seq_and_full_again_on_a_new_path() {
        let t = origin();
        let mut tx = MediaEndpoint::new(MediaDirection::C2s, None);
        let mut rx = MediaEndpoint::new(MediaDirection::S2c, None);
        let f0 = tx.encode(t, out(0));
        assert!(seq_of(&f0).is_full());
        // The receiver acks it; the ack comes back to the sender.
        let got = rx.receive(t, 0, &f0);
        assert_eq!(got.media.len(), 1);
        let acks = rx.take_acks();
        assert_eq!(tx.receive(t, 0, &acks).acks, 1);
        let f1 = tx.encode(t, out(1));
        assert_eq!(seq_of(&f1).len, 2, "short seq once a full one was acked");
        assert!(f1.len() < f0.len());
        // The receiver extends it back to the full value.
        let m1 = rx.receive(t, 0, &f1).media.pop().unwrap();
        assert_eq!(m1.seq, got.media[0].seq + 1);
        tx.reset_path();
        assert!(
            seq_of(&tx.encode(t, out(2))).is_full(),
            "a new path starts full again"
        );
    }

    #[test]
    fn calls_sharing_a_key_never_start_at_the_same_seq() {
        let t = origin();
        let key = Some([9u8; 16]);
        let firsts: Vec<u64> = (0..8)
            .map(|_| seq_of(&MediaEndpoint::new(MediaDirection::C2s, key).encode(t, out(0))).value)
            .collect();
        let mut uniq = firsts.clone();
        uniq.sort_unstable();
        uniq.dedup();
        assert_eq!(uniq.len(), firsts.len(), "random first seqs: {firsts:?}");
    }

    #[test]
    fn a_sealed_chunk_that_fails_to_open_does_not_move_the_extender() {
        let t = origin();
        let mut tx = MediaEndpoint::new(MediaDirection::C2s, Some([1; 16]));
        let mut wrong = MediaEndpoint::new(MediaDirection::S2c, Some([2; 16]));
        let mut right = MediaEndpoint::new(MediaDirection::S2c, Some([1; 16]));
        let f = tx.encode(t, out(0));
        assert_eq!(wrong.receive(t, 0, &f).invalid, 1);
        assert!(
            wrong
                .recv_seq
                .values()
                .all(|x| x.peek(ript_proto::chunk::Truncated::short(1, 2)).is_none())
        );
        assert_eq!(right.receive(t, 0, &f).media.len(), 1);
    }

    #[test]
    fn acks_arriving_out_of_order_are_all_credited() {
        let t = origin();
        let mut tx = MediaEndpoint::new(MediaDirection::C2s, None);
        let mut rx = MediaEndpoint::new(MediaDirection::S2c, None);
        let m = |n: u8| OutgoingMedia {
            source: 1,
            sink: 1,
            payload_type: PayloadType::PCMU,
            timestamp_ms: 1_000 + u64::from(n) * 20,
            media: vec![n; 160],
            marker: false,
            audio_level: None,
        };
        let frames: Vec<Vec<u8>> = (0..3).map(|n| tx.encode(t, m(n))).collect();
        // Each chunk is acked separately (as parallel PUTs answer), delivered 3, 1, 2.
        let acks: Vec<Vec<u8>> = frames
            .iter()
            .map(|f| {
                rx.receive(t, 0, f);
                rx.take_acks()
            })
            .collect();
        for i in [2, 0, 1] {
            tx.receive(t, 0, &acks[i]);
        }
        let s = tx.stats(false);
        assert_eq!((s.sent, s.acked), (3, 3));
        assert!(!tx.outstanding());
    }
}
