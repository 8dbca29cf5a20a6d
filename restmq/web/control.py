"""/p/<q> policy, /control/<q> start/stop, /stats and /j/<q> job view.

Clients that ask for JSON (``Accept: application/json``) get this broker's
shapes (labels such as ``"started"``, 400 for a bad value); the others get the
original's answers (its nested status, ``"OK"``, its numbers for status and
policy), which its clients and its dashboard parse.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from restmq.errors import BadRequest
from restmq.model import Policy, QueueState
from restmq.storage.pool import describe
from restmq.storage.store import check_group
from restmq.web import pages
from restmq.web.base import BaseHandler, async_handler

__all__ = ["PolicyHandler", "ControlListHandler", "ControlHandler", "StatsHandler", "JobsHandler"]

_JSON = "application/json"


class PolicyHandler(BaseHandler):
    """GET the distribution policy; POST ``policy=broadcast|roundrobin``."""

    acl_categories = {"GET": "rest:consumer", "POST": "rest:producer"}

    @async_handler
    async def get(self, queue: str) -> None:
        policy = await self.store.get_policy(queue)
        payload = {"queue": queue, "value": policy.label}
        if self.wants_json():
            self.respond(payload)
        else:
            self.respond_original(payload)

    @async_handler
    async def post(self, queue: str) -> None:
        name = self.required("policy")
        try:
            policy = Policy.from_name(name)
        except ValueError as exc:
            if self.wants_json():
                raise BadRequest(str(exc)) from None
            # the original answered its None result as JSON, and changed nothing
            self.respond_original(None)
            return
        await self.store.set_policy(queue, policy)
        if self.wants_json():
            self.respond({"queue": queue, "value": policy.label})
        else:
            # Redis's reply to SET, as the original passed it on
            self.respond_original("OK")


class ControlListHandler(BaseHandler):
    """GET /control/: every queue's status (what the original meant to answer there)."""

    acl_categories = {"GET": "rest:consumer"}

    @async_handler
    async def get(self) -> None:
        infos = await self.store.stats()
        if self.wants_json():
            self.respond({"queues": {info.name: info.state.label for info in infos}, "count": len(infos)})
            return
        statuses = {info.name: {"queue": info.name, "status": info.state.value} for info in infos}
        self.respond_original({"redis": describe(self.config.redis.target), "queues": statuses,
                               "count": len(statuses)}, _JSON)


class ControlHandler(BaseHandler):
    """GET whether a queue is started; POST ``status=start|stop``."""

    acl_categories = {"GET": "rest:consumer", "POST": "rest:producer"}

    @async_handler
    async def get(self, queue: str) -> None:
        state = await self.store.get_state(queue)
        if self.wants_json():
            self.respond({"queue": queue, "status": state.label})
        else:
            self.respond_original({"redis": describe(self.config.redis.target), "queue": queue,
                                   "status": {"queue": queue, "status": state.value}}, _JSON)

    @async_handler
    async def post(self, queue: str) -> None:
        word = self.argument("status")
        try:
            state = QueueState.from_command(word or "")
        except ValueError as exc:
            if self.wants_json():
                raise BadRequest(str(exc)) from None
            # the original answered 200 and said so under "stat"
            self.respond_original({"stat": "invalid status: %s" % word})
            return
        await self.store.set_state(queue, state)
        if self.wants_json():
            self.respond({"queue": queue, "status": state.label})
        else:
            self.respond_original({"stat": {"queue": queue, "status": state.value}})


def _original_entry(info: Any) -> Dict[str, Any]:
    """A queue as the original's /stats/ listed it: status 1|0, the stored policy
    number, "" when none is stored."""
    return {"name": info.name, "len": info.length, "status": info.state.value,
            "policy": info.policy.value if info.policy_is_set else ""}


class StatsHandler(BaseHandler):
    """/stats/ for every queue, /stats/<q> for one."""

    acl_categories = {"GET": "rest:consumer"}

    @async_handler
    async def get(self, queue: Optional[str] = None) -> None:
        redis = describe(self.config.redis.target)
        subscribers = self.context.dispatcher.subscriber_counts
        json_client = self.wants_json()
        if queue:
            infos = await self.store.stats(queue)
            if not json_client:
                self.respond_original({"redis": redis, "queue": queue, "len": infos[0].length},
                                      _JSON, b"")
                return
            payload = infos[0].as_dict()
            payload.update(queue=queue, redis=redis, subscribers=subscribers(queue))
            self.respond(payload)
            return
        infos = await self.store.stats()
        if not json_client:
            self.respond_original({"queues": {info.name: _original_entry(info) for info in infos},
                                   "redis": redis, "count": len(infos)}, _JSON, b"")
            return
        queues = {}
        for info in infos:
            entry = info.as_dict()
            entry["subscribers"] = subscribers(info.name)
            queues[info.name] = entry
        self.respond({"queues": queues, "count": len(queues), "redis": redis})


class JobsHandler(BaseHandler):
    """/j/<q>: the newest waiting messages, the length; a page for browsers.
    (The original forgot its ACL.)"""

    acl_categories = {"GET": "rest:consumer"}

    @async_handler
    async def get(self, queue: str) -> None:
        count = self.number("count", 10, low=1, high=1000, integer=True)
        length, messages = await self.store.jobs(queue, int(count),
                                                 group=check_group(self.argument("group") or ""))
        jobs = []
        for message in messages:
            job: Dict[str, Any] = {"key": message.key, "value": message.value}
            if message.attributes:
                job["attributes"] = message.attributes
            jobs.append(job)
        if self.wants_html() and not self.wants_json():
            self.respond_html(pages.jobs(queue, length, jobs))
            return
        self.respond({"queue": queue, "len": length, "jobs": jobs})
