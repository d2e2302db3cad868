#!/usr/bin/env bash
# Coverage-guided fuzzing (fuzz/: cargo-fuzz, libFuzzer) of the parsers a client, a backend,
# a plugin or an operator controls. Never part of the test command: it needs a nightly
# toolchain and instruments (and so rebuilds) everything, wasmtime included.
#
#   scripts/fuzz.sh TARGET|all [SECONDS]   run each target SECONDS (default 60), then print
#                                          execs, execs/s, corpus size and findings per target
#   scripts/fuzz.sh cmin TARGET|all        minimize fuzz/corpus/<target> into fuzz/seeds/<target>
#                                          (the committed seeds: a set cover of its edges, no
#                                          hit counts, so a few hundred files), files <= 4 KiB
#   scripts/fuzz.sh seed TARGET|all        only (re)seed fuzz/corpus/<target>; no nightly needed
#   scripts/fuzz.sh list                   the targets
#
# Each run works in fuzz/corpus/<target> (not committed), seeded from fuzz/seeds/<target> and
# from the repository's real inputs: the JSON bodies in tests/ and src/, the samples' JSON,
# model.toml and gateway.toml files, the URL paths the tests use, and the recorded TF Serving
# messages in tests/fixtures/wire/. A crash, leak, timeout or OOM leaves its input in
# fuzz/artifacts/<target>/; `cargo +nightly fuzz tmin <target> <file>` shrinks it, and its
# regression test goes into the normal suite (tests/fuzz_corpus.rs replays fuzz/regressions/).
#
# Env: FUZZ_JOBS (parallel targets with `all`, default 1), FUZZ_NICE (default 10),
# FUZZ_SANITIZER (address, the default, or none: several times the execs/s and a cold build of
# 12 minutes instead of 46, for long runs; allocations stay bounded by -rss_limit_mb, and debug
# assertions still catch overflowing size arithmetic), FUZZ_ARGS (extra libFuzzer flags, e.g.
# -runs=N to stop at N executions).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(rest_json tensor_proto config_toml url_path plugin_output)
# The same flags for build and run, so a run never rebuilds: optimized, with debug
# assertions (overflow checks catch size arithmetic), AddressSanitizer unless told otherwise
# (cargo-fuzz's default; it also enforces -malloc_limit_mb on each allocation).
SANITIZER="${FUZZ_SANITIZER:-address}"
case "$SANITIZER" in
    address | none) ;;
    *)
        echo "FUZZ_SANITIZER is address or none, not $SANITIZER" >&2
        exit 2
        ;;
esac
BUILD_FLAGS=(-O --debug-assertions --sanitizer "$SANITIZER")
# libFuzzer's per-allocation cap needs the sanitizer's allocator hooks; without them the
# whole-process -rss_limit_mb is the bound.
MALLOC_LIMIT=()
if [ "$SANITIZER" = address ]; then
    MALLOC_LIMIT=(-malloc_limit_mb=2048)
fi
NICE="${FUZZ_NICE:-10}"

usage() {
    sed -n '6,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

targets_of() {
    case "$1" in
        all) printf '%s\n' "${TARGETS[@]}" ;;
        *)
            printf '%s\n' "${TARGETS[@]}" | grep -qx "$1" || {
                echo "unknown target $1; targets: ${TARGETS[*]}" >&2
                exit 2
            }
            echo "$1"
            ;;
    esac
}

need_nightly() {
    cargo +nightly fuzz --version >/dev/null 2>&1 || {
        echo "needs a nightly toolchain and cargo-fuzz:" >&2
        echo "  rustup toolchain install nightly && cargo install cargo-fuzz" >&2
        exit 1
    }
}

# Writes stdin to $1/<sha1 of the content>, as libFuzzer names corpus files (so reseeding
# adds nothing twice).
put() {
    local dir=$1 tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [ -s "$tmp" ]; then
        mv "$tmp" "$dir/$(sha1sum "$tmp" | cut -c1-40)"
    else
        rm -f "$tmp"
    fi
}

