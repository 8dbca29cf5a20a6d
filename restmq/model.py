"""Small value objects shared by storage, dispatch and web."""

from __future__ import annotations

import enum
from typing import Any, Dict, Optional

import attr
import orjson

_dumps = orjson.dumps

__all__ = ["Policy", "QueueState", "Message", "MessageMeta", "Batch", "QueueInfo", "GroupInfo",
           "Taker", "SETTINGS", "TEXT_SETTINGS", "parse_setting", "MAX_TTL_SECONDS", "WaitingMessage",
           "ConsumerInfo", "RedisMemory"]

#: the longest ``ttl`` a message may be given (Redis refuses absurd expiry times)
MAX_TTL_SECONDS = 10 * 365 * 86400


class Policy(enum.Enum):
    """How streaming subscribers share a queue. Values are the Redis encoding."""

    BROADCAST = 1
    ROUNDROBIN = 2

    @classmethod
    def from_redis(cls, raw: object) -> "Policy":
        """Decode <q>:queuepolicy; missing or unknown means broadcast, as in the original."""
        return cls.ROUNDROBIN if str(raw) == "2" else cls.BROADCAST

    @classmethod
    def from_setting(cls, raw: object) -> "Optional[Policy]":
        """The policy stored in <q>:queuepolicy, or None when none (or junk) is."""
        text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
        return {"1": cls.BROADCAST, "2": cls.ROUNDROBIN}.get(text)

    @classmethod
    def from_name(cls, name: str) -> "Policy":
        """:raises ValueError: for anything but "broadcast" or "roundrobin"."""
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError("unknown policy %r (use broadcast or roundrobin)" % name) from None

    @property
    def label(self) -> str:
        return self.name.lower()


class QueueState(enum.Enum):
    """Whether consumers get messages. Values are the Redis encoding."""

    STOPPED = 0
    STARTED = 1

    @classmethod
    def from_redis(cls, raw: object) -> "QueueState":
        """Decode queuestat::<q>; only "0" means stopped."""
        return cls.STOPPED if str(raw) == "0" else cls.STARTED

    @classmethod
    def from_command(cls, word: str) -> "QueueState":
        """:raises ValueError: for anything but "start" or "stop"."""
        if word == "start":
            return cls.STARTED
        if word == "stop":
            return cls.STOPPED
        raise ValueError("unknown status %r (use start or stop)" % word)

    @property
    def label(self) -> str:
        return self.name.lower()


@attr.s(slots=True, frozen=True, auto_attribs=True)
class MessageMeta:
    """What travels with a message besides its body, stored as one blob.

    ``attributes`` are the user's (string values, bounded at the edge);
    ``ordering_key`` orders the messages that share it; ``system`` is reserved
    for front-ends that keep more per message (the SQS API's typed attributes,
    deduplication id ...): any JSON-able dict, never shown as attributes.
    """

    attributes: Dict[str, str] = attr.Factory(dict)
    ordering_key: Optional[str] = None
    system: Dict[str, Any] = attr.Factory(dict)

    def __bool__(self) -> bool:
        return bool(self.attributes or self.ordering_key is not None or self.system)

    def encode(self) -> str:
        """The stored blob: "" when there is nothing to keep."""
        if not self:
            return ""
        out: Dict[str, Any] = {}
        if self.attributes:
            out["a"] = self.attributes
        if self.ordering_key is not None:
            out["k"] = self.ordering_key
        if self.system:
            out["s"] = self.system
        return orjson.dumps(out).decode("utf-8")

    @classmethod
    def decode(cls, blob: Any) -> Optional["MessageMeta"]:
        """A stored blob back (None for "" or a blob this version cannot read)."""
        if not blob:
            return None
        try:
            raw = orjson.loads(blob)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(raw, dict):
            return None
        attributes, system, key = raw.get("a"), raw.get("s"), raw.get("k")
        return cls(attributes if isinstance(attributes, dict) else {},
                   key if isinstance(key, str) else None,
                   system if isinstance(system, dict) else {})


