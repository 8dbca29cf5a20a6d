"""Streaming consumers: COMET (/c/<q>), Server-Sent Events and WebSocket (/ws/<q>).

Each connection is a small adapter onto the Dispatcher's Consumer interface.
It is also the push producer of its TCP transport, so Twisted tells it when
the client stops reading: it then takes no round-robin messages, and past
``buffer_limit`` bytes behind a broadcast it is cut off.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import orjson
from twisted.internet import defer
from twisted.logger import Logger
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, Message as WsMessage, Ping, TextMessage
from wsproto.utilities import LocalProtocolError, RemoteProtocolError, generate_accept_token
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

from restmq.errors import BadRequest, Forbidden
from restmq.model import Batch, Message
from restmq.storage.store import check_queue
from restmq.web.base import BaseHandler, async_handler
from restmq.web.http import fast_write
from cyclone import httputil

__all__ = ["StreamConsumer", "CometHandler", "WebSocketHandler", "sse_frame", "comet_line"]


def comet_line(message: Message) -> bytes:
    return message.json() + b"\r\n"


def sse_frame(message: Message) -> bytes:
    return b"id: %s\ndata: %s\n\n" % (message.key.encode("utf-8"), message.json())


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _comet_chunked(message: Message) -> bytes:
    return _chunk(comet_line(message))


def _sse_chunked(message: Message) -> bytes:
    return _chunk(sse_frame(message))


class _Jsonp:
    """Encoder for one JSONP callback name (cached per name, not per connection)."""

    __slots__ = ("prefix", "chunked")

    def __init__(self, callback: str, chunked: bool) -> None:
        self.prefix = callback.encode()
        self.chunked = chunked

    def __call__(self, message: Message) -> bytes:
        line = b"%s(%s);\r\n" % (self.prefix, message.json())
        return _chunk(line) if self.chunked else line


_SSE_HEARTBEAT = b":\n\n"
_HEARTBEATS = {True: _chunk(_SSE_HEARTBEAT), False: _SSE_HEARTBEAT}


@implementer(IPushProducer)
class StreamConsumer:
    """A streaming connection as the dispatcher sees it (see dispatch.Consumer).

    ``encode`` turns a message into this transport's bytes; the result is
    cached on the message under ``cache_name`` so a broadcast encodes once.
    ``closer(reason)`` ends the stream when the broker ends it. Kept small:
    with 10,000 idle streams every byte of it counts.
    """

    __slots__ = ("transport", "_write", "_encode", "_cache_name", "_buffer_limit", "_dispatcher",
                 "_queue", "_closer", "heartbeat_frame", "paused", "closed", "_behind", "backlog",
                 "acked", "prefetch", "_held", "remote", "since")

    def __init__(self, transport_name: str, write: Callable[[bytes], None],
                 encode: Callable[[Message], bytes], cache_name: str, buffer_limit: int,
                 dispatcher: Any, queue: str, closer: Callable[[str], None],
                 heartbeat_frame: Optional[bytes] = None) -> None:
        self.transport = transport_name
        self._write = write
        self._encode = encode
        self._cache_name = cache_name
        self._buffer_limit = buffer_limit
        self._dispatcher = dispatcher
        self._queue = queue
        self._closer = closer
        self.heartbeat_frame = heartbeat_frame
        self.paused = False
        self.closed = False
        self._behind = 0
        # while replaying history (SSE resume) live messages wait here
        self.backlog: Optional[List[Message]] = None
        # at-least-once (?ack=1): leased messages held until settled or expired
        self.acked = False
        self.prefetch = 0
        self._held: Optional[Dict[str, Tuple[str, float]]] = None
        # who it is, for the dashboard's consumer list (set by _identify)
        self.remote = ""
        self.since = 0.0

    # dispatch.AckedConsumer

    def credit(self, now: float) -> int:
        held = self._held
        if held is None:
            held = self._held = {}
        for key in [key for key, (_, deadline) in held.items() if deadline <= now]:
            del held[key]
        return max(0, self.prefetch - len(held))

    def hold(self, message: Message, deadline: float) -> None:
        if message.receipt:
            if self._held is None:
                self._held = {}
            self._held[message.key] = (message.receipt, deadline)

    def release(self, keys: Sequence[str]) -> bool:
        held = self._held or {}
        return any([held.pop(key, None) is not None for key in keys])

    def outstanding(self) -> List[str]:
        return [receipt for receipt, _ in (self._held or {}).values()]

    # dispatch.Consumer

    def send(self, message: Message) -> None:
        if self.closed:
            return
        if self.backlog is not None:
            self.backlog.append(message)
            return
        self.write_message(message)

    def send_batch(self, batch: Batch) -> None:
        if self.closed:
            return
        if self.backlog is not None:
            self.backlog.extend(batch.messages)
            return
        self.write_raw(batch.encoded(self._cache_name, self._encode))

    def write_message(self, message: Message) -> None:
        self.write_raw(message.encoded(self._cache_name, self._encode))

    def write_raw(self, data: bytes) -> None:
        if not self.closed:
            if self.paused:
                self._behind += len(data)
            self._write(data)

    def heartbeat(self) -> None:
        if self.heartbeat_frame is not None:
            self.write_raw(self.heartbeat_frame)

    def can_take(self) -> bool:
        return not self.paused and not self.closed

    def overflowing(self) -> bool:
        return self._behind > self._buffer_limit

    def close(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self._dispatcher.remove_heartbeat(self)
            self._closer(reason)

    def gone(self, _: Any = None) -> None:
        """The client went away (notifyFinish / connectionLost)."""
        self.closed = True
        self._dispatcher.unsubscribe(self._queue, self)
        self._dispatcher.remove_heartbeat(self)

    # IPushProducer: Twisted calls these as the socket's send buffer fills and drains

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._behind = 0
        if not self.closed:
            self._dispatcher.resumed(self._queue)

    def stopProducing(self) -> None:
        self.closed = True


def _identify(handler: BaseHandler, consumer: StreamConsumer) -> None:
    """The client's address and the time it connected (``GET /q/<q>/consumers``)."""
    consumer.remote = handler.request.remote_ip or ""
    consumer.since = handler.context.clock.seconds()


