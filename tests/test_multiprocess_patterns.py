"""Consumer groups, request/reply and multiplexed streams across two real
`twistd -n restmq` processes on one Redis (sweeps once an hour: every delivery
here is woken through Redis pub/sub)."""

from __future__ import annotations

import json
import time

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor
from twisted.web.client import HTTPConnectionPool

from tests.helpers import free_port, sleep, wait_until
from tests.processes import Broker, StreamClient
from tests.streaming import WsClient

SLOW_SWEEP = 3600


def _broker(directory, name: str, redis_server, extra: str = "", port: int = 0) -> Broker:
    conf = directory / ("%s.conf" % name)
    conf.write_text("[dispatch]\nsweep_interval = %s\n%s" % (SLOW_SWEEP, extra))
    return Broker(port or free_port(), ["--config", str(conf), "--redis",
                                        "redis://127.0.0.1:%d/0" % redis_server.port],
                  str(directory / ("%s.log" % name)))


@pytest.fixture(scope="module")
def brokers(redis_server, tmp_path_factory):
    directory = tmp_path_factory.mktemp("pattern-brokers")
    started = []
    try:
        for name in ("a", "b"):
            started.append(_broker(directory, name, redis_server).start())
        yield started
    finally:
        for broker in started:
            broker.stop()


@pytest_twisted.async_yield_fixture()
async def http():
    pool = HTTPConnectionPool(reactor, persistent=False)
    yield pool
    await pool.closeCachedConnections()


# this broker's JSON answers (the original's clients get its shorter /stats)
JSON_API = {"Accept": "application/json"}


async def post(pool, url: str, **kwargs):
    response = await treq.post(url, pool=pool, timeout=30, **kwargs)
    text = await response.text()
    if response.headers.getRawHeaders("Content-Type", [""])[0].startswith("application/json"):
        return response.code, json.loads(text or "null")
    return response.code, text


async def publish_batch(pool, broker: Broker, queue: str, values) -> None:
    code, _ = await post(pool, "%s/q/%s" % (broker.url, queue), data=json.dumps(values).encode(),
                         headers={"Content-Type": "application/json"})
    assert code == 200


async def subscribers(pool, broker: Broker, queue: str, group: str, transport: str) -> int:
    response = await treq.get("%s/q/%s/groups/%s" % (broker.url, queue, group), pool=pool, timeout=10)
    return (await response.json())["subscribers"].get(transport, 0)


