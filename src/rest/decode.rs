//! Request side: a JSON reader, and the assembly of `"instances"` / `"inputs"` values into
//! tensors typed by the signature.
//!
//! The reader records the document on a flat tape rather than a tree: one token per value, each
//! list or object holding its length and where it ends. The whole body costs one allocation
//! instead of one per list, and numbers stay text until the signature says what they are, so an
//! f32 input rounds once (`1435774380` → `1435774336`) and a u64 keeps all 64 bits. The reader
//! also takes TF Serving's `NaN`, `Infinity` and `-Infinity` (and rapidjson's `Inf`, `-NaN`),
//! which strict JSON refuses.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;

use super::{InputSpec, RestError};
use crate::tensor::half::{bf16_bits, f16_bits};
use crate::tensor::{DType, NamedTensors, Tensor};

/// The signature's inputs, by name.
type Specs = BTreeMap<String, InputSpec>;

/// Deeper nesting is refused: no tensor needs it, and it bounds the recursion that walks a value.
const MAX_DEPTH: usize = 128;

/// Standard alphabet as TF Serving requires; padding optional and loose trailing bits accepted,
/// as absl's decoder (TF Serving's) is lenient there too.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// One value on the tape. Positions are byte offsets into the document's text.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Tok {
    Null,
    Bool(bool),
    /// A number as written; `int` when it has neither fraction nor exponent.
    Num {
        start: usize,
        end: usize,
        int: bool,
    },
    /// `NaN`, `Infinity` or `-Infinity`.
    NonFinite(f64),
    /// The text between the quotes; `escaped` when it holds a backslash escape.
    Str {
        start: usize,
        end: usize,
        escaped: bool,
    },
    /// Elements follow on the tape up to (not including) index `end`.
    Array {
        len: usize,
        end: usize,
    },
    /// Members follow as key (a `Str`), value, key, value … up to index `end`.
    Object {
        len: usize,
        end: usize,
    },
}

/// A parsed JSON document: its text and its tape. Index 0 is the top-level value.
#[derive(Debug)]
pub(super) struct Doc {
    text: String,
    tape: Vec<Tok>,
}

impl Doc {
    pub(super) fn parse(body: &[u8]) -> Result<Doc, RestError> {
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        let text = match std::str::from_utf8(body) {
            Ok(text) => text.to_owned(),
            Err(e) => {
                return Err(syntax_error(
                    body,
                    e.valid_up_to(),
                    "the body is not valid UTF-8",
                ));
            }
        };
        let reader = Reader {
            s: text.as_bytes(),
            pos: 0,
            tape: Vec::with_capacity(text.len() / 8),
            open: Vec::new(),
        };
        let tape = reader.read()?;
        Ok(Doc { text, tape })
    }

    /// The token at `i`; past the tape (never, for indices this module makes) reads as null.
    pub(super) fn tok(&self, i: usize) -> Tok {
        self.tape.get(i).copied().unwrap_or(Tok::Null)
    }

    /// The index just past the value at `i` (its next sibling).
    fn skip(&self, i: usize) -> usize {
        match self.tok(i) {
            Tok::Array { end, .. } | Tok::Object { end, .. } => end.max(i + 1),
            _ => i + 1,
        }
    }

    pub(super) fn is_object(&self, i: usize) -> bool {
        matches!(self.tok(i), Tok::Object { .. })
    }

    pub(super) fn list_len(&self, i: usize) -> Option<usize> {
        match self.tok(i) {
            Tok::Array { len, .. } => Some(len),
            _ => None,
        }
    }

