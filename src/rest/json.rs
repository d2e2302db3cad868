//! A JSON reader for request bodies. It records the document on a flat tape rather than a
//! tree: one token per value, each list or object holding its length and where it ends. The
//! whole body costs one allocation instead of one per list, and numbers stay text until the
//! signature says what they are, so an f32 input rounds once (`1435774380` → `1435774336`)
//! and a u64 keeps all 64 bits. The reader also takes TF Serving's `NaN`, `Infinity` and
//! `-Infinity` (and rapidjson's `Inf`, `-NaN`), which strict JSON refuses.

use std::borrow::Cow;

use super::RestError;

/// Deeper nesting is refused: no tensor needs it, and it bounds the recursion that walks a value.
const MAX_DEPTH: usize = 128;

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
    pub(super) text: String,
    pub(super) tape: Vec<Tok>,
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
    pub(super) fn skip(&self, i: usize) -> usize {
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
    pub(super) fn elements(&self, i: usize) -> impl Iterator<Item = usize> + Clone + '_ {
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
    pub(super) fn b64(&self, i: usize) -> Option<Cow<'_, str>> {
        let Tok::Object { len: 1, .. } = self.tok(i) else {
            return None;
        };
        (self.string(i + 1)? == "b64")
            .then(|| self.string(i + 2))
            .flatten()
    }

    /// An object that names inputs, as opposed to a value (which a b64 object is).
    pub(super) fn is_named_object(&self, i: usize) -> bool {
        self.is_object(i) && self.b64(i).is_none()
    }

    /// The value at `i` as a `serde_json::Value`: the reader's view of the document, for
    /// the differential test against serde_json and the fuzz target. Non-finite numbers,
    /// which `Value` can't hold, read as null; a number serde_json can't represent (`1e400`)
    /// is an error, as it is for serde_json.
    pub(super) fn to_value(&self, i: usize) -> Result<serde_json::Value, String> {
        use serde_json::Value;
        Ok(match self.tok(i) {
            Tok::Null | Tok::NonFinite(_) => Value::Null,
            Tok::Bool(b) => Value::Bool(b),
            Tok::Num { start, end, .. } => {
                let text = self.text.get(start..end).unwrap_or_default();
                serde_json::from_str(text).map_err(|e| format!("number {text}: {e}"))?
            }
            Tok::Str { .. } => Value::String(self.string(i).unwrap_or_default().into_owned()),
            Tok::Array { .. } => Value::Array(
                self.elements(i)
                    .map(|e| self.to_value(e))
                    .collect::<Result<_, _>>()?,
            ),
            Tok::Object { .. } => {
                let mut map = serde_json::Map::new();
                for (key, value) in self.members(i) {
                    let key = self.string(key).unwrap_or_default().into_owned();
                    map.insert(key, self.to_value(value)?);
                }
                Value::Object(map)
            }
        })
    }

    /// A value as the client wrote it, shortened, for error messages.
    pub(super) fn describe(&self, i: usize) -> String {
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

pub(super) fn shorten(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((cut, _)) => format!("{}...", s.get(..cut).unwrap_or_default()),
        None => s.to_owned(),
    }
}

pub(super) fn non_finite_name(v: f64) -> &'static str {
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
                self.pos += 12;
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
