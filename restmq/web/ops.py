"""Operations routes: /health, /metrics, /openapi.json and the live /dashboard/.

They belong to the ACL category ``ops``. The OpenAPI document and the
dashboard's files live in ``restmq/static/`` and are read once, at startup.
``HEAD`` on /health, /health/ready, /metrics, /openapi.json and /dashboard/
answers as GET does, without the body (load balancers probe with HEAD).
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Union

import cyclone.web
import orjson
from twisted.internet import defer, task
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from restmq import __version__
from restmq.config import Config
from restmq.errors import BackendUnavailable
from restmq.storage.pool import describe
from restmq.storage.store import StorageFull
from restmq.web.base import BaseHandler, Context, async_handler

__all__ = ["routes", "load_openapi", "static_file", "StatsFeed", "HealthHandler", "ReadyHandler",
           "MetricsHandler", "OpenAPIHandler", "DashboardHandler", "DashboardEventsHandler"]

#: the dashboard's own files, served under /dashboard/
ASSETS = {
    "dashboard.html": "text/html; charset=utf-8",
    "dashboard.js": "application/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
# everything the page needs comes from this origin; no inline script or style
_DASHBOARD_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                  "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
#: most queues one dashboard snapshot lists (the count says how many there are)
SNAPSHOT_MAX_QUEUES = 1000


def static_file(name: str) -> bytes:
    """A file of ``restmq/static/`` (package data)."""
    return resources.files("restmq").joinpath("static", name).read_bytes()


def load_openapi(config: Config) -> bytes:
    """restmq/static/openapi.json with this server's version and configured limits."""
    document = orjson.loads(static_file("openapi.json"))
    document["info"]["version"] = __version__
    limits = document["components"]["parameters"]
    limits["wait"]["schema"]["maximum"] = config.dispatch.max_wait
    limits["count"]["schema"]["maximum"] = config.delivery.max_batch
    limits["delay"]["schema"]["maximum"] = config.delivery.max_delay
    limits["timeout"]["schema"]["maximum"] = config.delivery.max_rpc_timeout
    batch = document["components"]["schemas"]["JsonMessages"]["anyOf"][0]
    batch["maxItems"] = config.delivery.max_batch
    return orjson.dumps(document)


class _OpsHandler(BaseHandler):
    acl_categories = {"GET": "ops", "HEAD": "ops"}


class HealthHandler(_OpsHandler):
    """GET /health: liveness, without a Redis round trip: the process answers and
    says what it knows of its backend. 503 while its own embedded redis-server
    is not running (it is being restarted; restarting the process would help if
    it never comes back); an external Redis that is away is /health/ready's
    business, not a reason to restart this process."""

    def get(self) -> None:
        store = self.store
        redis: Dict[str, Any] = {
            "connected": bool(store is not None and store.pool.connected),
            "state": getattr(store, "backend_state", "ok")}
        embedded = self.context.embedded
        if embedded is not None:
            redis["embedded"] = {"state": embedded.state, "pid": embedded.pid, "restarts": embedded.restarts}
            if embedded.state != "running":
                raise BackendUnavailable("the embedded redis-server is %s (%d restarts)"
                                         % (embedded.state, embedded.restarts))
        self.respond({"status": "ok", "redis": redis})

    head = get


class ReadyHandler(_OpsHandler):
    """GET /health/ready: readiness, one Redis round trip (an INFO). Not ready
    (503) while Redis is away, loading, or a read-only replica; 507 while it is
    out of memory: either way it would refuse the writes this broker makes."""

    @async_handler
    async def get(self) -> None:
        health = await self.store.health()
        problem = health.problem
        if problem is not None:
            raise StorageFull(problem) if health.out_of_memory else BackendUnavailable(problem)
        self.respond({"status": "ok", "redis": {"target": describe(self.config.redis.target),
                                                "latency_ms": round(health.latency * 1000.0, 3)}})

    head = get


