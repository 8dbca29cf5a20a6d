"""QueueStore: every Redis operation of RestMQ, one Lua script (one round trip) each."""

from __future__ import annotations

import os
import re
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import attr
import txredisapi
from twisted.logger import Logger

from restmq import keys
from restmq.errors import (BackendUnavailable, BadRequest, GroupNotFound, InvalidQueueName,
                           MessageNotFound, QueueFull, RestMQError)
from restmq.model import (GroupInfo, Message, MessageMeta, Policy, QueueInfo, QueueState, RedisMemory,
                          Taker, WaitingMessage)
from restmq.storage.pool import RedisPool
from restmq.storage.scripts import Script, load_scripts

__all__ = ["QueueStore", "AddResult", "DispatchResult", "StorageFull", "check_queue", "check_group",
           "dead_letter_queue", "RedisHealth", "PURGE_CHUNK", "REDRIVE_CHUNK", "STATS_PAGE"]

# Work that grows with a queue (or with the number of queues) is done a bounded
# chunk per script call, so that no call holds Redis for more than a few ms; each
# measured at about 1.5-3 ms on the development machine (bench/hostile.py).
#: message keys taken (and their bodies deleted) per purge_chunk call
PURGE_CHUNK = 500
#: dead letters moved per redrive call
REDRIVE_CHUNK = 100
#: queues per stats call (SSCAN COUNT)
STATS_PAGE = 100


class StorageFull(RestMQError):
    """Redis is out of memory (maxmemory reached)."""


# Redis error codes that mean "cannot serve now". A script's error wraps the
# inner one: "ERR Error running script (call to f_...): @user_script:12: ... -OOM ...".
_REFUSALS = re.compile(r"(?:^|[\s-])(OOM|READONLY|LOADING|MASTERDOWN|BUSY|TRYAGAIN|NOREPLICAS)\b")
#: the backend states the store reports (and logs once, when they change)
OK, OUT_OF_MEMORY, READ_ONLY, REFUSING = "ok", "out_of_memory", "read_only", "refusing"
_STATES = {"OOM": OUT_OF_MEMORY, "READONLY": READ_ONLY}


@attr.s(frozen=True, auto_attribs=True)
class RedisHealth:
    """What one INFO says about the Redis RestMQ writes to."""

    role: str
    loading: bool
    used_memory: int
    maxmemory: int
    maxmemory_policy: str
    latency: float

    @property
    def out_of_memory(self) -> bool:
        return self.maxmemory > 0 and self.used_memory >= self.maxmemory and \
            self.maxmemory_policy == "noeviction"

    @property
    def problem(self) -> Optional[str]:
        """Why writes would be refused now, or None."""
        if self.role != "master":
            return "Redis is a read-only replica (role %s)" % self.role
        if self.loading:
            return "Redis is loading its data"
        if self.out_of_memory:
            return "Redis is out of memory (used_memory %d >= maxmemory %d)" % (
                self.used_memory, self.maxmemory)
        return None


@attr.s(frozen=True, auto_attribs=True)
class AddResult:
    """What a publish did: the new keys; ``replayed`` when the idempotency key was
    seen; the messages handed to each taker (``handed[i]`` for ``takers[i]``); the
    namespaces ("<q>", "<q>#<g>") woken because messages are left for others."""

    keys: List[str]
    replayed: bool = False
    handed: List[List[Message]] = attr.Factory(list)
    woken: List[str] = attr.Factory(list)


@attr.s(frozen=True, auto_attribs=True)
class DispatchResult:
    started: bool
    policy: Policy
    messages: List[Message]
    length: int = 0
    next_due_ms: int = -1


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _messages(flat: Sequence[Any], start: int) -> List[Message]:
    """Decode the key, body, deliveries, token, metadata groups that pop() in lib.lua returns."""
    out: List[Message] = []
    append = out.append
    for i in range(start, len(flat), 5):
        key, body, count, token, blob = flat[i:i + 5]
        # the pool's replies are text already (decoded by hiredis); others may be bytes
        if type(key) is not str:
            key, body, token = _text(key), _text(body), _text(token)
        append(Message(key, body, int(count or 0), "%s:%s" % (key, token) if token else None,
                       MessageMeta.decode(blob) if blob else None))
    return out


