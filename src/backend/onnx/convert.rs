//! The gateway's [`Tensor`] to tract's tensor and back, and dtypes between the two. Bytes are
//! decoded element by element (little-endian, as the gateway stores them), so no unsafe
//! reinterpretation of buffers is needed.

use tract_onnx::prelude::{DatumType, Tensor as TractTensor, f16, tract_ndarray::ArrayD};

use crate::tensor::{DType, Tensor};

/// The gateway dtype of a tract dtype; `None` for those the gateway can't carry (quantized,
/// dims, blobs, strings: string tensors are not supported by this backend yet).
pub fn dtype_from_tract(dt: DatumType) -> Option<DType> {
    Some(match dt {
        DatumType::Bool => DType::Bool,
        DatumType::U8 => DType::U8,
        DatumType::U16 => DType::U16,
        DatumType::U32 => DType::U32,
        DatumType::U64 => DType::U64,
        DatumType::I8 => DType::I8,
        DatumType::I16 => DType::I16,
        DatumType::I32 => DType::I32,
        DatumType::I64 => DType::I64,
        DatumType::F16 => DType::F16,
        DatumType::F32 => DType::F32,
        DatumType::F64 => DType::F64,
        _ => return None,
    })
}

/// Decodes `data` as `N`-byte little-endian elements into a tract tensor of `shape`.
fn build<T, const N: usize>(
    shape: &[usize],
    data: &[u8],
    decode: fn([u8; N]) -> T,
) -> Result<TractTensor, String>
where
    T: tract_onnx::prelude::Datum,
{
    let values: Vec<T> = data
        .chunks_exact(N)
        .map(|c| decode(c.try_into().expect("chunks_exact gives N bytes")))
        .collect();
    ArrayD::from_shape_vec(shape.to_vec(), values)
        .map(TractTensor::from)
        .map_err(|e| e.to_string())
}

/// A gateway tensor as a tract tensor. The caller has checked its dtype against the model.
pub fn to_tract(tensor: &Tensor) -> Result<TractTensor, String> {
    let shape: Vec<usize> = tensor
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<Result<_, _>>()?;
    let data = tensor.data().as_ref();
    match tensor.dtype() {
        DType::Bool => build::<bool, 1>(&shape, data, |[b]| b != 0),
        DType::U8 => build(&shape, data, u8::from_le_bytes),
        DType::U16 => build(&shape, data, u16::from_le_bytes),
        DType::U32 => build(&shape, data, u32::from_le_bytes),
        DType::U64 => build(&shape, data, u64::from_le_bytes),
        DType::I8 => build(&shape, data, i8::from_le_bytes),
        DType::I16 => build(&shape, data, i16::from_le_bytes),
        DType::I32 => build(&shape, data, i32::from_le_bytes),
        DType::I64 => build(&shape, data, i64::from_le_bytes),
        DType::F16 => build(&shape, data, |b| f16::from_bits(u16::from_le_bytes(b))),
        DType::F32 => build(&shape, data, f32::from_le_bytes),
        DType::F64 => build(&shape, data, f64::from_le_bytes),
        other @ (DType::BF16 | DType::Str) => Err(format!(
            "dtype {} is not supported by the onnx backend",
            other.name()
        )),
    }
}

/// Encodes every element of `tensor` (in logical row-major order) with `encode`.
fn bytes_of<T, const N: usize>(
    tensor: &TractTensor,
    encode: fn(&T) -> [u8; N],
) -> Result<Vec<u8>, String>
where
    T: tract_onnx::prelude::Datum,
{
    let view = tensor
        .to_plain_array_view::<T>()
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(view.len() * N);
    for value in &view {
        out.extend_from_slice(&encode(value));
    }
    Ok(out)
}

/// A tract tensor (a model output) as a gateway tensor.
pub fn from_tract(tensor: &TractTensor) -> Result<Tensor, String> {
    let dtype = dtype_from_tract(tensor.datum_type()).ok_or_else(|| {
        format!(
            "dtype {:?} can't be carried by the gateway",
            tensor.datum_type()
        )
    })?;
    let data = match dtype {
        DType::Bool => bytes_of::<bool, 1>(tensor, |b| [u8::from(*b)]),
        DType::U8 => bytes_of(tensor, |v: &u8| v.to_le_bytes()),
        DType::U16 => bytes_of(tensor, |v: &u16| v.to_le_bytes()),
        DType::U32 => bytes_of(tensor, |v: &u32| v.to_le_bytes()),
        DType::U64 => bytes_of(tensor, |v: &u64| v.to_le_bytes()),
        DType::I8 => bytes_of(tensor, |v: &i8| v.to_le_bytes()),
        DType::I16 => bytes_of(tensor, |v: &i16| v.to_le_bytes()),
        DType::I32 => bytes_of(tensor, |v: &i32| v.to_le_bytes()),
        DType::I64 => bytes_of(tensor, |v: &i64| v.to_le_bytes()),
        DType::F16 => bytes_of(tensor, |v: &f16| v.to_bits().to_le_bytes()),
        DType::F32 => bytes_of(tensor, |v: &f32| v.to_le_bytes()),
        DType::F64 => bytes_of(tensor, |v: &f64| v.to_le_bytes()),
        DType::BF16 | DType::Str => unreachable!("dtype_from_tract never gives {dtype:?}"),
    }?;
    let shape = tensor.shape().iter().map(|&d| d as i64).collect();
    Tensor::from_bytes(dtype, shape, data.into()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every dtype the backend carries survives a round trip through tract unchanged.
    #[test]
    fn tensors_round_trip_through_tract() {
        let cases = [
            Tensor::from_f32(vec![2, 3], &[1.0, -2.5, 3.0, 0.0, 1e-7, f32::MAX]).unwrap(),
            Tensor::from_i64(vec![3], &[1, -2, i64::MAX]).unwrap(),
            Tensor::from_bytes(DType::Bool, vec![2], vec![1u8, 0].into()).unwrap(),
            Tensor::from_bytes(DType::U16, vec![1, 2], vec![1u8, 2, 3, 4].into()).unwrap(),
            Tensor::from_bytes(DType::F16, vec![1], vec![0x00u8, 0x3c].into()).unwrap(),
        ];
        for tensor in cases {
            let back = from_tract(&to_tract(&tensor).unwrap()).unwrap();
            assert_eq!(back, tensor);
        }
    }

    #[test]
    fn strings_are_refused_with_a_reason() {
        let t = Tensor::from_strings(vec![1], vec!["a".into()]).unwrap();
        assert_eq!(
            to_tract(&t).unwrap_err(),
            "dtype string is not supported by the onnx backend"
        );
    }
}
