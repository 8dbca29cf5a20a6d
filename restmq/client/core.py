"""What the blocking and the Twisted clients share: the HTTP call each operation
makes and how its answer is read, the broker's address and which failures are
tried again, the calls of a queue, of a broker and of several queues at once,
and what the loops (consume, work, subscribe) keep and decide: reconnection
pauses, prefetched messages, claims and idleness, the SSE stream's resume point.

Nothing here sends a byte or waits; :mod:`restmq.client.blocking` and
:mod:`restmq.client.tx` do, each with its own transport, so that the two
flavours keep the same names and the same semantics.
"""

from __future__ import annotations

import base64
import contextlib
import random
import urllib.parse
from typing import (Any, Callable, ContextManager, Dict, Generic, Iterable, Iterator, List, Optional,
                    Sequence, Tuple, Type, TypeVar, Union)

import attr
import orjson

__all__ = ["ClientError", "ConnectionFailed", "RequestTimeout", "Message", "DeadLetter", "Receipt",
           "DEFAULT_URL", "LONG_POLL_STEP", "BATCH_SIZE", "STREAM_IDLE", "Backoff", "WorkPlan"]


DEFAULT_URL = "http://127.0.0.1:8888"
#: a long-poll asks for at most this many seconds at a time (the server's max_wait is 60 by default)
LONG_POLL_STEP = 30.0
#: most messages one put() request carries (the server's max_batch is 1000 by default)
BATCH_SIZE = 1000
#: the lease a worker assumes when the queue's settings cannot be read
DEFAULT_LEASE = 30.0
#: a stream silent this long (the broker sends a heartbeat every 15 s by default) is
#: taken for dead and opened again
STREAM_IDLE = 60.0
#: idle keep-alive connections a client keeps (more threads open more, and close the extra)
MAX_IDLE = 16
#: how long the loops (consume, work, subscribe) wait before reconnecting, at most
RECONNECT_CAP = 5.0
#: the statuses of a broker that is away, restarting, or cannot reach Redis
_UNAVAILABLE = (502, 503, 504)
#: refusals that defaults would not cure (a bad group name, no credentials, no access)
_DENIED = (400, 401, 403)


# What a user meets: errors and messages

class ClientError(Exception):
    """RestMQ answered with an error: its HTTP status, error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__("%d %s: %s" % (status, code, message))
        self.status = status
        self.code = code
        self.message = message


class ConnectionFailed(ConnectionError):
    """The broker could not be reached, or the connection broke before it answered
    (after the retries the call allows). ``cause`` is the underlying error."""

    def __init__(self, url: str, cause: BaseException) -> None:
        super().__init__("cannot talk to %s: %s" % (url, str(cause) or type(cause).__name__))
        self.url = url
        self.cause = cause


class RequestTimeout(ConnectionFailed, TimeoutError):
    """The broker did not answer within the client's timeout."""


@attr.s(frozen=True)
class Message:
    """A message taken from a queue.

    ``receipt`` is set when it was reserved (leased): ack, nack or extend it with
    that. ``deliveries`` counts how many times it was handed out (1 the first
    time). ``queue`` names the queue it came from and ``group`` the consumer
    group it was taken for (None: the queue's default consumers); ``attributes``
    and ``ordering_key`` are what its producer gave it.

    A message knows the client that took it: ``message.ack()``, ``nack(delay)``,
    ``extend(seconds)`` settle it, and ``reply(body)`` answers a request sent
    with :meth:`Queue.call` (with the Twisted client they return Deferreds).
    """

    key: str = attr.ib()
    value: Any = attr.ib()
    receipt: Optional[str] = attr.ib(default=None)
    deliveries: int = attr.ib(default=0)
    queue: Optional[str] = attr.ib(default=None)
    attributes: Dict[str, str] = attr.ib(factory=dict, hash=False)
    ordering_key: Optional[str] = attr.ib(default=None)
    group: Optional[str] = attr.ib(default=None)
    _owner: Any = attr.ib(default=None, eq=False, repr=False, hash=False)

    @property
    def reply_to(self) -> Optional[str]:
        """The request id of a message sent with :meth:`Queue.call` (None otherwise)."""
        return self.attributes.get("reply_to")

    def _client(self) -> Any:
        if self._owner is None:
            raise ValueError("this message was not taken by a client (build it with Queue methods)")
        return self._owner

    def ack(self) -> Any:
        """Acknowledge this reserved message (see :meth:`Queue.ack`)."""
        return self._client().ack(self)

    def nack(self, delay: Optional[float] = None) -> Any:
        """Give this reserved message back, at once or after ``delay`` seconds."""
        return self._client().nack(self, delay=delay)

    def extend(self, seconds: Optional[float] = None) -> Any:
        """Make this message's lease end ``seconds`` from now."""
        return self._client().extend(self, seconds=seconds)

    def reply(self, body: Any, attributes: Optional[Dict[str, str]] = None) -> Any:
        """Answer the :meth:`Queue.call` that sent this message (POST /reply/<reply_to>).

        :raises ClientError: 404 when the caller stopped waiting (timed out) or was answered.
        """
        if not self.reply_to:
            raise ValueError("%s is not a request: it has no reply_to attribute" % self.key)
        return self._client()._reply(self.reply_to, body, attributes)


