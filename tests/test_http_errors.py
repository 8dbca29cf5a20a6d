"""Bad input gets a JSON error with the right status: never a 500, a hang or a crash."""

from __future__ import annotations

import json

import pytest
import pytest_twisted

from tests.helpers import open_raw, raw_exchange, start_app, stop_app, test_config, wait_until


async def error_of(response):
    payload = json.loads(await response.text())
    assert set(payload) == {"error"} and set(payload["error"]) == {"code", "message"}
    return payload["error"]["code"]


def split_response(raw: bytes):
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    return status, head, body


# names are any UTF-8 text but control characters, up to 200 characters, not queuestat:...
@pytest.mark.parametrize("path", ["/q/a%00b", "/q/a%0Ab", "/q/" + "x" * 201, "/q/%FF",
                                  "/q/queuestat:x", "/c/bad%0Dname", "/p/bad%01name",
                                  "/control/bad%7Fname", "/stats/bad%C2%85name", "/j/%C3%28",
                                  "/q/" + "%C3%A9" * 201])
@pytest_twisted.ensureDeferred
async def test_bad_queue_name_is_400(app, path):
    response = await app.get(path)
    assert response.code == 400
    assert await error_of(response) == "bad_request"


@pytest_twisted.ensureDeferred
async def test_queue_name_of_200_bytes_with_every_safe_character_works(app):
    name = ("Az09_-.:@" * 30)[:200]
    assert (await app.post("/q/" + name, data={"value": "v"})).code == 200
    assert json.loads(await (await app.get("/q/" + name)).text())["value"] == "v"


@pytest_twisted.ensureDeferred
async def test_missing_value_is_400(app):
    response = await app.post("/q/jobs", data={"other": "x"})
    assert response.code == 400
    assert await error_of(response) == "bad_request"


@pytest.mark.parametrize("form", [
    {"body": "{not json"}, {"body": "[1, 2]"}, {"body": json.dumps({"cmd": "fly", "queue": "q"})},
    {"body": json.dumps({"queue": "q"})}, {"body": json.dumps({"cmd": "add", "queue": "q"})},
    {"body": json.dumps({"cmd": "add", "value": "v"})}, {"body": json.dumps({"cmd": "del", "queue": "q"})},
    {"body": json.dumps({"cmd": "add", "queue": "queuestat:x", "value": "v"})},
    {"body": json.dumps({"cmd": "add", "queue": "q", "value": "v", "ttl": -5})}, {},
])
@pytest_twisted.ensureDeferred
async def test_bad_protocol_command_is_400(app, form):
    response = await app.post("/queue", data=form)
    assert response.code == 400
    assert await error_of(response) == "bad_request"


@pytest_twisted.ensureDeferred
async def test_malformed_raw_json_is_400(app):
    response = await app.post("/queue", data=b"{oops", headers={"Content-Type": "application/json"})
    assert response.code == 400


@pytest.mark.parametrize("path,form", [("/p/q", {"policy": "random"}), ("/p/q", {}),
                                       ("/control/q", {"status": "pause"}), ("/control/q", {})])
@pytest_twisted.ensureDeferred
async def test_unknown_policy_or_status_is_400(app, path, form):
    response = await app.post(path, data=form)
    assert response.code == 400
    assert await error_of(response) == "bad_request"