class MetricsHandler(_OpsHandler):
    """GET /metrics: Prometheus text format (OpenMetrics when the scraper's Accept
    asks for it); queue gauges and Redis-side counters read from Redis now.

    With Redis away the process's own metrics are still served, with
    ``restmq_redis_up 0`` and no queue gauges.
    """

    @async_handler
    async def get(self) -> None:
        metrics = self.context.metrics
        if metrics is None:
            raise cyclone.web.HTTPError(404, "metrics are not enabled")
        counters: Optional[Dict[str, Dict[str, int]]] = None
        try:
            queues: Optional[List[Any]] = await self.store.stats()
            counters = await self.store.counters()
        except BackendUnavailable as exc:
            self.log.warn("Metrics without queue gauges: {error}", error=exc.message)
            queues = None
        render, content_type = metrics.exposition_for(self.request.headers.get("Accept", ""))
        body = render(queues, self.context.dispatcher.all_subscriber_counts(), counters)
        self.set_header("Content-Type", content_type)
        self.finish(body)

    head = get


class OpenAPIHandler(_OpsHandler):
    """GET /openapi.json: the OpenAPI 3.1 document of every route."""

    # cyclone hands each route's own keyword arguments to initialize()
    def initialize(self, context: Context, document: bytes) -> None:  # type: ignore[override]
        super().initialize(context)
        self.document = document

    def get(self) -> None:
        self.finish(self.document)

    head = get


class DashboardHandler(_OpsHandler):
    """GET /dashboard/ (the page) and its files; /dashboard redirects to /dashboard/.

    These files hold no data (every number on the page comes from routes that
    check the ACL), so they ask only for an address the ``ops`` section allows,
    not for its credentials: the page can then take a token from its URL
    fragment, and the browser asks for Basic credentials on the first refused
    request.
    """

    acl_categories: Dict[str, Union[str, Tuple[str, ...]]] = {}

    def prepare(self) -> None:
        super().prepare()
        if self.context.acl.enabled:
            self.context.acl.check_address("ops", self.request.remote_ip)

    # cyclone hands each route's own keyword arguments to initialize()
    def initialize(self, context: Context, files: Dict[str, bytes]) -> None:  # type: ignore[override]
        super().initialize(context)
        self.files = files

    def get(self, name: Optional[str] = None) -> None:
        if not self.request.path.endswith("/") and name is None:
            # relative, so that the page works behind a proxy that adds a path prefix
            self.set_status(302)
            self.clear_header("Content-Type")
            self.set_header("Location", "dashboard/")
            self.finish()
            return
        name = name or "dashboard.html"
        self.set_header("Content-Type", ASSETS[name])
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Content-Type-Options", "nosniff")
        if name == "dashboard.html":
            self.set_header("Content-Security-Policy", _DASHBOARD_CSP)
            self.set_header("X-Frame-Options", "DENY")
        self.finish(self.files[name])

    head = get


