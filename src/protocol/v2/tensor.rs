//! Open Inference Protocol tensors ↔ [`Tensor`]: datatype names (`FP32`, `BYTES`, …), the raw
//! form (`raw_input_contents`, the binary extension: row-major little-endian elements, a
//! BYTES element as a 4-byte little-endian length and its bytes), the typed gRPC contents and
//! JSON `data`. Every decoder checks the data against the declared shape and says which
//! tensor is wrong and how.

use bytes::{Buf, Bytes};
use serde_json::Value;

use crate::proto::inference::InferTensorContents;
use crate::tensor::half::{bf16_bits, bf16_to_f32, f16_bits, f16_to_f32};
use crate::tensor::{DType, Tensor, element_count};

/// The protocol's name of a dtype.
pub fn datatype(dtype: DType) -> &'static str {
    match dtype {
        DType::Bool => "BOOL",
        DType::U8 => "UINT8",
        DType::U16 => "UINT16",
        DType::U32 => "UINT32",
        DType::U64 => "UINT64",
        DType::I8 => "INT8",
        DType::I16 => "INT16",
        DType::I32 => "INT32",
        DType::I64 => "INT64",
        DType::F16 => "FP16",
        DType::BF16 => "BF16",
        DType::F32 => "FP32",
        DType::F64 => "FP64",
        DType::Str => "BYTES",
    }
}

/// The dtype a datatype name stands for.
pub fn dtype(datatype: &str) -> Result<DType, String> {
    Ok(match datatype {
        "BOOL" => DType::Bool,
        "UINT8" => DType::U8,
        "UINT16" => DType::U16,
        "UINT32" => DType::U32,
        "UINT64" => DType::U64,
        "INT8" => DType::I8,
        "INT16" => DType::I16,
        "INT32" => DType::I32,
        "INT64" => DType::I64,
        "FP16" => DType::F16,
        "BF16" => DType::BF16,
        "FP32" => DType::F32,
        "FP64" => DType::F64,
        "BYTES" => DType::Str,
        other => {
            return Err(format!(
                "datatype `{other}` is not one of BOOL, UINT8, UINT16, UINT32, UINT64, INT8, \
                 INT16, INT32, INT64, FP16, BF16, FP32, FP64, BYTES"
            ));
        }
    })
}

/// Elements of `shape`, refusing negative dimensions.
fn count(shape: &[i64]) -> Result<usize, String> {
    element_count(shape).map_err(|e| e.to_string())
}

/// A tensor from its raw bytes.
pub fn from_raw(dtype: DType, shape: Vec<i64>, raw: Bytes) -> Result<Tensor, String> {
    let n = count(&shape)?;
    let Some(size) = dtype.size() else {
        return from_raw_bytes(shape, n, raw);
    };
    let want = n.checked_mul(size).ok_or("shape is too large")?;
    if raw.len() != want {
        return Err(format!(
            "shape {shape:?} of {} needs {want} bytes of data but {} were sent",
            datatype(dtype),
            raw.len()
        ));
    }
    Tensor::from_bytes(dtype, shape, raw).map_err(|e| e.to_string())
}

/// BYTES elements, each a 4-byte little-endian length and that many bytes.
fn from_raw_bytes(shape: Vec<i64>, n: usize, mut raw: Bytes) -> Result<Tensor, String> {
    // Each element takes at least its 4-byte length: more elements than that can't be there,
    // whatever the shape claims (and the shape must not size an allocation).
    if n > raw.len() / 4 + 1 {
        return Err(format!(
            "shape {shape:?} of BYTES needs {n} elements but {} bytes of data can't hold them",
            raw.len()
        ));
    }
    let mut strings = Vec::with_capacity(n);
    while raw.has_remaining() {
        if raw.remaining() < 4 {
            return Err("BYTES data ends inside an element's 4-byte length".into());
        }
        let len = raw.get_u32_le() as usize;
        if raw.remaining() < len {
            return Err(format!(
                "BYTES element {} declares {len} bytes but only {} remain",
                strings.len(),
                raw.remaining()
            ));
        }
        strings.push(raw.split_to(len));
    }
    if strings.len() != n {
        return Err(format!(
            "shape {shape:?} of BYTES needs {n} elements but the data holds {}",
            strings.len()
        ));
    }
    Tensor::from_strings(shape, strings).map_err(|e| e.to_string())
}

/// A tensor's raw bytes.
pub fn to_raw(tensor: &Tensor) -> Bytes {
    if tensor.dtype() != DType::Str {
        return tensor.data().clone();
    }
    let mut out = Vec::with_capacity(tensor.byte_size() + 4 * tensor.strings().len());
    for s in tensor.strings() {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s);
    }
    Bytes::from(out)
}

