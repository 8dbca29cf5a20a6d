"""Every Redis key and channel name RestMQ uses: the one description of the layout.

The layout of the original RestMQ is kept so that its clients and other brokers
that follow it share the same queues::

    QUEUESET              SET     names of all queues
    <q>:UUID              STRING  per-queue id generator (INCR)
    <q>:<n>               STRING  body of message n (with its own TTL when posted with ttl)
    <q>:queue             LIST    message keys "<q>:<n>"; producers LPUSH, consumers RPOP
    <q>:queuepolicy       STRING  1 = broadcast (default), 2 = roundrobin
    queuestat::<q>        STRING  1 = started (default), 0 = stopped

New structures sit beside them. Their suffixes contain no ':' so they can never
collide with the keys of another queue (whose names may contain ':')::

    <q>:deliveries        HASH    message key -> times it was handed out (peek, reserve)
    <q>:listeners         STRING  present while some RestMQ process streams <q> (PX ttl)
    <q>:bsubs             STRING  present while some process has broadcast subscribers of <q>
                                  ready (publishes may then go straight to the channel)
    <q>:poppers           STRING  present while some consumer pops <q> from the list (long-poll,
                                  acked stream): publishes must then go through the list
    <q>:history           LIST    keys of the last broadcast messages, newest first
    <q>:historybodies     HASH    message key -> body, for the keys in <q>:history
    <q>:inflight          ZSET    leased message key -> lease deadline (ms, Redis TIME)
    <q>:leases            HASH    leased message key -> lease token
    <q>:delayed           ZSET    delayed message key -> due time (ms, Redis TIME)
    <q>:settings          HASH    per-queue settings (maxlen, overflow, max_receives, ...)
    <q>:idempotency       HASH    Idempotency-Key -> first result
    <q>:idempotencyexp    ZSET    Idempotency-Key -> expiry (ms)
    <q>:deadinfo          HASH    (on a dead-letter queue) message key -> reason
    <q>:enqueued          HASH    message key -> when it was stored (ms), for oldest-message age

The SQS front-end (restmq/web/sqs) keeps a queue's SQS-only attributes beside
them; the attributes that mean the same as a RestMQ setting live in
<q>:settings (VisibilityTimeout = lease_seconds, MessageRetentionPeriod = ttl,
RedrivePolicy = max_receives + dead_letter_queue)::

    SQSQUEUESET           SET     queues created (or configured) through the SQS API
    <q>:sqs               HASH    SQS attribute name -> value (DelaySeconds, FifoQueue, ...)
    <q>:sqstags           HASH    tag key -> tag value
    <q>:sqssources        SET     (on a dead-letter target) queues whose RedrivePolicy names it

Queue names beginning with "queuestat:" are refused: "queuestat::<q>" could
otherwise be the key of such a queue.

Pub/sub channels::

    restmq:notify             "w<q>" wake consumers of <q>; "p<q>" <q> was purged
    restmq:broadcast:<q>      broadcast batches for streaming subscribers of <q>
"""

from __future__ import annotations

import re

__all__ = [
    "QUEUESET", "NOTIFY_CHANNEL", "MAX_QUEUE_NAME_BYTES", "is_valid_queue_name",
    "uuid", "message", "queue_list", "policy", "status", "deliveries",
    "listeners", "history", "history_bodies", "inflight", "leases", "delayed",
    "settings", "idempotency", "idempotency_expiry", "dead_info", "enqueued",
    "broadcast_channel", "dead_letter_queue", "queue_of_key",
    "SQS_QUEUESET", "sqs_attributes", "sqs_tags", "sqs_sources",
]

QUEUESET = "QUEUESET"
SQS_QUEUESET = "SQSQUEUESET"
NOTIFY_CHANNEL = "restmq:notify"
BROADCAST_CHANNEL_PREFIX = "restmq:broadcast:"
MAX_QUEUE_NAME_BYTES = 200
DEAD_LETTER_SUFFIX = ":dead"

_QUEUE_NAME = re.compile(r"[A-Za-z0-9_\-.:@]{1,%d}\Z" % (MAX_QUEUE_NAME_BYTES + len(DEAD_LETTER_SUFFIX)))
_RESERVED_PREFIX = "queuestat:"


def is_valid_queue_name(name: str) -> bool:
    """Letters, digits and ``_ - . : @``, 1 to 200 bytes, not ``queuestat:...``.

    The dead-letter queue of a 200-byte name ("<q>:dead") is valid too.
    """
    if not _QUEUE_NAME.match(name) or name.startswith(_RESERVED_PREFIX):
        return False
    return len(name) <= MAX_QUEUE_NAME_BYTES or name.endswith(DEAD_LETTER_SUFFIX)


def uuid(queue: str) -> str:
    return queue + ":UUID"


def message(queue: str, msg_id: int) -> str:
    return "%s:%d" % (queue, msg_id)


def queue_of_key(key: str) -> str:
    """The queue a message key "<q>:<n>" belongs to ("" when it is not one)."""
    queue, sep, number = key.rpartition(":")
    return queue if sep and number.isdigit() else ""


def queue_list(queue: str) -> str:
    return queue + ":queue"


def policy(queue: str) -> str:
    return queue + ":queuepolicy"


def status(queue: str) -> str:
    return "queuestat::" + queue


def deliveries(queue: str) -> str:
    return queue + ":deliveries"


def listeners(queue: str) -> str:
    return queue + ":listeners"


def history(queue: str) -> str:
    return queue + ":history"


def history_bodies(queue: str) -> str:
    return queue + ":historybodies"


def inflight(queue: str) -> str:
    return queue + ":inflight"


def leases(queue: str) -> str:
    return queue + ":leases"


def delayed(queue: str) -> str:
    return queue + ":delayed"


def settings(queue: str) -> str:
    return queue + ":settings"


def idempotency(queue: str) -> str:
    return queue + ":idempotency"


def idempotency_expiry(queue: str) -> str:
    return queue + ":idempotencyexp"


def enqueued(queue: str) -> str:
    return queue + ":enqueued"


def dead_info(queue: str) -> str:
    return queue + ":deadinfo"


def dead_letter_queue(queue: str) -> str:
    """The ordinary queue that receives <q>'s dead letters: "<q>:dead"."""
    return queue + DEAD_LETTER_SUFFIX


def broadcast_channel(queue: str) -> str:
    return BROADCAST_CHANNEL_PREFIX + queue


def sqs_attributes(queue: str) -> str:
    return queue + ":sqs"


def sqs_tags(queue: str) -> str:
    return queue + ":sqstags"


def sqs_sources(queue: str) -> str:
    return queue + ":sqssources"
