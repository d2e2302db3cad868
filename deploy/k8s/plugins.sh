#!/usr/bin/env bash
# Puts each example plugin's component (plugins/<model>/plugin.wasm) beside the Kubernetes
# model.toml of the same model (deploy/k8s/base/plugins/<model>/), where the base's
# configMapGenerator reads it: kustomize loads files only from inside the kustomization's
# folder. Builds the components first (scripts/build-plugins.sh --examples) unless --no-build.
# Run it before `kubectl apply -k deploy/k8s/overlays/…` and after changing a plugin.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "${1:-}" != --no-build ]; then
    scripts/build-plugins.sh --examples >&2
fi

for dir in deploy/k8s/base/plugins/*/; do
    model=$(basename "$dir")
    # A folder of your own, not built from this repository: its plugin.wasm is yours to put.
    [ -f "plugins/$model/Cargo.toml" ] || continue
    src="plugins/$model/plugin.wasm"
    if [ ! -f "$src" ]; then
        echo "$src is missing: build it with scripts/build-plugins.sh --examples" >&2
        exit 1
    fi
    # Rename into place: never a half-copied file for a concurrent render to read.
    cp "$src" "$dir/plugin.wasm.tmp"
    mv -f "$dir/plugin.wasm.tmp" "$dir/plugin.wasm"
    printf '%8d bytes  %s\n' "$(wc -c < "$dir/plugin.wasm")" "$dir"plugin.wasm
done
