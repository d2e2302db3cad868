#!/usr/bin/env python3
"""A TensorFlow-Serving-compatible gRPC server that runs real TensorFlow.

TensorFlow Serving's own binary can't be installed everywhere the tests run, so the
end-to-end suite uses this stand-in. It serves the same gRPC API from the official
`tensorflow-serving-api` package (generated protos and service stubs) and executes
SavedModels with TensorFlow itself:

  tensorflow.serving.PredictionService/Predict
  tensorflow.serving.PredictionService/GetModelMetadata   (metadata_field "signature_def")
  tensorflow.serving.ModelService/GetModelStatus

Behaviour follows TF Serving's (tensorflow_serving/servables/tensorflow/predict_util.cc,
get_model_metadata_impl.cc, get_model_status_impl.cc, server_core.cc):
  - version choice: ModelSpec.version, else version_label, else the latest (largest) version;
  - signature_name defaults to "serving_default";
  - inputs are checked against the SignatureDef (names, dtype, shape) and answered with
    INVALID_ARGUMENT and TF-Serving-style messages;
  - output_filter selects outputs (unknown or duplicate alias: INVALID_ARGUMENT);
  - outputs are encoded like TF Serving's default (Tensor::AsProtoField): typed *_val fields
    plus tensor_shape; `--tensor-content` switches to tensor_content, like TF Serving's
    --enable_serialization_as_tensor_content;
  - request tensors may use tensor_content or typed fields;
  - the response ModelSpec carries name, resolved version and signature_name.
Status codes are TF Serving's: unknown model or version -> NOT_FOUND; unknown version label
-> INVALID_ARGUMENT ("Unrecognized servable version label: ..."); unknown signature ->
FAILED_PRECONDITION ("Serving signature key \"...\" not found.").

Test hooks (not in TF Serving):
  --stats-file PATH   rewritten as JSON after every Predict:
                      {"predict_calls": {"<model>": [batch size of each call, ...]},
                       "predict_versions": {"<model>": [version served by each call, ...]}}
                      batch size = dim 0 of the request's first input (sorted by name).
  --delay-ms N        sleep N ms inside every Predict (lets concurrent requests pile up).
  --port-file PATH    the bound port is written there once serving; the line
                      "tf_server listening on HOST:PORT" is printed to stdout as well.

Example:
  python scripts/tf_server.py --port 0 --model digits=models/digits \\
      --label digits:stable=1 --port-file /tmp/tfs.port --stats-file /tmp/tfs.json
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
from concurrent import futures

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from google.protobuf import wrappers_pb2  # noqa: E402
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2  # noqa: E402
from tensorflow.core.protobuf import error_codes_pb2, meta_graph_pb2, saved_model_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

DEFAULT_SIGNATURE = "serving_default"
MAX_MESSAGE = 256 * 1024 * 1024


class ServingError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def dtype_name(dt):
    """TF's DataTypeString: DT_FLOAT -> "float", DT_INT64 -> "int64"."""
    try:
        return types_pb2.DataType.Name(dt)[3:].lower()
    except ValueError:
        return f"<unknown dtype {dt}>"


def shape_str(dims):
    return "[" + ",".join(str(d) for d in dims) + "]"


# --------------------------------------------------------------------------- models


class Version:
    def __init__(self, number, path):
        self.number = number
        self.path = path
        self.loaded = tf.saved_model.load(path)
        # The SignatureDefs exactly as stored (what TF Serving reports and validates against).
        sm = saved_model_pb2.SavedModel()
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            sm.ParseFromString(f.read())
        meta = None
        for mg in sm.meta_graphs:
            if "serve" in mg.meta_info_def.tags:
                meta = mg
                break
        if meta is None:
            raise RuntimeError(f"{path}: no meta graph tagged 'serve'")
        self.signature_defs = dict(meta.signature_def)

    def function(self, signature_name):
        try:
            return self.loaded.signatures[signature_name]
        except KeyError:
            return None


