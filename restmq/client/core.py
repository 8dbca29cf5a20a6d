"""Python clients of RestMQ's HTTP API, in the spirit of HotQueue.

:class:`Queue` blocks, on the standard library alone::

    jobs = Queue("jobs", url="http://127.0.0.1:8888")
    jobs.put("one", "two")                 # several: one atomic batch request
    jobs.get(block=True, timeout=5)        # long-polls with wait=
    for message in jobs.consume():         # a Server-Sent Events stream
        ...

:class:`TxQueue` has the same methods for Twisted and returns Deferreds (it
needs treq: ``pip install restmq[twisted]``). :class:`Broker` and
:class:`TxBroker` cover what spans queues (list, stats, health).
"""

from __future__ import annotations

import base64
import http.client
import time
import urllib.parse
from typing import (Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple,
                    Union)

import attr
import orjson

__all__ = ["Queue", "TxQueue", "Broker", "TxBroker", "Message", "ClientError", "DEFAULT_URL"]

DEFAULT_URL = "http://127.0.0.1:8888"
#: a long-poll asks for at most this many seconds at a time (the server's max_wait is 60 by default)
LONG_POLL_STEP = 30.0
#: most messages one put() request carries (the server's max_batch is 1000 by default)
BATCH_SIZE = 1000


