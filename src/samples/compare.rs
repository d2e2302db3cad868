//! Expected against got, as readable differences: tensors (names, dtype, shape, then the first
//! differing elements by index), responses (status, headers) and JSON bodies (the path of
//! each difference). Floats compare
//! within a [`Tolerance`]; everything else exactly. An empty list means they match.

use serde_json::Value;

use super::files::{ExpectedBody, ExpectedResponse, Tolerance};
use crate::tensor::{DType, NamedTensors, Tensor, half};

/// Differing elements listed per tensor, and differences listed per JSON body; more would
/// bury the first one, which is usually the one to fix.
const SHOWN: usize = 5;

/// Differences between expected and got named tensors; `role` is "input" or "output".
pub fn tensors(
    role: &str,
    expected: &NamedTensors,
    got: &NamedTensors,
    tol: Tolerance,
) -> Vec<String> {
    let mut diffs = Vec::new();
    for (name, want) in expected {
        match got.iter().find(|(n, _)| n == name) {
            None => diffs.push(format!(
                "{role} `{name}`: expected, but the plugin did not return it"
            )),
            // The headline names the tensor; the element lines under it are indented.
            Some((_, have)) => {
                diffs.extend(tensor(want, have, tol).into_iter().map(
                    |d| match d.starts_with(' ') {
                        true => d,
                        false => format!("{role} `{name}`: {d}"),
                    },
                ));
            }
        }
    }
    for (name, have) in got {
        if !expected.iter().any(|(n, _)| n == name) {
            diffs.push(format!(
                "{role} `{name}`: returned ({} {:?}) but not expected",
                have.dtype(),
                have.shape()
            ));
        }
    }
    diffs
}

/// Elements decoded for comparison: floats widened to f64, integers to i128.
enum Elements {
    Float(Vec<f64>),
    Int(Vec<i128>),
    Bytes(Vec<Vec<u8>>),
}

fn elements(t: &Tensor) -> Elements {
    use DType::*;
    let d = t.data();
    fn each<const N: usize, T>(d: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        d.chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunk of N bytes")))
            .collect()
    }
    match t.dtype() {
        F16 => Elements::Float(each(d, |b| {
            f64::from(half::f16_to_f32(u16::from_le_bytes(b)))
        })),
        BF16 => Elements::Float(each(d, |b| {
            f64::from(half::bf16_to_f32(u16::from_le_bytes(b)))
        })),
        F32 => Elements::Float(each(d, |b| f64::from(f32::from_le_bytes(b)))),
        F64 => Elements::Float(each(d, f64::from_le_bytes)),
        I8 => Elements::Int(each(d, |b| i8::from_le_bytes(b).into())),
        I16 => Elements::Int(each(d, |b| i16::from_le_bytes(b).into())),
        I32 => Elements::Int(each(d, |b| i32::from_le_bytes(b).into())),
        I64 => Elements::Int(each(d, |b| i64::from_le_bytes(b).into())),
        U8 | Bool => Elements::Int(each(d, |b: [u8; 1]| b[0].into())),
        U16 => Elements::Int(each(d, |b| u16::from_le_bytes(b).into())),
        U32 => Elements::Int(each(d, |b| u32::from_le_bytes(b).into())),
        U64 => Elements::Int(each(d, |b| u64::from_le_bytes(b).into())),
        Str => Elements::Bytes(t.strings().iter().map(|s| s.to_vec()).collect()),
    }
}

/// Whether `got` is within tolerance of `want`.
pub fn close(want: f64, got: f64, tol: Tolerance) -> bool {
    if want.is_nan() || got.is_nan() {
        return want.is_nan() && got.is_nan();
    }
    if want.is_infinite() || got.is_infinite() {
        return want == got;
    }
    (got - want).abs() <= tol.abs + tol.rel * want.abs()
}

