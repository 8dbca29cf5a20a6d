"""/, /q/ and /q/<name>: add, pop (plain, long-poll, reserve), purge, list."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import cyclone.web
import orjson
from twisted.internet.defer import CancelledError

from restmq.errors import BadRequest
from restmq.model import MAX_TTL_SECONDS, Message, MessageMeta
from restmq.storage.store import check_group
from restmq.web import pages
from restmq.web.base import BaseHandler, async_handler

__all__ = ["IndexHandler", "QueueListHandler", "QueueHandler"]

# the fields of a pop, which GET / without a queue refuses rather than ignores
_POP_FIELDS = ("wait", "count", "reserve", "callback")

#: the longest ordering key (SQS allows 128 characters for a MessageGroupId)
MAX_ORDERING_KEY = 256
#: the longest attribute name
MAX_ATTRIBUTE_NAME = 256


class _Producing(BaseHandler):
    """Shared by the routes that add messages."""

    #: /q/<q> took ``msg or value`` (msg first), / took ``value`` (msg only when alone)
    msg_first = False

    def bodies(self) -> List[str]:
        return self.messages()[0]

    def messages(self) -> Tuple[List[str], List[Optional[MessageMeta]]]:
        """The message(s) of this request and their metadata: ``value``/``msg``
        fields, a raw text body, or a JSON body (an array is a batch; an object
        has ``value`` and may have ``attributes`` and ``ordering_key``). An
        ``ordering_key`` field applies to every message without its own."""
        default_key = self.argument("ordering_key")
        for given in self.arguments("ordering_key"):
            self._check_ordering_key(given)
        plain = MessageMeta(ordering_key=default_key) if default_key is not None else None
        value, msg = self.argument("value"), self.argument("msg")
        if self.msg_first and msg:
            value = msg
        elif value is None:
            value = msg
        if value is not None:
            return [self.message_body(value)], [plain]
        body = self.request.body
        content_type = self.request.headers.get("Content-Type", "")
        if body and content_type.startswith("application/json"):
            parsed = self.json_body()
            items = parsed if isinstance(parsed, list) else [parsed]
            if not items:
                raise BadRequest("empty batch")
            bodies, metas = [], []
            for item in items:
                text, meta = self._json_item(item, default_key)
                bodies.append(self.message_body(text))
                metas.append(meta)
            return bodies, metas
        if body and content_type.startswith(("text/plain", "application/octet-stream")):
            try:
                return [self.message_body(body.decode("utf-8"))], [plain]
            except UnicodeDecodeError:
                raise BadRequest("message body is not valid UTF-8") from None
        raise BadRequest("missing field 'value' (or 'msg')")

    def _json_item(self, item: object, default_key: Optional[str]) -> Tuple[str, Optional[MessageMeta]]:
        attributes: Dict[str, str] = {}
        ordering_key = default_key
        if isinstance(item, dict) and ("value" in item or "msg" in item):
            attributes = self.check_attributes(item.get("attributes"))
            if item.get("ordering_key") is not None:
                ordering_key = self._check_ordering_key(item.get("ordering_key"))
            item = item.get("value", item.get("msg"))
        text = item if isinstance(item, str) else orjson.dumps(item).decode("utf-8")
        if attributes or ordering_key is not None:
            return text, MessageMeta(attributes, ordering_key)
        return text, None

    def check_attributes(self, attributes: object) -> Dict[str, str]:
        """``{"name": "value"}`` within max_attributes / max_attribute_bytes.

        :raises BadRequest: for anything else (400).
        """
        if attributes is None:
            return {}
        if not isinstance(attributes, dict):
            raise BadRequest("attributes must be a JSON object of strings")
        delivery = self.config.delivery
        if len(attributes) > delivery.max_attributes:
            raise BadRequest("at most %d attributes per message" % delivery.max_attributes)
        size = 0
        for name, value in attributes.items():
            if not isinstance(value, str):
                raise BadRequest("attribute %r: values are strings" % name[:100])
            if not 0 < len(name) <= MAX_ATTRIBUTE_NAME:
                raise BadRequest("attribute names are 1-%d characters" % MAX_ATTRIBUTE_NAME)
            size += len(name.encode("utf-8")) + len(value.encode("utf-8"))
        if size > delivery.max_attribute_bytes:
            raise BadRequest("attributes of one message hold at most %d bytes"
                             % delivery.max_attribute_bytes)
        return attributes

    @staticmethod
    def _check_ordering_key(key: object) -> str:
        if not isinstance(key, str) or not 0 < len(key) <= MAX_ORDERING_KEY:
            raise BadRequest("ordering_key must be a string of 1-%d characters" % MAX_ORDERING_KEY)
        return key

    async def produce(self, queue: str, reply_to: str = "", reply_timeout_ms: int = 0) -> List[str]:
        bodies, metas = self.messages()
        if reply_to and len(bodies) != 1:
            raise BadRequest("a request is one message, not a batch")
        if reply_to:
            metas = [MessageMeta(dict(m.attributes if m else {}, reply_to=reply_to),
                                 m.ordering_key if m else None) for m in metas]
        delivery = self.config.delivery
        if len(bodies) > delivery.max_batch:
            raise BadRequest("a batch holds at most %d messages" % delivery.max_batch)
        ttl = self.number("ttl", None, low=1, high=MAX_TTL_SECONDS, integer=True)
        delay = self.number("delay", None, low=0, high=delivery.max_delay)
        idempotency_key = self.request.headers.get("Idempotency-Key")
        if idempotency_key is not None and not 0 < len(idempotency_key) <= 200:
            raise BadRequest("Idempotency-Key must be 1-200 characters")
        if reply_to and ttl is None:
            # a request nobody took before its caller gave up is of no use to anyone
            ttl = max(1, -(-reply_timeout_ms // 1000))
        result = await self.store.add(
            queue, bodies, ttl=ttl, delay_ms=int(delay * 1000) if delay else None,
            idempotency_key=idempotency_key,
            idempotency_window_ms=int(delivery.idempotency_window * 1000),
            metas=metas, reply_to=reply_to, reply_timeout_ms=reply_timeout_ms)
        if self.context.metrics is not None:
            self.context.metrics.published(queue, 0 if result.replayed else len(bodies))
        if reply_to:
            return result.keys
        if result.replayed:
            self.set_header("Idempotent-Replayed", "true")
        if len(bodies) > 1 or self.is_json_request():
            self.respond({"queue": queue, "keys": result.keys})
        elif self.wants_json():
            self.respond({"queue": queue, "key": result.keys[0]})
        else:
            # the original answered the bare key ("jobs:1\r\n"), and its clients parse that
            self.respond_original(result.keys[0])
        return result.keys


def message_payload(message: Message) -> dict:
    """The JSON a pop answers; ``count`` is kept for the original's clients."""
    payload = message.as_dict()
    payload["count"] = message.deliveries
    return payload


