#!/usr/bin/env bash
# Creates (or reuses) the Python venv for Triton Inference Server, as PyPI's nvidia-pytriton
# ships it (the tritonserver binary inside), with onnxruntime for the digits model it serves
# (scripts/triton_server.py). Its own venv because pytriton needs numpy < 2, which the
# TensorFlow venv (scripts/venv.sh) does not pin. Rebuilt only when
# scripts/requirements-triton.txt changes. Prints the venv's path on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${INFERGATE_CACHE:-$HOME/.cache/infergate}"
VENV="${INFERGATE_TRITON_VENV:-$CACHE/venv-triton}"
stamp="$VENV/.requirements.sha256"
want=$(sha256sum scripts/requirements-triton.txt | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing the Triton venv in $VENV (first run downloads nvidia-pytriton, ~60 MB)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --cache-dir "$CACHE/pip" -r scripts/requirements-triton.txt >&2
    echo "$want" > "$stamp"
fi
echo "$VENV"