@pytest_twisted.ensureDeferred
async def test_non_utf8_value_is_400(app):
    response = await app.post("/q/jobs", data=b"value=%FF%FE", headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    assert response.code == 400
    assert await error_of(response) == "bad_request"


@pytest_twisted.ensureDeferred
async def test_non_utf8_raw_body_is_400(app):
    response = await app.post("/q/jobs", data=b"\xff\xfe", headers={"Content-Type": "text/plain"})
    assert response.code == 400


@pytest.mark.parametrize("ttl", ["-1", "0", "abc", "1e400", "nan"])
@pytest_twisted.ensureDeferred
async def test_bad_ttl_is_400(app, ttl):
    response = await app.post("/q/jobs", data={"value": "v", "ttl": ttl})
    assert response.code == 400


@pytest.mark.parametrize("callback", ["alert(1)//", "a b", "1abc", "x" * 65, "<script>"])
@pytest_twisted.ensureDeferred
async def test_unsafe_jsonp_callback_is_400(app, callback):
    await app.post("/q/cb", data={"value": "v"})
    response = await app.get("/stats/cb", params={"callback": callback})
    assert response.code == 400
    assert await error_of(response) == "bad_request"


@pytest_twisted.ensureDeferred
async def test_unsafe_callback_does_not_consume_a_message(app):
    await app.post("/q/cb2", data={"value": "keep me"})
    assert (await app.get("/q/cb2", params={"callback": "bad()"})).code == 400
    assert json.loads(await (await app.get("/q/cb2")).text())["value"] == "keep me"


@pytest_twisted.ensureDeferred
async def test_unknown_route_is_404_json(app):
    response = await app.get("/nowhere/at/all")
    assert response.code == 404
    assert await error_of(response) == "not_found"


@pytest_twisted.ensureDeferred
async def test_unsupported_method_is_405_json(app):
    from treq import request
    response = await request("PUT", app.url + "/q/jobs", pool=app.http_pool)
    assert response.code == 405
    assert await error_of(response) == "method_not_allowed"


@pytest_twisted.ensureDeferred
async def test_message_over_max_message_bytes_is_413(redis, redis_server):
    running = await start_app(redis_server.target, test_config(server={
        "max_message_bytes": 1024, "max_request_bytes": 8192}))
    try:
        response = await running.post("/q/big", data={"value": "x" * 1025})
        assert response.code == 413
        assert await error_of(response) == "message_too_large"
        assert (await running.post("/q/big", data={"value": "x" * 1024})).code == 200
    finally:
        await stop_app(running)


@pytest_twisted.ensureDeferred
async def test_huge_content_length_is_refused_before_the_body(app):
    raw = await raw_exchange(app.port, b"POST /q/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                       b"Content-Type: application/x-www-form-urlencoded\r\n"
                                       b"Content-Length: 1099511627776\r\n\r\n")
    status, _, body = split_response(raw)
    assert status == 413
    assert json.loads(body)["error"]["code"] == "message_too_large"


@pytest.mark.parametrize("length", [b"-5", b"abc", b"1 2", b"+3", b"99999999999999999999999"])
@pytest_twisted.ensureDeferred
async def test_bad_content_length_is_400(app, length):
    raw = await raw_exchange(
        app.port, b"POST /q/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %s\r\n\r\n" % length)
    status, _, body = split_response(raw)
    assert status == 400
    assert json.loads(body)["error"]["code"] == "bad_request"


@pytest_twisted.ensureDeferred
async def test_oversized_head_is_431(app):
    raw = await raw_exchange(app.port, b"GET /q/jobs HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
    status, _, _ = split_response(raw)
    assert status == 431


@pytest_twisted.ensureDeferred
async def test_too_many_headers_is_431(app):
    headers = b"".join(b"X-%d: v\r\n" % i for i in range(150))
    raw = await raw_exchange(app.port, b"GET /q/jobs HTTP/1.1\r\n" + headers + b"\r\n")
    assert split_response(raw)[0] == 431


@pytest.mark.parametrize("line", [b"GARBAGE\r\n\r\n", b"GET /q/x HTTP/1.1 extra\r\n\r\n",
                                  b"G(T / HTTP/1.1\r\n\r\n",
                                  b"GET /q/x HTTP/1.1\r\nNoColonHere\r\n\r\n"])
@pytest_twisted.ensureDeferred
async def test_malformed_request_gets_a_json_error_and_close(app, line):
    raw = await raw_exchange(app.port, line)
    status, head, body = split_response(raw)
    assert status == 400
    assert json.loads(body)["error"]["code"] == "bad_request"


@pytest.mark.parametrize("line", [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"GET /q/x HTTP/1.2\r\n\r\n",
                                  b"GET /q/x HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n"])
@pytest_twisted.ensureDeferred
async def test_other_http_versions_get_505_with_their_own_code(app, line):
    # the HTTP/2 connection preface and HTTP/1.2+ are not a malformed request
    raw = await raw_exchange(app.port, line)
    status, head, body = split_response(raw)
    assert status == 505
    assert json.loads(body)["error"]["code"] == "http_version_not_supported"


@pytest_twisted.ensureDeferred
async def test_chunked_request_body_is_411(app):
    raw = await raw_exchange(app.port,
                             b"POST /q/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nvalue\r\n0\r\n\r\n")
    assert split_response(raw)[0] == 411


@pytest_twisted.ensureDeferred
async def test_slow_head_is_cut_off_after_request_timeout(redis, redis_server):
    running = await start_app(redis_server.target, test_config(server={"request_timeout": 0.3}))
    try:
        raw = await raw_exchange(running.port, b"GET /q/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n", timeout=10)
        assert split_response(raw)[0] == 408
    finally:
        await stop_app(running)


@pytest_twisted.ensureDeferred
async def test_slow_body_is_cut_off_after_request_timeout(redis, redis_server):
    running = await start_app(redis_server.target, test_config(server={"request_timeout": 0.3}))
    try:
        raw = await raw_exchange(running.port, b"POST /q/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                               b"Content-Length: 100\r\n\r\nvalue=", timeout=10)
        assert split_response(raw)[0] == 408
    finally:
        await stop_app(running)


@pytest_twisted.ensureDeferred
async def test_idle_keepalive_connection_is_closed(redis, redis_server):
    running = await start_app(redis_server.target, test_config(server={"idle_timeout": 0.3}))
    try:
        raw = await raw_exchange(running.port, b"", timeout=10)
        assert raw == b""
    finally:
        await stop_app(running)


@pytest_twisted.ensureDeferred
async def test_pipelined_requests_are_answered_in_order(app):
    requests = b"".join(b"POST /q/pipe HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Content-Type: application/x-www-form-urlencoded\r\n"
                        b"Content-Length: 7\r\n\r\nvalue=%d" % i for i in range(5))
    requests += b"GET /q/pipe HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    raw = await raw_exchange(app.port, requests)
    assert raw.count(b"HTTP/1.1 200") == 6
    keys = [line for line in raw.split(b"\r\n") if line.startswith(b"pipe:")]
    assert keys == [b"pipe:%d" % i for i in range(1, 6)]
    # no Accept: the original's answer, JSON and a line end
    assert raw.endswith(b'{"key":"pipe:1","value":"0","count":0}\r\n')


@pytest_twisted.ensureDeferred
async def test_http10_request_is_answered_and_closed(app):
    raw = await raw_exchange(app.port, b"GET /stats/ HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.0 200")


@pytest_twisted.ensureDeferred
async def test_expect_100_continue(app):
    client = await open_raw(app.port)
    client.transport.write(b"POST /q/cont HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
                           b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\n")
    await wait_until(lambda: b"100 Continue" in client.data)
    client.transport.write(b"value=1")
    await wait_until(lambda: b"cont:1" in client.data)
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_foreign_origin_cannot_change_the_broker(app):
    foreign = {"Origin": "http://evil.example"}
    response = await app.post("/q/csrf", data={"value": "x"}, headers=foreign)
    assert response.code == 403
    assert (await app.delete("/q/csrf", headers=foreign)).code == 403
    own = {"Origin": "http://127.0.0.1:%d" % app.port}
    assert (await app.post("/q/csrf", data={"value": "x"}, headers=own)).code == 200
    # reading is not a change: a cross-site GET is the browser's business (no CORS)
    assert (await app.get("/stats/csrf", headers=foreign)).code == 200


@pytest_twisted.ensureDeferred
async def test_allowed_origins_may_post(redis, redis_server):
    running = await start_app(redis_server.target,
                              test_config(server={"allowed_origins": ("https://app.example",)}))
    try:
        response = await running.post("/q/o", data={"value": "x"}, headers={"Origin": "https://app.example"})
        assert response.code == 200
    finally:
        await stop_app(running)


@pytest_twisted.ensureDeferred
async def test_header_names_sent_by_clients_do_not_grow_memory(app):
    from restmq.web import http
    for batch in range(12):
        headers = b"".join(b"X-Unique-%d-%d: v\r\n" % (batch, i) for i in range(90))
        raw = await raw_exchange(app.port, b"GET /stats/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                                 + headers + b"\r\n")
        assert split_response(raw)[0] == 200
    assert len(http._HEADER_NAMES) <= 512


@pytest_twisted.ensureDeferred
async def test_pipelined_bytes_behind_a_stream_are_not_buffered_without_bound(app):
    from twisted.internet import reactor
    client = await open_raw(app.port)
    client.transport.write(b"GET /c/pipe-flood HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await wait_until(lambda: sum(app.dispatcher.subscriber_counts("pipe-flood").values()) == 1)
    [server] = [c for c in app.listener.factory.settings["_deadlines"].connections if c._state == c._BUSY]
    junk = b"x" * 65536
    for _ in range(64):  # 4 MiB the broker must not keep
        client.transport.write(junk)
    # the broker stops reading once it holds more than max_header_bytes
    await wait_until(lambda: len(server._buffer) > 65536 and server.transport not in reactor.getReaders())
    assert len(server._buffer) <= 2 * 65536
    client.transport.loseConnection()
