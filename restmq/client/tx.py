"""The Twisted client: :class:`TxQueue` and :class:`TxBroker`, returning Deferreds (on treq,
``pip install restmq[twisted]``)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import orjson

from restmq.client.core import (DEFAULT_URL, Message, Receipt, _Call, _Endpoint, _error, _QueueCalls,
                                _SSEParser, _QUEUES, _READY, _STATS)

__all__ = ["TxQueue", "TxBroker"]


def _tx_request(endpoint: _Endpoint, pool: Any, reactor: Any, call: _Call,
                headers: Optional[Dict[str, str]] = None, stream: bool = False):
    import treq
    sent: Dict[Any, Any] = endpoint.request_headers(call, headers)
    return treq.request(call.method, endpoint.url + call.path, params=list(call.query),
                        data=call.body, headers=sent,
                        pool=pool, reactor=reactor, unbuffered=stream,
                        timeout=None if stream else endpoint.timeout + call.wait)


async def _tx_run(endpoint: _Endpoint, pool: Any, reactor: Any, call: _Call) -> Any:
    import treq
    response = await _tx_request(endpoint, pool, reactor, call)
    return call.parse(response.code, await treq.content(response))


class TxQueue(_QueueCalls):
    """:class:`Queue` for Twisted: the same methods, each returning a Deferred (on treq)."""

    def __init__(self, name: str, url: str = DEFAULT_URL, serializer: Any = None,
                 auth: Optional[Tuple[str, str]] = None, token: Optional[str] = None,
                 timeout: float = 10.0, pool: Any = None, reactor: Any = None) -> None:
        super().__init__(name, url, serializer, auth, token, timeout)
        self.pool = pool
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor

    async def _run(self, call: _Call) -> Any:
        return await _tx_run(self.endpoint, self.pool, self.reactor, call)

    def _execute(self, call: _Call):
        from twisted.internet import defer
        return defer.ensureDeferred(self._run(call))

    def put(self, *messages: Any, ttl: Optional[int] = None, delay: Optional[float] = None):
        """See :meth:`Queue.put`; fires with the key or the list of keys."""
        from twisted.internet import defer
        calls = self._put_calls(messages, ttl, delay)

        async def run() -> Any:
            if len(messages) == 1:
                return await self._run(calls[0])
            keys: List[str] = []
            for call in calls:
                keys += await self._run(call)
            return keys

        return defer.ensureDeferred(run())

    async def _pop(self, block: bool, timeout: Optional[float], lease: Optional[float]) -> Optional[Message]:
        deadline = self._pop_plan(block, timeout, self.reactor.seconds())
        while True:
            wait = self._next_wait(deadline, self.reactor.seconds())
            message = await self._run(self._pop_call(wait, lease))
            if message is not None or (deadline is not None and self.reactor.seconds() >= deadline):
                return message

    def get(self, block: bool = False, timeout: Optional[float] = None):
        """See :meth:`Queue.get`; fires with the value or None."""
        from twisted.internet import defer

        async def run() -> Any:
            message = await self._pop(block, timeout, None)
            return None if message is None else message.value

        return defer.ensureDeferred(run())

    def get_message(self, block: bool = False, timeout: Optional[float] = None):
        """Like get(), firing with a Message (or None)."""
        from twisted.internet import defer
        return defer.ensureDeferred(self._pop(block, timeout, None))

    def reserve(self, lease: Optional[float] = None, block: bool = False, timeout: Optional[float] = None):
        """See :meth:`Queue.reserve`; fires with a Message (with its receipt) or None."""
        from twisted.internet import defer
        return defer.ensureDeferred(self._pop(block, timeout, lease if lease is not None else 0))

    def ack(self, *receipts: Receipt):
        return self._execute(self._settle_call("ack", receipts))

    def nack(self, *receipts: Receipt, delay: Optional[float] = None):
        return self._execute(self._settle_call("nack", receipts, delay=delay))

    def extend(self, *receipts: Receipt, seconds: Optional[float] = None):
        return self._execute(self._settle_call("extend", receipts, seconds=seconds))

    def consume(self, callback: Callable[[Any], Any], last_id: Optional[str] = None,
                messages: bool = False):
        """Call ``callback(value)`` for each streamed message (``callback(Message)``
        with ``messages=True``). The Deferred fires when the broker ends the stream;
        cancel it to disconnect."""
        from twisted.internet import defer
        import treq
        call, headers = self._stream_call(last_id)
        parser = _SSEParser()

        def deliver(chunk: bytes) -> None:
            for event, _, data in parser.feed(chunk):
                if event == "message":
                    message = self._message(orjson.loads(data))
                    callback(message if messages else message.value)

        async def run() -> None:
            response = await _tx_request(self.endpoint, self.pool, self.reactor, call, headers, stream=True)
            if response.code != 200:
                raise _error(response.code, await treq.content(response))
            body = _StreamBody(deliver)
            response.deliverBody(body)
            # cancelling the Deferred that consume() returned lands here and hangs up
            await body.finished

        return defer.ensureDeferred(run())

    def last(self, count: int = 10):
        return self._execute(self._last_call(count))

    def stats(self):
        return self._execute(self._stats_call())

    def purge(self):
        return self._execute(self._purge_call())

    clear = purge

    def get_policy(self):
        return self._execute(self._field_call("p", "policy", "value"))

    def set_policy(self, policy: str):
        return self._execute(self._field_call("p", "policy", "value", policy))

    def status(self):
        return self._execute(self._field_call("control", "status", "status"))

    def pause(self):
        return self._execute(self._field_call("control", "status", "status", "stop"))

    def resume(self):
        return self._execute(self._field_call("control", "status", "status", "start"))


class _StreamBody:
    """Hands each chunk of a streamed response body to ``deliver``; ``finished``
    fires when the stream ends, and cancelling it hangs up."""

    def __init__(self, deliver: Callable[[bytes], None]) -> None:
        from twisted.internet import defer
        self.deliver = deliver
        self.transport: Any = None
        self.finished: Any = defer.Deferred(self._hang_up)

    def _hang_up(self, _: Any) -> None:
        if self.transport is not None:
            self.transport.stopProducing()

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def dataReceived(self, data: bytes) -> None:
        self.deliver(data)

    def connectionLost(self, reason: Any) -> None:
        from twisted.web.client import ResponseDone
        from twisted.web.http import PotentialDataLoss
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(None)
        else:
            self.finished.errback(reason)


class TxBroker:
    """:class:`Broker` for Twisted (Deferreds, on treq)."""

    def __init__(self, url: str = DEFAULT_URL, auth: Optional[Tuple[str, str]] = None,
                 token: Optional[str] = None, timeout: float = 10.0, pool: Any = None,
                 reactor: Any = None) -> None:
        self.endpoint = _Endpoint(url, auth, token, timeout)
        self.pool = pool
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor

    def _execute(self, call: _Call):
        from twisted.internet import defer
        return defer.ensureDeferred(_tx_run(self.endpoint, self.pool, self.reactor, call))

    def queues(self):
        return self._execute(_QUEUES)

    def stats(self):
        return self._execute(_STATS)

    def ready(self):
        return self._execute(_READY)
