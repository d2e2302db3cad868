#!/usr/bin/env bash
# Creates (or reuses) the small Python venv that builds Python plugins (componentize-py, the
# SDK's pure-Python dependencies) and runs the Python SDK's tests (Pillow and numpy as the
# references). Separate from scripts/venv.sh's TensorFlow venv, so neither rebuilds the other;
# rebuilt only when scripts/requirements-plugin.txt changes. Prints the venv's path on the
# last line.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${INFERGATE_CACHE:-$HOME/.cache/infergate}"
VENV="${INFERGATE_PLUGIN_VENV:-$CACHE/plugin-venv}"
stamp="$VENV/.requirements.sha256"
want=$(sha256sum scripts/requirements-plugin.txt | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing the Python plugin toolchain in $VENV (componentize-py, ~40 MB)" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --cache-dir "$CACHE/pip" \
        -r scripts/requirements-plugin.txt >&2
    echo "$want" > "$stamp"
fi
echo "$VENV"
