"""/collectd/data and /collectd/event: collectd's write_http plugin posting into queues."""

from __future__ import annotations

from typing import Any, Callable, Dict, List

import orjson

from restmq.ingest.collectd import DATA_QUEUE, EVENT_QUEUE, parse_data, parse_events
from restmq.errors import BadRequest
from restmq.web.base import BaseHandler, async_handler

__all__ = ["DataHandler", "EventHandler"]


class _CollectdHandler(BaseHandler):
    """POST a write_http body: every value list (or notification) becomes one
    JSON message of ``queue``, all stored at once."""

    acl_categories = {"POST": "rest:producer"}
    queue = ""
    parse: Callable[[bytes, float], List[Dict[str, Any]]]

    @async_handler
    async def post(self) -> None:
        items = self.parse(self.request.body, self.context.clock.seconds())
        limit = self.config.delivery.max_batch
        if len(items) > limit:
            raise BadRequest("one request holds at most %d value lists or notifications "
                             "(lower write_http's BufferSize)" % limit)
        bodies = [self.message_body(orjson.dumps(item).decode("utf-8")) for item in items]
        result = await self.store.add(self.queue, bodies)
        if self.context.metrics is not None:
            self.context.metrics.published(self.queue, len(bodies))
        self.respond({"queue": self.queue, "keys": result.keys})


class DataHandler(_CollectdHandler):
    """Value lists, ``Format "JSON"`` or ``Format "Command"`` (PUTVAL), into ``collectd_data``."""

    queue = DATA_QUEUE
    parse = staticmethod(parse_data)


class EventHandler(_CollectdHandler):
    """Notifications (JSON, PUTNOTIF or NotificationExec text) into ``collectd_event``."""

    queue = EVENT_QUEUE
    parse = staticmethod(parse_events)
