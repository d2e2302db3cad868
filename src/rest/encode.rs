//! Response side: renders output tensors as TF Serving does, `{"predictions": ...}` for row
//! requests and `{"outputs": ...}` for columnar ones, writing straight into the response bytes
//! (no JSON tree in between).
//!
//! Floats print as the shortest text that reads back to the same value (f16 and bf16 through
//! f32), non-finite ones as `NaN` / `Infinity` / `-Infinity`. String outputs named `*_bytes`, and
//! any string element that is not UTF-8, render as `{"b64": ...}`. With several outputs, keys
//! come in name order.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serializer as _;

use super::{Format, RestError};
use crate::tensor::half::{bf16_to_f32, f16_to_f32};
use crate::tensor::{DType, NamedTensors, Tensor, TensorError};

/// A shape like `[1_000_000_000, 0]` holds no elements yet renders as a billion `[]`: past this
/// many empty lists the output is refused rather than written.
const MAX_EMPTY_LISTS: usize = 1 << 20;

/// TensorFlow's own limit on dimensions; it also bounds the recursion that writes nested lists.
const MAX_RANK: usize = 254;

/// Renders outputs as TF Serving does: Row -> {"predictions": ...}, Columnar -> {"outputs": ...}.
///
/// Row with one output gives that output's value per row; with several, one object per row
/// (all outputs must then share dim 0). Columnar gives the whole tensor, or an object of them.
pub fn render_outputs(format: Format, outputs: &NamedTensors) -> Result<Vec<u8>, RestError> {
    let mut views = outputs
        .iter()
        .map(|(name, tensor)| View::new(name, tensor))
        .collect::<Result<Vec<_>, _>>()?;
    views.sort_by(|a, b| a.name.cmp(b.name));
    if let Some(name) = views.windows(2).find_map(|w| match w {
        [a, b] if a.name == b.name => Some(a.name),
        _ => None,
    }) {
        return Err(RestError::DuplicateOutput {
            name: name.to_owned(),
        });
    }
    if views.is_empty() {
        return Err(RestError::NoOutputs);
    }
    let guess = outputs
        .iter()
        .map(|(_, t)| t.byte_size().saturating_mul(3))
        .fold(64, usize::saturating_add);
    let mut out = Vec::with_capacity(guess.min(1 << 30));
    match format {
        Format::Row => write_rows(&mut out, &views)?,
        Format::Columnar => write_columns(&mut out, &views)?,
    }
    Ok(out)
}

fn write_rows(out: &mut Vec<u8>, views: &[View]) -> Result<(), RestError> {
    let mut rows: Option<(&str, usize)> = None;
    for view in views {
        let Some(&n) = view.dims.first() else {
            return Err(RestError::ScalarRow {
                name: view.name.to_owned(),
            });
        };
        match rows {
            Some((first, first_rows)) if first_rows != n => {
                let (first, other) = (first.to_owned(), view.name.to_owned());
                return Err(RestError::RowMismatch {
                    first,
                    first_rows,
                    other,
                    other_rows: n,
                });
            }
            _ => rows = Some((view.name, n)),
        }
    }
    out.extend_from_slice(b"{\"predictions\":[");
    for row in 0..rows.map_or(0, |(_, n)| n) {
        if row > 0 {
            out.push(b',');
        }
        match views {
            [only] => only.write_row(out, row)?,
            _ => {
                out.push(b'{');
                for (k, view) in views.iter().enumerate() {
                    write_key(out, k, view.name);
                    view.write_row(out, row)?;
                }
                out.push(b'}');
            }
        }
    }
    out.extend_from_slice(b"]}");
    Ok(())
}

fn write_columns(out: &mut Vec<u8>, views: &[View]) -> Result<(), RestError> {
    out.extend_from_slice(b"{\"outputs\":");
    match views {
        [only] => only.write_nested(out, &only.dims, 0)?,
        _ => {
            out.push(b'{');
            for (k, view) in views.iter().enumerate() {
                write_key(out, k, view.name);
                view.write_nested(out, &view.dims, 0)?;
            }
            out.push(b'}');
        }
    }
    out.push(b'}');
    Ok(())
}

