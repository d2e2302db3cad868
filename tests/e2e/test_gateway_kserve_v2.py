"""The `kserve_v2` backend against a real Triton Inference Server (PyPI's nvidia-pytriton).

Triton serves `digits` from plugins/digits/model.onnx (the weights of models/digits/2) run by
onnxruntime in a bound Python function (scripts/triton_server.py). A second gateway's routes
call it through `[backends.triton] kind = "kserve_v2"`: the digits plugin route, a REST JSON
route and a batching route. Their answers equal the TensorFlow-served routes' within 1e-5.
"""

import threading
from pathlib import Path

import numpy as np
import pytest
import requests

from support import HTTP_TIMEOUT, PNG_IMAGES, load_image

TOLERANCE = 1e-5


def test_plugin_route_equals_the_tfserving_route(triton_gateway, plugin_gateway):
    for path in PNG_IMAGES:
        body = Path(path).read_bytes()
        headers = {"Content-Type": "image/png"}
        via_triton = triton_gateway.post("/v1/models/digits:predict?k=10", data=body,
                                         headers=headers)
        via_tf = plugin_gateway.post("/v1/models/digits:predict?k=10", data=body,
                                     headers=headers)
        assert via_triton.status_code == 200, via_triton.text
        assert via_tf.status_code == 200, via_tf.text
        got = {p["label"]: p["score"] for p in via_triton.json()["predictions"]}
        want = {p["label"]: p["score"] for p in via_tf.json()["predictions"]}
        assert got.keys() == want.keys()
        for label, score in want.items():
            assert got[label] == pytest.approx(score, abs=TOLERANCE), (path, label, got, want)


def test_rest_json_route_equals_the_tfserving_route(triton_gateway, gateway):
    images = np.concatenate([load_image(p) for p in PNG_IMAGES[:4]])
    body = {"instances": images.tolist()}
    got = triton_gateway.post("/v1/models/digits-rest:predict", json=body)
    want = gateway.post("/v1/models/digits-rest:predict", json=body)
    assert got.status_code == 200, got.text
    assert want.status_code == 200, want.text
    for g, w in zip(got.json()["predictions"], want.json()["predictions"]):
        assert g["label"] == w["label"]
        np.testing.assert_allclose(g["probabilities"], w["probabilities"], atol=TOLERANCE)


def test_status_and_metadata_in_tf_serving_shape(triton_gateway):
    status = triton_gateway.get("/v1/models/digits-rest")
    assert status.status_code == 200, status.text
    versions = status.json()["model_version_status"]
    assert [v["state"] for v in versions] == ["AVAILABLE"], versions
    meta = triton_gateway.get("/v1/models/digits-rest/metadata")
    assert meta.status_code == 200, meta.text
    sig = meta.json()["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["image"]["dtype"] == "DT_FLOAT"
    dims = [d["size"] for d in sig["inputs"]["image"]["tensor_shape"]["dim"]]
    assert dims == ["-1", "28", "28", "1"]


def triton_requests(triton):
    """Triton's count of ModelInfer requests for `digits` that succeeded (its statistics API;
    Triton's batching is off, so each is one execution, whatever its rows)."""
    stats = requests.get(f"http://{triton.http_target}/v2/models/digits/stats",
                         timeout=HTTP_TIMEOUT).json()["model_stats"][0]
    return stats["inference_stats"]["success"]["count"]


def test_concurrent_requests_are_batched_into_few_model_infers(triton_gateway, triton):
    image = load_image(PNG_IMAGES[0]).tolist()
    start = threading.Barrier(32)
    results = [None] * 32

    def call(i):
        start.wait()
        results[i] = requests.post(f"{triton_gateway.url}/v1/models/digits-batched:predict",
                                   json={"instances": image}, timeout=HTTP_TIMEOUT)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(32)]
    before = triton_requests(triton)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    assert len({r.text for r in results}) == 1
    # The batching route sends the 32 rows in a few ModelInfer requests.
    sent = triton_requests(triton) - before
    assert 1 <= sent <= 8, sent


def test_triton_down_is_503_naming_the_backend(tmp_path):
    from support import free_port, start_gateway
    backends = ("[backends.triton]\n" 'kind = "kserve_v2"\n'
                f'endpoints = ["http://127.0.0.1:{free_port()}"]\n' "timeout_ms = 2000\n")
    gw = start_gateway(tmp_path, "down_gateway", "http://127.0.0.1:1",
                       {"d": {"model": "digits", "backend": "triton"}}, backends=backends)
    try:
        reply = gw.get("/v1/models/d")
        assert reply.status_code == 503, reply.text
        assert "backend `triton`" in reply.json()["error"]
    finally:
        gw.process.stop()