@attr.s(frozen=True, auto_attribs=True)
class DeadLetter:
    """A message of ``<queue>:dead``: why it died (``reason``, e.g.
    ``max_receives``), how often it had been delivered, its key in the queue it
    came from (``source``) and when it died (``died_at``, seconds since the epoch)."""

    key: str
    value: Any
    reason: Optional[str]
    deliveries: int
    source: Optional[str]
    died_at: Optional[float]
    attributes: Dict[str, str] = attr.Factory(dict)


Receipt = Union[str, Message]


# One HTTP call, and how its request is written and its answer read

@attr.s(frozen=True, auto_attribs=True)
class _Call:
    """One HTTP request and how to read its answer, whichever transport sends it.

    ``idempotent``: sending it twice does no harm, so it may be retried after the
    request went out (a broken connection, a 503). Every call may be retried when
    it surely never reached the broker (the connection was refused).
    """

    method: str
    path: str
    parse: Callable[[int, bytes], Any]
    query: Sequence[Tuple[str, str]] = ()
    body: Optional[bytes] = None
    content_type: Optional[str] = None
    wait: float = 0.0  # the server may hold the request this long (long-poll)
    idempotent: bool = True
    headers: Sequence[Tuple[str, str]] = ()


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
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ClientError(status, "bad_answer", "the broker answered something that is not JSON: %r"
                          % body[:100]) from None


def _field(payload: Any, *names: str) -> Any:
    """The first of ``names`` in a JSON answer (answers may grow new shapes:
    read what is there, not one exact layout)."""
    if isinstance(payload, dict):
        for name in names:
            if name in payload:
                return payload[name]
    raise ClientError(200, "bad_answer", "the broker's answer has no %s: %r"
                      % (" or ".join(names), str(payload)[:100]))


def _answer(name: str) -> Callable[[int, bytes], Any]:
    """The parser of an answer whose field ``name`` is what the call returns."""
    def parse(status: int, body: bytes) -> Any:
        return _field(_json(status, body), name)

    return parse


def _keys(payload: Any, single: bool) -> Any:
    keys = _field(payload, "keys")
    return keys[0] if single else keys


def _attributes(payload: Dict[str, Any]) -> Dict[str, str]:
    """A message's attributes in an answer ({} when it has none)."""
    attributes = payload.get("attributes")
    return dict(attributes) if isinstance(attributes, dict) else {}


def _extras(attributes: Optional[Dict[str, str]], ordering_key: Optional[str]) -> Dict[str, Any]:
    """What the JSON object form of a message carries beside its value."""
    extras: Dict[str, Any] = {}
    if attributes:
        extras["attributes"] = attributes
    if ordering_key is not None:
        extras["ordering_key"] = ordering_key
    return extras


def _check_attributes(attributes: Optional[Dict[str, str]]) -> None:
    if attributes is None:
        return
    if not isinstance(attributes, dict) or not all(isinstance(name, str) and isinstance(value, str)
                                                   for name, value in attributes.items()):
        raise TypeError("attributes are a dict of str to str")


_FORM = "application/x-www-form-urlencoded"
_JSON = "application/json"


def _form(**fields: Any) -> bytes:
    pairs = []
    for name, value in fields.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None:
                pairs.append((name, str(item)))
    return urllib.parse.urlencode(pairs).encode("ascii")


def _number(value: float) -> str:
    return repr(value) if isinstance(value, float) else str(int(value))


def _setting_value(value: Any) -> Any:
    """A configure() argument as JSON: None removes the setting."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError("settings are numbers or strings, not %s" % type(value).__name__)


def _receipt_items(receipts: Sequence[Any]) -> List[Any]:
    """The messages or receipts of ack(m1, m2) or ack([m1, m2])."""
    items = list(receipts)
    if len(items) == 1 and isinstance(items[0], (list, tuple)):
        items = list(items[0])
    return items


def _receipt_texts(action: str, receipts: Sequence[Any]) -> List[str]:
    """Receipts from Message objects or strings: ack(m1, m2) or ack([m1, m2])."""
    texts: List[str] = []
    for item in _receipt_items(receipts):
        text = item.receipt if isinstance(item, Message) else item
        if not isinstance(text, str) or not text:
            raise ValueError("%s() needs receipts (messages from reserve())" % action)
        texts.append(text)
    if not texts:
        raise ValueError("%s() needs receipts (messages from reserve())" % action)
    return texts


# The broker's address, and which failures of a call are tried again

@attr.s(auto_attribs=True)
class Backoff:
    """Exponential backoff with jitter: ``first`` seconds, doubling, at most ``cap``."""

    first: float = 0.1
    cap: float = 5.0

    def delay(self, attempt: int) -> float:
        """The pause before retry number ``attempt`` (0 for the first retry)."""
        base = min(self.cap, self.first * (2 ** min(attempt, 30)))
        # jitter: many clients cut off by one broker restart do not come back in step
        return base * (0.5 + random.random() / 2)


class _Endpoint:
    """The broker's address, credentials and timeouts, shared by both transports."""

    def __init__(self, url: str, auth: Optional[Tuple[str, str]], token: Optional[str],
                 timeout: float, connect_timeout: Optional[float] = None, retries: int = 3,
                 backoff: float = 0.1) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("url must be http://host[:port][/prefix] or https://...")
        if timeout <= 0 or (connect_timeout is not None and connect_timeout <= 0):
            raise ValueError("timeouts must be positive seconds")
        if retries < 0 or backoff < 0:
            raise ValueError("retries and backoff must be 0 or more")
        self.url = url.rstrip("/")
        self.origin = "%s://%s" % (parsed.scheme, parsed.netloc.rpartition("@")[2])
        self.scheme = parsed.scheme
        self.host = parsed.hostname
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.prefix = parsed.path.rstrip("/")
        self.timeout = timeout
        self.connect_timeout = connect_timeout if connect_timeout is not None else timeout
        self.retries = retries
        self.backoff = Backoff(backoff, 2.0) if backoff else Backoff(0.0, 0.0)
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
        headers.update(call.headers)
        headers.update(extra or {})
        return headers

    def read_timeout(self, call: _Call) -> float:
        return self.timeout + call.wait


