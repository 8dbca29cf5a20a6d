"""The syslog adapter: TCP and UDP listeners whose lines become JSON messages in ``syslogd:<sender>``.

``SyslogIngest`` batches the messages per queue (one ``QueueStore.add`` per
queue in flight, so lines that arrive faster than Redis round trips share one
Lua call) and bounds the memory they take: past ``max_pending_bytes`` TCP
senders are paused and UDP datagrams are dropped (and counted) until Redis
catches up. ``SyslogService`` owns the listeners, ``LocalRedis`` the Redis it
falls back to when none is configured.
"""

from __future__ import annotations

import collections
import re
import socket
from typing import Any, Deque, Dict, List, Optional, Set

import orjson
from twisted.application import service
from twisted.internet import defer, protocol
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger

from restmq.errors import BackendUnavailable, QueueFull
from restmq.server.redisproc import EmbeddedRedis, redis_answers
from restmq.storage.store import QueueStore, StorageFull
from restmq.ingest.syslogparse import Framer, decode_line, parse_text

__all__ = ["QUEUE_PREFIX", "sender_queue", "SyslogIngest", "SyslogStreamFactory",
           "SyslogDatagram", "SyslogService", "LocalRedis"]

QUEUE_PREFIX = "syslogd:"
KiB = 1024
MiB = 1024 * KiB

_UNSAFE_IN_QUEUE_NAME = re.compile(r"[^A-Za-z0-9_\-.:@]")


def sender_queue(address: str) -> str:
    """The queue of a sender: ``syslogd:<address>``, the original's naming.

    An IPv4 sender seen on a dual-stack socket (``::ffff:10.0.0.1``) gets the
    queue of its IPv4 address; characters a queue name cannot hold (an IPv6
    zone's ``%``) become ``_``.
    """
    if address.startswith("::ffff:") and "." in address:
        address = address[7:]
    return QUEUE_PREFIX + _UNSAFE_IN_QUEUE_NAME.sub("_", address)


def encode_message(raw: bytes, sender: str, received: float, transport: str,
                   truncated: bool) -> str:
    """The JSON message stored for one syslog line."""
    text = decode_line(raw)
    message: Dict[str, Any] = {"host": sender, "tstamp": received, "transport": transport}
    message.update(parse_text(text))
    message["truncated"] = truncated
    message["line"] = text
    return orjson.dumps(message).decode("utf-8")


