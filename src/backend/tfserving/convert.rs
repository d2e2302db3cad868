//! `TensorProto` ↔ [`Tensor`]. Requests go out as `tensor_content` (one memcpy, no per-element
//! encoding); responses are read from `tensor_content` or from the typed `*_val` fields, which
//! is what TF Serving sends by default.
//!
//! A reply's declared shape is the server's word, not a size to allocate: a 10-byte message can
//! declare `[1 << 40]` and ask the TensorProto fill rule (no values: zeros; one value: repeated)
//! for a terabyte. So every size is computed with checked arithmetic from the shape and held
//! against the bytes present and a byte limit *before* anything is allocated.

use bytes::Bytes;

use crate::proto::tensorflow::{DataType, TensorProto, TensorShapeProto, tensor_shape_proto::Dim};
use crate::tensor::{DType, Tensor};

/// The most bytes one decoded tensor (or all of one reply's outputs, see
/// [`from_proto_within`]) may take: the gRPC message limit, since a legitimate reply's values
/// fit in one message. The fill rule can legitimately expand a small message past its own size
/// (a tensor of zeros); this is where that stops.
pub const MAX_TENSOR_BYTES: usize = super::MAX_MESSAGE_BYTES;

/// What one string element costs in memory besides its bytes (its handle in the tensor).
const STRING_ELEMENT_BYTES: usize = std::mem::size_of::<Bytes>();

/// Encodes a tensor for a `PredictRequest`.
pub fn to_proto(tensor: &Tensor) -> TensorProto {
    let tensor_shape = Some(TensorShapeProto {
        dim: tensor
            .shape()
            .iter()
            .map(|&size| Dim {
                size,
                name: String::new(),
            })
            .collect(),
        unknown_rank: false,
    });
    let mut proto = TensorProto {
        dtype: dtype_to_proto(tensor.dtype()) as i32,
        tensor_shape,
        ..Default::default()
    };
    if tensor.dtype() == DType::Str {
        proto.string_val = tensor.strings().iter().map(|s| s.to_vec()).collect();
    } else {
        proto.tensor_content = tensor.data().to_vec();
    }
    proto
}

/// Decodes a tensor from a `PredictResponse` (or a request, in the fake backend), within
/// [`MAX_TENSOR_BYTES`].
pub fn from_proto(proto: TensorProto) -> Result<Tensor, String> {
    from_proto_within(proto, MAX_TENSOR_BYTES)
}

/// Decodes a tensor that may take at most `limit` bytes once decoded (its element bytes; for
/// strings, a handle per element besides the bytes the message already holds). The declared
/// shape is checked against the bytes or values present and against `limit` before anything
/// is allocated.
pub fn from_proto_within(proto: TensorProto, limit: usize) -> Result<Tensor, String> {
    let dtype = DataType::try_from(proto.dtype)
        .ok()
        .and_then(dtype_from_proto)
        .ok_or_else(|| format!("unsupported dtype {}", dtype_label(proto.dtype)))?;
    let shape_proto = proto.tensor_shape.clone().unwrap_or_default();
    if shape_proto.unknown_rank {
        return Err("tensor has unknown rank".into());
    }
    let shape: Vec<i64> = shape_proto.dim.iter().map(|d| d.size).collect();
    let count = declared_count(&shape)?;
    let element = dtype.size().unwrap_or(STRING_ELEMENT_BYTES);
    let bytes = count
        .checked_mul(element)
        .filter(|&b| b <= limit)
        .ok_or_else(|| {
            format!(
                "shape {shape:?} of {} declares {count} elements, more than the {limit}-byte limit holds",
                dtype_label(proto.dtype)
            )
        })?;
    if dtype == DType::Str {
        let strings = fill_strings(proto.string_val, count)?;
        return Tensor::from_strings(shape, strings).map_err(|e| e.to_string());
    }
    let data = if proto.tensor_content.is_empty() {
        Bytes::from(typed_values(dtype, proto, count)?)
    } else if proto.tensor_content.len() == bytes {
        Bytes::from(proto.tensor_content)
    } else {
        return Err(format!(
            "tensor_content holds {} bytes but shape {shape:?} of {} needs {bytes}",
            proto.tensor_content.len(),
            dtype_label(proto.dtype)
        ));
    };
    Tensor::from_bytes(dtype, shape, data).map_err(|e| e.to_string())
}

