"""Streaming across RestMQ processes: two real `twistd -n restmq` on one Redis.

Both brokers sweep only once an hour, so whatever arrives here came through
Redis pub/sub (a wake-up on restmq:notify, a batch on restmq:broadcast:<q>),
except in the sweep test, which starts a broker of its own.
"""

from __future__ import annotations

import time

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.web.client import HTTPConnectionPool

from restmq import keys
from tests.helpers import free_port, sleep, wait_until
from tests.processes import Broker, StreamClient

SLOW_SWEEP = 3600


def _broker(directory, name: str, redis_server, sweep: float) -> Broker:
    conf = directory / ("%s.conf" % name)
    conf.write_text("[dispatch]\nsweep_interval = %s\n" % sweep)
    return Broker(free_port(), ["--config", str(conf), "--redis",
                                "redis://127.0.0.1:%d/0" % redis_server.port],
                  str(directory / ("%s.log" % name)))


@pytest.fixture(scope="module")
def brokers(redis_server, tmp_path_factory):
    directory = tmp_path_factory.mktemp("brokers")
    started = []
    try:
        for name in ("a", "b"):
            started.append(_broker(directory, name, redis_server, SLOW_SWEEP).start())
        yield started
    finally:
        for broker in started:
            broker.stop()


@pytest.fixture()
def http_pool():
    pool = HTTPConnectionPool(reactor, persistent=False)
    yield pool
    pytest_twisted.blockon(pool.closeCachedConnections())


class _Streams:
    """Opens stream clients and closes them all at the end of the test."""

    def __init__(self, pool) -> None:
        self.pool = pool
        self.clients = []

    async def open(self, broker: Broker, queue: str, **kwargs) -> StreamClient:
        client = await StreamClient.open(broker.url, queue, self.pool, **kwargs)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


@pytest_twisted.async_yield_fixture()
async def streams(http_pool):
    opened = _Streams(http_pool)
    yield opened
    await opened.close()


async def publish(broker: Broker, queue: str, value: str, pool) -> str:
    response = await treq.post("%s/q/%s" % (broker.url, queue), data={"value": value},
                               pool=pool, timeout=10)
    assert response.code == 200
    return (await response.text()).strip()


