#!/usr/bin/env python3
"""A peer for bench/compare.rs (setup 6): the digits workload served by Triton Inference Server
through PyTriton (PyPI's nvidia-pytriton, which ships the `tritonserver` binary): a Python
model bound with Triton's dynamic batcher that does the digits pre/post and calls TF Serving
over gRPC.

  POST /v2/models/digits/infer   KServe v2, the PNG as a BYTES input `image` of shape [1, 1]
                                 (binary tensor extension, as tritonclient sends it)
  -> {"outputs": [{"name": "labels", "data": ["7", ...]}, {"name": "scores", ...}], ...}

Written the way PyTriton's documentation binds a batched model:

- a `@batch` inference function, one instance: PyTriton runs every instance's function in
  this one Python process (a second instance is a second thread under the same GIL), and
  0.7's second instance gives up when the first has not opened its handshake socket within
  1 s, which a busy 2-core machine misses (`--instances 2` tries it); Triton's dynamic
  batcher groups up to 64 requests, waiting at most 1 ms (infergate's
  `max_batch_size = 64`, `batch_timeout_us = 1000`);
- the function decodes its batch's images (Pillow + numpy), sends them as one
  f32 [N, 28, 28, 1] PredictRequest on its own gRPC channel (created once), and answers the
  top-3 labels and scores of each row as two output tensors.

The work itself is digits_work.py, shared with the other Python peers.

Usage: python bench/triton_app.py --backend 127.0.0.1:8500 [--port 0]
Prints "triton listening on HOST:PORT" once the model is loaded.
"""

import argparse
import logging
import os
import signal
import socket
import sysconfig
import threading

import grpc
import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig
from tensorflow_serving.apis import prediction_service_pb2_grpc

from digits_work import DEFAULT_K, predict_request, preprocess, probabilities, top_k

MODEL = "digits"


def make_infer(backend, timeout):
    """One model instance's inference function, with its own channel."""
    channel = grpc.insecure_channel(
        backend, options=[("grpc.max_receive_message_length", 64 << 20)]
    )
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    @batch
    def infer(image):
        # `image` is the batch: object array [N, 1] of the requests' bytes. A bad image fails
        # the whole batch (a @batch function has no per-request errors), as it would in any
        # PyTriton model written this way.
        images = np.stack([preprocess(row[0]) for row in image])
        response = stub.Predict(predict_request(MODEL, images), timeout=timeout)
        best = [top_k(row, DEFAULT_K) for row in probabilities(response)]
        labels = np.array([[label.encode() for label, _ in row] for row in best], dtype=np.bytes_)
        scores = np.array([[score for _, score in row] for row in best], dtype=np.float32)
        return {"labels": labels, "scores": scores}

    return infer


def free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", required=True, help="TF Serving gRPC address, HOST:PORT")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--instances", type=int, default=1, help="model instances")
    ap.add_argument("--timeout", type=float, default=30.0, help="backend deadline, seconds")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # Triton's Python backend stub links libpython3.X dynamically and would find the
    # distribution's copy first; it must load the interpreter running this script, or the
    # stub runs one patch release's C modules under another's standard library (and
    # multiprocessing breaks on the difference).
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        os.environ["LD_LIBRARY_PATH"] = ":".join(
            filter(None, [libdir, os.environ.get("LD_LIBRARY_PATH")])
        )
    port = args.port or free_port(args.host)
    config = TritonConfig(
        http_address=args.host,
        http_port=port,
        allow_grpc=False,
        allow_metrics=False,
        log_verbose=0,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Triton(config=config) as triton:
        triton.bind(
            model_name=MODEL,
            infer_func=[make_infer(args.backend, args.timeout) for _ in range(args.instances)],
            inputs=[Tensor(name="image", dtype=np.bytes_, shape=(1,))],
            outputs=[
                Tensor(name="labels", dtype=np.bytes_, shape=(DEFAULT_K,)),
                Tensor(name="scores", dtype=np.float32, shape=(DEFAULT_K,)),
            ],
            config=ModelConfig(
                max_batch_size=64,
                batcher=DynamicBatcher(max_queue_delay_microseconds=1000),
            ),
            strict=True,
        )
        triton.run()
        print(f"triton listening on {args.host}:{port}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