def _ack_options(handler: BaseHandler, consumer: StreamConsumer) -> None:
    """``?ack=1`` makes a stream at-least-once: leased messages, ``prefetch`` unacked."""
    if handler.argument("ack") in ("1", "true", "yes"):
        delivery = handler.context.config.delivery
        consumer.acked = True
        consumer.prefetch = int(handler.number("prefetch", delivery.prefetch, low=1, high=1000, integer=True))


class _HttpStreamEnd:
    """Ends an HTTP stream without keeping its request handler alive."""

    __slots__ = ("connection", "chunked")

    def __init__(self, connection: Any, chunked: bool) -> None:
        self.connection = connection
        self.chunked = chunked

    def __call__(self, reason: str) -> None:
        transport = self.connection.transport
        if reason == "too slow":
            transport.abortConnection()
            return
        transport.unregisterProducer()
        if self.chunked:
            self.connection.write(b"0\r\n\r\n")
        # the stream is over: end the response and the connection with it
        self.connection.no_keep_alive = True
        self.connection.finish()


class CometHandler(BaseHandler):
    """GET /c/<q>: one JSON object per line (JSONP with ``callback``), or
    Server-Sent Events when the client accepts ``text/event-stream`` (and
    always on /sse/<q>)."""

    acl_categories = {"GET": "comet:consumer"}

    @async_handler
    async def get(self, queue: str) -> None:
        check_queue(queue)
        self._auto_finish = False
        dispatch = self.context.config.dispatch
        sse = self.request.path.startswith("/sse/") or \
            "text/event-stream" in self.request.headers.get("Accept", "")
        callback = None if sse else self.jsonp_callback()
        connection = self.request.connection
        chunked = self.request.supports_http_1_1()
        if sse:
            name = "sse"
            encode: Callable[[Message], bytes] = _sse_chunked if chunked else sse_frame
            self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        elif callback:
            name = "jsonp:" + callback
            encode = _Jsonp(callback, chunked)
            self.set_header("Content-Type", "application/javascript; charset=utf-8")
        else:
            name = "comet"
            encode = _comet_chunked if chunked else comet_line
            self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")

        dispatcher = self.context.dispatcher
        consumer = StreamConsumer(
            "sse" if sse else "comet", connection.write, encode, name + ("/chunked" if chunked else ""),
            dispatch.buffer_limit, dispatcher, queue, _HttpStreamEnd(connection, chunked),
            _HEARTBEATS[chunked] if sse else None)
        _ack_options(self, consumer)
        _identify(self, consumer)
        last_id = None
        if sse:
            last_id = self.request.headers.get("Last-Event-ID") or self.argument("lastEventId")
            consumer.backlog = [] if last_id else None
        # headers now; the body is written frame by frame by the consumer
        if sse:
            self.write(b"retry: %d\n\n" % dispatch.sse_retry_ms)
        self.flush()
        self._headers_written = self._finished = True  # the consumer owns the response now
        connection.transport.registerProducer(consumer, True)
        self.notifyFinish().addBoth(consumer.gone)
        dispatcher.subscribe(queue, consumer)
        if sse:
            dispatcher.add_heartbeat(consumer)
        _slim(self.request)
        if last_id:
            await self._replay(queue, last_id, consumer, chunked)

    async def _replay(self, queue: str, last_id: str, consumer: StreamConsumer, chunked: bool) -> None:
        await self.context.dispatcher.ready(queue)
        found, history = await self.store.history_after(queue, last_id)
        if consumer.closed:
            return
        if not found:
            gap = b"event: gap\ndata: %s\n\n" % orjson.dumps({
                "last_event_id": last_id, "oldest": history[0].key if history else None,
                "message": "messages after this id are no longer in the history"})
            consumer.write_raw(_chunk(gap) if chunked else gap)
        seen: Set[str] = set()
        for message in history:
            seen.add(message.key)
            consumer.write_message(message)
        backlog, consumer.backlog = consumer.backlog or [], None
        for message in backlog:
            if message.key not in seen:
                consumer.write_message(message)