    /// Tape indices of a list's elements (none for anything else).
    fn elements(&self, i: usize) -> impl Iterator<Item = usize> + Clone + '_ {
        let end = if matches!(self.tok(i), Tok::Array { .. }) {
            self.skip(i)
        } else {
            i + 1
        };
        let mut at = i + 1;
        std::iter::from_fn(move || {
            let here = at;
            (here < end).then(|| {
                at = self.skip(here);
                here
            })
        })
    }

    /// Tape indices of an object's (key, value) pairs (none for anything else).
    pub(super) fn members(&self, i: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        let end = if self.is_object(i) {
            self.skip(i)
        } else {
            i + 1
        };
        let mut at = i + 1;
        std::iter::from_fn(move || {
            let key = at;
            (key + 1 < end).then(|| {
                at = self.skip(key + 1);
                (key, key + 1)
            })
        })
    }

    /// The contents of a string token, escapes resolved; `None` for other tokens.
    pub(super) fn string(&self, i: usize) -> Option<Cow<'_, str>> {
        match self.tok(i) {
            Tok::Str {
                start,
                end,
                escaped,
            } => {
                let raw = self.text.get(start..end).unwrap_or_default();
                Some(if escaped {
                    Cow::Owned(unescape(raw))
                } else {
                    Cow::Borrowed(raw)
                })
            }
            _ => None,
        }
    }

    /// The string inside `{"b64": "..."}` (exactly that one key, holding a string).
    fn b64(&self, i: usize) -> Option<Cow<'_, str>> {
        let Tok::Object { len: 1, .. } = self.tok(i) else {
            return None;
        };
        (self.string(i + 1)? == "b64")
            .then(|| self.string(i + 2))
            .flatten()
    }

    /// An object that names inputs, as opposed to a value (which a b64 object is).
    fn is_named_object(&self, i: usize) -> bool {
        self.is_object(i) && self.b64(i).is_none()
    }

    /// A value as the client wrote it, shortened, for error messages.
    fn describe(&self, i: usize) -> String {
        match self.tok(i) {
            Tok::Null => "null".into(),
            Tok::Bool(b) => b.to_string(),
            Tok::Num { start, end, .. } => shorten(self.text.get(start..end).unwrap_or_default()),
            Tok::NonFinite(v) => non_finite_name(v).into(),
            Tok::Str { .. } => format!(
                "the string {:?}",
                shorten(&self.string(i).unwrap_or_default())
            ),
            Tok::Object { .. } if self.b64(i).is_some() => {
                "a {\"b64\": ...} object (binary data goes only to string inputs)".into()
            }
            Tok::Object { .. } => "an object".into(),
            Tok::Array { .. } => "a list".into(),
        }
    }
}

fn shorten(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((cut, _)) => format!("{}...", s.get(..cut).unwrap_or_default()),
        None => s.to_owned(),
    }
}

fn non_finite_name(v: f64) -> &'static str {
    match v {
        f64::INFINITY => "Infinity",
        f64::NEG_INFINITY => "-Infinity",
        _ => "NaN",
    }
}

fn syntax_error(s: &[u8], pos: usize, problem: &'static str) -> RestError {
    let before = s.get(..pos).unwrap_or(s);
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    RestError::Syntax {
        line: before.iter().filter(|&&b| b == b'\n').count() + 1,
        column: String::from_utf8_lossy(before.get(line_start..).unwrap_or_default())
            .chars()
            .count()
            + 1,
        problem,
    }
}

/// Reads JSON onto a tape without recursion, so nesting costs heap, not stack.
struct Reader<'a> {
    s: &'a [u8],
    pos: usize,
    tape: Vec<Tok>,
    /// Lists and objects not yet closed: (tape index, elements so far).
    open: Vec<(usize, usize)>,
}

