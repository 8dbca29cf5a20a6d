"""The routes of the dashboard's queue view (GET /q/<q>/messages, /q/<q>/consumers),
the published/delivered totals kept in Redis, and Redis memory in the feed, over
real sockets on a real Redis."""

from __future__ import annotations

import json
import textwrap

import pytest_twisted

from restmq.acl import load_acl
from tests.helpers import start_app, stop_app, wait_until
from tests.streaming import Stream, WsClient


async def body_json(response):
    return json.loads(await response.text())


async def publish(app, queue, *values):
    for value in values:
        response = await app.post("/q/" + queue, data={"value": value})
        assert response.code == 200


async def messages(app, queue, **query):
    response = await app.get("/q/%s/messages" % queue, params=query)
    assert response.code == 200, await response.text()
    return await body_json(response)


@pytest_twisted.ensureDeferred
async def test_messages_page_oldest_first_and_leave_them_in_place(app, redis):
    await publish(app, "jobs", "a", "b", "c", "d", "e")
    first = await messages(app, "jobs", count=2)
    assert first["len"] == 5 and first["offset"] == 0
    assert [m["key"] for m in first["messages"]] == ["jobs:1", "jobs:2"]
    assert [m["value"] for m in first["messages"]] == ["a", "b"]
    message = first["messages"][0]
    assert message["size"] == 1 and message["truncated"] is False and message["gone"] is False
    assert message["deliveries"] == 0 and message["expires_in"] is None
    assert isinstance(message["enqueued"], int) and "dead" not in message
    second = await messages(app, "jobs", count=2, offset=2)
    assert [m["key"] for m in second["messages"]] == ["jobs:3", "jobs:4"]
    last = await messages(app, "jobs", count=2, offset=4)
    assert [m["key"] for m in last["messages"]] == ["jobs:5"]
    assert (await messages(app, "jobs", offset=5))["messages"] == []
    # a look is not a delivery: nothing was taken, nothing counted
    assert await redis.llen("jobs:queue") == 5
    assert await redis.hget("jobs:deliveries", "jobs:1") is None
    assert (await body_json(await app.get("/q/jobs")))["key"] == "jobs:1"


@pytest_twisted.ensureDeferred
async def test_messages_show_ttl_deliveries_and_cut_bodies_at_a_character(app, redis):
    await app.post("/q/cut", data={"value": "é" * 10, "ttl": "600"})
    leased = await body_json(await app.get("/q/cut", params={"reserve": "30"}))
    await app.post("/q/cut/nack", data={"receipt": leased["receipt"]})  # back at the head, delivered once
    message = (await messages(app, "cut", preview=5))["messages"][0]
    # 5 bytes cut inside the third "é": two whole characters are shown
    assert message["value"] == "éé" and message["size"] == 20 and message["truncated"] is True
    assert 60 < message["expires_in"] <= 600  # the ttl of 600 s, however slow the test ran
    assert message["deliveries"] == 1


@pytest_twisted.ensureDeferred
async def test_messages_mark_foreign_and_expired_elements_as_gone(app, redis):
    await publish(app, "mixed", "kept")
    await redis.lpush("mixed:queue", "other:7")     # pushed by a foreign client
    await redis.lpush("mixed:queue", "mixed:99")    # its body expired or was never there
    view = await messages(app, "mixed")
    assert [(m["key"], m["gone"]) for m in view["messages"]] == [
        ("mixed:1", False), ("other:7", True), ("mixed:99", True)]
    assert view["messages"][1]["value"] == ""