def _slim(request: Any) -> None:
    """Drop what a long-lived stream no longer needs from its request."""
    connection_header = request.headers.get("Connection")
    request.headers = httputil.HTTPHeaders({"Connection": connection_header} if connection_header else {})
    request.arguments = request.raw_arguments = {}
    request.body = b""


class WebSocketHandler(BaseHandler):
    """GET /ws/<q>: a WebSocket (RFC 6455, wsproto) that carries the same JSON
    as text frames. Origin is checked against ``allowed_origins``."""

    acl_categories = {"GET": "websocket:consumer"}

    def _check_origin(self) -> None:
        if not self.origin_allowed():
            raise Forbidden("origin %s is not allowed" % self.request.headers.get("Origin"))

    @async_handler
    async def get(self, queue: str) -> None:
        check_queue(queue)
        headers = self.request.headers
        if headers.get("Upgrade", "").lower() != "websocket" or \
                "upgrade" not in headers.get("Connection", "").lower():
            raise BadRequest("this route speaks WebSocket: send Upgrade: websocket")
        key = headers.get("Sec-WebSocket-Key")
        if headers.get("Sec-WebSocket-Version") != "13" or not key:
            self.set_header("Sec-WebSocket-Version", "13")
            raise BadRequest("WebSocket version 13 with a Sec-WebSocket-Key is required")
        self._check_origin()
        self._auto_finish = False
        self._finished = True  # cyclone must not write an HTTP response after the 101
        connection = self.request.connection
        connection.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: %s\r\n\r\n" % generate_accept_token(key.encode("latin-1")))
        session = _WebSocketSession(self, queue)
        connection.upgrade(session)


