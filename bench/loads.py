"""Load generators: wrk for plain HTTP, a paced publisher, HotQueue's put loop."""

from __future__ import annotations

import os
import re
import select
import socket
import shutil
import subprocess
import time
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Tuple

from bench.procs import BenchError, die_with_parent as _die_with_parent

__all__ = ["Wrk", "paced_publish", "stamp", "hotqueue_puts", "longpoll_latency", "post_on", "nchan_next",
           "SMALL_MESSAGE"]

FORM = "application/x-www-form-urlencoded"

# the "small message" of the request-rate figures (40 bytes)
SMALL_MESSAGE = "hello-benchmark-message-0123456789abcdef"


class Wrk:
    """Runs wrk (Debian package ``wrk``) with Lua scripts written to ``workdir``."""

    def __init__(self, workdir: str) -> None:
        self.binary = shutil.which("wrk")
        self.workdir = workdir
        self._scripts: Dict[Tuple[str, str, str], str] = {}

    def check(self) -> None:
        if self.binary is None:
            raise BenchError("wrk not installed (Debian package wrk; make bench installs it)")

    def script(self, method: str, body: str = "", content_type: str = "") -> str:
        key = (method, body, content_type)
        if key not in self._scripts:
            path = os.path.join(self.workdir, "wrk-%d.lua" % len(self._scripts))
            lines = ['wrk.method = "%s"' % method]
            if body:
                lines.append("wrk.body = [==[%s]==]" % body)
            if content_type:
                lines.append('wrk.headers["Content-Type"] = "%s"' % content_type)
            with open(path, "w") as f:
                f.write("\n".join(lines) + "\n")
            self._scripts[key] = path
        return self._scripts[key]

    def command(self, url: str, script: str, seconds: float, connections: int = 50,
                threads: int = 1) -> List[str]:
        self.check()
        return [self.binary, "-t%d" % threads, "-c%d" % connections, "-d%ds" % max(1, round(seconds)),
                "--timeout", "5s", "-s", script, url]

    def run(self, url: str, script: str, seconds: float, connections: int = 50,
            threads: int = 1) -> Dict[str, float]:
        """One wrk run; its requests/s and error counts."""
        argv = self.command(url, script, seconds, connections, threads)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            raise BenchError("wrk did not finish") from None
        return self.parse(done.stdout, done.stderr)

    @staticmethod
    def parse(out: str, err: str = "") -> Dict[str, float]:
        rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if rate is None:
            raise BenchError("wrk failed: %s" % (err or out).strip()[-200:])
        result = {"rps": float(rate.group(1)), "errors": 0.0, "non2xx": 0.0}
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if bad:
            result["non2xx"] = float(bad.group(1))
        sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        if sock:
            result["errors"] = float(sum(int(n) for n in sock.groups()))
        requests = re.search(r"(\d+) requests in", out)
        result["requests"] = float(requests.group(1)) if requests else 0.0
        return result

    def start(self, url: str, script: str, seconds: float, connections: int,
              threads: int = 1) -> subprocess.Popen:
        """wrk in the background (a publish flood); finish it with :meth:`finish`."""
        return subprocess.Popen(self.command(url, script, seconds, connections, threads),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, preexec_fn=_die_with_parent)

    @staticmethod
    def kill(popen: subprocess.Popen) -> None:
        """End a flood at once (the run is being interrupted)."""
        if popen.poll() is None:
            popen.kill()
        popen.communicate()

    def finish(self, popen: subprocess.Popen, timeout: float) -> Dict[str, float]:
        try:
            out, err = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(popen)
            raise BenchError("wrk flood did not finish") from None
        return self.parse(out, err)


def stamp(size: int = 64) -> str:
    """A message body carrying the send time (CLOCK_MONOTONIC) as ``@<seconds>@``."""
    text = "@%.6f@" % time.monotonic()
    return text + "x" * max(0, size - len(text))


class _Response:
    """Reads one HTTP/1.1 response off a socket (Content-Length or chunked)."""

    def __init__(self) -> None:
        self.data = b""

    def feed(self, data: bytes) -> Optional[int]:
        """The status once the whole response is in, else None."""
        self.data += data
        head_end = self.data.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = self.data[:head_end].lower()
        status = int(head[9:12])
        body = self.data[head_end + 4:]
        length = re.search(rb"\r\ncontent-length: *(\d+)", head)
        if length is not None:
            done = len(body) >= int(length.group(1))
        elif b"transfer-encoding: chunked" in head:
            done = body.endswith(b"0\r\n\r\n")
        else:
            done = status in (204, 304)
        return status if done else None


def paced_publish(port: int, path: str, rate: float, seconds: float,
                  body_for: Callable[[], Tuple[bytes, str]], connections: int = 4) -> Dict[str, float]:
    """POST ``body_for()`` to ``path`` ``rate`` times a second for ``seconds``.

    Open loop: each request leaves at its time on a keep-alive connection that
    is not waiting for an answer, so a slow answer does not delay the next
    message. Each body is made (and stamped) just before it is sent.
    """
    socks = []
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(sock)
    waiting: Dict[socket.socket, _Response] = {}
    interval = 1.0 / rate
    total = int(round(rate * seconds))
    start = time.monotonic()
    sent = errors = 0
    late = 0.0
    head = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % (path, port)
            + "Content-Type: %s\r\nContent-Length: %d\r\n\r\n")
    try:
        while sent < total or waiting:
            now = time.monotonic()
            due = start + sent * interval
            idle = [sock for sock in socks if sock not in waiting]
            if sent < total and due <= now and idle:
                late = max(late, now - due)
                body, content_type = body_for()
                idle[0].sendall((head % (content_type, len(body))).encode() + body)
                waiting[idle[0]] = _Response()
                sent += 1
                continue
            timeout = max(0.0, due - now) if sent < total and idle else 5.0
            readable, _, _ = select.select(list(waiting), [], [], timeout)
            if not readable and timeout == 5.0:
                raise BenchError("a publish was not answered within 5 s")
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    raise BenchError("the server closed a publishing connection")
                status = waiting[sock].feed(data)
                if status is not None:
                    del waiting[sock]
                    if status >= 300:
                        errors += 1
    finally:
        for sock in socks:
            sock.close()
    return {"sent": sent, "errors": errors, "max_late": late}


