#!/usr/bin/env python3
"""A peer for bench/compare.rs (setup 5): the digits workload served by mosec, a Rust HTTP
front (hyper/axum) with Python worker processes and dynamic batching between them.

  POST /inference   body: a PNG or JPEG of a digit
  -> {"model": "digits", "predictions": [{"label": "7", "score": 0.91}, ...]}

Written the way mosec's documentation sets a pipeline up: three stages, each its own worker
processes, the Rust front moving requests between them over Unix sockets.

- Preprocess (2 processes, one per core): the raw body (`deserialize` returns the bytes
  instead of mosec's default JSON) → Pillow + numpy → f32 [28, 28, 1];
- Inference (1 process, dynamic batching: up to 64 requests, waiting at most 1 ms, as
  infergate's `max_batch_size = 64`, `batch_timeout_us = 1000`): the batch stacked into one
  f32 [N, 28, 28, 1] PredictRequest on one gRPC channel, created once in the worker;
- Postprocess (2 processes): top-3 of the row as the JSON answer.

The work itself is digits_work.py, shared with the other Python peers.

Usage: python bench/mosec_app.py --backend 127.0.0.1:8500 [--port 0]
Prints "mosec listening on HOST:PORT" once the service answers.
"""

import argparse
import json
import os
import socket
import sys
import threading
import time
import urllib.request

import grpc
import numpy as np
from mosec import Server, ValidationError, Worker
from tensorflow_serving.apis import prediction_service_pb2_grpc

from digits_work import predict_request, preprocess, probabilities, top_k

MODEL = "digits"


class Preprocess(Worker):
    def deserialize(self, data):
        # The body is the image itself, not JSON.
        return data

    def forward(self, data):
        try:
            return preprocess(data)
        except Exception as e:  # Pillow raises several types for a bad image
            raise ValidationError(f"could not decode the image: {e}") from e


class Inference(Worker):
    def __init__(self):
        super().__init__()
        # One channel for the life of the worker process.
        channel = grpc.insecure_channel(
            os.environ["DIGITS_BACKEND"],
            options=[("grpc.max_receive_message_length", 64 << 20)],
        )
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        self.timeout = float(os.environ.get("DIGITS_TIMEOUT", "30"))

    def forward(self, data):
        # `data` is the batch: a list of [28, 28, 1] arrays; the answer is one row each.
        request = predict_request(MODEL, np.stack(data))
        response = self.stub.Predict(request, timeout=self.timeout)
        return list(probabilities(response))


class Postprocess(Worker):
    def forward(self, data):
        return {
            "model": MODEL,
            "predictions": [{"label": label, "score": score} for label, score in top_k(data)],
        }

    def serialize(self, data):
        # mosec's default indents its JSON; an API answers compact JSON.
        return json.dumps(data).encode()


def free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def announce_when_ready(host, port):
    """Prints the ready line once the Rust front answers on `port`."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/", timeout=1):
                print(f"mosec listening on {host}:{port}", flush=True)
                return
        except OSError:
            time.sleep(0.1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", required=True, help="TF Serving gRPC address, HOST:PORT")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--procs", type=int, default=2, help="pre/post processes (one per core)")
    args, _ = ap.parse_known_args()
    port = args.port or free_port(args.host)
    os.environ["DIGITS_BACKEND"] = args.backend
    # mosec reads its own flags from argv: queue deep enough for every client of the bench
    # (its 429s would count as errors), a backend deadline like the gateway's.
    sys.argv = [
        sys.argv[0],
        "--address", args.host,
        "--port", str(port),
        "--timeout", "30000",
        "--capacity", "4096",
        "--log-level", "warning",
    ]
    server = Server()
    server.append_worker(Preprocess, num=args.procs)
    server.append_worker(Inference, num=1, max_batch_size=64, max_wait_time=1)
    server.append_worker(Postprocess, num=args.procs)
    threading.Thread(target=announce_when_ready, args=(args.host, port), daemon=True).start()
    server.run()


if __name__ == "__main__":
    main()
