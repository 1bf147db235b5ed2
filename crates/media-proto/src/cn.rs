//! RFC 3389 comfort noise: the CN payload (noise level and optional spectral model), a noise
//! generator for 8 kHz linear PCM and G.711 at the signalled level, and a level estimate that
//! turns a silent PCM frame into a CN payload for senders without voice activity detection.
//!
//! Randomness is an input: the generator runs a small xorshift seeded by the caller.

use crate::Error;
use crate::g711::{linear_to_alaw, linear_to_ulaw};

/// 0 dBov for 16-bit linear PCM: a full-scale square wave (RFC 3389 §3.1 refers the level to
/// the overload point of the system; its µ-law example, ±8031 in 14 bits, is ±32124 here,
/// 0.17 dB below, which no listener hears).
const FULL_SCALE: f64 = 32767.0;

/// Quietest level the payload can carry, −127 dBov; also what digital silence encodes as.
pub const SILENCE_DBOV: u8 = 127;

/// One CN payload (RFC 3389 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CnPayload {
    /// Noise level in −dBov, 0..=127 (RFC 3389 §3.1).
    pub level: u8,
    /// Quantised reflection coefficients of the spectral model (RFC 3389 §3.2), kept as
    /// received; zero of them means white noise. The generator here ignores them.
    pub coefficients: Vec<u8>,
}

impl CnPayload {
    pub fn parse(b: &[u8]) -> Result<Self, Error> {
        match b {
            // RFC 3389 §3.1: the level's most significant bit is always 0; a payload with it
            // set is not CN (most likely a payload type mapped wrongly).
            [level, coefficients @ ..] if level & 0x80 == 0 => Ok(CnPayload {
                level: *level,
                coefficients: coefficients.to_vec(),
            }),
            _ => Err(Error::ComfortNoise),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + self.coefficients.len());
        v.push(self.level.min(SILENCE_DBOV));
        v.extend_from_slice(&self.coefficients);
        v
    }

    /// The CN payload describing a frame of background noise (e.g. 20 ms = 160 samples at
    /// 8 kHz): its level, and no spectral model.
    pub fn from_pcm(frame: &[i16]) -> Self {
        CnPayload {
            level: level_of(frame),
            coefficients: Vec::new(),
        }
    }
}

/// The RMS of a frame in −dBov, rounded and clamped to 0..=127.
pub fn level_of(frame: &[i16]) -> u8 {
    if frame.is_empty() {
        return SILENCE_DBOV;
    }
    let energy: f64 = frame.iter().map(|s| f64::from(*s) * f64::from(*s)).sum();
    let rms = (energy / frame.len() as f64).sqrt();
    if rms <= 0.0 {
        return SILENCE_DBOV;
    }
    let dbov = -20.0 * (rms / FULL_SCALE).log10();
    // The cast saturates, and the clamp keeps the 7 bits the payload has.
    dbov.round().clamp(0.0, f64::from(SILENCE_DBOV)) as u8
}

/// RMS amplitude (16-bit linear) of a level in −dBov.
pub fn rms_of_level(level: u8) -> f64 {
    FULL_SCALE * 10f64.powf(-f64::from(level.min(SILENCE_DBOV)) / 20.0)
}

/// Comfort noise generator: white noise at the level of the last CN payload.
#[derive(Debug, Clone)]
pub struct ComfortNoise {
    state: u32,
    level: u8,
    rms: f64,
}

impl ComfortNoise {
    /// Starts silent (−127 dBov) until a level arrives. `seed` comes from the caller's RNG;
    /// xorshift cannot run from 0, which is replaced by a fixed odd constant.
    pub fn new(seed: u32) -> Self {
        ComfortNoise {
            state: if seed == 0 { 0x9E37_79B9 } else { seed },
            level: SILENCE_DBOV,
            rms: rms_of_level(SILENCE_DBOV),
        }
    }

    pub fn level(&self) -> u8 {
        self.level
    }

    pub fn set_level(&mut self, level: u8) {
        self.level = level.min(SILENCE_DBOV);
        self.rms = rms_of_level(self.level);
    }

    /// Takes the level of a received CN payload.
    pub fn handle_payload(&mut self, p: &CnPayload) {
        self.set_level(p.level);
    }

