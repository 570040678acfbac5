//! G.711 µ-law and A-law (ITU-T G.711), 16-bit linear ↔ 8-bit.
//!
//! Written here rather than taken from a crate: it is a few lines of fixed arithmetic from the
//! standard (segment search + 4-bit mantissa), and the G.711 crates on crates.io are small
//! unmaintained snippets. Decoding uses 256-entry tables built at compile time.

/// The codec a call uses, with its static RTP payload type (RFC 3551).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law, payload type 0.
    Pcmu,
    /// G.711 A-law, payload type 8.
    Pcma,
}

impl Codec {
    /// Static RTP payload type.
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }
    /// SDP encoding name.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }
    /// Encodes one sample.
    pub fn encode(self, s: i16) -> u8 {
        match self {
            Codec::Pcmu => linear_to_ulaw(s),
            Codec::Pcma => linear_to_alaw(s),
        }
    }
    /// Decodes one sample.
    pub fn decode(self, b: u8) -> i16 {
        match self {
            Codec::Pcmu => ULAW_TO_LINEAR[b as usize],
            Codec::Pcma => ALAW_TO_LINEAR[b as usize],
        }
    }
}

const SEG_UEND: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
const SEG_AEND: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

fn segment(v: i32, ends: &[i32; 8]) -> i32 {
    // At most 8; the cast is lossless.
    ends.iter().position(|&e| v <= e).unwrap_or(8) as i32
}

/// 16-bit linear → µ-law.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84 >> 2;
    const CLIP: i32 = 8159;
    let mut v = i32::from(sample) >> 2;
    let mask = if v < 0 {
        v = -v;
        0x7F
    } else {
        0xFF
    };
    v = v.min(CLIP) + BIAS;
    let seg = segment(v, &SEG_UEND);
    let u = if seg >= 8 {
        0x7F
    } else {
        (seg << 4) | ((v >> (seg + 1)) & 0xF)
    };
    // Masked to 8 bits.
    ((u ^ mask) & 0xFF) as u8
}

const fn ulaw_to_linear(u: u8) -> i16 {
    const BIAS: i32 = 0x84;
    let u = !u as i32;
    let t = (((u & 0x0F) << 3) + BIAS) << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 { BIAS - t } else { t - BIAS }) as i16
}

/// 16-bit linear → A-law.
pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut v = i32::from(sample) >> 3;
    let mask = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    let seg = segment(v, &SEG_AEND);
    let a = if seg >= 8 {
        0x7F
    } else if seg < 2 {
        (seg << 4) | ((v >> 1) & 0xF)
    } else {
        (seg << 4) | ((v >> seg) & 0xF)
    };
    ((a ^ mask) & 0xFF) as u8
}

const fn alaw_to_linear(a: u8) -> i16 {
    let a = (a ^ 0x55) as i32;
    let mut t = (a & 0x0F) << 4;
    let seg = (a & 0x70) >> 4;
    t += if seg == 0 { 8 } else { 0x108 };
    if seg > 1 {
        t <<= seg - 1;
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

const fn ulaw_table() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_to_linear(i as u8);
        i += 1;
    }
    t
}

const fn alaw_table() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_to_linear(i as u8);
        i += 1;
    }
    t
}

static ULAW_TO_LINEAR: [i16; 256] = ulaw_table();
static ALAW_TO_LINEAR: [i16; 256] = alaw_table();

#[cfg(test)]
mod tests {
    use super::*;

    /// Round trip of every 16-bit value stays within half a quantisation step of its segment.
    #[test]
    fn round_trip_error_is_within_the_segment_step() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            for s in i16::MIN..=i16::MAX {
                let back = i32::from(codec.decode(codec.encode(s)));
                let err = (back - i32::from(s)).abs();
                let mag = i32::from(s).abs();
                // Step size doubles per segment: 8·2^seg (A-law 16·2^(seg−1)); 1/16 of magnitude
                // bounds the half-step above the first segments, and the clip level caps the top.
                let bound = (mag / 16).max(16) + if mag > 32_000 { 1_000 } else { 0 };
                assert!(err <= bound, "{codec:?} {s} → {back} (err {err})");
            }
        }
    }

    #[test]
    fn known_code_points() {
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(Codec::Pcmu.decode(0xFF), 0);
        assert_eq!(Codec::Pcma.decode(0xD5), 8);
        assert_eq!(Codec::Pcmu.decode(0x00), -32124);
        assert_eq!(Codec::Pcma.decode(0x2A), -32256);
        // Encode(decode(x)) is the identity on code points (except µ-law's negative zero).
        for b in 0..=255u8 {
            if b != 0x7F {
                assert_eq!(linear_to_ulaw(Codec::Pcmu.decode(b)), b, "ulaw {b:#x}");
            }
            assert_eq!(linear_to_alaw(Codec::Pcma.decode(b)), b, "alaw {b:#x}");
        }
    }
}
