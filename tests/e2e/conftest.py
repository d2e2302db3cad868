"""Fixtures for the end-to-end suite; see support.py for what runs and how."""

import pytest

from support import (ONNX_MODEL, PLUGIN_WASM, REPO, Reference, gateway_bin, start_gateway,
                     start_tf_server, start_triton, toml_str)


@pytest.fixture(scope="session")
def tf_server(tmp_path_factory):
    server = start_tf_server(tmp_path_factory.mktemp("tf_server"))
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory, request):
    if not gateway_bin().is_file():  # fail before paying for the backend's start
        pytest.fail(f"gateway binary {gateway_bin()} not found: build it first (cargo build) "
                    f"or set INFERGATE_BIN")
    tf_server = request.getfixturevalue("tf_server")
    routes = {
        "digits-rest": {"model": "digits"},
        # A wide batching window, so concurrent requests are sure to share one Predict call.
        "digits-batched": {"model": "digits",
                           "_toml": "[batching]\nmax_batch_size = 16\nbatch_timeout_us = 500000\n"},
        # The same model, as ONNX, run inside the gateway.
        "digits-onnx-rest": {"model": "digits", "backend": "local", "model_file": ONNX_MODEL},
    }
    # `digits` is always there, so gRPC clients of TF Serving call it by TF Serving's model
    # name (tensor protocols skip plugins); with the plugin built it is the plugin route too.
    routes["digits"] = {"model": "digits"}
    if PLUGIN_WASM.is_file():
        routes["digits"] = {"model": "digits", "plugin": PLUGIN_WASM}
        routes["digits-onnx"] = {"model": "digits", "plugin": PLUGIN_WASM, "backend": "local",
                                 "model_file": ONNX_MODEL}
    gw = start_gateway(tmp_path_factory.mktemp("gateway"), "gateway", tf_server.endpoint, routes)
    gw.has_plugin_route = PLUGIN_WASM.is_file()
    yield gw
    gw.process.stop()


@pytest.fixture
def plugin_gateway(gateway):
    if not gateway.has_plugin_route:
        pytest.skip(f"{PLUGIN_WASM.relative_to(REPO)} is not built (the digits plugin crate "
                    f"builds it for wasm32-wasip2)")
    return gateway


@pytest.fixture(scope="session")
def reference():
    return Reference()


@pytest.fixture(scope="session")
def triton(tmp_path_factory):
    """Triton Inference Server, started once per session (its start-up is the costly part)."""
    server = start_triton(tmp_path_factory.mktemp("triton"))
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def triton_gateway(tmp_path_factory, tf_server, triton):
    """A gateway whose routes run `digits` on Triton through a `kserve_v2` backend."""
    backends = ("[backends.triton]\n"
                'kind = "kserve_v2"\n'
                f"endpoints = [{toml_str(triton.endpoint)}]\n"
                "timeout_ms = 10000\n")
    routes = {
        "digits-rest": {"model": "digits", "backend": "triton"},
        "digits-batched": {"model": "digits", "backend": "triton",
                           "_toml": "[batching]\nmax_batch_size = 16\nbatch_timeout_us = 500000\n"},
    }
    if PLUGIN_WASM.is_file():
        routes["digits"] = {"model": "digits", "plugin": PLUGIN_WASM, "backend": "triton"}
    gw = start_gateway(tmp_path_factory.mktemp("triton_gateway"), "triton_gateway",
                       tf_server.endpoint, routes, backends=backends)
    yield gw
    gw.process.stop()
