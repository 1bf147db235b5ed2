//! A 1 kHz test tone in G.711 µ-law, 20 ms per packet.

use media_proto::g711::linear_to_ulaw;

/// Generates consecutive 160-sample (20 ms at 8 kHz) µ-law packets of a 1 kHz sine.
#[derive(Debug, Default)]
pub struct Tone {
    n: u64,
}

impl Tone {
    pub fn next_packet(&mut self) -> Vec<u8> {
        (0..160)
            .map(|_| {
                let t = self.n as f64 / 8000.0;
                self.n += 1;
                let v = (2.0 * std::f64::consts::PI * 1000.0 * t).sin() * 8000.0;
                linear_to_ulaw(v as i16)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_matches_g711_reference_points() {
        assert_eq!(linear_to_ulaw(0), 0xff);
        assert_eq!(linear_to_ulaw(-1), 0x7f);
        assert_eq!(linear_to_ulaw(32767), 0x80);
        assert_eq!(linear_to_ulaw(-32768), 0x00);
        // 1 kHz at 8 kHz repeats every 8 samples.
        let p = Tone::default().next_packet();
        assert_eq!(p.len(), 160);
        assert_eq!(p[0..8], p[8..16]);
    }
}
