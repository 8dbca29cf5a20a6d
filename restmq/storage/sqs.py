"""SqsStore: the Redis operations of the SQS front-end, one Lua script (one round trip) each.

It works on RestMQ's own queues (the layout of keys.py): an SQS message is a
RestMQ message, its visibility timeout a lease, its receipt handle a receipt.
The SQS-only attributes of a queue sit in ``<q>:sqs``; those that mean the same
as a RestMQ setting are that setting (see keys.py).
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import attr

from restmq import keys
from restmq.errors import BadRequest, QueueNotFound, TooManyInFlight
from restmq.model import MessageMeta
from restmq.storage.scripts import Script, load_scripts
from restmq.storage.store import QueueStore, _pairs, _text, check_queue

__all__ = ["SqsStore", "SqsMessage", "SqsEntry", "QueueView", "UNLIMITED_RECEIVES",
           "SQS_SCRIPT_NAMES", "MAX_TAGS", "DEDUPLICATION_WINDOW_MS"]

SQS_SCRIPT_NAMES = ("sqs_url", "sqs_create", "sqs_set_attributes", "sqs_attributes", "sqs_send",
                    "sqs_receive", "sqs_settle", "sqs_purge", "sqs_delete_queue", "sqs_tags",
                    "sqs_sources", "sqs_move", "sqs_move_task")

#: max_receives of a queue without a RedrivePolicy: its messages never die
UNLIMITED_RECEIVES = 2 ** 53 - 1
#: messages removed per script call by PurgeQueue / DeleteQueue (keeps each call short)
PURGE_STEP = 2000
#: tags a queue may have (SQS's limit)
MAX_TAGS = 50
#: how long a FIFO MessageDeduplicationId (and ReceiveRequestAttemptId) is remembered
DEDUPLICATION_WINDOW_MS = 5 * 60 * 1000


@attr.s(frozen=True, auto_attribs=True)
class SqsMessage:
    """A received message: its RestMQ key and receipt, and what SQS reports of it."""

    key: str
    body: str
    deliveries: int
    receipt: str
    sent_ms: int
    meta: Optional[MessageMeta] = None
    first_receive_ms: int = 0
    origin: str = ""  # in a dead-letter queue: the message's key in the queue it died in


@attr.s(frozen=True, auto_attribs=True)
class SqsEntry:
    """One message to send: its body, its size as SQS counts it (body and
    attributes), its delay (None: the queue's DelaySeconds), its metadata, and
    its deduplication id (FIFO)."""

    body: str
    size: int
    delay: Optional[int] = None
    meta: Optional[MessageMeta] = None
    dedup_id: str = ""


@attr.s(frozen=True, auto_attribs=True)
class QueueView:
    """What GetQueueAttributes is made of."""

    attributes: Dict[str, str]
    settings: Dict[str, str]
    waiting: int
    inflight: int
    delayed: int


class SqsStore:
    """SQS operations over the same pool (and metrics hook) as ``store``."""

    def __init__(self, store: QueueStore) -> None:
        self.store = store
        self.scripts: Dict[str, Script] = load_scripts(SQS_SCRIPT_NAMES, ("lib", "sqs_lib"))

    def _run(self, name: str, script_keys: Sequence[str], args: Sequence[Any]) -> Any:
        # the store's call: the same pool, timing and errors, SQS's refusals mapped here
        return self.store._run(name, script_keys, args, scripts=self.scripts, error=self._error)

    def _error(self, exc: Exception) -> Exception:
        text = str(exc)
        for marker, kind in (("NOQUEUE ", QueueNotFound), ("OVERLIMIT ", TooManyInFlight),
                             ("TAGLIMIT ", BadRequest)):
            if marker in text:
                detail = text[text.index(marker) + len(marker):]
                if kind is QueueNotFound:
                    return QueueNotFound("queue %r does not exist" % detail)
                return kind(detail)
        for marker, why in (("NOTDLQ ", "the source queue %r is no queue's dead-letter queue"),
                            ("MOVERUNNING ", "a message move task of %r is running (one at a time)"),
                            ("NODLQ ", "the dead-letter target %r does not exist"),
                            ("DLQTYPE ", "the dead-letter target %r must be of the same type "
                                         "(standard or FIFO) as the queue")):
            if marker in text:
                return BadRequest(why % text[text.index(marker) + len(marker):])
        return self.store._response_error(exc)

    # queues

    async def exists(self, queue: str) -> bool:
        check_queue(queue)
        return bool(await self._run("sqs_url", [keys.sqs_attributes(queue)], [queue]))

    async def queues(self) -> List[str]:
        """Every queue RestMQ or the SQS API knows, sorted."""
        names = await self.store._command("SUNION", keys.QUEUESET, keys.SQS_QUEUESET)
        return sorted(_text(name) for name in names)

    async def create(self, queue: str, attributes: Sequence[Tuple[str, str, str, bool]],
                     tags: Dict[str, str], dead_letter_target: str = "",
                     fifo: bool = False) -> Tuple[bool, Optional[str]]:
        """Create ``queue`` or confirm it.

        :param attributes: (hash "sqs" or "settings", field, value, given); a value
            that is not given is a default, written only where the queue has none.
        :returns: (created, None), or (False, field) when the queue exists with
            another value for a given attribute.
        """
        check_queue(queue)
        args: List[Any] = [queue, int(time.time()), len(attributes), dead_letter_target,
                           "true" if fifo else "false"]
        for hash_name, field, value, given in attributes:
            args += [hash_name, field, value, "1" if given else "0"]
        for key, value in tags.items():
            args += [key, value]
        reply = await self._run("sqs_create", [keys.sqs_attributes(queue)], args)
        if not int(reply[0]):
            return False, _text(reply[1])
        return bool(int(reply[1])), None

    async def set_attributes(self, queue: str, changes: Sequence[Tuple[str, str, str]],
                             dead_letter_target: str = "") -> None:
        """Set (or with "" remove) attributes: (hash "sqs" or "settings", field, value)."""
        check_queue(queue)
        args: List[Any] = [queue, int(time.time()), dead_letter_target]
        for change in changes:
            args += list(change)
        await self._run("sqs_set_attributes", [keys.sqs_attributes(queue)], args)

    async def view(self, queue: str) -> QueueView:
        """The queue's attributes, settings and current counts."""
        check_queue(queue)
        reply = await self._run("sqs_attributes", [keys.sqs_attributes(queue)],
                                [queue, self.store.default_max_receives])
        return QueueView(_pairs(reply[0]), _pairs(reply[1]), int(reply[2]), int(reply[3]),
                         int(reply[4]))

    async def purge(self, queue: str) -> int:
        """Remove every message (in steps of PURGE_STEP, one script call each)."""
        check_queue(queue)
        removed = 0
        force = "0"
        while True:
            reply = await self._run("sqs_purge", [keys.queue_list(queue)], [queue, PURGE_STEP, force])
            removed += int(reply[0])
            if not int(reply[1]):
                return removed
            force = "1"  # the queue may be deleted meanwhile: finish what was started

    async def delete_queue(self, queue: str) -> int:
        """Forget ``queue``, its configuration and its messages; every process closes
        its streams. :returns: how many messages were removed."""
        check_queue(queue)
        reply = await self._run("sqs_delete_queue", [keys.sqs_attributes(queue)],
                                [queue, PURGE_STEP, keys.NOTIFY_CHANNEL])
        removed = int(reply[0])
        while int(reply[1]):
            reply = await self._run("sqs_purge", [keys.queue_list(queue)], [queue, PURGE_STEP, "1"])
            removed += int(reply[0])
        return removed

    async def tags(self, queue: str, operation: str = "list",
                   items: Sequence[str] = ()) -> Dict[str, str]:
        """``operation`` "tag" (items: key, value, ...), "untag" (items: keys) or
        "list"; resolves to the tags after it."""
        check_queue(queue)
        return _pairs(await self._run("sqs_tags", [keys.sqs_tags(queue)],
                                      [queue, operation, MAX_TAGS, *items]))

    async def dead_letter_sources(self, queue: str) -> List[str]:
        """The queues whose dead letters go to ``queue``, sorted."""
        check_queue(queue)
        reply = await self._run("sqs_sources", [keys.sqs_sources(queue)], [queue])
        return sorted({_text(name) for name in reply})

    # message move tasks (redrive from a dead-letter queue)

    async def move_task(self, queue: str, operation: str = "read", handle: str = "",
                        destination: str = "", rate: Optional[int] = None,
                        stale_ms: int = 30000) -> Dict[str, str]:
        """Start ("start"), cancel ("cancel") or read ("read") the move task of the
        dead-letter queue ``queue``; resolves to its fields ({} when there is none,
        or when a cancel names no running task)."""
        check_queue(queue)
        args: List[Any] = [queue, operation]
        if operation == "start":
            args += [handle, destination, "" if rate is None else rate, int(time.time() * 1000), stale_ms]
        elif operation == "cancel":
            args.append(handle)
        return _pairs(await self._run("sqs_move_task", [keys.sqs_move(queue)], args))

    async def move_step(self, queue: str, handle: str, destination: str, count: int) -> Tuple[int, str]:
        """Move up to ``count`` dead letters of ``queue`` for task ``handle``:
        (moved, the task's status after the step)."""
        check_queue(queue)
        reply = await self._run("sqs_move", [keys.queue_list(queue)],
                                [queue, handle, destination, count, keys.NOTIFY_CHANNEL])
        return int(reply[0]), _text(reply[1])

    # messages

    async def send(self, queue: str, entries: Sequence[SqsEntry], default_max_bytes: int,
                   origin: str = "") -> Tuple[int, List[str], List[str]]:
        """Store the entries (for the default consumers and every consumer group).

        :param origin: the sending process's id: its wake-ups carry it, so that this
            process can skip them (it wakes the namespaces returned itself).
        :returns: (the time they were stored, in ms; each entry's message key, or
            "!size" when it was over the queue's MaximumMessageSize, "!dedup" when a
            FIFO queue without ContentBasedDeduplication got no deduplication id;
            the namespaces whose consumers were woken).
            On a FIFO queue an entry whose deduplication id (or body, with
            ContentBasedDeduplication) was seen in the last 5 minutes answers the first key.
        :raises QueueNotFound, QueueFull:
        """
        check_queue(queue)
        # only a FIFO queue's ContentBasedDeduplication reads the body's digest
        fifo = queue.endswith(".fifo")
        plain = not fifo and all(e.delay is None and e.meta is None and not e.dedup_id for e in entries)
        args: List[Any] = [queue, keys.NOTIFY_CHANNEL, default_max_bytes, DEDUPLICATION_WINDOW_MS,
                           "" if plain else "m", origin]
        if plain:
            # bodies only: the script counts their sizes (they carry no attributes)
            args += [entry.body for entry in entries]
        for entry in () if plain else entries:
            meta = entry.meta
            args += [entry.body, entry.size, "" if entry.delay is None else entry.delay,
                     meta.encode() if meta is not None else "",
                     (meta.ordering_key or "") if meta is not None else "", entry.dedup_id,
                     hashlib.sha256(entry.body.encode("utf-8")).hexdigest() if fifo else ""]
        reply = await self._run("sqs_send", [keys.queue_list(queue)], args)
        count = len(entries)
        return (int(reply[0]), [_text(key) for key in reply[1:1 + count]],
                [_text(ns) for ns in reply[1 + count:]])

    async def receive(self, queue: str, count: int, visibility_ms: Optional[int],
                      default_visibility_ms: int, max_inflight: int, listen_ms: int = 0,
                      hold_if_stopped: bool = False,
                      attempt_id: str = "") -> Tuple[List[SqsMessage], int]:
        """Lease up to ``count`` messages for ``visibility_ms`` (None: the queue's
        VisibilityTimeout); ordering keys (FIFO groups) come in order, one in flight
        each. A retry with the same ``attempt_id`` gets the same messages while their
        leases last.

        :returns: (the messages, the queue's ReceiveMessageWaitTimeSeconds).
        :raises QueueNotFound, TooManyInFlight:
        """
        check_queue(queue)
        prefix = os.urandom(8).hex() + "-"
        reply = await self._run("sqs_receive", [keys.queue_list(queue)], [
            queue, count, "" if visibility_ms is None else visibility_ms, default_visibility_ms,
            prefix, self.store.default_max_receives, listen_ms, "1" if hold_if_stopped else "0",
            max_inflight, attempt_id, DEDUPLICATION_WINDOW_MS])
        out = []
        for i in range(2, len(reply), 8):
            key = _text(reply[i])
            out.append(SqsMessage(key, _text(reply[i + 1]), int(reply[i + 2]),
                                  "%s:%s" % (key, _text(reply[i + 3])), int(reply[i + 4]),
                                  MessageMeta.decode(_text(reply[i + 5])), int(reply[i + 6] or 0),
                                  _text(reply[i + 7])))
        return out, int(reply[1])

    async def delete_messages(self, queue: str, receipts: Sequence[Tuple[str, str]]) -> List[bool]:
        """Delete messages by (key, token); False where the receipt is not the
        message's current lease (deleted already, or received again since)."""
        return await self._settle(queue, "delete", [(key, token, 0) for key, token in receipts])

    async def change_visibility(self, queue: str,
                                receipts: Sequence[Tuple[str, str, int]]) -> List[bool]:
        """Move lease deadlines to now + ms, by (key, token, ms); False where the
        message is not in flight under that receipt."""
        return await self._settle(queue, "visibility", receipts)

    async def _settle(self, queue: str, operation: str,
                      receipts: Sequence[Tuple[str, str, int]]) -> List[bool]:
        check_queue(queue)
        args: List[Any] = [queue, operation]
        for key, token, ms in receipts:
            args += [key, token, ms]
        reply = await self._run("sqs_settle", [keys.inflight(queue)], args)
        return [bool(int(done)) for done in reply]
