#!/usr/bin/env python3
"""Encode the wire-compatibility reference messages in tests/fixtures/wire/.

Every message is built with the OFFICIAL `tensorflow-serving-api` / `tensorflow` protobuf
classes and serialized with SerializeToString(deterministic=True), so the files are the
bytes TF Serving's own Python client puts on the wire. The Rust side decodes them with the
project's prost types and re-encodes them (tests/wire.rs); the e2e suite reruns this script
and checks the committed files are still what the official package produces.

See tests/fixtures/wire/README.md for what each file holds.

Usage: python scripts/wire_golden.py [--out DIR]   (default: tests/fixtures/wire)
"""

import argparse
import os
import struct
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from google.protobuf import wrappers_pb2  # noqa: E402
from tensorflow.core.framework import (  # noqa: E402
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)
from tensorflow.core.protobuf import error_codes_pb2, meta_graph_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "tests", "fixtures", "wire")


def shape(*dims):
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])


def image_tensor():
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=shape(1, 2, 2, 1),
        tensor_content=struct.pack("<4f", 0.0, 0.25, 0.5, 1.0))


def predict_request_version():
    req = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(
            name="digits",
            version=wrappers_pb2.Int64Value(value=2),
            signature_name="serving_default"),
        output_filter=["probabilities"])
    req.inputs["image"].CopyFrom(image_tensor())
    return req


def predict_request_label():
    req = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(
            name="digits", version_label="stable", signature_name="serving_default"))
    req.inputs["image"].CopyFrom(image_tensor())
    return req


def response_spec():
    return model_pb2.ModelSpec(
        name="digits", version=wrappers_pb2.Int64Value(value=1),
        signature_name="serving_default")


def predict_response_typed():
    resp = predict_pb2.PredictResponse(model_spec=response_spec())
    resp.outputs["probabilities"].CopyFrom(tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_shape=shape(1, 3), float_val=[0.1, 0.2, 0.7]))
    return resp


def predict_response_int64():
    resp = predict_pb2.PredictResponse(model_spec=response_spec())
    resp.outputs["label"].CopyFrom(tensor_pb2.TensorProto(
        dtype=types_pb2.DT_INT64, tensor_shape=shape(2), int64_val=[7, 3]))
    return resp


def model_status_response():
    resp = get_model_status_pb2.GetModelStatusResponse()
    for version in (1, 2):
        st = resp.model_version_status.add()
        st.version = version
        st.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        st.status.error_code = error_codes_pb2.OK
        st.status.error_message = ""
    return resp


def model_metadata_response():
    sig = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    sig.inputs["image"].CopyFrom(meta_graph_pb2.TensorInfo(
        name="serving_default_image:0", dtype=types_pb2.DT_FLOAT,
        tensor_shape=shape(-1, 28, 28, 1)))
    sig.outputs["probabilities"].CopyFrom(meta_graph_pb2.TensorInfo(
        name="StatefulPartitionedCall:0", dtype=types_pb2.DT_FLOAT,
        tensor_shape=shape(-1, 10)))
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    sig_map.signature_def["serving_default"].CopyFrom(sig)
    resp = get_model_metadata_pb2.GetModelMetadataResponse(
        model_spec=model_pb2.ModelSpec(name="digits", version=wrappers_pb2.Int64Value(value=1)))
    resp.metadata["signature_def"].Pack(sig_map)
    return resp


def tensor_string():
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, tensor_shape=shape(2), string_val=[b"a", b"bc"])


FIXTURES = {
    "predict_request_version.bin": predict_request_version,
    "predict_request_label.bin": predict_request_label,
    "predict_response_typed.bin": predict_response_typed,
    "predict_response_int64.bin": predict_response_int64,
    "model_status_response.bin": model_status_response,
    "model_metadata_response.bin": model_metadata_response,
    "tensor_string.bin": tensor_string,
}


def encode_all():
    return {name: build().SerializeToString(deterministic=True) for name, build in FIXTURES.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT, help="output directory")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, data in encode_all().items():
        with open(os.path.join(args.out, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes  {data.hex()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