class _Consuming(_Producing):
    """Shared by the routes that pop."""

    #: GET / answered 404 when nothing was there (the original's IndexHandler)
    empty_is_404 = False

    def group(self) -> str:
        """The ``group`` field ("" when absent: the default consumers)."""
        group = self.argument("group") or ""
        check_group(group)
        return group

    async def consume(self, queue: str) -> None:
        self._group = self.group()
        delivery = self.config.delivery
        count = self.number("count", None, low=1, high=delivery.max_batch, integer=True)
        wait = self.number("wait", None, low=0, high=self.config.dispatch.max_wait)
        lease_ms = None
        self._default_lease = self.argument("reserve") == ""
        if self.argument("reserve") is not None:
            lease = self.number("reserve", delivery.lease_seconds, low=0.001, high=12 * 3600)
            lease_ms = int(lease * 1000)
        messages: Optional[List[Message]] = await self._pop(queue, int(count or 1), lease_ms, 0)
        if not messages and wait:
            messages = await self._long_poll(queue, int(count or 1), lease_ms, wait)
            if messages is None:
                return  # the client went away
        if self.context.metrics is not None and messages:
            self.context.metrics.delivered(queue, "rest", len(messages), self._group)
            # a leased message handed out before: its lease ran out, or it was nacked
            again = sum(1 for m in messages if m.receipt is not None and m.deliveries > 1)
            self.context.metrics.redelivered(queue, again)
        if not messages:
            if self.empty_is_404 and not self.wants_json():
                raise cyclone.web.HTTPError(404, "queue %r is empty" % queue[:250])
            self.no_content()
        else:
            self.answer(queue, messages, None if count is None else int(count))

    def answer(self, queue: str, messages: List[Message], count: Optional[int]) -> None:
        if count is None:
            self.respond_popped(message_payload(messages[0]))
        else:
            self.respond_popped({"queue": queue, "messages": [message_payload(m) for m in messages]})

    def respond_popped(self, payload: Any) -> None:
        """JSON for JSON clients; the original's text/plain line for the others."""
        if self.wants_json():
            self.respond(payload)
        else:
            self.respond_original(payload)

    async def _pop(self, queue: str, count: int, lease_ms: Optional[int], listen_ms: int) -> List[Message]:
        hold = self.config.delivery.stop_holds_pops
        if lease_ms is not None:
            return await self.store.reserve(queue, count, lease_ms, hold, listen_ms,
                                            default_lease=self._default_lease, group=self._group)
        return await self.store.take(queue, count, hold, listen_ms, group=self._group,
                                     keep_ms=int(self.config.delivery.popped_ttl * 1000))

    async def _long_poll(self, queue: str, count: int, lease_ms: Optional[int],
                         wait: float) -> Optional[List[Message]]:
        """Pop again at every wake-up of ``queue`` until a message comes or ``wait`` ends.

        Nothing blocks in Redis: the first pop marks the queue as listened to,
        so publishers notify, and the waiter is registered before it.
        """
        dispatcher = self.context.dispatcher
        clock = self.context.clock
        deadline = clock.seconds() + wait
        waiter = dispatcher.waiter(dispatcher.target(queue, self._group), self.request.remote_ip or "")
        gone: List[bool] = []
        pending: List[Any] = []

        def client_left(_: Any) -> None:
            gone.append(True)
            for deferred in pending:
                deferred.cancel()

        self.notifyFinish().addBoth(client_left)
        try:
            messages = await self._pop(queue, count, lease_ms, dispatcher.listener_ttl_ms)
            while not messages and not gone:
                remaining = deadline - clock.seconds()
                if remaining <= 0:
                    break
                woken = waiter.next_wake(remaining)
                pending[:] = [woken]
                try:
                    if not await woken:
                        break
                except CancelledError:
                    break
                messages = await self._pop(queue, count, lease_ms, dispatcher.listener_ttl_ms)
        finally:
            waiter.close()
        if gone:
            if messages and lease_ms is None:
                await self.store.requeue(queue, messages, group=self._group)
            elif messages:
                await self.store.nack(queue, [m.receipt for m in messages if m.receipt],
                                      group=self._group)
            return None
        return messages


