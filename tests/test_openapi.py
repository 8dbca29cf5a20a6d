"""restmq/static/openapi.json: it documents every route, and schemathesis finds the
live server (real Redis) true to it: no 5xx but a deliberate 503, no response the
document does not allow, no hang."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import List, Tuple

import cyclone.web
import pytest
import pytest_twisted
from twisted.internet import task
from twisted.internet.threads import deferToThread

from restmq.acl import Acl
from restmq.config import Config
from restmq.web.app import routes
from restmq.web.base import Context, NotFoundHandler
from restmq.web.ops import static_file
from tests.helpers import start_app, stop_app, test_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENT = json.loads(static_file("openapi.json"))
METHODS = ("get", "post", "delete", "put", "patch", "head", "options")
# a sample value for each path template variable
SAMPLES = {"queue": "probe", "file": "dashboard.js", "group": "probe", "reply_to": "0" * 32}


def operations() -> List[Tuple[str, str, dict]]:
    return [(path, method, item[method]) for path, item in DOCUMENT["paths"].items()
            for method in METHODS if method in item]


def route_table() -> list:
    context = Context(store=None, dispatcher=None, acl=Acl(), config=Config(), clock=task.Clock())
    return routes(context)


def handler_for(path: str) -> type:
    """The handler class that would serve ``path`` (the first route that matches)."""
    concrete = re.sub(r"\{(\w+)\}", lambda m: SAMPLES[m.group(1)], path)
    for pattern, handler, _ in route_table():
        if re.match(pattern + "$", concrete):
            return handler
    raise AssertionError("no route matches %s" % concrete)


def serves(handler: type, method: str) -> bool:
    return handler is not NotFoundHandler and \
        getattr(handler, method, None) is not getattr(cyclone.web.RequestHandler, method, None)


def test_every_route_is_documented():
    documented = {path.rstrip("/") or "/" for path in DOCUMENT["paths"]}
    templates = {re.sub(r"\{(\w+)\}", lambda m: SAMPLES[m.group(1)], path) for path in documented}
    for pattern, handler, _ in route_table():
        if handler is NotFoundHandler:
            continue
        assert any(re.match(pattern + "$", path) or re.match(pattern + "$", path + "/")
                   for path in templates), "route %s is not in openapi.json" % pattern


def test_every_served_method_is_documented():
    for path, item in DOCUMENT["paths"].items():
        handler = handler_for(path)
        for method in ("get", "post", "delete"):
            if serves(handler, method):
                assert method in item, "%s %s is served but not documented" % (method.upper(), path)


def test_every_documented_operation_is_served():
    for path, method, _ in operations():
        label = "%s %s" % (method.upper(), path)
        assert serves(handler_for(path), method), "%s is documented but not served" % label


def test_every_operation_has_an_id_an_acl_category_and_error_responses():
    ids = [operation["operationId"] for _, _, operation in operations()]
    assert len(ids) == len(set(ids))
    for path, method, operation in operations():
        assert operation.get("x-restmq-acl"), "%s %s" % (method, path)
        assert {"401", "403"} <= set(operation["responses"]), "%s %s" % (method, path)


@pytest_twisted.ensureDeferred
async def test_protocol_ttl_beyond_redis_is_refused_not_a_500(app):
    # found by the contract test: Redis refused the expiry and the broker answered 500
    response = await app.post("/queue", data={"body": json.dumps(
        {"cmd": "add", "queue": "q", "value": "v", "ttl": 2 ** 63 - 1})})
    assert response.code == 400
    assert json.loads(await response.text())["error"]["code"] == "bad_request"


@pytest_twisted.ensureDeferred
async def test_settings_out_of_range_are_refused_not_500s(app, redis):
    # found by the contract test: each of these made /settings (or every later publish) answer 500
    for field, value in (("lease_seconds", "0.00001"), ("ttl", str(10 ** 17)), ("maxlen", str(10 ** 30)),
                         ("max_receives", str(2 ** 64)), ("history_size", str(2 ** 53))):
        response = await app.post("/settings/s", data={field: value})
        assert response.code == 400, field
    assert (await app.post("/q/s", data={"value": "v"})).code == 200
    # a value some older broker stored with an exponent still reads back
    await redis.hset("s:settings", "lease_seconds", "1e-05")
    settings = json.loads(await (await app.get("/settings/s")).text())["settings"]
    assert settings["lease_seconds"] == 1e-05


@pytest_twisted.ensureDeferred
async def test_settings_take_json_numbers_as_json_means_them(app):
    # found by the contract test: 3.0 is the integer 3 in JSON
    response = await app.post("/settings/s", data=b'{"max_receives": 3.0, "lease_seconds": 2}',
                              headers={"Content-Type": "application/json"})
    assert response.code == 200
    settings = json.loads(await response.text())["settings"]
    assert settings["max_receives"] == 3 and settings["lease_seconds"] == 2.0


def _schemathesis(url: str, workdir: str) -> subprocess.CompletedProcess:
    command = [os.path.join(os.path.dirname(sys.executable), "schemathesis"),
               "--config-file", os.path.join(ROOT, "tests", "schemathesis.toml"),
               "run", url + "/openapi.json",
               "--max-examples", os.environ.get("RESTMQ_SCHEMATHESIS_EXAMPLES", "40"),
               "--seed", os.environ.get("RESTMQ_SCHEMATHESIS_SEED", "20260601"),
               # a request that takes this long is a hang (long-polls last 0.5 s here)
               "--request-timeout", "10", "--max-response-time", "10",
               "--generation-database", "none", "--workers", "1", "--no-color",
               "--exclude-by", "/x-restmq-streaming == true"]
    env = dict(os.environ, PYTHONPATH=ROOT, SCHEMATHESIS_HOOKS="tests.schemathesis_hooks")
    # its cache folder (.schemathesis/) goes to the test's own directory
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=540)


@pytest.mark.timeout(600)
@pytest_twisted.ensureDeferred
async def test_live_server_conforms_to_the_document(redis, redis_server, tmp_path):
    # short long-polls, so that the allowed `wait` never looks like a hang
    config = test_config(dispatch={"sweep_interval": 1.0, "max_wait": 0.5},
                         delivery={"max_rpc_timeout": 0.5})
    running = await start_app(redis_server.target, config)
    try:
        result = await deferToThread(_schemathesis, running.url, str(tmp_path))
    finally:
        await stop_app(running)
    assert result.returncode == 0, "schemathesis found problems:\n%s\n%s" % (
        result.stdout[-12000:], result.stderr[-3000:])
    # every operation but the streams was exercised
    counts = re.search(r"Operations:\s+(\d+) selected / (\d+) total", result.stdout)
    selected, total = map(int, counts.groups())
    streams = sum(1 for _, _, operation in operations() if operation.get("x-restmq-streaming"))
    assert selected == total - streams > 20
