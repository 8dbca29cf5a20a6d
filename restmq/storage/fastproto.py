"""A leaner txredisapi protocol for the pool: commands encoded by hiredis, and reply
deadlines watched by one timer per pool instead of one timer per command.

txredisapi encodes every argument through several generic calls, and with
``replyTimeout`` it schedules (and cancels) a DelayedCall for every command;
both showed at the top of the broker's profile. hiredis's ``pack_command`` (C)
encodes a command several times faster than Python code can. Replies are still
parsed and matched by txredisapi (with hiredis).
"""

from __future__ import annotations

import collections
import time
from typing import Any, Deque

import hiredis
import txredisapi
from twisted.internet import tcp, unix

__all__ = ["fast_protocol", "overdue", "encode_command", "send_now"]


def _encode(args: Any) -> bytes:
    """RESP for ``args`` in Python (str as UTF-8, numbers as text, anything else str()):
    for what hiredis's encoder refuses."""
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode("utf-8")
        elif isinstance(arg, int):
            arg = b"%d" % arg
        elif isinstance(arg, float):
            arg = format(arg, "f").encode()
        elif not isinstance(arg, bytes):
            arg = str(arg).encode("utf-8")
        append(b"$%d\r\n" % len(arg))
        append(arg)
        append(b"\r\n")
    return b"".join(parts)


def encode_command(args: Any) -> bytes:
    """One command in RESP, by hiredis (C) when it can."""
    try:
        return _pack(args)
    except TypeError:
        return _encode(args)


_pack = hiredis.pack_command


def _decoded(reply: Any) -> Any:
    """What txredisapi's charset conversion makes of a reply (UTF-8 text as str, what is
    not valid UTF-8 left as bytes, numbers as they are), in one pass per list."""
    kind = type(reply)
    if kind is bytes:
        try:
            return reply.decode("utf-8")
        except UnicodeDecodeError:
            return reply
    if kind is list:
        try:
            return [item.decode("utf-8") if type(item) is bytes else
                    (_decoded(item) if type(item) is list else item) for item in reply]
        except UnicodeDecodeError:
            return [_decoded(item) for item in reply]
    return reply


_DIRECT = (tcp.Client, unix.Client)


def send_now(transport: Any, data: bytes) -> None:
    """``transport.write(data)``, but sent at once when nothing is queued.

    Twisted queues a write until the next reactor turn (registering the socket
    for writing, then unregistering it): the command would reach Redis only
    after everything else this turn does, at the cost of two more system calls.
    What the kernel does not take at once is queued as before, so order holds.
    """
    if type(transport) in _DIRECT and not transport.dataBuffer and not transport._tempDataBuffer \
            and transport.connected and not transport.disconnecting:
        try:
            sent = transport.socket.send(data)
        except OSError:
            sent = 0  # Twisted finds the error on its own path and closes the connection
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


class _FastCommands:
    """Mixed in before a txredisapi protocol class."""

    def connectionMade(self) -> Any:
        self._sent: Deque[float] = collections.deque()
        self._reader = hiredis.Reader(protocolError=txredisapi.InvalidData,
                                      replyError=txredisapi.ResponseError)
        return super().connectionMade()  # type: ignore[misc]  # the txredisapi base comes later in the MRO

    def dataReceived(self, data: bytes, unpause: bool = False) -> None:
        if self.inTransaction:  # type: ignore[attr-defined]  # MULTI/WATCH: txredisapi's own path
            super().dataReceived(data, unpause)  # type: ignore[misc]
            return
        reader = self._reader
        if data:
            reader.feed(data)
        reply = reader.gets()
        while reply is not False:
            self.replyReceived(_decoded(reply))
            reply = reader.gets()

    def _build_command(self, *args: Any, **kwargs: Any) -> bytes:
        self._sent.append(time.monotonic())
        return encode_command(args)

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """Write one command and return the Deferred of its reply.

        txredisapi wraps every reply Deferred in a second one (for its per-command
        timers, which the pool's watchdog replaces) and checks for pipelines and
        MULTI; the pool uses neither, so those cases keep txredisapi's own path.
        """
        if self.pipelining or self.inMulti or kwargs:  # type: ignore[attr-defined]
            return super().execute_command(*args, **kwargs)  # type: ignore[misc]
        if self.connected == 0:  # type: ignore[attr-defined]
            raise txredisapi.ConnectionError("Not connected")
        self._sent.append(time.monotonic())
        send_now(self.transport, encode_command(args))  # type: ignore[attr-defined]
        return self.replyQueue.get().addCallback(self.handle_reply)  # type: ignore[attr-defined]

    def replyReceived(self, reply: Any) -> None:
        sent = self._sent
        if sent:
            sent.popleft()
        super().replyReceived(reply)  # type: ignore[misc]  # the txredisapi base comes later in the MRO


_classes: dict = {}


def fast_protocol(base: type) -> type:
    """``base`` (a txredisapi protocol class) with the lean command path."""
    cls = _classes.get(base)
    if cls is None:
        cls = _classes[base] = type("Fast" + base.__name__, (_FastCommands, base), {})
    return cls


def overdue(connection: Any, now: float, timeout: float) -> bool:
    """True when ``connection``'s oldest unanswered command is older than ``timeout``."""
    sent = getattr(connection, "_sent", None)
    if not sent:
        return False
    return now - sent[0] > timeout
