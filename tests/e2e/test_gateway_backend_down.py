"""A backend that refuses connections: predict answers 503 and the gateway stays up."""

import numpy as np
import pytest

from support import free_port, start_gateway


@pytest.fixture(scope="module")
def down_gateway(tmp_path_factory):
    # A loopback port that was free a moment ago: nothing listens there.
    endpoint = f"http://127.0.0.1:{free_port()}"
    gw = start_gateway(tmp_path_factory.mktemp("gateway_down"), "gateway_down", endpoint,
                       {"digits-rest": {"model": "digits"}}, timeout_ms=2000)
    yield gw
    gw.process.stop()


def test_backend_down_is_503(down_gateway):
    body = {"instances": [np.zeros((28, 28, 1)).tolist()]}
    for _ in range(2):
        resp = down_gateway.post("/v1/models/digits-rest:predict", json=body)
        assert resp.status_code == 503, resp.text
        assert "error" in resp.json()
        assert down_gateway.process.alive()
    assert down_gateway.get("/healthz").status_code == 200
