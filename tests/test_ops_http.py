"""/health, /metrics, /openapi.json and the dashboard's routes, over a real socket."""

from __future__ import annotations

import json
import re
import textwrap

import pytest_twisted

from restmq import __version__
from restmq.acl import load_acl
from restmq.web.ops import DashboardEventsHandler
from tests.helpers import RedisProcess, open_raw, start_app, stop_app, test_config, wait_until
from tests.streaming import Stream, WsClient
from tests.test_metrics import value


async def body_json(response):
    return json.loads(await response.text())


async def scrape(app) -> bytes:
    response = await app.get("/metrics")
    assert response.code == 200
    assert response.headers.getRawHeaders("Content-Type") == ["text/plain; version=0.0.4; charset=utf-8"]
    return await response.content()


@pytest_twisted.ensureDeferred
async def test_health_is_ok(app):
    response = await app.get("/health")
    assert response.code == 200
    # no Redis round trip: what the process knows (an external Redis: no embedded part)
    assert await body_json(response) == {"status": "ok", "redis": {"connected": True, "state": "ok"}}


@pytest_twisted.ensureDeferred
async def test_ready_makes_a_redis_round_trip(app):
    payload = await body_json(await app.get("/health/ready"))
    assert payload["status"] == "ok"
    assert isinstance(payload["redis"]["target"], str)
    assert payload["redis"]["latency_ms"] >= 0


@pytest_twisted.ensureDeferred
async def test_without_redis_ready_is_503_while_health_and_metrics_answer():
    server = RedisProcess().start()
    app = await start_app(server.target)
    try:
        assert (await app.get("/health/ready")).code == 200
        server.stop()
        await wait_until(lambda: not app.pool.connected)
        response = await app.get("/health/ready")
        assert response.code == 503
        assert (await body_json(response))["error"]["code"] == "backend_unavailable"
        assert (await app.get("/health")).code == 200
        text = await scrape(app)
        assert value(text, "restmq_redis_up") == 0
        assert value(text, "restmq_http_requests_total",
                     route="/health/ready", method="GET", status="503") == 1
    finally:
        await stop_app(app)
        server.stop()


@pytest_twisted.ensureDeferred
async def test_metrics_count_publishes_pops_and_requests(app):
    for body in ("a", "b", "c"):
        assert (await app.post("/q/jobs", data={"value": body})).code == 200
    assert (await app.get("/q/jobs")).code == 200
    text = await scrape(app)
    assert value(text, "restmq_messages_published_total", queue="jobs") == 3
    assert value(text, "restmq_messages_delivered_total", queue="jobs", transport="rest") == 1
    assert value(text, "restmq_queue_depth", queue="jobs") == 2
    assert value(text, "restmq_queue_oldest_message_age_seconds", queue="jobs") >= 0
    assert value(text, "restmq_queue_paused", queue="jobs") == 0
    assert value(text, "restmq_http_requests_total", route="/q/{queue}", method="POST", status="200") == 3
    assert value(text, "restmq_redis_roundtrip_seconds_count") >= 5


@pytest_twisted.ensureDeferred
async def test_metrics_count_acks_and_redeliveries(app):
    await app.post("/q/leased", data={"value": "job"})
    first = await body_json(await app.get("/q/leased?reserve=30"))
    assert (await app.post("/q/leased/nack", data={"receipt": first["receipt"]})).code == 200
    again = await body_json(await app.get("/q/leased?reserve=30"))
    assert again["deliveries"] == 2
    assert (await app.post("/q/leased/ack", data={"receipt": again["receipt"]})).code == 200
    text = await scrape(app)
    assert value(text, "restmq_messages_delivered_total", queue="leased", transport="rest") == 2
    assert value(text, "restmq_messages_redelivered_total", queue="leased") == 1
    assert value(text, "restmq_messages_acked_total", queue="leased") == 1
    assert value(text, "restmq_queue_inflight", queue="leased") == 0