impl Reader<'_> {
    fn read(mut self) -> Result<Vec<Tok>, RestError> {
        self.skip_ws();
        if self.pos >= self.s.len() {
            return Err(self.error("the body is empty"));
        }
        'value: loop {
            if self.value()? {
                continue 'value; // a list or object opened; its first element is next
            }
            // A value ended: continue the list or object around it, or close it.
            loop {
                let Some(top) = self.open.last_mut() else {
                    break 'value;
                };
                top.1 += 1;
                let in_object = matches!(self.tape.get(top.0), Some(Tok::Object { .. }));
                self.skip_ws();
                match (self.peek(), in_object) {
                    (Some(b','), _) => {
                        self.pos += 1;
                        if in_object {
                            self.key()?;
                        }
                        continue 'value;
                    }
                    (Some(b']'), false) | (Some(b'}'), true) => {
                        self.pos += 1;
                        self.close();
                    }
                    (_, false) => {
                        return Err(self.error("expected ',' or ']' after a list element"));
                    }
                    (_, true) => {
                        return Err(self.error("expected ',' or '}' after an object member"));
                    }
                }
            }
        }
        self.skip_ws();
        if self.pos < self.s.len() {
            return Err(self.error("unexpected text after the JSON value"));
        }
        Ok(self.tape)
    }

    /// Reads one value; for a non-empty list or object, only its opening (returns true).
    fn value(&mut self) -> Result<bool, RestError> {
        self.skip_ws();
        let tok = match self.peek() {
            Some(open @ (b'[' | b'{')) => {
                if self.open.len() >= MAX_DEPTH {
                    return Err(self.error("lists and objects nest deeper than 128 levels"));
                }
                self.pos += 1;
                self.open.push((self.tape.len(), 0));
                let is_object = open == b'{';
                self.tape.push(if is_object {
                    Tok::Object { len: 0, end: 0 }
                } else {
                    Tok::Array { len: 0, end: 0 }
                });
                self.skip_ws();
                if self.peek() == Some(if is_object { b'}' } else { b']' }) {
                    self.pos += 1;
                    self.close();
                    return Ok(false);
                }
                if is_object {
                    self.key()?;
                }
                return Ok(true);
            }
            Some(b'"') => self.string()?,
            Some(b't') => self.literal("true", Tok::Bool(true))?,
            Some(b'f') => self.literal("false", Tok::Bool(false))?,
            Some(b'n') => self.literal("null", Tok::Null)?,
            Some(b'-' | b'0'..=b'9' | b'N' | b'I') => self.number()?,
            None => return Err(self.error("unexpected end of the body; expected a value")),
            Some(_) => {
                return Err(self.error(
                    "expected a value (a number, string, list, object, true, false or null)",
                ));
            }
        };
        self.tape.push(tok);
        Ok(false)
    }

    fn close(&mut self) {
        let Some((at, count)) = self.open.pop() else {
            return;
        };
        let end = self.tape.len();
        if let Some(Tok::Array { len, end: e } | Tok::Object { len, end: e }) =
            self.tape.get_mut(at)
        {
            (*len, *e) = (count, end);
        }
    }

    /// An object key and its colon.
    fn key(&mut self) -> Result<(), RestError> {
        self.skip_ws();
        if self.peek() != Some(b'"') {
            return Err(self.error("expected an object key in double quotes"));
        }
        let key = self.string()?;
        self.tape.push(key);
        self.skip_ws();
        if self.peek() != Some(b':') {
            return Err(self.error("expected ':' after an object key"));
        }
        self.pos += 1;
        Ok(())
    }

    fn string(&mut self) -> Result<Tok, RestError> {
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        loop {
            let rest = self.s.get(self.pos..).unwrap_or_default();
            let Some(n) = rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            else {
                self.pos = self.s.len();
                return Err(self.error("a string is not closed"));
            };
            self.pos += n;
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Tok::Str {
                        start,
                        end: self.pos - 1,
                        escaped,
                    });
                }
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?;
                }
                _ => {
                    return Err(self
                        .error("a control character in a string; escape it (\\n, \\t, \\u0000)"));
                }
            }
        }
    }

    /// Checks one backslash escape (a `\u` surrogate pair counts as one).
    fn escape(&mut self) -> Result<(), RestError> {
        let code = match self.s.get(self.pos + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.pos += 2;
                return Ok(());
            }
            Some(b'u') => hex4(self.s.get(self.pos + 2..self.pos + 6)),
            _ => None,
        };
        let Some(code) = code else {
            return Err(self.error("an invalid escape in a string"));
        };
        let low = self.s.get(self.pos + 6..self.pos + 8) == Some(b"\\u");
        let pair = low
            .then(|| hex4(self.s.get(self.pos + 8..self.pos + 12)))
            .flatten();
        match code {
            0xD800..=0xDBFF if pair.is_some_and(|c| (0xDC00..=0xDFFF).contains(&c)) => {
                self.pos += 12
            }
            0xD800..=0xDFFF => return Err(self.error("a \\u escape holds an unpaired surrogate")),
            _ => self.pos += 6,
        }
        Ok(())
    }

    fn literal(&mut self, word: &str, tok: Tok) -> Result<Tok, RestError> {
        if !self
            .s
            .get(self.pos..)
            .unwrap_or_default()
            .starts_with(word.as_bytes())
        {
            return Err(self
                .error("expected a value (a number, string, list, object, true, false or null)"));
        }
        self.pos += word.len();
        Ok(tok)
    }

    /// A JSON number, or `NaN` / `Inf` / `Infinity` with an optional minus, as rapidjson's
    /// `kParseNanAndInfFlag` (TF Serving's parser) reads them.
    fn number(&mut self) -> Result<Tok, RestError> {
        let start = self.pos;
        let negative = self.eat(b'-');
        match self.peek() {
            Some(b'N') if self.eat_word(b"NaN") => return Ok(Tok::NonFinite(f64::NAN)),
            Some(b'I') if self.eat_word(b"Inf") => {
                if self.peek() == Some(b'i') && !self.eat_word(b"inity") {
                    return Err(self.error("invalid number; expected Infinity"));
                }
                return Ok(Tok::NonFinite(if negative {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                }));
            }
            Some(b'0') => {
                self.pos += 1;
                if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    return Err(self.error("a number has a leading zero"));
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.error("invalid number")),
        }
        let mut int = true;
        if self.eat(b'.') {
            int = false;
            if !self.digits() {
                return Err(self.error("a number needs digits after its '.'"));
            }
        }
        if self.eat(b'e') || self.eat(b'E') {
            int = false;
            let _ = self.eat(b'+') || self.eat(b'-');
            if !self.digits() {
                return Err(self.error("a number needs digits in its exponent"));
            }
        }
        Ok(Tok::Num {
            start,
            end: self.pos,
            int,
        })
    }

    /// Skips ASCII digits; true when there was at least one.
    fn digits(&mut self) -> bool {
        let n = self
            .s
            .get(self.pos..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        self.pos += n;
        n > 0
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        self.pos += usize::from(hit);
        hit
    }

    fn eat_word(&mut self, word: &[u8]) -> bool {
        let hit = self.s.get(self.pos..).unwrap_or_default().starts_with(word);
        self.pos += if hit { word.len() } else { 0 };
        hit
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        let rest = self.s.get(self.pos..).unwrap_or_default();
        self.pos += rest
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            .count();
    }

    fn error(&self, problem: &'static str) -> RestError {
        syntax_error(self.s, self.pos, problem)
    }
}