    /// Marsaglia's xorshift32: cheap, and plenty for noise nobody listens to closely.
    fn next_u32(&mut self) -> u32 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.state = x;
        x
    }

    /// Uniform in [−1, 1).
    fn uniform(&mut self) -> f64 {
        f64::from(self.next_u32()) / 2_147_483_648.0 - 1.0
    }

    fn sample(&mut self) -> i16 {
        // The sum of four uniforms is near enough to Gaussian to sound like hiss rather than
        // a buzz; its variance is 4/3, scaled to the target RMS.
        let sum = self.uniform() + self.uniform() + self.uniform() + self.uniform();
        let v = sum / (4.0f64 / 3.0).sqrt() * self.rms;
        // The cast saturates at the i16 range, which is the clipping we want.
        v.round() as i16
    }

    /// Fills `out` with 16-bit linear noise.
    pub fn fill(&mut self, out: &mut [i16]) {
        for s in out {
            *s = self.sample();
        }
    }

    /// Fills `out` with µ-law noise.
    pub fn fill_ulaw(&mut self, out: &mut [u8]) {
        for b in out {
            *b = linear_to_ulaw(self.sample());
        }
    }

    /// Fills `out` with A-law noise.
    pub fn fill_alaw(&mut self, out: &mut [u8]) {
        for b in out {
            *b = linear_to_alaw(self.sample());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::g711::{alaw_to_linear, ulaw_to_linear};

    fn dbov(frame: &[i16]) -> f64 {
        let e: f64 = frame.iter().map(|s| f64::from(*s).powi(2)).sum();
        20.0 * ((e / frame.len() as f64).sqrt() / FULL_SCALE).log10()
    }

    #[test]
    fn rfc3389_payload_parse_and_encode() {
        let p = CnPayload::parse(&[40, 0x81, 0x7f, 0x10]).unwrap();
        assert_eq!(p.level, 40);
        assert_eq!(p.coefficients, vec![0x81, 0x7f, 0x10]);
        assert_eq!(p.encode(), vec![40, 0x81, 0x7f, 0x10]);
        assert_eq!(
            CnPayload::parse(&[127]).unwrap().coefficients,
            Vec::<u8>::new()
        );
        assert_eq!(CnPayload::parse(&[]), Err(Error::ComfortNoise));
        assert_eq!(
            CnPayload::parse(&[0x80]),
            Err(Error::ComfortNoise),
            "reserved bit set"
        );
    }

    #[test]
    fn level_estimate_of_known_signals() {
        // A full-scale square wave is 0 dBov by definition.
        let square: Vec<i16> = (0..160)
            .map(|i| if i % 2 == 0 { 32767 } else { -32767 })
            .collect();
        assert_eq!(level_of(&square), 0);
        // −6.02 dB per halving of the amplitude.
        let half: Vec<i16> = square.iter().map(|s| s / 2).collect();
        assert_eq!(level_of(&half), 6);
        assert_eq!(level_of(&[0; 160]), SILENCE_DBOV);
        assert_eq!(level_of(&[]), SILENCE_DBOV);
        assert_eq!(level_of(&[1, -1, 1, -1]), 90, "one LSB is −90.3 dBov");
    }

    #[test]
    fn rfc3389_level_round_trip_within_2_db() {
        // A sender's silent 20 ms frame: noise at −50 dBov.
        let mut source = ComfortNoise::new(12345);
        source.set_level(50);
        let mut frame = [0i16; 160];
        source.fill(&mut frame);
        let wire = CnPayload::from_pcm(&frame).encode();
        assert!((49..=51).contains(&wire[0]), "estimated {}", wire[0]);

        // The receiver regenerates it from the payload alone, with another seed.
        let mut cn = ComfortNoise::new(777);
        cn.handle_payload(&CnPayload::parse(&wire).unwrap());
        let mut out = [0i16; 160];
        cn.fill(&mut out);
        assert!(
            (dbov(&out) + 50.0).abs() < 2.0,
            "linear {:.2} dBov",
            dbov(&out)
        );

        let mut ulaw = [0u8; 160];
        cn.fill_ulaw(&mut ulaw);
        let back: Vec<i16> = ulaw.iter().map(|b| ulaw_to_linear(*b)).collect();
        assert!(
            (dbov(&back) + 50.0).abs() < 2.0,
            "µ-law {:.2} dBov",
            dbov(&back)
        );

        let mut alaw = [0u8; 160];
        cn.fill_alaw(&mut alaw);
        let back: Vec<i16> = alaw.iter().map(|b| alaw_to_linear(*b)).collect();
        assert!(
            (dbov(&back) + 50.0).abs() < 2.0,
            "A-law {:.2} dBov",
            dbov(&back)
        );
    }

    #[test]
    fn generator_is_deterministic_per_seed_and_silent_by_default() {
        let mut a = ComfortNoise::new(0);
        let mut b = ComfortNoise::new(0);
        a.set_level(30);
        b.set_level(30);
        let (mut x, mut y) = ([0i16; 80], [0i16; 80]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y);
        assert!(x.iter().any(|s| *s != 0), "seed 0 still makes noise");
        let mut quiet = ComfortNoise::new(5);
        let mut z = [1i16; 80];
        quiet.fill(&mut z);
        assert!(
            z.iter().all(|s| *s == 0),
            "−127 dBov rounds to digital silence"
        );
        // Loud levels clip instead of wrapping.
        let mut loud = ComfortNoise::new(9);
        loud.set_level(0);
        let mut w = [0i16; 8000];
        loud.fill(&mut w);
        assert!(w.iter().any(|s| *s == i16::MAX || *s == i16::MIN));
    }
}