/// `"name":`, after a comma unless it is the first key.
fn write_key(out: &mut Vec<u8>, k: usize, name: &str) {
    if k > 0 {
        out.push(b',');
    }
    write_str(out, name);
    out.push(b':');
}

/// One output, its shape checked for rendering.
struct View<'t> {
    name: &'t str,
    tensor: &'t Tensor,
    dims: Vec<usize>,
    /// TF Serving's convention: string outputs named `*_bytes` are binary.
    as_b64: bool,
}

impl<'t> View<'t> {
    fn new(name: &'t str, tensor: &'t Tensor) -> Result<Self, RestError> {
        let shape = tensor.shape();
        let dims = shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| TensorError::NegativeDim {
                shape: shape.to_vec(),
            })?;
        // Lists written before the first zero dimension, each empty or holding only empties.
        let empty_lists = match dims.iter().position(|&d| d == 0) {
            Some(zero) => dims
                .iter()
                .take(zero)
                .try_fold(1usize, |n, &d| n.checked_mul(d)),
            None => Some(0),
        };
        let unrenderable = |reason| RestError::Unrenderable {
            name: name.to_owned(),
            shape: shape.to_vec(),
            reason,
        };
        if dims.len() > MAX_RANK {
            return Err(unrenderable("more than 254 dimensions"));
        }
        if empty_lists.is_none_or(|n| n > MAX_EMPTY_LISTS) {
            return Err(unrenderable("over a million empty lists"));
        }
        let as_b64 = tensor.dtype() == DType::Str && name.ends_with("_bytes");
        Ok(View {
            name,
            tensor,
            dims,
            as_b64,
        })
    }

    /// Row `row` of dim 0: a nested list of the remaining dims, or a bare value at rank 1.
    fn write_row(&self, out: &mut Vec<u8>, row: usize) -> Result<(), RestError> {
        let inner = self.dims.get(1..).unwrap_or_default();
        self.write_nested(out, inner, row.saturating_mul(element_count(inner)))
    }

    /// The value of shape `dims` whose first element is element `start` of the tensor.
    fn write_nested(
        &self,
        out: &mut Vec<u8>,
        dims: &[usize],
        start: usize,
    ) -> Result<(), RestError> {
        match dims {
            [] => self.write_run(out, start, 1),
            [n] => {
                out.push(b'[');
                self.write_run(out, start, *n)?;
                out.push(b']');
                Ok(())
            }
            [n, inner @ ..] => {
                let stride = element_count(inner);
                out.push(b'[');
                for k in 0..*n {
                    if k > 0 {
                        out.push(b',');
                    }
                    self.write_nested(out, inner, start.saturating_add(k.saturating_mul(stride)))?;
                }
                out.push(b']');
                Ok(())
            }
        }
    }

    /// Elements `start..start + count`, comma-separated.
    fn write_run(&self, out: &mut Vec<u8>, start: usize, count: usize) -> Result<(), RestError> {
        let data = self.tensor.data().as_ref();
        macro_rules! run {
            ($n:literal, $write:expr) => {{
                let elements = data.as_chunks::<$n>().0;
                let run = elements
                    .get(start..start.saturating_add(count))
                    .ok_or_else(|| self.short())?;
                list(out, run, $write)
            }};
        }
        match self.tensor.dtype() {
            DType::F32 => run!(4, |out, e| write_f32(out, f32::from_le_bytes(*e))),
            DType::F64 => run!(8, |out, e| write_f64(out, f64::from_le_bytes(*e))),
            DType::F16 => run!(2, |out, e| write_f32(
                out,
                f16_to_f32(u16::from_le_bytes(*e))
            )),
            DType::BF16 => run!(2, |out, e| write_f32(
                out,
                bf16_to_f32(u16::from_le_bytes(*e))
            )),
            DType::I8 => run!(1, |out, e| write_int(out, i8::from_le_bytes(*e))),
            DType::I16 => run!(2, |out, e| write_int(out, i16::from_le_bytes(*e))),
            DType::I32 => run!(4, |out, e| write_int(out, i32::from_le_bytes(*e))),
            DType::I64 => run!(8, |out, e| write_int(out, i64::from_le_bytes(*e))),
            DType::U8 => run!(1, |out, e| write_int(out, u8::from_le_bytes(*e))),
            DType::U16 => run!(2, |out, e| write_int(out, u16::from_le_bytes(*e))),
            DType::U32 => run!(4, |out, e| write_int(out, u32::from_le_bytes(*e))),
            DType::U64 => run!(8, |out, e| write_int(out, u64::from_le_bytes(*e))),
            DType::Bool => run!(1, |out, &[b]: &[u8; 1]| out.extend_from_slice(if b != 0 {
                b"true"
            } else {
                b"false"
            })),
            DType::Str => {
                let strings = self.tensor.strings();
                let run = strings
                    .get(start..start.saturating_add(count))
                    .ok_or_else(|| self.short())?;
                list(out, run, |out, s| write_bytes(out, s, self.as_b64));
            }
        }
        Ok(())
    }

    /// The tensor holds fewer elements than its shape (which `Tensor` never allows).
    fn short(&self) -> RestError {
        let t = self.tensor;
        let given = match t.dtype().size() {
            Some(size) => t.data().len() / size,
            None => t.strings().len(),
        };
        let expected = element_count(&self.dims);
        RestError::Tensor(TensorError::ElementCount {
            dtype: t.dtype(),
            shape: t.shape().to_vec(),
            expected,
            given,
        })
    }
}

