#!/usr/bin/env bash
# Builds every WebAssembly plugin for wasm32-wasip2 (release) and puts each component where
# the gateway and its tests look for it:
#   plugins/<model>/plugin.wasm        the example plugins (workspace plugins/)
#   plugins/<model>/plugin.wasm        the Python example plugins (plugins/<model>/plugin.py),
#                                      built by the Python SDK with componentize-py from the
#                                      venv of scripts/plugin-venv.sh; skipped while a hash of
#                                      their inputs is unchanged (a rebuild takes ~10 s and is
#                                      not byte-identical, so it would miss the compile cache)
#   tests/plugins/wasm/<fixture>.wasm  the test fixtures (workspace tests/plugins/; the Python
#                                      ones from tests/plugins/<fixture>/plugin.py)
#   tests/plugins/wasm/garbage.wasm    a few bytes that are not WebAssembly at all
#   tests/plugins/wasm/core-module.wasm  a valid core module that is not a component
# Both workspaces have their own target dirs, so this never waits on a host build's lock.
# With --examples, only the example plugins (what scripts/run-example.sh needs).
# Runs from any directory; prints each file it wrote with its size.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=wasm32-wasip2

if ! rustup target list --installed | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi

built=()

# build WORKSPACE: builds every crate of that cargo workspace.
build() {
    echo "building $1 for $TARGET (release)" >&2
    # The workspace's own target dir even when CARGO_TARGET_DIR points elsewhere: `place`
    # looks for the component there.
    # Run from inside the workspace so its own .cargo/config.toml (target features) applies.
    (cd "$1" && cargo build --release --target "$TARGET" --target-dir target)
}

# place WORKSPACE CRATE DEST: copies the crate's component to DEST (cargo names the file after
# the crate, with '-' as '_').
place() {
    local workspace=$1 crate=$2 dest=$3
    local artifact="$workspace/target/$TARGET/release/${crate//-/_}.wasm"
    mkdir -p "$(dirname "$dest")"
    cp "$artifact" "$dest.tmp"
    # Rename into place so a gateway watching the folder never loads a half-written file.
    mv -f "$dest.tmp" "$dest"
    built+=("$dest")
}

build plugins
for model_dir in plugins/*/; do
    model_dir=${model_dir%/}
    [ -f "$model_dir/Cargo.toml" ] && [ -f "$model_dir/model.toml" ] || continue
    crate=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$model_dir/Cargo.toml" | head -n 1)
    place plugins "$crate" "$model_dir/plugin.wasm"
done

# Python plugins: the SDK runs from this checkout (plugin-sdk/python/src), not from the venv.
python_plugins=()
for model_dir in plugins/*/; do
    model_dir=${model_dir%/}
    [ -f "$model_dir/plugin.py" ] && [ -f "$model_dir/model.toml" ] && python_plugins+=("$model_dir")
done
if [ ${#python_plugins[@]} -gt 0 ] && [ ! -f scripts/plugin-venv.sh ]; then
    # A partial copy of the repository (the Dockerfile's plugins stage copies plugins/ and
    # this script only): the image ships the Rust examples, not the Python toolchain.
    echo "skipping the Python plugins (${python_plugins[*]}): no scripts/plugin-venv.sh here" >&2
elif [ ${#python_plugins[@]} -gt 0 ]; then
    plugin_venv=$(scripts/plugin-venv.sh | tail -n 1)
    for model_dir in "${python_plugins[@]}"; do
        echo "building $model_dir (Python)" >&2
        PYTHONPATH=plugin-sdk/python/src "$plugin_venv/bin/python" -m infergate_sdk.build \
            build -q "$model_dir"
        built+=("$model_dir/plugin.wasm")
    done
fi

# Folders that reuse another folder's files get copies: a model folder only ever reads files
# inside itself (model.toml's paths are confined to it), so they can't name ../digits/...
# (the copies are git-ignored, like every plugin.wasm).
share() {
    local source=$1 dest=$2
    [ -f "$source" ] && [ -d "$(dirname "$dest")" ] || return 0
    cp "$source" "$dest.tmp"
    mv -f "$dest.tmp" "$dest"
    built+=("$dest")
}
share plugins/digits/model.onnx plugins/digits-py/model.onnx
share plugins/digits/plugin.wasm examples/tfserving/plugins/digits/plugin.wasm

report() {
    echo "built:"
    for f in "${built[@]}"; do
        printf '  %8d bytes  %s\n' "$(wc -c < "$f")" "$f"
    done
}

if [ "${1:-}" = --examples ]; then
    report
    exit 0
fi

build tests/plugins
for fixture in echo misbehave pre-only post-only contract-v0-1; do
    place tests/plugins "$fixture" "tests/plugins/wasm/$fixture.wasm"
done

# Python test fixtures (tests/plugins/<fixture>/plugin.py).
for fixture in python-errors; do
    echo "building tests/plugins/$fixture (Python)" >&2
    PYTHONPATH=plugin-sdk/python/src "$(scripts/plugin-venv.sh | tail -n 1)/bin/python" \
        -m infergate_sdk.build build -q -o "tests/plugins/wasm/$fixture.wasm" "tests/plugins/$fixture"
    built+=("tests/plugins/wasm/$fixture.wasm")
done

# Files the gateway must refuse to load, each with a clear error.
printf 'this is not wasm\n' > tests/plugins/wasm/garbage.wasm
built+=(tests/plugins/wasm/garbage.wasm)
printf '\0asm\1\0\0\0' > tests/plugins/wasm/core-module.wasm
built+=(tests/plugins/wasm/core-module.wasm)

report
