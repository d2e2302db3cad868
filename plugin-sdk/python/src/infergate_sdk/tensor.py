"""Tensors: a dtype, a shape and row-major little-endian bytes, as the contract carries them.

A `Tensor` keeps the contract's bytes as they are (no copy in or out of the gateway) and
converts to Python numbers only when asked (`to_list`, `values`, `item`):

    >>> t = Tensor.f32([[0.5, 1.0], [2.0, 4.0]])
    >>> t.shape, t.dtype.name, len(t.data)
    ((2, 2), 'F32', 16)
    >>> t.to_list()
    [[0.5, 1.0], [2.0, 4.0]]
    >>> Tensor.from_bytes(t.data, (4,), "f32").values()
    [0.5, 1.0, 2.0, 4.0]
"""

from __future__ import annotations

import struct
from enum import Enum
from typing import Any, Iterable, Sequence, Union

from .errors import Internal

__all__ = ["DType", "Tensor", "TensorError"]


class TensorError(Internal):
    """A tensor that is inconsistent: wrong element count for its shape, wrong dtype for an
    accessor, a value that does not fit. A `PluginError` mapping to 500 when not caught; when
    the bad data came from the caller, catch it and raise `BadRequest` instead."""


class DType(Enum):
    """Element types, in the contract's order. `.value` is the name used in sample files
    (`"f32"`, `"bool"`, `"string"`), and every API taking a dtype also takes that name."""

    F16 = "f16"
    BF16 = "bf16"
    F32 = "f32"
    F64 = "f64"
    I8 = "i8"
    I16 = "i16"
    I32 = "i32"
    I64 = "i64"
    U8 = "u8"
    U16 = "u16"
    U32 = "u32"
    U64 = "u64"
    BOOL = "bool"
    STR = "string"

    @property
    def size(self) -> int:
        """Bytes per element (0 for `STR`, whose elements are variable-length)."""
        return _SIZE[self]

    @property
    def is_float(self) -> bool:
        return self in (DType.F16, DType.BF16, DType.F32, DType.F64)

    @classmethod
    def of(cls, dtype: Union["DType", str]) -> "DType":
        """A `DType` from itself or its name (`"f32"`, `"F32"`, `"bool"`, `"str"`)."""
        if isinstance(dtype, DType):
            return dtype
        name = str(dtype).lower()
        name = {"str": "string", "boolean": "bool", "float32": "f32", "float64": "f64",
                "int64": "i64", "int32": "i32", "uint8": "u8"}.get(name, name)
        try:
            return cls(name)
        except ValueError:
            names = ", ".join(d.value for d in cls)
            raise TensorError(f"unknown dtype {dtype!r}; use one of {names}") from None


_SIZE = {DType.F16: 2, DType.BF16: 2, DType.F32: 4, DType.F64: 8, DType.I8: 1, DType.I16: 2,
         DType.I32: 4, DType.I64: 8, DType.U8: 1, DType.U16: 2, DType.U32: 4, DType.U64: 8,
         DType.BOOL: 1, DType.STR: 0}
# struct codes for the dtypes struct packs directly (bf16 is packed by hand, from f32 bits).
_CODE = {DType.F16: "e", DType.F32: "f", DType.F64: "d", DType.I8: "b", DType.I16: "h",
         DType.I32: "i", DType.I64: "q", DType.U8: "B", DType.U16: "H", DType.U32: "I",
         DType.U64: "Q", DType.BOOL: "?"}

Shape = Sequence[int]


