"""The syslog adapter with real traffic: Debian's ``logger`` and raw sockets into a
SyslogService listening on a free port, messages read back from the test Redis."""

from __future__ import annotations

import json
import os
import shutil
import socket
from typing import Any, List

import pytest
import pytest_twisted
from twisted.internet import reactor, utils

from restmq.storage.pool import RedisPool
from restmq.storage.store import QueueStore
from restmq.ingest.syslog import SyslogIngest, SyslogService
from tests.helpers import RedisProcess, open_raw, wait_until

QUEUE = "syslogd:127.0.0.1"
LOGGER = shutil.which("logger")


def start_syslogd(store: QueueStore, max_line: int = 64 * 1024, max_connections: int = 100,
                  drain_timeout: float = 5.0, **ingest_options: Any) -> SyslogService:
    ingest = SyslogIngest(store, reactor, **ingest_options)
    syslogd = SyslogService(ingest, reactor, 0, "127.0.0.1", max_line, max_connections,
                            drain_timeout=drain_timeout)
    syslogd.startService()
    return syslogd


@pytest_twisted.async_yield_fixture()
async def syslogd(store):
    running = start_syslogd(store)
    yield running
    await running.stopService()


async def logger(port: int, *args: str) -> None:
    """Debian's logger (bsdutils), sending to our port."""
    assert LOGGER, "logger (util-linux / bsdutils) is needed for these tests"
    out, err, code = await utils.getProcessOutputAndValue(
        LOGGER, ["--server", "127.0.0.1", "--port", str(port), *args], env=os.environ)
    assert code == 0, err


async def stored(store: QueueStore, queue: str = QUEUE, count: int = 1000) -> List[dict]:
    return [json.loads(message.value) for message in await store.take(queue, count)]


async def received_and_stored(syslogd: SyslogService, count: int) -> None:
    await wait_until(lambda: syslogd.ingest.counts["stored"] >= count)


