//! Native ops: what a Pillow/numpy pipeline does, run by the gateway at native speed (contract
//! `infergate:plugin@0.2.0`, interface `ops`). Each call copies its tensor to the gateway and
//! the result back, and runs within the plugin's limits: the result counts against
//! `limits.memory_mb` ([`OpError::Limit`] past it) and an op still running at the call's
//! deadline fails the call with 504, as a plugin running past `timeout_ms` does.
//!
//! ```no_run
//! use infergate_sdk::ops::{self, Color, Filter, Layout};
//! use infergate_sdk::{PluginError, Prepared, Request};
//!
//! fn preprocess(req: Request) -> Result<Prepared, PluginError> {
//!     // np.asarray(Image.open(io.BytesIO(body)).convert("L"))[..., None]
//!     let img = ops::decode_image(&req.body, Color::Gray, Layout::Hwc, None)
//!         .map_err(PluginError::bad_request)?;
//!     // img.resize((28, 28), Image.BILINEAR)
//!     let img = ops::resize(&img, Layout::Hwc, 28, 28, Filter::Bilinear)?;
//!     // np.asarray(img, np.float32) / 255
//!     let x = ops::normalize(&img, Layout::Hwc, 1.0, &[], &[255.0])?;
//!     Ok(Prepared::new().input("image", x.reshape([1, 28, 28, 1])?))
//! }
//! ```
//!
//! Image tensors are `[height, width, channels]` ([`Layout::Hwc`]: numpy, Pillow, TensorFlow)
//! or `[channels, height, width]` ([`Layout::Chw`]: PyTorch, ONNX), or either with a leading
//! batch dimension. What each op matches (exactly, or within what) is in its docs and in the
//! contract, `wit/plugin.wit`.
//!
//! The ops exist only inside the gateway. Compiled for anything but `wasm32` (a plugin's unit
//! tests on the host) every op returns [`OpError::Unavailable`], so code that needs to run
//! natively too keeps using [`crate::image`] (feature `image`) there.

use std::fmt;

use crate::error::PluginError;
use crate::tensor::{DType, Tensor};

/// Where the channel axis of an image tensor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `[height, width, channels]`: numpy/Pillow's `np.asarray(img)`, TensorFlow's NHWC.
    Hwc,
    /// `[channels, height, width]`: PyTorch/ONNX NCHW.
    Chw,
}

/// Pixel format [`decode_image`] converts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Color {
    /// 1 channel, Pillow's `convert("L")`: `L = (19595 R + 38470 G + 7471 B + 32768) >> 16`.
    Gray,
    /// 3 channels, Pillow's `convert("RGB")` (alpha dropped, gray replicated).
    Rgb,
}

/// Resampling filters for [`resize`], named after Pillow's `Image.Resampling`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Filter {
    /// `Image.NEAREST`.
    Nearest,
    /// `Image.BILINEAR`: a triangle kernel, widened when shrinking (so it averages).
    Bilinear,
    /// `Image.BICUBIC`: cubic convolution, a = -0.5.
    Bicubic,
    /// `Image.LANCZOS`: Lanczos, window 3.
    Lanczos,
}

/// Bounds [`decode_image`] checks against an image's header before allocating its pixels.
/// Each can only tighten the gateway's own (16384 pixels a side, 64 Mi pixels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DecodeLimits {
    /// Widest accepted image, in pixels.
    pub max_width: u32,
    /// Tallest accepted image, in pixels.
    pub max_height: u32,
    /// Most pixels (width × height) accepted.
    pub max_pixels: u64,
}

/// Why an op refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpError {
    /// A malformed argument: bytes that are not a PNG/JPEG, the wrong dtype or rank, a crop
    /// outside the image. The message names the argument.
    Invalid(String),
    /// Over a limit: an image larger than the decode limits (from its header), or a result
    /// larger than what the plugin's memory cap leaves.
    Limit(String),
    /// Not running inside the gateway (a native build, e.g. a unit test on the host).
    Unavailable,
}

