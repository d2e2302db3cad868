#!/usr/bin/env python3
"""Triton Inference Server (from PyPI's nvidia-pytriton) serving the digits model over the
Open Inference Protocol, for the end-to-end tests of infergate's `kserve_v2` backend.

pytriton ships the `tritonserver` binary and binds a Python function as a model; here that
function runs plugins/digits/model.onnx (the same weights as models/digits/2) with
onnxruntime on CPU. The model is `digits`: input `image` FP32 [-1, 28, 28, 1], outputs
`probabilities` FP32 [-1, 10] and `label` INT64 [-1], as the SavedModel's signature has them.
Triton's own batching is off (max_batch_size 0, the batch dimension is part of each shape):
a scalar-per-row output such as `label` needs it so (Triton wants dims of every output of a
batching model), and each ModelInfer is then one execution, so what the tests count is what
the gateway sent.

Runs in its own venv (scripts/triton-venv.sh): pytriton needs numpy < 2, which the
TensorFlow venv does not pin.

  python scripts/triton_server.py --grpc-port 0 --http-port 0 --port-file /tmp/triton.port

Prints "triton listening on grpc=127.0.0.1:PORT http=127.0.0.1:PORT" once the model is
ready, and writes "GRPC HTTP" to --port-file; stops on SIGTERM/SIGINT.
"""

import argparse
import os
import signal
import socket
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonSecurityConfig

REPO = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grpc-port", type=int, default=0, help="0: a free port")
    ap.add_argument("--http-port", type=int, default=0, help="0: a free port")
    ap.add_argument("--model", default=str(REPO / "plugins" / "digits" / "model.onnx"))
    ap.add_argument("--port-file", help="written as 'GRPC HTTP' once serving")
    args = ap.parse_args()
    grpc_port = args.grpc_port or free_port()
    http_port = args.http_port or free_port()

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    output_names = [o.name for o in session.get_outputs()]

    # The declared dtypes, exactly: pytriton checks the returned arrays' scalar types, and
    # onnxruntime's int64 may come back as numpy's `longlong`, an equal but other type.
    dtypes = {"probabilities": np.float32, "label": np.int64}

    def infer(requests):
        replies = []
        for r in requests:
            outputs = session.run(output_names, {"image": r["image"].astype(np.float32)})
            replies.append({name: np.asarray(value, dtype=dtypes[name])
                            for name, value in zip(output_names, outputs)})
        return replies

    # Triton runs the bound function in its Python backend stub, which links libpython
    # dynamically: point it at this interpreter's own, or the loader may pick another build
    # of the same minor version (the system's), whose C modules don't match this stdlib.
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p)
    config = TritonConfig(grpc_address="127.0.0.1", grpc_port=grpc_port,
                          http_address="127.0.0.1", http_port=http_port,
                          metrics_port=free_port(), log_verbose=0)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    started = time.monotonic()
    # pytriton guards Triton's admin APIs with a token; the tests read the statistics API
    # (how many ModelInfer requests arrived), so that one is open, the rest stay guarded.
    security = TritonSecurityConfig(
        restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"])
    with Triton(config=config, security_config=security) as triton:
        triton.bind(
            model_name="digits",
            infer_func=infer,
            inputs=[Tensor(name="image", dtype=np.float32, shape=(-1, 28, 28, 1))],
            outputs=[Tensor(name="probabilities", dtype=np.float32, shape=(-1, 10)),
                     Tensor(name="label", dtype=np.int64, shape=(-1,))],
            config=ModelConfig(batching=False),
            strict=True,
        )
        triton.run()
        if args.port_file:
            Path(args.port_file).write_text(f"{grpc_port} {http_port}\n")
        print(f"triton listening on grpc=127.0.0.1:{grpc_port} http=127.0.0.1:{http_port} "
              f"(started in {time.monotonic() - started:.1f}s)", flush=True)
        while not stop:
            time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
