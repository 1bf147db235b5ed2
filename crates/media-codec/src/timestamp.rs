//! RTP timestamp mapping between two clocks whose rates differ by an integer factor.

/// Maps RTP timestamps of one leg's clock to the other leg's, keeping each leg's own random
/// base (RFC 3550 §5.1). The first timestamp seen becomes the input base and maps to the output
/// base; later ones map by their distance from it, scaled `×num ÷den`.
///
/// The distance is tracked as a 64-bit count built from signed 32-bit steps, so it survives
/// the input clock wrapping (every ~24.9 h at 48 kHz, ~6.2 days at 8 kHz) and modest
/// reordering (a step back is a negative step). A ÷6 map rounds down to whole output samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampMap {
    num: i64,
    den: i64,
    out_base: u32,
    /// Last input timestamp and its distance from the first one, once one was seen.
    last: Option<(u32, i64)>,
}

impl TimestampMap {
    /// 8 kHz G.711 → 48 kHz Opus (×6).
    pub fn g711_to_opus(out_base: u32) -> Self {
        Self::new(i64::from(crate::OPUS_TICKS_PER_G711_SAMPLE), 1, out_base)
    }

    /// 48 kHz Opus → 8 kHz G.711 (÷6).
    pub fn opus_to_g711(out_base: u32) -> Self {
        Self::new(1, i64::from(crate::OPUS_TICKS_PER_G711_SAMPLE), out_base)
    }

    fn new(num: i64, den: i64, out_base: u32) -> Self {
        TimestampMap {
            num,
            den,
            out_base,
            last: None,
        }
    }

    /// Maps `ts` and makes it the reference for the next call.
    pub fn map(&mut self, ts: u32) -> u32 {
        let distance = self.distance(ts);
        self.last = Some((ts, distance));
        self.output(distance)
    }

    /// Maps `ts` without moving the reference (for RTCP sender reports, or a look-ahead).
    #[must_use]
    pub fn peek(&self, ts: u32) -> u32 {
        self.output(self.distance(ts))
    }

    fn distance(&self, ts: u32) -> i64 {
        match self.last {
            None => 0,
            // Reinterpreting the wrapped difference as i32 makes a step back negative.
            Some((last, distance)) => distance + i64::from(ts.wrapping_sub(last) as i32),
        }
    }

    fn output(&self, distance: i64) -> u32 {
        // Truncating to u32 is reduction modulo 2^32, which is what RTP timestamps are.
        let scaled = (distance * self.num).div_euclid(self.den);
        self.out_base.wrapping_add(scaled as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_by_six_from_each_base() {
        let mut m = TimestampMap::g711_to_opus(1_000);
        assert_eq!(m.map(50_000), 1_000);
        assert_eq!(m.map(50_160), 1_000 + 960);
        assert_eq!(m.map(50_480), 1_000 + 480 * 6);
        let mut back = TimestampMap::opus_to_g711(7);
        assert_eq!(back.map(123_456), 7);
        assert_eq!(back.map(123_456 + 960), 7 + 160);
        assert_eq!(back.map(123_456 + 120), 7 + 20);
    }

    #[test]
    fn survives_input_and_output_wrap() {
        // Input wraps: 8 kHz timestamps cross 2^32 and the output keeps counting.
        let mut m = TimestampMap::g711_to_opus(0);
        let start = u32::MAX - 159;
        assert_eq!(m.map(start), 0);
        assert_eq!(m.map(start.wrapping_add(160)), 960);
        assert_eq!(m.map(start.wrapping_add(320)), 1_920);
        // Output wraps: ×6 crosses 2^32 on the output side only.
        let mut m = TimestampMap::g711_to_opus(u32::MAX - 100);
        m.map(0);
        assert_eq!(m.map(160), 859);

        // ÷6 across the 48 kHz wrap: the distance, not the raw value, is divided.
        let mut back = TimestampMap::opus_to_g711(500);
        let start = u32::MAX - 959;
        assert_eq!(back.map(start), 500);
        for k in 1..=10u32 {
            assert_eq!(back.map(start.wrapping_add(960 * k)), 500 + 160 * k);
        }
    }

    #[test]
    fn walks_many_wraps_without_drift() {
        // A day and a half of 20 ms Opus packets: the 48 kHz clock wraps once, and the 8 kHz
        // output must be exactly one sixth of the distance at every step.
        let mut back = TimestampMap::opus_to_g711(0);
        let mut ts = 0xdead_beefu32;
        back.map(ts);
        let steps: u64 = 36 * 3600 * 50;
        for _ in 0..steps {
            ts = ts.wrapping_add(960);
            back.map(ts);
        }
        assert_eq!(back.map(ts), (steps * 160) as u32);
    }

    #[test]
    fn reordered_and_peeked_timestamps() {
        let mut m = TimestampMap::g711_to_opus(10_000);
        m.map(1_000);
        m.map(1_320);
        // A late packet from before the reference maps behind it.
        assert_eq!(m.map(1_160), 10_000 + 960);
        assert_eq!(m.peek(1_480), 10_000 + 2_880);
        assert_eq!(m.peek(840), 10_000 - 960);
        // peek moved nothing.
        assert_eq!(m.map(1_160), 10_000 + 960);
    }
}
