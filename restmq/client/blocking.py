"""The blocking client, on the standard library alone: :class:`Queue` and :class:`Broker`."""

from __future__ import annotations

import http.client
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import orjson

from restmq.client.core import (DEFAULT_URL, Message, Receipt, _Call, _Endpoint, _error, _QueueCalls,
                                _SSEParser, _QUEUES, _READY, _STATS)

__all__ = ["Queue", "Broker"]


def _send(endpoint: _Endpoint, call: _Call, headers: Optional[Dict[str, str]] = None,
          stream: bool = False) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """Send ``call`` over a new connection; the caller reads the response and closes it."""
    kind = http.client.HTTPSConnection if endpoint.scheme == "https" else http.client.HTTPConnection
    connection = kind(endpoint.host, endpoint.port, timeout=None if stream else endpoint.timeout + call.wait)
    try:
        connection.request(call.method, endpoint.target(call), call.body,
                           endpoint.request_headers(call, headers))
        return connection, connection.getresponse()
    except BaseException:
        connection.close()
        raise


def _execute(endpoint: _Endpoint, call: _Call) -> Any:
    """Send ``call`` and read its answer (blocking)."""
    connection, response = _send(endpoint, call)
    try:
        return call.parse(response.status, response.read())
    finally:
        connection.close()


