"""What a hostile peer finds (issue 11): raw sockets against a real broker on a real Redis.

The denial-of-service tests assert on what the broker buffers (bytes it holds
for a connection), never on a time.
"""

from __future__ import annotations

import base64
import json
import os

import pytest
import pytest_twisted
from wsproto import ConnectionType, WSConnection
from wsproto.events import Request, TextMessage

from tests.helpers import open_raw, raw_exchange, start_app, stop_app, test_config, wait_until
from tests.streaming import WsClient


def split_response(raw: bytes):
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head, body


def handshake(path: str, key: str, host: str = "127.0.0.1") -> bytes:
    return ("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n" % (path, host, key)).encode()


# item 10: RFC 6455 wants a base64-encoded 16-byte nonce

@pytest.mark.parametrize("key", ["not base64 at all!", base64.b64encode(b"x").decode(),
                                 base64.b64encode(os.urandom(7500)).decode(),
                                 base64.b64encode(os.urandom(17)).decode(), "dGhlIHNhbXBsZSBub25jZQ"])
@pytest_twisted.ensureDeferred
async def test_websocket_malformed_key_is_400(app, key):
    raw = await raw_exchange(app.port, handshake("/ws/keys", key), stop_at=b"}")
    status, _, body = split_response(raw)
    assert status == 400
    assert json.loads(body)["error"]["code"] == "bad_request"


@pytest_twisted.ensureDeferred
async def test_websocket_proper_key_is_101(app):
    raw = await raw_exchange(app.port, handshake("/ws/keys", base64.b64encode(os.urandom(16)).decode()),
                             stop_at=b"\r\n\r\n")
    assert split_response(raw)[0] == 101


# item 1: DNS rebinding. A page whose name now resolves to the broker sends its own
# name as Host and as Origin; only allow-listed Hosts are served, on every route.

def raw_request(method: str, path: str, host: str, origin: str = "", body: bytes = b"",
                extra: str = "") -> bytes:
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: " + host, "Connection: close"]
    if origin:
        lines.append("Origin: " + origin)
    if body:
        lines += ["Content-Type: application/x-www-form-urlencoded", "Content-Length: %d" % len(body)]
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode() + body


@pytest_twisted.ensureDeferred
async def test_rebinding_host_is_421_on_every_route_and_changes_nothing(app):
    await app.store.add("jobs", ["keep me"])
    evil = "evil.example:%d" % app.port
    origin = "http://" + evil
    attempts = [
        raw_request("DELETE", "/q/jobs", evil, origin),
        raw_request("POST", "/control/jobs", evil, origin, b"status=stop"),
        raw_request("GET", "/q/jobs", evil, origin),
        raw_request("POST", "/queue", evil, origin, b'body={"cmd":"take","queue":"jobs"}'),
        raw_request("GET", "/stats/", evil),
        raw_request("GET", "/c/jobs", evil),
        raw_request("GET", "/nowhere", evil),
        handshake("/ws/jobs", base64.b64encode(os.urandom(16)).decode(), host=evil),
    ]
    for request in attempts:
        raw = await raw_exchange(app.port, request)
        status, _, body = split_response(raw)
        assert status == 421, request
        assert json.loads(body)["error"]["code"] == "misdirected_request"
    length, messages = await app.store.jobs("jobs")
    assert [m.value for m in messages] == ["keep me"]
    assert (await app.store.get_state("jobs")).label == "started"


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}", "127.0.0.1",
                                  "LOCALHOST:{port}", "localhost.:{port}"])
@pytest_twisted.ensureDeferred
async def test_loopback_hosts_are_served_with_their_own_origin(app, host):
    host = host.format(port=app.port)
    await app.store.add("own", ["a"])
    raw = await raw_exchange(app.port, raw_request("DELETE", "/q/own", host, "http://" + host))
    assert split_response(raw)[0] == 200, raw


@pytest_twisted.ensureDeferred
async def test_origin_is_compared_with_the_allowed_host_not_echoed(app):
    # an allowed Host does not make any Origin acceptable
    await app.store.add("o", ["a"])
    for origin in ("http://evil.example:%d" % app.port, "http://127.0.0.1:1", "null",
                   "http://localhost:%d" % (app.port + 1)):
        raw = await raw_exchange(app.port, raw_request("DELETE", "/q/o", "localhost:%d" % app.port, origin))
        status, _, body = split_response(raw)
        assert status == 403, origin
    assert (await app.store.jobs("o"))[0] == 1


@pytest_twisted.ensureDeferred
async def test_configured_public_names_are_served(redis, redis_server):
    names = ("mq.example.org", "other.example:8443")
    running = await start_app(redis_server.target, test_config(server={"allowed_hosts": names}))
    try:
        await running.store.add("pub", ["a", "b"])
        # a proxy passes the public name (nginx: proxy_set_header Host $host), with the page's origin
        request = raw_request("DELETE", "/q/pub", "mq.example.org", "https://mq.example.org")
        raw = await raw_exchange(running.port, request)
        assert split_response(raw)[0] == 200
        raw = await raw_exchange(running.port, raw_request("GET", "/stats/", "other.example:8443"))
        assert split_response(raw)[0] == 200
        for refused in ("other.example", "other.example:8444", "mq.example.org.evil.example", "evil.example"):
            raw = await raw_exchange(running.port, raw_request("GET", "/stats/", refused))
            assert split_response(raw)[0] == 421, refused
    finally:
        await stop_app(running)


@pytest.mark.parametrize("value,parsed", [
    ("Example.ORG", ("example.org", None)), ("example.org:8888", ("example.org", 8888)),
    ("[::1]:80", ("[::1]", 80)), ("127.0.0.1", ("127.0.0.1", None)), ("a.b.", ("a.b", None)),
    ("::1", None), ("x:99999", None), ("x:", None), ("http://x", None), ("x/y", None), ("", None),
    ("a@b", None), ("[zz]:1", None),
])
def test_parse_host(value, parsed):
    from restmq.web.hosts import parse_host
    assert parse_host(value) == parsed
