"""Every route of the original over a real socket, with the response shapes its clients parse."""

from __future__ import annotations

import json

import pytest_twisted
import treq


async def body_json(response):
    return json.loads(await response.text())


# what the original's clients send: no Accept: application/json (they get its answers)
ORIGINAL = {"Accept": "*/*"}


@pytest_twisted.ensureDeferred
async def test_post_answers_the_message_key(app):
    response = await app.post("/q/jobs", data={"value": "hello"}, headers=ORIGINAL)
    assert response.code == 200
    assert await response.text() == "jobs:1\r\n"


@pytest_twisted.ensureDeferred
async def test_post_accepts_msg_too(app):
    response = await app.post("/q/jobs", data={"msg": "hello"}, headers=ORIGINAL)
    assert await response.text() == "jobs:1\r\n"
    popped = await body_json(await app.get("/q/jobs"))
    assert popped["value"] == "hello"


@pytest_twisted.ensureDeferred
async def test_post_with_accept_json_answers_json(app):
    response = await app.post("/q/jobs", data={"value": "x"}, headers={"Accept": "application/json"})
    assert await body_json(response) == {"queue": "jobs", "key": "jobs:1"}


@pytest_twisted.ensureDeferred
async def test_get_pops_key_and_value(app):
    await app.post("/q/jobs", data={"value": "hello"})
    response = await app.get("/q/jobs")
    assert response.code == 200
    assert response.headers.getRawHeaders("Content-Type") == ["application/json"]
    assert await body_json(response) == {"key": "jobs:1", "value": "hello", "count": 0}


@pytest_twisted.ensureDeferred
async def test_empty_pop_answers_204(app):
    response = await app.get("/q/empty")
    assert response.code == 204
    assert await response.content() == b""


@pytest_twisted.ensureDeferred
async def test_numeric_body_round_trips_exactly(app):
    await app.post("/q/n", data={"value": "007"})
    assert (await body_json(await app.get("/q/n")))["value"] == "007"


@pytest_twisted.ensureDeferred
async def test_bodies_round_trip_exactly(app):
    bodies = ["ünïcødé ✓ 😀", 'q"uo\'te \\ back\\slash', "  padded  ", "line\nbreak\r\n", "x" * 512 * 1024]
    for body in bodies:
        response = await app.post("/q/exact", data={"value": body.encode("utf-8")})
        assert response.code == 200
    for body in bodies:
        assert (await body_json(await app.get("/q/exact")))["value"] == body


@pytest_twisted.ensureDeferred
async def test_raw_text_body_is_a_message(app):
    response = await app.post("/q/raw", data="plain text body".encode(),
                              headers={"Content-Type": "text/plain"})
    assert response.code == 200
    assert (await body_json(await app.get("/q/raw")))["value"] == "plain text body"


@pytest_twisted.ensureDeferred
async def test_ttl_is_applied(app, redis):
    await app.post("/q/t", data={"value": "x", "ttl": "60"})
    assert 0 < await redis.ttl("t:1") <= 60


@pytest_twisted.ensureDeferred
async def test_delete_purges_queue_and_bodies(app, redis):
    await app.post("/q/gone", data={"value": "a"})
    await app.post("/q/gone", data={"value": "b"})
    response = await app.delete("/q/gone")
    assert await body_json(response) == {"queue": "gone", "purged": 2}
    assert await redis.exists("gone:1") == 0
    assert (await app.get("/q/gone")).code == 204


@pytest_twisted.ensureDeferred
async def test_list_queues(app):
    await app.post("/q/b", data={"value": "x"})
    await app.post("/q/a", data={"value": "x"})
    assert await body_json(await app.get("/q/")) == {"queues": ["a", "b"]}


@pytest_twisted.ensureDeferred
async def test_index_post_and_get(app):
    response = await app.post("/", data={"queue": "idx", "value": "first api"}, headers=ORIGINAL)
    assert await response.text() == "idx:1\r\n"
    popped = await body_json(await app.get("/?queue=idx"))
    assert popped == {"key": "idx:1", "value": "first api", "count": 0}
    assert (await app.get("/?queue=idx")).code == 204


@pytest_twisted.ensureDeferred
async def test_index_post_needs_a_queue(app):
    response = await app.post("/", data={"value": "x"})
    assert response.code == 400


