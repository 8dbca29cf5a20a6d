"""Priority take, request/reply and streams of several queues, on a real socket."""

from __future__ import annotations

import json

import pytest_twisted

from tests.helpers import sleep, wait_until
from tests.streaming import Stream, WsClient


async def body(response):
    return json.loads(await response.text())


# priority take


@pytest_twisted.ensureDeferred
async def test_take_answers_the_first_non_empty_queue(app):
    await app.post("/q/low", data={"value": "l1"})
    await app.post("/q/default", data={"value": "d1"})
    taken = await body(await app.get("/take?queues=high,default,low"))
    assert (taken["queue"], taken["value"]) == ("default", "d1")
    await app.post("/q/high", data={"value": "h1"})
    taken = await body(await app.get("/take?queues=high,default,low"))
    assert (taken["queue"], taken["value"]) == ("high", "h1")
    taken = await body(await app.get("/take?queues=high,default,low"))
    assert (taken["queue"], taken["value"]) == ("low", "l1")
    assert (await app.get("/take?queues=high,default,low")).code == 204


@pytest_twisted.ensureDeferred
async def test_take_count_fills_in_priority_order_and_reserve_leases(app):
    for queue, value in (("b", "b1"), ("a", "a1"), ("b", "b2")):
        await app.post("/q/" + queue, data={"value": value})
    taken = await body(await app.get("/take?queues=a,b&count=3&reserve=30"))
    assert [(m["queue"], m["value"]) for m in taken["messages"]] == [("a", "a1"), ("b", "b1"), ("b", "b2")]
    receipt = taken["messages"][1]["receipt"]
    assert (await app.post("/q/b/ack", data={"receipt": receipt})).code == 200


@pytest_twisted.ensureDeferred
async def test_take_long_poll_wakes_on_any_queue(app):
    waiting = app.get("/take?queues=x,y,z&wait=10")
    await wait_until(lambda: app.dispatcher.subscriber_counts("z").get("longpoll") == 1)
    await app.post("/q/z", data={"value": "late"})
    taken = await body(await waiting)
    assert (taken["queue"], taken["value"]) == ("z", "late")


@pytest_twisted.ensureDeferred
async def test_take_refuses_bad_lists(app):
    assert (await app.get("/take")).code == 400
    assert (await app.get("/take?queues=,")).code == 400
    assert (await app.get("/take?queues=a,b%00c")).code == 400  # a control character
    too_many = ",".join("q%d" % i for i in range(65))
    assert (await app.get("/take?queues=" + too_many)).code == 400


@pytest_twisted.ensureDeferred
async def test_take_with_a_group(app):
    await app.post("/q/t1/groups/w")
    await app.post("/q/t2/groups/w")
    await app.post("/q/t2", data={"value": "x"})
    taken = await body(await app.get("/take?queues=t1,t2&group=w"))
    assert (taken["queue"], taken["value"]) == ("t2", "x")
    assert (await app.get("/take?queues=t1,t3&group=w")).code == 404


# request/reply


@pytest_twisted.ensureDeferred
async def test_rpc_round_trip(app):
    call = app.post("/rpc/work?timeout=10", data={"value": "ping"})
    await wait_until(lambda: call.called or app.dispatcher._replies)
    request = None
    for _ in range(500):
        response = await app.get("/q/work")
        if response.code == 200:
            request = await body(response)
            break
        await sleep(0.01)
    assert request is not None and request["value"] == "ping"
    reply_to = request["attributes"]["reply_to"]
    answer = json.dumps({"value": "pong", "attributes": {"status": "ok"}}).encode()
    replied = await app.post("/reply/" + reply_to, data=answer, headers={"Content-Type": "application/json"})
    assert replied.code == 200
    result = await body(await call)
    assert (result["value"], result["attributes"], result["reply_to"]) == ("pong", {"status": "ok"}, reply_to)
    # the call is over: a second reply finds nobody
    assert (await app.post("/reply/" + reply_to, data={"value": "again"})).code == 404


@pytest_twisted.ensureDeferred
async def test_rpc_timeout_and_late_reply(app):
    response = await app.post("/rpc/idle?timeout=0.2", data={"value": "anyone?"})
    assert response.code == 504
    assert (await body(response))["error"]["code"] == "timeout"
    request = await body(await app.get("/q/idle"))
    late = await app.post("/reply/" + request["attributes"]["reply_to"], data={"value": "too late"})
    assert late.code == 404


@pytest_twisted.ensureDeferred
async def test_rpc_refuses_batches_and_unknown_replies(app):
    batch = json.dumps(["a", "b"]).encode()
    response = await app.post("/rpc/b", data=batch, headers={"Content-Type": "application/json"})
    assert response.code == 400
    assert (await app.post("/reply/" + "0" * 32, data={"value": "x"})).code == 404
    assert (await app.post("/rpc/b?timeout=100000", data={"value": "x"})).code == 400


