"""Writes tests/ops/golden.json: inputs and Pillow/numpy outputs for the native ops' tests
(src/plugin/ops/tests.rs). The Rust tests read the JSON only; this script is how it was made:

    $(scripts/plugin-venv.sh | tail -n 1)/bin/python tests/ops/make_golden.py

Every case is {"op", "args", "input", "want"} with tensors as {"dtype", "shape", "data"
(base64, little-endian)} and raw bytes (image files) as {"bytes": base64}. "exact" says whether
the output must match bit for bit, else within "levels" (u8) or within "tol" relative to the
larger of the element and the largest magnitude in the expected tensor (f32: an element near 0
after cancellation keeps the absolute error of its neighbours).
"""

import base64
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

RNG = np.random.default_rng(15)
DTYPES = {"u8": np.uint8, "i8": np.int8, "i16": np.int16, "i32": np.int32, "i64": np.int64,
          "u16": np.uint16, "u32": np.uint32, "u64": np.uint64, "f16": np.float16,
          "f32": np.float32, "f64": np.float64, "bool": np.bool_}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}
FILTERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
           "lanczos": Image.LANCZOS}


def tensor(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    return {"dtype": NAMES[a.dtype], "shape": list(a.shape),
            "data": base64.b64encode(a.astype(a.dtype.newbyteorder("<")).tobytes()).decode()}


def raw(b: bytes) -> dict:
    return {"bytes": base64.b64encode(b).decode()}


cases = []


def case(op, args, inp, want, **check):
    cases.append({"op": op, "args": args, "input": inp, "want": want, **check})


# ---- decode -----------------------------------------------------------------------------------

def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def decoded(data: bytes, mode: str) -> np.ndarray:
    a = np.asarray(Image.open(io.BytesIO(data)).convert(mode))
    return a[..., None] if a.ndim == 2 else a


def u8(shape):
    return RNG.integers(0, 256, shape, dtype=np.uint8)


pngs = {
    "L": Image.fromarray(u8((5, 7))),
    "LA": Image.fromarray(u8((4, 6, 2))),
    "RGB": Image.fromarray(u8((6, 5, 3))),
    "RGBA": Image.fromarray(u8((3, 4, 4))),
    "P": Image.fromarray(u8((6, 6, 3))).quantize(7),
    "I;16": Image.fromarray(RNG.integers(0, 65536, (4, 5), dtype=np.uint16)),
    "1": Image.fromarray(RNG.integers(0, 2, (5, 9), dtype=np.uint8) * 255).convert("1"),
}
for name, img in pngs.items():
    assert img.mode == name, (name, img.mode)
    data = encoded(img, "PNG")
    for color, mode in (("gray", "L"), ("rgb", "RGB")):
        if name == "I;16":  # Pillow clips 16-bit to 8; ops.wit rounds v / 257 (as _pyops.py)
            want = np.round(np.asarray(img).astype(np.float64) / 257).astype(np.uint8)[..., None]
            want = want if color == "gray" else np.repeat(want, 3, axis=2)
        else:
            want = decoded(data, mode)
        case("decode_image", {"color": color, "layout": "hwc", "what": f"PNG {name}"}, raw(data),
             tensor(want), exact=True)
        if name in ("RGB", "L"):
            case("decode_image", {"color": color, "layout": "chw", "what": f"PNG {name} chw"},
                 raw(data), tensor(np.transpose(want, (2, 0, 1))), exact=True)

# Baseline JPEGs decode as libjpeg decodes them (src/plugin/ops/jpeg.rs), so they must match
# Pillow bit for bit: each subsampling, gray, restart markers, sizes that are not a multiple of
# the MCU, extreme qualities, RGB without the YCbCr transform, and a frame without DHT segments
# (the standard tables, as libjpeg-turbo uses for motion-JPEG).
yy, xx = np.mgrid[0:24, 0:32]
photo = np.stack([(xx * 8) % 256, (yy * 10) % 256, ((xx + yy) * 5) % 256], -1).astype(np.uint8)


JPEG_RNG = np.random.default_rng(16)  # its own stream: the other cases' inputs stay as they were


def textured(w: int, h: int) -> np.ndarray:
    """Noise resized up: real structure in every block, so the AC terms are exercised."""
    small = Image.fromarray(JPEG_RNG.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), np.uint8))
    return np.asarray(small.resize((w, h), Image.BICUBIC))