fn hex4(digits: Option<&[u8]>) -> Option<u32> {
    let digits = digits.filter(|d| d.len() == 4 && d.iter().all(u8::is_ascii_hexdigit))?;
    u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// Resolves the escapes of a string the reader already checked.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('\\') {
        out.push_str(rest.get(..at).unwrap_or_default());
        let esc = rest.get(at + 1..).unwrap_or_default();
        let (ch, used) = match esc.as_bytes().first() {
            Some(b'b') => ('\u{8}', 1),
            Some(b'f') => ('\u{c}', 1),
            Some(b'n') => ('\n', 1),
            Some(b'r') => ('\r', 1),
            Some(b't') => ('\t', 1),
            Some(b'u') => {
                let high = hex4(esc.as_bytes().get(1..5)).unwrap_or(0xFFFD);
                let low = hex4(esc.as_bytes().get(7..11)).unwrap_or(0);
                if (0xD800..0xDC00).contains(&high) {
                    let code =
                        0x10000 + ((high - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF);
                    (char::from_u32(code).unwrap_or('\u{FFFD}'), 11)
                } else {
                    (char::from_u32(high).unwrap_or('\u{FFFD}'), 5)
                }
            }
            Some(&other) => (char::from(other), 1), // `"`, `\` and `/` stand for themselves
            None => ('\u{FFFD}', 0),
        };
        out.push(ch);
        rest = esc.get(used..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

/// One input's elements as they are read, in the dtype's storage.
struct Column {
    dtype: DType,
    data: Vec<u8>,
    strings: Vec<Bytes>,
}

impl Column {
    /// `elements` is what the shape claims, capped by `limit`: a shape read from first elements
    /// can claim far more than the body holds, and every element takes at least a byte of it.
    fn new(dtype: DType, elements: usize, limit: usize) -> Column {
        let n = elements.min(limit);
        match dtype.size() {
            Some(size) => Column {
                dtype,
                data: Vec::with_capacity(n.saturating_mul(size)),
                strings: Vec::new(),
            },
            None => Column {
                dtype,
                data: Vec::new(),
                strings: Vec::with_capacity(n),
            },
        }
    }

    fn finish(self, shape: Vec<i64>) -> Result<Tensor, RestError> {
        Ok(match self.dtype {
            DType::Str => Tensor::from_strings(shape, self.strings)?,
            dtype => Tensor::from_bytes(dtype, shape, self.data.into())?,
        })
    }

    fn push(&mut self, doc: &Doc, i: usize, place: &Place) -> Result<(), RestError> {
        let dtype = self.dtype;
        let type_error = || RestError::Type {
            at: place.at(),
            dtype,
            found: doc.describe(i),
        };
        match (dtype, doc.tok(i)) {
            (DType::Str, Tok::Str { .. }) => {
                let text = doc.string(i).unwrap_or_default();
                self.strings.push(match text {
                    Cow::Borrowed(s) => Bytes::copy_from_slice(s.as_bytes()),
                    Cow::Owned(s) => Bytes::from(s.into_bytes()),
                });
            }
            (DType::Str, Tok::Object { .. }) => {
                let encoded = doc.b64(i).ok_or_else(type_error)?;
                let decoded = B64
                    .decode(encoded.as_bytes())
                    .map_err(|e| RestError::Base64 {
                        at: place.at(),
                        reason: e.to_string(),
                    })?;
                self.strings.push(decoded.into());
            }
            (DType::Bool, Tok::Bool(b)) => self.data.push(u8::from(b)),
            (DType::F16 | DType::BF16 | DType::F32 | DType::F64, Tok::NonFinite(v)) => {
                self.push_non_finite(v)
            }
            (_, Tok::Num { start, end, int }) => {
                self.push_number(doc.text.get(start..end).unwrap_or_default(), int, place)?;
            }
            _ => return Err(type_error()),
        }
        Ok(())
    }

    /// Converts number text (checked JSON number syntax) straight to the dtype.
    fn push_number(&mut self, text: &str, int: bool, place: &Place) -> Result<(), RestError> {
        let dtype = self.dtype;
        let out_of_range = || RestError::OutOfRange {
            at: place.at(),
            value: shorten(text),
            dtype,
        };
        let data = &mut self.data;
        macro_rules! integer {
            ($t:ty) => {{
                if !int {
                    return Err(RestError::Type {
                        at: place.at(),
                        dtype,
                        found: format!(
                            "{} ({dtype} takes whole numbers written without a fraction or exponent)",
                            shorten(text)
                        ),
                    });
                }
                let v = text.parse::<i128>().ok().and_then(|v| <$t>::try_from(v).ok()).ok_or_else(out_of_range)?;
                data.extend_from_slice(&v.to_le_bytes());
            }};
        }
        // Text too large for the dtype parses to infinity, not to an error: that is out of range.
        match dtype {
            DType::F32 => {
                let v: f32 = text.parse().map_err(|_| out_of_range())?;
                if v.is_infinite() {
                    return Err(out_of_range());
                }
                data.extend_from_slice(&v.to_le_bytes());
            }
            DType::F64 => {
                let v: f64 = text.parse().map_err(|_| out_of_range())?;
                if v.is_infinite() {
                    return Err(out_of_range());
                }
                data.extend_from_slice(&v.to_le_bytes());
            }
            DType::BF16 => {
                let bits = bf16_bits(text.parse().map_err(|_| out_of_range())?);
                if bits & 0x7FFF == 0x7F80 {
                    return Err(out_of_range());
                }
                data.extend_from_slice(&bits.to_le_bytes());
            }
            DType::F16 => {
                let bits = f16_bits(text.parse().map_err(|_| out_of_range())?);
                if bits & 0x7FFF == 0x7C00 {
                    return Err(out_of_range());
                }
                data.extend_from_slice(&bits.to_le_bytes());
            }
            DType::I8 => integer!(i8),
            DType::I16 => integer!(i16),
            DType::I32 => integer!(i32),
            DType::I64 => integer!(i64),
            DType::U8 => integer!(u8),
            DType::U16 => integer!(u16),
            DType::U32 => integer!(u32),
            DType::U64 => integer!(u64),
            DType::Bool | DType::Str => {
                return Err(RestError::Type {
                    at: place.at(),
                    dtype,
                    found: shorten(text),
                });
            }
        }
        Ok(())
    }

    /// `NaN` or an infinity, into a float dtype (narrowing keeps them exactly).
    fn push_non_finite(&mut self, v: f64) {
        match self.dtype {
            DType::F64 => self.data.extend_from_slice(&v.to_le_bytes()),
            DType::F32 => self.data.extend_from_slice(&(v as f32).to_le_bytes()),
            DType::F16 => self.data.extend_from_slice(&f16_bits(v).to_le_bytes()),
            _ => self
                .data
                .extend_from_slice(&bf16_bits(v as f32).to_le_bytes()),
        }
    }
}

/// Where a value sits in the request, built into text only for an error message.
struct Place<'a> {
    input: &'a str,
    /// The instance, in row format.
    instance: Option<usize>,
    /// Whether the input was named in an object (`instances[0]["x"]`, `inputs["x"]`).
    named: bool,
    /// List indices below that.
    idx: Vec<usize>,
}

impl Place<'_> {
    fn root(&self) -> String {
        let mut s = match self.instance {
            Some(k) => format!("instances[{k}]"),
            None => "inputs".to_owned(),
        };
        if self.named {
            let _ = write!(s, "[{:?}]", self.input);
        }
        s
    }

    fn path(&self) -> String {
        self.idx.iter().fold(self.root(), |mut s, i| {
            let _ = write!(s, "[{i}]");
            s
        })
    }

    /// The first list at the current depth, which set the length every list there must have.
    fn first_at_depth(&self) -> String {
        self.root() + &"[0]".repeat(self.idx.len())
    }

    fn at(&self) -> String {
        if self.named {
            self.path()
        } else {
            format!("input {:?} at {}", self.input, self.path())
        }
    }

    fn ragged(&self, found: String, expected: String) -> RestError {
        let (input, at, first) = (self.input.to_owned(), self.path(), self.first_at_depth());
        RestError::Ragged {
            input,
            at,
            found,
            first,
            expected,
        }
    }
}

/// The shape nesting implies, read down the first element of each list as TF Serving does;
/// [`fill`] then holds every other list to it.
fn nested_shape(doc: &Doc, mut i: usize) -> Vec<usize> {
    let mut shape = Vec::new();
    while let Tok::Array { len, .. } = doc.tok(i) {
        shape.push(len);
        if len == 0 {
            break;
        }
        i += 1;
    }
    shape
}

fn list_of(n: usize) -> String {
    format!("a list of {n}")
}

/// Pushes the elements of the value at `i`, which must have shape `dims`, in row-major order.
fn fill(
    doc: &Doc,
    i: usize,
    dims: &[usize],
    column: &mut Column,
    place: &mut Place,
) -> Result<(), RestError> {
    match (doc.tok(i), dims.split_first()) {
        (Tok::Array { len, .. }, Some((&want, inner))) => {
            if len != want {
                return Err(place.ragged(list_of(len), list_of(want)));
            }
            place.idx.push(0);
            for (k, element) in doc.elements(i).enumerate() {
                if let Some(last) = place.idx.last_mut() {
                    *last = k;
                }
                fill(doc, element, inner, column, place)?;
            }
            place.idx.pop();
            Ok(())
        }
        (Tok::Array { len, .. }, None) => Err(place.ragged(list_of(len), "a value".into())),
        (_, Some((&want, _))) => Err(place.ragged("a value".into(), list_of(want))),
        (_, None) => column.push(doc, i, place),
    }
}

fn dims_i64(dims: &[usize]) -> Vec<i64> {
    dims.iter()
        .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
        .collect()
}

fn check_shape(name: &str, spec: &InputSpec, got: &[i64]) -> Result<(), RestError> {
    let Some(expected) = &spec.shape else {
        return Ok(());
    };
    let fits =
        expected.len() == got.len() && expected.iter().zip(got).all(|(&e, &g)| e < 0 || e == g);
    if fits {
        return Ok(());
    }
    Err(RestError::Shape {
        input: name.to_owned(),
        expected: expected.clone(),
        got: got.to_vec(),
    })
}

fn quoted<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> String {
    let quoted: Vec<String> = names
        .into_iter()
        .map(|n| format!("{:?}", n.as_ref()))
        .collect();
    if quoted.is_empty() {
        "none".into()
    } else {
        quoted.join(", ")
    }
}

/// For an object naming inputs: the value of each of the signature's inputs, in name order.
fn named_values(
    doc: &Doc,
    object: usize,
    specs: &Specs,
    place: &str,
) -> Result<Vec<usize>, RestError> {
    let names: Vec<&str> = specs.keys().map(String::as_str).collect();
    let mut found: Vec<Option<usize>> = vec![None; names.len()];
    let mut unknown = Vec::new();
    for (key, value) in doc.members(object) {
        let key = doc.string(key).unwrap_or_default();
        match names
            .binary_search(&&*key)
            .ok()
            .and_then(|j| found.get_mut(j))
        {
            Some(slot) if slot.is_some() => {
                return Err(RestError::DuplicateKey {
                    key: key.into_owned(),
                    place: place.to_owned(),
                });
            }
            Some(slot) => *slot = Some(value),
            None => unknown.push(key.into_owned()),
        }
    }
    if !unknown.is_empty() {
        let (names, inputs) = (quoted(&unknown), quoted(&names));
        return Err(RestError::UnknownInputs {
            names,
            place: place.to_owned(),
            inputs,
        });
    }
    let missing: Vec<&str> = names
        .iter()
        .zip(&found)
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !missing.is_empty() {
        let (names, inputs) = (quoted(missing), quoted(&names));
        return Err(RestError::MissingInputs {
            names,
            place: place.to_owned(),
            inputs,
        });
    }
    Ok(found.into_iter().flatten().collect())
}

fn need_named(place: &'static str, specs: &Specs, fix: &'static str) -> RestError {
    RestError::NeedNamedInputs {
        place,
        count: specs.len(),
        inputs: quoted(specs.keys()),
        fix,
    }
}

/// One input being stacked from instances.
struct Stack<'a> {
    name: &'a str,
    spec: &'a InputSpec,
    first: Option<Vec<usize>>,
    column: Column,
}