# streams of several queues


@pytest_twisted.ensureDeferred
async def test_sse_of_several_queues_carries_queue_and_resumes_each(app):
    stream = await Stream.open(app.port, "/sse/?queues=a,b")
    try:
        await wait_until(lambda: app.dispatcher.subscriber_counts("b").get("sse") == 1)
        await app.post("/q/a", data={"value": "a1"})
        await app.post("/q/b", data={"value": "b1"})
        await app.post("/q/a", data={"value": "a2"})
        await wait_until(lambda: len(stream.messages()) == 3)
        assert [(m["queue"], m["value"]) for m in stream.messages()] == [
            ("a", "a1"), ("b", "b1"), ("a", "a2")]
        ids = [e["id"] for e in stream.events() if "data" in e]
        assert ids == ["1,", "1,1", "2,1"]
    finally:
        stream.close()
    # a second subscriber keeps the history going while the first is away
    other = await Stream.open(app.port, "/sse/?queues=a,b")
    try:
        await wait_until(lambda: app.dispatcher.subscriber_counts("b").get("sse") == 1)
        await app.post("/q/b", data={"value": "b2"})
        await app.post("/q/a", data={"value": "a3"})
        await wait_until(lambda: len(other.messages()) == 2)
        resumed = await Stream.open(app.port, "/sse/?queues=a,b", headers={"Last-Event-ID": "1,1"})
        try:
            await wait_until(lambda: len(resumed.messages()) >= 3)
            assert sorted((m["queue"], m["value"]) for m in resumed.messages()) == [
                ("a", "a2"), ("a", "a3"), ("b", "b2")]
        finally:
            resumed.close()
    finally:
        other.close()


@pytest_twisted.ensureDeferred
async def test_comet_and_websocket_of_several_queues(app):
    comet = await Stream.open(app.port, "/c/?queues=m1,m2")
    ws = await WsClient.open(app.port, "/ws/?queues=m1,m2")
    try:
        await wait_until(lambda: app.dispatcher.subscriber_counts("m2").get("websocket") == 1
                         and app.dispatcher.subscriber_counts("m2").get("comet") == 1)
        await app.post("/q/m2", data={"value": "x"})
        await app.post("/q/m1", data={"value": "y"})
        await wait_until(lambda: len(comet.lines()) == 2 and len(ws.messages()) == 2)
        assert [(m["queue"], m["value"]) for m in comet.lines()] == [("m2", "x"), ("m1", "y")]
        assert [(m["queue"], m["value"]) for m in ws.messages()] == [("m2", "x"), ("m1", "y")]
    finally:
        comet.close()
        ws.close()


@pytest_twisted.ensureDeferred
async def test_acked_websocket_of_several_queues_in_a_group(app):
    for queue in ("w1", "w2"):
        await app.post("/q/%s/groups/g" % queue)
    ws = await WsClient.open(app.port, "/ws/?queues=w1,w2&group=g&ack=1")
    try:
        await wait_until(lambda: app.dispatcher.subscriber_counts("w2#g").get("websocket") == 1)
        await app.post("/q/w1", data={"value": "one"})
        await app.post("/q/w2", data={"value": "two"})
        await wait_until(lambda: len(ws.messages()) == 2)
        receipts = [m["receipt"] for m in ws.messages()]
        ws.send_text(json.dumps({"ack": receipts}))
        await wait_until(lambda: len(ws.messages()) == 3)
        assert ws.messages()[2] == {"acked": 2}
        # the default consumers still have both, the group none
        assert (await app.get("/q/w1?group=g")).code == 204
        assert (await body(await app.get("/q/w1")))["value"] == "one"
    finally:
        ws.close()


@pytest_twisted.ensureDeferred
async def test_stream_of_several_queues_is_bounded(app):
    names = ",".join("s%d" % i for i in range(65))
    stream = await Stream.open(app.port, "/sse/?queues=" + names)
    try:
        await wait_until(lambda: stream.closed or b"\r\n\r\n" in stream.client.data)
        assert stream.status == 400
    finally:
        stream.close()
    missing = await Stream.open(app.port, "/sse/?queues=a&group=nope")
    try:
        assert missing.status == 404
    finally:
        missing.close()


@pytest_twisted.ensureDeferred
async def test_group_removal_closes_its_streams(app):
    await app.post("/q/gr/groups/g")
    stream = await Stream.open(app.port, "/c/gr?group=g")
    await wait_until(lambda: app.dispatcher.subscriber_counts("gr#g").get("comet") == 1)
    assert (await app.delete("/q/gr/groups/g")).code == 200
    await wait_until(lambda: stream.closed)
    assert (await app.get("/q/gr?group=g")).code == 404
