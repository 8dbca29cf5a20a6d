"""The Twisted client: :class:`TxQueue` and :class:`TxBroker`, returning Deferreds (on treq,
``pip install restmq[twisted]``).

The same names and semantics as :mod:`restmq.client.blocking`: where the
blocking client iterates, this one also takes a callback; where it blocks,
this one fires a Deferred. Each client keeps its own persistent connection
pool (its idle connections are closed by :meth:`TxQueue.close`).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from twisted.internet import defer, error as internet_error, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from restmq.client.core import (DEFAULT_LEASE, DEFAULT_URL, MAX_IDLE, STREAM_IDLE, ClientError,
                                ConnectionFailed, Message, Receipt, WorkPlan, _BrokerCalls, _Call, _Consuming,
                                _Endpoint, _failure, _LeaseKeeping, _MultiQueue, _NoAnswer, _NotSent, _plan,
                                _QueueCalls, _Reconnects, _Retries, _SSEParser, _Subscription, _unavailable,
                                _worker_decorator, _Working, _DENIED, _QUEUES, _READY, _SETTINGS_ERRORS,
                                _STATS)

__all__ = ["TxQueue", "TxBroker", "TxConsumption"]

log = Logger(namespace="restmq.client")

#: Twisted's timeouts (beside Python's), which make a failure a RequestTimeout
_TIMEOUTS = (internet_error.TimeoutError,)


def _not_sent_errors() -> Tuple[type[BaseException], ...]:
    from twisted.web._newclient import RequestNotSent, RequestTransmissionFailed
    # a request whose writing failed never reached the broker whole
    return (internet_error.ConnectError, RequestNotSent, RequestTransmissionFailed)


def _no_answer_errors() -> Tuple[type[BaseException], ...]:
    from twisted.web._newclient import ResponseFailed, ResponseNeverReceived
    return (ResponseFailed, ResponseNeverReceived, internet_error.ConnectionLost,
            internet_error.ConnectionDone, defer.CancelledError, OSError)


def _sleep(reactor: Any, seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


class _TxTransport:
    """One client's connection pool, and how it sends a call and waits for the answer
    (:class:`core._Retries` decides what is sent again, as for the blocking client)."""

    def __init__(self, endpoint: _Endpoint, pool: Any, reactor: Any) -> None:
        import treq.client
        from twisted.web.client import Agent, HTTPConnectionPool
        self.endpoint = endpoint
        self.reactor = reactor
        self.owns_pool = pool is None
        if pool is None:
            pool = HTTPConnectionPool(reactor, persistent=True)
            pool.maxPersistentPerHost = MAX_IDLE
            # our own rules decide what may be sent twice (a pop must not be)
            pool.retryAutomatically = False
        self.pool = pool
        agent: Any = Agent(reactor, connectTimeout=endpoint.connect_timeout, pool=pool)
        self.http = treq.client.HTTPClient(agent)
        self._waiting: Set[defer.Deferred] = set()

    def close(self) -> defer.Deferred:
        if self.owns_pool:
            return self.pool.closeCachedConnections()
        return defer.succeed(None)

    def interrupt(self) -> None:
        """Cancel the long-polls in progress."""
        for waiting in list(self._waiting):
            waiting.cancel()

    def _request(self, call: _Call, headers: Optional[Dict[str, str]], stream: bool) -> defer.Deferred:
        endpoint = self.endpoint
        sent: Dict[Any, Any] = endpoint.request_headers(call, headers)
        return self.http.request(call.method, endpoint.origin + endpoint.target(call), data=call.body,
                                 headers=sent, unbuffered=stream)

    async def exchange(self, call: _Call) -> Tuple[int, bytes]:
        import treq
        endpoint = self.endpoint
        expired: List[bool] = []
        requested = self._request(call, None, False)

        def expire() -> None:
            expired.append(True)
            requested.cancel()

        timer = self.reactor.callLater(endpoint.read_timeout(call), expire)
        if call.wait > 0:
            self._waiting.add(requested)
        try:
            response = await requested
            body = await treq.content(response)
        except _not_sent_errors() as exc:
            raise _NotSent(exc) from None
        except _no_answer_errors() as exc:
            if expired:
                raise _NoAnswer(TimeoutError("no answer within %.1f s" % endpoint.read_timeout(call)))
            if isinstance(exc, defer.CancelledError):
                raise
            raise _NoAnswer(exc) from None
        finally:
            self._waiting.discard(requested)
            if timer.active():
                timer.cancel()
        return response.code, body

    async def execute(self, call: _Call) -> Any:
        retries = _Retries(self.endpoint, call, _TIMEOUTS, chain_cause=False)
        while True:
            try:
                status, body = await self.exchange(call)
            except (_NotSent, _NoAnswer) as failed:
                cause: BaseException = retries.unanswered(failed)
            else:
                refusal = retries.retry_after(status, body)
                if refusal is None:
                    return call.parse(status, body)
                cause = refusal
            await _sleep(self.reactor, retries.pause(cause))

    def run(self, call: _Call) -> defer.Deferred:
        return defer.ensureDeferred(self.execute(call))

    async def open_stream(self, call: _Call, headers: Dict[str, str]) -> Any:
        try:
            return await self._request(call, headers, True)
        except _not_sent_errors() + _no_answer_errors() as exc:
            if isinstance(exc, defer.CancelledError):
                raise
            raise _failure(self.endpoint.url, exc, _TIMEOUTS) from None


async def _call_handler(handler: Callable[[Any], Any], argument: Any) -> Any:
    result = handler(argument)
    if inspect.isawaitable(result):
        result = await result
    return result


class TxQueue(_QueueCalls):
    """:class:`Queue` for Twisted: the same methods, each returning a Deferred.

    Handlers and callbacks may return a Deferred or a coroutine; they run in the
    reactor thread, so they must not block.
    """

    def __init__(self, name: str, url: str = DEFAULT_URL, serializer: Any = None,
                 auth: Optional[Tuple[str, str]] = None, token: Optional[str] = None,
                 timeout: float = 10.0, pool: Any = None, reactor: Any = None,
                 connect_timeout: Optional[float] = None, retries: int = 3, backoff: float = 0.1,
                 group: Optional[str] = None, _transport: Optional[_TxTransport] = None) -> None:
        super().__init__(name, url, serializer, auth, token, timeout, connect_timeout, retries, backoff,
                         group)
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self._transport = _transport or _TxTransport(self.endpoint, pool, reactor)
        self.pool = self._transport.pool

    async def _run(self, call: _Call) -> Any:
        return await self._transport.execute(call)

    def _execute(self, call: _Call) -> defer.Deferred:
        return self._transport.run(call)

    def close(self) -> defer.Deferred:
        """Close the idle connections of this client's own pool."""
        return self._transport.close()

    # producing

    def put(self, *messages: Any, ttl: Optional[int] = None, delay: Optional[float] = None,
            idempotency_key: Optional[str] = None, attributes: Optional[Dict[str, str]] = None,
            ordering_key: Optional[str] = None) -> defer.Deferred:
        """See :meth:`Queue.put`; fires with the key or the list of keys."""
        calls = self._put_calls(messages, ttl, delay, idempotency_key, attributes, ordering_key)

        async def run() -> Any:
            return self._put_answer([await self._run(call) for call in calls], len(messages) == 1)

        return defer.ensureDeferred(run())

    # consuming

    async def _pop(self, block: bool, timeout: Optional[float], lease: Optional[float],
                   count: Optional[int] = None, group: Optional[str] = None) -> Any:
        """A pop (``lease`` None) or a reserve: a Message or None, a list with ``count``."""
        deadline = self._pop_plan(block, timeout, self.reactor.seconds())
        while True:
            wait = self._next_wait(deadline, self.reactor.seconds())
            messages = await self._run(self._pop_call(wait, lease, count, group))
            if messages or (deadline is not None and self.reactor.seconds() >= deadline):
                return self._one_or_list(messages, count)

    def get(self, block: bool = False, timeout: Optional[float] = None,
            group: Optional[str] = None) -> defer.Deferred:
        """See :meth:`Queue.get`; fires with the value or None."""
        async def run() -> Any:
            message = await self._pop(block, timeout, None, None, group)
            return None if message is None else message.value

        return defer.ensureDeferred(run())

    def get_message(self, block: bool = False, timeout: Optional[float] = None,
                    group: Optional[str] = None) -> defer.Deferred:
        """Like get(), firing with a Message (or None)."""
        return defer.ensureDeferred(self._pop(block, timeout, None, None, group))

    def reserve(self, lease: Optional[float] = None, count: Optional[int] = None, block: bool = False,
                timeout: Optional[float] = None, group: Optional[str] = None) -> defer.Deferred:
        """See :meth:`Queue.reserve`; fires with a Message (or None), or with a list given ``count``."""
        lease_seconds = lease if lease is not None else 0
        return defer.ensureDeferred(self._pop(block, timeout, lease_seconds, count, group))

    def ack(self, *receipts: Receipt, group: Optional[str] = None) -> defer.Deferred:
        return self._execute(self._settle_call("ack", receipts, group))

    def nack(self, *receipts: Receipt, delay: Optional[float] = None,
             group: Optional[str] = None) -> defer.Deferred:
        return self._execute(self._settle_call("nack", receipts, group, delay=delay))

    def extend(self, *receipts: Receipt, seconds: Optional[float] = None,
               group: Optional[str] = None) -> defer.Deferred:
        return self._execute(self._settle_call("extend", receipts, group, seconds=seconds))

    def consume(self, callback: Optional[Callable[[Any], Any]] = None, ack: bool = False, *,
                timeout: Optional[float] = None, lease: Optional[float] = None, prefetch: int = 1,
                messages: bool = False, group: Optional[str] = None) -> Any:
        """See :meth:`Queue.consume`: the messages of the queue, competing with its
        other consumers, riding out broker restarts.

        With ``callback``: calls it for each value (Message with ``messages``),
        waiting for the Deferred or coroutine it returns; with ``ack`` the message
        is acked when it succeeds and given back when it fails (which ends the
        consumption with that failure). Answers a Deferred that fires (with how
        many messages were consumed) after ``timeout`` idle seconds; cancel it to
        stop. Without ``callback``: a :class:`TxConsumption`, for ``async for``
        (and ``async with`` to ack the last message on a clean exit).
        """
        consumption = TxConsumption(self, ack, timeout, lease, prefetch, messages, self._group(group))
        if callback is None:
            return consumption
        return consumption.run(callback)

    def consume_messages(self, callback: Optional[Callable[[Any], Any]] = None, ack: bool = False,
                         **options: Any) -> Any:
        return self.consume(callback, ack, messages=True, **options)

    def subscribe(self, callback: Callable[[Any], Any], last_id: Optional[str] = None,
                  messages: bool = False, group: Optional[str] = None) -> defer.Deferred:
        """The broadcast stream (see :meth:`Queue.subscribe`): ``callback(value)``
        (``callback(Message)`` with ``messages``) for each message; reconnects with
        ``Last-Event-ID``. Cancel the Deferred to hang up."""
        import treq
        stream = _Subscription(self, last_id, self._group(group))
        current: List[Any] = []

        def gap(data: str) -> None:
            log.warn("Stream of {queue} resumed with a gap: {gap}", queue=self.name, gap=data)

        def deliver(parser: _SSEParser, chunk: bytes) -> None:
            for message in stream.messages(parser, chunk, gap):
                callback(message if messages else message.value)

        async def run() -> None:
            while True:
                call, headers, parser = stream.connect()
                try:
                    response = await self._transport.open_stream(call, headers)
                    if response.code != 200:
                        refusal = stream.refusal(response.code, await treq.content(response))
                        log.warn("Stream of {queue} refused ({error}); reconnecting", queue=self.name,
                                 error=refusal)
                    else:
                        stream.answered()
                        body = _StreamBody(lambda chunk: deliver(parser, chunk), self.reactor)
                        current[:] = [body]
                        response.deliverBody(body)
                        try:
                            await body.finished
                        except _no_answer_errors() as exc:
                            if isinstance(exc, defer.CancelledError):
                                raise
                            log.warn("Stream of {queue} broke ({error}); reconnecting",
                                     queue=self.name, error=exc)
                except ConnectionFailed as exc:
                    log.warn("Stream of {queue}: {error}; reconnecting", queue=self.name, error=exc)
                await _sleep(self.reactor, stream.pause())

        def hang_up(failure: Failure) -> Failure:
            for body in current:
                body.hang_up()
            return failure

        running = defer.ensureDeferred(run())
        running.addErrback(hang_up)
        return running

    def work(self, handler: Callable[[Message], Any], *, lease: Optional[float] = None,
             concurrency: int = 1, idle_timeout: Optional[float] = None, limit: Optional[int] = None,
             retry_delay: float = 1.0, backoff: float = 2.0, max_retry_delay: float = 300.0,
             prefetch: int = 1, group: Optional[str] = None) -> defer.Deferred:
        """See :meth:`Queue.work`; fires with how many messages were handled.

        ``concurrency`` handlers run at once in the reactor (the handler returns a
        Deferred or is a coroutine function for that to overlap). When the reactor
        shuts down (SIGTERM, Ctrl-C) the running handlers finish and are acked
        before it stops. Cancelling the Deferred stops the loops the same way
        (it fails with CancelledError at once).
        """
        plan = _plan(lease, concurrency, idle_timeout, limit, retry_delay, backoff, max_retry_delay, prefetch)
        return _TxWorker(self, handler, plan, self._group(group)).start()

    def worker(self, handler: Optional[Callable[[Message], Any]] = None, **options: Any) -> Any:
        """``@queue.worker`` / ``@queue.worker(limit=10)``: calling the decorated
        function runs :meth:`work` with it (a Deferred)."""
        return _worker_decorator(self, handler, options)

    async def _lease_seconds(self, group: Optional[str] = None) -> float:
        try:
            return float((await self._run(self._settings_call(None, group)))["lease_seconds"])
        except _SETTINGS_ERRORS as exc:
            log.warn("Could not read the settings of {queue} ({error}); assuming leases of {lease} s",
                     queue=self.name, error=exc, lease=DEFAULT_LEASE)
            return DEFAULT_LEASE

    # dead letters and settings

    def dead(self, count: int = 10, group: Optional[str] = None) -> defer.Deferred:
        """Fires with the newest dead letters, newest first (:class:`DeadLetter`)."""
        return self._execute(self._dead_call(count, group))

    def redrive(self, count: Optional[int] = None, group: Optional[str] = None) -> defer.Deferred:
        """Fires with how many dead letters went back to the queue."""
        return self._execute(self._redrive_call(count, group))

    def settings(self, group: Optional[str] = None) -> defer.Deferred:
        return self._execute(self._settings_call(None, group))

    def configure(self, group: Optional[str] = None, **settings: Any) -> defer.Deferred:
        return self._execute(self._settings_call(settings, group))

    # consumer groups and request/reply

    def create_group(self, name: str) -> defer.Deferred:
        """See :meth:`Queue.create_group`; fires with True when the group is new."""
        return self._execute(self._group_call("POST", name))

    def delete_group(self, name: str) -> defer.Deferred:
        return self._execute(self._group_call("DELETE", name))

    def groups(self) -> defer.Deferred:
        return self._execute(self._group_call("GET"))

    def call(self, message: Any, timeout: float = 30.0, attributes: Optional[Dict[str, str]] = None,
             ordering_key: Optional[str] = None) -> defer.Deferred:
        """See :meth:`Queue.call`; fires with the reply (a Message)."""
        return self._execute(self._call_call(message, timeout, attributes, ordering_key))

    def _reply(self, request_id: str, body: Any, attributes: Optional[Dict[str, str]]) -> defer.Deferred:
        return self._execute(self._reply_call(request_id, body, attributes))

    # views and control

    def last(self, count: int = 10, group: Optional[str] = None) -> defer.Deferred:
        return self._execute(self._last_call(count, group))

    def stats(self) -> defer.Deferred:
        return self._execute(self._stats_call())

    def purge(self) -> defer.Deferred:
        return self._execute(self._purge_call())

    clear = purge

    def get_policy(self) -> defer.Deferred:
        return self._execute(self._field_call("p", "policy", "value"))

    def set_policy(self, policy: str) -> defer.Deferred:
        return self._execute(self._field_call("p", "policy", "value", policy))

    def status(self) -> defer.Deferred:
        return self._execute(self._field_call("control", "status", "status"))

    def pause(self) -> defer.Deferred:
        return self._execute(self._field_call("control", "status", "status", "stop"))

    def resume(self) -> defer.Deferred:
        return self._execute(self._field_call("control", "status", "status", "start"))


