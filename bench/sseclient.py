"""A lean Server-Sent Events load client: one process, many connections, no framework.

Run as ``python -m bench.sseclient --port N --path /c/q --conns 100 --mode count``.
It opens the connections (at most ``--pending`` handshakes at a time, so a
small listen backlog does not drop SYNs), prints ``ready <n> <failed>`` once
every connection has its response head, then obeys one-word commands on stdin:

``lap``   print one JSON line about the events since the previous lap, and reset
          (latency mode: the lap's samples go to ``--out`` as native doubles)
``quit``  close everything and exit

Modes: ``count`` counts ``data:`` lines with ``bytes.count`` (no parsing);
``latency`` also finds ``@<monotonic seconds>@`` stamps in the data and
records now minus stamp (the publisher and this process read the same
CLOCK_MONOTONIC); ``idle`` only holds the connections open.
"""

from __future__ import annotations

import argparse
import array
import errno
import json
import os
import resource
import select
import socket
import sys
import time
from typing import Dict, List, Optional

_MARK = b"\ndata:"
_READ = 256 * 1024


class _Conn:
    __slots__ = ("sock", "head", "ready", "tail", "count", "closed", "sent")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.head = b""
        self.ready = False
        self.tail = b"\n"
        self.count = 0
        self.closed = False
        self.sent = False


class Client:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.poller = select.epoll()
        self.buffer = bytearray(_READ)
        self.view = memoryview(self.buffer)
        self.request = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: %s\r\n"
                        "Cache-Control: no-cache\r\n\r\n"
                        % (args.path, args.host, args.port, args.accept)).encode("ascii")
        self.conns: Dict[int, _Conn] = {}
        self.to_open = args.conns
        self.pending = 0
        self.ready = 0
        self.failed = 0
        self.closed = 0
        self.failures: List[str] = []
        self.events = 0
        self.lap_start = time.monotonic()
        self.latencies: List[float] = []
        self.announced = False
        self.stdin = b""
        self.running = True

    # connections

    def _open_more(self) -> None:
        while self.to_open and self.pending < self.args.pending:
            self.to_open -= 1
            self.pending += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = sock.connect_ex((self.args.host, self.args.port))
            if code not in (0, errno.EINPROGRESS):
                self._fail(None, sock, "connect: %s" % os.strerror(code))
                continue
            conn = _Conn(sock)
            self.conns[sock.fileno()] = conn
            self.poller.register(sock.fileno(), select.EPOLLOUT)

    def _fail(self, conn: Optional[_Conn], sock: socket.socket, why: str) -> None:
        self.failed += 1
        self.pending -= 1
        if len(self.failures) < 5:
            self.failures.append(why)
        if conn is not None:
            self._drop(conn)
        else:
            sock.close()

    def _drop(self, conn: _Conn) -> None:
        conn.closed = True
        fd = conn.sock.fileno()
        try:
            self.poller.unregister(fd)
        except (KeyError, ValueError, OSError):
            pass
        self.conns.pop(fd, None)
        conn.sock.close()

    def _writable(self, conn: _Conn) -> None:
        error = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            self._fail(conn, conn.sock, "connect: %s" % os.strerror(error))
            return
        conn.sock.send(self.request)
        conn.sent = True
        self.poller.modify(conn.sock.fileno(), select.EPOLLIN)

    def _readable(self, conn: _Conn) -> None:
        try:
            # into one reused buffer: recv(256 KiB) would mmap and munmap a fresh
            # bytes object on every call, which costs more than the read itself
            size = conn.sock.recv_into(self.buffer)
        except ConnectionError:
            size = 0
        data = self.view[:size].tobytes()
        if not data:
            if conn.ready:
                self.closed += 1
                self._drop(conn)
            else:
                self._fail(conn, conn.sock, "closed before the response head")
            return
        if not conn.ready:
            conn.head += data
            end = conn.head.find(b"\r\n\r\n")
            if end < 0:
                return
            status = conn.head[:conn.head.find(b"\r\n")]
            data = conn.head[end + 4:]
            if b" 200 " not in status + b" ":
                self._fail(conn, conn.sock, status.decode("latin-1"))
                return
            conn.head = b""
            conn.ready = True
            self.ready += 1
            self.pending -= 1
            if not data:
                return
        if self.args.mode == "latency":
            self._stamps(conn, data)
        else:
            joined = conn.tail + data
            found = joined.count(_MARK)
            conn.tail = joined[-(len(_MARK) - 1):]
            conn.count += found
            self.events += found

    def _stamps(self, conn: _Conn, data: bytes) -> None:
        now = time.monotonic()
        buffer = conn.tail + data if conn.tail else data
        cut = buffer.rfind(b"\n\n")
        if cut < 0:
            conn.tail = buffer
            return
        found = 0
        append = self.latencies.append
        find = buffer.find
        start = find(b"@", 0, cut)
        while start >= 0:
            end = find(b"@", start + 1, cut)
            if end < 0:
                break
            append(now - float(buffer[start + 1:end]))
            found += 1
            start = find(b"@", end + 1, cut)
        conn.tail = buffer[cut + 2:]
        conn.count += found
        self.events += found

    # commands

    def _command(self, word: str) -> None:
        if word == "lap":
            now = time.monotonic()
            counts = [c.count for c in self.conns.values() if c.ready]
            report = {"events": self.events, "seconds": now - self.lap_start,
                      "open": len(counts), "closed": self.closed,
                      "per_conn_min": min(counts) if counts else 0,
                      "per_conn_max": max(counts) if counts else 0}
            if self.args.mode == "latency":
                # the raw samples, so that several client processes can be merged
                with open(self.args.out, "wb") as out:
                    array.array("d", self.latencies).tofile(out)
                report["samples"] = len(self.latencies)
            self.latencies = []
            self.events = 0
            for conn in self.conns.values():
                conn.count = 0
            self.lap_start = now
            self._say(json.dumps(report))
        elif word == "quit":
            self.running = False

    def _say(self, line: str) -> None:
        os.write(1, (line + "\n").encode())

    def _stdin(self) -> None:
        data = os.read(0, 4096)
        if not data:
            self.running = False
            return
        self.stdin += data
        while b"\n" in self.stdin:
            line, self.stdin = self.stdin.split(b"\n", 1)
            self._command(line.decode().strip())

    def run(self) -> None:
        self.poller.register(0, select.EPOLLIN)
        self._open_more()
        conns = self.conns
        readable = self._readable
        while self.running:
            for fd, events in self.poller.poll(1.0):
                if fd == 0:
                    self._stdin()
                    continue
                conn = conns.get(fd)
                if conn is None:
                    continue
                if conn.sent:
                    readable(conn)
                else:
                    self._writable(conn)
            if self.to_open:
                self._open_more()
            if not self.announced and self.ready + self.failed == self.args.conns:
                self.announced = True
                self._say("ready %d %d %s" % (self.ready, self.failed, json.dumps(self.failures)))
        for conn in list(self.conns.values()):
            conn.sock.close()


def _raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.sseclient")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--accept", default="text/event-stream")
    parser.add_argument("--conns", type=int, default=100)
    parser.add_argument("--pending", type=int, default=40, help="handshakes in flight at most")
    parser.add_argument("--mode", choices=("count", "latency", "idle"), default="count")
    parser.add_argument("--out", help="latency mode: where each lap writes its samples (doubles)")
    args = parser.parse_args(argv)
    _raise_nofile(args.conns + 100)
    Client(args).run()


if __name__ == "__main__":
    main(sys.argv[1:])
