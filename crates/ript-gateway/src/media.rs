//! One call's media between its SIP leg (RTP) and its RIPT leg (chunks).
//!
//! The SIP leg runs through a [`media_relay::Bridge`], which already does everything a SIP
//! peer needs — latching, SRTP, RTP timeout, µ-law ⇄ A-law and G.711 ⇄ Opus, RFC 4733 ⇄ SIP
//! INFO, CN — between the peer's codec and the RIPT leg's codec. The bridge's second leg is
//! clear RTP in the RIPT codec inside this process ([`Bridge::start_with_sink`]), which this
//! module maps to and from RIPT chunks with [`media_proto::chunkmap`] (extended timestamps,
//! RTP clock ⇄ wall-clock ms, marker, audio level, telephone-events).
//!
//! Each packet crosses as few tasks as it can, since every hand-off between tasks is a
//! wake-up and often a context switch, which cost more than the mapping itself: RTP from the
//! SIP peer is mapped and handed to the RIPT call on the bridge's task (the bridge's sink),
//! and chunks from the RIPT peer are mapped and queued for the bridge on the RIPT call's task
//! (its media handler, [`CallMedia::relay_on_ript_task`]).

use bytes::Bytes;
use media_proto::chunkmap::{ChunksToRtp, Frame, PtMap, RtpMap, RtpToChunks};
use media_relay::{Bridge, BridgeEvent, Codec, DtmfMode, LegConfig, LegMedia, RtpPair};
use ript_h3::{OutgoingMedia, ReceivedMedia};
use ript_proto::chunk::PayloadType;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::sync::mpsc::Sender;
use tracing::debug;

/// RTP payload types of the internal leg (its SDP exists only here).
const INTERNAL_OPUS_PT: u8 = 111;
const INTERNAL_TE_PT: u8 = 101;

/// A SIP leg silent this long (not on hold) ends the call's media (RTP timeout).
pub const RTP_TIMEOUT: Duration = Duration::from_secs(60);

/// The RIPT call a media path sends to: the client's or the server's control.
#[derive(Debug, Clone)]
pub enum RiptSink {
    Client(ript_h3::client::ClientCallControl),
    Server(ript_h3::server::CallControl),
}

impl RiptSink {
    async fn set_media_handler(&self, h: ript_h3::MediaHandler) -> Result<(), ript_h3::Error> {
        match self {
            RiptSink::Client(c) => c.set_media_handler(h).await,
            RiptSink::Server(c) => c.set_media_handler(h).await,
        }
    }

    fn send(&self, m: OutgoingMedia) -> Result<(), ript_h3::Error> {
        match self {
            RiptSink::Client(c) => c.send_media(m),
            RiptSink::Server(c) => c.send_media(m),
        }
    }

    /// The RIPT leg's media counters (chunks sent and acknowledged, received, RTT).
    async fn stats(&self) -> Option<ript_h3::MediaStats> {
        match self {
            RiptSink::Client(c) => c.stats().await.ok(),
            RiptSink::Server(c) => c.stats().await.ok(),
        }
    }
}

/// The RIPT leg's audio codec, as the directives chose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RiptCodec(pub PayloadType);

