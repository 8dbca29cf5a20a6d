"""/collectd/data and /collectd/event: collectd's write_http plugin (and the
NotificationExec scripts of the original's README) posting into queues."""

from __future__ import annotations

from typing import Any, Callable, Dict, List

import orjson

from restmq.config import COLLECTD_FORMATS
from restmq.errors import BadRequest
from restmq.ingest.collectd import (DATA_QUEUE, EVENT_QUEUE, original_data, original_events,
                                    parse_data, parse_events)
from restmq.web.base import BaseHandler, async_handler

__all__ = ["DataHandler", "EventHandler", "UnknownHandler"]


class _CollectdHandler(BaseHandler):
    """POST a body. In the ``original`` format (the default, ``[collectd] format``
    or ``?format=``) it is stored as the original RestMQ stored it, one message
    per request; in the ``parsed`` format every value list (or notification)
    becomes one JSON message of ``queue``. Either way all are stored at once."""

    acl_categories = {"POST": "rest:producer"}
    queue = ""
    parse: Callable[[bytes, float], List[Dict[str, Any]]]

    def original(self, body: bytes, now: float) -> List[str]:
        raise NotImplementedError

    @async_handler
    async def post(self) -> None:
        fmt = self.argument("format") or self.config.collectd.format
        if fmt not in COLLECTD_FORMATS:
            raise BadRequest("format must be %s" % " or ".join(COLLECTD_FORMATS))
        now = self.context.clock.seconds()
        if fmt == "original":
            texts = self.original(self.request.body, now)
        else:
            texts = [orjson.dumps(item).decode("utf-8") for item in self.parse(self.request.body, now)]
        limit = self.config.delivery.max_batch
        if len(texts) > limit:
            raise BadRequest("one request holds at most %d value lists or notifications "
                             "(lower write_http's BufferSize)" % limit)
        bodies = [self.message_body(text) for text in texts]
        result = await self.context.dispatcher.publish(self.queue, bodies)
        if self.context.metrics is not None:
            self.context.metrics.published(self.queue, len(bodies))
        if fmt == "original" and len(result.keys) == 1 and not self.wants_json():
            # the original answered the key as text, like POST /q/<q>
            self.respond_original(result.keys[0])
        else:
            self.respond({"queue": self.queue, "keys": result.keys})


class DataHandler(_CollectdHandler):
    """Value lists, ``Format "JSON"`` or ``Format "Command"`` (PUTVAL), into ``collectd_data``."""

    queue = DATA_QUEUE
    parse = staticmethod(parse_data)

    def original(self, body: bytes, now: float) -> List[str]:
        return [original_data(body, self.request.headers.get("Content-Type", ""), now)]


class EventHandler(_CollectdHandler):
    """Notifications (NotificationExec text, JSON, PUTNOTIF) into ``collectd_event``."""

    queue = EVENT_QUEUE
    parse = staticmethod(parse_events)

    def original(self, body: bytes, now: float) -> List[str]:
        return original_events(body, now)


class UnknownHandler(BaseHandler):
    """Any other /collectd/<name>: the original refused it with 400."""

    acl_categories = {"POST": "rest:producer"}

    def post(self, name: str) -> None:
        raise BadRequest("unknown collectd endpoint %r (use /collectd/data or /collectd/event)" % name[:100])
