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

    <q>:deliveries        HASH    message key -> times it was handed out (reserve)
    <q>:listeners         STRING  present while some RestMQ process streams <q> (PX ttl)
    <q>:bsubs             STRING  present while some process has broadcast subscribers of <q>
                                  ready (publishes may then go straight to the channel)
    <q>:poppers           STRING  present while some consumer pops <q> from the list (long-poll,
                                  acked stream): publishes must then go through the list
    <q>:history           LIST    keys of the last broadcast messages, newest first
    <q>:historybodies     HASH    message key -> body, for the keys in <q>:history
    <q>:historymeta       HASH    message key -> metadata blob, for those that have one
    <q>:inflight          ZSET    leased message key -> lease deadline (ms, Redis TIME)
    <q>:leases            HASH    leased message key -> lease token
    <q>:delayed           ZSET    delayed message key -> due time (ms, Redis TIME)
    <q>:settings          HASH    per-queue settings (maxlen, overflow, max_receives, ...)
    <q>:idempotency       HASH    Idempotency-Key -> first result
    <q>:idempotencyexp    ZSET    Idempotency-Key -> expiry (ms)
    <q>:deadinfo          HASH    (on a dead-letter queue) message key -> reason
    <q>:enqueued          HASH    message key -> when it was stored (ms), for oldest-message age
    <q>:delivered         STRING  messages handed out of <q> so far (pops, reserves, streams), for
                                  the dashboard's rates; <q>:UUID counts what was published
    restmq:counters       HASH    "<event>:<q>" -> count (dead_lettered, expired, queue_full),
                                  for /metrics, shared by every broker on this Redis

Consumer groups, attributes and ordering keys (a queue that never had a group,
an attribute or an ordering key has none of these keys and behaves as above)::

    <q>:groups            HASH    group name -> creation time (ms); every publish to <q>
                                  also queues the message key on each group's list
    <q>:refs              HASH    message key -> holders left (default consumers + groups)
                                  when the message was published while <q> had groups;
                                  the body goes when the count reaches 0 (no field: one holder)
    <q>:meta              HASH    message key -> one encoded blob of per-message metadata
                                  (JSON: {"a": attributes, "k": ordering key, "s": system
                                  fields that other front-ends such as SQS carry}); opaque
                                  to Lua, removed with the body
    <q>:okey              HASH    message key -> its ordering key (Lua reads this, not the blob)
    <ns>:okeys            HASH    ordering key -> the message key that holds it (leased,
                                  waiting at the head, or delayed after a nack)
    <q>#<g>:ok.<k>        LIST    messages with ordering key k that arrived while k was
    <q>#:ok.<k>                   held, oldest at the tail (group g / the default consumers)
    <ns>:parked           STRING  how many messages wait in the ok.<k> lists of <ns>

Each group g of <q> has the consuming structures of a queue under the prefix
``<ns>`` = "<q>#<g>" (the default consumers' prefix is <q> itself, so their keys
are the ones listed above): <ns>:queue, :inflight, :leases, :delayed,
:deliveries, :enqueued, :delivered, :settings, :listeners, :poppers. '#' is not allowed in
queue or group names and ':' not in group names, so "<q>#<g>:<suffix>" is never
a key of any queue. The list of a group holds the message keys "<q>:<n>" of
<q>: bodies are stored once. A group's dead letters go to the ordinary queue
"<q>:dead@<g>" (with their attributes).

Request/reply::

    restmq:rpc:<id>       STRING  a caller waits (PX = its timeout); "" until the reply
                                  arrives, then the reply's encoded body and attributes

A purge in progress (token <t>; purge_start.lua, purge_chunk.lua)::

    <q>:purgejob<t>       LIST    names of the lists and sorted sets that held <q>'s message
                                  keys (of every group, ordering-key lists too), renamed to
    <q>:purged<t>.<i>     LIST/ZSET  these at once; their bodies are deleted a bounded
                                  chunk per call, then the keys are gone
    restmq:purges         SET     purges in progress, "<t>:<q>" (a RestMQ that starts finishes them)

Queue names. As in the original, a name is any text: spaces, slashes,
non-ASCII letters, ':' and punctuation are all fine. The rules that keep the
layout safe:

