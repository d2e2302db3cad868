"""Write infergate plugins in Python: two plain functions, built into a WebAssembly component.

    from infergate_sdk import Outputs, Prepared, Request, Response, BadRequest, ops

    def preprocess(req: Request) -> Prepared:
        img = ops.decode_image(req.body, color="gray")                 # u8 [h, w, 1]
        img = ops.resize(img, 28, 28, filter="bilinear")
        return Prepared({"image": ops.normalize(img, scale=1 / 255).reshape(1, 28, 28, 1)})

    def postprocess(outputs: Outputs, context: bytes) -> Response:
        values, indices = ops.top_k(outputs["probabilities"], 3)
        return Response.json({"labels": indices.to_list(), "scores": values.to_list()})

`infergate-plugin build` turns the folder holding that module into `plugin.wasm`.

Layout:
- `tensor`: `Tensor`, `DType`, `TensorError` — dtype + shape + little-endian bytes.
- `request`: `Request` — the client's request; header and query lookups, `json()`.
- `response`: `Prepared` (what preprocess returns), `Response` (what postprocess returns).
- `outputs`: `Outputs` — the model's named outputs, as postprocess gets them.
- `errors`: `BadRequest` (400), `Unprocessable` (422), `Internal` (500).
- `log`: the gateway's log.
- `ops`: decode/resize/crop/normalize/cast/softmax/argmax/top-k, native in the gateway.
- `build`: the `infergate-plugin` command (runs on the developer's machine, not in plugins).
- `_glue`, `_wit`: wire conversions and the generated bindings; `_pyops`, `_jpeg`: the
  pure-Python ops.
"""

from . import log, ops
from .errors import BadRequest, Internal, PluginError, Unprocessable
from .outputs import Outputs
from .request import Request
from .response import Prepared, Response
from .tensor import DType, Tensor, TensorError

__version__ = "0.1.0"

__all__ = ["BadRequest", "DType", "Internal", "Outputs", "PluginError", "Prepared", "Request",
           "Response", "Tensor", "TensorError", "Unprocessable", "log", "ops"]
