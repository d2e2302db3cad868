//! TensorFlow Serving's REST JSON for `:predict`, so a model without plugins is a drop-in front
//! for TF Serving: a body in row (`"instances"`) or columnar (`"inputs"`) format becomes named
//! tensors typed by the signature, and outputs render as `"predictions"` or `"outputs"`.
//!
//! Behaviour follows `tensorflow_serving/util/json_tensor.cc`: `{"b64": ...}` carries binary
//! strings both ways, string outputs named `*_bytes` always render as `{"b64": ...}`, and the
//! non-standard tokens `NaN`, `Infinity` and `-Infinity` are read and written.
//!
//! - `json`: the JSON reader (a flat tape that keeps numbers as written, so each converts
//!   once, straight to the signature's dtype); `decode`: the assembly of rows / columns into
//!   tensors.
//! - `plain`: a one-pass shortcut for the common body (one input, nested lists of numbers)
//!   that gives exactly what the full reader would, and hands it everything else.
//! - `number`: decimal text to `f32` / `f64`, rounded as `str::parse` rounds.
//! - `encode`: writes output tensors straight into the response bytes.
//! - `differential` (tests only): the reader against serde_json.
//!
//! Every [`RestError`] maps to HTTP 400, as TF Serving answers these conditions with
//! `INVALID_ARGUMENT`.

mod decode;
#[cfg(test)]
mod differential;
mod encode;
mod json;
mod number;
mod plain;

use std::collections::BTreeMap;

use crate::tensor::{DType, NamedTensors, TensorError};

pub use encode::render_outputs;

/// What a signature says about one input, used to type JSON values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputSpec {
    pub dtype: DType,
    /// `None`: unknown rank. A negative dimension (TF's `-1`) matches any size.
    pub shape: Option<Vec<i64>>,
}

/// How a request laid out its tensors, which decides how the response lays out its outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `"instances"`: one entry per row, stacked along a new dim 0; answered with `"predictions"`.
    Row,
    /// `"inputs"`: whole tensors; answered with `"outputs"`.
    Columnar,
}

/// A well-formed predict body whose values are not typed yet: typing needs the signature, and
/// which signature is known only once `signature_name` has been read from this body.
#[derive(Debug)]
pub struct PredictBody {
    pub signature_name: Option<String>,
    pub format: Format,
    payload: Payload,
}

/// The `"instances"` or `"inputs"` value, as one of the two readers left it.
#[derive(Debug)]
enum Payload {
    /// The full reader's tape, and the value's index on it.
    Tape { doc: json::Doc, at: usize },
    /// Nested lists of numbers, read in one pass; `text` is the body (ASCII, no byte-order
    /// mark), which the full reader reads again if typing needs it.
    Plain { text: String, plain: plain::Plain },
}