class _NotSent(Exception):
    """The request never reached the broker in full: any call may be sent again."""

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause


class _NoAnswer(Exception):
    """The request went out but no answer came back: only an idempotent call may be sent again."""

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause


def _failure(url: str, cause: BaseException,
             timeouts: Tuple[Type[BaseException], ...] = ()) -> ConnectionFailed:
    """What a call that got no answer raises: RequestTimeout when ``cause`` is a
    timeout (Python's, or one of the transport's ``timeouts``)."""
    if isinstance(cause, (TimeoutError,) + timeouts):
        return RequestTimeout(url, cause)
    return ConnectionFailed(url, cause)


def _unavailable(exc: BaseException) -> bool:
    """Errors a loop rides out by reconnecting: the broker is away, restarting, or
    cannot reach Redis."""
    if isinstance(exc, ClientError):
        return exc.status in _UNAVAILABLE
    return isinstance(exc, ConnectionFailed)


def retry_after_answer(call: _Call, status: int, attempt: int, retries: int) -> bool:
    """Whether an answer with ``status`` is worth sending ``call`` again: a 503
    (Redis away, or the broker is starting) for an idempotent call."""
    return status == 503 and call.idempotent and attempt < retries


class _Retries:
    """The retry rules of one call, which both transports follow: a request that
    surely never reached the broker may always be sent again; one that went out
    and got no answer, or got a 503, only when the call is idempotent; at most the
    endpoint's ``retries`` times, backing off in between.

    :param timeouts: the transport's own timeout errors (beside Python's), which
        make a failure a :class:`RequestTimeout`.
    :param chain_cause: whether a ConnectionFailed raised here also names its
        ``cause`` as ``__cause__`` (the blocking client's way; the Twisted
        client's tracebacks leave it out).
    """

    def __init__(self, endpoint: _Endpoint, call: _Call, timeouts: Tuple[Type[BaseException], ...] = (),
                 chain_cause: bool = True) -> None:
        self.endpoint = endpoint
        self.call = call
        self.timeouts = timeouts
        self.chain_cause = chain_cause
        self.attempt = 0

    def failure(self, cause: BaseException) -> ConnectionFailed:
        return _failure(self.endpoint.url, cause, self.timeouts)

    def unanswered(self, failed: Union[_NotSent, _NoAnswer]) -> BaseException:
        """The cause of a try that got no answer.

        :raises ConnectionFailed: the request went out and the call must not be sent twice.
        """
        if isinstance(failed, _NoAnswer) and not self.call.idempotent:
            raise self.failure(failed.cause) from self._chained(failed.cause)
        return failed.cause

    def retry_after(self, status: int, body: bytes) -> Optional[ClientError]:
        """The refusal worth sending the call again after (a 503); None when this answer stands."""
        if retry_after_answer(self.call, status, self.attempt, self.endpoint.retries):
            return _error(status, body)
        return None

    def pause(self, cause: BaseException, stopping: bool = False) -> float:
        """Seconds to wait before the next try after ``cause``.

        :raises ClientError: ``cause`` itself, when it is one and there is no next try
            (the retries are spent, or the client is ``stopping``).
        :raises ConnectionFailed: the same for a failure without an answer.
        """
        if self.attempt >= self.endpoint.retries or stopping:
            if isinstance(cause, ClientError):
                raise cause
            raise self.failure(cause) from self._chained(cause)
        pause = self.endpoint.backoff.delay(self.attempt)
        self.attempt += 1
        return pause

    def _chained(self, cause: BaseException) -> Optional[BaseException]:
        return cause if self.chain_cause else None


# The calls of one queue, of a broker, of several queues at once

