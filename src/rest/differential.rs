//! The differential test of the gateway's JSON reader against serde_json: generated documents
//! (every spelling JSON allows, some of TF Serving's extensions), byte-mangled copies of them,
//! and the `rest_json` fuzz target's committed seeds and regressions.

use std::path::Path;

use super::json_to_value;

/// A small xorshift generator: the test is the same on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

/// What one document did to the two readers.
#[derive(Debug, PartialEq, Eq, Hash)]
enum Outcome {
    BothRead,
    BothRefused,
    /// Only the gateway read it, through an extension or its nesting limit.
    OnlyOurs,
}

/// Reads `body` with both readers and panics where they disagree: a document both read must
/// give the same value; one serde_json reads, the gateway must read; one only the gateway
/// reads must use a documented extension (`NaN`, `Infinity`, a UTF-8 byte-order mark) or
/// nest 128 deep, one level past serde_json's recursion limit (127) and within the
/// gateway's (128).
fn compare(body: &[u8]) -> Outcome {
    let ours = json_to_value(body);
    let theirs = serde_json::from_slice::<serde_json::Value>(body);
    let text = String::from_utf8_lossy(body);
    match (ours, theirs) {
        (Ok(ours), Ok(theirs)) => {
            assert_eq!(ours, theirs, "the readers disagree on {text:?}");
            Outcome::BothRead
        }
        (Err(e), Ok(_)) => panic!("serde_json reads {text:?}, the gateway's reader refuses: {e}"),
        (Ok(_), Err(e)) => {
            let extension = body.starts_with(b"\xEF\xBB\xBF")
                || text.contains("NaN")
                || text.contains("Inf")
                || e.to_string().starts_with("recursion limit exceeded");
            assert!(
                extension,
                "the gateway reads {text:?}, which serde_json refuses ({e}) and which uses no extension"
            );
            Outcome::OnlyOurs
        }
        (Err(_), Err(_)) => Outcome::BothRefused,
    }
}

const SPACE: &[&str] = &["", "", "", " ", "\n", "\t", "\r\n  "];

const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "7",
    "-12",
    "1.5",
    "-0.0",
    "0.1",
    "1e5",
    "1E+5",
    "2e-3",
    "1.25E-2",
    "3.141592653589793238462643383279",
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-9223372036854775809",
    "123456789012345678901234567890",
    "1e308",
    "2.5e-324",
    "1e400",
    "-1e-400",
];

const STRING_PIECES: &[&str] = &[
    "a",
    "instances",
    "b64",
    " ",
    "é",
    "😀",
    "\\n",
    "\\t",
    "\\\"",
    "\\\\",
    "\\/",
    "\\b",
    "\\f",
    "\\r",
    "\\u0041",
    "\\u00e9",
    "\\u00E9",
    "\\ud83d\\ude00",
    "\\uD83D\\uDE00",
    "\\u0000",
    "\\u001f",
    "\u{7f}",
];

/// Pieces no reader may accept inside a string, used now and then.
const BAD_STRING_PIECES: &[&str] = &[
    "\\ud800",
    "\\udc00",
    "\\x",
    "\\u12",
    "\u{1}",
    "\t",
    "\\ud800\\u0041",
];

const EXTENSIONS: &[&str] = &["NaN", "-NaN", "Infinity", "-Infinity", "Inf", "-Inf"];

/// A string; with `odd`, one in eight holds a piece no reader may accept.
fn string(rng: &mut Rng, odd: bool, out: &mut String) {
    let bad = odd && rng.below(8) == 0;
    out.push('"');
    for _ in 0..rng.below(4) {
        out.push_str(rng.pick(STRING_PIECES));
    }
    if bad {
        out.push_str(rng.pick(BAD_STRING_PIECES));
    }
    out.push('"');
}

