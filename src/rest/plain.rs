//! The one-pass reader for the body most clients send: `{"instances": …}` or `{"inputs": …}`
//! (with an optional plain `"signature_name"`) whose payload is a rectangular nesting of
//! lists of JSON numbers, for a signature with one numeric input — an image, a feature
//! vector. It checks the syntax and the shape as it goes and keeps only where each number is
//! written, so typing converts each once, without the tape [`super::json`] builds for every
//! list and value.
//!
//! It is a shortcut, never a second dialect: a body it does not take in full — another
//! layout, strings, `NaN`, escapes, an empty or ragged list, any syntax error, a value the
//! input's dtype refuses — returns `None`, and the full reader reads it, so whatever such a
//! body gives (tensors or an error message) is exactly what it gave before. The
//! differential tests in `rest.rs` hold the two to the same results.

use super::Format;
use super::number::{self, Decimal};

/// Lists nested deeper than this go to the full reader (which allows 128).
const MAX_DEPTH: usize = 32;

/// A payload of numbers: where each is written, and the shape of the lists around them.
#[derive(Debug)]
pub(super) struct Plain {
    pub(super) signature_name: Option<String>,
    pub(super) format: Format,
    /// Lengths of the nested lists, outermost first (for `"instances"`, dim 0 is the rows).
    pub(super) dims: Vec<usize>,
    /// Each number's bytes in the body, in row-major order.
    pub(super) numbers: Vec<Number>,
}

/// One number's place in the body: `start..end`, whether it is written as a whole number
/// (no fraction, no exponent), which integer dtypes require, and its digits as a
/// [`Decimal`] when they fit one (read on the way, so a float converts without reading the
/// text again).
#[derive(Clone, Copy, Debug)]
pub(super) struct Number {
    pub(super) start: u32,
    pub(super) end: u32,
    pub(super) int: bool,
    pub(super) decimal: Option<Decimal>,
}

/// Reads `body` if it is a plain numeric predict body (see the module docs); `None` for
/// anything else. `body` must not carry the byte-order mark (the caller strips it).
pub(super) fn read(body: &[u8]) -> Option<Plain> {
    if u32::try_from(body.len()).is_err() {
        return None;
    }
    let mut scan = Scan { s: body, pos: 0 };
    scan.ws();
    scan.expect(b'{')?;
    let (mut signature_name, mut payload) = (None, None);
    loop {
        scan.ws();
        let key = scan.string()?;
        scan.ws();
        scan.expect(b':')?;
        scan.ws();
        match key {
            b"signature_name" if signature_name.is_none() => {
                // ASCII without escapes: the bytes are the string.
                let name = scan.string()?;
                signature_name = Some(String::from_utf8(name.to_vec()).ok()?);
            }
            b"instances" if payload.is_none() => payload = Some((Format::Row, scan.lists()?)),
            b"inputs" if payload.is_none() => payload = Some((Format::Columnar, scan.lists()?)),
            _ => return None,
        }
        scan.ws();
        match scan.next()? {
            b',' => {}
            b'}' => break,
            _ => return None,
        }
    }
    scan.ws();
    let (format, (dims, numbers)) = payload?;
    (scan.pos == body.len()).then_some(Plain {
        signature_name,
        format,
        dims,
        numbers,
    })
}