impl RiptCodec {
    /// The relay's codec and the internal leg's payload type for it; `None` for a codec
    /// the relay cannot convert (the call then needs the SIP leg to speak it).
    fn internal(self) -> Option<(Codec, u8)> {
        match self.0 {
            PayloadType::PCMU => Some((Codec::PCMU, 0)),
            PayloadType::PCMA => Some((Codec::PCMA, 8)),
            PayloadType::OPUS => Some((Codec::OPUS, INTERNAL_OPUS_PT)),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        self.0.codec_name().unwrap_or("unknown")
    }

    /// The codec of the first audio entry of a directive (`1 to 1: PCMU;`), if one names a
    /// codec the gateway bridges.
    pub fn from_directive(d: &str) -> Option<RiptCodec> {
        let d: ript_proto::adv::Directive = d.parse().ok()?;
        d.entries.iter().find_map(|e| {
            let pt = PayloadType::for_codec(&e.codec.name)?;
            let c = RiptCodec(pt);
            c.internal().map(|_| c)
        })
    }
}

/// The SIP peer's side, from SDP offer/answer.
#[derive(Debug, Clone)]
pub struct SipSide {
    pub remote: Option<SocketAddr>,
    pub media: LegMedia,
    pub hold: bool,
}

/// Counters both directions keep.
#[derive(Debug, Default)]
pub struct Counters {
    pub chunks_out: AtomicU64,
    pub chunks_in: AtomicU64,
    pub chunk_errors: AtomicU64,
}

/// A call's running media.
#[derive(Debug)]
pub struct CallMedia {
    bridge: Bridge,
    /// RIPT → SIP, shared by the RIPT call's media handler and [`CallMedia::relay_to_sip`]
    /// (chunks that arrived as events before the handler was set), so both number the RTP
    /// stream the same way.
    to_sip: Arc<Mutex<ToSip>>,
    sink: RiptSink,
    /// The RIPT call's media handler is set ([`CallMedia::relay_on_ript_task`]).
    on_ript_task: bool,
    pub counters: Arc<Counters>,
    pub digits: Option<mpsc::Receiver<BridgeEvent>>,
    codec: RiptCodec,
}

/// Maps RIPT chunks to clear RTP for the bridge's leg B.
#[derive(Debug)]
struct ToSip {
    to_rtp: ChunksToRtp,
    /// Clear RTP into the bridge's leg B (from the RIPT leg).
    to_bridge: Sender<Bytes>,
    counters: Arc<Counters>,
}

impl ToSip {
    /// Never waits: a full bridge queue drops the chunk.
    fn relay(&mut self, m: ReceivedMedia) {
        self.counters.chunks_in.fetch_add(1, Ordering::Relaxed);
        let frame = Frame {
            payload_type: m.payload_type,
            timestamp_ms: m.timestamp_ms.unwrap_or_else(ript_h3::wall_ms),
            marker: m.marker,
            audio_level: m.audio_level,
            payload: Bytes::from(m.media),
        };
        let sent = self
            .to_rtp
            .map(&frame)
            .ok()
            .and_then(|p| media_proto::rtp::serialize(&p).ok())
            .map(|b| self.to_bridge.try_send(b));
        if !matches!(sent, Some(Ok(()))) {
            self.counters.chunk_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A poisoned lock only means a handler panicked mid-packet; the mapper's state is still
/// usable for the next one.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn pt_map(codec: RiptCodec) -> PtMap {
    let rate = if codec.0 == PayloadType::OPUS {
        48_000
    } else {
        8000
    };
    let mut maps = vec![RtpMap {
        pt: INTERNAL_TE_PT,
        name: "telephone-event".into(),
        clock_rate: rate,
    }];
    if codec.0 == PayloadType::OPUS {
        maps.push(RtpMap {
            pt: INTERNAL_OPUS_PT,
            name: "opus".into(),
            clock_rate: 48_000,
        });
    }
    PtMap::new(&maps)
}

impl CallMedia {
    /// Starts relaying between the SIP peer on `sip_pair` and the RIPT call `sink`, whose
    /// audio is `codec`.
    pub fn start(
        sip_pair: RtpPair,
        sip: SipSide,
        codec: RiptCodec,
        sink: RiptSink,
        source_sink: (u8, u8),
    ) -> Result<CallMedia, crate::calls::CallError> {
        let (relay_codec, pt) = codec.internal().ok_or(crate::calls::CallError::Media(
            "the RIPT codec cannot be bridged",
        ))?;
        let a_cfg = LegConfig {
            remote: sip.remote,
            clock_rate: sip.media.codec.clock_rate(),
            media: Some(sip.media),
            hold: sip.hold,
            ..LegConfig::default()
        };
        // The channel leg is silent whenever the RIPT peer is (the bridge exempts it from the
        // RTP timeout): only the SIP leg's silence means a dead call.
        let b_cfg = LegConfig {
            clock_rate: relay_codec.clock_rate(),
            media: Some(LegMedia::new(
                pt,
                relay_codec,
                DtmfMode::Rfc4733 { pt: INTERNAL_TE_PT },
            )),
            ..LegConfig::default()
        };
        let counters = Arc::new(Counters::default());
        let mut uplink = Uplink {
            to_chunks: RtpToChunks::new(pt_map(codec), None),
            sink: sink.clone(),
            ids: source_sink,
            counters: Arc::clone(&counters),
        };
        let (mut bridge, to_bridge) = Bridge::start_with_sink(
            sip_pair,
            a_cfg,
            b_cfg,
            RTP_TIMEOUT,
            Box::new(move |rtp| uplink.send(rtp)),
        )
        .map_err(|_| crate::calls::CallError::Media("the codecs cannot be bridged"))?;
        let digits = bridge.take_events();
        let (ssrc, seq, ts) = rand::random::<(u32, u16, u32)>();
        let to_sip = Arc::new(Mutex::new(ToSip {
            to_rtp: ChunksToRtp::new(pt_map(codec), ssrc, seq, ts),
            to_bridge,
            counters: Arc::clone(&counters),
        }));
        Ok(CallMedia {
            bridge,
            to_sip,
            sink,
            on_ript_task: false,
            counters,
            digits,
            codec,
        })
    }

    /// From now on chunks from the RIPT peer are mapped and queued for the bridge on the RIPT
    /// call's own task, not delivered as events to the call's task first. Before the answer a
    /// SIP-originated call still wants the events: the first chunk is its cue for early media.
    pub async fn relay_on_ript_task(&mut self) {
        if self.on_ript_task {
            return;
        }
        self.on_ript_task = true;
        let to_sip = Arc::clone(&self.to_sip);
        let handler: ript_h3::MediaHandler = Box::new(move |m| lock(&to_sip).relay(m));
        if self.sink.set_media_handler(handler).await.is_err() {
            debug!("the RIPT call is gone; no media handler set");
        }
    }

    pub fn codec(&self) -> RiptCodec {
        self.codec
    }

    /// A chunk from the RIPT leg toward the SIP peer; never waits (a full socket drops it).
    pub fn relay_to_sip(&mut self, m: ReceivedMedia) {
        lock(&self.to_sip).relay(m);
    }

    /// Plays a digit (from a SIP INFO of the SIP peer) toward the RIPT leg as telephone-events.
    pub async fn digit_to_ript(&self, digit: char, duration_ms: Option<u32>) -> bool {
        self.bridge
            .send_digit(true, digit, duration_ms)
            .await
            .is_ok()
    }

    /// A re-INVITE or UPDATE changed the SIP peer's media.
    pub async fn update_sip(&self, sip: SipSide) -> bool {
        let cfg = LegConfig {
            remote: sip.remote,
            clock_rate: sip.media.codec.clock_rate(),
            media: Some(sip.media),
            hold: sip.hold,
            ..LegConfig::default()
        };
        self.bridge.update(false, cfg).await.is_ok()
    }

    pub async fn stats(&self) -> Option<media_relay::BridgeStats> {
        self.bridge.stats().await
    }

    /// The RIPT leg's counters from its acknowledgements (`None` once the call is gone).
    pub async fn ript_stats(&self) -> Option<ript_h3::MediaStats> {
        self.sink.stats().await
    }

    /// Resolves when the SIP leg's RTP timed out (or the bridge failed).
    pub async fn ended(&mut self) -> media_relay::BridgeEnd {
        self.bridge.ended().await
    }
}

/// SIP → RIPT: RTP from the bridge's leg B becomes chunks, on the bridge's task.
struct Uplink {
    to_chunks: RtpToChunks,
    sink: RiptSink,
    /// The directive's (source, sink) ids.
    ids: (u8, u8),
    counters: Arc<Counters>,
}

impl Uplink {
    fn send(&mut self, rtp: &[u8]) {
        let Ok(p) = media_proto::rtp::parse(Bytes::copy_from_slice(rtp)) else {
            self.counters.chunk_errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Ok(f) = self.to_chunks.map(&p, ript_h3::wall_ms()) else {
            self.counters.chunk_errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let m = OutgoingMedia {
            source: self.ids.0,
            sink: self.ids.1,
            payload_type: f.payload_type,
            timestamp_ms: f.timestamp_ms,
            media: f.payload.to_vec(),
            marker: f.marker,
            audio_level: f.audio_level,
        };
        match self.sink.send(m) {
            Ok(()) => {
                self.counters.chunks_out.fetch_add(1, Ordering::Relaxed);
            }
            // A call that is gone ends the bridge through the call's task; until then its
            // packets count as errors like a full queue's.
            Err(_) => {
                self.counters.chunk_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