class _TxLeaseKeeper(_LeaseKeeping["TxQueue"]):
    """Extends the lease of each message being handled every third of the lease."""

    def __init__(self, queue: TxQueue, lease: float, group: Optional[str] = None) -> None:
        super().__init__(queue, lease, group)
        self._timers: Dict[str, Any] = {}

    def watch(self, message: Message) -> None:
        if message.receipt:
            self._schedule(message.receipt)

    def _schedule(self, receipt: str) -> None:
        self._timers[receipt] = self.queue.reactor.callLater(self.every, self._extend, receipt)

    def _extend(self, receipt: str) -> None:
        if receipt not in self._timers:
            return
        self._schedule(receipt)
        extended = self.queue.extend(receipt, seconds=self.lease, group=self.group or "")

        def failed(failure: Any) -> None:
            exc = failure.value
            log.warn("Could not extend the lease of {receipt}: {error}", receipt=receipt, error=exc)
            if isinstance(exc, ClientError) and exc.code == "lease_lost":
                self.forget_receipt(receipt)

        extended.addErrback(failed)

    def forget(self, message: Message) -> None:
        if message.receipt:
            self.forget_receipt(message.receipt)

    def forget_receipt(self, receipt: str) -> None:
        timer = self._timers.pop(receipt, None)
        if timer is not None and timer.active():
            timer.cancel()

    def close(self) -> None:
        for receipt in list(self._timers):
            self.forget_receipt(receipt)


