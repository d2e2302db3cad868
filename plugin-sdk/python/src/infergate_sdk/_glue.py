"""What the generated entry module calls around a plugin's own `preprocess`/`postprocess`:
wire records to SDK types and back, and exceptions to the contract's `plugin-error`.

An uncaught exception that is not a `PluginError` becomes `internal` with
"<ExceptionType>: <message>"; its traceback goes to the gateway's log (never to the client).
"""

from __future__ import annotations

import traceback
from typing import Any, Callable

from . import _wit, log
from .errors import BadRequest, Internal, PluginError, Unprocessable
from .outputs import Outputs
from .request import Request
from .response import Prepared, Response
from .tensor import DType, Tensor

# DType ↔ the generated enum, by position: both follow the contract's order.
_DTYPES = list(DType)


def tensor_from_wire(t: Any) -> Tensor:
    out = Tensor.__new__(Tensor)
    out.dtype, out.shape, out.data, out.strings = _DTYPES[t.dtype.value], tuple(t.shape), t.data, t.strings
    return out


def tensor_to_wire(t: Tensor) -> Any:
    return _wit.types.Tensor(_wit.types.Dtype(_DTYPES.index(t.dtype)), list(t.shape), t.data,
                             t.strings)


def preprocess(req: Any, fn: Callable[[Request], Prepared]) -> Any:
    request = Request(model=req.model, body=req.body, version=req.version, label=req.label,
                      method=req.method, path=req.path, query=req.query, headers=req.headers)
    prepared = _call(fn, "preprocess", request)
    if not isinstance(prepared, Prepared):
        _raise(Internal(f"preprocess returned {type(prepared).__name__}, not Prepared"))
    inputs = []
    for name, tensor in prepared.inputs:
        if not isinstance(tensor, Tensor):
            _raise(Internal(f"preprocess: input {name!r} is a {type(tensor).__name__}, not a Tensor"))
        inputs.append((name, tensor_to_wire(tensor)))
    return _wit.types.Prepared(inputs, prepared.context_bytes)


def postprocess(outputs: Any, context: bytes, fn: Callable[[Outputs, bytes], Response]) -> Any:
    try:
        wrapped = Outputs([(n, tensor_from_wire(t)) for n, t in outputs])
    except PluginError as e:
        _raise(e)
    resp = _call(fn, "postprocess", wrapped, context)
    if not isinstance(resp, Response):
        _raise(Internal(f"postprocess returned {type(resp).__name__}, not Response"))
    return _wit.types.Response(resp.status, [(str(k), str(v)) for k, v in resp.headers], resp.body)


def _call(fn: Callable, name: str, *args: Any) -> Any:
    try:
        return fn(*args)
    except PluginError as e:
        _raise(e)
    except Exception as e:  # anything else is a bug in the plugin: 500, traceback to the log
        log.error(f"{name} raised:\n{traceback.format_exc().rstrip()}")
        _raise(Internal(f"{type(e).__name__}: {e}"))


def _raise(e: PluginError) -> None:
    t = _wit.types
    if isinstance(e, BadRequest):
        raise _wit.Err(t.PluginError_BadRequest(e.message))
    if isinstance(e, Unprocessable):
        raise _wit.Err(t.PluginError_Unprocessable(e.message))
    raise _wit.Err(t.PluginError_Internal(e.message))
