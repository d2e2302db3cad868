//! Request side: the assembly of `"instances"` / `"inputs"` values, read from the JSON tape
//! ([`super::json`]) or from a plain numeric payload ([`super::plain`]), into tensors typed
//! by the signature.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;

use super::json::{Doc, Tok, shorten};
use super::number::{parse_f32, parse_f64};
use super::plain::Plain;
use super::{InputSpec, RestError};
use crate::tensor::half::{bf16_bits, f16_bits};
use crate::tensor::{DType, NamedTensors, Tensor};

/// The signature's inputs, by name.
type Specs = BTreeMap<String, InputSpec>;

/// Standard alphabet as TF Serving requires; padding optional and loose trailing bits accepted,
/// as absl's decoder (TF Serving's) is lenient there too.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

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
                self.push_non_finite(v);
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
                let v = parse_f32(text).ok_or_else(out_of_range)?;
                if v.is_infinite() {
                    return Err(out_of_range());
                }
                data.extend_from_slice(&v.to_le_bytes());
            }
            DType::F64 => {
                let v = parse_f64(text).ok_or_else(out_of_range)?;
                if v.is_infinite() {
                    return Err(out_of_range());
                }
                data.extend_from_slice(&v.to_le_bytes());
            }
            DType::BF16 => {
                let bits = bf16_bits(parse_f32(text).ok_or_else(out_of_range)?);
                if bits & 0x7FFF == 0x7F80 {
                    return Err(out_of_range());
                }
                data.extend_from_slice(&bits.to_le_bytes());
            }
            DType::F16 => {
                let bits = f16_bits(parse_f64(text).ok_or_else(out_of_range)?);
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

/// The one input's tensor from a plain numeric payload, in either format (the payload's dims
/// are the tensor's: for `"instances"`, dim 0 is the rows). `None` where the full reader
/// must decide, which then answers exactly as it always has: the signature has other
/// inputs, or an input numbers can't fill (strings, booleans), or the shape or a value is
/// refused — those errors name the place, which the full reader's walk knows.
pub(super) fn plain_tensors(text: &str, plain: &Plain, specs: &Specs) -> Option<NamedTensors> {
    let (name, spec) = specs.iter().next().filter(|_| specs.len() == 1)?;
    if matches!(spec.dtype, DType::Str | DType::Bool) {
        return None;
    }
    let dims = dims_i64(&plain.dims);
    check_shape(name, spec, &dims).ok()?;
    let mut column = Column::new(spec.dtype, plain.numbers.len(), text.len());
    let place = Place {
        input: name,
        instance: None,
        named: false,
        idx: Vec::new(),
    };
    for number in &plain.numbers {
        // Floats take the digits the reader already read; the rest convert from the text.
        let converted = match (spec.dtype, number.decimal) {
            (DType::F32, Some(decimal)) => decimal.to_f32().map(|v| {
                column.data.extend_from_slice(&v.to_le_bytes());
            }),
            (DType::F64, Some(decimal)) => decimal.to_f64().map(|v| {
                column.data.extend_from_slice(&v.to_le_bytes());
            }),
            _ => None,
        };
        if converted.is_none() {
            let written = text.get(number.start as usize..number.end as usize)?;
            column.push_number(written, number.int, &place).ok()?;
        }
    }
    Some(vec![(name.clone(), column.finish(dims).ok()?)])
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