def _add_result(queue: str, reply: Sequence[Any], takers: int, bodies: Sequence[str],
                metas: Optional[Sequence[Optional[MessageMeta]]]) -> AddResult:
    """Decode add.lua's reply: {0, -N, n, W, woken, per taker: F and F fields, or -K}, or a
    replay's {1, N, keys}. A taker's -K is the next K of ``bodies`` (passed through)."""
    count = int(reply[1])
    if count < 0:
        first = int(reply[2])
        new_keys = [f"{queue}:{n}" for n in range(first, first - count)]
        at = 3
    else:
        at = 2 + count
        new_keys = [_text(k) for k in reply[2:at]]
    result = AddResult(new_keys, bool(reply[0]))
    if at < len(reply):
        woken = int(reply[at])
        result.woken.extend(_text(ns) for ns in reply[at + 1:at + 1 + woken])
        at += 1 + woken
    passed = 0
    for _ in range(takers):
        fields = int(reply[at]) if at < len(reply) else 0
        if fields < 0:
            took = range(passed, passed - fields)
            result.handed.append([Message(new_keys[i], bodies[i],
                                          meta=(metas[i] or None) if metas is not None else None)
                                  for i in took])
            passed -= fields
            at += 1
            continue
        result.handed.append(_messages(reply[at + 1:at + 1 + fields], 0))
        at += 1 + fields
    return result


def _count(value: Any) -> int:
    """A counter read from Redis; missing or malformed counts as 0."""
    try:
        return max(0, int(_text(value) or 0))
    except ValueError:
        return 0


def _json(value: Any) -> Any:
    import orjson
    try:
        return orjson.loads(_text(value)) if value else None
    except orjson.JSONDecodeError:
        return _text(value)


def _groups(encoded: Any) -> List[GroupInfo]:
    """The JSON array of group counts that stats.lua returns per queue."""
    import orjson
    out = []
    for row in orjson.loads(_text(encoded) or "[]") or []:
        age = int(row[5])
        out.append(GroupInfo(str(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]),
                             None if age < 0 else age / 1000.0))
    return out


def _pairs(flat: Any) -> Dict[str, str]:
    """An HGETALL reply (a flat list, or a dict from some client versions) as a dict."""
    if isinstance(flat, dict):
        return {_text(k): _text(v) for k, v in flat.items()}
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