def without_dht(data: bytes) -> bytes:
    out, pos = bytearray(data[:2]), 2
    while data[pos + 1] != 0xDA:
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if data[pos + 1] != 0xC4:
            out += data[pos:pos + 2 + length]
        pos += 2 + length
    return bytes(out + data[pos:])


def jpeg_case(what: str, data: bytes, colors=("gray", "rgb"), layout="hwc", **check):
    check = check or {"exact": True}
    for color, mode in (("gray", "L"), ("rgb", "RGB")):
        if color in colors:
            want = decoded(data, mode)
            want = np.transpose(want, (2, 0, 1)) if layout == "chw" else want
            case("decode_image", {"color": color, "layout": layout, "what": what}, raw(data),
                 tensor(want), **check)


for sub, label in ((0, "4:4:4"), (1, "4:2:2"), (2, "4:2:0")):
    jpeg_case(f"JPEG {label}", encoded(Image.fromarray(photo), "JPEG", quality=90,
                                       subsampling=sub))
    jpeg_case(f"JPEG {label} textured", encoded(Image.fromarray(textured(45, 37)), "JPEG",
                                                quality=85, subsampling=sub))
    for w, h in ((1, 1), (3, 2), (17, 13), (9, 31)):
        jpeg_case(f"JPEG {label} {w}x{h}", encoded(Image.fromarray(textured(w, h)), "JPEG",
                                                   quality=90, subsampling=sub), colors=("rgb",))
jpeg_case("JPEG 4:2:0 chw", encoded(Image.fromarray(photo), "JPEG", subsampling=2),
          colors=("rgb",), layout="chw")
gray_photo = Image.fromarray(np.ascontiguousarray(photo[..., 0]))
jpeg_case("JPEG gray", encoded(gray_photo, "JPEG", quality=90))
jpeg_case("JPEG gray 13x7", encoded(Image.fromarray(textured(13, 7)).convert("L"), "JPEG"))
big = Image.fromarray(textured(64, 40))
jpeg_case("JPEG 4:2:0 restart every 3 MCUs",
          encoded(big, "JPEG", subsampling=2, restart_marker_blocks=3))
jpeg_case("JPEG gray restart every MCU row",
          encoded(big.convert("L"), "JPEG", restart_marker_rows=1))
for q in (100, 5):
    jpeg_case(f"JPEG 4:2:0 quality {q}", encoded(big, "JPEG", quality=q, subsampling=2))
jpeg_case("JPEG RGB (Adobe, no YCbCr transform)", encoded(big, "JPEG", keep_rgb=True))
jpeg_case("JPEG 4:2:2 without DHT (standard tables)",
          without_dht(encoded(big, "JPEG", subsampling=1)))
digit = (Path(__file__).parents[2] / "examples/images/digit-7.jpg").read_bytes()
jpeg_case("JPEG examples/images/digit-7.jpg", digit)
# Progressive JPEGs go to the image crate (zune-jpeg), whose IDCT and upsampling round
# differently from libjpeg's: held to the levels measured (image 0.25.10, zune-jpeg 0.5.15).
progressive = encoded(Image.fromarray(photo), "JPEG", quality=90, subsampling=2, progressive=True)
jpeg_case("JPEG 4:2:0 progressive (image crate, not exact)", progressive, colors=("gray",),
          exact=False, levels=1)
jpeg_case("JPEG 4:2:0 progressive (image crate, not exact)", progressive, colors=("rgb",),
          exact=False, levels=9)
# A 224x224 4:2:0 photo-like JPEG for the decoder's timing (jpeg/tests.rs, ignored test).
Path(__file__).with_name("photo-224.jpg").write_bytes(
    encoded(Image.fromarray(textured(224, 224)), "JPEG", quality=90))

def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


# A 30000x30000 RGB PNG of a few hundred bytes: one row of zeros, the rest never sent.
bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))
Path(__file__).with_name("bomb-30000.png").write_bytes(bomb)

# ---- resize -----------------------------------------------------------------------------------

def resized(a: np.ndarray, w: int, h: int, f: str) -> np.ndarray:
    """Pillow per channel plane (mode L or F), HWC."""
    planes = []
    for c in range(a.shape[2]):
        plane = Image.fromarray(np.ascontiguousarray(a[..., c]))
        assert plane.mode == ("L" if a.dtype == np.uint8 else "F")
        planes.append(np.asarray(plane.resize((w, h), FILTERS[f])))
    return np.stack(planes, -1)


