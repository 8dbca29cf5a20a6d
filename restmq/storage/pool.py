"""The txredisapi connection pool behind QueueStore and the pub/sub connection.

A request never waits for a connection that is not there: with no live
connection it fails at once with ``BackendUnavailable`` (at startup it waits
up to ``connect_timeout`` for the first one). Replies are bounded by
txredisapi's ``replyTimeout``; the pool reconnects by itself. With Sentinel
every (re)connection asks the sentinels for the master and checks the role of
what it reached, and a ``+switch-master`` announcement drops the connections
at once, so pool and pub/sub connection follow a failover within a moment.
"""

from __future__ import annotations

import zlib
from typing import Any, Dict, Optional, cast

import txredisapi
from twisted.application.internet import ClientService
from twisted.internet import defer, task
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import ILogObserver, Logger, globalLogPublisher
from zope.interface import implementer, provider

from restmq.config import RedisTarget
from restmq.errors import BackendUnavailable
from restmq.storage.fastproto import fast_protocol, overdue

__all__ = ["RedisPool", "connect_subscriber"]

log = Logger()

# txredisapi backs off up to 10 s between reconnection attempts; a broker should
# notice a returning Redis quickly.
_MAX_RECONNECT_DELAY = 1.0
#: seconds between two "still unreachable" reminders
REMINDER_INTERVAL = 30.0


@provider(ILogObserver)
def _drop_retry_lines(event: Dict[str, Any]) -> None:
    # every connection of every pool says "Scheduling retry N to connect ..." at
    # each attempt, a dozen lines a second that never say why; RedisPool reports
    # the outage itself, once, naming the target and the error
    if not str(event.get("log_format", "")).startswith("Scheduling retry"):
        globalLogPublisher(event)


@implementer(IStreamClientEndpoint)
class _RecordingEndpoint:
    """An endpoint that remembers, on the txredisapi factory, why the last attempt failed."""

    def __init__(self, endpoint: Any, factory: Any) -> None:
        self.endpoint = endpoint
        self.factory = factory

    def connect(self, protocol_factory: Any) -> defer.Deferred:
        attempt = self.endpoint.connect(protocol_factory)

        def failed(failure: Any) -> Any:
            self.factory.restmq_last_error = failure.getErrorMessage() or failure.type.__name__
            return failure

        return attempt.addErrback(failed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.endpoint, name)


class _QuietClientService(ClientService):
    """txredisapi's reconnecting connection, without its per-attempt log lines."""

    _log = Logger(namespace="txredisapi.connection", observer=cast(ILogObserver, _drop_retry_lines))

    def __init__(self, endpoint: Any, factory: Any, *args: Any, **kwargs: Any) -> None:
        redis_factory = getattr(factory, "factory", factory)
        recording = cast(IStreamClientEndpoint, _RecordingEndpoint(endpoint, redis_factory))
        super().__init__(recording, factory, *args, **kwargs)


