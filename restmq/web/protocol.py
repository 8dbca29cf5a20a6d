"""/queue: the JSON command protocol of the original (add, get, take, del).

Clients that ask for JSON (``Accept: application/json``) get this broker's
answers: 204 for an empty queue, 400 with an error object for a bad command.
Everyone else gets the original's: 200 with ``{"error": "empty queue"}``,
``{"error": "null resultset"}`` for an unknown command, and so on.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict

import orjson

from restmq.errors import BadRequest
from restmq.model import MAX_TTL_SECONDS
from restmq.web import pages
from restmq.web.base import BaseHandler, async_handler

__all__ = ["ProtocolHandler", "COMMAND_CATEGORIES"]


#: the ACL category of each command: adding is producing; looking at, taking and
#: deleting messages is consuming
COMMAND_CATEGORIES = {"add": "rest:producer", "get": "rest:consumer", "take": "rest:consumer",
                      "del": "rest:consumer"}


class _Refused(BadRequest):
    """A command the original answered with 200 and ``{"error": <text>}``."""

    def __init__(self, message: str, original: str) -> None:
        super().__init__(message)
        self.original = original


class ProtocolHandler(BaseHandler):
    """POST a JSON object ``{"cmd": ..., "queue": ...}`` as the ``body`` or ``msg``
    form field, or as a raw ``application/json`` body. The ACL category is the
    command's (COMMAND_CATEGORIES), checked once the body is parsed."""

    acl_categories = {"GET": "rest:consumer"}

    def get(self) -> None:
        if self.wants_html() and not self.wants_json():
            # the original's help form
            self.respond_html(pages.protocol_form())
            return
        self.respond({"commands": sorted(self.COMMANDS),
                      "example": {"cmd": "add", "queue": "jobs", "value": "hello"}})

    @async_handler
    async def post(self) -> None:
        command = self._command()
        name = command.get("cmd")
        if name is None or name == "":
            # the original refused a command without "cmd" as malformed
            raise BadRequest("malformed JSON: the command needs a 'cmd'")
        handler = self.COMMANDS.get(name) if isinstance(name, str) else None
        try:
            if handler is None:
                raise _Refused("unknown cmd %r (use %s)" % (name, ", ".join(sorted(self.COMMANDS))),
                               "null resultset")
            self.check_acl(COMMAND_CATEGORIES[str(name)])
            queue = command.get("queue")
            if not isinstance(queue, str):
                raise _Refused("missing string field 'queue'", "'queue'")
            await handler(self, queue, command)
        except _Refused as refused:
            if self.wants_json():
                raise
            if handler is None:
                # written as a string by the original: text, not JSON
                self.respond_original({"error": refused.original}, terminator=b"")
            else:
                self.respond_original({"error": refused.original}, "application/json", b"")

    def _command(self) -> Dict[str, Any]:
        text = self.argument("body")
        if text is None:
            text = self.argument("msg")
        if text is None:
            if not self.request.body or not self.is_json_request():
                raise BadRequest("send the command as the 'body' field or as an application/json body")
            parsed = self.json_body()
        else:
            try:
                parsed = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise BadRequest("malformed JSON: %s" % exc) from None
        if not isinstance(parsed, dict):
            raise BadRequest("the command must be a JSON object")
        return parsed

    def _answer(self, payload: Dict[str, Any]) -> None:
        if self.wants_json():
            self.respond(payload)
        else:
            # the original wrote these as dicts: JSON, no line end
            self.respond_original(payload, "application/json", b"")

    def _empty(self) -> None:
        if self.wants_json():
            self.no_content()
        else:
            self.respond_original({"error": "empty queue"}, "application/json", b"")

    async def _add(self, queue: str, command: Dict[str, Any]) -> None:
        value = command.get("value", command.get("msg"))
        if value is None:
            raise _Refused("missing field 'value'", "'value'")
        if not isinstance(value, str):
            value = orjson.dumps(value).decode("utf-8")
        ttl = command.get("ttl")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool)
                                or not 1 <= ttl <= MAX_TTL_SECONDS):
            raise BadRequest("ttl must be an integer from 1 to %d" % MAX_TTL_SECONDS)
        # through the dispatcher: a consumer waiting here gets it in the same call
        result = await self.context.dispatcher.publish(queue, [self.message_body(value)], ttl=ttl)
        self._answer({"queue": queue, "value": value, "key": result.keys[0]})

    async def _get(self, queue: str, command: Dict[str, Any]) -> None:
        message = await self.store.peek(queue)
        if message is None:
            self._empty()
            return
        self._answer({"queue": queue, "key": message.key, "value": message.value,
                      "count": message.deliveries})

    async def _take(self, queue: str, command: Dict[str, Any]) -> None:
        messages = await self.store.take(queue)
        if not messages:
            self._empty()
            return
        self._answer({"queue": queue, "key": messages[0].key, "value": messages[0].value})

    async def _del(self, queue: str, command: Dict[str, Any]) -> None:
        key = command.get("key")
        if not isinstance(key, str):
            raise _Refused("missing string field 'key'", "'key'")
        deleted = await self.store.delete(queue, key)
        self._answer({"queue": queue, "key": key, "deleted": deleted})

    COMMANDS: Dict[str, Callable[["ProtocolHandler", str, Dict[str, Any]], Awaitable[None]]] = {
        "add": _add, "get": _get, "take": _take, "del": _del,
    }
