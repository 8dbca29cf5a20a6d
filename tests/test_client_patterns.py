"""The clients over the delivery patterns: attributes and ordering keys, consumer
groups, request/reply, priority take and many queues on one stream."""

from __future__ import annotations

import json
from typing import List

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from restmq.client import Broker, ClientError, Message, Queue, TxBroker, TxQueue
from tests.helpers import wait_until


def in_thread(function, *args, **kwargs):
    return deferToThread(function, *args, **kwargs)


@pytest_twisted.ensureDeferred
async def test_attributes_and_ordering_keys_travel_with_the_messages(app):
    queue = Queue("ledger", url=app.url, serializer=json)
    keys = await in_thread(queue.put, {"op": "debit"}, {"op": "credit"}, attributes={"account": "7"},
                           ordering_key="account-7")
    assert keys == ["ledger:1", "ledger:2"]
    assert await in_thread(queue.put, {"op": "other"}, ordering_key="account-8") == "ledger:3"
    first = await in_thread(queue.reserve, 30)
    assert (first.value, first.attributes, first.ordering_key) == \
        ({"op": "debit"}, {"account": "7"}, "account-7")
    # the credit waits for the debit's ack; another key flows meanwhile
    other = await in_thread(queue.reserve, 30)
    assert other.value == {"op": "other"} and other.attributes == {}
    assert await in_thread(queue.reserve, 30) is None
    assert await in_thread(first.ack) == 1
    second = await in_thread(queue.reserve, 30)
    assert second.value == {"op": "credit"} and second.attributes == {"account": "7"}
    assert await in_thread(second.nack) == 1 and await in_thread(other.ack) == 1
    with pytest.raises(ClientError) as raised:
        await in_thread(queue.put, "x", attributes={"n": "x" * 9000})
    assert raised.value.status == 400
    with pytest.raises(TypeError):
        queue.put("x", attributes={"n": 1})


@pytest_twisted.ensureDeferred
async def test_each_group_gets_every_message_and_its_members_compete(app):
    orders = Queue("orders", url=app.url)
    assert await in_thread(orders.create_group, "billing") is True
    assert await in_thread(orders.create_group, "billing") is False
    assert await in_thread(orders.create_group, "audit") is True
    await in_thread(orders.put, "order-1", "order-2", "order-3")

    billed: List[Message] = []
    assert await in_thread(orders.work, billed.append, group="billing", idle_timeout=2.0) == 3
    assert [(m.value, m.group) for m in billed] == \
        [("order-1", "billing"), ("order-2", "billing"), ("order-3", "billing")]
    audit = Queue("orders", url=app.url, group="audit")
    first, second = (in_thread(lambda: list(audit.consume(ack=True, timeout=0.5))) for _ in range(2))
    audited = await first + await second
    assert sorted(audited) == ["order-1", "order-2", "order-3"]
    # the default consumers still have all three
    assert await in_thread(orders.get) == "order-1"
    groups = {entry["name"]: entry for entry in await in_thread(orders.groups)}
    assert (groups["billing"]["len"], groups["audit"]["inflight"]) == (0, 0)
    await in_thread(orders.configure, group="billing", max_receives=1)
    assert (await in_thread(orders.settings, "billing"))["max_receives"] == 1
    assert (await in_thread(orders.settings))["max_receives"] != 1
    assert await in_thread(orders.delete_group, "audit") == 0
    with pytest.raises(ClientError) as raised:
        await in_thread(orders.reserve, group="audit")
    assert (raised.value.status, raised.value.code) == (404, "group_not_found")