gray = RNG.integers(0, 256, (9, 13, 1), dtype=np.uint8)
rgb = RNG.integers(0, 256, (7, 11, 3), dtype=np.uint8)
flt = RNG.normal(0, 100, (8, 9, 1)).astype(np.float32)
for f in FILTERS:
    # Both passes in each order: Pillow 13 runs the vertical one first for (16, 4) and (26, 3)
    # (wider, shorter). (From 13x9 to 12x2 it does too, by a rule the op does not reproduce;
    # such shrinking cases are left out.)
    for (w, h) in ((20, 17), (5, 4), (7, 15), (13, 3), (1, 1), (26, 9), (16, 4), (26, 3),
                   (2, 8), (8, 2)):
        case("resize", {"layout": "hwc", "width": w, "height": h, "filter": f}, tensor(gray),
             tensor(resized(gray, w, h, f)), exact=True)
    want = resized(rgb, 6, 9, f)
    # Pillow on an RGB image equals Pillow per plane; checked here once.
    assert (np.asarray(Image.fromarray(rgb).resize((6, 9), FILTERS[f])) == want).all()
    case("resize", {"layout": "hwc", "width": 6, "height": 9, "filter": f}, tensor(rgb),
         tensor(want), exact=True)
    case("resize", {"layout": "chw", "width": 6, "height": 9, "filter": f},
         tensor(np.transpose(rgb, (2, 0, 1))), tensor(np.transpose(want, (2, 0, 1))), exact=True)
    batch = np.stack([rgb, rgb[::-1]])
    case("resize", {"layout": "hwc", "width": 14, "height": 5, "filter": f}, tensor(batch),
         tensor(np.stack([resized(im, 14, 5, f) for im in batch])), exact=True)
    for (w, h) in ((5, 11), (17, 4)):
        case("resize", {"layout": "hwc", "width": w, "height": h, "filter": f}, tensor(flt),
             tensor(resized(flt, w, h, f)), exact=False, tol=1e-6)
# The 28x28 of the digits plugin from a larger scan.
scan = RNG.integers(0, 256, (64, 48, 1), dtype=np.uint8)
case("resize", {"layout": "hwc", "width": 28, "height": 28, "filter": "bilinear"},
     tensor(scan), tensor(resized(scan, 28, 28, "bilinear")), exact=True)

# ---- crop -------------------------------------------------------------------------------------

img = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)
case("crop", {"layout": "hwc", "left": 2, "top": 1, "width": 5, "height": 4}, tensor(img),
     tensor(img[1:5, 2:7]), exact=True)
case("crop", {"layout": "chw", "left": 0, "top": 3, "width": 8, "height": 3},
     tensor(np.transpose(img, (2, 0, 1))), tensor(np.transpose(img, (2, 0, 1))[:, 3:6, 0:8]),
     exact=True)
f32img = RNG.normal(size=(2, 5, 7, 1)).astype(np.float32)
case("crop", {"layout": "hwc", "left": 6, "top": 4, "width": 1, "height": 1}, tensor(f32img),
     tensor(f32img[:, 4:5, 6:7]), exact=True)
for (w, h) in ((5, 3), (4, 4), (8, 6), (1, 1), (3, 5)):
    left, top = int(round((8 - w) / 2)), int(round((6 - h) / 2))
    case("center_crop", {"layout": "hwc", "width": w, "height": h}, tensor(img),
         tensor(img[top:top + h, left:left + w]), exact=True)

# ---- normalize, cast --------------------------------------------------------------------------

mean = np.array([0.485, 0.456, 0.406], np.float32)
std = np.array([0.229, 0.224, 0.225], np.float32)
scale = np.float32(1 / 255)
case("normalize", {"layout": "hwc", "scale": float(scale), "mean": mean.tolist(),
                   "std": std.tolist()}, tensor(img),
     tensor((np.asarray(img, np.float32) * scale - mean) / std), exact=True)
chw = np.transpose(img, (2, 0, 1))
case("normalize", {"layout": "chw", "scale": float(scale), "mean": mean.tolist(),
                   "std": std.tolist()}, tensor(chw),
     tensor((np.asarray(chw, np.float32) * scale - mean[:, None, None]) / std[:, None, None]),
     exact=True)
case("normalize", {"layout": "hwc", "scale": 1.0, "mean": [], "std": [255.0]}, tensor(gray),
     tensor(np.asarray(gray, np.float32) / np.float32(255)), exact=True)
