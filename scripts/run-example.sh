#!/usr/bin/env bash
# Runs the example end to end on this machine: builds the plugins, starts a
# TF-Serving-compatible gRPC server with real TensorFlow on 127.0.0.1:8500 serving
# models/digits (skip it with INFERGATE_BACKEND=external when a real tensorflow/serving is
# already listening there), then `infergate serve --config gateway.toml` on 127.0.0.1:8080.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build-plugins.sh >/dev/null
cargo build --release --locked --bin infergate

if [ "${INFERGATE_BACKEND:-tf_server}" != external ]; then
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

cat <<'MSG'

Try:
  curl -s -X POST --data-binary @examples/images/digit-7-0.png \
       -H 'content-type: image/png' http://127.0.0.1:8080/v1/models/digits:predict

MSG
target/release/infergate serve --config gateway.toml
