"""Streaming consumers over real sockets: COMET, SSE, WebSocket, long-poll, policies."""

from __future__ import annotations

import json

import pytest_twisted

from tests.helpers import sleep, start_app, stop_app, test_config, wait_until
from tests.streaming import Stream, WsClient

SSE = {"Accept": "text/event-stream"}


async def publish(app, queue, *values):
    for value in values:
        response = await app.post("/q/" + queue, data={"value": value})
        assert response.code == 200


def values(items):
    return [item["value"] for item in items]


async def subscribed(app, queue, count):
    await wait_until(lambda: sum(app.dispatcher.subscriber_counts(queue).values()) == count
                     and app.dispatcher._queues[queue].ready)


@pytest_twisted.ensureDeferred
async def test_comet_streams_json_lines_over_chunked_http11(app):
    stream = await Stream.open(app.port, "/c/news")
    await subscribed(app, "news", 1)
    assert stream.status == 200
    assert b"transfer-encoding: chunked" in stream.head.lower()
    await publish(app, "news", "one", "two")
    await wait_until(lambda: len(stream.lines()) == 2)
    assert stream.lines() == [{"key": "news:1", "value": "one"}, {"key": "news:2", "value": "two"}]
    stream.close()


@pytest_twisted.ensureDeferred
async def test_comet_over_http10_is_close_delimited(app):
    stream = await Stream.open(app.port, "/c/old", http10=True)
    await subscribed(app, "old", 1)
    assert b"chunked" not in stream.head.lower()
    await publish(app, "old", "x")
    await wait_until(lambda: stream.lines() == [{"key": "old:1", "value": "x"}])
    await app.delete("/q/old")
    await wait_until(lambda: stream.closed)


@pytest_twisted.ensureDeferred
async def test_comet_jsonp_wraps_each_message(app):
    stream = await Stream.open(app.port, "/c/jp?callback=got")
    await subscribed(app, "jp", 1)
    await publish(app, "jp", "v")
    await wait_until(lambda: b"got(" in stream.body)
    assert stream.body == b'got({"key":"jp:1","value":"v"});\r\n'
    assert b"application/javascript" in stream.head


@pytest_twisted.ensureDeferred
async def test_sse_frames_have_id_and_data(app):
    stream = await Stream.open(app.port, "/c/ev", headers=SSE)
    await subscribed(app, "ev", 1)
    assert b"text/event-stream" in stream.head
    await publish(app, "ev", "hello")
    await wait_until(lambda: stream.messages())
    events = stream.events()
    assert events[0] == {"retry": "3000"}
    assert events[1] == {"id": "ev:1", "data": '{"key":"ev:1","value":"hello"}'}


def _chunks(stream):
    """The HTTP chunks of a chunked response body, as sent."""
    rest, chunks = stream.client.data.partition(b"\r\n\r\n")[2], []
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if not sep or size == 0 or len(rest) < size + 2:
            break
        chunks.append(rest[:size])
        rest = rest[size + 2:]
    return chunks


@pytest_twisted.ensureDeferred
async def test_sse_batch_goes_out_as_one_chunk_and_unchunked_to_http10(app):
    chunked = await Stream.open(app.port, "/c/batch", headers=SSE)
    plain = await Stream.open(app.port, "/c/batch", headers=SSE, http10=True)
    await subscribed(app, "batch", 2)
    response = await app.post("/q/batch", json=["a", "b", "c"])
    assert response.code == 200
    await wait_until(lambda: len(chunked.messages()) == 3 and len(plain.messages()) == 3)
    want = [{"key": "batch:%d" % n, "value": v} for n, v in ((1, "a"), (2, "b"), (3, "c"))]
    assert chunked.messages() == want and plain.messages() == want
    # the retry line, then the whole batch in one chunk
    chunks = _chunks(chunked)
    assert len(chunks) == 2 and chunks[1].count(b"\ndata: ") == 3, chunks
    assert b"chunked" not in plain.head.lower() and plain.body.count(b"\ndata: ") == 3


@pytest_twisted.ensureDeferred
async def test_sse_route_is_sse_without_accept_header(app):
    stream = await Stream.open(app.port, "/sse/ev2")
    assert b"text/event-stream" in stream.head


