"""Pure-Python implementations of `ops`, used when the gateway has no native ops.

They follow the same definitions as the native ones (ops.wit): Pillow's resampling kernels,
support widening and 22-bit fixed-point rounding for u8; numpy's semantics elsewhere.
"""

from __future__ import annotations

import math
import struct
from array import array

from . import _jpeg
from .tensor import DType, Tensor, _pack

try:  # pypng: bundled with the SDK (pure Python)
    import png as _png
except ImportError:  # pragma: no cover - the SDK depends on pypng
    _png = None


# ---- decode ---------------------------------------------------------------------------------

def decode_image(data: bytes, color: str, layout: str, limits: tuple, error) -> Tensor:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        width, height, pixels, channels = _decode_png(data, limits, error)
    elif data[:3] == b"\xff\xd8\xff":
        try:
            width, height, pixels, channels = _jpeg.decode(data, lambda w, h: _check_limits(w, h, limits, error))
        except _jpeg.JpegError as e:
            raise error(f"invalid JPEG: {e}") from None
    else:
        raise error("the bytes are neither PNG nor JPEG (no PNG signature or JPEG SOI marker)")
    out = _convert(pixels, channels, color)
    c = 1 if color == "gray" else 3
    t = Tensor(DType.U8, (height, width, c), bytes(out))
    return _hwc_to_chw(t) if layout == "chw" else t


def _check_limits(width: int, height: int, limits: tuple, error) -> None:
    max_w, max_h, max_px = limits
    if width > max_w or height > max_h or width * height > max_px:
        raise error(f"the image is {width}x{height} pixels, over the decode limits "
                    f"({max_w}x{max_h}, {max_px} pixels)")
    if width == 0 or height == 0:
        raise error(f"the image is {width}x{height} pixels")


