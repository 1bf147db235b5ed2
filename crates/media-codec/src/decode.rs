//! Opus → G.711.

use audiopus::{Channels, SampleRate, coder::Decoder};

use crate::{Error, G711Law, OPUS_TICKS_PER_G711_SAMPLE, Packet, TimestampMap, codec_error};

/// RFC 6716 §3.2.5: a packet holds at most 120 ms of audio; 960 samples at 8 kHz.
const MAX_SAMPLES: usize = 960;
/// 2.5 ms, the shortest Opus frame (RFC 6716 §2.1.4), in 48 kHz ticks; concealment works in
/// whole frames of this size.
const MIN_FRAME_TICKS: u32 = 120;
/// What an empty payload conceals before any packet told us the peer's frame size.
const DEFAULT_FRAME_TICKS: u32 = 960;

/// Decodes one Opus RTP stream (any frame size the peer picks, 2.5–120 ms per packet) into
/// 8 kHz G.711 payloads. One per call direction; feed it packets in arrival order and call
/// [`conceal`](Self::conceal) for the ones that never came.
pub struct OpusToG711 {
    law: G711Law,
    decoder: Decoder,
    timestamps: Option<TimestampMap>,
    out_base: u32,
    pcm: Vec<i16>,
    /// 48 kHz timestamp right after the last audio produced.
    next: Option<u32>,
    /// Duration of the peer's last packet in 48 kHz ticks: what an empty payload stands for.
    frame_ticks: u32,
}

impl std::fmt::Debug for OpusToG711 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusToG711")
            .field("law", &self.law)
            .field("timestamps", &self.timestamps)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl OpusToG711 {
    /// `out_base` is the first G.711 RTP timestamp (the SIP leg's own random start).
    pub fn new(law: G711Law, out_base: u32) -> Result<Self, Error> {
        // Decoding straight to 8 kHz lets libopus do the band-limiting and resampling it
        // needs anyway for wideband packets (RFC 6716 §4: any decoder rate for any stream).
        let decoder = Decoder::new(SampleRate::Hz8000, Channels::Mono).map_err(codec_error)?;
        Ok(OpusToG711 {
            law,
            decoder,
            timestamps: None,
            out_base,
            pcm: vec![0; MAX_SAMPLES],
            next: None,
            frame_ticks: DEFAULT_FRAME_TICKS,
        })
    }

    /// The 48 kHz timestamp the next packet should carry if nothing was lost: a later one
    /// means a gap to [`conceal`](Self::conceal) (or a DTX pause to leave silent).
    pub fn expected_timestamp(&self) -> Option<u32> {
        self.next
    }

    /// Decodes one Opus payload with its 48 kHz RTP timestamp into a G.711 payload with its
    /// 8 kHz timestamp. An empty payload (some stacks send them in DTX pauses) conceals one
    /// frame of the last packet's duration. A payload that is not an Opus packet is refused
    /// with `Parse` and leaves the decoder as it was.
    pub fn transcode(&mut self, timestamp: u32, opus: &[u8]) -> Result<Packet, Error> {
        if opus.is_empty() {
            return self.conceal(timestamp, self.frame_ticks, None);
        }
        let samples = packet_samples(opus)?;
        let out = self
            .pcm
            .get_mut(..samples)
            .ok_or(Error::Parse("packet longer than 120 ms"))?;
        // libopus parses the whole packet before it touches its state, so a refused packet
        // leaves the decoder as it was.
        let mut decoded = self
            .decoder
            .decode(Some(opus), out, false)
            .map_err(parse_error)?;
        if decoded < samples {
            // A zero-length frame (DTX, RFC 6716 §3.2.1) makes libopus conceal only up to one
            // frame, at most 20 ms after CELT; fill the rest so the output lasts as long as
            // the packet and the timestamps stay aligned.
            let rest = self
                .pcm
                .get_mut(decoded..samples)
                .ok_or(Error::Codec("decoder reported more samples than asked"))?;
            decoded += self
                .decoder
                .decode(None::<&[u8]>, rest, false)
                .map_err(codec_error)?;
        }
        self.frame_ticks = decoded as u32 * OPUS_TICKS_PER_G711_SAMPLE;
        self.finish(timestamp, decoded)
    }

    /// Fills `ticks` of lost audio (48 kHz units, a multiple of 2.5 ms up to 120 ms) starting
    /// at `timestamp`. When the packet after the loss is at hand, pass it as `next`: if the
    /// peer sends in-band FEC (`useinbandfec`), the last frame of the gap is rebuilt from it,
    /// otherwise libopus extrapolates (PLC). `next` is only read here; transcode it after.
    pub fn conceal(
        &mut self,
        timestamp: u32,
        ticks: u32,
        next: Option<&[u8]>,
    ) -> Result<Packet, Error> {
        if ticks == 0 || !ticks.is_multiple_of(MIN_FRAME_TICKS) {
            return Err(Error::Misuse("concealment is not a whole number of 2.5 ms"));
        }
        let samples = (ticks / OPUS_TICKS_PER_G711_SAMPLE) as usize;
        let out = self
            .pcm
            .get_mut(..samples)
            .ok_or(Error::Misuse("concealment longer than 120 ms"))?;
        // A `next` that is not an Opus packet only costs its FEC: its own transcode reports it.
        let fec = match next.filter(|p| packet_samples(p).is_ok()) {
            Some(p) => self.decoder.decode(Some(p), &mut *out, true).ok(),
            None => None,
        };
        let decoded = match fec {
            Some(n) => n,
            None => self
                .decoder
                .decode(None::<&[u8]>, &mut *out, false)
                .map_err(codec_error)?,
        };
        self.finish(timestamp, decoded)
    }

    fn finish(&mut self, timestamp: u32, samples: usize) -> Result<Packet, Error> {
        let pcm = self.pcm.get(..samples).ok_or(Error::Codec(
            "decoder reported more samples than its buffer",
        ))?;
        let duration = samples as u32;
        self.next = Some(timestamp.wrapping_add(duration * OPUS_TICKS_PER_G711_SAMPLE));
        let out_base = self.out_base;
        let out_ts = self
            .timestamps
            .get_or_insert_with(|| TimestampMap::opus_to_g711(out_base))
            .map(timestamp);
        Ok(Packet {
            timestamp: out_ts,
            duration,
            marker: false,
            payload: self.law.encode(pcm),
        })
    }
}

