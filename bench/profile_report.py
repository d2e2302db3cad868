#!/usr/bin/env python3
"""Turns a `perf script` of the gateway into "where each microsecond goes": every sample is
put in one part of the request path by its call stack, and the shares of samples are scaled
to the gateway's measured CPU time per request (from the `.window` file bench/compare.rs
writes beside the profile).

  perf script -i digits.perf.data | python3 bench/profile_report.py digits.window

A sample belongs to the innermost frame (leaf first) that names a part: guest code of a
plugin, the wasmtime host (split into instantiation, teardown and the rest by what the stack
is doing), the gRPC client, the batcher, REST JSON, the HTTP/1 server, the pipeline. Samples
with no such frame are the runtime's own (tokio's scheduler and I/O driver, the allocator in
between) or other. A second table sorts the same samples by what the leaf is (kernel, the
allocator, memcpy/memset, wasm, the rest), whoever called it.
"""

import re
import sys
from collections import Counter

PARTS = [
    # (part, pattern on a frame's symbol); the first part whose pattern matches the
    # innermost matching frame wins.
    ("gRPC client (tonic, h2, prost)", re.compile(
        r"^(tonic|h2|prost|tower|hyper::proto::h2|hyper::client|hyper_util::client)::"
        r"|infergate::backend|<tonic|<h2|<prost|<hyper::proto::h2")),
    ("batcher (queue, concat, split)", re.compile(r"infergate::batch")),
    ("REST JSON (parse, render)", re.compile(r"serde_json|infergate::rest")),
    ("HTTP/1 server (hyper, ingress)", re.compile(
        r"hyper::proto::h1|hyper::server|hyper_util::server|infergate::server"
        r"|infergate::ingress|<hyper::proto::h1|hyper::body|httparse")),
    ("pipeline, metrics, tracing", re.compile(
        r"infergate::pipeline|infergate::metrics|infergate::reply|prometheus|tracing")),
]

WASMTIME = re.compile(r"wasmtime|cranelift|infergate::plugin|wit_bindgen|wasi")
GUEST = re.compile(r"^wasm\[|^wasm-function|jit_|^\[unknown\]$")


def plugin_part(stack):
    whole = " ".join(stack)
    if re.search(r"drop_in_place<wasmtime::runtime::store|StoreOpaque.*drop|"
                 r"deallocate|decommit|pagemap", whole, re.I):
        return "plugin: store teardown"
    if "instantiate" in whole:
        return "plugin: instantiate"
    return "plugin: host calls, WASI, bindings, copies"


def classify(frames):
    syms = [sym for sym, _ in frames]
    for sym, dso in frames:
        if GUEST.search(sym) or dso.startswith("perf-") or dso == "[JIT] tid":
            return "plugin: guest code (wasm)"
        if WASMTIME.search(sym):
            return plugin_part(syms)
        for part, pattern in PARTS:
            if pattern.search(sym):
                return part
    if any("tokio" in s for s in syms):
        return "tokio runtime (scheduler, I/O driver, timers)"
    return "other"


def leaf_kind(frames):
    sym, dso = frames[0]
    if dso.startswith("[kernel") or dso == "[vdso]":
        return "kernel (syscalls: loopback TCP, futex, epoll)"
    # glibc's (`_int_*`, arenas, tcache) and mimalloc's (`mi_*`, `_mi_*`), the binary's.
    if re.search(r"malloc|free|realloc|calloc|cfree|_int_|arena|tcache|^_?mi_", sym):
        return "allocator (malloc/free)"
    if re.search(r"memcpy|memmove|memset|memcmp", sym):
        return "memcpy / memset"
    if GUEST.search(sym) or dso.startswith("perf-"):
        return "wasm guest code"
    return "user code (gateway, libraries)"


def samples(stream):
    """(frames) per sample of `perf script`'s default output: a header line, then one
    indented `addr symbol (dso)` line per frame, leaf first, then a blank line."""
    frames = []
    for line in stream:
        if not line.strip():
            if frames:
                yield frames
            frames = []
            continue
        if not line[0].isspace():
            frames = []
            continue
        m = re.match(r"\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$", line)
        if not m:
            continue
        sym = re.sub(r"\+0x[0-9a-f]+$", "", m.group(1))
        dso = m.group(2).rsplit("/", 1)[-1]
        frames.append((sym, dso))
    if frames:
        yield frames


def main():
    window = dict(
        line.split("=", 1) for line in open(sys.argv[1]).read().split() if "=" in line
    )
    per_request = float(window["server_cpu_us_per_request"])
    parts, kinds = Counter(), Counter()
    for frames in samples(sys.stdin):
        parts[classify(frames)] += 1
        kinds[leaf_kind(frames)] += 1
    total = sum(parts.values())
    if not total:
        sys.exit("no samples in the perf script")
    print(f"{total} samples; {per_request:.0f} µs of gateway CPU per request over "
          f"{window['requests']} requests at c={window['concurrency']}\n")
    for title, counts in (("part of the request path", parts), ("leaf", kinds)):
        print(f"| {title} | share | µs/request |")
        print("|---|--:|--:|")
        for name, n in counts.most_common():
            print(f"| {name} | {100 * n / total:.1f}% | {per_request * n / total:.1f} |")
        print()


if __name__ == "__main__":
    main()