@pytest_twisted.ensureDeferred
async def test_sse_heartbeat_comments(redis, redis_server):
    running = await start_app(redis_server.target, test_config(dispatch={"heartbeat_interval": 0.1}))
    try:
        stream = await Stream.open(running.port, "/c/hb", headers=SSE)
        await wait_until(lambda: any(e.get("comment") for e in stream.events()))
        stream.close()
    finally:
        await stop_app(running)


@pytest_twisted.ensureDeferred
async def test_sse_resume_with_last_event_id_gets_exactly_the_missed_messages(app):
    first = await Stream.open(app.port, "/c/res", headers=SSE)
    await subscribed(app, "res", 1)
    await publish(app, "res", "m1", "m2", "m3")
    await wait_until(lambda: len(first.messages()) == 3)
    last_id = first.events()[-1]["id"]
    assert last_id == "res:3"
    first.close()
    # someone else keeps consuming while the first client is away
    other = await Stream.open(app.port, "/c/res", headers=SSE)
    await subscribed(app, "res", 1)
    await publish(app, "res", "m4", "m5")
    await wait_until(lambda: len(other.messages()) == 2)
    back = await Stream.open(app.port, "/c/res", headers=dict(SSE, **{"Last-Event-ID": last_id}))
    await wait_until(lambda: len(back.messages()) == 2)
    await publish(app, "res", "m6")
    await wait_until(lambda: len(back.messages()) == 3)
    assert values(back.messages()) == ["m4", "m5", "m6"]
    assert [e["id"] for e in back.events() if "id" in e] == ["res:4", "res:5", "res:6"]


@pytest_twisted.ensureDeferred
async def test_sse_resume_by_query_parameter(app):
    first = await Stream.open(app.port, "/c/rq", headers=SSE)
    await subscribed(app, "rq", 1)
    await publish(app, "rq", "a", "b")
    await wait_until(lambda: len(first.messages()) == 2)
    first.close()
    back = await Stream.open(app.port, "/c/rq?lastEventId=rq:1", headers=SSE)
    await wait_until(lambda: len(back.messages()) == 1)
    assert values(back.messages()) == ["b"]


@pytest_twisted.ensureDeferred
async def test_sse_resume_from_unknown_id_reports_the_gap(redis, redis_server):
    running = await start_app(redis_server.target, test_config(dispatch={"history_size": 2}))
    try:
        first = await Stream.open(running.port, "/c/gap", headers=SSE)
        await subscribed(running, "gap", 1)
        await publish(running, "gap", "1", "2", "3", "4")
        await wait_until(lambda: len(first.messages()) == 4)
        first.close()
        back = await Stream.open(running.port, "/c/gap", headers=dict(SSE, **{"Last-Event-ID": "gap:1"}))
        await wait_until(lambda: len(back.messages()) == 2)
        gap = [e for e in back.events() if e.get("event") == "gap"]
        assert len(gap) == 1
        assert json.loads(gap[0]["data"])["oldest"] == "gap:3"
        assert values(back.messages()) == ["3", "4"]
    finally:
        await stop_app(running)


@pytest_twisted.ensureDeferred
async def test_websocket_receives_text_frames(app):
    ws = await WsClient.open(app.port, "/ws/wsq")
    assert ws.accepted
    await subscribed(app, "wsq", 1)
    await publish(app, "wsq", "over ws")
    await wait_until(lambda: ws.messages() == [{"key": "wsq:1", "value": "over ws"}])
    ws.close()


@pytest_twisted.ensureDeferred
async def test_websocket_pings_keep_it_alive(redis, redis_server):
    running = await start_app(redis_server.target, test_config(dispatch={"heartbeat_interval": 0.1}))
    try:
        ws = await WsClient.open(running.port, "/ws/ping")
        await wait_until(lambda: ws.poll() or "<ping>" in ws.received)
        ws.close()
    finally:
        await stop_app(running)


@pytest_twisted.ensureDeferred
async def test_websocket_foreign_origin_is_refused(app):
    ws = await WsClient.open(app.port, "/ws/o", origin="http://evil.example")
    assert ws.rejected == 403
    same = await WsClient.open(app.port, "/ws/o", origin="http://127.0.0.1:%d" % app.port)
    assert same.accepted


@pytest_twisted.ensureDeferred
async def test_websocket_allow_list(redis, redis_server):
    running = await start_app(redis_server.target, test_config(
        server={"allowed_origins": ("https://app.example",)}))
    try:
        assert (await WsClient.open(running.port, "/ws/o", origin="https://app.example")).accepted
        assert (await WsClient.open(running.port, "/ws/o", origin="https://other.example")).rejected == 403
    finally:
        await stop_app(running)


