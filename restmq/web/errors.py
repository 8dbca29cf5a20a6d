"""Domain exception -> (HTTP status, error code): the one table."""

from __future__ import annotations

from typing import Tuple, Type

from restmq import errors
from restmq.storage.store import StorageFull

__all__ = ["ERROR_TABLE", "status_for"]

ERROR_TABLE: Tuple[Tuple[Type[Exception], int, str], ...] = (
    (errors.InvalidQueueName, 400, "bad_request"),
    (errors.BadRequest, 400, "bad_request"),
    (errors.Unauthorized, 401, "unauthorized"),
    (errors.Forbidden, 403, "forbidden"),
    (errors.QueueNotFound, 404, "queue_not_found"),
    (errors.GroupNotFound, 404, "group_not_found"),
    (errors.MessageNotFound, 404, "not_found"),
    (errors.LeaseLost, 409, "lease_lost"),
    (errors.MessageTooLarge, 413, "message_too_large"),
    (errors.QueueFull, 429, "queue_full"),
    (errors.TooManyInFlight, 429, "too_many_in_flight"),
    (StorageFull, 507, "storage_full"),
    (errors.BackendUnavailable, 503, "backend_unavailable"),
    (errors.ReplyTimeout, 504, "timeout"),
)


def status_for(exc: Exception) -> Tuple[int, str]:
    """The (status, code) of a domain error; (500, "internal_error") for anything else."""
    for kind, status, code in ERROR_TABLE:
        if isinstance(exc, kind):
            return status, code
    return 500, "internal_error"
