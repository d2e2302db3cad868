//! What may share a batch: the [`BatchKey`] (model, version, signature, and every input's
//! name, dtype and dims after dim 0), and the shape work on a batch — concatenation, padding
//! to an allowed size or to a common inner length, and splitting outputs back per request.

use bytes::Bytes;

use super::{BatchError, pad_bytes};
use crate::backend::ModelTarget;
use crate::tensor::{DType, NamedTensors, Tensor};

/// Requests with equal keys may be batched together; nothing else is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BatchKey {
    pub target: ModelTarget,
    /// Per input, sorted by name: dtype and dims after dim 0. With variable-length padding
    /// only the rank counts, since inner dims are padded to agree.
    pub inputs: Vec<(String, DType, Vec<i64>)>,
}

impl BatchKey {
    /// The key of a request and its [`Footprint`] (its rows: the dim 0 all its inputs share).
    pub fn of(
        target: ModelTarget,
        inputs: &NamedTensors,
        pad_inner: bool,
    ) -> Result<(BatchKey, Footprint), BatchError> {
        let mut rows = None;
        let mut key_inputs = Vec::with_capacity(inputs.len());
        for (name, t) in inputs {
            let Some(r) = t.rows() else {
                return Err(BatchError::Unbatchable(format!(
                    "input `{name}` is a scalar; batching needs a dim 0"
                )));
            };
            if *rows.get_or_insert(r) != r {
                return Err(BatchError::Unbatchable(format!(
                    "inputs disagree on dim 0 (`{name}` has {r} rows, another has {})",
                    rows.unwrap_or(0)
                )));
            }
            let inner = if pad_inner {
                vec![-1; t.shape().len() - 1]
            } else {
                t.shape()[1..].to_vec()
            };
            key_inputs.push((name.clone(), t.dtype(), inner, t));
        }
        key_inputs.sort_by(|a, b| a.0.cmp(&b.0));
        let rows = rows.ok_or_else(|| BatchError::Unbatchable("request has no inputs".into()))?;
        if rows == 0 {
            return Err(BatchError::Unbatchable("request has 0 rows".into()));
        }
        let footprint = Footprint {
            rows,
            inputs: key_inputs
                .iter()
                .map(|(_, dtype, _, t)| {
                    // Tensors never hold negative dims (their constructors refuse them).
                    let inner = t.shape()[1..].iter().map(|&d| d.max(0) as usize).collect();
                    (inner, element_bytes(*dtype))
                })
                .collect(),
        };
        let key = BatchKey {
            target,
            inputs: key_inputs
                .into_iter()
                .map(|(name, dtype, inner, _)| (name, dtype, inner))
                .collect(),
        };
        Ok((key, footprint))
    }
}

/// Bytes one element takes in a batch: its width, or for strings the handle to the shared
/// bytes (concatenating string tensors copies handles, not the strings).
fn element_bytes(dtype: DType) -> usize {
    dtype.size().unwrap_or(std::mem::size_of::<Bytes>())
}

/// How big a request, or a batch of them, is once sent: its rows and, per input (in key
/// order), the dims after dim 0 (for a batch, the largest of its requests': what inner-dim
/// padding pads to) and the bytes per element. Everything the batcher allocates for a batch
/// is bounded by [`Footprint::bytes`], checked before anything is allocated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footprint {
    pub rows: usize,
    inputs: Vec<(Vec<usize>, usize)>,
}

impl Footprint {
    /// The footprint of a batch holding both: rows added, inner dims the larger of the two.
    pub fn merge(&self, other: &Footprint) -> Footprint {
        let inputs = self
            .inputs
            .iter()
            .zip(&other.inputs)
            .map(|((a, size), (b, _))| {
                let dims = a.iter().zip(b).map(|(x, y)| *x.max(y)).collect();
                (dims, *size)
            })
            .collect();
        Footprint {
            rows: self.rows.saturating_add(other.rows),
            inputs,
        }
    }

    /// Tensor bytes of the batch as sent: rows padded up to an allowed batch size, times
    /// the (padded) inner elements, times the element size, over every input. `None` when
    /// that overflows `usize`, which is over any limit.
    pub fn bytes(&self, allowed_batch_sizes: &[usize]) -> Option<usize> {
        let rows = padded_rows(self.rows, allowed_batch_sizes);
        self.inputs.iter().try_fold(0usize, |total, (dims, size)| {
            let elements = dims
                .iter()
                .try_fold(rows, |n, &d| n.checked_mul(d))?
                .checked_mul(*size)?;
            total.checked_add(elements)
        })
    }
}