@pytest_twisted.ensureDeferred
async def test_plain_get_on_websocket_route_is_400(app):
    response = await app.get("/ws/x")
    assert response.code == 400


@pytest_twisted.ensureDeferred
async def test_long_poll_answers_as_soon_as_a_message_comes(app):
    pending = app.get("/q/lp?wait=30")
    await wait_until(lambda: app.dispatcher.subscriber_counts("lp").get("longpoll") == 1)
    await publish(app, "lp", "late")
    response = await pending
    assert response.code == 200
    assert json.loads(await response.text())["value"] == "late"
    await wait_until(lambda: not app.dispatcher.subscriber_counts("lp"))


@pytest_twisted.ensureDeferred
async def test_long_poll_times_out_with_204(app):
    response = await app.get("/q/lp2?wait=0.2")
    assert response.code == 204


@pytest_twisted.ensureDeferred
async def test_long_poll_wait_is_capped(app):
    response = await app.get("/q/lp3?wait=3600")
    assert response.code == 400


@pytest_twisted.ensureDeferred
async def test_long_poll_client_gone_is_cleaned_up_and_loses_nothing(app):
    stream = await Stream.open(app.port, "/q/lp4?wait=30", wait_head=False)
    await wait_until(lambda: app.dispatcher.subscriber_counts("lp4").get("longpoll") == 1)
    stream.close()
    await wait_until(lambda: not app.dispatcher.subscriber_counts("lp4"))
    await publish(app, "lp4", "still here")
    assert json.loads(await (await app.get("/q/lp4")).text())["value"] == "still here"


@pytest_twisted.ensureDeferred
async def test_several_long_polls_each_get_one_message(app):
    pending = [app.get("/q/lpm?wait=30") for _ in range(3)]
    await wait_until(lambda: app.dispatcher.subscriber_counts("lpm").get("longpoll") == 3)
    await publish(app, "lpm", "a", "b", "c")
    got = sorted([json.loads(await (await d).text())["value"] for d in pending])
    assert got == ["a", "b", "c"]


@pytest_twisted.ensureDeferred
async def test_broadcast_reaches_every_subscriber_once_in_order_whatever_the_transport(app):
    comet = await Stream.open(app.port, "/c/bc")
    sse = await Stream.open(app.port, "/c/bc", headers=SSE)
    ws = await WsClient.open(app.port, "/ws/bc")
    await subscribed(app, "bc", 3)
    sent = [str(i) for i in range(20)]
    await publish(app, "bc", *sent)
    await wait_until(lambda: len(comet.lines()) == 20 and len(sse.messages()) == 20
                     and len(ws.messages()) == 20)
    assert values(comet.lines()) == sent
    assert values(sse.messages()) == sent
    assert values(ws.messages()) == sent
    assert (await app.get("/q/bc")).code == 204


@pytest_twisted.ensureDeferred
async def test_roundrobin_gives_each_message_to_exactly_one_subscriber_in_turn(app):
    await app.post("/p/rr", data={"policy": "roundrobin"})
    streams = [await Stream.open(app.port, "/c/rr") for _ in range(3)]
    await subscribed(app, "rr", 3)
    sent = [str(i) for i in range(30)]
    for value in sent:
        await publish(app, "rr", value)
    await wait_until(lambda: sum(len(s.lines()) for s in streams) == 30)
    received = [values(s.lines()) for s in streams]
    assert sorted(sum(received, []), key=int) == sent
    counts = [len(r) for r in received]
    assert max(counts) - min(counts) <= 1
    for r in received:
        assert r == sorted(r, key=int)


@pytest_twisted.ensureDeferred
async def test_roundrobin_batch_publish_is_dealt_fairly(app):
    await app.post("/p/rrb", data={"policy": "roundrobin"})
    streams = [await Stream.open(app.port, "/c/rrb") for _ in range(4)]
    await subscribed(app, "rrb", 4)
    await app.post("/q/rrb", data=json.dumps([str(i) for i in range(41)]).encode(),
                   headers={"Content-Type": "application/json"})
    await wait_until(lambda: sum(len(s.lines()) for s in streams) == 41)
    counts = [len(s.lines()) for s in streams]
    assert max(counts) - min(counts) <= 1


