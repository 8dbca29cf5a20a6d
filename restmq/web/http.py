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
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from restmq.web.hosts import AllowedHosts

__all__ = ["HttpLimits", "HTTPConnection", "ChunkedTransferEncoding", "ConnectionLimiter",
           "parse_form", "fast_write", "buffered"]

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# every byte from 0x21 to 0x7e: what quote_from_bytes leaves alone in a request target
_PRINTABLE_ASCII = bytes(range(0x21, 0x7f))
_REASONS = {400: "Bad Request", 408: "Request Timeout", 411: "Length Required",
            413: "Payload Too Large", 421: "Misdirected Request", 431: "Request Header Fields Too Large",
            505: "HTTP Version Not Supported"}
_MAX_HEADERS = 100
_FORM = "application/x-www-form-urlencoded"


@attr.s(frozen=True, auto_attribs=True)
class HttpLimits:
    max_request_bytes: int = 32 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    request_timeout: float = 30.0
    idle_timeout: float = 120.0
    header_timeout: float = 10.0
    max_output_bytes: int = 1024 * 1024


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


def buffered(transport: Any) -> int:
    """Bytes written to ``transport`` that the kernel has not taken yet (Twisted's
    FileDescriptor keeps them in ``dataBuffer`` past ``offset`` and in
    ``_tempDataBuffer``); 0 for a transport that keeps no such buffer."""
    data = getattr(transport, "dataBuffer", b"")
    return len(data) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)


class ConnectionLimiter:
    """Counts the open connections, in total and per address, and refuses those
    over ``max_total`` / ``max_per_ip``; refusals are logged at most once a second.

    ``0`` for a limit means "sized to the file descriptor limit": the soft
    RLIMIT_NOFILE less what the process needs besides (Redis, logs), and three
    quarters of that for one address (a reverse proxy is one address: raise it
    there).
    """

    log = Logger()
    #: descriptors kept for everything but client connections
    RESERVED_FDS = 64

    def __init__(self, max_total: int, max_per_ip: int, clock: Any) -> None:
        if not max_total:
            import resource
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            max_total = max(16, soft - self.RESERVED_FDS) if soft != resource.RLIM_INFINITY else 1 << 20
        self.max_total = max_total
        self.max_per_ip = max_per_ip or max(1, max_total * 3 // 4)
        self.clock = clock
        self.total = 0
        self.per_ip: Dict[str, int] = {}
        self.refused = 0
        self._unlogged = 0
        self._last_log = float("-inf")

    def admit(self, ip: str) -> bool:
        """Count a new connection from ``ip``; False (and count a refusal) when over a limit."""
        held = self.per_ip.get(ip, 0)
        if self.total >= self.max_total or held >= self.max_per_ip:
            self._refuse(ip, "total" if self.total >= self.max_total else "per address")
            return False
        self.total += 1
        self.per_ip[ip] = held + 1
        return True

    def release(self, ip: str) -> None:
        held = self.per_ip.get(ip, 0)
        if held <= 0:
            return
        self.total -= 1
        if held == 1:
            del self.per_ip[ip]
        else:
            self.per_ip[ip] = held - 1

    def _refuse(self, ip: str, which: str) -> None:
        self.refused += 1
        self._unlogged += 1
        now = self.clock.seconds()
        if now - self._last_log >= 1.0:
            self.log.warn("Refused {count} connection(s) over the {which} limit (latest from {remote}; "
                          "max_connections {total}, max_connections_per_ip {per_ip})",
                          count=self._unlogged, which=which, remote=ip, total=self.max_total,
                          per_ip=self.max_per_ip)
            self._unlogged = 0
            self._last_log = now


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


_ABSENT = object()


class RequestHeaders(httputil.HTTPHeaders):
    """cyclone's HTTPHeaders, read without normalizing a name that is already in
    Http-Header-Case (the parser stores every name so): one dict probe for each of
    the dozen lookups a request makes; any other casing is normalized as before."""

    def __init__(self) -> None:  # what HTTPHeaders() does for no arguments
        dict.__init__(self)
        self._as_list: Dict[str, List[str]] = {}
        self._last_key = None

    def get(self, name: str, default: Any = None) -> Any:
        value = dict.get(self, name, _ABSENT)
        if value is not _ABSENT:
            return value
        norm = httputil.HTTPHeaders._normalize_name(name)
        return default if norm == name else dict.get(self, norm, default)

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self, name) or (
            isinstance(name, str) and dict.__contains__(self, httputil.HTTPHeaders._normalize_name(name)))

    def get_list(self, name: str) -> List[str]:
        values = self._as_list.get(name)
        return values if values is not None else self._as_list.get(
            httputil.HTTPHeaders._normalize_name(name), [])


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
        for connection in [c for c in self.connections
                           if c.output_deadline is not None and c.output_deadline <= now]:
            connection._stalled_too_long()


