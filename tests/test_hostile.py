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
import txredisapi
from twisted.internet import defer, protocol, reactor, task
from wsproto import ConnectionType, WSConnection
from wsproto.events import Ping, Request, TextMessage

from restmq.web.http import buffered
from tests.helpers import RedisProcess, raw_exchange, sleep, start_app, stop_app, test_config, wait_until
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
    ("a@b", None), ("[zz]:1", None), ("x:\u00b2", None), ("x:\u0663", None),
])
def test_parse_host(value, parsed):
    from restmq.web.hosts import parse_host
    assert parse_host(value) == parsed


def test_request_headers_read_in_any_casing():
    # the parser stores Http-Header-Case; lookups take a well-cased name in one probe
    from restmq.web.http import RequestHeaders
    headers = RequestHeaders()
    dict.__setitem__(headers, "Content-Type", "application/json")
    headers._as_list["Content-Type"] = ["application/json"]
    for name in ("Content-Type", "content-type", "CONTENT-type"):
        assert headers.get(name) == "application/json"
    assert "content-type" in headers and "Content-Type" in headers and "Accept" not in headers
    assert headers.get("Accept", "x") == "x" and headers.get("accept") is None
    assert headers.get_list("content-type") == ["application/json"] and headers.get_list("Accept") == []


@pytest_twisted.ensureDeferred
async def test_lowercase_header_names_are_read(app):
    raw = await raw_exchange(app.port, b"POST /q/lower HTTP/1.1\r\nhost: localhost\r\n"
                             b"content-type: application/json\r\naccept: application/json\r\n"
                             b"content-length: 7\r\nconnection: close\r\n\r\n[\"a\",1]")
    status, _, body = split_response(raw)
    assert status == 200, raw
    assert json.loads(body)["keys"] == ["lower:1", "lower:2"]


@pytest_twisted.ensureDeferred
async def test_host_with_a_non_ascii_digit_port_is_421(app):
    # "\xb2" is "²" in latin-1: str.isdigit() says yes, int() refuses it
    raw = await raw_exchange(app.port, b"GET /q/ HTTP/1.1\r\nHost: localhost:\xb2\r\n"
                                       b"Connection: close\r\n\r\n")
    assert split_response(raw)[0] == 421, raw


# items 3 and 4: what a client costs the broker is bounded

class _Client(protocol.Protocol):
    """A raw client; ``reading=False`` never reads what the broker sends."""

    def __init__(self, reading: bool) -> None:
        self.reading = reading
        self.data = bytearray()
        self.closed: defer.Deferred = defer.Deferred()
        self.connected_at: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        if not self.reading:
            self.transport.pauseProducing()
        self.connected_at.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def read(self) -> None:
        self.transport.resumeProducing()

    def connectionLost(self, reason) -> None:
        if not self.connected_at.called:
            self.connected_at.callback(self)
        self.closed.callback(None)


async def connect(port: int, reading: bool = True, bind: str = "127.0.0.1") -> _Client:
    client = _Client(reading)
    factory = protocol.ClientFactory()
    factory.protocol = lambda: client  # type: ignore[assignment]
    reactor.connectTCP("127.0.0.1", port, factory, bindAddress=(bind, 0))
    await client.connected_at
    return client


def server_connections(running) -> list:
    """The broker's HTTPConnection objects (the deadline sweep knows them all)."""
    deadlines = running.listener.factory.settings.get("_deadlines")
    return list(deadlines.connections) if deadlines is not None else []


def the_connection(running):
    connections = server_connections(running)
    assert len(connections) == 1, connections
    return connections[0]


BOUND = 256 * 1024


