//! `softmax`, `argmax` and `top-k`: over the last axis of a tensor, row by row.

use std::cmp::Ordering;

use half::{bf16, f16};

use super::elementwise::{Scalar, read};
use super::{Array, Budget, OpResult, invalid};
use crate::tensor::DType;

/// Rows of at least this many elements get a deadline check each; shorter rows one per
/// this many elements.
const CHUNK: usize = 1 << 14;

/// `(rows, row length)` of a numeric tensor with a non-empty last axis.
fn rows(t: &Array, what: &str) -> OpResult<(usize, usize)> {
    let count = t.checked("t")?;
    match t.shape.last() {
        Some(&n) if n > 0 => Ok((count / n as usize, n as usize)),
        _ => invalid(format!(
            "t: {what} needs a tensor with a non-empty last axis, not shape {:?}",
            t.shape
        )),
    }
}

/// Softmax over the last axis: `e = exp(x - max(x)); e / e.sum()`, in f32 (f64 for f64):
/// each step rounded to the compute type, the sum accumulated in f64. A row with a NaN is all
/// NaN.
pub fn softmax(t: &Array, budget: &mut Budget) -> OpResult<Array> {
    let (n_rows, n) = rows(t, "softmax")?;
    let wide = match t.dtype {
        DType::F16 | DType::BF16 | DType::F32 => false,
        DType::F64 => true,
        other => {
            return invalid(format!(
                "t: softmax takes f16, bf16, f32 or f64, not {}",
                other.name()
            ));
        }
    };
    // Rounds to the compute type: f32 for every dtype but f64.
    let round = |x: f64| if wide { x } else { f64::from(x as f32) };
    let size = t.dtype.size().unwrap_or(4);
    let mut out = budget.with_capacity::<u8>(t.data.len(), "the softmax result")?;
    let mut row = budget.zeroed::<f64>(n, "a softmax row")?;
    for r in 0..n_rows {
        if r % (CHUNK / n).max(1) == 0 {
            budget.check()?;
        }
        for (j, slot) in row.iter_mut().enumerate() {
            *slot = match read(t.dtype, &t.data, r * n + j) {
                Scalar::Float(f) => round(f),
                Scalar::Int(_) => unreachable!("float dtypes only"),
            };
        }
        if row.iter().any(|v| v.is_nan()) {
            row.iter_mut().for_each(|v| *v = f64::NAN);
        } else {
            let top = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            row.iter_mut()
                .for_each(|v| *v = round(round(*v - top).exp()));
            let total = round(row.iter().sum::<f64>());
            row.iter_mut().for_each(|v| *v = round(*v / total));
        }
        for &v in &row {
            match t.dtype {
                DType::F16 => out.extend_from_slice(&f16::from_f64(v).to_le_bytes()),
                DType::BF16 => out.extend_from_slice(&bf16::from_f64(v).to_le_bytes()),
                DType::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
                _ => out.extend_from_slice(&v.to_le_bytes()),
            }
        }
    }
    debug_assert_eq!(out.len(), n_rows * n * size);
    Ok(Array {
        dtype: t.dtype,
        shape: t.shape.clone(),
        data: out,
    })
}

/// Compares two elements of one dtype with NaN the largest (and NaNs equal).
fn order(a: Scalar, b: Scalar) -> Ordering {
    match (a, b) {
        (Scalar::Int(x), Scalar::Int(y)) => x.cmp(&y),
        (Scalar::Float(x), Scalar::Float(y)) => match (x.is_nan(), y.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            // -0.0 == 0.0, as numpy compares.
            (false, false) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        },
        _ => unreachable!("one tensor, one dtype"),
    }
}

fn i64_tensor(shape: Vec<i64>, values: &[i64]) -> Array {
    Array {
        dtype: DType::I64,
        shape,
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Index of the largest element of each row (`np.argmax(a, -1)`): the first on ties, the
/// first NaN if any. `i64`, shape without the last axis.
pub fn argmax(t: &Array, budget: &mut Budget) -> OpResult<Array> {
    let (n_rows, n) = rows(t, "argmax")?;
    budget.charge(n_rows, 8, "the argmax result")?;
    let mut best = Vec::with_capacity(n_rows);
    for r in 0..n_rows {
        if r % (CHUNK / n).max(1) == 0 {
            budget.check()?;
        }
        let mut at = 0;
        let mut top = read(t.dtype, &t.data, r * n);
        for j in 1..n {
            let v = read(t.dtype, &t.data, r * n + j);
            // Strictly greater: the first of equal maxima (and of NaNs) wins.
            if order(v, top) == Ordering::Greater {
                (at, top) = (j, v);
            }
        }
        best.push(at as i64);
    }
    let shape = t.shape[..t.shape.len() - 1].to_vec();
    Ok(i64_tensor(shape, &best))
}

/// The `k` largest of each row, largest first, ties to the lower index, NaN the largest:
/// `(values, indices)`, both `[..., min(k, n)]`.
pub fn top_k(t: &Array, k: u32, budget: &mut Budget) -> OpResult<(Array, Array)> {
    if k == 0 {
        return invalid("k: must be at least 1");
    }
    let (n_rows, n) = rows(t, "top_k")?;
    let k = (k as usize).min(n);
    let size = t.dtype.size().unwrap_or(1);
    budget.charge(n_rows * k, size + 8, "the top_k result")?;
    let mut order_buf = budget.zeroed::<usize>(n, "a top_k row")?;
    let mut values = Vec::with_capacity(n_rows * k * size);
    let mut indices = Vec::with_capacity(n_rows * k);
    for r in 0..n_rows {
        if r % (CHUNK / n).max(1) == 0 {
            budget.check()?;
        }
        let row: Vec<Scalar> = (0..n).map(|j| read(t.dtype, &t.data, r * n + j)).collect();
        order_buf.iter_mut().enumerate().for_each(|(j, o)| *o = j);
        // A stable sort, descending: equal elements keep their index order.
        order_buf.sort_by(|&a, &b| order(row[b], row[a]));
        for &j in &order_buf[..k] {
            let at = (r * n + j) * size;
            values.extend_from_slice(&t.data[at..at + size]);
            indices.push(j as i64);
        }
    }
    let mut shape = t.shape.clone();
    *shape.last_mut().expect("rank checked") = k as i64;
    Ok((
        Array {
            dtype: t.dtype,
            shape: shape.clone(),
            data: values,
        },
        i64_tensor(shape, &indices),
    ))
}
