"""What a hostile client and a big queue cost the broker (issue 11's figures).

    .venv/bin/python -m bench.hostile [--only purge,redrive,trim,stats,pipeline,websocket,connections,restart]
                                      [--messages 1000000] [--root DIR]

Starts its own redis-server (unix socket, no persistence) and ``twistd -n
restmq`` against it from ``--root`` (this checkout by default; another
exported commit measures "before"), and prints one line per figure:

purge / redrive / stats
    A queue of ``--messages`` messages purged with ``DELETE /q/big``, half as
    many dead letters redriven, ``/stats/`` and ``/metrics`` over 30,000
    queues: the HTTP status and answer, the wall time, and the longest single
    Redis call meanwhile, from SLOWLOG (every command is logged) and from a
    PING sent every millisecond on a connection of its own.
trim
    ``maxlen=10, overflow=drop_oldest`` set on a queue of a tenth of
    ``--messages``, then 20 publishes: how many messages are left and the
    longest Redis call, measured the same way.
pipeline / websocket
    The broker's RSS before and after a client that never reads pipelines 78 KB
    of ``GET /openapi.json``, 8.8 MB of requests for an unknown route, and
    WebSocket pings and bad commands.
connections
    21,000 idle connections from one address (two client processes): the
    broker's RSS, how many it holds, and whether another client is served.
restart
    ``kill -9`` of the embedded redis-server: seconds until ``/health/ready``
    answers 200 and a publish is acknowledged again.

The machine's other load is not controlled: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import base64
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Callable, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import redis  # noqa: E402  (bench/requirements.txt)

from restmq.server.redisproc import find_redis_server  # noqa: E402

PHASES = ("purge", "redrive", "trim", "stats", "pipeline", "websocket", "connections", "restart")


def _say(text: str) -> None:
    sys.stderr.write("[hostile %s] %s\n" % (time.strftime("%H:%M:%S"), text))
    sys.stderr.flush()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def raise_nofile(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def http(port: int, method: str, path: str, body: Optional[bytes] = None,
         timeout: float = 600) -> Tuple[int, bytes]:
    # the JSON dialect (any other Accept gets the original RestMQ's answers)
    request = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=body, method=method,
                                     headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class Broker:
    """``twistd -n restmq`` from ``root``, on a free port."""

    def __init__(self, root: str, workdir: str, args: List[str]) -> None:
        self.port = free_port()
        self.log_path = os.path.join(workdir, "broker-%d.log" % self.port)
        env = dict(os.environ, PYTHONPATH=root)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--pidfile=", "-n",
                 "restmq", "--port", str(self.port), *args],
                cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen("http://127.0.0.1:%d/health" % self.port, timeout=2).read()
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the broker did not start; see %s" % self.log_path)
                time.sleep(0.05)

    @property
    def rss(self) -> float:
        return rss_mb(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class RedisServer:
    def __init__(self, workdir: str) -> None:
        self.path = os.path.join(workdir, "redis.sock")
        self.proc = subprocess.Popen(
            [find_redis_server(), "--port", "0", "--unixsocket", self.path, "--save", "",
             "--appendonly", "no", "--dir", workdir, "--slowlog-max-len", "100000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis(unix_socket_path=self.path)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    @property
    def url(self) -> str:
        return "unix://" + self.path

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Probe:
    """The longest single Redis call while ``run`` lasts: SLOWLOG (every command
    logged) and a PING every millisecond on a connection of its own."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server

    def measure(self, run: Callable[[], object]) -> Tuple[object, float, float, str, float]:
        """Run ``run``; (its result, longest script call ms, longest PING ms, how the
        script calls spread, wall seconds)."""
        client = self.server.client
        # SLOWLOG keeps every call over 1 ms (the commands a script makes are logged
        # too, so a lower threshold would flood it); INFO commandstats counts them all
        client.config_set("slowlog-log-slower-than", 1000)
        client.slowlog_reset()
        client.config_resetstat()
        pinger = redis.Redis(unix_socket_path=self.server.path)
        worst = [0.0]
        stop = threading.Event()

        def ping() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                while True:
                    try:
                        pinger.ping()
                        break
                    except redis.exceptions.ResponseError:
                        # BUSY: a script ran past lua-time-limit; Redis is still blocked
                        time.sleep(0.001)
                worst[0] = max(worst[0], time.perf_counter() - started)
                time.sleep(0.001)

        thread = threading.Thread(target=ping, daemon=True)
        thread.start()
        started = time.perf_counter()
        result = run()
        wall = time.perf_counter() - started
        stop.set()
        thread.join()
        while True:
            try:
                entries = client.slowlog_get(100000)
                stats = client.info("commandstats")
                break
            except redis.exceptions.ResponseError:
                time.sleep(0.01)
        client.config_set("slowlog-log-slower-than", 10000)
        slow = sorted(e["duration"] / 1000.0 for e in entries
                      if e["command"].split(b" ")[0].upper() in (b"EVAL", b"EVALSHA"))
        calls = sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_eval", "cmdstat_evalsha"))
        usec = sum(stats.get(name, {}).get("usec", 0) for name in ("cmdstat_eval", "cmdstat_evalsha"))
        # the machine is shared: a call preempted by the kernel looks long, so say how
        # the calls spread, not only the longest
        spread = "%d script calls, mean %.2f ms, %d over 10 ms" % (
            calls, usec / 1000.0 / max(calls, 1), sum(1 for d in slow if d > 10))
        return result, (slow[-1] if slow else 0.0), worst[0] * 1000.0, spread, wall


