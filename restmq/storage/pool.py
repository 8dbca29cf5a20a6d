"""The txredisapi connection pool behind QueueStore and the pub/sub connection.

A request never waits for a connection that is not there: with no live
connection it fails at once with ``BackendUnavailable`` (at startup it waits
up to ``connect_timeout`` for the first one). Replies are bounded by
txredisapi's ``replyTimeout``; the pool reconnects by itself.
"""

from __future__ import annotations

from typing import Any, Optional

import txredisapi
from twisted.internet import defer, task
from twisted.logger import Logger

from restmq.config import RedisTarget
from restmq.errors import BackendUnavailable
from restmq.storage.fastproto import fast_protocol, overdue

__all__ = ["RedisPool", "connect_subscriber"]

# txredisapi backs off up to 10 s between reconnection attempts; a broker should
# notice a returning Redis quickly.
_MAX_RECONNECT_DELAY = 1.0


class RedisPool:
    """A lazily connected pool of ``pool_size`` connections to ``target``."""

    log = Logger()

    def __init__(self, target: RedisTarget, pool_size: int, connect_timeout: float,
                 reply_timeout: float, clock: Any) -> None:
        self.target = target
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        self.clock = clock
        self._handler: Any = None
        self._factory: Any = None
        self._next = 0
        self._was_connected = False
        self._watchdog: Optional[task.LoopingCall] = None

    def start(self) -> None:
        """Start connecting (returns at once; connections come up in the background)."""
        # replies are timed by the watchdog below, not by a timer per command
        self._handler = _connect(self.target, self.pool_size, self.connect_timeout,
                                 None, txredisapi)
        self._factory = self._handler._factory
        # connections are built on a later reactor turn, so this applies to all of them
        self._factory.protocol = fast_protocol(self._factory.protocol)
        self._factory.maxDelay = _MAX_RECONNECT_DELAY
        self._factory.initialDelay = min(self._factory.initialDelay, _MAX_RECONNECT_DELAY / 4)
        self._watchdog = task.LoopingCall(self._check_replies)
        self._watchdog.clock = self.clock
        self._watchdog.start(min(0.25, self.reply_timeout / 4), now=False)

    def _check_replies(self) -> None:
        """Drop a connection whose oldest command waits longer than reply_timeout:
        txredisapi then fails every command pending on it (BackendUnavailable)."""
        import time
        now = time.monotonic()
        for conn in list(self._factory.pool if self._factory else ()):
            if conn.transport is not None and overdue(conn, now, self.reply_timeout):
                self.log.warn("Redis did not answer within {timeout} s; dropping a connection",
                              timeout=self.reply_timeout)
                conn.transport.abortConnection()

    def stop(self) -> defer.Deferred:
        """Close every connection; resolves when they are closed."""
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        if self._factory is None:
            return defer.succeed(None)
        factory, self._factory, self._handler = self._factory, None, None
        return factory.disconnect()

    @property
    def connected(self) -> bool:
        return self._factory is not None and self._factory.size > 0

    def connection(self) -> defer.Deferred:
        """A live connection, round robin; fails fast when there is none.

        :raises BackendUnavailable: (in the Deferred) Redis is not connected.
        """
        factory = self._factory
        if factory is None:
            return defer.fail(BackendUnavailable("RestMQ is not connected to Redis"))
        live = factory.connectionQueue.pending
        while live:
            self._next = (self._next + 1) % len(live)
            conn = live[self._next]
            if conn.connected:
                self._was_connected = True
                return defer.succeed(conn)
            live.remove(conn)
        if self._was_connected:
            return defer.fail(BackendUnavailable("Redis is unreachable"))
        return self._first_connection(factory)

    def _first_connection(self, factory: Any) -> defer.Deferred:
        # At startup the pool is still connecting: wait for it, but not forever.
        result: defer.Deferred = defer.Deferred()

        def ready(conn: Any) -> None:
            if not result.called:
                timer.cancel()
                result.callback(conn)

        def too_late() -> None:
            if not result.called:
                result.errback(BackendUnavailable("no connection to Redis within %.1f s" % self.connect_timeout))

        timer = self.clock.callLater(self.connect_timeout, too_late)
        factory.connectionQueue.peek().addCallback(ready)
        return result


def _connect(target: RedisTarget, pool_size: int, connect_timeout: float,
             reply_timeout: float, api: Any, subscriber: bool = False) -> Any:
    common = dict(dbid=target.db, password=target.password, connectTimeout=connect_timeout,
                  replyTimeout=None if subscriber else reply_timeout, convertNumbers=False)
    if target.kind == "unix":
        return api.lazyUnixConnectionPool(target.path, poolsize=pool_size, **common)
    if target.kind == "sentinel":
        sentinel = api.Sentinel(list(target.sentinels))
        sentinel.discovery_timeout = connect_timeout
        return sentinel.master_for(target.master_name, poolsize=pool_size, **common)
    return api.lazyConnectionPool(target.host, target.port, poolsize=pool_size, **common)


def connect_subscriber(target: RedisTarget, protocol_class: type, connect_timeout: float) -> Any:
    """A reconnecting pub/sub connection built from ``protocol_class``.

    Returns the txredisapi factory; its ``protocol`` instances are created
    anew on every reconnection (``connectionMade`` resubscribes).
    """
    factory = txredisapi.SubscriberFactory(isLazy=True)
    factory.protocol = protocol_class
    factory.dbid = target.db
    factory.password = target.password
    factory.convertNumbers = False
    factory.maxDelay = _MAX_RECONNECT_DELAY
    factory.initialDelay = _MAX_RECONNECT_DELAY / 4
    if target.kind == "unix":
        from twisted.internet import reactor
        from twisted.internet.endpoints import UNIXClientEndpoint
        endpoint = UNIXClientEndpoint(reactor, target.path, timeout=connect_timeout)
    elif target.kind == "sentinel":
        sentinel = txredisapi.Sentinel(list(target.sentinels))
        factory = txredisapi.SentinelConnectionFactory(
            sentinel_manager=sentinel, service_name=target.master_name, is_master=True,
            uuid=None, dbid=target.db, poolsize=1, isLazy=True, password=target.password,
            convertNumbers=False)
        factory.protocol = protocol_class
        factory.maxDelay = _MAX_RECONNECT_DELAY
        endpoint = txredisapi._SentinelEndpoint(factory)
    else:
        endpoint = txredisapi._makeEndpoint(target.host, target.port, connect_timeout)
    factory.startConnecting(endpoint)
    return factory


def describe(target: Optional[RedisTarget]) -> str:
    return target.describe() if target else "embedded"
