"""A hardened HTTP/1.x connection for Cyclone, and a corrected chunked transform.

Cyclone 1.3's ``HTTPConnection`` has no limits (header size, body size, read
time), mis-handles pipelined requests and mixes str and bytes in its chunked
encoding on Python 3. This module replaces both; ``Application.protocol`` is
set to :class:`HTTPConnection` in app.py. Faults found before a handler runs
are answered here with the same JSON error body the handlers use.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from typing import Any, Dict, List, Optional

import attr
import cyclone.web
import orjson
from cyclone import httputil
from cyclone.httpserver import HTTPRequest
from twisted.internet import address, interfaces, protocol, tcp
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["HttpLimits", "HTTPConnection", "ChunkedTransferEncoding", "parse_form", "fast_write"]

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# every byte from 0x21 to 0x7e: what quote_from_bytes leaves alone in a request target
_PRINTABLE_ASCII = bytes(range(0x21, 0x7f))
_REASONS = {400: "Bad Request", 408: "Request Timeout", 411: "Length Required",
            413: "Payload Too Large", 431: "Request Header Fields Too Large",
            505: "HTTP Version Not Supported"}
_MAX_HEADERS = 100
_FORM = "application/x-www-form-urlencoded"


@attr.s(frozen=True, auto_attribs=True)
class HttpLimits:
    max_request_bytes: int = 32 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    request_timeout: float = 30.0
    idle_timeout: float = 120.0


class ChunkedTransferEncoding(cyclone.web.OutputTransform):
    """HTTP/1.1 chunked encoding for responses of unknown length, in bytes."""

    def __init__(self, request: Any) -> None:
        self._chunking = request.supports_http_1_1()

    def transform_first_chunk(self, status_code, headers, chunk, finishing):
        if self._chunking and status_code not in (204, 304):
            if "Content-Length" in headers or "Transfer-Encoding" in headers:
                self._chunking = False
            else:
                headers["Transfer-Encoding"] = "chunked"
                chunk = self.transform_chunk(chunk, finishing)
        else:
            self._chunking = False
        return status_code, headers, chunk

    def transform_chunk(self, block, finishing):
        if self._chunking:
            if block:
                block = b"%x\r\n%s\r\n" % (len(block), block)
            if finishing:
                block += b"0\r\n\r\n"
        return block


def fast_write(transport: Any, data: bytes) -> None:
    """``transport.write(data)``, but sent at once when nothing is queued.

    Twisted queues every write and sends it on the next reactor turn, after
    registering the socket for writing and before unregistering it: three
    system calls and a reactor dispatch per write. A stream writes small frames
    to many sockets whose send buffers are almost always empty, so for a plain
    TCP connection with nothing pending we send directly and queue only what
    the kernel did not take (flow control and producers work as before).
    """
    if type(transport) is tcp.Server and not transport.dataBuffer and not transport._tempDataBuffer \
            and transport.connected and not transport.disconnecting:
        try:
            sent = transport.socket.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            # let Twisted find the error on its own path and close the connection
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


_HEADER_NAMES: Dict[bytes, str] = {}


def _header_name(name: bytes) -> str:
    """Http-Header-Case, with a cache of bounded size."""
    known = _HEADER_NAMES.get(name)
    if known is None:
        known = "-".join(word.capitalize() for word in name.decode("ascii").split("-"))
        if len(_HEADER_NAMES) < 512:
            _HEADER_NAMES[name] = known
    return known


class Request(HTTPRequest):
    """Cyclone's request without the work RestMQ never uses: the query is left
    unparsed (handlers read ``raw_arguments``, decoded strictly) and the scheme
    comes from the connection."""

    def __init__(self, connection: Any, method: str, uri: str, version: str,
                 headers: Any, remote_ip: str, body: bytes) -> None:
        self.method = method
        self.uri = uri
        self.version = version
        self.headers = headers
        self.body = body
        self.remote_ip = remote_ip
        self.protocol = connection.scheme
        if connection.xheaders:
            forwarded = headers.get("X-Real-Ip", headers.get("X-Forwarded-For"))
            if forwarded and self._valid_ip(forwarded):
                self.remote_ip = forwarded
            scheme = headers.get("X-Scheme", headers.get("X-Forwarded-Proto"))
            if scheme in ("http", "https"):
                self.protocol = scheme
        self.host = headers.get("Host") or "127.0.0.1"
        self.files: Dict[str, Any] = {}
        self.connection = connection
        self._start_time = time.time()
        self._finish_time = None
        self.path, _, self.query = uri.partition("?")
        self.arguments: Dict[str, Any] = {}
        self.raw_arguments: Dict[str, List[bytes]] = {}


def parse_form(body: bytes) -> Dict[str, List[bytes]]:
    """Split an urlencoded body or query into raw byte values (decoded later, strictly)."""
    fields: Dict[str, List[bytes]] = {}
    unquote = urllib.parse.unquote_to_bytes
    for pair in body.split(b"&"):
        if not pair:
            continue
        name, _, value = pair.partition(b"=")
        if b"%" in name or b"+" in name:
            name = unquote(name.replace(b"+", b" "))
        if b"%" in value or b"+" in value:
            value = unquote(value.replace(b"+", b" "))
        fields.setdefault(name.decode("latin-1"), []).append(value)
    return fields


def error_body(status: int, code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


class _Deadlines:
    """One timer for every connection of an application: each connection sets a
    deadline (or None) and the sweep closes those that passed it. Cheaper than
    scheduling and cancelling a timer per request."""

    def __init__(self, clock: Any, interval: float) -> None:
        self.clock = clock
        self.interval = interval
        self.connections: set = set()
        self._loop: Any = None

    def add(self, connection: "HTTPConnection") -> None:
        self.connections.add(connection)
        if self._loop is None:
            from twisted.internet import task
            self._loop = task.LoopingCall(self._sweep)
            self._loop.clock = self.clock
            self._loop.start(self.interval, now=False)

    def discard(self, connection: "HTTPConnection") -> None:
        self.connections.discard(connection)
        if not self.connections and self._loop is not None:
            if self._loop.running:
                self._loop.stop()
            self._loop = None

    def _sweep(self) -> None:
        now = self.clock.seconds()
        for connection in [c for c in self.connections if c.deadline is not None and c.deadline <= now]:
            connection._timed_out()


def _deadlines(application: Any, clock: Any, limits: "HttpLimits") -> _Deadlines:
    deadlines = application.settings.get("_deadlines")
    if deadlines is None:
        interval = max(0.01, min(1.0, limits.request_timeout / 4, limits.idle_timeout / 4))
        deadlines = application.settings["_deadlines"] = _Deadlines(clock, interval)
    return deadlines


class _Rejected(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class HTTPConnection(protocol.Protocol):
    """One client connection: parses requests within limits, one at a time.

    The factory is the Cyclone ``Application``; its settings carry
    ``http_limits`` (HttpLimits) and ``clock``.
    """

    log = Logger()
    factory: Any
    # a connected TCP or UNIX server transport (also its IPushProducer); Twisted's
    # Optional[ITransport] is a zope interface that mypy cannot check without a plugin
    transport: Any

    _IDLE, _HEAD, _BODY, _BUSY = range(4)

    def connectionMade(self) -> None:
        settings = self.factory.settings
        self.limits: HttpLimits = settings.get("http_limits") or HttpLimits()
        self.clock = settings["clock"]
        self.xheaders = settings.get("xheaders", False)
        self.no_keep_alive = False
        self._buffer = bytearray()
        self._state = self._IDLE
        self._request: Optional[HTTPRequest] = None
        self._head: Optional[tuple] = None
        self._remaining = 0
        self._finish_waiters: List[Any] = []
        self._must_close = False
        self._response_started = False
        self._processing = False
        self._closed = False
        self._upgraded: Any = None
        self._deadlines = _deadlines(self.factory, self.clock, self.limits)
        self.deadline: Optional[float] = None
        self._deadlines.add(self)
        self._reset_timer(self.limits.idle_timeout)
        self.scheme = "https" if interfaces.ISSLTransport.providedBy(self.transport) else "http"
        peer = self.transport.getPeer()
        self._remote_ip = "unix:" if isinstance(peer, address.UNIXAddress) else peer.host

    # reading

    def dataReceived(self, data: bytes) -> None:
        if self._upgraded is not None:
            self._upgraded.dataReceived(data)
            return
        self._buffer += data
        if self._state == self._IDLE:
            self._state = self._HEAD
            self._reset_timer(self.limits.request_timeout)
        if self._state == self._BUSY:
            # a pipelined request: keep a little of it until the current one is
            # answered, then stop reading (TCP holds the rest), so a stream's
            # connection cannot be made to buffer megabytes
            if len(self._buffer) > self.limits.max_header_bytes:
                self.transport.pauseProducing()
            return
        self._process()

    def _process(self) -> None:
        if self._processing:
            return
        self._processing = True
        try:
            while not self._closed and self._state != self._BUSY:
                if not self._step():
                    break
        except _Rejected as rejected:
            self._reject(rejected.status, rejected.code, rejected.message)
        finally:
            self._processing = False

    def _step(self) -> bool:
        """Advance the parser; False when more bytes are needed."""
        if self._state in (self._IDLE, self._HEAD):
            while self._buffer[:2] == b"\r\n":
                del self._buffer[:2]
            if not self._buffer:
                return False
            if self._state == self._IDLE:
                self._state = self._HEAD
                self._reset_timer(self.limits.request_timeout)
            end = self._buffer.find(b"\r\n\r\n", 0, self.limits.max_header_bytes + 4)
            if end < 0:
                if len(self._buffer) > self.limits.max_header_bytes:
                    raise _Rejected(431, "headers_too_large", "request head larger than %d bytes"
                                    % self.limits.max_header_bytes)
                return False
            head = bytes(self._buffer[:end])
            del self._buffer[:end + 4]
            self._head = self._parse_head(head)
            length = self._head[4]
            if length:
                self._state = self._BODY
                self._remaining = length
            else:
                self._dispatch(b"")
            return True
        if self._state == self._BODY:
            if len(self._buffer) < self._remaining:
                return False
            body = bytes(self._buffer[:self._remaining])
            del self._buffer[:self._remaining]
            self._dispatch(body)
            return True
        return False

    def _parse_head(self, head: bytes) -> tuple:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not _TOKEN.match(parts[0]) or not parts[1]:
            raise _Rejected(400, "bad_request", "malformed request line")
        method, target, version = parts
        if version not in (b"HTTP/1.1", b"HTTP/1.0"):
            if version.startswith(b"HTTP/"):
                raise _Rejected(505, "bad_request", "only HTTP/1.0 and HTTP/1.1 are served")
            raise _Rejected(400, "bad_request", "malformed request line")
        try:
            target_text = target.decode("ascii")
        except UnicodeDecodeError:
            # the original took raw UTF-8 in a path (curl sends it so): escape those bytes
            target_text = urllib.parse.quote_from_bytes(target, safe=_PRINTABLE_ASCII)
        if len(lines) - 1 > _MAX_HEADERS:
            raise _Rejected(431, "headers_too_large", "more than %d header fields" % _MAX_HEADERS)
        headers = httputil.HTTPHeaders()
        as_list = headers._as_list
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.match(name):
                raise _Rejected(400, "bad_request", "malformed header field")
            # HTTPHeaders.add would remember every header name a client ever sent
            # (an unbounded cache); names are normalized here instead
            key = _header_name(name)
            text = value.strip(b" \t").decode("latin-1")
            if key in as_list:
                as_list[key].append(text)
                dict.__setitem__(headers, key, headers[key] + "," + text)
            else:
                as_list[key] = [text]
                dict.__setitem__(headers, key, text)
        if "Transfer-Encoding" in headers:
            if "Content-Length" in headers:
                raise _Rejected(400, "bad_request", "both Transfer-Encoding and Content-Length")
            raise _Rejected(411, "length_required", "send the body with a Content-Length")
        length = 0
        lengths = set(headers.get_list("Content-Length"))
        if lengths:
            if len(lengths) != 1:
                raise _Rejected(400, "bad_request", "conflicting Content-Length values")
            text = lengths.pop().strip()
            if not text.isdigit() or len(text) > 18:
                raise _Rejected(400, "bad_request", "Content-Length must be a non-negative integer")
            length = int(text)
            if length > self.limits.max_request_bytes:
                raise _Rejected(413, "message_too_large", "request body of %d bytes is over the %d byte limit"
                                % (length, self.limits.max_request_bytes))
        if length and headers.get("Expect", "").lower() == "100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return method.decode("ascii"), target_text, version.decode("ascii"), headers, length

    def _dispatch(self, body: bytes) -> None:
        assert self._head is not None, "_step parses the head before it dispatches"
        method, uri, version, headers, _ = self._head
        self._head = None
        self._state = self._BUSY
        self._cancel_timer()
        request = Request(self, method, uri, version, headers, self._remote_ip, body)
        raw = parse_form(request.query.encode("ascii")) if request.query else {}
        if body and method in ("POST", "PUT", "PATCH", "DELETE") and \
                headers.get("Content-Type", "").startswith(_FORM):
            for name, values in parse_form(body).items():
                raw.setdefault(name, []).extend(values)
        request.raw_arguments = raw
        self._request = request
        self._must_close = False
        self._response_started = False
        self.factory(request)

    # writing (called by cyclone's HTTPRequest)

    def write(self, chunk: bytes) -> None:
        if self._closed or self._request is None:
            return
        if not self._response_started:
            self._response_started = True
            head = chunk[:chunk.find(b"\r\n\r\n") + 2]
            status = head[9:12]
            if status not in (b"204", b"304") and b"\r\nContent-Length:" not in head \
                    and b"\r\nTransfer-Encoding: chunked" not in head:
                # no length and no chunking: the end of the body is the end of the connection
                self._must_close = True
        fast_write(self.transport, chunk)

    def finish(self) -> None:
        request, self._request = self._request, None
        if request is None:
            return
        disconnect = self.no_keep_alive or self._must_close
        if not disconnect:
            connection_header = request.headers.get("Connection", "").lower()
            if request.supports_http_1_1():
                disconnect = connection_header == "close"
            else:
                disconnect = connection_header != "keep-alive"
        self._fire_finish(None)
        if disconnect or self._closed:
            self._closed = True
            self.transport.loseConnection()
            return
        self._state = self._HEAD if self._buffer else self._IDLE
        self._reset_timer(self.limits.request_timeout if self._buffer else self.limits.idle_timeout)
        self.transport.resumeProducing()
        if self._buffer:
            # handle a pipelined request on the next turn: keeps recursion flat
            self.clock.callLater(0, self._process)

    def upgrade(self, receiver: Any) -> None:
        """Hand the connection to another protocol (a WebSocket session): it gets
        every byte from now on and ``connectionLost``."""
        self._upgraded = receiver
        self._cancel_timer()
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            receiver.dataReceived(data)

    def notifyFinish(self):
        """A Deferred that fires when the current response ends or the client goes away."""
        from twisted.internet import defer
        waiter = defer.Deferred()
        self._finish_waiters.append(waiter)
        return waiter

    def _fire_finish(self, reason: Any) -> None:
        waiters, self._finish_waiters = self._finish_waiters, []
        for waiter in waiters:
            waiter.callback(reason)

    # faults and timers

    def _reject(self, status: int, code: str, message: str) -> None:
        body = error_body(status, code, message)
        self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                             % (status, _REASONS[status].encode(), len(body), body))
        self._closed = True
        self._cancel_timer()
        self.transport.loseConnection()

    def _timed_out(self) -> None:
        self.deadline = None
        if self._state == self._IDLE:
            self._closed = True
            self.transport.loseConnection()
        elif self._state in (self._HEAD, self._BODY):
            self._reject(408, "request_timeout", "request not received within %.0f s"
                         % self.limits.request_timeout)

    def _reset_timer(self, seconds: float) -> None:
        self.deadline = self.clock.seconds() + seconds

    def _cancel_timer(self) -> None:
        self.deadline = None

    def connectionLost(self, reason: Optional[Failure] = protocol.connectionDone) -> None:
        self._closed = True
        self._cancel_timer()
        self._deadlines.discard(self)
        self._request = None
        if self._upgraded is not None:
            self._upgraded.connectionLost(reason)
        self._fire_finish(reason.getErrorMessage() if reason is not None else None)
