//! The gateway's own tensor: a dtype, a shape and row-major little-endian bytes (or one byte
//! string per element). Every format the gateway speaks — REST JSON, plugin records,
//! `TensorProto` — converts to and from this one type, and batching concatenates and splits it
//! along dim 0.

pub mod half;

use std::fmt;

use bytes::Bytes;

/// Element type. Mirrors the plugin contract's `dtype` enum one to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F16,
    BF16,
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
    Str,
}

impl DType {
    /// Every dtype, in declaration order (the fuzz targets pick one by index, so their seeds
    /// depend on this order).
    pub const ALL: [DType; 14] = [
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::F64,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::Bool,
        DType::Str,
    ];

    /// Bytes per element in `data`; `None` for strings, which live in `strings`.
    pub fn size(self) -> Option<usize> {
        use DType::*;
        Some(match self {
            I8 | U8 | Bool => 1,
            F16 | BF16 | I16 | U16 => 2,
            F32 | I32 | U32 => 4,
            F64 | I64 | U64 => 8,
            Str => return None,
        })
    }

    /// The lower-case name used in errors, metadata and the plugin contract.
    pub fn name(self) -> &'static str {
        use DType::*;
        match self {
            F16 => "f16",
            BF16 => "bf16",
            F32 => "f32",
            F64 => "f64",
            I8 => "i8",
            I16 => "i16",
            I32 => "i32",
            I64 => "i64",
            U8 => "u8",
            U16 => "u16",
            U32 => "u32",
            U64 => "u64",
            Bool => "bool",
            Str => "string",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a tensor is not well formed. The message names what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    #[error("shape {shape:?} has a negative dimension")]
    NegativeDim { shape: Vec<i64> },
    #[error("shape {shape:?} holds {expected} {dtype} elements but {given} were given")]
    ElementCount {
        dtype: DType,
        shape: Vec<i64>,
        expected: usize,
        given: usize,
    },
    #[error("a {dtype} tensor carries its elements in {wanted}, not {other}")]
    WrongStorage {
        dtype: DType,
        wanted: &'static str,
        other: &'static str,
    },
    #[error("cannot concatenate: {0}")]
    Concat(String),
    #[error("cannot split: {0}")]
    Split(String),
}

/// A dense tensor. Cloning is cheap: numeric data is shared `Bytes`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<i64>,
    /// Row-major little-endian elements; empty for `Str`.
    data: Bytes,
    /// One entry per element for `Str`; empty otherwise.
    strings: Vec<Bytes>,
}

impl Tensor {
    /// A numeric tensor from raw little-endian bytes, checked against the shape.
    pub fn from_bytes(dtype: DType, shape: Vec<i64>, data: Bytes) -> Result<Self, TensorError> {
        let Some(size) = dtype.size() else {
            return Err(TensorError::WrongStorage {
                dtype,
                wanted: "strings",
                other: "data",
            });
        };
        let expected = element_count(&shape)?;
        // Checked: a plugin's output declares any shape, and a product that wrapped could
        // match a short buffer (`[1 << 62]` f32 is 2^64 bytes, 0 once wrapped).
        if expected.checked_mul(size) != Some(data.len()) {
            return Err(TensorError::ElementCount {
                dtype,
                shape,
                expected,
                given: data.len() / size,
            });
        }
        Ok(Self {
            dtype,
            shape,
            data,
            strings: Vec::new(),
        })
    }

    /// A string tensor, one byte string per element.
    pub fn from_strings(shape: Vec<i64>, strings: Vec<Bytes>) -> Result<Self, TensorError> {
        let expected = element_count(&shape)?;
        if strings.len() != expected {
            return Err(TensorError::ElementCount {
                dtype: DType::Str,
                shape,
                expected,
                given: strings.len(),
            });
        }
        Ok(Self {
            dtype: DType::Str,
            shape,
            data: Bytes::new(),
            strings,
        })
    }

    /// Builds a tensor from the plugin contract's parts, whichever storage the dtype uses.
    pub fn from_parts(
        dtype: DType,
        shape: Vec<i64>,
        data: Bytes,
        strings: Vec<Bytes>,
    ) -> Result<Self, TensorError> {
        match dtype {
            DType::Str if !data.is_empty() => Err(TensorError::WrongStorage {
                dtype,
                wanted: "strings",
                other: "data",
            }),
            DType::Str => Self::from_strings(shape, strings),
            _ if !strings.is_empty() => Err(TensorError::WrongStorage {
                dtype,
                wanted: "data",
                other: "strings",
            }),
            _ => Self::from_bytes(dtype, shape, data),
        }
    }