impl Stack<'_> {
    fn add(
        &mut self,
        doc: &Doc,
        value: usize,
        index: usize,
        rows: usize,
        named: bool,
    ) -> Result<(), RestError> {
        let shape = nested_shape(doc, value);
        match &self.first {
            None => {
                let full: Vec<usize> = std::iter::once(rows).chain(shape.iter().copied()).collect();
                check_shape(self.name, self.spec, &dims_i64(&full))?;
                self.column = Column::new(self.spec.dtype, element_count(&full), doc.text.len());
                self.first = Some(shape.clone());
            }
            Some(first) if *first != shape => {
                let (input, shape, first) =
                    (self.name.to_owned(), dims_i64(&shape), dims_i64(first));
                return Err(RestError::InstanceShape {
                    input,
                    index,
                    shape,
                    first,
                });
            }
            Some(_) => {}
        }
        let mut place = Place {
            input: self.name,
            instance: Some(index),
            named,
            idx: Vec::new(),
        };
        fill(doc, value, &shape, &mut self.column, &mut place)
    }

    fn finish(self, rows: usize) -> Result<(String, Tensor), RestError> {
        let dims: Vec<usize> = std::iter::once(rows)
            .chain(self.first.unwrap_or_default())
            .collect();
        Ok((self.name.to_owned(), self.column.finish(dims_i64(&dims))?))
    }
}