async def until(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "%s: not within %.0f s" % (what, timeout)
        await sleep(0.02)


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_two_groups_each_get_all_messages_shared_by_members_on_both_processes(brokers, redis, http):
    a, b = brokers
    for group in ("billing", "audit"):
        assert (await post(http, "%s/q/orders/groups/%s" % (a.url, group)))[0] in (200, 201)
    billing_sse = await StreamClient.open(a.url, "orders?group=billing", http, sse=True)
    billing_comet = await StreamClient.open(b.url, "orders?group=billing", http)
    audit_ws = await WsClient.open(a.port, "/ws/orders?group=audit")
    audit_sse = await StreamClient.open(b.url, "orders?group=audit", http, sse=True)
    streams = [billing_sse, billing_comet, audit_sse]
    try:
        for broker, group, transport in ((a, "billing", "sse"), (b, "billing", "comet"),
                                         (a, "audit", "websocket"), (b, "audit", "sse")):
            async def joined(broker=broker, group=group, transport=transport):
                return await subscribers(http, broker, "orders", group, transport) == 1
            await until(joined, "%s member on %s" % (group, broker.port))
        popped = []
        done = defer.Deferred()

        async def rest_member():
            # a REST member of billing on b, popping while the streams run
            while not done.called:
                response = await treq.get(b.url + "/q/orders?group=billing&count=20&wait=0.5",
                                          pool=http, timeout=10)
                if response.code == 200:
                    popped.extend(m["value"] for m in (await response.json())["messages"])
                else:
                    await response.text()
        member = defer.ensureDeferred(rest_member())
        sent = ["m%d" % i for i in range(1000)]
        for start in range(0, 1000, 100):
            await publish_batch(http, (a, b)[start // 100 % 2], "orders", sent[start:start + 100])

        def billing():
            return billing_sse.values + billing_comet.values + popped

        def audit():
            return [m["value"] for m in audit_ws.messages()] + audit_sse.values
        await wait_until(lambda: len(billing()) >= 1000 and len(audit()) >= 1000, timeout=60)
        done.callback(None)
        await member
        assert sorted(billing()) == sorted(sent), "billing lost or doubled messages"
        assert sorted(audit()) == sorted(sent), "audit lost or doubled messages"
        shares = [len(billing_sse.values), len(billing_comet.values), len(popped)]
        print("billing shares (sse a, comet b, rest b):", shares,
              "audit shares (ws a, sse b):", [len(audit_ws.messages()), len(audit_sse.values)])
        assert sum(1 for share in shares if share) >= 2, "the members did not share the work"
        # the default consumers still hold all 1,000; the groups nothing
        stats = await (await treq.get(a.url + "/stats/orders", pool=http, timeout=10,
                                      headers=JSON_API)).json()
        assert stats["len"] == 1000
        assert stats["groups"]["billing"]["len"] == stats["groups"]["audit"]["len"] == 0
    finally:
        for stream in streams:
            await stream.close()
        audit_ws.close()


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_killed_member_has_its_leases_redelivered_within_its_group_only(
        brokers, redis_server, redis, http, tmp_path):
    a, b = brokers
    for group in ("work", "other"):
        await post(http, "%s/q/kq/groups/%s" % (a.url, group))
    # a third process whose acked stream leases for 1 s and then dies without acking
    doomed = _broker(tmp_path, "doomed", redis_server, "[delivery]\nlease_seconds = 1\n").start()
    try:
        member = await WsClient.open(doomed.port, "/ws/kq?group=work&ack=1&prefetch=10")
        await until(lambda: subscribers_is(http, doomed, "kq", "work", "websocket", 1), "doomed member")
        await publish_batch(http, a, "kq", ["k%d" % i for i in range(5)])
        await wait_until(lambda: len(member.messages()) == 5, timeout=30)
        assert all(m["deliveries"] == 1 for m in member.messages())
        doomed.kill()
    finally:
        doomed.stop()
    # after the lease runs out, another member of the group gets them again, counted
    again = []

    async def redelivered():
        response = await treq.get(b.url + "/q/kq?group=work&reserve=60&count=10", pool=http, timeout=10)
        if response.code == 200:
            again.extend((await response.json())["messages"])
        else:
            await response.text()
        return len(again) >= 5
    await until(redelivered, "redelivery within the group")
    assert sorted(m["value"] for m in again) == ["k%d" % i for i in range(5)]
    assert all(m["deliveries"] == 2 for m in again)
    # the other group and the default consumers never saw a delivery of theirs
    other = await (await treq.get(a.url + "/q/kq?group=other&reserve=60&count=10", pool=http)).json()
    assert sorted(m["value"] for m in other["messages"]) == ["k%d" % i for i in range(5)]
    assert all(m["deliveries"] == 1 for m in other["messages"])
    stats = await (await treq.get(a.url + "/stats/kq", pool=http, headers=JSON_API)).json()
    assert (stats["len"], stats["inflight"]) == (5, 0)


async def subscribers_is(pool, broker, queue, group, transport, count) -> bool:
    return await subscribers(pool, broker, queue, group, transport) == count


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_rpc_with_caller_and_worker_on_different_processes(brokers, http):
    a, b = brokers
    call = defer.ensureDeferred(post(http, a.url + "/rpc/rpcq?timeout=20", data={"value": "2+2"}))
    response = await treq.get(b.url + "/q/rpcq?wait=20", pool=http, timeout=30)
    request = await response.json()
    assert request["value"] == "2+2"
    reply = json.dumps({"value": "4", "attributes": {"worker": "b"}}).encode()
    code, _ = await post(http, "%s/reply/%s" % (b.url, request["attributes"]["reply_to"]), data=reply,
                         headers={"Content-Type": "application/json"})
    assert code == 200
    code, answer = await call
    assert (code, answer["value"], answer["attributes"]) == (200, "4", {"worker": "b"})


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_rpc_timeout_across_processes_and_the_late_reply(brokers, http):
    a, b = brokers
    code, answer = await post(http, a.url + "/rpc/slowq?timeout=0.5", data={"value": "?"})
    assert (code, answer["error"]["code"]) == (504, "timeout")
    request = await (await treq.get(b.url + "/q/slowq", pool=http)).json()
    code, _ = await post(http, "%s/reply/%s" % (b.url, request["attributes"]["reply_to"]),
                         data={"value": "late"})
    assert code == 404


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_multiplexed_sse_resumes_each_queue_after_a_broker_restart(
        brokers, redis_server, http, tmp_path):
    a, b = brokers
    port = free_port()
    restarted = _broker(tmp_path, "restarted", redis_server, port=port).start()
    # b keeps both queues streamed (and their history recorded) while the client is away
    anchor = await StreamClient.open(b.url, "?queues=mx,my", http)
    try:
        client = await StreamClient.open(restarted.url, "?queues=mx,my", http, sse=True)
        await until(lambda: broadcast_subscribers(http, restarted, "my"), "client subscribed")
        await until(lambda: broadcast_subscribers(http, b, "my"), "anchor subscribed")
        for queue, value in (("mx", "x1"), ("my", "y1")):
            await post(http, "%s/q/%s" % (a.url, queue), data={"value": value})
        await wait_until(lambda: len(client.messages) == 2 and len(anchor.messages) == 2, timeout=30)
        assert [(m["queue"], m["value"]) for m in client.messages] == [("mx", "x1"), ("my", "y1")]
        last_id = client.ids[-1]
        restarted.stop()
        await client.ended
        for queue, value in (("my", "y2"), ("mx", "x2"), ("my", "y3")):
            await post(http, "%s/q/%s" % (a.url, queue), data={"value": value})
        await wait_until(lambda: len(anchor.messages) == 5, timeout=30)
        restarted = _broker(tmp_path, "restarted", redis_server, port=port).start()
        resumed = await StreamClient.open(restarted.url, "?queues=mx,my", http, sse=True,
                                          last_event_id=last_id)
        try:
            await wait_until(lambda: len(resumed.messages) >= 3, timeout=30)
            await sleep(0.2)
            assert sorted((m["queue"], m["value"]) for m in resumed.messages) == [
                ("mx", "x2"), ("my", "y2"), ("my", "y3")]
            assert resumed.events == []
            assert [m["value"] for m in resumed.messages if m["queue"] == "my"] == ["y2", "y3"]
        finally:
            await resumed.close()
    finally:
        await anchor.close()
        restarted.stop()


async def broadcast_subscribers(pool, broker, queue) -> bool:
    stats = await (await treq.get("%s/stats/%s" % (broker.url, queue), pool=pool, timeout=10,
                                  headers=JSON_API)).json()
    return sum(stats["subscribers"].values()) >= 1
