//! Half-precision floats (IEEE binary16 and bfloat16) to and from their 16 bits, for the
//! formats that write them (REST JSON, batch padding) and read them (REST rendering).

/// IEEE binary16 bits nearest to `v` (round to nearest, ties to even); too large → infinity.
pub fn f16_bits(v: f64) -> u16 {
    let bits = v.to_bits();
    let sign = ((bits >> 48) & 0x8000) as u16;
    let exp = ((bits >> 52) & 0x7FF) as i32;
    let man = bits & ((1 << 52) - 1);
    if exp == 0x7FF {
        return sign | 0x7C00 | if man == 0 { 0 } else { 0x0200 }; // infinity, or a quiet NaN
    }
    let e = exp - 1023;
    if e > 15 {
        return sign | 0x7C00;
    }
    // Keep the top bits of the significand as the half's mantissa; round on the rest.
    let (kept, shift) = if e >= -14 {
        ((((e + 15) as u64) << 10) | (man >> 42), 42)
    } else {
        let shift = (28 - e) as u32; // subnormal: units of 2^-24
        if shift > 53 {
            return sign; // below half the smallest subnormal
        }
        (((1u64 << 52) | man) >> shift, shift)
    };
    let full = if e >= -14 { man } else { (1u64 << 52) | man };
    let rest = full & ((1u64 << shift) - 1);
    let half = 1u64 << (shift - 1);
    let round_up = rest > half || (rest == half && kept & 1 == 1);
    sign | (kept + u64::from(round_up)) as u16 // a carry moves into the exponent, as it should
}

/// bfloat16 bits of `v`: the top half of its f32 bits, rounded to nearest, ties to even.
pub fn bf16_bits(v: f32) -> u16 {
    let bits = v.to_bits();
    if v.is_nan() {
        return (bits >> 16) as u16 | 0x0040;
    }
    let round = 0x7FFF + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// The f32 equal to IEEE binary16 `bits` (exact: every half is an f32).
pub fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits & 0x8000) << 16;
    let exp = u32::from(bits >> 10) & 0x1F;
    let man = u32::from(bits & 0x3FF);
    let magnitude = match exp {
        0 => (man as f32) * f32::from_bits(0x3380_0000), // subnormal: man × 2^-24
        0x1F => f32::from_bits(0x7F80_0000 | (man << 13)),
        _ => f32::from_bits(((exp + 112) << 23) | (man << 13)),
    };
    f32::from_bits(sign | magnitude.to_bits())
}

/// The f32 equal to bfloat16 `bits`.
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}