class TxConsumption(_Consuming["TxQueue"]):
    """What :meth:`TxQueue.consume` answers without a callback: ``async for value in
    consumption``; ``async with`` acks the last message on a clean exit and gives
    it back on an exception. :meth:`close` gives back what is still held."""

    #: how many messages it took
    count = 0
    _keeper: Optional[_TxLeaseKeeper] = None
    _polling: Optional[defer.Deferred] = None

    def _now(self) -> float:
        return self.queue.reactor.seconds()

    def __aiter__(self) -> "TxConsumption":
        return self

    async def __anext__(self) -> Any:
        message = await self.next_message()
        if message is None:
            raise StopAsyncIteration
        return message if self.messages else message.value

    async def __aenter__(self) -> "TxConsumption":
        return self

    async def __aexit__(self, kind: Any, value: Any, traceback: Any) -> None:
        await self.close(done=kind is None)

    async def next_message(self) -> Optional[Message]:
        """Ack the message the loop was on (with ``ack``) and take the next; None
        when ``timeout`` passed with nothing (the consumption is then closed)."""
        if self._closed:
            return None
        await self._settle_current(True)
        message = await self._next()
        if message is None:
            await self.close()
            return None
        self.count += 1
        if self.ack:
            self._current = message
            if self._keeper is None:
                self._keeper = _TxLeaseKeeper(self.queue, await self._length(), self.group)
            self._keeper.watch(message)
        return message

    async def _length(self) -> float:
        """The lease of the messages (the queue's, read once, when not given)."""
        if self._lease_length is None:
            self._lease_length = await self.queue._lease_seconds(self.group or "")
        return self._lease_length

    async def _next(self) -> Optional[Message]:
        queue = self.queue
        started = self._now()
        reconnects = _Reconnects()
        while not self._closed:
            message = self._prefetched()
            if message is not None:
                return message
            wait = self._poll_wait(started)
            if wait is None:
                return None
            sent = self._now()
            try:
                self._polling = queue._transport.run(self._poll_call(wait))
                taken = await self._polling
                reconnects.answered()
            except (ClientError, ConnectionFailed) as exc:
                if not _unavailable(exc):
                    raise
                log.warn("Consumer of {queue}: {error}; reconnecting", queue=queue.name, error=exc)
                await _sleep(queue.reactor, reconnects.pause())
                continue
            finally:
                self._polling = None
            if len(taken) > 1:
                self._hold(taken, sent, await self._length())
            if taken:
                return taken[0]
        return None

    async def _settle_current(self, done: bool) -> None:
        current = self._let_go()
        if current is None:
            return
        try:
            if done:
                await self.queue.ack(current)
            else:
                await self.queue.nack(current)
        except (ClientError, ConnectionFailed) as exc:
            log.warn("Could not {action} {key}: {error} (its lease will end and it comes back)",
                     action="ack" if done else "give back", key=current.key, error=exc)

    def close(self, done: bool = False) -> defer.Deferred:
        """Stop: give back the current message (ack it with ``done``) and the prefetched ones."""
        async def run() -> None:
            if self._closed:
                return
            self._closed = True
            if self._polling is not None:
                self._polling.cancel()
            await self._settle_current(done)
            pending, self._pending = self._pending, []
            if pending:
                try:
                    await self.queue.nack(*[message for message, _ in pending])
                except (ClientError, ConnectionFailed) as exc:
                    log.warn("Could not give back {count} prefetched message(s): {error}",
                             count=len(pending), error=exc)
            if self._keeper is not None:
                self._keeper.close()

        return defer.ensureDeferred(run())

    def run(self, callback: Callable[[Any], Any]) -> defer.Deferred:
        """Call ``callback`` for each message until ``timeout`` or cancellation."""
        async def loop() -> int:
            try:
                while True:
                    message = await self.next_message()
                    if message is None:
                        return self.count
                    try:
                        await _call_handler(callback, message if self.messages else message.value)
                    except defer.CancelledError:
                        raise
                    except Exception:
                        await self.close(done=False)
                        raise
            except defer.CancelledError:
                await self.close(done=False)
                raise

        return defer.ensureDeferred(loop())