fn element_count(dims: &[usize]) -> usize {
    dims.iter().fold(1usize, |n, &d| n.saturating_mul(d))
}

/// Row format: each instance gives every input one row; rows stack along a new dim 0.
pub(super) fn row_tensors(
    doc: &Doc,
    list: usize,
    specs: &Specs,
) -> Result<NamedTensors, RestError> {
    let rows = doc.list_len(list).ok_or(RestError::InstancesNotList)?;
    let named = doc
        .elements(list)
        .next()
        .is_some_and(|first| doc.is_named_object(first));
    if !named && specs.len() != 1 {
        return Err(need_named(
            "\"instances\"",
            specs,
            "make each instance an object naming every input",
        ));
    }
    let mut stacks: Vec<Stack> = specs
        .iter()
        .map(|(name, spec)| Stack {
            name,
            spec,
            first: None,
            column: Column::new(spec.dtype, 0, 0),
        })
        .collect();
    for (index, instance) in doc.elements(list).enumerate() {
        if doc.is_named_object(instance) != named {
            let (object, plain) = ("an object naming inputs", "a value or list");
            let (found, first) = if named {
                (plain, object)
            } else {
                (object, plain)
            };
            return Err(RestError::MixedInstances {
                index,
                found,
                first,
            });
        }
        if named {
            let values = named_values(doc, instance, specs, &format!("instances[{index}]"))?;
            for (stack, value) in stacks.iter_mut().zip(values) {
                stack.add(doc, value, index, rows, true)?;
            }
        } else if let Some(stack) = stacks.first_mut() {
            stack.add(doc, instance, index, rows, false)?;
        }
    }
    stacks.into_iter().map(|stack| stack.finish(rows)).collect()
}

