"""The pure-Python ops against Pillow and numpy on the same inputs (the references ops.wit
names). Outside a component `ops.NATIVE` is False, so these exercise the fallbacks that
plugins built against contract 0.1.0 run."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from infergate_sdk import BadRequest, DType, Internal, Tensor, ops


def arr(t: Tensor) -> np.ndarray:
    return np.frombuffer(t.data, {"u8": np.uint8, "f32": np.float32, "i64": np.int64,
                                  "f64": np.float64, "i32": np.int32}[t.dtype.value]).reshape(t.shape)


def photo(w=45, h=37, seed=0) -> Image.Image:
    """A smooth-ish RGB picture (noise resized up), so JPEG has real structure to code."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((h // 4 + 1, w // 4 + 1, 3)) * 255).astype(np.uint8))
    return small.resize((w, h), Image.BICUBIC)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "I;16"])
@pytest.mark.parametrize("color", ["gray", "rgb"])
def test_png_decodes_to_pillows_pixels(mode, color):
    img = photo().convert(mode) if mode != "I;16" else None
    if mode == "I;16":  # 16-bit gray: Pillow reads it as I;16; we round v / 257 (ops.wit)
        img = Image.fromarray((np.arange(45 * 37).reshape(37, 45) * 37).astype(np.uint16))
        want = np.round(np.asarray(img).astype(np.float64) / 257).astype(np.uint8)
        want = want if color == "gray" else np.repeat(want[..., None], 3, axis=2)
    else:
        want = np.asarray(img.convert("L" if color == "gray" else "RGB"))
    got = arr(ops.decode_image(encode(img, "PNG"), color=color))
    assert got.shape == (37, 45, 1 if color == "gray" else 3)
    np.testing.assert_array_equal(got.reshape(want.shape), want)


@pytest.mark.parametrize("subsampling", [0, 1, 2])  # 4:4:4, 4:2:2, 4:2:0
@pytest.mark.parametrize("color", ["gray", "rgb"])
def test_jpeg_decodes_to_pillows_pixels(subsampling, color):
    data = encode(photo(), "JPEG", quality=85, subsampling=subsampling)
    want = np.asarray(Image.open(io.BytesIO(data)).convert("L" if color == "gray" else "RGB"))
    got = arr(ops.decode_image(data, color=color))
    np.testing.assert_array_equal(got.reshape(want.shape), want)


def test_gray_jpeg_with_restart_markers_decodes():
    img = photo(64, 40).convert("L")
    data = encode(img, "JPEG", quality=90)
    want = np.asarray(Image.open(io.BytesIO(data)))
    np.testing.assert_array_equal(arr(ops.decode_image(data, "gray"))[..., 0], want)


def test_chw_layout_is_the_transpose():
    data = encode(photo(), "PNG")
    hwc = arr(ops.decode_image(data, "rgb", "hwc"))
    chw = arr(ops.decode_image(data, "rgb", "chw"))
    np.testing.assert_array_equal(chw, hwc.transpose(2, 0, 1))


def png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)))


def test_a_30000x30000_png_header_is_refused_before_allocating():
    with pytest.raises(ops.ImageError, match="30000x30000 pixels, over the decode limits"):
        ops.decode_image(png_header(30000, 30000), "gray")


def test_tighter_limits_from_the_plugin_apply():
    data = encode(photo(), "PNG")
    with pytest.raises(ops.ImageError, match="over the decode limits"):
        ops.decode_image(data, max_width=40)
    with pytest.raises(ops.ImageError, match="over the decode limits"):
        ops.decode_image(data, max_pixels=45 * 37 - 1)


@pytest.mark.parametrize("body", [b"", b"not an image", b"\x89PNG\r\n\x1a\n\0\0", b"\xff\xd8\xff\xe0"])
def test_undecodable_bytes_are_a_bad_request(body):
    with pytest.raises(ops.ImageError) as e:
        ops.decode_image(body)
    assert isinstance(e.value, BadRequest) and e.value.status == 400


@pytest.mark.parametrize("filter", ops.FILTERS)
# (60, 20), (50, 5): wider but shorter, where Pillow runs the vertical pass first.
@pytest.mark.parametrize("size", [(20, 15), (60, 50), (45, 20), (7, 61), (60, 20), (50, 5)])
def test_resize_u8_matches_pillow(filter, size):
    img = photo()
    want = np.asarray(img.resize(size, getattr(Image, filter.upper())))
    got = arr(ops.resize(ops.decode_image(encode(img, "PNG")), *size, filter=filter))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("filter", ops.FILTERS)