/// The element count of a declared shape: every dim at least 0, the product without overflow.
fn declared_count(shape: &[i64]) -> Result<usize, String> {
    shape.iter().try_fold(1usize, |n, &d| {
        let d = usize::try_from(d).map_err(|_| format!("shape {shape:?} has a negative dim"))?;
        n.checked_mul(d)
            .ok_or_else(|| format!("shape {shape:?} has more elements than memory can address"))
    })
}

/// Little-endian element bytes from the typed field that holds `dtype`'s values; `count` has
/// been checked against the limit.
fn typed_values(dtype: DType, proto: TensorProto, count: usize) -> Result<Vec<u8>, String> {
    fn le<T: Copy, const N: usize>(
        values: Vec<T>,
        count: usize,
        to: fn(T) -> [u8; N],
        zero: T,
    ) -> Result<Vec<u8>, String> {
        Ok(fill(values, count, || zero)?
            .into_iter()
            .flat_map(to)
            .collect())
    }
    match dtype {
        DType::F32 => le(proto.float_val, count, f32::to_le_bytes, 0.0),
        DType::F64 => le(proto.double_val, count, f64::to_le_bytes, 0.0),
        DType::I32 => le(proto.int_val, count, i32::to_le_bytes, 0),
        DType::I16 => le(proto.int_val, count, |v| (v as i16).to_le_bytes(), 0),
        DType::I8 => le(proto.int_val, count, |v| (v as i8).to_le_bytes(), 0),
        DType::U8 => le(proto.int_val, count, |v| (v as u8).to_le_bytes(), 0),
        DType::U16 => le(proto.int_val, count, |v| (v as u16).to_le_bytes(), 0),
        DType::I64 => le(proto.int64_val, count, i64::to_le_bytes, 0),
        DType::U32 => le(proto.uint32_val, count, u32::to_le_bytes, 0),
        DType::U64 => le(proto.uint64_val, count, u64::to_le_bytes, 0),
        DType::Bool => le(proto.bool_val, count, |v| [v as u8], false),
        // Half floats travel as their 16 bits in an int32.
        DType::F16 | DType::BF16 => le(proto.half_val, count, |v| (v as u16).to_le_bytes(), 0),
        DType::Str => unreachable!("strings are handled by the caller"),
    }
}

/// TensorProto's fill rule: `count` values as given, one value repeated, or none (defaults).
/// `count` has been checked against the limit by the caller.
fn fill<T: Clone>(
    mut values: Vec<T>,
    count: usize,
    zero: impl Fn() -> T,
) -> Result<Vec<T>, String> {
    match values.len() {
        n if n == count => Ok(values),
        0 => Ok(vec![zero(); count]),
        1 => {
            let v = values.pop().expect("one value");
            Ok(vec![v; count])
        }
        n => Err(format!(
            "tensor holds {n} values but its shape needs {count}"
        )),
    }
}

/// The fill rule for strings: a repeated string is shared (`count` handles to one buffer),
/// never copied `count` times.
fn fill_strings(values: Vec<Vec<u8>>, count: usize) -> Result<Vec<Bytes>, String> {
    let values: Vec<Bytes> = values.into_iter().map(Bytes::from).collect();
    fill(values, count, Bytes::new)
}

/// Decodes a reply's outputs, sorted by name, all of them together within `limit` bytes
/// (so many outputs can't each take the whole limit). Errors name the output.
pub fn outputs_from_proto(
    outputs: impl IntoIterator<Item = (String, TensorProto)>,
    limit: usize,
) -> Result<Vec<(String, Tensor)>, String> {
    let mut left = limit;
    let mut decoded = Vec::new();
    for (name, proto) in outputs {
        let tensor = from_proto_within(proto, left).map_err(|e| format!("output `{name}`: {e}"))?;
        left -= tensor_bytes(&tensor).min(left);
        decoded.push((name, tensor));
    }
    decoded.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(decoded)
}

/// What a decoded tensor counts against a limit: its element bytes, or a handle per string.
fn tensor_bytes(tensor: &Tensor) -> usize {
    match tensor.dtype().size() {
        Some(_) => tensor.data().len(),
        None => tensor.strings().len() * STRING_ELEMENT_BYTES,
    }
}

