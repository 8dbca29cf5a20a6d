"""Consumer groups, attributes and ordering keys: the store against a real Redis,
and the HTTP routes on a real socket."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import defer

from restmq.errors import BadRequest, GroupNotFound
from restmq.model import MessageMeta
from tests.helpers import wait_until
from tests.streaming import Stream, WsClient


# storage: groups


@pytest_twisted.ensureDeferred
async def test_group_gets_every_message_and_default_consumers_still_do(store):
    assert await store.create_group("g", "billing") is True
    assert await store.create_group("g", "billing") is False
    await store.create_group("g", "audit")
    await store.add("g", ["a", "b"])
    assert [m.value for m in await store.take("g", 10)] == ["a", "b"]
    assert [m.value for m in await store.take("g", 10, group="billing")] == ["a", "b"]
    assert [m.value for m in await store.take("g", 10, group="audit")] == ["a", "b"]
    assert await store.take("g", 10, group="audit") == []


@pytest_twisted.ensureDeferred
async def test_group_body_stored_once_and_removed_by_the_last_holder(store, redis):
    await store.create_group("g", "one")
    await store.create_group("g", "two")
    [key] = (await store.add("g", ["body"])).keys
    assert await redis.hget("g:refs", key) == "3"
    await store.take("g")
    [leased] = await store.reserve("g", 1, 60000, group="one")
    assert await redis.get(key) == "body"
    await store.ack("g", [leased.receipt], group="one")
    assert await redis.get(key) == "body"
    await store.take("g", group="two")
    # the last holder is done: body, count and bookkeeping are gone
    for gone in (key,):
        assert await redis.exists(gone) == 0
    assert await redis.hexists("g:refs", key) == 0


@pytest_twisted.ensureDeferred
async def test_queue_without_groups_keeps_the_original_layout(store, redis):
    [key] = (await store.add("plain", ["x"])).keys
    assert await redis.exists("plain:refs") == 0
    assert await redis.exists("plain:meta") == 0
    assert await redis.lrange("plain:queue", 0, -1) == [key]
    assert await redis.rpop("plain:queue") == key  # an original client pops it as before


@pytest_twisted.ensureDeferred
async def test_group_created_later_gets_only_later_messages(store):
    await store.add("late", ["before"])
    await store.create_group("late", "g")
    await store.add("late", ["after"])
    assert [m.value for m in await store.take("late", 10, group="g")] == ["after"]


@pytest_twisted.ensureDeferred
async def test_unknown_group_is_refused(store):
    await store.add("q", ["x"])
    with pytest.raises(GroupNotFound):
        await store.take("q", group="nope")
    with pytest.raises(BadRequest):
        await store.take("q", group="bad:name")


@pytest_twisted.ensureDeferred
async def test_group_leases_expire_within_the_group(store):
    await store.create_group("lq", "workers")
    await store.create_group("lq", "other")
    await store.add("lq", ["job"])
    [first] = await store.reserve("lq", 1, 1, group="workers")
    await wait_until_redelivered(store, "lq", "workers")
    # the other group's copy was never touched, the default one neither
    assert [m.deliveries for m in await store.reserve("lq", 1, 60000, group="other")] == [1]
    assert [m.value for m in await store.take("lq")] == ["job"]
    assert first.deliveries == 1


async def wait_until_redelivered(store, queue, group):
    from tests.helpers import sleep
    for _ in range(500):
        again = await store.reserve(queue, 1, 60000, group=group)
        if again:
            assert again[0].deliveries == 2
            return again[0]
        await sleep(0.01)
    raise AssertionError("the lease never expired")


@pytest_twisted.ensureDeferred
async def test_group_dead_letters_and_redrive_stay_in_the_group(store):
    await store.create_group("dq", "g")
    await store.set_settings("dq", {"max_receives": "1"}, group="g")
    await store.add("dq", [json.dumps({"n": 1})], metas=[MessageMeta({"tenant": "t1"})])
    [leased] = await store.reserve("dq", 1, 60000, group="g")
    assert await store.nack("dq", [leased.receipt], group="g") == (1, [])
    [letter] = await store.dead_letters("dq", group="g")
    assert letter["attributes"] == {"tenant": "t1"}
    assert letter["dead"]["reason"] == "max_receives"
    assert await store.dead_letters("dq") == []
    assert await store.redrive("dq", group="g") == 1
    [again] = await store.take("dq", group="g")
    assert again.attributes == {"tenant": "t1"}
    # the default consumers still have their own copy, and only one
    assert len(await store.take("dq", 10)) == 1


@pytest_twisted.ensureDeferred
async def test_delete_group_releases_its_backlog_in_chunks(store, redis):
    await store.create_group("big", "g")
    await store.add("big", [str(i) for i in range(50)])
    await store.take("big", 50)
    assert await redis.hlen("big:refs") == 50
    assert await store.delete_group("big", "g", chunk=7) == (True, 50)
    assert await redis.exists("big:refs") == 0
    assert await redis.exists("big#g:queue") == 0
    assert await redis.dbsize() > 0
    assert await store.delete_group("big", "g") == (False, 0)
    with pytest.raises(GroupNotFound):
        await store.take("big", group="g")


@pytest_twisted.ensureDeferred
async def test_stats_count_each_group(store):
    await store.create_group("s", "a")
    await store.add("s", ["1", "2", "3"])
    await store.reserve("s", 1, 60000, group="a")
    [info] = await store.stats("s")
    [group] = info.groups
    assert (group.name, group.length, group.inflight, group.dead) == ("a", 2, 1, 0)
    assert info.length == 3
    assert [g.name for g in await store.groups("s")] == ["a"]


@pytest_twisted.ensureDeferred
async def test_purge_empties_the_groups_too(store, redis):
    await store.create_group("p", "a")
    await store.add("p", ["1", "2"], metas=[MessageMeta(ordering_key="k"), None])
    assert await store.purge("p") == 2
    assert await store.take("p", 10, group="a") == []
    for key in ("p:1", "p:2", "p:refs", "p:meta", "p:okey", "p#a:queue"):
        assert await redis.exists(key) == 0


# storage: attributes


@pytest_twisted.ensureDeferred
async def test_attributes_travel_with_every_take(store):
    meta = MessageMeta({"type": "order", "tenant": "t1"}, system={"sqs": {"n": {"DataType": "Number"}}})
    await store.add("at", ["x", "y"], metas=[meta, None])
    [leased, plain] = await store.reserve("at", 2, 60000)
    assert leased.attributes == {"type": "order", "tenant": "t1"}
    assert leased.meta.system == {"sqs": {"n": {"DataType": "Number"}}}
    assert plain.meta is None
    assert leased.as_dict()["attributes"] == {"type": "order", "tenant": "t1"}
    assert "attributes" not in plain.as_dict()
    await store.nack("at", [leased.receipt])
    [again] = await store.take("at")
    assert again.attributes == {"type": "order", "tenant": "t1"}


@pytest_twisted.ensureDeferred
async def test_attributes_are_removed_with_the_body(store, redis):
    await store.add("ar", ["x"], metas=[MessageMeta({"a": "b"})])
    assert await redis.hlen("ar:meta") == 1
    await store.take("ar")
    assert await redis.exists("ar:meta") == 0


@pytest_twisted.ensureDeferred
async def test_job_view_and_peek_show_attributes(store):
    await store.add("jv", ["x"], metas=[MessageMeta({"a": "b"})])
    _, [job] = await store.jobs("jv")
    assert job.attributes == {"a": "b"}
    peeked = await store.peek("jv")
    assert peeked.attributes == {"a": "b"}


# storage: ordering keys


@pytest_twisted.ensureDeferred
async def test_ordering_key_holds_later_messages_while_one_is_leased(store):
    metas = [MessageMeta(ordering_key=k) for k in ("a", "a", "b", "a", "b")]
    await store.add("ok", ["a1", "a2", "b1", "a3", "b2"], metas=metas)
    first = await store.reserve("ok", 10, 60000)
    # one per key in flight: a1 and b1; a2, a3 and b2 wait for them
    assert [m.value for m in first] == ["a1", "b1"]
    assert await store.reserve("ok", 10, 60000) == []
    [info] = await store.stats("ok")
    assert (info.length, info.inflight) == (3, 2)
    await store.ack("ok", [first[0].receipt])
    assert [m.value for m in await store.reserve("ok", 10, 60000)] == ["a2"]
    await store.ack("ok", [first[1].receipt])
    [b2] = await store.reserve("ok", 10, 60000)
    assert b2.value == "b2"
    assert b2.meta.ordering_key == "b"


@pytest_twisted.ensureDeferred
async def test_ordering_key_stays_held_through_a_nack(store):
    metas = [MessageMeta(ordering_key="k")] * 2
    await store.add("on", ["1", "2"], metas=metas)
    [one] = await store.reserve("on", 5, 60000)
    await store.nack("on", [one.receipt], delay_ms=60000)
    # 1 is delayed but still holds k: 2 may not overtake it
    assert await store.reserve("on", 5, 60000) == []
    [info] = await store.stats("on")
    assert (info.length, info.delayed) == (1, 1)


@pytest_twisted.ensureDeferred
async def test_ordering_key_redelivers_in_order_after_expiry(store):
    metas = [MessageMeta(ordering_key="k")] * 3
    await store.add("oe", ["1", "2", "3"], metas=metas)
    [one] = await store.reserve("oe", 5, 1)
    again = await wait_until_redelivered(store, "oe", "")
    assert again.value == "1"
    await store.ack("oe", [again.receipt])
    assert [m.value for m in await store.reserve("oe", 5, 60000)] == ["2"]


@pytest_twisted.ensureDeferred
async def test_plain_pops_ignore_ordering_keys(store):
    metas = [MessageMeta(ordering_key="k")] * 3
    await store.add("op", ["1", "2", "3"], metas=metas)
    assert [m.value for m in await store.take("op", 5)] == ["1", "2", "3"]


@pytest_twisted.ensureDeferred
async def test_ordering_keys_are_per_group(store):
    await store.create_group("og", "g")
    metas = [MessageMeta(ordering_key="k")] * 2
    await store.add("og", ["1", "2"], metas=metas)
    [held] = await store.reserve("og", 5, 60000)
    # the group has its own hold on k
    assert [m.value for m in await store.reserve("og", 5, 60000, group="g")] == ["1"]
    await store.ack("og", [held.receipt])
    assert [m.value for m in await store.reserve("og", 5, 60000)] == ["2"]


# HTTP


@pytest_twisted.ensureDeferred
async def test_http_group_routes(app):
    response = await app.post("/q/jobs/groups/billing")
    assert response.code == 201
    assert (await response.json())["created"] is True
    assert (await app.post("/q/jobs/groups/billing")).code == 200
    await app.post("/q/jobs", data={"value": "hello"})
    listed = await (await app.get("/q/jobs/groups")).json()
    assert [(g["name"], g["len"]) for g in listed["groups"]] == [("billing", 1)]
    popped = await (await app.get("/q/jobs?group=billing")).json()
    assert popped["value"] == "hello"
    assert (await app.get("/q/jobs?group=billing")).code == 204
    assert (await (await app.get("/q/jobs")).json())["value"] == "hello"
    stats = await (await app.get("/stats/jobs")).json()
    assert stats["groups"]["billing"]["len"] == 0
    missing = await app.get("/q/jobs?group=nope")
    assert missing.code == 404
    assert (await missing.json())["error"]["code"] == "group_not_found"
    assert (await app.get("/q/jobs?group=a:b")).code == 400
    deleted = await app.delete("/q/jobs/groups/billing")
    assert deleted.code == 200
    assert (await app.delete("/q/jobs/groups/billing")).code == 404


@pytest_twisted.ensureDeferred
async def test_http_group_reserve_ack(app):
    await app.post("/q/r/groups/w")
    await app.post("/q/r", data={"value": "job"})
    leased = await (await app.get("/q/r?group=w&reserve=30")).json()
    assert leased["deliveries"] == 1
    # a receipt of the group is not one of the default consumers
    assert (await app.post("/q/r/ack", data={"receipt": leased["receipt"]})).code == 409
    assert (await app.post("/q/r/ack?group=w", data={"receipt": leased["receipt"]})).code == 200


@pytest_twisted.ensureDeferred
async def test_http_attributes_on_publish_and_pop(app):
    body = json.dumps({"value": "hi", "attributes": {"type": "greeting"}, "ordering_key": "u1"})
    response = await app.post("/q/a", data=body.encode(), headers={"Content-Type": "application/json"})
    assert response.code == 200
    popped = await (await app.get("/q/a?reserve=30")).json()
    assert popped["attributes"] == {"type": "greeting"}
    assert popped["ordering_key"] == "u1"
    jobs = await app.post("/q/j", data=json.dumps({"value": "x", "attributes": {"k": "v"}}).encode(),
                          headers={"Content-Type": "application/json"})
    assert jobs.code == 200
    view = await (await app.get("/j/j")).json()
    assert view["jobs"][0]["attributes"] == {"k": "v"}


@pytest.mark.parametrize("attributes", [
    {"n": 1}, ["a"], {"": "x"}, {("k%d" % i): "v" for i in range(33)}, {"big": "x" * 9000}])
@pytest_twisted.ensureDeferred
async def test_http_attributes_past_the_bounds_are_refused(app, attributes):
    body = json.dumps({"value": "x", "attributes": attributes})
    response = await app.post("/q/b", data=body.encode(), headers={"Content-Type": "application/json"})
    assert response.code == 400
    assert (await response.json())["error"]["code"] == "bad_request"
    assert (await app.get("/q/b")).code == 204


@pytest_twisted.ensureDeferred
async def test_http_ordering_key_form_field(app):
    for value in ("1", "2"):
        await app.post("/q/of", data={"value": value, "ordering_key": "k"})
    first = await (await app.get("/q/of?reserve=30")).json()
    assert first["value"] == "1"
    assert (await app.get("/q/of?reserve=30")).code == 204
    assert (await app.post("/q/of", data={"value": "x", "ordering_key": ""})).code == 400


@pytest_twisted.ensureDeferred
async def test_attributes_on_every_stream_transport(app):
    await app.post("/q/st/groups/g")
    comet = await Stream.open(app.port, "/c/st")
    sse = await Stream.open(app.port, "/sse/st?group=g")
    try:
        await wait_until(lambda: app.dispatcher.subscriber_counts("st#g").get("sse") == 1)
        body = json.dumps({"value": "v", "attributes": {"x": "1"}})
        await app.post("/q/st", data=body.encode(), headers={"Content-Type": "application/json"})
        await wait_until(lambda: comet.lines() and sse.messages())
        assert comet.lines()[0]["attributes"] == {"x": "1"}
        assert sse.messages()[0]["attributes"] == {"x": "1"}
    finally:
        comet.close()
        sse.close()
    ws = await WsClient.open(app.port, "/ws/st2")
    try:
        await wait_until(lambda: app.dispatcher.subscriber_counts("st2").get("websocket") == 1)
        body = json.dumps({"value": "w", "attributes": {"y": "2"}})
        await app.post("/q/st2", data=body.encode(), headers={"Content-Type": "application/json"})
        await wait_until(lambda: ws.poll() or ws.messages())
        assert ws.messages()[0]["attributes"] == {"y": "2"}
    finally:
        ws.close()


@pytest_twisted.ensureDeferred
async def test_ordering_keys_under_four_competing_consumers(app):
    keys = ["k%d" % i for i in range(5)]
    sent = {key: [] for key in keys}
    batch = []
    for i in range(40):
        key = keys[i % 5]
        sent[key].append("%s-%d" % (key, len(sent[key])))
        batch.append({"value": sent[key][-1], "ordering_key": key})
    response = await app.post("/q/ok4", data=json.dumps(batch).encode(),
                              headers={"Content-Type": "application/json"})
    assert response.code == 200
    received = {key: [] for key in keys}
    in_flight = set()

    async def take(consumer):
        response = await app.get("/q/ok4?reserve=30")
        if response.code == 204:
            return None
        message = json.loads(await response.text())
        key = message["ordering_key"]
        assert key not in in_flight, "two messages of %s were leased at once" % key
        in_flight.add(key)
        received[key].append(message["value"])
        return message

    # four consumers reserve at once: each gets a different key
    first = await defer.gatherResults([defer.ensureDeferred(take(n)) for n in range(4)])
    assert len({m["ordering_key"] for m in first}) == 4

    async def work(message):
        while message is not None:
            in_flight.discard(message["ordering_key"])
            acked = await app.post("/q/ok4/ack", data={"receipt": message["receipt"]})
            assert acked.code == 200
            message = await take(None)
    await defer.gatherResults([defer.ensureDeferred(work(m)) for m in first])
    # whatever was left once every consumer saw 204 (a key waiting for the last ack)
    leftover = await take(None)
    while leftover is not None:
        in_flight.discard(leftover["ordering_key"])
        await app.post("/q/ok4/ack", data={"receipt": leftover["receipt"]})
        leftover = await take(None)
    assert received == sent