async def flood_without_reading(running, request: bytes, count: int, response_size: int) -> _Client:
    """Pipeline ``count`` requests from a client that reads nothing; the broker must
    stop (holding at most max_output_bytes plus one response) rather than buffer
    every answer."""
    client = await connect(running.port, reading=False)
    client.transport.write(request * count)
    await wait_until(lambda: len(server_connections(running)) == 1)
    connection = the_connection(running)
    bound = BOUND + response_size + 64 * 1024
    # either it stops reading, or its buffer shows the defect
    await wait_until(lambda: connection._stalled or buffered(connection.transport) > bound, timeout=30)
    assert buffered(connection.transport) <= bound
    served = connection._served
    await sleep(0.3)
    assert connection._served == served, "it kept answering a client that reads nothing"
    assert buffered(connection.transport) <= bound
    assert served < count
    return client


@pytest_twisted.ensureDeferred
async def test_pipelined_requests_from_a_client_that_never_reads_are_bounded(redis, redis_server):
    running = await start_app(redis_server.target, test_config(server={"max_output_bytes": BOUND}))
    try:
        document = await (await running.get("/openapi.json")).content()
        request = b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        count = 40 * 1024 * 1024 // len(document) + 1
        client = await flood_without_reading(running, request, count, len(document))
        # once the client reads, every answer comes, in order
        client.read()
        await wait_until(lambda: client.data.count(b"HTTP/1.1 200 OK") == count, timeout=60)
        client.transport.loseConnection()
    finally:
        await stop_app(running)


@pytest_twisted.ensureDeferred
async def test_pipelined_404s_from_a_client_that_never_reads_are_bounded(redis, redis_server):
    running = await start_app(redis_server.target, test_config(server={"max_output_bytes": BOUND}))
    try:
        request = b"GET /no/such/route HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        client = await flood_without_reading(running, request, 200000, 1024)
        client.transport.abortConnection()
    finally:
        await stop_app(running)


@pytest_twisted.ensureDeferred
async def test_a_connection_that_stays_over_the_bound_is_closed_after_idle_timeout(redis, redis_server):
    running = await start_app(redis_server.target, test_config(
        server={"max_output_bytes": BOUND, "idle_timeout": 0.5}))
    try:
        request = b"GET /no/such/route HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        client = await flood_without_reading(running, request, 200000, 1024)
        await wait_until(lambda: client.closed.called, timeout=20)
        assert server_connections(running) == []
    finally:
        await stop_app(running)


@pytest_twisted.ensureDeferred
async def test_websocket_pings_and_error_answers_count_against_the_bound(redis, redis_server):
    running = await start_app(redis_server.target, test_config(server={"max_output_bytes": BOUND}))
    try:
        client = await connect(running.port)
        ws = WSConnection(ConnectionType.CLIENT)
        client.transport.write(ws.send(Request(host="127.0.0.1", target="/ws/flood")))
        await wait_until(lambda: b"\r\n\r\n" in client.data)
        ws.receive_data(bytes(client.data))
        assert [type(event).__name__ for event in ws.events()] == ["AcceptConnection"]
        client.transport.pauseProducing()  # from now on it reads nothing
        connection = the_connection(running)
        ping = ws.send(Ping(payload=b"p" * 125))
        junk = ws.send(TextMessage(data="1"))  # each answered by an error frame ten times its size
        client.transport.write((ping + junk) * 100000)
        bound = BOUND + 128 * 1024
        await wait_until(lambda: connection._stalled or buffered(connection.transport) > bound, timeout=30)
        assert buffered(connection.transport) <= bound
        await sleep(0.3)
        assert buffered(connection.transport) <= bound
        client.transport.abortConnection()
    finally:
        await stop_app(running)


