"""Conformance with the original RestMQ (gleicon/restmq): its docs' examples, its
clients' calls, and what its code answered, route by route, for its three twistd
plugins (restmq, collectd, syslogd).

Every request here is sent as the original's clients sent it: no ``Accept:
application/json`` (curl's ``*/*``, urllib's nothing, jQuery's lists). Each test
names where the expected answer comes from: a doc (``README.rst``,
``docs/README.Protocol``, ``README.qp``, ``docs/HTTP_CLIENTS.rst``,
``README.websocket``, ``README.collectd``, ``README.syslogd``, ``README.RestMQ``,
``QUICKSTART``, ``start_scripts/restmq_server``), an example or client
(``examples/*``, ``tests/bigmessage.py``, ``contrib/*``, ``static/index.html``),
or the code (``web.py``, ``core.py``, ``dispatch.py``, ``collectd.py``,
``syslogd.py``, ``twisted/plugins/*``). Where this broker answers otherwise on
purpose, the test says ``CHANGED`` and why; README's "Differences from the
original RestMQ" lists the same.

JSON is compared as JSON: the original's Python ``json.dumps`` put spaces after
``:`` and ``,`` and ordered keys by hash; the bytes around it (the CRLF, a JSONP
wrapper) and the Content-Type are compared exactly.
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import pytest_twisted
import treq
from twisted.internet.threads import deferToThread

from restmq.acl import load_acl
from tests.helpers import free_port, raw_exchange, sleep, start_app, stop_app, test_config, wait_until
from tests.processes import spawn_twistd, wait_listening
from tests.streaming import Stream, WsClient

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
JS = "application/javascript"
CRLF = b"\r\n"


async def call(app, method: str, path: str, data=None, headers=None):
    """One request as the original's clients made it: (status, Content-Type, body)."""
    response = await treq.request(method, app.url + path, data=data, headers=headers or {},
                                  pool=app.http_pool)
    body = await response.content()
    return response.code, (response.headers.getRawHeaders("Content-Type") or [None])[0], body


def line(body: bytes):
    """The JSON of an answer the original wrote as a line: it must end with CRLF."""
    assert body.endswith(CRLF), body
    return json.loads(body[:-2])


def jsonp(body: bytes, callback: str, end: bytes = b";\r\n"):
    prefix = callback.encode() + b"("
    assert body.startswith(prefix) and body.endswith(b")" + end), body
    return json.loads(body[len(prefix):-len(b")" + end)])


async def publish(app, queue: str, value: str) -> str:
    status, _, body = await call(app, "POST", "/q/" + queue, {"value": value})
    assert status == 200
    return body[:-2].decode()


async def subscribed(app, queue: str, count: int) -> None:
    await wait_until(lambda: sum(app.dispatcher.subscriber_counts(queue).values()) == count)


# README.rst, README.md ("Simple usage"), docs/HTTP_CLIENTS.rst: the REST queue

@pytest_twisted.ensureDeferred
async def test_readme_simple_usage_produce_and_consume(app):
    # README: curl -d 'value=my element' /q/queue_name -> queue_name:1
    status, kind, body = await call(app, "POST", "/q/queue_name", {"value": "my element"},
                                    {"Accept": "*/*"})
    # CHANGED: text/plain with nosniff where the original said text/html (a message body
    # served as HTML of the broker's origin is a cross-site scripting hole)
    assert (status, kind, body) == (200, TEXT, b"queue_name:1\r\n")
    # curl /q/queue_name -> {"count": 0, "key": "queue_name:1", "value": "my element"}
    status, kind, body = await call(app, "GET", "/q/queue_name", headers={"Accept": "*/*"})
    assert (status, kind) == (200, TEXT)
    assert line(body) == {"count": 0, "key": "queue_name:1", "value": "my element"}