@pytest_twisted.ensureDeferred
async def test_metrics_count_acked_streaming(app):
    ws = await WsClient.open(app.port, "/ws/wsacked?ack=1&prefetch=1")
    await wait_until(lambda: app.dispatcher.subscriber_counts("wsacked") == {"websocket": 1})
    await app.post("/q/wsacked", data={"value": "x"})
    await wait_until(lambda: len(ws.messages()) == 1)
    ws.send_text(json.dumps({"ack": ws.messages()[0]["receipt"]}))
    await wait_until(lambda: len(ws.messages()) == 2)
    ws.close()
    # an unacked message goes back when its stream drops, and is redelivered
    first = await Stream.open(app.port, "/c/again?ack=1")
    await wait_until(lambda: app.dispatcher.subscriber_counts("again") == {"comet": 1})
    await app.post("/q/again", data={"value": "y"})
    await wait_until(lambda: len(first.lines()) == 1)
    first.close()
    await wait_until(lambda: not app.dispatcher.subscriber_counts("again"))
    second = await Stream.open(app.port, "/c/again?ack=1")
    await wait_until(lambda: len(second.lines()) == 1)
    assert second.lines()[0]["deliveries"] == 2
    second.close()
    text = await scrape(app)
    assert value(text, "restmq_messages_acked_total", queue="wsacked") == 1
    assert value(text, "restmq_messages_delivered_total", queue="wsacked", transport="websocket") == 1
    assert value(text, "restmq_messages_redelivered_total", queue="again") == 1