class _QueueCalls:
    """The calls of one queue, shared by :class:`Queue` and :class:`TxQueue`."""

    def __init__(self, name: str, url: str = DEFAULT_URL, serializer: Any = None,
                 auth: Optional[Tuple[str, str]] = None, token: Optional[str] = None,
                 timeout: float = 10.0, connect_timeout: Optional[float] = None, retries: int = 3,
                 backoff: float = 0.1, group: Optional[str] = None) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("a queue needs a name")
        self.name = name
        #: the consumer group this client consumes for by default (None: the queue's default consumers)
        self.group = group or None
        self.serializer = serializer
        self.endpoint = _Endpoint(url, auth, token, timeout, connect_timeout, retries, backoff)
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

    def _message(self, payload: Dict[str, Any], group: Optional[str] = None) -> Message:
        deliveries = payload.get("deliveries", payload.get("count", 0))
        attributes = _attributes(payload)
        return Message(payload["key"], self._loads(payload["value"]), payload.get("receipt"),
                       int(deliveries or 0), payload.get("queue") or self.name, attributes,
                       payload.get("ordering_key"), group or None, self._owner_for(payload))

    def _owner_for(self, payload: Dict[str, Any]) -> Any:
        """The client that settles a message of this answer."""
        return self

    def _messages(self, payload: Any, group: Optional[str] = None) -> List[Message]:
        """A pop's answer: one message, ``{"messages": [...]}``, or nothing (204)."""
        if payload is None:
            return []
        if isinstance(payload, dict) and "messages" in payload:
            return [self._message(item, group) for item in payload["messages"]]
        return [self._message(payload, group)]

    def _group(self, group: Optional[str]) -> Optional[str]:
        return group if group is not None else self.group

    @staticmethod
    def _group_query(group: Optional[str]) -> List[Tuple[str, str]]:
        return [("group", group)] if group else []

    def _settle_group(self, receipts: Sequence[Any], group: Optional[str]) -> Optional[str]:
        """The group of a settle call: given, else that of the messages, else the queue's."""
        if group is not None:
            return group or None
        groups = {item.group for item in _receipt_items(receipts) if isinstance(item, Message)}
        if len(groups) > 1:
            raise ValueError("these messages come from different groups: settle each group apart")
        if groups:
            return groups.pop()
        return self.group

    # calls

    def _put_calls(self, messages: Sequence[Any], ttl: Optional[int], delay: Optional[float],
                   idempotency_key: Optional[str] = None, attributes: Optional[Dict[str, str]] = None,
                   ordering_key: Optional[str] = None) -> List[_Call]:
        if not messages:
            raise ValueError("put() needs at least one message")
        _check_attributes(attributes)
        if ordering_key is not None and (not isinstance(ordering_key, str) or not ordering_key):
            raise ValueError("ordering_key must be a non-empty string")
        if idempotency_key is not None and (not isinstance(idempotency_key, str) or not idempotency_key):
            raise ValueError("idempotency_key must be a non-empty string")
        query = [(name, _number(value)) for name, value in (("ttl", ttl), ("delay", delay))
                 if value is not None]
        texts = [self._dumps(message) for message in messages]
        # each batch of a big put is one request of at most BATCH_SIZE messages
        batches = [texts[start:start + BATCH_SIZE] for start in range(0, len(texts), BATCH_SIZE)]

        def post(parse: Callable[[int, bytes], Any], body: bytes, content_type: str, index: int) -> _Call:
            headers: Sequence[Tuple[str, str]] = ()
            if idempotency_key is not None:
                # each batch is one publish: each gets its own key
                key = idempotency_key if index == 0 else "%s#%d" % (idempotency_key, index + 1)
                headers = (("Idempotency-Key", key),)
            # a publish sent twice is stored twice, unless the broker can recognise it
            return _Call("POST", "/q/" + self._path, parse, query, body, content_type,
                         idempotent=idempotency_key is not None, headers=headers)

        extras = _extras(attributes, ordering_key)
        if extras:
            # the JSON object form carries what a form field cannot
            single = len(texts) == 1

            def keys(status: int, body: bytes) -> Any:
                return _keys(_json(status, body), single)

            return [post(keys, orjson.dumps([dict(extras, value=text) for text in batch]), _JSON, index)
                    for index, batch in enumerate(batches)]
        if len(texts) == 1:
            return [post(_answer("key"), _form(value=texts[0]), _FORM, 0)]
        return [post(_answer("keys"), orjson.dumps(batch), _JSON, index)
                for index, batch in enumerate(batches)]

    @staticmethod
    def _put_answer(answers: List[Any], single: bool) -> Any:
        """What put() answers from its calls' answers: one message's key, or every key in order."""
        if single:
            return answers[0]
        keys: List[str] = []
        for answer in answers:
            keys += answer
        return keys

    def _pop_call(self, wait: float, lease: Optional[float], count: Optional[int] = None,
                  group: Optional[str] = None) -> _Call:
        """A pop (``lease`` None) or a reserve (0: the queue's lease): answers a list of messages."""
        group = self._group(group)
        query = self._group_query(group)
        if wait > 0:
            query.append(("wait", _number(wait)))
        if lease is not None:
            query.append(("reserve", _number(lease) if lease else ""))
        if count is not None:
            if not 1 <= count <= BATCH_SIZE:
                raise ValueError("count must be 1 to %d" % BATCH_SIZE)
            query.append(("count", str(count)))

        def parse(status: int, body: bytes) -> List[Message]:
            return self._messages(_json(status, body), group)

        # a pop answered but lost on the way must not be sent again: the message
        # would be gone; a lost reserve only delays its message until the lease ends
        return _Call("GET", self._pop_path(), parse, self._pop_query() + query, wait=wait,
                     idempotent=lease is not None)

    def _pop_path(self) -> str:
        return "/q/" + self._path

    def _pop_query(self) -> List[Tuple[str, str]]:
        return []

    def _settle_call(self, action: str, receipts: Sequence[Receipt], group: Optional[str] = None,
                     **fields: Any) -> _Call:
        """ack, nack or extend: answers how many leases were settled."""
        texts = _receipt_texts(action, receipts)
        group = self._settle_group(receipts, group)
        answer = action + "ed"
        values = {name: _number(value) for name, value in fields.items() if value is not None}
        return _Call("POST", "/q/%s/%s" % (self._path, action), _answer(answer), self._group_query(group),
                     body=_form(receipt=texts, **values), content_type=_FORM)

    def _field_call(self, prefix: str, field: str, answer: str, value: Optional[str] = None) -> _Call:
        path = "/%s/%s" % (prefix, self._path)
        if value is None:
            return _Call("GET", path, _answer(answer))
        return _Call("POST", path, _answer(answer), body=_form(**{field: value}), content_type=_FORM)

    def _stats_call(self) -> _Call:
        return _Call("GET", "/stats/" + self._path, _json)

    def _purge_call(self) -> _Call:
        return _Call("DELETE", "/q/" + self._path, _answer("purged"))

    def _last_call(self, count: int, group: Optional[str] = None) -> _Call:
        group = self._group(group)

        def parse(status: int, body: bytes) -> List[Message]:
            return [self._message(job, group) for job in _field(_json(status, body), "jobs")]

        return _Call("GET", "/j/" + self._path, parse, [("count", str(count))] + self._group_query(group))

    def _dead_call(self, count: int, group: Optional[str] = None) -> _Call:
        group = self._group(group)
        if not 1 <= count <= 1000:
            raise ValueError("count must be 1 to 1000")

        def parse(status: int, body: bytes) -> List[DeadLetter]:
            letters = []
            for item in _field(_json(status, body), "messages"):
                info = item.get("dead") or {}
                at = info.get("at")
                attributes = _attributes(item)
                letters.append(DeadLetter(item["key"], self._loads(item["value"]), info.get("reason"),
                                          int(info.get("deliveries") or 0), info.get("from"),
                                          at / 1000.0 if isinstance(at, (int, float)) else None, attributes))
            return letters

        return _Call("GET", "/q/%s/dead" % self._path, parse,
                     [("count", str(count))] + self._group_query(group))

    def _redrive_call(self, count: Optional[int], group: Optional[str] = None) -> _Call:
        if count is not None and count < 1:
            raise ValueError("count must be at least 1 (None: all of them)")
        # not idempotent: a second redrive would move the next dead letters
        return _Call("POST", "/q/%s/redrive" % self._path, _answer("moved"),
                     self._group_query(self._group(group)), body=_form(count=count), content_type=_FORM,
                     idempotent=False)

    def _settings_call(self, changes: Optional[Dict[str, Any]] = None,
                       group: Optional[str] = None) -> _Call:
        parse = _answer("settings")
        query = self._group_query(self._group(group))
        if changes is None:
            return _Call("GET", "/settings/" + self._path, parse, query)
        if not changes:
            raise ValueError("configure() needs at least one setting, e.g. max_receives=5")
        body = orjson.dumps({name: _setting_value(value) for name, value in changes.items()})
        return _Call("POST", "/settings/" + self._path, parse, query, body=body, content_type=_JSON)

    # consumer groups and request/reply

    def _group_call(self, method: str, group: Optional[str] = None) -> _Call:
        if group is None:
            return _Call("GET", "/q/%s/groups" % self._path, _answer("groups"))
        if not isinstance(group, str) or not group:
            raise ValueError("a group needs a name")
        path = "/q/%s/groups/%s" % (self._path, urllib.parse.quote(group, safe=""))
        answer = {"POST": "created", "DELETE": "removed", "GET": None}[method]

        def parse(status: int, body: bytes) -> Any:
            payload = _json(status, body)
            return payload if answer is None else _field(payload, answer)

        # creating twice is harmless; a repeated delete would answer 404
        return _Call(method, path, parse, idempotent=method != "DELETE")

    def _call_call(self, message: Any, timeout: float, attributes: Optional[Dict[str, str]],
                   ordering_key: Optional[str]) -> _Call:
        if timeout <= 0:
            raise ValueError("timeout must be positive seconds")
        _check_attributes(attributes)
        item = dict(value=self._dumps(message), **_extras(attributes, ordering_key))

        def parse(status: int, body: bytes) -> Message:
            payload = _json(status, body)
            attributes = _attributes(payload)
            return Message(_field(payload, "key"), self._loads(_field(payload, "value")), None, 0,
                           payload.get("queue") or self.name, attributes)

        # a request sent twice would be handled twice
        return _Call("POST", "/rpc/" + self._path, parse, [("timeout", _number(timeout))],
                     orjson.dumps(item), _JSON, wait=timeout, idempotent=False)

    def _reply_call(self, request_id: str, body: Any, attributes: Optional[Dict[str, str]]) -> _Call:
        _check_attributes(attributes)
        item = dict(value=self._dumps(body), **_extras(attributes, None))
        delivered = _answer("delivered")
        return _Call("POST", "/reply/" + urllib.parse.quote(request_id, safe=""),
                     lambda status, body: bool(delivered(status, body)),
                     body=orjson.dumps(item), content_type=_JSON, idempotent=False)

    def _stream_call(self, last_id: Optional[str],
                     group: Optional[str] = None) -> Tuple[_Call, Dict[str, str]]:
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        return _Call("GET", self._stream_path(), _json,
                     self._pop_query() + self._group_query(self._group(group))), headers

    def _stream_path(self) -> str:
        return "/sse/" + self._path

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

    @staticmethod
    def _one_or_list(messages: List[Message], count: Optional[int]) -> Any:
        if count is None:
            return messages[0] if messages else None
        return messages