pub fn dtype_to_proto(dtype: DType) -> DataType {
    match dtype {
        DType::F16 => DataType::DtHalf,
        DType::BF16 => DataType::DtBfloat16,
        DType::F32 => DataType::DtFloat,
        DType::F64 => DataType::DtDouble,
        DType::I8 => DataType::DtInt8,
        DType::I16 => DataType::DtInt16,
        DType::I32 => DataType::DtInt32,
        DType::I64 => DataType::DtInt64,
        DType::U8 => DataType::DtUint8,
        DType::U16 => DataType::DtUint16,
        DType::U32 => DataType::DtUint32,
        DType::U64 => DataType::DtUint64,
        DType::Bool => DataType::DtBool,
        DType::Str => DataType::DtString,
    }
}

pub fn dtype_from_proto(dtype: DataType) -> Option<DType> {
    Some(match dtype {
        DataType::DtHalf => DType::F16,
        DataType::DtBfloat16 => DType::BF16,
        DataType::DtFloat => DType::F32,
        DataType::DtDouble => DType::F64,
        DataType::DtInt8 => DType::I8,
        DataType::DtInt16 => DType::I16,
        DataType::DtInt32 => DType::I32,
        DataType::DtInt64 => DType::I64,
        DataType::DtUint8 => DType::U8,
        DataType::DtUint16 => DType::U16,
        DataType::DtUint32 => DType::U32,
        DataType::DtUint64 => DType::U64,
        DataType::DtBool => DType::Bool,
        DataType::DtString => DType::Str,
        _ => return None,
    })
}