async def redis_shows(check, what: str, timeout: float = 20.0) -> None:
    """Wait until the async ``check`` (a question to Redis) is true."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "%s: not within %.0f s" % (what, timeout)
        await sleep(0.01)


async def subscribed(redis, queue: str, processes: int) -> None:
    """Wait until ``processes`` brokers receive the broadcast batches of ``queue``."""
    channel = keys.broadcast_channel(queue)

    async def check():
        reply = await redis.execute_command("PUBSUB", "NUMSUB", channel)
        return int(reply[1]) == processes

    await redis_shows(check, "%d brokers subscribed to %s" % (processes, channel))


async def listened(redis, queue: str) -> None:
    """Wait until some broker has marked ``queue`` as streamed (publishers then notify)."""
    async def check():
        return bool(int(await redis.exists(keys.listeners(queue))))

    await redis_shows(check, "%s is listened to" % queue)


@pytest_twisted.ensureDeferred
async def test_broadcast_reaches_every_subscriber_on_every_process_once_in_order(
        brokers, redis, streams, http_pool):
    a, b = brokers
    clients = [await streams.open(a, "fan"), await streams.open(a, "fan", sse=True),
               await streams.open(b, "fan"), await streams.open(b, "fan", sse=True)]
    await subscribed(redis, "fan", 2)
    sent = []
    for i in range(60):
        sent.append("m%d" % i)
        # alternate the producer: the order is the order of the acknowledged posts
        assert await publish(brokers[i % 2], "fan", sent[-1], http_pool) == "fan:%d" % (i + 1)
    await wait_until(lambda: all(len(c.messages) >= len(sent) for c in clients), timeout=20)
    for client in clients:
        assert client.values == sent
        assert [m["key"] for m in client.messages] == ["fan:%d" % (i + 1) for i in range(60)]
    assert clients[1].ids == clients[3].ids == ["fan:%d" % (i + 1) for i in range(60)]


@pytest_twisted.ensureDeferred
async def test_roundrobin_over_two_processes_delivers_each_message_exactly_once(
        brokers, redis, streams, http_pool):
    a, b = brokers
    response = await treq.post(a.url + "/p/rr", data={"policy": "roundrobin"}, pool=http_pool)
    assert response.code == 200
    clients = [await streams.open(a, "rr"), await streams.open(a, "rr"),
               await streams.open(b, "rr", sse=True), await streams.open(b, "rr")]
    sent = ["r%d" % i for i in range(100)]
    for i, value in enumerate(sent):
        await publish(brokers[i % 2], "rr", value, http_pool)
    await wait_until(lambda: sum(len(c.messages) for c in clients) >= len(sent), timeout=20)
    received = [value for client in clients for value in client.values]
    assert sorted(received) == sorted(sent), "lost or duplicated: %s" % (
        [len(c.values) for c in clients],)
    print("round robin shares:", [len(c.values) for c in clients])
    stats = await treq.get(b.url + "/stats/rr", pool=http_pool)
    assert (await stats.json())["len"] == 0
    # each client sees its share in publish order
    for client in clients:
        assert client.values == sorted(client.values, key=sent.index)


@pytest_twisted.ensureDeferred
async def test_publish_on_one_process_wakes_a_stream_on_the_other(brokers, redis, streams, http_pool):
    a, b = brokers
    client = await streams.open(b, "wake")
    await listened(redis, "wake")
    for i in range(3):
        await publish(a, "wake", "w%d" % i, http_pool)
        # each one arrives on its own, long before b's hourly sweep
        await wait_until(lambda: len(client.messages) == i + 1, timeout=20)
    assert client.values == ["w0", "w1", "w2"]


@pytest_twisted.ensureDeferred
async def test_publish_on_one_process_wakes_a_long_poll_on_the_other(brokers, redis, http_pool):
    a, b = brokers
    waiting = treq.get(b.url + "/q/lp?wait=50", pool=http_pool, timeout=60)
    await listened(redis, "lp")
    await publish(a, "lp", "for the long poll", http_pool)
    response = await waiting
    assert response.code == 200
    assert (await response.json())["value"] == "for the long poll"


@pytest_twisted.ensureDeferred
async def test_sse_resumes_on_another_process_from_the_shared_history(brokers, redis, streams, http_pool):
    a, b = brokers
    anchor = await streams.open(b, "resume")  # keeps the queue streamed while the SSE client is away
    first = await streams.open(a, "resume", sse=True)
    await subscribed(redis, "resume", 2)
    for i in range(3):
        await publish(a, "resume", "s%d" % i, http_pool)
    await wait_until(lambda: len(first.messages) == 3, timeout=20)
    await first.close()
    for i in range(3, 6):
        await publish(b, "resume", "s%d" % i, http_pool)
    await wait_until(lambda: len(anchor.messages) == 6, timeout=20)
    again = await streams.open(b, "resume", sse=True, last_event_id=first.ids[-1])
    await wait_until(lambda: len(again.messages) >= 3, timeout=20)
    assert again.values == ["s3", "s4", "s5"]
    assert again.events == []  # no gap: the history had them all


@pytest_twisted.ensureDeferred
async def test_message_pushed_by_another_broker_is_delivered_by_the_sweep(
        redis_server, redis, streams, http_pool, tmp_path):
    broker = _broker(tmp_path, "sweeper", redis_server, 0.5).start()
    try:
        client = await streams.open(broker, "foreign")
        await listened(redis, "foreign")
        # the original layout, written by another broker: no RestMQ script, no wake-up
        number = await redis.incr("foreign:UUID")
        await redis.set("foreign:%d" % number, "from elsewhere")
        await redis.lpush("foreign:queue", "foreign:%d" % number)
        await wait_until(lambda: len(client.messages) == 1, timeout=20)
        assert client.messages[0] == {"key": "foreign:%d" % number, "value": "from elsewhere"}
        await client.close()
    finally:
        broker.stop()


@pytest_twisted.ensureDeferred
async def test_stop_and_start_on_one_process_hold_and_release_streams_on_the_other(
        brokers, redis, streams, http_pool):
    a, b = brokers
    client = await streams.open(b, "paused")
    await listened(redis, "paused")
    response = await treq.post(a.url + "/control/paused", data={"status": "stop"}, pool=http_pool)
    assert response.code == 200
    for i in range(3):
        await publish(a, "paused", "p%d" % i, http_pool)
    stats = await treq.get(b.url + "/stats/paused", pool=http_pool)
    assert (await stats.json())["len"] == 3  # held: nothing was taken for the stream
    response = await treq.post(a.url + "/control/paused", data={"status": "start"}, pool=http_pool)
    assert response.code == 200
    await wait_until(lambda: len(client.messages) == 3, timeout=20)
    assert client.values == ["p0", "p1", "p2"]


@pytest_twisted.ensureDeferred
async def test_delete_on_one_process_closes_the_streams_of_the_other(brokers, redis, streams, http_pool):
    a, b = brokers
    client = await streams.open(b, "doomed")
    await listened(redis, "doomed")
    response = await treq.delete(a.url + "/q/doomed", pool=http_pool)
    assert response.code == 200
    await wait_until(lambda: client.closed, timeout=20)
