"""restmq.client against the live app: the blocking Queue (run in a thread, since the
reactor serves in this process) and the Twisted TxQueue, with the same names."""

from __future__ import annotations

import json
import textwrap

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.threads import deferToThread

from restmq.acl import load_acl
from restmq.client import Broker, ClientError, Message, Queue, TxBroker, TxQueue
from restmq.model import QueueState
from tests.helpers import start_app, stop_app, wait_until


def in_thread(function, *args, **kwargs):
    return deferToThread(function, *args, **kwargs)


# the blocking Queue

@pytest_twisted.ensureDeferred
async def test_put_one_and_several_then_get_in_order(app):
    queue = Queue("jobs", url=app.url)
    assert await in_thread(queue.put, "one") == "jobs:1"
    assert await in_thread(queue.put, "two", "three") == ["jobs:2", "jobs:3"]
    assert [await in_thread(queue.get) for _ in range(4)] == ["one", "two", "three", None]


@pytest_twisted.ensureDeferred
async def test_put_splits_big_batches_and_keeps_order(app):
    queue = Queue("bulk", url=app.url)
    keys = await in_thread(queue.put, *[str(i) for i in range(1500)])
    assert len(keys) == 1500 and keys[0] == "bulk:1" and keys[-1] == "bulk:1500"
    assert await in_thread(len, queue) == 1500
    newest = await in_thread(queue.last, 3)
    assert [m.value for m in newest] == ["1499", "1498", "1497"]


@pytest_twisted.ensureDeferred
async def test_serializer_round_trips_objects(app):
    queue = Queue("objects", url=app.url, serializer=json)
    await in_thread(queue.put, {"id": 1, "tags": ["a"]}, [1, 2])
    assert await in_thread(queue.get) == {"id": 1, "tags": ["a"]}
    assert await in_thread(queue.get) == [1, 2]
    with pytest.raises(TypeError):
        Queue("plain", url=app.url).put({"not": "a str"})


@pytest_twisted.ensureDeferred
async def test_blocking_get_long_polls_until_a_message_comes(app):
    queue = Queue("late", url=app.url)
    waiting = in_thread(queue.get, block=True, timeout=30)
    await wait_until(lambda: app.dispatcher.subscriber_counts("late").get("longpoll") == 1)
    await app.post("/q/late", data={"value": "here"})
    assert await waiting == "here"
    # nothing comes: None once the timeout is over
    assert await in_thread(queue.get, block=True, timeout=0.2) is None


@pytest_twisted.ensureDeferred
async def test_subscribe_iterates_the_event_stream(app):
    queue = Queue("stream", url=app.url)

    def first_three():
        values = []
        for value in queue.subscribe():
            values.append(value)
            if len(values) == 3:
                return values

    consuming = in_thread(first_three)
    await wait_until(lambda: app.dispatcher.subscriber_counts("stream").get("sse") == 1)
    await app.post("/q/stream", data=b'["a", "b", "c"]', headers={"Content-Type": "application/json"})
    assert await consuming == ["a", "b", "c"]
    # leaving the loop hung up
    await wait_until(lambda: app.dispatcher.subscriber_counts("stream") == {})


@pytest_twisted.ensureDeferred
async def test_reserve_leases_with_a_receipt(app):
    queue = Queue("leased", url=app.url)
    await in_thread(queue.put, "job")
    message = await in_thread(queue.reserve, 30)
    assert isinstance(message, Message)
    assert message.value == "job" and message.receipt.startswith("leased:1:") and message.deliveries == 1
    assert (await in_thread(queue.stats))["inflight"] == 1
    assert await in_thread(queue.reserve) is None
    assert await in_thread(queue.extend, message, seconds=60) == 1
    assert await in_thread(queue.nack, message) == 1
    again = await in_thread(queue.reserve, 30)
    assert again.key == message.key and again.deliveries == 2
    with pytest.raises(ClientError) as raised:
        await in_thread(queue.ack, message)  # the first lease is gone
    assert raised.value.status == 409 and raised.value.code == "lease_lost"
    assert await in_thread(queue.ack, again) == 1
    assert (await in_thread(queue.stats))["inflight"] == 0


@pytest_twisted.ensureDeferred
async def test_policy_pause_resume_stats_purge(app):
    queue = Queue("ctl", url=app.url)
    assert await in_thread(lambda: queue.policy) == "broadcast"

    def switch():
        queue.policy = "roundrobin"
        return queue.policy

    assert await in_thread(switch) == "roundrobin"
    assert await in_thread(queue.pause) == "stopped"
    assert await app.store.get_state("ctl") is QueueState.STOPPED
    assert (await in_thread(queue.stats))["status"] == "stopped"
    assert await in_thread(queue.resume) == "started"
    await in_thread(queue.put, "a", "b")
    assert await in_thread(queue.purge) == 2
    assert await in_thread(queue.get) is None


