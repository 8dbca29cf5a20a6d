"""The one pub/sub connection of a RestMQ process.

It listens on ``restmq:notify`` (wake-ups and purges, see keys.py) and on the
broadcast channel of every queue this process streams in broadcast mode, and
hands what arrives to callbacks it is given. It reconnects by itself and then
resubscribes and calls ``on_reconnect`` (messages may have been missed).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Set

import orjson
import txredisapi
from twisted.internet import defer
from twisted.logger import Logger

from restmq import keys
from restmq.config import RedisTarget
from restmq.storage.pool import connect_subscriber

__all__ = ["Notifier"]


class _NotifyProtocol(txredisapi.SubscriberProtocol):
    notifier: "Notifier"

    def connectionMade(self):
        ready = super().connectionMade()
        ready.addCallback(lambda _: self.notifier._attach(self))
        return ready

    def connectionLost(self, reason):
        self.notifier._detach(self)
        super().connectionLost(reason)

    def messageReceived(self, pattern, channel, message):
        self.notifier._received(channel, message)


class Notifier:
    """Subscriptions of this process, kept across reconnections."""

    log = Logger()

    def __init__(self, target: RedisTarget, connect_timeout: float,
                 on_wake: Callable[[str], None],
                 on_purge: Callable[[str], None],
                 on_broadcast: Callable[[str, List[str]], None],
                 on_reconnect: Callable[[], None],
                 on_reply: Optional[Callable[[str], None]] = None) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.on_wake = on_wake
        self.on_purge = on_purge
        self.on_broadcast = on_broadcast
        self.on_reconnect = on_reconnect
        self.on_reply = on_reply
        self._channels: Set[str] = set()
        self._protocol: Optional[Any] = None
        self._factory: Any = None
        self._waiting: Dict[str, List[defer.Deferred]] = {}
        self._ever_attached = False

    def start(self) -> None:
        protocol = type("NotifyProtocol", (_NotifyProtocol,), {"notifier": self})
        self._factory = connect_subscriber(self.target, protocol, self.connect_timeout)

    def stop(self) -> defer.Deferred:
        factory, self._factory = self._factory, None
        self._protocol = None
        return factory.disconnect() if factory is not None else defer.succeed(None)

    @property
    def connected(self) -> bool:
        return self._protocol is not None

    def watch(self, queue: str) -> defer.Deferred:
        """Receive broadcast batches of ``queue``; fires once subscribed (after
        the reconnection, if the connection is lost meanwhile)."""
        channel = keys.broadcast_channel(queue)
        self._channels.add(channel)
        if self._protocol is None:
            return self._when_attached(channel)
        return self._protocol.subscribe(channel).addCallbacks(
            lambda _: None, self._lost_while_subscribing, errbackArgs=(channel,))

    def _when_attached(self, channel: str) -> defer.Deferred:
        waiter: defer.Deferred = defer.Deferred()
        self._waiting.setdefault(channel, []).append(waiter)
        return waiter

    def _lost_while_subscribing(self, failure: Any, channel: str) -> defer.Deferred:
        # The connection went away under this SUBSCRIBE; _attach subscribes every
        # watched channel again once it is back. Without this the queue's state
        # in the dispatcher would never become ready.
        failure.trap(txredisapi.ConnectionError)
        if channel not in self._channels:
            raise defer.CancelledError()
        return self._when_attached(channel)

    def unwatch(self, queue: str) -> None:
        channel = keys.broadcast_channel(queue)
        self._channels.discard(channel)
        for waiter in self._waiting.pop(channel, []):
            waiter.cancel()
        if self._protocol is not None:
            self._protocol.unsubscribe(channel).addErrback(lambda _: None)

    # txredisapi protocol callbacks

    def _attach(self, protocol: Any) -> None:
        self._protocol = protocol
        # One channel per SUBSCRIBE: txredisapi matches replies to commands in
        # order, and a multi-channel SUBSCRIBE has one reply per channel.
        channels = [keys.NOTIFY_CHANNEL] + sorted(self._channels)
        subscribed = defer.gatherResults([protocol.subscribe(channel) for channel in channels],
                                         consumeErrors=True)
        subscribed.addCallback(self._subscribed, protocol)
        subscribed.addErrback(lambda failure: self.log.failure("Subscribing failed", failure))

    def _subscribed(self, _: Any, protocol: Any) -> None:
        self.log.info("Listening for wake-ups on {target}", target=self.target.describe())
        waiting, self._waiting = self._waiting, {}
        for waiters in waiting.values():
            for waiter in waiters:
                waiter.callback(None)
        if self._ever_attached:
            self.on_reconnect()
        self._ever_attached = True

    def _detach(self, protocol: Any) -> None:
        if self._protocol is protocol:
            self._protocol = None
            if self._factory is not None:
                self.log.warn("Lost the pub/sub connection to Redis; reconnecting")

    def _received(self, channel: Any, message: Any) -> None:
        if isinstance(channel, bytes):
            channel = channel.decode("utf-8", "replace")
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        if channel == keys.NOTIFY_CHANNEL:
            kind, queue = message[:1], message[1:]
            if kind == "w":
                self.on_wake(queue)
            elif kind == "p":
                self.on_purge(queue)
            elif kind == "r" and self.on_reply is not None:
                self.on_reply(queue)
            return
        if channel.startswith(keys.BROADCAST_CHANNEL_PREFIX):
            queue = channel[len(keys.BROADCAST_CHANNEL_PREFIX):]
            try:
                batch = orjson.loads(message)
            except orjson.JSONDecodeError:
                self.log.warn("Undecodable broadcast batch on {channel}", channel=channel)
                return
            self.on_broadcast(queue, batch)
