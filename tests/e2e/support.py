"""Helpers for the end-to-end suite (processes, configs, the TensorFlow reference).

Processes started by the fixtures in conftest.py (loopback only, port 0, killed on teardown):
  - scripts/tf_server.py: the TF-Serving-compatible gRPC server running real TensorFlow on
    models/digits (versions 1 and 2, label stable=1), with a stats file that records the
    batch size and version of every Predict;
  - `infergate serve --config <tmp>/gateway.toml`: the gateway binary (INFERGATE_BIN, default
    target/debug/infergate), with model folders written to a temp plugins dir.

The gateway binary must already be built; if it is missing the gateway tests fail (they are
not skipped). Tests of the digits plugin skip only when plugins/digits/plugin.wasm is missing.
"""

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import requests  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
MODEL_DIR = REPO / "models" / "digits"
IMAGES_DIR = REPO / "examples" / "images"
PLUGIN_WASM = REPO / "plugins" / "digits" / "plugin.wasm"
# The same weights as models/digits/2, as ONNX, for the embedded `onnx` backend (`local`).
ONNX_MODEL = REPO / "plugins" / "digits" / "model.onnx"
HTTP_TIMEOUT = 30  # seconds, every HTTP call
TF_SERVER_START_TIMEOUT = 120
GATEWAY_START_TIMEOUT = 180  # loading compiles the wasm plugins; debug builds are slow

PNG_IMAGES = sorted(glob.glob(str(IMAGES_DIR / "digit-*-*.png")))
JPEG_IMAGE = IMAGES_DIR / "digit-7.jpg"


def gateway_bin():
    path = Path(os.environ.get("INFERGATE_BIN", "target/debug/infergate"))
    return path if path.is_absolute() else REPO / path


def toml_str(value):
    """A TOML basic string."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def free_port():
    """A loopback port that nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- processes


class Process:
    """A child process whose stdout is watched line by line and logged to a file."""

    def __init__(self, name, argv, log_dir, cwd=REPO):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_dir) / f"{name}.log"
        self.lines = []
        self.cond = threading.Condition()
        self.log = open(self.log_path, "w", buffering=1)
        self.proc = subprocess.Popen(
            self.argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self.log, text=True, bufsize=1, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.log.write(line)
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_for_line(self, pattern, timeout):
        """First stdout line matching `pattern` (a regex); fails on exit or timeout."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self.cond:
            while True:
                for line in self.lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                if self.proc.poll() is not None and not self.reader.is_alive():
                    pytest.fail(f"{self.name} exited with status {self.proc.returncode} before "
                                f"printing /{pattern}/\n{self.tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"{self.name} printed no line matching /{pattern}/ within "
                                f"{timeout}s\n{self.tail()}")
                self.cond.wait(min(left, 0.5))

    def alive(self):
        return self.proc.poll() is None

    def tail(self, n=40):
        self.log.flush()
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        return f"--- last lines of {self.log_path} ---\n" + "\n".join(lines[-n:])

    def kill(self):
        """SIGKILL, as a crashed or OOM-killed server: no goodbye to its clients."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        self.reader.join(timeout=5)
        self.log.close()


class TfServer:
    def __init__(self, process, port, stats_path):
        self.process = process
        self.port = port
        self.stats_path = stats_path
        self.endpoint = f"http://127.0.0.1:{port}"
        self.target = f"127.0.0.1:{port}"

    def stats(self):
        return json.loads(Path(self.stats_path).read_text())


def start_tf_server(log_dir, name="tf_server", extra=()):
    log_dir = Path(log_dir)
    port_file = log_dir / f"{name}.port"
    stats_file = log_dir / f"{name}.stats.json"
    proc = Process(name, [
        PYTHON, REPO / "scripts" / "tf_server.py", "--port", "0", "--host", "127.0.0.1",
        "--model", f"digits={MODEL_DIR}", "--label", "digits:stable=1",
        "--port-file", port_file, "--stats-file", stats_file, *extra], log_dir)
    m = proc.wait_for_line(r"tf_server listening on 127\.0\.0\.1:(\d+)", TF_SERVER_START_TIMEOUT)
    port = int(m.group(1))
    assert port_file.read_text().strip() == str(port)
    return TfServer(proc, port, stats_file)


class Gateway:
    def __init__(self, process, url, admin_url, config_dir):
        self.process = process
        self.url = url
        self.admin_url = admin_url
        self.config_dir = config_dir

    def get(self, path, **kw):
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return requests.get(self.url + path, **kw)

    def post(self, path, **kw):
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return requests.post(self.url + path, **kw)


# model.toml keys that name a file in the model folder.
FILE_KEYS = {"plugin", "pre", "post", "model_file", "warmup"}


def start_gateway(config_dir, name, endpoint, routes, timeout_ms=10000, backends=""):
    """Write gateway.toml and one folder per route, start `infergate serve`.

    endpoint: the `tfs` backend's endpoint, or a list of them (replicas).

    routes: {route name: {"model": ..., "plugin": ...}} (keys written as TOML strings; a
    "_toml" entry is appended verbatim, for tables such as [batching]). Routes use backend
    `tfs` (at `endpoint`) unless they name `"backend": "local"`, the in-process onnx backend
    (which needs a "model_file"), or a backend in `backends` (TOML appended to
    gateway.toml)."""
    binary = gateway_bin()
    if not binary.is_file():
        pytest.fail(f"gateway binary {binary} not found: build it first (cargo build) or set "
                    f"INFERGATE_BIN")
    config_dir = Path(config_dir)
    plugins_dir = config_dir / "plugins"
    plugins_dir.mkdir(parents=True, exist_ok=True)
    config = config_dir / "gateway.toml"
    endpoints = ", ".join(
        toml_str(e) for e in ([endpoint] if isinstance(endpoint, str) else endpoint))
    config.write_text(
        "[server]\n"
        'listen = "127.0.0.1:0"\n'
        'admin_listen = "127.0.0.1:0"\n'
        "[plugins]\n"
        f"dir = {toml_str(plugins_dir)}\n"
        "[backends.tfs]\n"
        'kind = "tfserving"\n'
        f"endpoints = [{endpoints}]\n"
        f"timeout_ms = {timeout_ms}\n"
        "[backends.local]\n"
        'kind = "onnx"\n'
        f"timeout_ms = {timeout_ms}\n" + backends)
    for route, keys in routes.items():
        folder = plugins_dir / route
        folder.mkdir(exist_ok=True)
        keys = dict(keys)
        extra = keys.pop("_toml", "")
        backend = keys.pop("backend", "tfs")
        # A model folder may only name files inside itself: files given as paths elsewhere
        # (the built plugin, the ONNX model) are copied in and named relative to it.
        for key in FILE_KEYS & keys.keys():
            source = Path(keys[key])
            if source.is_absolute():
                shutil.copyfile(source, folder / source.name)
                keys[key] = source.name
        body = f'backend = "{backend}"\nsignature = "serving_default"\n'
        body += "".join(f"{k} = {toml_str(v)}\n" for k, v in keys.items())
        body += extra
        (folder / "model.toml").write_text(body)
    proc = Process(name, [binary, "serve", "--config", config], config_dir)
    try:
        url = proc.wait_for_line(r"infergate listening on (http://\S+)",
                                 GATEWAY_START_TIMEOUT).group(1)
        admin = proc.wait_for_line(r"infergate admin on (http://\S+)", 30).group(1)
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url + "/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{name}: /healthz never answered 200\n{proc.tail()}")
            time.sleep(0.2)
    except BaseException:
        proc.stop()
        raise
    return Gateway(proc, url.rstrip("/"), admin.rstrip("/"), config_dir)