class Model:
    def __init__(self, name, base_path):
        self.name = name
        self.base_path = base_path
        self.versions = {}
        self.labels = {}
        for entry in sorted(os.listdir(base_path)):
            full = os.path.join(base_path, entry)
            if entry.isdigit() and os.path.isdir(full):
                self.versions[int(entry)] = Version(int(entry), full)
        if not self.versions:
            raise RuntimeError(f"model {name}: no numeric version directories under {base_path}")

    def resolve(self, spec):
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            v = spec.version.value
            if v not in self.versions:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Servable not found for request: Specific({self.name}, {v})")
            return self.versions[v]
        if choice == "version_label":
            label = spec.version_label
            if label not in self.labels:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Unrecognized servable version label: {label}")
            return self.versions[self.labels[label]]
        return self.versions[max(self.versions)]


# --------------------------------------------------------------------------- tensors


def encode_typed(arr):
    """Like Tensor::AsProtoField: typed *_val fields + tensor_shape."""
    arr = np.asarray(arr)
    dt = tf.dtypes.as_dtype(arr.dtype) if arr.dtype != object else tf.string
    proto = tensor_pb2.TensorProto(dtype=dt.as_datatype_enum)
    proto.tensor_shape.CopyFrom(tf.TensorShape(arr.shape).as_proto())
    flat = arr.ravel()
    if dt == tf.float32:
        proto.float_val.extend(flat.tolist())
    elif dt == tf.float64:
        proto.double_val.extend(flat.tolist())
    elif dt in (tf.int32, tf.int16, tf.int8, tf.uint8, tf.uint16):
        proto.int_val.extend(flat.astype(np.int64).tolist())
    elif dt == tf.int64:
        proto.int64_val.extend(flat.tolist())
    elif dt == tf.uint32:
        proto.uint32_val.extend(flat.tolist())
    elif dt == tf.uint64:
        proto.uint64_val.extend(flat.tolist())
    elif dt == tf.bool:
        proto.bool_val.extend(flat.tolist())
    elif dt == tf.string:
        proto.string_val.extend(x if isinstance(x, bytes) else str(x).encode() for x in flat)
    elif dt in (tf.float16, tf.bfloat16):
        proto.half_val.extend(flat.view(np.uint16).astype(np.int64).tolist())
    elif dt == tf.complex64:
        proto.scomplex_val.extend(np.stack([flat.real, flat.imag], -1).ravel().tolist())
    elif dt == tf.complex128:
        proto.dcomplex_val.extend(np.stack([flat.real, flat.imag], -1).ravel().tolist())
    else:
        return tf.make_tensor_proto(arr)
    return proto


def encode_content(arr):
    """Like Tensor::AsProtoTensorContent (strings still go to string_val)."""
    return tf.make_tensor_proto(np.asarray(arr))


def check_shape(alias, arr_shape, info):
    shape = info.tensor_shape
    if shape.unknown_rank:
        return
    want = [d.size for d in shape.dim]
    ok = len(want) == len(arr_shape) and all(w < 0 or w == g for w, g in zip(want, arr_shape))
    if not ok:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input '{alias}' has incompatible shape {shape_str(arr_shape)}: the signature "
            f"expects shape {shape_str(want)} (-1 = any size)")


# --------------------------------------------------------------------------- services


class Stats:
    def __init__(self, path, models):
        self.path = path
        self.lock = threading.Lock()
        self.calls = {m: [] for m in models}
        self.versions = {m: [] for m in models}
        self.write()

    def record(self, model, batch, version):
        with self.lock:
            self.calls.setdefault(model, []).append(batch)
            self.versions.setdefault(model, []).append(version)
            self.write()

    def write(self):
        if not self.path:
            return
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            json.dump({"predict_calls": self.calls, "predict_versions": self.versions}, f)
        os.replace(tmp, self.path)


