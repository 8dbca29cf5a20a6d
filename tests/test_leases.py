"""At-least-once: leases, ack/nack/extend, dead letters, delays, batches, idempotency, limits."""

from __future__ import annotations

import json

import pytest
import pytest_twisted

from restmq.errors import MessageNotFound, QueueFull
from tests.helpers import start_app, stop_app, test_config, wait_until
from tests.streaming import Stream, WsClient


async def reserve_until(store, queue, lease_ms, attempts=2000):
    """Reserve until a message comes back (an expired lease returns it)."""
    from tests.helpers import sleep
    for _ in range(attempts):
        messages = await store.reserve(queue, 1, lease_ms)
        if messages:
            return messages[0]
        await sleep(0.01)
    raise AssertionError("no message came back")


# storage


@pytest_twisted.ensureDeferred
async def test_reserve_hides_and_counts(store, redis):
    await store.add("l", ["job"])
    [message] = await store.reserve("l", 1, 60000)
    assert (message.value, message.deliveries) == ("job", 1)
    assert message.receipt.startswith("l:1:")
    assert await store.reserve("l", 1, 60000) == []
    assert await store.take("l") == []
    assert await redis.zcard("l:inflight") == 1


@pytest_twisted.ensureDeferred
async def test_ack_removes_for_good(store, redis):
    await store.add("l", ["job"])
    [message] = await store.reserve("l", 1, 60000)
    assert await store.ack("l", [message.receipt]) == (1, [])
    for key in ("l:1", "l:inflight", "l:leases", "l:deliveries"):
        assert await redis.exists(key) == 0


async def lease_expired(store, queue):
    """Wait until no lease of ``queue`` is in flight (stats moves expired ones back)."""
    from tests.helpers import sleep
    for _ in range(2000):
        [info] = await store.stats(queue)
        if info.inflight == 0:
            return info
        await sleep(0.01)
    raise AssertionError("the lease never expired")


@pytest_twisted.ensureDeferred
async def test_expired_lease_puts_the_message_back_at_the_head(store):
    await store.add("l", ["first", "second"])
    [first] = await store.reserve("l", 1, 50)
    await lease_expired(store, "l")
    [again] = await store.reserve("l", 1, 60000)
    assert (again.key, again.value, again.deliveries) == (first.key, "first", 2)


@pytest_twisted.ensureDeferred
async def test_stale_receipt_is_refused_and_leaves_the_new_lease_alone(store, redis):
    await store.add("l", ["job"])
    [old] = await store.reserve("l", 1, 50)
    new = await reserve_until(store, "l", 60000)
    assert await store.ack("l", [old.receipt]) == (0, ["l:1"])
    assert await redis.hget("l:leases", "l:1") == new.receipt.rpartition(":")[2]
    assert await store.ack("l", [new.receipt]) == (1, [])


@pytest_twisted.ensureDeferred
async def test_nack_returns_at_once_to_the_head(store):
    await store.add("l", ["a", "b"])
    [a] = await store.reserve("l", 1, 60000)
    assert await store.nack("l", [a.receipt]) == (1, [])
    [again] = await store.reserve("l", 1, 60000)
    assert (again.value, again.deliveries) == ("a", 2)


@pytest_twisted.ensureDeferred
async def test_nack_with_delay_hides_it_for_that_long(store, redis):
    await store.add("l", ["a"])
    [a] = await store.reserve("l", 1, 60000)
    await store.nack("l", [a.receipt], delay_ms=60000)
    assert await store.reserve("l", 1, 60000) == []
    assert await redis.zcard("l:delayed") == 1


@pytest_twisted.ensureDeferred
async def test_extend_pushes_the_deadline(store, redis):
    await store.add("l", ["a"])
    [a] = await store.reserve("l", 1, 1000)
    before = float(await redis.zscore("l:inflight", "l:1"))
    assert await store.extend("l", [a.receipt], 600000) == (1, [])
    assert float(await redis.zscore("l:inflight", "l:1")) > before + 500000


