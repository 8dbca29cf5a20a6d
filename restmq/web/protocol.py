"""/queue: the JSON command protocol of the original (add, get, take, del)."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict

import orjson

from restmq.errors import BadRequest
from restmq.model import MAX_TTL_SECONDS
from restmq.web.base import BaseHandler, async_handler

__all__ = ["ProtocolHandler", "COMMAND_CATEGORIES"]


#: the ACL category of each command: adding is producing; looking at, taking and
#: deleting messages is consuming
COMMAND_CATEGORIES = {"add": "rest:producer", "get": "rest:consumer", "take": "rest:consumer",
                      "del": "rest:consumer"}


class ProtocolHandler(BaseHandler):
    """POST a JSON object ``{"cmd": ..., "queue": ...}`` as the ``body`` or ``msg``
    form field, or as a raw ``application/json`` body. The ACL category is the
    command's (COMMAND_CATEGORIES), checked once the body is parsed."""

    acl_categories = {"GET": "rest:consumer"}

    def get(self) -> None:
        self.respond({"commands": sorted(self.COMMANDS),
                      "example": {"cmd": "add", "queue": "jobs", "value": "hello"}})

    @async_handler
    async def post(self) -> None:
        command = self._command()
        name = command.get("cmd")
        handler = self.COMMANDS.get(name) if isinstance(name, str) else None
        if handler is None or not isinstance(name, str):
            raise BadRequest("unknown cmd %r (use %s)" % (name, ", ".join(sorted(self.COMMANDS))))
        self.check_acl(COMMAND_CATEGORIES[name])
        queue = command.get("queue")
        if not isinstance(queue, str):
            raise BadRequest("missing string field 'queue'")
        await handler(self, queue, command)

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

    async def _add(self, queue: str, command: Dict[str, Any]) -> None:
        value = command.get("value", command.get("msg"))
        if value is None:
            raise BadRequest("missing field 'value'")
        if not isinstance(value, str):
            value = orjson.dumps(value).decode("utf-8")
        ttl = command.get("ttl")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool)
                                or not 1 <= ttl <= MAX_TTL_SECONDS):
            raise BadRequest("ttl must be an integer from 1 to %d" % MAX_TTL_SECONDS)
        result = await self.store.add(queue, [self.message_body(value)], ttl=ttl)
        self.respond({"queue": queue, "value": value, "key": result.keys[0]})

    async def _get(self, queue: str, command: Dict[str, Any]) -> None:
        message = await self.store.peek(queue)
        if message is None:
            self.no_content()
            return
        self.respond({"queue": queue, "key": message.key, "value": message.value,
                      "count": message.deliveries})

    async def _take(self, queue: str, command: Dict[str, Any]) -> None:
        messages = await self.store.take(queue)
        if not messages:
            self.no_content()
            return
        self.respond({"queue": queue, "key": messages[0].key, "value": messages[0].value})

    async def _del(self, queue: str, command: Dict[str, Any]) -> None:
        key = command.get("key")
        if not isinstance(key, str):
            raise BadRequest("missing string field 'key'")
        deleted = await self.store.delete(queue, key)
        self.respond({"queue": queue, "key": key, "deleted": deleted})

    COMMANDS: Dict[str, Callable[["ProtocolHandler", str, Dict[str, Any]], Awaitable[None]]] = {
        "add": _add, "get": _get, "take": _take, "del": _del,
    }
