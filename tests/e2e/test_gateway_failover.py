"""Two real-TensorFlow servers behind one `tfserving` backend; one is SIGKILLed under load.

What must hold: no request fails (calls in flight on the dead server are retried on the
other, later calls avoid it once it is ejected), the answers stay TensorFlow's, and the dead
server is reported ejected. Count-based: the kill happens after a number of answers, the test
ends after a number more, never on a timer.
"""

import json
import threading

import numpy as np
import pytest
import requests

from support import HTTP_TIMEOUT, start_gateway, start_tf_server

CLIENTS = 16
BEFORE_KILL = 100  # answers before the kill
AFTER_KILL = 300  # answers after it


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    servers = []
    try:
        for name in ("tf_a", "tf_b"):
            servers.append(start_tf_server(tmp_path_factory.mktemp(name), name=name))
        gw = start_gateway(tmp_path_factory.mktemp("gateway_fleet"), "gateway_fleet",
                           [s.endpoint for s in servers], {"digits-rest": {"model": "digits"}})
    except BaseException:
        for s in servers:
            s.process.stop()
        raise
    yield gw, servers
    gw.process.stop()
    for s in servers:
        s.process.stop()


def metric(gw, series):
    for line in requests.get(gw.admin_url + "/metrics", timeout=HTTP_TIMEOUT).text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


def test_sigkill_one_of_two_loses_no_request(fleet, reference):
    gw, (a, b) = fleet
    rng = np.random.default_rng(18)
    images = rng.random((8, 28, 28, 1), dtype=np.float32)
    want = int(reference.run(images[:1])["label"][0])
    body = {"instances": images[:1].tolist()}

    lock = threading.Condition()
    answers = []  # (status, text) of every request
    stop = threading.Event()

    def client():
        with requests.Session() as s:
            while not stop.is_set():
                try:
                    r = s.post(gw.url + "/v1/models/digits-rest:predict", json=body,
                               timeout=HTTP_TIMEOUT)
                    answer = (r.status_code, r.text)
                except requests.RequestException as e:
                    answer = (0, repr(e))
                with lock:
                    answers.append(answer)
                    lock.notify_all()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        with lock:
            assert lock.wait_for(lambda: len(answers) >= BEFORE_KILL, timeout=120), \
                f"only {len(answers)} answers before the kill"
        # Both servers took calls before the kill (calls are balanced over both).
        assert a.stats()["predict_calls"].get("digits"), "tf_a got no Predict before the kill"
        assert b.stats()["predict_calls"].get("digits"), "tf_b got no Predict before the kill"
        a.process.kill()
        b_before = len(b.stats()["predict_calls"]["digits"])
        with lock:
            killed_at = len(answers)
            assert lock.wait_for(lambda: len(answers) >= killed_at + AFTER_KILL, timeout=300), \
                f"only {len(answers) - killed_at} answers after the kill"
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=HTTP_TIMEOUT + 5)

    failed = [ans for ans in answers if ans[0] != 200]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed, e.g. {failed[:3]}"
    for _, text in answers[-AFTER_KILL:]:
        assert json.loads(text)["predictions"][0]["label"] == want
    assert gw.process.alive()
    # The answers after the kill came from tf_b (batched: fewer calls than answers).
    assert len(b.stats()["predict_calls"]["digits"]) > b_before
    retried = metric(gw, 'infergate_backend_retries_total{backend="tfs",outcome="retried"}')
    print(f"{len(answers)} answers, {killed_at} before the kill; retried on tf_b: {retried}")
    label = f'{{backend="tfs",endpoint="{a.target}"}}'
    assert metric(gw, "infergate_endpoint_healthy" + label) == 0, "tf_a is not reported ejected"
    assert metric(gw, "infergate_endpoint_ejections_total" + label) >= 1
