//! RTP ⇄ RIPT chunk mapping for one stream: SDP payload types ⇄ RIPT's fixed ones, the RTP
//! clock ⇄ wall-clock milliseconds, marker, and the RFC 6464 audio level.

use crate::Error;
use crate::rtp::{Header, Packet};
use bytes::Bytes;
use ript_proto::chunk::PayloadType;

/// One media unit as RIPT carries it (the RIPT shell numbers and frames it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub payload_type: PayloadType,
    /// Wall-clock ms of the first sample (ript-profile §6 tag 2).
    pub timestamp_ms: u64,
    pub marker: bool,
    /// 0–127 = −dBov (RFC 6464 scale, ript-profile §6 tag 11).
    pub audio_level: Option<u8>,
    pub payload: Bytes,
}

/// One `a=rtpmap` line: the session's payload type number, codec name and clock rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub pt: u8,
    pub name: String,
    pub clock_rate: u32,
}

/// Payload type mapping negotiated in SDP.
#[derive(Debug, Clone, Default)]
pub struct PtMap {
    entries: Vec<(u8, PayloadType, u32)>,
}

impl PtMap {
    /// Static payload types (RFC 3551) are known without an rtpmap; `maps` adds the rest.
    pub fn new(maps: &[RtpMap]) -> Self {
        let mut entries = vec![
            (0, PayloadType::PCMU, 8000),
            (8, PayloadType::PCMA, 8000),
            (9, PayloadType::G722, 8000),
            (13, PayloadType::CN, 8000),
            (18, PayloadType::G729, 8000),
        ];
        for m in maps {
            if let Some(p) = PayloadType::for_codec(&m.name) {
                entries.retain(|(pt, _, _)| *pt != m.pt);
                entries.push((m.pt, p, m.clock_rate));
            }
        }
        PtMap { entries }
    }

    pub fn to_ript(&self, rtp_pt: u8) -> Option<(PayloadType, u32)> {
        self.entries
            .iter()
            .find(|(pt, _, _)| *pt == rtp_pt)
            .map(|(_, p, r)| (*p, *r))
    }

    pub fn to_rtp(&self, p: PayloadType) -> Option<(u8, u32)> {
        self.entries
            .iter()
            .find(|(_, x, _)| *x == p)
            .map(|(pt, _, r)| (*pt, *r))
    }
}

/// Extends 32-bit RTP timestamps across wraps (nearest to the last value).
#[derive(Debug, Clone, Copy, Default)]
struct TsExtender {
    last: Option<i64>,
}

impl TsExtender {
    fn extend(&mut self, ts: u32) -> i64 {
        let Some(last) = self.last else {
            self.last = Some(i64::from(ts));
            return i64::from(ts);
        };
        let span = 1i64 << 32;
        let base = last - last.rem_euclid(span);
        let cand = base + i64::from(ts);
        let best = [cand - span, cand, cand + span]
            .into_iter()
            .min_by_key(|c| (c - last).abs())
            .unwrap_or(cand);
        if best > last {
            self.last = Some(best);
        }
        best
    }
}

/// RTP → chunks for one incoming stream.
#[derive(Debug, Clone)]
pub struct RtpToChunks {
    pts: PtMap,
    audio_level_ext: Option<u8>,
    ts: TsExtender,
    /// (extended RTP ts, clock rate, wall ms) of the first packet.
    base: Option<(i64, u32, u64)>,
}

impl RtpToChunks {
    pub fn new(pts: PtMap, audio_level_ext: Option<u8>) -> Self {
        RtpToChunks {
            pts,
            audio_level_ext,
            ts: TsExtender::default(),
            base: None,
        }
    }

    /// Maps a packet that arrived at `arrival_ms` (wall clock).
    pub fn map(&mut self, p: &Packet, arrival_ms: u64) -> Result<Frame, Error> {
        let (pt, rate) = self
            .pts
            .to_ript(p.header.payload_type)
            .ok_or(Error::PayloadType(p.header.payload_type))?;
        let ext = self.ts.extend(p.header.timestamp);
        let (base_ts, base_rate, base_ms) = *self.base.get_or_insert((ext, rate, arrival_ms));
        // telephone-event and the voice codec share the stream's clock (RFC 4733 §2.1).
        let rate = if rate == 0 { base_rate } else { rate };
        let delta_ms = (ext - base_ts) * 1000 / i64::from(rate.max(1));
        let timestamp_ms = u64::try_from(
            i64::try_from(base_ms)
                .unwrap_or(i64::MAX)
                .saturating_add(delta_ms),
        )
        .unwrap_or(0);
        let audio_level = self
            .audio_level_ext
            .and_then(|id| p.header.get_extension(id))
            .and_then(|b| b.first().map(|v| v & 0x7f));
        Ok(Frame {
            payload_type: pt,
            timestamp_ms,
            marker: p.header.marker,
            audio_level,
            payload: p.payload.clone(),
        })
    }
}

