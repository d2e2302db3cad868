"""The digits plugin's work in Python, shared by the peer servers of bench/compare.rs
(tornado_app.py, mosec_app.py, triton_app.py) so every peer does exactly the same job.

Pre and post match plugins/digits: decode, grayscale, bilinear resize to 28x28 when not
already that size, pixel / 255 as f32 [28, 28, 1]; top-k of `probabilities`, highest first,
ties to the lower label. Pillow and numpy do the pixel work (C code), as a competent Python
developer would have them do it.

The TF Serving messages come from `tensorflow_serving.apis`: bench/run compiles them with
grpcio-tools from the same .proto files TF Serving publishes (proto/ in this repository keeps
upstream's package names and field numbers), which is how a Python service talks to TF Serving
without importing the 2 GB TensorFlow package; the bytes on the wire are the ones the
`tensorflow-serving-api` wheel's stubs produce.
"""

import io

import numpy as np
from PIL import Image
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

LABELS = [str(i) for i in range(10)]
SIZE = 28
DEFAULT_K = 3


def preprocess(body):
    """Image bytes -> f32 [28, 28, 1] in [0, 1]."""
    img = Image.open(io.BytesIO(body))
    img = img.convert("L")
    if img.size != (SIZE, SIZE):
        img = img.resize((SIZE, SIZE), Image.BILINEAR)
    pixels = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    return pixels.reshape(SIZE, SIZE, 1)


def predict_request(model, images):
    """A PredictRequest of `images` (f32 [N, 28, 28, 1]) as one tensor_content (one copy)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "serving_default"
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in images.shape]
    request.inputs["image"].CopyFrom(
        tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims),
            tensor_content=images.tobytes(),
        )
    )
    return request


def probabilities(response):
    """The `probabilities` output (tensor_content or float_val, as TF Serving sends) as an
    f32 [N, 10] ndarray."""
    proto = response.outputs["probabilities"]
    shape = [d.size for d in proto.tensor_shape.dim]
    if proto.tensor_content:
        values = np.frombuffer(proto.tensor_content, dtype=np.float32)
    else:
        values = np.asarray(proto.float_val, dtype=np.float32)
    return values.reshape(shape)


def top_k(row, k=DEFAULT_K):
    """[(label, score)] of the `k` highest entries of `row`, highest first."""
    order = np.argsort(-row, kind="stable")[:k]
    return [(LABELS[i], float(row[i])) for i in order]