def send_tcp(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(data)


def send_udp(port: int, *datagrams: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as conn:
        for datagram in datagrams:
            conn.sendto(datagram, ("127.0.0.1", port))


# logger traffic

@pytest_twisted.ensureDeferred
async def test_logger_rfc5424_over_tcp_with_structured_data(syslogd, store):
    await logger(syslogd.listening_port, "--tcp", "--rfc5424", "-t", "myapp", "-p", "local3.warning",
                 "--msgid", "ID47", "--sd-id", "zoo@32473", "--sd-param", 'tiger="hungry"',
                 "hello 5424")
    await received_and_stored(syslogd, 1)
    [message] = await stored(store)
    assert message["host"] == "127.0.0.1" and message["transport"] == "tcp"
    assert isinstance(message["tstamp"], float)
    assert (message["format"], message["facility"], message["severity"], message["pri"]) == (
        "rfc5424", "local3", "warn", 156)
    assert (message["app"], message["msgid"], message["message"]) == ("myapp", "ID47", "hello 5424")
    assert message["structured_data"]["zoo@32473"] == {"tiger": "hungry"}
    assert message["hostname"] == socket.gethostname()
    assert message["malformed"] is False and message["truncated"] is False
    assert message["line"].startswith("<156>1 ") and message["line"].endswith(" hello 5424")


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("transport,framing", [
    ("--tcp", "--rfc3164"), ("--tcp", "--rfc5424"), ("--udp", "--rfc3164"), ("--udp", "--rfc5424"),
    ("--tcp", "--octet-count"),
])
async def test_logger_formats_and_transports(syslogd, store, transport, framing):
    await logger(syslogd.listening_port, transport, framing, "-t", "app", "-i", "message body")
    await received_and_stored(syslogd, 1)
    [message] = await stored(store)
    expected_format = "rfc3164" if framing == "--rfc3164" else "rfc5424"
    assert message["transport"] == transport[2:]
    assert (message["format"], message["app"], message["message"]) == (expected_format, "app", "message body")
    assert message["procid"] is not None and message["procid"].isdigit()
    assert (message["facility"], message["severity"]) == ("user", "notice")


@pytest_twisted.ensureDeferred
async def test_many_lines_on_one_connection_keep_their_order(syslogd, store, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("".join("line %03d\n" % n for n in range(200)))
    await logger(syslogd.listening_port, "--tcp", "--rfc3164", "-f", str(lines))
    await received_and_stored(syslogd, 200)
    assert [m["message"] for m in await stored(store)] == ["line %03d" % n for n in range(200)]


@pytest_twisted.ensureDeferred
async def test_lines_that_arrive_together_share_one_store_call(syslogd, store):
    send_tcp(syslogd.listening_port, b"".join(b"<13>app: burst %d\n" % n for n in range(500)))
    await received_and_stored(syslogd, 500)
    assert syslogd.ingest.counts["batches"] < 50
    assert len(await stored(store)) == 500


# bad input

@pytest_twisted.ensureDeferred
async def test_malformed_lines_are_kept_and_flagged(syslogd, store):
    send_tcp(syslogd.listening_port, b"no priority here\n<13>1 - - - - - [unclosed\n<13>app: fine\n")
    await received_and_stored(syslogd, 3)
    first, second, third = await stored(store)
    assert first["malformed"] is True and first["error"].startswith("no <PRI>")
    assert first["message"] == first["line"] == "no priority here"
    assert first["facility"] is None and first["format"] is None
    assert second["malformed"] is True and second["line"] == "<13>1 - - - - - [unclosed"
    assert third["malformed"] is False and third["message"] == "fine"


@pytest_twisted.ensureDeferred
async def test_malformed_datagrams_are_kept_and_flagged(syslogd, store):
    send_udp(syslogd.listening_port, b"\xff\xfe garbage \x00", b"<300>too high")
    await received_and_stored(syslogd, 2)
    messages = sorted(await stored(store), key=lambda m: m["line"])
    assert [m["malformed"] for m in messages] == [True, True]
    assert {m["line"] for m in messages} == {"\\xff\\xfe garbage ", "<300>too high"}


@pytest_twisted.ensureDeferred
async def test_oversized_line_from_logger_is_cut_and_flagged(store):
    syslogd = start_syslogd(store, max_line=1024)
    try:
        await logger(syslogd.listening_port, "--tcp", "--rfc3164", "--size", "200000", "x" * 100000)
        await logger(syslogd.listening_port, "--tcp", "--octet-count", "--size", "200000", "y" * 5000)
        await received_and_stored(syslogd, 2)
        plain, octet = await stored(store)
        assert plain["truncated"] is True and len(plain["line"]) == 1024
        assert plain["message"].endswith("x" * 100) and not plain["malformed"]
        assert octet["truncated"] is True and len(octet["line"]) == 1024
    finally:
        await syslogd.stopService()


@pytest_twisted.ensureDeferred
async def test_after_an_oversized_line_the_connection_goes_on(store):
    syslogd = start_syslogd(store, max_line=512)
    try:
        send_tcp(syslogd.listening_port, b"<13>app: " + b"z" * 100000 + b"\n<13>app: next\n")
        send_udp(syslogd.listening_port, b"<13>app: " + b"u" * 60000)
        await received_and_stored(syslogd, 3)
        messages = await stored(store)
        assert [(m["transport"], m["truncated"], len(m["line"])) for m in messages if m["truncated"]] in (
            [("tcp", True, 512), ("udp", True, 512)], [("udp", True, 512), ("tcp", True, 512)])
        assert [m["message"] for m in messages if not m["truncated"]] == ["next"]
    finally:
        await syslogd.stopService()


@pytest_twisted.ensureDeferred
async def test_connections_over_the_limit_are_refused(store):
    syslogd = start_syslogd(store, max_connections=1)
    try:
        first = await open_raw(syslogd.listening_port)
        await wait_until(lambda: syslogd.factory.connections == 1)
        second = await open_raw(syslogd.listening_port)
        await wait_until(lambda: second.closed.called)
        first.transport.write(b"<13>app: still served\n")
        await received_and_stored(syslogd, 1)
        first.transport.loseConnection()
        await wait_until(lambda: first.closed.called)
    finally:
        await syslogd.stopService()


# consumers

@pytest_twisted.ensureDeferred
async def test_comet_consumer_of_the_sender_queue_gets_the_lines(app, store):
    syslogd = start_syslogd(store)
    try:
        client = await open_raw(app.port)
        client.transport.write(b"GET /c/" + QUEUE.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await wait_until(lambda: b"200 OK" in client.data)
        await wait_until(lambda: sum(app.dispatcher.subscriber_counts(QUEUE).values()) == 1)
        await app.dispatcher.ready(QUEUE)
        await logger(syslogd.listening_port, "--udp", "-t", "streamer", "hello comet")
        await wait_until(lambda: b"hello comet" in client.data)
        line = [row for row in client.data.split(b"\r\n") if b"hello comet" in row][0]
        payload = json.loads(json.loads(line)["value"])
        assert payload["app"] == "streamer" and payload["host"] == "127.0.0.1"
        client.transport.loseConnection()
    finally:
        await syslogd.stopService()


# Redis away

@pytest_twisted.ensureDeferred
async def test_lines_wait_for_redis_tcp_senders_pause_and_nothing_tcp_is_lost(tmp_path):
    server = RedisProcess().start()
    pool = RedisPool(server.target, 2, 1.0, 1.5, reactor)
    pool.start()
    store = QueueStore(pool)
    syslogd = start_syslogd(store, max_pending_bytes=64 * 1024, retry_delay=0.1)
    ingest = syslogd.ingest
    try:
        await logger(syslogd.listening_port, "--tcp", "before the outage")
        await received_and_stored(syslogd, 1)
        server.stop()
        await wait_until(lambda: not pool.connected)

        lines = tmp_path / "lines.txt"
        lines.write_text("".join("held %04d %s\n" % (n, "p" * 400) for n in range(1000)))
        await logger(syslogd.listening_port, "--tcp", "--rfc3164", "-f", str(lines))
        await wait_until(lambda: ingest.paused)
        send_udp(syslogd.listening_port, *[b"<13>app: dropped while full"] * 5)
        await wait_until(lambda: ingest.counts["dropped"] >= 1)
        assert ingest.counts["stored"] == 1

        server.start()
        await wait_until(lambda: ingest.counts["stored"] >= 1001, timeout=30)
        assert not ingest.paused
        messages = await stored(store, count=2000)
        assert [m["message"][:9] for m in messages] == ["held %04d" % n for n in range(1000)]
        assert ingest.pending_bytes == 0
    finally:
        await syslogd.stopService()
        await pool.stop()
        server.stop()


@pytest_twisted.ensureDeferred
async def test_stop_waits_for_held_lines_to_be_stored():
    server = RedisProcess().start()
    pool = RedisPool(server.target, 2, 1.0, 1.5, reactor)
    pool.start()
    store = QueueStore(pool)
    syslogd = start_syslogd(store, retry_delay=0.1, drain_timeout=30)
    try:
        await wait_until(lambda: pool.connected)
        server.stop()
        await wait_until(lambda: not pool.connected)
        send_tcp(syslogd.listening_port, b"".join(b"<13>app: at stop %d\n" % n for n in range(10)))
        await wait_until(lambda: syslogd.ingest.counts["received"] == 10)
        stopping = syslogd.stopService()
        assert not stopping.called
        server.start()
        await stopping
        assert syslogd.ingest.counts["stored"] == 10
        assert [m["message"] for m in await stored(store)] == ["at stop %d" % n for n in range(10)]
    finally:
        await pool.stop()
        server.stop()