class Queue(_QueueCalls):
    """One queue of a RestMQ broker, over blocking HTTP (http.client).

    :param serializer: an object with ``dumps``/``loads`` (``json``, ``pickle``);
        without one, messages are ``str`` and come back as ``str``.
    :param auth: (user, password) for HTTP Basic; ``token`` for a Bearer token.
    :param timeout: seconds to wait for the broker (a long-poll adds its ``wait``).
    :raises ClientError: from every method, when the broker answers an error.
    :raises OSError: when the broker cannot be reached.
    """

    def _execute(self, call: _Call) -> Any:
        return _execute(self.endpoint, call)

    # producing

    def put(self, *messages: Any, ttl: Optional[int] = None, delay: Optional[float] = None) -> Any:
        """Add messages. One message answers its key; several go as batches of up to
        1000 (each one atomic, in order) and answer the list of keys.

        :param ttl: seconds each message lives; ``delay``: seconds before it can be taken.
        :raises ClientError: the broker refused (e.g. 429 queue_full, 413 message_too_large).
        """
        calls = self._put_calls(messages, ttl, delay)
        if len(messages) == 1:
            return self._execute(calls[0])
        keys: List[str] = []
        for call in calls:
            keys += self._execute(call)
        return keys

    # consuming

    def _pop(self, block: bool, timeout: Optional[float], lease: Optional[float]) -> Optional[Message]:
        deadline = self._pop_plan(block, timeout, time.monotonic())
        while True:
            wait = self._next_wait(deadline, time.monotonic())
            message = self._execute(self._pop_call(wait, lease))
            if message is not None or (deadline is not None and time.monotonic() >= deadline):
                return message

    def get(self, block: bool = False, timeout: Optional[float] = None) -> Any:
        """Take the oldest message's value; None when the queue is empty.

        :param block: wait for a message (long-poll), at most ``timeout`` seconds
            (None: as long as it takes).
        """
        message = self._pop(block, timeout, None)
        return None if message is None else message.value

    def get_message(self, block: bool = False, timeout: Optional[float] = None) -> Optional[Message]:
        """Like get(), with the message's key."""
        return self._pop(block, timeout, None)

    def reserve(self, lease: Optional[float] = None, block: bool = False,
                timeout: Optional[float] = None) -> Optional[Message]:
        """Lease the oldest message for ``lease`` seconds (None: the queue's
        ``lease_seconds``); ack() it with its ``receipt`` or it is delivered again."""
        return self._pop(block, timeout, lease if lease is not None else 0)

    def ack(self, *receipts: Receipt) -> int:
        """Acknowledge reserved messages (Message objects or receipts); answers how many.

        :raises ClientError: 409 ``lease_lost`` when a lease ran out and the message
            went to another consumer (the other receipts are still acked).
        """
        return self._execute(self._settle_call("ack", receipts))

    def nack(self, *receipts: Receipt, delay: Optional[float] = None) -> int:
        """Give reserved messages back: at once, or after ``delay`` seconds."""
        return self._execute(self._settle_call("nack", receipts, delay=delay))

    def extend(self, *receipts: Receipt, seconds: Optional[float] = None) -> int:
        """Make the leases end ``seconds`` from now (None: the queue's lease_seconds)."""
        return self._execute(self._settle_call("extend", receipts, seconds=seconds))

    def consume(self, last_id: Optional[str] = None) -> Iterator[Any]:
        """Iterate over the values the broker streams to this consumer (Server-Sent
        Events on /sse/<queue>), as its policy decides: every message (broadcast) or
        this consumer's share (roundrobin). It ends when the broker closes the stream;
        close the iterator (or leave the loop) to disconnect."""
        for message in self.consume_messages(last_id):
            yield message.value

    def consume_messages(self, last_id: Optional[str] = None) -> Iterator[Message]:
        """Like consume(), with keys: resume with ``last_id`` (the last key seen)."""
        call, headers = self._stream_call(last_id)
        connection, response = _send(self.endpoint, call, headers, stream=True)
        try:
            if response.status != 200:
                raise _error(response.status, response.read())
            parser = _SSEParser()
            while True:
                chunk = response.read1(65536)
                if not chunk:
                    return
                for event, _, data in parser.feed(chunk):
                    if event == "message":
                        yield self._message(orjson.loads(data))
        finally:
            connection.close()

    # views and control

    def last(self, count: int = 10) -> List[Message]:
        """The newest ``count`` waiting messages, newest first (left in the queue)."""
        return self._execute(self._last_call(count))

    def stats(self) -> Dict[str, Any]:
        """Length, in flight, delayed, dead, oldest age, status, policy, subscribers."""
        return self._execute(self._stats_call())

    def __len__(self) -> int:
        return int(self.stats()["len"])

    def purge(self) -> int:
        """Remove every message; answers how many."""
        return self._execute(self._purge_call())

    clear = purge  # HotQueue's name

    def get_policy(self) -> str:
        return self._execute(self._field_call("p", "policy", "value"))

    def set_policy(self, policy: str) -> str:
        """``broadcast`` (every streaming consumer gets every message) or ``roundrobin``."""
        return self._execute(self._field_call("p", "policy", "value", policy))

    @property
    def policy(self) -> str:
        """The distribution policy, as a property (``queue.policy = "roundrobin"``)."""
        return self.get_policy()

    @policy.setter
    def policy(self, policy: str) -> None:
        self.set_policy(policy)

    def status(self) -> str:
        """``started`` or ``stopped``."""
        return self._execute(self._field_call("control", "status", "status"))

    def pause(self) -> str:
        """Stop delivering to streaming consumers (messages keep arriving)."""
        return self._execute(self._field_call("control", "status", "status", "stop"))

    def resume(self) -> str:
        return self._execute(self._field_call("control", "status", "status", "start"))


class Broker:
    """What spans queues: their names, everyone's stats, readiness (blocking)."""

    def __init__(self, url: str = DEFAULT_URL, auth: Optional[Tuple[str, str]] = None,
                 token: Optional[str] = None, timeout: float = 10.0) -> None:
        self.endpoint = _Endpoint(url, auth, token, timeout)

    def queues(self) -> List[str]:
        return _execute(self.endpoint, _QUEUES)

    def stats(self) -> Dict[str, Any]:
        """``{"queues": {name: {...}}, "count", "redis"}``."""
        return _execute(self.endpoint, _STATS)

    def ready(self) -> Dict[str, Any]:
        """/health/ready: raises ClientError (503) when the broker cannot reach Redis."""
        return _execute(self.endpoint, _READY)
