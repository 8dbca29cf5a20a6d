"""At-least-once on REST: /q/<q>/ack, /nack, /extend, /redrive, /dead, and /settings/<q>."""

from __future__ import annotations

from typing import Dict, List, Optional

from restmq.errors import BadRequest, LeaseLost
from restmq.storage.store import dead_letter_queue
from restmq.model import SETTINGS, TEXT_SETTINGS, parse_setting
from restmq.storage.store import check_group
from restmq.web.base import BaseHandler, async_handler

__all__ = ["SettleHandler", "RedriveHandler", "DeadLettersHandler", "SettingsHandler"]


class SettleHandler(BaseHandler):
    """POST /q/<q>/ack | nack | extend with ``receipt`` (repeatable) or a JSON body
    ``{"receipts": [...]}``. A receipt whose lease expired and went to another
    consumer is refused with 409 (the others in the request are still settled)."""

    acl_categories = {"POST": "rest:consumer"}

    def receipts(self) -> List[str]:
        receipts = self.arguments("receipt")
        if not receipts and self.is_json_request() and self.request.body:
            body = self.json_body()
            listed = body.get("receipts", [body.get("receipt")]) if isinstance(body, dict) else body
            if not isinstance(listed, list) or not all(isinstance(r, str) for r in listed):
                raise BadRequest("receipts must be a list of strings")
            receipts = listed
        if not receipts:
            raise BadRequest("missing field 'receipt'")
        if len(receipts) > self.config.delivery.max_batch:
            raise BadRequest("at most %d receipts per request" % self.config.delivery.max_batch)
        return receipts

    @async_handler
    async def post(self, queue: str, action: str) -> None:
        receipts = self.receipts()
        group = check_group(self.argument("group") or "")
        target = self.context.dispatcher.target(queue, group)
        if action == "ack":
            done, refused = await self.store.ack(queue, receipts, group=group)
            self.context.dispatcher.settled(target, receipts)
            if self.context.metrics is not None:
                self.context.metrics.acked(queue, done, group)
        elif action == "nack":
            delay = self.number("delay", 0, low=0, high=self.config.delivery.max_delay)
            done, refused = await self.store.nack(queue, receipts, int(delay * 1000), group=group)
            self.context.dispatcher.settled(target, receipts)
            if self.context.metrics is not None:
                self.context.metrics.nacked(queue, done)
        else:
            seconds = self.number("seconds", None, low=0.001, high=12 * 3600)
            # no seconds: the group's (else the queue's) lease_seconds, as a reserve without a value
            done, refused = await self.store.extend(
                queue, receipts, int((seconds or self.config.delivery.lease_seconds) * 1000),
                group=group, default_lease=seconds is None)
        if refused:
            raise LeaseLost("the lease of %s is not yours any more (expired and handed out again, "
                            "or settled); %d other receipt(s) were %sed"
                            % (", ".join(refused[:10]), done, action))
        self.respond({"queue": queue, action + "ed": done})


class RedriveHandler(BaseHandler):
    """POST /q/<q>/redrive [count=N]: dead letters back to the end of the queue."""

    acl_categories = {"POST": "rest:producer"}

    @async_handler
    async def post(self, queue: str) -> None:
        count = self.number("count", 0, low=0, high=10 ** 9, integer=True)
        moved = await self.store.redrive(queue, int(count), group=check_group(self.argument("group") or ""))
        self.respond({"queue": queue, "moved": moved})


class DeadLettersHandler(BaseHandler):
    """GET /q/<q>/dead: the newest dead letters (newest first) with why they died."""

    acl_categories = {"GET": "rest:consumer"}

    @async_handler
    async def get(self, queue: str) -> None:
        count = self.number("count", 10, low=1, high=1000, integer=True)
        group = check_group(self.argument("group") or "")
        letters = await self.store.dead_letters(queue, int(count), group=group)
        self.respond({"queue": queue, "dead_letter_queue": dead_letter_queue(queue, group),
                      "messages": letters})


def _setting_text(value: object) -> str:
    """A JSON value as a setting's text; JSON has one number type, so 5.0 is 5."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _number(text: str) -> object:
    """A stored setting as a number: "5" -> 5, "30.0" -> 30.0, "1e-05" -> 1e-05."""
    try:
        return int(text)
    except ValueError:
        return float(text)


class SettingsHandler(BaseHandler):
    """GET /settings/<q>; POST any of maxlen, overflow, max_receives, lease_seconds,
    history_size, ttl, dead_letter_queue (an empty value removes that setting)."""

    # maxlen with overflow=drop_oldest makes the queue drop messages (a consumer's power),
    # and every setting shapes what producers get: changing them takes both
    acl_categories = {"GET": "rest:consumer", "POST": ("rest:producer", "rest:consumer")}

    def _effective(self, own: Dict[str, str]) -> Dict[str, object]:
        delivery = self.config.delivery
        defaults: Dict[str, object] = {
            "maxlen": 0, "overflow": "reject", "max_receives": delivery.max_receives,
            "lease_seconds": delivery.lease_seconds,
            "history_size": self.config.dispatch.history_size, "ttl": None,
            "dead_letter_queue": None}
        for name, value in own.items():
            defaults[name] = value if name in TEXT_SETTINGS else _number(value)
        return defaults

    @async_handler
    async def get(self, queue: str) -> None:
        own = await self.store.get_settings(queue, group=check_group(self.argument("group") or ""))
        self.respond({"queue": queue, "settings": self._effective(own), "set": sorted(own)})

    @async_handler
    async def post(self, queue: str) -> None:
        changes: Dict[str, Optional[str]] = {}
        fields = set(getattr(self.request, "raw_arguments", {}))
        if self.is_json_request() and self.request.body:
            body = self.json_body()
            if not isinstance(body, dict):
                raise BadRequest("settings must be a JSON object")
            items = {name: (None if value in (None, "") else _setting_text(value))
                     for name, value in body.items()}
        else:
            items = {name: (self.argument(name) or None) for name in fields
                     if name not in ("callback", "token", "group")}
        for name, value in items.items():
            try:
                changes[name] = None if value is None else parse_setting(name, value)
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
        if not changes:
            raise BadRequest("nothing to set (known settings: %s)" % ", ".join(sorted(SETTINGS)))
        own = await self.store.set_settings(queue, changes,
                                            group=check_group(self.argument("group") or ""))
        self.respond({"queue": queue, "settings": self._effective(own), "set": sorted(own)})