@pytest_twisted.ensureDeferred
async def test_connections_are_capped_per_address_and_in_total(redis, redis_server):
    running = await start_app(redis_server.target, test_config(
        server={"max_connections": 5, "max_connections_per_ip": 3}))
    limiter = running.listener.factory.limiter
    try:
        held = [await connect(running.port) for _ in range(3)]
        await wait_until(lambda: limiter.total == 3)
        refused = await connect(running.port)
        await wait_until(lambda: refused.closed.called)
        assert refused.data == b"" and limiter.total == 3
        # another address is still served
        held += [await connect(running.port, bind="127.0.0.2") for _ in range(2)]
        await wait_until(lambda: limiter.total == 5)
        over = await connect(running.port, bind="127.0.0.3")
        await wait_until(lambda: over.closed.called)
        assert limiter.total == 5 and limiter.refused == 2
        held[0].transport.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await wait_until(lambda: b"200 OK" in held[0].data)
        # a closed connection frees its place
        held[0].transport.loseConnection()
        await wait_until(lambda: limiter.total == 4)
        again = await connect(running.port)
        again.transport.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await wait_until(lambda: b"200 OK" in again.data)
        for client in held[1:] + [again]:
            client.transport.loseConnection()
        await wait_until(lambda: limiter.total == 0 and limiter.per_ip == {})
    finally:
        await stop_app(running)


@pytest_twisted.ensureDeferred
async def test_one_address_cannot_take_every_connection(redis, redis_server):
    # the defaults: sized to the descriptor limit, one address gets three quarters
    running = await start_app(redis_server.target, test_config(server={"max_connections": 12}))
    limiter = running.listener.factory.limiter
    try:
        assert limiter.max_per_ip == 9
        hog = [await connect(running.port) for _ in range(15)]
        await wait_until(lambda: limiter.total == 9 and sum(c.closed.called for c in hog) == 6)
        other = await connect(running.port, bind="127.0.0.2")
        other.transport.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await wait_until(lambda: b"200 OK" in other.data)
        for client in hog + [other]:
            client.transport.loseConnection()
    finally:
        await stop_app(running)


def test_connection_limits_default_to_the_descriptor_limit():
    import resource
    from restmq.web.http import ConnectionLimiter
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limiter = ConnectionLimiter(0, 0, task.Clock())
    assert limiter.max_total == soft - ConnectionLimiter.RESERVED_FDS
    assert limiter.max_per_ip == limiter.max_total * 3 // 4


def test_refused_connections_are_logged_at_most_once_a_second():
    from twisted.logger import globalLogPublisher
    from restmq.web.http import ConnectionLimiter
    clock = task.Clock()
    limiter = ConnectionLimiter(2, 1, clock)
    events: list = []
    observer = events.append
    globalLogPublisher.addObserver(observer)
    try:
        assert limiter.admit("10.0.0.1")
        for _ in range(50):
            assert not limiter.admit("10.0.0.1")
        clock.advance(0.5)
        for _ in range(50):
            assert not limiter.admit("10.0.0.1")
        refusals = [e for e in events if "Refused" in e.get("log_format", "")]
        assert len(refusals) == 1 and refusals[0]["count"] == 1
        clock.advance(0.6)
        assert not limiter.admit("10.0.0.1")
        refusals = [e for e in events if "Refused" in e.get("log_format", "")]
        assert len(refusals) == 2 and refusals[1]["count"] == 100
    finally:
        globalLogPublisher.removeObserver(observer)


@pytest_twisted.ensureDeferred
async def test_a_connection_that_never_sends_a_request_is_closed_after_header_timeout(redis, redis_server):
    running = await start_app(redis_server.target, test_config(
        server={"header_timeout": 0.3, "idle_timeout": 600}))
    try:
        silent = await connect(running.port)
        await wait_until(lambda: silent.closed.called, timeout=10)
        assert silent.data == b""
        # one that sent a request is idle keep-alive: idle_timeout applies
        served = await connect(running.port)
        served.transport.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await wait_until(lambda: b"200 OK" in served.data)
        connection = the_connection(running)
        assert connection.deadline - running.dispatcher.clock.seconds() > 500
        served.transport.loseConnection()
    finally:
        await stop_app(running)


# item 9: a command is a whole WebSocket message, however it travelled