/// Differences between two tensors: dtype, shape, then elements.
pub fn tensor(want: &Tensor, have: &Tensor, tol: Tolerance) -> Vec<String> {
    if want.dtype() != have.dtype() {
        return vec![format!(
            "dtype: expected {}, got {}",
            want.dtype(),
            have.dtype()
        )];
    }
    if want.shape() != have.shape() {
        return vec![format!(
            "shape: expected {:?}, got {:?}",
            want.shape(),
            have.shape()
        )];
    }
    let shape = want.shape();
    let dtype = want.dtype();
    // (flat index, expected, got, |difference| for floats)
    let mut differ: Vec<(usize, String, String, f64)> = Vec::new();
    let mut count = 0usize;
    let mut record = |i: usize, w: String, g: String, delta: f64| {
        count += 1;
        if differ.len() < SHOWN {
            differ.push((i, w, g, delta));
        }
    };
    let mut worst: Option<(usize, f64)> = None;
    match (elements(want), elements(have)) {
        (Elements::Float(w), Elements::Float(g)) => {
            for (i, (&w, &g)) in w.iter().zip(&g).enumerate() {
                if !close(w, g, tol) {
                    let delta = (g - w).abs();
                    if worst.is_none_or(|(_, d)| delta > d || delta.is_nan()) {
                        worst = Some((i, delta));
                    }
                    record(i, float_text(dtype, w), float_text(dtype, g), delta);
                }
            }
        }
        (Elements::Int(w), Elements::Int(g)) => {
            for (i, (w, g)) in w.iter().zip(&g).enumerate() {
                if w != g {
                    let (w, g) = match dtype {
                        DType::Bool => ((*w != 0).to_string(), (*g != 0).to_string()),
                        _ => (w.to_string(), g.to_string()),
                    };
                    record(i, w, g, f64::NAN);
                }
            }
        }
        (Elements::Bytes(w), Elements::Bytes(g)) => {
            for (i, (w, g)) in w.iter().zip(&g).enumerate() {
                if w != g {
                    record(i, bytes_text(w), bytes_text(g), f64::NAN);
                }
            }
        }
        _ => unreachable!("same dtype, same element kind"),
    }
    if count == 0 {
        return Vec::new();
    }
    let mut head = format!("{count} of {} element(s) differ", want.len());
    if dtype_is_float(dtype) {
        head += &format!(
            " (tolerance: abs {:e} + rel {:e} × |expected|)",
            tol.abs, tol.rel
        );
        if let Some((i, delta)) = worst {
            head += &format!(
                "; largest |difference| {} at {}",
                float_text(dtype, delta),
                index(shape, i)
            );
        }
    }
    let mut out = vec![head];
    for (i, w, g, _) in differ {
        out.push(format!("  at {}: expected {w}, got {g}", index(shape, i)));
    }
    if count > SHOWN {
        out.push(format!("  … and {} more", count - SHOWN));
    }
    out
}

fn dtype_is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
}

/// A float as its own dtype prints it: f32 values as the shortest f32 text, not widened.
fn float_text(dtype: DType, v: f64) -> String {
    match dtype {
        DType::F64 => format!("{v}"),
        _ => format!("{}", v as f32),
    }
}

fn bytes_text(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => format!("{:?}", truncate(s)),
        Err(_) => format!("{} bytes (not UTF-8)", b.len()),
    }
}

/// The multi-index of flat element `i` in a row-major `shape`, e.g. `[0, 3, 4, 0]`.
fn index(shape: &[i64], mut i: usize) -> String {
    let mut dims = vec![0usize; shape.len()];
    for (slot, &d) in dims.iter_mut().zip(shape).rev() {
        let d = (d as usize).max(1);
        *slot = i % d;
        i /= d;
    }
    format!("{dims:?}")
}

fn truncate(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

/// Differences between two JSON values, each as `<path>: <what>`, at most [`SHOWN`] plus a
/// count of the rest. Numbers compare as numbers (`1` equals `1.0`), within the tolerance.
pub fn json(want: &Value, have: &Value, tol: Tolerance) -> Vec<String> {
    let mut diffs = Vec::new();
    walk(want, have, tol, "$", &mut diffs);
    if diffs.len() > SHOWN {
        let more = diffs.len() - SHOWN;
        diffs.truncate(SHOWN);
        diffs.push(format!("… and {more} more"));
    }
    diffs
}

fn walk(want: &Value, have: &Value, tol: Tolerance, path: &str, diffs: &mut Vec<String>) {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => {
            for (key, wv) in w {
                let at = format!("{path}.{key}");
                match h.get(key) {
                    Some(hv) => walk(wv, hv, tol, &at, diffs),
                    None => diffs.push(format!("{at}: missing (expected {})", text(wv))),
                }
            }
            for (key, hv) in h.iter().filter(|(k, _)| !w.contains_key(*k)) {
                diffs.push(format!("{path}.{key}: not expected (got {})", text(hv)));
            }
        }
        (Value::Array(w), Value::Array(h)) => {
            if w.len() != h.len() {
                diffs.push(format!(
                    "{path}: expected {} item(s), got {}",
                    w.len(),
                    h.len()
                ));
            }
            for (i, (wv, hv)) in w.iter().zip(h).enumerate() {
                walk(wv, hv, tol, &format!("{path}[{i}]"), diffs);
            }
        }
        (Value::Number(w), Value::Number(h)) => {
            let equal = match (w.as_i64(), h.as_i64(), w.as_u64(), h.as_u64()) {
                (Some(a), Some(b), _, _) => a == b,
                (_, _, Some(a), Some(b)) => a == b,
                _ => close(
                    w.as_f64().unwrap_or(f64::NAN),
                    h.as_f64().unwrap_or(f64::NAN),
                    tol,
                ),
            };
            if !equal {
                diffs.push(format!("{path}: expected {w}, got {h}"));
            }
        }
        (w, h) if w == h => {}
        (w, h) => diffs.push(format!("{path}: expected {}, got {}", text(w), text(h))),
    }
}

