//! Sans-IO transcoding between G.711 (the SIP leg) and Opus (the RIPT leg), one transcoder per
//! call direction: [`G711ToOpus`] and [`OpusToG711`]. Payloads and RTP timestamps in, payloads
//! with mapped timestamps out; no sockets, no clocks.
//!
//! Opus runs on libopus (through `audiopus`, linked against the system library found by
//! pkg-config) at an 8 kHz internal rate: G.711 is 8 kHz audio, so nothing is resampled in the
//! gateway and Opus carries narrowband SILK. The RTP clock of Opus is nevertheless 48 kHz
//! whatever the audio bandwidth (RFC 7587 §4.1), so timestamps scale by 6 between the legs;
//! [`TimestampMap`] does that across 32-bit wrap-around. `BENCHMARKS.md` records why libopus
//! was chosen over the pure-Rust `opus-rs`.

mod decode;
mod encode;
mod timestamp;

pub use decode::OpusToG711;
pub use encode::G711ToOpus;
pub use timestamp::TimestampMap;

/// G.711's sample rate; also its RTP clock rate (RFC 3551 §4.5.14).
pub const G711_CLOCK_RATE: u32 = 8000;
/// Opus's RTP clock rate, whatever the codec's internal rate (RFC 7587 §4.1).
pub const OPUS_CLOCK_RATE: u32 = 48_000;
/// Opus RTP timestamp units per 8 kHz sample.
pub const OPUS_TICKS_PER_G711_SAMPLE: u32 = OPUS_CLOCK_RATE / G711_CLOCK_RATE;

/// Which G.711 companding law the SIP leg negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum G711Law {
    /// PCMU, RTP payload type 0.
    Ulaw,
    /// PCMA, RTP payload type 8.
    Alaw,
}

impl G711Law {
    fn decode(self, g711: &[u8], pcm: &mut Vec<i16>) {
        use media_proto::g711::{alaw_to_linear, ulaw_to_linear};
        pcm.clear();
        match self {
            G711Law::Ulaw => pcm.extend(g711.iter().map(|&b| ulaw_to_linear(b))),
            G711Law::Alaw => pcm.extend(g711.iter().map(|&b| alaw_to_linear(b))),
        }
    }

    fn encode(self, pcm: &[i16]) -> Vec<u8> {
        use media_proto::g711::{linear_to_alaw, linear_to_ulaw};
        match self {
            G711Law::Ulaw => pcm.iter().map(|&s| linear_to_ulaw(s)).collect(),
            G711Law::Alaw => pcm.iter().map(|&s| linear_to_alaw(s)).collect(),
        }
    }
}

/// Encoder settings. The defaults suit a voice call with no fmtp parameters from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscoderConfig {
    /// Target bit rate, a ceiling in practice: on 8 kHz input libopus codes narrowband SILK,
    /// whose VBR stays well below 24 kbit/s (9–15 kbit/s measured, `BENCHMARKS.md`). Lower it
    /// to the peer's `maxaveragebitrate` (RFC 7587 §6.1) when it sends one.
    pub bitrate_bps: u32,
    /// libopus complexity 0–10; `None` keeps the library's default (9 in libopus 1.3.1).
    pub complexity: Option<u8>,
    /// In-band FEC (LBRR). RFC 7587 §6.1: the receiver asks for it with `useinbandfec=1`;
    /// it is off by default there, and costs bits, so it is off here too.
    pub inband_fec: bool,
    /// The loss rate the encoder plans its FEC for (libopus sends no LBRR at 0 %).
    pub expected_loss_percent: u8,
    /// Discontinuous transmission: near-silent frames are not sent (RFC 7587 §6.1 `usedtx`).
    pub dtx: bool,
}

impl Default for TranscoderConfig {
    fn default() -> Self {
        TranscoderConfig {
            bitrate_bps: 24_000,
            complexity: None,
            inband_fec: false,
            expected_loss_percent: 0,
            dtx: false,
        }
    }
}