/// Audio in a packet, in 8 kHz samples, from its TOC byte and frame count (RFC 6716 §3.1,
/// §3.2.5), checked against §3.4 R5 (1–48 frames of at most 120 ms in all). The rest of the
/// framing is libopus's to check. (`audiopus::packet::nb_samples` turns libopus's negative
/// error codes into huge counts, so it is not used.)
fn packet_samples(opus: &[u8]) -> Result<usize, Error> {
    let toc = *opus.first().ok_or(Error::Parse("empty packet"))?;
    let config = toc >> 3;
    // Table 2 of RFC 6716 §3.1: SILK-only 10/20/40/60 ms, hybrid 10/20 ms, CELT-only
    // 2.5/5/10/20 ms; 80 samples are 10 ms at 8 kHz.
    let frame: usize = match (config, config % 4) {
        (0..=11, 0) => 80,
        (0..=11, 1) => 160,
        (0..=11, 2) => 320,
        (0..=11, _) => 480,
        (12..=15, 0 | 2) => 80,
        (12..=15, _) => 160,
        (_, 0) => 20,
        (_, 1) => 40,
        (_, 2) => 80,
        _ => 160,
    };
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => match opus.get(1) {
            None => return Err(Error::Parse("code 3 packet without a frame count")),
            Some(c) if c & 0x3f == 0 => return Err(Error::Parse("code 3 packet with no frames")),
            Some(c) => usize::from(c & 0x3f),
        },
    };
    let samples = frame * frames;
    if samples > MAX_SAMPLES {
        return Err(Error::Parse("packet longer than 120 ms"));
    }
    Ok(samples)
}

