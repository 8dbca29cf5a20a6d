"""The pub/sub connection drops while a queue is being subscribed: the queue's
streams still get their messages once it is back (found while testing failover)."""

from __future__ import annotations

from typing import List

import pytest_twisted

from restmq.model import Message
from tests.helpers import start_app, stop_app, wait_until


class _Consumer:
    """A dispatch.Consumer that keeps what it is sent."""

    transport = "test"

    def __init__(self) -> None:
        self.received: List[Message] = []

    def send(self, message: Message) -> None:
        self.received.append(message)

    def send_batch(self, batch) -> None:
        self.received.extend(batch.messages)

    def can_take(self) -> bool:
        return True

    def overflowing(self) -> bool:
        return False

    def close(self, reason: str) -> None:
        pass


@pytest_twisted.ensureDeferred
async def test_subscribing_while_the_pubsub_connection_drops_still_delivers(redis, redis_server):
    app = await start_app(redis_server.target)
    consumer = _Consumer()
    try:
        lost = app.notifier._protocol
        # closed from our side: the SUBSCRIBE below goes out on a connection
        # whose replies are no longer read, as when Redis goes away
        lost.transport.loseConnection()
        app.dispatcher.subscribe("flaky", consumer)
        await wait_until(lambda: app.notifier._protocol not in (None, lost))
        await app.store.add("flaky", ["after the drop"])
        await wait_until(lambda: [m.value for m in consumer.received] == ["after the drop"])
    finally:
        app.dispatcher.unsubscribe("flaky", consumer)
        await stop_app(app)
