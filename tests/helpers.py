"""Shared test helpers: free ports, a redis-server process, raw sockets, an app under test."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from typing import Any, List, Optional

import attr
import treq
from twisted.internet import defer, protocol, reactor
from twisted.web.client import HTTPConnectionPool

from restmq.acl import Acl
from restmq.config import Config, RedisTarget
from restmq.dispatch import Dispatcher
from restmq.metrics import Metrics
from restmq.server.redisproc import find_redis_server
from restmq.storage.notify import Notifier
from restmq.storage.pool import RedisPool
from restmq.storage.store import QueueStore
from restmq.web.app import make_app
from restmq.web.base import Context


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisProcess:
    """A redis-server of the test session's own, on a free loopback port."""

    def __init__(self, port: Optional[int] = None, extra: Optional[List[str]] = None) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="restmq-test-redis-")
        self.extra = extra or []
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 10.0) -> "RedisProcess":
        self.proc = subprocess.Popen(
            [find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir] + self.extra,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start on port %d" % self.port)
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    @property
    def target(self) -> RedisTarget:
        return RedisTarget("tcp", "127.0.0.1", self.port)


@attr.s(auto_attribs=True)
class RunningApp:
    """A RestMQ app listening on a real socket, with its parts."""

    url: str
    port: int
    store: QueueStore
    dispatcher: Dispatcher
    pool: RedisPool
    notifier: Notifier
    listener: Any
    config: Config
    http_pool: Any
    metrics: Metrics

    # These speak this broker's JSON API (``Accept: application/json``, as
    # restmq.client does) unless the caller sends an Accept of its own; the
    # original's answers (no Accept) are tested in tests/test_original.py.

    def get(self, path: str, **kwargs: Any) -> defer.Deferred:
        return treq.get(self.url + path, pool=self.http_pool, **_json_api(kwargs))

    def post(self, path: str, **kwargs: Any) -> defer.Deferred:
        return treq.post(self.url + path, pool=self.http_pool, **_json_api(kwargs))

    def delete(self, path: str, **kwargs: Any) -> defer.Deferred:
        return treq.delete(self.url + path, pool=self.http_pool, **_json_api(kwargs))


def _json_api(kwargs: dict) -> dict:
    headers = dict(kwargs.get("headers") or {})
    if not any(name.lower() in ("accept", b"accept") for name in headers):
        headers["Accept"] = "application/json"
    return dict(kwargs, headers=headers)


def test_config(**sections: Any) -> Config:
    base = Config()
    return attr.evolve(base, **{name: attr.evolve(getattr(base, name), **values)
                                for name, values in sections.items()})


async def start_app(target: RedisTarget, config: Optional[Config] = None, acl: Optional[Acl] = None,
                    wait_ready: bool = True, extra_routes: tuple = ()) -> RunningApp:
    config = config or test_config(dispatch={"sweep_interval": 1.0})
    pool = RedisPool(target, 4, config.redis.connect_timeout, config.redis.reply_timeout, reactor)
    pool.start()
    metrics = Metrics(config.server.metrics_max_queues)
    store = QueueStore(pool, config.delivery.max_receives, config.redis.wait_replicas,
                       history_size=config.dispatch.history_size, observe=metrics.observe_redis)
    dispatcher = Dispatcher(store, reactor, config.dispatch, metrics=metrics,
                            lease_seconds=config.delivery.lease_seconds)
    notifier = Notifier(target, config.redis.connect_timeout, dispatcher.wake,
                        dispatcher.close_queue, dispatcher.on_broadcast, dispatcher.reconnected,
                        on_reply=dispatcher.replied)
    dispatcher.notifier = notifier
    notifier.start()
    dispatcher.start()
    context = Context(store=store, dispatcher=dispatcher, acl=acl or Acl(), config=config, clock=reactor,
                      metrics=metrics)
    listener = reactor.listenTCP(0, make_app(context, extra_routes), interface="127.0.0.1")
    port = listener.getHost().port
    if wait_ready:
        await wait_until(lambda: pool.connected and notifier.connected)
    return RunningApp("http://127.0.0.1:%d" % port, port, store, dispatcher, pool, notifier,
                      listener, config, HTTPConnectionPool(reactor, persistent=False), metrics)


async def stop_app(app: RunningApp) -> None:
    await app.listener.stopListening()
    app.dispatcher.stop()
    await app.notifier.stop()
    await app.pool.stop()
    await app.http_pool.closeCachedConnections()


def sleep(seconds: float) -> defer.Deferred:
    d: defer.Deferred = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


async def wait_until(condition, timeout: float = 10.0, step: float = 0.01) -> None:
    """Wait for a condition of the system under test, failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within %.1f s" % timeout)
        await sleep(step)


class _Collect(protocol.Protocol):
    def __init__(self, done: defer.Deferred, send: bytes, stop_at: Optional[bytes]) -> None:
        self.done, self.send, self.stop_at = done, send, stop_at
        self.data = b""

    def connectionMade(self) -> None:
        if self.send:
            self.transport.write(self.send)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.stop_at is not None and self.stop_at in self.data:
            self.transport.loseConnection()

    def connectionLost(self, reason: Any) -> None:
        if not self.done.called:
            self.done.callback(self.data)


async def raw_exchange(port: int, data: bytes, stop_at: Optional[bytes] = None,
                       timeout: float = 10.0) -> bytes:
    """Send raw bytes, read until the server closes (or ``stop_at`` shows up)."""
    done: defer.Deferred = defer.Deferred()
    factory = protocol.ClientFactory()
    factory.protocol = lambda: _Collect(done, data, stop_at)  # type: ignore[assignment]
    connector = reactor.connectTCP("127.0.0.1", port, factory)
    timer = reactor.callLater(timeout, lambda: (not done.called) and done.errback(
        AssertionError("server kept the connection open for %.0f s" % timeout)))
    try:
        return await done
    finally:
        if timer.active():
            timer.cancel()
        connector.disconnect()


async def open_raw(port: int):
    """A connected raw client whose received bytes accumulate in ``.data``."""
    done: defer.Deferred = defer.Deferred()
    factory = protocol.ClientFactory()
    connected: defer.Deferred = defer.Deferred()

    class _Proto(_Collect):
        def connectionMade(self) -> None:
            connected.callback(self)

    factory.protocol = lambda: _Proto(done, b"", None)  # type: ignore[assignment]
    reactor.connectTCP("127.0.0.1", port, factory)
    proto = await connected
    proto.closed = done
    return proto