/// `DT_FLOAT`-style name of a dtype number, for messages and metadata JSON.
pub fn dtype_label(dtype: i32) -> String {
    DataType::try_from(dtype).map_or_else(
        |_| format!("dtype {dtype}"),
        |d| d.as_str_name().to_string(),
    )
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// TF Serving's default answer (typed `float_val`) decodes to the same tensor as
    /// `tensor_content` would.
    #[test]
    fn typed_and_content_forms_agree() {
        let t = Tensor::from_f32(vec![1, 3], &[0.1, 0.2, 0.7]).unwrap();
        let content = to_proto(&t);
        let typed = TensorProto {
            dtype: DataType::DtFloat as i32,
            tensor_shape: content.tensor_shape.clone(),
            float_val: vec![0.1, 0.2, 0.7],
            ..Default::default()
        };
        assert_eq!(from_proto(content).unwrap(), t);
        assert_eq!(from_proto(typed).unwrap(), t);
    }

    /// A single typed value fills the whole shape, as TF's TensorProto rules say.
    #[test]
    fn one_value_fills_the_shape() {
        let proto = TensorProto {
            dtype: DataType::DtInt64 as i32,
            tensor_shape: Some(TensorShapeProto {
                dim: vec![Dim {
                    size: 3,
                    name: String::new(),
                }],
                unknown_rank: false,
            }),
            int64_val: vec![7],
            ..Default::default()
        };
        assert_eq!(from_proto(proto).unwrap().to_i64().unwrap(), vec![7, 7, 7]);
    }

    /// A value count that fits neither rule is an error, not a mis-shaped tensor.
    #[test]
    fn wrong_value_count_is_an_error() {
        let proto = TensorProto {
            dtype: DataType::DtFloat as i32,
            tensor_shape: Some(TensorShapeProto {
                dim: vec![Dim {
                    size: 3,
                    name: String::new(),
                }],
                unknown_rank: false,
            }),
            float_val: vec![1.0, 2.0],
            ..Default::default()
        };
        assert_eq!(
            from_proto(proto).unwrap_err(),
            "tensor holds 2 values but its shape needs 3"
        );
    }

    /// Complex numbers are not supported and say so by name.
    #[test]
    fn unsupported_dtype_is_named() {
        let proto = TensorProto {
            dtype: DataType::DtComplex64 as i32,
            ..Default::default()
        };
        assert_eq!(
            from_proto(proto).unwrap_err(),
            "unsupported dtype DT_COMPLEX64"
        );
    }

    fn proto(dtype: DataType, shape: &[i64]) -> TensorProto {
        TensorProto {
            dtype: dtype as i32,
            tensor_shape: Some(TensorShapeProto {
                dim: shape
                    .iter()
                    .map(|&size| Dim {
                        size,
                        name: String::new(),
                    })
                    .collect(),
                unknown_rank: false,
            }),
            ..Default::default()
        }
    }

    /// `tensor_content` shorter (or longer) than the declared shape needs is refused, naming
    /// both sizes, instead of being trusted.
    #[test]
    fn content_that_does_not_fill_the_shape_is_refused() {
        let mut short = proto(DataType::DtFloat, &[1, 1000]);
        short.tensor_content = vec![0; 10];
        assert_eq!(
            from_proto(short).unwrap_err(),
            "tensor_content holds 10 bytes but shape [1, 1000] of DT_FLOAT needs 4000"
        );
        let mut long = proto(DataType::DtFloat, &[1]);
        long.tensor_content = vec![0; 8];
        assert!(from_proto(long).unwrap_err().contains("holds 8 bytes"));
    }

    /// A few bytes declaring `[1 << 40]` with no values (the fill rule's zeros) is refused
    /// before anything is allocated: the test would abort on a 4 TiB allocation otherwise.
    #[test]
    fn a_huge_shape_with_no_values_is_refused_before_allocating() {
        let huge = proto(DataType::DtFloat, &[1 << 40]);
        assert!(huge.encoded_len() < 16);
        let err = from_proto(huge).unwrap_err();
        assert!(err.contains("1099511627776 elements"), "{err}");
        assert!(
            err.contains(&format!("{MAX_TENSOR_BYTES}-byte limit")),
            "{err}"
        );
    }

    /// One typed value repeated over a huge shape is refused the same way.
    #[test]
    fn one_value_over_a_huge_shape_is_refused() {
        let mut huge = proto(DataType::DtInt64, &[1 << 20, 1 << 20]);
        huge.int64_val = vec![7];
        assert!(from_proto(huge).unwrap_err().contains("limit"));
    }

    /// Shapes whose element count, or byte size, overflows are errors, never a wrapped size.
    #[test]
    fn overflowing_shapes_are_refused() {
        let count = from_proto(proto(DataType::DtFloat, &[i64::MAX, i64::MAX])).unwrap_err();
        assert!(
            count.contains("more elements than memory can address"),
            "{count}"
        );
        // The count fits in usize; times 4 bytes it does not.
        let bytes = from_proto(proto(DataType::DtFloat, &[1 << 62])).unwrap_err();
        assert!(bytes.contains("limit"), "{bytes}");
        let negative = from_proto(proto(DataType::DtFloat, &[2, -3])).unwrap_err();
        assert_eq!(negative, "shape [2, -3] has a negative dim");
    }

    /// The limit holds both ways: a tensor of exactly `limit` bytes decodes, one byte less
    /// of limit refuses it.
    #[test]
    fn the_byte_limit_is_exact() {
        let mut t = proto(DataType::DtFloat, &[2, 3]);
        t.float_val = vec![1.0];
        assert_eq!(
            from_proto_within(t.clone(), 24).unwrap().to_f32().unwrap(),
            vec![1.0; 6]
        );
        assert!(
            from_proto_within(t, 23)
                .unwrap_err()
                .contains("23-byte limit")
        );
    }

    /// One string fills a shape by sharing its buffer; a huge string shape is refused.
    #[test]
    fn one_string_fills_by_sharing_and_huge_string_shapes_are_refused() {
        let mut t = proto(DataType::DtString, &[3]);
        t.string_val = vec![b"abc".to_vec()];
        let tensor = from_proto(t).unwrap();
        assert_eq!(tensor.strings().len(), 3);
        assert!(tensor.strings().iter().all(|s| s.as_ref() == b"abc"));
        assert_eq!(tensor.strings()[0].as_ptr(), tensor.strings()[2].as_ptr());
        let mut huge = proto(DataType::DtString, &[1 << 40]);
        huge.string_val = vec![vec![b'x'; 1 << 10]];
        assert!(from_proto(huge).unwrap_err().contains("limit"));
    }

    /// A reply's outputs share one limit: each within it alone, too many together is refused,
    /// naming the output that broke it.
    #[test]
    fn outputs_share_one_limit() {
        let output = |v: f32| {
            let mut t = proto(DataType::DtFloat, &[10]);
            t.float_val = vec![v];
            t
        };
        let both = || {
            vec![
                ("b".to_string(), output(2.0)),
                ("a".to_string(), output(1.0)),
            ]
        };
        let decoded = outputs_from_proto(both(), 80).unwrap();
        assert_eq!(decoded[0].0, "a");
        assert_eq!(decoded[1].1.to_f32().unwrap(), vec![2.0; 10]);
        let err = outputs_from_proto(both(), 79).unwrap_err();
        assert!(err.starts_with("output `a`: "), "{err}");
    }
}
