"""The baseline: a bare stock cyclone.web app doing the same writes as the broker.

Run as ``python -m bench.bare --port N --redis /path/redis.sock``. No RestMQ
code is imported, so the difference between a figure and its baseline is what
the broker costs. Routes:

* ``POST /form``       read the ``value`` form field, answer a short text
* ``POST /lpush``      the same plus one txredisapi ``LPUSH``
* ``POST /evalsha``    the same plus one ``EVALSHA`` (INCR, SET, LPUSH: the
                       least a keyed add does)
* ``GET  /rpop``       one ``RPOP``, answered as JSON (204 when empty)
* ``POST /batch``      a JSON array, pushed with one variadic ``LPUSH``
* ``GET  /sse/<q>``    Server-Sent Events; the connection is kept in a list
* ``POST /pub/<q>``    ``value`` field or JSON array: written at once to every
                       subscriber of ``<q>`` (broadcast) or to one in turn
* ``POST /p/<q>``      ``policy=roundrobin|broadcast``
* ``GET  /poll/<q>``   a long-poll: waits until ``POST /pub/<q>`` hands it a
                       message (the oldest waiting request gets it), answered
                       as JSON
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from typing import Dict, List

import cyclone.web
import orjson
import txredisapi
from twisted.internet import defer

__all__ = ["make_app", "ADD_SCRIPT"]

# The least work a keyed add does: an id, the body under its key, the key queued.
ADD_SCRIPT = b"""
local n = redis.call('INCR', KEYS[1])
local key = ARGV[1] .. ':' .. n
redis.call('SET', key, ARGV[2])
redis.call('LPUSH', KEYS[2], key)
return key
"""
ADD_SHA = hashlib.sha1(ADD_SCRIPT).hexdigest()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Base(cyclone.web.RequestHandler):
    def initialize(self, state: "State") -> None:
        self.state = state

    def compute_etag(self) -> None:
        return None


class FormHandler(_Base):
    def post(self) -> None:
        self.get_argument("value")
        self.state.counter += 1
        self.set_header("Content-Type", "text/plain")
        self.finish("form:%d\r\n" % self.state.counter)


class LpushHandler(_Base):
    @defer.inlineCallbacks
    def post(self):
        value = self.get_argument("value")
        length = yield self.state.redis.lpush("bare:queue", value)
        self.set_header("Content-Type", "text/plain")
        self.finish("%s\r\n" % length)


class EvalshaHandler(_Base):
    @defer.inlineCallbacks
    def post(self):
        value = self.get_argument("value")
        key = yield self.state.redis.execute_command(
            "EVALSHA", ADD_SHA, 2, "bare:UUID", "bare:queue", "bare", value)
        self.set_header("Content-Type", "text/plain")
        self.finish("%s\r\n" % key)


class RpopHandler(_Base):
    @defer.inlineCallbacks
    def get(self):
        value = yield self.state.redis.rpop("bare:pop")
        if value is None:
            self.set_status(204)
            self.finish()
            return
        self.set_header("Content-Type", "application/json")
        self.finish(orjson.dumps({"key": "bare:pop", "value": value}))


class BatchHandler(_Base):
    @defer.inlineCallbacks
    def post(self):
        items = orjson.loads(self.request.body)
        length = yield self.state.redis.execute_command("LPUSH", "bare:queue", *items)
        self.set_header("Content-Type", "application/json")
        self.finish(orjson.dumps({"len": length, "count": len(items)}))


class SseHandler(_Base):
    @cyclone.web.asynchronous
    def get(self, queue: str) -> None:
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        # we frame the chunks ourselves (cyclone 1.3's chunking mixes str and bytes)
        self.set_header("Transfer-Encoding", "chunked")
        self.write(_chunk(b"retry: 3000\n\n"))
        self.flush()
        transport = self.request.connection.transport
        subscribers = self.state.subscribers.setdefault(queue, [])
        subscribers.append(transport)
        self.notifyFinish().addBoth(lambda _: _remove(subscribers, transport))


def _remove(items: list, item: object) -> None:
    try:
        items.remove(item)
    except ValueError:
        pass


class PollHandler(_Base):
    @cyclone.web.asynchronous
    def get(self, queue: str) -> None:
        pollers = self.state.pollers.setdefault(queue, [])
        pollers.append(self)
        self.notifyFinish().addBoth(lambda _: _remove(pollers, self))


class PublishHandler(_Base):
    def post(self, queue: str) -> None:
        if self.request.headers.get("Content-Type", "").startswith("application/json"):
            values = orjson.loads(self.request.body)
        else:
            values = [self.get_argument("value")]
        pollers = self.state.pollers.get(queue)
        while pollers and values:
            self.state.counter += 1
            poller = pollers.pop(0)
            poller.set_header("Content-Type", "application/json")
            poller.finish(orjson.dumps({"key": "%s:%d" % (queue, self.state.counter),
                                        "value": values.pop(0)}))
        subscribers = self.state.subscribers.get(queue, [])
        roundrobin = self.state.policies.get(queue) == "roundrobin"
        for value in values:
            self.state.counter += 1
            key = "%s:%d" % (queue, self.state.counter)
            frame = _chunk(b"id: %s\ndata: %s\n\n" % (
                key.encode(), orjson.dumps({"key": key, "value": value})))
            if not subscribers:
                continue
            if roundrobin:
                self.state.cursor = (self.state.cursor + 1) % len(subscribers)
                subscribers[self.state.cursor].write(frame)
            else:
                for transport in subscribers:
                    transport.write(frame)
        self.set_header("Content-Type", "text/plain")
        self.finish("%d\r\n" % len(values))


class PolicyHandler(_Base):
    def post(self, queue: str) -> None:
        self.state.policies[queue] = self.get_argument("policy")
        self.finish({"queue": queue, "value": self.state.policies[queue]})


class State:
    def __init__(self, redis: object) -> None:
        self.redis = redis
        self.counter = 0
        self.cursor = 0
        self.subscribers: Dict[str, List[object]] = {}
        self.policies: Dict[str, str] = {}
        self.pollers: Dict[str, List[object]] = {}


def make_app(redis: object) -> cyclone.web.Application:
    deps = {"state": State(redis)}
    return cyclone.web.Application([
        (r"/form", FormHandler, deps),
        (r"/lpush", LpushHandler, deps),
        (r"/evalsha", EvalshaHandler, deps),
        (r"/rpop", RpopHandler, deps),
        (r"/batch", BatchHandler, deps),
        (r"/sse/([^/]+)", SseHandler, deps),
        (r"/pub/([^/]+)", PublishHandler, deps),
        (r"/poll/([^/]+)", PollHandler, deps),
        (r"/p/([^/]+)", PolicyHandler, deps),
    ], log_function=lambda handler: None)  # like the broker with its access log off


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.bare")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", help="redis-server unix socket path")
    args = parser.parse_args(argv)
    from twisted.internet import reactor
    redis = None
    if args.redis:
        redis = txredisapi.lazyUnixConnectionPool(args.redis, poolsize=10, convertNumbers=False)
        redis.execute_command("SCRIPT", "LOAD", ADD_SCRIPT)
    reactor.listenTCP(args.port, make_app(redis), backlog=50, interface="127.0.0.1")
    print("listening %d" % args.port, flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