/// Columnar format: whole tensors, one per input, shaped by their nesting.
pub(super) fn columnar_tensors(
    doc: &Doc,
    value: usize,
    specs: &Specs,
) -> Result<NamedTensors, RestError> {
    if doc.is_named_object(value) {
        let values = named_values(doc, value, specs, "\"inputs\"")?;
        return specs
            .iter()
            .zip(values)
            .map(|((name, spec), v)| whole_tensor(doc, v, name, spec, true))
            .collect();
    }
    match specs.iter().next() {
        Some((name, spec)) if specs.len() == 1 => {
            Ok(vec![whole_tensor(doc, value, name, spec, false)?])
        }
        _ => Err(need_named(
            "\"inputs\"",
            specs,
            "send an object naming every input",
        )),
    }
}

fn whole_tensor(
    doc: &Doc,
    value: usize,
    name: &str,
    spec: &InputSpec,
    named: bool,
) -> Result<(String, Tensor), RestError> {
    let shape = nested_shape(doc, value);
    let dims = dims_i64(&shape);
    check_shape(name, spec, &dims)?;
    let mut column = Column::new(spec.dtype, element_count(&shape), doc.text.len());
    fill(
        doc,
        value,
        &shape,
        &mut column,
        &mut Place {
            input: name,
            instance: None,
            named,
            idx: Vec::new(),
        },
    )?;
    Ok((name.to_owned(), column.finish(dims)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// binary16 encoding of known values, including rounding ties, subnormals and overflow.
    #[test]
    fn f16_known_values() {
        let cases: &[(f64, u16)] = &[
            (1.0, 0x3C00),
            (-2.0, 0xC000),
            (0.0, 0x0000),
            (-0.0, 0x8000),
            (65504.0, 0x7BFF),
            (65519.0, 0x7BFF), // just under the midpoint to 65536
            (65520.0, 0x7C00), // the midpoint rounds to even: infinity
            (0.1, 0x2E66),
            (1.0 / 3.0, 0x3555),
            (2049.0, 0x6800),         // tie between 2048 and 2050: even mantissa
            (2051.0, 0x6802),         // tie between 2050 and 2052: even mantissa
            (6.103515625e-5, 0x0400), // smallest normal
            (5.960464477539063e-8, 0x0001), // smallest subnormal, 2^-24
            (2.9802322387695312e-8, 0x0000), // 2^-25: a tie, to even zero
            (8.940696716308594e-8, 0x0002), // 1.5 × 2^-24: a tie, to even 2
            (6.097555160522461e-5, 0x03FF), // largest subnormal
            (1e-30, 0x0000),
            (f64::INFINITY, 0x7C00),
            (f64::NEG_INFINITY, 0xFC00),
        ];
        for &(v, bits) in cases {
            assert_eq!(f16_bits(v), bits, "{v}");
        }
        assert_eq!(f16_bits(f64::NAN) & 0x7E00, 0x7E00);
    }

    /// bfloat16 rounds the f32 bits to nearest, ties to even.
    #[test]
    fn bf16_known_values() {
        assert_eq!(bf16_bits(1.0), 0x3F80);
        assert_eq!(bf16_bits(-2.0), 0xC000);
        assert_eq!(bf16_bits(std::f32::consts::PI), 0x4049);
        assert_eq!(bf16_bits(f32::from_bits(0x3F80_8000)), 0x3F80); // tie, even stays
        assert_eq!(bf16_bits(f32::from_bits(0x3F81_8000)), 0x3F82); // tie, odd rounds up
        assert_eq!(bf16_bits(f32::from_bits(0x3F80_8001)), 0x3F81);
        assert_eq!(bf16_bits(f32::INFINITY), 0x7F80);
        assert_eq!(bf16_bits(f32::NAN) & 0x7FC0, 0x7FC0);
    }

    /// The tape keeps numbers as text, resolves string escapes (surrogate pairs included) and
    /// records each container's extent.
    #[test]
    fn tape_shape() {
        let doc =
            Doc::parse(br#" {"a\/b": [1, -2.5e3, "\u00e9\ud83d\ude00\n"], "c": {}} "#).unwrap();
        assert_eq!(doc.tok(0), Tok::Object { len: 2, end: 8 });
        assert_eq!(doc.string(1).as_deref(), Some("a/b"));
        assert_eq!(doc.tok(2), Tok::Array { len: 3, end: 6 });
        assert!(matches!(doc.tok(3), Tok::Num { int: true, .. }));
        assert_eq!(doc.describe(4), "-2.5e3");
        assert_eq!(doc.string(5).as_deref(), Some("é😀\n"));
        assert_eq!(doc.members(0).collect::<Vec<_>>(), vec![(1, 2), (6, 7)]);
        assert_eq!(doc.elements(2).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(doc.tok(7), Tok::Object { len: 0, end: 8 });
    }

    /// Only the non-finite spellings rapidjson accepts are numbers; near misses are syntax errors.
    #[test]
    fn non_finite_spellings() {
        let doc = Doc::parse(b"[NaN, -NaN, Inf, -Inf, Infinity, -Infinity]").unwrap();
        let names: Vec<String> = doc.elements(0).map(|i| doc.describe(i)).collect();
        assert_eq!(
            names,
            [
                "NaN",
                "NaN",
                "Infinity",
                "-Infinity",
                "Infinity",
                "-Infinity"
            ]
        );
        for bad in [
            "[nan]",
            "[Infin]",
            "[+Infinity]",
            "[NaNa]",
            "[-]",
            "[01]",
            "[1.]",
            "[1e]",
        ] {
            assert!(
                matches!(Doc::parse(bad.as_bytes()), Err(RestError::Syntax { .. })),
                "{bad}"
            );
        }
    }
}
