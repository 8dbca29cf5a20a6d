"""Helpers for tests that run RestMQ (and Redis) as real processes.

twistd and launcher processes with their logs in a file, liveness checks
through /proc, and a streaming (COMET / SSE) client on Twisted.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Iterator, List, Optional, Set

import treq
from twisted.internet import defer, protocol

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env() -> Dict[str, str]:
    return dict(os.environ, PYTHONPATH=ROOT)


class Process:
    """A child process whose output goes to ``log_path`` (a pipe could fill up and
    stall a long-running broker)."""

    def __init__(self, command: List[str], log_path: str) -> None:
        self.command = command
        self.log_path = log_path
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "Process":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command, cwd=ROOT, env=_env(), stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> Optional[int]:
        """SIGTERM, then SIGKILL if it is still there after ``timeout``; its status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def twistd_command(*args: str, plugin: str = "restmq") -> List[str]:
    """``twistd -n <plugin> args...`` as users run it, with this checkout's plugins."""
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "--pidfile=", "-n", plugin, *args]


def spawn_twistd(*args: str, plugin: str = "restmq") -> subprocess.Popen:
    """Start ``twistd -n <plugin>`` with its output on a pipe (for short-lived runs
    whose output the test reads)."""
    return subprocess.Popen(twistd_command(*args, plugin=plugin), cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


class Broker(Process):
    """``twistd -n restmq`` on ``port``."""

    def __init__(self, port: int, args: List[str], log_path: str) -> None:
        super().__init__(twistd_command("--port", str(port), *args), log_path)
        self.port = port
        self.url = "http://127.0.0.1:%d" % port

    def start(self) -> "Broker":
        super().start()
        try:
            wait_http(self.port, self)
        except BaseException:
            self.kill()
            raise
        return self


def wait_http(port: int, process: Process, timeout: float = 30.0) -> None:
    """Block until RestMQ answers HTTP on ``port`` (fails if ``process`` exits).

    Any answer counts (a 503 too: Redis may be away on purpose)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/stats/" % port, timeout=2).read()
            return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            if process.proc is not None and process.proc.poll() is not None:
                raise AssertionError("restmq exited (%s):\n%s" % (process.proc.returncode, process.log()))
            if time.monotonic() > deadline:
                raise AssertionError("restmq did not answer on port %d:\n%s" % (port, process.log()))
            time.sleep(0.05)


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30.0,
                   log: Optional[str] = None) -> None:
    """Block until something accepts TCP connections on 127.0.0.1:``port``; fails
    if ``proc`` exits first or ``timeout`` passes, with the tail of ``log`` (a file)
    or, once it has exited, of the process's own output."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            pass
        exited = proc.poll() is not None
        if exited or time.monotonic() > deadline:
            if log is not None:
                with open(log, encoding="utf-8", errors="replace") as handle:
                    output = handle.read()
            else:
                output = proc.stdout.read().decode(errors="replace") if exited and proc.stdout else ""
            raise AssertionError("%s %s port %d: %s" % (
                os.path.basename(str(proc.args[0] if isinstance(proc.args, list) else proc.args)),
                "exited before listening on" if exited else "did not listen on", port, output[-2000:]))
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as dead)."""
    try:
        with open("/proc/%d/stat" % pid) as stat:
            return stat.read().rsplit(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_dead(pid: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, "process %d is still alive" % pid
        time.sleep(0.05)


def children_of(pid: int) -> List[int]:
    """The live child processes of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as stat:
                fields = stat.read().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def _tcp_sockets() -> Iterator[List[str]]:
    """The fields of every row of /proc/net/tcp and /proc/net/tcp6."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                lines = handle.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            yield line.split()


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1], 16)


def _listening_inodes(port: int) -> Set[str]:
    # state 0A = LISTEN; field 9 is the socket's inode
    return {fields[9] for fields in _tcp_sockets() if _port(fields[1]) == port and fields[3] == "0A"}


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a listening TCP socket on ``port``."""
    wanted = {"socket:[%s]" % inode for inode in _listening_inodes(port)}
    fd_dir = "/proc/%d/fd" % pid
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return False
    for name in names:
        try:
            if os.readlink(os.path.join(fd_dir, name)) in wanted:
                return True
        except OSError:
            continue
    return False


def connections_to(pid: int, port: int) -> int:
    """How many established TCP connections process ``pid`` has to ``port``."""
    # state 01 = ESTABLISHED
    inodes = {"socket:[%s]" % fields[9] for fields in _tcp_sockets()
              if _port(fields[2]) == port and fields[3] == "01"}
    count = 0
    fd_dir = "/proc/%d/fd" % pid
    for name in os.listdir(fd_dir):
        try:
            count += os.readlink(os.path.join(fd_dir, name)) in inodes
        except OSError:
            continue
    return count


class _StreamBody(protocol.Protocol):
    def __init__(self, client: "StreamClient") -> None:
        self.client = client

    def dataReceived(self, data: bytes) -> None:
        self.client._received(data)

    def connectionLost(self, reason: Any) -> None:
        self.client.closed = True
        if not self.client.ended.called:
            self.client.ended.callback(None)


class StreamClient:
    """A streaming consumer of ``GET /c/<q>``: COMET (one JSON object per line)
    or, with ``sse``, Server-Sent Events. Messages accumulate in ``messages``
    (the decoded JSON objects), SSE ids in ``ids`` and SSE event names other
    than messages in ``events``."""

    def __init__(self, sse: bool) -> None:
        self.sse = sse
        self.messages: List[dict] = []
        self.ids: List[str] = []
        self.events: List[str] = []
        self.closed = False
        self.ended: defer.Deferred = defer.Deferred()
        self._buffer = b""
        self._body: Optional[_StreamBody] = None

    @classmethod
    async def open(cls, base_url: str, queue: str, pool: Any, sse: bool = False,
                   last_event_id: Optional[str] = None) -> "StreamClient":
        client = cls(sse)
        headers = {}
        if sse:
            headers["Accept"] = ["text/event-stream"]
        if last_event_id is not None:
            headers["Last-Event-ID"] = [last_event_id]
        response = await treq.get("%s/c/%s" % (base_url, queue), headers=headers, pool=pool,
                                  unbuffered=True, timeout=10)
        assert response.code == 200, "stream refused: %d" % response.code
        client._body = _StreamBody(client)
        response.deliverBody(client._body)
        return client

    @property
    def values(self) -> List[str]:
        return [message["value"] for message in self.messages]

    def close(self) -> defer.Deferred:
        """Hang up; fires once the connection is gone."""
        if self._body is not None and not self.closed:
            self._body.transport.stopProducing()
        return self.ended

    def _received(self, data: bytes) -> None:
        self._buffer += data
        separator = b"\n\n" if self.sse else b"\r\n"
        while separator in self._buffer:
            item, self._buffer = self._buffer.split(separator, 1)
            if self.sse:
                self._event(item)
            elif item:
                self.messages.append(json.loads(item))

    def _event(self, block: bytes) -> None:
        fields: Dict[str, str] = {}
        for line in block.decode("utf-8").split("\n"):
            if line.startswith(":") or ":" not in line:
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
        if "event" in fields:
            self.events.append(fields["event"])
        elif "data" in fields:
            self.messages.append(json.loads(fields["data"]))
            self.ids.append(fields.get("id", ""))