class ClientError(Exception):
    """RestMQ answered with an error: its HTTP status, error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__("%d %s: %s" % (status, code, message))
        self.status = status
        self.code = code
        self.message = message


@attr.s(frozen=True, auto_attribs=True)
class Message:
    """A message taken from a queue; ``receipt`` is set when it was reserved."""

    key: str
    value: Any
    receipt: Optional[str] = None
    deliveries: int = 0


Receipt = Union[str, Message]


@attr.s(frozen=True, auto_attribs=True)
class _Call:
    """One HTTP request and how to read its answer, whichever transport sends it."""

    method: str
    path: str
    parse: Callable[[int, bytes], Any]
    query: Sequence[Tuple[str, str]] = ()
    body: Optional[bytes] = None
    content_type: Optional[str] = None
    wait: float = 0.0  # the server may hold the request this long (long-poll)


def _error(status: int, body: bytes) -> ClientError:
    try:
        error = orjson.loads(body)["error"]
        return ClientError(status, str(error["code"]), str(error["message"]))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return ClientError(status, "http_error", body.decode("utf-8", "replace")[:200])


def _json(status: int, body: bytes) -> Any:
    """2xx: the JSON body (None for 204); anything else raises ClientError."""
    if not 200 <= status < 300:
        raise _error(status, body)
    if status == 204 or not body:
        return None
    return orjson.loads(body)


def _form(**fields: Any) -> bytes:
    pairs = []
    for name, value in fields.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None:
                pairs.append((name, str(item)))
    return urllib.parse.urlencode(pairs).encode("ascii")


def _number(value: float) -> str:
    return repr(value) if isinstance(value, float) else str(int(value))


class _Endpoint:
    """The broker's address and credentials, shared by both transports."""

    def __init__(self, url: str, auth: Optional[Tuple[str, str]], token: Optional[str],
                 timeout: float) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("url must be http://host[:port][/prefix] or https://...")
        self.url = url.rstrip("/")
        self.scheme = parsed.scheme
        self.host = parsed.hostname
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.prefix = parsed.path.rstrip("/")
        self.timeout = timeout
        self.headers = {"Accept": "application/json"}
        if token:
            self.headers["Authorization"] = "Bearer " + token
        elif auth:
            raw = ("%s:%s" % auth).encode("utf-8")
            self.headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")

    def target(self, call: _Call) -> str:
        path = self.prefix + call.path
        return path + ("?" + urllib.parse.urlencode(call.query) if call.query else "")

    def request_headers(self, call: _Call, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        headers = dict(self.headers)
        if call.content_type:
            headers["Content-Type"] = call.content_type
        headers.update(extra or {})
        return headers


class _QueueCalls:
    """What every queue operation sends and how its answer is read."""

    def __init__(self, name: str, url: str = DEFAULT_URL, serializer: Any = None,
                 auth: Optional[Tuple[str, str]] = None, token: Optional[str] = None,
                 timeout: float = 10.0) -> None:
        self.name = name
        self.serializer = serializer
        self.endpoint = _Endpoint(url, auth, token, timeout)
        self._path = urllib.parse.quote(name, safe="")

    def __repr__(self) -> str:
        return "<%s %r at %s>" % (type(self).__name__, self.name, self.endpoint.url)

    # encoding

    def _dumps(self, message: Any) -> str:
        if self.serializer is not None:
            text = self.serializer.dumps(message)
            return text.decode("utf-8") if isinstance(text, bytes) else text
        if not isinstance(message, str):
            raise TypeError("messages are str; give the queue a serializer (e.g. json) for %s"
                            % type(message).__name__)
        return message

    def _loads(self, text: str) -> Any:
        return self.serializer.loads(text) if self.serializer is not None else text

    def _message(self, payload: Dict[str, Any]) -> Message:
        return Message(payload["key"], self._loads(payload["value"]), payload.get("receipt"),
                       int(payload.get("deliveries", payload.get("count", 0)) or 0))

    # calls

    def _put_calls(self, messages: Sequence[Any], ttl: Optional[int],
                   delay: Optional[float]) -> List[_Call]:
        if not messages:
            raise ValueError("put() needs at least one message")
        query = [(name, _number(value)) for name, value in (("ttl", ttl), ("delay", delay))
                 if value is not None]
        texts = [self._dumps(message) for message in messages]
        if len(texts) == 1:
            return [_Call("POST", "/q/" + self._path, lambda status, body: _json(status, body)["key"],
                          query, _form(value=texts[0]), "application/x-www-form-urlencoded")]
        return [_Call("POST", "/q/" + self._path, lambda status, body: _json(status, body)["keys"],
                      query, orjson.dumps(texts[start:start + BATCH_SIZE]), "application/json")
                for start in range(0, len(texts), BATCH_SIZE)]

    def _pop_call(self, wait: float, lease: Optional[float]) -> _Call:
        query = []
        if wait > 0:
            query.append(("wait", _number(wait)))
        if lease is not None:
            query.append(("reserve", _number(lease) if lease else ""))

        def parse(status: int, body: bytes) -> Optional[Message]:
            payload = _json(status, body)
            return None if payload is None else self._message(payload)

        return _Call("GET", "/q/" + self._path, parse, query, wait=wait)

    def _settle_call(self, action: str, receipts: Sequence[Receipt], **fields: Any) -> _Call:
        """ack, nack or extend: answers how many leases were settled."""
        texts = [r.receipt if isinstance(r, Message) else r for r in receipts]
        if not texts or any(not text for text in texts):
            raise ValueError("%s() needs receipts (from reserve())" % action)
        answer = action + "ed"
        values = {name: _number(value) for name, value in fields.items() if value is not None}
        return _Call("POST", "/q/%s/%s" % (self._path, action),
                     lambda status, body: _json(status, body)[answer],
                     body=_form(receipt=texts, **values), content_type="application/x-www-form-urlencoded")

    def _field_call(self, prefix: str, field: str, answer: str, value: Optional[str] = None) -> _Call:
        path = "/%s/%s" % (prefix, self._path)
        parse: Callable[[int, bytes], Any] = lambda status, body: _json(status, body)[answer]  # noqa: E731
        if value is None:
            return _Call("GET", path, parse)
        return _Call("POST", path, parse, body=_form(**{field: value}),
                     content_type="application/x-www-form-urlencoded")

    def _stats_call(self) -> _Call:
        return _Call("GET", "/stats/" + self._path, _json)

    def _purge_call(self) -> _Call:
        return _Call("DELETE", "/q/" + self._path, lambda status, body: _json(status, body)["purged"])

    def _last_call(self, count: int) -> _Call:
        def parse(status: int, body: bytes) -> List[Message]:
            return [Message(job["key"], self._loads(job["value"])) for job in _json(status, body)["jobs"]]

        return _Call("GET", "/j/" + self._path, parse, [("count", str(count))])

    def _stream_call(self, last_id: Optional[str]) -> Tuple[_Call, Dict[str, str]]:
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        return _Call("GET", "/sse/" + self._path, _json), headers

    def _pop_plan(self, block: bool, timeout: Optional[float], now: float) -> Optional[float]:
        """The deadline of a blocking pop (None: forever); ``now`` when not blocking."""
        if not block:
            return now
        return None if timeout is None else now + timeout

    @staticmethod
    def _next_wait(deadline: Optional[float], now: float) -> float:
        if deadline is None:
            return LONG_POLL_STEP
        return max(0.0, min(LONG_POLL_STEP, deadline - now))


class _SSEParser:
    """Splits a text/event-stream into (event, id, data) as bytes arrive."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event = "message"
        self._id: Optional[str] = None
        self._data: List[str] = []

    def feed(self, chunk: bytes) -> List[Tuple[str, Optional[str], str]]:
        self._buffer += chunk
        events: List[Tuple[str, Optional[str], str]] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                return events
            line = self._buffer[:end].rstrip(b"\r").decode("utf-8")
            self._buffer = self._buffer[end + 1:]
            if not line:
                if self._data:
                    events.append((self._event, self._id, "\n".join(self._data)))
                self._event, self._data = "message", []
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                self._data.append(value)
            elif name == "id":
                self._id = value
            elif name == "event":
                self._event = value


def _send(endpoint: _Endpoint, call: _Call, headers: Optional[Dict[str, str]] = None,
          stream: bool = False) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """Send ``call`` over a new connection; the caller reads the response and closes it."""
    kind = http.client.HTTPSConnection if endpoint.scheme == "https" else http.client.HTTPConnection
    connection = kind(endpoint.host, endpoint.port, timeout=None if stream else endpoint.timeout + call.wait)
    try:
        connection.request(call.method, endpoint.target(call), call.body,
                           endpoint.request_headers(call, headers))
        return connection, connection.getresponse()
    except BaseException:
        connection.close()
        raise


def _execute(endpoint: _Endpoint, call: _Call) -> Any:
    """Send ``call`` and read its answer (blocking)."""
    connection, response = _send(endpoint, call)
    try:
        return call.parse(response.status, response.read())
    finally:
        connection.close()


def _tx_request(endpoint: _Endpoint, pool: Any, reactor: Any, call: _Call,
                headers: Optional[Dict[str, str]] = None, stream: bool = False):
    import treq
    sent: Dict[Any, Any] = endpoint.request_headers(call, headers)
    return treq.request(call.method, endpoint.url + call.path, params=list(call.query),
                        data=call.body, headers=sent,
                        pool=pool, reactor=reactor, unbuffered=stream,
                        timeout=None if stream else endpoint.timeout + call.wait)


async def _tx_run(endpoint: _Endpoint, pool: Any, reactor: Any, call: _Call) -> Any:
    import treq
    response = await _tx_request(endpoint, pool, reactor, call)
    return call.parse(response.code, await treq.content(response))


class Queue(_QueueCalls):
    """One queue of a RestMQ broker, over blocking HTTP (http.client).

    :param serializer: an object with ``dumps``/``loads`` (``json``, ``pickle``);
        without one, messages are ``str`` and come back as ``str``.
    :param auth: (user, password) for HTTP Basic; ``token`` for a Bearer token.
    :param timeout: seconds to wait for the broker (a long-poll adds its ``wait``).
    :raises ClientError: from every method, when the broker answers an error.
    :raises OSError: when the broker cannot be reached.
    """

    def _execute(self, call: _Call) -> Any:
        return _execute(self.endpoint, call)

    # producing

    def put(self, *messages: Any, ttl: Optional[int] = None, delay: Optional[float] = None) -> Any:
        """Add messages. One message answers its key; several go as batches of up to
        1000 (each one atomic, in order) and answer the list of keys.

        :param ttl: seconds each message lives; ``delay``: seconds before it can be taken.
        :raises ClientError: the broker refused (e.g. 429 queue_full, 413 message_too_large).
        """
        calls = self._put_calls(messages, ttl, delay)
        if len(messages) == 1:
            return self._execute(calls[0])
        keys: List[str] = []
        for call in calls:
            keys += self._execute(call)
        return keys

    # consuming

    def _pop(self, block: bool, timeout: Optional[float], lease: Optional[float]) -> Optional[Message]:
        deadline = self._pop_plan(block, timeout, time.monotonic())
        while True:
            wait = self._next_wait(deadline, time.monotonic())
            message = self._execute(self._pop_call(wait, lease))
            if message is not None or (deadline is not None and time.monotonic() >= deadline):
                return message

    def get(self, block: bool = False, timeout: Optional[float] = None) -> Any:
        """Take the oldest message's value; None when the queue is empty.

        :param block: wait for a message (long-poll), at most ``timeout`` seconds
            (None: as long as it takes).
        """
        message = self._pop(block, timeout, None)
        return None if message is None else message.value

    def get_message(self, block: bool = False, timeout: Optional[float] = None) -> Optional[Message]:
        """Like get(), with the message's key."""
        return self._pop(block, timeout, None)

    def reserve(self, lease: Optional[float] = None, block: bool = False,
                timeout: Optional[float] = None) -> Optional[Message]:
        """Lease the oldest message for ``lease`` seconds (None: the queue's
        ``lease_seconds``); ack() it with its ``receipt`` or it is delivered again."""
        return self._pop(block, timeout, lease if lease is not None else 0)

    def ack(self, *receipts: Receipt) -> int:
        """Acknowledge reserved messages (Message objects or receipts); answers how many.

        :raises ClientError: 409 ``lease_lost`` when a lease ran out and the message
            went to another consumer (the other receipts are still acked).
        """
        return self._execute(self._settle_call("ack", receipts))

    def nack(self, *receipts: Receipt, delay: Optional[float] = None) -> int:
        """Give reserved messages back: at once, or after ``delay`` seconds."""
        return self._execute(self._settle_call("nack", receipts, delay=delay))

    def extend(self, *receipts: Receipt, seconds: Optional[float] = None) -> int:
        """Make the leases end ``seconds`` from now (None: the queue's lease_seconds)."""
        return self._execute(self._settle_call("extend", receipts, seconds=seconds))

    def consume(self, last_id: Optional[str] = None) -> Iterator[Any]:
        """Iterate over the values the broker streams to this consumer (Server-Sent
        Events on /sse/<queue>), as its policy decides: every message (broadcast) or
        this consumer's share (roundrobin). It ends when the broker closes the stream;
        close the iterator (or leave the loop) to disconnect."""
        for message in self.consume_messages(last_id):
            yield message.value

    def consume_messages(self, last_id: Optional[str] = None) -> Iterator[Message]:
        """Like consume(), with keys: resume with ``last_id`` (the last key seen)."""
        call, headers = self._stream_call(last_id)
        connection, response = _send(self.endpoint, call, headers, stream=True)
        try:
            if response.status != 200:
                raise _error(response.status, response.read())
            parser = _SSEParser()
            while True:
                chunk = response.read1(65536)
                if not chunk:
                    return
                for event, _, data in parser.feed(chunk):
                    if event == "message":
                        yield self._message(orjson.loads(data))
        finally:
            connection.close()

    # views and control

    def last(self, count: int = 10) -> List[Message]:
        """The newest ``count`` waiting messages, newest first (left in the queue)."""
        return self._execute(self._last_call(count))

    def stats(self) -> Dict[str, Any]:
        """Length, in flight, delayed, dead, oldest age, status, policy, subscribers."""
        return self._execute(self._stats_call())

    def __len__(self) -> int:
        return int(self.stats()["len"])

    def purge(self) -> int:
        """Remove every message; answers how many."""
        return self._execute(self._purge_call())

    clear = purge  # HotQueue's name

    def get_policy(self) -> str:
        return self._execute(self._field_call("p", "policy", "value"))

    def set_policy(self, policy: str) -> str:
        """``broadcast`` (every streaming consumer gets every message) or ``roundrobin``."""
        return self._execute(self._field_call("p", "policy", "value", policy))

    @property
    def policy(self) -> str:
        """The distribution policy, as a property (``queue.policy = "roundrobin"``)."""
        return self.get_policy()

    @policy.setter
    def policy(self, policy: str) -> None:
        self.set_policy(policy)

    def status(self) -> str:
        """``started`` or ``stopped``."""
        return self._execute(self._field_call("control", "status", "status"))

    def pause(self) -> str:
        """Stop delivering to streaming consumers (messages keep arriving)."""
        return self._execute(self._field_call("control", "status", "status", "stop"))

    def resume(self) -> str:
        return self._execute(self._field_call("control", "status", "status", "start"))


class TxQueue(_QueueCalls):
    """:class:`Queue` for Twisted: the same methods, each returning a Deferred (on treq)."""

    def __init__(self, name: str, url: str = DEFAULT_URL, serializer: Any = None,
                 auth: Optional[Tuple[str, str]] = None, token: Optional[str] = None,
                 timeout: float = 10.0, pool: Any = None, reactor: Any = None) -> None:
        super().__init__(name, url, serializer, auth, token, timeout)
        self.pool = pool
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor

    async def _run(self, call: _Call) -> Any:
        return await _tx_run(self.endpoint, self.pool, self.reactor, call)

    def _execute(self, call: _Call):
        from twisted.internet import defer
        return defer.ensureDeferred(self._run(call))

    def put(self, *messages: Any, ttl: Optional[int] = None, delay: Optional[float] = None):
        """See :meth:`Queue.put`; fires with the key or the list of keys."""
        from twisted.internet import defer
        calls = self._put_calls(messages, ttl, delay)

        async def run() -> Any:
            if len(messages) == 1:
                return await self._run(calls[0])
            keys: List[str] = []
            for call in calls:
                keys += await self._run(call)
            return keys

        return defer.ensureDeferred(run())

    async def _pop(self, block: bool, timeout: Optional[float], lease: Optional[float]) -> Optional[Message]:
        deadline = self._pop_plan(block, timeout, self.reactor.seconds())
        while True:
            wait = self._next_wait(deadline, self.reactor.seconds())
            message = await self._run(self._pop_call(wait, lease))
            if message is not None or (deadline is not None and self.reactor.seconds() >= deadline):
                return message

    def get(self, block: bool = False, timeout: Optional[float] = None):
        """See :meth:`Queue.get`; fires with the value or None."""
        from twisted.internet import defer

        async def run() -> Any:
            message = await self._pop(block, timeout, None)
            return None if message is None else message.value

        return defer.ensureDeferred(run())

    def get_message(self, block: bool = False, timeout: Optional[float] = None):
        """Like get(), firing with a Message (or None)."""
        from twisted.internet import defer
        return defer.ensureDeferred(self._pop(block, timeout, None))

    def reserve(self, lease: Optional[float] = None, block: bool = False, timeout: Optional[float] = None):
        """See :meth:`Queue.reserve`; fires with a Message (with its receipt) or None."""
        from twisted.internet import defer
        return defer.ensureDeferred(self._pop(block, timeout, lease if lease is not None else 0))

    def ack(self, *receipts: Receipt):
        return self._execute(self._settle_call("ack", receipts))

    def nack(self, *receipts: Receipt, delay: Optional[float] = None):
        return self._execute(self._settle_call("nack", receipts, delay=delay))

    def extend(self, *receipts: Receipt, seconds: Optional[float] = None):
        return self._execute(self._settle_call("extend", receipts, seconds=seconds))

    def consume(self, callback: Callable[[Any], Any], last_id: Optional[str] = None,
                messages: bool = False):
        """Call ``callback(value)`` for each streamed message (``callback(Message)``
        with ``messages=True``). The Deferred fires when the broker ends the stream;
        cancel it to disconnect."""
        from twisted.internet import defer
        import treq
        call, headers = self._stream_call(last_id)
        parser = _SSEParser()

        def deliver(chunk: bytes) -> None:
            for event, _, data in parser.feed(chunk):
                if event == "message":
                    message = self._message(orjson.loads(data))
                    callback(message if messages else message.value)

        async def run() -> None:
            response = await _tx_request(self.endpoint, self.pool, self.reactor, call, headers, stream=True)
            if response.code != 200:
                raise _error(response.code, await treq.content(response))
            body = _StreamBody(deliver)
            response.deliverBody(body)
            # cancelling the Deferred that consume() returned lands here and hangs up
            await body.finished

        return defer.ensureDeferred(run())

    def last(self, count: int = 10):
        return self._execute(self._last_call(count))

    def stats(self):
        return self._execute(self._stats_call())

    def purge(self):
        return self._execute(self._purge_call())

    clear = purge

    def get_policy(self):
        return self._execute(self._field_call("p", "policy", "value"))

    def set_policy(self, policy: str):
        return self._execute(self._field_call("p", "policy", "value", policy))

    def status(self):
        return self._execute(self._field_call("control", "status", "status"))

    def pause(self):
        return self._execute(self._field_call("control", "status", "status", "stop"))

    def resume(self):
        return self._execute(self._field_call("control", "status", "status", "start"))


class _StreamBody:
    """Hands each chunk of a streamed response body to ``deliver``; ``finished``
    fires when the stream ends, and cancelling it hangs up."""

    def __init__(self, deliver: Callable[[bytes], None]) -> None:
        from twisted.internet import defer
        self.deliver = deliver
        self.transport: Any = None
        self.finished: Any = defer.Deferred(self._hang_up)

    def _hang_up(self, _: Any) -> None:
        if self.transport is not None:
            self.transport.stopProducing()

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def dataReceived(self, data: bytes) -> None:
        self.deliver(data)

    def connectionLost(self, reason: Any) -> None:
        from twisted.web.client import ResponseDone
        from twisted.web.http import PotentialDataLoss
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(None)
        else:
            self.finished.errback(reason)


class Broker:
    """What spans queues: their names, everyone's stats, readiness (blocking)."""

    def __init__(self, url: str = DEFAULT_URL, auth: Optional[Tuple[str, str]] = None,
                 token: Optional[str] = None, timeout: float = 10.0) -> None:
        self.endpoint = _Endpoint(url, auth, token, timeout)

    def queues(self) -> List[str]:
        return _execute(self.endpoint, _QUEUES)

    def stats(self) -> Dict[str, Any]:
        """``{"queues": {name: {...}}, "count", "redis"}``."""
        return _execute(self.endpoint, _STATS)

    def ready(self) -> Dict[str, Any]:
        """/health/ready: raises ClientError (503) when the broker cannot reach Redis."""
        return _execute(self.endpoint, _READY)


class TxBroker:
    """:class:`Broker` for Twisted (Deferreds, on treq)."""

    def __init__(self, url: str = DEFAULT_URL, auth: Optional[Tuple[str, str]] = None,
                 token: Optional[str] = None, timeout: float = 10.0, pool: Any = None,
                 reactor: Any = None) -> None:
        self.endpoint = _Endpoint(url, auth, token, timeout)
        self.pool = pool
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor

    def _execute(self, call: _Call):
        from twisted.internet import defer
        return defer.ensureDeferred(_tx_run(self.endpoint, self.pool, self.reactor, call))

    def queues(self):
        return self._execute(_QUEUES)

    def stats(self):
        return self._execute(_STATS)

    def ready(self):
        return self._execute(_READY)


_QUEUES = _Call("GET", "/q/", lambda status, body: _json(status, body)["queues"])
_STATS = _Call("GET", "/stats/", _json)
_READY = _Call("GET", "/health/ready", _json)
