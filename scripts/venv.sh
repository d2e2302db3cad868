#!/usr/bin/env bash
# Creates (or reuses) the Python venv for the TensorFlow side: the TF-Serving-compatible
# server, the training script and the end-to-end suite. It lives outside the clone
# (TensorFlow is ~2 GB) and is rebuilt only when scripts/requirements-e2e.txt changes.
# Prints the venv's path on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${INFERGATE_CACHE:-$HOME/.cache/infergate}"
VENV="${INFERGATE_VENV:-$CACHE/venv}"
stamp="$VENV/.requirements.sha256"
want=$(sha256sum scripts/requirements-e2e.txt | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing the Python venv in $VENV (first run downloads TensorFlow, ~600 MB)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --cache-dir "$CACHE/pip" -r scripts/requirements-e2e.txt >&2
    echo "$want" > "$stamp"
fi
echo "$VENV"