class SyslogIngest:
    """Pending messages per queue, written to Redis in batches, in order.

    Each queue has at most one ``add`` in flight; what arrives meanwhile is
    sent with the next one (up to ``batch_size`` messages or ``batch_bytes``).
    When Redis is unreachable the batch is kept and retried every
    ``retry_delay`` seconds; a queue at its max length refuses the batch,
    which is dropped with a warning (as HTTP producers get 429).
    """

    log = Logger()

    def __init__(self, store: QueueStore, clock: Any, max_pending_bytes: int = 64 * MiB,
                 batch_size: int = 1000, batch_bytes: int = 4 * MiB,
                 retry_delay: float = 1.0) -> None:
        self.store = store
        self.clock = clock
        self.max_pending_bytes = max_pending_bytes
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.retry_delay = retry_delay
        self.pending: Dict[str, Deque[str]] = {}
        self.pending_bytes = 0
        self.in_flight: Set[str] = set()
        self.counts: Dict[str, int] = collections.Counter()
        self._flush_call: Any = None
        self._paused = False
        self._producers: Set[Any] = set()
        self._idle: List[defer.Deferred] = []
        self._outage = False
        self._dropped_since = 0  # datagrams dropped since the limit was last reached

    # what listeners call

    @property
    def full(self) -> bool:
        return self.pending_bytes >= self.max_pending_bytes

    @property
    def paused(self) -> bool:
        """Whether TCP senders are paused because too much waits for Redis."""
        return self._paused

    def put(self, queue: str, body: str) -> None:
        """Queue one message for ``queue``; it is written on a later reactor turn."""
        self.pending.setdefault(queue, collections.deque()).append(body)
        self.pending_bytes += len(body)
        self.counts["received"] += 1
        if self.full and not self._paused:
            self._pause_producers()
        if not self._outage:
            # during an outage the retry timer writes; a write per line would hammer
            self._schedule(0)

    def drop(self, count: int = 1) -> None:
        """Count datagrams refused because the pending messages are at their limit."""
        if not self._dropped_since:
            self.log.warn("Dropping UDP syslog datagrams: {pending_bytes} bytes wait for Redis",
                          pending_bytes=self.pending_bytes)
        self._dropped_since += count
        self.counts["dropped"] += count

    def add_producer(self, transport: Any) -> None:
        """A TCP transport to pause while the pending messages are over their limit."""
        self._producers.add(transport)
        if self._paused:
            transport.pauseProducing()

    def remove_producer(self, transport: Any) -> None:
        self._producers.discard(transport)

    def idle(self) -> defer.Deferred:
        """Resolves when nothing is pending or in flight."""
        if not self.pending and not self.in_flight:
            return defer.succeed(None)
        waiter: defer.Deferred = defer.Deferred()
        self._idle.append(waiter)
        return waiter

    def flush_now(self) -> None:
        """Start writing everything pending at once (at shutdown)."""
        self._schedule(0, reset=True)

    def stop(self) -> None:
        """Cancel the retry timer; what is pending stays in memory."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None

    # writing

    def _schedule(self, delay: float, reset: bool = False) -> None:
        if self._flush_call is not None and self._flush_call.active():
            if not reset:
                return
            self._flush_call.cancel()
        self._flush_call = self.clock.callLater(delay, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        for queue in list(self.pending):
            if queue not in self.in_flight:
                self._write_next(queue)

    def _write_next(self, queue: str) -> None:
        waiting = self.pending.get(queue)
        if not waiting:
            self.pending.pop(queue, None)
            return
        batch: List[str] = []
        size = 0
        while waiting and len(batch) < self.batch_size:
            if batch and size + len(waiting[0]) > self.batch_bytes:
                break
            body = waiting.popleft()
            batch.append(body)
            size += len(body)
        if not waiting:
            del self.pending[queue]
        self.in_flight.add(queue)
        defer.ensureDeferred(self._write(queue, batch, size))

    async def _write(self, queue: str, batch: List[str], size: int) -> None:
        retry = False
        try:
            await self.store.add(queue, batch)
        except (BackendUnavailable, StorageFull) as exc:
            retry = True
            if not self._outage:
                self._outage = True
                self.log.warn("Cannot store syslog messages ({reason}); holding them and retrying "
                              "every {delay} s", reason=str(exc), delay=self.retry_delay)
            self.pending.setdefault(queue, collections.deque()).extendleft(reversed(batch))
        except QueueFull as exc:
            self._release(size)
            self.counts["refused"] += len(batch)
            self.log.warn("Queue {queue} refused {count} syslog messages: {reason}",
                          queue=queue, count=len(batch), reason=exc.message)
        except Exception:
            self._release(size)
            self.counts["failed"] += len(batch)
            self.log.failure("Storing {count} syslog messages in {queue} failed",
                             queue=queue, count=len(batch))
        else:
            self._release(size)
            self.counts["stored"] += len(batch)
            self.counts["batches"] += 1
            if self._outage:
                self._outage = False
                self.log.info("Storing syslog messages again")
        finally:
            self.in_flight.discard(queue)
        if retry:
            self._schedule(self.retry_delay, reset=True)
        elif queue in self.pending:
            self._write_next(queue)
        self._notify_idle()

    def _release(self, size: int) -> None:
        self.pending_bytes -= size
        if self.pending_bytes <= self.max_pending_bytes // 2:
            if self._paused:
                self._resume_producers()
            if self._dropped_since:
                self.log.warn("Accepting UDP syslog datagrams again; {count} were dropped",
                              count=self._dropped_since)
                self._dropped_since = 0

    def _pause_producers(self) -> None:
        self._paused = True
        self.log.warn("Pausing {count} syslog TCP senders: {pending_bytes} bytes wait for Redis",
                      count=len(self._producers), pending_bytes=self.pending_bytes)
        for transport in self._producers:
            transport.pauseProducing()

    def _resume_producers(self) -> None:
        self._paused = False
        self.log.info("Resuming {count} syslog TCP senders", count=len(self._producers))
        for transport in self._producers:
            transport.resumeProducing()

    def _notify_idle(self) -> None:
        if self._idle and not self.pending and not self.in_flight:
            waiters, self._idle = self._idle, []
            for waiter in waiters:
                waiter.callback(None)


def _host(address: IAddress) -> str:
    return getattr(address, "host", "unknown")


class SyslogStream(protocol.Protocol):
    """One TCP sender: octet-counted or newline-framed messages (RFC 6587)."""

    factory: "SyslogStreamFactory"
    transport: Any
    framer: Optional[Framer] = None

    def connectionMade(self) -> None:
        factory = self.factory
        if factory.connections >= factory.max_connections:
            factory.log.warn("Refusing syslog connection from {peer}: {count} are open",
                             peer=_host(self.transport.getPeer()), count=factory.connections)
            self.transport.abortConnection()
            return
        factory.connections += 1
        self.framer = Framer(factory.max_line)
        self.queue = sender_queue(_host(self.transport.getPeer()))
        self.sender = self.queue[len(QUEUE_PREFIX):]
        factory.ingest.add_producer(self.transport)

    def dataReceived(self, data: bytes) -> None:
        if self.framer is not None:
            self._store(self.framer.feed(data))

    def _store(self, frames: List[Any]) -> None:
        if not frames:
            return
        ingest = self.factory.ingest
        received = self.factory.clock.seconds()
        for raw, truncated in frames:
            ingest.put(self.queue, encode_message(raw, self.sender, received, "tcp", truncated))

    def connectionLost(self, reason: Any = None) -> None:
        if self.framer is None:
            return
        self._store(self.framer.finish())
        self.framer = None
        self.factory.connections -= 1
        self.factory.ingest.remove_producer(self.transport)


class SyslogStreamFactory(protocol.ServerFactory):
    """Builds a ``SyslogStream`` per TCP connection, at most ``max_connections`` at once."""

    log = Logger()
    protocol = SyslogStream  # type: ignore[assignment]  # Twisted types it through its factory Protocol
    noisy = False

    def __init__(self, ingest: SyslogIngest, clock: Any, max_line: int,
                 max_connections: int = 1000) -> None:
        self.ingest = ingest
        self.clock = clock
        self.max_line = max_line
        self.max_connections = max_connections
        self.connections = 0


class SyslogDatagram(protocol.DatagramProtocol):
    """UDP syslog (RFC 5426): every datagram is one message."""

    noisy = False

    def __init__(self, ingest: SyslogIngest, clock: Any, max_line: int) -> None:
        self.ingest = ingest
        self.clock = clock
        self.max_line = max_line

    def datagramReceived(self, data: bytes, address: Any) -> None:
        if self.ingest.full:
            self.ingest.drop()
            return
        raw = data.rstrip(b"\r\n\x00")
        if not raw:
            return
        truncated = len(raw) > self.max_line
        if truncated:
            raw = raw[:self.max_line]
        queue = sender_queue(address[0])
        self.ingest.put(queue, encode_message(raw, queue[len(QUEUE_PREFIX):], self.clock.seconds(),
                                              "udp", truncated))


class SyslogService(service.Service):
    """Listens for syslog on TCP and UDP ``port`` of ``interface``; stops by
    draining what is pending into Redis (for up to ``drain_timeout`` seconds)."""

    log = Logger()
    name = "syslogd"  # type: ignore[assignment]  # Twisted infers Service.name = None as NoneType

    def __init__(self, ingest: SyslogIngest, reactor: Any, port: int, interface: str,
                 max_line: int, max_connections: int = 1000, tcp: bool = True, udp: bool = True,
                 drain_timeout: float = 5.0) -> None:
        self.ingest = ingest
        self.reactor = reactor
        self.port = port
        self.interface = interface
        self.max_line = max_line
        self.max_connections = max_connections
        self.tcp = tcp
        self.udp = udp
        self.drain_timeout = drain_timeout
        self.tcp_port: Any = None
        self.udp_port: Any = None
        self.factory = SyslogStreamFactory(ingest, reactor, max_line, max_connections)

    def privilegedStartService(self) -> None:
        # listening here lets twistd bind port 514 before it drops privileges
        service.Service.privilegedStartService(self)
        if self.tcp:
            self.tcp_port = self.reactor.listenTCP(self.port, self.factory, interface=self.interface)
        if self.udp:
            port = self.tcp_port.getHost().port if self.tcp_port is not None and self.port == 0 else self.port
            self.udp_port = self.reactor.listenUDP(
                port, SyslogDatagram(self.ingest, self.reactor, self.max_line),
                interface=self.interface, maxPacketSize=65536)
            _grow_receive_buffer(self.udp_port)

    def startService(self) -> None:
        if self.tcp_port is None and self.udp_port is None:
            self.privilegedStartService()
        service.Service.startService(self)
        transports = [name for name, on in (("tcp", self.tcp), ("udp", self.udp)) if on]
        self.log.info("syslogd listening on {interface} port {port} ({transports})",
                      interface=self.interface, port=self.listening_port,
                      transports=" and ".join(transports))

    @property
    def listening_port(self) -> int:
        for port in (self.tcp_port, self.udp_port):
            if port is not None:
                return port.getHost().port
        return self.port

    async def _stop(self) -> None:
        for port in (self.tcp_port, self.udp_port):
            if port is not None:
                await port.stopListening()
        self.tcp_port = self.udp_port = None
        self.ingest.flush_now()
        idle = self.ingest.idle()
        timer = self.reactor.callLater(self.drain_timeout, idle.cancel)
        try:
            await idle
        except defer.CancelledError:
            self.log.warn("syslogd stopped with {count} messages not yet stored",
                          count=sum(len(waiting) for waiting in self.ingest.pending.values()))
        finally:
            if timer.active():
                timer.cancel()
            self.ingest.stop()
        self.log.info("syslogd stopped; {stored} messages stored", stored=self.ingest.counts["stored"])

    def stopService(self) -> defer.Deferred:
        service.Service.stopService(self)
        return defer.ensureDeferred(self._stop())


def _grow_receive_buffer(udp_port: Any) -> None:
    # bursts of datagrams outpace one reactor turn; the kernel's default queue is small
    try:
        udp_port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MiB)
    except OSError:
        pass


class LocalRedis(service.Service):
    """The Redis used when none is configured: the embedded Redis of a RestMQ
    running with the same data folder if one answers on its socket, else an
    ``EmbeddedRedis`` of our own in that folder. Either way ``target`` is
    ``unix://<data-dir>/redis.sock``."""

    log = Logger()
    name = "redis"  # type: ignore[assignment]  # Twisted infers Service.name = None as NoneType

    def __init__(self, embedded: EmbeddedRedis) -> None:
        self.embedded = embedded
        self.owned = False

    @property
    def target(self) -> Any:
        return self.embedded.target

    def startService(self) -> None:
        """:raises EmbeddedRedisError: when our own redis-server cannot start."""
        if redis_answers(self.embedded.socket_path):
            self.log.info("Using the Redis already serving {path}", path=self.embedded.socket_path)
        else:
            self.embedded.startService()
            self.owned = True
        service.Service.startService(self)

    def stopService(self) -> None:
        service.Service.stopService(self)
        if self.owned:
            self.embedded.stopService()
            self.owned = False