/// A tensor from gRPC typed contents, from the field that holds its datatype.
pub fn from_contents(
    dtype: DType,
    shape: Vec<i64>,
    contents: InferTensorContents,
) -> Result<Tensor, String> {
    let n = count(&shape)?;
    fn le<T, const N: usize>(
        values: Vec<T>,
        n: usize,
        field: &str,
        to: impl Fn(T) -> [u8; N],
    ) -> Result<Bytes, String> {
        if values.len() != n {
            return Err(format!(
                "the shape needs {n} elements but {field} holds {}",
                values.len()
            ));
        }
        Ok(values.into_iter().flat_map(to).collect::<Vec<u8>>().into())
    }
    let c = contents;
    let data = match dtype {
        DType::Bool => le(c.bool_contents, n, "bool_contents", |v| [v as u8])?,
        DType::I8 => le(c.int_contents, n, "int_contents", |v| {
            (v as i8).to_le_bytes()
        })?,
        DType::I16 => le(c.int_contents, n, "int_contents", |v| {
            (v as i16).to_le_bytes()
        })?,
        DType::I32 => le(c.int_contents, n, "int_contents", i32::to_le_bytes)?,
        DType::I64 => le(c.int64_contents, n, "int64_contents", i64::to_le_bytes)?,
        DType::U8 => le(c.uint_contents, n, "uint_contents", |v| {
            (v as u8).to_le_bytes()
        })?,
        DType::U16 => le(c.uint_contents, n, "uint_contents", |v| {
            (v as u16).to_le_bytes()
        })?,
        DType::U32 => le(c.uint_contents, n, "uint_contents", u32::to_le_bytes)?,
        DType::U64 => le(c.uint64_contents, n, "uint64_contents", u64::to_le_bytes)?,
        DType::F32 => le(c.fp32_contents, n, "fp32_contents", f32::to_le_bytes)?,
        DType::F64 => le(c.fp64_contents, n, "fp64_contents", f64::to_le_bytes)?,
        DType::F16 | DType::BF16 => {
            return Err(format!(
                "{} tensors have no typed contents field: send them in raw_input_contents",
                datatype(dtype)
            ));
        }
        DType::Str => {
            if c.bytes_contents.len() != n {
                return Err(format!(
                    "the shape needs {n} elements but bytes_contents holds {}",
                    c.bytes_contents.len()
                ));
            }
            let strings = c.bytes_contents.into_iter().map(Bytes::from).collect();
            return Tensor::from_strings(shape, strings).map_err(|e| e.to_string());
        }
    };
    Tensor::from_bytes(dtype, shape, data).map_err(|e| e.to_string())
}

/// A tensor from JSON `data`: a flat or nested (row-major) array of numbers, booleans or, for
/// BYTES, strings.
pub fn from_json(dtype: DType, shape: Vec<i64>, data: &Value) -> Result<Tensor, String> {
    let n = count(&shape)?;
    let mut flat = Vec::with_capacity(n.min(1 << 20));
    flatten(data, &mut flat)?;
    if flat.len() != n {
        return Err(format!(
            "shape {shape:?} needs {n} elements but data holds {}",
            flat.len()
        ));
    }
    if dtype == DType::Str {
        let strings = flat
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(Bytes::from(s.clone().into_bytes())),
                other => Err(format!("BYTES data must be strings, not {other}")),
            })
            .collect::<Result<_, _>>()?;
        return Tensor::from_strings(shape, strings).map_err(|e| e.to_string());
    }
    let size = dtype.size().unwrap_or(1);
    let mut bytes = Vec::with_capacity(n * size);
    for v in flat {
        push_json(dtype, v, &mut bytes)?;
    }
    Tensor::from_bytes(dtype, shape, bytes.into()).map_err(|e| e.to_string())
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) -> Result<(), String> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|item| flatten(item, out)),
        Value::Object(_) => Err("data must be an array of values, not an object".into()),
        Value::Null => Err("data must not hold null".into()),
        other => {
            out.push(other);
            Ok(())
        }
    }
}

fn push_json(dtype: DType, v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    let name = datatype(dtype);
    let bad = || format!("{v} is not a {name} value");
    let int = || v.as_i64().ok_or_else(bad);
    let uint = || v.as_u64().ok_or_else(bad);
    let float = || v.as_f64().ok_or_else(bad);
    fn fit<T: TryFrom<i128>>(n: i128, name: &str) -> Result<T, String> {
        T::try_from(n).map_err(|_| format!("{n} is out of range for {name}"))
    }
    match dtype {
        DType::Bool => out.push(v.as_bool().ok_or_else(bad)? as u8),
        DType::I8 => out.extend(fit::<i8>(int()?.into(), name)?.to_le_bytes()),
        DType::I16 => out.extend(fit::<i16>(int()?.into(), name)?.to_le_bytes()),
        DType::I32 => out.extend(fit::<i32>(int()?.into(), name)?.to_le_bytes()),
        DType::I64 => out.extend(int()?.to_le_bytes()),
        DType::U8 => out.extend(fit::<u8>(uint()?.into(), name)?.to_le_bytes()),
        DType::U16 => out.extend(fit::<u16>(uint()?.into(), name)?.to_le_bytes()),
        DType::U32 => out.extend(fit::<u32>(uint()?.into(), name)?.to_le_bytes()),
        DType::U64 => out.extend(uint()?.to_le_bytes()),
        DType::F16 => out.extend(f16_bits(float()?).to_le_bytes()),
        DType::BF16 => out.extend(bf16_bits(float()? as f32).to_le_bytes()),
        DType::F32 => out.extend((float()? as f32).to_le_bytes()),
        DType::F64 => out.extend(float()?.to_le_bytes()),
        DType::Str => unreachable!("strings are handled by the caller"),
    }
    Ok(())
}