impl OpError {
    /// The message, for a [`PluginError`] of the plugin's choosing.
    pub fn message(&self) -> &str {
        match self {
            OpError::Invalid(m) | OpError::Limit(m) => m,
            OpError::Unavailable => {
                "the native ops run only inside the gateway (this build is not wasm32)"
            }
        }
    }
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for OpError {}

/// An op's refusal as a 500: a plugin maps what a client caused (undecodable bytes) to
/// [`PluginError::bad_request`] itself.
impl From<OpError> for PluginError {
    fn from(e: OpError) -> Self {
        PluginError::internal(e)
    }
}

/// Conversions to the generated types (they exist on every target; only calling an import
/// needs wasm32).
mod native {
    use super::*;
    use crate::bindings::shared::infergate::plugin::ops as wit;
    #[cfg(target_arch = "wasm32")]
    use crate::glue::tensor_from_wire;
    use crate::glue::{dtype_to_wire, tensor_to_wire};

    pub(super) fn layout(l: Layout) -> wit::Layout {
        match l {
            Layout::Hwc => wit::Layout::Hwc,
            Layout::Chw => wit::Layout::Chw,
        }
    }

    pub(super) fn color(c: Color) -> wit::Color {
        match c {
            Color::Gray => wit::Color::Gray,
            Color::Rgb => wit::Color::Rgb,
        }
    }

    pub(super) fn filter(f: Filter) -> wit::Filter {
        match f {
            Filter::Nearest => wit::Filter::Nearest,
            Filter::Bilinear => wit::Filter::Bilinear,
            Filter::Bicubic => wit::Filter::Bicubic,
            Filter::Lanczos => wit::Filter::Lanczos,
        }
    }

    pub(super) fn limits(l: DecodeLimits) -> wit::DecodeLimits {
        wit::DecodeLimits {
            max_width: l.max_width,
            max_height: l.max_height,
            max_pixels: l.max_pixels,
        }
    }

    pub(super) fn dtype(d: DType) -> crate::bindings::shared::infergate::plugin::types::Dtype {
        dtype_to_wire(d)
    }

    pub(super) fn to_wire(t: &Tensor) -> crate::bindings::shared::infergate::plugin::types::Tensor {
        tensor_to_wire(t.clone())
    }

    #[cfg(target_arch = "wasm32")]
    pub(super) fn from_wire(
        t: crate::bindings::shared::infergate::plugin::types::Tensor,
    ) -> Result<Tensor, OpError> {
        tensor_from_wire(t)
            .map_err(|e| OpError::Invalid(format!("the gateway answered a malformed tensor: {e}")))
    }

    #[cfg(target_arch = "wasm32")]
    pub(super) fn error(e: wit::OpError) -> OpError {
        match e {
            wit::OpError::Invalid(m) => OpError::Invalid(m),
            wit::OpError::Limit(m) => OpError::Limit(m),
        }
    }

