#!/usr/bin/env python3
"""Connection-layer abuse against a real `infergate serve`, before/after numbers for the HTTP
edges (issue 14 §3). Not part of the test command (tests/edges.rs asserts the behaviour);
this measures how long abusive connections are held and whether clients stay served.

    bench/edges.py [--binary target/debug/infergate] [--slowloris 200] [--silent 1124]

slowloris: N connections each send one header byte per second; reports how many the
gateway still holds at 10 s, 20 s, 40 s and when the last one was closed.
silent: the gateway runs with RLIMIT_NOFILE 1024 (`ulimit -n` in its shell); N connections
are opened and send nothing; then real clients ask for /healthz, and the script counts
answered requests and `accept failed` log lines.
"""

import argparse
import os
import resource
import select
import socket
import subprocess
import sys
import tempfile
import time


def start(binary, nofile=None, server_lines=""):
    tmp = tempfile.mkdtemp(prefix="infergate-edges-")
    os.makedirs(os.path.join(tmp, "plugins"))
    config = os.path.join(tmp, "gateway.toml")
    with open(config, "w") as f:
        f.write(
            '[server]\nlisten = "127.0.0.1:0"\nadmin_listen = "127.0.0.1:0"\n'
            + server_lines
            + '\n[plugins]\ndir = "plugins"\nwatch = "off"\ncache_dir = ""\n'
        )
    log = open(os.path.join(tmp, "stderr.log"), "w")
    cmd = [binary, "serve", "--config", config]
    if nofile:
        cmd = ["bash", "-c", f'ulimit -n {nofile} && exec "$@"', "infergate"] + cmd
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    addr = None
    while addr is None:
        line = proc.stdout.readline()
        if not line:
            sys.exit("gateway exited before listening")
        if line.startswith("infergate listening on http://"):
            host, port = line.strip().rsplit("/", 1)[1].split(":")
            addr = (host, int(port))
    return proc, addr, os.path.join(tmp, "stderr.log")


def slowloris(binary, n, server_lines):
    proc, addr, _ = start(binary, server_lines=server_lines)
    head = b"POST /v1/models/m:predict HTTP/1.1\r\nhost: x\r\nx-slow: " + b"a" * 200
    socks = []
    for _ in range(n):
        s = socket.create_connection(addr)
        s.setblocking(False)
        socks.append(s)
    began = time.monotonic()
    open_at = {}
    sent = 0
    alive = set(range(n))
    while alive and time.monotonic() - began < 45:
        for i in list(alive):
            try:
                socks[i].send(head[sent % len(head) : sent % len(head) + 1])
            except OSError:
                alive.discard(i)
        # A closed connection reads as EOF (or a reset).
        readable, _, _ = select.select([socks[i] for i in alive], [], [], 0)
        for s in readable:
            try:
                if s.recv(4096) == b"":
                    alive.discard(socks.index(s))
            except OSError:
                alive.discard(socks.index(s))
        sent += 1
        elapsed = time.monotonic() - began
        for mark in (10, 20, 40):
            if elapsed >= mark and mark not in open_at:
                open_at[mark] = len(alive)
        time.sleep(1)
    last = time.monotonic() - began
    proc.terminate()
    proc.wait()
    print(
        f"slowloris {n}: held at 10 s {open_at.get(10, 0)}, 20 s {open_at.get(20, 0)}, "
        f"40 s {open_at.get(40, 0)}; {'all closed after' if not alive else 'still held at'} "
        f"{last:.0f} s"
    )


def healthz(addr, timeout=3):
    try:
        s = socket.create_connection(addr, timeout=timeout)
        s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = s.recv(4096)
        s.close()
        return data.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def silent(binary, n, server_lines):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 512), hard))
    proc, addr, log = start(binary, nofile=1024, server_lines=server_lines)
    socks = []
    for _ in range(n):
        try:
            socks.append(socket.create_connection(addr, timeout=2))
        except OSError:
            break
    time.sleep(2)
    answered = sum(healthz(addr) for _ in range(20))
    proc.terminate()
    proc.wait()
    for s in socks:
        s.close()
    with open(log) as f:
        lines = f.read().splitlines()
    accept_failed = sum("accept failed" in l for l in lines)
    print(
        f"silent {n} (RLIMIT_NOFILE 1024): {len(socks)} connected, "
        f"{answered}/20 health checks answered, {accept_failed} `accept failed` log lines"
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", default="target/debug/infergate")
    p.add_argument("--slowloris", type=int, default=200)
    p.add_argument("--silent", type=int, default=1124)
    p.add_argument("--server", default="", help="extra [server] lines")
    a = p.parse_args()
    if a.slowloris:
        slowloris(a.binary, a.slowloris, a.server)
    if a.silent:
        silent(a.binary, a.silent, a.server)


if __name__ == "__main__":
    main()
