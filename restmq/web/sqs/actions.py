"""The SQS actions, each once, on the JSON protocol's shapes (codec.py turns the
query protocol into them). Each calls one SqsStore method: one Redis round trip,
except long polls (one more per wake-up) and purges (one per PURGE_STEP messages).
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import re
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit

import attr
import orjson
from twisted.internet import defer, task
from twisted.internet.defer import CancelledError
from twisted.logger import Logger

from restmq.acl import SqsKey
from restmq.config import Config
from restmq.errors import MessageNotFound, RestMQError
from restmq.keys import is_valid_queue_name
from restmq.model import MessageMeta
from restmq.storage.sqs import MAX_TAGS, SqsEntry, SqsMessage, SqsStore
from restmq.storage.store import split_receipt
from restmq.web.sqs.attributes import (Naming, check_body, creation_attributes, is_sqs_queue_name,
                                       md5_hex, md5_of_attributes, message_attributes_size,
                                       parse_message_attributes, parse_queue_attributes,
                                       queue_attributes, select_attributes)
from restmq.web.sqs.errors import SqsError

__all__ = ["Call", "SqsApi", "ACTIONS", "message_id"]

# the fields of an entry (or SendMessage) that carries nothing but a body
_PLAIN_ENTRY = frozenset(("Id", "MessageBody", "QueueUrl"))
# the variant digit of a UUID: 10xx in binary
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
_BATCH_ID = re.compile(r"[A-Za-z0-9_-]{1,80}\Z")
# MessageGroupId, MessageDeduplicationId, ReceiveRequestAttemptId: alphanumeric and punctuation
_TOKEN = re.compile(r"[!-~]{1,128}\Z")
_MAX_BATCH = 10
# a message move task moves at most this many dead letters per script call
_MOVE_STEP = 500
# a running move task whose process has not stepped for this long is reported FAILED
_MOVE_STALE_MS = 30000
# message attributes SQS reports on ReceiveMessage (AttributeNames / MessageSystemAttributeNames)
_SYSTEM_ATTRIBUTES = ("All", "ApproximateReceiveCount", "ApproximateFirstReceiveTimestamp",
                      "SentTimestamp", "SenderId", "MessageDeduplicationId", "MessageGroupId",
                      "SequenceNumber", "AWSTraceHeader", "DeadLetterQueueSourceArn", "Policy",
                      "VisibilityTimeout", "MaximumMessageSize", "MessageRetentionPeriod",
                      "DelaySeconds", "ReceiveMessageWaitTimeSeconds", "QueueArn",
                      "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                      "ApproximateNumberOfMessagesDelayed", "CreatedTimestamp", "LastModifiedTimestamp",
                      "RedrivePolicy", "FifoQueue", "ContentBasedDeduplication", "KmsMasterKeyId",
                      "KmsDataKeyReusePeriodSeconds", "DeduplicationScope", "FifoThroughputLimit",
                      "RedriveAllowPolicy", "SqsManagedSseEnabled")
_STORED_TO_ATTRIBUTE = {"lease_seconds": "VisibilityTimeout", "ttl": "MessageRetentionPeriod",
                        "max_receives": "RedrivePolicy", "dead_letter_queue": "RedrivePolicy"}


def sequence_number(key: str) -> str:
    """The FIFO SequenceNumber of message ``key``: its number, increasing per queue."""
    return "%020d" % int(key.rpartition(":")[2])


def _stored_attribute(value: Dict[str, Any]) -> Dict[str, str]:
    """A typed attribute as the metadata blob keeps it (JSON: Binary as base64)."""
    if "BinaryValue" in value:
        return {"DataType": value["DataType"], "BinaryValue": base64.b64encode(value["BinaryValue"]).decode()}
    return {"DataType": value["DataType"], "StringValue": value["StringValue"]}


def _attribute_text(value: Dict[str, Any]) -> str:
    """What RestMQ's own consumers see of a typed attribute (Binary: base64)."""
    if "BinaryValue" in value:
        return base64.b64encode(value["BinaryValue"]).decode()
    return value["StringValue"]