@pytest_twisted.ensureDeferred
async def test_group_dead_letters_and_redrive(app):
    jobs = Queue("gjobs", url=app.url, group="g")
    await in_thread(jobs.create_group, "g")
    await in_thread(jobs.configure, max_receives=1)
    await in_thread(jobs.put, "bad")

    def broken(message: Message) -> None:
        raise RuntimeError("no")

    assert await in_thread(jobs.work, broken, idle_timeout=2.0, retry_delay=0) == 1
    letters = await in_thread(jobs.dead)
    assert [(d.value, d.reason) for d in letters] == [("bad", "max_receives")]
    assert await in_thread(jobs.dead, group="") == []  # the default consumers' own dead letters
    assert await in_thread(jobs.redrive) == 1
    assert (await in_thread(jobs.reserve)).value == "bad"


@pytest_twisted.ensureDeferred
async def test_call_waits_for_the_reply_of_a_worker(app):
    calc = Queue("calc", url=app.url)

    def answer(message: Message) -> None:
        left, right = message.value.split("+")
        assert message.reply_to
        message.reply(str(int(left) + int(right)), attributes={"by": "worker-1"})

    working = in_thread(calc.work, answer, limit=1)
    reply = await in_thread(calc.call, "2+2", timeout=10, attributes={"from": "test"})
    assert (reply.value, reply.attributes, reply.key) == ("4", {"by": "worker-1"}, "calc:1")
    assert await working == 1
    with pytest.raises(ClientError) as raised:
        await in_thread(calc.call, "nobody listens", timeout=0.3)
    assert (raised.value.status, raised.value.code) == (504, "timeout")
    late = await in_thread(calc.get_message)
    assert late.value == "nobody listens"
    with pytest.raises(ClientError) as raised:
        await in_thread(late.reply, "too late")
    assert raised.value.status == 404
    with pytest.raises(ValueError):
        Message("calc:9", "no request").reply("x")


@pytest_twisted.ensureDeferred
async def test_broker_takes_by_priority_and_streams_several_queues(app):
    broker = Broker(app.url)
    await in_thread(broker.queue("low").put, "l1")
    await in_thread(broker.queue("high").put, "h1")
    first = await in_thread(broker.reserve, ["high", "low"], 30)
    assert (first.queue, first.value) == ("high", "h1")
    assert await in_thread(first.ack) == 1  # settled in its own queue
    assert [(m.queue, m.value) for m in await in_thread(broker.take, ["high", "low"], 5)] == [("low", "l1")]
    assert await in_thread(broker.take, ["high", "low"]) is None

    streamed: List[Message] = []

    def follow() -> None:
        for message in broker.subscribe(["alerts", "chat"]):
            streamed.append(message)
            if len(streamed) == 2:
                return

    following = in_thread(follow)
    await wait_until(lambda: app.dispatcher.subscriber_counts("chat").get("sse") == 1)
    await app.post("/q/chat", data={"value": "hi"})
    await app.post("/q/alerts", data={"value": "disk full"})
    await following
    assert sorted((m.queue, m.value) for m in streamed) == [("alerts", "disk full"), ("chat", "hi")]


# the Twisted flavour

@pytest_twisted.ensureDeferred
async def test_txqueue_groups_call_and_reply(app):
    calc = TxQueue("txcalc", url=app.url)

    def answer(message: Message):
        return message.reply(message.value.upper())

    working = calc.work(answer, limit=1)
    reply = await calc.call("shout", timeout=10)
    assert reply.value == "SHOUT"
    assert await working == 1

    orders = TxQueue("txorders", url=app.url, group="billing")
    assert await orders.create_group("billing") is True
    await orders.put("o1", attributes={"tenant": "t1"})
    message = await orders.reserve(30)
    assert (message.value, message.group, message.attributes) == ("o1", "billing", {"tenant": "t1"})
    assert await message.ack() == 1
    assert [g["name"] for g in await orders.groups()] == ["billing"]
    broker = TxBroker(app.url)
    await broker.queue("txlow").put("l1")
    taken = await broker.reserve(["txhigh", "txlow"], 30)
    assert (taken.queue, taken.value) == ("txlow", "l1")
    assert await taken.ack() == 1
    for client in (calc, orders, broker):
        await client.close()
