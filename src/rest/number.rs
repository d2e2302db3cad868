//! Decimal text to `f32` / `f64` for the numbers JSON tensors are made of (`0.0`,
//! `0.32156864`, `255`, and the 17 digits `0.003921568859368563` a Python client writes for
//! an `f32` it turned into a float), exactly as `str::parse` rounds them but without its
//! general machinery: the digits become an integer mantissa `m` and a power of ten `10^e`.
//! When both are exact in an `f64` (`m < 2^53`, `|e| <= 22`) one IEEE multiply or divide
//! rounds `m · 10^e` correctly (Clinger's fast path). For an `f32` the mantissa may have up to
//! 19 digits: rounding it to an `f64` first leaves the result within two `f64` ulps of the
//! exact value, far less than an `f32` needs, except near an `f32` rounding boundary.
//! Anything else — more digits, a larger exponent, a result near an `f32` rounding boundary —
//! returns `None` and the caller uses `str::parse`, so every result is bit for bit what
//! `str::parse` gives.
//!
//! The text has already been checked as a JSON number by the reader. The one-pass reader
//! ([`super::plain`]) builds the [`Decimal`] as it scans the digits, so typing doesn't read
//! them again.

/// Powers of ten exact in an `f64`.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A decimal as `±mantissa · 10^exponent`, its mantissa any `u64` (every 19-digit one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Decimal {
    mantissa: u64,
    exponent: i32,
    negative: bool,
}

/// A mantissa this large or larger is not exact in an `f64`.
const EXACT_LIMIT: u64 = 1 << 53;

impl Decimal {
    /// The decimal a reader saw: its digits as one integer (`None` if that outgrew a `u64`),
    /// how many of them came after the point, and the written exponent.
    pub(super) fn new(
        mantissa: Option<u64>,
        fraction_digits: i32,
        exponent: i32,
        negative: bool,
    ) -> Option<Decimal> {
        Some(Decimal {
            mantissa: mantissa?,
            exponent: exponent.saturating_sub(fraction_digits),
            negative,
        })
    }

    /// One more digit of the mantissa; `None` once it outgrows a `u64`.
    pub(super) fn push_digit(mantissa: Option<u64>, digit: u8) -> Option<u64> {
        mantissa?.checked_mul(10)?.checked_add(u64::from(digit))
    }

    /// Eight more digits of the mantissa, already read as one number; `None` once it
    /// outgrows a `u64`.
    pub(super) fn push_eight(mantissa: Option<u64>, eight: u64) -> Option<u64> {
        mantissa?.checked_mul(100_000_000)?.checked_add(eight)
    }

    /// Reads checked JSON number text.
    pub(super) fn parse(text: &[u8]) -> Option<Decimal> {
        let (negative, digits) = match text.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, text),
        };
        let mut mantissa = Some(0);
        let (mut fraction_digits, mut in_fraction) = (0i32, false);
        let mut at = 0;
        while let Some(&b) = digits.get(at) {
            match b {
                b'0'..=b'9' => {
                    mantissa = Self::push_digit(mantissa, b - b'0');
                    mantissa?;
                    fraction_digits += i32::from(in_fraction);
                }
                b'.' => in_fraction = true,
                b'e' | b'E' => break,
                _ => return None,
            }
            at += 1;
        }
        let mut exponent = 0i32;
        if let Some(rest) = digits.get(at + 1..) {
            let (sign, rest) = match rest.split_first() {
                Some((b'-', r)) => (-1, r),
                Some((b'+', r)) => (1, r),
                _ => (1, rest),
            };
            if rest.is_empty() {
                return None;
            }
            let mut written = Some(0);
            for &b in rest {
                written = Self::push_digit(written, b.wrapping_sub(b'0'));
            }
            exponent = sign * i32::try_from(written?).ok()?;
        }
        Decimal::new(mantissa, fraction_digits, exponent, negative)
    }

    /// `±mantissa · 10^exponent` correctly rounded to an `f64`: both factors are exact, so
    /// one multiply or divide rounds once. `None` for a mantissa from 2^53 and past `10^±22`.
    pub(super) fn to_f64(self) -> Option<f64> {
        if self.mantissa >= EXACT_LIMIT {
            return None;
        }
        self.scaled()
    }

    /// `±mantissa · 10^exponent` in an `f64` within two ulps of the exact value: the mantissa
    /// rounded to an `f64` (exact below 2^53), then one multiply or divide by an exact power
    /// of ten. `None` past `10^±22`.
    fn scaled(self) -> Option<f64> {
        let value = if self.mantissa == 0 {
            0.0
        } else {
            let m = self.mantissa as f64; // rounded once, to nearest
            match self.exponent {
                0..=22 => m * POW10[self.exponent as usize],
                -22..=-1 => m / POW10[self.exponent.unsigned_abs() as usize],
                _ => return None,
            }
        };
        Some(if self.negative { -value } else { value })
    }

    /// The value correctly rounded to an `f32`. The `f64` is within two of its ulps of the
    /// exact value (two roundings, each at most half an ulp); rounding it to `f32` gives the
    /// `f32` nearest the exact value unless an `f32` rounding boundary (a midpoint between two
    /// `f32`s) lies within those two ulps, which the 29 bits an `f64` has below an `f32`'s
    /// last one tell. Those, and results outside the normal `f32` range, are `None`.
    pub(super) fn to_f32(self) -> Option<f32> {
        let wide = self.scaled()?;
        if wide == 0.0 {
            return Some(wide as f32);
        }
        const BELOW_F32: u64 = (1 << 29) - 1;
        const MIDPOINT: u64 = 1 << 28;
        /// More `f64` ulps than the two roundings can be off by.
        const MARGIN: u64 = 3;
        let low = wide.to_bits() & BELOW_F32;
        ((f64::from(f32::MIN_POSITIVE)..f64::from(f32::MAX)).contains(&wide.abs())
            && low.abs_diff(MIDPOINT) > MARGIN)
            .then_some(wide as f32)
    }
}