def _typed_attributes(meta: Optional[MessageMeta], sqs: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """A received message's attributes in SQS's typed form, Binary values as bytes:
    those sent through SQS, or a REST publisher's (all String)."""
    stored = sqs.get("attributes")
    out: Dict[str, Dict[str, Any]] = {}
    if isinstance(stored, dict):
        for name, value in stored.items():
            if not isinstance(value, dict) or not isinstance(value.get("DataType"), str):
                continue
            if "BinaryValue" in value:
                try:
                    out[name] = {"DataType": value["DataType"],
                                 "BinaryValue": base64.b64decode(value["BinaryValue"])}
                except (binascii.Error, ValueError, TypeError):
                    continue
            elif isinstance(value.get("StringValue"), str):
                out[name] = {"DataType": value["DataType"], "StringValue": value["StringValue"]}
        return out
    if meta is not None:
        for name, text in meta.attributes.items():
            if isinstance(text, str) and text:
                out[name] = {"DataType": "String", "StringValue": text}
    return out


def _answer_attribute(value: Dict[str, Any]) -> Dict[str, Any]:
    if "BinaryValue" in value:
        # JSON answers carry it as base64 (botocore decodes it); XML the same
        return {"DataType": value["DataType"], "BinaryValue": value["BinaryValue"]}
    return {"DataType": value["DataType"], "StringValue": value["StringValue"]}


def _wanted(name: str, patterns: Sequence[str]) -> bool:
    """MessageAttributeNames: "All", ".*", "prefix.*" (names starting with prefix)
    or the exact name."""
    for pattern in patterns:
        if pattern == "All" or pattern == name:
            return True
        if pattern.endswith(".*") and name.startswith(pattern[:-2]):
            return True
    return False


@functools.lru_cache(maxsize=1024)
def _queue_prefix(queue: str) -> str:
    h = md5_hex(queue.encode("utf-8"))
    return "%s-%s-4%s-%s%s-" % (h[:8], h[8:12], h[13:16], _VARIANT[h[16]], h[17:20])


def message_id(key: str) -> str:
    """The SQS MessageId of RestMQ message ``key`` "<q>:<n>": a UUID (version 4 form)
    of a digest of the queue's name and the message's number (keys are never
    reused, so neither are ids)."""
    queue, _, number = key.rpartition(":")
    return "%s%012x" % (_queue_prefix(queue), int(number) & 0xFFFFFFFFFFFF)


@attr.s(auto_attribs=True)
class Call:
    """One request to an action: its input and what the handler knows of it."""

    params: Dict[str, Any]
    base_url: str                  # scheme://host:port for queue URLs
    path: str = "/"                # the request path (the query protocol may post to a queue URL)
    key: Optional[SqsKey] = None   # the access key that signed it (None: no ACL)
    # called with a callback to run if the client goes away (long polls)
    on_gone: Callable[[Callable[[], None]], None] = lambda callback: None


def _integer(params: Dict[str, Any], name: str, low: int, high: int,
             default: Optional[int] = None) -> Optional[int]:
    value = params.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, (int, str)) or \
            (isinstance(value, str) and not re.fullmatch(r"-?\d{1,12}", value.strip())):
        raise SqsError("InvalidParameterValue", "Value %s for parameter %s is invalid. Reason: "
                       "must be an integer." % (str(value)[:100], name))
    number = int(value)
    if not low <= number <= high:
        raise SqsError("InvalidParameterValue", "Value %s for parameter %s is invalid. Reason: "
                       "Must be between %d and %d, if provided." % (number, name, low, high))
    return number


def _string(params: Dict[str, Any], name: str, required: bool = True) -> Optional[str]:
    value = params.get(name)
    if value is None:
        if required:
            raise SqsError("MissingParameter", "The request must contain the parameter %s." % name)
        return None
    if not isinstance(value, str):
        raise SqsError("InvalidParameterValue", "Value for parameter %s is invalid. Reason: "
                       "must be a string." % name)
    return value


def _strings(params: Dict[str, Any], name: str) -> List[str]:
    value = params.get(name) or []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise SqsError("InvalidParameterValue", "%s must be a list of strings." % name)
    return value


def _map(params: Dict[str, Any], name: str) -> Dict[str, Any]:
    value = params.get(name) or {}
    if not isinstance(value, dict):
        raise SqsError("InvalidParameterValue", "%s must be a map." % name)
    return value


def _entries(params: Dict[str, Any], action: str) -> List[Dict[str, Any]]:
    """The Entries of a batch, checked as SQS checks them before any is run."""
    entries = params.get("Entries")
    if entries is None:
        raise SqsError("MissingParameter", "The request must contain the parameter Entries.")
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise SqsError("InvalidParameterValue", "Entries must be a list of objects.")
    if not entries:
        raise SqsError("EmptyBatchRequest", "There should be at least one %sRequestEntry in the "
                       "request." % action)
    if len(entries) > _MAX_BATCH:
        raise SqsError("TooManyEntriesInBatchRequest", "Maximum number of entries per request are "
                       "%d. You have sent %d." % (_MAX_BATCH, len(entries)))
    seen = set()
    for entry in entries:
        entry_id = entry.get("Id")
        if not isinstance(entry_id, str) or not _BATCH_ID.match(entry_id):
            raise SqsError("InvalidBatchEntryId", "A batch entry id can only contain alphanumeric "
                           "characters, hyphens and underscores. It can be at most 80 letters long.")
        if entry_id in seen:
            raise SqsError("BatchEntryIdsNotDistinct", "Id %s repeated." % entry_id)
        seen.add(entry_id)
    return entries


def _failure(entry_id: str, error: SqsError) -> Dict[str, Any]:
    return {"Id": entry_id, "SenderFault": error.sender, "Code": error.code, "Message": error.message}


def _receipt(queue: str, handle: Any) -> Tuple[str, str]:
    if not isinstance(handle, str) or not handle:
        raise SqsError("MissingParameter", "The request must contain the parameter ReceiptHandle.")
    try:
        return split_receipt(queue, handle)
    except MessageNotFound:
        raise SqsError("ReceiptHandleIsInvalid", 'The input receipt handle "%s" is not a valid '
                       'receipt handle.' % handle[:200]) from None


def _page_token(token: Optional[str]) -> str:
    if not token:
        return ""
    try:
        return base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeError):
        raise SqsError("InvalidParameterValue", "Invalid NextToken value.") from None


