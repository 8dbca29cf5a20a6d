"""make_app: the route table, and the Cyclone Application on the hardened connection."""

from __future__ import annotations

import re
import time
from typing import Any, Callable, List, Pattern, Sequence, Tuple

from urllib.parse import unquote_plus

import cyclone.web
from twisted.logger import Logger

from restmq.web import collectd, console, control, leases, ops, pages, patterns, protocol, queues
from restmq.web.base import Context, NotFoundHandler
from restmq.web.hosts import AllowedHosts
from restmq.web.http import ChunkedTransferEncoding, ConnectionLimiter, HttpLimits, HTTPConnection

__all__ = ["make_app", "RestMQApplication"]

# A queue name in a path: any text, slashes included ("/q/a/b" is the queue "a/b").
# A route with a suffix ("/q/<q>/ack", "/q/<q>/groups/<g>", ...) is listed before the
# plain route of its prefix and wins: a queue whose name ends with such a suffix is
# written with its slash percent-encoded ("/q/x%2Fack"), which the router does not split on.
_Q = r"(.+?)"
_G = r"([^/]+?)"
_ID = r"([0-9a-f]{1,64})"


class RestMQApplication(cyclone.web.Application):
    """Cyclone's Application on this project's HTTPConnection and transforms.

    ``__call__`` routes like Cyclone's without its per-request extras (host
    matching, debug reloading, unquoting groups that hold no escapes).
    """

    protocol = HTTPConnection
    noisy = False
    limiter: Any = None

    def buildProtocol(self, addr: Any) -> Any:
        """A connection over ``max_connections`` or ``max_connections_per_ip`` is
        closed at once (Twisted closes the socket when this returns None)."""
        remote = getattr(addr, "host", "unix:")
        if self.limiter is not None and not self.limiter.admit(remote):
            return None
        connection = super().buildProtocol(addr)
        connection._admitted = remote if self.limiter is not None else None
        return connection

    def __call__(self, request: Any) -> Any:
        path = request.path
        for spec in self.handlers[0][1]:
            match = spec.regex.match(path)
            if match:
                # an escape that is not UTF-8 stays a lone surrogate: the name check refuses it
                args = [unquote_plus(group, errors="surrogateescape")
                        if group and ("%" in group or "+" in group) else group
                        for group in match.groups()]
                handler = spec.handler_class(self, request, **spec.kwargs)
                handler._execute([t(request) for t in self.transforms], *args)
                return handler
        handler = self.error_handler(self, request, status_code=404)
        handler._execute([t(request) for t in self.transforms])
        return handler


def route_label(pattern: str) -> str:
    """The label of a route pattern in logs and metrics: r"/q/([^/]+)/?" -> "/q/{queue}".
    A group of literal words, such as ``(ack|nack|extend)``, stays a group here;
    :func:`route_labeller` puts the word that matched in its place."""
    if pattern == r".*":
        return "(unmatched)"
    label = pattern.replace(_Q, "{queue}").replace(_G, "{group}").replace(_ID, "{reply_to}")
    label = label.replace("(.*)", "{name}").replace("\\", "")
    return label[:-2] if label.endswith("/?") and len(label) > 2 else label


_WORDS = re.compile(r"\(([\w.\\]+(?:\|[\w.\\]+)+)\)")


def route_labeller(pattern: str) -> Callable[["re.Match[str]"], str]:
    """The label of a request that ``pattern`` matched: its :func:`route_label`, with
    each group of literal words replaced by the word of the request, so that
    ``/q/{queue}/ack`` and ``/q/{queue}/nack`` are two routes in the metrics."""
    label = route_label(pattern)
    choices = [match.group(0).replace("\\", "") for match in _WORDS.finditer(pattern)]
    if not choices:
        return lambda match: label
    positions = _word_group_positions(pattern)

    def labeller(match: "re.Match[str]") -> str:
        text = label
        for choice, position in zip(choices, positions):
            text = text.replace(choice, match.group(position) or "", 1)
        return text

    return labeller


def _word_group_positions(pattern: str) -> List[int]:
    """The group numbers (1-based) of the literal-word groups of ``pattern``."""
    positions = []
    number = 0
    for index, char in enumerate(pattern):
        if char == "(" and (index == 0 or pattern[index - 1] != "\\") and pattern[index + 1:index + 2] != "?":
            number += 1
            if _WORDS.match(pattern, index):
                positions.append(number)
    return positions