# txredisapi builds each connection with the ClientService of its module
txredisapi.ClientService = _QuietClientService  # type: ignore[misc]


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
        self._started_at = 0.0
        # outage bookkeeping for the log: since when Redis is away, when it was last said
        self._down_since: Optional[float] = None
        self._reminded_at = 0.0
        self._reported = False

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
        self._started_at = self.clock.seconds()
        self._down_since = self._started_at
        self._watchdog = task.LoopingCall(self._check_replies)
        self._watchdog.clock = self.clock
        self._watchdog.start(min(0.25, self.reply_timeout / 4), now=False)

    def _report(self) -> None:
        """Say when Redis is unreachable: one warning naming the target and the
        error (once connect_timeout has passed), a reminder every REMINDER_INTERVAL,
        one line when it answers again."""
        now = self.clock.seconds()
        target = self.target.describe()
        if self.connected:
            if self._down_since is not None:
                if self._reported:
                    self.log.info("Redis at {target} is reachable again after {seconds:.0f} s",
                                  target=target, seconds=now - self._down_since)
                else:
                    self.log.info("Connected to Redis at {target}", target=target)
            self._down_since = None
            self._reported = False
            return
        if self._down_since is None:
            self._down_since = now
        error = getattr(self._factory, "restmq_last_error", None) or "no connection"
        if not self._reported:
            if now - self._down_since >= self.connect_timeout:
                self._reported = True
                self._reminded_at = now
                self.log.warn("Redis at {target} is unreachable ({error}); retrying every "
                              "{delay:.0f} s, requests answer 503 until it answers",
                              target=target, error=error, delay=_MAX_RECONNECT_DELAY)
        elif now - self._reminded_at >= REMINDER_INTERVAL:
            self._reminded_at = now
            self.log.warn("Redis at {target} still unreachable after {seconds:.0f} s ({error})",
                          target=target, error=error, seconds=now - self._down_since)

    def _check_replies(self) -> None:
        """Drop a connection whose oldest command waits longer than reply_timeout:
        txredisapi then fails every command pending on it (BackendUnavailable)."""
        import time
        self._report()
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

    def live(self) -> Any:
        """A live connection, round robin, or None (then :meth:`connection` says why
        or waits for the first one): no Deferred on the hot path."""
        factory = self._factory
        if factory is None:
            return None
        live = factory.connectionQueue.pending
        while live:
            self._next = (self._next + 1) % len(live)
            conn = live[self._next]
            if conn.connected:
                self._was_connected = True
                return conn
            live.remove(conn)
        return None

    def pinned(self, key: str) -> Any:
        """The live connection that ``key`` maps to (the same one while the pool's
        connections stay up), or None: commands sent on one connection run and are
        answered in the order they were sent."""
        factory = self._factory
        if factory is None:
            return None
        live = factory.connectionQueue.pending
        if live:
            conn = live[zlib.crc32(key.encode("utf-8")) % len(live)]
            if conn.connected:
                self._was_connected = True
                return conn
        return self.live()

    def connection(self) -> defer.Deferred:
        """A live connection, round robin; fails fast when there is none.

        :raises BackendUnavailable: (in the Deferred) Redis is not connected.
        """
        factory = self._factory
        if factory is None:
            return defer.fail(BackendUnavailable("RestMQ is not connected to Redis"))
        conn = self.live()
        if conn is not None:
            return defer.succeed(conn)
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
                result.errback(BackendUnavailable(
                    "no connection to Redis within %.1f s" % self.connect_timeout))

        timer = self.clock.callLater(self.connect_timeout, too_late)
        factory.connectionQueue.peek().addCallback(ready)
        return result


def _connect(target: RedisTarget, pool_size: int, connect_timeout: float,
             reply_timeout: Optional[float], api: Any) -> Any:
    common = dict(dbid=target.db, password=target.password, replyTimeout=reply_timeout,
                  convertNumbers=False)
    if target.kind == "unix":
        return api.lazyUnixConnectionPool(target.path, poolsize=pool_size,
                                          connectTimeout=connect_timeout, **common)
    if target.kind == "sentinel":
        return _sentinel_factory(target, connect_timeout, pool_size, reply_timeout).handler
    return api.lazyConnectionPool(target.host, target.port, poolsize=pool_size,
                                  connectTimeout=connect_timeout, **common)


# Sentinel announces a new master on this channel of every sentinel:
# "<master-name> <old-ip> <old-port> <new-ip> <new-port>"
_SWITCH_MASTER_CHANNEL = "+switch-master"


def _sentinel_factory(target: RedisTarget, connect_timeout: float, pool_size: int,
                      reply_timeout: Optional[float], protocol: Optional[type] = None) -> Any:
    """Connections to the master of ``target.master_name``, following failovers.

    Every connection attempt asks the sentinels for the master (txredisapi's
    ``_SentinelEndpoint``) and checks the role of what it reached; on a
    ``+switch-master`` from any sentinel every connection is dropped and made
    again, to the new master.
    """
    manager = txredisapi.Sentinel(list(target.sentinels), connectTimeout=connect_timeout,
                                  replyTimeout=connect_timeout)
    # Discovery fails after this long (no sentinel knows a healthy master: a
    # failover is under way) and the connection attempt is retried.
    manager.discovery_timeout = connect_timeout
    for handler in manager.sentinels:
        handler._factory.maxDelay = _MAX_RECONNECT_DELAY
    factory = _SentinelFactory(
        sentinel_manager=manager, service_name=target.master_name, is_master=True, uuid=None,
        dbid=target.db, poolsize=pool_size, isLazy=True, password=target.password,
        replyTimeout=reply_timeout, convertNumbers=False)
    if protocol is not None:
        factory.protocol = protocol
    factory.watch_switches(target.sentinels, connect_timeout)
    factory.startConnecting(txredisapi._SentinelEndpoint(factory))
    return factory


