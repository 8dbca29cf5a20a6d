"""restmq/static/openapi.json: it documents every route, and schemathesis finds the
live server (real Redis) true to it: no 5xx but a deliberate 503, no response the
document does not allow, no hang."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Dict, List, Tuple

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
SAMPLES = {"queue": "probe", "file": "dashboard.js"}


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


def unserved() -> Dict[str, str]:
    """operationId -> "METHOD path" of the documented operations this server lacks."""
    return {operation["operationId"]: "%s %s" % (method.upper(), path)
            for path, method, operation in operations() if not serves(handler_for(path), method)}


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


def test_only_pending_operations_are_unserved():
    """Operations not built yet (issue 4) are marked, the others all answer."""
    for operation_id, label in unserved().items():
        pending = [op for _, _, op in operations() if op["operationId"] == operation_id][0]
        assert pending.get("x-restmq-pending"), "%s is documented but not served" % label


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


def _schemathesis(url: str, excluded: List[str], workdir: str) -> subprocess.CompletedProcess:
    command = [os.path.join(os.path.dirname(sys.executable), "schemathesis"),
               "--config-file", os.path.join(ROOT, "tests", "schemathesis.toml"),
               "run", url + "/openapi.json",
               "--max-examples", os.environ.get("RESTMQ_SCHEMATHESIS_EXAMPLES", "40"),
               "--seed", os.environ.get("RESTMQ_SCHEMATHESIS_SEED", "20260601"),
               # a request that takes this long is a hang (long-polls last 0.5 s here)
               "--request-timeout", "10", "--max-response-time", "10",
               "--generation-database", "none", "--workers", "1", "--no-color",
               "--exclude-by", "/x-restmq-streaming == true"]
    for operation_id in excluded:
        command += ["--exclude-operation-id", operation_id]
    env = dict(os.environ, PYTHONPATH=ROOT, SCHEMATHESIS_HOOKS="tests.schemathesis_hooks")
    # its cache folder (.schemathesis/) goes to the test's own directory
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=540)


@pytest.mark.timeout(600)
@pytest_twisted.ensureDeferred
async def test_live_server_conforms_to_the_document(redis, redis_server, tmp_path):
    # short long-polls, so that the allowed `wait` never looks like a hang
    config = test_config(dispatch={"sweep_interval": 1.0, "max_wait": 0.5})
    running = await start_app(redis_server.target, config)
    try:
        result = await deferToThread(_schemathesis, running.url, sorted(unserved()), str(tmp_path))
    finally:
        await stop_app(running)
    assert result.returncode == 0, "schemathesis found problems:\n%s\n%s" % (
        result.stdout[-12000:], result.stderr[-3000:])
    assert "No issues found" in result.stdout