f64row = RNG.normal(size=(3, 4))
case("normalize", {"layout": "hwc", "scale": 2.0, "mean": [0.5], "std": [3.0]}, tensor(f64row),
     tensor((np.asarray(f64row, np.float32) * np.float32(2) - np.float32(0.5)) / np.float32(3)),
     exact=True)

floats = np.array([0.0, -0.0, 1.5, -1.5, 2.7, -2.7, 100.25, -100.75, 254.9, 3e9, -3e9, 1e-8],
                  np.float32)
small = np.array([0.0, 1.5, 2.7, 100.25, 254.9, 7.0], np.float32)
ints = np.array([0, 1, -1, 2**24 + 1, -(2**40) - 3, 2**62 + 12345, 127, -128], np.int64)
for src, to in ((floats, "f16"), (floats, "f64"), (floats, "bool"), (small, "u8"),
                (floats[:9], "i32"), (floats[:9], "i16"), (ints, "f32"), (ints, "f64"),
                (ints, "f16"), (np.array([True, False, True]), "f32"),
                (np.array([0, 3, 255], np.uint8), "bool"), (np.array([0, 3, 255], np.uint8), "i8"),
                (RNG.normal(size=7), "f32")):
    want = src.astype(DTYPES[to])
    if to == "i8":  # numpy wraps 255 to -1; the op saturates (ops.wit)
        want = np.clip(src.astype(np.int64), -128, 127).astype(np.int8)
    case("cast", {"to": to}, tensor(src), tensor(want), exact=True)

# ---- softmax, argmax, top-k -------------------------------------------------------------------

def softmax(a):
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


logits = RNG.normal(0, 3, (4, 10)).astype(np.float32)
case("softmax", {}, tensor(logits), tensor(softmax(logits)), exact=False, tol=1e-6)
logits64 = RNG.normal(0, 3, (2, 3, 5))
case("softmax", {}, tensor(logits64), tensor(softmax(logits64)), exact=False, tol=1e-12)
nan_row = np.array([[1.0, np.nan, 2.0], [1.0, 2.0, 3.0]], np.float32)
case("softmax", {}, tensor(nan_row), tensor(softmax(nan_row)), exact=False, tol=1e-6)
half_logits = RNG.normal(0, 2, (3, 6)).astype(np.float16)
case("softmax", {}, tensor(half_logits),
     tensor(softmax(half_logits.astype(np.float32)).astype(np.float16)), exact=False, tol=1e-3)

ties = np.array([[0.1, 0.7, 0.7, 0.2], [np.nan, 1.0, np.nan, 2.0], [-1, -1, -1, -1],
                 [0.0, -0.0, 0.0, -1.0]], np.float32)
case("argmax", {}, tensor(ties), tensor(np.argmax(ties, -1).astype(np.int64)), exact=True)
int_rows = RNG.integers(-5, 5, (3, 2, 7)).astype(np.int64)
case("argmax", {}, tensor(int_rows), tensor(np.argmax(int_rows, -1).astype(np.int64)), exact=True)
u8_rows = RNG.integers(0, 4, (5, 6)).astype(np.uint8)
case("argmax", {}, tensor(u8_rows), tensor(np.argmax(u8_rows, -1).astype(np.int64)), exact=True)


def top_k(a, k):
    key = np.where(np.isnan(a), np.inf, a) if a.dtype.kind == "f" else a
    # NaN above +inf: rank NaNs first, then the stable descending sort on the rest.
    order = np.argsort(-key.astype(np.float64), axis=-1, kind="stable")
    if a.dtype.kind == "f":
        nan_first = np.argsort(~np.isnan(np.take_along_axis(a, order, -1)), axis=-1, kind="stable")
        order = np.take_along_axis(order, nan_first, -1)
    idx = order[..., :k]
    return np.take_along_axis(a, idx, -1), idx.astype(np.int64)


probs = softmax(RNG.normal(0, 2, (3, 10)).astype(np.float32)).astype(np.float32)
for a, k in ((probs, 3), (probs, 10), (probs, 50), (ties, 2), (int_rows, 4), (u8_rows, 3)):
    values, idx = top_k(a, k)
    case("top_k", {"k": k}, tensor(a), [tensor(values), tensor(idx)], exact=True)

out = Path(__file__).with_name("golden.json")
out.write_text(json.dumps({"generator": "tests/ops/make_golden.py",
                           "pillow": __import__("PIL").__version__, "numpy": np.__version__,
                           "cases": cases}, indent=1) + "\n")
print(f"wrote {out} ({len(cases)} cases), bomb-30000.png and photo-224.jpg")
