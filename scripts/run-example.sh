#!/usr/bin/env bash
# Runs the example digit classifier on this machine and prints where to send requests.
#
#   scripts/run-example.sh             # zero setup: the model runs inside the gateway (the
#                                      # embedded onnx backend, plugins/digits/model.onnx);
#                                      # needs only the Rust toolchain and Python 3 (the
#                                      # Python example plugin's venv)
#   scripts/run-example.sh tfserving   # the same model through TensorFlow Serving: starts a
#                                      # TF-Serving-compatible gRPC server running real
#                                      # TensorFlow (Python venv) on 127.0.0.1:8500; with
#                                      # INFERGATE_BACKEND=external it uses one already
#                                      # listening there (e.g. deploy/compose.yaml)
#
# Either way: installs the wasm32-wasip2 target if missing, builds the digits plugin and the
# gateway (release), then runs `infergate serve` on 127.0.0.1:8080 until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

example=${1:-onnx}
case "$example" in
    onnx) config=gateway.toml ;;
    tfserving) config=examples/tfserving/gateway.toml ;;
    *) echo "usage: $0 [onnx|tfserving]" >&2; exit 2 ;;
esac

scripts/build-plugins.sh --examples >/dev/null
cargo build --release --locked --bin infergate

if [ "$example" = tfserving ] && [ "${INFERGATE_BACKEND:-tf_server}" != external ]; then
    venv=$(scripts/venv.sh | tail -n 1)
    "$venv/bin/python" scripts/tf_server.py --port 8500 --model digits=models/digits --label digits:stable=1 &
    tf_pid=$!
    trap 'kill $tf_pid 2>/dev/null || true' EXIT
    for _ in $(seq 1 120); do
        (exec 3<>/dev/tcp/127.0.0.1/8500) 2>/dev/null && break
        kill -0 $tf_pid 2>/dev/null || { echo "tf_server.py exited" >&2; exit 1; }
        sleep 0.5
    done
fi

cat <<MSG

infergate ($example backend, $config) will listen on http://127.0.0.1:8080
Classify a bundled image from another terminal:
  curl -s --data-binary @examples/images/digit-7-0.png http://127.0.0.1:8080/v1/models/digits:predict

MSG
"${CARGO_TARGET_DIR:-target}/release/infergate" serve --config "$config"