class _WebSocketSession:
    """The WebSocket after the handshake: frames in, messages out."""

    log = Logger()

    def __init__(self, handler: WebSocketHandler, queue: str) -> None:
        self.handler = handler
        self.queue = queue
        self.context = handler.context
        self.transport = handler.request.connection.transport
        self.ws = Connection(ConnectionType.SERVER)
        dispatcher = self.context.dispatcher
        self.consumer = StreamConsumer(
            "websocket", self._send, self._frame, "ws-frame",
            self.context.config.dispatch.buffer_limit, dispatcher, queue, self._closed_by_broker,
            self.ws.send(Ping()))
        _ack_options(handler, self.consumer)
        _identify(handler, self.consumer)
        self.transport.registerProducer(self.consumer, True)
        dispatcher.subscribe(queue, self.consumer)
        dispatcher.add_heartbeat(self.consumer)
        _slim(handler.request)

    def _send(self, data: bytes) -> None:
        fast_write(self.transport, data)

    def _frame(self, message: Message) -> bytes:
        # a server frame is not masked, so the same bytes serve every connection
        return self.ws.send(TextMessage(data=message.json().decode("utf-8")))

    def dataReceived(self, data: bytes) -> None:
        try:
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, Ping):
                    self.transport.write(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self.transport.write(self.ws.send(event.response()))
                    self.transport.loseConnection()
                elif isinstance(event, WsMessage):
                    self.messageReceived(event)
        except RemoteProtocolError:
            self.transport.abortConnection()

    def messageReceived(self, event: WsMessage) -> None:
        """Client text frames are commands: ``{"ack": receipt(s)}``,
        ``{"nack": receipt(s), "delay": S}``, ``{"extend": receipt(s), "seconds": S}``.
        Each is answered with a frame like ``{"acked": 1}`` or ``{"error": {...}}``."""
        if not isinstance(event, TextMessage):
            return
        defer.ensureDeferred(self._command(event.data))

    async def _command(self, text: str) -> None:
        from restmq.errors import RestMQError
        from restmq.web.errors import status_for
        try:
            reply = await self._settle(text)
        except RestMQError as exc:
            reply = {"error": {"code": status_for(exc)[1], "message": exc.message}}
        if not self.consumer.closed:
            self.consumer.write_raw(self.ws.send(TextMessage(data=orjson.dumps(reply).decode())))

    async def _settle(self, text: str) -> Dict[str, Any]:
        from restmq.errors import BadRequest, LeaseLost
        try:
            command = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise BadRequest("commands are JSON objects") from None
        if not isinstance(command, dict):
            raise BadRequest("commands are JSON objects")
        action = next((name for name in ("ack", "nack", "extend") if name in command), None)
        if action is None:
            raise BadRequest("unknown command: use ack, nack or extend")
        receipts = command[action]
        receipts = [receipts] if isinstance(receipts, str) else receipts
        if not isinstance(receipts, list) or not receipts or not all(isinstance(r, str) for r in receipts):
            raise BadRequest("%s takes a receipt or a list of receipts" % action)
        store = self.context.store
        delivery = self.context.config.delivery
        if action == "ack":
            done, refused = await store.ack(self.queue, receipts)
            if self.context.metrics is not None:
                self.context.metrics.acked(self.queue, done)
        elif action == "nack":
            delay = command.get("delay", 0)
            if not isinstance(delay, (int, float)) or not 0 <= delay <= delivery.max_delay:
                raise BadRequest("delay must be 0 to %d seconds" % delivery.max_delay)
            done, refused = await store.nack(self.queue, receipts, int(delay * 1000))
        else:
            seconds = command.get("seconds", delivery.lease_seconds)
            if not isinstance(seconds, (int, float)) or not 0 < seconds <= 12 * 3600:
                raise BadRequest("seconds must be between 0 and 43200")
            done, refused = await store.extend(self.queue, receipts, int(seconds * 1000))
        if action != "extend":
            self.context.dispatcher.settled(self.queue, receipts)
        if refused:
            raise LeaseLost("the lease of %s is not yours any more" % ", ".join(refused[:10]))
        return {action + "ed": done}

    def _closed_by_broker(self, reason: str) -> None:
        if reason == "too slow":
            self.transport.abortConnection()
            return
        try:
            self.transport.write(self.ws.send(CloseConnection(code=1001, reason=reason)))
        except LocalProtocolError:
            pass  # a close is already under way
        self.transport.loseConnection()

    def connectionLost(self, reason: Any) -> None:
        self.consumer.gone()
