"""The client's HTTP request, as preprocess receives it."""

from __future__ import annotations

import json as _json
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import parse_qsl

from .errors import BadRequest

__all__ = ["Request"]


@dataclass
class Request:
    """`body` is the raw bytes; `headers` is a list of (lower-case name, value) pairs in the
    order sent; `query` is the raw query string without `?`; `version`/`label` come from the
    URL (`/versions/{v}`, `/labels/{l}`); `model` is the model's route name."""

    model: str
    body: bytes = b""
    version: Optional[int] = None
    label: Optional[str] = None
    method: str = "POST"
    path: str = ""
    query: str = ""
    headers: list = field(default_factory=list)

    def header(self, name: str) -> Optional[str]:
        """The first header called `name` (case-insensitive), or None."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def query_param(self, name: str) -> Optional[str]:
        """The first `name=value` of the query string, percent-decoded, or None."""
        return next((v for k, v in parse_qsl(self.query, keep_blank_values=True) if k == name),
                    None)

    def body_str(self) -> str:
        """The body as UTF-8 text; a `BadRequest` (400) if it is not UTF-8."""
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRequest(f"the request body is not UTF-8 text: {e}") from None

    def json(self) -> Any:
        """The body parsed as JSON; a `BadRequest` (400) saying where it is malformed."""
        try:
            return _json.loads(self.body_str())
        except ValueError as e:
            raise BadRequest(f"the request body is not valid JSON: {e}") from None