class _TxWorker(_Working["TxQueue"]):
    """One run of :meth:`TxQueue.work`."""

    def __init__(self, queue: TxQueue, handler: Callable[[Message], Any], plan: WorkPlan,
                 group: Optional[str] = None) -> None:
        self.reactor = queue.reactor
        super().__init__(queue, handler, plan, group)
        self.stopping = False
        self._keeper: Optional[_TxLeaseKeeper] = None
        self._polls: Set[defer.Deferred] = set()
        self._loops: Optional[defer.Deferred] = None

    def _now(self) -> float:
        return self.reactor.seconds()

    def start(self) -> defer.Deferred:
        # cancelling fails ``done`` at once; the loops still stop after their current messages
        done: defer.Deferred = defer.Deferred(self._cancelled)
        running = defer.ensureDeferred(self._run())

        def finished(result: Any) -> None:
            if done.called:
                return None
            if isinstance(result, Failure):
                done.errback(result)
            else:
                done.callback(result)

        running.addBoth(finished)
        return done

    async def _run(self) -> int:
        queue = self.queue
        try:
            self._configure(await queue._run(queue._settings_call(None, self.group or "")))
        except _SETTINGS_ERRORS as exc:
            if isinstance(exc, ClientError) and exc.status in _DENIED:
                raise
            log.warn("Could not read the settings of {queue} ({error}); assuming leases of {lease} s",
                     queue=queue.name, error=exc, lease=DEFAULT_LEASE)
        self._keeper = _TxLeaseKeeper(queue, self._lease_or_default(), self.group)
        trigger = self.reactor.addSystemEventTrigger("before", "shutdown", self.stop)
        try:
            loops = [defer.ensureDeferred(self._loop()) for _ in range(self.plan.concurrency)]
            self._loops = defer.gatherResults(loops, consumeErrors=True)
            try:
                await self._loops
            except defer.FirstError as failed:
                failed.subFailure.raiseException()
        finally:
            self.reactor.removeSystemEventTrigger(trigger)
            self._keeper.close()
        return self.processed

    def _cancelled(self, _: Any) -> None:
        self.stop()

    def stop(self) -> defer.Deferred:
        """Let the running handlers finish, then stop; fires when they are done."""
        self.stopping = True
        for poll in list(self._polls):
            poll.cancel()
        if self._loops is None:
            return defer.succeed(None)
        finished: defer.Deferred = defer.Deferred()

        def done(result: Any) -> Any:
            if not finished.called:
                finished.callback(None)
            return result

        self._loops.addBoth(done)
        return finished

    async def _loop(self) -> None:
        queue = self.queue
        reconnects = _Reconnects()
        while not self.stopping:
            count = self._claim()
            if not count:
                return
            sent = self.reactor.seconds()
            poll = queue._transport.run(self._poll_call(count))
            self._polls.add(poll)
            try:
                batch: List[Message] = await poll
                reconnects.answered()
            except (ClientError, ConnectionFailed, defer.CancelledError) as exc:
                self._unclaim(count)
                if self.stopping:
                    return
                if not _unavailable(exc):
                    raise
                log.warn("Worker of {queue}: {error}; reconnecting", queue=queue.name, error=exc)
                await _sleep(self.reactor, reconnects.pause())
                continue
            finally:
                self._polls.discard(poll)
            self._unclaim(count - len(batch))
            if not batch:
                if self._idle_over():
                    return
                continue
            for index, message in enumerate(batch):
                if self.stopping:
                    await self._give_back(batch[index:])
                    self._unclaim(len(batch) - index)
                    return
                if self._too_late(index, sent):
                    self._unclaim(1)
                    continue
                await self._handle(message)

    async def _handle(self, message: Message) -> None:
        queue = self.queue
        keeper = self._keeper
        assert keeper is not None
        keeper.watch(message)
        self._started()
        try:
            await _call_handler(self.handler, message)
        except Exception:
            keeper.forget(message)
            delay = self.plan.retry_delay_for(message.deliveries)
            if self._last_delivery(message):
                log.failure("Handler failed on {key} of {queue} (delivery {deliveries} of {max_receives}): "
                            "to the dead letters", key=message.key, queue=queue.name,
                            deliveries=message.deliveries, max_receives=self._max_receives)
            else:
                log.failure("Handler failed on {key} of {queue} (delivery {deliveries}); retry in {delay} s",
                            key=message.key, queue=queue.name, deliveries=message.deliveries,
                            delay=round(delay, 3))
            await self._settle("nack", message, delay)
        else:
            keeper.forget(message)
            await self._settle("ack", message, None)
        finally:
            self._count()

    async def _settle(self, action: str, message: Message, delay: Optional[float]) -> None:
        try:
            if action == "ack":
                await self.queue.ack(message)
            else:
                await self.queue.nack(message, delay=delay or None)
        except ClientError as exc:
            if exc.code == "lease_lost":
                log.warn("The lease of {key} ran out before its {action}: it went to another consumer "
                         "(it may be handled twice)", key=message.key, action=action)
            else:
                log.warn("Could not {action} {key}: {error}", action=action, key=message.key, error=exc)
        except ConnectionFailed as exc:
            log.warn("Could not {action} {key}: {error} (its lease will end and it comes back)",
                     action=action, key=message.key, error=exc)

    async def _give_back(self, messages: List[Message]) -> None:
        try:
            await self.queue.nack(*messages)
        except (ClientError, ConnectionFailed) as exc:
            log.warn("Could not give back {count} message(s): {error}", count=len(messages), error=exc)


