"""The Python digits plugin (plugins/digits-py, built by infergate-plugin build with
componentize-py) served by a real gateway in front of real TensorFlow, side by side with the
Rust plugin; and a Python fixture's exceptions as HTTP statuses.

Both plugins are built by scripts/build-plugins.sh; without them these tests fail (they are
part of what the test command builds), they are not skipped.
"""

import subprocess
import time
from pathlib import Path

import pytest

from support import (JPEG_IMAGE, PLUGIN_WASM, PNG_IMAGES, REPO, gateway_bin, load_image,
                     start_gateway)
from test_gateway_plugin import check_predictions

PY_PLUGIN = REPO / "plugins" / "digits-py"
PY_WASM = PY_PLUGIN / "plugin.wasm"
ERRORS_WASM = REPO / "tests" / "plugins" / "wasm" / "python-errors.wasm"
PREDICT = "/v1/models/digits-py:predict"


@pytest.fixture(scope="module")
def py_gateway(tmp_path_factory, tf_server):
    for wasm in (PY_WASM, ERRORS_WASM):
        if not wasm.is_file():
            pytest.fail(f"{wasm.relative_to(REPO)} is not built: run scripts/build-plugins.sh")
    routes = {
        "digits-py": {"model": "digits", "plugin": PY_WASM},
        "py-errors": {"model": "digits", "pre": ERRORS_WASM},
    }
    if PLUGIN_WASM.is_file():  # the Rust plugin, to compare answers in one gateway
        routes["digits"] = {"model": "digits", "plugin": PLUGIN_WASM}
    gw = start_gateway(tmp_path_factory.mktemp("gateway-py"), "gateway-py", tf_server.endpoint,
                       routes)
    yield gw
    gw.process.stop()


def test_the_rust_plugins_samples_pass_through_infergate_check():
    """plugins/digits-py/samples is the Rust plugin's samples folder (a symlink)."""
    done = subprocess.run([gateway_bin(), "check", "--model", PY_PLUGIN], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "samples: 5 passed, 0 failed" in done.stdout, done.stdout


@pytest.mark.parametrize("path", PNG_IMAGES, ids=lambda p: Path(p).name)
def test_png_through_tensorflow(py_gateway, reference, path):
    resp = py_gateway.post(PREDICT, data=Path(path).read_bytes(),
                           headers={"Content-Type": "image/png"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model"] == "digits"
    check_predictions(body, reference.run(load_image(path))["probabilities"][0], 3, 1e-5)


def test_jpeg_through_tensorflow(py_gateway, reference):
    resp = py_gateway.post(f"{PREDICT}?k=5", data=JPEG_IMAGE.read_bytes(),
                           headers={"Content-Type": "image/jpeg"})
    assert resp.status_code == 200, resp.text
    # The host's decode op (and the SDK's fallback) decode baseline JPEG as libjpeg does, so
    # the pixels equal Pillow's.
    check_predictions(resp.json(), reference.run(load_image(JPEG_IMAGE))["probabilities"][0], 5,
                      1e-5)


def test_same_answers_as_the_rust_plugin(py_gateway):
    """Both decode with the host's op and compute pixel / 255 in f32, hence the same model
    outputs and the same JSON, byte for byte, for PNG and JPEG alike."""
    if not PLUGIN_WASM.is_file():
        pytest.fail(f"{PLUGIN_WASM.relative_to(REPO)} is not built")
    for path in [*PNG_IMAGES, JPEG_IMAGE]:
        for k in (1, 10):
            data = Path(path).read_bytes()
            py = py_gateway.post(f"{PREDICT}?k={k}", data=data)
            rust = py_gateway.post(f"/v1/models/digits:predict?k={k}", data=data)
            assert py.status_code == rust.status_code == 200, (py.text, rust.text)
            assert py.json() == rust.json(), (path, k)


@pytest.mark.parametrize("query,status,message", [
    ("k=11", 400, "query parameter k must be a whole number from 1 to 10, not '11'"),
    ("k=x", 400, "query parameter k must be a whole number from 1 to 10, not 'x'"),
])
def test_bad_k_is_the_plugins_400(py_gateway, query, status, message):
    resp = py_gateway.post(f"{PREDICT}?{query}", data=Path(PNG_IMAGES[0]).read_bytes())
    assert (resp.status_code, resp.json()) == (status, {"error": message})


def test_a_body_that_is_no_image_is_a_400_that_says_what_to_send(py_gateway):
    resp = py_gateway.post(PREDICT, data=b"not an image")
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error.startswith("could not decode the image: ") and "send a PNG or JPEG" in error


@pytest.mark.parametrize("fail,status,message", [
    ("bad", 400, "bad: send something else"),
    ("unprocessable", 422, "unprocessable: not for this model"),
    ("internal", 500, "internal: broken invariant"),
    ("value", 500, "ValueError: boom"),
])
def test_python_exceptions_become_statuses_with_their_message(py_gateway, fail, status, message):
    resp = py_gateway.post(f"/v1/models/py-errors:predict?fail={fail}", data=b"")
    assert (resp.status_code, resp.json()) == (status, {"error": message})


def test_an_uncaught_exceptions_traceback_goes_to_the_log_not_the_client(py_gateway):
    resp = py_gateway.post("/v1/models/py-errors:predict?fail=value", data=b"")
    assert resp.status_code == 500 and "Traceback" not in resp.text
    # The gateway logs to stderr, which goes to the process's log file.
    deadline = time.monotonic() + 10
    while "ValueError: boom" not in py_gateway.process.tail(200):
        assert time.monotonic() < deadline, py_gateway.process.tail()
        time.sleep(0.1)
    log = py_gateway.process.tail(200)
    assert "preprocess raised:" in log and "Traceback (most recent call last):" in log, log
    assert 'plugin.py", line' in log, log


def test_a_tensor_shorter_than_its_shape_is_a_500_naming_the_input(py_gateway):
    resp = py_gateway.post("/v1/models/py-errors:predict?fail=short", data=b"")
    assert resp.status_code == 500, resp.text
    assert "x" in resp.json()["error"], resp.text
