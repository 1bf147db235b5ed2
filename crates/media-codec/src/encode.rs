//! G.711 → Opus.

use audiopus::{Application, Bitrate, Channels, SampleRate, coder::Encoder};

use crate::{
    Error, G711Law, OPUS_TICKS_PER_G711_SAMPLE, Packet, TimestampMap, TranscoderConfig, codec_error,
};

/// 10 ms at 8 kHz: the G.711 packetisation unit this transcoder accepts.
const TEN_MS: usize = 80;
/// Opus frame sizes used for a G.711 packet, longest first, in 10 ms units. 30, 50 ms … are
/// split into several packets rather than multi-frame ones: frames of one Opus packet must
/// share a mode, which the encoder does not promise across calls.
const FRAME_UNITS: [usize; 4] = [6, 4, 2, 1];
/// Output buffer: libopus fits each packet into it. 60 ms at 24 kbit/s is 180 bytes; an
/// Ethernet MTU is more than one RTP packet could carry anyway.
const MAX_PACKET: usize = 1500;

/// Encodes one G.711 RTP stream into Opus payloads. One per call direction; feed it packets
/// in arrival order.
pub struct G711ToOpus {
    law: G711Law,
    encoder: Encoder,
    dtx: bool,
    timestamps: Option<TimestampMap>,
    out_base: u32,
    pcm: Vec<i16>,
    buf: Vec<u8>,
    /// A DTX frame was withheld since the last packet sent.
    in_pause: bool,
}

impl std::fmt::Debug for G711ToOpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("G711ToOpus")
            .field("law", &self.law)
            .field("dtx", &self.dtx)
            .field("timestamps", &self.timestamps)
            .finish_non_exhaustive()
    }
}

impl G711ToOpus {
    /// `out_base` is the first Opus RTP timestamp (the RIPT leg's own random start).
    pub fn new(law: G711Law, config: &TranscoderConfig, out_base: u32) -> Result<Self, Error> {
        if !(6_000..=510_000).contains(&config.bitrate_bps) {
            return Err(Error::Misuse("bit rate outside 6–510 kbit/s"));
        }
        if config.complexity.is_some_and(|c| c > 10) {
            return Err(Error::Misuse("complexity above 10"));
        }
        if config.expected_loss_percent > 100 {
            return Err(Error::Misuse("loss percentage above 100"));
        }
        // G.711 is 8 kHz audio: encoding at 8 kHz avoids a resampler, and libopus then codes
        // narrowband SILK, which is all the bandwidth there is.
        let mut encoder = Encoder::new(SampleRate::Hz8000, Channels::Mono, Application::Voip)
            .map_err(codec_error)?;
        encoder
            .set_bitrate(Bitrate::BitsPerSecond(config.bitrate_bps as i32))
            .map_err(codec_error)?;
        if let Some(c) = config.complexity {
            encoder.set_complexity(c).map_err(codec_error)?;
        }
        encoder
            .set_inband_fec(config.inband_fec)
            .map_err(codec_error)?;
        encoder
            .set_packet_loss_perc(config.expected_loss_percent)
            .map_err(codec_error)?;
        encoder
            .set_encoder_ctl_request(audiopus::ffi::OPUS_SET_DTX_REQUEST, i32::from(config.dtx))
            .map_err(codec_error)?;
        Ok(G711ToOpus {
            law,
            encoder,
            dtx: config.dtx,
            timestamps: None,
            out_base,
            pcm: Vec::new(),
            buf: vec![0; MAX_PACKET],
            in_pause: false,
        })
    }

