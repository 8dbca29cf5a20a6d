"""/p/<q> policy, /control/<q> start/stop, /stats and /j/<q> job view."""

from __future__ import annotations

from typing import Optional

from restmq.errors import BadRequest
from restmq.model import Policy, QueueState
from restmq.storage.pool import describe
from restmq.storage.store import check_group
from restmq.web.base import BaseHandler, async_handler

__all__ = ["PolicyHandler", "ControlHandler", "StatsHandler", "JobsHandler"]


class PolicyHandler(BaseHandler):
    """GET the distribution policy; POST ``policy=broadcast|roundrobin``."""

    acl_categories = {"GET": "rest:consumer", "POST": "rest:producer"}

    @async_handler
    async def get(self, queue: str) -> None:
        policy = await self.store.get_policy(queue)
        self.respond({"queue": queue, "value": policy.label})

    @async_handler
    async def post(self, queue: str) -> None:
        try:
            policy = Policy.from_name(self.required("policy"))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        await self.store.set_policy(queue, policy)
        self.respond({"queue": queue, "value": policy.label})


class ControlHandler(BaseHandler):
    """GET whether a queue is started; POST ``status=start|stop``."""

    acl_categories = {"GET": "rest:consumer", "POST": "rest:producer"}

    @async_handler
    async def get(self, queue: str) -> None:
        state = await self.store.get_state(queue)
        self.respond({"queue": queue, "status": state.label})

    @async_handler
    async def post(self, queue: str) -> None:
        try:
            state = QueueState.from_command(self.required("status"))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        await self.store.set_state(queue, state)
        self.respond({"queue": queue, "status": state.label})


class StatsHandler(BaseHandler):
    """/stats/ for every queue, /stats/<q> for one."""

    acl_categories = {"GET": "rest:consumer"}

    @async_handler
    async def get(self, queue: Optional[str] = None) -> None:
        redis = describe(self.config.redis.target)
        subscribers = self.context.dispatcher.subscriber_counts
        if queue:
            infos = await self.store.stats(queue)
            payload = infos[0].as_dict()
            payload.update(queue=queue, redis=redis, subscribers=subscribers(queue))
            self.respond(payload)
            return
        infos = await self.store.stats()
        queues = {}
        for info in infos:
            entry = info.as_dict()
            entry["subscribers"] = subscribers(info.name)
            queues[info.name] = entry
        self.respond({"queues": queues, "count": len(queues), "redis": redis})


class JobsHandler(BaseHandler):
    """/j/<q>: the newest waiting messages, the length. (The original forgot its ACL.)"""

    acl_categories = {"GET": "rest:consumer"}

    @async_handler
    async def get(self, queue: str) -> None:
        count = self.number("count", 10, low=1, high=1000, integer=True)
        length, messages = await self.store.jobs(queue, int(count),
                                                 group=check_group(self.argument("group") or ""))
        jobs = []
        for message in messages:
            job = {"key": message.key, "value": message.value}
            if message.attributes:
                job["attributes"] = message.attributes
            jobs.append(job)
        self.respond({"queue": queue, "len": length, "jobs": jobs})