def _fill(client: redis.Redis, queue: str, count: int) -> None:
    """``count`` messages in ``queue`` as RestMQ lays them out, 50,000 per setup call."""
    script = client.register_script("""
        local q, first, last = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
        for n = first, last do
          local key = q .. ':' .. n
          redis.call('SET', key, 'message ' .. n)
          redis.call('LPUSH', q .. ':queue', key)
        end
        redis.call('SET', q .. ':UUID', last)
        redis.call('SADD', 'QUEUESET', q)
        return last""")
    for first in range(1, count + 1, 50000):
        script(args=[queue, first, min(first + 49999, count)])


def phase_redis(args: argparse.Namespace, workdir: str, which: str) -> List[str]:
    server = RedisServer(workdir)
    broker = Broker(args.root, workdir, ["--redis", server.url, "--redis-pool", "4"])
    probe = Probe(server)
    lines = []
    try:
        if which == "purge":
            _fill(server.client, "big", args.messages)
            (status, body), call, ping, command, wall = probe.measure(
                lambda: http(broker.port, "DELETE", "/q/big"))
            lines.append("purge of %d messages: %d %s in %.2f s; longest Redis call %.1f ms (%s), "
                         "longest PING %.1f ms" % (args.messages, status, body.decode()[:80], wall, call,
                                                   command, ping))
        elif which == "redrive":
            count = args.messages // 2
            _fill(server.client, "big:dead", count)
            (status, body), call, ping, command, wall = probe.measure(
                lambda: http(broker.port, "POST", "/q/big/redrive", b""))
            lines.append("redrive of %d dead letters: %d %s in %.2f s; longest Redis call %.1f ms (%s), "
                         "longest PING %.1f ms"
                         % (count, status, body.decode()[:80], wall, call, command, ping))
        elif which == "trim":
            # maxlen lowered under a long queue with overflow=drop_oldest: the publishes
            # after it drop the oldest messages
            count = args.messages // 10
            _fill(server.client, "big", count)
            http(broker.port, "POST", "/settings/big", b"maxlen=10&overflow=drop_oldest")

            def publish() -> Tuple[int, int]:
                for n in range(20):
                    status, _ = http(broker.port, "POST", "/q/big", b"value=new+%d" % n)
                return status, int(server.client.llen("big:queue"))
            (status, left), call, ping, command, wall = probe.measure(publish)
            lines.append("20 publishes to a queue of %d messages just given maxlen=10, overflow=drop_oldest: "
                         "last %d, %d messages left, in %.2f s; longest Redis call %.1f ms (%s), "
                         "longest PING %.1f ms" % (count, status, left, wall, call, command, ping))
        else:
            pipe = server.client.pipeline(transaction=False)
            for i in range(30000):
                pipe.sadd("QUEUESET", "q%05d" % i)
                pipe.lpush("q%05d:queue" % i, "q%05d:1" % i)
                pipe.set("q%05d:1" % i, "x")
            pipe.execute()
            for path in ("/stats/", "/metrics"):
                (status, body), call, ping, command, wall = probe.measure(
                    lambda: http(broker.port, "GET", path))
                lines.append("GET %s with 30,000 queues: %d (%d bytes) in %.2f s; longest Redis call %.1f ms "
                             "(%s), longest PING %.1f ms"
                             % (path, status, len(body), wall, call, command, ping))
    finally:
        broker.stop()
        server.stop()
    return lines