@pytest_twisted.ensureDeferred
async def test_http_clients_curl_post_answers_the_key_and_crlf(app):
    # docs/HTTP_CLIENTS.rst: POST /q/test value=foobar -> "test:1003" (Content-Length 11)
    for _ in range(2):
        await publish(app, "test", "x")
    raw = await raw_exchange(app.port, b"POST /q/test HTTP/1.1\r\nHost: localhost:8888\r\nAccept: */*\r\n"
                             b"Content-Length: 12\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                             b"Connection: close\r\n\r\nvalue=foobar")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == b"test:3\r\n"
    assert b"\r\nContent-Length: 8" in head and b"\r\nX-Content-Type-Options: nosniff" in head


@pytest_twisted.ensureDeferred
async def test_http_clients_urllib_and_requests_calls(app):
    # docs/HTTP_CLIENTS.rst, examples/twitter_trends.py, examples/mapreduce/map.py:
    # urllib posts queue= and value=<json> to /; requests posts {"value": ...} to /q/test
    message = json.dumps({"subject": "s", "author": "a", "text": "t"})

    def post_with_urllib() -> bytes:
        data = urllib.parse.urlencode({"queue": "twitter", "value": message}).encode()
        with urllib.request.urlopen(urllib.request.Request(app.url + "/", data), timeout=10) as answer:
            return answer.read()

    assert await deferToThread(post_with_urllib) == b"twitter:1\r\n"
    assert line((await call(app, "GET", "/q/twitter"))[2])["value"] == message
    status, _, body = await call(app, "POST", "/q/test", {"value": "el requesto"},
                                 {"User-Agent": "python-requests/2.0", "Accept": "*/*"})
    assert body == b"test:1\r\n"


@pytest_twisted.ensureDeferred
async def test_pop_of_an_empty_queue_is_204_with_no_body(app):
    # web.py RestQueueHandler.get: raise HTTPError(204)
    status, _, body = await call(app, "GET", "/q/nothing")
    assert (status, body) == (204, b"")


@pytest_twisted.ensureDeferred
async def test_post_takes_msg_or_value_msg_first(app):
    # web.py RestQueueHandler.post: queue_add(queue, msg or value)
    await call(app, "POST", "/q/mv", {"value": "from value", "msg": "from msg"})
    await call(app, "POST", "/q/mv", {"value": "only value"})
    await call(app, "POST", "/q/mv", {"msg": "only msg"})
    values = [line((await call(app, "GET", "/q/mv"))[2])["value"] for _ in range(3)]
    assert values == ["from msg", "only value", "only msg"]
    assert (await call(app, "POST", "/q/mv", {"other": "x"}))[0] == 400


@pytest_twisted.ensureDeferred
async def test_post_ttl_expires_the_body(app, redis):
    # web.py (ttl argument) -> core.queue_add: EXPIRE key ttl
    await call(app, "POST", "/q/ttl", {"value": "v", "ttl": "60"})
    assert 0 < int(await redis.ttl("ttl:1")) <= 60


@pytest_twisted.ensureDeferred
async def test_pop_of_an_expired_message_skips_it(app, redis):
    # CHANGED: the original popped the key and answered {"value": null} for an expired body
    await call(app, "POST", "/q/exp", {"value": "gone", "ttl": "60"})
    await call(app, "POST", "/q/exp", {"value": "kept"})
    await redis.delete("exp:1")  # as if its ttl ran out
    assert line((await call(app, "GET", "/q/exp"))[2]) == {"key": "exp:2", "value": "kept", "count": 0}


@pytest_twisted.ensureDeferred
async def test_jsonp_pop_and_post(app):
    # web.py CustomHandler: "%s(%s);\r\n" % (callback, text)
    key = await publish(app, "jp", "v")
    status, kind, body = await call(app, "GET", "/q/jp?callback=handle")
    assert (status, kind) == (200, JS)
    assert jsonp(body, "handle") == {"key": key, "value": "v", "count": 0}
    # CHANGED: the original wrote the key unquoted, handle(jp:2); which is not JavaScript
    status, kind, body = await call(app, "POST", "/q/jp?callback=handle", {"value": "w"})
    assert (kind, body) == (JS, b'handle("jp:2");\r\n')


@pytest_twisted.ensureDeferred
async def test_readme_delete_purges_and_answers_the_status(app, redis):
    # README.md: curl -X DELETE /q/queue_name -> {"queue": "queue_name", "status": 1};
    # "status may be 0 if the queue is already empty or does not exist"
    await publish(app, "queue_name", "a")
    await publish(app, "queue_name", "b")
    status, kind, body = await call(app, "DELETE", "/q/queue_name")
    assert (status, kind) == (200, TEXT)
    assert line(body) == {"queue": "queue_name", "status": 1}
    assert line((await call(app, "DELETE", "/q/queue_name"))[2]) == {"queue": "queue_name", "status": 0}
    # CHANGED: the original deleted the list only and leaked every body
    assert await redis.exists("queue_name:1") == 0


@pytest_twisted.ensureDeferred
async def test_delete_closes_the_queue_comet_consumers(app):
    # web.py RestQueueHandler.delete: conn.finish() for every comet client of the queue
    stream = await Stream.open(app.port, "/c/closing")
    await subscribed(app, "closing", 1)
    await call(app, "DELETE", "/q/closing")
    await wait_until(lambda: stream.closed)


# "/" : the very first API (README.rst, examples/test_rest.sh, tests/bigmessage.py)

@pytest_twisted.ensureDeferred
async def test_readme_example_comet_consumer_gets_what_is_posted_to_root(app):
    # README.rst "Example": browser on /c/test, then curl -d "queue=test&msg=foobar" /
    stream = await Stream.open(app.port, "/c/test")
    assert b"text/plain" in stream.head
    await subscribed(app, "test", 1)
    # CHANGED: the original's IndexHandler passed `value` only and failed (503) on msg=
    status, _, body = await call(app, "POST", "/", {"queue": "test", "msg": "foobar"})
    assert (status, body) == (200, b"test:1\r\n")
    await wait_until(lambda: stream.body.endswith(CRLF))
    assert stream.body.count(CRLF) == 1
    assert json.loads(stream.body) == {"key": "test:1", "value": "foobar"}
    stream.close()


@pytest_twisted.ensureDeferred
async def test_root_post_prefers_value_and_needs_a_queue(app):
    # web.py IndexHandler.post: queue_add(queue, value); get_argument("queue") -> 400
    assert (await call(app, "POST", "/", {"queue": "r", "value": "v", "msg": "m"}))[2] == b"r:1\r\n"
    assert line((await call(app, "GET", "/q/r"))[2])["value"] == "v"
    assert (await call(app, "POST", "/", {"value": "v"}))[0] == 400
    assert (await call(app, "POST", "/", {"queue": "r"}))[0] == 400


@pytest_twisted.ensureDeferred
async def test_examples_test_rest_sh(app):
    # examples/test_rest.sh, in order
    assert (await call(app, "POST", "/", {"queue": "test", "value": "foobar"}))[2] == b"test:1\r\n"
    # /queue wants a body= or msg= JSON command: the original answered 400
    assert (await call(app, "POST", "/queue", {"queue": "test", "value": "foobar"}))[0] == 400
    assert (await call(app, "POST", "/q/test", {"queue": "test", "value": "foobar"}))[2] == b"test:2\r\n"
    assert line((await call(app, "GET", "/q/test"))[2]) == {"key": "test:1", "value": "foobar", "count": 0}
    status, kind, body = await call(app, "GET", "/?queue=test")
    assert (status, kind) == (200, TEXT)
    assert line(body) == {"key": "test:2", "value": "foobar", "count": 0}


@pytest_twisted.ensureDeferred
async def test_root_get_of_an_empty_or_unnamed_queue_is_404(app):
    # web.py IndexHandler.get: `if value: ... else: raise HTTPError(404)`
    assert (await call(app, "GET", "/?queue=empty"))[0] == 404
    assert (await call(app, "GET", "/?queue="))[0] == 404
    # a client that asks for JSON gets this broker's answer
    assert (await call(app, "GET", "/?queue=empty", headers={"Accept": JSON}))[0] == 204


@pytest_twisted.ensureDeferred
async def test_root_get_jsonp(app):
    await publish(app, "rj", "v")
    status, kind, body = await call(app, "GET", "/?queue=rj&callback=cb")
    assert (status, kind, jsonp(body, "cb")) == (200, JS, {"key": "rj:1", "value": "v", "count": 0})


@pytest_twisted.ensureDeferred
async def test_root_without_a_queue_and_the_original_pages_redirect(app):
    # web.py IndexHandler.get: redirect("/static/index.html")
    # CHANGED: the page is the dashboard now; /static/index.html leads there too
    response = await treq.get(app.url + "/", pool=app.http_pool, allow_redirects=False)
    assert (response.code, response.headers.getRawHeaders("Location")) == (302, ["dashboard/"])
    response = await treq.get(app.url + "/static/index.html", pool=app.http_pool, allow_redirects=False)
    assert (response.code, response.headers.getRawHeaders("Location")) == (302, ["../dashboard/"])
    response = await treq.get(app.url + "/static/help.html", pool=app.http_pool, allow_redirects=False)
    assert (response.code, response.headers.getRawHeaders("Location")) == (302, ["../queue"])


@pytest_twisted.ensureDeferred
async def test_bigmessage_reads_the_body_from_redis_after_the_pop(app, redis):
    # tests/bigmessage.py: POST / a big JSON value, GET /q/<q>, then GET <key> from Redis
    # (the original left the body there for good; here it stays popped_ttl seconds)
    content = "word " * 50000
    value = json.dumps({"filename": "big.txt", "len": len(content), "content": content})
    key = (await call(app, "POST", "/", {"queue": "bigmessages_1", "value": value}))[2].rstrip().decode()
    popped = line((await call(app, "GET", "/q/bigmessages_1"))[2])
    assert json.loads(popped["value"])["content"] == content
    assert json.loads(await redis.get(key))["content"] == content
    assert 0 < int(await redis.ttl(key)) <= app.config.delivery.popped_ttl
    assert await redis.llen("bigmessages_1:queue") == 0


# docs/README.Protocol, README.rst "JSON Protocol": /queue

async def command(app, body: dict, field: str = "body"):
    return await call(app, "POST", "/queue", {field: json.dumps(body)})


@pytest_twisted.ensureDeferred
async def test_protocol_doc_add_get_del_take(app, redis):
    # docs/README.Protocol, the four examples in order
    status, kind, body = await command(app, {"cmd": "add", "queue": "test", "value": "oi"})
    assert (status, kind) == (200, JSON)  # the original finished with a dict: JSON, no CRLF
    assert json.loads(body) == {"queue": "test", "value": "oi", "key": "test:1"}
    # "get ... increments the number of times that the element has been requested"
    first = json.loads((await command(app, {"cmd": "get", "queue": "test"}))[2])
    assert first == {"queue": "test", "value": "oi", "count": 1, "key": "test:1"}
    assert json.loads((await command(app, {"cmd": "get", "queue": "test"}, "msg"))[2])["count"] == 2
    # the count is the original's <key>:refcount, which its brokers share
    assert await redis.get("test:1:refcount") == "2"
    deleted = json.loads((await command(app, {"cmd": "del", "queue": "test", "key": "test:1"}))[2])
    assert deleted == {"queue": "test", "deleted": True, "key": "test:1"}
    assert await redis.exists("test:1:refcount") == 0
    await command(app, {"cmd": "add", "queue": "test", "value": "again"})
    taken = json.loads((await command(app, {"cmd": "take", "queue": "test"}))[2])
    assert taken == {"queue": "test", "value": "again", "key": "test:2"}
    assert await redis.exists("test:2") == 0  # take is get and delete


@pytest_twisted.ensureDeferred
async def test_readme_json_protocol_genesis(app):
    # README.rst: add "abacab" to "genesis", then take it
    await command(app, {"cmd": "add", "queue": "genesis", "value": "abacab"})
    taken = json.loads((await command(app, {"cmd": "take", "queue": "genesis"}))[2])
    assert taken == {"queue": "genesis", "value": "abacab", "key": "genesis:1"}


@pytest_twisted.ensureDeferred
async def test_protocol_get_count_follows_another_broker(app, redis):
    # core.queue_get(softget=True): INCR <key>:refcount, whoever counted before
    await command(app, {"cmd": "add", "queue": "rc", "value": "v"})
    await redis.set("rc:1:refcount", "5")
    assert json.loads((await command(app, {"cmd": "get", "queue": "rc"}))[2])["count"] == 6


@pytest_twisted.ensureDeferred
async def test_protocol_empty_queue_is_200_with_an_error(app):
    # dispatch.py _get / _take: {"error": "empty queue"} (README.Protocol says "Null resultset")
    for name in ("get", "take"):
        status, kind, body = await command(app, {"cmd": name, "queue": "none"})
        assert (status, kind, json.loads(body)) == (200, JSON, {"error": "empty queue"})
    # a client asking for JSON gets this broker's 204
    response = await treq.post(app.url + "/queue", data={"body": '{"cmd": "get", "queue": "none"}'},
                               headers={"Accept": JSON}, pool=app.http_pool)
    assert response.code == 204


@pytest_twisted.ensureDeferred
async def test_protocol_refusals_are_the_original_ones(app):
    # web.py QueueHandler.post and dispatch.py
    assert (await call(app, "POST", "/queue", {}))[0] == 400  # no body, no msg
    assert (await call(app, "POST", "/queue", {"body": "{not json"}))[0] == 400  # malformed
    assert (await command(app, {"queue": "q"}))[0] == 400  # no cmd
    assert (await command(app, {"cmd": "", "queue": "q"}))[0] == 400  # empty cmd
    # unknown command: execute() returned None -> finish(json_encode({...})), a string
    status, kind, body = await command(app, {"cmd": "fly", "queue": "q"})
    assert (status, kind, json.loads(body)) == (200, TEXT, {"error": "null resultset"})
    # a missing field: the KeyError, as text, under "error"
    assert json.loads((await command(app, {"cmd": "add", "value": "v"}))[2]) == {"error": "'queue'"}
    assert json.loads((await command(app, {"cmd": "add", "queue": "q"}))[2]) == {"error": "'value'"}
    assert json.loads((await command(app, {"cmd": "del", "queue": "q"}))[2]) == {"error": "'key'"}


# /p/<q> (README.qp, docs/README.queue, README.md)

@pytest_twisted.ensureDeferred
async def test_readme_qp_policy_get_and_set(app, redis):
    # README.md: GET /p/queue_name -> {"queue": "queue_name", "value": "broadcast"}
    # CHANGED: web.py said "unknown" while no policy was stored; the README example and
    # the dispatcher both mean broadcast
    status, kind, body = await call(app, "GET", "/p/test")
    assert (status, kind, line(body)) == (200, TEXT, {"queue": "test", "value": "broadcast"})
    # README.qp: curl -D - -X POST -d "policy=roundrobin" /p/test; README.md: -> OK
    status, kind, body = await call(app, "POST", "/p/test", {"policy": "roundrobin"})
    assert (status, kind, body) == (200, TEXT, b"OK\r\n")
    assert await redis.get("test:queuepolicy") == "2"
    assert line((await call(app, "GET", "/p/test"))[2]) == {"queue": "test", "value": "roundrobin"}
    assert (await call(app, "POST", "/p/test", {"policy": "broadcast"}))[2] == b"OK\r\n"
    assert await redis.get("test:queuepolicy") == "1"


@pytest_twisted.ensureDeferred
async def test_policy_refusals(app, redis):
    # core.queue_policy_set returned None for another word: "null\r\n", nothing stored
    status, kind, body = await call(app, "POST", "/p/pq", {"policy": "random"})
    assert (status, kind, body) == (200, TEXT, b"null\r\n")
    assert await redis.exists("pq:queuepolicy") == 0
    assert (await call(app, "POST", "/p/pq", {}))[0] == 400  # get_argument("policy")
    assert (await call(app, "POST", "/p/pq", {"policy": "random"}, {"Accept": JSON}))[0] == 400


@pytest_twisted.ensureDeferred
async def test_readme_qp_roundrobin_over_comet_consumers(app):
    # README.qp: two comet consumers, policy roundrobin, POST / in a loop
    await call(app, "POST", "/p/rr", {"policy": "roundrobin"})
    streams = [await Stream.open(app.port, "/c/rr") for _ in range(2)]
    await subscribed(app, "rr", 2)
    for number in range(10):
        await call(app, "POST", "/", {"queue": "rr", "value": "foobar%d" % number})
    await wait_until(lambda: sum(len(s.lines()) for s in streams) == 10)
    counts = sorted(len(s.lines()) for s in streams)
    assert counts == [5, 5]
    keys = sorted(message["key"] for s in streams for message in s.lines())
    assert keys == sorted("rr:%d" % n for n in range(1, 11))
    for stream in streams:
        stream.close()


@pytest_twisted.ensureDeferred
async def test_broadcast_comet_consumers_each_get_everything(app):
    # README.rst "Queue Policy": broadcast forwards each message to all comet consumers
    streams = [await Stream.open(app.port, "/c/bc") for _ in range(3)]
    await subscribed(app, "bc", 3)
    for number in range(4):
        await publish(app, "bc", str(number))
    await wait_until(lambda: all(len(s.lines()) == 4 for s in streams))
    assert [[m["value"] for m in s.lines()] for s in streams] == [["0", "1", "2", "3"]] * 3
    for stream in streams:
        stream.close()


@pytest_twisted.ensureDeferred
async def test_comet_jsonp_lines(app):
    # web.py CometQueueHandler + CustomHandler: "cb({...});\r\n" per message
    stream = await Stream.open(app.port, "/c/cj?callback=onMessage")
    await subscribed(app, "cj", 1)
    await publish(app, "cj", "v")
    await wait_until(lambda: stream.body.endswith(CRLF))
    assert jsonp(stream.body, "onMessage") == {"key": "cj:1", "value": "v"}
    stream.close()


@pytest_twisted.ensureDeferred
async def test_system_monitor_and_mapreduce_comet_clients(app):
    # contrib/system-monitor/qconsumer.py splits what it reads on "\r\n" and json-loads
    # each line; examples/mapreduce/reduce.py splits on "\n" (a "\r" stays, json ignores it)
    stream = await Stream.open(app.port, "/c/reducer")
    await subscribed(app, "reducer", 1)
    for name, count in (("a.txt", 3), ("b.txt", 4)):
        await call(app, "POST", "/", {"queue": "reducer",
                                      "value": json.dumps({"filename": name, "count": count})})
    await wait_until(lambda: stream.body.count(CRLF) == 2)
    by_crlf = [json.loads(text) for text in stream.body.decode().split("\r\n") if text]
    by_lf = [json.loads(text) for text in stream.body.decode().split("\n") if len(text) >= 2]
    assert by_crlf == by_lf
    assert sum(json.loads(item["value"])["count"] for item in by_lf) == 7
    stream.close()


# /control/<q> (README.RestMQ: "start/stop consumers (as in pausing them)")

@pytest_twisted.ensureDeferred
async def test_control_get_nests_the_status(app):
    # web.py QueueControlHandler.get: {"redis", "queue", "status": queue_status(q)} + CRLF
    await publish(app, "ctl", "v")
    status, kind, body = await call(app, "GET", "/control/ctl")
    assert (status, kind) == (200, JSON)
    answer = line(body)
    assert isinstance(answer.pop("redis"), str)
    assert answer == {"queue": "ctl", "status": {"queue": "ctl", "status": 1}}


@pytest_twisted.ensureDeferred
async def test_control_post_answers_under_stat(app, redis):
    # web.py QueueControlHandler.post: {"stat": queue_changestatus(...)} + CRLF
    status, kind, body = await call(app, "POST", "/control/ctl", {"status": "stop"})
    assert (status, kind, line(body)) == (200, TEXT, {"stat": {"queue": "ctl", "status": 0}})
    assert await redis.get("queuestat::ctl") == "0"
    assert line((await call(app, "GET", "/control/ctl"))[2])["status"] == {"queue": "ctl", "status": 0}
    assert line((await call(app, "POST", "/control/ctl", {"status": "start"}))[2]) == {
        "stat": {"queue": "ctl", "status": 1}}
    # any other word: 200 and "invalid status: <word>"
    assert line((await call(app, "POST", "/control/ctl", {"status": "pause"}))[2]) == {
        "stat": "invalid status: pause"}
    assert line((await call(app, "POST", "/control/ctl", {}))[2]) == {"stat": "invalid status: None"}
    assert await redis.get("queuestat::ctl") == "1"
    assert (await call(app, "POST", "/control/ctl", {"status": "pause"}, {"Accept": JSON}))[0] == 400


@pytest_twisted.ensureDeferred
async def test_dashboard_control_buttons_post_with_callback_question_mark(app):
    # static/index.html: $.post(".../control/" + q + "?callback=?", {status: "stop"}):
    # jQuery leaves the "?" (not JSONP for $.post) and reads the answer as text
    status, kind, body = await call(app, "POST", "/control/dash?callback=?", {"status": "stop"},
                                    {"Accept": "*/*", "X-Requested-With": "XMLHttpRequest"})
    assert (status, kind) == (200, TEXT)  # never script
    assert jsonp(body, "?") == {"stat": {"queue": "dash", "status": 0}}
    assert jsonp((await call(app, "POST", "/control/dash?callback=?", {"status": "start"}))[2], "?") == {
        "stat": {"queue": "dash", "status": 1}}


@pytest_twisted.ensureDeferred
async def test_stopped_queue_holds_comet_delivery_until_started(app):
    # web.py CometDispatcher.dispatch: nothing while queue_status != STARTQUEUE
    await call(app, "POST", "/control/hold", {"status": "stop"})
    stream = await Stream.open(app.port, "/c/hold")
    await subscribed(app, "hold", 1)
    await publish(app, "hold", "later")
    await sleep(app.config.dispatch.sweep_interval * 1.5)
    assert stream.body == b""
    await call(app, "POST", "/control/hold", {"status": "start"})
    await wait_until(lambda: stream.lines() == [{"key": "hold:1", "value": "later"}])
    stream.close()


@pytest_twisted.ensureDeferred
async def test_control_of_every_queue(app):
    # CHANGED: web.py iterated the dict {"queues": ...} itself and reported a queue named
    # "queues"; this is the answer it meant, every queue's status
    await publish(app, "one", "v")
    await publish(app, "two", "v")
    await call(app, "POST", "/control/two", {"status": "stop"})
    status, kind, body = await call(app, "GET", "/control/")
    answer = line(body)
    assert (status, kind, answer["count"]) == (200, JSON, 2)
    assert answer["queues"] == {"one": {"queue": "one", "status": 1}, "two": {"queue": "two", "status": 0}}


# /stats (README.RestMQ: "misc statuses and queue list"; static/index.html reads it)

@pytest_twisted.ensureDeferred
async def test_stats_of_one_queue(app):
    # web.py StatusHandler: {"redis", "queue", "len"}, application/json, no CRLF
    await publish(app, "st", "a")
    await publish(app, "st", "b")
    status, kind, body = await call(app, "GET", "/stats/st")
    answer = json.loads(body)
    assert (status, kind, isinstance(answer.pop("redis"), str)) == (200, JSON, True)
    assert answer == {"queue": "st", "len": 2} and not body.endswith(CRLF)
    assert jsonp((await call(app, "GET", "/stats/st?callback=f"))[2], "f", b";")["len"] == 2


@pytest_twisted.ensureDeferred
async def test_stats_of_every_queue_with_the_original_status_and_policy(app):
    # web.py StatusHandler: per queue name, len, status (the stored 1), policy (the
    # stored number, "" when none is stored)
    await publish(app, "plain", "v")
    await publish(app, "rrq", "v")
    await call(app, "POST", "/p/rrq", {"policy": "roundrobin"})
    await call(app, "POST", "/control/rrq", {"status": "stop"})
    status, kind, body = await call(app, "GET", "/stats/")
    answer = json.loads(body)
    assert (status, kind) == (200, JSON)
    assert isinstance(answer["redis"], str) and answer["count"] == 2
    assert answer["queues"]["plain"] == {"name": "plain", "len": 1, "status": 1, "policy": ""}
    # CHANGED: a stopped queue showed "" (the stored 0 read as false); 0 here
    assert answer["queues"]["rrq"] == {"name": "rrq", "len": 1, "status": 0, "policy": 2}


@pytest_twisted.ensureDeferred
async def test_dashboard_stats_jsonp_as_jquery_sends_it(app):
    # static/index.html: $.getJSON('.../stats/?callback=?') -> jQuery names the callback
    # CHANGED: the original wrote the Python repr of the dict inside it (not JavaScript)
    await publish(app, "shown", "v")
    headers = {"Accept": "text/javascript, application/javascript, application/ecmascript, "
                         "application/x-ecmascript, */*; q=0.01"}
    status, kind, body = await call(app, "GET", "/stats/?callback=jQuery171_1700000000&_=1700000000",
                                    headers=headers)
    data = jsonp(body, "jQuery171_1700000000", b";")
    assert (status, kind) == (200, JS)
    assert data["count"] == 1 and isinstance(data["redis"], str)
    queue = data["queues"]["shown"]
    assert (queue["name"], queue["len"], queue["status"], queue["policy"]) == ("shown", 1, 1, "")


@pytest_twisted.ensureDeferred
async def test_jquery_getjson_accept_gets_the_original_answer(app):
    # $.getJSON sends "application/json, text/javascript, */*; q=0.01": an old client
    await publish(app, "jq", "v")
    headers = {"Accept": "application/json, text/javascript, */*; q=0.01"}
    body = (await call(app, "GET", "/control/jq", headers=headers))[2]
    assert line(body)["status"] == {"queue": "jq", "status": 1}
    # Accept: application/json alone (restmq.client, the dashboard) is this broker's API
    assert json.loads((await call(app, "GET", "/control/jq", headers={"Accept": JSON}))[2]) == {
        "queue": "jq", "status": "started"}


# the browser pages: /q/ (list_queues.html), /j/<q> (jobs.html), /queue (help form)

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@pytest_twisted.ensureDeferred
async def test_queue_list_page_for_browsers(app):
    # web.py RestQueueHandler.get(""): render("list_queues.html", allqueues=...)
    await publish(app, "<b>tag</b>", "v")
    await publish(app, "jobs", "v")
    status, kind, body = await call(app, "GET", "/q/", headers=BROWSER)
    assert (status, kind) == (200, "text/html; charset=utf-8")
    assert b"&lt;b&gt;tag&lt;/b&gt;" in body and b"<b>tag</b>" not in body
    assert b'href="../j/jobs"' in body
    # CHANGED: everyone else gets JSON (the original rendered HTML for every client)
    status, kind, body = await call(app, "GET", "/q/", headers={"Accept": "*/*"})
    assert (status, kind, json.loads(body)) == (200, JSON, {"queues": ["<b>tag</b>", "jobs"]})


@pytest_twisted.ensureDeferred
async def test_job_page_for_browsers(app):
    # README.RestMQ: "/j/queuename - basic job checking ... Point your browser here"
    for value in ("first", "<script>x</script>"):
        await publish(app, "jobq", value)
    status, kind, body = await call(app, "GET", "/j/jobq", headers=BROWSER)
    assert (status, kind) == (200, "text/html; charset=utf-8")
    assert b"jobq" in body and b"waiting messages: 2" in body
    assert b"&lt;script&gt;x&lt;/script&gt;" in body and b"<script>" not in body
    status, kind, body = await call(app, "GET", "/j/jobq")
    assert (status, kind, json.loads(body)["len"]) == (200, JSON, 2)


@pytest_twisted.ensureDeferred
async def test_protocol_form_for_browsers_posts_commands(app):
    # README.Protocol: "Try /queue from a web browser and you'll get a simple form"
    status, kind, body = await call(app, "GET", "/queue", headers=BROWSER)
    assert (status, kind) == (200, "text/html; charset=utf-8")
    assert b'<form method="POST" action="queue">' in body and b'name="body"' in body
    # what the form sends: the body field, from a page of the broker's own origin
    status, _, answer = await call(app, "POST", "/queue", {"body": '{"cmd":"add","queue":"f","value":"v"}'},
                                   {"Origin": app.url})
    assert (status, json.loads(answer)["key"]) == (200, "f:1")


# README.websocket, contrib/interact.html: /ws/<q>

@pytest_twisted.ensureDeferred
async def test_websocket_gets_messages_and_echoes(app):
    # README.websocket: "it will echo back any message sent to it, and will provide the
    # latest messages"; curl -X POST -d "queue=test&value=foobar" /q/test
    ws = await WsClient.open(app.port, "/ws/test")
    assert ws.accepted
    await subscribed(app, "test", 1)
    await call(app, "POST", "/q/test", {"queue": "test", "value": "foobar"})
    await wait_until(lambda: ws.messages() == [{"key": "test:1", "value": "foobar"}])
    ws.send_text('"hello from the browser"')  # interact.html: ws.send(val)
    await wait_until(lambda: ws.messages()[-1:] == ["hello from the browser"])
    ws.close()


@pytest_twisted.ensureDeferred
async def test_websocket_auth_cookie_under_the_acl(redis, redis_server, tmp_path):
    # web.py ACL.check_password(websocket=True): cookie auth=user:password
    (tmp_path / "acl.conf").write_text("[websocket:consumer]\nusername = lerr\npassword = s3cret\n")
    running = await start_app(redis_server.target, acl=load_acl(str(tmp_path / "acl.conf")))
    try:
        bad = await WsClient.open(running.port, "/ws/w", headers=[(b"Cookie", b"auth=lerr:wrong")])
        assert bad.rejected == 401
        good = await WsClient.open(running.port, "/ws/w", headers=[(b"Cookie", b"auth=lerr:s3cret")])
        assert good.accepted
        good.close()
    finally:
        await stop_app(running)


# the ACL (acl.conf of the original)

@pytest_twisted.ensureDeferred
async def test_acl_statuses(redis, redis_server, tmp_path):
    (tmp_path / "acl.conf").write_text(
        "[rest:producer]\nhosts_allow = 127.0.0.\nusername = lero\npassword = lero\n"
        "[rest:consumer]\nhosts_deny = 127.0.0.\n"
        "[comet:consumer]\nhosts_allow = 10.0.0.1\n")
    running = await start_app(redis_server.target, acl=load_acl(str(tmp_path / "acl.conf")))
    try:
        # a refused address: InvalidAddress -> HTTPError(401)
        for path in ("/q/a", "/stats/", "/p/a", "/control/a"):
            assert (await call(running, "GET", path))[0] == 401, path
        assert (await call(running, "GET", "/c/a"))[0] == 401
        # CHANGED: /j/ had no ACL at all; it is a consumer route
        assert (await call(running, "GET", "/j/a"))[0] == 401
        # a JSON client gets 403, the status for a refused address
        assert (await call(running, "GET", "/q/a", headers={"Accept": JSON}))[0] == 403
        # a missing or wrong password: HTTPAuthenticationRequired("Basic", "RestMQ Restricted Access")
        response = await treq.post(running.url + "/q/a", data={"value": "v"}, pool=running.http_pool)
        assert response.code == 401
        realm = response.headers.getRawHeaders("WWW-Authenticate")
        assert realm == ['Basic realm="RestMQ Restricted Access"']
        auth = {"Authorization": "Basic " + base64.b64encode(b"lero:lero").decode()}
        assert (await call(running, "POST", "/q/a", {"value": "v"}, auth))[2] == b"a:1\r\n"
    finally:
        await stop_app(running)


# README.RestMQ / README.rst: the Redis layout, shared with other brokers

@pytest_twisted.ensureDeferred
async def test_redis_layout_is_the_original_one(app, redis):
    # README.RestMQ "queue_add": INCR QUEUE:UUID, SET QUEUE:UUID-key, SADD QUEUESET, LPUSH
    await publish(app, "lay", "first")
    assert await redis.smembers("QUEUESET") == {"lay"}
    assert await redis.get("lay:UUID") == "1"
    assert await redis.get("lay:1") == "first"
    assert await redis.lrange("lay:queue", 0, -1) == ["lay:1"]
    assert await redis.get("queuestat::lay") == "1"  # core.queue_add on a new queue


@pytest_twisted.ensureDeferred
async def test_messages_of_another_broker_are_served(app, redis):
    # an original broker's queue_add, done by hand: RestMQ serves it and counts on from it
    await redis.incr("other:UUID")
    await redis.set("other:1", "from an old broker")
    await redis.lpush("other:queue", "other:1")
    await redis.sadd("QUEUESET", "other")
    assert line((await call(app, "GET", "/q/other"))[2]) == {
        "key": "other:1", "value": "from an old broker", "count": 0}
    assert await publish(app, "other", "next") == "other:2"


# queue names: web.py routes /q/(.*), cyclone unquoted them

@pytest_twisted.ensureDeferred
async def test_queue_names_the_original_took(app, redis):
    cases = [("/q/with%20space", "with space"), ("/q/a+b", "a b"), ("/q/caf%C3%A9", "café"),
             ("/q/slash/in/it", "slash/in/it"), ("/q/x%2Fack", "x/ack"), ("/q/semi:colon", "semi:colon")]
    for path, name in cases:
        status, _, body = await call(app, "POST", path, {"value": name})
        assert (status, body) == (200, name.encode() + b":1\r\n"), path
        assert await redis.get(name + ":1") == name
    # the same queue by its escaped and by its raw UTF-8 path (curl sends it raw)
    request = "GET /q/café HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    raw = await raw_exchange(app.port, request)
    assert raw.split(b"\r\n\r\n", 1)[1] == '{"key":"café:1","value":"café","count":0}\r\n'.encode()
    status, _, body = await call(app, "GET", "/stats/slash/in/it")
    assert json.loads(body)["queue"] == "slash/in/it"
    # CHANGED: a queue named "" (/c/, /p/, POST /q/) is refused; the original stored ":1"
    assert (await call(app, "POST", "/q/", {"value": "v"}))[0] == 405
    assert (await call(app, "GET", "/p/"))[0] == 404
    # CHANGED: '#' joins a queue to its consumer group in Redis keys
    assert (await call(app, "POST", "/q/a%23b", {"value": "v"}))[0] == 400


# README.collectd and collectd.py: the collectd plugin's endpoints

README_PUTVAL = (b"PUTVAL collectd_restmq_server/df/df-boot interval=10 "
                 b"1288548767:116497408.000000:391246848.000000\r\n")
README_EVENT = (b"Severity: WARNING\nTime: 1288548727\nHost: collectd_restmq_server\nPlugin: df\nType: df\n"
                b"TypeInstance: boot\nDataSource: used\nCurrentValue: 1.164974e+08\nWarningMin: nan\n"
                b"WarningMax: 1.000000e+01\nFailureMin: nan\nFailureMax: nan\n\n"
                b'Host collectd_restmq_server, plugin df type df (instance boot): Data source "used" is '
                b"currently 116497408.000000. That is above the warning threshold of 10.000000%.")


@pytest_twisted.ensureDeferred
async def test_readme_collectd_data_is_stored_in_the_original_shape(app):
    # README.collectd: write_http Format Command -> "Example JSON inserted in the RestMQ"
    status, kind, body = await call(app, "POST", "/collectd/data", README_PUTVAL,
                                    {"Content-Type": "text/plain"})
    assert (status, kind, body) == (200, TEXT, b"collectd_data:1\r\n")
    [message] = await app.store.take("collectd_data", 10)
    assert json.loads(message.value) == [{
        "host": "collectd_restmq_server", "type_instance": "df-boot", "plugin_instance": "df",
        "value": "1288548767:116497408.000000:391246848.000000", "interval": "10"}]
    # examples/test_collectd.py reads it from the comet stream: data.get('value')


@pytest_twisted.ensureDeferred
async def test_collectd_json_data_is_stored_as_posted(app):
    # collectd.py: Content-Type application/json -> the body itself
    body = json.dumps([{"values": [1, 2], "dstypes": ["gauge", "gauge"], "dsnames": ["a", "b"], "time": 1.5,
                        "interval": 10, "host": "h", "plugin": "p", "plugin_instance": "",
                        "type": "t", "type_instance": ""}]).encode()
    status, _, answer = await call(app, "POST", "/collectd/data", body, {"Content-Type": "application/json"})
    assert (status, answer) == (200, b"collectd_data:1\r\n")
    [message] = await app.store.take("collectd_data", 10)
    assert message.value.encode() == body


@pytest_twisted.ensureDeferred
async def test_readme_collectd_event_is_stored_in_the_original_shape(app):
    # README.collectd: event.sh pipes NotificationExec's text: curl -X POST -d "$EVENT"
    status, _, body = await call(app, "POST", "/collectd/event", README_EVENT,
                                 {"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, body) == (200, b"collectd_event:1\r\n")
    [message] = await app.store.take("collectd_event", 10)
    assert json.loads(message.value) == [
        {"severity": "WARNING"}, {"time": "1288548727"}, {"host": "collectd_restmq_server"}, {"plugin": "df"},
        {"type": "df"}, {"typeinstance": "boot"}, {"datasource": "used"}, {"currentvalue": "1.164974e+08"},
        {"warningmin": "nan"}, {"warningmax": "1.000000e+01"}, {"failuremin": "nan"}, {"failuremax": "nan"},
        {"event_text": 'Host collectd_restmq_server, plugin df type df (instance boot): '
                       'Data source "used" is currently 116497408.000000. '
                       "That is above the warning threshold of 10.000000%."}]


@pytest_twisted.ensureDeferred
async def test_collectd_other_endpoints(app):
    # collectd.py: any other /collectd/<name> -> HTTPError(400)
    assert (await call(app, "POST", "/collectd/metrics", b"x", {"Content-Type": "text/plain"}))[0] == 400
    # CHANGED: GET /collectd/<q> popped the queue <q> (inherited from RestQueueHandler)
    assert (await call(app, "GET", "/collectd/data"))[0] == 405


@pytest_twisted.ensureDeferred
async def test_collectd_parsed_format_on_request(app):
    # the parsed form, one message per value list, is an option (?format= or [collectd] format)
    status, _, body = await call(app, "POST", "/collectd/data?format=parsed", README_PUTVAL,
                                 {"Content-Type": "text/plain"})
    assert (status, json.loads(body)) == (200, {"queue": "collectd_data", "keys": ["collectd_data:1"]})
    [message] = await app.store.take("collectd_data", 10)
    assert json.loads(message.value)["values"] == [116497408.0, 391246848.0]


# the three twistd plugins (QUICKSTART: "run restmq_server (or collectd or syslogd)")

def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)


def _urlopen(url: str, data=None, headers=None) -> bytes:
    request = urllib.request.Request(url, data, headers or {})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.read()


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_start_script_flags_of_twistd_restmq(redis, redis_server):
    # start_scripts/restmq_server: twistd restmq --redis-host --redis-port --redis-pool --port --listen
    port = free_port()
    proc = spawn_twistd("--redis-host", "127.0.0.1", "--redis-port", str(redis_server.port),
                        "--redis-pool", "10", "--port", str(port), "--listen", "127.0.0.1", plugin="restmq")
    try:
        await deferToThread(wait_listening, port, proc)
        key = await deferToThread(_urlopen, "http://127.0.0.1:%d/q/script" % port, b"value=v")
        assert key == b"script:1\r\n"
        stats = json.loads(await deferToThread(_urlopen, "http://127.0.0.1:%d/stats/" % port))
        assert stats["queues"]["script"] == {"name": "script", "len": 1, "status": 1, "policy": ""}
    finally:
        await deferToThread(_stop, proc)


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_twistd_collectd_plugin(redis, redis_server):
    # twisted/plugins/collectd_plugin.py: tapname "collectd", the broker plus /collectd/
    port = free_port()
    proc = spawn_twistd("--port", str(port), "--redis", "redis://127.0.0.1:%d/0" % redis_server.port,
                        plugin="collectd")
    try:
        await deferToThread(wait_listening, port, proc)
        answer = await deferToThread(_urlopen, "http://127.0.0.1:%d/collectd/data" % port, README_PUTVAL,
                                     {"Content-Type": "text/plain"})
        assert answer == b"collectd_data:1\r\n"
        popped = await deferToThread(_urlopen, "http://127.0.0.1:%d/q/collectd_data" % port)
        assert json.loads(json.loads(popped)["value"])[0]["type_instance"] == "df-boot"
    finally:
        await deferToThread(_stop, proc)


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_twistd_syslogd_plugin(store, redis_server):
    # twisted/plugins/syslogd_plugin.py + syslogd.py: tapname "syslogd", TCP lines into
    # syslogd:<ip> as {"line", "host", "tstamp", "facility", "severity"}
    port = free_port()
    proc = spawn_twistd("--port", str(port), "--redis-host", "127.0.0.1", "--redis-port",
                        str(redis_server.port), plugin="syslogd")
    try:
        await deferToThread(wait_listening, port, proc)
        sender = socket.create_connection(("127.0.0.1", port))
        # the line in syslogd.py's own comment, then one without a priority
        sender.sendall(b"<22>Nov  1 00:12:04 gleicon-vm1 postfix/smtpd[4880]: "
                       b"connect from localhost[127.0.0.1]\n"
                       b"no priority here\n")
        sender.close()
        messages = []
        deadline = time.monotonic() + 20
        while len(messages) < 2 and time.monotonic() < deadline:
            messages += [json.loads(m.value) for m in await store.take("syslogd:127.0.0.1", 10)]
            await sleep(0.05)
        first, second = messages
        assert first["line"] == ("<22>Nov  1 00:12:04 gleicon-vm1 postfix/smtpd[4880]: "
                                 "connect from localhost[127.0.0.1]")
        assert (first["host"], first["facility"], first["severity"]) == ("127.0.0.1", "mail", "info")
        assert abs(first["tstamp"] - time.time()) < 60
        assert (second["line"], second["facility"], second["severity"]) == ("no priority here", None, None)
    finally:
        await deferToThread(_stop, proc)


@pytest.mark.parametrize("plugin", ["restmq", "collectd", "syslogd"])
def test_the_original_plugin_names_are_found(plugin):
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins
    assert plugin in {maker.tapname for maker in getPlugins(IServiceMaker)}


def test_popped_ttl_is_a_setting(tmp_path):
    from restmq.config import load_config
    path = tmp_path / "restmq.conf"
    path.write_text("[delivery]\npopped_ttl = 0\n[collectd]\nformat = parsed\n")
    config = load_config(str(path))
    assert config.delivery.popped_ttl == 0 and config.collectd.format == "parsed"


@pytest_twisted.ensureDeferred
async def test_popped_ttl_zero_deletes_the_body_at_once(redis, redis_server):
    running = await start_app(redis_server.target, test_config(delivery={"popped_ttl": 0.0}))
    try:
        await publish(running, "now", "v")
        assert line((await call(running, "GET", "/q/now"))[2])["value"] == "v"
        assert await redis.exists("now:1") == 0
    finally:
        await stop_app(running)


# where the original was plainly broken (README, "Differences from the original RestMQ")

@pytest_twisted.ensureDeferred
async def test_numeric_bodies_stay_text(app):
    # CHANGED: the original's Redis client turned "007" into the number 7
    await publish(app, "num", "007")
    assert line((await call(app, "GET", "/q/num"))[2])["value"] == "007"


@pytest_twisted.ensureDeferred
async def test_a_queue_without_a_stored_status_is_started(app, redis):
    # CHANGED: the original answered null for it and never streamed it
    await redis.set("foreign:1", "v")
    await redis.lpush("foreign:queue", "foreign:1")
    answer = line((await call(app, "GET", "/control/foreign"))[2])
    assert answer["status"] == {"queue": "foreign", "status": 1}
    stream = await Stream.open(app.port, "/c/foreign")
    await wait_until(lambda: stream.lines() == [{"key": "foreign:1", "value": "v"}])
    stream.close()


def test_collectd_original_shapes_without_the_original_losses():
    from restmq.ingest.collectd import original_data, original_events
    # CHANGED: every time:values group is kept (the original kept the first), quotes go
    data = json.loads(original_data(b'PUTVAL "web 1/cpu-0/cpu-idle" interval=10 1:1 2:2', "text/plain", 0.0))
    assert data == [{"host": "web 1", "plugin_instance": "cpu-0", "type_instance": "cpu-idle",
                     "interval": "10", "value": "1:1"},
                    {"host": "web 1", "plugin_instance": "cpu-0", "type_instance": "cpu-idle",
                     "interval": "10", "value": "2:2"}]
    # CHANGED: whole header values, PluginInstance, a message of several lines
    text = b"Severity: FAILURE\nHost: my host\nPluginInstance: sda\n\nline one\nline two\n"
    [event] = original_events(text, 0.0)
    assert json.loads(event) == [{"severity": "FAILURE"}, {"host": "my host"}, {"plugininstance": "sda"},
                                 {"event_text": "line one\nline two"}]
    # a notification the original did not know (PUTNOTIF) comes in the same shape
    [event] = original_events(b"PUTNOTIF severity=warning time=1700000000 host=h message=disk full", 0.0)
    assert json.loads(event) == [{"severity": "WARNING"}, {"time": "1700000000"}, {"host": "h"},
                                 {"event_text": "disk full"}]


@pytest_twisted.ensureDeferred
async def test_collectd_unknown_content_type_is_read_by_the_body(app):
    # CHANGED: the original answered 503 to a Content-Type it did not expect
    status, _, body = await call(app, "POST", "/collectd/data", README_PUTVAL,
                                 {"Content-Type": "application/octet-stream"})
    assert (status, body) == (200, b"collectd_data:1\r\n")
    status, _, _ = await call(app, "POST", "/collectd/data", b"PUTVAL nonsense",
                              {"Content-Type": "text/plain"})
    assert status == 400


@pytest_twisted.ensureDeferred
async def test_websocket_echo_is_bounded(redis, redis_server):
    # CHANGED: the original echoed whatever came; a message over max_message_bytes closes it
    running = await start_app(redis_server.target, test_config(server={"max_message_bytes": 1024}))
    try:
        ws = await WsClient.open(running.port, "/ws/big")
        ws.send_text("x" * 100)
        await wait_until(lambda: ws.poll() or "x" * 100 in ws.received)
        ws.send_text("y" * 2000)
        await wait_until(lambda: ws.poll() or ws.closed_by_server or ws.client.closed.called)
    finally:
        await stop_app(running)