    /// An `f32` tensor from values (a convenience for tests and REST decoding).
    pub fn from_f32(shape: Vec<i64>, values: &[f32]) -> Result<Self, TensorError> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::from_bytes(DType::F32, shape, bytes.into())
    }

    /// An `i64` tensor from values.
    pub fn from_i64(shape: Vec<i64>, values: &[i64]) -> Result<Self, TensorError> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::from_bytes(DType::I64, shape, bytes.into())
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[i64] {
        &self.shape
    }

    /// Raw little-endian element bytes (empty for strings).
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// String elements (empty for numeric tensors).
    pub fn strings(&self) -> &[Bytes] {
        &self.strings
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        element_count(&self.shape).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of dim 0 — the rows a batch counts. A scalar has no rows.
    pub fn rows(&self) -> Option<usize> {
        self.shape.first().map(|&d| d as usize)
    }

    /// Approximate bytes held, for limits.
    pub fn byte_size(&self) -> usize {
        self.data.len() + self.strings.iter().map(bytes::Bytes::len).sum::<usize>()
    }

    /// `f32` elements, or `None` if this is not an `f32` tensor.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        (self.dtype == DType::F32).then(|| {
            self.data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
    }

    /// `i64` elements, or `None` if this is not an `i64` tensor.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        (self.dtype == DType::I64).then(|| {
            self.data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8-byte chunk")))
                .collect()
        })
    }

    /// Concatenates tensors along dim 0. All must share dtype and the dims after dim 0.
    pub fn concat(parts: &[Tensor]) -> Result<Tensor, TensorError> {
        let first = parts
            .first()
            .ok_or_else(|| TensorError::Concat("no tensors".into()))?;
        if first.shape.is_empty() {
            return Err(TensorError::Concat("a scalar has no dim 0".into()));
        }
        let mut rows = 0i64;
        for part in parts {
            if part.dtype != first.dtype {
                return Err(TensorError::Concat(format!(
                    "dtype {} differs from {}",
                    part.dtype, first.dtype
                )));
            }
            if part.shape.len() != first.shape.len() || part.shape[1..] != first.shape[1..] {
                return Err(TensorError::Concat(format!(
                    "shape {:?} differs from {:?} beyond dim 0",
                    part.shape, first.shape
                )));
            }
            // Checked: shapes with a 0 in them pass from_bytes whatever their other dims are.
            rows = rows.checked_add(part.shape[0]).ok_or_else(|| {
                TensorError::Concat(format!("{rows} rows in all is more than a tensor holds"))
            })?;
        }
        let mut shape = first.shape.clone();
        shape[0] = rows;
        if parts.len() == 1 {
            return Ok(first.clone());
        }
        if first.dtype == DType::Str {
            let strings = parts
                .iter()
                .flat_map(|p| p.strings.iter().cloned())
                .collect();
            return Tensor::from_strings(shape, strings);
        }
        let mut data = Vec::with_capacity(parts.iter().map(|p| p.data.len()).sum());
        for part in parts {
            data.extend_from_slice(&part.data);
        }
        Tensor::from_bytes(first.dtype, shape, data.into())
    }

    /// Rows `start..start + count` along dim 0, sharing the underlying bytes.
    pub fn slice_rows(&self, start: usize, count: usize) -> Result<Tensor, TensorError> {
        let rows = self
            .rows()
            .ok_or_else(|| TensorError::Split("a scalar has no dim 0".into()))?;
        let end = start
            .checked_add(count)
            .filter(|&end| end <= rows)
            .ok_or_else(|| {
                TensorError::Split(format!("rows {start}..{start}+{count} out of {rows}"))
            })?;
        // Checked: a tensor with 0 rows is valid whatever its inner dims multiply to.
        let per_row = self.shape[1..]
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
            .ok_or_else(|| {
                TensorError::Split(format!("inner dims {:?} are too large", &self.shape[1..]))
            })?;
        let mut shape = self.shape.clone();
        shape[0] = count as i64;
        if self.dtype == DType::Str {
            let strings = self.strings[start * per_row..end * per_row].to_vec();
            return Ok(Tensor {
                dtype: self.dtype,
                shape,
                data: Bytes::new(),
                strings,
            });
        }
        // In range: start..end lies within the rows, whose bytes from_bytes checked.
        let row_bytes = per_row * self.dtype.size().unwrap_or(0);
        let data = self.data.slice(start * row_bytes..end * row_bytes);
        Ok(Tensor {
            dtype: self.dtype,
            shape,
            data,
            strings: Vec::new(),
        })
    }
}

