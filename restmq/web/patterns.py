"""Delivery patterns: consumer groups (/q/<q>/groups), priority take (/take) and
request/reply (/rpc/<q>, /reply/<id>)."""

from __future__ import annotations

import os
from typing import Any, List, Optional

import orjson
from twisted.internet.defer import CancelledError

from restmq.errors import BadRequest, GroupNotFound, MessageNotFound, ReplyTimeout
from restmq.model import Message, MessageMeta
from restmq.storage.store import check_group, check_queue
from restmq.web.base import BaseHandler, async_handler
from restmq.web.queues import _Consuming, _Producing, message_payload

__all__ = ["GroupsHandler", "GroupHandler", "TakeHandler", "RpcHandler", "ReplyHandler",
           "parse_queues"]

#: a request id: 32 hex digits (128 random bits)
_REQUEST_ID_CHARS = frozenset("0123456789abcdef")


def parse_queues(handler: BaseHandler, limit: int) -> List[str]:
    """The ``queues=a,b,c`` field: valid names, no repeats, at most ``limit``.

    :raises BadRequest: when it is missing, empty or too long.
    """
    text = handler.argument("queues")
    if not text:
        raise BadRequest("missing field 'queues' (a comma-separated list of queue names)")
    names: List[str] = []
    for name in text.split(","):
        name = name.strip()
        if name and name not in names:
            names.append(check_queue(name))
    if not names:
        raise BadRequest("field 'queues' names no queue")
    if len(names) > limit:
        raise BadRequest("at most %d queues at once" % limit)
    return names


class GroupsHandler(BaseHandler):
    """GET /q/<q>/groups: the consumer groups of a queue with their counts."""

    acl_categories = {"GET": "rest:consumer"}

    @async_handler
    async def get(self, queue: str) -> None:
        groups = await self.store.groups(queue)
        subscribers = self.context.dispatcher.subscriber_counts
        out = []
        for group in groups:
            entry = group.as_dict()
            entry["subscribers"] = subscribers(self.context.dispatcher.target(queue, group.name))
            out.append(entry)
        self.respond({"queue": queue, "groups": out})


class GroupHandler(BaseHandler):
    """POST /q/<q>/groups/<g> creates the group (201, or 200 when it existed);
    GET shows it; DELETE removes it with its backlog and closes its streams."""

    # removing a group removes its backlog: that is consuming, as a purge is
    acl_categories = {"GET": "rest:consumer", "POST": "rest:producer", "DELETE": "rest:consumer"}

    @async_handler
    async def post(self, queue: str, group: str) -> None:
        created = await self.store.create_group(queue, group)
        self.respond({"queue": queue, "group": group, "created": created}, 201 if created else 200)

    @async_handler
    async def get(self, queue: str, group: str) -> None:
        check_group(group)
        for info in await self.store.groups(queue):
            if info.name == group:
                entry = info.as_dict()
                entry["subscribers"] = self.context.dispatcher.subscriber_counts(
                    self.context.dispatcher.target(queue, group))
                self.respond(dict(entry, queue=queue, group=group))
                return
        raise GroupNotFound("queue %r has no group %r" % (queue, group))

    @async_handler
    async def delete(self, queue: str, group: str) -> None:
        existed, removed = await self.store.delete_group(queue, group)
        self.context.dispatcher.close_queue(self.context.dispatcher.target(queue, group), "group removed")
        if not existed:
            raise GroupNotFound("queue %r has no group %r" % (queue, group))
        self.respond({"queue": queue, "group": group, "removed": removed})