class _SwitchListener(txredisapi.SubscriberProtocol):
    """Listens for +switch-master on one sentinel."""

    owner: "_SentinelFactory"

    def connectionMade(self) -> Any:
        ready = super().connectionMade()
        ready.addCallback(lambda _: self.subscribe(_SWITCH_MASTER_CHANNEL))
        ready.addErrback(lambda failure: log.failure("Listening to a sentinel failed", failure))
        return ready

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        self.owner.switched(message)


class _SentinelFactory(txredisapi.SentinelConnectionFactory):
    """Connections to a Sentinel-managed master.

    An old master that is still up keeps accepting writes until Sentinel
    demotes it, which can be many seconds after the switch; writes made there
    meanwhile would be lost. So on ``+switch-master`` the connections are
    dropped at once. ``disconnect`` also closes the sentinel connections.
    """

    maxDelay = _MAX_RECONNECT_DELAY

    def watch_switches(self, sentinels: Any, connect_timeout: float) -> None:
        listener = type("SwitchListener", (_SwitchListener,), {"owner": self})
        self._switch_watchers = []
        for host, port in sentinels:
            watcher = txredisapi.SubscriberFactory(isLazy=True)
            watcher.protocol = listener
            watcher.convertNumbers = False
            watcher.maxDelay = _MAX_RECONNECT_DELAY
            watcher.startConnecting(txredisapi._makeEndpoint(host, port, connect_timeout))
            self._switch_watchers.append(watcher)

    def switched(self, message: Any) -> None:
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        words = str(message).split()
        if len(words) != 5 or words[0] != self.service_name or self.disconnectCalled:
            return
        log.warn("Sentinel switched {name} to {host}:{port}; reconnecting",
                 name=self.service_name, host=words[3], port=words[4])
        for conn in list(self.pool):
            conn.transport.loseConnection()

    def disconnect(self) -> defer.Deferred:
        closing = [super().disconnect(), self.sentinel_manager.disconnect()]
        closing += [watcher.disconnect() for watcher in getattr(self, "_switch_watchers", [])]
        return defer.gatherResults(closing, consumeErrors=True).addCallback(lambda _: None)


def _master_only(protocol_class: type) -> type:
    """``protocol_class`` that first checks it reached a master, else hangs up.

    A pub/sub connection must follow the master like the pool does: a stale
    sentinel answer (the failover is just happening) must not leave RestMQ
    listening on a replica. ``INFO replication`` rather than ROLE, because a
    SubscriberProtocol keeps only the last three items of a list reply.
    """

    class MasterOnly(protocol_class):
        def connectionMade(self) -> Any:
            if self.password is not None:
                self.auth(self.password)
            return self.execute_command("INFO", "replication").addCallback(self._check_role)

        def _check_role(self, info: Any) -> Any:
            if isinstance(info, bytes):
                info = info.decode("utf-8", "replace")
            if "role:master" not in str(info).split():
                log.warn("The pub/sub connection reached a Redis that is not the master; "
                         "asking the sentinels again")
                self.transport.loseConnection()
                return None
            return super().connectionMade()

    MasterOnly.__name__ = "MasterOnly" + protocol_class.__name__
    return MasterOnly


def connect_subscriber(target: RedisTarget, protocol_class: type, connect_timeout: float) -> Any:
    """A reconnecting pub/sub connection built from ``protocol_class``.

    Returns the txredisapi factory; its ``protocol`` instances are created
    anew on every reconnection (``connectionMade`` resubscribes). With a
    Sentinel target every connection goes to the current master.
    """
    if target.kind == "sentinel":
        # no reply timeout: a subscription waits for messages as long as it lives
        return _sentinel_factory(target, connect_timeout, 1, None, _master_only(protocol_class))
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
    else:
        endpoint = txredisapi._makeEndpoint(target.host, target.port, connect_timeout)
    factory.startConnecting(endpoint)
    return factory


def describe(target: Optional[RedisTarget]) -> str:
    return target.describe() if target else "embedded"