@pytest_twisted.ensureDeferred
async def test_dead_letter_at_exactly_max_receives(store, redis):
    await redis.hset("d:settings", "max_receives", 3)
    await store.add("d", ["poison"])
    for attempt in (1, 2, 3):
        [message] = await store.reserve("d", 1, 60000)
        assert message.deliveries == attempt
        await store.nack("d", [message.receipt])
    assert await store.reserve("d", 1, 60000) == []
    letters = await store.dead_letters("d")
    assert [(m["value"], m["dead"]["reason"], m["dead"]["deliveries"], m["dead"]["from"]) for m in letters] \
        == [("poison", "max_receives", 3, "d:1")]
    # the dead-letter queue is an ordinary queue
    [dead] = await store.take("d:dead")
    assert dead.value == "poison"


@pytest_twisted.ensureDeferred
async def test_expired_leases_dead_letter_too(store, redis):
    await redis.hset("e:settings", "max_receives", 1)
    await store.add("e", ["x"])
    await store.reserve("e", 1, 20)
    info = await lease_expired(store, "e")
    assert (info.dead, info.length) == (1, 0)


@pytest_twisted.ensureDeferred
async def test_redrive_moves_dead_letters_back(store, redis):
    await redis.hset("r:settings", "max_receives", 1)
    await store.add("r", ["one", "two"])
    for message in await store.reserve("r", 2, 60000):
        await store.nack("r", [message.receipt])
    assert await store.take("r") == []
    assert await store.redrive("r", 1) == 1
    [back] = await store.reserve("r", 1, 60000)
    assert (back.value, back.deliveries) == ("one", 1)
    assert await store.redrive("r") == 1
    assert [m.value for m in await store.take("r")] == ["two"]


@pytest_twisted.ensureDeferred
async def test_delayed_messages_come_in_due_order(store, redis):
    await store.add("dl", ["later"], delay_ms=300)
    await store.add("dl", ["sooner"], delay_ms=100)
    await store.add("dl", ["now"])
    assert [m.value for m in await store.take("dl", 5)] == ["now"]
    got = []
    while len(got) < 2:
        got += [m.value for m in await store.take("dl", 5)]
        from tests.helpers import sleep
        await sleep(0.01)
    assert got == ["sooner", "later"]


@pytest_twisted.ensureDeferred
async def test_receipt_of_another_queue_is_refused(store):
    with pytest.raises(MessageNotFound):
        await store.ack("mine", ["other:1:abc"])
    with pytest.raises(MessageNotFound):
        await store.ack("mine", ["garbage"])


@pytest_twisted.ensureDeferred
async def test_idempotent_publish_returns_the_first_result(store, redis):
    first = await store.add("i", ["a"], idempotency_key="k1")
    second = await store.add("i", ["b"], idempotency_key="k1")
    assert second.keys == first.keys and second.replayed and not first.replayed
    assert await redis.llen("i:queue") == 1
    third = await store.add("i", ["c"], idempotency_key="k2")
    assert third.keys == ["i:2"]


@pytest_twisted.ensureDeferred
async def test_idempotency_window_ends(store):
    await store.add("iw", ["a"], idempotency_key="k", idempotency_window_ms=30)
    for _ in range(500):
        result = await store.add("iw", ["b"], idempotency_key="k", idempotency_window_ms=30)
        if not result.replayed:
            break
        from tests.helpers import sleep
        await sleep(0.01)
    assert result.keys == ["iw:2"]


@pytest_twisted.ensureDeferred
async def test_maxlen_reject_refuses_whole_batch(store, redis):
    await store.set_settings("m", {"maxlen": "3"})
    await store.add("m", ["1", "2"])
    with pytest.raises(QueueFull):
        await store.add("m", ["3", "4"])
    assert await redis.llen("m:queue") == 2
    await store.add("m", ["3"])
    with pytest.raises(QueueFull):
        await store.add("m", ["4"])


@pytest_twisted.ensureDeferred
async def test_maxlen_drop_oldest(store, redis):
    await store.set_settings("m2", {"maxlen": "2", "overflow": "drop_oldest"})
    await store.add("m2", ["1", "2", "3"])
    assert [m.value for m in await store.take("m2", 5)] == ["2", "3"]
    assert await redis.exists("m2:1") == 0


