"""A real Redis Sentinel deployment for tests: a master, replicas, three sentinels.

Everything listens on free loopback ports and is a child of the test process;
``stop()`` kills what is left. ``command()`` is a tiny blocking RESP client
for setting up and inspecting it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from typing import Any, Dict, List, Optional

from restmq.config import RedisTarget
from restmq.server.redisproc import find_redis_server
from tests.helpers import free_port

MASTER_NAME = "restmqmaster"


def _encode(*args: Any) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _parse(reader: Any) -> Any:
    line = reader.readline()
    if not line:
        raise ConnectionError("connection closed")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = reader.read(size + 2)[:-2]
        return data.decode()
    if kind == b"*":
        size = int(rest)
        return None if size < 0 else [_parse(reader) for _ in range(size)]
    raise RuntimeError("unexpected reply %r" % line)


def command(port: int, *args: Any, timeout: float = 2.0) -> Any:
    """Send one command to 127.0.0.1:``port`` and return its decoded reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(_encode(*args))
        with conn.makefile("rb") as reader:
            return _parse(reader)


def _pairs(flat: List[Any]) -> Dict[str, Any]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def wait_for(condition: Any, what: str, timeout: float = 30.0) -> None:
    """Poll a condition of the deployment until it holds (errors count as "not yet")."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except (OSError, RuntimeError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError("%s: not within %.0f s" % (what, timeout))
        time.sleep(0.05)


class _Server:
    def __init__(self, args: List[str], directory: str, name: str, port: int) -> None:
        self.args = args
        self.directory = directory
        self.name = name
        self.port = port
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "_Server":
        self.proc = subprocess.Popen(self.args, cwd=self.directory, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: command(self.port, "PING") == "PONG" or self.proc.poll() is not None,
                 "%s answers PING" % self.name, timeout=10)
        if self.proc.poll() is not None:
            raise RuntimeError("%s exited at start; see %s" % (self.name, self.directory))
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class SentinelCluster:
    """One master, ``replicas`` replicas, three sentinels (quorum 2), fast failover."""

    def __init__(self, replicas: int = 2, down_after_ms: int = 500,
                 failover_timeout_ms: int = 2000) -> None:
        self.binary = find_redis_server()
        self.directory = tempfile.mkdtemp(prefix="restmq-test-sentinel-")
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.master = self._redis("master", free_port())
        self.replicas = [self._redis("replica%d" % i, free_port(), replica_of=self.master.port)
                         for i in range(replicas)]
        self.sentinels = [self._sentinel("sentinel%d" % i, free_port()) for i in range(3)]

    def _redis(self, name: str, port: int, replica_of: Optional[int] = None) -> _Server:
        directory = os.path.join(self.directory, name)
        os.makedirs(directory)
        args = [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", directory, "--logfile", "redis.log"]
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        return _Server(args, directory, name, port)

    def _sentinel(self, name: str, port: int) -> _Server:
        directory = os.path.join(self.directory, name)
        os.makedirs(directory)
        conf = os.path.join(directory, "sentinel.conf")
        with open(conf, "w") as handle:
            handle.write(
                "port %d\nbind 127.0.0.1\ndir %s\nlogfile sentinel.log\n"
                "sentinel monitor %s 127.0.0.1 %d 2\n"
                "sentinel down-after-milliseconds %s %d\n"
                "sentinel failover-timeout %s %d\n"
                "sentinel parallel-syncs %s 1\n"
                % (port, directory, MASTER_NAME, self.master.port, MASTER_NAME, self.down_after_ms,
                   MASTER_NAME, self.failover_timeout_ms, MASTER_NAME))
        return _Server([self.binary, conf, "--sentinel"], directory, name, port)

    @property
    def url(self) -> str:
        return "sentinel://%s/%s" % (",".join("127.0.0.1:%d" % s.port for s in self.sentinels),
                                     MASTER_NAME)

    @property
    def target(self) -> RedisTarget:
        return RedisTarget("sentinel", "", 0, "", 0, None,
                           tuple(("127.0.0.1", s.port) for s in self.sentinels), MASTER_NAME)

    def start(self) -> "SentinelCluster":
        try:
            self.master.start()
            for replica in self.replicas:
                replica.start()
            wait_for(lambda: self._online_replicas(self.master.port) == len(self.replicas),
                     "replicas in sync with the master")
            for sentinel in self.sentinels:
                sentinel.start()
            wait_for(self._sentinels_agree, "sentinels know the replicas and each other", timeout=90.0)
        except BaseException:
            self.stop()
            raise
        return self

    def _online_replicas(self, port: int) -> int:
        info = command(port, "INFO", "replication")
        return sum(1 for line in info.splitlines()
                   if line.startswith("slave") and "state=online" in line)

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            replicas = command(sentinel.port, "SENTINEL", "REPLICAS", MASTER_NAME)
            healthy = [r for r in map(_pairs, replicas) if r["flags"] == "slave"]
            others = command(sentinel.port, "SENTINEL", "SENTINELS", MASTER_NAME)
            if len(healthy) != len(self.replicas) or len(others) != len(self.sentinels) - 1:
                return False
        return True

    def master_port(self) -> Optional[int]:
        """The master's port as the sentinels agree on it (None while they disagree)."""
        ports = set()
        for sentinel in self.sentinels:
            try:
                ports.add(int(command(sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                      MASTER_NAME)[1]))
            except (OSError, RuntimeError, ConnectionError):
                return None
        return ports.pop() if len(ports) == 1 else None

    def server(self, port: int) -> _Server:
        return next(s for s in [self.master] + self.replicas if s.port == port)

    def stop(self) -> None:
        for server in self.sentinels + self.replicas + [self.master]:
            server.kill()