def _request_logger(access_log: bool, metrics: Any, table: Sequence[tuple]) -> Callable[[Any], None]:
    """Cyclone's log_function: the access log line and the HTTP metrics of each request."""
    log = Logger(namespace="restmq.access")
    # (pattern, handler[, kwargs]) as Cyclone takes them
    patterns: List[Tuple[Pattern[str], Callable[["re.Match[str]"], str]]] = [
        (re.compile(route[0] + "$"), route_labeller(route[0])) for route in table]

    def route_of(path: str) -> str:
        # the first pattern that matches is the one Cyclone routed the request by
        for regex, labeller in patterns:
            match = regex.match(path)
            if match:
                return labeller(match)
        return "(unmatched)"

    def log_request(handler: Any) -> None:
        request = handler.request
        duration = time.time() - request._start_time
        route = route_of(request.path)
        if metrics is not None:
            metrics.http(route, handler.get_status(), request.method, duration)
        if not access_log:
            return
        log.info("{method} {route} {status} {duration_ms:.1f}ms {queue}",
                 method=request.method, route=route, path=request.path, status=handler.get_status(),
                 duration_ms=round(1000.0 * duration, 2),
                 queue=(handler.path_args[0] if getattr(handler, "path_args", None) else ""),
                 remote=request.remote_ip)

    return log_request


def routes(context: Context) -> list:
    """(pattern, handler, kwargs) for every route; each handler names its ACL categories."""
    from restmq.web import streams
    deps = {"context": context}
    return [
        (r"/", queues.IndexHandler, deps),
        (r"/q/?", queues.QueueListHandler, deps),
        (r"/q/%s/(ack|nack|extend)/?" % _Q, leases.SettleHandler, deps),
        (r"/q/%s/groups/?" % _Q, patterns.GroupsHandler, deps),
        (r"/q/%s/groups/%s/?" % (_Q, _G), patterns.GroupHandler, deps),
        (r"/take/?", patterns.TakeHandler, deps),
        (r"/rpc/%s/?" % _Q, patterns.RpcHandler, deps),
        (r"/reply/%s/?" % _ID, patterns.ReplyHandler, deps),
        (r"/q/%s/redrive/?" % _Q, leases.RedriveHandler, deps),
        (r"/q/%s/dead/?" % _Q, leases.DeadLettersHandler, deps),
        (r"/q/%s/messages/?" % _Q, console.MessagesHandler, deps),
        (r"/q/%s/consumers/?" % _Q, console.ConsumersHandler, deps),
        # every /q/<q>/<suffix> route goes above this line: this one takes any rest of the path
        (r"/q/%s/?" % _Q, queues.QueueHandler, deps),
        (r"/settings/%s/?" % _Q, leases.SettingsHandler, deps),
        (r"/queue/?", protocol.ProtocolHandler, deps),
        (r"/c/%s/?" % _Q, streams.CometHandler, deps),
        (r"/sse/%s/?" % _Q, streams.CometHandler, deps),
        (r"/ws/%s/?" % _Q, streams.WebSocketHandler, deps),
        (r"/c/?", streams.CometHandler, deps),
        (r"/sse/?", streams.CometHandler, deps),
        (r"/ws/?", streams.WebSocketHandler, deps),
        (r"/p/%s/?" % _Q, control.PolicyHandler, deps),
        (r"/control/?", control.ControlListHandler, deps),
        (r"/control/%s/?" % _Q, control.ControlHandler, deps),
        (r"/stats/?", control.StatsHandler, deps),
        (r"/stats/%s/?" % _Q, control.StatsHandler, deps),
        (r"/j/%s/?" % _Q, control.JobsHandler, deps),
        (r"/collectd/data/?", collectd.DataHandler, deps),
        (r"/collectd/event/?", collectd.EventHandler, deps),
        (r"/collectd/(.*)", collectd.UnknownHandler, deps),
        # the original's own pages lived here
        (r"/static/?(index\.html)?", pages.MovedHandler, dict(deps, location="../dashboard/")),
        (r"/static/help\.html", pages.MovedHandler, dict(deps, location="../queue")),
        *ops.routes(context),
        (r".*", NotFoundHandler, deps),
    ]


def make_app(context: Context, extra_routes: Sequence[tuple] = ()) -> RestMQApplication:
    """The Cyclone application serving every route, bound to ``context``.

    :param extra_routes: more (pattern, handler, kwargs), matched before RestMQ's
        own (for embedding RestMQ beside other handlers).
    """
    server = context.config.server
    limits = HttpLimits(
        max_request_bytes=server.max_request_bytes, max_header_bytes=server.max_header_bytes,
        request_timeout=server.request_timeout, idle_timeout=server.idle_timeout,
        header_timeout=server.header_timeout, max_output_bytes=server.max_output_bytes)
    table = list(extra_routes) + routes(context)
    hosts = AllowedHosts(server.allowed_hosts, server.listen)
    app = RestMQApplication(
        table, transforms=[ChunkedTransferEncoding],
        http_limits=limits, clock=context.clock, xheaders=server.xheaders, allowed_hosts=hosts,
        log_function=_request_logger(server.access_log, context.metrics, table))
    app.limiter = ConnectionLimiter(server.max_connections, server.max_connections_per_ip, context.clock)
    return app
