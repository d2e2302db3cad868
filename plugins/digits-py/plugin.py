"""The digits example in Python: a PNG/JPEG digit in, the top-k digits out (plugins/digits)."""
import json

from infergate_sdk import BadRequest, Internal, Outputs, Prepared, Request, Response, ops

LABELS = [str(d) for d in range(10)]
MODEL = "digits"  # the model answering (the route is digits-py); the shared samples say so


def preprocess(req: Request) -> Prepared:
    raw = req.query_param("k")
    k = 3 if raw is None else int(raw) if raw.isascii() and raw.isdigit() else 0
    if not 1 <= k <= 10:
        raise BadRequest(f"query parameter k must be a whole number from 1 to 10, not '{raw}'")
    try:
        img = ops.decode_image(req.body, color="gray")
    except ops.ImageError as e:
        raise BadRequest(f"could not decode the image: {e}; send a PNG or JPEG image as the "
                         "request body") from None
    img = ops.resize(img, 28, 28, filter="bilinear")  # unchanged when already 28x28
    image = ops.normalize(img, std=255).reshape(1, 28, 28, 1)  # pixel / 255, as in training
    return Prepared({"image": image}, context=json.dumps({"k": k, "model": MODEL}, separators=(",", ":")))


def postprocess(outputs: Outputs, context: bytes) -> Response:
    probs = outputs["probabilities"]
    if probs.dtype.value != "f32" or len(probs.shape) != 2 or probs.shape[1] != 10:
        raise Internal(f"output 'probabilities' is {probs.dtype.value} {list(probs.shape)}; "
                       "the digits plugin expects f32 [rows, 10]")
    ctx = json.loads(context)
    scores, labels = ops.top_k(probs, ctx["k"])
    rows = [[{"label": LABELS[i], "score": s} for i, s in zip(li, si)]
            for li, si in zip(labels.to_list(), scores.to_list())]
    return Response.json({"model": ctx["model"], "predictions": rows[0] if len(rows) == 1 else rows})