@pytest_twisted.ensureDeferred
async def test_errors_carry_status_and_code(app):
    with pytest.raises(ClientError) as raised:
        await in_thread(Queue("queuestat:x", url=app.url).put, "x")
    assert raised.value.status == 400 and raised.value.code == "bad_request"
    with pytest.raises(ClientError) as raised:
        await in_thread(Queue("p", url=app.url).set_policy, "random")
    assert raised.value.code == "bad_request"


@pytest_twisted.ensureDeferred
async def test_broker_lists_queues_stats_and_readiness(app):
    await app.post("/q/b1", data={"value": "x"})
    broker = Broker(app.url)
    assert await in_thread(broker.queues) == ["b1"]
    assert (await in_thread(broker.stats))["queues"]["b1"]["len"] == 1
    assert (await in_thread(broker.ready))["status"] == "ok"


@pytest_twisted.ensureDeferred
async def test_token_and_basic_credentials(redis, redis_server, tmp_path):
    path = tmp_path / "acl.conf"
    path.write_text(textwrap.dedent("""\
        [rest:producer]
        token = s3cret
        [rest:consumer]
        username = reader
        password = pw
        """))
    running = await start_app(redis_server.target, acl=load_acl(str(path)))
    try:
        with pytest.raises(ClientError) as raised:
            await in_thread(Queue("acl", url=running.url).put, "x")
        assert raised.value.status == 401
        assert await in_thread(Queue("acl", url=running.url, token="s3cret").put, "x") == "acl:1"
        assert await in_thread(Queue("acl", url=running.url, auth=("reader", "pw")).get) == "x"
    finally:
        await stop_app(running)


# the Twisted TxQueue: the same names, Deferreds

@pytest_twisted.ensureDeferred
async def test_txqueue_put_get_and_long_poll(app):
    queue = TxQueue("tx", url=app.url, pool=app.http_pool)
    assert await queue.put("one") == "tx:1"
    assert await queue.put("two", "three") == ["tx:2", "tx:3"]
    assert [await queue.get() for _ in range(3)] == ["one", "two", "three"]
    assert await queue.get() is None
    waiting = queue.get(block=True, timeout=30)
    await wait_until(lambda: app.dispatcher.subscriber_counts("tx").get("longpoll") == 1)
    await app.post("/q/tx", data={"value": "late"})
    assert await waiting == "late"
    message = await queue.get_message(block=True, timeout=0.2)
    assert message is None


@pytest_twisted.ensureDeferred
async def test_txqueue_subscribe_until_cancelled(app):
    queue = TxQueue("txstream", url=app.url, pool=app.http_pool, serializer=json)
    received = []
    consuming = queue.subscribe(received.append)
    await wait_until(lambda: app.dispatcher.subscriber_counts("txstream").get("sse") == 1)
    await queue.put({"n": 1}, {"n": 2})
    await wait_until(lambda: len(received) == 2)
    assert received == [{"n": 1}, {"n": 2}]
    consuming.cancel()
    with pytest.raises(defer.CancelledError):
        await consuming
    await wait_until(lambda: app.dispatcher.subscriber_counts("txstream") == {})


@pytest_twisted.ensureDeferred
async def test_txqueue_reserve_control_and_views(app):
    queue = TxQueue("txctl", url=app.url, pool=app.http_pool)
    await queue.put("a", "b")
    message = await queue.reserve(30)
    assert message.value == "a" and message.receipt
    assert (await queue.stats())["inflight"] == 1
    assert await queue.extend(message, seconds=60) == 1
    assert await queue.nack(message, delay=3600) == 1
    assert (await queue.stats())["delayed"] == 1
    assert await queue.purge() == 2
    await queue.put("a", "b")
    message = await queue.reserve(30)
    assert [m.value for m in await queue.last(5)] == ["b"]
    assert await queue.set_policy("roundrobin") == "roundrobin"
    assert await queue.get_policy() == "roundrobin"
    assert await queue.pause() == "stopped"
    assert await queue.status() == "stopped"
    assert await queue.resume() == "started"
    broker = TxBroker(app.url, pool=app.http_pool)
    assert await broker.queues() == ["txctl"]
    assert (await broker.ready())["status"] == "ok"
    assert "txctl" in (await broker.stats())["queues"]
    assert await queue.purge() == 2  # the leased one too
    assert await broker.queues() == []
    with pytest.raises(ClientError):
        await TxQueue("queuestat:x", url=app.url, pool=app.http_pool).get()