def _flood(port: int, data: bytes, send_seconds: float = 20.0) -> socket.socket:
    """Send ``data`` from a client that never reads (as much as the broker takes)."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", port))
    client.settimeout(0.5)
    view = memoryview(data)
    deadline = time.monotonic() + send_seconds
    while view and time.monotonic() < deadline:
        try:
            sent = client.send(view[:65536])
        except socket.timeout:
            continue
        view = view[sent:]
    return client


def _settled_rss(broker: Broker, seconds: float = 5.0) -> float:
    """The broker's RSS once it stopped growing (or after ``seconds``)."""
    last, stable_since = broker.rss, time.monotonic()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = broker.rss
        if abs(now - last) > 0.5:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since > 1.5:
            break
    return broker.rss


def phase_pipeline(args: argparse.Namespace, workdir: str) -> List[str]:
    server = RedisServer(workdir)
    lines = []
    cases = [("78 KB of pipelined GET /openapi.json",
              b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 78 * 1024),
             ("8.8 MB of pipelined 404s", b"GET /no/such/route HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
              int(8.8 * 1024 * 1024))]
    try:
        for label, request, size in cases:
            broker = Broker(args.root, workdir, ["--redis", server.url])
            try:
                before = broker.rss
                client = _flood(broker.port, request * (size // len(request)))
                after = _settled_rss(broker)
                client.close()
                lines.append("%s from a client that never reads: RSS %.1f -> %.1f MB (+%.1f)"
                             % (label, before, after, after - before))
            finally:
                broker.stop()
    finally:
        server.stop()
    return lines


def _ws_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def phase_websocket(args: argparse.Namespace, workdir: str) -> List[str]:
    server = RedisServer(workdir)
    broker = Broker(args.root, workdir, ["--redis", server.url])
    try:
        before = broker.rss
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", broker.port))
        key = base64.b64encode(os.urandom(16)).decode()
        client.sendall(("GET /ws/flood HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n"
                        % key).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += client.recv(4096)
        frames = (_ws_frame(0x9, b"p" * 125) + _ws_frame(0x1, b"1")) * 50000
        client.setblocking(False)
        view = memoryview(frames)
        deadline = time.monotonic() + 20
        while view and time.monotonic() < deadline:
            try:
                view = view[client.send(view[:65536]):]
            except BlockingIOError:
                time.sleep(0.01)
        after = _settled_rss(broker)
        client.close()
        return ["%.1f MB of WebSocket pings and bad commands from a client that never reads: "
                "RSS %.1f -> %.1f MB (+%.1f)" % (len(frames) / 1e6, before, after, after - before)]
    finally:
        broker.stop()
        server.stop()


def _hold(port: int, count: int, ready, done) -> None:
    raise_nofile(count + 64)
    held = []
    deadline = time.monotonic() + 150
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        try:
            held.append(socket.create_connection(("127.0.0.1", port), timeout=1))
        except OSError:
            continue
    ready.put(len(held))
    done.wait()
    for conn in held:
        conn.close()


def _connections_once(args: argparse.Namespace, workdir: str, server: RedisServer, extra: List[str],
                      label: str) -> str:
    broker = Broker(args.root, workdir, ["--redis", server.url, *extra])
    try:
        before = broker.rss
        ready: multiprocessing.Queue = multiprocessing.Queue()
        done = multiprocessing.Event()
        holders = [multiprocessing.Process(target=_hold, args=(broker.port, 10500, ready, done))
                   for _ in range(2)]
        for holder in holders:
            holder.start()
        opened = sum(ready.get(timeout=300) for _ in holders)
        time.sleep(2)
        held = len(os.listdir("/proc/%d/fd" % broker.proc.pid))
        rss = broker.rss
        try:
            with socket.create_connection(("127.0.0.1", broker.port), timeout=5,
                                          source_address=("127.0.0.2", 0)) as other:
                other.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                served = other.recv(64).startswith(b"HTTP/1.1 200")
        except OSError as exc:
            served = False
            _say("the other client: %s" % exc)
        done.set()
        for holder in holders:
            holder.join(timeout=60)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return ("21,000 idle connections from one address%s (%d connected; broker fd limit %d): broker "
                "holds %d descriptors, RSS %.1f -> %.1f MB; another address served: %s"
                % (label, opened, soft, held, before, rss, "yes" if served else "no"))
    finally:
        broker.stop()


def phase_connections(args: argparse.Namespace, workdir: str) -> List[str]:
    server = RedisServer(workdir)
    try:
        lines = [_connections_once(args, workdir, server, [], "")]
        with open(os.path.join(args.root, "restmq", "config.py")) as source:
            capped = "max_connections_per_ip" in source.read()
        if capped:
            # the per-address cap alone: connections that never send a request are not
            # closed early (header_timeout) during this run
            conf = os.path.join(workdir, "long-header-timeout.conf")
            with open(conf, "w") as handle:
                handle.write("[server]\nheader_timeout = 600\n")
            lines.append(_connections_once(args, workdir, server, ["--config", conf],
                                           ", header_timeout = 600"))
        return lines
    finally:
        server.stop()


def phase_restart(args: argparse.Namespace, workdir: str) -> List[str]:
    data = os.path.join(workdir, "embedded")
    broker = Broker(args.root, workdir, ["--data-dir", data])
    try:
        assert http(broker.port, "POST", "/q/r", b"value=before")[0] == 200
        with open(os.path.join(data, "redis.pid")) as handle:
            pid = int(handle.read())
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        ready = published = None
        deadline = killed + 60
        while time.monotonic() < deadline and (ready is None or published is None):
            if ready is None and http(broker.port, "GET", "/health/ready", timeout=5)[0] == 200:
                ready = time.monotonic() - killed
            if published is None and http(broker.port, "POST", "/q/r", b"value=after", timeout=5)[0] == 200:
                published = time.monotonic() - killed
            time.sleep(0.01)
        kept = b"before" in http(broker.port, "GET", "/q/r")[1]

        def text(value: Optional[float]) -> str:
            return "%.2f s" % value if value is not None else "never (60 s)"
        return ["kill -9 of the embedded redis-server: /health/ready 200 again after %s, a publish "
                "acknowledged after %s; message stored before the kill kept: %s"
                % (text(ready), text(published), "yes" if kept else "no")]
    finally:
        broker.stop()


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="comma-separated phases: " + ",".join(PHASES))
    parser.add_argument("--messages", type=int, default=1000000, help="messages of the purged queue")
    parser.add_argument("--root", default=ROOT, help="the RestMQ checkout to run (default: this one)")
    args = parser.parse_args(argv)
    args.root = os.path.abspath(args.root)
    phases = [p for p in args.only.split(",") if p] or list(PHASES)
    raise_nofile(22000)
    workdir = tempfile.mkdtemp(prefix="restmq-hostile-")
    try:
        for phase in phases:
            _say("phase %s (%s)" % (phase, args.root))
            if phase in ("purge", "redrive", "trim", "stats"):
                lines = phase_redis(args, workdir, phase)
            else:
                lines = globals()["phase_" + phase](args, workdir)
            for line in lines:
                print(line, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