/// Why a predict body could not become tensors, or outputs could not become JSON. Each message
/// says what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RestError {
    #[error("malformed JSON at line {line}, column {column}: {problem}")]
    Syntax {
        line: usize,
        column: usize,
        problem: &'static str,
    },
    #[error(
        "the request body must be a JSON object, like {{\"instances\": [...]}} or {{\"inputs\": ...}}"
    )]
    NotAnObject,
    #[error(
        "unknown key {key:?} in the request body; it takes \"signature_name\" and one of \"instances\" or \"inputs\""
    )]
    UnknownKey { key: String },
    #[error("key {key:?} appears more than once in {place}; give it once")]
    DuplicateKey { key: String, place: String },
    #[error("\"signature_name\" must be a string")]
    SignatureName,
    #[error(
        "the request body has {found}; send exactly one: \"instances\" (a list of rows) or \"inputs\" (whole tensors)"
    )]
    PayloadKey { found: &'static str },
    #[error("\"instances\" must be a list with one entry per row")]
    InstancesNotList,
    #[error("\"instances\" is empty; send at least one instance")]
    NoInstances,
    #[error(
        "{place} holds a plain value or list, but the signature has {count} inputs ({inputs}); {fix}"
    )]
    NeedNamedInputs {
        place: &'static str,
        count: usize,
        inputs: String,
        fix: &'static str,
    },
    #[error(
        "instances[{index}] is {found} but instances[0] is {first}; write every instance the same way"
    )]
    MixedInstances {
        index: usize,
        found: &'static str,
        first: &'static str,
    },
    #[error("unknown input {names} in {place}; the signature's inputs are {inputs}")]
    UnknownInputs {
        names: String,
        place: String,
        inputs: String,
    },
    #[error("missing input {names} in {place}; the signature's inputs are {inputs}")]
    MissingInputs {
        names: String,
        place: String,
        inputs: String,
    },
    #[error(
        "input {input:?}: instances[{index}] has shape {shape:?} but instances[0] has shape {first:?}; every instance must give an input the same shape"
    )]
    InstanceShape {
        input: String,
        index: usize,
        shape: Vec<i64>,
        first: Vec<i64>,
    },
    #[error(
        "input {input:?} is a ragged nested list: {at} is {found} but {first} is {expected}; lists at the same depth must have the same length"
    )]
    Ragged {
        input: String,
        at: String,
        found: String,
        first: String,
        expected: String,
    },
    #[error("input {input:?} expects shape {expected:?} but got {got:?}")]
    Shape {
        input: String,
        expected: Vec<i64>,
        got: Vec<i64>,
    },
    #[error("{at}: expected {dtype} but got {found}")]
    Type {
        at: String,
        dtype: DType,
        found: String,
    },
    #[error("{at}: {value} is out of range for {dtype}")]
    OutOfRange {
        at: String,
        value: String,
        dtype: DType,
    },
    #[error(
        "{at}: invalid base64 in {{\"b64\": ...}} ({reason}); use the standard alphabet (A-Z, a-z, 0-9, '+', '/')"
    )]
    Base64 { at: String, reason: String },
    #[error("the model returned no outputs to render")]
    NoOutputs,
    #[error("output {name:?} appears more than once")]
    DuplicateOutput { name: String },
    #[error(
        "output {name:?} is a scalar, so it has no rows to put in \"predictions\"; send the request in the columnar format (\"inputs\") to get it as \"outputs\""
    )]
    ScalarRow { name: String },
    #[error(
        "outputs {first:?} ({first_rows} rows) and {other:?} ({other_rows} rows) differ in dim 0, so they cannot be split into \"predictions\" rows; send the request in the columnar format (\"inputs\") to get them as \"outputs\""
    )]
    RowMismatch {
        first: String,
        first_rows: usize,
        other: String,
        other_rows: usize,
    },
    #[error("output {name:?} has shape {shape:?}, which cannot be rendered as JSON: {reason}")]
    Unrenderable {
        name: String,
        shape: Vec<i64>,
        reason: &'static str,
    },
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// The gateway's JSON reader's view of `body` as a `serde_json::Value` (non-finite numbers
/// as null): what the differential test holds against serde_json, and a fuzz target runs.
pub fn json_to_value(body: &[u8]) -> Result<serde_json::Value, String> {
    let doc = json::Doc::parse(body).map_err(|e| e.to_string())?;
    doc.to_value(0)
}

/// Reads a `:predict` body: JSON syntax, the top-level keys, `signature_name`, and exactly one of
/// `"instances"` (a non-empty list) or `"inputs"`. Values are typed later, by
/// [`PredictBody::into_tensors`]. A body of nested number lists takes the one-pass reader;
/// the result is the same as [`parse_predict_body_full`]'s.
pub fn parse_predict_body(body: &[u8]) -> Result<PredictBody, RestError> {
    let unmarked = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if let Some(mut plain) = plain::read(unmarked)
        && let Ok(text) = String::from_utf8(unmarked.to_vec())
    {
        return Ok(PredictBody {
            signature_name: plain.signature_name.take(),
            format: plain.format,
            payload: Payload::Plain { text, plain },
        });
    }
    parse_predict_body_full(body)
}

/// [`parse_predict_body`] by the full reader alone: the reference the one-pass reader is
/// held to (the differential tests and the `rest_json` fuzz target compare the two).
pub fn parse_predict_body_full(body: &[u8]) -> Result<PredictBody, RestError> {
    let doc = json::Doc::parse(body)?;
    const ROOT: usize = 0;
    if !doc.is_object(ROOT) {
        return Err(RestError::NotAnObject);
    }
    let (mut signature, mut instances, mut inputs) = (None, None, None);
    for (key, value) in doc.members(ROOT) {
        let key = doc.string(key).unwrap_or_default();
        let slot = match &*key {
            "signature_name" => &mut signature,
            "instances" => &mut instances,
            "inputs" => &mut inputs,
            _ => {
                return Err(RestError::UnknownKey {
                    key: key.into_owned(),
                });
            }
        };
        if slot.replace(value).is_some() {
            return Err(RestError::DuplicateKey {
                key: key.into_owned(),
                place: "the request body".into(),
            });
        }
    }
    let signature_name = match signature {
        None => None,
        Some(at) => Some(doc.string(at).ok_or(RestError::SignatureName)?.into_owned()),
    };
    let (format, payload) = match (instances, inputs) {
        (Some(list), None) => {
            match doc.list_len(list) {
                None => return Err(RestError::InstancesNotList),
                Some(0) => return Err(RestError::NoInstances),
                Some(_) => {}
            }
            (Format::Row, list)
        }
        (None, Some(value)) => (Format::Columnar, value),
        (Some(_), Some(_)) => {
            return Err(RestError::PayloadKey {
                found: "both \"instances\" and \"inputs\"",
            });
        }
        (None, None) => {
            return Err(RestError::PayloadKey {
                found: "neither \"instances\" nor \"inputs\"",
            });
        }
    };
    Ok(PredictBody {
        signature_name,
        format,
        payload: Payload::Tape { doc, at: payload },
    })
}

