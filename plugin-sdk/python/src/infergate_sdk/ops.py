"""Image and tensor ops — what a Pillow/numpy pipeline does, without Pillow or numpy.

    from infergate_sdk import ops
    img = ops.decode_image(req.body, color="gray")              # u8 [h, w, 1], like
    #     np.asarray(Image.open(io.BytesIO(body)).convert("L"))[..., None]
    img = ops.resize(img, 28, 28, filter="bilinear")          # img.resize((28, 28), Image.BILINEAR)
    x = ops.normalize(img, scale=1 / 255).reshape(1, 28, 28, 1)   # f32, pixel / 255
    values, indices = ops.top_k(probs, 3)

When the gateway offers the native ops (contract `infergate:plugin@0.2.0`, interface `ops`)
each call runs in the gateway at native speed, bounded by the call's deadline and memory cap.
Otherwise (a plugin built against contract 0.1.0, or unit tests on the host) the same function
runs in pure Python with the same results: PNG through pypng, baseline JPEG through a small
decoder in this SDK, resampling with Pillow's kernels and rounding. `NATIVE` says which.

Image tensors are `[height, width, channels]` (`layout="hwc"`, numpy/Pillow/TensorFlow) or
`[channels, height, width]` (`"chw"`, PyTorch/ONNX), or either with a leading batch dimension.
Sizes are named `width` and `height`, in Pillow's order.

Errors: an image that cannot be decoded, or is over the decode limits, raises `ImageError`
(a `BadRequest`: 400 unless caught — the caller sent it). Anything else wrong (a dtype an op
does not take, a crop outside the image) raises `OpError` (an `Internal`: 500).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

from . import _pyops, _wit
from ._glue import tensor_from_wire, tensor_to_wire
from .errors import BadRequest, Internal
from .tensor import DType, Tensor

__all__ = ["NATIVE", "ImageError", "OpError", "FILTERS", "decode_image", "resize", "crop",
           "center_crop", "normalize", "cast", "softmax", "argmax", "top_k"]

NATIVE = _wit.ops is not None
"""True when the ops run in the gateway (a plugin built against contract 0.2.0)."""

FILTERS = ("nearest", "bilinear", "bicubic", "lanczos")
"""Resampling filters, named after Pillow's `Image.Resampling` members of the same names."""

# The host's default decode limits (ops.wit), applied by the pure-Python decoder too.
MAX_SIDE = 16384
MAX_PIXELS = 64 * 1024 * 1024


class ImageError(BadRequest):
    """Bytes that are not a decodable PNG/JPEG, or an image over the decode limits: 400."""


class OpError(Internal):
    """An op given an argument it does not take (dtype, rank, crop window…): 500."""


def decode_image(data: bytes, color: str = "rgb", layout: str = "hwc", *,
                 max_width: Optional[int] = None, max_height: Optional[int] = None,
                 max_pixels: Optional[int] = None) -> Tensor:
    """PNG or JPEG bytes (format sniffed from the bytes) to a `u8` tensor `[h, w, c]`
    (`"hwc"`) or `[c, h, w]` (`"chw"`), `c` = 1 for `color="gray"`, 3 for `"rgb"`.

    Same pixels as `np.asarray(Image.open(io.BytesIO(data)).convert("L" or "RGB"))`: exactly
    for PNG and baseline JPEG (natively and in pure Python alike). The limits (default 16384 per side, 64 Mi pixels, and
    natively also the model's memory cap) are checked against the header before any pixel is
    allocated; over them, or undecodable: `ImageError` (400)."""
    _check_choice("color", color, ("gray", "rgb"))
    _check_choice("layout", layout, ("hwc", "chw"))
    max_width = min(max_width or MAX_SIDE, MAX_SIDE)
    max_height = min(max_height or MAX_SIDE, MAX_SIDE)
    max_pixels = min(max_pixels or MAX_PIXELS, MAX_PIXELS)
    if NATIVE:
        o = _wit.ops
        limits = o.DecodeLimits(max_width, max_height, max_pixels)
        return _native(lambda: o.decode_image(bytes(data), o.Color[color.upper()],
                                              o.Layout[layout.upper()], limits), ImageError)
    return _pyops.decode_image(bytes(data), color, layout, (max_width, max_height, max_pixels),
                               ImageError)