@pytest_twisted.ensureDeferred
async def test_dead_letters_carry_reason_deliveries_and_origin(app, redis):
    await app.post("/settings/mail", data={"max_receives": "1"})
    await publish(app, "mail", "hello")
    leased = await body_json(await app.get("/q/mail", params={"reserve": "30"}))
    assert (await app.post("/q/mail/nack", data={"receipt": leased["receipt"]})).code == 200
    view = await messages(app, "mail:dead")
    assert view["len"] == 1
    letter = view["messages"][0]
    assert letter["key"] == "mail:dead:1" and letter["value"] == "hello"
    assert letter["dead"]["reason"] == "max_receives"
    assert letter["dead"]["from"] == "mail:1" and letter["dead"]["deliveries"] == 1
    # deleting one dead letter takes its note with it
    command = {"cmd": "del", "queue": "mail:dead", "key": "mail:dead:1"}
    deleted = await app.post("/queue", data=json.dumps(command).encode(),
                             headers={"Content-Type": "application/json"})
    assert (await body_json(deleted))["deleted"] is True
    assert await redis.hexists("mail:dead:deadinfo", "mail:dead:1") == 0


@pytest_twisted.ensureDeferred
async def test_messages_refuse_bad_paging_with_400(app):
    for query in ({"count": "0"}, {"count": "101"}, {"offset": "-1"}, {"offset": "x"},
                  {"preview": "0"}, {"preview": "65537"}):
        response = await app.get("/q/jobs/messages", params=query)
        assert response.code == 400, query
        assert (await body_json(response))["error"]["code"] == "bad_request"
    response = await app.get("/q/bad%23name/messages")
    assert response.code == 400
    response = await app.get("/q/bad%23name/consumers")
    assert response.code == 400


@pytest_twisted.ensureDeferred
async def test_consumers_list_transport_address_since_and_prefetch(app):
    assert (await body_json(await app.get("/q/watched/consumers")))["consumers"] == []
    sse = await Stream.open(app.port, "/sse/watched?ack=1&prefetch=3")
    comet = await Stream.open(app.port, "/c/watched")
    ws = await WsClient.open(app.port, "/ws/watched")
    try:
        await wait_until(lambda: len(app.dispatcher.consumers("watched")) == 3)
        view = await body_json(await app.get("/q/watched/consumers"))
        assert view["queue"] == "watched" and ":" in view["process"]
        listed = {c["transport"]: c for c in view["consumers"]}
        assert set(listed) == {"sse", "comet", "websocket"}
        for consumer in listed.values():
            assert consumer["remote"] == "127.0.0.1" and consumer["since"] > 0
        assert listed["sse"]["acked"] is True
        assert listed["sse"]["prefetch"] == 3 and listed["sse"]["unacked"] == 0
        assert listed["comet"]["acked"] is False and listed["comet"]["prefetch"] is None
    finally:
        sse.close()
        comet.close()
        ws.close()
    await wait_until(lambda: app.dispatcher.consumers("watched") == [])


@pytest_twisted.ensureDeferred
async def test_consumers_show_what_an_acked_stream_holds(app):
    sse = await Stream.open(app.port, "/sse/leased?ack=1&prefetch=3")
    try:
        await wait_until(lambda: app.dispatcher.consumers("leased"))
        await publish(app, "leased", "one")
        await wait_until(lambda: sse.messages())

        async def unacked():
            view = await body_json(await app.get("/q/leased/consumers"))
            return [(c["unacked"], c["prefetch"]) for c in view["consumers"]]

        assert await unacked() == [(1, 3)]
        receipt = sse.messages()[0]["receipt"]
        assert (await app.post("/q/leased/ack", data={"receipt": receipt})).code == 200
        assert await unacked() == [(0, 3)]
    finally:
        sse.close()


@pytest_twisted.ensureDeferred
async def test_consumers_list_long_polls(app):
    pending = app.get("/q/polled", params={"wait": "5"})
    await wait_until(lambda: app.dispatcher.consumers("polled"))
    view = await body_json(await app.get("/q/polled/consumers"))
    assert [(c["transport"], c["remote"]) for c in view["consumers"]] == [("longpoll", "127.0.0.1")]
    await publish(app, "polled", "here")
    assert (await body_json(await pending))["value"] == "here"