    #[cfg(target_arch = "wasm32")]
    pub(super) use wit::{
        argmax, cast, center_crop, crop, decode_image, normalize, resize, softmax, top_k,
    };
}

/// Calls the host op `$op` with `$args` and lifts its tensor answer; `Unavailable` natively.
macro_rules! call {
    ($op:ident ( $($arg:expr),* $(,)? )) => {{
        #[cfg(target_arch = "wasm32")]
        {
            native::$op($($arg),*).map_err(native::error).and_then(native::from_wire)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            $(let _ = $arg;)*
            Err(OpError::Unavailable)
        }
    }};
}

/// Decodes PNG or JPEG `bytes` (the format sniffed from the bytes) to a `u8` tensor
/// `[h, w, c]` ([`Layout::Hwc`]) or `[c, h, w]`, `c` = 1 for [`Color::Gray`], 3 for RGB.
///
/// Matches `np.asarray(Image.open(io.BytesIO(bytes)).convert("L" | "RGB"))`: exactly for
/// 8-bit PNG (16-bit samples become `round(v / 257)`); JPEG within one level for gray, a few
/// levels for color (chroma upsampling rounds differently from libjpeg's). The size is
/// checked against `limits` (and the gateway's own) from the header, before any pixel is
/// allocated: over them, [`OpError::Limit`]. Undecodable bytes: [`OpError::Invalid`] — a
/// client's fault, so map it with `.map_err(PluginError::bad_request)`.
pub fn decode_image(
    bytes: &[u8],
    color: Color,
    layout: Layout,
    limits: Option<DecodeLimits>,
) -> Result<Tensor, OpError> {
    call!(decode_image(
        bytes,
        native::color(color),
        native::layout(layout),
        limits.map(native::limits)
    ))
}

/// Resizes a `u8` or `f32` image to `width` × `height`, as Pillow's
/// `img.resize((width, height), filter)`: `u8` exactly as Pillow on an "L"/"RGB" image (its
/// fixed-point coefficients), `f32` as mode "F". Same size: returned unchanged.
pub fn resize(
    image: &Tensor,
    layout: Layout,
    width: u32,
    height: u32,
    filter: Filter,
) -> Result<Tensor, OpError> {
    call!(resize(
        &native::to_wire(image),
        native::layout(layout),
        width,
        height,
        native::filter(filter)
    ))
}

/// The `width` × `height` window at (`left`, `top`), any numeric dtype: Pillow's
/// `img.crop((left, top, left + width, top + height))`. Not wholly inside: [`OpError::Invalid`].
pub fn crop(
    image: &Tensor,
    layout: Layout,
    left: u32,
    top: u32,
    width: u32,
    height: u32,
) -> Result<Tensor, OpError> {
    call!(crop(
        &native::to_wire(image),
        native::layout(layout),
        left,
        top,
        width,
        height
    ))
}

/// The centered `width` × `height` window, as torchvision's `CenterCrop`.
pub fn center_crop(
    image: &Tensor,
    layout: Layout,
    width: u32,
    height: u32,
) -> Result<Tensor, OpError> {
    call!(center_crop(
        &native::to_wire(image),
        native::layout(layout),
        width,
        height
    ))
}

/// `(x * scale - mean[c]) / std[c]` per element as `f32`, `c` its channel — numpy's
/// `(np.asarray(x, np.float32) * scale - mean) / std`. `mean` and `std` hold 0 values (0 and
/// 1), 1 (every channel) or one per channel. Rank 1 and 2: the last axis is the channel.
pub fn normalize(
    t: &Tensor,
    layout: Layout,
    scale: f32,
    mean: &[f32],
    std: &[f32],
) -> Result<Tensor, OpError> {
    call!(normalize(
        &native::to_wire(t),
        native::layout(layout),
        scale,
        mean,
        std
    ))
}

/// Every element converted to `to`, as numpy's `a.astype(to)`; float → integer truncates and
/// saturates (NaN → 0), integer → narrower integer saturates. `str`: [`OpError::Invalid`].
pub fn cast(t: &Tensor, to: DType) -> Result<Tensor, OpError> {
    call!(cast(&native::to_wire(t), native::dtype(to)))
}

/// Softmax over the last axis (`f16`, `bf16`, `f32`, `f64`; computed in f32, f64 for f64).
pub fn softmax(t: &Tensor) -> Result<Tensor, OpError> {
    call!(softmax(&native::to_wire(t)))
}

/// Index of the largest element along the last axis (`np.argmax(a, -1)`; first on ties, first
/// NaN if any), as `i64` with the last axis dropped.
pub fn argmax(t: &Tensor) -> Result<Tensor, OpError> {
    call!(argmax(&native::to_wire(t)))
}

/// The `k` largest elements along the last axis, largest first (ties: lower index first; NaN
/// counts as the largest): `(values, indices)`, both `[..., min(k, n)]`, indices `i64`.
pub fn top_k(t: &Tensor, k: u32) -> Result<(Tensor, Tensor), OpError> {
    #[cfg(target_arch = "wasm32")]
    {
        let (values, indices) = native::top_k(&native::to_wire(t), k).map_err(native::error)?;
        Ok((native::from_wire(values)?, native::from_wire(indices)?))
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (t, k);
        Err(OpError::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natively_every_op_says_it_needs_the_gateway() {
        let t = Tensor::u8([1, 1, 1], vec![0]).unwrap();
        assert_eq!(
            decode_image(b"", Color::Gray, Layout::Hwc, None),
            Err(OpError::Unavailable)
        );
        assert_eq!(
            resize(&t, Layout::Hwc, 2, 2, Filter::Nearest),
            Err(OpError::Unavailable)
        );
        assert_eq!(top_k(&t, 1), Err(OpError::Unavailable));
        let err = PluginError::from(OpError::Unavailable);
        assert_eq!(err.status(), 500);
        assert!(err.message().contains("only inside the gateway"), "{err}");
    }
}
