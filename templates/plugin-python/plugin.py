"""The {{name}} plugin: JSON features in, the best label out.

- preprocess: {"features": [0.1, 0.2, …]} → input `features`, f32 [1, n].
- postprocess: output `scores`, f32 [1, classes] → {"label": "dog", "score": 0.7}.

Every import is at the top of the module: `infergate-plugin build` runs the module once at
build time and snapshots it, so an import inside a function is refused.
"""
from infergate_sdk import BadRequest, Outputs, Prepared, Request, Response, Tensor, ops

# Class names, in the order of the model's `scores`.
LABELS = ["cat", "dog", "bird"]


def preprocess(req: Request) -> Prepared:
    body = req.json()
    features = body.get("features") if isinstance(body, dict) else None
    if not isinstance(features, list) or not all(isinstance(v, (int, float)) for v in features):
        raise BadRequest('send {"features": [numbers]}')
    return Prepared({"features": Tensor.f32(features, shape=(1, len(features)))})


def postprocess(outputs: Outputs, context: bytes) -> Response:
    # ops.argmax/top_k run in the gateway, natively, when it offers them (contract 0.2.0).
    scores, labels = ops.top_k(outputs["scores"], 1)
    best = labels.values()[0]
    # The f32 score as the double it exactly is (0.7f32 prints 0.699999988079071).
    return Response.json({"label": LABELS[best], "score": scores.values()[0]})
