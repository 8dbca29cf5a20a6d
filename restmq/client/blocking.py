"""The blocking client, on the standard library alone: :class:`Queue` and :class:`Broker`.

Thread-safe: each call borrows a keep-alive connection from the client's own
small pool and gives it back, so one thread uses one persistent connection and
N threads calling at once use N. Log records go to the standard ``logging``
module, logger ``restmq.client``.
"""

from __future__ import annotations

import http.client
import logging
import select
import signal
import socket
import threading
import time
from types import FrameType
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple, TypeVar

from restmq.client.core import (DEFAULT_LEASE, DEFAULT_URL, MAX_IDLE, STREAM_IDLE, ClientError,
                                ConnectionFailed, DeadLetter, Message, Receipt, WorkPlan, _BrokerCalls, _Call,
                                _Consuming, _Endpoint, _LeaseKeeping, _MultiQueue, _NoAnswer, _NotSent, _plan,
                                _QueueCalls, _Reconnects, _Retries, _Subscription, _unavailable,
                                _worker_decorator, _Working, _DENIED, _QUEUES, _READY, _SETTINGS_ERRORS,
                                _STATS)

__all__ = ["Queue", "Broker"]

log = logging.getLogger("restmq.client")

_TRANSPORT_ERRORS = (OSError, http.client.HTTPException)


