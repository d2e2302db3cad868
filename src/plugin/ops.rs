//! The host side of the `ops` interface (contract 0.2.0): native image and tensor ops a plugin
//! imports instead of bundling Pillow/numpy equivalents. Each op runs on the calling plugin's
//! budget: its result and scratch buffers are checked against what the model's memory cap
//! leaves the guest *before* they are allocated (`limit`), and it checks the call's deadline
//! between rows, so a long op fails the call as a guest running past `timeout_ms` does (504).
//!
//! The kernels live in the submodules, on plain [`Array`]s, so they are tested against
//! Pillow/numpy outputs without a store (`tests/ops/`); this file adapts them to the WIT types.
//!
//! - `decode`: PNG/JPEG bytes → u8 image, limits checked against the header.
//! - `jpeg`: baseline JPEG as libjpeg decodes it (Pillow's pixels); the rest to the image crate.
//! - `resize`: Pillow's resampling (its coefficients and fixed-point rounding).
//! - `window`: crop and center-crop.
//! - `elementwise`: normalize and cast.
//! - `reduce`: softmax, argmax, top-k over the last axis.

mod decode;
mod elementwise;
mod jpeg;
mod reduce;
mod resize;
#[cfg(test)]
mod tests;
mod window;

use std::time::Instant;

pub use decode::{DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, Limits, decode_image};
pub use elementwise::{cast, normalize};
pub use reduce::{argmax, softmax, top_k};
pub use resize::{Filter, resize};
pub use window::{center_crop, crop};

use super::bindings::ops as wit;
use super::bindings::types as wit_types;
use super::convert::{dtype_from_wit, dtype_to_wit};
use super::sandbox::Sandbox;
use crate::tensor::DType;

/// A dense numeric tensor as the ops see it: row-major little-endian `data`, as in the WIT
/// `tensor` record (string tensors are refused by every op).
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub dtype: DType,
    pub shape: Vec<i64>,
    pub data: Vec<u8>,
}

/// Where the channel axis of an image tensor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Hwc,
    Chw,
}

/// Pixel format a decoded image is converted to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Color {
    Gray,
    Rgb,
}

/// Why an op did not answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Fail {
    /// A malformed argument; the message names it.
    Invalid(String),
    /// Over a limit (decode limits, the memory cap); the message names it and the size.
    Limit(String),
    /// The call's deadline passed while the op ran.
    Deadline,
}

pub type OpResult<T> = Result<T, Fail>;

pub(crate) fn invalid<T>(message: impl Into<String>) -> OpResult<T> {
    Err(Fail::Invalid(message.into()))
}

/// What one op may spend: the bytes the memory cap leaves the guest, and the call's deadline.
#[derive(Debug)]
pub struct Budget {
    bytes_left: usize,
    cap_bytes: usize,
    deadline: Instant,
}

impl Budget {
    /// `bytes_left` of a `cap_bytes` memory cap, until `deadline`.
    pub fn new(bytes_left: usize, cap_bytes: usize, deadline: Instant) -> Self {
        Self {
            bytes_left,
            cap_bytes,
            deadline,
        }
    }

    /// Charges `count` elements of `size` bytes, for `what`, before they are allocated.
    pub fn charge(&mut self, count: usize, size: usize, what: &str) -> OpResult<()> {
        let bytes = count
            .checked_mul(size)
            .ok_or_else(|| self.over(usize::MAX, what))?;
        if bytes > self.bytes_left {
            return Err(self.over(bytes, what));
        }
        self.bytes_left -= bytes;
        Ok(())
    }

    /// A zeroed buffer of `count` elements, charged first.
    pub fn zeroed<T: Clone + Default>(&mut self, count: usize, what: &str) -> OpResult<Vec<T>> {
        self.charge(count, size_of::<T>(), what)?;
        Ok(vec![T::default(); count])
    }

    /// An empty buffer with room for `count` elements, charged first.
    pub fn with_capacity<T>(&mut self, count: usize, what: &str) -> OpResult<Vec<T>> {
        self.charge(count, size_of::<T>(), what)?;
        Ok(Vec::with_capacity(count))
    }

    /// `Err(Deadline)` once the call's deadline has passed; ops call it between rows.
    pub fn check(&self) -> OpResult<()> {
        if Instant::now() >= self.deadline {
            return Err(Fail::Deadline);
        }
        Ok(())
    }

