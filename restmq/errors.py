"""Domain exceptions. They carry no HTTP status: web/errors.py maps them."""

from __future__ import annotations

__all__ = [
    "RestMQError", "BadRequest", "InvalidQueueName", "QueueNotFound",
    "MessageNotFound", "MessageTooLarge", "Unauthorized", "Forbidden", "AddressDenied",
    "BackendUnavailable", "ConfigError", "QueueFull", "LeaseLost", "GroupNotFound",
    "ReplyTimeout", "TooManyInFlight",
]


class RestMQError(Exception):
    """Base of every error RestMQ raises on purpose."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message or self.__doc__ or self.__class__.__name__


class BadRequest(RestMQError):
    """The request is malformed."""


class InvalidQueueName(BadRequest):
    """The queue name is outside the safe set."""


class QueueNotFound(RestMQError):
    """The queue does not exist."""


class GroupNotFound(RestMQError):
    """The queue has no consumer group of that name."""


class ReplyTimeout(RestMQError):
    """No reply came to a request within its timeout."""


class MessageNotFound(RestMQError):
    """The message does not exist."""


class MessageTooLarge(RestMQError):
    """The message is larger than max_message_bytes."""


class QueueFull(RestMQError):
    """The queue reached its max length and refuses new messages."""


class TooManyInFlight(RestMQError):
    """The queue has as many messages in flight (leased) as it may."""


class LeaseLost(RestMQError):
    """The lease behind a receipt expired or belongs to another consumer."""


class Unauthorized(RestMQError):
    """Credentials are missing or wrong."""

    def __init__(self, message: str = "", realm: str = "RestMQ Restricted Access") -> None:
        super().__init__(message)
        self.realm = realm


class Forbidden(RestMQError):
    """The address or user is not allowed."""


class AddressDenied(Forbidden):
    """The ACL refuses the client's address (the original answered 401 to it)."""


class BackendUnavailable(RestMQError):
    """Redis is unreachable or did not answer in time."""


class ConfigError(RestMQError):
    """A configuration value is invalid."""
