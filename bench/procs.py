"""Child processes of a benchmark run: redis-server, brokers, the bare app, nginx, clients.

Every child gets its own process group and dies with the harness
(PR_SET_PDEATHSIG); :class:`Procs` stops every group it started, in reverse
order, whatever happened.
"""

from __future__ import annotations

import array
import ctypes
import json
import math
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

__all__ = ["BenchError", "Proc", "Procs", "ClientProc", "free_port", "wait_port", "rss_kb",
           "ROOT", "NOFILE", "ClientGroup", "percentile",
           "CpuMeter", "cpu_seconds", "Pinning"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOFILE = 65536
_PR_SET_PDEATHSIG = 1


class BenchError(Exception):
    """A measurement could not be made; its rows read ``n/a: <message>``."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def die_with_parent() -> None:
    """In a child between fork and exec: the kernel kills it if the harness dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Pinning:
    """Which CPUs the servers measured run on, and which the rest (the harness,
    its load generators, clients and Redis).

    On a machine of two or more CPUs the server under test gets the first one to
    itself and everything else shares the others: a single-threaded server then
    runs at the speed of one whole core in every run instead of wherever the
    scheduler puts it beside the load generators, which is what made the same
    figure move by 30 %% from run to run on two cores. The baselines are pinned the
    same way. ``--no-pin`` (or one CPU) leaves the scheduler alone.
    """

    def __init__(self, enabled: bool = True) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        self.all = set(cpus)
        self.enabled = enabled and len(cpus) >= 2
        self.server = {cpus[0]} if self.enabled else set(cpus)
        self.load = set(cpus[1:]) if self.enabled else set(cpus)

    def harness(self) -> None:
        """Pin this process (and so every child it starts) to the load CPUs."""
        os.sched_setaffinity(0, self.load)

    def describe(self) -> str:
        if not self.enabled:
            return "not pinned"
        return "server measured on CPU %s, harness, load generators and Redis on CPU %s" % (
            ",".join(map(str, sorted(self.server))), ",".join(map(str, sorted(self.load))))

    def unpinned(self) -> "_Unpinned":
        """Within: servers and harness on every CPU (a phase of several workers)."""
        return _Unpinned(self)


class _Unpinned:
    def __init__(self, pinning: Pinning) -> None:
        self.pinning = pinning
        self.saved = (pinning.server, pinning.load)

    def __enter__(self) -> None:
        self.pinning.server = self.pinning.load = self.pinning.all
        os.sched_setaffinity(0, self.pinning.all)

    def __exit__(self, *exc: object) -> None:
        self.pinning.server, self.pinning.load = self.saved
        os.sched_setaffinity(0, self.pinning.load)


def _child_setup(nofile: int, cpus: Optional[set] = None) -> Callable[[], None]:
    def setup() -> None:  # runs in the child, between fork and exec
        die_with_parent()
        if cpus:
            os.sched_setaffinity(0, cpus)
        if nofile:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, max(hard, nofile)))
            except (ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return setup


def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` in KiB, from /proc/<pid>/status."""
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError("no VmRSS for pid %d" % pid)


def cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU time of ``pids`` so far, from /proc/<pid>/stat."""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU share (percent of one core) of some processes over a stretch of time."""

    def __init__(self, groups: Dict[str, Callable[[], List[int]]]) -> None:
        self.groups = groups
        self.start()

    def start(self) -> None:
        self._began = time.monotonic()
        self._used = {name: cpu_seconds(pids()) for name, pids in self.groups.items()}

    def percent(self) -> Dict[str, float]:
        elapsed = max(1e-6, time.monotonic() - self._began)
        return {name: 100.0 * (cpu_seconds(pids()) - self._used[name]) / elapsed
                for name, pids in self.groups.items()}


def children_of(pid: int) -> List[int]:
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


class Proc:
    """One child process in its own process group, output to a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: str,
                 env: Optional[Dict[str, str]] = None, nofile: int = NOFILE,
                 pipes: bool = False, cpus: Optional[set] = None) -> None:
        self.name = name
        self.cpus = cpus  # None: those of the harness
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.nofile = nofile
        self.pipes = pipes
        self.popen: Optional[subprocess.Popen] = None

    def start(self) -> "Proc":
        log = open(self.log_path, "ab")
        try:
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE if self.pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if self.pipes else log,
                stderr=log, env=self.env, cwd=ROOT, start_new_session=True,
                preexec_fn=_child_setup(self.nofile, self.cpus), close_fds=True)
        except OSError as exc:
            raise BenchError("cannot start %s: %s" % (self.name, exc)) from None
        finally:
            log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        """Still running? (Does not reap it, so its process group stays ours to end.)"""
        if self.popen is None or self.popen.returncode is not None:
            return False
        try:
            return os.waitid(os.P_PID, self.popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            return False

    def log_tail(self, lines: int = 8) -> str:
        try:
            with open(self.log_path, "rb") as log:
                text = log.read()[-4000:].decode("utf-8", "replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        popen, self.popen = self.popen, None
        if popen is None:
            return
        for stream in (popen.stdin,):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        if popen.returncode is None:
            try:
                os.killpg(popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            # wait without reaping: while the leader is a zombie its group id
            # cannot be reused, so the SIGKILL below reaches only our group
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                try:
                    if os.waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                        break
                except ChildProcessError:
                    break
                time.sleep(0.02)
            # the group may hold more than the leader (nginx workers): end them all
            try:
                os.killpg(popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        popen.wait()
        if popen.stdout is not None:
            popen.stdout.close()


class ClientProc(Proc):
    """A bench.sseclient process, driven by lines on its stdin and stdout."""

    def __init__(self, name: str, argv: Sequence[str], log_path: str) -> None:
        super().__init__(name, argv, log_path, pipes=True)
        self._buffer = b""

    def readline(self, timeout: float) -> str:
        assert self.popen is not None and self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError("%s said nothing within %.0f s" % (self.name, timeout))
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                data = os.read(fd, 65536)
                if not data:
                    raise BenchError("%s exited: %s" % (self.name, self.log_tail(3)))
                self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def send(self, word: str) -> None:
        assert self.popen is not None and self.popen.stdin is not None
        self.popen.stdin.write(word.encode() + b"\n")
        self.popen.stdin.flush()

    def wait_ready(self, timeout: float) -> Dict[str, Any]:
        line = self.readline(timeout)
        if not line.startswith("ready "):
            raise BenchError("%s: unexpected %r" % (self.name, line))
        _, ready, failed, failures = line.split(" ", 3)
        return {"ready": int(ready), "failed": int(failed), "failures": json.loads(failures)}

    def lap(self, timeout: float = 30.0) -> Dict[str, Any]:
        self.send("lap")
        return json.loads(self.readline(timeout))


def percentile(ordered: Sequence[float], fraction: float) -> Optional[float]:
    """The nearest-rank percentile of sorted samples."""
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, int(math.ceil(fraction * len(ordered))) - 1))
    return ordered[index]


class ClientGroup:
    """Several client processes driven as one; laps are summed (latencies merged)."""

    def __init__(self, members: List[ClientProc]) -> None:
        self.members = members

    def wait_ready(self, timeout: float) -> Dict[str, Any]:
        total: Dict[str, Any] = {"ready": 0, "failed": 0, "failures": []}
        for member in self.members:
            ready = member.wait_ready(timeout)
            total["ready"] += ready["ready"]
            total["failed"] += ready["failed"]
            total["failures"] += ready["failures"]
        return total

    def lap(self, timeout: float = 30.0) -> Dict[str, Any]:
        for member in self.members:
            member.send("lap")
        laps = [json.loads(member.readline(timeout)) for member in self.members]
        total = {"events": sum(lap["events"] for lap in laps),
                 "seconds": max(lap["seconds"] for lap in laps),
                 "open": sum(lap["open"] for lap in laps),
                 "closed": sum(lap["closed"] for lap in laps),
                 "per_conn_min": min(lap["per_conn_min"] for lap in laps),
                 "per_conn_max": max(lap["per_conn_max"] for lap in laps)}
        if "samples" in laps[0]:
            samples = array.array("d")
            for member in self.members:
                with open(member.argv[member.argv.index("--out") + 1], "rb") as f:
                    samples.frombytes(f.read())
            ordered = sorted(samples)
            total.update(samples=len(ordered), p50=percentile(ordered, 0.50),
                         p90=percentile(ordered, 0.90), p99=percentile(ordered, 0.99),
                         max=ordered[-1] if ordered else None)
        return total


def _listens(pid: int, port: int) -> bool:
    """Does ``pid`` itself hold a socket listening on ``port``? (With SO_REUSEPORT
    another process may answer on the same port already.)"""
    inodes = set()
    try:
        with open("/proc/net/tcp") as table:
            next(table)
            for line in table:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add("socket:[%s]" % fields[9])
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) in inodes:
                return True
        except OSError:
            continue
    return False


def wait_port(port: int, proc: Proc, timeout: float = 15.0) -> None:
    """Wait until ``proc`` listens on ``port`` (and the port takes connections)."""
    deadline = time.monotonic() + timeout
    while True:
        if not proc.alive():
            raise BenchError("%s exited at start: %s" % (proc.name, proc.log_tail()))
        try:
            if _listens(proc.pid, port) or proc.name == "nginx":  # nginx: its worker
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchError("%s did not listen on %d within %.0f s" % (proc.name, port, timeout))
        time.sleep(0.05)


class Procs:
    """Starts children and guarantees they are stopped."""

    def __init__(self, workdir: str, pinning: Optional[Pinning] = None) -> None:
        self.workdir = workdir
        self.pinning = pinning or Pinning(enabled=False)
        self.started: List[Proc] = []
        self.python = sys.executable
        self.env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def path(self, name: str) -> str:
        return os.path.join(self.workdir, name)

    def start(self, proc: Proc) -> Proc:
        self.started.append(proc)
        proc.start()
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.started:
            self.started.remove(proc)

    def stop_all(self) -> None:
        while self.started:
            self.stop(self.started[-1])

    # the children

    def redis(self) -> "Redis":
        from restmq.server.redisproc import EmbeddedRedisError, find_redis_server
        try:
            binary = find_redis_server()
        except EmbeddedRedisError as exc:
            raise BenchError(str(exc)) from None
        sock = self.path("redis.sock")
        proc = self.start(Proc("redis-server", [
            binary, "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", self.workdir,
            "--logfile", "", "--maxclients", "10000"], self.path("redis.log")))
        import redis as redis_py
        client = redis_py.Redis(unix_socket_path=sock)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis_py.exceptions.ConnectionError:
                if not proc.alive() or time.monotonic() > deadline:
                    raise BenchError("redis-server did not start: %s" % proc.log_tail()) from None
                time.sleep(0.05)
        version = client.info("server").get("redis_version", "?")
        return Redis(proc, sock, client, binary, version)

    def broker(self, redis: "Redis", port: int, extra: Sequence[str] = (), name: str = "restmq") -> Proc:
        # every load generator connects from 127.0.0.1: the per-address connection cap
        # (three quarters of the descriptor limit by default) must not cut the figures
        conf = self.path("restmq-bench.conf")
        if not os.path.exists(conf):
            with open(conf, "w") as handle:
                handle.write("[server]\nmax_connections_per_ip = 1048576\n")
        proc = self.start(Proc(name, [
            self.python, "-c", "from twisted.scripts.twistd import run; run()",
            "--pidfile=", "-n", "restmq", "--port", str(port), "--config", conf,
            "--redis", "unix://" + redis.sock, *extra], self.path(name + ".log"), env=self.env,
            cpus=self.pinning.server))
        wait_port(port, proc)
        return proc

    def bare(self, redis: "Redis", port: int) -> Proc:
        proc = self.start(Proc("bare-cyclone", [
            self.python, "-m", "bench.bare", "--port", str(port), "--redis", redis.sock],
            self.path("bare.log"), env=self.env, cpus=self.pinning.server))
        wait_port(port, proc)
        return proc

    def nginx(self, port: int) -> Proc:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        module = "/usr/lib/nginx/modules/ngx_nchan_module.so"
        if not os.access(binary, os.X_OK):
            raise BenchError("nginx not installed (Debian nginx-light; make bench installs it)")
        if not os.path.exists(module):
            raise BenchError("nchan not installed (Debian libnginx-mod-nchan; make bench installs it)")
        prefix = self.path("nginx")
        os.makedirs(prefix, exist_ok=True)
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF % {"prefix": prefix, "port": port, "module": module,
                                  "nofile": NOFILE})
        proc = self.start(Proc("nginx", [binary, "-p", prefix + "/", "-c", conf,
                                         "-e", os.path.join(prefix, "error.log")],
                               os.path.join(prefix, "stderr.log"), cpus=self.pinning.server))
        wait_port(port, proc)
        return proc

    def clients(self, port: int, path: str, conns: int, mode: str, name: str = "sseclient",
                processes: int = 1, pending: int = 40) -> "ClientGroup":
        """``conns`` subscribers spread over ``processes`` bench.sseclient processes."""
        members = []
        for index in range(processes):
            share = conns // processes + (1 if index < conns % processes else 0)
            label = "%s-%d" % (name, index)
            proc = ClientProc(label, [
                self.python, "-m", "bench.sseclient", "--port", str(port), "--path", path,
                "--conns", str(share), "--mode", mode, "--pending", str(pending),
                "--out", self.path(label + ".samples")], self.path(label + ".log"))
            proc.env = self.env
            members.append(self.start(proc))
        return ClientGroup(members)


class Redis:
    """The bench-owned redis-server (unix socket, no persistence) and a client of it."""

    def __init__(self, proc: Proc, sock: str, client: Any, binary: str, version: str) -> None:
        self.proc = proc
        self.sock = sock
        self.client = client
        self.binary = binary
        self.version = version

    def flush(self) -> None:
        self.client.flushall()


# One worker, like one RestMQ process. nchan keeps few messages: subscribers are
# all connected before anything is published.
NGINX_CONF = """
load_module %(module)s;
worker_processes 1;
daemon off;
master_process on;
pid %(prefix)s/nginx.pid;
worker_rlimit_nofile %(nofile)d;
events {
    worker_connections 30000;
    multi_accept on;
}
http {
    access_log off;
    client_body_temp_path %(prefix)s/body;
    proxy_temp_path %(prefix)s/proxy;
    fastcgi_temp_path %(prefix)s/fastcgi;
    uwsgi_temp_path %(prefix)s/uwsgi;
    scgi_temp_path %(prefix)s/scgi;
    keepalive_requests 1000000;
    nchan_shared_memory_size 256M;
    server {
        listen 127.0.0.1:%(port)d backlog=4096;
        location ~ ^/pub/(\\w+)$ {
            nchan_publisher;
            nchan_channel_id $1;
            nchan_message_buffer_length 100;
            nchan_message_timeout 60s;
        }
        location ~ ^/sub/(\\w+)$ {
            nchan_subscriber eventsource;
            nchan_channel_id $1;
        }
        location ~ ^/lp/(\\w+)$ {
            nchan_subscriber longpoll;
            nchan_subscriber_first_message newest;
            nchan_channel_id $1;
        }
    }
}
"""
