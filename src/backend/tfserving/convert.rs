//! `TensorProto` ↔ [`Tensor`]. Requests go out as `tensor_content` (one memcpy, no per-element
//! encoding); responses are read from `tensor_content` or from the typed `*_val` fields, which
//! is what TF Serving sends by default.

use bytes::Bytes;

use crate::proto::tensorflow::{DataType, TensorProto, TensorShapeProto, tensor_shape_proto::Dim};
use crate::tensor::{DType, Tensor, element_count};

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

/// Decodes a tensor from a `PredictResponse` (or a request, in the fake backend).
pub fn from_proto(proto: TensorProto) -> Result<Tensor, String> {
    let dtype = DataType::try_from(proto.dtype)
        .ok()
        .and_then(dtype_from_proto)
        .ok_or_else(|| format!("unsupported dtype {}", dtype_label(proto.dtype)))?;
    let shape_proto = proto.tensor_shape.clone().unwrap_or_default();
    if shape_proto.unknown_rank {
        return Err("tensor has unknown rank".into());
    }
    let shape: Vec<i64> = shape_proto.dim.iter().map(|d| d.size).collect();
    let count = element_count(&shape).map_err(|e| e.to_string())?;
    if dtype == DType::Str {
        let strings = fill(proto.string_val, count, Vec::new)?
            .into_iter()
            .map(Bytes::from)
            .collect();
        return Tensor::from_strings(shape, strings).map_err(|e| e.to_string());
    }
    let data = if !proto.tensor_content.is_empty() {
        Bytes::from(proto.tensor_content)
    } else {
        Bytes::from(typed_values(dtype, proto, count)?)
    };
    Tensor::from_bytes(dtype, shape, data).map_err(|e| e.to_string())
}

/// Little-endian element bytes from the typed field that holds `dtype`'s values.
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

/// TensorProto's fill rule: `count` values as given, one value repeated, or none (zeros).
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
}