/// The eight bytes at `at` as the number they spell, when all eight are ASCII digits: the
/// reader takes a long mantissa eight digits at a time (the SWAR tests and arithmetic of
/// fast_float and simdjson: three multiplies instead of eight multiply-adds and tests).
#[inline]
pub(super) fn eight_digits(text: &[u8], at: usize) -> Option<u64> {
    let chunk: [u8; 8] = text.get(at..at.checked_add(8)?)?.try_into().ok()?;
    let v = u64::from_le_bytes(chunk);
    // A byte below `0`: `v - 0x30…` borrows into its top bit; above `9`: `+ 0x46` carries
    // into it (bytes from 0x80 have it set already).
    let all_digits = (v.wrapping_add(0x4646_4646_4646_4646)
        | v.wrapping_sub(0x3030_3030_3030_3030))
        & 0x8080_8080_8080_8080
        == 0;
    if !all_digits {
        return None;
    }
    // Little-endian: the first digit is the lowest byte. Pairs, then fours, then all eight.
    let v = v - 0x3030_3030_3030_3030;
    let v = (v * 10) + (v >> 8);
    let v = (v & 0x0000_00FF_0000_00FF)
        .wrapping_mul(0x000F_4240_0000_0064)
        .wrapping_add(((v >> 16) & 0x0000_00FF_0000_00FF).wrapping_mul(0x0000_2710_0000_0001))
        >> 32;
    Some(v)
}

/// The number as an `f64`, rounded once.
pub(super) fn parse_f64(text: &str) -> Option<f64> {
    Decimal::parse(text.as_bytes())
        .and_then(Decimal::to_f64)
        .or_else(|| text.parse().ok())
}

