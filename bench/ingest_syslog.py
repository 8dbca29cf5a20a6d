"""Syslog lines per second into a RestMQ queue on this machine.

Starts its own redis-server (free loopback port, no persistence) and
``twistd -n restmq-syslogd`` against it, floods the adapter over TCP with
newline-framed RFC 5424 lines from client processes for ``--seconds``, and
counts what reached the queue ``syslogd:127.0.0.1`` in Redis. The figure is
lines stored in Redis divided by the time from the first line sent to the
last one stored. Everything it starts is stopped at the end; the run is
bounded by ``--seconds`` plus ``--drain-timeout``.

    .venv/bin/python bench/ingest_syslog.py [--seconds 10] [--clients 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from restmq.server.redisproc import find_redis_server  # noqa: E402

QUEUE_LIST = b"syslogd:127.0.0.1:queue"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Redis:
    """Just enough RESP for PING and LLEN."""

    def __init__(self, port: int) -> None:
        self.conn = socket.create_connection(("127.0.0.1", port), timeout=5)

    def command(self, *words: bytes) -> bytes:
        self.conn.sendall(b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words))
        reply = b""
        while not reply.endswith(b"\r\n"):
            reply += self.conn.recv(4096)
        return reply

    def llen(self, key: bytes) -> int:
        return int(self.command(b"LLEN", key)[1:-2])

    def close(self) -> None:
        self.conn.close()


def listening(port: int) -> bool:
    socket.create_connection(("127.0.0.1", port), timeout=1).close()
    return True


def wait_for(what: str, check, timeout: float, proc: Optional[subprocess.Popen] = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise SystemExit("bench: %s exited early" % what)
        if time.monotonic() > deadline:
            raise SystemExit("bench: %s did not come up within %.0f s" % (what, timeout))
        time.sleep(0.05)


def client(port: int, seconds: float, line_bytes: int, max_lines: int, index: int, sent) -> None:
    """One sender: newline-framed RFC 5424 lines, as fast as the socket takes them."""
    head = b"<13>1 2024-01-01T00:00:00.000000+00:00 benchhost bench %d - - " % index
    lines_per_write = 100
    conn = socket.create_connection(("127.0.0.1", port))
    count = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and count < max_lines:
        chunk = []
        for n in range(count, count + lines_per_write):
            body = b"line %09d " % n
            chunk.append(head + body + b"x" * max(0, line_bytes - len(head) - len(body)) + b"\n")
        conn.sendall(b"".join(chunk))
        count += lines_per_write
    conn.close()
    sent.value = count


def machine() -> str:
    model = "unknown cpu"
    try:
        with open("/proc/cpuinfo") as info:
            for row in info:
                if row.startswith("model name"):
                    model = row.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = " ".join("%.2f" % x for x in os.getloadavg())
    memory = ""
    try:
        with open("/proc/meminfo") as info:
            memory = "%.1f GiB RAM" % (int(info.readline().split()[1]) / 1024 / 1024)
    except OSError:
        pass
    return "%s, %d cores, %s, %s, Python %s, load average before the run %s" % (
        model, os.cpu_count() or 0, memory, platform.platform(terse=True), platform.python_version(), load)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench/ingest_syslog.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the clients send [10]")
    parser.add_argument("--clients", type=int, default=2, help="client processes, one connection each [2]")
    parser.add_argument("--line-bytes", type=int, default=200, help="bytes per syslog line [200]")
    parser.add_argument("--max-lines", type=int, default=2_000_000, help="cap per client [2000000]")
    parser.add_argument("--drain-timeout", type=float, default=60.0,
                        help="longest wait for the sent lines to reach Redis [60]")
    args = parser.parse_args(argv)

    redis_port, syslog_port = free_port(), free_port()
    workdir = tempfile.mkdtemp(prefix="restmq-bench-syslog-")
    redis = subprocess.Popen(
        [find_redis_server(), "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    syslogd: Optional[subprocess.Popen] = None
    log_path = os.path.join(workdir, "syslogd.log")
    try:
        wait_for("redis-server", lambda: Redis(redis_port).command(b"PING") == b"+PONG\r\n", 10, redis)
        with open(log_path, "wb") as log:
            syslogd = subprocess.Popen(
                [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--pidfile=",
                 "-n", "restmq-syslogd", "--port", str(syslog_port),
                 "--redis", "redis://127.0.0.1:%d/0" % redis_port],
                cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=log, stderr=subprocess.STDOUT)
        wait_for("restmq-syslogd", lambda: listening(syslog_port), 20, syslogd)
        counter = Redis(redis_port)
        print("machine: %s" % machine())
        print("sending for %.0f s from %d client process(es), %d-byte lines, TCP newline framing"
              % (args.seconds, args.clients, args.line_bytes))

        sent = [multiprocessing.Value("q", 0) for _ in range(args.clients)]
        clients = [multiprocessing.Process(target=client, args=(syslog_port, args.seconds, args.line_bytes,
                                                                args.max_lines, i, sent[i]))
                   for i in range(args.clients)]
        started = time.monotonic()
        for process in clients:
            process.start()
        samples = []
        while any(process.is_alive() for process in clients):
            time.sleep(1.0)
            samples.append((time.monotonic() - started, counter.llen(QUEUE_LIST)))
        for process in clients:
            process.join()
        send_done = time.monotonic() - started
        total = sum(value.value for value in sent)

        deadline = time.monotonic() + args.drain_timeout
        stored = counter.llen(QUEUE_LIST)
        while stored < total and time.monotonic() < deadline:
            time.sleep(0.02)
            stored = counter.llen(QUEUE_LIST)
        elapsed = time.monotonic() - started
        counter.close()

        for at, count in samples:
            print("  t=%5.1f s  stored %9d" % (at, count))
        print("sent %d lines in %.2f s; %d stored in Redis after %.2f s"
              % (total, send_done, stored, elapsed))
        if stored < total:
            print("bench: only %d of %d lines reached Redis within the drain timeout" % (stored, total))
            return 1
        print("RESULT: %.0f syslog lines/s into one queue (stored in Redis / time to store)"
              % (stored / elapsed))
        return 0
    finally:
        if syslogd is not None and syslogd.poll() is None:
            syslogd.send_signal(signal.SIGTERM)
            try:
                syslogd.wait(timeout=30)
            except subprocess.TimeoutExpired:
                syslogd.kill()
                syslogd.wait()
        redis.terminate()
        redis.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
