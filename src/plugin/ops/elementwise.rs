//! `normalize` and `cast`: one output element per input element, with numpy's semantics.

use half::{bf16, f16};

use super::{Array, Budget, Layout, OpResult, image_dims, invalid};
use crate::tensor::DType;

/// Elements per deadline check in the element-wise loops.
const CHUNK: usize = 1 << 16;

/// One element, exactly: floats (f16/bf16/f32 widen to f64 without loss) or integers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Scalar {
    Float(f64),
    Int(i128),
}

/// Element `i` of `data` read as `dtype` (numeric dtypes only).
pub(super) fn read(dtype: DType, data: &[u8], i: usize) -> Scalar {
    macro_rules! le {
        ($t:ty) => {{
            const N: usize = size_of::<$t>();
            let mut b = [0u8; N];
            b.copy_from_slice(&data[i * N..(i + 1) * N]);
            <$t>::from_le_bytes(b)
        }};
    }
    match dtype {
        DType::F16 => Scalar::Float(f16::from_bits(le!(u16)).to_f64()),
        DType::BF16 => Scalar::Float(bf16::from_bits(le!(u16)).to_f64()),
        DType::F32 => Scalar::Float(f64::from(le!(f32))),
        DType::F64 => Scalar::Float(le!(f64)),
        DType::I8 => Scalar::Int(i128::from(le!(i8))),
        DType::I16 => Scalar::Int(i128::from(le!(i16))),
        DType::I32 => Scalar::Int(i128::from(le!(i32))),
        DType::I64 => Scalar::Int(i128::from(le!(i64))),
        DType::U8 => Scalar::Int(i128::from(data[i])),
        DType::U16 => Scalar::Int(i128::from(le!(u16))),
        DType::U32 => Scalar::Int(i128::from(le!(u32))),
        DType::U64 => Scalar::Int(i128::from(le!(u64))),
        DType::Bool => Scalar::Int(i128::from(data[i] != 0)),
        DType::Str => unreachable!("string tensors are refused before any op reads them"),
    }
}

/// Appends `v` converted to `dtype`, as numpy's `astype` where numpy defines it: float →
/// integer truncates toward zero and saturates (NaN → 0); integer → narrower integer
/// saturates too; to float rounds to nearest (even); to bool is `v != 0`.
pub(super) fn write(dtype: DType, v: Scalar, out: &mut Vec<u8>) {
    macro_rules! int {
        ($t:ty) => {{
            let x: $t = match v {
                // Rust's float → int `as` truncates, saturates and maps NaN to 0.
                Scalar::Float(f) => f as $t,
                Scalar::Int(i) => i.clamp(<$t>::MIN as i128, <$t>::MAX as i128) as $t,
            };
            out.extend_from_slice(&x.to_le_bytes());
        }};
    }
    let float = || match v {
        Scalar::Float(f) => f,
        Scalar::Int(i) => i as f64,
    };
    match dtype {
        DType::F16 => out.extend_from_slice(
            &match v {
                Scalar::Float(f) => f16::from_f64(f),
                Scalar::Int(i) => f16::from_f32(i as f32),
            }
            .to_le_bytes(),
        ),
        DType::BF16 => out.extend_from_slice(
            &match v {
                Scalar::Float(f) => bf16::from_f64(f),
                Scalar::Int(i) => bf16::from_f32(i as f32),
            }
            .to_le_bytes(),
        ),
        // Integers go to f32 in one rounding (i128 → f32 is correctly rounded).
        DType::F32 => out.extend_from_slice(
            &match v {
                Scalar::Float(f) => f as f32,
                Scalar::Int(i) => i as f32,
            }
            .to_le_bytes(),
        ),
        DType::F64 => out.extend_from_slice(&float().to_le_bytes()),
        DType::I8 => int!(i8),
        DType::I16 => int!(i16),
        DType::I32 => int!(i32),
        DType::I64 => int!(i64),
        DType::U8 => int!(u8),
        DType::U16 => int!(u16),
        DType::U32 => int!(u32),
        DType::U64 => int!(u64),
        DType::Bool => out.push(u8::from(match v {
            Scalar::Float(f) => f != 0.0,
            Scalar::Int(i) => i != 0,
        })),
        DType::Str => unreachable!("cast to str is refused before it runs"),
    }
}

