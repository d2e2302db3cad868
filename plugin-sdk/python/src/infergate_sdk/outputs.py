"""The model's named outputs, as postprocess receives them (this request's rows only)."""

from __future__ import annotations

from typing import Iterator, Optional

from .errors import Internal
from .tensor import Tensor

__all__ = ["Outputs"]


class Outputs:
    """A read-only mapping from output name to `Tensor`.

    `outputs["probabilities"]` raises `Internal` (500) naming the missing output and listing
    the ones present; `outputs.get(name)` returns None instead. The gateway asks the model for
    all of its outputs (an empty TF Serving `output_filter`); pick the ones you need here.
    """

    def __init__(self, outputs: list[tuple[str, Tensor]] | dict):
        self._items = list(outputs.items() if isinstance(outputs, dict) else outputs)

    def __getitem__(self, name: str) -> Tensor:
        for n, t in self._items:
            if n == name:
                return t
        present = ", ".join(repr(n) for n, _ in self._items) or "none"
        raise Internal(f"the model returned no output {name!r} (it returned: {present})")

    def get(self, name: str, default: Optional[Tensor] = None) -> Optional[Tensor]:
        return next((t for n, t in self._items if n == name), default)

    def __contains__(self, name: object) -> bool:
        return any(n == name for n, _ in self._items)

    def names(self) -> list[str]:
        return [n for n, _ in self._items]

    def items(self) -> list[tuple[str, Tensor]]:
        return list(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