class _StreamBody:
    """Hands each chunk of a streamed response body to ``deliver``; ``finished``
    fires when the stream ends, and cancelling it hangs up."""

    def __init__(self, deliver: Callable[[bytes], None], reactor: Any = None) -> None:
        self.deliver = deliver
        self.transport: Any = None
        self.finished: Any = defer.Deferred(self._cancelled)
        self._reactor = reactor
        self._silence: Any = None

    def _cancelled(self, _: Any) -> None:
        self.hang_up()

    def hang_up(self) -> None:
        if self._silence is not None and self._silence.active():
            self._silence.cancel()
        if self.transport is not None:
            self.transport.stopProducing()

    def _listen(self) -> None:
        # the broker's heartbeats keep a live stream talking; silence means it is gone
        if self._reactor is None:
            return
        if self._silence is not None and self._silence.active():
            self._silence.reset(STREAM_IDLE)
        else:
            self._silence = self._reactor.callLater(STREAM_IDLE, self._silent)

    def _silent(self) -> None:
        if not self.finished.called:
            silent = internet_error.ConnectionLost("the stream was silent for %.0f s" % STREAM_IDLE)
            self.finished.errback(silent)
        if self.transport is not None:
            self.transport.stopProducing()

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport
        self._listen()

    def dataReceived(self, data: bytes) -> None:
        self._listen()
        self.deliver(data)

    def connectionLost(self, reason: Any) -> None:
        from twisted.web.client import ResponseDone
        from twisted.web.http import PotentialDataLoss
        if self._silence is not None and self._silence.active():
            self._silence.cancel()
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(None)
        else:
            self.finished.errback(reason)