async def acked_socket(running, queue: str) -> tuple:
    ws = await WsClient.open(running.port, "/ws/%s?ack=1" % queue)
    assert ws.accepted
    await wait_until(lambda: running.dispatcher.subscriber_counts(queue).get("websocket") == 1
                     and running.dispatcher._queues[queue].ready)
    await running.store.add(queue, ["job"])
    await wait_until(lambda: len(ws.messages()) == 1)
    return ws, ws.messages()[0]["receipt"]


def answers(ws) -> list:
    return [m for m in ws.messages() if "key" not in m]


@pytest_twisted.ensureDeferred
async def test_websocket_command_split_across_segments_is_one_command(app):
    ws, receipt = await acked_socket(app, "split")
    frame = ws.ws.send(TextMessage(data=json.dumps({"ack": receipt})))
    assert len(frame) > 40
    ws.client.transport.write(frame[:25])
    # the broker has read the first segment alone (and kept its part of the message)
    session = the_connection(app)._upgraded
    await wait_until(lambda: session._parts)
    ws.client.transport.write(frame[25:])
    await wait_until(lambda: answers(ws))
    await sleep(0.1)
    assert answers(ws) == [{"acked": 1}]
    assert (await app.store.stats("split"))[0].inflight == 0
    ws.close()


@pytest_twisted.ensureDeferred
async def test_websocket_fragmented_and_large_commands_are_reassembled(app):
    ws, receipt = await acked_socket(app, "frag")
    text = json.dumps({"pad": "x" * 100000, "ack": receipt})
    pieces = [text[:10], text[10:50000], text[50000:]]
    data = b"".join(ws.ws.send(TextMessage(data=piece, message_finished=i == len(pieces) - 1))
                    for i, piece in enumerate(pieces))
    ws.client.transport.write(data)
    await wait_until(lambda: answers(ws))
    await sleep(0.1)
    assert answers(ws) == [{"acked": 1}]
    ws.close()


@pytest_twisted.ensureDeferred
async def test_websocket_command_over_max_message_bytes_is_refused_and_it_goes_on(redis, redis_server):
    running = await start_app(redis_server.target, test_config(server={"max_message_bytes": 2000}))
    try:
        ws, receipt = await acked_socket(running, "big")
        ws.send_text(json.dumps({"pad": "x" * 5000, "ack": receipt}))
        await wait_until(lambda: answers(ws))
        assert answers(ws)[0]["error"]["code"] == "message_too_large"
        session = the_connection(running)._upgraded
        assert session._parts == [] and session._size == 0
        ws.send_text(json.dumps({"ack": receipt}))
        await wait_until(lambda: len(answers(ws)) == 2)
        assert answers(ws)[1] == {"acked": 1}
        ws.close()
    finally:
        await stop_app(running)


# item 8: every lease follows the queue's lease_seconds

async def lease_left_ms(redis, queue: str, key: str) -> float:
    seconds, micros = await redis.execute_command("TIME")
    now = int(seconds) * 1000 + int(micros) // 1000
    return float(await redis.zscore(queue + ":inflight", key)) - now


@pytest_twisted.ensureDeferred
async def test_acked_streams_and_extends_use_the_queues_lease_seconds(app, redis):
    assert (await app.post("/settings/short", data={"lease_seconds": "3"})).code == 200
    # a WebSocket with ?ack=1 (COMET and SSE share its dispatcher path)
    ws, receipt = await acked_socket(app, "short")
    key = receipt.rpartition(":")[0]
    assert 0 < await lease_left_ms(redis, "short", key) <= 3000
    consumer = next(iter(app.dispatcher._queues["short"].consumers))
    assert consumer._held[key][1] - app.dispatcher.clock.seconds() <= 3.0
    # extend without seconds: the queue's lease again, on the socket and on REST
    ws.send_text(json.dumps({"extend": receipt}))
    await wait_until(lambda: answers(ws) == [{"extended": 1}])
    assert 0 < await lease_left_ms(redis, "short", key) <= 3000
    assert (await app.post("/q/short/extend", data={"receipt": receipt, "seconds": "100"})).code == 200
    assert await lease_left_ms(redis, "short", key) > 90000
    assert (await app.post("/q/short/extend", data={"receipt": receipt})).code == 200
    assert 0 < await lease_left_ms(redis, "short", key) <= 3000
    ws.close()
    # and a queue without the setting keeps the default (30 s), not the other queue's 3 s
    plain, receipt = await acked_socket(app, "long")
    assert 3000 < await lease_left_ms(redis, "long", receipt.rpartition(":")[0]) <= 30000
    plain.close()