_Q = TypeVar("_Q", bound=_QueueCalls)


class _BrokerCalls(Generic[_Q]):
    """What :class:`Broker` and :class:`TxBroker` share: the broker's address, the
    options of the queue clients it hands out, and one client per (queue, group)
    that settles the messages of its multi-queue calls."""

    _transport: Any  # the flavour's, shared by every queue client of this broker

    def __init__(self, url: str, auth: Optional[Tuple[str, str]], token: Optional[str], timeout: float,
                 connect_timeout: Optional[float], retries: int, backoff: float, serializer: Any) -> None:
        self.endpoint = _Endpoint(url, auth, token, timeout, connect_timeout, retries, backoff)
        self.serializer = serializer
        self._options = dict(auth=auth, token=token, timeout=timeout, connect_timeout=connect_timeout,
                             retries=retries, backoff=backoff)
        self._queues: Dict[Tuple[str, Optional[str]], _Q] = {}

    def queue(self, name: str, serializer: Any = None, group: Optional[str] = None) -> _Q:
        raise NotImplementedError

    def _client_options(self, serializer: Any = None) -> Dict[str, Any]:
        """The arguments of a queue client on this broker's address and connections
        (the serializer defaults to the broker's)."""
        return dict(self._options, url=self.endpoint.url, _transport=self._transport,
                    serializer=serializer if serializer is not None else self.serializer)

    def _queue_of(self, name: str, group: Optional[str]) -> _Q:
        queue = self._queues.get((name, group))
        if queue is None:
            queue = self._queues[(name, group)] = self.queue(name, group=group)
        return queue


