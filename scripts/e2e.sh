#!/usr/bin/env bash
# Runs the end-to-end suite (tests/e2e) against a real `infergate serve` and a
# TF-Serving-compatible gRPC server running real TensorFlow (scripts/tf_server.py).
#
# Expects, already in place:
#   - a Python venv with scripts/requirements-e2e.txt installed, at
#     ${INFERGATE_VENV:-~/.cache/infergate/venv};
#   - the gateway binary, at ${INFERGATE_BIN:-target/debug/infergate};
#   - plugins/digits/plugin.wasm for the plugin tests (they skip, saying so, without it).
# Makes, if missing, the Triton venv (scripts/triton-venv.sh) for the kserve_v2 tests.
# Extra arguments go to pytest, e.g. `scripts/e2e.sh -k rest -x`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${INFERGATE_VENV:-$HOME/.cache/infergate/venv}"
PYTHON="$VENV/bin/python"
BIN="${INFERGATE_BIN:-target/debug/infergate}"
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac

if [ ! -x "$PYTHON" ]; then
    echo "e2e: no Python venv at $VENV (set INFERGATE_VENV; install scripts/requirements-e2e.txt)" >&2
    exit 2
fi
if [ ! -x "$BIN" ]; then
    echo "e2e: no gateway binary at $BIN (build it first: cargo build; or set INFERGATE_BIN)" >&2
    exit 2
fi

cd "$ROOT"
# Triton Inference Server (nvidia-pytriton) for the kserve_v2 backend's tests, in a venv of its
# own; made once, reused while scripts/requirements-triton.txt is unchanged.
INFERGATE_TRITON_VENV="$(scripts/triton-venv.sh | tail -n 1)"
export INFERGATE_TRITON_VENV
export INFERGATE_BIN="$BIN"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
exec "$PYTHON" -m pytest tests/e2e -q "$@"