    fn over(&self, bytes: usize, what: &str) -> Fail {
        let asked = if bytes == usize::MAX {
            "more bytes than fit in memory".to_string()
        } else {
            format!("{bytes} bytes")
        };
        Fail::Limit(format!(
            "{what} needs {asked}, over what the plugin's memory cap leaves ({} of {} MiB \
             free; limits.memory_mb)",
            self.bytes_left,
            self.cap_bytes >> 20
        ))
    }
}

/// Elements of `shape`, checked: non-negative dims, no overflow.
pub(crate) fn element_count(shape: &[i64], arg: &str) -> OpResult<usize> {
    shape.iter().try_fold(1usize, |n, &d| {
        let d = usize::try_from(d)
            .map_err(|_| Fail::Invalid(format!("{arg}: negative dimension in shape {shape:?}")))?;
        n.checked_mul(d)
            .ok_or_else(|| Fail::Invalid(format!("{arg}: shape {shape:?} overflows")))
    })
}

impl Array {
    /// Checks that `data` holds exactly the elements `shape` says, and that it is numeric.
    pub(crate) fn checked(&self, arg: &str) -> OpResult<usize> {
        let Some(size) = self.dtype.size() else {
            return invalid(format!(
                "{arg}: string tensors are not supported by this op"
            ));
        };
        let count = element_count(&self.shape, arg)?;
        if count.checked_mul(size) != Some(self.data.len()) {
            return invalid(format!(
                "{arg}: shape {:?} of {} needs {} bytes of data, not {}",
                self.shape,
                self.dtype.name(),
                count.saturating_mul(size),
                self.data.len()
            ));
        }
        Ok(count)
    }
}

/// An image tensor's `(batch, height, width, channels)` for `layout`, checked.
pub(crate) fn image_dims(t: &Array, layout: Layout, arg: &str) -> OpResult<[usize; 4]> {
    t.checked(arg)?;
    let dims: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    let (n, a, b, c) = match dims.as_slice() {
        [a, b, c] => (1, *a, *b, *c),
        [n, a, b, c] => (*n, *a, *b, *c),
        _ => {
            let want = match layout {
                Layout::Hwc => "[h, w, c] or [n, h, w, c]",
                Layout::Chw => "[c, h, w] or [n, c, h, w]",
            };
            return invalid(format!(
                "{arg}: an image tensor has rank 3 or 4 ({want}), not shape {:?}",
                t.shape
            ));
        }
    };
    let (h, w, c) = match layout {
        Layout::Hwc => (a, b, c),
        Layout::Chw => (b, c, a),
    };
    if h == 0 || w == 0 || c == 0 {
        return invalid(format!("{arg}: an empty image, shape {:?}", t.shape));
    }
    Ok([n, h, w, c])
}

// ---- the WIT interface --------------------------------------------------------------------------

fn from_wit(t: wit_types::Tensor) -> Array {
    Array {
        dtype: dtype_from_wit(t.dtype),
        shape: t.shape,
        data: t.data,
    }
}

fn to_wit(a: Array) -> wit_types::Tensor {
    wit_types::Tensor {
        dtype: dtype_to_wit(a.dtype),
        shape: a.shape,
        data: a.data,
        strings: Vec::new(),
    }
}

fn layout(l: wit::Layout) -> Layout {
    match l {
        wit::Layout::Hwc => Layout::Hwc,
        wit::Layout::Chw => Layout::Chw,
    }
}

/// A string tensor reaching an op: refused before anything else, since [`Array`] has no
/// strings.
fn numeric(t: wit_types::Tensor, arg: &str) -> OpResult<Array> {
    if t.dtype == wit_types::Dtype::Str || !t.strings.is_empty() {
        return invalid(format!(
            "{arg}: string tensors are not supported by this op"
        ));
    }
    Ok(from_wit(t))
}

/// The op's answer for the guest, or a trap when the deadline passed (settled as a timeout,
/// like an epoch interrupt).
fn answer<T>(result: OpResult<T>) -> wasmtime::Result<Result<T, wit::OpError>> {
    match result {
        Ok(v) => Ok(Ok(v)),
        Err(Fail::Invalid(m)) => Ok(Err(wit::OpError::Invalid(m))),
        Err(Fail::Limit(m)) => Ok(Err(wit::OpError::Limit(m))),
        Err(Fail::Deadline) => Err(wasmtime::Trap::Interrupt.into()),
    }
}