def test_resize_f32_matches_pillow_mode_f(filter):
    plane = np.asarray(photo().convert("L"), np.float32) / 7.0
    want = np.asarray(Image.fromarray(plane, "F").resize((19, 23), getattr(Image, filter.upper())))
    t = Tensor.from_bytes(plane.tobytes(), (37, 45, 1), "f32")
    got = arr(ops.resize(t, 19, 23, filter))[..., 0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_resize_keeps_an_image_of_the_right_size_and_takes_batches_and_chw():
    t = ops.decode_image(encode(photo(), "PNG"), "rgb")
    assert ops.resize(t, 45, 37, "bilinear") is t
    batch = Tensor.from_bytes(t.data * 2, (2, 37, 45, 3), "u8")
    one = arr(ops.resize(t, 10, 12, "bicubic"))
    two = arr(ops.resize(batch, 10, 12, "bicubic"))
    np.testing.assert_array_equal(two, np.stack([one, one]))
    chw = ops.decode_image(encode(photo(), "PNG"), "rgb", "chw")
    np.testing.assert_array_equal(arr(ops.resize(chw, 10, 12, "bicubic", "chw")), one.transpose(2, 0, 1))


def test_resize_refuses_what_it_does_not_take():
    with pytest.raises(ops.OpError, match="filter must be one of"):
        ops.resize(Tensor.u8([0] * 4, (2, 2, 1)), 1, 1, "box")
    with pytest.raises(ops.OpError, match="u8 or f32"):
        ops.resize(Tensor.i64([0] * 4, (2, 2, 1)), 1, 1, "nearest")
    with pytest.raises(ops.OpError, match="rank 3 or 4"):
        ops.resize(Tensor.u8([0] * 4, (4,)), 1, 1, "nearest")


def test_crop_and_center_crop_match_numpy_and_pillow():
    img = photo()
    t = ops.decode_image(encode(img, "PNG"), "rgb")
    np.testing.assert_array_equal(arr(ops.crop(t, 3, 5, 20, 10)), np.asarray(img.crop((3, 5, 23, 15))))
    a = np.asarray(img)
    # torchvision CenterCrop: top = round((37 - 24) / 2) = 6, left = round((45 - 30) / 2) = 8
    np.testing.assert_array_equal(arr(ops.center_crop(t, 30, 24)), a[6:30, 8:38])
    chw = ops.decode_image(encode(img, "PNG"), "rgb", "chw")
    np.testing.assert_array_equal(arr(ops.crop(chw, 3, 5, 20, 10, "chw")), a[5:15, 3:23].transpose(2, 0, 1))
    with pytest.raises(ops.OpError, match="not inside"):
        ops.crop(t, 40, 0, 10, 10)


def test_normalize_matches_numpy_in_f32():
    img = photo()
    t = ops.decode_image(encode(img, "PNG"), "rgb")
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    want = (np.asarray(img, np.float32) * np.float32(1 / 255) - np.float32(mean)) / np.float32(std)
    got = arr(ops.normalize(t, 1 / 255, mean, std))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    chw = ops.decode_image(encode(img, "PNG"), "rgb", "chw")
    np.testing.assert_allclose(arr(ops.normalize(chw, 1 / 255, mean, std, "chw")),
                               want.transpose(2, 0, 1), rtol=1e-6, atol=1e-6)
    with pytest.raises(ops.OpError, match="mean has 2 values"):
        ops.normalize(t, 1.0, (0.1, 0.2))


def test_cast_matches_numpy_where_numpy_defines_it():
    values = [-2.7, -0.5, 0.0, 0.5, 1.9, 254.6]
    t = Tensor.f32(values)
    np.testing.assert_array_equal(arr(ops.cast(t, "i32")), np.float32(values).astype(np.int32))
    assert ops.cast(Tensor.f32([300.0, -5.0, float("nan")]), "u8").values() == [255, 0, 0]
    assert ops.cast(Tensor.u8([0, 3]), DType.BOOL).values() == [False, True]
    assert ops.cast(Tensor.i64([1, 2]), "f32").values() == [1.0, 2.0]


def test_softmax_argmax_top_k_match_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 10)).astype(np.float32)
    x[2, 3] = x[2, 7] = x[2].max() + 1  # a tie: the lower index wins
    t = Tensor.from_bytes(x.tobytes(), x.shape, "f32")
    e = np.exp(x - x.max(-1, keepdims=True))
    np.testing.assert_allclose(arr(ops.softmax(t)), e / e.sum(-1, keepdims=True), rtol=1e-6)
    np.testing.assert_array_equal(arr(ops.argmax(t)), np.argmax(x, axis=-1))
    values, indices = ops.top_k(t, 3)
    order = np.argsort(-x, axis=-1, kind="stable")[:, :3]
    np.testing.assert_array_equal(arr(indices), order)
    np.testing.assert_array_equal(arr(values), np.take_along_axis(x, order, -1))
    assert ops.top_k(t, 50)[1].shape == (4, 10)
    with pytest.raises(Internal, match="k must be at least 1"):
        ops.top_k(t, 0)
    with pytest.raises(ops.OpError, match="float"):
        ops.softmax(Tensor.i64([1, 2]))


def test_normalize_by_division_is_numpys_division_bit_for_bit():
    img = photo().convert("L")
    t = ops.decode_image(encode(img, "PNG"), "gray")
    want = np.asarray(img, np.float32)[..., None] / np.float32(255)
    np.testing.assert_array_equal(arr(ops.normalize(t, std=255)), want)
