#!/usr/bin/env bash
# The whole test suite, from a fresh machine with only the Rust toolchain and Python 3:
#   1. the wasm32-wasip2 target and the plugin builds (example + test fixtures),
#   2. the Python plugin SDK's tests, the hermetic Rust tests (fake TF Serving in process,
#      port 0), then rustfmt and clippy,
#   3. the end-to-end suite: a TF-Serving-compatible gRPC server running real TensorFlow,
#      driven through a real `infergate serve` process over HTTP.
# The Python venv (TensorFlow is ~2 GB) lives outside the clone and is reused while
# scripts/requirements-e2e.txt is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "system tools"
# tests/tls.rs drives a real TLS client (curl); a minimal Debian image may lack it.
if ! command -v curl >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq curl
    else
        echo "curl is needed (tests/tls.rs): install it and run again" >&2
        exit 1
    fi
fi

step "python venv"
INFERGATE_VENV=$(scripts/venv.sh | tail -n 1)
export INFERGATE_VENV
echo "$INFERGATE_VENV"

step "plugins (wasm32-wasip2)"
scripts/build-plugins.sh

step "Python plugin SDK tests (ops against Pillow/numpy)"
# The plugin venv (componentize-py, Pillow, numpy) was made by build-plugins.sh above.
PIP_CACHE_DIR="${INFERGATE_CACHE:-$HOME/.cache/infergate}/pip" \
    "$(scripts/plugin-venv.sh | tail -n 1)/bin/python" -m pytest -q plugin-sdk/python/tests

step "hermetic Rust tests"
cargo test --workspace --locked

step "lints (rustfmt, clippy)"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "end-to-end tests (real TensorFlow)"
# `cargo test` above built target/debug/infergate (integration tests build the package's
# binaries); a separate `cargo build` would compile everything again with other features.
scripts/e2e.sh