class Server:
    def __init__(self, models, tensor_content=False, stats=None, delay_ms=0, verbose=False):
        self.models = models
        self.encode = encode_content if tensor_content else encode_typed
        self.stats = stats
        self.delay_s = delay_ms / 1000.0
        self.verbose = verbose

    def log(self, msg):
        if self.verbose:
            print(f"tf_server: {msg}", file=sys.stderr, flush=True)

    def model(self, spec):
        if not spec.name:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
        model = self.models.get(spec.name)
        if model is None:
            choice = spec.WhichOneof("version_choice")
            what = (f"Specific({spec.name}, {spec.version.value})" if choice == "version"
                    else f"Latest({spec.name})")
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {what}")
        return model

    # ---- Predict

    def predict(self, request):
        model = self.model(request.model_spec)
        version = model.resolve(request.model_spec)
        sig_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        sig = version.signature_defs.get(sig_name)
        fn = version.function(sig_name)
        if sig is None or fn is None:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                               f'Serving signature key "{sig_name}" not found.')

        sent, wanted = set(request.inputs), set(sig.inputs)
        if sent != wanted:
            if len(sent) == len(wanted):
                extra = sorted(sent - wanted)[0]
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input tensor alias not found in signature: {extra}. Inputs expected to be "
                    f"in the set {{{','.join(sorted(wanted))}}}.")
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input size does not match signature: {len(sent)}!={len(wanted)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
                f"Missing but required: {{{','.join(sorted(wanted - sent))}}}.")

        feeds = {}
        for index, alias in enumerate(sorted(sig.inputs)):
            info, proto = sig.inputs[alias], request.inputs[alias]
            if proto.dtype != info.dtype:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Expects arg[{index}] to be {dtype_name(info.dtype)} but "
                    f"{dtype_name(proto.dtype)} is provided (input '{alias}')")
            try:
                arr = tf.make_ndarray(proto)
            except Exception as e:  # noqa: BLE001 - any decode failure is the client's
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"tensor parsing error: {alias} ({e})") from e
            check_shape(alias, arr.shape, info)
            feeds[alias] = arr

        aliases = list(request.output_filter)
        seen = set()
        for alias in aliases:
            if alias not in sig.outputs:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"output tensor alias not found in signature: {alias} Outputs expected to "
                    f"be in the set {{{','.join(sorted(sig.outputs))}}}.")
            if alias in seen:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        if not aliases:
            aliases = sorted(sig.outputs)

        first = feeds[sorted(feeds)[0]] if feeds else None
        batch = int(first.shape[0]) if first is not None and first.ndim > 0 else None
        if self.delay_s:
            time.sleep(self.delay_s)
        try:
            result = fn(**{k: tf.constant(v) for k, v in feeds.items()})
        except (tf.errors.InvalidArgumentError, TypeError, ValueError) as e:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(e).strip()) from e

        response = predict_pb2.PredictResponse()
        response.model_spec.name = model.name
        response.model_spec.version.value = version.number
        response.model_spec.signature_name = sig_name
        for alias in aliases:
            response.outputs[alias].CopyFrom(self.encode(result[alias].numpy()))
        if self.stats is not None:
            self.stats.record(model.name, batch, version.number)
        self.log(f"Predict {model.name} v{version.number} {sig_name} batch={batch} -> "
                 f"{','.join(aliases)}")
        return response

    # ---- GetModelMetadata

    def metadata(self, request):
        if not request.metadata_field:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               "GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Metadata field {field} is not supported")
        model = self.model(request.model_spec)
        version = model.resolve(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = model.name
        response.model_spec.version.value = version.number
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for name, sig in version.signature_defs.items():
            sig_map.signature_def[name].CopyFrom(sig)
        response.metadata["signature_def"].Pack(sig_map)
        self.log(f"GetModelMetadata {model.name} v{version.number}")
        return response

    # ---- GetModelStatus

    def status(self, request):
        spec = request.model_spec
        if not spec.name:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing model name in request.")
        model = self.models.get(spec.name)
        if model is None:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Could not find any versions of model {spec.name}")
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            if spec.version.value not in model.versions:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Could not find version {spec.version.value} of model "
                                   f"{spec.name}")
            numbers = [spec.version.value]
        elif choice == "version_label":
            numbers = [model.resolve(spec).number]
        else:
            numbers = sorted(model.versions)
        response = get_model_status_pb2.GetModelStatusResponse()
        for n in numbers:
            status = response.model_version_status.add()
            status.version = n
            status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
            status.status.error_code = error_codes_pb2.OK
            status.status.error_message = ""
        self.log(f"GetModelStatus {model.name} {numbers}")
        return response


