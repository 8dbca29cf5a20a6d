"""IService wrappers: nothing starts in a constructor, everything stops in reverse."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from restmq.errors import RestMQError
from restmq.storage.notify import Notifier
from restmq.storage.pool import RedisPool

__all__ = ["RedisService", "DispatcherService", "stop_and_exit"]


def stop_and_exit(status: int) -> None:
    """Stop RestMQ as a SIGTERM would (every service stops, twistd removes its
    pidfile), then exit with ``status``, so that systemd or the workers launcher
    restarts the whole service."""
    import atexit
    import os
    import sys

    from twisted.internet import reactor

    def exit_with_status() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)

    atexit.register(exit_with_status)
    if reactor.running:  # type: ignore[attr-defined]
        reactor.stop()  # type: ignore[attr-defined,misc]


class RedisService(service.Service):
    """Owns the connection pool."""

    log = Logger()
    name = "pool"  # type: ignore[assignment]  # Twisted infers Service.name = None as NoneType

    def __init__(self, pool: RedisPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        service.Service.startService(self)
        self.pool.start()
        self.log.info("Redis pool of {size} to {target}", size=self.pool.pool_size,
                      target=self.pool.target.describe())

    def stopService(self) -> defer.Deferred:
        service.Service.stopService(self)
        return self.pool.stop()


class DispatcherService(service.Service):
    """Starts the pub/sub listener and the dispatcher's sweep; closes consumers at stop."""

    log = Logger()
    name = "dispatcher"  # type: ignore[assignment]  # Twisted infers Service.name = None as NoneType

    def __init__(self, dispatcher: Any, notifier: Notifier) -> None:
        self.dispatcher = dispatcher
        self.notifier = notifier

    def startService(self) -> None:
        service.Service.startService(self)
        self.dispatcher.notifier = self.notifier
        self.notifier.start()
        self.dispatcher.start()
        defer.ensureDeferred(self._finish_purges())

    async def _finish_purges(self) -> None:
        """A RestMQ that died while purging left bodies to delete: finish that."""
        try:
            deleted = await self.dispatcher.store.finish_purges()
        except RestMQError as exc:
            self.log.warn("Could not finish interrupted purges now ({error}); the next start will",
                          error=exc.message)
            return
        if deleted:
            self.log.info("Finished interrupted purges: {count} message bodies deleted", count=deleted)

    def stopService(self) -> defer.Deferred:
        service.Service.stopService(self)
        self.dispatcher.stop()
        return self.notifier.stop()