class TxBroker(_BrokerCalls["TxQueue"]):
    """:class:`Broker` for Twisted (Deferreds); ``broker.queue(name)`` shares its connections."""

    def __init__(self, url: str = DEFAULT_URL, auth: Optional[Tuple[str, str]] = None,
                 token: Optional[str] = None, timeout: float = 10.0, pool: Any = None,
                 reactor: Any = None, connect_timeout: Optional[float] = None, retries: int = 3,
                 backoff: float = 0.1, serializer: Any = None) -> None:
        super().__init__(url, auth, token, timeout, connect_timeout, retries, backoff, serializer)
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self._transport = _TxTransport(self.endpoint, pool, reactor)
        self.pool = self._transport.pool

    def queue(self, name: str, serializer: Any = None, group: Optional[str] = None) -> TxQueue:
        """A :class:`TxQueue` sharing this broker's connections."""
        return TxQueue(name, group=group, **self._client_options(serializer))

    def _client_options(self, serializer: Any = None) -> Dict[str, Any]:
        return dict(super()._client_options(serializer), reactor=self.reactor)

    def take(self, queues: List[str], count: Optional[int] = None, block: bool = False,
             timeout: Optional[float] = None, group: Optional[str] = None) -> defer.Deferred:
        """See :meth:`Broker.take`."""
        async def run() -> Any:
            return await _TxTake(self, queues, group)._pop(block, timeout, None, count)

        return defer.ensureDeferred(run())

    def reserve(self, queues: List[str], lease: Optional[float] = None, count: Optional[int] = None,
                block: bool = False, timeout: Optional[float] = None,
                group: Optional[str] = None) -> defer.Deferred:
        """See :meth:`Broker.reserve`."""
        async def run() -> Any:
            lease_seconds = lease if lease is not None else 0
            return await _TxTake(self, queues, group)._pop(block, timeout, lease_seconds, count)

        return defer.ensureDeferred(run())

    def subscribe(self, queues: List[str], callback: Callable[[Message], Any],
                  last_id: Optional[str] = None, group: Optional[str] = None) -> defer.Deferred:
        """See :meth:`Broker.subscribe`: ``callback(Message)``; cancel to hang up."""
        return _TxTake(self, queues, group).subscribe(callback, last_id, messages=True)

    def queues(self) -> defer.Deferred:
        return self._transport.run(_QUEUES)

    def stats(self) -> defer.Deferred:
        return self._transport.run(_STATS)

    def ready(self) -> defer.Deferred:
        return self._transport.run(_READY)

    def close(self) -> defer.Deferred:
        return self._transport.close()


class _TxTake(_MultiQueue, TxQueue):
    """``/take?queues=`` and ``/sse/?queues=`` for Twisted (see blocking._Take)."""