fn element_count(dims: &[usize]) -> usize {
    dims.iter().fold(1usize, |n, &d| n.saturating_mul(d))
}

fn list<T>(out: &mut Vec<u8>, items: &[T], mut write: impl FnMut(&mut Vec<u8>, &T)) {
    for (k, item) in items.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        write(out, item);
    }
}

// serde_json's number and string writers (ryu, itoa, JSON escaping) into a Vec cannot fail.

fn write_f32(out: &mut Vec<u8>, v: f32) {
    if v.is_finite() {
        let _ = serde_json::Serializer::new(out).serialize_f32(v);
    } else {
        write_non_finite(out, v.into());
    }
}

fn write_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        let _ = serde_json::Serializer::new(out).serialize_f64(v);
    } else {
        write_non_finite(out, v);
    }
}

fn write_non_finite(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(match v {
        f64::INFINITY => b"Infinity",
        f64::NEG_INFINITY => b"-Infinity",
        _ => b"NaN",
    });
}

fn write_int<T: serde::Serialize>(out: &mut Vec<u8>, v: T) {
    let _ = v.serialize(&mut serde_json::Serializer::new(out));
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::Serializer::new(out).serialize_str(s);
}

/// A string element: JSON text when it is UTF-8 and not marked binary, else `{"b64": ...}`.
fn write_bytes(out: &mut Vec<u8>, bytes: &[u8], as_b64: bool) {
    match std::str::from_utf8(bytes) {
        Ok(s) if !as_b64 => write_str(out, s),
        _ => {
            out.extend_from_slice(b"{\"b64\":\"");
            let at = out.len();
            out.resize(at + base64::encoded_len(bytes.len(), true).unwrap_or(0), 0);
            if let Some(tail) = out.get_mut(at..) {
                let _ = STANDARD.encode_slice(bytes, tail);
            }
            out.extend_from_slice(b"\"}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rest::{InputSpec, parse_predict_body};
    use bytes::Bytes;

    fn render(format: Format, outputs: Vec<(&str, Tensor)>) -> Result<String, RestError> {
        let named: NamedTensors = outputs
            .into_iter()
            .map(|(n, t)| (n.to_owned(), t))
            .collect();
        render_outputs(format, &named).map(|b| String::from_utf8(b).expect("UTF-8 output"))
    }

    fn f32s(shape: &[i64], v: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), v).unwrap()
    }

    fn strs(shape: &[i64], v: &[&[u8]]) -> Tensor {
        Tensor::from_strings(
            shape.to_vec(),
            v.iter().map(|s| Bytes::copy_from_slice(s)).collect(),
        )
        .unwrap()
    }

    /// The doc's half_plus_three answer: one output, one value per row; whole floats keep `.0`.
    #[test]
    fn row_single_output() {
        let out = render(Format::Row, vec![("y", f32s(&[3], &[2.5, 3.0, 4.5]))]).unwrap();
        assert_eq!(out, r#"{"predictions":[2.5,3.0,4.5]}"#);
        let out = render(
            Format::Row,
            vec![("y", f32s(&[2, 1, 2], &[1.0, 2.0, 3.0, 4.0]))],
        )
        .unwrap();
        assert_eq!(out, r#"{"predictions":[[[1.0,2.0]],[[3.0,4.0]]]}"#);
    }

    /// Several outputs give one object per row, keys in name order whatever the input order.
    #[test]
    fn row_several_outputs() {
        let classes = Tensor::from_i64(vec![2], &[3, 7]).unwrap();
        let scores = f32s(&[2, 2], &[0.25, 0.75, 0.5, 0.5]);
        let out = render(Format::Row, vec![("scores", scores), ("classes", classes)]).unwrap();
        assert_eq!(
            out,
            r#"{"predictions":[{"classes":3,"scores":[0.25,0.75]},{"classes":7,"scores":[0.5,0.5]}]}"#
        );
    }

    /// Row rendering needs every output to share dim 0, and none to be a scalar; both errors
    /// point to the columnar format.
    #[test]
    fn row_rendering_errors() {
        let e = render(
            Format::Row,
            vec![
                ("a", f32s(&[2], &[1.0, 2.0])),
                ("b", f32s(&[3], &[1.0, 2.0, 3.0])),
            ],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"outputs "a" (2 rows) and "b" (3 rows) differ in dim 0, so they cannot be split into "predictions" rows; send the request in the columnar format ("inputs") to get them as "outputs""#
        );
        let e = render(Format::Row, vec![("s", f32s(&[], &[1.0]))]).unwrap_err();
        assert!(
            matches!(e, RestError::ScalarRow { ref name } if name == "s"),
            "{e}"
        );
        assert_eq!(
            render(Format::Row, vec![]).unwrap_err(),
            RestError::NoOutputs
        );
        let twice = render(
            Format::Row,
            vec![("a", f32s(&[1], &[1.0])), ("a", f32s(&[1], &[1.0]))],
        );
        assert!(matches!(twice, Err(RestError::DuplicateOutput { .. })));
    }

    /// Columnar: one output is the bare value (a scalar too), several an object by name.
    #[test]
    fn columnar_outputs() {
        assert_eq!(
            render(Format::Columnar, vec![("y", f32s(&[], &[1.5]))]).unwrap(),
            r#"{"outputs":1.5}"#
        );
        let a = Tensor::from_i64(vec![1], &[i64::MIN]).unwrap();
        let flags = Tensor::from_bytes(DType::Bool, vec![2], Bytes::from_static(&[1, 0])).unwrap();
        let big = Tensor::from_bytes(
            DType::U64,
            vec![1],
            Bytes::copy_from_slice(&u64::MAX.to_le_bytes()),
        )
        .unwrap();
        let out = render(
            Format::Columnar,
            vec![("z", big), ("a", a), ("flags", flags)],
        )
        .unwrap();
        assert_eq!(
            out,
            r#"{"outputs":{"a":[-9223372036854775808],"flags":[true,false],"z":[18446744073709551615]}}"#
        );
        let out = render(Format::Columnar, vec![("e", f32s(&[2, 0], &[]))]).unwrap();
        assert_eq!(out, r#"{"outputs":[[],[]]}"#);
        assert_eq!(
            render(Format::Row, vec![("e", f32s(&[0, 3], &[]))]).unwrap(),
            r#"{"predictions":[]}"#
        );
    }

    /// `*_bytes` string outputs render as b64; other strings as JSON text when UTF-8 (escaped),
    /// else as b64.
    #[test]
    fn string_outputs() {
        let out = render(
            Format::Row,
            vec![("image_bytes", strs(&[2], &[b"image bytes", b"ok"]))],
        )
        .unwrap();
        assert_eq!(
            out,
            r#"{"predictions":[{"b64":"aW1hZ2UgYnl0ZXM="},{"b64":"b2s="}]}"#
        );
        let out = render(
            Format::Columnar,
            vec![(
                "label",
                strs(&[3], &[b"caf\xc3\xa9 \"q\"\n", b"\xff\xfe", b""]),
            )],
        )
        .unwrap();
        assert_eq!(out, r#"{"outputs":["café \"q\"\n",{"b64":"//4="},""]}"#);
    }

    /// Non-finite floats render as TF Serving's tokens, and our own reader takes them back.
    #[test]
    fn non_finite_outputs() {
        let t = f32s(&[3], &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
        assert_eq!(
            render(Format::Columnar, vec![("y", t)]).unwrap(),
            r#"{"outputs":[NaN,Infinity,-Infinity]}"#
        );
        let t = Tensor::from_bytes(
            DType::F64,
            vec![1],
            Bytes::copy_from_slice(&f64::NEG_INFINITY.to_le_bytes()),
        )
        .unwrap();
        assert_eq!(
            render(Format::Columnar, vec![("y", t)]).unwrap(),
            r#"{"outputs":[-Infinity]}"#
        );
    }

    /// f16 and bf16 outputs render through f32, exactly.
    #[test]
    fn half_outputs() {
        let h = [0x3C00u16, 0xC000, 0x7BFF, 0x0001, 0x7C00]
            .map(u16::to_le_bytes)
            .concat();
        let h = Tensor::from_bytes(DType::F16, vec![5], h.into()).unwrap();
        assert_eq!(
            render(Format::Columnar, vec![("h", h)]).unwrap(),
            r#"{"outputs":[1.0,-2.0,65504.0,5.9604645e-8,Infinity]}"#
        );
        let b = Tensor::from_bytes(
            DType::BF16,
            vec![2],
            [0x3F80u16, 0x4049].map(u16::to_le_bytes).concat().into(),
        )
        .unwrap();
        assert_eq!(
            render(Format::Columnar, vec![("b", b)]).unwrap(),
            r#"{"outputs":[1.0,3.140625]}"#
        );
        for bits in (0..=u16::MAX).step_by(7) {
            let back = crate::tensor::half::f16_bits(f16_to_f32(bits).into());
            assert!(back == bits || f16_to_f32(bits).is_nan(), "{bits:#06x}");
        }
    }

    /// Every f32 output reads back as the same f32, across the whole range of bit patterns.
    #[test]
    fn f32_outputs_round_trip() {
        let mut values: Vec<f32> = (0..=u32::MAX)
            .step_by(40_009)
            .map(f32::from_bits)
            .filter(|v| v.is_finite())
            .collect();
        values.extend([
            0.1,
            1.0 / 3.0,
            f32::MIN_POSITIVE,
            f32::MAX,
            f32::MIN,
            1e-45,
            16777217.0,
            1435774380.0,
        ]);
        let t = f32s(&[values.len() as i64], &values);
        let out = render_outputs(Format::Columnar, &vec![("y".into(), t)]).unwrap();
        let body = [
            b"{\"inputs\":".as_slice(),
            out.strip_prefix(b"{\"outputs\":").unwrap(),
        ]
        .concat();
        let spec = [(
            "y".to_owned(),
            InputSpec {
                dtype: DType::F32,
                shape: None,
            },
        )]
        .into_iter()
        .collect();
        let back = parse_predict_body(&body)
            .unwrap()
            .into_tensors(&spec)
            .unwrap();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back[0].1.to_f32().unwrap()), bits(&values));
    }

    /// Shapes that would render as a flood of empty lists, or nest past TensorFlow's rank
    /// limit, are refused instead of written out.
    #[test]
    fn unrenderable_shapes_are_refused() {
        let t = Tensor::from_bytes(DType::F32, vec![1 << 40, 0], Bytes::new()).unwrap();
        let e = render(Format::Columnar, vec![("y", t)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "output \"y\" has shape [1099511627776, 0], which cannot be rendered as JSON: over a million empty lists"
        );
        let deep = Tensor::from_f32(vec![1; 10_000], &[1.0]).unwrap();
        let e = render(Format::Columnar, vec![("y", deep)]).unwrap_err();
        assert!(e.to_string().ends_with("more than 254 dimensions"), "{e}");
    }
}