@pytest_twisted.ensureDeferred
async def test_drop_oldest_under_a_long_queue_goes_in_steps(store, redis):
    # maxlen lowered under 1,000 waiting messages: each publish drops what it added
    # plus at most 256 more (one script call stays short), never growing the queue
    await store.add("m3", [str(n) for n in range(1000)])
    await store.set_settings("m3", {"maxlen": "10", "overflow": "drop_oldest"})
    await store.add("m3", ["a", "b"])
    assert await redis.llen("m3:queue") == 1000 + 2 - 258
    assert await redis.exists("m3:258") == 0 and await redis.exists("m3:259") == 1
    assert await redis.hexists("m3:enqueued", "m3:258") == 0
    for n in range(3):
        await store.add("m3", ["c%d" % n])
    assert await redis.llen("m3:queue") == 10
    assert [m.value for m in await store.take("m3", 20)] == [
        "995", "996", "997", "998", "999", "a", "b", "c0", "c1", "c2"]
    assert await redis.hlen("m3:enqueued") == 0


@pytest_twisted.ensureDeferred
async def test_default_ttl_setting(store, redis):
    await store.set_settings("t", {"ttl": "50"})
    await store.add("t", ["x"])
    assert 0 < await redis.ttl("t:1") <= 50


@pytest_twisted.ensureDeferred
async def test_queue_lease_setting_is_the_default_lease(store, redis):
    await store.set_settings("ls", {"lease_seconds": "600.0"})
    await store.add("ls", ["x"])
    await store.reserve("ls", 1, 1000, default_lease=True)
    deadline = float(await redis.zscore("ls:inflight", "ls:1"))
    now = float((await redis.time())[0]) * 1000
    assert deadline - now > 500000


@pytest_twisted.ensureDeferred
async def test_stats_show_inflight_delayed_dead(store, redis):
    await redis.hset("s:settings", "max_receives", 1)
    await store.add("s", ["a", "b", "c"])
    await store.add("s", ["d"], delay_ms=600000)
    [a] = await store.reserve("s", 1, 600000)
    [b] = await store.reserve("s", 1, 600000)
    await store.nack("s", [b.receipt])
    [info] = await store.stats("s")
    assert (info.length, info.inflight, info.delayed, info.dead) == (1, 1, 1, 1)


@pytest_twisted.ensureDeferred
async def test_stop_can_hold_rest_pops(store):
    from restmq.model import QueueState
    await store.add("h", ["x"])
    await store.set_state("h", QueueState.STOPPED)
    assert await store.take("h", 1, hold_if_stopped=True) == []
    assert await store.reserve("h", 1, 1000, hold_if_stopped=True) == []
    assert [m.value for m in await store.take("h", 1)] == ["x"]


# HTTP


@pytest_twisted.ensureDeferred
async def test_http_reserve_ack(app):
    await app.post("/q/job", data={"value": "work"})
    reserved = json.loads(await (await app.get("/q/job?reserve=30")).text())
    assert reserved["value"] == "work" and reserved["deliveries"] == 1
    assert reserved["receipt"].startswith("job:1:")
    assert (await app.get("/q/job?reserve=30")).code == 204
    acked = await app.post("/q/job/ack", data={"receipt": reserved["receipt"]})
    assert json.loads(await acked.text()) == {"queue": "job", "acked": 1}
    again = await app.post("/q/job/ack", data={"receipt": reserved["receipt"]})
    assert again.code == 409
    assert json.loads(await again.text())["error"]["code"] == "lease_lost"


@pytest_twisted.ensureDeferred
async def test_http_batch_publish_reserve_and_ack(app):
    response = await app.post("/q/b", data=json.dumps(["1", "2", "3", {"value": "4"}, {"n": 5}]).encode(),
                              headers={"Content-Type": "application/json"})
    assert json.loads(await response.text()) == {"queue": "b", "keys": ["b:1", "b:2", "b:3", "b:4", "b:5"]}
    reserved = json.loads(await (await app.get("/q/b?reserve=30&count=10")).text())
    assert [m["value"] for m in reserved["messages"]] == ["1", "2", "3", "4", '{"n":5}']
    receipts = [m["receipt"] for m in reserved["messages"]]
    acked = await app.post("/q/b/ack", data=json.dumps({"receipts": receipts}).encode(),
                           headers={"Content-Type": "application/json"})
    assert json.loads(await acked.text())["acked"] == 5