@implementer(IPushProducer)
class _Watcher:
    """One dashboard's event stream. While its reader is slow, frames are skipped
    rather than buffered: the next snapshot replaces them anyway."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self.paused = False
        self.skipped = 0

    def push(self, frame: bytes) -> None:
        if self.paused:
            self.skipped += 1
            return
        self._write(frame)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.paused = True


class StatsFeed:
    """While dashboards watch, one snapshot every ``interval`` seconds (one
    ``store.stats()`` call) goes to all of them as a Server-Sent Event."""

    log = Logger()

    def __init__(self, context: Context, interval: float = 1.0) -> None:
        self.context = context
        self.interval = interval
        self._watchers: Set[_Watcher] = set()
        self._loop: Optional[task.LoopingCall] = None
        self._sequence = 0

    @property
    def watching(self) -> int:
        return len(self._watchers)

    def join(self, watcher: _Watcher) -> None:
        """Send snapshots to ``watcher`` from now on (the first one at once)."""
        self._watchers.add(watcher)
        if self._loop is None:
            self._loop = task.LoopingCall(self._tick)
            self._loop.clock = self.context.clock
            self._loop.start(self.interval, now=True)
        else:
            defer.ensureDeferred(self._push([watcher]))

    def leave(self, watcher: _Watcher) -> None:
        self._watchers.discard(watcher)
        if not self._watchers and self._loop is not None:
            loop, self._loop = self._loop, None
            if loop.running:
                loop.stop()

    def _tick(self) -> defer.Deferred:
        # LoopingCall waits for this Deferred: a slow Redis never piles ticks up
        return defer.ensureDeferred(self._push(None))

    async def _push(self, only: Optional[List[_Watcher]]) -> None:
        try:
            payload = await self.snapshot()
        except BackendUnavailable as exc:
            payload = {"time": self.context.clock.seconds(),
                       "error": {"code": "backend_unavailable", "message": exc.message}}
        except Exception:
            # a snapshot that failed must not stop the feed of every dashboard
            self.log.failure("Dashboard snapshot failed")
            return
        self._sequence += 1
        frame = b"id: %d\nevent: stats\ndata: %s\n\n" % (self._sequence, orjson.dumps(payload))
        for watcher in list(only if only is not None else self._watchers):
            if watcher in self._watchers:
                watcher.push(frame)

    async def snapshot(self) -> Dict[str, Any]:
        """Every queue's stats (with its published and delivered totals, kept in
        Redis), this process's subscribers, and Redis's memory.

        :raises BackendUnavailable: Redis is away.
        """
        store = self.context.store
        # both at once: the snapshot waits for one round trip, not two in a row
        try:
            infos, memory = await defer.gatherResults(
                [defer.ensureDeferred(store.stats()), defer.ensureDeferred(store.memory())],
                consumeErrors=True)
        except defer.FirstError as error:
            error.subFailure.raiseException()
        subscribers = self.context.dispatcher.subscriber_counts
        queues = []
        for info in infos[:SNAPSHOT_MAX_QUEUES]:
            entry = info.as_dict()
            entry["subscribers"] = subscribers(info.name)
            queues.append(entry)
        return {"time": self.context.clock.seconds(), "count": len(infos),
                "redis": describe(self.context.config.redis.target), "memory": memory.as_dict(),
                "queues": queues}


class DashboardEventsHandler(_OpsHandler):
    """GET /dashboard/events: a Server-Sent Events stream of ``stats`` snapshots,
    one a second (the framing of /sse/<q>)."""

    # cyclone hands each route's own keyword arguments to initialize()
    def initialize(self, context: Context, feed: StatsFeed) -> None:  # type: ignore[override]
        super().initialize(context)
        self.feed = feed

    @cyclone.web.asynchronous
    def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        self.write(b"retry: %d\n\n" % self.config.dispatch.sse_retry_ms)
        self.flush()
        watcher = _Watcher(self._send)
        self.request.connection.attach_producer(watcher)
        self.notifyFinish().addBoth(lambda _: self.feed.leave(watcher))
        self.feed.join(watcher)

    def _send(self, frame: bytes) -> None:
        self.write(frame)
        self.flush()


def routes(context: Context) -> List[Tuple[str, type, Dict[str, Any]]]:
    """The operations routes, their documents read once, now."""
    deps: Dict[str, Any] = {"context": context}
    files = {name: static_file(name) for name in ASSETS}
    return [
        (r"/health/?", HealthHandler, deps),
        (r"/health/ready/?", ReadyHandler, deps),
        (r"/metrics/?", MetricsHandler, deps),
        (r"/openapi\.json", OpenAPIHandler, dict(deps, document=load_openapi(context.config))),
        (r"/dashboard/events/?", DashboardEventsHandler, dict(deps, feed=StatsFeed(context))),
        (r"/dashboard/(dashboard\.js|dashboard\.css)", DashboardHandler, dict(deps, files=files)),
        (r"/dashboard/?", DashboardHandler, dict(deps, files=files)),
    ]