def _queue_names(queues: Union[str, Iterable[str]]) -> List[str]:
    names = [queues] if isinstance(queues, str) else list(queues)
    if not names or not all(isinstance(name, str) and name for name in names):
        raise ValueError("queues is a list of queue names")
    return names


class _MultiQueue(_QueueCalls):
    """The calls of ``/take?queues=`` and ``/sse/?queues=``, mixed into a queue
    client of either flavour: each message answers from its own queue, and is
    settled there (by the broker's client of that queue)."""

    def __init__(self, broker: _BrokerCalls[Any], queues: List[str], group: Optional[str]) -> None:
        names = _queue_names(queues)
        super().__init__(",".join(names), group=group, **broker._client_options())
        self._names = names
        self._broker = broker

    def _pop_path(self) -> str:
        return "/take"

    def _stream_path(self) -> str:
        return "/sse/"

    def _pop_query(self) -> List[Tuple[str, str]]:
        return [("queues", ",".join(self._names))]

    def _owner_for(self, payload: Dict[str, Any]) -> Any:
        return self._broker._queue_of(payload.get("queue") or self._names[0], self.group)


_QUEUES = _Call("GET", "/q/", _answer("queues"))
_STATS = _Call("GET", "/stats/", _json)
# a readiness probe answers what it sees now: a 503 is the answer, not a reason to retry
_READY = _Call("GET", "/health/ready", _json, idempotent=False)


# What the loops decide, whichever way they wait: consume, work, subscribe

class _Reconnects:
    """The pauses of a loop that rides out an unavailable broker (consume, work,
    subscribe): 0.1 s, doubling with jitter up to RECONNECT_CAP, from the start
    again once the broker answers."""

    def __init__(self) -> None:
        self.backoff = Backoff(0.1, RECONNECT_CAP)
        self.attempt = 0

    def answered(self) -> None:
        self.attempt = 0

    def pause(self) -> float:
        pause = self.backoff.delay(self.attempt)
        self.attempt += 1
        return pause


#: what reading a queue's settings may meet, after which a loop goes on with defaults
_SETTINGS_ERRORS = (ClientError, ConnectionFailed, KeyError, TypeError, ValueError)


def _held_until(sent: float, lease: float) -> float:
    """When a message reserved at ``sent`` for ``lease`` seconds is no longer worth
    starting: a little before its lease ends (half a second, a tenth of a short lease)."""
    return sent + lease - min(0.5, lease / 10)