class _Cancelled(Exception):
    """A loop was asked to stop while a call waited."""


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """An idle keep-alive socket that is readable was closed by the broker (or is
    out of step): it must not carry the next request."""
    sock = connection.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class _Transport:
    """The keep-alive connections of one client, and how it sends a call and waits
    for the answer (:class:`core._Retries` decides what is sent again)."""

    def __init__(self, endpoint: _Endpoint) -> None:
        self.endpoint = endpoint
        self._idle: List[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        # connections inside a long-poll, so that a stopping worker can cut them short
        self._waiting: Set[http.client.HTTPConnection] = set()

    def _new(self) -> http.client.HTTPConnection:
        endpoint = self.endpoint
        kind = http.client.HTTPSConnection if endpoint.scheme == "https" else http.client.HTTPConnection
        return kind(endpoint.host, endpoint.port, timeout=endpoint.connect_timeout)

    def _acquire(self) -> http.client.HTTPConnection:
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                return self._new()
            if not _dropped(connection):
                return connection
            connection.close()

    def _release(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE:
                self._idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        """Close the idle connections (the client stays usable: it reconnects)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def interrupt(self) -> None:
        """Cut the long-polls in progress short (safe in a signal handler: no lock)."""
        for connection in list(self._waiting):
            sock = connection.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def exchange(self, call: _Call, headers: Optional[Dict[str, str]] = None,
                 cancel: Optional[threading.Event] = None) -> Tuple[int, bytes]:
        """One attempt: (status, body). :raises _NotSent, _NoAnswer:"""
        endpoint = self.endpoint
        connection = self._acquire()
        try:
            fresh = connection.sock is None
            if fresh:
                connection.connect()
            sock: Any = connection.sock
            if fresh:
                # http.client sends the head and the body in two writes: without this
                # Nagle holds the body back until the head is acknowledged
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(endpoint.read_timeout(call))
            connection.request(call.method, endpoint.target(call), call.body,
                               endpoint.request_headers(call, headers))
        except _TRANSPORT_ERRORS as exc:
            # sendall() failed, so the broker never had the whole request
            connection.close()
            raise _NotSent(exc) from None
        except BaseException:
            connection.close()
            raise
        waiting = call.wait > 0
        if waiting:
            self._waiting.add(connection)
        try:
            if cancel is not None and cancel.is_set():
                raise _Cancelled()
            response = connection.getresponse()
            body = response.read()
        except _TRANSPORT_ERRORS as exc:
            connection.close()
            raise _NoAnswer(exc) from None
        except BaseException:
            connection.close()
            raise
        finally:
            if waiting:
                self._waiting.discard(connection)
        if response.will_close:
            connection.close()
        else:
            self._release(connection)
        return response.status, body

    def execute(self, call: _Call, cancel: Optional[threading.Event] = None) -> Any:
        """Send ``call`` (retrying what may be retried) and read its answer.

        :raises ClientError: the broker refused.
        :raises ConnectionFailed: it could not be reached, or did not answer.
        """
        retries = _Retries(self.endpoint, call)
        while True:
            try:
                status, body = self.exchange(call, cancel=cancel)
            except (_NotSent, _NoAnswer) as failed:
                cause: BaseException = retries.unanswered(failed)
            else:
                refusal = retries.retry_after(status, body)
                if refusal is None:
                    return call.parse(status, body)
                cause = refusal
            pause = retries.pause(cause, stopping=cancel is not None and cancel.is_set())
            if cancel is None:
                time.sleep(pause)
            elif cancel.wait(pause):
                raise retries.failure(cause) from cause

    def open_stream(self, call: _Call, headers: Dict[str, str]) -> Tuple[http.client.HTTPConnection,
                                                                         http.client.HTTPResponse]:
        """A streaming request on a connection of its own (not pooled)."""
        endpoint = self.endpoint
        connection = self._new()
        try:
            connection.connect()
            # the broker's heartbeats keep a live stream talking; silence means it is gone
            connection.sock.settimeout(STREAM_IDLE)
            connection.request(call.method, endpoint.target(call), call.body,
                               endpoint.request_headers(call, headers))
            return connection, connection.getresponse()
        except BaseException:
            connection.close()
            raise


_Self = TypeVar("_Self", bound="_Closing")


class _Closing:
    """A client of its transport's connections, and a context manager that closes them."""

    _transport: _Transport

    def close(self) -> None:
        """Close the idle keep-alive connections."""
        self._transport.close()

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class Queue(_Closing, _QueueCalls):
    """One queue of a RestMQ broker, over blocking HTTP (http.client).

    :param serializer: an object with ``dumps``/``loads`` (``json``, ``pickle``);
        without one, messages are ``str`` and come back as ``str``.
    :param auth: (user, password) for HTTP Basic; ``token`` for a Bearer token.
    :param timeout: seconds to wait for an answer (a long-poll adds its ``wait``);
        ``connect_timeout`` for a connection (default: ``timeout``).
    :param retries: how often a call is sent again after a connection error or a
        503 when that is safe (idempotent calls; ``put`` only with an
        ``idempotency_key``), waiting ``backoff`` seconds, then twice that...
    :param group: the consumer group to consume for (None: the queue's default
        consumers); every consuming method also takes ``group=``.
    :raises ClientError: from every method, when the broker answers an error.
    :raises ConnectionFailed: (a ``ConnectionError``) when it cannot be reached.
    """

    def __init__(self, name: str, url: str = DEFAULT_URL, serializer: Any = None,
                 auth: Optional[Tuple[str, str]] = None, token: Optional[str] = None,
                 timeout: float = 10.0, connect_timeout: Optional[float] = None, retries: int = 3,
                 backoff: float = 0.1, group: Optional[str] = None,
                 _transport: Optional[_Transport] = None) -> None:
        super().__init__(name, url, serializer, auth, token, timeout, connect_timeout, retries, backoff,
                         group)
        self._transport = _transport or _Transport(self.endpoint)

    def _execute(self, call: _Call, cancel: Optional[threading.Event] = None) -> Any:
        return self._transport.execute(call, cancel)

    # producing

    def put(self, *messages: Any, ttl: Optional[int] = None, delay: Optional[float] = None,
            idempotency_key: Optional[str] = None, attributes: Optional[Dict[str, str]] = None,
            ordering_key: Optional[str] = None) -> Any:
        """Add messages. One message answers its key; several go as batches of up to
        1000 (each one atomic, in order) and answer the list of keys.

        :param ttl: seconds each message lives; ``delay``: seconds before it can be taken.
        :param idempotency_key: the broker stores a publish with this key once (within
            its ``idempotency_window``) and answers a repeat with the first keys, so
            the put is retried after a connection error or a 503.
        :param attributes: ``{name: value}`` strings every message carries to its consumers.
        :param ordering_key: reserving consumers get the messages of one key in
            order, one at a time (SQS FIFO's MessageGroupId).
        :raises ClientError: the broker refused (e.g. 429 queue_full, 413 message_too_large).
        """
        calls = self._put_calls(messages, ttl, delay, idempotency_key, attributes, ordering_key)
        return self._put_answer([self._execute(call) for call in calls], len(messages) == 1)

    # consuming

    def _pop(self, block: bool, timeout: Optional[float], lease: Optional[float],
             count: Optional[int] = None, group: Optional[str] = None) -> Any:
        """A pop (``lease`` None) or a reserve: a Message or None, a list with ``count``."""
        deadline = self._pop_plan(block, timeout, time.monotonic())
        while True:
            wait = self._next_wait(deadline, time.monotonic())
            messages = self._execute(self._pop_call(wait, lease, count, group))
            if messages or (deadline is not None and time.monotonic() >= deadline):
                return self._one_or_list(messages, count)

    def get(self, block: bool = False, timeout: Optional[float] = None, group: Optional[str] = None) -> Any:
        """Take the oldest message's value; None when the queue is empty.

        :param block: wait for a message (long-poll), at most ``timeout`` seconds
            (None: as long as it takes).
        """
        message = self._pop(block, timeout, None, None, group)
        return None if message is None else message.value

    def get_message(self, block: bool = False, timeout: Optional[float] = None,
                    group: Optional[str] = None) -> Optional[Message]:
        """Like get(), with the message's key and attributes."""
        return self._pop(block, timeout, None, None, group)

    def reserve(self, lease: Optional[float] = None, count: Optional[int] = None, block: bool = False,
                timeout: Optional[float] = None, group: Optional[str] = None) -> Any:
        """Lease the oldest message for ``lease`` seconds (None: the queue's
        ``lease_seconds``); ack() it with its ``receipt`` or it is delivered again.

        :param count: reserve up to this many and answer a list (maybe empty);
            without it, one Message or None.
        :param block: wait (long-poll) up to ``timeout`` seconds (None: forever).
        """
        return self._pop(block, timeout, lease if lease is not None else 0, count, group)

    def ack(self, *receipts: Receipt, group: Optional[str] = None) -> int:
        """Acknowledge reserved messages (Message objects or receipts); answers how many.

        :raises ClientError: 409 ``lease_lost`` when a lease ran out and the message
            went to another consumer (the other receipts are still acked).
        """
        return self._execute(self._settle_call("ack", receipts, group))

    def nack(self, *receipts: Receipt, delay: Optional[float] = None, group: Optional[str] = None) -> int:
        """Give reserved messages back: at once, or after ``delay`` seconds."""
        return self._execute(self._settle_call("nack", receipts, group, delay=delay))

    def extend(self, *receipts: Receipt, seconds: Optional[float] = None, group: Optional[str] = None) -> int:
        """Make the leases end ``seconds`` from now (None: the queue's lease_seconds)."""
        return self._execute(self._settle_call("extend", receipts, group, seconds=seconds))

    def consume(self, ack: bool = False, *, timeout: Optional[float] = None, lease: Optional[float] = None,
                prefetch: int = 1, messages: bool = False, group: Optional[str] = None) -> "Consumption":
        """Iterate over the queue's messages, competing with its other consumers:
        each message goes to one of them, whatever the queue's policy (the loop
        pops with long-polls). A broken connection or a broker restart is ridden
        out: the loop reconnects with backoff and goes on where it was.

        :param ack: lease each message instead of taking it; it is acked when the
            loop asks for the next one, and given back at once when the loop ends
            without doing so (``break``, an exception), so a crash or a failure
            loses nothing. The lease is extended while the loop body runs.
        :param timeout: stop after this many seconds with nothing to take (None: never).
        :param lease: seconds of each lease (None: the queue's ``lease_seconds``).
        :param prefetch: with ``ack``, reserve up to this many at a time.
        :param messages: yield :class:`Message` objects instead of values.
        :param group: consume for this consumer group (its members compete).
        """
        return Consumption(self, ack, timeout, lease, prefetch, messages, self._group(group))

    def consume_messages(self, ack: bool = False, **options: Any) -> "Consumption":
        """consume(messages=True)."""
        return self.consume(ack, messages=True, **options)

    def subscribe(self, last_id: Optional[str] = None, *, messages: bool = False,
                  group: Optional[str] = None) -> Iterator[Any]:
        """The broadcast stream (Server-Sent Events on /sse/<queue>): what the queue's
        policy gives this subscriber (every message when it broadcasts). The stream
        reconnects by itself with ``Last-Event-ID``, so a broker restart skips
        nothing still in the queue's history. Leave the loop to hang up.

        :param last_id: resume after this key.
        :param messages: yield :class:`Message` objects instead of values.
        :param group: the stream of a consumer group (its members share the messages).
        """
        stream = _Subscription(self, last_id, self._group(group))

        def gap(data: str) -> None:
            log.warning("Stream of %s resumed with a gap: %s", self.name, data)

        while True:
            call, headers, parser = stream.connect()
            connection = None
            try:
                connection, response = self._transport.open_stream(call, headers)
                if response.status != 200:
                    error = stream.refusal(response.status, response.read())
                    log.warning("Stream of %s refused (%s); reconnecting", self.name, error)
                else:
                    stream.answered()
                    while True:
                        chunk = response.read1(65536)
                        if not chunk:
                            break
                        for message in stream.messages(parser, chunk, gap):
                            yield message if messages else message.value
            except _TRANSPORT_ERRORS as exc:
                log.warning("Stream of %s broke (%s); reconnecting", self.name, exc)
            finally:
                if connection is not None:
                    connection.close()
            time.sleep(stream.pause())

    def work(self, handler: Callable[[Message], Any], *, lease: Optional[float] = None,
             concurrency: int = 1, idle_timeout: Optional[float] = None, limit: Optional[int] = None,
             retry_delay: float = 1.0, backoff: float = 2.0, max_retry_delay: float = 300.0,
             prefetch: int = 1, group: Optional[str] = None) -> int:
        """Run ``handler(message)`` for each message of the queue, at least once each.

        Reserves, calls the handler, acks when it returns, and when it raises logs
        the traceback and gives the message back after ``retry_delay * backoff **
        (deliveries - 1)`` seconds (at most ``max_retry_delay``); after the
        queue's ``max_receives`` deliveries the broker moves it to the dead
        letters. The lease is extended while a slow handler runs.

        :param lease: seconds of each lease (None: the queue's ``lease_seconds``).
        :param concurrency: handlers running at once (threads).
        :param idle_timeout: stop after this many seconds with nothing to do.
        :param limit: stop after this many messages.
        :param prefetch: messages reserved per request (each waits its turn leased).
        :param group: work for this consumer group.
        :returns: how many messages were handled (acked or given back).

        SIGTERM or Ctrl-C (in the main thread) lets the current messages finish,
        then stops; a second Ctrl-C stops at once (its message goes back).
        Connection errors and restarts of the broker are ridden out with backoff.
        """
        plan = _plan(lease, concurrency, idle_timeout, limit, retry_delay, backoff, max_retry_delay,
                     prefetch)
        return _Worker(self, handler, plan, self._group(group)).run()

    def worker(self, handler: Optional[Callable[[Message], Any]] = None, **options: Any) -> Any:
        """HotQueue's decorator: ``@queue.worker`` or ``@queue.worker(limit=10, ...)``;
        calling the decorated function runs :meth:`work` with it (and answers how
        many messages it handled)."""
        return _worker_decorator(self, handler, options)

    def _lease_seconds(self, group: Optional[str] = None) -> float:
        """The queue's lease, read once by a loop that must know when leases end."""
        try:
            return float(self.settings(group)["lease_seconds"])
        except _SETTINGS_ERRORS as exc:
            log.warning("Could not read the settings of %s (%s); assuming leases of %.0f s",
                        self.name, exc, DEFAULT_LEASE)
            return DEFAULT_LEASE

    # dead letters and settings

    def dead(self, count: int = 10, group: Optional[str] = None) -> List[DeadLetter]:
        """The newest ``count`` dead letters (newest first), with why they died and how often they
        had been delivered (they stay in ``<queue>:dead``, ``<queue>:dead@<group>``)."""
        return self._execute(self._dead_call(count, group))

    def redrive(self, count: Optional[int] = None, group: Optional[str] = None) -> int:
        """Move dead letters (all, or ``count``) back to the end of the queue with a
        fresh delivery count; answers how many moved."""
        return self._execute(self._redrive_call(count, group))

    def settings(self, group: Optional[str] = None) -> Dict[str, Any]:
        """The queue's (or a group's) effective settings: maxlen, overflow,
        max_receives, lease_seconds, history_size, ttl."""
        return self._execute(self._settings_call(None, group))

    def configure(self, group: Optional[str] = None, **settings: Any) -> Dict[str, Any]:
        """Change settings (``max_receives=3, lease_seconds=60, maxlen=10000,
        overflow="reject", ttl=3600, history_size=100``; None removes one);
        answers the effective settings."""
        return self._execute(self._settings_call(settings, group))

    # consumer groups and request/reply

    def create_group(self, name: str) -> bool:
        """Create a consumer group: from now on it gets every message of the queue,
        shared by its members. Answers True when it is new."""
        return self._execute(self._group_call("POST", name))

    def delete_group(self, name: str) -> int:
        """Remove a group with its backlog; answers how many messages it held.

        :raises ClientError: 404 ``group_not_found``.
        """
        return self._execute(self._group_call("DELETE", name))

    def groups(self) -> List[Dict[str, Any]]:
        """The queue's groups with their counts (name, len, inflight, delayed, dead...)."""
        return self._execute(self._group_call("GET"))

    def call(self, message: Any, timeout: float = 30.0, attributes: Optional[Dict[str, str]] = None,
             ordering_key: Optional[str] = None) -> Message:
        """Request/reply: publish ``message`` and wait for a worker's
        :meth:`Message.reply` (``POST /rpc/<queue>``). Answers the reply as a
        Message (its ``value`` and ``attributes``; ``key`` is the request's).

        :raises ClientError: 504 ``timeout`` when no reply came within ``timeout``.
        """
        return self._execute(self._call_call(message, timeout, attributes, ordering_key))

    def _reply(self, request_id: str, body: Any, attributes: Optional[Dict[str, str]]) -> bool:
        return self._execute(self._reply_call(request_id, body, attributes))

    # views and control

    def last(self, count: int = 10, group: Optional[str] = None) -> List[Message]:
        """The newest ``count`` waiting messages, newest first (left in the queue)."""
        return self._execute(self._last_call(count, group))

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


class _LeaseKeeper(_LeaseKeeping["Queue"]):
    """Extends the leases of the messages being handled, from a thread of its own.

    It ticks every sixth of the lease and extends what was taken a third of a
    lease ago or more, so handlers that return quickly cost it nothing.
    """

    def __init__(self, queue: Queue, lease: float, group: Optional[str] = None) -> None:
        super().__init__(queue, lease, group)
        self._due: Dict[str, float] = {}
        self._stop = threading.Event()
        self._starting = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def watch(self, message: Message) -> None:
        if message.receipt:
            self._due[message.receipt] = time.monotonic() + self.every
            if self._thread is None:
                with self._starting:
                    if self._thread is None:
                        thread = threading.Thread(target=self._run, name="restmq-lease-keeper", daemon=True)
                        thread.start()
                        self._thread = thread

    def forget(self, message: Message) -> None:
        if message.receipt:
            self._due.pop(message.receipt, None)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.queue.endpoint.timeout + 1)

    def _run(self) -> None:
        while not self._stop.wait(self.every / 2):
            now = time.monotonic()
            due = [receipt for receipt, at in list(self._due.items()) if at <= now]
            if not due:
                continue
            for receipt in due:
                if receipt in self._due:
                    self._due[receipt] = now + self.every
            try:
                self.queue.extend(*due, seconds=self.lease, group=self.group or "")
            except ClientError as exc:
                log.warning("Could not extend %d lease(s) of %s: %s", len(due), self.queue.name, exc)
                if exc.code == "lease_lost":
                    for receipt in due:
                        self._due.pop(receipt, None)
            except ConnectionFailed as exc:
                log.warning("Could not extend %d lease(s) of %s: %s", len(due), self.queue.name, exc)


class Consumption(_Consuming["Queue"]):
    """The iterator :meth:`Queue.consume` answers; a context manager too.

    ``with queue.consume(ack=True) as jobs: for job in jobs: ...`` acks the last
    message when the block ends normally and gives it back when it raises; a
    plain ``for`` loop gives back the message it was on whenever it ends without
    asking for the next one.
    """

    _keeper: Optional[_LeaseKeeper] = None

    def _now(self) -> float:
        return time.monotonic()

    def _skipped(self, message: Message) -> None:
        log.debug("Skipped %s: its lease ran out while it waited", message.key)

    def __iter__(self) -> "Consumption":
        return self

    def __next__(self) -> Any:
        if self._closed:
            raise StopIteration
        self._settle_current(True)
        message = self._next_message()
        if message is None:
            self.close()
            raise StopIteration
        if self.ack:
            self._current = message
            self._keeper_for().watch(message)
        return message if self.messages else message.value

    def _length(self) -> float:
        """The lease of the messages (the queue's, read once, when not given)."""
        if self._lease_length is None:
            self._lease_length = self.queue._lease_seconds(self.group or "")
        return self._lease_length

    def _keeper_for(self) -> _LeaseKeeper:
        if self._keeper is None:
            self._keeper = _LeaseKeeper(self.queue, self._length(), self.group)
        return self._keeper

    def _next_message(self) -> Optional[Message]:
        queue = self.queue
        started = time.monotonic()
        reconnects = _Reconnects()
        while True:
            message = self._prefetched()
            if message is not None:
                return message
            wait = self._poll_wait(started)
            if wait is None:
                return None
            try:
                sent = time.monotonic()
                taken = queue._execute(self._poll_call(wait))
                reconnects.answered()
            except (ClientError, ConnectionFailed) as exc:
                if not _unavailable(exc):
                    raise
                log.warning("Consumer of %s: %s; reconnecting", queue.name, exc)
                time.sleep(reconnects.pause())
                continue
            if len(taken) > 1:
                # the later ones wait here leased: skip any whose lease ran out meanwhile
                self._hold(taken, sent, self._length())
            if taken:
                return taken[0]

    def _settle_current(self, done: bool) -> None:
        current = self._let_go()
        if current is None:
            return
        try:
            if done:
                self.queue.ack(current)
            else:
                self.queue.nack(current)
        except (ClientError, ConnectionFailed) as exc:
            log.warning("Could not %s %s: %s (its lease will end and it comes back)",
                        "ack" if done else "give back", current.key, exc)

    def close(self, done: bool = False) -> None:
        """Stop: give back the message the loop was on (ack it with ``done``) and
        the prefetched ones."""
        if self._closed:
            return
        self._closed = True
        self._settle_current(done)
        pending, self._pending = self._pending, []
        if pending:
            try:
                self.queue.nack(*[message for message, _ in pending])
            except (ClientError, ConnectionFailed) as exc:
                log.warning("Could not give back %d prefetched message(s): %s", len(pending), exc)
        if self._keeper is not None:
            self._keeper.close()

    def __enter__(self) -> "Consumption":
        return self

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        self.close(done=kind is None)

    def __del__(self) -> None:
        # a for loop left by break or an exception drops the iterator here
        try:
            self.close()
        except Exception:  # noqa: BLE001 - nothing may escape __del__
            pass


class _Worker(_Working["Queue"]):
    """One run of :meth:`Queue.work`."""

    def __init__(self, queue: Queue, handler: Callable[[Message], Any], plan: WorkPlan,
                 group: Optional[str] = None) -> None:
        super().__init__(queue, handler, plan, group)
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._keeper: Optional[_LeaseKeeper] = None
        self._signal: Optional[int] = None
        self._errors: List[BaseException] = []

    def _now(self) -> float:
        return time.monotonic()

    def run(self) -> int:
        queue = self.queue
        try:
            self._configure(queue.settings(self.group or ""))
        except _SETTINGS_ERRORS as exc:
            if isinstance(exc, ClientError) and exc.status in _DENIED:
                raise
            log.warning("Could not read the settings of %s (%s); assuming leases of %.0f s",
                        queue.name, exc, DEFAULT_LEASE)
        self._keeper = _LeaseKeeper(queue, self._lease_or_default(), self.group)
        restore = self._install_signals()
        try:
            if self.plan.concurrency == 1:
                self._loop()
            else:
                threads = [threading.Thread(target=self._thread_loop, name="restmq-worker-%d" % i,
                                            daemon=True) for i in range(self.plan.concurrency)]
                for thread in threads:
                    thread.start()
                try:
                    for thread in threads:
                        while thread.is_alive():
                            thread.join(0.5)
                except BaseException:
                    self.stopping.set()
                    queue._transport.interrupt()
                    raise
                if self._errors:
                    raise self._errors[0]
        finally:
            restore()
            self._keeper.close()
            if self._signal is not None:
                log.info("Worker of %s stopped by %s after %d message(s)", queue.name,
                         signal.Signals(self._signal).name, self.processed)
        return self.processed

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous: Dict[int, Any] = {}

        def stop(signum: int, frame: Optional[FrameType]) -> None:
            # no logging here: the signal may land while this thread holds logging's lock
            self._signal = signum
            self.stopping.set()
            self.queue._transport.interrupt()
            if signum == signal.SIGINT:
                # a second Ctrl-C stops at once
                signal.signal(signal.SIGINT, signal.default_int_handler)

        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, stop)

        def restore() -> None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

        return restore

    def _thread_loop(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
            self._errors.append(exc)
            self.stopping.set()
            self.queue._transport.interrupt()

    def _loop(self) -> None:
        queue = self.queue
        reconnects = _Reconnects()
        while not self.stopping.is_set():
            count = self._claim()
            if not count:
                return
            try:
                sent = time.monotonic()
                batch: List[Message] = queue._execute(self._poll_call(count), self.stopping)
                reconnects.answered()
            except (ClientError, ConnectionFailed, _Cancelled) as exc:
                self._unclaim(count)
                if self.stopping.is_set():
                    return
                if isinstance(exc, _Cancelled) or not _unavailable(exc):
                    raise
                log.warning("Worker of %s: %s; reconnecting", queue.name, exc)
                self.stopping.wait(reconnects.pause())
                continue
            self._unclaim(count - len(batch))
            if not batch:
                if self._idle_over():
                    return
                continue
            for index, message in enumerate(batch):
                if self.stopping.is_set():
                    self._give_back(batch[index:])
                    self._unclaim(len(batch) - index)
                    return
                if self._too_late(index, sent):
                    # its lease ran out while it waited: someone else may have it now
                    self._unclaim(1)
                    continue
                self._handle(message)

    def _handle(self, message: Message) -> None:
        queue = self.queue
        keeper = self._keeper
        assert keeper is not None
        keeper.watch(message)
        self._started()
        try:
            self.handler(message)
        except Exception:
            keeper.forget(message)
            delay = self.plan.retry_delay_for(message.deliveries)
            if self._last_delivery(message):
                log.exception("Handler failed on %s of %s (delivery %d of %d): to the dead letters",
                              message.key, queue.name, message.deliveries, self._max_receives)
            else:
                log.exception("Handler failed on %s of %s (delivery %d); retry in %.1f s",
                              message.key, queue.name, message.deliveries, delay)
            self._settle("nack", message, delay)
        except BaseException:
            # KeyboardInterrupt (a second Ctrl-C), SystemExit: give it back at once
            keeper.forget(message)
            self._settle("nack", message, None)
            self._count()
            raise
        else:
            keeper.forget(message)
            self._settle("ack", message, None)
        self._count()

    def _settle(self, action: str, message: Message, delay: Optional[float]) -> None:
        try:
            if action == "ack":
                self.queue.ack(message)
            else:
                self.queue.nack(message, delay=delay or None)
        except ClientError as exc:
            if exc.code == "lease_lost":
                log.warning("The lease of %s ran out before its %s: it went to another consumer "
                            "(it may be handled twice)", message.key, action)
            else:
                log.warning("Could not %s %s: %s", action, message.key, exc)
        except ConnectionFailed as exc:
            log.warning("Could not %s %s: %s (its lease will end and it comes back)",
                        action, message.key, exc)

    def _give_back(self, messages: List[Message]) -> None:
        try:
            self.queue.nack(*messages)
        except (ClientError, ConnectionFailed) as exc:
            log.warning("Could not give back %d message(s): %s", len(messages), exc)


class Broker(_Closing, _BrokerCalls["Queue"]):
    """What spans queues (blocking): their names, everyone's stats, readiness, and
    taking from several queues at once (``/take``, ``/sse/?queues=``).

    ``broker.queue(name)`` answers a :class:`Queue` sharing this broker's connections.
    """

    def __init__(self, url: str = DEFAULT_URL, auth: Optional[Tuple[str, str]] = None,
                 token: Optional[str] = None, timeout: float = 10.0,
                 connect_timeout: Optional[float] = None, retries: int = 3, backoff: float = 0.1,
                 serializer: Any = None) -> None:
        super().__init__(url, auth, token, timeout, connect_timeout, retries, backoff, serializer)
        self._transport = _Transport(self.endpoint)

    def queue(self, name: str, serializer: Any = None, group: Optional[str] = None) -> Queue:
        """A :class:`Queue` on this broker's connections (the serializer defaults to the broker's)."""
        return Queue(name, group=group, **self._client_options(serializer))

    def take(self, queues: List[str], count: Optional[int] = None, block: bool = False,
             timeout: Optional[float] = None, group: Optional[str] = None) -> Any:
        """Pop the oldest message of the first non-empty queue, in the order given
        (rq's and resque's priority queues): a Message with ``queue`` set, or None;
        with ``count``, a list filled from the queues in that order."""
        return _Take(self, queues, group)._pop(block, timeout, None, count)

    def reserve(self, queues: List[str], lease: Optional[float] = None, count: Optional[int] = None,
                block: bool = False, timeout: Optional[float] = None, group: Optional[str] = None) -> Any:
        """Like :meth:`take`, leasing: ``message.ack()`` settles it in its own queue."""
        return _Take(self, queues, group)._pop(block, timeout, lease if lease is not None else 0, count)

    def subscribe(self, queues: List[str], last_id: Optional[str] = None,
                  group: Optional[str] = None) -> Iterator[Message]:
        """One stream of several queues (``/sse/?queues=a,b``): Messages with ``queue``
        set; it reconnects resuming every queue where it was."""
        return _Take(self, queues, group).subscribe(last_id, messages=True)

    def queues(self) -> List[str]:
        return self._transport.execute(_QUEUES)

    def stats(self) -> Dict[str, Any]:
        """``{"queues": {name: {...}}, "count", "redis"}``."""
        return self._transport.execute(_STATS)

    def ready(self) -> Dict[str, Any]:
        """/health/ready: raises ClientError (503) when the broker cannot reach Redis."""
        return self._transport.execute(_READY)


class _Take(_MultiQueue, Queue):
    """The calls of ``/take?queues=`` and ``/sse/?queues=`` (blocking): each message
    answers from its own queue, and is settled there."""
