"""The clients' loops against the live app: consume() competing whatever the policy,
consume(ack=True), work() with retries, dead letters and redrive, lease extension,
subscribe() reconnecting; blocking Queue (in threads) and TxQueue alike."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import List

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.threads import deferToThread

from restmq.client import Broker, ClientError, DeadLetter, Message, Queue, TxQueue
from tests.helpers import sleep, wait_until


def in_thread(function, *args, **kwargs):
    return deferToThread(function, *args, **kwargs)


async def settled(queue: TxQueue, length: int, inflight: int, timeout: float = 10.0) -> None:
    """Wait for the queue to hold ``length`` waiting and ``inflight`` leased messages."""
    deadline = time.monotonic() + timeout
    while True:
        stats = await queue.stats()
        if (stats["len"], stats["inflight"]) == (length, inflight):
            return
        assert time.monotonic() < deadline, "queue stayed at %s" % stats
        await sleep(0.02)


async def waiting_pollers(app, queue: str, count: int) -> None:
    await wait_until(lambda: app.dispatcher.subscriber_counts(queue).get("longpoll", 0) >= count)


# consume

@pytest_twisted.ensureDeferred
async def test_two_consume_loops_share_a_broadcast_queue_without_overlap(app):
    assert (await (await app.get("/p/shared")).json())["value"] == "broadcast"

    def loop(ack: bool) -> List[str]:
        queue = Queue("shared", url=app.url)
        return list(queue.consume(ack=ack, timeout=1.0))

    for ack in (False, True):
        first, second = in_thread(loop, ack), in_thread(loop, ack)
        await waiting_pollers(app, "shared", 2)
        sent = ["m%d" % i for i in range(200)]
        await in_thread(Queue("shared", url=app.url).put, *sent)
        one, two = await first, await second
        assert not set(one) & set(two)
        assert sorted(one + two) == sorted(sent)
        assert one and two, "both loops were waiting when the messages came"
        stats = await in_thread(Queue("shared", url=app.url).stats)
        assert (stats["len"], stats["inflight"]) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_consume_with_ack_acks_on_next_and_gives_back_on_an_exception(app):
    queue = Queue("acked", url=app.url)
    await in_thread(queue.put, "a", "b", "c")

    def fail_on_first() -> None:
        for value in queue.consume(ack=True):
            assert value == "a"
            raise ValueError("the job failed")

    with pytest.raises(ValueError):
        await in_thread(fail_on_first)
    stats = await in_thread(queue.stats)
    assert (stats["len"], stats["inflight"]) == (3, 0)  # "a" came back at once

    def take_two_then_leave_cleanly() -> List[Message]:
        taken = []
        with queue.consume(ack=True, messages=True) as messages:
            for message in messages:
                taken.append(message)
                if len(taken) == 2:
                    break  # inside `with`: a clean exit acks the message it was on
        return taken

    taken = await in_thread(take_two_then_leave_cleanly)
    assert [(m.value, m.deliveries) for m in taken] == [("a", 2), ("b", 1)]
    stats = await in_thread(queue.stats)
    assert (stats["len"], stats["inflight"]) == (1, 0)

    def break_plain_loop() -> None:
        for _ in queue.consume(ack=True):
            break  # a bare loop left early gives the message back

    await in_thread(break_plain_loop)
    stats = await in_thread(queue.stats)
    assert (stats["len"], stats["inflight"]) == (1, 0)
    assert await in_thread(lambda: list(queue.consume(ack=True, timeout=0.2, prefetch=5))) == ["c"]
    stats = await in_thread(queue.stats)
    assert (stats["len"], stats["inflight"]) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_consume_with_ack_extends_the_lease_of_a_slow_loop_body(app):
    queue = Queue("slowbody", url=app.url)
    await in_thread(queue.put, "long job")
    other = Queue("slowbody", url=app.url)
    seen = []

    def slow() -> None:
        for value in queue.consume(ack=True, lease=0.6, timeout=0.5):
            started = time.monotonic()
            # while this body runs two leases long, nobody else can take the message
            while time.monotonic() - started < 1.5:
                seen.append(other.reserve())
                time.sleep(0.1)

    await in_thread(slow)
    assert seen and all(message is None for message in seen)
    stats = await in_thread(queue.stats)
    assert (stats["len"], stats["inflight"]) == (0, 0)


# reserve with count, dead letters, settings

@pytest_twisted.ensureDeferred
async def test_reserve_count_answers_a_list_and_settles_many(app):
    queue = Queue("many", url=app.url)
    await in_thread(queue.put, *"abcde")
    leased = await in_thread(queue.reserve, 30, 3)
    assert [m.value for m in leased] == ["a", "b", "c"] and all(m.receipt for m in leased)
    assert await in_thread(queue.extend, *leased, seconds=60) == 3
    assert await in_thread(queue.nack, leased[0]) == 1
    assert await in_thread(queue.ack, leased[1:]) == 2
    assert [m.value for m in await in_thread(queue.reserve, 30, 10)] == ["a", "d", "e"]
    assert await in_thread(queue.reserve, 30, 10) == []
    assert await in_thread(queue.reserve) is None


@pytest_twisted.ensureDeferred
async def test_configure_and_settings(app):
    queue = Queue("configured", url=app.url)
    settings = await in_thread(queue.configure, max_receives=3, lease_seconds=12.5, maxlen=100)
    assert (settings["max_receives"], settings["lease_seconds"], settings["maxlen"]) == (3, 12.5, 100)
    assert (await in_thread(queue.settings))["max_receives"] == 3
    assert (await in_thread(queue.configure, maxlen=None))["maxlen"] == 0
    with pytest.raises(ClientError) as raised:
        await in_thread(queue.configure, max_receives=0)
    assert raised.value.status == 400


# work

@pytest_twisted.ensureDeferred
async def test_work_retries_then_dead_letters_at_max_receives_then_redrive_brings_it_back(app, caplog):
    queue = Queue("flaky", url=app.url, serializer=json)
    await in_thread(queue.configure, max_receives=3)
    await in_thread(queue.put, {"job": 1})
    attempts: List[int] = []

    def broken(message: Message) -> None:
        attempts.append(message.deliveries)
        raise RuntimeError("cannot do job %s" % message.value["job"])

    with caplog.at_level(logging.ERROR, logger="restmq.client"):
        handled = await in_thread(queue.work, broken, retry_delay=0.05, backoff=2, idle_timeout=5.0)
    assert handled == 3 and attempts == [1, 2, 3]
    failures = [r for r in caplog.records if r.name == "restmq.client" and r.exc_info]
    assert len(failures) == 3 and "cannot do job 1" in caplog.text and "to the dead letters" in caplog.text
    letters = await in_thread(queue.dead)
    assert letters == [DeadLetter("flaky:dead:1", {"job": 1}, "max_receives", 3, "flaky:1",
                                  letters[0].died_at)]
    assert await in_thread(queue.redrive) == 1
    assert await in_thread(queue.dead) == []
    done: List[Message] = []
    assert await in_thread(queue.work, done.append, limit=1) == 1
    assert [(m.value, m.deliveries) for m in done] == [({"job": 1}, 1)]
    stats = await in_thread(queue.stats)
    assert (stats["len"], stats["inflight"], stats["dead"]) == (0, 0, 0)


@pytest_twisted.ensureDeferred
async def test_work_gives_a_failed_message_back_with_its_retry_delay(app):
    queue = Queue("later", url=app.url)
    await in_thread(queue.put, "x")

    def broken(message: Message) -> None:
        raise RuntimeError("no")

    assert await in_thread(queue.work, broken, limit=1, retry_delay=3600) == 1
    stats = await in_thread(queue.stats)
    assert (stats["len"], stats["inflight"], stats["delayed"]) == (0, 0, 1)


@pytest_twisted.ensureDeferred
async def test_work_with_threads_handles_each_message_exactly_once(app):
    queue = Queue("pool", url=app.url)
    await in_thread(queue.put, *["j%d" % i for i in range(120)])
    handled: List[str] = []
    threads = set()
    lock = threading.Lock()

    def handler(message: Message) -> None:
        time.sleep(0.005)  # a job that takes a while, so the threads overlap
        with lock:
            handled.append(message.value)
            threads.add(threading.current_thread().name)

    assert await in_thread(queue.work, handler, concurrency=4, idle_timeout=2.0) == 120
    assert sorted(handled) == sorted("j%d" % i for i in range(120))
    assert len(threads) > 1
    stats = await in_thread(queue.stats)
    assert (stats["len"], stats["inflight"]) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_work_limit_prefetch_and_the_decorator(app):
    queue = Queue("limited", url=app.url)
    await in_thread(queue.put, *"abcdefg")
    seen: List[str] = []

    @queue.worker(limit=5, prefetch=3)
    def record(message: Message) -> None:
        seen.append(message.value)

    assert await in_thread(record) == 5
    assert seen == list("abcde")
    stats = await in_thread(queue.stats)
    assert (stats["len"], stats["inflight"]) == (2, 0)  # prefetched but not handled: given back

    @queue.worker
    def more(message: Message) -> None:
        seen.append(message.value)

    assert await in_thread(more, idle_timeout=0) == 2
    assert seen == list("abcdefg")


@pytest_twisted.ensureDeferred
async def test_work_extends_the_lease_while_a_slow_handler_runs(app):
    queue = Queue("slow", url=app.url)
    await in_thread(queue.put, "long job")
    other = Queue("slow", url=app.url)
    seen = []

    def slow(message: Message) -> None:
        started = time.monotonic()
        while time.monotonic() - started < 1.5:  # the job outlives its 0.6 s lease twice
            seen.append(other.reserve())
            time.sleep(0.1)

    assert await in_thread(queue.work, slow, lease=0.6, limit=1) == 1
    assert seen and all(message is None for message in seen)
    stats = await in_thread(queue.stats)
    assert (stats["len"], stats["inflight"]) == (0, 0)  # acked: the lease was never lost


@pytest_twisted.ensureDeferred
async def test_work_refuses_a_bad_queue_at_once(app):
    with pytest.raises(ClientError) as raised:
        await in_thread(Queue("bad#name", url=app.url).work, lambda m: None, limit=1, idle_timeout=5)
    assert raised.value.status == 400


# subscribe

@pytest_twisted.ensureDeferred
async def test_subscribe_reconnects_after_the_broker_ends_the_stream(app):
    queue = Queue("followed", url=app.url)
    got: List[str] = []

    def follow() -> None:
        for value in queue.subscribe():
            got.append(value)
            if len(got) == 3:
                return

    following = in_thread(follow)
    await wait_until(lambda: app.dispatcher.subscriber_counts("followed").get("sse") == 1)
    await app.post("/q/followed", data={"value": "one"})
    await wait_until(lambda: got == ["one"])
    await app.delete("/q/followed")  # closes its streams
    await wait_until(lambda: app.dispatcher.subscriber_counts("followed").get("sse") != 1)
    await wait_until(lambda: app.dispatcher.subscriber_counts("followed").get("sse") == 1)
    await app.post("/q/followed", data={"value": "two"})
    await app.post("/q/followed", data={"value": "three"})
    await following
    assert got == ["one", "two", "three"]


# the Twisted flavour: the same loops

@pytest_twisted.ensureDeferred
async def test_txqueue_consume_async_for_and_callback_forms(app):
    queue = TxQueue("txloop", url=app.url)
    await queue.put("a", "b", "c", "d")
    got = []
    async with queue.consume(ack=True, timeout=0.3) as messages:
        async for value in messages:
            got.append(value)
            if value == "b":
                break
    assert got == ["a", "b"]
    stats = await queue.stats()
    assert (stats["len"], stats["inflight"]) == (2, 0)

    async def fails(value: str) -> None:
        raise ValueError(value)

    with pytest.raises(ValueError):
        await queue.consume(fails, ack=True)
    stats = await queue.stats()
    assert (stats["len"], stats["inflight"]) == (2, 0)  # given back

    seen: List[str] = []
    assert await queue.consume(seen.append, ack=True, timeout=0.3) == 2
    assert seen == ["c", "d"]
    stats = await queue.stats()
    assert (stats["len"], stats["inflight"]) == (0, 0)
    await queue.close()


@pytest_twisted.ensureDeferred
async def test_txqueue_two_consumers_are_disjoint(app):
    first, second = TxQueue("txshared", url=app.url), TxQueue("txshared", url=app.url)
    one: List[str] = []
    two: List[str] = []
    loops = [first.consume(one.append, timeout=0.5), second.consume(two.append, ack=True, timeout=0.5)]
    await waiting_pollers(app, "txshared", 2)
    sent = ["m%d" % i for i in range(100)]
    await first.put(*sent)
    await defer.gatherResults(loops)
    assert not set(one) & set(two) and sorted(one + two) == sorted(sent) and one and two
    await first.close()
    await second.close()


@pytest_twisted.ensureDeferred
async def test_txqueue_work_retries_dead_letters_and_redrive(app):
    queue = TxQueue("txflaky", url=app.url)
    await queue.configure(max_receives=2)
    await queue.put("x", "y")
    attempts = []

    async def handler(message: Message) -> None:
        attempts.append((message.value, message.deliveries))
        if message.value == "x":
            raise RuntimeError("x always fails")

    assert await queue.work(handler, retry_delay=0.05, idle_timeout=5.0, concurrency=2) == 3
    assert sorted(attempts) == [("x", 1), ("x", 2), ("y", 1)]
    letters = await queue.dead()
    assert [(d.value, d.reason, d.deliveries) for d in letters] == [("x", "max_receives", 2)]
    assert await queue.redrive() == 1
    done: List[str] = []
    assert await queue.work(lambda m: done.append(m.value), limit=1) == 1
    assert done == ["x"]
    stats = await queue.stats()
    assert (stats["len"], stats["inflight"], stats["dead"]) == (0, 0, 0)
    await queue.close()


@pytest_twisted.ensureDeferred
async def test_txqueue_work_extends_leases_and_stops_when_cancelled(app):
    queue = TxQueue("txslow", url=app.url)
    await queue.put("slow")
    other = TxQueue("txslow", url=app.url)
    release = defer.Deferred()
    started = []

    def handler(message: Message) -> defer.Deferred:
        started.append(message)
        return release

    working = queue.work(handler, lease=0.6)
    await wait_until(lambda: started)
    began = time.monotonic()
    seen = []
    while time.monotonic() - began < 1.5:  # two leases long
        seen.append(await other.reserve())
        await sleep(0.1)
    assert seen and all(message is None for message in seen)
    working.cancel()
    with pytest.raises(defer.CancelledError):
        await working
    release.callback(None)  # the handler finishes after the cancel: its message is still acked
    await settled(queue, 0, 0)
    await queue.close()
    await other.close()


@pytest_twisted.ensureDeferred
async def test_txqueue_reserve_count_and_subscribe(app):
    queue = TxQueue("txmore", url=app.url)
    await queue.put("a", "b")
    leased = await queue.reserve(30, count=5)
    assert [m.value for m in leased] == ["a", "b"]
    assert await queue.ack(*leased) == 2
    assert await queue.reserve(30, count=5) == []
    assert await queue.reserve() is None
    received: List[str] = []
    following = queue.subscribe(received.append)
    await wait_until(lambda: app.dispatcher.subscriber_counts("txmore").get("sse") == 1)
    await app.post("/q/txmore", data={"value": "one"})
    await wait_until(lambda: received == ["one"])
    await app.delete("/q/txmore")
    await wait_until(lambda: app.dispatcher.subscriber_counts("txmore").get("sse") != 1)
    await wait_until(lambda: app.dispatcher.subscriber_counts("txmore").get("sse") == 1)
    await app.post("/q/txmore", data={"value": "two"})
    await wait_until(lambda: received == ["one", "two"])
    following.cancel()
    with pytest.raises(defer.CancelledError):
        await following
    await wait_until(lambda: app.dispatcher.subscriber_counts("txmore") == {})
    await queue.close()


@pytest_twisted.ensureDeferred
async def test_queue_names_with_spaces_slashes_and_plus_signs(app):
    name = "reports/2026 q4+é"
    queue = Queue(name, url=app.url)
    assert await in_thread(queue.put, "a", "b") == ["%s:1" % name, "%s:2" % name]
    leased = await in_thread(queue.reserve, 30, 2)
    assert [m.queue for m in leased] == [name, name]
    assert await in_thread(queue.ack, *leased) == 2
    assert (await in_thread(queue.configure, max_receives=2))["max_receives"] == 2
    assert await in_thread(queue.dead) == []
    assert name in await in_thread(Broker(app.url).queues)
    tx = TxQueue(name, url=app.url)
    await tx.put("c")
    assert (await tx.reserve(30)).value == "c"
    await tx.close()