@pytest_twisted.ensureDeferred
async def test_protocol_add_get_take_del(app):
    add = await body_json(await app.post("/queue", data={"body": json.dumps(
        {"cmd": "add", "queue": "proto", "value": "v1"})}))
    assert add == {"queue": "proto", "value": "v1", "key": "proto:1"}
    await app.post("/queue", data={"msg": json.dumps({"cmd": "add", "queue": "proto", "value": "v2"})})
    got = await body_json(await app.post("/queue",
                                         data={"body": json.dumps({"cmd": "get", "queue": "proto"})}))
    assert got == {"queue": "proto", "key": "proto:1", "value": "v1", "count": 1}
    got = await body_json(await app.post("/queue",
                                         data={"body": json.dumps({"cmd": "get", "queue": "proto"})}))
    assert got["count"] == 2
    deleted = await body_json(await app.post("/queue", data={"body": json.dumps(
        {"cmd": "del", "queue": "proto", "key": "proto:1"})}))
    assert deleted == {"queue": "proto", "key": "proto:1", "deleted": True}
    taken = await body_json(await app.post("/queue",
                                           data={"body": json.dumps({"cmd": "take", "queue": "proto"})}))
    assert taken == {"queue": "proto", "key": "proto:2", "value": "v2"}
    empty = await app.post("/queue", data={"body": json.dumps({"cmd": "take", "queue": "proto"})})
    assert empty.code == 204


@pytest_twisted.ensureDeferred
async def test_protocol_accepts_a_raw_json_body(app):
    response = await app.post("/queue",
                              data=json.dumps({"cmd": "add", "queue": "rawj", "value": "v"}).encode(),
                              headers={"Content-Type": "application/json"})
    assert (await body_json(response))["key"] == "rawj:1"


@pytest_twisted.ensureDeferred
async def test_policy_get_and_set(app, redis):
    assert await body_json(await app.get("/p/pol")) == {"queue": "pol", "value": "broadcast"}
    response = await app.post("/p/pol", data={"policy": "roundrobin"})
    assert await body_json(response) == {"queue": "pol", "value": "roundrobin"}
    assert await redis.get("pol:queuepolicy") == "2"
    assert (await body_json(await app.get("/p/pol")))["value"] == "roundrobin"


@pytest_twisted.ensureDeferred
async def test_control_stop_and_start(app, redis):
    assert await body_json(await app.get("/control/ctl")) == {"queue": "ctl", "status": "started"}
    assert (await body_json(await app.post("/control/ctl", data={"status": "stop"})))["status"] == "stopped"
    assert await redis.get("queuestat::ctl") == "0"
    assert (await body_json(await app.get("/control/ctl")))["status"] == "stopped"
    await app.post("/control/ctl", data={"status": "start"})
    assert await redis.get("queuestat::ctl") == "1"


@pytest_twisted.ensureDeferred
async def test_stats_all_and_one(app):
    await app.post("/q/st", data={"value": "a"})
    await app.post("/q/st", data={"value": "b"})
    everything = await body_json(await app.get("/stats/"))
    assert everything["count"] == 1
    assert everything["queues"]["st"]["len"] == 2
    assert everything["queues"]["st"]["policy"] == "broadcast"
    one = await body_json(await app.get("/stats/st"))
    assert (one["queue"], one["len"], one["status"]) == ("st", 2, "started")


@pytest_twisted.ensureDeferred
async def test_job_view(app):
    for value in ("a", "b", "c"):
        await app.post("/q/jv", data={"value": value})
    view = await body_json(await app.get("/j/jv?count=2"))
    assert view == {"queue": "jv", "len": 3, "jobs": [{"key": "jv:3", "value": "c"},
                                                      {"key": "jv:2", "value": "b"}]}


@pytest_twisted.ensureDeferred
async def test_jsonp_wraps_pop_and_stats(app):
    await app.post("/q/cb", data={"value": "x"})
    response = await app.get("/q/cb?callback=handle")
    assert await response.text() == 'handle({"key":"cb:1","value":"x","count":0});'
    stats = await (await app.get("/stats/cb?callback=my.ns.cb_1")).text()
    assert stats.startswith("my.ns.cb_1({") and stats.endswith("});")


@pytest_twisted.ensureDeferred
async def test_pop_is_never_answered_304(app):
    # cyclone computes ETags for GETs; two pops with the same body must both be 200
    await app.post("/q/etag", data={"value": "same"})
    await app.post("/q/etag", data={"value": "same"})
    first = await app.get("/q/etag")
    etag = first.headers.getRawHeaders("Etag")
    assert etag is None
    second = await app.get("/q/etag", headers={"If-None-Match": "*"})
    assert second.code == 200


@pytest_twisted.ensureDeferred
async def test_keep_alive_serves_several_requests_on_one_connection(app):
    from twisted.web.client import HTTPConnectionPool
    from twisted.internet import reactor
    pool = HTTPConnectionPool(reactor, persistent=True)
    try:
        for i in range(5):
            response = await treq.post(app.url + "/q/ka", data={"value": str(i)}, pool=pool)
            assert await response.text() == "ka:%d\r\n" % (i + 1)
    finally:
        await pool.closeCachedConnections()