/// The number as an `f32`, rounded once.
pub(super) fn parse_f32(text: &str) -> Option<f32> {
    Decimal::parse(text.as_bytes())
        .and_then(Decimal::to_f32)
        .or_else(|| text.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small xorshift generator, so the test is the same on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn same_as_std(text: &str) {
        let want32: f32 = text.parse().unwrap();
        let got32 = parse_f32(text).unwrap();
        assert_eq!(got32.to_bits(), want32.to_bits(), "f32 of {text}");
        let want64: f64 = text.parse().unwrap();
        let got64 = parse_f64(text).unwrap();
        assert_eq!(got64.to_bits(), want64.to_bits(), "f64 of {text}");
    }

    /// Spellings with signs, zeros, fractions and exponents, and the values near rounding
    /// boundaries and range ends, all as `str::parse` reads them.
    #[test]
    fn known_spellings() {
        for text in [
            "0",
            "-0",
            "0.0",
            "-0.0",
            "1",
            "255",
            "0.5",
            "0.32156864",
            "1e10",
            "1E-5",
            "2.5e+3",
            "-17.125",
            "123456789",
            "9007199254740991",
            "9007199254740993",
            "1e22",
            "1e23",
            "1e-22",
            "1e-23",
            "3.4028235e38",
            "3.4028236e38",
            "1.1754944e-38",
            "1e-45",
            "1e-46",
            "16777217",
            "16777216.5",
            "0.1",
            "0.2",
            "0.30000000000000004",
            "1.00000006",
            "1.0000000596046448",
            "0.000000000000000000000000000001",
            "100000000000000000000000",
            "1e0400",
            "4.9e-324",
        ] {
            let want32: f32 = text.parse().unwrap();
            assert_eq!(
                parse_f32(text).map(f32::to_bits),
                Some(want32.to_bits()),
                "{text}"
            );
            let want64: f64 = text.parse().unwrap();
            assert_eq!(
                parse_f64(text).map(f64::to_bits),
                Some(want64.to_bits()),
                "{text}"
            );
        }
    }

    /// Every `f32` printed the shortest way (as serde_json writes them), midpoints between two
    /// `f32`s written out exactly and one digit off them, and random short decimals.
    #[test]
    fn random_numbers_round_as_std_does() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let x = f32::from_bits(rng.next() as u32);
            if x.is_finite() {
                same_as_std(&format!("{x:?}"));
                same_as_std(&format!("{x:e}"));
            }
            // The exact midpoint above x, and its neighbours in the last printed digit.
            if x.is_finite() && x.is_normal() {
                let mid = (f64::from(x) + f64::from(f32::from_bits(x.to_bits() + 1))) / 2.0;
                let text = format!("{mid:e}");
                same_as_std(&text);
                same_as_std(&format!("{mid:.12e}"));
            }
            let digits = rng.next() % 10_000_000_000;
            let scale = (rng.next() % 30) as i32 - 15;
            same_as_std(&format!("{digits}e{scale}"));
            same_as_std(&format!("-0.{digits:010}"));
            same_as_std(&format!("{}", rng.next() % 100_000));
            // What a Python client sends for an f32 (`tensor.tolist()`, then `json.dumps`):
            // the f64 of it, up to 17 digits; and mantissas of 18 to 20 digits.
            if x.is_finite() {
                same_as_std(&format!("{:?}", f64::from(x)));
                same_as_std(&format!("{:e}", f64::from(x)));
            }
            let long = rng.next();
            same_as_std(&format!("0.{long}"));
            same_as_std(&format!("{long}e-{}", rng.next() % 40));
            same_as_std(&format!(
                "{}.{}",
                long % 1000,
                rng.next() % 10_000_000_000_000_000
            ));
        }
    }

    /// The f64 spellings of `f32` pixels (what `json.dumps(image.tolist())` sends) take the
    /// fast path, not `str::parse`: the reason it takes 19 digits.
    #[test]
    fn f64_spellings_of_f32_pixels_convert_on_the_fast_path() {
        let mut slow = 0;
        for k in 0..=255u8 {
            let pixel = f32::from(k) / 255.0;
            let text = format!("{:?}", f64::from(pixel));
            let decimal = Decimal::parse(text.as_bytes()).unwrap_or_else(|| panic!("{text}"));
            match decimal.to_f32() {
                Some(v) => assert_eq!(v.to_bits(), pixel.to_bits(), "{text}"),
                None => slow += 1,
            }
        }
        assert!(slow <= 2, "{slow} of 256 pixels went to str::parse");
    }

    /// Eight digits at a time: any eight ASCII digits are their number; a single other byte
    /// anywhere among them (every byte value) is `None`, as is a window past the end.
    #[test]
    fn eight_digits_reads_exactly_eight_ascii_digits() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for _ in 0..10_000 {
            let n = rng.next() % 100_000_000;
            let text = format!("{n:08}");
            assert_eq!(eight_digits(text.as_bytes(), 0), Some(n), "{text}");
            let padded = format!("x{text}");
            assert_eq!(eight_digits(padded.as_bytes(), 1), Some(n));
            assert_eq!(eight_digits(padded.as_bytes(), 2), None);
        }
        for at in 0..8 {
            for byte in (0..=255u8).filter(|b| !b.is_ascii_digit()) {
                let mut text = *b"12345678";
                text[at] = byte;
                assert_eq!(eight_digits(&text, 0), None, "{byte:#x} at {at}");
            }
        }
    }
}
