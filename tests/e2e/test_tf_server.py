"""scripts/tf_server.py against the official tensorflow-serving-api client stubs.

These pin the backend the gateway tests rely on: it must answer like TF Serving does.
"""

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from support import PNG_IMAGES, load_image, start_tf_server

RPC_TIMEOUT = 30


@pytest.fixture(scope="module")
def channel(tf_server):
    ch = grpc.insecure_channel(tf_server.target)
    grpc.channel_ready_future(ch).result(timeout=RPC_TIMEOUT)
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def predict_stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def float_tensor(arr, typed=False):
    arr = np.asarray(arr, np.float32)
    t = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    for d in arr.shape:
        t.tensor_shape.dim.add(size=d)
    if typed:
        t.float_val.extend(arr.ravel().tolist())
    else:
        t.tensor_content = arr.astype("<f4").tobytes()
    return t


def request(image, name="digits", version=None, label=None, signature=None, output_filter=(),
            typed=False):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    if signature is not None:
        req.model_spec.signature_name = signature
    req.inputs["image"].CopyFrom(float_tensor(image, typed))
    req.output_filter.extend(output_filter)
    return req


def rpc_error(fn, req):
    with pytest.raises(grpc.RpcError) as info:
        fn(req, timeout=RPC_TIMEOUT)
    return info.value.code(), info.value.details()


@pytest.fixture(scope="module")
def image():
    return load_image(PNG_IMAGES[0])


@pytest.mark.parametrize("version,label,served", [(None, None, 2), (1, None, 1), (2, None, 2),
                                                  (None, "stable", 1)])
def test_predict_version_choice(predict_stub, reference, image, version, label, served):
    resp = predict_stub.Predict(request(image, version=version, label=label), timeout=RPC_TIMEOUT)
    assert resp.model_spec.name == "digits"
    assert resp.model_spec.version.value == served
    assert resp.model_spec.signature_name == "serving_default"
    ref = reference.run(image, served)
    probs, label_t = resp.outputs["probabilities"], resp.outputs["label"]
    # TF Serving's default encoding: typed fields, not tensor_content.
    assert probs.dtype == types_pb2.DT_FLOAT and not probs.tensor_content
    assert [d.size for d in probs.tensor_shape.dim] == [1, 10]
    np.testing.assert_allclose(np.array(probs.float_val), ref["probabilities"].ravel(), atol=1e-6)
    assert label_t.dtype == types_pb2.DT_INT64 and not label_t.tensor_content
    assert [d.size for d in label_t.tensor_shape.dim] == [1]
    assert list(label_t.int64_val) == ref["label"].tolist()


def test_predict_typed_input_and_batch(predict_stub, reference):
    images = np.concatenate([load_image(p) for p in PNG_IMAGES[:3]])
    resp = predict_stub.Predict(request(images, typed=True), timeout=RPC_TIMEOUT)
    ref = reference.run(images)
    assert [d.size for d in resp.outputs["probabilities"].tensor_shape.dim] == [3, 10]
    np.testing.assert_allclose(np.array(resp.outputs["probabilities"].float_val),
                               ref["probabilities"].ravel(), atol=1e-6)
    assert list(resp.outputs["label"].int64_val) == ref["label"].tolist()


def test_output_filter(predict_stub, image):
    resp = predict_stub.Predict(request(image, output_filter=["label"]), timeout=RPC_TIMEOUT)
    assert list(resp.outputs) == ["label"]


def test_stats_file_records_batches(predict_stub, tf_server, image):
    before = tf_server.stats()["predict_calls"]["digits"]
    predict_stub.Predict(request(np.concatenate([image] * 4), version=1), timeout=RPC_TIMEOUT)
    stats = tf_server.stats()
    assert stats["predict_calls"]["digits"] == before + [4]
    assert stats["predict_versions"]["digits"][-1] == 1