@attr.s(slots=True, frozen=False, auto_attribs=True)
class Message:
    """One message: its key "<q>:<n>", its body, how often it was handed out.

    ``receipt`` is set when the message is leased (reserve / acked streaming).
    ``meta`` holds its attributes and ordering key, if it has any.
    Encodings for the streaming transports are computed once per message and
    shared by every subscriber it is broadcast to.
    """

    key: str
    value: str
    deliveries: int = 0
    receipt: Optional[str] = None
    meta: Optional[MessageMeta] = None
    # made on first use: most messages of a round-robin deal are encoded once
    _encoded: Optional[Dict[str, bytes]] = attr.ib(default=None, repr=False, eq=False)

    @property
    def queue(self) -> str:
        """The queue the message belongs to (from its key "<q>:<n>")."""
        return self.key.rpartition(":")[0]

    @property
    def attributes(self) -> Dict[str, str]:
        return self.meta.attributes if self.meta is not None else {}

    def as_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"key": self.key, "value": self.value}
        if self.receipt is not None:
            out["receipt"] = self.receipt
            out["deliveries"] = self.deliveries
        meta = self.meta
        if meta is not None:
            if meta.attributes:
                out["attributes"] = meta.attributes
            if meta.ordering_key is not None:
                out["ordering_key"] = meta.ordering_key
        return out

    def json_with_queue(self) -> bytes:
        """The JSON object with ``"queue"`` (streams of several queues), cached."""
        if self._encoded is None:
            self._encoded = {}
        cached = self._encoded.get("json+queue")
        if cached is None:
            out = self.as_dict()
            out["queue"] = self.queue
            cached = self._encoded["json+queue"] = orjson.dumps(out)
        return cached

    def json(self) -> bytes:
        """The JSON object ``{"key", "value"}`` (plus receipt when leased), cached."""
        encoded = self._encoded
        if encoded is not None:
            cached = encoded.get("json")
            if cached is not None:
                return cached
        if self.receipt is None and self.meta is None:
            # the bytes orjson.dumps({"key": ..., "value": ...}) gives, in half its time
            cached = b'{"key":%s,"value":%s}' % (_dumps(self.key), _dumps(self.value))
        else:
            cached = orjson.dumps(self.as_dict())
        if encoded is not None:  # cached once the message has a cache (a broadcast)
            encoded["json"] = cached
        return cached

    def encoded(self, name: str, encode) -> bytes:
        """Cache ``encode(self)`` under ``name`` so a broadcast encodes once per transport."""
        encoded = self._encoded
        if encoded is None:
            encoded = self._encoded = {}
        cached = encoded.get(name)
        if cached is None:
            cached = encoded[name] = encode(self)
        return cached


class Batch:
    """Messages delivered together: each transport's bytes for the whole batch are
    joined once and shared by every subscriber (one write per connection).

    ``shared=False``: the batch goes to one subscriber only (a round-robin deal),
    so its messages are encoded without being cached on them.
    """

    __slots__ = ("messages", "_joined", "shared")

    def __init__(self, messages: "list[Message]", shared: bool = True) -> None:
        self.messages = messages
        self._joined: Dict[str, bytes] = {}
        self.shared = shared

    def __len__(self) -> int:
        return len(self.messages)

    def encoded(self, name: str, encode) -> bytes:
        joined = self._joined.get(name)
        if joined is None:
            if self.shared:
                joined = b"".join(m.encoded(name, encode) for m in self.messages)
            else:
                joined = b"".join([encode(m) for m in self.messages])
            self._joined[name] = joined
        return joined

    def wrapped(self, name: str, encode, wrap) -> bytes:
        """``wrap(encoded(name, encode))``: one frame around the whole batch (a
        transport's framing, such as an HTTP chunk), made once and shared."""
        key = name + "\x00wrapped"
        joined = self._joined.get(key)
        if joined is None:
            data = self.encoded(name, encode)
            joined = self._joined[key] = wrap(data) if data else b""
        return joined


@attr.s(slots=True, frozen=True, auto_attribs=True)
class QueueInfo:
    """What /stats reports about one queue."""

    name: str
    length: int
    state: QueueState
    policy: Policy
    inflight: int = 0
    delayed: int = 0
    dead: int = 0
    oldest_age: Optional[float] = None
    #: a policy is stored for the queue (the original's /stats showed "" otherwise)
    policy_is_set: bool = True
    groups: "tuple[GroupInfo, ...]" = ()
    #: messages stored so far (the queue's id counter) and handed out so far
    published: int = 0
    delivered: int = 0

    def as_dict(self) -> dict:
        out = {
            "name": self.name,
            "len": self.length,
            "status": self.state.label,
            "policy": self.policy.label,
            "inflight": self.inflight,
            "delayed": self.delayed,
            "dead": self.dead,
            "oldest_age": self.oldest_age,
            "published": self.published,
            "delivered": self.delivered,
        }
        if self.groups:
            out["groups"] = {group.name: group.as_dict() for group in self.groups}
        return out


@attr.s(slots=True, frozen=True, auto_attribs=True)
class GroupInfo:
    """What /q/<q>/groups and /stats report about one consumer group."""

    name: str
    length: int = 0
    inflight: int = 0
    delayed: int = 0
    dead: int = 0
    oldest_age: Optional[float] = None

    def as_dict(self) -> dict:
        return {"name": self.name, "len": self.length, "inflight": self.inflight,
                "delayed": self.delayed, "dead": self.dead, "oldest_age": self.oldest_age}


@attr.s(slots=True, frozen=True, auto_attribs=True)
class WaitingMessage:
    """A message still waiting in its queue, as the dashboard browses it.

    ``value`` is at most the first bytes asked for (``truncated`` says so);
    ``size`` is the whole body's length in bytes. ``gone`` marks a list element
    whose body expired (or that is not a message of this queue): a pop skips it.
    """

    key: str
    value: str
    size: int
    truncated: bool
    deliveries: int
    enqueued_ms: Optional[int]
    expires_in: Optional[float]
    gone: bool
    dead: Optional[Dict[str, Any]] = None

    def as_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "key": self.key, "value": self.value, "size": self.size, "truncated": self.truncated,
            "deliveries": self.deliveries, "enqueued": self.enqueued_ms,
            "expires_in": self.expires_in, "gone": self.gone}
        if self.dead is not None:
            out["dead"] = self.dead
        return out