class Reference:
    """The SavedModels run directly with TensorFlow in the test process."""

    def __init__(self):
        import tensorflow as tf
        self.tf = tf
        self.fns = {
            v: tf.saved_model.load(str(MODEL_DIR / str(v))).signatures["serving_default"]
            for v in (1, 2)}
        self.latest = max(self.fns)

    def run(self, images, version=None):
        """images: float32 [N,28,28,1] -> {"probabilities": [N,10], "label": [N]}."""
        fn = self.fns[version or self.latest]
        out = fn(image=self.tf.constant(np.asarray(images, np.float32)))
        return {k: v.numpy() for k, v in out.items()}


def load_image(path):
    """Decoded like the plugin does: 8-bit grayscale / 255 -> float32 [1,28,28,1]."""
    from PIL import Image
    with Image.open(path) as im:
        px = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    assert px.shape == (28, 28), f"{path}: {px.shape}"
    return px.reshape(1, 28, 28, 1)


# --------------------------------------------------------------------------- Triton

TRITON_START_TIMEOUT = 180


class TritonServer:
    def __init__(self, process, grpc_port, http_port, seconds):
        self.process = process
        self.endpoint = f"http://127.0.0.1:{grpc_port}"
        self.http_target = f"127.0.0.1:{http_port}"
        self.start_seconds = seconds


def triton_python():
    """The Triton venv's python (scripts/triton-venv.sh makes it; scripts/e2e.sh runs that)."""
    venv = os.environ.get("INFERGATE_TRITON_VENV",
                          str(Path.home() / ".cache" / "infergate" / "venv-triton"))
    python = Path(venv) / "bin" / "python"
    if not python.is_file():
        pytest.fail(f"no Triton venv at {venv}: run scripts/triton-venv.sh (scripts/e2e.sh "
                    f"does) or set INFERGATE_TRITON_VENV")
    return python


def start_triton(log_dir):
    """Triton Inference Server (nvidia-pytriton) serving `digits` from the ONNX file."""
    log_dir = Path(log_dir)
    started = time.monotonic()
    proc = Process("triton", [triton_python(), REPO / "scripts" / "triton_server.py",
                              "--port-file", log_dir / "triton.port"], log_dir)
    m = proc.wait_for_line(r"triton listening on grpc=127\.0\.0\.1:(\d+) http=127\.0\.0\.1:(\d+)",
                           TRITON_START_TIMEOUT)
    seconds = time.monotonic() - started
    print(f"\ntriton: started in {seconds:.1f}s")
    return TritonServer(proc, int(m.group(1)), int(m.group(2)), seconds)