/// JSON `data` of a tensor: its elements, flat, row-major.
pub fn to_json(tensor: &Tensor) -> Value {
    let data = tensor.data();
    fn each<const N: usize>(data: &[u8], f: impl Fn([u8; N]) -> Value) -> Value {
        Value::Array(
            data.chunks_exact(N)
                .map(|c| f(c.try_into().expect("chunk of N bytes")))
                .collect(),
        )
    }
    let float = |v: f64| serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number);
    match tensor.dtype() {
        DType::Bool => each(data, |[b]| Value::Bool(b != 0)),
        DType::I8 => each(data, |[b]| (b as i8).into()),
        DType::U8 => each(data, |[b]| b.into()),
        DType::I16 => each(data, |b| i16::from_le_bytes(b).into()),
        DType::U16 => each(data, |b| u16::from_le_bytes(b).into()),
        DType::I32 => each(data, |b| i32::from_le_bytes(b).into()),
        DType::U32 => each(data, |b| u32::from_le_bytes(b).into()),
        DType::I64 => each(data, |b| i64::from_le_bytes(b).into()),
        DType::U64 => each(data, |b| u64::from_le_bytes(b).into()),
        DType::F16 => each(data, |b| float(f16_to_f32(u16::from_le_bytes(b)).into())),
        DType::BF16 => each(data, |b| float(bf16_to_f32(u16::from_le_bytes(b)).into())),
        DType::F32 => each(data, |b| float(f32::from_le_bytes(b).into())),
        DType::F64 => each(data, |b| float(f64::from_le_bytes(b))),
        DType::Str => Value::Array(
            tensor
                .strings()
                .iter()
                .map(|s| Value::String(String::from_utf8_lossy(s).into_owned()))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Raw bytes round-trip for numbers and length-prefixed BYTES.
    #[test]
    fn raw_round_trips() {
        let f = Tensor::from_f32(vec![1, 2], &[1.5, -2.0]).unwrap();
        assert_eq!(from_raw(DType::F32, vec![1, 2], to_raw(&f)).unwrap(), f);
        let s = Tensor::from_strings(vec![2], vec!["ab".into(), "".into()]).unwrap();
        assert_eq!(to_raw(&s).as_ref(), b"\x02\0\0\0ab\0\0\0\0");
        assert_eq!(from_raw(DType::Str, vec![2], to_raw(&s)).unwrap(), s);
    }

    /// Raw data whose length disagrees with the shape is refused with both sizes.
    #[test]
    fn raw_length_must_match_the_shape() {
        let err = from_raw(DType::F32, vec![2, 2], Bytes::from(vec![0u8; 12])).unwrap_err();
        assert_eq!(
            err,
            "shape [2, 2] of FP32 needs 16 bytes of data but 12 were sent"
        );
        let err = from_raw(DType::Str, vec![1], Bytes::from_static(b"\x09\0\0\0ab")).unwrap_err();
        assert!(err.contains("declares 9 bytes"), "{err}");
        let err = from_raw(DType::Str, vec![1 << 40], Bytes::from_static(b"")).unwrap_err();
        assert!(err.contains("can't hold them"), "{err}");
    }

    /// JSON data may be nested or flat; wrong types and counts are named.
    #[test]
    fn json_data() {
        let t = from_json(DType::I64, vec![2, 2], &serde_json::json!([[1, 2], [3, 4]])).unwrap();
        assert_eq!(t.to_i64().unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(to_json(&t), serde_json::json!([1, 2, 3, 4]));
        assert!(from_json(DType::F32, vec![3], &serde_json::json!([1, 2])).is_err());
        let err = from_json(DType::U8, vec![1], &serde_json::json!([300])).unwrap_err();
        assert!(err.contains("out of range for UINT8"), "{err}");
        let err = from_json(DType::F32, vec![1], &serde_json::json!(["x"])).unwrap_err();
        assert!(err.contains("not a FP32 value"), "{err}");
    }

    /// Typed contents come from the field of the datatype, with the element count checked.
    #[test]
    fn typed_contents() {
        let contents = InferTensorContents {
            fp32_contents: vec![1.0, 2.0],
            ..Default::default()
        };
        let t = from_contents(DType::F32, vec![2], contents.clone()).unwrap();
        assert_eq!(t.to_f32().unwrap(), vec![1.0, 2.0]);
        let err = from_contents(DType::F32, vec![3], contents).unwrap_err();
        assert!(err.contains("fp32_contents holds 2"), "{err}");
    }
}