@pytest_twisted.ensureDeferred
async def test_policy_change_takes_effect_at_once(app):
    a = await Stream.open(app.port, "/c/pc")
    b = await Stream.open(app.port, "/c/pc")
    await subscribed(app, "pc", 2)
    await publish(app, "pc", "both")
    await wait_until(lambda: len(a.lines()) == 1 and len(b.lines()) == 1)
    await app.post("/p/pc", data={"policy": "roundrobin"})
    await publish(app, "pc", "one", "two")
    await wait_until(lambda: len(a.lines()) + len(b.lines()) == 4)
    assert len(a.lines()) == 2 and len(b.lines()) == 2


@pytest_twisted.ensureDeferred
async def test_stopped_queue_delivers_nothing_then_backlog_flows_in_order(app):
    stream = await Stream.open(app.port, "/c/ctl")
    await subscribed(app, "ctl", 1)
    await app.post("/control/ctl", data={"status": "stop"})
    await publish(app, "ctl", "a", "b", "c")
    # let the dispatcher look at the queue: it must leave the backlog in Redis
    app.dispatcher.sweep()
    await wait_until(lambda: not app.dispatcher._queues["ctl"].busy)
    stats = json.loads(await (await app.get("/stats/ctl")).text())
    assert stats["len"] == 3
    assert stream.lines() == []
    await app.post("/control/ctl", data={"status": "start"})
    await wait_until(lambda: len(stream.lines()) == 3)
    assert values(stream.lines()) == ["a", "b", "c"]


@pytest_twisted.ensureDeferred
async def test_delete_closes_streaming_consumers(app):
    comet = await Stream.open(app.port, "/c/del")
    ws = await WsClient.open(app.port, "/ws/del")
    await subscribed(app, "del", 2)
    await app.delete("/q/del")
    await wait_until(lambda: comet.closed and ws.client.closed.called)
    assert not app.dispatcher.subscriber_counts("del")


@pytest_twisted.ensureDeferred
async def test_disconnect_is_cleaned_up_and_stats_show_transports(app):
    comet = await Stream.open(app.port, "/c/st")
    sse = await Stream.open(app.port, "/c/st", headers=SSE)
    ws = await WsClient.open(app.port, "/ws/st")
    await subscribed(app, "st", 3)
    stats = json.loads(await (await app.get("/stats/st")).text())
    assert stats["subscribers"] == {"comet": 1, "sse": 1, "websocket": 1}
    comet.close()
    sse.close()
    ws.close()
    await wait_until(lambda: not app.dispatcher.subscriber_counts("st"))
    stats = json.loads(await (await app.get("/stats/st")).text())
    assert stats["subscribers"] == {}


@pytest_twisted.ensureDeferred
async def test_wakeups_are_pushed_not_polled(redis, redis_server):
    running = await start_app(redis_server.target, test_config(dispatch={"sweep_interval": 3600.0}))
    try:
        stream = await Stream.open(running.port, "/c/push")
        await subscribed(running, "push", 1)
        await publish(running, "push", "now")
        await wait_until(lambda: values(stream.lines()) == ["now"])
    finally:
        await stop_app(running)


@pytest_twisted.ensureDeferred
async def test_sweep_delivers_what_another_broker_pushed_into_redis(app, redis):
    stream = await Stream.open(app.port, "/c/foreign")
    await subscribed(app, "foreign", 1)
    await redis.incr("foreign:UUID")
    await redis.set("foreign:1", "pushed by hand")
    await redis.lpush("foreign:queue", "foreign:1")
    await wait_until(lambda: values(stream.lines()) == ["pushed by hand"])


@pytest_twisted.ensureDeferred
async def test_slow_broadcast_consumer_is_cut_off_and_others_keep_up(redis, redis_server):
    running = await start_app(redis_server.target, test_config(dispatch={"buffer_limit": 256 * 1024}))
    try:
        fast = await Stream.open(running.port, "/c/slow")
        slow = await Stream.open(running.port, "/c/slow")
        await subscribed(running, "slow", 2)
        slow.client.transport.pauseProducing()  # this client stops reading
        big = "x" * 256 * 1024
        sent = 0
        # the kernel's socket buffers take a few MB first; then the broker's own
        # buffer grows past buffer_limit and the laggard is cut off
        while running.dispatcher.subscriber_counts("slow") != {"comet": 1}:
            await publish(running, "slow", "%d:%s" % (sent, big))
            sent += 1
            assert sent < 400, "the slow consumer was never cut off"
            await wait_until(lambda: len(fast.lines()) == sent, timeout=30)
        assert [v.split(":")[0] for v in values(fast.lines())] == [str(i) for i in range(sent)]
    finally:
        await stop_app(running)