@pytest_twisted.ensureDeferred
async def test_http_batch_is_atomic_when_refused(app):
    await app.post("/settings/ba", data={"maxlen": "2"})
    response = await app.post("/q/ba", data=json.dumps(["1", "2", "3"]).encode(),
                              headers={"Content-Type": "application/json"})
    assert response.code == 429
    assert json.loads(await response.text())["error"]["code"] == "queue_full"
    assert json.loads(await (await app.get("/stats/ba")).text())["len"] == 0


@pytest_twisted.ensureDeferred
async def test_http_pop_many(app):
    await app.post("/q/pm", data=json.dumps(["a", "b", "c"]).encode(),
                   headers={"Content-Type": "application/json"})
    popped = json.loads(await (await app.get("/q/pm?count=2")).text())
    assert [m["value"] for m in popped["messages"]] == ["a", "b"]


@pytest_twisted.ensureDeferred
async def test_http_nack_extend_redrive_dead(app):
    await app.post("/settings/n", data={"max_receives": "1"})
    await app.post("/q/n", data={"value": "v"})
    reserved = json.loads(await (await app.get("/q/n?reserve=30")).text())
    extended = await app.post("/q/n/extend", data={"receipt": reserved["receipt"], "seconds": "60"})
    assert json.loads(await extended.text()) == {"queue": "n", "extended": 1}
    nacked = await app.post("/q/n/nack", data={"receipt": reserved["receipt"]})
    assert json.loads(await nacked.text()) == {"queue": "n", "nacked": 1}
    dead = json.loads(await (await app.get("/q/n/dead")).text())
    assert dead["dead_letter_queue"] == "n:dead"
    assert dead["messages"][0]["dead"]["reason"] == "max_receives"
    stats = json.loads(await (await app.get("/stats/n")).text())
    assert stats["dead"] == 1
    moved = json.loads(await (await app.post("/q/n/redrive")).text())
    assert moved == {"queue": "n", "moved": 1}
    assert json.loads(await (await app.get("/q/n")).text())["value"] == "v"


@pytest_twisted.ensureDeferred
async def test_http_delay(app):
    await app.post("/q/dly", data={"value": "later", "delay": "600"})
    assert (await app.get("/q/dly")).code == 204
    assert json.loads(await (await app.get("/stats/dly")).text())["delayed"] == 1


@pytest.mark.parametrize("delay", ["-1", "999999999", "x"])
@pytest_twisted.ensureDeferred
async def test_http_bad_delay_is_400(app, delay):
    assert (await app.post("/q/dly", data={"value": "v", "delay": delay})).code == 400


@pytest_twisted.ensureDeferred
async def test_http_idempotency_key(app):
    headers = {"Idempotency-Key": "order-7", "Accept": "*/*"}
    first = await app.post("/q/idem", data={"value": "a"}, headers=headers)
    second = await app.post("/q/idem", data={"value": "a"}, headers=headers)
    assert await first.text() == await second.text() == "idem:1\r\n"
    assert second.headers.getRawHeaders("Idempotent-Replayed") == ["true"]
    assert json.loads(await (await app.get("/stats/idem")).text())["len"] == 1


@pytest_twisted.ensureDeferred
async def test_http_settings(app):
    response = await app.post("/settings/cfg", data={"maxlen": "10", "overflow": "drop_oldest",
                                                     "max_receives": "7", "lease_seconds": "12.5"})
    body = json.loads(await response.text())
    assert body["settings"]["maxlen"] == 10 and body["settings"]["overflow"] == "drop_oldest"
    assert body["settings"]["max_receives"] == 7 and body["settings"]["lease_seconds"] == 12.5
    assert body["set"] == ["lease_seconds", "max_receives", "maxlen", "overflow"]
    cleared = json.loads(await (await app.post("/settings/cfg", data={"maxlen": ""})).text())
    assert cleared["settings"]["maxlen"] == 0 and "maxlen" not in cleared["set"]
    assert json.loads(await (await app.get("/settings/cfg")).text())["settings"]["max_receives"] == 7


@pytest.mark.parametrize("form", [{"maxlen": "-1"}, {"overflow": "explode"}, {"max_receives": "0"},
                                  {"lease_seconds": "0"}, {"colour": "blue"}, {}])