class IndexHandler(_Consuming):
    """The very first API: POST queue+value adds, GET ?queue= pops; GET / alone
    goes to the dashboard."""

    acl_categories = {"GET": "rest:consumer", "POST": "rest:producer"}
    empty_is_404 = True

    @async_handler
    async def get(self) -> None:
        queue = self.argument("queue")
        if queue == "" and not self.wants_json():
            # the original looked the queue "" up and found it empty
            raise cyclone.web.HTTPError(404, "queue '' is empty")
        if queue is None and not any(self.arguments(name) for name in _POP_FIELDS):
            # the original's page was here; relative, so a proxy's path prefix is kept
            self.set_status(302)
            self.clear_header("Content-Type")
            self.set_header("Location", "dashboard/")
            self.finish()
            return
        if queue is None:
            raise BadRequest("missing field 'queue'")
        await self.consume(queue)

    @async_handler
    async def post(self) -> None:
        await self.produce(self.required("queue"))


class QueueListHandler(BaseHandler):
    """GET /q/: the names of all queues."""

    acl_categories = {"GET": "rest:consumer"}

    @async_handler
    async def get(self) -> None:
        names = await self.store.queues()
        if self.wants_html() and not self.wants_json():
            self.respond_html(pages.queue_list(names))
            return
        self.respond({"queues": names})


class QueueHandler(_Consuming):
    """/q/<name>: GET pops, POST adds, DELETE purges and closes the queue's streams."""

    # a purge removes messages: that is consuming, as popping them would be
    acl_categories = {"GET": "rest:consumer", "POST": "rest:producer", "DELETE": "rest:consumer"}
    msg_first = True

    @async_handler
    async def get(self, queue: str) -> None:
        await self.consume(queue)

    @async_handler
    async def post(self, queue: str) -> None:
        await self.produce(queue)

    @async_handler
    async def delete(self, queue: str) -> None:
        removed = await self.store.purge(queue)
        self.context.dispatcher.close_queue(queue)
        if self.wants_json():
            self.respond({"queue": queue, "purged": removed})
        else:
            # the original answered DEL's reply on the list: 1 if there was anything
            self.respond_original({"queue": queue, "status": 1 if removed else 0})
