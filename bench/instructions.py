"""Instructions a server spends per request, counted by valgrind's callgrind: a
measure that a loaded machine does not disturb (wall-clock figures on shared cores do).

Run as ``python -m bench.instructions [--kinds post,bare,rr,bare-rr,longpoll] [--requests N]``
(Debian's ``valgrind``). Each kind starts its own server under callgrind against a
redis-server of its own, warms it, zeroes the counters, sends the same requests one at
a time and reads the instructions the server executed:

``post``      ``POST /q/bench`` with the small message (RestMQ)
``post-workers``  the same on a server that keeps its metrics in prometheus_client's
              multiprocess files, as each worker of ``restmq --workers N`` does
``bare``      ``POST /form`` of the bare Cyclone app (bench/bare.py), the same body
``rr``        ``POST /q/rr`` of a JSON array of 100 messages to a round-robin queue
              with 10 SSE subscribers; per message
``bare-rr``   the same to the bare app's ``/pub/rr``; per message
``longpoll``  one publish to a long-poll already waiting on the same process; per
              round (the GET, the POST, the delivery)

Timers (the safety sweep, idle deadlines) run by the clock, so the counts vary by a
percent or so; the ratio of two kinds is what to read.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List

from bench.loads import SMALL_MESSAGE, _connect, longpoll_latency, post_on
from bench.procs import ROOT, BenchError, Procs, free_port

__all__ = ["count"]

KINDS = ("post", "post-workers", "bare", "rr", "bare-rr", "longpoll")
_BATCH = ("[" + ",".join(['"%s"' % SMALL_MESSAGE] * 100) + "]").encode()


def _server_argv(kind: str, port: int, sock: str) -> List[str]:
    if kind.startswith("bare"):
        return [sys.executable, "-m", "bench.bare", "--port", str(port), "--redis", sock]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--pidfile=",
            "-n", "restmq", "--port", str(port), "--redis", "unix://" + sock]


def _streams(port: int, path: str, count: int) -> None:
    """``count`` SSE subscribers of ``path``, read (and dropped) by a thread."""
    socks = []
    for _ in range(count):
        sock = _connect(port)
        sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
                      % path).encode())
        socks.append(sock)

    def drain() -> None:
        while True:
            for sock in select.select(socks, [], [], 1.0)[0]:
                if not sock.recv(1 << 20):
                    return

    threading.Thread(target=drain, daemon=True).start()


def count(kind: str, requests: int, workdir: str, sock: str) -> float:
    """Instructions per request (per message for the round-robin kinds) of ``kind``."""
    port = free_port()
    out = os.path.join(workdir, "callgrind-%s.out" % kind)
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if kind == "post-workers":
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="metrics-", dir=workdir)
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=" + out]
        + _server_argv(kind, port, sock), cwd=ROOT,
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                client = _connect(port)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise BenchError("%s did not start under valgrind" % kind) from None
                time.sleep(0.5)
        form = b"value=" + SMALL_MESSAGE.encode()
        path = "/form" if kind.startswith("bare") else "/q/bench"
        for _ in range(50):
            post_on(client, port, path, form)
        if kind in ("rr", "bare-rr"):
            post_on(client, port, "/p/rr", b"policy=roundrobin")
            _streams(port, "/sse/rr" if kind == "bare-rr" else "/c/rr", 10)
            time.sleep(3)

        def load() -> None:
            if kind == "longpoll":
                longpoll_latency(port, "/q/lp?wait=10", port, "/q/lp", requests, warm=0, settle=0.05)
            elif kind in ("rr", "bare-rr"):
                target = "/pub/rr" if kind == "bare-rr" else "/q/rr"
                for _ in range(requests):
                    post_on(client, port, target, _BATCH, "application/json")
            else:
                for _ in range(requests):
                    post_on(client, port, path, form)

        load()  # warm, not counted
        subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], capture_output=True)
        load()
        subprocess.run(["callgrind_control", "-z", str(server.pid)], capture_output=True)
        load()
        subprocess.run(["callgrind_control", "-d", str(server.pid)], capture_output=True)
        time.sleep(1.0)
    finally:
        server.terminate()
        server.wait()
    total = None
    for dump in sorted(glob.glob(out + ".*")):
        with open(dump, errors="replace") as f:
            for line in f:
                found = re.match(r"(?:summary|totals): (\d+)", line)
                if found:
                    total = int(found.group(1))
                    break
    if total is None:
        raise BenchError("no callgrind dump for %s" % kind)
    return total / requests / (100 if kind in ("rr", "bare-rr") else 1)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--requests", type=int, default=300, help="counted requests per kind")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.stderr.write("valgrind not installed (Debian package valgrind)\n")
        return 1
    workdir = tempfile.mkdtemp(prefix="restmq-instr-")
    procs = Procs(workdir)
    found: Dict[str, float] = {}
    try:
        redis = procs.redis()
        for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
            if kind not in KINDS:
                sys.stderr.write("unknown kind %s; choose from %s\n" % (kind, ", ".join(KINDS)))
                return 2
            requests = max(10, args.requests // (3 if kind == "longpoll" else 1))
            found[kind] = count(kind, requests, workdir, redis.sock)
            unit = "message" if kind in ("rr", "bare-rr") else "round" if kind == "longpoll" else "request"
            print("%-9s %10.0f instructions per %s" % (kind, found[kind], unit), flush=True)
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    for ours, theirs in (("post", "bare"), ("post-workers", "bare"), ("rr", "bare-rr")):
        if ours in found and theirs in found:
            print("%s vs %s: %.2f (bare / RestMQ: the rate the same cores would give)"
                  % (ours, theirs, found[theirs] / found[ours]))
    if "post" in found and "post-workers" in found:
        print("post vs post-workers: %.2f (what a worker's request costs against one process's)"
              % (found["post-workers"] / found["post"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
