"""What the two functions return: `Prepared` from preprocess, `Response` from postprocess."""

from __future__ import annotations

import json as _json
from typing import Any, Mapping, Optional, Union

from .errors import Internal
from .tensor import Tensor

__all__ = ["Prepared", "Response"]


class Prepared:
    """The model's named input tensors (all with the same dim 0, the request's rows) and
    opaque context bytes handed unchanged to postprocess.

        Prepared({"image": tensor}, context=json.dumps({"k": 3}))
        Prepared().input("image", tensor).context(b"...")
    """

    def __init__(self, inputs: Optional[Mapping[str, Tensor]] = None,
                 context: Union[bytes, str] = b""):
        self.inputs: list[tuple[str, Tensor]] = list((inputs or {}).items())
        self._context = _bytes(context)

    def input(self, name: str, tensor: Tensor) -> "Prepared":
        """Adds an input; returns self, to chain."""
        if not isinstance(tensor, Tensor):
            raise Internal(f"input {name!r} is a {type(tensor).__name__}, not a Tensor")
        self.inputs.append((name, tensor))
        return self

    def context(self, context: Union[bytes, str]) -> "Prepared":
        """Sets the context (text is encoded as UTF-8); returns self, to chain."""
        self._context = _bytes(context)
        return self

    @property
    def context_bytes(self) -> bytes:
        return self._context

    def get(self, name: str) -> Optional[Tensor]:
        """The input called `name`, or None (for tests)."""
        return next((t for n, t in self.inputs if n == name), None)


class Response:
    """The HTTP response: `status` (100..=599), `headers` as (name, value) pairs, `body`."""

    def __init__(self, status: int = 200, body: Union[bytes, str] = b"",
                 headers: Optional[list] = None):
        self.status = int(status)
        self.body = _bytes(body)
        self.headers: list[tuple[str, str]] = list(headers or [])

    @classmethod
    def json(cls, value: Any, status: int = 200) -> "Response":
        """`value` as a JSON body (compact, UTF-8) with `content-type: application/json`.
        Floats print as Python's `repr`, the shortest text that reads back the same double."""
        body = _json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return cls(status, body, [("content-type", "application/json")])

    @classmethod
    def text(cls, text: str, status: int = 200) -> "Response":
        """A `text/plain; charset=utf-8` body."""
        return cls(status, text, [("content-type", "text/plain; charset=utf-8")])

    def header(self, name: str, value: str) -> "Response":
        """Adds a header; returns self, to chain."""
        self.headers.append((name, value))
        return self

    def header_value(self, name: str) -> Optional[str]:
        """The first header called `name` (case-insensitive), or None."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


def _bytes(value: Union[bytes, str]) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)