# The real inputs for one target, into its corpus folder.
seed() {
    local target=$1 dir=fuzz/corpus/$1 f
    mkdir -p "$dir"
    if [ -d "fuzz/seeds/$target" ]; then
        cp -n fuzz/seeds/"$target"/* "$dir"/ 2>/dev/null || true
    fi
    case "$target" in
        rest_json)
            # One-line raw-string bodies in the tests, and every JSON file that is small.
            grep -ohE 'r#"\{.*\}"#' tests/*.rs src/*.rs src/*/*.rs 2>/dev/null |
                sed -E 's/^r#"//; s/"#$//' | sort -u | while IFS= read -r body; do
                printf '%s' "$body" | put "$dir"
            done
            find plugins templates docs tests -name '*.json' -size -16k -not -path '*/target/*' |
                while read -r f; do put "$dir" <"$f"; done
            ;;
        tensor_proto)
            for f in tests/fixtures/wire/*.bin; do put "$dir" <"$f"; done
            ;;
        config_toml)
            # The first byte picks the parser: odd model.toml, even gateway.toml.
            find plugins templates examples deploy tests -name model.toml -not -path '*/target/*' |
                while read -r f; do { printf '1'; cat "$f"; } | put "$dir"; done
            for f in tests/config/model/*.toml; do { printf '1'; cat "$f"; } | put "$dir"; done
            for f in gateway.toml deploy/*/gateway*.toml deploy/k8s/base/gateway.toml \
                examples/*/gateway.toml tests/config/gateway/*.toml; do
                [ -f "$f" ] && { printf '0'; cat "$f"; } | put "$dir"
            done
            ;;
        url_path)
            # The first byte picks the method: 0 GET, 1 POST (see fuzz/src/lib.rs).
            grep -ohE '"/v[12]/[^"{}]*"' tests/*.rs src/*.rs src/*/*.rs 2>/dev/null |
                tr -d '"' | sort -u | while IFS= read -r path; do
                printf '\0%s' "$path" | put "$dir"
                printf '\1%s' "$path" | put "$dir"
            done
            ;;
        plugin_output) ;; # fuzz/seeds/plugin_output only: its bytes are an encoding of its own
    esac
}

run_one() {
    local target=$1 secs=$2 log=fuzz/artifacts/$1.log before after findings execs rate size
    mkdir -p "fuzz/artifacts/$target"
    seed "$target"
    before=$(find "fuzz/artifacts/$target" -type f | sort)
    # -rss_limit_mb / -malloc_limit_mb: an input that makes a parser allocate past 2 GiB is
    # a finding (every size a peer controls is meant to be checked first).
    # shellcheck disable=SC2086
    nice -n "$NICE" cargo +nightly fuzz run "${BUILD_FLAGS[@]}" "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        "${MALLOC_LIMIT[@]}" -max_len=8192 -close_fd_mask=3 ${FUZZ_ARGS:-} \
        >"$log" 2>&1 || true
    after=$(find "fuzz/artifacts/$target" -type f | sort)
    findings=$(comm -13 <(echo "$before") <(echo "$after") | sed 's|.*/||' | tr '\n' ' ')
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
    size=$(find "fuzz/corpus/$target" -type f | wc -l)
    printf '%-14s %6ss %12s %9s %8s  %s\n' "$target" "$secs" "${execs:-?}" "${rate:-?}" \
        "$size" "${findings:-none}"
    if [ -z "$execs" ]; then
        echo "  (no final stats: see $log)" >&2
    fi
    [ -z "$findings" ] # a finding fails the run, so no script or job overlooks it
}

cmd=${1:-}
case "$cmd" in
    "" | -h | --help) usage ;;
    list) printf '%s\n' "${TARGETS[@]}" ;;
    seed) for target in $(targets_of "${2:-}"); do seed "$target"; done ;;
    __one) run_one "$2" "$3" ;; # one target of a parallel `all`
    cmin)
        need_nightly
        for target in $(targets_of "${2:-}"); do
            tmp=$(mktemp -d)
            nice -n "$NICE" cargo +nightly fuzz cmin "${BUILD_FLAGS[@]}" "$target" \
                "fuzz/corpus/$target" -- -max_len=4096 -set_cover_merge=1 -use_counters=0 \
                >"fuzz/artifacts/$target.cmin.log" 2>&1
            find "fuzz/corpus/$target" -type f -size -4097c -exec cp {} "$tmp"/ \;
            rm -rf "fuzz/seeds/$target"
            mkdir -p "fuzz/seeds/$target"
            cp "$tmp"/* "fuzz/seeds/$target"/ 2>/dev/null || true
            rm -rf "$tmp"
            echo "$target: $(find "fuzz/seeds/$target" -type f | wc -l) seeds"
        done
        ;;
    *)
        need_nightly
        mapfile -t run < <(targets_of "$cmd")
        secs=${2:-60}
        mkdir -p fuzz/artifacts
        nice -n "$NICE" cargo +nightly fuzz build "${BUILD_FLAGS[@]}" >&2
        printf '%-14s %7s %12s %9s %8s  %s\n' target time execs execs/s corpus findings
        if [ "${FUZZ_JOBS:-1}" -gt 1 ]; then
            printf '%s\n' "${run[@]}" | xargs -P "$FUZZ_JOBS" -I{} "$0" __one {} "$secs"
        else
            status=0
            for target in "${run[@]}"; do run_one "$target" "$secs" || status=1; done
            exit "$status"
        fi
        ;;
esac