impl PredictBody {
    /// Converts the payload to named tensors typed by the signature's inputs (name -> spec),
    /// in name order. Every input must be given; names the signature lacks are refused.
    pub fn into_tensors(
        self,
        inputs: &BTreeMap<String, InputSpec>,
    ) -> Result<NamedTensors, RestError> {
        match (self.payload, self.format) {
            (Payload::Tape { doc, at }, Format::Row) => decode::row_tensors(&doc, at, inputs),
            (Payload::Tape { doc, at }, Format::Columnar) => {
                decode::columnar_tensors(&doc, at, inputs)
            }
            (Payload::Plain { text, plain }, _) => {
                match decode::plain_tensors(&text, &plain, inputs) {
                    Some(tensors) => Ok(tensors),
                    // The full reader decides, and names what is wrong and where.
                    None => parse_predict_body_full(text.as_bytes())?.into_tensors(inputs),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;
    use bytes::Bytes;

    fn spec(dtype: DType, shape: Option<&[i64]>) -> InputSpec {
        InputSpec {
            dtype,
            shape: shape.map(<[i64]>::to_vec),
        }
    }

    fn sig(inputs: &[(&str, InputSpec)]) -> BTreeMap<String, InputSpec> {
        inputs
            .iter()
            .map(|(n, s)| (n.to_string(), s.clone()))
            .collect()
    }

    fn decode(body: &str, inputs: &BTreeMap<String, InputSpec>) -> Result<NamedTensors, RestError> {
        parse_predict_body(body.as_bytes())?.into_tensors(inputs)
    }

    fn err(body: &str, inputs: &BTreeMap<String, InputSpec>) -> String {
        decode(body, inputs)
            .expect_err("the body should be refused")
            .to_string()
    }

    fn one_f32() -> BTreeMap<String, InputSpec> {
        sig(&[("x", spec(DType::F32, None))])
    }

    fn strings(values: &[&str]) -> Vec<Bytes> {
        values
            .iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    /// The doc's single-input row examples: three scalar strings, then two [1, 2] tensors.
    #[test]
    fn doc_single_input_instances() {
        let words = decode(
            r#"{"instances": ["foo", "bar", "baz"]}"#,
            &sig(&[("w", spec(DType::Str, None))]),
        )
        .unwrap();
        assert_eq!(
            words,
            vec![(
                "w".into(),
                Tensor::from_strings(vec![3], strings(&["foo", "bar", "baz"])).unwrap()
            )]
        );

        let body = parse_predict_body(br#"{"instances": [ [[1, 2]], [[3, 4]] ]}"#).unwrap();
        assert_eq!(
            (body.format, body.signature_name.clone()),
            (Format::Row, None)
        );
        let x = body.into_tensors(&one_f32()).unwrap();
        assert_eq!(
            x,
            vec![(
                "x".into(),
                Tensor::from_f32(vec![2, 1, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap()
            )]
        );
    }

    fn tag_signal_sensor() -> BTreeMap<String, InputSpec> {
        sig(&[
            ("tag", spec(DType::Str, Some(&[-1]))),
            ("signal", spec(DType::I64, Some(&[-1, 5]))),
            ("sensor", spec(DType::F32, Some(&[-1, 2, 2]))),
        ])
    }

    fn tag_signal_sensor_tensors() -> NamedTensors {
        vec![
            (
                "sensor".into(),
                Tensor::from_f32(vec![2, 2, 2], &[1.0, 2.0, 3.0, 4.0, 4.0, 5.0, 6.0, 8.0]).unwrap(),
            ),
            (
                "signal".into(),
                Tensor::from_i64(vec![2, 5], &[1, 2, 3, 4, 5, 3, 4, 1, 2, 5]).unwrap(),
            ),
            (
                "tag".into(),
                Tensor::from_strings(vec![2], strings(&["foo", "bar"])).unwrap(),
            ),
        ]
    }

    /// The doc's multi-input row example stacks each named input along a new dim 0.
    #[test]
    fn doc_multi_input_instances() {
        let body = r#"{"signature_name": "serving_default", "instances": [
            {"tag": "foo", "signal": [1, 2, 3, 4, 5], "sensor": [[1, 2], [3, 4]]},
            {"tag": "bar", "signal": [3, 4, 1, 2, 5], "sensor": [[4, 5], [6, 8]]}]}"#;
        let parsed = parse_predict_body(body.as_bytes()).unwrap();
        assert_eq!(parsed.signature_name.as_deref(), Some("serving_default"));
        assert_eq!(
            parsed.into_tensors(&tag_signal_sensor()).unwrap(),
            tag_signal_sensor_tensors()
        );
    }

    /// The doc's columnar form of the same request gives the same tensors.
    #[test]
    fn doc_columnar_inputs() {
        let body = r#"{"inputs": {"tag": ["foo", "bar"], "signal": [[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]],
            "sensor": [[[1, 2], [3, 4]], [[4, 5], [6, 8]]]}}"#;
        let parsed = parse_predict_body(body.as_bytes()).unwrap();
        assert_eq!(parsed.format, Format::Columnar);
        assert_eq!(
            parsed.into_tensors(&tag_signal_sensor()).unwrap(),
            tag_signal_sensor_tensors()
        );
    }

    /// Columnar inputs may differ in dim 0, a bare value is a scalar, and a single input may be
    /// given without its name.
    #[test]
    fn columnar_shapes_come_from_nesting() {
        let two = sig(&[("a", spec(DType::I32, None)), ("b", spec(DType::F64, None))]);
        let t = decode(r#"{"inputs": {"a": [1, 2, 3], "b": 2.5}}"#, &two).unwrap();
        assert_eq!(t[0].1.shape(), &[3]);
        assert_eq!(t[1].1.shape(), &[] as &[i64]);
        assert_eq!(t[1].1.data().as_ref(), 2.5f64.to_le_bytes());
        let plain = decode(r#"{"inputs": [[1], [2]]}"#, &one_f32()).unwrap();
        assert_eq!(plain[0].1.shape(), &[2, 1]);
        let empty = decode(r#"{"inputs": [[], []]}"#, &one_f32()).unwrap();
        assert_eq!(empty[0].1.shape(), &[2, 0]);
    }

    /// A single-input instance may also be an object naming the input.
    #[test]
    fn single_input_instance_may_name_the_input() {
        let t = decode(
            r#"{"instances": [{"x": [1, 2]}, {"x": [3, 4]}]}"#,
            &one_f32(),
        )
        .unwrap();
        assert_eq!(
            t,
            vec![(
                "x".into(),
                Tensor::from_f32(vec![2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap()
            )]
        );
    }

    /// `{"b64": ...}` decodes to bytes (JSON escapes such as `\/` included) and JSON strings to
    /// their UTF-8 bytes.
    #[test]
    fn b64_values_decode_to_bytes() {
        let image = sig(&[("image_bytes", spec(DType::Str, None))]);
        let body =
            r#"{"instances": [{"b64": "aW1hZ2UgYnl0ZXM="}, {"b64": "\/\/8="}, "caf\u00e9"]}"#;
        let t = decode(body, &image).unwrap();
        let expected = vec![
            Bytes::from_static(b"image bytes"),
            Bytes::from_static(b"\xff\xff"),
            Bytes::from("café"),
        ];
        assert_eq!(t[0].1.strings(), expected.as_slice());
    }

    /// Invalid base64 is refused with where it was; a b64 object cannot feed a number.
    #[test]
    fn b64_errors() {
        let s = sig(&[("s", spec(DType::Str, None))]);
        let e = err(r#"{"inputs": {"s": [{"b64": "a-b_"}]}}"#, &s);
        assert!(
            e.starts_with(r#"inputs["s"][0]: invalid base64 in {"b64": ...} ("#),
            "{e}"
        );
        let e = err(r#"{"instances": [{"b64": "AAAA"}]}"#, &one_f32());
        assert_eq!(
            e,
            r#"input "x" at instances[0]: expected f32 but got a {"b64": ...} object (binary data goes only to string inputs)"#
        );
    }

    /// TF Serving's `NaN`, `Infinity` and `-Infinity` tokens are numbers outside strings and
    /// plain text inside them.
    #[test]
    fn non_finite_tokens() {
        let t = decode(
            r#"{"instances": [NaN, Infinity, -Infinity, -NaN, 1]}"#,
            &one_f32(),
        )
        .unwrap();
        let v = t[0].1.to_f32().unwrap();
        assert!(v[0].is_nan() && v[3].is_nan());
        assert_eq!(&v[1..3], &[f32::INFINITY, f32::NEG_INFINITY]);
        let s = sig(&[("NaN", spec(DType::Str, None))]);
        let t = decode(
            r#"{"inputs": {"NaN": ["NaN", "-Infinity", "\"Infinity\""]}}"#,
            &s,
        )
        .unwrap();
        assert_eq!(
            t[0].1.strings(),
            strings(&["NaN", "-Infinity", "\"Infinity\""]).as_slice()
        );
        let e = err(
            r#"{"inputs": [NaN]}"#,
            &sig(&[("n", spec(DType::I32, None))]),
        );
        assert_eq!(e, r#"input "n" at inputs[0]: expected i32 but got NaN"#);
    }

    /// Numbers for an f32 input round once, straight to f32, as TF Serving's doc describes.
    #[test]
    fn f32_inputs_round_through_f32() {
        let t = decode(r#"{"inputs": [1435774380, 0.1, 1e-50]}"#, &one_f32()).unwrap();
        assert_eq!(t[0].1.to_f32().unwrap(), vec![1435774336.0, 0.1f32, 0.0]);
        assert_eq!(
            err(r#"{"inputs": [1e39]}"#, &one_f32()),
            r#"input "x" at inputs[0]: 1e39 is out of range for f32"#
        );
    }

    /// Integers reach every integer dtype exactly, and values outside a dtype's range or with a
    /// fraction are refused, naming the value and the dtype.
    #[test]
    fn integer_inputs() {
        let u = sig(&[("u", spec(DType::U64, None))]);
        let t = decode(r#"{"inputs": [18446744073709551615, 0, -0]}"#, &u).unwrap();
        assert_eq!(t[0].1.data().get(..8), Some(&u64::MAX.to_le_bytes()[..]));
        let i = sig(&[("i", spec(DType::I64, None))]);
        assert_eq!(
            decode(r#"{"inputs": [-9223372036854775808]}"#, &i).unwrap()[0]
                .1
                .to_i64(),
            Some(vec![i64::MIN])
        );
        let b = sig(&[("b", spec(DType::U8, None))]);
        assert_eq!(
            err(r#"{"instances": [1, 300]}"#, &b),
            r#"input "b" at instances[1]: 300 is out of range for u8"#
        );
        let c = sig(&[("c", spec(DType::I8, None))]);
        assert_eq!(
            err(r#"{"inputs": {"c": [[-129]]}}"#, &c),
            r#"inputs["c"][0][0]: -129 is out of range for i8"#
        );
        let n = sig(&[("n", spec(DType::I32, None))]);
        assert_eq!(
            err(r#"{"inputs": [1.5]}"#, &n),
            r#"input "n" at inputs[0]: expected i32 but got 1.5 (i32 takes whole numbers written without a fraction or exponent)"#
        );
    }

    /// Booleans take only `true` and `false`, as TF Serving does; strings never become numbers.
    #[test]
    fn bool_and_string_types() {
        let b = sig(&[("b", spec(DType::Bool, None))]);
        assert_eq!(
            decode(r#"{"inputs": [true, false]}"#, &b).unwrap()[0]
                .1
                .data()
                .as_ref(),
            &[1, 0]
        );
        assert_eq!(
            err(r#"{"inputs": [1]}"#, &b),
            r#"input "b" at inputs[0]: expected bool but got 1"#
        );
        assert_eq!(
            err(r#"{"inputs": ["1.5"]}"#, &one_f32()),
            r#"input "x" at inputs[0]: expected f32 but got the string "1.5""#
        );
        assert_eq!(
            err(r#"{"inputs": [null]}"#, &one_f32()),
            r#"input "x" at inputs[0]: expected f32 but got null"#
        );
    }

    /// Half-precision inputs are encoded as IEEE binary16 / bfloat16 bits.
    #[test]
    fn half_inputs() {
        let h = sig(&[
            ("h", spec(DType::F16, None)),
            ("b", spec(DType::BF16, None)),
        ]);
        let t = decode(
            r#"{"inputs": {"h": [1.0, -2, 65504], "b": [1.0, 3.14159265]}}"#,
            &h,
        )
        .unwrap();
        assert_eq!(
            t[0].1.data().as_ref(),
            [0x3F80u16, 0x4049].map(u16::to_le_bytes).concat()
        );
        assert_eq!(
            t[1].1.data().as_ref(),
            [0x3C00u16, 0xC000, 0x7BFF].map(u16::to_le_bytes).concat()
        );
        assert_eq!(
            err(r#"{"inputs": {"h": [65520], "b": [1]}}"#, &h),
            r#"inputs["h"][0]: 65520 is out of range for f16"#
        );
    }

    /// The envelope: exactly one of instances/inputs, known keys only, a string
    /// signature_name, a non-empty instances list.
    #[test]
    fn envelope_errors() {
        let x = one_f32();
        let one_of =
            "send exactly one: \"instances\" (a list of rows) or \"inputs\" (whole tensors)";
        assert_eq!(
            err(r#"{"instances": [1], "inputs": [1]}"#, &x),
            format!("the request body has both \"instances\" and \"inputs\"; {one_of}")
        );
        assert_eq!(
            err(r#"{"signature_name": "s"}"#, &x),
            format!("the request body has neither \"instances\" nor \"inputs\"; {one_of}")
        );
        assert_eq!(
            err(r#"{"instances": [1], "model": "m"}"#, &x),
            r#"unknown key "model" in the request body; it takes "signature_name" and one of "instances" or "inputs""#
        );
        assert_eq!(
            err(r#"{"instances": [1], "signature_name": 3}"#, &x),
            "\"signature_name\" must be a string"
        );
        assert_eq!(
            err(r#"{"instances": []}"#, &x),
            "\"instances\" is empty; send at least one instance"
        );
        assert_eq!(
            err(r#"{"instances": {"x": 1}}"#, &x),
            "\"instances\" must be a list with one entry per row"
        );
        assert_eq!(
            err(r#"[1]"#, &x),
            r#"the request body must be a JSON object, like {"instances": [...]} or {"inputs": ...}"#
        );
        assert_eq!(
            err(r#"{"inputs": 1, "inputs": 2}"#, &x),
            r#"key "inputs" appears more than once in the request body; give it once"#
        );
    }

    /// Malformed JSON is refused with its line and column.
    #[test]
    fn syntax_errors_have_positions() {
        let x = one_f32();
        assert_eq!(
            err("{\"instances\":\n  [1, 2,]}", &x),
            "malformed JSON at line 2, column 9: expected a value (a number, string, list, object, true, false or null)"
        );
        assert_eq!(
            err("", &x),
            "malformed JSON at line 1, column 1: the body is empty"
        );
        assert_eq!(
            err(r#"{"inputs": [1]} x"#, &x),
            "malformed JSON at line 1, column 17: unexpected text after the JSON value"
        );
        assert_eq!(
            err(r#"{"inputs": ["\ud800"]}"#, &x),
            "malformed JSON at line 1, column 14: a \\u escape holds an unpaired surrogate"
        );
        let deep = format!("{{\"inputs\": {}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(err(&deep, &x).ends_with("lists and objects nest deeper than 128 levels"));
    }

    /// Names the signature lacks are refused with the signature's inputs; missing names are
    /// named, in both formats.
    #[test]
    fn unknown_and_missing_inputs() {
        let two = sig(&[("a", spec(DType::F32, None)), ("b", spec(DType::F32, None))]);
        assert_eq!(
            err(r#"{"instances": [{"a": 1, "b": 2, "c": 3, "d": 4}]}"#, &two),
            r#"unknown input "c", "d" in instances[0]; the signature's inputs are "a", "b""#
        );
        assert_eq!(
            err(r#"{"instances": [{"a": 1, "b": 2}, {"a": 1}]}"#, &two),
            r#"missing input "b" in instances[1]; the signature's inputs are "a", "b""#
        );
        assert_eq!(
            err(r#"{"inputs": {"b": [1]}}"#, &two),
            r#"missing input "a" in "inputs"; the signature's inputs are "a", "b""#
        );
        assert_eq!(
            err(r#"{"inputs": {"z": [1]}}"#, &one_f32()),
            r#"unknown input "z" in "inputs"; the signature's inputs are "x""#
        );
        assert_eq!(
            err(r#"{"instances": [1, 2]}"#, &two),
            r#""instances" holds a plain value or list, but the signature has 2 inputs ("a", "b"); make each instance an object naming every input"#
        );
        assert_eq!(
            err(r#"{"instances": [{"a": 1, "b": 2}, [1, 2]]}"#, &two),
            "instances[1] is a value or list but instances[0] is an object naming inputs; write every instance the same way"
        );
    }

    /// Instances of different shapes are refused with the index and both shapes; ragged lists
    /// name where they break.
    #[test]
    fn shape_errors() {
        let x = one_f32();
        assert_eq!(
            err(r#"{"instances": [[1, 2], [3, 4, 5]]}"#, &x),
            r#"input "x": instances[1] has shape [3] but instances[0] has shape [2]; every instance must give an input the same shape"#
        );
        assert_eq!(
            err(r#"{"inputs": [[1, 2], [3]]}"#, &x),
            r#"input "x" is a ragged nested list: inputs[1] is a list of 1 but inputs[0] is a list of 2; lists at the same depth must have the same length"#
        );
        assert_eq!(
            err(r#"{"instances": [[[1], [2, 3]]]}"#, &x),
            r#"input "x" is a ragged nested list: instances[0][1] is a list of 2 but instances[0][0] is a list of 1; lists at the same depth must have the same length"#
        );
        assert_eq!(
            err(r#"{"inputs": {"x": [[1], 2]}}"#, &x),
            r#"input "x" is a ragged nested list: inputs["x"][1] is a value but inputs["x"][0] is a list of 1; lists at the same depth must have the same length"#
        );
        let image = sig(&[("image", spec(DType::F32, Some(&[-1, 28, 28, 1])))]);
        let row = format!("[{}]", vec!["[0]"; 27].join(","));
        let body = format!(r#"{{"instances": [[{}]]}}"#, vec![row; 27].join(","));
        assert_eq!(
            err(&body, &image),
            r#"input "image" expects shape [-1, 28, 28, 1] but got [1, 27, 27, 1]"#
        );
    }

    /// A tiny xorshift generator, so the fuzz tests below are repeatable.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self, below: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % below.max(1) as u64) as usize
        }
    }

    /// Byte mutations of a valid body never panic; they parse or give an error.
    #[test]
    fn mangled_bodies_never_panic() {
        let base = br#"{"signature_name": "s", "instances": [{"a": [1.5, NaN, -Infinity], "b": {"b64": "AAE="}, "c": "\u00e9\ud83d\ude00"}]}"#;
        let inputs = sig(&[
            ("a", spec(DType::F16, Some(&[-1, 3]))),
            ("b", spec(DType::Str, None)),
            ("c", spec(DType::Str, None)),
        ]);
        assert!(decode(std::str::from_utf8(base).unwrap(), &inputs).is_ok());
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let token = b"[]{}\",:-0eN\\";
        for round in 0..20_000 {
            let mut body = base.to_vec();
            for _ in 0..=round % 3 {
                let at = rng.next(body.len() + 1);
                match rng.next(8) {
                    0..=3 if at < body.len() => body[at] = rng.next(256) as u8,
                    4 => body.truncate(at),
                    _ => body.insert(at, token[rng.next(token.len())]),
                }
            }
            if let Ok(parsed) = parse_predict_body(&body) {
                let _ = parsed.into_tensors(&inputs);
            }
        }
    }

    /// A random JSON value: nested lists (sometimes ragged) of numbers, strings, b64 objects,
    /// booleans, nulls and non-finite tokens.
    fn random_value(rng: &mut Rng, depth: usize, out: &mut String) {
        const LEAVES: &[&str] = &[
            "0",
            "-1",
            "255",
            "256",
            "1.5",
            "-0.0",
            "1e39",
            "65520",
            "18446744073709551616",
            "NaN",
            "-Infinity",
            "true",
            "null",
            "\"s\"",
            "\"\\u00e9\"",
            r#"{"b64": "AAE="}"#,
            r#"{"b64": "*"}"#,
            r#"{"x": 1}"#,
        ];
        if depth == 0 || rng.next(4) == 0 {
            out.push_str(LEAVES[rng.next(LEAVES.len())]);
            return;
        }
        let len = rng.next(4);
        out.push('[');
        for k in 0..len {
            if k > 0 {
                out.push(',');
            }
            random_value(rng, depth - 1, out);
        }
        out.push(']');
    }

    /// Random well-formed bodies in both formats, against several signatures, never panic.
    #[test]
    fn random_values_never_panic() {
        let signatures = [
            sig(&[("x", spec(DType::F16, None))]),
            sig(&[("x", spec(DType::U8, Some(&[-1, 2])))]),
            sig(&[
                ("a", spec(DType::Str, None)),
                ("b", spec(DType::BF16, Some(&[-1]))),
            ]),
            sig(&[
                ("a", spec(DType::I64, None)),
                ("b", spec(DType::Bool, None)),
            ]),
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..5_000 {
            let inputs = &signatures[rng.next(signatures.len())];
            let mut body = String::from(if rng.next(2) == 0 {
                r#"{"instances": "#
            } else {
                r#"{"inputs": "#
            });
            let named = rng.next(3) > 0;
            let rows = 1 + rng.next(3);
            body.push('[');
            for row in 0..rows {
                if row > 0 {
                    body.push(',');
                }
                if named {
                    body.push('{');
                    for (k, name) in inputs.keys().enumerate() {
                        body.push_str(&format!("{}\"{name}\": ", if k > 0 { "," } else { "" }));
                        random_value(&mut rng, 3, &mut body);
                    }
                    body.push('}');
                } else {
                    random_value(&mut rng, 3, &mut body);
                }
            }
            body.push_str("]}");
            match decode(&body, inputs) {
                Ok(_) => accepted += 1,
                Err(RestError::Syntax { .. }) => panic!("generated body is malformed: {body}"),
                Err(_) => refused += 1,
            }
        }
        assert!(
            accepted > 100 && refused > 100,
            "accepted {accepted}, refused {refused}"
        );
    }

    /// Decodes `body` for `inputs` both ways — [`parse_predict_body`] (the one-pass reader
    /// where it applies) and the full reader alone — and panics unless both give the same
    /// tensors, signature name and format, or the same error. True when the one-pass reader
    /// took the body and typed it itself.
    fn same_both_ways(body: &str, inputs: &BTreeMap<String, InputSpec>) -> bool {
        type Decoded = (Option<String>, Format, NamedTensors);
        let typed = |b: PredictBody| -> Result<Decoded, RestError> {
            let (name, format) = (b.signature_name.clone(), b.format);
            Ok((name, format, b.into_tensors(inputs)?))
        };
        let parsed = parse_predict_body(body.as_bytes());
        let quick = match &parsed {
            Ok(PredictBody {
                payload: Payload::Plain { text, plain },
                ..
            }) => decode::plain_tensors(text, plain, inputs).is_some(),
            _ => false,
        };
        let ours = parsed.and_then(typed).map_err(|e| e.to_string());
        let full = parse_predict_body_full(body.as_bytes())
            .and_then(typed)
            .map_err(|e| e.to_string());
        assert_eq!(ours, full, "{body}");
        quick
    }

    /// A nesting of `dims` lists of numbers, with a rare flaw: a missing or extra element, an
    /// empty list, a value of another kind, a trailing comma.
    fn random_lists(rng: &mut Rng, dims: &[usize], out: &mut String) {
        const NUMBERS: &[&str] = &[
            "0",
            "-0",
            "0.0",
            "1",
            "-1",
            "7",
            "127",
            "128",
            "255",
            "256",
            "-129",
            "1.5",
            "0.32156864",
            "1e3",
            "2E-2",
            "-7.25e+1",
            "65504",
            "65520",
            "3.4028236e38",
            "1e-40",
            "16777217",
            "9007199254740993",
            "18446744073709551615",
            "18446744073709551616",
            "0.1",
        ];
        const FLAWS: &[&str] = &[
            "NaN",
            "\"s\"",
            "true",
            "[]",
            "[1]",
            "01",
            "1.",
            "{\"b64\": \"AA==\"}",
        ];
        let spaces = [" ", "", "\n  ", "\t"];
        match dims.split_first() {
            None if rng.next(200) == 0 => out.push_str(FLAWS[rng.next(FLAWS.len())]),
            None => out.push_str(NUMBERS[rng.next(NUMBERS.len())]),
            Some((&len, inner)) => {
                let len = match rng.next(150) {
                    0 => len + 1,
                    1 => len - 1,
                    _ => len,
                };
                out.push('[');
                for k in 0..len {
                    if k > 0 {
                        out.push(',');
                        out.push_str(spaces[rng.next(spaces.len())]);
                    }
                    random_lists(rng, inner, out);
                }
                if rng.next(300) == 0 {
                    out.push(',');
                }
                out.push(']');
            }
        }
    }

    /// The one-pass reader against the full reader: plain numeric bodies of random shapes,
    /// values and spacing (some flawed), typed by signatures of every dtype with fitting,
    /// wildcard and wrong shapes, and with two inputs. Every body decodes to the same
    /// tensors or the same error either way; most take the one-pass path.
    #[test]
    fn one_pass_reader_agrees_with_the_full_reader() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let mut quick = 0;
        let rounds = 6_000;
        for _ in 0..rounds {
            let rank = 1 + rng.next(3);
            let dims: Vec<usize> = (0..rank).map(|_| 1 + rng.next(3)).collect();
            let mut lists = String::new();
            random_lists(&mut rng, &dims, &mut lists);
            let key = if rng.next(2) == 0 {
                "instances"
            } else {
                "inputs"
            };
            let body = match rng.next(4) {
                0 => format!(r#"{{"signature_name": "serving_default", "{key}": {lists}}}"#),
                1 => format!("{{\"{key}\":{lists},\n\"signature_name\":\"s\"}}\n"),
                _ => format!(r#"{{"{key}": {lists}}}"#),
            };
            let dtype = DType::ALL[rng.next(DType::ALL.len())];
            let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
            let shape: Option<Vec<i64>> = match rng.next(4) {
                0 => None,
                1 => Some(dims.clone()),
                2 => Some(
                    std::iter::once(-1)
                        .chain(dims[1..].iter().copied())
                        .collect(),
                ),
                _ => Some(vec![-1, 5]),
            };
            let inputs = if rng.next(10) == 0 {
                sig(&[("a", spec(dtype, None)), ("b", spec(DType::F32, None))])
            } else {
                sig(&[("x", spec(dtype, shape.as_deref()))])
            };
            quick += usize::from(same_both_ways(&body, &inputs));
        }
        // About a fifth: the rest are flawed, or refused by their dtype or shape.
        assert!(
            quick > rounds / 8,
            "only {quick} of {rounds} bodies took the one-pass path"
        );
    }

    /// The bodies the other tests here use, and random well-formed ones of every layout,
    /// decode the same both ways too.
    #[test]
    fn every_layout_decodes_the_same_both_ways() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for _ in 0..3_000 {
            let dtype = DType::ALL[rng.next(DType::ALL.len())];
            let inputs = if rng.next(2) == 0 {
                sig(&[("x", spec(dtype, None))])
            } else {
                sig(&[("a", spec(dtype, None)), ("b", spec(DType::I64, None))])
            };
            let mut body = String::from(if rng.next(2) == 0 {
                r#"{"instances": "#
            } else {
                r#"{"inputs": "#
            });
            random_value(&mut rng, 4, &mut body);
            body.push('}');
            same_both_ways(&body, &inputs);
        }
        let image = sig(&[("image", spec(DType::F32, Some(&[-1, 28, 28, 1])))]);
        let row = format!("[{}]", vec!["[0.5019608]"; 28].join(","));
        let body = format!(r#"{{"instances": [[{}]]}}"#, vec![row; 28].join(","));
        assert!(
            same_both_ways(&body, &image),
            "the image took the one-pass path"
        );
        assert!(same_both_ways("\u{feff}{\"inputs\": [1, 2]}", &one_f32()));
    }
}
