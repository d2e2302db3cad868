"""The `digits-rest` route: no plugins, so the gateway speaks TF Serving's REST JSON.

Request bodies are `{"instances": [...]}` (row format, answered with `{"predictions": ...}`) or
`{"inputs": {...}}` (columnar, answered with `{"outputs": ...}`); the signature has two
outputs, so each prediction is an object and `outputs` is an object, as in TF Serving.
Unversioned requests are served by the latest version (2); `stable` is version 1.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from support import PNG_IMAGES, load_image

ROUTE = "/v1/models/digits-rest"
TOL = 1e-5


def instance(image):
    """One [28,28,1] nested list from a [1,28,28,1] array."""
    return image[0].tolist()


@pytest.fixture(scope="module")
def images():
    return [load_image(p) for p in PNG_IMAGES[:2]]


def check_row(body, ref):
    preds = body["predictions"]
    assert isinstance(preds, list) and len(preds) == len(ref["label"]), body
    for i, p in enumerate(preds):
        assert set(p) == {"probabilities", "label"}, p
        np.testing.assert_allclose(p["probabilities"], ref["probabilities"][i], atol=TOL)
        assert p["label"] == int(ref["label"][i])


def check_columnar(body, ref):
    out = body["outputs"]
    assert set(out) == {"probabilities", "label"}, body
    np.testing.assert_allclose(out["probabilities"], ref["probabilities"], atol=TOL)
    assert out["label"] == ref["label"].tolist()


def test_instances_one(gateway, reference, images):
    resp = gateway.post(f"{ROUTE}:predict", json={"instances": [instance(images[0])]})
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    check_row(resp.json(), reference.run(images[0]))


def test_instances_two(gateway, reference, images):
    batch = np.concatenate(images)
    resp = gateway.post(f"{ROUTE}:predict",
                        json={"instances": [instance(im) for im in images]})
    assert resp.status_code == 200, resp.text
    check_row(resp.json(), reference.run(batch))


def test_inputs_one(gateway, reference, images):
    resp = gateway.post(f"{ROUTE}:predict", json={"inputs": {"image": images[0].tolist()}})
    assert resp.status_code == 200, resp.text
    check_columnar(resp.json(), reference.run(images[0]))


def test_inputs_two(gateway, reference, images):
    batch = np.concatenate(images)
    resp = gateway.post(f"{ROUTE}:predict", json={"inputs": {"image": batch.tolist()}})
    assert resp.status_code == 200, resp.text
    check_columnar(resp.json(), reference.run(batch))


@pytest.mark.parametrize("suffix,version", [("/versions/1", 1), ("/versions/2", 2),
                                            ("/labels/stable", 1)])
def test_version_routing(gateway, tf_server, reference, images, suffix, version):
    resp = gateway.post(f"{ROUTE}{suffix}:predict", json={"instances": [instance(images[0])]})
    assert resp.status_code == 200, resp.text
    # Versions 1 and 2 were trained with different seeds, so matching the reference of the
    # requested version shows which one answered; the backend's log says so too.
    check_row(resp.json(), reference.run(images[0], version))
    assert tf_server.stats()["predict_versions"]["digits"][-1] == version


def test_unknown_version(gateway, images):
    resp = gateway.post(f"{ROUTE}/versions/9:predict", json={"instances": [instance(images[0])]})
    assert resp.status_code == 404, resp.text
    assert "error" in resp.json()


def test_status(gateway):
    resp = gateway.get(ROUTE)
    assert resp.status_code == 200, resp.text
    statuses = resp.json()["model_version_status"]
    assert sorted(s["version"] for s in statuses) == ["1", "2"]
    assert all(s["state"] == "AVAILABLE" for s in statuses), statuses


def test_status_one_version(gateway):
    resp = gateway.get(f"{ROUTE}/versions/2")
    assert resp.status_code == 200, resp.text
    statuses = resp.json()["model_version_status"]
    assert [s["version"] for s in statuses] == ["2"]


def test_metadata(gateway):
    resp = gateway.get(f"{ROUTE}/metadata")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert "model_spec" in body
    sig = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    image = sig["inputs"]["image"]
    assert image["dtype"] == "DT_FLOAT"
    assert "tensor_shape" in image and "name" in image
    assert {"probabilities", "label"} <= set(sig["outputs"])


def test_wrong_shape(gateway):
    bad = np.zeros((27, 27, 1)).tolist()
    resp = gateway.post(f"{ROUTE}:predict", json={"instances": [bad]})
    assert resp.status_code == 400, resp.text
    assert "shape" in resp.json()["error"].lower()


def test_unknown_model(gateway, images):
    resp = gateway.post("/v1/models/no-such-model:predict",
                        json={"instances": [instance(images[0])]})
    assert resp.status_code == 404, resp.text
    assert "error" in resp.json()
    assert gateway.get("/v1/models/no-such-model").status_code == 404


@pytest.mark.parametrize("body", [b'{"instances": [', b"not json", b'{"neither": 1}'])
def test_malformed_json(gateway, body):
    resp = gateway.post(f"{ROUTE}:predict", data=body,
                        headers={"Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert "error" in resp.json()


def test_concurrent_requests_each_get_their_own_answer(gateway, tf_server, reference):
    """Concurrent single-instance requests (which the gateway may batch together) each get
    the answer for their own image, and each instance reaches the backend exactly once."""
    imgs = [load_image(p) for p in PNG_IMAGES[:8]]
    before = tf_server.stats()["predict_calls"]["digits"]

    def call(im):
        return gateway.post(f"{ROUTE}:predict", json={"instances": [instance(im)]})

    with ThreadPoolExecutor(len(imgs)) as pool:
        responses = list(pool.map(call, imgs))
    for im, resp in zip(imgs, responses):
        assert resp.status_code == 200, resp.text
        check_row(resp.json(), reference.run(im))
    after = tf_server.stats()["predict_calls"]["digits"]
    assert sum(after[len(before):]) == len(imgs), after[len(before):]


def test_batched_answers_equal_unbatched(gateway, tf_server, reference):
    """Concurrent requests to a route with a wide batching window reach real TensorFlow as
    one batched Predict, and each request's answer equals TensorFlow's unbatched answer for
    its own image (within 1e-5)."""
    imgs = [load_image(p) for p in PNG_IMAGES[:8]]
    before = len(tf_server.stats()["predict_calls"]["digits"])

    def call(im):
        return gateway.post("/v1/models/digits-batched:predict", json={"instances": [instance(im)]})

    with ThreadPoolExecutor(len(imgs)) as pool:
        responses = list(pool.map(call, imgs))
    for im, resp in zip(imgs, responses):
        assert resp.status_code == 200, resp.text
        check_row(resp.json(), reference.run(im))
    batches = tf_server.stats()["predict_calls"]["digits"][before:]
    assert sum(batches) == len(imgs), batches
    assert max(batches) > 1, f"no batch formed: {batches}"


def test_healthz(gateway):
    assert gateway.get("/healthz").status_code == 200


def test_admin_healthz(gateway):
    import requests
    assert requests.get(gateway.admin_url + "/healthz", timeout=30).status_code == 200