fn text(v: &Value) -> String {
    truncate(&v.to_string())
}

/// The response a client got, from a post plugin, the REST renderer or an error.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: bytes::Bytes,
}

/// Differences between `response.json` and the response the client got.
pub fn response(expected: &ExpectedResponse, got: &Answer, tol: Tolerance) -> Vec<String> {
    let mut diffs = Vec::new();
    if expected.status != got.status {
        diffs.push(format!(
            "status: expected {}, got {}",
            expected.status, got.status
        ));
    }
    for (name, want) in &expected.headers {
        match got
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            None => diffs.push(format!("header `{name}`: missing (expected {want:?})")),
            Some((_, have)) if have != want => {
                diffs.push(format!("header `{name}`: expected {want:?}, got {have:?}"));
            }
            Some(_) => {}
        }
    }
    match &expected.body {
        ExpectedBody::Any => {}
        ExpectedBody::Text(want) => {
            let have = String::from_utf8_lossy(&got.body);
            if *want != have {
                diffs.push(format!("body: expected {want:?}, got {have:?}"));
            }
        }
        ExpectedBody::Json(want) => match serde_json::from_slice(&got.body) {
            Ok(have) => diffs.extend(
                json(want, &have, tol)
                    .into_iter()
                    .map(|d| format!("body {d}")),
            ),
            Err(e) => diffs.push(format!(
                "body: expected JSON, got {:?} ({e})",
                String::from_utf8_lossy(&got.body)
            )),
        },
    }
    diffs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tol() -> Tolerance {
        Tolerance::default()
    }

    /// A float within tolerance passes; one outside is shown with its index and both values.
    #[test]
    fn float_tensors_show_the_first_differences_by_index() {
        let want = Tensor::from_f32(vec![1, 2, 2], &[0.5, 0.25, 1.0, 2.0]).unwrap();
        let near = Tensor::from_f32(vec![1, 2, 2], &[0.500001, 0.25, 1.0, 2.0]).unwrap();
        assert!(tensor(&want, &near, tol()).is_empty());
        let off = Tensor::from_f32(vec![1, 2, 2], &[0.5, 0.25, 1.5, 2.0]).unwrap();
        let diff = tensor(&want, &off, tol());
        assert!(diff[0].starts_with("1 of 4 element(s) differ"), "{diff:?}");
        assert!(diff[0].contains("at [0, 1, 0]"), "{diff:?}");
        assert_eq!(diff[1], "  at [0, 1, 0]: expected 1, got 1.5");
    }

    /// Dtype and shape are checked before any element.
    #[test]
    fn dtype_and_shape_come_first() {
        let a = Tensor::from_f32(vec![2], &[1.0, 2.0]).unwrap();
        let b = Tensor::from_i64(vec![2], &[1, 2]).unwrap();
        let c = Tensor::from_f32(vec![1, 2], &[1.0, 2.0]).unwrap();
        assert_eq!(tensor(&a, &b, tol()), ["dtype: expected f32, got i64"]);
        assert_eq!(tensor(&a, &c, tol()), ["shape: expected [2], got [1, 2]"]);
    }

    /// NaN matches NaN; infinities match only themselves.
    #[test]
    fn special_floats() {
        assert!(close(f64::NAN, f64::NAN, tol()));
        assert!(!close(1.0, f64::NAN, tol()));
        assert!(close(f64::INFINITY, f64::INFINITY, tol()));
        assert!(!close(f64::INFINITY, 1e308, tol()));
    }

    /// JSON differences carry their path; numbers compare as numbers, within tolerance.
    #[test]
    fn json_differences_name_their_path() {
        let want = json!({"model": "digits", "predictions": [{"label": "7", "score": 0.9}]});
        let near = json!({"model": "digits", "predictions": [{"label": "7", "score": 0.9000001}]});
        assert!(json(&want, &near, tol()).is_empty());
        assert!(json(&json!({"n": 1}), &json!({"n": 1.0}), tol()).is_empty());
        let off = json!({"model": "digits", "predictions": [{"label": "1", "score": 0.9}], "x": 1});
        assert_eq!(
            json(&want, &off, tol()),
            [
                "$.predictions[0].label: expected \"7\", got \"1\"",
                "$.x: not expected (got 1)"
            ]
        );
    }
}