/// Concatenates the requests' inputs along dim 0, name by name, padding inner dims to the
/// batch's largest with `pad_value` when `pad_inner`, then repeating the first row
/// `extra_rows` times (padding up to an allowed batch size).
pub fn concat(
    requests: &[&NamedTensors],
    names: &[String],
    pad_inner: Option<f64>,
    extra_rows: usize,
) -> Result<NamedTensors, String> {
    let mut batch = Vec::with_capacity(names.len());
    for name in names {
        let mut parts: Vec<Tensor> = requests
            .iter()
            .map(|inputs| {
                inputs
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, t)| t.clone())
            })
            .collect::<Option<_>>()
            .ok_or_else(|| format!("input `{name}` missing from a batched request"))?;
        if let Some(value) = pad_inner {
            parts = pad_to_common_shape(parts, value)?;
        }
        if extra_rows > 0 {
            let first_row = parts[0].slice_rows(0, 1).map_err(|e| e.to_string())?;
            parts.extend(std::iter::repeat_n(first_row, extra_rows));
        }
        batch.push((
            name.clone(),
            Tensor::concat(&parts).map_err(|e| e.to_string())?,
        ));
    }
    Ok(batch)
}

/// Pads every tensor's dims after dim 0 up to the largest among them (data placed at the
/// start of each dim, `value` after it). Sizes are checked, never assumed: the batcher has
/// already bounded the result by `max_batch_bytes`, and an overflow here is an error.
fn pad_to_common_shape(parts: Vec<Tensor>, value: f64) -> Result<Vec<Tensor>, String> {
    let rank = parts[0].shape().len();
    if rank == 0 {
        return Err("a scalar has no dim 0 to batch along".to_string());
    }
    if parts.iter().any(|p| p.shape().len() != rank) {
        return Err("inputs of different ranks can't be padded to one shape".to_string());
    }
    let mut target = parts[0].shape().to_vec();
    for p in &parts {
        for (t, &d) in target.iter_mut().zip(p.shape()).skip(1) {
            *t = (*t).max(d);
        }
    }
    parts
        .into_iter()
        .map(|p| {
            if p.shape()[1..] == target[1..] {
                return Ok(p);
            }
            if p.dtype() == DType::Str {
                return Err("string inputs can't be padded".to_string());
            }
            let mut shape = target.clone();
            shape[0] = p.shape()[0];
            pad_tensor(&p, &shape, value)
        })
        .collect()
}

/// Elements of `shape`, or `None` if a dim is negative or the product overflows.
fn checked_elements(shape: &[i64]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
}

/// `t` padded out to `shape` (same rank, every dim at least `t`'s) with `value`.
fn pad_tensor(t: &Tensor, shape: &[i64], value: f64) -> Result<Tensor, String> {
    let rank = shape.len();
    let size = t.dtype().size().unwrap_or(1);
    let pad = pad_bytes(t.dtype(), value);
    let too_large = || format!("padding to shape {shape:?} overflows");
    let total = checked_elements(shape).ok_or_else(too_large)?;
    total.checked_mul(size).ok_or_else(too_large)?;
    let out_dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let src_dims: Vec<usize> = t.shape().iter().map(|&d| d.max(0) as usize).collect();
    if src_dims.len() != rank || src_dims.iter().zip(&out_dims).any(|(s, o)| s > o) {
        return Err(format!(
            "shape {:?} can't be padded to {shape:?}",
            t.shape()
        ));
    }
    let mut out = pad.repeat(total);
    // Copy each innermost run of the source into its place in the padded layout. Every
    // offset below is less than `total * size`, which fits, so plain arithmetic is safe.
    let inner = src_dims[rank - 1] * size;
    let runs: usize = src_dims[..rank - 1].iter().product();
    let data = t.data();
    let mut index = vec![0usize; rank - 1];
    for run in 0..runs {
        // The run's multi-index in the source → offset in the destination.
        let mut rem = run;
        for axis in (0..rank - 1).rev() {
            index[axis] = rem % src_dims[axis];
            rem /= src_dims[axis];
        }
        let mut dst = 0usize;
        let mut stride = 1usize;
        for axis in (0..rank - 1).rev() {
            dst += index[axis] * stride;
            stride *= out_dims[axis];
        }
        let dst = dst * out_dims[rank - 1] * size;
        out[dst..dst + inner].copy_from_slice(&data[run * inner..run * inner + inner]);
    }
    Tensor::from_bytes(t.dtype(), shape.to_vec(), Bytes::from(out)).map_err(|e| e.to_string())
}