/// libopus's verdicts on a peer's packet: RFC 6716 §3.4 framing violations and the like.
fn parse_error(e: audiopus::Error) -> Error {
    use audiopus::{Error as E, ErrorCode as C};
    match e {
        E::Opus(C::InvalidPacket) => Error::Parse("invalid framing (RFC 6716 §3.4)"),
        E::Opus(C::BufferTooSmall) => Error::Parse("packet longer than 120 ms"),
        E::EmptyPacket => Error::Parse("empty packet"),
        E::PacketTooLarge => Error::Parse("packet too large"),
        other => codec_error(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_signal::*;
    use crate::{G711ToOpus, TranscoderConfig};
    use audiopus::{Application, Bitrate, coder::Encoder};
    use proptest::prelude::*;

    /// Opus packets of a 1 kHz sine as a 48 kHz fullband peer (a browser) would send them,
    /// `frame` samples per packet.
    fn peer_packets(frame: usize, count: usize) -> Vec<Vec<u8>> {
        let mut e = Encoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip).unwrap();
        e.set_bitrate(Bitrate::BitsPerSecond(32_000)).unwrap();
        let pcm: Vec<i16> = (0..frame * count)
            .map(|i| {
                (8_000.0 * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 48_000.0).sin()) as i16
            })
            .collect();
        let mut buf = [0u8; 1500];
        pcm.chunks(frame)
            .map(|f| {
                let n = e.encode(f, &mut buf).unwrap();
                buf[..n].to_vec()
            })
            .collect()
    }

    /// The packets of 1 s of a 1 kHz sine from our own G.711 → Opus direction, 20 ms each.
    fn own_packets(config: &TranscoderConfig) -> Vec<Packet> {
        let mut to_opus = G711ToOpus::new(G711Law::Ulaw, config, 0).unwrap();
        let input = sine(1000.0, 10_000.0, 0, 8_000);
        input
            .chunks(160)
            .enumerate()
            .flat_map(|(k, f)| to_opus.transcode(160 * k as u32, &ulaw(f)).unwrap())
            .collect()
    }

    #[test]
    fn every_opus_frame_size_from_the_peer_decodes_to_its_length() {
        // RFC 6716 §2.1.4: 2.5, 5, 10, 20, 40, 60 ms frames.
        for frame in [120usize, 240, 480, 960, 1920, 2880] {
            let mut d = OpusToG711::new(G711Law::Alaw, 0).unwrap();
            let mut ts = 5_000u32;
            for p in peer_packets(frame, 20) {
                let out = d.transcode(ts, &p).unwrap();
                assert_eq!(out.payload.len(), frame / 6, "{frame}");
                assert_eq!(out.duration as usize, frame / 6);
                assert_eq!(out.timestamp, (ts - 5_000) / 6);
                ts += frame as u32;
                assert_eq!(d.expected_timestamp(), Some(ts));
            }
        }
    }

    #[test]
    fn a_fullband_peer_is_heard_at_8_khz() {
        let mut d = OpusToG711::new(G711Law::Ulaw, 0).unwrap();
        let heard: Vec<i16> = peer_packets(960, 50)
            .iter()
            .enumerate()
            .flat_map(|(k, p)| from_ulaw(&d.transcode(960 * k as u32, p).unwrap().payload))
            .collect();
        let share = tone_share(&heard[1600..], 1000.0);
        assert!(share > 0.9, "1 kHz share {share}");
    }

    #[test]
    fn corrupt_packets_are_refused_and_the_stream_goes_on() {
        let packets = own_packets(&TranscoderConfig::default());
        let mut d = OpusToG711::new(G711Law::Ulaw, 0).unwrap();
        d.transcode(0, &packets[0].payload).unwrap();
        // RFC 6716 §3.4 violations.
        let bad: [&[u8]; 6] = [
            &[0x03],                   // code 3 without its frame-count byte (R6)
            &[0x03, 0x00],             // code 3 with zero frames (R5)
            &[0x01, 0xaa, 0xbb, 0xcc], // code 1 with an odd payload (R3)
            &[0x02, 0xfc],             // code 2 whose first length is cut off (R4)
            &[0x02, 0x10, 0x00],       // code 2 whose first frame overruns the packet (R4)
            &[0xfb, 0x03, 0x01, 0x02], // code 3, 3 × 60 ms = 180 ms > 120 ms (R5)
        ];
        for b in bad {
            assert!(
                matches!(d.transcode(960, b), Err(Error::Parse(_))),
                "{b:02x?} accepted"
            );
        }
        // Nothing of the bad packets reached the decoder's timeline.
        assert_eq!(d.expected_timestamp(), Some(960));
        let out = d.transcode(960, &packets[1].payload).unwrap();
        assert_eq!((out.timestamp, out.payload.len()), (160, 160));
    }

    #[test]
    fn loss_is_concealed_with_audio_of_the_right_length() {
        let packets = own_packets(&TranscoderConfig::default());
        let mut d = OpusToG711::new(G711Law::Ulaw, 0).unwrap();
        for p in &packets[..25] {
            d.transcode(p.timestamp, &p.payload).unwrap();
        }
        // Packets 25 and 26 (40 ms) are lost; 27 arrives.
        let gap = packets[27]
            .timestamp
            .wrapping_sub(d.expected_timestamp().unwrap());
        assert_eq!(gap, 1_920);
        let plc = d.conceal(packets[25].timestamp, gap, None).unwrap();
        assert_eq!(plc.timestamp, 25 * 160);
        assert_eq!(plc.payload.len(), 320);
        // PLC continues the signal, fading, rather than going silent. (SILK extrapolates pitch
        // lags of 2–18 ms, which a 1 kHz tone is not, so the tone is only partly kept: 0.42 of
        // the energy at 1 kHz and 17 % of the level with libopus 1.3.1.)
        let pcm = from_ulaw(&plc.payload);
        let level = energy(&pcm) / energy(&sine(1000.0, 10_000.0, 0, 320));
        assert!((0.05..1.0).contains(&level), "level {level}");
        let share = tone_share(&pcm, 1000.0);
        assert!(share > 0.25, "1 kHz share {share}");
        let out = d
            .transcode(packets[27].timestamp, &packets[27].payload)
            .unwrap();
        assert_eq!((out.timestamp, out.payload.len()), (27 * 160, 160));
    }

    #[test]
    fn fec_in_the_next_packet_rebuilds_the_lost_one() {
        let config = TranscoderConfig {
            inband_fec: true,
            expected_loss_percent: 10,
            ..TranscoderConfig::default()
        };
        let packets = own_packets(&config);
        let mut with_fec = OpusToG711::new(G711Law::Ulaw, 0).unwrap();
        let mut without = OpusToG711::new(G711Law::Ulaw, 0).unwrap();
        for p in &packets[..30] {
            with_fec.transcode(p.timestamp, &p.payload).unwrap();
            without.transcode(p.timestamp, &p.payload).unwrap();
        }
        let lost = &packets[30];
        let next = &packets[31].payload;
        let fec = with_fec.conceal(lost.timestamp, 960, Some(next)).unwrap();
        let plc = without.conceal(lost.timestamp, 960, None).unwrap();
        assert_eq!(fec.payload.len(), 160);
        assert_eq!(fec.timestamp, plc.timestamp);
        // Same decoder history, so a different result means the LBRR data was used.
        assert_ne!(fec.payload, plc.payload);
        // A `next` that is not an Opus packet falls back to PLC instead of failing.
        let mut d = OpusToG711::new(G711Law::Ulaw, 0).unwrap();
        d.transcode(0, &packets[0].payload).unwrap();
        assert_eq!(
            d.conceal(960, 960, Some(&[0x03])).unwrap().payload.len(),
            160
        );
    }

    #[test]
    fn concealment_lengths_are_checked() {
        let mut d = OpusToG711::new(G711Law::Ulaw, 0).unwrap();
        for ticks in [0, 100, 5_880, u32::MAX] {
            assert!(
                matches!(d.conceal(0, ticks, None), Err(Error::Misuse(_))),
                "{ticks}"
            );
        }
        // 2.5 ms and 120 ms are the bounds, and concealing before any packet is silence.
        assert_eq!(d.conceal(0, 120, None).unwrap().payload.len(), 20);
        let long = d.conceal(120, 5_760, None).unwrap();
        assert_eq!(long.payload.len(), 960);
        assert_eq!(long.timestamp, 20);
    }

    #[test]
    fn an_empty_payload_conceals_one_frame_of_the_peers_size() {
        let mut d = OpusToG711::new(G711Law::Ulaw, 0).unwrap();
        // Before any packet: 20 ms.
        assert_eq!(d.transcode(0, &[]).unwrap().payload.len(), 160);
        let p = peer_packets(1920, 3);
        d.transcode(960, &p[0]).unwrap();
        let out = d.transcode(960 + 1920, &[]).unwrap();
        assert_eq!((out.timestamp, out.payload.len()), (480, 320));
        // Concealing a longer gap does not change what an empty payload stands for.
        d.conceal(960 + 3840, 5_760, None).unwrap();
        let out = d.transcode(960 + 3840 + 5_760, &[]).unwrap();
        assert_eq!(out.payload.len(), 320);
        // A TOC-only packet (DTX, RFC 6716 §3.2.1 zero-length frame) is concealment too, for
        // the duration its TOC gives: SILK NB 40 ms here (config 2), after CELT packets,
        // where libopus alone would conceal only 20 ms.
        let at = 960 + 3840 + 5_760 + 1_920;
        let out = d.transcode(at, &[2 << 3]).unwrap();
        assert_eq!((out.timestamp, out.payload.len()), (at / 6, 320));
        assert_eq!(d.expected_timestamp(), Some(at + 1920));
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_never_panic(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..400), 1..8),
            ticks in any::<u32>(),
        ) {
            let mut d = OpusToG711::new(G711Law::Ulaw, 0).unwrap();
            for (k, p) in payloads.iter().enumerate() {
                if let Ok(out) = d.transcode(960 * k as u32, p) {
                    prop_assert!(out.payload.len() <= MAX_SAMPLES);
                    prop_assert_eq!(out.payload.len() as u32, out.duration);
                }
                let _ = d.conceal(960 * k as u32, ticks, Some(p));
            }
        }
    }
}