def form_stamp() -> Tuple[bytes, str]:
    return (b"value=" + urllib.parse.quote(stamp()).encode(), "application/x-www-form-urlencoded")


def text_stamp() -> Tuple[bytes, str]:
    return (stamp().encode(), "text/plain")


def hotqueue_puts(socket_path: str, seconds: float, message: str = SMALL_MESSAGE) -> Optional[float]:
    """HotQueue puts per second from this process (its default pickle serializer)."""
    try:
        from hotqueue import HotQueue
    except ImportError:
        raise BenchError("hotqueue not installed (bench/requirements.txt)") from None
    queue = HotQueue("bench", unix_socket_path=socket_path)
    queue.put(message)
    count = 0
    start = time.monotonic()
    deadline = start + seconds
    put = queue.put
    while True:
        for _ in range(100):
            put(message)
        count += 100
        if time.monotonic() >= deadline:
            break
    return count / (time.monotonic() - start)


def _http_request(method: str, path: str, port: int, body: bytes = b"",
                  content_type: str = "application/x-www-form-urlencoded") -> bytes:
    head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % (method, path, port)
    if body or method == "POST":
        head += "Content-Type: %s\r\nContent-Length: %d\r\n" % (content_type, len(body))
    return (head + "\r\n").encode() + body


def _read_response(sock: socket.socket, timeout: float) -> Tuple[int, bytes]:
    """One whole HTTP/1.1 response from ``sock``: (status, body)."""
    status, head, body = _read_whole(sock, timeout)
    return status, body


def _read_whole(sock: socket.socket, timeout: float) -> Tuple[int, bytes, bytes]:
    """One whole HTTP/1.1 response from ``sock``: (status, head, body)."""
    response = _Response()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            raise BenchError("no response within %.0f s" % timeout)
        data = sock.recv(65536)
        if not data:
            raise BenchError("the server closed the connection")
        status = response.feed(data)
        if status is not None:
            end = response.data.find(b"\r\n\r\n")
            return status, response.data[:end], response.data[end + 4:]


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def longpoll_latency(get_port: int, get_path: str, pub_port: int, pub_path: str,
                     samples: int, warm: int = 50, settle: float = 0.003,
                     pub_body: Callable[[int], Tuple[bytes, str]] = lambda i: (b"value=m%d" % i, FORM),
                     headers_for: Optional[Callable[[bytes], str]] = None,
                     after: Optional[Callable[[socket.socket, bytes], None]] = None,
                     deadline: float = 120.0) -> Dict[str, Any]:
    """Publish -> consume latency for a consumer that already waits in a long-poll.

    Each round sends the long-poll GET on one keep-alive connection, gives the
    server ``settle`` seconds to park it, then POSTs one message (on another
    connection, possibly to another server) and times from just before the
    POST is written to the moment the GET's whole response is in. The body
    must carry the published message (``"m<i>"``, JSON), else the round counts as a
    miss. ``after(sock, body)`` runs untimed (an ack); ``headers_for(head)``
    gives extra request header lines for the next GET (nchan's message id).
    """
    getter, publisher = _connect(get_port), _connect(pub_port)
    latencies: List[float] = []
    misses = 0
    extra = ""
    stop_at = time.monotonic() + deadline
    try:
        for i in range(warm + samples):
            if time.monotonic() > stop_at:
                break
            request = _http_request("GET", get_path, get_port)
            if extra:
                request = request[:-2] + extra.encode() + b"\r\n"
            getter.sendall(request)
            time.sleep(settle)
            body, content_type = pub_body(i)
            message = _http_request("POST", pub_path, pub_port, body, content_type)
            started = time.monotonic()
            publisher.sendall(message)
            status, head, got = _read_whole(getter, 15.0)
            took = time.monotonic() - started
            pub_status, _ = _read_response(publisher, 15.0)
            if pub_status >= 300:
                raise BenchError("POST %s answered %d" % (pub_path, pub_status))
            if headers_for is not None and status == 200:
                extra = headers_for(head)
            if status != 200 or (b'"m%d"' % i) not in got:
                misses += 1
                continue
            if after is not None:
                after(publisher, got)
            if i >= warm:
                latencies.append(took)
    finally:
        getter.close()
        publisher.close()
    latencies.sort()
    return {"samples": len(latencies), "misses": misses, "latencies": latencies}


def post_on(sock: socket.socket, port: int, path: str, body: bytes, content_type: str = FORM) -> int:
    """POST on an open keep-alive connection; the status."""
    sock.sendall(_http_request("POST", path, port, body, content_type))
    return _read_response(sock, 15.0)[0]


def nchan_next(head: bytes) -> str:
    """The request headers that ask nchan's long-poll for the message after this one."""
    lines = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        lines[name.strip().lower()] = value.strip().decode("latin-1")
    return "If-Modified-Since: %s\r\nIf-None-Match: %s\r\n" % (
        lines.get(b"last-modified", ""), lines.get(b"etag", ""))
