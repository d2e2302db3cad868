#!/usr/bin/env python3
"""The architecture infergate replaces, for bench/compare.rs (setup 2): a Tornado app with
async handlers that does the digits plugin's work in Python (digits_work.py) and calls TF
Serving through grpc.aio.

  POST /v1/models/<model>:predict[?k=N]   body: a PNG or JPEG of a digit
  -> {"model": ..., "predictions": [{"label": "7", "score": 0.91}, ...]}

Written the way a competent Python developer would: one gRPC channel per process, created
once and reused by every request; no per-request setup; the image work in Pillow and numpy
(C code); the request tensor packed as tensor_content (one bytes copy). With --procs N the
listening socket is bound once and N worker processes are pre-forked to share it (Tornado's
fork_processes), each with its own event loop and channel, created after the fork as gRPC
requires.

Pre and post match plugins/digits (see digits_work.py).

Usage: python bench/tornado_app.py --backend 127.0.0.1:8500 [--port 0] [--procs 2]
Prints "tornado listening on HOST:PORT" once the socket is bound.
"""

import argparse
import asyncio
import json

import grpc
import numpy as np
import tornado.httpserver
import tornado.netutil
import tornado.process
import tornado.web
from tensorflow_serving.apis import prediction_service_pb2_grpc

from digits_work import DEFAULT_K, LABELS, predict_request, preprocess, probabilities, top_k


class PredictHandler(tornado.web.RequestHandler):
    def initialize(self, stub, timeout):
        self.stub = stub
        self.timeout = timeout

    def fail(self, status, message):
        self.set_status(status)
        self.set_header("content-type", "application/json")
        self.finish(json.dumps({"error": message}))

    async def post(self, model):
        raw_k = self.get_query_argument("k", None)
        k = DEFAULT_K
        if raw_k is not None:
            if not raw_k.isdigit() or not 1 <= int(raw_k) <= len(LABELS):
                return self.fail(400, f"query parameter k must be 1 to {len(LABELS)}")
            k = int(raw_k)
        try:
            image = preprocess(self.request.body)
        except Exception as e:  # Pillow raises several types for a bad image
            return self.fail(400, f"could not decode the image: {e}")
        request = predict_request(model, image[np.newaxis])
        try:
            response = await self.stub.Predict(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            return self.fail(502, f"backend: {e.code().name}: {e.details()}")
        rows = [
            [{"label": label, "score": score} for label, score in top_k(row, k)]
            for row in probabilities(response)
        ]
        predictions = rows[0] if len(rows) == 1 else rows
        self.set_header("content-type", "application/json")
        self.finish(json.dumps({"model": model, "predictions": predictions}))


async def serve(sockets, backend, timeout):
    # One channel for the life of the process, created inside its event loop.
    channel = grpc.aio.insecure_channel(
        backend, options=[("grpc.max_receive_message_length", 64 << 20)]
    )
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    app = tornado.web.Application(
        [(r"/v1/models/([^/:]+):predict", PredictHandler, {"stub": stub, "timeout": timeout})]
    )
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    await asyncio.Event().wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", required=True, help="TF Serving gRPC address, HOST:PORT")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--procs", type=int, default=1, help="worker processes (0: one per core)")
    ap.add_argument("--timeout", type=float, default=30.0, help="backend deadline, seconds")
    args = ap.parse_args()
    sockets = tornado.netutil.bind_sockets(args.port, args.host, backlog=1024)
    port = sockets[0].getsockname()[1]
    print(f"tornado listening on {args.host}:{port}", flush=True)
    if args.procs != 1:
        # Returns in each child; the parent stays to restart children that die.
        tornado.process.fork_processes(args.procs)
    asyncio.run(serve(sockets, args.backend, args.timeout))


if __name__ == "__main__":
    main()