@pytest_twisted.ensureDeferred
async def test_published_and_delivered_totals_are_kept_in_redis(app, redis):
    await publish(app, "counted", "a", "b", "c", "d")
    assert (await app.get("/q/counted")).code == 200                          # a pop
    assert (await app.get("/q/counted", params={"reserve": "30"})).code == 200  # a lease
    stats = await body_json(await app.get("/stats/counted"))
    assert stats["published"] == 4 and stats["delivered"] == 2
    # streaming deliveries count too, publish-through included
    stream = await Stream.open(app.port, "/sse/counted")
    try:
        await wait_until(lambda: len(stream.messages()) == 2)
        await publish(app, "counted", "e")
        await wait_until(lambda: len(stream.messages()) == 3)
    finally:
        stream.close()
    stats = await body_json(await app.get("/stats/counted"))
    assert stats["published"] == 5 and stats["delivered"] == 5
    # the totals survive a purge (they are counters, as the id counter is)
    await publish(app, "counted", "f")
    assert (await app.delete("/q/counted")).code == 200
    await publish(app, "counted", "g")
    stats = await body_json(await app.get("/stats/counted"))
    assert stats["published"] == 7 and stats["delivered"] == 5
    assert await redis.get("counted:delivered") == "5"


@pytest_twisted.ensureDeferred
async def test_a_pop_given_back_is_no_delivery(app, redis):
    from restmq.model import Message
    await publish(app, "back", "x")
    taken = await app.store.take("back")
    assert await redis.get("back:delivered") == "1"
    await app.store.requeue("back", [Message(taken[0].key, taken[0].value)])
    assert await redis.get("back:delivered") == "0"


@pytest_twisted.ensureDeferred
async def test_dashboard_feed_carries_redis_memory_and_totals(app):
    from restmq.web.ops import DashboardEventsHandler
    feed = next(spec.kwargs["feed"] for _, specs in app.listener.factory.handlers for spec in specs
                if spec.handler_class is DashboardEventsHandler)
    await publish(app, "fed", "one")
    snapshot = await feed.snapshot()
    memory = snapshot["memory"]
    assert memory["used"] > 0 and memory["peak"] >= memory["used"] and memory["rss"] > 0
    assert memory["max"] == 0 and memory["policy"] == "noeviction"
    assert snapshot["queues"][0]["published"] == 1 and snapshot["queues"][0]["delivered"] == 0


@pytest_twisted.ensureDeferred
async def test_console_routes_follow_rest_consumer(redis, redis_server, tmp_path):
    path = tmp_path / "acl.conf"
    path.write_text(textwrap.dedent("""\
        [rest:consumer]
        token = c0nsume
        """))
    running = await start_app(redis_server.target, acl=load_acl(str(path)))
    try:
        for route in ("/q/jobs/messages", "/q/jobs/consumers"):
            assert (await running.get(route)).code == 401, route
            assert (await running.get(route, headers={"Authorization": "Bearer c0nsume"})).code == 200
    finally:
        await stop_app(running)


@pytest_twisted.ensureDeferred
async def test_group_deliveries_count_in_the_queue_total_and_consumers_name_their_group(app, redis):
    assert (await app.post("/q/shared/groups/audit")).code == 201
    await publish(app, "shared", "one", "two")
    assert (await app.get("/q/shared")).code == 200
    assert (await app.get("/q/shared", params={"group": "audit", "count": "2"})).code == 200
    stats = await body_json(await app.get("/stats/shared"))
    assert stats["published"] == 2 and stats["delivered"] == 3
    assert await redis.get("shared#audit:delivered") == "2"
    stream = await Stream.open(app.port, "/sse/shared?group=audit")
    try:
        await wait_until(lambda: app.dispatcher.consumers("shared"))
        view = await body_json(await app.get("/q/shared/consumers"))
        assert [(c["transport"], c["group"]) for c in view["consumers"]] == [("sse", "audit")]
    finally:
        stream.close()
