"""What the blocking and the Twisted clients share: the HTTP call each operation
makes and how its answer is read, the broker's address, the SSE parser.
Nothing here sends a byte; :mod:`restmq.client.blocking` and
:mod:`restmq.client.tx` do.
"""

from __future__ import annotations

import base64
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import attr
import orjson

__all__ = ["ClientError", "Message", "Receipt", "DEFAULT_URL", "LONG_POLL_STEP", "BATCH_SIZE"]

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


_QUEUES = _Call("GET", "/q/", lambda status, body: _json(status, body)["queues"])
_STATS = _Call("GET", "/stats/", _json)
_READY = _Call("GET", "/health/ready", _json)