def _prefix(value: Any) -> str:
    """A body's first bytes as text: a character cut at the end is left out."""
    if not isinstance(value, bytes):
        return _text(value)
    for cut in range(4):
        try:
            return value[:len(value) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return value.decode("utf-8", "replace")


def _info_fields(reply: Any) -> Dict[str, str]:
    """INFO's "name:value" lines as a dict (txredisapi may hand them over already parsed)."""
    if isinstance(reply, dict):
        return {_text(k): _text(v) for k, v in reply.items()}
    fields = {}
    for line in _text(reply).splitlines():
        name, sep, value = line.partition(":")
        if sep and not name.startswith("#"):
            fields[name.strip()] = value.strip()
    return fields


def dead_letter_queue(queue: str, group: str = "") -> str:
    """The name of the ordinary queue that gets the dead letters of ``queue`` (of its group)."""
    return keys.dead_letter_queue(queue, group)


def check_group(group: str) -> str:
    """:raises BadRequest: unless "" (no group) or a valid group name (keys.py)."""
    if group and not keys.is_valid_group_name(group):
        raise BadRequest("invalid group name %r: use 1-%d letters, digits and _ - . @"
                         % (group[:100], keys.MAX_GROUP_NAME_BYTES))
    return group


def check_queue(queue: str) -> str:
    """:raises InvalidQueueName: unless the name follows the rule of keys.py."""
    if not keys.is_valid_queue_name(queue):
        raise InvalidQueueName(
            "invalid queue name %r: 1-200 characters of UTF-8, no control characters, no #, "
            "not beginning with 'queuestat:'" % queue[:250])
    return queue


def split_receipt(queue: str, receipt: str) -> Tuple[str, str]:
    """A receipt is "<message key>:<lease token>".

    :raises MessageNotFound: when it is not a receipt of ``queue``.
    """
    key, sep, token = receipt.rpartition(":")
    if not sep or not token or keys.queue_of_key(key) != queue:
        raise MessageNotFound("%r is not a receipt of queue %r" % (receipt[:250], queue))
    return key, token


class QueueStore:
    """Async queue operations over a txredisapi pool. Methods resolve to model objects.

    Every method raises ``BackendUnavailable`` when Redis cannot be reached or
    does not answer in time.

    :param observe: called with the duration in seconds of every round trip
        (the metrics hook; storage itself knows nothing of Prometheus).

    ``backend_state`` is ``ok``, ``out_of_memory``, ``read_only`` or
    ``refusing`` (another "cannot serve now" reply): what the last replies said.
    A change is logged once, not once per request.
    """

    log = Logger()

    def __init__(self, pool: RedisPool, default_max_receives: int = 5,
                 wait_replicas: int = 0, wait_timeout_ms: int = 1000,
                 history_size: int = 1000,
                 observe: Optional[Callable[[float], None]] = None) -> None:
        self.pool = pool
        self.history_size = history_size
        self.default_max_receives = default_max_receives
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.observe = observe
        self.scripts: Dict[str, Script] = load_scripts()
        self.backend_state = OK

    async def _run(self, name: str, script_keys: Sequence[str], args: Sequence[Any],
                   pin: str = "", scripts: Optional[Dict[str, Script]] = None,
                   error: Optional[Callable[[Exception], Exception]] = None) -> Any:
        """Script ``name`` (of ``scripts``, else this store's) in one call; Redis's
        refusals become domain errors (``error``, else this store's mapping)."""
        # ``pin``: calls with the same pin share a connection, so they run in order
        connection = self.pool.pinned(pin) if pin else self.pool.live()
        if connection is None:
            connection = await self.pool.connection()
        started = time.perf_counter()
        try:
            return await (scripts or self.scripts)[name](connection, script_keys, args)
        except txredisapi.ConnectionError as exc:
            raise BackendUnavailable("Redis did not answer: %s" % exc) from None
        except txredisapi.ResponseError as exc:
            raise (error or self._response_error)(exc) from None
        finally:
            if self.observe is not None:
                self.observe(time.perf_counter() - started)

    async def _command(self, *args: Any) -> Any:
        connection = self.pool.live()
        if connection is None:
            connection = await self.pool.connection()
        started = time.perf_counter()
        try:
            return await connection.execute_command(*args)
        except txredisapi.ConnectionError as exc:
            raise BackendUnavailable("Redis did not answer: %s" % exc) from None
        except txredisapi.ResponseError as exc:
            raise self._response_error(exc) from None
        finally:
            if self.observe is not None:
                self.observe(time.perf_counter() - started)

    def _response_error(self, exc: Exception) -> Exception:
        text = str(exc)
        if "QUEUEFULL" in text:
            return QueueFull(text[text.index("QUEUEFULL") + 10:])
        if "NOGROUP" in text:
            return GroupNotFound(text[text.index("NOGROUP") + 8:])
        refusal = _REFUSALS.search(text)
        if refusal is None:
            return exc
        code = refusal.group(1)
        detail = text[refusal.start(1):].split("\n")[0].rstrip(".")
        self._set_state(_STATES.get(code, REFUSING), detail)
        if code == "OOM":
            return StorageFull("Redis is out of memory (maxmemory reached)")
        return BackendUnavailable("Redis cannot serve now: %s" % detail)

    def _set_state(self, state: str, detail: str = "") -> None:
        if state == self.backend_state:
            return
        previous, self.backend_state = self.backend_state, state
        if state == OK:
            self.log.info("Redis accepts writes again (it was {previous})", previous=previous)
        else:
            self.log.error("Redis refuses writes: {state} ({detail}); answering {answer} until it "
                           "accepts them", state=state, detail=detail,
                           answer="507" if state == OUT_OF_MEMORY else "503")

    # producing

    async def add(self, queue: str, bodies: Sequence[str], ttl: Optional[int] = None,
                  delay_ms: Optional[int] = None, idempotency_key: Optional[str] = None,
                  idempotency_window_ms: int = 300000,
                  metas: Optional[Sequence[Optional[MessageMeta]]] = None,
                  reply_to: str = "", reply_timeout_ms: int = 0,
                  takers: Sequence[Taker] = (), origin: str = "", pin: str = "") -> AddResult:
        """Store ``bodies`` in ``queue`` atomically, in order; every consumer group
        of the queue gets each of them too (the body is stored once).

        :param ttl: seconds each message lives (default: the queue's ``ttl`` setting).
        :param delay_ms: hide the messages for this long first.
        :param idempotency_key: the same key within the window returns the first result.
        :param metas: ``metas[i]`` (attributes, ordering key, system fields) goes
            with ``bodies[i]``; None for none.
        :param reply_to: a request id whose caller waits ``reply_timeout_ms`` for
            a reply (see :meth:`reply`); the wait starts in the same round trip.
        :param takers: consumers waiting on this process: once stored, each pops (or
            leases) the oldest messages of its namespace in the same script call
            (see add.lua); what each got is in ``AddResult.handed``.
        :param origin: this process's id: the wake-ups the publish sends carry it,
            so that this process can skip them (it wakes ``AddResult.woken`` itself).
        :param pin: run on the connection of this name (see :meth:`dispatch`): what
            was sent earlier on it ran earlier and is answered first.
        :returns: the new message keys "<q>:<n>", ``replayed`` when the key was seen.
        :raises QueueFull: the queue is at its max length and refuses.
        """
        check_queue(queue)
        payload: List[Any] = list(bodies)
        mode = ""
        if metas is not None and any(metas):
            mode = "m"
            payload = []
            for body, meta in zip(bodies, metas):
                if meta:
                    payload += [body, meta.encode(), meta.ordering_key or ""]
                else:
                    payload += [body, "", ""]
        taking: List[Any] = []
        for taker in takers:
            check_group(taker.group)
            taking += [taker.group, taker.count, taker.lease_ms, taker.keep_ms, taker.flags()]
        reply = await self._run("add", [keys.queue_list(queue)], [
            queue, keys.NOTIFY_CHANNEL, "" if ttl is None else ttl,
            "" if not delay_ms else delay_ms, idempotency_key or "", idempotency_window_ms,
            self.history_size, mode, reply_to, reply_timeout_ms, origin,
            self.default_max_receives, os.urandom(8).hex() + "-" if takers else "",
            len(takers), *taking, *payload], pin)
        if self.backend_state != OK:
            # add always writes: Redis takes writes again
            self._set_state(OK)
        if self.wait_replicas:
            # a replayed key was stored by an earlier request that may have got a 503
            await self._wait_replicas()
        return _add_result(queue, reply, len(takers), bodies, metas if mode else None)

    async def _wait_replicas(self) -> None:
        acknowledged = await self._command("WAIT", self.wait_replicas, self.wait_timeout_ms)
        if int(acknowledged) < self.wait_replicas:
            raise BackendUnavailable("only %s of %d replicas acknowledged the write"
                                     % (acknowledged, self.wait_replicas))

    # consuming

    async def take(self, queue: str, count: int = 1, hold_if_stopped: bool = False,
                   listen_ms: int = 0, group: str = "", keep_ms: int = 0) -> List[Message]:
        """Pop up to ``count`` messages, oldest first; expired ones are skipped.

        :param listen_ms: a long-poll will wait: mark the queue as listened to.
        :param group: take for this consumer group ("" = the default consumers).
        :param keep_ms: leave each popped body at its key "<q>:<n>" for this long
            (the original left it there; clients read it after the pop).
        :returns: [] when the queue is empty (or stopped and ``hold_if_stopped``).
        :raises GroupNotFound: the queue has no such group.
        """
        check_queue(queue)
        check_group(group)
        reply = await self._run("take", [keys.queue_list(keys.namespace(queue, group))], [
            queue, count, 0, "", "1" if hold_if_stopped else "0", self.default_max_receives,
            listen_ms, "0", group, keep_ms])
        return _messages(reply, 2)

    async def reserve(self, queue: str, count: int, lease_ms: int,
                      hold_if_stopped: bool = False, listen_ms: int = 0,
                      default_lease: bool = False, group: str = "") -> List[Message]:
        """Lease up to ``count`` messages: each is hidden for ``lease_ms`` (the queue's
        ``lease_seconds`` setting when ``default_lease``), counted, and carries a
        receipt for ack / nack / extend. An expired lease puts the message back at
        the head of the queue (or in the dead letters after ``max_receives``).
        A message whose ordering key is held by an earlier one waits for it."""
        messages, _ = await self.reserve_leased(queue, count, lease_ms, hold_if_stopped, listen_ms,
                                                default_lease, group)
        return messages

    async def reserve_leased(self, queue: str, count: int, lease_ms: int, hold_if_stopped: bool = False,
                             listen_ms: int = 0, default_lease: bool = False,
                             group: str = "") -> Tuple[List[Message], int]:
        """:meth:`reserve`, resolving to (messages, the lease in ms they got): with
        ``default_lease`` that is the ``lease_seconds`` of the group (else of the
        queue) when it has one."""
        check_queue(queue)
        check_group(group)
        reply = await self._run("take", [keys.queue_list(keys.namespace(queue, group))], [
            queue, count, lease_ms, os.urandom(8).hex() + "-",
            "1" if hold_if_stopped else "0", self.default_max_receives, listen_ms,
            "1" if default_lease else "0", group])
        return _messages(reply, 2), int(reply[1]) if len(reply) > 1 else lease_ms

    async def take_first(self, queues: Sequence[str], count: int = 1,
                         lease_ms: Optional[int] = None, hold_if_stopped: bool = False,
                         listen_ms: int = 0, default_lease: bool = False,
                         group: str = "") -> List[Message]:
        """Priority take: up to ``count`` messages from the first non-empty of
        ``queues`` (then the next ones), popped, or leased when ``lease_ms`` is set.
        Each message's ``queue`` says where it came from."""
        for queue in queues:
            check_queue(queue)
        check_group(group)
        reply = await self._run("take_first", [keys.queue_list(keys.namespace(queues[0], group))], [
            count, lease_ms or 0, os.urandom(8).hex() + "-" if lease_ms else "",
            "1" if hold_if_stopped else "0", self.default_max_receives, listen_ms,
            "1" if default_lease else "0", group, *queues])
        return _messages(reply, 0)

    async def _settle(self, script: str, queue: str, receipts: Sequence[str],
                      args: Sequence[Any], script_keys: Sequence[str]) -> Tuple[int, List[str]]:
        check_queue(queue)
        pairs: List[str] = []
        for receipt in receipts:
            pairs += split_receipt(queue, receipt)
        reply = await self._run(script, script_keys, [queue, *args, *pairs])
        return int(reply[0]), [_text(key) for key in reply[1:]]

    async def ack(self, queue: str, receipts: Sequence[str], group: str = "") -> Tuple[int, List[str]]:
        """Remove leased messages for good (for ``group``; the body goes once every
        holder is done with it).

        :returns: (acked, refused keys): a receipt whose lease expired and went to
            another consumer is refused and that consumer's lease is untouched.
        :raises MessageNotFound: for a string that is not a receipt of ``queue``.
        """
        check_group(group)
        return await self._settle("ack", queue, receipts, [group],
                                  [keys.inflight(keys.namespace(queue, group))])

    async def nack(self, queue: str, receipts: Sequence[str], delay_ms: int = 0,
                   group: str = "") -> Tuple[int, List[str]]:
        """Give leased messages back, at once (head of the queue) or after ``delay_ms``."""
        check_group(group)
        return await self._settle("nack", queue, receipts,
                                  [delay_ms, self.default_max_receives, group],
                                  [keys.inflight(keys.namespace(queue, group))])

    async def extend(self, queue: str, receipts: Sequence[str], lease_ms: int,
                     group: str = "", default_lease: bool = False) -> Tuple[int, List[str]]:
        """Move lease deadlines to ``lease_ms`` from now (with ``default_lease``, to
        the ``lease_seconds`` of the group, else of the queue, when it has one)."""
        check_group(group)
        ns = keys.namespace(queue, group)
        lease = "default:%d:%s" % (lease_ms, group) if default_lease else lease_ms
        return await self._settle("extend", queue, receipts, [lease],
                                  [keys.inflight(ns), keys.leases(ns)])

    async def redrive(self, queue: str, count: int = 0, group: str = "") -> int:
        """Move up to ``count`` (0 = all) dead letters of ``queue`` (of its ``group``)
        back to its end (the group's), REDRIVE_CHUNK per script call; resolves to
        how many were moved."""
        check_queue(queue)
        check_group(group)
        dead = keys.dead_letter_queue(queue, group)
        script_keys = [keys.queue_list(dead), keys.queue_list(keys.namespace(queue, group))]
        moved = 0
        while not count or moved < count:
            chunk = REDRIVE_CHUNK if not count else min(REDRIVE_CHUNK, count - moved)
            done, left = await self._run("redrive", script_keys, [queue, chunk, keys.NOTIFY_CHANNEL, group])
            moved += int(done)
            if not int(left):
                break
        return moved

    async def dead_letters(self, queue: str, count: int = 10, group: str = "") -> List[Dict[str, Any]]:
        """The newest ``count`` dead letters of ``queue`` (of its ``group``) with why
        they died and their attributes (one round trip)."""
        check_queue(queue)
        check_group(group)
        dead = keys.dead_letter_queue(queue, group)
        reply = await self._run("jobs", [keys.queue_list(dead)],
                                [count, keys.dead_info(dead), keys.meta(dead)])
        out = []
        for i in range(1, len(reply), 4):
            letter = {"key": _text(reply[i]), "value": _text(reply[i + 1]), "dead": _json(reply[i + 2])}
            meta = MessageMeta.decode(reply[i + 3])
            if meta is not None and meta.attributes:
                letter["attributes"] = meta.attributes
            out.append(letter)
        return out

    async def get_settings(self, queue: str, group: str = "") -> Dict[str, str]:
        """The queue's (or its group's) own settings (only those that were set)."""
        check_queue(queue)
        check_group(group)
        return _pairs(await self._command("HGETALL", keys.settings(keys.namespace(queue, group))))

    async def set_settings(self, queue: str, values: Dict[str, Optional[str]],
                           group: str = "") -> Dict[str, str]:
        """Set (or, with None, remove) settings atomically; resolves to the settings
        after the change. A group's settings override its queue's."""
        check_queue(queue)
        check_group(group)
        return _pairs(await self._run("settings", [keys.settings(keys.namespace(queue, group))],
                                      [item for name, value in values.items()
                                       for item in (name, "" if value is None else value)]))

    async def requeue(self, queue: str, messages: Sequence[Message], group: str = "") -> int:
        """Put popped messages back at the head of the queue (of its group), in their
        order, and wake its consumers on every process (one script call)."""
        args: List[str] = [queue, group]
        for message in messages:
            args += [message.key, message.value, message.meta.encode() if message.meta else ""]
        return int(await self._run("requeue", [keys.queue_list(keys.namespace(queue, group))], args))

    async def dispatch(self, queue: str, broadcast_max: int, roundrobin_max: int,
                       listener_ttl_ms: int, history_size: int, broadcasting: bool = False,
                       popping: bool = False, group: str = "") -> DispatchResult:
        """Take for this process's streaming subscribers (see dispatch.lua).

        Broadcast batches are published on the queue's broadcast channel and
        recorded in its history; the caller delivers them from the channel. A
        group's members always compete (round robin). It runs on the connection
        pinned to ``queue``, as the publishes that hand messages to the same
        streams do (``add(pin=queue)``): their replies come back in the order
        Redis ran them, so each stream gets its messages in order.
        """
        reply = await self._run("dispatch", [keys.queue_list(keys.namespace(queue, group))], [
            queue, broadcast_max, roundrobin_max, listener_ttl_ms, history_size,
            keys.broadcast_channel(queue), self.default_max_receives,
            "1" if broadcasting else "0", "1" if popping else "0", group], queue)
        return DispatchResult(bool(reply[0]), Policy(int(reply[1])), _messages(reply, 4),
                              int(reply[2]), int(reply[3]))

    async def peek(self, queue: str) -> Optional[Message]:
        """The oldest message, left in place. Its ``deliveries`` is how many times it
        was looked at, counted in the original's "<key>:refcount" (shared with its
        brokers)."""
        check_queue(queue)
        reply = await self._run("peek", [keys.queue_list(queue), keys.deliveries(queue)], [queue])
        if not reply:
            return None
        return Message(_text(reply[0]), _text(reply[1]), int(reply[2]),
                       meta=MessageMeta.decode(reply[3]))

    async def delete(self, queue: str, key: str) -> bool:
        """Remove one message by key; False when there was none."""
        check_queue(queue)
        reply = await self._run("delete", [keys.queue_list(queue)], [queue, key])
        return bool(reply)

    async def purge(self, queue: str) -> int:
        """Remove every message of ``queue`` (bodies included) and drop it from QUEUESET.

        The queue is empty for everyone at once (one O(1) script); its bodies are
        then deleted PURGE_CHUNK per call. Every process closes the queue's
        streaming consumers. Should this process die half way, the next RestMQ
        to start finishes the job (:meth:`finish_purges`).
        :returns: how many message bodies were deleted (expired ones had gone already).
        """
        check_queue(queue)
        token = os.urandom(8).hex()
        script_keys = [keys.queue_list(queue), keys.QUEUESET, keys.PURGES, keys.purge_job(queue, token)]
        entry, prefix = keys.purge_entry(queue, token), keys.purge_trash_prefix(queue, token)
        pending = int(await self._run("purge_start", script_keys,
                                      [queue, keys.NOTIFY_CHANNEL, entry, prefix]))
        if not pending:
            return 0
        return await self._purge_chunks(queue, token)

    async def _purge_chunks(self, queue: str, token: str) -> int:
        entry = keys.purge_entry(queue, token)
        script_keys = [keys.purge_job(queue, token), keys.PURGES]
        deleted = 0
        while True:
            count, complete = await self._run("purge_chunk", script_keys, [queue, PURGE_CHUNK, entry])
            deleted += int(count)
            if int(complete):
                return deleted

    async def finish_purges(self) -> int:
        """Finish the purges a RestMQ left half done (it died); resolves to how
        many bodies that deleted."""
        deleted = 0
        for entry in await self._command("SMEMBERS", keys.PURGES):
            queue, token = keys.parse_purge_entry(_text(entry))
            if keys.is_valid_queue_name(queue) and token:
                deleted += await self._purge_chunks(queue, token)
            else:
                await self._command("SREM", keys.PURGES, entry)
        return deleted

    async def history_after(self, queue: str, key: str) -> Tuple[bool, List[Message]]:
        """Broadcast messages newer than ``key``, oldest first.

        :returns: (found, messages); when ``key`` is not in the history, found is
            False and messages is the whole history.
        """
        reply = await self._run("history", [keys.history(queue), keys.history_bodies(queue),
                                            keys.history_meta(queue)], [key])
        return bool(reply[0]), [Message(_text(reply[i]), _text(reply[i + 1]),
                                        meta=MessageMeta.decode(reply[i + 2]))
                                for i in range(1, len(reply), 3)]

    # queue configuration and views

    async def queues(self) -> List[str]:
        """Names of all queues, sorted."""
        return sorted(_text(name) for name in await self._command("SMEMBERS", keys.QUEUESET))

    async def get_policy(self, queue: str) -> Policy:
        check_queue(queue)
        return Policy.from_redis(await self._command("GET", keys.policy(queue)))

    async def set_policy(self, queue: str, policy: Policy) -> Policy:
        check_queue(queue)
        await self._command("SET", keys.policy(queue), policy.value)
        return policy

    async def get_state(self, queue: str) -> QueueState:
        check_queue(queue)
        return QueueState.from_redis(await self._command("GET", keys.status(queue)))

    async def set_state(self, queue: str, state: QueueState) -> QueueState:
        """Start or stop a queue's consumers; a start wakes its streams on every process."""
        check_queue(queue)
        await self._run("status", [keys.status(queue), keys.listeners(queue)],
                        [state.value, queue, keys.NOTIFY_CHANNEL])
        return state

    async def stats(self, queue: Optional[str] = None) -> List[QueueInfo]:
        """Counts for one queue, or for every queue when ``queue`` is None."""
        if queue is not None:
            check_queue(queue)
        infos: Dict[str, QueueInfo] = {}
        cursor = "0"
        while True:
            # one page of queues per call (SSCAN), so that 30,000 queues never hold Redis at once
            reply = await self._run("stats", [keys.QUEUESET],
                                    [queue or "", self.default_max_receives, cursor, STATS_PAGE])
            cursor = _text(reply[0])
            self._stats_page(reply, infos)
            if cursor == "0":
                break
        return sorted(infos.values(), key=lambda info: info.name)

    @staticmethod
    def _stats_page(reply: Sequence[Any], infos: Dict[str, QueueInfo]) -> None:
        for i in range(1, len(reply), 11):
            age = int(reply[i + 7])
            stored = Policy.from_setting(_text(reply[i + 3]))
            infos[_text(reply[i])] = (QueueInfo(
                name=_text(reply[i]), length=int(reply[i + 1]),
                state=QueueState.from_redis(_text(reply[i + 2])),
                policy=stored or Policy.BROADCAST, policy_is_set=stored is not None,
                inflight=int(reply[i + 4]), delayed=int(reply[i + 5]), dead=int(reply[i + 6]),
                oldest_age=None if age < 0 else age / 1000.0,
                groups=tuple(_groups(reply[i + 8])),
                published=_count(reply[i + 9]), delivered=_count(reply[i + 10])))

    async def browse(self, queue: str, offset: int = 0, count: int = 20,
                     preview_bytes: int = 4096) -> Tuple[int, List[WaitingMessage]]:
        """The next ``count`` messages to be delivered from ``offset`` on, oldest first,
        left in place and uncounted (one round trip).

        :param preview_bytes: each body is cut to this many bytes.
        :returns: (length of the queue, messages); dead letters carry their note.
        """
        check_queue(queue)
        reply = await self._run("browse", [keys.queue_list(queue)],
                                [queue, offset, count, preview_bytes])
        messages = []
        for i in range(1, len(reply), 7):
            value = _prefix(reply[i + 1])
            size = int(reply[i + 2] or 0)
            ttl = int(reply[i + 5])
            enqueued = reply[i + 4]
            messages.append(WaitingMessage(
                key=_text(reply[i]), value=value, size=size,
                truncated=len(value.encode("utf-8")) < size, deliveries=int(reply[i + 3] or 0),
                enqueued_ms=int(enqueued) if enqueued is not None else None,
                expires_in=ttl / 1000.0 if ttl >= 0 else None, gone=ttl == -2,
                dead=_json(reply[i + 6]) if reply[i + 6] is not None else None))
        return int(reply[0]), messages

    async def memory(self) -> RedisMemory:
        """Redis's memory use (INFO memory), one round trip."""
        fields = _info_fields(await self._command("INFO", "memory"))

        def number(name: str) -> int:
            try:
                return int(fields.get(name, "0"))
            except ValueError:
                return 0

        return RedisMemory(used=number("used_memory"), peak=number("used_memory_peak"),
                           rss=number("used_memory_rss"), max=number("maxmemory"),
                           policy=fields.get("maxmemory_policy", ""))

    async def counters(self) -> Dict[str, Dict[str, int]]:
        """Event counts of every broker on this Redis: {event: {queue: count}} for the
        events of ``keys.COUNTED_EVENTS`` (dead-lettered, expired, refused as full)."""
        reply = await self._command("HGETALL", keys.COUNTERS)
        counts: Dict[str, Dict[str, int]] = {event: {} for event in keys.COUNTED_EVENTS}
        for field, value in _pairs(reply).items():
            event, _, queue = field.partition(":")
            if event in counts and queue:
                counts[event][queue] = int(value)
        return counts

    async def groups(self, queue: str) -> List[GroupInfo]:
        """The consumer groups of ``queue`` with their counts, by name (one round trip)."""
        infos = await self.stats(queue)
        return sorted(infos[0].groups, key=lambda group: group.name)

    async def create_group(self, queue: str, group: str) -> bool:
        """Create consumer group ``group`` of ``queue``: from now on it gets every
        message published to the queue. Resolves to True when it is new."""
        check_queue(queue)
        if not group:
            raise BadRequest("missing group name")
        check_group(group)
        return bool(await self._run("group_create", [keys.groups(queue)], [queue, group]))

    async def check_groups(self, queues: Sequence[str], group: str) -> None:
        """:raises GroupNotFound: unless every queue of ``queues`` has ``group``."""
        for queue in queues:
            check_queue(queue)
        check_group(group)
        missing = _text(await self._run("group_check", [keys.groups(queues[0])], [group, *queues]))
        if missing:
            raise GroupNotFound("queue %r has no group %r" % (missing, group))

    async def delete_group(self, queue: str, group: str, chunk: int = 2000) -> Tuple[bool, int]:
        """Remove a consumer group and its backlog, ``chunk`` messages per round
        trip (no script holds Redis long). Every process closes its streams.

        :returns: (existed, messages removed).
        """
        check_queue(queue)
        if not group:
            raise BadRequest("missing group name")
        check_group(group)
        existed, removed = False, 0
        while True:
            reply = await self._run("group_delete", [keys.groups(queue)],
                                    [queue, group, keys.NOTIFY_CHANNEL, chunk])
            existed = existed or bool(int(reply[0]))
            removed += int(reply[1])
            if not int(reply[2]):
                return existed, removed

    async def jobs(self, queue: str, count: int = 10, group: str = "") -> Tuple[int, List[Message]]:
        """The newest ``count`` waiting messages (body "" if expired) and the length."""
        check_queue(queue)
        check_group(group)
        reply = await self._run("jobs", [keys.queue_list(keys.namespace(queue, group))],
                                [count, "", keys.meta(queue)])
        return int(reply[0]), [Message(_text(reply[i]), _text(reply[i + 1]),
                                       meta=MessageMeta.decode(reply[i + 3]))
                               for i in range(1, len(reply), 4)]

    # request/reply

    async def reply(self, request_id: str, encoded: str) -> bool:
        """Store the reply to request ``request_id`` and wake its caller's process.

        :returns: False when no caller waits for it (timed out, answered or unknown).
        """
        return bool(await self._run("reply", [keys.rpc(request_id)],
                                    [request_id, encoded, keys.NOTIFY_CHANNEL]))

    async def collect(self, request_id: str, final: bool = False) -> str:
        """Take the reply to ``request_id`` ("" when none came yet). With ``final``
        the caller stops waiting: a later reply finds nobody."""
        return _text(await self._run("collect", [keys.rpc(request_id)], ["1" if final else "0"]))

    async def ping(self) -> float:
        """One round trip to Redis; resolves to its duration in seconds."""
        started = time.perf_counter()
        await self._command("PING")
        return time.perf_counter() - started

    async def health(self) -> RedisHealth:
        """One INFO: whether Redis would take writes now (its role, loading, memory).
        A Redis that would is noted as ``ok`` again."""
        started = time.perf_counter()
        reply = await self._command("INFO")
        latency = time.perf_counter() - started
        fields = _info_fields(reply)

        def number(name: str) -> int:
            try:
                return int(fields.get(name, "0"))
            except ValueError:
                return 0

        health = RedisHealth(role=fields.get("role", "master"), loading=fields.get("loading") == "1",
                             used_memory=number("used_memory"), maxmemory=number("maxmemory"),
                             maxmemory_policy=fields.get("maxmemory_policy", "noeviction"), latency=latency)
        if health.problem is None and self.backend_state != OK:
            self._set_state(OK)
        return health