/// Chunks → RTP for one outgoing stream. SSRC and initial seq/timestamp are inputs, because
/// randomness is injected (RFC 3550 §5.1 wants them random).
#[derive(Debug, Clone)]
pub struct ChunksToRtp {
    pts: PtMap,
    ssrc: u32,
    next_seq: u16,
    ts_base: u32,
    /// Wall ms of the first chunk and the clock rate in use.
    base_ms: Option<u64>,
}

impl ChunksToRtp {
    pub fn new(pts: PtMap, ssrc: u32, first_seq: u16, first_ts: u32) -> Self {
        ChunksToRtp {
            pts,
            ssrc,
            next_seq: first_seq,
            ts_base: first_ts,
            base_ms: None,
        }
    }

    pub fn map(&mut self, f: &Frame) -> Result<Packet, Error> {
        let (pt, rate) = self
            .pts
            .to_rtp(f.payload_type)
            .ok_or(Error::PayloadType(0))?;
        let base_ms = *self.base_ms.get_or_insert(f.timestamp_ms);
        let delta =
            i64::try_from(f.timestamp_ms).unwrap_or(0) - i64::try_from(base_ms).unwrap_or(0);
        let units = delta * i64::from(rate) / 1000;
        let timestamp = self.ts_base.wrapping_add(units as u32);
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        Ok(Packet {
            header: Header {
                version: 2,
                marker: f.marker,
                payload_type: pt,
                sequence_number: seq,
                timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: f.payload.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps() -> PtMap {
        PtMap::new(&[
            RtpMap {
                pt: 101,
                name: "telephone-event".into(),
                clock_rate: 8000,
            },
            RtpMap {
                pt: 96,
                name: "opus".into(),
                clock_rate: 48000,
            },
        ])
    }

    fn packet(pt: u8, seq: u16, ts: u32, marker: bool) -> Packet {
        Packet {
            header: Header {
                version: 2,
                payload_type: pt,
                sequence_number: seq,
                timestamp: ts,
                marker,
                ssrc: 1,
                ..Default::default()
            },
            payload: Bytes::from_static(&[0xff; 160]),
        }
    }

    #[test]
    fn payload_types_map_both_ways() {
        let m = maps();
        assert_eq!(m.to_ript(0), Some((PayloadType::PCMU, 8000)));
        assert_eq!(m.to_ript(96), Some((PayloadType::OPUS, 48000)));
        assert_eq!(m.to_rtp(PayloadType::TELEPHONE_EVENT), Some((101, 8000)));
        assert_eq!(m.to_ript(97), None);
    }

    #[test]
    fn rtp_clock_maps_to_wall_ms_across_a_32_bit_wrap() {
        let mut r = RtpToChunks::new(maps(), None);
        let start = u32::MAX - 160 * 2;
        let f0 = r.map(&packet(0, 1, start, true), 1_000_000).unwrap();
        assert_eq!((f0.timestamp_ms, f0.marker), (1_000_000, true));
        for i in 1..10u32 {
            let f = r
                .map(
                    &packet(0, 1 + i as u16, start.wrapping_add(160 * i), false),
                    0,
                )
                .unwrap();
            assert_eq!(f.timestamp_ms, 1_000_000 + 20 * u64::from(i), "packet {i}");
        }
        // A late packet from before the wrap still maps backwards correctly.
        let late = r
            .map(&packet(0, 2, start.wrapping_add(160), false), 0)
            .unwrap();
        assert_eq!(late.timestamp_ms, 1_000_020);
        assert!(r.map(&packet(97, 1, 0, false), 0).is_err());
    }

    #[test]
    fn chunks_to_rtp_and_back_keep_timing() {
        let mut tx = ChunksToRtp::new(maps(), 42, 65534, u32::MAX - 100);
        let mut rx = RtpToChunks::new(maps(), None);
        for i in 0..5u64 {
            let f = Frame {
                payload_type: PayloadType::PCMA,
                timestamp_ms: 5_000 + 20 * i,
                marker: i == 0,
                audio_level: None,
                payload: Bytes::from_static(&[0xd5; 160]),
            };
            let p = tx.map(&f).unwrap();
            assert_eq!(p.header.sequence_number, 65534u16.wrapping_add(i as u16));
            assert_eq!(p.header.payload_type, 8);
            let back = rx.map(&p, 5_000).unwrap();
            assert_eq!(back.timestamp_ms, f.timestamp_ms);
            assert_eq!(back.marker, f.marker);
        }
    }

    #[test]
    fn audio_level_comes_from_the_rfc6464_extension() {
        let mut p = packet(0, 1, 0, false);
        p.header.extension = true;
        p.header.extension_profile = 0xBEDE;
        p.header
            .set_extension(1, Bytes::from_static(&[0x80 | 42]))
            .unwrap();
        let mut r = RtpToChunks::new(maps(), Some(1));
        assert_eq!(r.map(&p, 0).unwrap().audio_level, Some(42));
        let mut r = RtpToChunks::new(maps(), None);
        assert_eq!(r.map(&p, 0).unwrap().audio_level, None);
    }
}