class TakeHandler(_Consuming):
    """GET /take?queues=high,default,low [&wait=S &reserve=S &count=N &group=g]:
    the oldest message of the first non-empty queue, with ``"queue"``."""

    acl_categories = {"GET": "rest:consumer"}

    @async_handler
    async def get(self) -> None:
        self._queues = parse_queues(self, self.config.dispatch.max_stream_queues)
        await self.consume(self._queues[0])

    async def _pop(self, queue: str, count: int, lease_ms: Optional[int], listen_ms: int) -> List[Message]:
        return await self.store.take_first(
            self._queues, count, lease_ms, self.config.delivery.stop_holds_pops, listen_ms,
            default_lease=self._default_lease, group=self._group)

    async def _long_poll(self, queue: str, count: int, lease_ms: Optional[int],
                         wait: float) -> Optional[List[Message]]:
        dispatcher = self.context.dispatcher
        clock = self.context.clock
        deadline = clock.seconds() + wait
        # one waiter per queue, each waking the one wait below
        waiters = [dispatcher.waiter(dispatcher.target(name, self._group)) for name in self._queues]
        gone: List[bool] = []
        woken: List[Any] = []

        def client_left(_: Any) -> None:
            gone.append(True)
            for deferred in woken:
                deferred.cancel()

        from twisted.internet import defer

        def any_wake(remaining: float) -> defer.Deferred:
            """Fires True at the first wake-up of any queue, False when ``remaining`` passed."""
            pending = [w.next_wake(remaining) for w in waiters]
            first = defer.DeferredList(pending, fireOnOneCallback=True, consumeErrors=True)

            def settle(result: Any) -> Any:
                for deferred in pending:
                    if not deferred.called:
                        deferred.cancel()
                # DeferredList's first success is (result, index); else all are (ok, value)
                return bool(result[0]) if isinstance(result, tuple) else False
            first.addCallback(settle)
            return first

        self.notifyFinish().addBoth(client_left)
        try:
            messages = await self._pop(queue, count, lease_ms, dispatcher.listener_ttl_ms)
            while not messages and not gone:
                remaining = deadline - clock.seconds()
                if remaining <= 0:
                    break
                wake = any_wake(remaining)
                woken[:] = [wake]
                try:
                    if not await wake:
                        break
                except CancelledError:
                    break
                messages = await self._pop(queue, count, lease_ms, dispatcher.listener_ttl_ms)
        finally:
            for waiter in waiters:
                waiter.close()
        if gone:
            await self._give_back(messages, lease_ms)
            return None
        return messages

    async def _give_back(self, messages: List[Message], lease_ms: Optional[int]) -> None:
        by_queue: dict = {}
        for message in messages:
            by_queue.setdefault(message.queue, []).append(message)
        for name, taken in by_queue.items():
            if lease_ms is None:
                await self.store.requeue(name, taken, group=self._group)
            else:
                await self.store.nack(name, [m.receipt for m in taken if m.receipt], group=self._group)

    def answer(self, queue: str, messages: List[Message], count: Optional[int]) -> None:
        if count is None:
            self.respond(dict(message_payload(messages[0]), queue=messages[0].queue))
        else:
            self.respond({"messages": [dict(message_payload(m), queue=m.queue) for m in messages]})


def _reply_encoding(body: str, meta: Optional[MessageMeta]) -> str:
    return orjson.dumps({"value": body, "attributes": meta.attributes if meta else {}}).decode("utf-8")


class RpcHandler(_Producing):
    """POST /rpc/<q>?timeout=S (body as for POST /q/<q>): publish a request with
    the attribute ``reply_to`` and answer with the reply a worker posts to
    /reply/<reply_to>, or 504 after S seconds."""

    acl_categories = {"POST": "rest:producer"}

    @async_handler
    async def post(self, queue: str) -> None:
        delivery = self.config.delivery
        timeout = self.number("timeout", min(30.0, delivery.max_rpc_timeout), low=0.001,
                              high=delivery.max_rpc_timeout)
        request_id = os.urandom(16).hex()
        dispatcher = self.context.dispatcher
        clock = self.context.clock
        # waiting before the request exists: a fast worker's reply cannot be missed
        waiter = dispatcher.reply_waiter(request_id)
        gone: List[bool] = []
        pending: List[Any] = []

        def client_left(_: Any) -> None:
            gone.append(True)
            for deferred in pending:
                deferred.cancel()

        try:
            keys = await self.produce(queue, reply_to=request_id, reply_timeout_ms=int(timeout * 1000))
            self.notifyFinish().addBoth(client_left)
            deadline = clock.seconds() + timeout
            reply = ""
            while not gone:
                remaining = deadline - clock.seconds()
                if remaining <= 0:
                    break
                woken = waiter.next_wake(remaining)
                pending[:] = [woken]
                try:
                    fired = await woken
                except CancelledError:
                    break
                if not fired:
                    break
                reply = await self.store.collect(request_id)
                if reply:
                    break
            if not reply:
                # the last look also closes the wait: a reply after this gets 404
                reply = await self.store.collect(request_id, final=True)
        finally:
            waiter.close()
        if gone:
            return
        if not reply:
            raise ReplyTimeout("no reply to %s within %g s" % (request_id, timeout))
        answer = orjson.loads(reply)
        self.respond({"queue": queue, "key": keys[0], "reply_to": request_id,
                      "value": answer.get("value", ""), "attributes": answer.get("attributes", {})})


class ReplyHandler(_Producing):
    """POST /reply/<reply_to> (body as for a publish): answer a waiting /rpc call.
    404 when no caller waits for it (timed out, already answered, unknown)."""

    acl_categories = {"POST": "rest:producer"}

    @async_handler
    async def post(self, request_id: str) -> None:
        if len(request_id) != 32 or not set(request_id) <= _REQUEST_ID_CHARS:
            raise MessageNotFound("no request %r waits for a reply" % request_id[:100])
        bodies, metas = self.messages()
        if len(bodies) != 1:
            raise BadRequest("a reply is one message")
        if not await self.store.reply(request_id, _reply_encoding(bodies[0], metas[0])):
            raise MessageNotFound("no request %s waits for a reply (timed out, answered or unknown)"
                                  % request_id)
        self.respond({"reply_to": request_id, "delivered": True})
