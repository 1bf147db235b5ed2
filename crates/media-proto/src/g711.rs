//! ITU-T G.711 µ-law and A-law, with 256-entry tables built at compile time so a law
//! conversion on the media path is one table lookup per sample.

// Every index below is a u8 into a 256-entry table, or a const loop bounded by 256.
#![allow(clippy::indexing_slicing)]

const fn ulaw_to_linear_const(u: u8) -> i16 {
    let u = !u;
    let sign = u & 0x80;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0f) as i32;
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if sign != 0 {
        -(magnitude as i16)
    } else {
        magnitude as i16
    }
}

const fn alaw_to_linear_const(a: u8) -> i16 {
    let a = a ^ 0x55;
    let sign = a & 0x80;
    let exponent = ((a >> 4) & 0x07) as i32;
    let mantissa = (a & 0x0f) as i32;
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if sign != 0 {
        magnitude as i16
    } else {
        -(magnitude as i16)
    }
}

/// µ-law encoding of a 16-bit linear sample (G.711, with the usual 0x84 bias).
pub const fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = sample as i32;
    let sign: u8 = if s < 0 { 0x80 } else { 0 };
    if s < 0 {
        s = -s;
    }
    if s > CLIP {
        s = CLIP;
    }
    s += BIAS;
    let mut exponent: u8 = 7;
    let mut mask = 0x4000;
    while exponent > 0 && (s & mask) == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = ((s >> (exponent as i32 + 3)) & 0x0f) as u8;
    !(sign | (exponent << 4) | mantissa)
}

/// A-law encoding of a 16-bit linear sample (G.711).
pub const fn linear_to_alaw(sample: i16) -> u8 {
    let mut s = sample as i32;
    let sign: u8 = if s >= 0 { 0x80 } else { 0 };
    if s < 0 {
        s = -s - 1;
    }
    if s > 32767 {
        s = 32767;
    }
    let (exponent, mantissa) = if s < 256 {
        (0u8, ((s >> 4) & 0x0f) as u8)
    } else {
        let mut e: u8 = 1;
        let mut v = s >> 8;
        while v > 1 && e < 7 {
            v >>= 1;
            e += 1;
        }
        (e, ((s >> (e as i32 + 3)) & 0x0f) as u8)
    };
    (sign | (exponent << 4) | mantissa) ^ 0x55
}

const fn build_u2a() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = linear_to_alaw(ulaw_to_linear_const(i as u8));
        i += 1;
    }
    t
}

const fn build_a2u() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = linear_to_ulaw(alaw_to_linear_const(i as u8));
        i += 1;
    }
    t
}

const fn build_ulaw_linear() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_to_linear_const(i as u8);
        i += 1;
    }
    t
}

const fn build_alaw_linear() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_to_linear_const(i as u8);
        i += 1;
    }
    t
}

// Tables are indexed by a u8, so every index is in bounds.
static ULAW_TO_ALAW: [u8; 256] = build_u2a();
static ALAW_TO_ULAW: [u8; 256] = build_a2u();
static ULAW_LINEAR: [i16; 256] = build_ulaw_linear();
static ALAW_LINEAR: [i16; 256] = build_alaw_linear();

pub fn ulaw_to_linear(u: u8) -> i16 {
    ULAW_LINEAR[usize::from(u)]
}

pub fn alaw_to_linear(a: u8) -> i16 {
    ALAW_LINEAR[usize::from(a)]
}

/// Converts a µ-law payload to A-law in place.
pub fn ulaw_to_alaw_in_place(buf: &mut [u8]) {
    for b in buf {
        *b = ULAW_TO_ALAW[usize::from(*b)];
    }
}

/// Converts an A-law payload to µ-law in place.
pub fn alaw_to_ulaw_in_place(buf: &mut [u8]) {
    for b in buf {
        *b = ALAW_TO_ULAW[usize::from(*b)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_points() {
        // Silence and extremes per G.711.
        assert_eq!(linear_to_ulaw(0), 0xff);
        assert_eq!(ulaw_to_linear(0xff), 0);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(linear_to_alaw(0), 0xd5);
        assert_eq!(alaw_to_linear(0xd5), 8);
        assert_eq!(alaw_to_linear(0x2a), -32256);
        assert_eq!(alaw_to_linear(0xaa), 32256);
    }

    #[test]
    fn every_code_decodes_and_re_encodes_to_itself() {
        for c in 0..=255u8 {
            // 0x7f and 0xff are µ-law's two zeros; both decode to 0 and 0 encodes to 0xff.
            if c != 0x7f {
                assert_eq!(linear_to_ulaw(ulaw_to_linear(c)), c, "ulaw {c:#x}");
            }
            assert_eq!(linear_to_alaw(alaw_to_linear(c)), c, "alaw {c:#x}");
        }
    }

    #[test]
    fn law_conversion_keeps_the_signal_within_one_step() {
        for c in 0..=255u8 {
            let mut b = [c];
            ulaw_to_alaw_in_place(&mut b);
            let (l0, l1) = (
                i32::from(ulaw_to_linear(c)),
                i32::from(alaw_to_linear(b[0])),
            );
            // The coarser of the two quantisers bounds the error (1/16 of the magnitude + 16).
            assert!(
                (l0 - l1).abs() <= l0.abs() / 16 + 16,
                "{c:#x}: {l0} vs {l1}"
            );
            let mut back = b;
            alaw_to_ulaw_in_place(&mut back);
            let l2 = i32::from(ulaw_to_linear(back[0]));
            assert!(
                (l0 - l2).abs() <= l0.abs() / 16 + 16,
                "{c:#x}: {l0} vs {l2}"
            );
        }
    }
}