def _decode_png(data: bytes, limits: tuple, error):
    # The size from IHDR (always the first chunk) before pypng reads anything: its preamble
    # scans on to the first IDAT, and a header alone must already be refused.
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise error("invalid PNG: no IHDR chunk after the signature")
    _check_limits(struct.unpack(">I", data[16:20])[0], struct.unpack(">I", data[20:24])[0],
                  limits, error)
    try:
        reader = _png.Reader(bytes=data)
        width, height, rows, info = reader.asDirect()
        planes = info["planes"]
        bitdepth = info["bitdepth"]
        flat = bytearray()
        if bitdepth == 8:
            for row in rows:
                flat.extend(row)
        else:
            # 16-bit: round v / 257 (ops.wit); 1/2/4-bit gray: scaled to 0..255 as Pillow does.
            top = (1 << bitdepth) - 1
            for row in rows:
                flat.extend((v * 255 + top // 2) // top for v in row)
    except _png.Error as e:
        raise error(f"invalid PNG: {e}") from None
    return width, height, flat, planes


def _convert(pixels: bytearray, channels: int, color: str) -> bytearray:
    """Channels 1 (L), 2 (LA), 3 (RGB), 4 (RGBA) to L or RGB, as Pillow's `convert`."""
    if color == "gray":
        if channels <= 2:
            return pixels[::channels] if channels == 2 else pixels
        r, g, b = pixels[0::channels], pixels[1::channels], pixels[2::channels]
        return bytearray((19595 * x + 38470 * y + 7471 * z + 0x8000) >> 16 for x, y, z in zip(r, g, b))
    if channels == 3:
        return pixels
    if channels == 4:
        out = bytearray(len(pixels) // 4 * 3)
        out[0::3], out[1::3], out[2::3] = pixels[0::4], pixels[1::4], pixels[2::4]
        return out
    gray = pixels[::channels]
    out = bytearray(len(gray) * 3)
    out[0::3] = out[1::3] = out[2::3] = gray
    return out


# ---- layout helpers ---------------------------------------------------------------------------

def _image_dims(t: Tensor, layout: str, error):
    """(batch, height, width, channels) of a rank-3 or rank-4 image tensor."""
    if len(t.shape) not in (3, 4):
        raise error(f"an image tensor has rank 3 or 4 ([h, w, c] or [n, h, w, c] for {layout}), "
                    f"not shape {list(t.shape)}")
    n = t.shape[0] if len(t.shape) == 4 else 1
    a, b, c = t.shape[-3:]
    return (n, a, b, c) if layout == "hwc" else (n, b, c, a)


def _planes(t: Tensor, layout: str, error):
    """Each (image, channel) plane as a list of rows."""
    n, h, w, c = _image_dims(t, layout, error)
    flat = t.values()
    planes = []
    for i in range(n):
        base = i * h * w * c
        for ch in range(c):
            if layout == "hwc":
                px = flat[base + ch: base + h * w * c: c]
            else:
                px = flat[base + ch * h * w: base + (ch + 1) * h * w]
            planes.append([px[y * w:(y + 1) * w] for y in range(h)])
    return n, c, planes


def _from_planes(planes, n, c, h, w, layout, dtype, rank4) -> Tensor:
    flat = [0] * (n * c * h * w)
    for i in range(n):
        for ch in range(c):
            rows = planes[i * c + ch]
            for y in range(h):
                for x in range(w):
                    if layout == "hwc":
                        flat[((i * h + y) * w + x) * c + ch] = rows[y][x]
                    else:
                        flat[((i * c + ch) * h + y) * w + x] = rows[y][x]
    dims = (h, w, c) if layout == "hwc" else (c, h, w)
    return Tensor(dtype, ((n,) if rank4 else ()) + dims, _pack(dtype, flat))


def _hwc_to_chw(t: Tensor) -> Tensor:
    h, w, c = t.shape
    if c == 1:
        return Tensor(t.dtype, (1, h, w), t.data)
    out = bytearray(len(t.data))
    for ch in range(c):
        out[ch * h * w:(ch + 1) * h * w] = t.data[ch::c]
    return Tensor(t.dtype, (c, h, w), bytes(out))


# ---- resize (Pillow's Resample.c) --------------------------------------------------------------

def _bilinear(x):
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


def _bicubic(x, a=-0.5):
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _sinc(x):
    if x == 0.0:
        return 1.0
    x *= math.pi
    return math.sin(x) / x


def _lanczos(x):
    return _sinc(x) * _sinc(x / 3.0) if -3.0 <= x < 3.0 else 0.0


_KERNELS = {"bilinear": (_bilinear, 1.0), "bicubic": (_bicubic, 2.0), "lanczos": (_lanczos, 3.0)}
_PRECISION_BITS = 32 - 8 - 2


def _coeffs(in_size: int, out_size: int, filter: str):
    """Per output pixel: (first input index, weights), as Pillow's precompute_coeffs."""
    kernel, support = _KERNELS[filter]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support *= filterscale
    out = []
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        ws = [kernel((x + xmin - center + 0.5) * ss) for x in range(xmax - xmin)]
        total = sum(ws)
        if total != 0.0:
            ws = [w / total for w in ws]
        out.append((xmin, ws))
    return out


def _resample_rows(rows, out_w, filter, is_u8):
    in_w = len(rows[0])
    if filter == "nearest":
        src = [int((x + 0.5) * in_w / out_w) for x in range(out_w)]
        return [[row[s] for s in src] for row in rows]
    coeffs = _coeffs(in_w, out_w, filter)
    if is_u8:
        fixed = [(xmin, [int(w * (1 << _PRECISION_BITS) + (-0.5 if w < 0 else 0.5)) for w in ws])
                 for xmin, ws in coeffs]
        half = 1 << (_PRECISION_BITS - 1)
        out = []
        for row in rows:
            r = []
            for xmin, ks in fixed:
                ss = half
                for j, k in enumerate(ks):
                    ss += row[xmin + j] * k
                v = ss >> _PRECISION_BITS
                r.append(0 if v < 0 else 255 if v > 255 else v)
            out.append(r)
        return out
    return [[sum(row[xmin + j] * w for j, w in enumerate(ws)) for xmin, ws in coeffs] for row in rows]


def _vertical(rows, out_h, filter, is_u8):
    cols = [list(col) for col in zip(*rows)]
    return [list(r) for r in zip(*_resample_rows(cols, out_h, filter, is_u8))]


def resize(t: Tensor, width: int, height: int, filter: str, layout: str, error) -> Tensor:
    if t.dtype not in (DType.U8, DType.F32):
        raise error(f"resize takes u8 or f32 images, not {t.dtype.value}")
    n, h, w, c = _image_dims(t, layout, error)
    if (w, h) == (width, height):
        return t
    _, _, planes = _planes(t, layout, error)
    is_u8 = t.dtype is DType.U8
    out = []
    # One pass per axis. Pillow 13 (measured) runs the vertical pass first when the width
    # grows and the height shrinks, else the horizontal one first.
    vertical_first = width > w and height < h
    for rows in planes:
        if vertical_first:
            rows = _vertical(rows, height, filter, is_u8)
        if width != w:
            rows = _resample_rows(rows, width, filter, is_u8)
        if height != h and not vertical_first:
            rows = _vertical(rows, height, filter, is_u8)
        out.append(rows)
    return _from_planes(out, n, c, height, width, layout, t.dtype, len(t.shape) == 4)


# ---- crop ---------------------------------------------------------------------------------------

def crop(t: Tensor, left: int, top: int, width: int, height: int, layout: str, error) -> Tensor:
    n, h, w, c = _image_dims(t, layout, error)
    if left < 0 or top < 0 or width <= 0 or height <= 0 or left + width > w or top + height > h:
        raise error(f"crop: the window {width}x{height} at ({left}, {top}) is not inside the "
                    f"{w}x{h} image")
    size = t.dtype.size
    if t.dtype is DType.STR:
        raise error("crop does not take string tensors")
    out = bytearray()
    data = t.data
    if layout == "hwc":
        row = w * c * size
        for i in range(n):
            for y in range(top, top + height):
                start = i * h * row + y * row + left * c * size
                out += data[start:start + width * c * size]
        dims = (height, width, c)
    else:
        for i in range(n):
            for ch in range(c):
                for y in range(top, top + height):
                    start = ((i * c + ch) * h + y) * w * size + left * size
                    out += data[start:start + width * size]
        dims = (c, height, width)
    return Tensor(t.dtype, ((n,) if len(t.shape) == 4 else ()) + dims, bytes(out))


def center_crop(t: Tensor, width: int, height: int, layout: str, error) -> Tensor:
    _, h, w, _ = _image_dims(t, layout, error)
    if width > w or height > h:
        raise error(f"center_crop: {width}x{height} is larger than the {w}x{h} image")
    return crop(t, int(round((w - width) / 2)), int(round((h - height) / 2)), width, height,
                layout, error)


# ---- element-wise and reductions ---------------------------------------------------------------

def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def normalize(t: Tensor, scale: float, mean: list, std: list, layout: str, error) -> Tensor:
    if t.dtype is DType.STR:
        raise error("normalize does not take string tensors")
    if len(t.shape) <= 2:
        c = t.shape[-1] if t.shape else 1
    else:
        c = _image_dims(t, layout, error)[3]
    for name, vals in (("mean", mean), ("std", std)):
        if len(vals) not in (0, 1, c):
            raise error(f"normalize: {name} has {len(vals)} values; give 0, 1 or {c} (one per channel)")
    if any(s == 0 for s in std):
        raise error("normalize: std must not contain 0")
    mean = [_f32(m) for m in (mean or [0.0])]
    std = [_f32(s) for s in (std or [1.0])]
    scale = _f32(scale)
    m = [mean[i % len(mean)] for i in range(c)]
    s = [std[i % len(std)] for i in range(c)]

    def f32_steps(xs, k):
        # f32 arithmetic, one rounding per step, as numpy computes on float32 arrays (an
        # array("f") rounds every value stored in it to f32).
        a = array("f", [x * scale for x in xs])
        if m[k]:
            a = array("f", [x - m[k] for x in a])
        if s[k] != 1.0:
            a = array("f", [x / s[k] for x in a])
        return a

    chw = len(t.shape) >= 3 and layout == "chw"
    plane = t.shape[-1] * t.shape[-2] if chw else 1
    if t.dtype is DType.U8:
        # 256 possible inputs per channel: compute each once, then look the bytes up.
        luts = []
        for k in range(c):
            table = f32_steps(range(256), k).tobytes()
            luts.append([table[4 * v:4 * v + 4] for v in range(256)])
        if c == 1:
            data = b"".join(map(luts[0].__getitem__, t.data))
        else:
            data = b"".join(luts[(i // plane) % c if chw else i % c][v]
                            for i, v in enumerate(t.data))
        return Tensor(DType.F32, t.shape, data)
    values = [float(v) for v in t.values()]
    out = array("f", bytes(4 * len(values)))
    for k in range(c):
        idx = [i for i in range(len(values)) if ((i // plane) % c if chw else i % c) == k]
        for i, v in zip(idx, f32_steps([values[i] for i in idx], k)):
            out[i] = v
    return Tensor(DType.F32, t.shape, out.tobytes())


_INT_RANGE = {DType.I8: (-2**7, 2**7 - 1), DType.I16: (-2**15, 2**15 - 1),
              DType.I32: (-2**31, 2**31 - 1), DType.I64: (-2**63, 2**63 - 1),
              DType.U8: (0, 2**8 - 1), DType.U16: (0, 2**16 - 1), DType.U32: (0, 2**32 - 1),
              DType.U64: (0, 2**64 - 1)}


def cast(t: Tensor, dtype: DType, error) -> Tensor:
    if DType.STR in (t.dtype, dtype):
        raise error("cast does not convert string tensors")
    if t.dtype is dtype:
        return t
    values = t.values()
    if dtype is DType.BOOL:
        out = [v != 0 for v in values]
    elif dtype.is_float:
        out = [float(v) for v in values]
    else:
        lo, hi = _INT_RANGE[dtype]
        out = []
        for v in values:
            if isinstance(v, float):
                v = 0 if math.isnan(v) else (lo if v < lo else hi if v > hi else int(v))
            out.append(min(max(int(v), lo), hi))
    return Tensor(dtype, t.shape, _pack(dtype, out))


def _rows(t: Tensor, error, what: str):
    if t.dtype is DType.STR or not t.shape or t.shape[-1] == 0:
        raise error(f"{what} needs a numeric tensor with a non-empty last axis, not "
                    f"{t.dtype.value} {list(t.shape)}")
    n = t.shape[-1]
    values = t.values()
    return n, [values[i:i + n] for i in range(0, len(values), n)]


def softmax(t: Tensor, error) -> Tensor:
    if not t.dtype.is_float:
        raise error(f"softmax takes a float tensor, not {t.dtype.value}")
    _, rows = _rows(t, error, "softmax")
    rnd = (lambda x: x) if t.dtype is DType.F64 else _f32
    out = []
    for row in rows:
        if any(math.isnan(v) for v in row):
            out.extend([math.nan] * len(row))
            continue
        top = max(row)
        e = [rnd(math.exp(rnd(v - top))) for v in row]
        total = rnd(sum(e))
        out.extend(rnd(v / total) for v in e)
    return Tensor(t.dtype, t.shape, _pack(t.dtype, out))


def _key(v):
    """Sort key with NaN the largest, as ops.wit defines."""
    return (1, 0.0) if isinstance(v, float) and math.isnan(v) else (0, v)


def argmax(t: Tensor, error) -> Tensor:
    _, rows = _rows(t, error, "argmax")
    out = []
    for row in rows:
        nan = next((i for i, v in enumerate(row) if isinstance(v, float) and math.isnan(v)), None)
        out.append(nan if nan is not None else max(range(len(row)), key=lambda i: (row[i], -i)))
    return Tensor(DType.I64, t.shape[:-1], _pack(DType.I64, out))


def top_k(t: Tensor, k: int, error):
    n, rows = _rows(t, error, "top_k")
    k = min(k, n)
    vals, idx = [], []
    for row in rows:
        order = sorted(range(n), key=lambda i: _key(row[i]), reverse=True)
        # sorted(reverse=True) keeps equal keys in their original order: ties → lower index.
        best = order[:k]
        idx.extend(best)
        vals.extend(row[i] for i in best)
    shape = t.shape[:-1] + (k,)
    return Tensor(t.dtype, shape, _pack(t.dtype, vals)), Tensor(DType.I64, shape, _pack(DType.I64, idx))