class _Consuming(Generic[_Q]):
    """What :class:`Consumption` and :class:`TxConsumption` share: their options,
    the prefetched messages that wait their turn leased, and the poll of each step."""

    _keeper: Any = None  # the flavour's lease keeper, once a message is held

    def __init__(self, queue: _Q, ack: bool, timeout: Optional[float], lease: Optional[float],
                 prefetch: int, messages: bool, group: Optional[str] = None) -> None:
        if not 1 <= prefetch <= 1000:
            raise ValueError("prefetch must be 1 to 1000")
        self.queue = queue
        self.group = group
        self.ack = ack
        self.timeout = timeout
        self.lease = lease
        self.prefetch = prefetch if ack else 1
        self.messages = messages
        self._current: Optional[Message] = None
        self._pending: List[Tuple[Message, float]] = []
        self._lease_length = lease
        self._closed = False

    def _now(self) -> float:
        raise NotImplementedError

    def _let_go(self) -> Optional[Message]:
        """The message the loop was on (None: none), from now on no longer kept leased."""
        current, self._current = self._current, None
        if current is not None and self._keeper is not None:
            self._keeper.forget(current)
        return current

    def _skipped(self, message: Message) -> None:
        """A prefetched message whose lease ran out while it waited (it comes back by itself)."""

    def _prefetched(self) -> Optional[Message]:
        """The next prefetched message whose lease still holds."""
        while self._pending:
            message, deadline = self._pending.pop(0)
            if self._now() < deadline:
                return message
            self._skipped(message)
        return None

    def _poll_wait(self, started: float) -> Optional[float]:
        """Seconds the next poll may wait; None once ``timeout`` seconds passed since ``started``."""
        wait = LONG_POLL_STEP
        if self.timeout is not None:
            wait = min(wait, self.timeout - (self._now() - started))
            if wait <= 0:
                return None
        return wait

    def _poll_call(self, wait: float) -> _Call:
        lease = (self.lease if self.lease is not None else 0) if self.ack else None
        count = self.prefetch if self.prefetch > 1 else None
        return self.queue._pop_call(wait, lease, count, self.group or "")

    def _hold(self, taken: List[Message], sent: float, length: float) -> None:
        """Keep the messages after the first of a batch reserved at ``sent`` for
        ``length`` seconds, each until its lease is nearly over."""
        deadline = _held_until(sent, length)
        self._pending = [(message, deadline) for message in taken[1:]]


@attr.s(frozen=True, auto_attribs=True)
class WorkPlan:
    """What :meth:`Queue.work` was asked to do, checked once.

    A failed message is given back with a delay of ``retry_delay * backoff **
    (deliveries - 1)`` seconds, at most ``max_retry_delay``.
    """

    lease: Optional[float] = None
    concurrency: int = 1
    idle_timeout: Optional[float] = None
    limit: Optional[int] = None
    retry_delay: float = 1.0
    backoff: float = 2.0
    max_retry_delay: float = 300.0
    prefetch: int = 1

    def __attrs_post_init__(self) -> None:
        if self.lease is not None and self.lease <= 0:
            raise ValueError("lease must be positive seconds")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.idle_timeout is not None and self.idle_timeout < 0:
            raise ValueError("idle_timeout must be 0 or more seconds")
        if self.limit is not None and self.limit < 0:
            raise ValueError("limit must be 0 or more")
        if self.retry_delay < 0 or self.backoff < 1 or self.max_retry_delay < 0:
            raise ValueError("retry_delay and max_retry_delay must be >= 0 and backoff >= 1")
        if not 1 <= self.prefetch <= BATCH_SIZE:
            raise ValueError("prefetch must be 1 to %d" % BATCH_SIZE)

    def retry_delay_for(self, deliveries: int) -> float:
        """Seconds before a message that failed on its ``deliveries``-th delivery comes back."""
        exponent = max(0, deliveries - 1)
        if self.backoff > 1 and exponent > 64:
            return self.max_retry_delay
        return min(self.max_retry_delay, self.retry_delay * self.backoff ** exponent)

    @staticmethod
    def extend_every(lease: float) -> float:
        """How often a running handler's lease is extended: well before it ends."""
        return max(0.05, lease / 3.0)


def _plan(lease: Optional[float], concurrency: int, idle_timeout: Optional[float], limit: Optional[int],
          retry_delay: float, backoff: float, max_retry_delay: float, prefetch: int) -> WorkPlan:
    return WorkPlan(lease, concurrency, idle_timeout, limit, retry_delay, backoff, max_retry_delay, prefetch)


class _LeaseKeeping(Generic[_Q]):
    """What both lease keepers know (a thread of its own, reactor timers): the
    queue and group whose leases they extend, by ``lease`` seconds each time, and
    how often (:meth:`WorkPlan.extend_every`)."""

    def __init__(self, queue: _Q, lease: float, group: Optional[str] = None) -> None:
        self.queue = queue
        self.lease = lease
        self.group = group
        self.every = WorkPlan.extend_every(lease)


def _worker_decorator(queue: Any, handler: Optional[Callable[[Message], Any]],
                      options: Dict[str, Any]) -> Any:
    """HotQueue's ``@queue.worker`` for either flavour: calling the decorated
    function runs ``queue.work`` with it (and the decorator's options)."""
    def decorate(function: Callable[[Message], Any]) -> Callable[..., Any]:
        def run(**more: Any) -> Any:
            return queue.work(function, **dict(options, **more))
        run.__name__ = getattr(function, "__name__", "worker")
        run.__doc__ = function.__doc__
        run.handler = function  # type: ignore[attr-defined]
        return run

    return decorate if handler is None else decorate(handler)