class Tensor:
    """A dense tensor. Numeric tensors hold `data` (element count × `dtype.size` bytes,
    row-major, little-endian); `STR` tensors hold `strings` (one `bytes` per element).

    Build one with `Tensor.f32(values, shape)` (and `f64`, `i8`…`u64`, `bool`, `f16`, `bf16`,
    `from_strings`), `Tensor.from_list(values, dtype, shape)` or `Tensor.from_bytes(data, shape,
    dtype)`; every constructor checks the element count against the shape. `values` may be
    flat with a `shape`, or nested, in which case the nesting is the shape.
    """

    __slots__ = ("dtype", "shape", "data", "strings")

    def __init__(self, dtype: Union[DType, str], shape: Shape, data: bytes = b"",
                 strings: Sequence[bytes] = ()):
        self.dtype = DType.of(dtype)
        self.shape = tuple(int(d) for d in shape)
        self.data = bytes(data)
        self.strings = [bytes(s) for s in strings]
        if any(d < 0 for d in self.shape):
            raise TensorError(f"shape {list(self.shape)} has a negative dimension")
        n = self.numel
        if self.dtype is DType.STR:
            if self.data or len(self.strings) != n:
                raise TensorError(f"a string tensor of shape {list(self.shape)} needs {n} "
                                  f"strings and no data, got {len(self.strings)} strings and "
                                  f"{len(self.data)} data bytes")
        elif len(self.data) != n * self.dtype.size or self.strings:
            raise TensorError(f"a {self.dtype.value} tensor of shape {list(self.shape)} needs "
                              f"{n * self.dtype.size} data bytes ({n} elements), got "
                              f"{len(self.data)}")

    # ---- constructors -------------------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes, shape: Shape, dtype: Union[DType, str]) -> "Tensor":
        """From row-major little-endian bytes, e.g. `struct.pack("<4f", …)` or
        `array.array("f", …).tobytes()`; no element is converted."""
        return cls(dtype, shape, data)

    @classmethod
    def from_list(cls, values: Any, dtype: Union[DType, str] = DType.F32,
                  shape: Shape | None = None) -> "Tensor":
        """From a flat list with `shape`, or a nested list whose nesting is the shape."""
        dtype = DType.of(dtype)
        flat, nested_shape = _flatten(values)
        shape = nested_shape if shape is None else tuple(shape)
        n = _numel(shape)
        if len(flat) != n:
            raise TensorError(f"shape {list(shape)} holds {n} elements, got {len(flat)} values")
        if dtype is DType.STR:
            return cls(dtype, shape, strings=[_to_bytes(s) for s in flat])
        return cls(dtype, shape, _pack(dtype, flat))

    @classmethod
    def from_strings(cls, values: Any, shape: Shape | None = None) -> "Tensor":
        """A `STR` tensor; `str` elements are encoded as UTF-8."""
        return cls.from_list(values, DType.STR, shape)

    # ---- reading ------------------------------------------------------------------------

    @property
    def numel(self) -> int:
        """The number of elements (the product of the shape; 1 for a scalar)."""
        return _numel(self.shape)

    @property
    def rows(self) -> int:
        """The size of dim 0 (the request's rows for a batched tensor); 1 for a scalar."""
        return self.shape[0] if self.shape else 1

    def __len__(self) -> int:
        return self.rows

    def values(self) -> list:
        """Every element, flat, as Python numbers (`bool` for BOOL, `bytes` for STR)."""
        if self.dtype is DType.STR:
            return list(self.strings)
        if self.dtype is DType.BF16:
            n = self.numel
            halves = struct.unpack(f"<{n}H", self.data)
            return list(struct.unpack(f"<{n}f", struct.pack(f"<{n}I", *(h << 16 for h in halves))))
        return list(struct.unpack(f"<{self.numel}{_CODE[self.dtype]}", self.data))

    def to_list(self) -> Any:
        """The elements nested by the shape, like numpy's `tolist()`; a scalar's one value."""
        flat = self.values()
        if not self.shape:
            return flat[0]
        return _nest(flat, self.shape)

    tolist = to_list

    def item(self) -> Any:
        """The one element of a one-element tensor."""
        if self.numel != 1:
            raise TensorError(f"item() needs a tensor of one element, not shape {list(self.shape)}")
        return self.values()[0]

    def reshape(self, *shape: Union[int, Shape]) -> "Tensor":
        """The same elements with another shape (one dimension may be -1); no copy."""
        dims = list(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else list(shape)
        if dims.count(-1) > 1:
            raise TensorError("reshape: at most one dimension may be -1")
        if -1 in dims:
            known = _numel([d for d in dims if d != -1])
            if known == 0 or self.numel % known:
                raise TensorError(f"cannot reshape {list(self.shape)} into {dims}")
            dims[dims.index(-1)] = self.numel // known
        if _numel(dims) != self.numel:
            raise TensorError(f"cannot reshape {list(self.shape)} ({self.numel} elements) into {dims}")
        t = Tensor.__new__(Tensor)
        t.dtype, t.shape, t.data, t.strings = self.dtype, tuple(dims), self.data, self.strings
        return t

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Tensor) and self.dtype is other.dtype
                and self.shape == other.shape and self.data == other.data
                and self.strings == other.strings)

    def __repr__(self) -> str:
        shown = self.values()[:8]
        more = ", …" if self.numel > 8 else ""
        return f"Tensor({self.dtype.value}, shape={list(self.shape)}, values={shown}{more})"


def _make(dtype: DType):
    def build(cls, values: Any, shape: Shape | None = None) -> Tensor:
        return cls.from_list(values, dtype, shape)

    build.__doc__ = f"A {dtype.value} tensor from a flat list with `shape`, or a nested list."
    return classmethod(build)


for _d in DType:
    if _d is not DType.STR:
        setattr(Tensor, _d.value, _make(_d))


def _pack(dtype: DType, flat: list) -> bytes:
    n = len(flat)
    try:
        if dtype is DType.BF16:
            bits = struct.unpack(f"<{n}I", struct.pack(f"<{n}f", *flat))
            return struct.pack(f"<{n}H", *(_bf16_round(b) for b in bits))
        if dtype is DType.BOOL:
            return bytes(1 if v else 0 for v in flat)
        return struct.pack(f"<{n}{_CODE[dtype]}", *flat)
    except (struct.error, OverflowError, TypeError) as e:
        raise TensorError(f"values do not fit dtype {dtype.value}: {e}") from None


def _bf16_round(bits: int) -> int:
    """The top 16 bits of an f32, rounded to nearest even; NaN stays a (quiet) NaN."""
    if (bits & 0x7F800000) == 0x7F800000 and bits & 0x007FFFFF:
        return (bits >> 16) | 0x0040
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF


def _flatten(values: Any) -> tuple[list, tuple]:
    if isinstance(values, (bytes, bytearray, str)) or not isinstance(values, Iterable):
        return [values], ()
    values = list(values)
    if not values:
        return [], (0,)
    parts = [_flatten(v) for v in values]
    inner = parts[0][1]
    if any(p[1] != inner for p in parts):
        raise TensorError("nested values are ragged: every row must have the same shape")
    return [x for p in parts for x in p[0]], (len(values),) + inner


def _nest(flat: list, shape: tuple) -> list:
    if len(shape) == 1:
        return flat
    step = _numel(shape[1:])
    return [_nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def _numel(shape: Iterable[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _to_bytes(s: Any) -> bytes:
    return s.encode() if isinstance(s, str) else bytes(s)