def _deadlines(application: Any, clock: Any, limits: "HttpLimits") -> _Deadlines:
    deadlines = application.settings.get("_deadlines")
    if deadlines is None:
        interval = max(0.01, min(1.0, limits.request_timeout / 4, limits.idle_timeout / 4,
                                 limits.header_timeout / 4))
        deadlines = application.settings["_deadlines"] = _Deadlines(clock, interval)
    return deadlines


class _Rejected(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@implementer(IPushProducer)
class HTTPConnection(protocol.Protocol):
    """One client connection: parses requests within limits, one at a time.

    The factory is the Cyclone ``Application``; its settings carry
    ``http_limits`` (HttpLimits), ``allowed_hosts`` (AllowedHosts) and ``clock``.

    It is the push producer of its transport for its whole life, so that it
    learns when the client stops reading: while more than ``max_output_bytes``
    wait to be sent, it reads nothing more (no request is parsed, no WebSocket
    frame answered), resumes once they are sent, and hangs up if that takes
    longer than ``idle_timeout``. A stream that owns the connection attaches its
    own producer (:meth:`attach_producer`), which gets the same signals.
    """

    log = Logger()
    factory: Any
    # a connected TCP or UNIX server transport (also its IPushProducer); Twisted's
    # Optional[ITransport] is a zope interface that mypy cannot check without a plugin
    transport: Any

    _IDLE, _HEAD, _BODY, _BUSY = range(4)

    # an idle stream is mostly this object: slots keep its state out of an
    # instance dict of some 30 keys (about 1.2 KB less per connection); Twisted's
    # own attributes (transport, factory, connected) stay in the base's dict
    __slots__ = ("_admitted", "limits", "clock", "xheaders", "no_keep_alive", "_buffer", "_state",
                 "_request", "_head", "_remaining", "_finish_waiters", "_must_close",
                 "_response_started", "_processing", "_closed", "_upgraded", "_allowed_hosts",
                 "_served", "_producer", "_backlog", "_stalled", "_held", "_reading",
                 "output_deadline", "_deadlines", "deadline", "scheme", "_remote_ip")

    def __init__(self) -> None:
        #: the address the factory's ConnectionLimiter counted this connection under
        self._admitted: Optional[str] = None
        # read by the deadline sweep and connectionLost even before connectionMade
        self.deadline: Optional[float] = None
        self.output_deadline: Optional[float] = None
        self._closed = False

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
        self._allowed_hosts: AllowedHosts = settings.get("allowed_hosts") or AllowedHosts()
        self._served = 0
        self._producer: Any = None
        # reading stops while a pipelined request waits (_backlog) or while the
        # client does not read what it is sent (_stalled)
        self._backlog = False
        self._stalled = False
        self._held = False
        self._reading = True
        self.output_deadline = None
        self._deadlines = _deadlines(self.factory, self.clock, self.limits)
        self.deadline = None
        self._deadlines.add(self)
        # a connection that never sends a request is closed sooner than an idle keep-alive one
        self._reset_timer(min(self.limits.header_timeout, self.limits.idle_timeout))
        self.transport.registerProducer(self, True)
        self.scheme = "https" if interfaces.ISSLTransport.providedBy(self.transport) else "http"
        peer = self.transport.getPeer()
        self._remote_ip = "unix:" if isinstance(peer, address.UNIXAddress) else peer.host

    # reading

    def dataReceived(self, data: bytes) -> None:
        if self._upgraded is not None:
            self._upgraded.dataReceived(data)
            self.check_output()
            return
        self._buffer += data
        if self._state == self._IDLE:
            self._state = self._HEAD
            self._start_request_timer()
        if self._state == self._BUSY or self._stalled:
            # a pipelined request: keep a little of it until the current one is
            # answered, then stop reading (TCP holds the rest), so a stream's
            # connection cannot be made to buffer megabytes
            if len(self._buffer) > self.limits.max_header_bytes:
                self._backlog = True
                self._update_reading()
            return
        self._process()

    def _start_request_timer(self) -> None:
        # the first request's head is also due header_timeout after the connection opened
        deadline = self.clock.seconds() + self.limits.request_timeout
        if not self._served and self.deadline is not None:
            deadline = min(deadline, self.deadline)
        self.deadline = deadline

    def _process(self) -> None:
        if self._processing:
            return
        self._processing = True
        try:
            while not self._closed and self._state != self._BUSY and not self._stalled:
                if not self._step():
                    break
                self.check_output()
        except _Rejected as rejected:
            self._reject(rejected.status, rejected.code, rejected.message)
        finally:
            self._processing = False

    # output flow control

    def check_output(self) -> bool:
        """Stop reading while more than ``max_output_bytes`` wait to be sent;
        True while that is so."""
        if not self._stalled and not self._closed and buffered(self.transport) > self.limits.max_output_bytes:
            self._stalled = True
            self.output_deadline = self.clock.seconds() + self.limits.idle_timeout
            self._update_reading()
        return self._stalled

    def hold_reading(self, held: bool) -> None:
        """Stop (or resume) reading for a reason of the upgraded protocol's own."""
        self._held = held
        self._update_reading()

    def _update_reading(self) -> None:
        reading = not (self._stalled or self._backlog or self._held)
        if reading != self._reading and not self._closed:
            self._reading = reading
            if reading:
                self.transport.resumeProducing()
            else:
                self.transport.pauseProducing()

    def attach_producer(self, producer: Any) -> None:
        """Forward the transport's pause/resume/stop to ``producer`` (a stream) too."""
        self._producer = producer
        if getattr(self.transport, "producerPaused", False):
            producer.pauseProducing()

    def detach_producer(self) -> None:
        self._producer = None

    def pauseProducing(self) -> None:
        # the transport holds more than its bufferSize (64 KiB): a stream slows down
        if self._producer is not None:
            self._producer.pauseProducing()
        self.check_output()

    def resumeProducing(self) -> None:
        # everything written so far was sent
        if self._producer is not None:
            self._producer.resumeProducing()
        if self._closed:
            # we asked to close while paused: let the transport finish
            self.transport.unregisterProducer()
            return
        if self._stalled:
            self._stalled = False
            self.output_deadline = None
            self._update_reading()
            if self._upgraded is not None:
                resume = getattr(self._upgraded, "resume", None)
                if resume is not None:
                    resume()
            elif self._buffer and self._state != self._BUSY:
                self.clock.callLater(0, self._process)

    def stopProducing(self) -> None:
        if self._producer is not None:
            self._producer.stopProducing()

    def _stalled_too_long(self) -> None:
        self.output_deadline = None
        self.log.info("Closed a connection from {remote} that read nothing for {seconds:.0f} s "
                      "with {pending} bytes waiting", remote=self._remote_ip,
                      seconds=self.limits.idle_timeout, pending=buffered(self.transport))
        self._closed = True
        self._cancel_timer()
        self.transport.abortConnection()

    def lose_connection(self) -> None:
        """Close once everything written is sent."""
        self._closed = True
        self._cancel_timer()
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def _step(self) -> bool:
        """Advance the parser; False when more bytes are needed."""
        if self._state in (self._IDLE, self._HEAD):
            while self._buffer[:2] == b"\r\n":
                del self._buffer[:2]
            if not self._buffer:
                return False
            if self._state == self._IDLE:
                self._state = self._HEAD
                self._start_request_timer()
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
                if not self._served:
                    self._reset_timer(self.limits.request_timeout)
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
                # HTTP/2's preface ("PRI * HTTP/2.0") and HTTP/1.2+ land here
                raise _Rejected(505, "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1 are served")
            raise _Rejected(400, "bad_request", "malformed request line")
        try:
            target_text = target.decode("ascii")
        except UnicodeDecodeError:
            # the original took raw UTF-8 in a path (curl sends it so): escape those bytes
            target_text = urllib.parse.quote_from_bytes(target, safe=_PRINTABLE_ASCII)
        if len(lines) - 1 > _MAX_HEADERS:
            raise _Rejected(431, "headers_too_large", "more than %d header fields" % _MAX_HEADERS)
        headers = RequestHeaders()
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
        host = headers.get("Host")
        if not self._allowed_hosts.allows(host):
            # DNS rebinding: a page whose name now points here must not be served
            raise _Rejected(421, "misdirected_request", "Host %r is not served here (see allowed_hosts)"
                            % (host or "")[:200])
        if length and headers.get("Expect", "").lower() == "100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return method.decode("ascii"), target_text, version.decode("ascii"), headers, length

    def _dispatch(self, body: bytes) -> None:
        assert self._head is not None, "_step parses the head before it dispatches"
        method, uri, version, headers, _ = self._head
        self._head = None
        self._state = self._BUSY
        self._served += 1
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
            self.lose_connection()
            return
        self._state = self._HEAD if self._buffer else self._IDLE
        self._reset_timer(self.limits.request_timeout if self._buffer else self.limits.idle_timeout)
        self._backlog = False
        self._update_reading()
        if self._buffer and not self._stalled and not self._processing:
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
        self.lose_connection()

    def _timed_out(self) -> None:
        self.deadline = None
        if self._state == self._IDLE:
            self.lose_connection()
        elif self._state in (self._HEAD, self._BODY):
            if not self._served and self._state == self._HEAD and \
                    self.limits.header_timeout < self.limits.request_timeout:
                message = "request head not received within %.0f s" % self.limits.header_timeout
            else:
                message = "request not received within %.0f s" % self.limits.request_timeout
            self._reject(408, "request_timeout", message)

    def _reset_timer(self, seconds: float) -> None:
        self.deadline = self.clock.seconds() + seconds

    def _cancel_timer(self) -> None:
        self.deadline = None

    def connectionLost(self, reason: Optional[Failure] = protocol.connectionDone) -> None:
        self._closed = True
        self._cancel_timer()
        self.output_deadline = None
        self._deadlines.discard(self)
        limiter = getattr(self.factory, "limiter", None)
        if limiter is not None and self._admitted is not None:
            limiter.release(self._admitted)
        self._request = None
        if self._upgraded is not None:
            self._upgraded.connectionLost(reason)
        self._fire_finish(reason.getErrorMessage() if reason is not None else None)
