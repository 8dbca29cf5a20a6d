"""The operator's console routes the dashboard's queue view reads (beside /stats and /j).

``GET /q/<q>/messages`` pages through the next messages to be delivered, oldest
first, without taking them; ``GET /q/<q>/consumers`` lists this process's
consumers of a queue. Both belong to the ACL category ``rest:consumer``.
"""

from __future__ import annotations

import os
import socket

from restmq.storage.store import check_queue
from restmq.web.base import BaseHandler, async_handler

__all__ = ["MessagesHandler", "ConsumersHandler", "MAX_PAGE", "MAX_PREVIEW_BYTES", "PROCESS"]

#: most messages one page of GET /q/<q>/messages holds
MAX_PAGE = 100
#: most bytes of each body a page shows (the whole size is given beside it)
MAX_PREVIEW_BYTES = 65536
#: which process answered a consumer list: each process knows only its own consumers
PROCESS = "%s:%d" % (socket.gethostname(), os.getpid())


class MessagesHandler(BaseHandler):
    """GET /q/<q>/messages?offset=N&count=N&preview=BYTES: the next messages to be
    delivered, oldest first, left in place (a look does not count as a delivery)."""

    acl_categories = {"GET": "rest:consumer"}

    @async_handler
    async def get(self, queue: str) -> None:
        offset = int(self.number("offset", 0, low=0, high=10 ** 9, integer=True))
        count = int(self.number("count", 20, low=1, high=MAX_PAGE, integer=True))
        preview = int(self.number("preview", 4096, low=1, high=MAX_PREVIEW_BYTES, integer=True))
        length, messages = await self.store.browse(queue, offset, count, preview)
        self.respond({"queue": queue, "len": length, "offset": offset,
                      "messages": [message.as_dict() for message in messages]})


class ConsumersHandler(BaseHandler):
    """GET /q/<q>/consumers: the streaming consumers and long-polls of ``<q>`` on the
    process that answers, with transport, address, connection time and, for acked
    streams, prefetch and unacked counts."""

    acl_categories = {"GET": "rest:consumer"}

    def get(self, queue: str) -> None:
        check_queue(queue)
        consumers = self.context.dispatcher.consumers(queue)
        self.respond({"queue": queue, "process": PROCESS,
                      "consumers": [consumer.as_dict() for consumer in consumers]})
