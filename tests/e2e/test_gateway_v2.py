"""The Open Inference Protocol (KServe v2) on infergate, with NVIDIA's official client.

`tritonclient.http` (JSON and the binary tensor extension) and `tritonclient.grpc` call the
gateway's `/v2` endpoints and its `inference.GRPCInferenceService` exactly as they call
Triton. The `digits` route runs model `digits` on the TensorFlow server; the answers equal
TensorFlow's own, run in this process.
"""

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support import PNG_IMAGES, load_image

TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def images():
    return np.concatenate([load_image(p) for p in PNG_IMAGES[:4]])


@pytest.fixture(scope="module")
def http(gateway):
    client = httpclient.InferenceServerClient(gateway.url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(gateway):
    client = grpcclient.InferenceServerClient(gateway.url.removeprefix("http://"))
    yield client
    client.close()


def test_health_and_metadata(http, grpc):
    assert http.is_server_live() and http.is_server_ready()
    assert grpc.is_server_live() and grpc.is_server_ready()
    assert http.is_model_ready("digits") and grpc.is_model_ready("digits")
    assert not http.is_model_ready("digits", "9")
    meta = http.get_model_metadata("digits")
    assert meta["name"] == "digits"
    assert meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 28, 28, 1]}]
    outputs = {o["name"]: o for o in meta["outputs"]}
    assert outputs["probabilities"]["datatype"] == "FP32"
    assert outputs["label"]["datatype"] == "INT64"
    gmeta = grpc.get_model_metadata("digits", as_json=True)
    assert gmeta["inputs"][0]["datatype"] == "FP32"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("version", ["", "1"])
def test_http_infer_equals_tensorflow(http, reference, images, binary, version):
    inp = httpclient.InferInput("image", list(images.shape), "FP32")
    inp.set_data_from_numpy(images, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=binary),
               httpclient.InferRequestedOutput("label", binary_data=binary)]
    result = http.infer("digits", [inp], model_version=version, outputs=outputs)
    ref = reference.run(images, version=int(version) if version else None)
    np.testing.assert_allclose(result.as_numpy("probabilities"), ref["probabilities"],
                               atol=TOLERANCE)
    assert result.as_numpy("label").tolist() == ref["label"].tolist()


def test_grpc_infer_equals_tensorflow(grpc, reference, images):
    inp = grpcclient.InferInput("image", list(images.shape), "FP32")
    inp.set_data_from_numpy(images)
    result = grpc.infer("digits", [inp])
    ref = reference.run(images)
    np.testing.assert_allclose(result.as_numpy("probabilities"), ref["probabilities"],
                               atol=TOLERANCE)
    assert result.as_numpy("label").tolist() == ref["label"].tolist()


def test_errors_say_what_to_fix(http, grpc, images):
    for client, module in ((http, httpclient), (grpc, grpcclient)):
        inp = module.InferInput("image", list(images.shape), "FP32")
        inp.set_data_from_numpy(images)
        with pytest.raises(InferenceServerException) as info:
            client.infer("ghost", [inp])
        assert "ghost" in info.value.message()
        wrong = module.InferInput("image", [1, 28, 28], "FP32")
        wrong.set_data_from_numpy(np.zeros((1, 28, 28), np.float32))
        with pytest.raises(InferenceServerException) as info:
            client.infer("digits", [wrong])
        assert "shape" in info.value.message()
        ints = module.InferInput("image", [1, 28, 28, 1], "INT32")
        ints.set_data_from_numpy(np.zeros((1, 28, 28, 1), np.int32))
        with pytest.raises(InferenceServerException) as info:
            client.infer("digits", [ints])
        assert "f32" in info.value.message()
    assert http.is_server_live()


def test_hostile_grpc_model_infer(gateway, images):
    """Bytes that are no ModelInferRequest, raw contents shorter than the shape, a 1 ms
    deadline and a 300 MiB message: each is its status, and the gateway keeps answering."""
    import grpc as grpclib
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    target = gateway.url.removeprefix("http://")
    channel = grpclib.insecure_channel(target, options=[("grpc.max_send_message_length", -1)])
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    with pytest.raises(grpclib.RpcError) as info:
        raw(b"\x0a\x64\x01\x02", timeout=30)  # field 1 claims 100 bytes that never come
    assert info.value.code() == grpclib.StatusCode.INVALID_ARGUMENT, info.value.details()

    def infer_request(shape, content):
        req = service_pb2.ModelInferRequest(model_name="digits")
        req.inputs.add(name="image", datatype="FP32", shape=shape)
        req.raw_input_contents.append(content)
        return req

    with pytest.raises(grpclib.RpcError) as info:
        stub.ModelInfer(infer_request([1, 28, 28, 1], bytes(100)), timeout=30)
    assert info.value.code() == grpclib.StatusCode.INVALID_ARGUMENT
    assert "3136 bytes" in info.value.details(), info.value.details()
    good = infer_request(list(images.shape), images.astype("<f4").tobytes())
    with pytest.raises(grpclib.RpcError) as info:
        stub.ModelInfer(good, timeout=0.001)
    assert info.value.code() == grpclib.StatusCode.DEADLINE_EXCEEDED
    with pytest.raises(grpclib.RpcError) as info:
        stub.ModelInfer(infer_request([1, 300 << 18], bytes(300 << 20)), timeout=60)
    assert info.value.code() == grpclib.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
    assert "server.max_body_bytes" in info.value.details()
    reply = stub.ModelInfer(good, timeout=30)
    assert [o.name for o in reply.outputs]
    channel.close()


def test_hostile_rest_infer(gateway, images):
    """The binary extension's header longer than the body, and raw bytes that don't fill the
    shape, are 400s that say so; a 300 MiB body is 413; the gateway keeps answering."""
    head = ('{"inputs":[{"name":"image","shape":[1,28,28,1],"datatype":"FP32",'
            '"parameters":{"binary_data_size":3136}}]}').encode()
    url = "/v2/models/digits/infer"
    reply = gateway.post(url, data=head, headers={
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head) + 10)})
    assert reply.status_code == 400, reply.text
    assert "Inference-Header-Content-Length" in reply.json()["error"], reply.text
    reply = gateway.post(url, data=head + bytes(100), headers={
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head))})
    assert reply.status_code == 400, reply.text
    reply = gateway.post(url, data=bytes(300 << 20),
                         headers={"Content-Type": "application/json"})
    assert reply.status_code == 413, reply.text
    assert "server.max_body_bytes" in reply.json()["error"], reply.text
    body = {"inputs": [{"name": "image", "shape": list(images.shape), "datatype": "FP32",
                        "data": images.flatten().tolist()}]}
    assert gateway.post(url, json=body).status_code == 200