/// Splits the batch's outputs back into each request's rows. Every output must have the
/// batch's total rows in dim 0; anything else fails the batch rather than mis-split it.
pub fn split(
    outputs: &NamedTensors,
    rows: &[usize],
    total: usize,
) -> Result<Vec<NamedTensors>, String> {
    for (name, t) in outputs {
        if t.rows() != Some(total) {
            return Err(format!(
                "output `{name}` has shape {:?}, but the batch has {total} rows in dim 0; it can't be split back \
                 into its requests (set batching.max_batch_size = 1 for models whose outputs aren't per row)",
                t.shape()
            ));
        }
    }
    let mut start = 0;
    let mut per_request = Vec::with_capacity(rows.len());
    for &n in rows {
        let mine = outputs
            .iter()
            .map(|(name, t)| {
                t.slice_rows(start, n)
                    .map(|s| (name.clone(), s))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        per_request.push(mine);
        start += n;
    }
    Ok(per_request)
}

/// Rows a batch is sent with: its real rows, or the smallest allowed size that holds them.
pub fn padded_rows(rows: usize, allowed: &[usize]) -> usize {
    allowed.iter().copied().find(|&a| a >= rows).unwrap_or(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::VersionChoice;

    fn target() -> ModelTarget {
        ModelTarget {
            name: "m".into(),
            version: VersionChoice::Latest,
            signature: "s".into(),
        }
    }

    fn f32s(shape: &[i64], values: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), values).unwrap()
    }

    /// Requests with different inner shapes get different keys; padding makes them equal.
    #[test]
    fn key_separates_shapes_unless_padding() {
        let a = vec![("x".to_string(), f32s(&[1, 2], &[1.0, 2.0]))];
        let b = vec![("x".to_string(), f32s(&[1, 3], &[1.0, 2.0, 3.0]))];
        assert_ne!(
            BatchKey::of(target(), &a, false).unwrap().0,
            BatchKey::of(target(), &b, false).unwrap().0
        );
        assert_eq!(
            BatchKey::of(target(), &a, true).unwrap().0,
            BatchKey::of(target(), &b, true).unwrap().0
        );
    }

    /// Inner-dim padding puts each row's data first and the pad value after it.
    #[test]
    fn pads_inner_dims() {
        let a = vec![("x".to_string(), f32s(&[1, 2], &[1.0, 2.0]))];
        let b = vec![(
            "x".to_string(),
            f32s(&[2, 3], &[3.0, 4.0, 5.0, 6.0, 7.0, 8.0]),
        )];
        let batch = concat(&[&a, &b], &["x".into()], Some(-1.0), 0).unwrap();
        assert_eq!(batch[0].1.shape(), &[3, 3]);
        assert_eq!(
            batch[0].1.to_f32().unwrap(),
            vec![1.0, 2.0, -1.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
        );
    }

    /// Padding to an allowed size repeats a real row, and split drops the padding.
    #[test]
    fn allowed_size_padding_round_trips() {
        let a = vec![("x".to_string(), f32s(&[1, 1], &[5.0]))];
        let b = vec![("x".to_string(), f32s(&[2, 1], &[6.0, 7.0]))];
        assert_eq!(padded_rows(3, &[2, 4, 8]), 4);
        let batch = concat(&[&a, &b], &["x".into()], None, 1).unwrap();
        assert_eq!(batch[0].1.to_f32().unwrap(), vec![5.0, 6.0, 7.0, 5.0]);
        let parts = split(&batch, &[1, 2], 4).unwrap();
        assert_eq!(parts[0][0].1.to_f32().unwrap(), vec![5.0]);
        assert_eq!(parts[1][0].1.to_f32().unwrap(), vec![6.0, 7.0]);
    }

    /// An output whose dim 0 isn't the batch total fails loudly.
    #[test]
    fn split_refuses_non_row_outputs() {
        let outputs = vec![("y".to_string(), f32s(&[2], &[1.0, 2.0]))];
        let err = split(&outputs, &[1, 2], 3).unwrap_err();
        assert!(
            err.contains("output `y`") && err.contains("3 rows"),
            "{err}"
        );
    }
}