struct Scan<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn expect(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    /// The JSON whitespace the full reader skips.
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// A string of printable ASCII without escapes; its bytes between the quotes.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let start = self.pos;
        loop {
            match self.next()? {
                b'"' => return self.s.get(start..self.pos - 1),
                b'\\' | 0..0x20 | 0x7F.. => return None,
                _ => {}
            }
        }
    }

    /// A JSON number (the strict grammar: no leading zeros, digits after `.` and in the
    /// exponent), up to the byte after it.
    fn number(&mut self) -> Option<Number> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        self.pos += usize::from(negative);
        let mut mantissa = Some(0);
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                self.digits(&mut mantissa);
            }
            _ => return None,
        }
        let (mut int, mut fraction_digits, mut exponent) = (true, 0, Some(0));
        if self.peek() == Some(b'.') {
            self.pos += 1;
            int = false;
            fraction_digits = self.some_digits(&mut mantissa)?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            int = false;
            let sign = match self.peek() {
                Some(b'-') => -1,
                Some(b'+') => 1,
                _ => 0,
            };
            self.pos += usize::from(sign != 0);
            let mut written = Some(0);
            self.some_digits(&mut written)?;
            exponent = written
                .and_then(|e| i32::try_from(e).ok())
                .map(|e| if sign < 0 { -e } else { e });
        }
        // A digit right after a lone `0` is a leading zero, which the full reader refuses.
        if self.peek().is_some_and(|b| b.is_ascii_digit()) {
            return None;
        }
        let decimal = exponent.and_then(|exponent| {
            let fraction_digits = i32::try_from(fraction_digits).ok()?;
            Decimal::new(mantissa, fraction_digits, exponent, negative)
        });
        Some(Number {
            start: start as u32,
            end: self.pos as u32,
            int,
            decimal,
        })
    }

    /// Skips ASCII digits, adding them to `value` (`None` once it outgrows a [`Decimal`]);
    /// how many there were.
    fn digits(&mut self, value: &mut Option<u64>) -> usize {
        let from = self.pos;
        while let Some(eight) = number::eight_digits(self.s, self.pos) {
            *value = Decimal::push_eight(*value, eight);
            self.pos += 8;
        }
        while let Some(b) = self.peek().filter(u8::is_ascii_digit) {
            *value = Decimal::push_digit(*value, b - b'0');
            self.pos += 1;
        }
        self.pos - from
    }

    /// [`Scan::digits`], at least one.
    fn some_digits(&mut self, value: &mut Option<u64>) -> Option<usize> {
        let n = self.digits(value);
        (n > 0).then_some(n)
    }

    /// A non-empty, rectangular nesting of lists whose leaves are all numbers at the same
    /// depth: its dims (read down the first elements, and every other list held to them)
    /// and its numbers.
    fn lists(&mut self) -> Option<(Vec<usize>, Vec<Number>)> {
        const UNKNOWN: usize = usize::MAX;
        // dims[d]: the length of the lists at depth d (the payload's own list is depth 0),
        // known once the first of them closes; counts[d]: elements so far in the open one.
        let mut dims = [UNKNOWN; MAX_DEPTH];
        let mut counts = [0usize; MAX_DEPTH];
        let mut depth = 0usize; // lists open
        let mut leaf_depth = None; // lists around every number
        let mut numbers = Vec::with_capacity(self.s.len() / 4);
        self.expect(b'[')?;
        depth += 1;
        loop {
            // A value: a list opens, or a number.
            self.ws();
            if self.peek() == Some(b'[') {
                if depth >= MAX_DEPTH || leaf_depth.is_some_and(|d| depth >= d) {
                    return None;
                }
                self.pos += 1;
                counts[depth] = 0;
                depth += 1;
                continue;
            }
            if *leaf_depth.get_or_insert(depth) != depth {
                return None;
            }
            numbers.push(self.number()?);
            // After a value: the next element, or the lists it ends.
            loop {
                counts[depth - 1] += 1;
                self.ws();
                match self.next()? {
                    b',' => break,
                    b']' => {
                        depth -= 1;
                        let (known, count) = (&mut dims[depth], counts[depth]);
                        if *known == UNKNOWN {
                            *known = count;
                        } else if *known != count {
                            return None;
                        }
                        if depth == 0 {
                            let rank = leaf_depth?;
                            let dims = dims.get(..rank)?.to_vec();
                            let elements = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
                            return (elements == Some(numbers.len())).then_some((dims, numbers));
                        }
                    }
                    _ => return None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(body: &str) -> Option<Vec<usize>> {
        read(body.as_bytes()).map(|p| {
            assert_eq!(p.numbers.len(), p.dims.iter().product::<usize>());
            p.dims
        })
    }

    /// The layouts it takes, with their shapes, formats and signature names.
    #[test]
    fn reads_plain_numeric_bodies() {
        assert_eq!(dims(r#"{"instances": [1, 2, 3]}"#), Some(vec![3]));
        assert_eq!(
            dims(r#" { "instances" : [ [[1.5e3], [-0.25]] , [[0], [2E-1]] ] } "#),
            Some(vec![2, 2, 1])
        );
        assert_eq!(dims("{\"inputs\":[[1,2,3]]}\n"), Some(vec![1, 3]));
        let plain = read(br#"{"signature_name": "serving_default", "inputs": [[7, 8]]}"#).unwrap();
        assert_eq!(plain.signature_name.as_deref(), Some("serving_default"));
        assert_eq!(plain.format, Format::Columnar);
        let plain = read(br#"{"instances": [[1, 2.0]], "signature_name": "s"}"#).unwrap();
        assert_eq!(plain.format, Format::Row);
        assert_eq!(plain.signature_name.as_deref(), Some("s"));
        let ints: Vec<bool> = plain.numbers.iter().map(|n| n.int).collect();
        assert_eq!(ints, [true, false]);
        let text = br#"{"instances": [-12.5e-1]}"#;
        let n = read(text).unwrap().numbers[0];
        assert_eq!(&text[n.start as usize..n.end as usize], b"-12.5e-1");
        assert_eq!(n.decimal, Decimal::new(Some(125), 1, -1, true));
        assert_eq!(n.decimal.and_then(Decimal::to_f64), Some(-1.25));
        // Digits past what a Decimal holds are still read; the text then decides.
        let long = read(br#"{"inputs": [123456789012345678901234567890]}"#).unwrap();
        assert_eq!(long.numbers[0].decimal, None);
    }

    /// The digits the scan reads on the way are the number's digits: the same [`Decimal`]
    /// as reading the number's text on its own, for spellings of every part and random ones.
    #[test]
    fn the_scan_reads_each_number_as_its_text_reads() {
        let mut texts: Vec<String> = [
            "0",
            "-0",
            "0.0",
            "7",
            "-7.25e+1",
            "1E5",
            "2e-2",
            "0.32156864",
            "9007199254740991",
            "9007199254740992",
            "1e99999",
            "1.5e0003",
            "0.000001",
            "123456789.123456789",
        ]
        .map(String::from)
        .to_vec();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f32::from_bits(x as u32);
            if v.is_finite() {
                texts.push(format!("{v:?}"));
                texts.push(format!("{v:e}"));
            }
            texts.push(format!("{}", x % 100_000_000_000_000_000));
        }
        for text in texts {
            let body = format!(r#"{{"inputs": [{text}]}}"#);
            let plain = read(body.as_bytes()).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(
                plain.numbers[0].decimal,
                Decimal::parse(text.as_bytes()),
                "{text}"
            );
        }
    }

    /// Everything else goes to the full reader, which reads it or says what is wrong.
    #[test]
    fn leaves_everything_else_to_the_full_reader() {
        for body in [
            "",
            "[]",
            "{}",
            r#"{"instances": []}"#,
            r#"{"instances": [[], []]}"#,
            r#"{"instances": [[1, 2], [3]]}"#,
            r#"{"instances": [[1, 2], 3]}"#,
            r#"{"instances": [1, [2]]}"#,
            r#"{"instances": [[1], [[2]]]}"#,
            r#"{"instances": [1,]}"#,
            r#"{"instances": [1 2]}"#,
            r#"{"instances": [01]}"#,
            r#"{"instances": [1.]}"#,
            r#"{"instances": [1e]}"#,
            r#"{"instances": [-]}"#,
            r#"{"instances": [NaN]}"#,
            r#"{"instances": [-Infinity]}"#,
            r#"{"instances": ["a"]}"#,
            r#"{"instances": [true]}"#,
            r#"{"instances": [{"x": [1]}]}"#,
            r#"{"instances": [1]} x"#,
            r#"{"instances": [1]"#,
            r#"{"instances": [1], "instances": [2]}"#,
            r#"{"instances": [1], "inputs": [2]}"#,
            r#"{"signature_name": "a", "signature_name": "b", "inputs": [1]}"#,
            r#"{"signature_name": "\u0041", "inputs": [1]}"#,
            r#"{"signature_name": "é", "inputs": [1]}"#,
            r#"{"signature_name": 1, "inputs": [1]}"#,
            r#"{"signature_name": "s"}"#,
            r#"{"inputs": 1}"#,
            r#"{"inputs": {"x": [1]}}"#,
            r#"{"other": [1]}"#,
            r#"{"inputs": [1],}"#,
        ] {
            assert!(read(body.as_bytes()).is_none(), "{body}");
        }
        let deep = format!(r#"{{"inputs": {}1{}}}"#, "[".repeat(40), "]".repeat(40));
        assert!(read(deep.as_bytes()).is_none());
        let fits = format!(r#"{{"inputs": {}1{}}}"#, "[".repeat(31), "]".repeat(31));
        assert_eq!(dims(&fits), Some(vec![1; 31]));
    }
}