def _paginate(names: List[str], params: Dict[str, Any]) -> Tuple[List[str], Optional[str]]:
    """A page of sorted ``names`` per MaxResults / NextToken (SQS: 1000 without MaxResults)."""
    limit = _integer(params, "MaxResults", 1, 1000)
    after = _page_token(_string(params, "NextToken", required=False))
    if after:
        names = [name for name in names if name > after]
    if limit is None:
        return names[:1000], None
    page = names[:limit]
    more = len(names) > limit
    return page, (base64.urlsafe_b64encode(page[-1].encode("utf-8")).decode("ascii") if more else None)


class SqsApi:
    """Every SQS action over one SqsStore, the dispatcher (long-poll wake-ups) and
    the broker's configuration."""

    log = Logger()

    def __init__(self, sqs: SqsStore, dispatcher: Any, clock: Any, config: Config,
                 metrics: Any = None) -> None:
        self.sqs = sqs
        self.dispatcher = dispatcher
        self.clock = clock
        self.config = config
        self.metrics = metrics
        self.naming = Naming(config.sqs.account_id, config.sqs.region)

    async def run(self, action: str, call: Call) -> Dict[str, Any]:
        method = ACTIONS.get(action)
        if method is None:
            if action in ("AddPermission", "RemovePermission"):
                raise SqsError("UnsupportedOperation", "%s is not supported: access is given by the "
                               "broker's [sqs] credentials file." % action)
            raise SqsError("InvalidAction", "The action %s is not valid for this endpoint." % action[:100])
        return await getattr(self, method)(call)

    # who may do what

    def _allow(self, call: Call, right: str, queue: str) -> None:
        """:raises SqsError: AccessDenied unless the caller's key has ``right``
        ("send", "receive" or "see") on ``queue``."""
        key = call.key
        if key is None:
            return
        allowed = key.sees(queue) if right == "see" else key.may(right, queue)
        if not allowed:
            raise SqsError("AccessDenied", "Access to the resource %s is denied."
                           % self.naming.url(call.base_url, queue))

    def _queue(self, call: Call) -> str:
        """The queue a request is about: its QueueUrl, else the path it was posted to."""
        url = call.params.get("QueueUrl")
        if url is not None and not isinstance(url, str):
            raise SqsError("InvalidParameterValue", "QueueUrl must be a string.")
        try:
            path = urlsplit(url).path if url else call.path
        except ValueError:  # "http://[x/...": not a URL at all
            raise SqsError("QueueDoesNotExist",
                           "The specified queue does not exist.") from None
        parts = [unquote(part) for part in path.strip("/").split("/")]
        if len(parts) != 2:
            if url is None:
                raise SqsError("MissingParameter", "The request must contain the parameter QueueUrl.")
            raise SqsError("QueueDoesNotExist", "The specified queue does not exist.")
        account, queue = parts
        if account != self.naming.account_id or not is_valid_queue_name(queue):
            raise SqsError("QueueDoesNotExist", "The specified queue does not exist.")
        return queue

    def _queue_of_arn(self, arn: Any, name: str) -> str:
        queue = self.naming.queue_of_arn(arn) if isinstance(arn, str) else None
        if queue is None:
            raise SqsError("InvalidParameterValue", "Value %s for parameter %s is invalid."
                           % (str(arn)[:200], name))
        return queue

    def _url(self, call: Call, queue: str) -> str:
        return self.naming.url(self.config.sqs.base_url or call.base_url, queue)

    # queues

    async def create_queue(self, call: Call) -> Dict[str, Any]:
        params = call.params
        name = _string(params, "QueueName")
        assert name is not None
        if not is_sqs_queue_name(name):
            raise SqsError("InvalidParameterValue", "Can only include alphanumeric characters, hyphens, "
                           "or underscores. 1 to 80 in length (a FIFO queue's name ends in .fifo).")
        self._allow(call, "send", name)
        fifo = name.endswith(".fifo")
        given = _map(params, "Attributes")
        if fifo and str(given.get("FifoQueue", "")).lower() != "true":
            raise SqsError("InvalidParameterValue", "The name of a FIFO queue can only include "
                           "alphanumeric characters, hyphens, or underscores, must end with .fifo "
                           "suffix and be 1 to 80 in length. Set the attribute FifoQueue to true.")
        changes, target = parse_queue_attributes(given, fifo, self.naming, self.config.sqs.max_message_bytes,
                                                 creating=True)
        if target:
            self._allow(call, "send", target)  # its dead letters will be sent there
        tags = _map(params, "tags")
        self._check_tags(tags)
        created, differing = await self.sqs.create(
            name, creation_attributes(changes, fifo, self.config.sqs.max_message_bytes), tags,
            target, fifo)
        if differing is not None:
            attribute = _STORED_TO_ATTRIBUTE.get(differing, differing)
            raise SqsError("QueueNameExists", "A queue already exists with the same name and a "
                           "different value for attribute %s" % attribute)
        if created:
            self.log.info("SQS queue {queue} created", queue=name)
        return {"QueueUrl": self._url(call, name)}

    async def get_queue_url(self, call: Call) -> Dict[str, Any]:
        name = _string(call.params, "QueueName")
        assert name is not None
        owner = _string(call.params, "QueueOwnerAWSAccountId", required=False)
        self._allow(call, "see", name)
        if owner not in (None, "", self.naming.account_id) or not is_valid_queue_name(name) \
                or not await self.sqs.exists(name):
            raise SqsError("QueueDoesNotExist", "The specified queue does not exist.")
        return {"QueueUrl": self._url(call, name)}

    async def list_queues(self, call: Call) -> Dict[str, Any]:
        prefix = _string(call.params, "QueueNamePrefix", required=False) or ""
        names = [name for name in await self.sqs.queues()
                 if name.startswith(prefix) and (call.key is None or call.key.sees(name))]
        page, token = _paginate(names, call.params)
        out: Dict[str, Any] = {}
        if page:
            out["QueueUrls"] = [self._url(call, name) for name in page]
        if token:
            out["NextToken"] = token
        return out

    async def delete_queue(self, call: Call) -> Dict[str, Any]:
        queue = self._queue(call)
        self._allow(call, "send", queue)
        removed = await self.sqs.delete_queue(queue)
        self.dispatcher.close_queue(queue, "queue deleted")
        self.log.info("SQS queue {queue} deleted with {count} messages", queue=queue, count=removed)
        return {}

    async def purge_queue(self, call: Call) -> Dict[str, Any]:
        queue = self._queue(call)
        self._allow(call, "send", queue)
        await self.sqs.purge(queue)
        return {}

    async def get_queue_attributes(self, call: Call) -> Dict[str, Any]:
        queue = self._queue(call)
        self._allow(call, "see", queue)
        names = _strings(call.params, "AttributeNames")
        view = await self.sqs.view(queue)
        every = queue_attributes(view, queue, self.naming, self.config.delivery.lease_seconds,
                                 self.config.delivery.max_receives, self.config.sqs.max_message_bytes)
        selected = select_attributes(every, names)
        return {"Attributes": selected} if selected else {}

    async def set_queue_attributes(self, call: Call) -> Dict[str, Any]:
        queue = self._queue(call)
        self._allow(call, "send", queue)
        given = _map(call.params, "Attributes")
        if "Attributes" not in call.params:
            raise SqsError("MissingParameter", "The request must contain the parameter Attributes.")
        changes, target = parse_queue_attributes(given, queue.endswith(".fifo"), self.naming,
                                                 self.config.sqs.max_message_bytes, creating=False)
        if target == queue:
            raise SqsError("InvalidParameterValue", "A queue cannot be its own dead-letter queue.")
        if target:
            self._allow(call, "send", target)  # its dead letters will be sent there
        await self.sqs.set_attributes(queue, changes, target)
        return {}

    def _check_tags(self, tags: Dict[str, Any]) -> None:
        if len(tags) > MAX_TAGS:
            raise SqsError("InvalidParameterValue", "Too many tags added for queue (at most %d)." % MAX_TAGS)
        for key, value in tags.items():
            if not 1 <= len(key) <= 128 or not isinstance(value, str) or len(value) > 256:
                raise SqsError("InvalidParameterValue", "Tag keys are 1-128 characters, values at "
                               "most 256.")

    async def tag_queue(self, call: Call) -> Dict[str, Any]:
        queue = self._queue(call)
        self._allow(call, "send", queue)
        tags = _map(call.params, "Tags")
        if not tags:
            raise SqsError("MissingParameter", "The request must contain the parameter Tags.")
        self._check_tags(tags)
        await self.sqs.tags(queue, "tag", [item for pair in tags.items() for item in pair])
        return {}

    async def untag_queue(self, call: Call) -> Dict[str, Any]:
        queue = self._queue(call)
        self._allow(call, "send", queue)
        names = _strings(call.params, "TagKeys")
        if not names:
            raise SqsError("MissingParameter", "The request must contain the parameter TagKeys.")
        await self.sqs.tags(queue, "untag", names)
        return {}

    async def list_queue_tags(self, call: Call) -> Dict[str, Any]:
        queue = self._queue(call)
        self._allow(call, "see", queue)
        return {"Tags": await self.sqs.tags(queue)}

    async def list_dead_letter_source_queues(self, call: Call) -> Dict[str, Any]:
        queue = self._queue(call)
        self._allow(call, "see", queue)
        sources = [name for name in await self.sqs.dead_letter_sources(queue)
                   if call.key is None or call.key.sees(name)]
        page, token = _paginate(sources, call.params)
        out: Dict[str, Any] = {"queueUrls": [self._url(call, name) for name in page]}
        if token:
            out["NextToken"] = token
        return out

    # messages

    def _message_input(self, entry: Dict[str, Any], fifo: bool,
                       call: Call) -> Tuple[SqsEntry, Dict[str, Any]]:
        """The stored form and the answer fields of one SendMessage or batch entry."""
        body = check_body(entry.get("MessageBody"))
        if not fifo and call.key is None and entry.keys() <= _PLAIN_ENTRY:
            # the common case: a body and nothing else
            data = body.encode("utf-8")
            if len(data) > self.config.sqs.max_message_bytes:
                raise SqsError("InvalidParameterValue", "One or more parameters are invalid. Reason: "
                               "Message must be shorter than %d bytes." % self.config.sqs.max_message_bytes)
            return SqsEntry(body, len(data)), {"MD5OfMessageBody": md5_hex(data)}
        delay = _integer(entry, "DelaySeconds", 0, 900) if "DelaySeconds" in entry else None
        group = _string(entry, "MessageGroupId", required=False) if "MessageGroupId" in entry else None
        dedup = _string(entry, "MessageDeduplicationId", required=False) \
            if "MessageDeduplicationId" in entry else None
        if fifo:
            if delay is not None:
                raise SqsError("InvalidParameterValue", "Value %d for parameter DelaySeconds is invalid. "
                               "Reason: The request include parameter that is not valid for this queue "
                               "type." % delay)
            if group is None:
                raise SqsError("MissingParameter", "The request must contain the parameter MessageGroupId.")
        elif dedup is not None:
            raise SqsError("InvalidParameterValue", "The request include parameter "
                           "MessageDeduplicationId that is not valid for this queue type.")
        for name, value in (("MessageGroupId", group), ("MessageDeduplicationId", dedup)):
            if value is not None and not _TOKEN.match(value):
                raise SqsError("InvalidParameterValue", "Value %s for parameter %s is invalid. Reason: "
                               "1 to 128 alphanumeric or punctuation characters." % (value[:200], name))
        attributes = parse_message_attributes(entry.get("MessageAttributes"))
        system = parse_message_attributes(entry.get("MessageSystemAttributes"), system=True)
        limit = self.config.sqs.max_message_bytes
        data = body.encode("utf-8")
        size = len(data) + message_attributes_size(attributes)
        if size > limit:
            raise SqsError("InvalidParameterValue", "One or more parameters are invalid. Reason: "
                           "Message must be shorter than %d bytes." % limit)
        answer: Dict[str, Any] = {"MD5OfMessageBody": md5_hex(data)}
        if not (attributes or system or fifo or dedup is not None or group is not None or call.key):
            # the common case: a body and nothing else to keep
            return SqsEntry(body, size, delay), answer
        if attributes:
            answer["MD5OfMessageAttributes"] = md5_of_attributes(attributes)
        if system:
            answer["MD5OfMessageSystemAttributes"] = md5_of_attributes(system)
        sqs: Dict[str, Any] = {}
        if attributes:
            sqs["attributes"] = {name: _stored_attribute(value) for name, value in attributes.items()}
        if system:
            sqs["trace"] = system["AWSTraceHeader"]["StringValue"]
        if dedup is not None:
            sqs["dedup"] = dedup
        if group is not None and not fifo:
            sqs["group"] = group  # a standard queue keeps it, unordered (SQS's fair queues)
        if call.key is not None:
            sqs["sender"] = call.key.access_key
        # RestMQ's own consumers see the attributes as text, the FIFO group as ordering key
        meta = MessageMeta({name: _attribute_text(value) for name, value in attributes.items()},
                           group if fifo else None, {"sqs": sqs} if sqs else {})
        return SqsEntry(body, size, delay, meta if meta else None, dedup or ""), answer

    def _stored_answer(self, queue: str, key: str, answer: Dict[str, Any], fifo: bool) -> Dict[str, Any]:
        """The answer of one sent entry (its key as the script answered it)."""
        if key == "!size":
            raise SqsError("InvalidParameterValue", "One or more parameters are invalid. Reason: "
                           "Message must be shorter than the queue's MaximumMessageSize.")
        if key == "!dedup":
            raise SqsError("InvalidParameterValue", "The queue should either have ContentBasedDeduplication "
                           "enabled or MessageDeduplicationId provided explicitly")
        out = dict(answer, MessageId=message_id(key))
        if fifo:
            out["SequenceNumber"] = sequence_number(key)
        return out

    async def _send(self, queue: str, entries: List[SqsEntry]) -> List[str]:
        """Store the entries; this process's consumers of the queue (SQS receives
        waiting, REST long-polls and streams) are woken at once, not by pub/sub."""
        _, stored, woken = await self.sqs.send(queue, entries, self.config.sqs.max_message_bytes,
                                               origin=self.dispatcher.origin)
        for namespace in woken:
            self.dispatcher.wake(namespace)
        return stored

    async def send_message(self, call: Call) -> Dict[str, Any]:
        queue = self._queue(call)
        self._allow(call, "send", queue)
        fifo = queue.endswith(".fifo")
        entry, answer = self._message_input(call.params, fifo, call)
        stored = await self._send(queue, [entry])
        result = self._stored_answer(queue, stored[0], answer, fifo)
        if self.metrics is not None:
            self.metrics.published(queue, 1)
        return result

    async def send_message_batch(self, call: Call) -> Dict[str, Any]:
        queue = self._queue(call)
        self._allow(call, "send", queue)
        entries = _entries(call.params, "SendMessageBatch")
        fifo = queue.endswith(".fifo")
        failed: List[Dict[str, Any]] = []
        accepted: List[Tuple[str, SqsEntry, Dict[str, Any]]] = []
        total = 0
        for item in entries:
            try:
                entry, answer = self._message_input(item, fifo, call)
            except SqsError as error:
                failed.append(_failure(item["Id"], error))
                continue
            total += entry.size
            accepted.append((item["Id"], entry, answer))
        if total > self.config.sqs.max_message_bytes:
            raise SqsError("BatchRequestTooLong", "Batch requests cannot be longer than %d bytes. "
                           "You have sent %d bytes." % (self.config.sqs.max_message_bytes, total))
        successful: List[Dict[str, Any]] = []
        if accepted:
            stored = await self._send(queue, [entry for _, entry, _ in accepted])
            for (entry_id, _, answer), key in zip(accepted, stored):
                try:
                    stored_answer = self._stored_answer(queue, key, answer, fifo)
                    # SQS's order: Id, MessageId, then the digests
                    successful.append(dict(Id=entry_id, MessageId=stored_answer.pop("MessageId"),
                                           **stored_answer))
                except SqsError as error:
                    failed.append(_failure(entry_id, error))
            if self.metrics is not None:
                self.metrics.published(queue, len(successful))
        return {"Successful": successful, "Failed": failed}

    async def receive_message(self, call: Call) -> Dict[str, Any]:
        queue = self._queue(call)
        self._allow(call, "receive", queue)
        params = call.params
        count = _integer(params, "MaxNumberOfMessages", 1, _MAX_BATCH, 1)
        visibility = _integer(params, "VisibilityTimeout", 0, 43200)
        wait = _integer(params, "WaitTimeSeconds", 0, 20)
        system_names = _strings(params, "AttributeNames") + _strings(params, "MessageSystemAttributeNames")
        for name in system_names:
            if name not in _SYSTEM_ATTRIBUTES:
                raise SqsError("InvalidAttributeName", "Unknown Attribute %s." % name)
        attribute_names = _strings(params, "MessageAttributeNames")
        attempt = _string(params, "ReceiveRequestAttemptId", required=False) or ""
        if attempt and not _TOKEN.match(attempt):
            raise SqsError("InvalidParameterValue", "Value %s for parameter ReceiveRequestAttemptId is "
                           "invalid." % attempt[:200])
        if not queue.endswith(".fifo"):
            attempt = ""  # SQS ignores it on standard queues
        assert count is not None
        messages = await self._receive(queue, count, visibility, wait, attempt, call)
        if self.metrics is not None and messages:
            self.metrics.delivered(queue, "sqs", len(messages))
            self.metrics.redelivered(queue, sum(1 for m in messages if m.deliveries > 1))
        out = [self._message_output(queue, message, system_names, attribute_names)
               for message in messages]
        return {"Messages": out} if out else {}

    async def _receive(self, queue: str, count: int, visibility: Optional[int], wait: Optional[int],
                       attempt: str, call: Call) -> List[SqsMessage]:
        """Lease messages now, or wait for them: every wake-up of the queue (a publish
        on any process) retries, nothing polls."""
        sqs = self.config.sqs
        lease_ms = None if visibility is None else visibility * 1000
        default_ms = int(self.config.delivery.lease_seconds * 1000)
        hold = self.config.delivery.stop_holds_pops

        async def attempt_receive(listen_ms: int) -> Tuple[List[SqsMessage], int]:
            return await self.sqs.receive(queue, count, lease_ms, default_ms, sqs.max_inflight,
                                          listen_ms, hold, attempt)

        messages, queue_wait = await attempt_receive(0)
        wait = queue_wait if wait is None else wait
        if messages or not wait:
            return messages
        deadline = self.clock.seconds() + wait
        waiter = self.dispatcher.waiter(queue)
        gone: List[bool] = []
        pending: List[Any] = []

        def client_left() -> None:
            gone.append(True)
            for deferred in pending:
                deferred.cancel()

        call.on_gone(client_left)
        listen_ms = self.dispatcher.listener_ttl_ms
        try:
            # the waiter exists before this receive marks the queue as listened to,
            # so a publish in between wakes it
            messages, _ = await attempt_receive(listen_ms)
            while not messages and not gone:
                remaining = deadline - self.clock.seconds()
                if remaining <= 0:
                    break
                woken = waiter.next_wake(remaining)
                pending[:] = [woken]
                try:
                    if not await woken:
                        break
                except CancelledError:
                    break
                messages, _ = await attempt_receive(listen_ms)
        finally:
            waiter.close()
        if gone and messages:
            # nobody will get them: visible again at once
            await self.sqs.change_visibility(queue, [(m.key, m.receipt.rpartition(":")[2], 0)
                                                     for m in messages])
            return []
        return messages

    def _message_output(self, queue: str, message: SqsMessage, system_names: Sequence[str],
                        attribute_names: Sequence[str]) -> Dict[str, Any]:
        body = message.body.encode("utf-8")
        # a dead letter keeps the MessageId it had in the queue it died in, as in SQS
        out: Dict[str, Any] = {"MessageId": message_id(message.origin or message.key),
                               "ReceiptHandle": message.receipt, "MD5OfBody": md5_hex(body),
                               "Body": message.body}
        meta = message.meta
        sqs: Dict[str, Any] = meta.system.get("sqs", {}) if meta is not None else {}
        if not isinstance(sqs, dict):
            sqs = {}
        if system_names:
            every = {
                "SenderId": sqs.get("sender") or self.naming.account_id,
                "SentTimestamp": str(message.sent_ms),
                "ApproximateReceiveCount": str(message.deliveries),
                "ApproximateFirstReceiveTimestamp": str(message.first_receive_ms or message.sent_ms),
            }
            if sqs.get("trace"):
                every["AWSTraceHeader"] = sqs["trace"]
            if message.origin:
                every["DeadLetterQueueSourceArn"] = self.naming.arn(message.origin.rpartition(":")[0])
            group = sqs.get("group")
            if meta is not None and meta.ordering_key is not None:
                group = meta.ordering_key
            if group is not None:
                every["MessageGroupId"] = group
            if queue.endswith(".fifo"):
                every["SequenceNumber"] = sequence_number(message.key)
                if sqs.get("dedup"):
                    every["MessageDeduplicationId"] = sqs["dedup"]
            wanted = every if "All" in system_names else {
                name: every[name] for name in system_names if name in every}
            if wanted:
                out["Attributes"] = wanted
        if attribute_names:
            typed = _typed_attributes(meta, sqs)
            chosen = {name: value for name, value in typed.items() if _wanted(name, attribute_names)}
            if chosen:
                out["MD5OfMessageAttributes"] = md5_of_attributes(chosen)
                out["MessageAttributes"] = {name: _answer_attribute(value) for name, value in chosen.items()}
        return out

    async def delete_message(self, call: Call) -> Dict[str, Any]:
        queue = self._queue(call)
        self._allow(call, "receive", queue)
        key, token = _receipt(queue, call.params.get("ReceiptHandle"))
        done = await self.sqs.delete_messages(queue, [(key, token)])
        self._settled(queue, [call.params["ReceiptHandle"]], sum(done))
        return {}

    def _settled(self, queue: str, receipts: List[str], deleted: int) -> None:
        self.dispatcher.settled(queue, receipts)
        if self.metrics is not None:
            self.metrics.acked(queue, deleted)

    async def delete_message_batch(self, call: Call) -> Dict[str, Any]:
        queue = self._queue(call)
        self._allow(call, "receive", queue)
        entries = _entries(call.params, "DeleteMessageBatch")
        failed = []
        valid: List[Tuple[str, Tuple[str, str], str]] = []
        for entry in entries:
            try:
                pair = _receipt(queue, entry.get("ReceiptHandle"))
                valid.append((entry["Id"], pair, entry["ReceiptHandle"]))
            except SqsError as error:
                failed.append(_failure(entry["Id"], error))
        if valid:
            done = await self.sqs.delete_messages(queue, [pair for _, pair, _ in valid])
            self._settled(queue, [handle for _, _, handle in valid], sum(done))
        # deleting with an old receipt succeeds (SQS: the message may stay)
        return {"Successful": [{"Id": entry_id} for entry_id, _, _ in valid], "Failed": failed}

    async def change_message_visibility(self, call: Call) -> Dict[str, Any]:
        queue = self._queue(call)
        self._allow(call, "receive", queue)
        key, token = _receipt(queue, call.params.get("ReceiptHandle"))
        seconds = _integer(call.params, "VisibilityTimeout", 0, 43200)
        if seconds is None:
            raise SqsError("MissingParameter", "The request must contain the parameter VisibilityTimeout.")
        done = await self.sqs.change_visibility(queue, [(key, token, seconds * 1000)])
        if not done[0]:
            raise SqsError("MessageNotInflight", "Message does not exist or is not available for "
                           "visibility timeout change.")
        return {}

    async def change_message_visibility_batch(self, call: Call) -> Dict[str, Any]:
        queue = self._queue(call)
        self._allow(call, "receive", queue)
        entries = _entries(call.params, "ChangeMessageVisibilityBatch")
        failed = []
        valid: List[Tuple[str, str, str, int]] = []
        for entry in entries:
            try:
                key, token = _receipt(queue, entry.get("ReceiptHandle"))
                seconds = _integer(entry, "VisibilityTimeout", 0, 43200)
                if seconds is None:
                    raise SqsError("MissingParameter", "The request must contain the parameter "
                                   "VisibilityTimeout.")
                valid.append((entry["Id"], key, token, seconds * 1000))
            except SqsError as error:
                failed.append(_failure(entry["Id"], error))
        successful = []
        if valid:
            done = await self.sqs.change_visibility(queue, [(k, t, ms) for _, k, t, ms in valid])
            for (entry_id, _, _, _), ok in zip(valid, done):
                if ok:
                    successful.append({"Id": entry_id})
                else:
                    failed.append(_failure(entry_id, SqsError(
                        "MessageNotInflight", "Message does not exist or is not available for "
                        "visibility timeout change.")))
        return {"Successful": successful, "Failed": failed}

    # message move tasks: dead letters back to their queues

    def _task_handle(self, queue: str) -> str:
        raw = orjson.dumps({"q": queue, "h": os.urandom(8).hex()})
        return base64.urlsafe_b64encode(raw).decode("ascii")

    @staticmethod
    def _queue_of_task(handle: Any) -> str:
        try:
            queue = orjson.loads(base64.urlsafe_b64decode(str(handle).encode("ascii")))["q"]
        except (ValueError, TypeError, KeyError, binascii.Error, orjson.JSONDecodeError):
            queue = None
        if not isinstance(queue, str) or not is_valid_queue_name(queue):
            raise SqsError("ResourceNotFoundException", "Task does not exist.")
        return queue

    async def start_message_move_task(self, call: Call) -> Dict[str, Any]:
        params = call.params
        source = self._queue_of_arn(_string(params, "SourceArn"), "SourceArn")
        self._allow(call, "receive", source)
        destination = ""
        if params.get("DestinationArn") is not None:
            destination = self._queue_of_arn(params["DestinationArn"], "DestinationArn")
            self._allow(call, "send", destination)
        elif call.key is not None:
            # without a destination each message goes back to the queue it died in
            for name in await self.sqs.dead_letter_sources(source):
                self._allow(call, "send", name)
        rate = _integer(params, "MaxNumberOfMessagesPerSecond", 1, 500)
        handle = self._task_handle(source)
        await self.sqs.move_task(source, "start", handle, destination, rate, _MOVE_STALE_MS)
        self.log.info("Message move task of {queue} started", queue=source)
        defer.ensureDeferred(self._run_move(source, handle, destination, rate))
        return {"TaskHandle": handle}

    async def _run_move(self, queue: str, handle: str, destination: str, rate: Optional[int]) -> None:
        """Move in steps (at most ``rate`` a second), each one script call, until the
        task completes, fails or is cancelled (a cancel from any process)."""
        step = min(rate or _MOVE_STEP, _MOVE_STEP)
        failures = 0
        while True:
            began = self.clock.seconds()
            try:
                _, status = await self.sqs.move_step(queue, handle, destination, step)
                failures = 0
            except RestMQError as exc:
                failures += 1
                self.log.warn("Message move task of {queue}: {error}", queue=queue, error=exc.message)
                if failures >= 10:
                    return
                status = "RUNNING"
            except Exception:
                self.log.failure("Message move task of {queue} failed", queue=queue)
                return
            if status != "RUNNING":
                self.log.info("Message move task of {queue}: {status}", queue=queue, status=status.lower())
                return
            pause = max(0.0, began + 1.0 - self.clock.seconds()) if rate or failures else 0.0
            await task.deferLater(self.clock, pause, lambda: None)

    async def list_message_move_tasks(self, call: Call) -> Dict[str, Any]:
        source_arn = _string(call.params, "SourceArn")
        source = self._queue_of_arn(source_arn, "SourceArn")
        self._allow(call, "see", source)
        _integer(call.params, "MaxResults", 1, 10)
        fields = await self.sqs.move_task(source)
        if not fields:
            return {"Results": []}
        status = fields.get("status", "FAILED")
        updated = int(fields.get("updated") or 0)
        if status in ("RUNNING", "CANCELLING") and updated + _MOVE_STALE_MS < int(time.time() * 1000):
            status, fields["failure"] = "FAILED", "the broker process that ran it stopped"
        entry: Dict[str, Any] = {"Status": status, "SourceArn": source_arn,
                                 "ApproximateNumberOfMessagesMoved": int(fields.get("moved") or 0),
                                 "ApproximateNumberOfMessagesToMove": int(fields.get("to_move") or 0),
                                 "StartedTimestamp": int(fields.get("started") or 0)}
        if status == "RUNNING":
            entry = dict(TaskHandle=fields.get("handle", ""), **entry)
        if fields.get("destination"):
            entry["DestinationArn"] = self.naming.arn(fields["destination"])
        if fields.get("rate"):
            entry["MaxNumberOfMessagesPerSecond"] = int(fields["rate"])
        if status == "FAILED":
            entry["FailureReason"] = fields.get("failure", "")
        return {"Results": [entry]}

    async def cancel_message_move_task(self, call: Call) -> Dict[str, Any]:
        handle = _string(call.params, "TaskHandle")
        queue = self._queue_of_task(handle)
        self._allow(call, "receive", queue)
        fields = await self.sqs.move_task(queue, "cancel", str(handle))
        if not fields:
            raise SqsError("ResourceNotFoundException", "Task does not exist (or is not running).")
        return {"ApproximateNumberOfMessagesMoved": int(fields.get("moved") or 0)}


ACTIONS: Dict[str, str] = {
    "CreateQueue": "create_queue",
    "GetQueueUrl": "get_queue_url",
    "ListQueues": "list_queues",
    "DeleteQueue": "delete_queue",
    "PurgeQueue": "purge_queue",
    "GetQueueAttributes": "get_queue_attributes",
    "SetQueueAttributes": "set_queue_attributes",
    "TagQueue": "tag_queue",
    "UntagQueue": "untag_queue",
    "ListQueueTags": "list_queue_tags",
    "ListDeadLetterSourceQueues": "list_dead_letter_source_queues",
    "SendMessage": "send_message",
    "SendMessageBatch": "send_message_batch",
    "ReceiveMessage": "receive_message",
    "DeleteMessage": "delete_message",
    "DeleteMessageBatch": "delete_message_batch",
    "ChangeMessageVisibility": "change_message_visibility",
    "ChangeMessageVisibilityBatch": "change_message_visibility_batch",
    "StartMessageMoveTask": "start_message_move_task",
    "ListMessageMoveTasks": "list_message_move_tasks",
    "CancelMessageMoveTask": "cancel_message_move_task",
}
