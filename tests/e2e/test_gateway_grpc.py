"""TF Serving's gRPC API through infergate, with the official `tensorflow-serving-api` client.

The client is the one test_tf_server.py drives the TensorFlow server with, unchanged except
for the address: the same PredictRequest sent to the gateway and to the server directly gets
byte-identical outputs (the gateway encodes outputs as TF Serving does). The gateway's
`digits` route calls model `digits` on that server; a gRPC Predict carries tensors, so the
route's plugin (if built) is skipped.
"""

import threading

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.python.framework import tensor_util
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from support import PNG_IMAGES, load_image
from test_tf_server import RPC_TIMEOUT, float_tensor, request, rpc_error


def stubs(target):
    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=RPC_TIMEOUT)
    return (channel, prediction_service_pb2_grpc.PredictionServiceStub(channel),
            model_service_pb2_grpc.ModelServiceStub(channel))


@pytest.fixture(scope="module")
def via_gateway(gateway):
    channel, predict, models = stubs(gateway.url.removeprefix("http://"))
    yield predict, models
    channel.close()


@pytest.fixture(scope="module")
def direct(tf_server):
    channel, predict, models = stubs(tf_server.target)
    yield predict, models
    channel.close()


def outputs_bytes(response):
    return {name: t.SerializeToString(deterministic=True) for name, t in response.outputs.items()}


@pytest.mark.parametrize("path", PNG_IMAGES[:4], ids=lambda p: p.rsplit("/", 1)[-1])
@pytest.mark.parametrize("version,typed", [(None, False), (1, False), (2, True)])
def test_predict_outputs_are_byte_identical(via_gateway, direct, path, version, typed):
    req = request(load_image(path), version=version, typed=typed)
    through = via_gateway[0].Predict(req, RPC_TIMEOUT)
    straight = direct[0].Predict(req, RPC_TIMEOUT)
    assert outputs_bytes(through) == outputs_bytes(straight)
    assert through.model_spec.name == "digits"
    assert through.model_spec.signature_name == "serving_default"


def test_batch_of_rows_and_output_filter(via_gateway, direct):
    images = np.concatenate([load_image(p) for p in PNG_IMAGES[:3]])
    req = request(images, output_filter=["probabilities"])
    through = via_gateway[0].Predict(req, RPC_TIMEOUT)
    assert list(through.outputs) == ["probabilities"]
    assert outputs_bytes(through) == outputs_bytes(direct[0].Predict(req, RPC_TIMEOUT))


def test_64_concurrent_clients_share_at_most_8_backend_calls(gateway, tf_server):
    """64 clients, each on its own channel, call the batching route at once."""
    image = load_image(PNG_IMAGES[0])
    clients = [stubs(gateway.url.removeprefix("http://")) for _ in range(64)]
    before = len(tf_server.stats()["predict_calls"].get("digits", []))
    start = threading.Barrier(64)
    results, errors = [None] * 64, []

    def call(i):
        start.wait()
        try:
            results[i] = clients[i][1].Predict(request(image, name="digits-batched"), RPC_TIMEOUT)
        except grpc.RpcError as e:
            errors.append(e)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for channel, _, _ in clients:
        channel.close()
    assert not errors, errors
    calls = tf_server.stats()["predict_calls"]["digits"][before:]
    assert sum(calls) == 64, calls
    assert len(calls) <= 8, calls
    # Rows computed in batches of different sizes may differ in the last bits (TensorFlow's
    # kernels block by batch size), so equal labels and probabilities within 1e-6.
    first = tensor_util.MakeNdarray(results[0].outputs["probabilities"])
    for r in results:
        assert tensor_util.MakeNdarray(r.outputs["label"]).tolist() == \
            tensor_util.MakeNdarray(results[0].outputs["label"]).tolist()
        np.testing.assert_allclose(tensor_util.MakeNdarray(r.outputs["probabilities"]), first,
                                   atol=1e-6)


def test_metadata_and_status_match_the_server(via_gateway, direct):
    meta = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    meta.model_spec.name = "digits"
    got, want = (stub[0].GetModelMetadata(meta, RPC_TIMEOUT) for stub in (via_gateway, direct))
    maps = []
    for response in (got, want):
        m = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(m)
        maps.append(m.signature_def["serving_default"])
    for kind in ("inputs", "outputs"):
        mine, theirs = getattr(maps[0], kind), getattr(maps[1], kind)
        assert set(mine) == set(theirs)
        for name in mine:
            assert mine[name].dtype == theirs[name].dtype
            assert mine[name].tensor_shape == theirs[name].tensor_shape
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "digits"
    got, want = (stub[1].GetModelStatus(status, RPC_TIMEOUT) for stub in (via_gateway, direct))
    assert got == want


def test_errors_are_statuses_that_say_what_to_fix(via_gateway):
    predict = via_gateway[0].Predict
    image = load_image(PNG_IMAGES[0])
    code, details = rpc_error(predict, request(image, name="ghost"))
    assert code == grpc.StatusCode.NOT_FOUND and "ghost" in details
    code, details = rpc_error(predict, request(image, version=9))
    assert code == grpc.StatusCode.NOT_FOUND, details
    code, details = rpc_error(predict, request(np.zeros((1, 27, 28, 1), np.float32)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "image" in details
    bad = request(image)
    bad.inputs["image"].CopyFrom(tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64))
    bad.inputs["image"].tensor_shape.dim.add(size=1)
    bad.inputs["image"].int64_val.append(1)
    code, details = rpc_error(predict, bad)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "f32" in details
    with pytest.raises(grpc.RpcError) as info:
        via_gateway[0].Classify(predict_pb2.PredictRequest(), RPC_TIMEOUT)  # any message
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_deadline_of_1ms(via_gateway):
    with pytest.raises(grpc.RpcError) as info:
        via_gateway[0].Predict(request(load_image(PNG_IMAGES[0])), 0.001)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The gateway still answers.
    via_gateway[0].Predict(request(load_image(PNG_IMAGES[0])), RPC_TIMEOUT)


def test_300_mib_message_is_resource_exhausted(gateway):
    channel = grpc.insecure_channel(gateway.url.removeprefix("http://"),
                                    options=[("grpc.max_send_message_length", -1)])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "digits"
    t = req.inputs["image"]
    t.dtype = types_pb2.DT_FLOAT
    for d in (300 << 18, 1):
        t.tensor_shape.dim.add(size=d)
    t.tensor_content = bytes(300 << 20)
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(req, RPC_TIMEOUT)
    channel.close()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
    assert "server.max_body_bytes" in info.value.details()
    assert gateway.get("/healthz").status_code == 200