/// Every element converted to `to` (same dtype: returned unchanged).
pub fn cast(t: Array, to: DType, budget: &mut Budget) -> OpResult<Array> {
    let count = t.checked("t")?;
    if to == DType::Str {
        return invalid("to: cast does not convert to or from str");
    }
    if t.dtype == to {
        return Ok(t);
    }
    let size = to.size().unwrap_or(1);
    let mut out = budget.with_capacity::<u8>(count * size, "the cast tensor")?;
    for i in 0..count {
        if i % CHUNK == 0 {
            budget.check()?;
        }
        write(to, read(t.dtype, &t.data, i), &mut out);
    }
    Ok(Array {
        dtype: to,
        shape: t.shape,
        data: out,
    })
}

/// `(x * scale - mean[c]) / std[c]` as f32, each step rounded to f32 as numpy computes on a
/// float32 array. Rank 1 and 2: the last axis is the channel axis; rank 3 and 4: `layout`'s.
pub fn normalize(
    t: &Array,
    layout: Layout,
    scale: f32,
    mean: &[f32],
    std: &[f32],
    budget: &mut Budget,
) -> OpResult<Array> {
    let count = t.checked("t")?;
    let (c, plane) = match t.shape.len() {
        0 => (1, 1),
        1 | 2 => (t.shape[t.shape.len() - 1] as usize, 1),
        _ => {
            let [_, h, w, c] = image_dims(t, layout, "t")?;
            (c, if layout == Layout::Chw { h * w } else { 1 })
        }
    };
    for (name, values) in [("mean", mean), ("std", std)] {
        if !(values.len() <= 1 || values.len() == c) {
            return invalid(format!(
                "{name}: {} values; give 0, 1 or {c} (one per channel)",
                values.len()
            ));
        }
    }
    if std.contains(&0.0) {
        return invalid("std: must not contain 0");
    }
    let per_channel = |values: &[f32], default: f32, k: usize| match values.len() {
        0 => default,
        1 => values[0],
        _ => values[k],
    };
    let means: Vec<f32> = (0..c.max(1)).map(|k| per_channel(mean, 0.0, k)).collect();
    let stds: Vec<f32> = (0..c.max(1)).map(|k| per_channel(std, 1.0, k)).collect();
    let one = |x: f32, k: usize| (x * scale - means[k]) / stds[k];
    let mut out = budget.with_capacity::<u8>(count * 4, "the normalized tensor")?;
    let channel = |i: usize| if c <= 1 { 0 } else { (i / plane) % c };
    if t.dtype == DType::U8 {
        // 256 possible inputs per channel: each computed once.
        let tables: Vec<[f32; 256]> = (0..c.max(1))
            .map(|k| std::array::from_fn(|v| one(v as f32, k)))
            .collect();
        for (i, &v) in t.data.iter().enumerate() {
            out.extend_from_slice(&tables[channel(i)][usize::from(v)].to_le_bytes());
        }
    } else {
        for i in 0..count {
            if i % CHUNK == 0 {
                budget.check()?;
            }
            // To f32 first, as `np.asarray(x, np.float32)`.
            let x = match read(t.dtype, &t.data, i) {
                Scalar::Float(f) => f as f32,
                Scalar::Int(v) => v as f32,
            };
            out.extend_from_slice(&one(x, channel(i)).to_le_bytes());
        }
    }
    Ok(Array {
        dtype: DType::F32,
        shape: t.shape.clone(),
        data: out,
    })
}
