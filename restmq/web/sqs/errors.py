"""SQS's errors: each with the code, HTTP status and fault SQS answers, so SDKs raise
the exceptions their users catch; RestMQ's domain errors mapped onto them."""

from __future__ import annotations

from typing import Optional, Tuple, Type

from restmq import errors
from restmq.storage.store import StorageFull

__all__ = ["SqsError", "ERRORS", "from_domain"]

# shape name (AWS JSON __type) -> (query protocol code, HTTP status, sender fault)
ERRORS = {
    "AccessDenied": ("AccessDenied", 403, True),
    "BatchEntryIdsNotDistinct": ("AWS.SimpleQueueService.BatchEntryIdsNotDistinct", 400, True),
    "BatchRequestTooLong": ("AWS.SimpleQueueService.BatchRequestTooLong", 400, True),
    "EmptyBatchRequest": ("AWS.SimpleQueueService.EmptyBatchRequest", 400, True),
    "IncompleteSignature": ("IncompleteSignature", 400, True),
    "InternalFailure": ("InternalFailure", 500, False),
    "InvalidAction": ("InvalidAction", 400, True),
    "InvalidAddress": ("InvalidAddress", 404, True),
    "InvalidAttributeName": ("InvalidAttributeName", 400, True),
    "InvalidAttributeValue": ("InvalidAttributeValue", 400, True),
    "InvalidBatchEntryId": ("AWS.SimpleQueueService.InvalidBatchEntryId", 400, True),
    "InvalidClientTokenId": ("InvalidClientTokenId", 403, True),
    "InvalidMessageContents": ("InvalidMessageContents", 400, True),
    "InvalidParameterValue": ("InvalidParameterValue", 400, True),
    "MalformedQueryString": ("MalformedQueryString", 400, True),
    "MessageNotInflight": ("AWS.SimpleQueueService.MessageNotInflight", 400, True),
    "MissingAuthenticationToken": ("MissingAuthenticationToken", 403, True),
    "MissingParameter": ("MissingParameter", 400, True),
    "OverLimit": ("OverLimit", 403, True),
    "QueueDoesNotExist": ("AWS.SimpleQueueService.NonExistentQueue", 400, True),
    "QueueNameExists": ("QueueAlreadyExists", 400, True),
    "ReceiptHandleIsInvalid": ("ReceiptHandleIsInvalid", 400, True),
    "RequestExpired": ("RequestExpired", 400, True),
    "ResourceNotFoundException": ("ResourceNotFoundException", 404, True),
    "ServiceUnavailable": ("ServiceUnavailable", 503, False),
    "SignatureDoesNotMatch": ("SignatureDoesNotMatch", 403, True),
    "TooManyEntriesInBatchRequest": ("AWS.SimpleQueueService.TooManyEntriesInBatchRequest", 400, True),
    "UnsupportedOperation": ("AWS.SimpleQueueService.UnsupportedOperation", 400, True),
}


class SqsError(Exception):
    """An SQS error answer. ``name`` is its shape name (a key of ERRORS)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.code, self.status, self.sender = ERRORS[name]


_DOMAIN: Tuple[Tuple[Type[Exception], str], ...] = (
    (errors.QueueNotFound, "QueueDoesNotExist"),
    (errors.MessageNotFound, "ReceiptHandleIsInvalid"),
    (errors.MessageTooLarge, "InvalidParameterValue"),
    (errors.BadRequest, "InvalidParameterValue"),
    (errors.TooManyInFlight, "OverLimit"),
    (errors.QueueFull, "OverLimit"),
    (errors.Unauthorized, "InvalidClientTokenId"),
    (errors.Forbidden, "AccessDenied"),
    (StorageFull, "ServiceUnavailable"),
    (errors.BackendUnavailable, "ServiceUnavailable"),
)


def from_domain(exc: Exception) -> Optional[SqsError]:
    """The SQS error for one of RestMQ's domain errors (None for anything else)."""
    if isinstance(exc, SqsError):
        return exc
    for kind, name in _DOMAIN:
        if isinstance(exc, kind):
            message = exc.message if isinstance(exc, errors.RestMQError) else str(exc)
            if kind is errors.QueueNotFound:
                message = "The specified queue does not exist."
            return SqsError(name, message)
    return None
