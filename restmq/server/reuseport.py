"""The HTTP listener for ``--reuse-port``: several RestMQ processes on one port.

Twisted's ``listenTCP`` cannot set SO_REUSEPORT, so the socket is made,
bound and put into listening state here, then handed to the reactor with
``adoptStreamPort``. The kernel spreads new connections over every process
listening this way (same port, same user).
"""

from __future__ import annotations

import socket
from typing import Any, Optional

from twisted.application import service
from twisted.internet import defer
from twisted.internet.abstract import isIPv6Address
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

__all__ = ["ReusePortServer", "listen_reuse_port"]


def listen_reuse_port(port: int, factory: Any, interface: str = "", backlog: int = 50,
                      reactor: Any = None) -> Any:
    """Listen on ``interface:port`` with SO_REUSEPORT and SO_REUSEADDR.

    :returns: the reactor's listening port (``stopListening`` to close it).
    :raises CannotListenError: when the address cannot be bound (in use by a
        listener without SO_REUSEPORT, or by another user; bad address; no
        SO_REUSEPORT on this platform).
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor
        reactor = global_reactor
    reuse_port = getattr(socket, "SO_REUSEPORT", None)
    if reuse_port is None:
        raise CannotListenError(interface, port, OSError("SO_REUSEPORT is not available here"))
    family = socket.AF_INET6 if isIPv6Address(interface) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, reuse_port, 1)
        sock.bind((interface, port))
        sock.listen(backlog)
        sock.setblocking(False)
        # the reactor dup()s the descriptor: ours is closed below either way
        return reactor.adoptStreamPort(sock.fileno(), family, factory)
    except OSError as exc:
        raise CannotListenError(interface, port, exc) from None
    finally:
        sock.close()


class ReusePortServer(service.Service):
    """Like ``internet.TCPServer``, listening with SO_REUSEPORT.

    Binds in ``privilegedStartService`` (so a port below 1024 works before
    twistd drops privileges, and a bind error surfaces before anything else
    starts), stops listening in ``stopService``.
    """

    log = Logger()

    def __init__(self, port: int, factory: Any, interface: str = "", backlog: int = 50,
                 reactor: Any = None) -> None:
        self.port = port
        self.factory = factory
        self.interface = interface
        self.backlog = backlog
        self.reactor = reactor
        self._listening: Optional[Any] = None

    def privilegedStartService(self) -> None:
        service.Service.privilegedStartService(self)
        self._listening = self._listen()

    def startService(self) -> None:
        service.Service.startService(self)
        if self._listening is None:
            self._listening = self._listen()

    def stopService(self) -> defer.Deferred:
        service.Service.stopService(self)
        listening, self._listening = self._listening, None
        if listening is None:
            return defer.succeed(None)
        return defer.maybeDeferred(listening.stopListening)

    def getHost(self) -> Any:
        """The bound address (useful with port 0)."""
        if self._listening is None:
            raise RuntimeError("not listening")
        return self._listening.getHost()

    def _listen(self) -> Any:
        listening = listen_reuse_port(self.port, self.factory, self.interface, self.backlog,
                                      self.reactor)
        self.log.info("Listening on {interface}:{port} (SO_REUSEPORT)",
                      interface=self.interface or "*", port=listening.getHost().port)
        return listening