@pytest_twisted.ensureDeferred
async def test_slow_roundrobin_consumer_gets_nothing_more_until_it_drains(redis, redis_server):
    running = await start_app(redis_server.target, test_config(dispatch={"buffer_limit": 256 * 1024}))
    try:
        await running.post("/p/rrs", data={"policy": "roundrobin"})
        fast = await Stream.open(running.port, "/c/rrs")
        await subscribed(running, "rrs", 1)
        slow = await Stream.open(running.port, "/c/rrs")
        await subscribed(running, "rrs", 2)
        slow_consumer = running.dispatcher._queues["rrs"].consumers[1]
        slow.client.transport.pauseProducing()  # this client stops reading
        big = "y" * 64 * 1024
        sent = 0
        # fill the slow client's socket until Twisted pauses its stream
        while not slow_consumer.paused:
            await publish(running, "rrs", "%d:%s" % (sent, big))
            sent += 1
            assert sent < 2000, "the slow consumer never filled up"
            await wait_until(lambda: running.dispatcher._queues["rrs"].busy is False)
        before = len(fast.lines())
        for _ in range(20):
            await publish(running, "rrs", "%d:%s" % (sent, big))
            sent += 1
        # everything published since goes to the consumer that keeps up
        await wait_until(lambda: len(fast.lines()) == before + 20, timeout=30)
        assert running.dispatcher.subscriber_counts("rrs") == {"comet": 2}
        slow.client.transport.resumeProducing()
        await wait_until(lambda: len(fast.lines()) + len(slow.lines()) == sent, timeout=30)
        got = sorted(int(v.split(":")[0]) for v in values(fast.lines()) + values(slow.lines()))
        assert got == list(range(sent))
    finally:
        await stop_app(running)


@pytest_twisted.ensureDeferred
async def test_publish_goes_straight_to_ready_broadcast_subscribers(app, redis):
    stream = await Stream.open(app.port, "/c/through")
    await subscribed(app, "through", 1)
    app.dispatcher.sweep()  # the dispatch that marks the subscriber ready for publish-through
    for _ in range(500):
        if await redis.exists("through:bsubs"):
            break
        await sleep(0.01)
    assert await redis.exists("through:bsubs") == 1
    await redis.execute_command("CONFIG", "RESETSTAT")
    await publish(app, "through", "direct")
    await wait_until(lambda: values(stream.lines()) == ["direct"])
    # the body was never stored (MSET is how a publish stores bodies), and it is in
    # the history for SSE resume
    stats = await redis.execute_command("INFO", "commandstats")
    assert "cmdstat_mset" not in stats
    assert await redis.llen("through:queue") == 0
    assert await redis.lrange("through:history", 0, -1) == ["through:1"]


@pytest_twisted.ensureDeferred
async def test_publish_through_falls_back_to_the_list_when_nobody_receives(store, redis):
    # a stale marker, as left by a process that died with its subscribers
    await redis.set("orphan:bsubs", "1")
    await store.add("orphan", ["kept"])
    assert [m.value for m in await store.take("orphan")] == ["kept"]


@pytest_twisted.ensureDeferred
async def test_long_poll_waiters_keep_publishes_in_the_list(app, redis):
    stream = await Stream.open(app.port, "/c/mixed")
    await subscribed(app, "mixed", 1)
    pending = app.get("/q/mixed?wait=30")
    await wait_until(lambda: app.dispatcher.subscriber_counts("mixed").get("longpoll") == 1)
    assert await redis.exists("mixed:poppers") == 1
    await publish(app, "mixed", "one")
    # the message reached exactly one of them: the stream or the long-poll
    response = None
    await wait_until(lambda: len(stream.lines()) == 1 or pending.called)
    if pending.called:
        response = await pending
        assert json.loads(await response.text())["value"] == "one"
        assert stream.lines() == []
    else:
        assert values(stream.lines()) == ["one"]
        pending.cancel()