def resize(image: Tensor, width: int, height: int, filter: str, layout: str = "hwc") -> Tensor:
    """`image` resampled to `width` × `height`, as Pillow's
    `img.resize((width, height), Image.<FILTER>)`: `filter` is "nearest", "bilinear",
    "bicubic" or "lanczos" (no default: Pillow's own default changed between versions, so
    say which one the model was trained with). `u8` images round and clamp like Pillow's "L"
    and "RGB" modes; `f32` ones compute like mode "F". Already that size: returned as is."""
    _check_choice("filter", filter, FILTERS)
    _check_choice("layout", layout, ("hwc", "chw"))
    if width <= 0 or height <= 0:
        raise OpError(f"resize: width and height must be positive, not {width}x{height}")
    if NATIVE:
        o = _wit.ops
        return _native(lambda: o.resize(tensor_to_wire(image), o.Layout[layout.upper()],
                                        width, height, o.Filter[filter.upper()]))
    return _pyops.resize(image, width, height, filter, layout, OpError)


def crop(image: Tensor, left: int, top: int, width: int, height: int,
         layout: str = "hwc") -> Tensor:
    """The `width` × `height` window at (`left`, `top`), as Pillow's
    `img.crop((left, top, left + width, top + height))`; any dtype. It must lie inside the
    image (Pillow pads with black instead)."""
    _check_choice("layout", layout, ("hwc", "chw"))
    if NATIVE:
        o = _wit.ops
        return _native(lambda: o.crop(tensor_to_wire(image), o.Layout[layout.upper()], left, top,
                                      width, height))
    return _pyops.crop(image, left, top, width, height, layout, OpError)


def center_crop(image: Tensor, width: int, height: int, layout: str = "hwc") -> Tensor:
    """The centered `width` × `height` window, as torchvision's `CenterCrop((height, width))`."""
    _check_choice("layout", layout, ("hwc", "chw"))
    if NATIVE:
        o = _wit.ops
        return _native(lambda: o.center_crop(tensor_to_wire(image), o.Layout[layout.upper()],
                                             width, height))
    return _pyops.center_crop(image, width, height, layout, OpError)


def normalize(t: Tensor, scale: float = 1.0, mean: Union[float, Sequence[float]] = (),
              std: Union[float, Sequence[float]] = (), layout: str = "hwc") -> Tensor:
    """`(x * scale - mean[c]) / std[c]` as `f32`, `c` each element's channel — numpy's
    `(np.asarray(img, np.float32) * scale - mean) / std`. `mean`/`std` are a number, or one
    per channel. Pixel / 255 exactly as numpy divides: `normalize(img, std=255)` (`scale=1/255`
    multiplies, which can differ in the last bit). ImageNet: `normalize(img, 1/255,
    (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))`."""
    _check_choice("layout", layout, ("hwc", "chw"))
    mean = (mean,) if isinstance(mean, (int, float)) else tuple(mean)
    std = (std,) if isinstance(std, (int, float)) else tuple(std)
    if NATIVE:
        o = _wit.ops
        return _native(lambda: o.normalize(tensor_to_wire(t), o.Layout[layout.upper()],
                                           float(scale), [float(m) for m in mean],
                                           [float(s) for s in std]))
    return _pyops.normalize(t, float(scale), list(mean), list(std), layout, OpError)


def cast(t: Tensor, dtype: Union[DType, str]) -> Tensor:
    """Every element converted to `dtype`, as numpy's `astype` (float → int truncates toward
    zero and saturates; NaN → 0)."""
    dtype = DType.of(dtype)
    if NATIVE:
        o = _wit.ops
        to = _wit.types.Dtype(list(DType).index(dtype))
        return _native(lambda: o.cast(tensor_to_wire(t), to))
    return _pyops.cast(t, dtype, OpError)


def softmax(t: Tensor) -> Tensor:
    """Softmax over the last axis (float dtypes): `exp(x - max) / sum(exp(x - max))`."""
    if NATIVE:
        return _native(lambda: _wit.ops.softmax(tensor_to_wire(t)))
    return _pyops.softmax(t, OpError)


def argmax(t: Tensor) -> Tensor:
    """`np.argmax(t, axis=-1)` as `i64`: the first index on ties."""
    if NATIVE:
        return _native(lambda: _wit.ops.argmax(tensor_to_wire(t)))
    return _pyops.argmax(t, OpError)


def top_k(t: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The `k` largest along the last axis, largest first, ties to the lower index:
    (values in `t`'s dtype, `i64` indices), both `[..., min(k, n)]`."""
    if k <= 0:
        raise OpError(f"top_k: k must be at least 1, not {k}")
    if NATIVE:
        o = _wit.ops
        try:
            values, indices = o.top_k(tensor_to_wire(t), k)
        except _wit.Err as e:
            raise OpError(e.value.value) from None
        return tensor_from_wire(values), tensor_from_wire(indices)
    return _pyops.top_k(t, k, OpError)


def _native(call, invalid_error=OpError) -> Tensor:
    try:
        return tensor_from_wire(call())
    except _wit.Err as e:
        raise invalid_error(e.value.value) from None


def _check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise OpError(f"{what} must be one of {', '.join(choices)}, not {value!r}")