/// One random value as text; `odd` allows invalid strings and extension tokens.
fn value(rng: &mut Rng, depth: usize, odd: bool, out: &mut String) {
    out.push_str(rng.pick(SPACE));
    let leaf = depth == 0 || rng.below(3) == 0;
    match rng.below(if leaf { 6 } else { 8 }) {
        0 | 1 => out.push_str(rng.pick(NUMBERS)),
        2 => string(rng, odd, out),
        3 => out.push_str(rng.pick(&["true", "false", "null"])),
        4 if odd && rng.below(4) == 0 => out.push_str(rng.pick(EXTENSIONS)),
        4 | 5 => out.push_str(rng.pick(NUMBERS)),
        6 => {
            out.push('[');
            for k in 0..rng.below(4) {
                if k > 0 {
                    out.push(',');
                }
                value(rng, depth - 1, odd, out);
            }
            out.push_str(rng.pick(SPACE));
            out.push(']');
        }
        _ => {
            out.push('{');
            for k in 0..rng.below(4) {
                if k > 0 {
                    out.push(',');
                }
                out.push_str(rng.pick(SPACE));
                // Few distinct keys, so objects often repeat one (both readers keep the last).
                if rng.below(2) == 0 {
                    out.push_str(rng.pick(&["\"a\"", "\"b\"", "\"\\u0061\""]));
                } else {
                    string(rng, odd, out);
                }
                out.push_str(rng.pick(SPACE));
                out.push(':');
                value(rng, depth - 1, odd, out);
            }
            out.push_str(rng.pick(SPACE));
            out.push('}');
        }
    }
    out.push_str(rng.pick(SPACE));
}

/// Mangles a document the way a fuzzer would: a changed byte, a cut, an inserted token.
fn mangle(rng: &mut Rng, body: &mut Vec<u8>) {
    const TOKENS: &[u8] = b"[]{}\",:-+.0123456789eE\\u \n\x00\xff\xc3";
    for _ in 0..=rng.below(3) {
        let at = rng.below(body.len() + 1);
        match rng.below(6) {
            0 | 1 if at < body.len() => body[at] = TOKENS[rng.below(TOKENS.len())],
            2 if at < body.len() => {
                body.remove(at);
            }
            3 => body.truncate(at),
            _ => body.insert(at, TOKENS[rng.below(TOKENS.len())]),
        }
    }
}

/// Generated documents, strict and with extensions, and mangled copies of each: the readers
/// agree on all of them, and each kind of outcome happens often enough to have been tested.
#[test]
fn json_reader_agrees_with_serde_json_on_generated_documents() {
    let mut rng = Rng(0x0DDB_1A5E_5BAD_5EED);
    let mut seen = std::collections::HashMap::new();
    for round in 0..40_000 {
        let mut text = String::new();
        value(&mut rng, 4, round % 4 == 0, &mut text);
        let mut body = text.into_bytes();
        if round % 10 == 0 {
            body.splice(0..0, *b"\xEF\xBB\xBF");
        }
        *seen.entry(compare(&body)).or_insert(0) += 1;
        mangle(&mut rng, &mut body);
        *seen.entry(compare(&body)).or_insert(0) += 1;
    }
    for outcome in [Outcome::BothRead, Outcome::BothRefused, Outcome::OnlyOurs] {
        let n = seen.get(&outcome).copied().unwrap_or(0);
        assert!(n > 1_000, "only {n} documents ended {outcome:?}: {seen:?}");
    }
}

/// Nesting: both read 127 levels; at 128 only the gateway does (its limit is one level
/// higher); at 129 both refuse. Objects count like lists.
#[test]
fn json_readers_nesting_limits() {
    let nested = |depth: usize, open: &str, close: &str| {
        format!("{}0{}", open.repeat(depth), close.repeat(depth)).into_bytes()
    };
    for (open, close) in [("[", "]"), ("{\"k\":", "}")] {
        assert_eq!(compare(&nested(127, open, close)), Outcome::BothRead);
        assert_eq!(compare(&nested(128, open, close)), Outcome::OnlyOurs);
        assert_eq!(compare(&nested(129, open, close)), Outcome::BothRefused);
    }
}

/// Every committed seed and regression of the `rest_json` fuzz target (real request bodies
/// and what the fuzzer found from them), as is and mangled.
#[test]
fn json_reader_agrees_with_serde_json_on_the_fuzz_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut rng = Rng(0x5EED_C0DE_F00D_CAFE);
    let mut files = 0;
    for dir in ["seeds/rest_json", "regressions/rest_json"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries {
            let body = std::fs::read(entry.expect("a corpus entry").path()).expect("a seed");
            compare(&body);
            for _ in 0..20 {
                let mut copy = body.clone();
                mangle(&mut rng, &mut copy);
                compare(&copy);
            }
            files += 1;
        }
    }
    assert!(files >= 20, "only {files} seeds under {}", root.display());
}