# item 7: Redis out of memory or read-only, inside a script

class LogCapture:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.events: list = []

    def __call__(self, event: dict) -> None:
        if event.get("log_namespace", "").startswith(self.namespace):
            self.events.append(event)

    def __enter__(self) -> "LogCapture":
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *_: object) -> None:
        from twisted.logger import globalLogPublisher
        globalLogPublisher.removeObserver(self)

    def at(self, level: str) -> list:
        return [e for e in self.events if e["log_level"].name == level]


@pytest_twisted.ensureDeferred
async def test_redis_out_of_memory_is_507_logged_once_and_not_ready():
    server = RedisProcess().start()
    running = await start_app(server.target)
    try:
        redis = await txredisapi.Connection("127.0.0.1", server.port, reconnect=False)
        with LogCapture("restmq.storage") as logs:
            await redis.execute_command("CONFIG", "SET", "maxmemory", "1")
            for _ in range(5):
                response = await running.post("/q/full", data={"value": "v"})
                assert response.code == 507
                assert json.loads(await response.text())["error"]["code"] == "storage_full"
            assert (await running.post("/queue", data={"body": json.dumps(
                {"cmd": "add", "queue": "full", "value": "v"})})).code == 507
            ready = await running.get("/health/ready")
            assert ready.code == 507 and b"out of memory" in await ready.content()
            assert len(logs.at("error")) == 1 and "out_of_memory" in logs.at("error")[0]["state"]
            await redis.execute_command("CONFIG", "SET", "maxmemory", "0")
            assert (await running.get("/health/ready")).code == 200
            assert (await running.post("/q/full", data={"value": "v"})).code == 200
            assert len(logs.at("error")) == 1 and len(logs.at("info")) == 1
        await redis.disconnect()
    finally:
        await stop_app(running)
        server.stop()


@pytest_twisted.ensureDeferred
async def test_redis_read_only_replica_is_503_logged_once_and_not_ready():
    master = RedisProcess().start()
    server = RedisProcess().start()
    running = await start_app(server.target)
    try:
        await running.store.add("ro", ["before"])
        redis = await txredisapi.Connection("127.0.0.1", server.port, reconnect=False)
        with LogCapture("restmq.storage") as logs:
            await redis.execute_command("REPLICAOF", "127.0.0.1", str(master.port))
            for path in ("/q/ro", "/q/ro?reserve=10"):
                for _ in range(3):
                    response = await (running.post(path, data={"value": "v"}) if "reserve" not in path
                                      else running.get(path))
                    assert response.code == 503, path
                    assert json.loads(await response.text())["error"]["code"] == "backend_unavailable"
            ready = await running.get("/health/ready")
            assert ready.code == 503 and b"read-only" in await ready.content()
            assert len(logs.at("error")) == 1 and logs.at("error")[0]["state"] == "read_only"
            await redis.execute_command("REPLICAOF", "NO", "ONE")
            assert (await running.post("/q/ro", data={"value": "after"})).code == 200
            assert (await running.get("/health/ready")).code == 200
        await redis.disconnect()
    finally:
        await stop_app(running)
        server.stop()
        master.stop()


