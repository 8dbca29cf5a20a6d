"""The clients' connections against a hostile peer (a real HTTP server on a real
socket that answers 503, stalls, or drops idle connections) and the real broker:
keep-alive, reconnection, which calls are retried, timeouts, threads."""

from __future__ import annotations

import select
import threading
from typing import Any, List

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.web import resource, server

from restmq.client import ClientError, ConnectionFailed, Queue, RequestTimeout, TxQueue
from tests.helpers import free_port, wait_until


class Peer(resource.Resource):
    """Answers like a broker would, but fails on purpose: ``fail`` 503s first,
    ``stall`` requests never answered, ``drop`` closes each connection after answering."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: List[dict] = []
        self.fail = 0
        self.stall = 0
        self.drop = False

    def render(self, request: Any) -> Any:
        if request.path.startswith(b"/sse/"):
            return self.stream(request)
        self.requests.append({"method": request.method.decode(), "path": request.path.decode(),
                              "key": request.getHeader("Idempotency-Key"),
                              "port": request.getClientAddress().port})
        request.setHeader("Content-Type", "application/json")
        if self.stall > 0:
            self.stall -= 1
            return server.NOT_DONE_YET
        if self.drop:
            # the client is not told (no Connection: close): its idle socket just dies
            reactor.callLater(0.05, request.channel.transport.loseConnection)
        if self.fail > 0:
            self.fail -= 1
            request.setResponseCode(503)
            return b'{"error": {"code": "backend_unavailable", "message": "Redis is away"}}'
        if request.method == b"POST":
            return b'{"queue": "q", "key": "q:1"}'
        return b'{"name": "q", "len": 0}'

    def stream(self, request: Any) -> Any:
        """The first stream stays silent (a dead peer); the next ones carry a message."""
        self.streams = getattr(self, "streams", 0) + 1
        request.setHeader("Content-Type", "text/event-stream")
        request.write(b"retry: 10\n\n")
        if self.streams > 1:
            request.write(b'id: q:1\ndata: {"key": "q:1", "value": "after the silence"}\n\n')
        return server.NOT_DONE_YET

    @property
    def ports(self) -> List[int]:
        return sorted({r["port"] for r in self.requests})


@pytest.fixture
def peer():
    site = server.Site(Peer())
    listener = reactor.listenTCP(0, site, interface="127.0.0.1")
    site.resource.url = "http://127.0.0.1:%d" % listener.getHost().port
    yield site.resource
    listener.stopListening()


def in_thread(function, *args, **kwargs):
    return deferToThread(function, *args, **kwargs)


@pytest_twisted.ensureDeferred
async def test_one_keep_alive_connection_carries_every_call(peer):
    queue = Queue("q", url=peer.url)
    for _ in range(20):
        assert (await in_thread(queue.stats))["len"] == 0
    assert len(peer.requests) == 20 and len(peer.ports) == 1
    queue.close()


@pytest_twisted.ensureDeferred
async def test_a_connection_the_server_closed_is_replaced_without_an_error(peer):
    peer.drop = True
    queue = Queue("q", url=peer.url, retries=0)  # no retry needed: a dead idle socket is never used
    for _ in range(3):
        await in_thread(queue.stats)
        # the server has closed the connection the client keeps idle
        await wait_until(lambda: idle_socket_closed(queue))
    assert len(peer.requests) == 3 and len(peer.ports) == 3


def idle_socket_closed(queue: Queue) -> bool:
    idle = queue._transport._idle
    return bool(idle) and bool(select.select([idle[0].sock], [], [], 0)[0])


@pytest_twisted.ensureDeferred
async def test_503_is_retried_for_idempotent_calls_only(peer):
    queue = Queue("q", url=peer.url, retries=3, backoff=0.01)
    peer.fail = 2
    assert (await in_thread(queue.stats))["name"] == "q"
    assert len(peer.requests) == 3

    # a plain put is sent once: a second one could store the message twice
    peer.requests.clear()
    peer.fail = 1
    with pytest.raises(ClientError) as raised:
        await in_thread(queue.put, "x")
    assert raised.value.status == 503 and raised.value.code == "backend_unavailable"
    assert len(peer.requests) == 1

    # with an idempotency key the broker recognises a repeat, so it is retried
    peer.requests.clear()
    peer.fail = 2
    assert await in_thread(queue.put, "x", idempotency_key="order-1") == "q:1"
    assert [r["key"] for r in peer.requests] == ["order-1"] * 3

    # retries run out: the 503 itself is raised
    peer.requests.clear()
    peer.fail = 10
    with pytest.raises(ClientError):
        await in_thread(queue.stats)
    assert len(peer.requests) == 4
    peer.fail = 0


@pytest_twisted.ensureDeferred
async def test_a_stalled_answer_times_out_and_a_pop_is_not_sent_again(peer):
    queue = Queue("q", url=peer.url, timeout=0.3, retries=2, backoff=0.01)
    peer.stall = 1
    with pytest.raises(RequestTimeout):
        await in_thread(queue.get)  # a pop: taken but lost on the way would be lost twice
    assert len(peer.requests) == 1
    peer.requests.clear()
    peer.stall = 1
    assert (await in_thread(queue.stats))["len"] == 0  # idempotent: the second try answers
    assert len(peer.requests) == 2


@pytest_twisted.ensureDeferred
async def test_an_unreachable_broker_raises_connection_failed_after_the_retries():
    queue = Queue("q", url="http://127.0.0.1:%d" % free_port(), retries=2, backoff=0.01, connect_timeout=1)
    with pytest.raises(ConnectionFailed) as raised:
        await in_thread(queue.put, "x")  # never sent, so even a put may be retried
    assert isinstance(raised.value, ConnectionError)
    assert "cannot talk to http://127.0.0.1:" in str(raised.value)


@pytest_twisted.ensureDeferred
async def test_threads_share_one_client_safely(app):
    queue = Queue("threads", url=app.url)
    keys: List[str] = []
    errors: List[BaseException] = []

    def produce(n: int) -> None:
        try:
            for i in range(25):
                keys.append(queue.put("%d-%d" % (n, i)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def run_all() -> None:
        threads = [threading.Thread(target=produce, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

    await in_thread(run_all)
    assert not errors
    assert len(set(keys)) == 200
    assert (await in_thread(queue.stats))["len"] == 200
    # the threads' connections were kept for reuse, not one per call
    assert len(queue._transport._idle) <= 8
    queue.close()


@pytest_twisted.ensureDeferred
async def test_a_silent_stream_is_taken_for_dead_and_opened_again(peer, monkeypatch):
    import restmq.client.blocking
    monkeypatch.setattr(restmq.client.blocking, "STREAM_IDLE", 0.5)
    queue = Queue("q", url=peer.url)
    first = await in_thread(lambda: next(iter(queue.subscribe())))
    assert first == "after the silence" and peer.streams == 2


# the Twisted client follows the same rules

@pytest_twisted.ensureDeferred
async def test_txqueue_retries_503_for_idempotent_calls_and_keeps_one_connection(peer):
    queue = TxQueue("q", url=peer.url, retries=3, backoff=0.01)
    peer.fail = 2
    assert (await queue.stats())["name"] == "q"
    for _ in range(5):
        await queue.stats()
    assert len(peer.requests) == 8 and len(peer.ports) == 1
    peer.requests.clear()
    peer.fail = 1
    with pytest.raises(ClientError):
        await queue.put("x")
    assert len(peer.requests) == 1
    peer.requests.clear()
    peer.fail = 1
    assert await queue.put("x", idempotency_key="k") == "q:1"
    assert [r["key"] for r in peer.requests] == ["k", "k"]
    await queue.close()


@pytest_twisted.ensureDeferred
async def test_txqueue_reopens_a_silent_stream(peer, monkeypatch):
    import restmq.client.tx
    monkeypatch.setattr(restmq.client.tx, "STREAM_IDLE", 0.5)
    queue = TxQueue("q", url=peer.url)
    received: List[str] = []
    following = queue.subscribe(received.append)
    await wait_until(lambda: received == ["after the silence"])
    assert peer.streams == 2
    following.cancel()
    with pytest.raises(defer.CancelledError):
        await following
    await queue.close()


@pytest_twisted.ensureDeferred
async def test_txqueue_times_out_and_reports_unreachable(peer):
    queue = TxQueue("q", url=peer.url, timeout=0.3, retries=2, backoff=0.01)
    peer.stall = 1
    with pytest.raises(RequestTimeout):
        await queue.get()
    assert len(peer.requests) == 1
    gone = TxQueue("q", url="http://127.0.0.1:%d" % free_port(), retries=1, backoff=0.01)
    with pytest.raises(ConnectionFailed):
        await gone.put("x")
    await queue.close()
    await gone.close()