@pytest_twisted.ensureDeferred
async def test_http_bad_settings_are_400(app, form):
    assert (await app.post("/settings/cfg", data=form)).code == 400


@pytest.mark.parametrize("form", [{}, {"receipt": "nonsense"}, {"receipt": "other:1:tok"}])
@pytest_twisted.ensureDeferred
async def test_http_bad_receipts(app, form):
    response = await app.post("/q/rq/ack", data=form)
    assert response.code in (400, 404)


@pytest_twisted.ensureDeferred
async def test_stop_holds_pops_when_configured(redis, redis_server):
    running = await start_app(redis_server.target, test_config(delivery={"stop_holds_pops": True}))
    try:
        await running.post("/q/hold", data={"value": "x"})
        await running.post("/control/hold", data={"status": "stop"})
        assert (await running.get("/q/hold")).code == 204
        assert (await running.get("/q/hold?reserve=5")).code == 204
        await running.post("/control/hold", data={"status": "start"})
        assert (await running.get("/q/hold")).code == 200
    finally:
        await stop_app(running)


@pytest_twisted.ensureDeferred
async def test_by_default_stop_holds_only_streaming(app):
    await app.post("/q/free", data={"value": "x"})
    await app.post("/control/free", data={"status": "stop"})
    assert (await app.get("/q/free")).code == 200


# acked streaming


@pytest_twisted.ensureDeferred
async def test_acked_sse_gets_leased_messages_up_to_prefetch(app):
    stream = await Stream.open(app.port, "/c/as?ack=1&prefetch=2", headers={"Accept": "text/event-stream"})
    await wait_until(lambda: app.dispatcher.subscriber_counts("as") == {"sse": 1})
    await app.post("/q/as", data=json.dumps(["1", "2", "3"]).encode(),
                   headers={"Content-Type": "application/json"})
    await wait_until(lambda: len(stream.messages()) == 2)
    first, second = stream.messages()
    assert first["receipt"].startswith("as:1:") and first["deliveries"] == 1
    stats = json.loads(await (await app.get("/stats/as")).text())
    assert (stats["inflight"], stats["len"]) == (2, 1)
    await app.post("/q/as/ack", data={"receipt": first["receipt"]})
    await wait_until(lambda: len(stream.messages()) == 3)
    assert stream.messages()[2]["value"] == "3"


@pytest_twisted.ensureDeferred
async def test_acked_consumer_dropping_gives_its_messages_to_another(app):
    leaving = await Stream.open(app.port, "/c/ad?ack=1&prefetch=5")
    await wait_until(lambda: app.dispatcher.subscriber_counts("ad") == {"comet": 1})
    await app.post("/q/ad", data=json.dumps(["a", "b"]).encode(),
                   headers={"Content-Type": "application/json"})
    await wait_until(lambda: len(leaving.lines()) == 2)
    leaving.close()
    await wait_until(lambda: not app.dispatcher.subscriber_counts("ad"))
    staying = await Stream.open(app.port, "/c/ad?ack=1")
    await wait_until(lambda: len(staying.lines()) == 2)
    assert [(m["value"], m["deliveries"]) for m in staying.lines()] == [("a", 2), ("b", 2)]


@pytest_twisted.ensureDeferred
async def test_acked_websocket_acks_over_the_socket(app):
    ws = await WsClient.open(app.port, "/ws/aw?ack=1&prefetch=1")
    await wait_until(lambda: app.dispatcher.subscriber_counts("aw") == {"websocket": 1})
    await app.post("/q/aw", data=json.dumps(["x", "y"]).encode(),
                   headers={"Content-Type": "application/json"})
    await wait_until(lambda: len(ws.messages()) == 1)
    ws.send_text(json.dumps({"ack": ws.messages()[0]["receipt"]}))
    await wait_until(lambda: len(ws.messages()) == 3)
    assert ws.messages()[1] == {"acked": 1}
    assert ws.messages()[2]["value"] == "y"
    ws.send_text("not json")
    await wait_until(lambda: len(ws.messages()) == 4)
    assert ws.messages()[3]["error"]["code"] == "bad_request"
    ws.send_text(json.dumps({"ack": ws.messages()[0]["receipt"]}))
    await wait_until(lambda: len(ws.messages()) == 5)
    assert ws.messages()[4]["error"]["code"] == "lease_lost"