# item 6: work that grows with a queue is done in bounded chunks, one script call each

class CallCounter:
    """Counts the store's Redis round trips (its metrics hook)."""

    def __init__(self, store) -> None:
        self.calls = 0
        store.observe = self

    def __call__(self, seconds: float) -> None:
        self.calls += 1


async def keys_of(redis, pattern: str) -> list:
    found, cursor = [], "0"
    while True:
        cursor, batch = await redis.execute_command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
        found += [k.decode() if isinstance(k, bytes) else k for k in batch]
        if cursor in (b"0", "0", 0):
            return sorted(found)


@pytest_twisted.ensureDeferred
async def test_purge_of_a_large_queue_is_chunked_and_complete(store, redis, monkeypatch):
    from restmq.storage import store as store_module
    monkeypatch.setattr(store_module, "PURGE_CHUNK", 100)
    for _ in range(25):
        await store.add("big", ["m"] * 100)
    await store.reserve("big", 10, 60000)
    await store.add("big", ["later"] * 5, delay_ms=60000)
    await store.set_policy("big", store_module.Policy.ROUNDROBIN)
    counter = CallCounter(store)
    assert await store.purge("big") == 2505
    # one O(1) detach, then 100 bodies per call at most
    assert counter.calls >= 1 + 2505 // 100
    # what stays is configuration and the counters (ids are never reused)
    assert await keys_of(redis, "big:*") == ["big:UUID", "big:delivered", "big:queuepolicy"]
    assert await redis.smembers("restmq:purges") == set()
    assert "big" not in await store.queues()
    # the queue is usable at once
    await store.add("big", ["again"])
    assert [m.value for m in await store.take("big")] == ["again"]


@pytest_twisted.ensureDeferred
async def test_a_purge_interrupted_half_way_is_finished_by_the_next_start(store, redis):
    from restmq import keys
    await store.add("cut", ["m"] * 300)
    token = "feedface"
    entry = keys.purge_entry("cut", token)
    # the broker dies right after the detach
    await store._run("purge_start", [keys.queue_list("cut"), keys.QUEUESET, keys.PURGES,
                                     keys.purge_job("cut", token)],
                     ["cut", keys.NOTIFY_CHANNEL, entry, keys.purge_trash_prefix("cut", token)])
    assert len(await keys_of(redis, "cut:[0-9]*")) == 300
    assert await store.take("cut") == []
    assert await store.finish_purges() == 300
    assert await keys_of(redis, "cut:*") == ["cut:UUID"]
    assert await redis.smembers("restmq:purges") == set()


@pytest_twisted.ensureDeferred
async def test_redrive_of_many_dead_letters_is_chunked_and_counts_what_it_moved(store, monkeypatch):
    from restmq.storage import store as store_module
    monkeypatch.setattr(store_module, "REDRIVE_CHUNK", 50)
    for _ in range(10):
        await store.add("rd:dead", ["d"] * 100)
    counter = CallCounter(store)
    assert await store.redrive("rd", 130) == 130
    assert counter.calls >= 3
    counter.calls = 0
    assert await store.redrive("rd") == 870
    assert counter.calls >= 870 // 50
    assert (await store.stats("rd"))[0].length == 1000
    assert (await store.stats("rd:dead"))[0].length == 0


@pytest_twisted.ensureDeferred
async def test_stats_of_many_queues_is_paged_without_repeats(store, monkeypatch):
    from restmq.storage import store as store_module
    monkeypatch.setattr(store_module, "STATS_PAGE", 25)
    for i in range(600):
        await store.add("s%03d" % i, ["x"] * (i % 3 + 1))
    counter = CallCounter(store)
    infos = await store.stats()
    assert [info.name for info in infos] == ["s%03d" % i for i in range(600)]
    assert [info.length for info in infos] == [i % 3 + 1 for i in range(600)]
    assert counter.calls >= 600 // 25 // 2