impl Sandbox {
    fn budget(&self) -> Budget {
        Budget::new(
            self.limits.remaining(),
            self.limits.max_bytes(),
            self.deadline,
        )
    }
}

type Answer<T> = wasmtime::Result<Result<T, wit::OpError>>;

impl wit::Host for Sandbox {
    fn decode_image(
        &mut self,
        bytes: Vec<u8>,
        color: wit::Color,
        layout_: wit::Layout,
        limits: Option<wit::DecodeLimits>,
    ) -> Answer<wit_types::Tensor> {
        let color = match color {
            wit::Color::Gray => Color::Gray,
            wit::Color::Rgb => Color::Rgb,
        };
        let limits = limits.map(|l| Limits {
            max_width: l.max_width,
            max_height: l.max_height,
            max_pixels: l.max_pixels,
        });
        let mut budget = self.budget();
        answer(decode_image(&bytes, color, layout(layout_), limits, &mut budget).map(to_wit))
    }

    fn resize(
        &mut self,
        image: wit_types::Tensor,
        layout_: wit::Layout,
        width: u32,
        height: u32,
        filter: wit::Filter,
    ) -> Answer<wit_types::Tensor> {
        let filter = match filter {
            wit::Filter::Nearest => Filter::Nearest,
            wit::Filter::Bilinear => Filter::Bilinear,
            wit::Filter::Bicubic => Filter::Bicubic,
            wit::Filter::Lanczos => Filter::Lanczos,
        };
        let mut budget = self.budget();
        answer(numeric(image, "image").and_then(|a| {
            resize(a, layout(layout_), width, height, filter, &mut budget).map(to_wit)
        }))
    }

    fn crop(
        &mut self,
        image: wit_types::Tensor,
        layout_: wit::Layout,
        left: u32,
        top: u32,
        width: u32,
        height: u32,
    ) -> Answer<wit_types::Tensor> {
        let mut budget = self.budget();
        answer(numeric(image, "image").and_then(|a| {
            crop(&a, layout(layout_), [left, top, width, height], &mut budget).map(to_wit)
        }))
    }

    fn center_crop(
        &mut self,
        image: wit_types::Tensor,
        layout_: wit::Layout,
        width: u32,
        height: u32,
    ) -> Answer<wit_types::Tensor> {
        let mut budget = self.budget();
        answer(
            numeric(image, "image").and_then(|a| {
                center_crop(&a, layout(layout_), width, height, &mut budget).map(to_wit)
            }),
        )
    }

    fn normalize(
        &mut self,
        t: wit_types::Tensor,
        layout_: wit::Layout,
        scale: f32,
        mean: Vec<f32>,
        std: Vec<f32>,
    ) -> Answer<wit_types::Tensor> {
        let mut budget = self.budget();
        answer(numeric(t, "t").and_then(|a| {
            normalize(&a, layout(layout_), scale, &mean, &std, &mut budget).map(to_wit)
        }))
    }

    fn cast(&mut self, t: wit_types::Tensor, to: wit_types::Dtype) -> Answer<wit_types::Tensor> {
        let mut budget = self.budget();
        let to = dtype_from_wit(to);
        if to == DType::Str {
            return answer(invalid("to: cast does not convert to or from str"));
        }
        answer(numeric(t, "t").and_then(|a| cast(a, to, &mut budget).map(to_wit)))
    }

    fn softmax(&mut self, t: wit_types::Tensor) -> Answer<wit_types::Tensor> {
        let mut budget = self.budget();
        answer(numeric(t, "t").and_then(|a| softmax(&a, &mut budget).map(to_wit)))
    }

    fn argmax(&mut self, t: wit_types::Tensor) -> Answer<wit_types::Tensor> {
        let mut budget = self.budget();
        answer(numeric(t, "t").and_then(|a| argmax(&a, &mut budget).map(to_wit)))
    }

    fn top_k(
        &mut self,
        t: wit_types::Tensor,
        k: u32,
    ) -> Answer<(wit_types::Tensor, wit_types::Tensor)> {
        let mut budget = self.budget();
        answer(
            numeric(t, "t")
                .and_then(|a| top_k(&a, k, &mut budget).map(|(v, i)| (to_wit(v), to_wit(i)))),
        )
    }
}
