"""SQS queue attributes <-> RestMQ settings, names and ARNs, message validation and
the MD5 digests SQS answers (MD5OfMessageBody, MD5OfMessageAttributes)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple

import attr
import orjson

from restmq.keys import is_valid_queue_name
from restmq.storage.sqs import UNLIMITED_RECEIVES, QueueView
from restmq.web.sqs.errors import SqsError

__all__ = [
    "Naming", "QUEUE_ATTRIBUTES", "READ_ONLY_ATTRIBUTES", "is_sqs_queue_name", "parse_queue_attributes",
    "creation_attributes", "queue_attributes", "select_attributes", "md5_hex",
    "md5_of_attributes", "check_body", "parse_message_attributes", "message_attributes_size",
]

_SQS_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}\Z")
_SQS_FIFO_NAME = re.compile(r"[A-Za-z0-9_-]{1,75}\.fifo\Z")
# the characters SQS accepts in a message (XML 1.0's Char production)
_BAD_CHARS = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_\-.]{1,256}\Z")
_DATA_TYPE = re.compile(r"(String|Number|Binary)(\.[^\s]{1,250})?\Z")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\Z")


@attr.s(frozen=True, auto_attribs=True)
class Naming:
    """Queue URLs and ARNs of this listener."""

    account_id: str
    region: str

    def url(self, base: str, queue: str) -> str:
        return "%s/%s/%s" % (base, self.account_id, queue)

    def arn(self, queue: str) -> str:
        return "arn:aws:sqs:%s:%s:%s" % (self.region, self.account_id, queue)

    def queue_of_arn(self, arn: str) -> Optional[str]:
        """The queue an ARN of this account names (any region), or None."""
        parts = arn.split(":", 5)
        if len(parts) != 6 or parts[:3] != ["arn", "aws", "sqs"] or parts[4] != self.account_id:
            return None
        return parts[5] if is_valid_queue_name(parts[5]) else None


def is_sqs_queue_name(name: str) -> bool:
    """What CreateQueue accepts: 1-80 letters, digits, - and _ (FIFO: ending in .fifo)."""
    return bool(_SQS_NAME.match(name) or _SQS_FIFO_NAME.match(name))


def _integer(low: int, high: int):
    def parse(name: str, text: str) -> str:
        text = text.strip()
        if not re.fullmatch(r"\d{1,10}", text) or not low <= int(text) <= high:
            raise SqsError("InvalidAttributeValue", "Invalid value for the parameter %s. "
                           "Reason: must be an integer from %d to %d." % (name, low, high))
        return str(int(text))
    return parse


def _boolean(name: str, text: str) -> str:
    if text.strip().lower() not in ("true", "false"):
        raise SqsError("InvalidAttributeValue", "Invalid value for the parameter %s. "
                       "Reason: must be true or false." % name)
    return text.strip().lower()


def _choice(*choices: str):
    def parse(name: str, text: str) -> str:
        if text not in choices:
            raise SqsError("InvalidAttributeValue", "Invalid value for the parameter %s. "
                           "Reason: must be one of %s." % (name, ", ".join(choices)))
        return text
    return parse


def _json_text(name: str, text: str) -> str:
    if text == "":
        return text
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        raise SqsError("InvalidAttributeValue", "Invalid value for the parameter %s. "
                       "Reason: it is not JSON." % name) from None
    return text


def _text(name: str, text: str) -> str:
    if len(text) > 20480:
        raise SqsError("InvalidAttributeValue", "Invalid value for the parameter %s." % name)
    return text


#: settable attribute -> validator (RedrivePolicy and MaximumMessageSize are
#: checked with the queue's context in parse_queue_attributes)
QUEUE_ATTRIBUTES = {
    "DelaySeconds": _integer(0, 900),
    "MaximumMessageSize": None,
    "MessageRetentionPeriod": _integer(60, 1209600),
    "ReceiveMessageWaitTimeSeconds": _integer(0, 20),
    "VisibilityTimeout": _integer(0, 43200),
    "Policy": _json_text,
    "RedrivePolicy": None,
    "RedriveAllowPolicy": _json_text,
    "KmsMasterKeyId": _text,
    "KmsDataKeyReusePeriodSeconds": _integer(60, 86400),
    "SqsManagedSseEnabled": _boolean,
    "FifoQueue": _boolean,
    "ContentBasedDeduplication": _boolean,
    "DeduplicationScope": _choice("messageGroup", "queue"),
    "FifoThroughputLimit": _choice("perQueue", "perMessageGroupId"),
}
_FIFO_ONLY = ("ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit")
READ_ONLY_ATTRIBUTES = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                        "ApproximateNumberOfMessagesDelayed", "CreatedTimestamp",
                        "LastModifiedTimestamp", "QueueArn")


def _lease_text(seconds: int) -> str:
    # RestMQ's lease_seconds setting is at least a millisecond; 0 reads back as 0
    return repr(float(seconds)) if seconds > 0 else "0.001"


def parse_queue_attributes(given: Dict[str, Any], fifo: bool, naming: Naming, max_message_bytes: int,
                           creating: bool) -> Tuple[List[Tuple[str, str, str]], str]:
    """Validate attributes of CreateQueue / SetQueueAttributes.

    :returns: (hash "sqs" or "settings", field, value) changes ("" removes), and the
        dead-letter target that must exist ("" when none).
    :raises SqsError: InvalidAttributeName / InvalidAttributeValue.
    """
    changes: List[Tuple[str, str, str]] = []
    target = ""
    for name, raw in given.items():
        if name not in QUEUE_ATTRIBUTES:
            raise SqsError("InvalidAttributeName", "Unknown Attribute %s." % name)
        if not isinstance(raw, str):
            raise SqsError("InvalidAttributeValue", "Invalid value for the parameter %s." % name)
        if name == "FifoQueue":
            value = _boolean(name, raw)
            if not creating:
                raise SqsError("InvalidAttributeValue", "Invalid value for the parameter FifoQueue. "
                               "Reason: the type of a queue cannot be changed.")
            if (value == "true") != fifo:
                raise SqsError("InvalidParameterValue", "The name of a FIFO queue can only include "
                               "alphanumeric characters, hyphens, or underscores, must end with .fifo "
                               "suffix and be 1 to 80 in length.")
            changes.append(("sqs", name, value))
        elif name in _FIFO_ONLY and not fifo:
            raise SqsError("InvalidAttributeName", "Unknown Attribute %s." % name)
        elif name == "VisibilityTimeout":
            changes.append(("settings", "lease_seconds", _lease_text(int(_integer(0, 43200)(name, raw)))))
        elif name == "MessageRetentionPeriod":
            changes.append(("settings", "ttl", _integer(60, 1209600)(name, raw)))
        elif name == "MaximumMessageSize":
            changes.append(("sqs", name, _integer(1024, max_message_bytes)(name, raw)))
        elif name == "RedrivePolicy":
            receives, target = _redrive_policy(raw, naming)
            changes.append(("settings", "max_receives", receives))
            changes.append(("settings", "dead_letter_queue", target))
        else:
            validator = QUEUE_ATTRIBUTES[name]
            assert validator is not None
            changes.append(("sqs", name, validator(name, raw)))
    return changes, target


def _redrive_policy(text: str, naming: Naming) -> Tuple[str, str]:
    """(max_receives, dead-letter queue) of a RedrivePolicy; "" removes the policy."""
    if text == "":
        return str(UNLIMITED_RECEIVES), ""

    def invalid(reason: str) -> SqsError:
        return SqsError("InvalidParameterValue", "Value %s for parameter RedrivePolicy is invalid. "
                        "Reason: %s" % (text[:500], reason))

    try:
        policy = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise invalid("Redrive policy is not a valid JSON map.") from None
    if not isinstance(policy, dict) or "deadLetterTargetArn" not in policy or "maxReceiveCount" not in policy:
        raise invalid("Redrive policy does not contain mandatory attribute: "
                      "deadLetterTargetArn or maxReceiveCount.")
    count = policy["maxReceiveCount"]
    if isinstance(count, str) and count.isdigit():
        count = int(count)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 1000:
        raise invalid("Invalid value for maxReceiveCount: %s, valid values are from 1 to 1000 "
                      "both inclusive." % (policy["maxReceiveCount"],))
    arn = policy["deadLetterTargetArn"]
    queue = naming.queue_of_arn(arn) if isinstance(arn, str) else None
    if queue is None:
        raise invalid("Invalid value for deadLetterTargetArn.")
    return str(count), queue


def creation_attributes(changes: Sequence[Tuple[str, str, str]], fifo: bool,
                        max_message_bytes: int) -> List[Tuple[str, str, str, bool]]:
    """The attributes a new queue is written with: the given ones, then SQS's
    defaults (written only where the queue has no value of its own)."""
    given = [(hash_name, field, value, True) for hash_name, field, value in changes]
    named = {(hash_name, field) for hash_name, field, _ in changes}
    defaults = [("settings", "lease_seconds", _lease_text(30)), ("settings", "ttl", "345600"),
                ("settings", "max_receives", str(UNLIMITED_RECEIVES)),
                ("sqs", "DelaySeconds", "0"), ("sqs", "MaximumMessageSize", str(max_message_bytes)),
                ("sqs", "ReceiveMessageWaitTimeSeconds", "0")]
    if fifo:
        defaults += [("sqs", "FifoQueue", "true"), ("sqs", "ContentBasedDeduplication", "false"),
                     ("sqs", "DeduplicationScope", "queue"), ("sqs", "FifoThroughputLimit", "perQueue")]
    return given + [(h, f, v, False) for h, f, v in defaults if (h, f) not in named]


def queue_attributes(view: QueueView, queue: str, naming: Naming, lease_seconds: float,
                     max_receives: int, max_message_bytes: int) -> Dict[str, str]:
    """Every attribute of a queue, as GetQueueAttributes "All" answers them.

    :param lease_seconds, max_receives: the broker's defaults, for queues without
        settings of their own (queues made by a REST publish).
    """
    own, settings = view.attributes, view.settings
    receives = int(settings.get("max_receives") or max_receives)
    out = {
        "QueueArn": naming.arn(queue),
        "ApproximateNumberOfMessages": str(view.waiting),
        "ApproximateNumberOfMessagesNotVisible": str(view.inflight),
        "ApproximateNumberOfMessagesDelayed": str(view.delayed),
        "CreatedTimestamp": own.get("CreatedTimestamp", "0"),
        "LastModifiedTimestamp": own.get("LastModifiedTimestamp", own.get("CreatedTimestamp", "0")),
        "VisibilityTimeout": str(int(float(settings.get("lease_seconds") or lease_seconds))),
        "MaximumMessageSize": own.get("MaximumMessageSize", str(max_message_bytes)),
        # a queue without a ttl keeps its messages: say the longest SQS allows
        "MessageRetentionPeriod": settings.get("ttl", "1209600"),
        "DelaySeconds": own.get("DelaySeconds", "0"),
        "ReceiveMessageWaitTimeSeconds": own.get("ReceiveMessageWaitTimeSeconds", "0"),
        "SqsManagedSseEnabled": own.get("SqsManagedSseEnabled", "false"),
    }
    if receives < UNLIMITED_RECEIVES:
        target = settings.get("dead_letter_queue") or queue + ":dead"
        out["RedrivePolicy"] = orjson.dumps({"deadLetterTargetArn": naming.arn(target),
                                             "maxReceiveCount": receives}).decode()
    for name in ("Policy", "RedriveAllowPolicy", "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds",
                 "FifoQueue", *_FIFO_ONLY):
        if own.get(name):
            out[name] = own[name]
    return out


def select_attributes(every: Dict[str, str], names: Sequence[str]) -> Dict[str, str]:
    """The attributes GetQueueAttributes was asked for ("All" or names).

    :raises SqsError: InvalidAttributeName for a name SQS does not know.
    """
    if not names:
        return {}
    if "All" in names:
        return every
    out = {}
    for name in names:
        if name not in QUEUE_ATTRIBUTES and name not in READ_ONLY_ATTRIBUTES:
            raise SqsError("InvalidAttributeName", "Unknown Attribute %s." % name)
        if name in every:
            out[name] = every[name]
    return out


# messages

def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _field(data: bytes) -> bytes:
    return struct.pack("!I", len(data)) + data


def md5_of_attributes(attributes: Dict[str, Dict[str, Any]]) -> str:
    """MD5OfMessageAttributes as SQS computes it: for each attribute in name order,
    the name, the data type, a transport byte (1 string, 2 binary) and the value,
    each but the byte prefixed with its 4-byte big-endian length."""
    digest = hashlib.md5(usedforsecurity=False)
    for name in sorted(attributes):
        value = attributes[name]
        data_type = value["DataType"]
        digest.update(_field(name.encode("utf-8")))
        digest.update(_field(data_type.encode("utf-8")))
        if data_type.startswith("Binary"):
            digest.update(b"\x02")
            digest.update(_field(value["BinaryValue"]))
        else:
            digest.update(b"\x01")
            digest.update(_field(value["StringValue"].encode("utf-8")))
    return digest.hexdigest()


def check_body(body: Any, name: str = "MessageBody") -> str:
    """:raises SqsError: unless ``body`` is a non-empty string of the characters SQS allows."""
    if not isinstance(body, str) or body == "":
        raise SqsError("MissingParameter" if body is None else "InvalidParameterValue",
                       "The request must contain the parameter %s." % name)
    if body.isascii() and body.isprintable():
        return body  # the common case, without the regular expression
    bad = _BAD_CHARS.search(body)
    if bad is not None:
        raise SqsError("InvalidMessageContents", "Invalid characters found. Deleted message body: "
                       "the character #x%X is not allowed." % ord(bad.group()))
    return body


def parse_message_attributes(given: Any, system: bool = False) -> Dict[str, Dict[str, Any]]:
    """Validate MessageAttributes (or MessageSystemAttributes); Binary values come
    back as bytes. :raises SqsError: InvalidParameterValue."""
    if given is None:
        return {}
    label = "message system attribute" if system else "message attribute"
    if not isinstance(given, dict):
        raise SqsError("InvalidParameterValue", "MessageAttributes must be a map.")
    if len(given) > 10:
        raise SqsError("InvalidParameterValue", "Number of message attributes [%d] exceeds the "
                       "allowed maximum [10]." % len(given))
    out: Dict[str, Dict[str, Any]] = {}
    for name, value in given.items():
        if system and name != "AWSTraceHeader":
            raise SqsError("InvalidParameterValue", "Message system attribute name '%s' is invalid." % name)
        if not _ATTRIBUTE_NAME.match(name) or ".." in name or name.startswith(".") or name.endswith(".") \
                or (not system and name.lower().startswith(("aws.", "amazon."))):
            raise SqsError("InvalidParameterValue", "Message (user) attribute name '%s' is invalid."
                           % name[:300])
        if not isinstance(value, dict):
            raise SqsError("InvalidParameterValue", "The %s '%s' must be a map." % (label, name))
        data_type = value.get("DataType")
        if not isinstance(data_type, str) or not data_type:
            raise SqsError("InvalidParameterValue", "The %s '%s' must contain non-empty message "
                           "attribute type." % (label, name))
        if not _DATA_TYPE.match(data_type):
            raise SqsError("InvalidParameterValue", "The type of %s '%s' is invalid. You must use "
                           "only the following supported type prefixes: Binary, Number, String."
                           % (label, name))
        if data_type.startswith("Binary"):
            raw = value.get("BinaryValue")
            data = _binary(raw)
            if not data:
                raise SqsError("InvalidParameterValue", "The %s '%s' with type 'Binary' must use "
                               "field 'Binary'." % (label, name))
            out[name] = {"DataType": data_type, "BinaryValue": data}
        else:
            text = value.get("StringValue")
            if not isinstance(text, str) or text == "":
                raise SqsError("InvalidParameterValue", "The %s '%s' must contain non-empty message "
                               "attribute value for message attribute type '%s'."
                               % (label, name, data_type.split(".")[0]))
            if data_type.startswith("Number") and not _NUMBER.match(text):
                raise SqsError("InvalidParameterValue", "Can't cast the value of message (user) "
                               "attribute '%s' to a number." % name)
            if _BAD_CHARS.search(text):
                raise SqsError("InvalidParameterValue", "The %s '%s' has characters SQS does not "
                               "allow." % (label, name))
            out[name] = {"DataType": data_type, "StringValue": text}
    return out


def _binary(raw: Any) -> bytes:
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw)
    if isinstance(raw, str):
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise SqsError("InvalidParameterValue", "A Binary message attribute value is not "
                           "valid base64.") from None
    return b""


def message_attributes_size(attributes: Dict[str, Dict[str, Any]]) -> int:
    """Bytes the attributes count toward the message size limit (names, types, values)."""
    if not attributes:
        return 0
    size = 0
    for name, value in attributes.items():
        size += len(name.encode("utf-8")) + len(value["DataType"].encode("utf-8"))
        data = value["BinaryValue"] if "BinaryValue" in value else value["StringValue"].encode("utf-8")
        size += len(data)
    return size
