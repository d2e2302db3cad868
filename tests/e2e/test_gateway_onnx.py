"""The embedded `onnx` backend against TF Serving running real TensorFlow, same gateway.

`digits-onnx` and `digits-onnx-rest` run plugins/digits/model.onnx inside the gateway;
`digits` and `digits-rest` send the same requests to the TF-Serving-compatible server, which
serves models/digits (latest: version 2, the SavedModel the ONNX file was converted from).
The same image must give the same top-1 and probabilities within 1e-4 on both backends.
"""

from pathlib import Path

import numpy as np
import pytest

from support import JPEG_IMAGE, PNG_IMAGES, load_image

TOLERANCE = 1e-4


def scores(body):
    """{label: score} of a digits plugin answer asked for all ten labels."""
    return {p["label"]: p["score"] for p in body["predictions"]}


@pytest.mark.parametrize("path", PNG_IMAGES + [str(JPEG_IMAGE)], ids=lambda p: Path(p).name)
def test_same_answer_on_both_backends_through_the_plugin(plugin_gateway, path):
    body = Path(path).read_bytes()
    tfs = plugin_gateway.post("/v1/models/digits:predict?k=10", data=body)
    onnx = plugin_gateway.post("/v1/models/digits-onnx:predict?k=10", data=body)
    assert tfs.status_code == 200, tfs.text
    assert onnx.status_code == 200, onnx.text
    tfs, onnx = tfs.json(), onnx.json()
    assert onnx["predictions"][0]["label"] == tfs["predictions"][0]["label"], (tfs, onnx)
    want, got = scores(tfs), scores(onnx)
    assert set(got) == set(want)
    for label, score in want.items():
        assert got[label] == pytest.approx(score, abs=TOLERANCE), (label, tfs, onnx)


def test_same_answer_on_both_backends_through_rest_json(gateway, reference):
    images = np.concatenate([load_image(p) for p in PNG_IMAGES])
    body = {"instances": images.tolist()}
    tfs = gateway.post("/v1/models/digits-rest:predict", json=body)
    onnx = gateway.post("/v1/models/digits-onnx-rest:predict", json=body)
    assert tfs.status_code == 200, tfs.text
    assert onnx.status_code == 200, onnx.text
    ref = reference.run(images)
    for row, (t, o) in enumerate(zip(tfs.json()["predictions"], onnx.json()["predictions"])):
        assert o["label"] == t["label"] == int(ref["label"][row]), row
        np.testing.assert_allclose(o["probabilities"], t["probabilities"], atol=TOLERANCE)
        np.testing.assert_allclose(o["probabilities"], ref["probabilities"][row], atol=TOLERANCE)


def test_metadata_matches_tf_serving(gateway):
    def signature(route):
        resp = gateway.get(f"/v1/models/{route}/metadata")
        assert resp.status_code == 200, resp.text
        return resp.json()["metadata"]["signature_def"]["signature_def"]["serving_default"]

    tfs, onnx = signature("digits-rest"), signature("digits-onnx-rest")
    for kind in ("inputs", "outputs"):
        assert set(onnx[kind]) == set(tfs[kind]), kind
        for name in tfs[kind]:
            assert onnx[kind][name]["dtype"] == tfs[kind][name]["dtype"], name
            assert onnx[kind][name]["tensor_shape"] == tfs[kind][name]["tensor_shape"], name
    assert onnx["method_name"] == tfs["method_name"]


def test_wrong_shape_names_the_input(gateway):
    bad = np.zeros((27, 27, 1)).tolist()
    resp = gateway.post("/v1/models/digits-onnx-rest:predict", json={"instances": [bad]})
    assert resp.status_code == 400, resp.text
    assert "image" in resp.json()["error"] and "shape" in resp.json()["error"]
