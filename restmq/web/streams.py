"""Streaming consumers: COMET (/c/<q>), Server-Sent Events and WebSocket (/ws/<q>).

Each connection is a small adapter onto the Dispatcher's Consumer interface.
It is also the push producer of its TCP transport, so Twisted tells it when
the client stops reading: it then takes no round-robin messages, and past
``buffer_limit`` bytes behind a broadcast it is cut off.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import orjson
from twisted.internet import defer
from twisted.logger import Logger
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message as WsMessage, Ping, TextMessage
from wsproto.utilities import LocalProtocolError, RemoteProtocolError, generate_accept_token
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

from restmq.acl import Credentials
from restmq.errors import BadRequest, Forbidden
from restmq.model import Batch, Message
from restmq.storage.store import check_group, check_queue
from restmq.web.base import BaseHandler, async_handler
from restmq.web.http import fast_write
from cyclone import httputil

__all__ = ["StreamConsumer", "CometHandler", "WebSocketHandler", "sse_frame", "comet_line"]


def comet_line(message: Message) -> bytes:
    return message.json() + b"\r\n"


def _comet_line_queue(message: Message) -> bytes:
    return message.json_with_queue() + b"\r\n"


def sse_frame(message: Message) -> bytes:
    return b"id: %s\ndata: %s\n\n" % (message.key.encode("utf-8"), message.json())


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Jsonp:
    """Encoder for one JSONP callback name (cached per name, not per connection)."""

    __slots__ = ("prefix",)

    def __init__(self, callback: str) -> None:
        self.prefix = callback.encode()

    def __call__(self, message: Message) -> bytes:
        return b"%s(%s);\r\n" % (self.prefix, message.json())


class _JsonpQueue(_Jsonp):
    """JSONP for a stream of several queues: each object carries ``"queue"``."""

    __slots__ = ()

    def __call__(self, message: Message) -> bytes:
        return b"%s(%s);\r\n" % (self.prefix, message.json_with_queue())


_SSE_HEARTBEAT = b":\n\n"
_HEARTBEATS = {True: _chunk(_SSE_HEARTBEAT), False: _SSE_HEARTBEAT}


@implementer(IPushProducer)
class StreamConsumer:
    """A streaming connection as the dispatcher sees it (see dispatch.Consumer).

    ``encode`` turns a message into this transport's bytes; the result is
    cached on the message under ``cache_name`` so a broadcast encodes once.
    ``chunked``: what one write carries (a batch, a message) goes out as one HTTP
    chunk, made once per batch and shared by every subscriber of a broadcast.
    ``closer(reason)`` ends the stream when the broker ends it. Kept small:
    with 10,000 idle streams every byte of it counts.
    """

    __slots__ = ("transport", "_write", "_encode", "_cache_name", "_buffer_limit", "_dispatcher",
                 "_queues", "_closer", "heartbeat_frame", "paused", "closed", "_behind", "backlog",
                 "acked", "prefetch", "_held", "remote", "since", "_chunked")

    def __init__(self, transport_name: str, write: Callable[[bytes], None],
                 encode: Callable[[Message], bytes], cache_name: str, buffer_limit: int,
                 dispatcher: Any, queue: Any, closer: Callable[[str], None],
                 heartbeat_frame: Optional[bytes] = None, chunked: bool = False) -> None:
        self.transport = transport_name
        self._chunked = chunked
        self._write = write
        self._encode = encode
        self._cache_name = cache_name
        self._buffer_limit = buffer_limit
        self._dispatcher = dispatcher
        # the dispatcher names (queue, or "<q>#<g>") this stream reads
        self._queues: Tuple[str, ...] = (queue,) if isinstance(queue, str) else tuple(queue)
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
        if self._chunked:
            self.write_raw(batch.wrapped(self._cache_name, self._encode, _chunk))
        else:
            self.write_raw(batch.encoded(self._cache_name, self._encode))

    def write_message(self, message: Message) -> None:
        data = message.encoded(self._cache_name, self._encode)
        self.write_raw(_chunk(data) if self._chunked and data else data)

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
        for queue in self._queues:
            self._dispatcher.unsubscribe(queue, self)
        self._dispatcher.remove_heartbeat(self)

    # IPushProducer: Twisted calls these as the socket's send buffer fills and drains

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._behind = 0
        if not self.closed:
            for queue in self._queues:
                self._dispatcher.resumed(queue)

    def stopProducing(self) -> None:
        self.closed = True


class _MuxSseConsumer(StreamConsumer):
    """SSE over several queues: each event's id holds the position of every queue
    ("n1,n2,..." in the order of ``queues=``, "" for a queue not seen yet), so a
    Last-Event-ID resumes each queue where it was. Frames differ per connection."""

    __slots__ = ("_order", "_positions")

    def __init__(self, names: Sequence[str], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._order = list(names)
        self._positions: Dict[str, str] = {}

    def resume_from(self, last_id: str) -> Dict[str, str]:
        """Positions from a Last-Event-ID: queue -> last key seen (bad parts ignored)."""
        parts = last_id.split(",")
        if len(parts) != len(self._order):
            return {}
        for name, number in zip(self._order, parts):
            if number.isdigit():
                self._positions[name] = number
        return {name: "%s:%s" % (name, n) for name, n in self._positions.items()}

    def _frames(self, messages: Sequence[Message]) -> bytes:
        out = []
        for message in messages:
            queue, _, number = message.key.rpartition(":")
            if queue in self._positions or queue in self._order:
                self._positions[queue] = number
            event_id = ",".join(self._positions.get(name, "") for name in self._order)
            out.append(b"id: %s\ndata: %s\n\n" % (event_id.encode("utf-8"), message.json_with_queue()))
        frames = b"".join(out)
        return _chunk(frames) if self._chunked and frames else frames

    def send_batch(self, batch: Batch) -> None:
        if self.closed:
            return
        if self.backlog is not None:
            self.backlog.extend(batch.messages)
            return
        self.write_raw(self._frames(batch.messages))

    def write_message(self, message: Message) -> None:
        self.write_raw(self._frames([message]))


def _stream_targets(handler: BaseHandler, queue: Optional[str]) -> Tuple[List[str], str, bool]:
    """(queue names, group, several) of a stream request: /c/<q> or /c/?queues=a,b."""
    from restmq.web.patterns import parse_queues
    group = check_group(handler.argument("group") or "")
    if queue is None:
        return parse_queues(handler, handler.context.config.dispatch.max_stream_queues), group, True
    return [check_queue(queue)], group, False


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
        self.connection.detach_producer()
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
    async def get(self, queue: Optional[str] = None) -> None:
        names, group, several = _stream_targets(self, queue)
        if group:
            await self.store.check_groups(names, group)
        self._auto_finish = False
        dispatch = self.context.config.dispatch
        path = self.request.path
        sse = path == "/sse" or path.startswith("/sse/") or \
            "text/event-stream" in self.request.headers.get("Accept", "")
        callback = None if sse else self.jsonp_callback()
        connection = self.request.connection
        chunked = self.request.supports_http_1_1()
        if sse:
            name = "sse"
            encode: Callable[[Message], bytes] = sse_frame
            self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        elif callback:
            name = ("jsonp+queue:" if several else "jsonp:") + callback
            encode = (_JsonpQueue if several else _Jsonp)(callback)
            self.set_header("Content-Type", "application/javascript; charset=utf-8")
        elif several:
            name = "comet+queue"
            encode = _comet_line_queue
            self.set_header("Content-Type", "text/plain; charset=utf-8")
        else:
            name = "comet"
            encode = comet_line
            self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")

        dispatcher = self.context.dispatcher
        targets = [dispatcher.target(name, group) for name in names]
        args = ("sse" if sse else "comet", connection.write, encode, name,
                dispatch.buffer_limit, dispatcher, targets, _HttpStreamEnd(connection, chunked),
                _HEARTBEATS[chunked] if sse else None, chunked)
        consumer: StreamConsumer
        if sse and several:
            consumer = _MuxSseConsumer(names, *args)
        else:
            consumer = StreamConsumer(*args)
        _ack_options(self, consumer)
        _identify(self, consumer)
        last_id = None
        if sse and not group:
            # only broadcast messages are kept for a resume; a group's are consumed
            last_id = self.request.headers.get("Last-Event-ID") or self.argument("lastEventId")
            consumer.backlog = [] if last_id else None
        # headers now; the body is written frame by frame by the consumer
        if sse:
            self.write(b"retry: %d\n\n" % dispatch.sse_retry_ms)
        self.flush()
        self._headers_written = self._finished = True  # the consumer owns the response now
        self._log()  # access log and HTTP metrics: the stream was answered, it now lives on
        connection.attach_producer(consumer)
        self.notifyFinish().addBoth(consumer.gone)
        for target in targets:
            dispatcher.subscribe(target, consumer)
        if sse:
            dispatcher.add_heartbeat(consumer)
        _slim(self.request)
        if last_id:
            if isinstance(consumer, _MuxSseConsumer):
                positions = consumer.resume_from(last_id)
                await self._replay_many(names, positions, consumer, chunked)
            else:
                await self._replay(names[0], last_id, consumer, chunked)

    async def _replay_many(self, names: List[str], positions: Dict[str, str],
                           consumer: StreamConsumer, chunked: bool) -> None:
        """Resume each queue of a multiplexed stream from its own position."""
        seen: Set[str] = set()
        for name in names:
            if name in positions:
                await self._replay(name, positions[name], consumer, chunked, seen, keep_backlog=True)
        self._flush_backlog(consumer, seen)

    async def _replay(self, queue: str, last_id: str, consumer: StreamConsumer, chunked: bool,
                      seen: Optional[Set[str]] = None, keep_backlog: bool = False) -> None:
        await self.context.dispatcher.ready(queue)
        found, history = await self.store.history_after(queue, last_id)
        if consumer.closed:
            return
        if not found:
            gap = b"event: gap\ndata: %s\n\n" % orjson.dumps({
                "last_event_id": last_id, "oldest": history[0].key if history else None,
                "queue": queue, "message": "messages after this id are no longer in the history"})
            consumer.write_raw(_chunk(gap) if chunked else gap)
        seen = set() if seen is None else seen
        for message in history:
            seen.add(message.key)
            consumer.write_message(message)
        if not keep_backlog:
            self._flush_backlog(consumer, seen)

    @staticmethod
    def _flush_backlog(consumer: StreamConsumer, seen: Set[str]) -> None:
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


def valid_websocket_key(key: str) -> bool:
    """RFC 6455 4.1: the key is a randomly chosen 16-byte value, base64-encoded
    (24 characters)."""
    try:
        return len(base64.b64decode(key.strip().encode("ascii"), validate=True)) == 16
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return False


class WebSocketHandler(BaseHandler):
    """GET /ws/<q>: a WebSocket (RFC 6455, wsproto) that carries the same JSON
    as text frames. Origin is checked against ``allowed_origins``."""

    acl_categories = {"GET": "websocket:consumer"}

    def credentials(self) -> Credentials:
        """Basic or a token as elsewhere; failing those, the original's cookie
        ``auth=user:password`` (browsers cannot send headers on a WebSocket). It is
        read only when the ACL is on, since credentials are checked only then."""
        found = super().credentials()
        if found.username is None and found.token is None:
            cookie = self.get_cookie("auth")
            if cookie and ":" in cookie:
                username, _, password = cookie.partition(":")
                return Credentials(username, password, None)
        return found

    def _check_origin(self) -> None:
        if not self.origin_allowed():
            raise Forbidden("origin %s is not allowed" % self.request.headers.get("Origin"))

    @async_handler
    async def get(self, queue: Optional[str] = None) -> None:
        names, group, several = _stream_targets(self, queue)
        if group:
            await self.store.check_groups(names, group)
        headers = self.request.headers
        if headers.get("Upgrade", "").lower() != "websocket" or \
                "upgrade" not in headers.get("Connection", "").lower():
            raise BadRequest("this route speaks WebSocket: send Upgrade: websocket")
        key = headers.get("Sec-WebSocket-Key")
        if headers.get("Sec-WebSocket-Version") != "13" or not key:
            self.set_header("Sec-WebSocket-Version", "13")
            raise BadRequest("WebSocket version 13 with a Sec-WebSocket-Key is required")
        if not valid_websocket_key(key):
            raise BadRequest("Sec-WebSocket-Key must be a base64-encoded 16-byte nonce (RFC 6455)")
        self._check_origin()
        self._auto_finish = False
        self._finished = True  # cyclone must not write an HTTP response after the 101
        connection = self.request.connection
        connection.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: %s\r\n\r\n" % generate_accept_token(key.encode("latin-1")))
        self._status_code = 101
        self._log()  # access log and HTTP metrics: the upgrade was answered
        session = _WebSocketSession(self, names, group, several)
        connection.upgrade(session)


#: commands of one WebSocket waiting for Redis; past this, its frames wait unread
MAX_PENDING_COMMANDS = 64


class _WebSocketSession:
    """The WebSocket after the handshake: frames in, messages out.

    A command is parsed once its whole message arrived (however many frames and
    TCP segments it came in), up to ``max_message_bytes``. While the client does
    not read what it is sent (pongs and answers count too), or while
    ``MAX_PENDING_COMMANDS`` of its commands wait for Redis, its frames are left
    unread.
    """

    log = Logger()

    def __init__(self, handler: WebSocketHandler, names: List[str], group: str, several: bool) -> None:
        self.handler = handler
        self.names = names
        self.queue = names[0]
        self.group = group
        self.several = several
        self.context = handler.context
        self.connection = handler.request.connection
        self.transport = self.connection.transport
        self.max_message_bytes = self.context.config.server.max_message_bytes
        self._parts: List[Any] = []
        self._size = 0
        self._oversized = False
        self._pending = 0
        self._closing = False
        self.ws = Connection(ConnectionType.SERVER)
        dispatcher = self.context.dispatcher
        targets = [dispatcher.target(name, group) for name in names]
        self.consumer = StreamConsumer(
            "websocket", self._send, self._frame, "ws-frame+queue" if several else "ws-frame",
            self.context.config.dispatch.buffer_limit, dispatcher, targets, self._closed_by_broker,
            self.ws.send(Ping()))
        _ack_options(handler, self.consumer)
        _identify(handler, self.consumer)
        self.connection.attach_producer(self.consumer)
        for target in targets:
            dispatcher.subscribe(target, self.consumer)
        dispatcher.add_heartbeat(self.consumer)
        _slim(handler.request)

    def _send(self, data: bytes) -> None:
        fast_write(self.transport, data)

    def _frame(self, message: Message) -> bytes:
        # a server frame is not masked, so the same bytes serve every connection
        data = message.json_with_queue() if self.several else message.json()
        return self.ws.send(TextMessage(data=data.decode("utf-8")))

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self.ws.receive_data(data)
        except (RemoteProtocolError, LocalProtocolError):
            self.transport.abortConnection()
            return
        self._handle_events()

    def resume(self) -> None:
        """The client read what it was sent (HTTPConnection calls this): go on."""
        self._handle_events()

    def _handle_events(self) -> None:
        events = self.ws.events()
        try:
            # the rest stays in wsproto's buffer (and TCP's) until the client reads
            # its answers or its commands are done
            while not (self._closing or self.consumer.closed or self.connection.check_output()
                       or self._pending >= MAX_PENDING_COMMANDS):
                event = next(events, None)
                if event is None:
                    break
                if isinstance(event, Ping):
                    self._send(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self._closing = True
                    self._send(self.ws.send(event.response()))
                    self.connection.lose_connection()
                elif isinstance(event, WsMessage):
                    self.messageReceived(event)
        except (RemoteProtocolError, LocalProtocolError):
            self._closing = True
            self.transport.abortConnection()
        finally:
            events.close()
        if not self._closing:
            self.connection.hold_reading(self._pending >= MAX_PENDING_COMMANDS)

    def messageReceived(self, event: WsMessage) -> None:
        """On an acked stream (``?ack=1``) client text messages are commands:
        ``{"ack": receipt(s)}``, ``{"nack": receipt(s), "delay": S}``,
        ``{"extend": receipt(s), "seconds": S}``, each answered with a frame like
        ``{"acked": 1}`` or ``{"error": {...}}``. Otherwise every message is sent
        back as it came, as the original echoed. wsproto hands a message over in
        pieces as its frames and TCP segments arrive: they are joined here, up to
        ``max_message_bytes`` (a longer command is answered ``message_too_large``
        and skipped; a longer echo closes the socket with 1009)."""
        if self.consumer.closed or self._closing:
            return
        if not self._oversized:
            data_part = event.data
            self._size += len(data_part.encode("utf-8")) if isinstance(data_part, str) else len(data_part)
            if self._size > self.max_message_bytes:
                self._parts, self._size = [], 0
                if not self.consumer.acked:
                    self.consumer.closed = True
                    self._close(1009, "message too large")
                    return
                self._oversized = True
                self._reply({"error": {"code": "message_too_large", "message":
                                       "a command is at most %d bytes" % self.max_message_bytes}})
            else:
                self._parts.append(data_part)
        if not event.message_finished:
            return
        parts, oversized = self._parts, self._oversized
        self._parts, self._size, self._oversized = [], 0, False
        if oversized:
            return
        data: Any = "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)
        if self.consumer.acked:
            if isinstance(data, str):
                self._pending += 1
                defer.ensureDeferred(self._command(data))
            return
        self.consumer.write_raw(self.ws.send(TextMessage(data=data) if isinstance(data, str)
                                             else BytesMessage(data=data)))
        if self.consumer.overflowing():
            # it sends but does not read: memory must stay bounded
            self.log.warn("WebSocket client of {queue} does not read its echoes: cut off", queue=self.queue)
            self.transport.abortConnection()

    def _close(self, code: int, reason: str) -> None:
        self._closing = True
        try:
            self._send(self.ws.send(CloseConnection(code=code, reason=reason)))
        except LocalProtocolError:
            pass  # a close is already under way
        self.connection.lose_connection()

    async def _command(self, text: str) -> None:
        from restmq.errors import RestMQError
        from restmq.web.errors import status_for
        try:
            reply = await self._settle(text)
        except RestMQError as exc:
            reply = {"error": {"code": status_for(exc)[1], "message": exc.message}}
        finally:
            self._pending -= 1
        self._reply(reply)
        if self._pending == MAX_PENDING_COMMANDS - 1 and not self.consumer.closed:
            # it was held at the limit: read on
            self._handle_events()

    def _reply(self, reply: Dict[str, Any]) -> None:
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
        delivery = self.context.config.delivery
        if action == "nack":
            delay = command.get("delay", 0)
            if not isinstance(delay, (int, float)) or not 0 <= delay <= delivery.max_delay:
                raise BadRequest("delay must be 0 to %d seconds" % delivery.max_delay)
        elif action == "extend":
            seconds = command.get("seconds")
            if seconds is not None and \
                    (not isinstance(seconds, (int, float)) or not 0 < seconds <= 12 * 3600):
                raise BadRequest("seconds must be between 0 and 43200")
        # a stream of several queues: each receipt is settled in its own queue
        by_queue: Dict[str, List[str]] = {}
        for receipt in receipts:
            name = Message(receipt.rpartition(":")[0], "").queue if self.several else self.queue
            if name not in self.names:
                name = self.queue
            by_queue.setdefault(name, []).append(receipt)
        done, refused = 0, []
        for name, part in by_queue.items():
            count, lost = await self._settle_in(name, action, part, command)
            done += count
            refused += lost
        if refused:
            raise LeaseLost("the lease of %s is not yours any more" % ", ".join(refused[:10]))
        return {action + "ed": done}

    async def _settle_in(self, name: str, action: str, receipts: List[str],
                         command: Dict[str, Any]) -> Tuple[int, List[str]]:
        store = self.context.store
        delivery = self.context.config.delivery
        group = self.group
        if action == "ack":
            done, refused = await store.ack(name, receipts, group=group)
            if self.context.metrics is not None:
                self.context.metrics.acked(name, done, group)
        elif action == "nack":
            done, refused = await store.nack(name, receipts, int(command.get("delay", 0) * 1000), group=group)
            if self.context.metrics is not None:
                self.context.metrics.nacked(name, done)
        else:
            # no seconds: the group's (else the queue's) lease_seconds
            seconds = command.get("seconds")
            done, refused = await store.extend(
                name, receipts, int((seconds or delivery.lease_seconds) * 1000), group=group,
                default_lease=seconds is None)
        if action != "extend":
            self.context.dispatcher.settled(self.context.dispatcher.target(name, group), receipts)
        return done, refused

    def _closed_by_broker(self, reason: str) -> None:
        if reason == "too slow":
            self.transport.abortConnection()
            return
        self._close(1001, reason)

    def connectionLost(self, reason: Any) -> None:
        self.consumer.gone()