@pytest.mark.parametrize("kwargs,code,text", [
    ({"name": "nope"}, grpc.StatusCode.NOT_FOUND, "Servable not found"),
    ({"version": 9}, grpc.StatusCode.NOT_FOUND, "Specific(digits, 9)"),
    ({"label": "nope"}, grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label"),
    ({"signature": "nope"}, grpc.StatusCode.FAILED_PRECONDITION, 'signature key "nope"'),
    ({"output_filter": ["nope"]}, grpc.StatusCode.INVALID_ARGUMENT, "output tensor alias"),
])
def test_predict_errors(predict_stub, image, kwargs, code, text):
    got_code, details = rpc_error(predict_stub.Predict, request(image, **kwargs))
    assert got_code == code, details
    assert text in details


def test_predict_input_validation(predict_stub):
    req = request(np.zeros((1, 27, 27, 1)))
    code, details = rpc_error(predict_stub.Predict, req)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "shape" in details

    req = request(np.zeros((1, 28, 28, 1)))
    req.inputs["image"].dtype = types_pb2.DT_DOUBLE
    req.inputs["image"].tensor_content = np.zeros((1, 28, 28, 1), "<f8").tobytes()
    code, details = rpc_error(predict_stub.Predict, req)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "float" in details, details

    req = request(np.zeros((1, 28, 28, 1)))
    req.inputs["extra"].CopyFrom(req.inputs["image"])
    code, details = rpc_error(predict_stub.Predict, req)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "extra" in details

    req = request(np.zeros((1, 28, 28, 1)))
    req.inputs["image"].tensor_content = req.inputs["image"].tensor_content[:-4]
    code, details = rpc_error(predict_stub.Predict, req)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "tensor parsing error" in details


def test_model_metadata(predict_stub):
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "digits"
    resp = predict_stub.GetModelMetadata(req, timeout=RPC_TIMEOUT)
    assert resp.model_spec.name == "digits" and resp.model_spec.version.value == 2
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    assert resp.metadata["signature_def"].Unpack(sig_map)
    sig = sig_map.signature_def["serving_default"]
    assert sig.method_name == "tensorflow/serving/predict"
    image = sig.inputs["image"]
    assert image.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in image.tensor_shape.dim] == [-1, 28, 28, 1]
    assert sig.outputs["probabilities"].dtype == types_pb2.DT_FLOAT
    assert [d.size for d in sig.outputs["probabilities"].tensor_shape.dim] == [-1, 10]
    assert sig.outputs["label"].dtype == types_pb2.DT_INT64

    req.ClearField("metadata_field")
    code, _ = rpc_error(predict_stub.GetModelMetadata, req)
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_model_status(model_stub):
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "digits"
    resp = model_stub.GetModelStatus(req, timeout=RPC_TIMEOUT)
    assert [(s.version, s.state) for s in resp.model_version_status] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
        (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
    assert all(s.status.error_code == 0 for s in resp.model_version_status)

    req.model_spec.version.value = 2
    resp = model_stub.GetModelStatus(req, timeout=RPC_TIMEOUT)
    assert [s.version for s in resp.model_version_status] == [2]

    req.model_spec.version.value = 9
    assert rpc_error(model_stub.GetModelStatus, req)[0] == grpc.StatusCode.NOT_FOUND
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "nope"
    assert rpc_error(model_stub.GetModelStatus, req)[0] == grpc.StatusCode.NOT_FOUND


def test_tensor_content_mode(tmp_path, reference, image):
    server = start_tf_server(tmp_path, name="tf_server_content", extra=["--tensor-content"])
    try:
        with grpc.insecure_channel(server.target) as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            resp = stub.Predict(request(image), timeout=RPC_TIMEOUT)
        probs = resp.outputs["probabilities"]
        assert probs.tensor_content and not probs.float_val
        got = np.frombuffer(probs.tensor_content, "<f4")
        np.testing.assert_allclose(got, reference.run(image)["probabilities"].ravel(), atol=1e-6)
    finally:
        server.process.stop()