- 1 to 200 characters (the dead-letter queue "<q>:dead" of a 200-character
  name may be 205, a group's "<q>:dead@<g>" 270), valid UTF-8, no control
  characters (U+0000-U+001F, U+007F-U+009F: they would break SSE frames and
  log lines);
- no '#': "<q>#<g>" is the namespace of group g of q (see above);
- not beginning with "queuestat:": "queuestat::<q>" is the status key of <q>,
  and a queue "queuestat:" would own "queuestat::UUID", the status key of a
  queue named "UUID".

Why no other name can collide: every key of a queue is "<q>:" + a suffix, and
no suffix RestMQ uses contains ':' except the message keys' "<n>" (digits) and
"<n>:refcount"; for "<a>:<s>" to equal "<b>:<t>" with a != b, one suffix would
have to contain the other's extra ":..." part, which none does. So "a:queue",
"a:UUID" or "a:5" are ordinary queues whose keys ("a:queue:queue", "a:5:1",
...) never meet the keys of the queue "a" ("a:queue", "a:5"). A name ending in
":dead" is the dead-letter queue of the name before it, by design. The words
"refcount", "lock" (the original's "<key>:lock"), "counters" and "purges"
("restmq:counters" and "restmq:purges" are global) are never used as suffixes,
and a request id (32 hex digits) is none of the suffixes, so "restmq:rpc:<id>"
is no key of a queue named "restmq:rpc".

Original keys kept as the original wrote them::

    <q>:<n>:refcount      STRING  how many times the JSON protocol's "get" looked at
                                  message <q>:<n> (INCR, shared with the original's brokers)

The SQS front-end (restmq/web/sqs) keeps a queue's SQS-only attributes beside
them; the attributes that mean the same as a RestMQ setting live in
<q>:settings (VisibilityTimeout = lease_seconds, MessageRetentionPeriod = ttl,
RedrivePolicy = max_receives + dead_letter_queue)::

    SQSQUEUESET           SET     queues created (or configured) through the SQS API
    <q>:sqs               HASH    SQS attribute name -> value (DelaySeconds, FifoQueue, ...)
    <q>:sqstags           HASH    tag key -> tag value
    <q>:sqssources        SET     (on a dead-letter target) queues whose RedrivePolicy names it
    <q>:sqsfirst          HASH    message key -> first ReceiveMessage time (ms); removed with the body
    <q>:sqsattempts       HASH    FIFO ReceiveRequestAttemptId -> JSON [key, token, ...] it leased
    <q>:sqsattemptsexp    ZSET    ReceiveRequestAttemptId -> expiry (ms)
    <q>:sqsmove           HASH    (on a dead-letter queue) its message move task: handle, status,
                                  destination, rate, moved, to_move, started, updated, failure

SQS message attributes, MessageGroupId (= ordering key) and the deduplication id
travel in the message's <q>:meta blob; a MessageDeduplicationId is remembered in
<q>:idempotency / <q>:idempotencyexp beside the REST Idempotency-Keys.

Pub/sub channels::

    restmq:notify             "w<q>" wake consumers of <q> ("w<q>#<g>": of group g);
                              "w<q> <id>": the same, sent by a publish on process <id>
                              (that process wakes its own consumers and skips it);
                              "p<q>" <q> was purged ("p<q>#<g>": group g was removed);
                              "r<id>" the reply to request <id> is stored
    restmq:broadcast:<q>      broadcast batches for streaming subscribers of <q>
"""

from __future__ import annotations

import re

__all__ = [
    "QUEUESET", "NOTIFY_CHANNEL", "MAX_QUEUE_NAME_CHARS", "is_valid_queue_name",
    "uuid", "message", "refcount", "queue_list", "policy", "status", "deliveries",
    "listeners", "history", "history_bodies", "inflight", "leases", "delayed",
    "settings", "idempotency", "idempotency_expiry", "dead_info", "enqueued", "delivered",
    "broadcast_channel", "dead_letter_queue", "queue_of_key", "COUNTERS", "COUNTED_EVENTS",
    "GROUP_SEPARATOR", "MAX_GROUP_NAME_BYTES", "is_valid_group_name", "namespace",
    "split_namespace", "history_meta", "groups", "refs", "meta", "ordering_keys", "rpc",
    "PURGES", "purge_job", "purge_trash_prefix", "purge_entry", "parse_purge_entry",
    "SQS_QUEUESET", "sqs_attributes", "sqs_tags", "sqs_sources", "sqs_move",
]

QUEUESET = "QUEUESET"
SQS_QUEUESET = "SQSQUEUESET"
NOTIFY_CHANNEL = "restmq:notify"
PURGES = "restmq:purges"
BROADCAST_CHANNEL_PREFIX = "restmq:broadcast:"
#: HASH "<event>:<queue>" -> count of every broker sharing this Redis, for /metrics
#: (written by lib.lua's count_event)
COUNTERS = "restmq:counters"
COUNTED_EVENTS = ("dead_lettered", "expired", "queue_full")
MAX_QUEUE_NAME_CHARS = 200
DEAD_LETTER_SUFFIX = ":dead"

GROUP_SEPARATOR = "#"
MAX_GROUP_NAME_BYTES = 64
GROUP_DEAD_LETTER_SEPARATOR = "@"
RPC_PREFIX = "restmq:rpc:"

# control characters (C0, DEL, C1) would break SSE frames, logs and headers; '#' is
# the group separator
_REFUSED = re.compile("[\x00-\x1f\x7f-\x9f#]")
_GROUP_NAME = re.compile(r"[A-Za-z0-9_\-.@]{1,%d}\Z" % MAX_GROUP_NAME_BYTES)
_GROUP_DEAD_LETTERS = re.compile(r"(.+):dead@[A-Za-z0-9_\-.@]{1,%d}\Z" % MAX_GROUP_NAME_BYTES, re.S)
_RESERVED_PREFIX = "queuestat:"


def is_valid_queue_name(name: str) -> bool:
    """1 to 200 characters of UTF-8 text, no control characters, no '#', not
    ``queuestat:...``.

    The dead-letter queues of a 200-character name ("<q>:dead", "<q>:dead@<g>")
    are valid too. A name holding lone surrogates (undecodable percent-escapes)
    is not UTF-8: refused.
    """
    if not name or name.startswith(_RESERVED_PREFIX) or _REFUSED.search(name):
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    if len(name) <= MAX_QUEUE_NAME_CHARS:
        return True
    if name.endswith(DEAD_LETTER_SUFFIX):
        return len(name) <= MAX_QUEUE_NAME_CHARS + len(DEAD_LETTER_SUFFIX)
    group_dead = _GROUP_DEAD_LETTERS.match(name)
    return group_dead is not None and len(group_dead.group(1)) <= MAX_QUEUE_NAME_CHARS


def is_valid_group_name(name: str) -> bool:
    """Letters, digits and ``_ - . @``, 1 to 64 bytes (no ':' and no '#')."""
    return bool(_GROUP_NAME.match(name))


def namespace(queue: str, group: str = "") -> str:
    """The prefix of the consuming structures of ``group`` of ``queue``: the queue
    itself for its default consumers, "<q>#<g>" for a group. It is also the name
    wake-ups and the dispatcher use for that set of consumers."""
    return queue + GROUP_SEPARATOR + group if group else queue


def split_namespace(name: str) -> "tuple[str, str]":
    """"<q>#<g>" -> (q, g); "<q>" -> (q, "")."""
    queue, _, group = name.partition(GROUP_SEPARATOR)
    return queue, group


def groups(queue: str) -> str:
    return queue + ":groups"


def refs(queue: str) -> str:
    return queue + ":refs"


def meta(queue: str) -> str:
    return queue + ":meta"


def ordering_keys(queue: str, group: str = "") -> str:
    return namespace(queue, group) + ":okeys"


def rpc(request_id: str) -> str:
    return RPC_PREFIX + request_id


def uuid(queue: str) -> str:
    return queue + ":UUID"


def message(queue: str, msg_id: int) -> str:
    return "%s:%d" % (queue, msg_id)


def refcount(key: str) -> str:
    """The original's look counter of one message key (JSON protocol ``get``)."""
    return key + ":refcount"


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


def history_meta(queue: str) -> str:
    return queue + ":historymeta"


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


def delivered(queue: str) -> str:
    return queue + ":delivered"


def dead_info(queue: str) -> str:
    return queue + ":deadinfo"


def dead_letter_queue(queue: str, group: str = "") -> str:
    """The ordinary queue that receives <q>'s dead letters: "<q>:dead" (those of
    group g: "<q>:dead@<g>")."""
    if group:
        return queue + DEAD_LETTER_SUFFIX + GROUP_DEAD_LETTER_SEPARATOR + group
    return queue + DEAD_LETTER_SUFFIX


def purge_job(queue: str, token: str) -> str:
    """The LIST of the keys a purge with ``token`` set aside (their bodies to delete)."""
    return "%s:purgejob%s" % (queue, token)


def purge_trash_prefix(queue: str, token: str) -> str:
    """The set-aside keys of a purge are this prefix and a number."""
    return "%s:purged%s." % (queue, token)


def purge_entry(queue: str, token: str) -> str:
    """The member of PURGES for a purge in progress (tokens are hex: no ':')."""
    return "%s:%s" % (token, queue)


def parse_purge_entry(entry: str) -> tuple:
    """(queue, token) of a PURGES member."""
    token, _, queue = entry.partition(":")
    return queue, token


def broadcast_channel(queue: str) -> str:
    return BROADCAST_CHANNEL_PREFIX + queue


def sqs_attributes(queue: str) -> str:
    return queue + ":sqs"


def sqs_tags(queue: str) -> str:
    return queue + ":sqstags"


def sqs_sources(queue: str) -> str:
    return queue + ":sqssources"


def sqs_move(queue: str) -> str:
    return queue + ":sqsmove"