/// Elements a shape holds, rejecting negative dimensions.
pub fn element_count(shape: &[i64]) -> Result<usize, TensorError> {
    shape.iter().try_fold(1usize, |n, &d| {
        if d < 0 {
            Err(TensorError::NegativeDim {
                shape: shape.to_vec(),
            })
        } else {
            Ok(n.saturating_mul(d as usize))
        }
    })
}

/// Named tensors in a stable order, as requests and responses carry them.
pub type NamedTensors = Vec<(String, Tensor)>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Shapes holding a 0 are valid whatever their other dims are, so nothing computed from
    /// those dims may overflow: concat's row sum and slice's row size are checked.
    #[test]
    fn empty_tensors_with_huge_dims_split_and_join_without_overflow() {
        let huge = 1i64 << 62;
        let rows = Tensor::from_bytes(DType::F32, vec![huge, 0], Bytes::new()).unwrap();
        let error = Tensor::concat(&[rows.clone(), rows]).unwrap_err();
        assert!(
            error.to_string().contains("more than a tensor holds"),
            "{error}"
        );
        let empty = Tensor::from_bytes(DType::F32, vec![0, huge, huge], Bytes::new()).unwrap();
        let error = empty.slice_rows(0, 0).unwrap_err();
        assert!(error.to_string().contains("too large"), "{error}");
        let error = empty.slice_rows(usize::MAX, 2).unwrap_err();
        assert!(error.to_string().contains("out of 0"), "{error}");
    }

    /// Concatenating two requests' rows and slicing them back gives each its own rows.
    #[test]
    fn concat_then_slice_round_trips() {
        let a = Tensor::from_f32(vec![1, 2], &[1.0, 2.0]).unwrap();
        let b = Tensor::from_f32(vec![2, 2], &[3.0, 4.0, 5.0, 6.0]).unwrap();
        let joined = Tensor::concat(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(joined.shape(), &[3, 2]);
        assert_eq!(joined.slice_rows(0, 1).unwrap(), a);
        assert_eq!(joined.slice_rows(1, 2).unwrap(), b);
    }

    /// Shapes that differ beyond dim 0 never concatenate.
    #[test]
    fn concat_rejects_mismatched_inner_dims() {
        let a = Tensor::from_f32(vec![1, 2], &[1.0, 2.0]).unwrap();
        let b = Tensor::from_f32(vec![1, 3], &[1.0, 2.0, 3.0]).unwrap();
        assert!(matches!(
            Tensor::concat(&[a, b]),
            Err(TensorError::Concat(_))
        ));
    }

    /// A byte count that disagrees with the shape is refused with both numbers.
    #[test]
    fn from_bytes_checks_element_count() {
        let err =
            Tensor::from_bytes(DType::F32, vec![2, 2], Bytes::from(vec![0u8; 12])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "shape [2, 2] holds 4 f32 elements but 3 were given"
        );
    }

    /// A shape whose byte size overflows is refused, not wrapped into a match with a short
    /// buffer: a plugin output the `plugin_output` fuzz target builds, `[1 << 62]` f32, no data.
    #[test]
    fn from_bytes_refuses_a_byte_size_past_usize() {
        for (dtype, shape) in [
            (DType::F32, vec![1i64 << 62]),
            (DType::F64, vec![1 << 61]),
            (DType::I16, vec![1 << 62, 2]),
            (DType::U64, vec![i64::MAX, i64::MAX]),
        ] {
            let err = Tensor::from_bytes(dtype, shape.clone(), Bytes::new()).unwrap_err();
            assert!(
                matches!(err, TensorError::ElementCount { given: 0, .. }),
                "{dtype} {shape:?}: {err}"
            );
        }
    }

    /// String tensors slice by element, not by byte.
    #[test]
    fn string_rows_slice() {
        let t = Tensor::from_strings(vec![3], vec!["a".into(), "bb".into(), "c".into()]).unwrap();
        assert_eq!(
            t.slice_rows(1, 2).unwrap().strings(),
            &[Bytes::from("bb"), Bytes::from("c")]
        );
    }
}