/// One output payload with its RTP timestamp in the output leg's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// RTP timestamp of the first sample, in the output clock (48 kHz for Opus, 8 kHz for G.711).
    pub timestamp: u32,
    /// Duration in units of the output clock.
    pub duration: u32,
    /// RTP marker: set on the first packet after a DTX pause (RFC 3551 §4.1).
    pub marker: bool,
    pub payload: Vec<u8>,
}

/// Errors of the transcoders.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes from the peer that are not an Opus packet (RFC 6716 §3 framing).
    #[error("opus packet is malformed: {0}")]
    Parse(&'static str),
    /// Well-formed media this gateway does not take.
    #[error("unsupported media from peer: {0}")]
    Peer(&'static str),
    /// A call or setting our caller should not have made.
    #[error("transcoder misuse: {0}")]
    Misuse(&'static str),
    /// libopus refused something that is not the peer's or the caller's fault.
    #[error("opus codec failure: {0}")]
    Codec(&'static str),
}

/// Maps a libopus failure on caller-built input to `Codec`; packet parsing maps its own errors.
fn codec_error(e: audiopus::Error) -> Error {
    use audiopus::{Error as E, ErrorCode as C};
    Error::Codec(match e {
        E::Opus(C::BadArgument) => "bad argument",
        E::Opus(C::BufferTooSmall) => "buffer too small",
        E::Opus(C::InternalError) => "internal error",
        E::Opus(C::InvalidPacket) => "invalid packet",
        E::Opus(C::Unimplemented) => "unimplemented",
        E::Opus(C::InvalidState) => "invalid state",
        E::Opus(C::AllocFail) => "allocation failed",
        E::Opus(C::Unknown) => "unknown libopus error",
        E::InvalidApplication => "invalid application",
        E::InvalidBandwidth(_) => "invalid bandwidth",
        E::InvalidBitrate(_) => "invalid bit rate",
        E::InvalidSignal(_) => "invalid signal",
        E::InvalidComplexity(_) => "invalid complexity",
        E::InvalidSampleRate(_) => "invalid sample rate",
        E::InvalidChannels(_) => "invalid channel count",
        E::EmptyPacket => "empty packet",
        E::SignalsTooLarge => "signal too large",
        E::PacketTooLarge => "packet too large",
        E::MappingExpectedLen(_) => "bad channel mapping",
    })
}

/// Signals and measures shared by the tests of this crate.
#[cfg(test)]
pub(crate) mod test_signal {
    use std::f64::consts::PI;

    /// A sine of `freq` Hz at 8 kHz, peak `amp`, starting at sample `from`.
    pub fn sine(freq: f64, amp: f64, from: usize, n: usize) -> Vec<i16> {
        (from..from + n)
            .map(|i| (amp * (2.0 * PI * freq * i as f64 / 8000.0).sin()).round() as i16)
            .collect()
    }

    pub fn energy(x: &[i16]) -> f64 {
        x.iter().map(|&s| f64::from(s).powi(2)).sum()
    }

    /// Share of the signal's energy at `freq` (Goertzel over the whole slice).
    pub fn tone_share(x: &[i16], freq: f64) -> f64 {
        let w = 2.0 * PI * freq / 8000.0;
        let (mut s1, mut s2) = (0f64, 0f64);
        for &v in x {
            let s0 = f64::from(v) + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
        // A pure tone of energy E over N samples has Goertzel power N·E/2.
        2.0 * power / (x.len() as f64 * energy(x)).max(1.0)
    }

    /// Best normalised correlation of `decoded` against `input` delayed by 0..=max_lag samples
    /// (Opus output lags its input by the codec delay), and that lag.
    pub fn best_correlation(input: &[i16], decoded: &[i16], max_lag: usize) -> (f64, usize) {
        let mut best = (-1.0, 0);
        for lag in 0..=max_lag {
            let n = decoded.len().saturating_sub(lag).min(input.len());
            let (mut xy, mut xx, mut yy) = (0f64, 0f64, 0f64);
            for i in 0..n {
                let (x, y) = (f64::from(input[i]), f64::from(decoded[i + lag]));
                xy += x * y;
                xx += x * x;
                yy += y * y;
            }
            let c = xy / (xx * yy).sqrt().max(1e-9);
            if c > best.0 {
                best = (c, lag);
            }
        }
        best
    }

    pub fn ulaw(pcm: &[i16]) -> Vec<u8> {
        pcm.iter()
            .map(|&s| media_proto::g711::linear_to_ulaw(s))
            .collect()
    }

    pub fn from_ulaw(g711: &[u8]) -> Vec<i16> {
        g711.iter()
            .map(|&b| media_proto::g711::ulaw_to_linear(b))
            .collect()
    }

    pub fn from_alaw(g711: &[u8]) -> Vec<i16> {
        g711.iter()
            .map(|&b| media_proto::g711::alaw_to_linear(b))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::test_signal::*;
    use super::*;

    /// Sends 2 s of a 1 kHz sine at -10 dBFS through G.711 → Opus → G.711 with 20 ms packets
    /// and checks the far end hears the same tone at the same level.
    fn round_trip_sine(law: G711Law) {
        let config = TranscoderConfig::default();
        let mut to_opus = G711ToOpus::new(law, &config, 0x1234_5678).unwrap();
        let mut to_g711 = OpusToG711::new(law, 0x0bad_cafe).unwrap();
        let input = sine(1000.0, 10_362.0, 0, 16_000);
        let mut heard = Vec::new();
        for (k, frame) in input.chunks(160).enumerate() {
            let g711 = match law {
                G711Law::Ulaw => ulaw(frame),
                G711Law::Alaw => frame
                    .iter()
                    .map(|&s| media_proto::g711::linear_to_alaw(s))
                    .collect(),
            };
            let ts = 1_000u32.wrapping_add(160 * k as u32);
            for p in to_opus.transcode(ts, &g711).unwrap() {
                let out = to_g711.transcode(p.timestamp, &p.payload).unwrap();
                assert_eq!(out.payload.len(), 160);
                heard.extend(match law {
                    G711Law::Ulaw => from_ulaw(&out.payload),
                    G711Law::Alaw => from_alaw(&out.payload),
                });
            }
        }
        assert_eq!(heard.len(), input.len());
        // Skip the first 200 ms: the encoder and decoder are still settling.
        let (corr, lag) = best_correlation(&input[1600..14_000], &heard[1600..], 240);
        assert!(corr > 0.95, "correlation {corr} at lag {lag}");
        let ratio = energy(&heard[1600 + lag..14_000 + lag]) / energy(&input[1600..14_000]);
        assert!((0.7..1.4).contains(&ratio), "energy ratio {ratio}");
        let share = tone_share(&heard[1600..], 1000.0);
        assert!(share > 0.9, "1 kHz share {share}");
    }

    #[test]
    fn ulaw_sine_survives_the_round_trip() {
        round_trip_sine(G711Law::Ulaw);
    }

    #[test]
    fn alaw_sine_survives_the_round_trip() {
        round_trip_sine(G711Law::Alaw);
    }

    #[test]
    fn timestamps_scale_by_six_both_ways_across_wrap() {
        let config = TranscoderConfig::default();
        let mut to_opus = G711ToOpus::new(G711Law::Ulaw, &config, u32::MAX - 1_000).unwrap();
        let mut to_g711 = OpusToG711::new(G711Law::Ulaw, 77).unwrap();
        let start = u32::MAX - 300; // the 8 kHz input wraps after two packets
        let silence = [0xffu8; 160];
        for k in 0..10u32 {
            let ts8 = start.wrapping_add(160 * k);
            let packets = to_opus.transcode(ts8, &silence).unwrap();
            assert_eq!(packets.len(), 1);
            let p = &packets[0];
            assert_eq!(p.timestamp, (u32::MAX - 1_000).wrapping_add(960 * k));
            assert_eq!(p.duration, 960);
            let back = to_g711.transcode(p.timestamp, &p.payload).unwrap();
            assert_eq!(back.timestamp, 77 + 160 * k);
            assert_eq!(back.duration, 160);
        }
    }
}