@attr.s(slots=True, frozen=True, auto_attribs=True)
class ConsumerInfo:
    """One consumer of a queue on this process, as the dashboard lists it.

    ``group`` is its consumer group ("" for the queue's own consumers);
    ``unacked`` and ``prefetch`` are set for acked streams only (``?ack=1``).
    """

    transport: str
    remote: str
    since: float
    group: str = ""
    acked: bool = False
    prefetch: Optional[int] = None
    unacked: Optional[int] = None

    def as_dict(self) -> Dict[str, Any]:
        return {"transport": self.transport, "remote": self.remote, "since": self.since,
                "group": self.group, "acked": self.acked, "prefetch": self.prefetch,
                "unacked": self.unacked}


@attr.s(slots=True, frozen=True, auto_attribs=True)
class RedisMemory:
    """What Redis says of its memory (INFO memory), in bytes; ``max`` 0 = no limit."""

    used: int
    peak: int
    rss: int
    max: int
    policy: str

    def as_dict(self) -> Dict[str, Any]:
        return {"used": self.used, "peak": self.peak, "rss": self.rss, "max": self.max,
                "policy": self.policy}


@attr.s(slots=True, frozen=True, auto_attribs=True)
class Taker:
    """A consumer waiting on this process that a publish hands messages to in the
    same script call that stores them (add.lua): a long-poll (``count`` messages,
    leased for ``lease_ms`` when not 0), or the round-robin streams of a queue
    or group (``stream``: only while the queue's policy is roundrobin; a group's
    members always compete)."""

    group: str = ""
    count: int = 1
    lease_ms: int = 0
    default_lease: bool = False    # the queue's (group's) own lease_seconds wins
    hold_if_stopped: bool = True   # a stopped queue hands nothing
    stream: bool = False
    keep_ms: int = 0               # a plain pop leaves the body at its key this long (REST)

    def flags(self) -> str:
        """Its flags in add.lua's ARGV: d default lease, h hold if stopped, s stream."""
        return ("d" if self.default_lease else "") + ("h" if self.hold_if_stopped else "") + \
            ("s" if self.stream else "")


# the largest integer that Lua (doubles) and JSON readers keep exactly
_MAX_SETTING_INT = 2 ** 53 - 1


def _non_negative_int(text: str) -> str:
    value = int(text)
    if not 0 <= value <= _MAX_SETTING_INT:
        raise ValueError("must be from 0 to %d" % _MAX_SETTING_INT)
    return str(value)


def _positive_int(text: str) -> str:
    value = int(text)
    if not 1 <= value <= _MAX_SETTING_INT:
        raise ValueError("must be from 1 to %d" % _MAX_SETTING_INT)
    return str(value)


def _positive_seconds(text: str) -> str:
    value = float(text)
    # a millisecond at least, as reserve= and extend take: repr() of such a
    # value never has an exponent, so the stored text reads back as a number
    if not 0.001 <= value <= 12 * 3600:
        raise ValueError("must be between 0.001 and 43200 seconds")
    return repr(value)


def _ttl(text: str) -> str:
    value = int(text)
    # Redis refuses expiry times past its range: every publish would fail
    if not 1 <= value <= MAX_TTL_SECONDS:
        raise ValueError("must be between 1 and %d" % MAX_TTL_SECONDS)
    return str(value)


def _queue_name(text: str) -> str:
    from restmq.keys import is_valid_queue_name
    if not is_valid_queue_name(text):
        raise ValueError("must be a queue name (1-200 letters, digits and _ - . : @)")
    return text


def _overflow(text: str) -> str:
    if text not in ("reject", "drop_oldest"):
        raise ValueError("must be reject or drop_oldest")
    return text


# Per-queue settings (<q>:settings): name -> validator turning text into the stored text.
SETTINGS = {
    "maxlen": _non_negative_int,        # 0 or absent: unbounded
    "overflow": _overflow,              # at maxlen: refuse with 429, or drop the oldest
    "max_receives": _positive_int,      # deliveries before the dead-letter queue
    "lease_seconds": _positive_seconds,  # default lease of reserve and acked streaming
    "history_size": _non_negative_int,  # broadcast history kept for SSE resume
    "ttl": _ttl,                        # default ttl of new messages, seconds
    "dead_letter_queue": _queue_name,   # where dead letters go (default "<q>:dead")
}

#: settings whose value is text, not a number
TEXT_SETTINGS = ("overflow", "dead_letter_queue")


def parse_setting(name: str, text: str) -> str:
    """Validate one setting. :raises ValueError: naming the setting and the rule."""
    if name not in SETTINGS:
        raise ValueError("unknown setting %r (known: %s)" % (name, ", ".join(sorted(SETTINGS))))
    try:
        return SETTINGS[name](text.strip())
    except ValueError as exc:
        raise ValueError("setting %r: %s" % (name, str(exc).split(":")[-1].strip())) from None