    /// Transcodes one G.711 payload with its 8 kHz RTP timestamp into Opus payloads with 48 kHz
    /// timestamps. A 10/20/40/60 ms payload gives one packet; other multiples of 10 ms give
    /// several (30 ms → 20 + 10). With DTX, frames libopus marks as not to be sent are left
    /// out, so the result may be empty. A payload that is not a whole number of 10 ms is
    /// refused (`Peer`) and leaves the encoder untouched.
    pub fn transcode(&mut self, timestamp: u32, g711: &[u8]) -> Result<Vec<Packet>, Error> {
        if !g711.len().is_multiple_of(TEN_MS) {
            return Err(Error::Peer("g711 payload is not a whole number of 10 ms"));
        }
        if g711.is_empty() {
            return Ok(Vec::new());
        }
        let out_base = self.out_base;
        let start = self
            .timestamps
            .get_or_insert_with(|| TimestampMap::g711_to_opus(out_base))
            .map(timestamp);
        self.law.decode(g711, &mut self.pcm);

        let mut packets = Vec::new();
        let mut rest: &[i16] = &self.pcm;
        let mut offset = 0u32;
        while !rest.is_empty() {
            let left = rest.len() / TEN_MS;
            let units = FRAME_UNITS.into_iter().find(|&u| u <= left).unwrap_or(1);
            let (frame, tail) = rest
                .split_at_checked(units * TEN_MS)
                .ok_or(Error::Misuse("g711 payload is not a whole number of 10 ms"))?;
            rest = tail;
            let n = self
                .encoder
                .encode(frame, &mut self.buf)
                .map_err(codec_error)?;
            let samples = frame.len() as u32;
            let timestamp = start.wrapping_add(offset * OPUS_TICKS_PER_G711_SAMPLE);
            offset += samples;
            // opus_encode(): "If the return value is 2 bytes or less, then the packet does not
            // need to be transmitted (DTX)."
            if self.dtx && n <= 2 {
                self.in_pause = true;
                continue;
            }
            let payload = self
                .buf
                .get(..n)
                .ok_or(Error::Codec("encoder reported more bytes than its buffer"))?
                .to_vec();
            packets.push(Packet {
                timestamp,
                duration: samples * OPUS_TICKS_PER_G711_SAMPLE,
                marker: std::mem::take(&mut self.in_pause),
                payload,
            });
        }
        Ok(packets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_signal::*;
    use proptest::prelude::*;

    fn encoder(config: &TranscoderConfig) -> G711ToOpus {
        G711ToOpus::new(G711Law::Ulaw, config, 10_000).unwrap()
    }

    /// The TOC byte's frame duration in ms ×10 (RFC 6716 §3.1) and its frame-count code.
    fn toc(p: &[u8]) -> (u32, u8) {
        let config = p[0] >> 3;
        let tenth_ms = match config {
            0..=11 => [100, 200, 400, 600][usize::from(config % 4)],
            12..=15 => [100, 200][usize::from(config % 2)],
            _ => [25, 50, 100, 200][usize::from(config % 4)],
        };
        (tenth_ms, p[0] & 3)
    }

    #[test]
    fn any_multiple_of_10_ms_is_packetised_without_gaps() {
        for (ms, expect) in [
            (10, vec![10]),
            (20, vec![20]),
            (30, vec![20, 10]),
            (40, vec![40]),
            (50, vec![40, 10]),
            (60, vec![60]),
            (100, vec![60, 40]),
        ] {
            let mut e = encoder(&TranscoderConfig::default());
            let g711 = ulaw(&sine(1000.0, 8_000.0, 0, ms * 8));
            let packets = e.transcode(4_000, &g711).unwrap();
            let durations: Vec<u32> = packets.iter().map(|p| p.duration / 48).collect();
            assert_eq!(
                durations,
                expect.iter().map(|&d| d as u32).collect::<Vec<_>>()
            );
            let mut ts = 10_000u32;
            for p in &packets {
                assert_eq!(p.timestamp, ts, "{ms} ms");
                ts += p.duration;
                // Narrowband SILK at 8 kHz: 40/60 ms are single SILK frames (code 0), so
                // the TOC's duration is the packet's.
                let (tenth_ms, code) = toc(&p.payload);
                assert!(p.payload[0] >> 3 < 4, "not SILK NB: {:#x}", p.payload[0]);
                assert_eq!((tenth_ms, code), (p.duration / 48 * 10, 0), "{ms} ms");
            }
            // The next packet continues from the input's timestamp ×6.
            let next = e.transcode(4_000 + ms as u32 * 8, &g711).unwrap();
            assert_eq!(next[0].timestamp, 10_000 + ms as u32 * 48);
        }
    }

    #[test]
    fn a_payload_that_is_not_whole_10_ms_is_refused() {
        let mut e = encoder(&TranscoderConfig::default());
        for len in [1, 40, 79, 159, 161] {
            assert!(
                matches!(e.transcode(0, &vec![0xff; len]), Err(Error::Peer(_))),
                "{len}"
            );
        }
        assert_eq!(e.transcode(0, &[]).unwrap(), vec![]);
        // The refusals did not anchor the timestamp map: the first good packet is the base.
        let p = e.transcode(8_000, &[0xff; 160]).unwrap();
        assert_eq!(p[0].timestamp, 10_000);
    }

    #[test]
    fn settings_are_checked() {
        for config in [
            TranscoderConfig {
                bitrate_bps: 5_000,
                ..TranscoderConfig::default()
            },
            TranscoderConfig {
                complexity: Some(11),
                ..TranscoderConfig::default()
            },
            TranscoderConfig {
                expected_loss_percent: 101,
                ..TranscoderConfig::default()
            },
        ] {
            assert!(matches!(
                G711ToOpus::new(G711Law::Alaw, &config, 0),
                Err(Error::Misuse(_))
            ));
        }
        let low = TranscoderConfig {
            complexity: Some(0),
            bitrate_bps: 6_000,
            ..TranscoderConfig::default()
        };
        assert!(G711ToOpus::new(G711Law::Alaw, &low, 0).is_ok());
    }

    #[test]
    fn dtx_withholds_silence_and_marks_the_talkspurt() {
        let config = TranscoderConfig {
            dtx: true,
            ..TranscoderConfig::default()
        };
        let mut e = encoder(&config);
        let tone = ulaw(&sine(440.0, 8_000.0, 0, 160));
        let silence = [0xffu8; 160];
        let mut ts = 0u32;
        let mut send = |e: &mut G711ToOpus, g711: &[u8]| {
            let p = e.transcode(ts, g711).unwrap();
            ts += 160;
            p
        };
        for _ in 0..25 {
            assert_eq!(send(&mut e, &tone).len(), 1);
        }
        // 2 s of digital silence: libopus sends a frame now and then (every 400 ms) to keep
        // the far end's comfort noise going, and nothing else.
        let sent: usize = (0..100).map(|_| send(&mut e, &silence).len()).sum();
        assert!(sent < 20, "{sent} of 100 silent frames sent");
        let after = send(&mut e, &tone);
        assert_eq!(after.len(), 1);
        assert!(after[0].marker);
        assert_eq!(after[0].timestamp, 10_000 + 125 * 960);
        assert!(!send(&mut e, &tone)[0].marker);
    }

    proptest! {
        #[test]
        fn arbitrary_g711_payloads_never_panic(
            // Half arbitrary lengths, half whole 10 ms (0–120 ms) so both branches run.
            payload in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..1_000),
                (0usize..=12).prop_flat_map(|k| proptest::collection::vec(any::<u8>(), k * 80)),
            ],
            ts in any::<u32>(),
        ) {
            let mut e = encoder(&TranscoderConfig::default());
            match e.transcode(ts, &payload) {
                Ok(packets) => {
                    let total: u32 = packets.iter().map(|p| p.duration).sum();
                    prop_assert_eq!(total as usize, payload.len() * 6);
                }
                Err(err) => prop_assert!(matches!(err, Error::Peer(_))),
            }
        }
    }
}