class _Working(Generic[_Q]):
    """What both workers keep and decide (:meth:`Queue.work` on threads,
    :meth:`TxQueue.work` in the reactor): the messages claimed against the plan's
    ``limit``, the handlers busy and when the last one finished, the lease and the
    queue's ``max_receives``, the reserve each loop sends."""

    #: guards the counts (a threading.Lock where loops are threads)
    _lock: ContextManager[Any] = contextlib.nullcontext()

    def __init__(self, queue: _Q, handler: Callable[[Message], Any], plan: WorkPlan,
                 group: Optional[str] = None) -> None:
        self.queue = queue
        self.handler = handler
        self.plan = plan
        self.group = group
        self.processed = 0
        self._claimed = 0
        self._busy = 0
        self._lease = plan.lease
        self._max_receives: Optional[int] = None
        self._last_work = self._now()

    def _now(self) -> float:
        raise NotImplementedError

    def _configure(self, settings: Dict[str, Any]) -> None:
        """Take ``max_receives`` and (unless the plan gives one) the lease from the queue's settings."""
        self._max_receives = int(settings["max_receives"])
        if self._lease is None:
            self._lease = float(settings["lease_seconds"])

    def _lease_or_default(self) -> float:
        """The lease of every reserve: the plan's, else the queue's, else DEFAULT_LEASE."""
        if self._lease is None:
            self._lease = DEFAULT_LEASE
        return self._lease

    def _claim(self) -> int:
        """How many messages a loop may reserve now (0: the limit is reached)."""
        with self._lock:
            if self.plan.limit is None:
                return self.plan.prefetch
            count = max(0, min(self.plan.prefetch, self.plan.limit - self._claimed))
            self._claimed += count
            return count

    def _unclaim(self, count: int) -> None:
        if self.plan.limit is not None and count:
            with self._lock:
                self._claimed -= count

    def _wait_budget(self) -> float:
        """Seconds the next reserve may long-poll."""
        idle_timeout = self.plan.idle_timeout
        if idle_timeout is None:
            return LONG_POLL_STEP
        with self._lock:
            busy, idle = self._busy, self._now() - self._last_work
        if busy:
            # another loop is still on a message: this is not idleness yet
            return min(LONG_POLL_STEP, max(idle_timeout, 1.0))
        return min(LONG_POLL_STEP, max(0.0, idle_timeout - idle))

    def _idle_over(self) -> bool:
        idle_timeout = self.plan.idle_timeout
        if idle_timeout is None:
            return False
        with self._lock:
            return not self._busy and self._now() - self._last_work >= idle_timeout

    def _poll_call(self, count: int) -> _Call:
        """The reserve of up to ``count`` messages (one, unprefetched, without ``prefetch``)."""
        return self.queue._pop_call(self._wait_budget(), self._lease_or_default(),
                                    count if self.plan.prefetch > 1 else None, self.group or "")

    def _too_late(self, index: int, sent: float) -> bool:
        """Whether the ``index``-th message of a batch reserved at ``sent`` waited so
        long that its lease is nearly over: someone else may have it soon."""
        return bool(index) and self._now() > _held_until(sent, self._lease_or_default())

    def _last_delivery(self, message: Message) -> bool:
        """Whether a failure on ``message`` sends it to the dead letters."""
        return self._max_receives is not None and message.deliveries >= self._max_receives

    def _started(self) -> None:
        with self._lock:
            self._busy += 1

    def _count(self) -> None:
        """A handler is done with its message (acked or given back)."""
        with self._lock:
            self._busy -= 1
            self.processed += 1
            self._last_work = self._now()


class _SSEParser:
    """Splits a text/event-stream into (event, id, data) as bytes arrive; ``retry``
    keeps the reconnection delay the server asked for (milliseconds)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event = "message"
        self._id: Optional[str] = None
        self._data: List[str] = []
        self.retry: Optional[int] = None

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
            elif name == "retry" and value.isdigit():
                self.retry = int(value)


class _Subscription(_Reconnects):
    """One broadcast stream across its reconnections, in either flavour: where it
    resumes (``last_id``), the broker's ``retry:`` hint, the messages of each chunk."""

    def __init__(self, calls: _QueueCalls, last_id: Optional[str], group: Optional[str]) -> None:
        super().__init__()
        self.calls = calls
        self.last_id = last_id
        self.group = group
        self.retry_ms: Optional[int] = None
        self.parser = _SSEParser()

    def connect(self) -> Tuple[_Call, Dict[str, str], _SSEParser]:
        """The request of the next connection (resuming after ``last_id``) and the
        parser of its answer."""
        self.parser = _SSEParser()
        call, headers = self.calls._stream_call(self.last_id, self.group)
        return call, headers, self.parser

    @staticmethod
    def refusal(status: int, body: bytes) -> ClientError:
        """Why the broker did not open the stream (it answered ``status``).

        :raises ClientError: unless the broker is only away for now.
        """
        error = _error(status, body)
        if status not in _UNAVAILABLE:
            raise error
        return error

    def messages(self, parser: _SSEParser, chunk: bytes, gap: Callable[[str], None]) -> Iterator[Message]:
        """The messages of ``chunk`` one by one; ``gap`` hears what the broker could not replay."""
        for event, event_id, data in parser.feed(chunk):
            if event == "message":
                message = self.calls._message(orjson.loads(data), self.group)
                self.last_id = event_id or message.key
                yield message
            elif event == "gap":
                gap(data)

    def pause(self) -> float:
        """Seconds before reconnecting: the first time what the broker asked for
        (``retry:``), then backing off."""
        if self.parser.retry is not None:
            self.retry_ms = self.parser.retry
        if self.attempt == 0 and self.retry_ms is not None:
            self.attempt += 1
            return self.retry_ms / 1000.0
        return super().pause()