@pytest_twisted.ensureDeferred
async def test_metrics_count_streaming_subscribers_and_deliveries(app):
    stream = await open_raw(app.port)
    try:
        stream.transport.write(b"GET /c/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await wait_until(lambda: app.dispatcher.subscriber_counts("live") == {"comet": 1})
        assert value(await scrape(app), "restmq_subscribers", queue="live", transport="comet") == 1
        await app.post("/q/live", data={"value": "pushed"})
        await wait_until(lambda: b"pushed" in stream.data)
        text = await scrape(app)
        assert value(text, "restmq_messages_delivered_total", queue="live", transport="comet") == 1
    finally:
        stream.transport.loseConnection()
    await wait_until(lambda: app.dispatcher.subscriber_counts("live") == {})


@pytest_twisted.ensureDeferred
async def test_metrics_queue_label_cap_is_configurable(redis, redis_server):
    running = await start_app(redis_server.target, test_config(server={"metrics_max_queues": 2}))
    try:
        for queue in ("q1", "q2", "q3", "q4"):
            await running.post("/q/" + queue, data={"value": "x"})
        text = await scrape(running)
        assert value(text, "restmq_messages_published_total", queue="_other") == 2
        assert value(text, "restmq_queue_depth", queue="_other") == 2
        assert value(text, "restmq_queue_depth", queue="q3") is None
    finally:
        await stop_app(running)


@pytest_twisted.ensureDeferred
async def test_unknown_paths_share_one_route_label(app):
    for path in ("/nope", "/nope/again", "/%s" % ("x" * 50)):
        assert (await app.get(path)).code == 404
    text = await scrape(app)
    assert value(text, "restmq_http_requests_total", route="(unmatched)", method="GET", status="404") == 3


@pytest_twisted.ensureDeferred
async def test_openapi_document_is_served_with_this_servers_limits(app):
    response = await app.get("/openapi.json")
    assert response.code == 200
    document = await body_json(response)
    assert document["openapi"].startswith("3.")
    assert document["info"]["version"] == __version__
    parameters = document["components"]["parameters"]
    assert parameters["wait"]["schema"]["maximum"] == app.config.dispatch.max_wait
    assert parameters["count"]["schema"]["maximum"] == app.config.delivery.max_batch


@pytest_twisted.ensureDeferred
async def test_root_without_a_queue_goes_to_the_dashboard(app):
    response = await app.get("/", allow_redirects=False)
    assert response.code == 302
    assert response.headers.getRawHeaders("Location") == ["dashboard/"]
    response = await app.get("/dashboard", allow_redirects=False)
    assert response.code == 302
    assert response.headers.getRawHeaders("Location") == ["dashboard/"]
    # pop fields without a queue are a mistake, not a visit
    response = await app.get("/?wait=1", allow_redirects=False)
    assert response.code == 400


@pytest_twisted.ensureDeferred
async def test_dashboard_page_and_its_files(app):
    page = await app.get("/dashboard/")
    assert page.code == 200
    assert page.headers.getRawHeaders("Content-Type") == ["text/html; charset=utf-8"]
    assert "script-src 'self'" in page.headers.getRawHeaders("Content-Security-Policy")[0]
    html = await page.text()
    assert 'src="dashboard.js"' in html and 'href="dashboard.css"' in html
    script = await app.get("/dashboard/dashboard.js")
    assert script.headers.getRawHeaders("Content-Type") == ["application/javascript; charset=utf-8"]
    assert "EventSource" in await script.text()
    style = await app.get("/dashboard/dashboard.css")
    assert style.headers.getRawHeaders("Content-Type") == ["text/css; charset=utf-8"]
    assert (await app.get("/dashboard/other.js")).code == 404


def _feed(app):
    for _, specs in app.listener.factory.handlers:
        for spec in specs:
            if spec.handler_class is DashboardEventsHandler:
                return spec.kwargs["feed"]
    raise AssertionError("no /dashboard/events route")


def _snapshots(data: bytes):
    return [json.loads(frame) for frame in re.findall(rb"event: stats\ndata: (.*)\n\n", data)]


@pytest_twisted.ensureDeferred
async def test_dashboard_events_push_a_snapshot_every_second(app):
    await app.post("/q/watched", data={"value": "one"})
    stream = await open_raw(app.port)
    try:
        stream.transport.write(b"GET /dashboard/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await wait_until(lambda: _snapshots(stream.data))
        assert b"text/event-stream" in stream.data.split(b"\r\n\r\n")[0]
        first = _snapshots(stream.data)[0]
        assert first["count"] == 1
        assert first["queues"][0]["name"] == "watched" and first["queues"][0]["len"] == 1
        assert first["queues"][0]["published"] == 1
        await app.post("/q/watched", data={"value": "two"})
        await wait_until(lambda: _snapshots(stream.data)[-1]["queues"][0]["len"] == 2, timeout=5)
        assert _feed(app).watching == 1
    finally:
        stream.transport.loseConnection()
    # the last dashboard gone, the feed stops asking Redis
    await wait_until(lambda: _feed(app).watching == 0)
    assert _feed(app)._loop is None


@pytest_twisted.ensureDeferred
async def test_405_names_the_allowed_methods(app):
    response = await app.delete("/health")
    assert response.code == 405
    assert response.headers.getRawHeaders("Allow") == ["GET, HEAD"]
    assert (await body_json(response))["error"]["code"] == "method_not_allowed"
    response = await app.post("/stats/")
    assert response.headers.getRawHeaders("Allow") == ["GET"]
    import treq
    response = await treq.request("PUT", app.url + "/q/jobs", pool=app.http_pool)
    assert response.code == 405
    assert response.headers.getRawHeaders("Allow") == ["GET, POST, DELETE"]


@pytest_twisted.ensureDeferred
async def test_ops_routes_follow_the_ops_section_of_the_acl(redis, redis_server, tmp_path):
    path = tmp_path / "acl.conf"
    path.write_text(textwrap.dedent("""\
        [ops]
        token = 0ps
        """))
    running = await start_app(redis_server.target, acl=load_acl(str(path)))
    try:
        for route in ("/health", "/health/ready", "/metrics", "/openapi.json", "/dashboard/events"):
            assert (await running.get(route)).code == 401, route
        # the page's own files hold no data: the page takes its token from its URL fragment
        for route in ("/dashboard/", "/dashboard/dashboard.js", "/dashboard/dashboard.css"):
            assert (await running.get(route)).code == 200, route
        assert (await running.get("/dashboard/events?token=0ps")).code == 200
        assert (await running.get("/health?token=0ps")).code == 200
        assert (await running.get("/metrics", headers={"Authorization": "Bearer 0ps"})).code == 200
        # the other categories have no section here: open
        assert (await running.get("/q/free")).code == 204
    finally:
        await stop_app(running)


@pytest_twisted.ensureDeferred
async def test_dashboard_files_still_follow_the_ops_address_rules(redis, redis_server, tmp_path):
    path = tmp_path / "acl.conf"
    path.write_text(textwrap.dedent("""\
        [ops]
        hosts_allow = 10.0.0.0/8
        token = 0ps
        """))
    running = await start_app(redis_server.target, acl=load_acl(str(path)))
    try:
        for route in ("/dashboard/", "/dashboard/dashboard.js", "/dashboard/events?token=0ps"):
            response = await running.get(route)
            assert response.code == 403, route
            assert (await body_json(response))["error"]["code"] == "forbidden"
    finally:
        await stop_app(running)


@pytest_twisted.ensureDeferred
async def test_head_on_ops_routes_answers_like_get_without_a_body(app):
    import treq
    for path in ("/health", "/health/ready", "/dashboard/", "/metrics", "/openapi.json"):
        got = await app.get(path)
        got_body = await got.content()
        head = await treq.request("HEAD", app.url + path, pool=app.http_pool)
        assert head.code == got.code == 200, path
        assert await head.content() == b"", path
        assert head.headers.getRawHeaders("Content-Type") == got.headers.getRawHeaders("Content-Type"), path
        if path not in ("/metrics", "/health/ready"):  # those two change from one call to the next
            assert head.headers.getRawHeaders("Content-Length") == [str(len(got_body))], path
    text = await scrape(app)
    assert value(text, "restmq_http_requests_total", route="/health", method="HEAD", status="200") == 1


@pytest_twisted.ensureDeferred
async def test_metrics_count_nacks_dead_letters_expiries_and_full_queues(app, redis):
    await app.post("/settings/poison", data={"max_receives": "1"})
    await app.post("/q/poison", data={"value": "bad"})
    leased = await body_json(await app.get("/q/poison?reserve=30"))
    assert (await app.post("/q/poison/nack", data={"receipt": leased["receipt"]})).code == 200
    await app.post("/settings/small", data={"maxlen": "1", "overflow": "reject"})
    await app.post("/q/small", data={"value": "1"})
    assert (await app.post("/q/small", data={"value": "2"})).code == 429
    assert (await app.post("/q/short", data={"value": "gone", "ttl": "1"})).code == 200
    await app.post("/q/short", data={"value": "kept"})
    # once Redis has expired the first body, a pop skips it (and counts it)
    import time
    from tests.helpers import sleep
    deadline = time.monotonic() + 10
    while await redis.exists("short:1"):
        assert time.monotonic() < deadline, "Redis kept short:1 past its ttl"
        await sleep(0.05)
    popped = await body_json(await app.get("/q/short"))
    assert popped["value"] == "kept"
    text = await scrape(app)
    assert value(text, "restmq_messages_nacked_total", queue="poison") == 1
    assert value(text, "restmq_messages_dead_lettered_total", queue="poison") == 1
    assert value(text, "restmq_queue_full_refusals_total", queue="small") == 1
    assert value(text, "restmq_messages_expired_total", queue="short") == 1
    requests = "restmq_http_requests_total"
    assert value(text, requests, route="/q/{queue}/nack", method="POST", status="200") == 1
    assert value(text, requests, route="/q/{queue}/ack", method="POST", status="200") is None


@pytest_twisted.ensureDeferred
async def test_metrics_have_process_and_build_info_and_no_created_series(app):
    text = await scrape(app)
    assert value(text, "restmq_build_info", version=__version__,
                 python=__import__("platform").python_version()) == 1
    assert value(text, "process_resident_memory_bytes") > 0
    assert value(text, "process_open_fds") > 0
    assert b"_created" not in text


@pytest_twisted.ensureDeferred
async def test_metrics_answer_openmetrics_when_asked(app):
    response = await app.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.code == 200
    assert response.headers.getRawHeaders("Content-Type")[0].startswith("application/openmetrics-text")
    body = await response.content()
    assert body.endswith(b"# EOF\n")
    assert b"restmq_build_info" in body and b"_created" not in body


@pytest_twisted.ensureDeferred
async def test_streams_are_counted_in_the_http_metrics_when_they_open(app):
    stream = await Stream.open(app.port, "/c/counted")
    ws = await WsClient.open(app.port, "/ws/counted")
    try:
        text = await scrape(app)
        assert value(text, "restmq_http_requests_total", route="/c/{queue}", method="GET", status="200") == 1
        assert value(text, "restmq_http_requests_total", route="/ws/{queue}", method="GET", status="101") == 1
    finally:
        stream.close()
        ws.close()