def guarded(method, response_type):
    def handler(self, request, context):
        try:
            return method(self.server, request)
        except ServingError as e:
            self.server.log(f"{method.__name__}: {e.code.name}: {e.message}")
            context.abort(e.code, e.message)
        except Exception as e:  # noqa: BLE001 - report, don't kill the worker
            self.server.log(f"{method.__name__}: INTERNAL: {e!r}")
            context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
        return response_type()
    return handler


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server):
        self.server = server

    Predict = guarded(Server.predict, predict_pb2.PredictResponse)
    GetModelMetadata = guarded(Server.metadata, get_model_metadata_pb2.GetModelMetadataResponse)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, server):
        self.server = server

    GetModelStatus = guarded(Server.status, get_model_status_pb2.GetModelStatusResponse)


# --------------------------------------------------------------------------- main


def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="TensorFlow-Serving-compatible gRPC server running real TensorFlow.")
    ap.add_argument("--port", type=int, default=8500, help="0 picks a free port")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=BASE_PATH",
                    help="serve every numeric subdirectory of BASE_PATH as a version (repeatable)")
    ap.add_argument("--label", action="append", default=[], metavar="NAME:LABEL=VERSION",
                    help="version label (repeatable)")
    ap.add_argument("--tensor-content", action="store_true",
                    help="encode outputs as tensor_content instead of typed *_val fields")
    ap.add_argument("--port-file", help="write the bound port here once serving")
    ap.add_argument("--stats-file", help="JSON call statistics, rewritten after every Predict")
    ap.add_argument("--delay-ms", type=int, default=0, help="sleep this long in every Predict")
    ap.add_argument("--workers", type=int, default=8, help="gRPC thread pool size")
    ap.add_argument("--verbose", action="store_true", help="log every call to stderr")
    args = ap.parse_args(argv)
    if not args.model:
        ap.error("at least one --model NAME=BASE_PATH is required")
    return args


def load_models(args):
    models = {}
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--model wants NAME=BASE_PATH, got {item!r}")
        if not os.path.isdir(path):
            raise SystemExit(f"--model {item}: {path} is not a directory")
        models[name] = Model(name, os.path.abspath(path))
    for item in args.label:
        head, sep, version = item.partition("=")
        name, sep2, label = head.partition(":")
        if not sep or not sep2 or not version.isdigit():
            raise SystemExit(f"--label wants NAME:LABEL=VERSION, got {item!r}")
        if name not in models:
            raise SystemExit(f"--label {item}: unknown model {name}")
        if int(version) not in models[name].versions:
            raise SystemExit(f"--label {item}: model {name} has no version {version}")
        models[name].labels[label] = int(version)
    return models


def write_atomic(path, text):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None):
    args = parse_args(argv)
    models = load_models(args)
    stats = Stats(args.stats_file, models) if args.stats_file else None
    core = Server(models, tensor_content=args.tensor_content, stats=stats,
                  delay_ms=args.delay_ms, verbose=args.verbose)

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=args.workers),
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.so_reuseport", 0),
        ])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(core), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
    host = f"[{args.host}]" if ":" in args.host else args.host
    port = server.add_insecure_port(f"{host}:{args.port}")
    if port == 0:
        raise SystemExit(f"could not bind {host}:{args.port}")

    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server.start()
    for m in models.values():
        labels = ", ".join(f"{k}={v}" for k, v in sorted(m.labels.items()))
        print(f"tf_server model {m.name}: versions {sorted(m.versions)}"
              + (f", labels {labels}" if labels else ""), flush=True)
    if args.port_file:
        write_atomic(args.port_file, f"{port}\n")
    print(f"tf_server listening on {args.host}:{port}", flush=True)

    while not stop.wait(0.5):
        pass
    print("tf_server shutting down", flush=True)
    server.stop(grace=2).wait(5)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: unloading TensorFlow takes seconds and there is
    # nothing left to save (the stats file is written synchronously).
    os._exit(code)
