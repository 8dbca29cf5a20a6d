"""ACL: pure rule checks, file parsing, and the matrix over HTTP."""

from __future__ import annotations

import base64
import json
import textwrap

import pytest
import pytest_twisted

from restmq.acl import Acl, Credentials, load_acl
from restmq.errors import ConfigError, Forbidden, Unauthorized
from tests.helpers import start_app, stop_app


def acl_from(tmp_path, text: str) -> Acl:
    path = tmp_path / "acl.conf"
    path.write_text(textwrap.dedent(text))
    return load_acl(str(path))


NOBODY = Credentials()


def test_missing_section_allows_everyone(tmp_path):
    acl = acl_from(tmp_path, "[rest:producer]\nhosts_allow = 10.0.0.1\n")
    acl.check("rest:consumer", "192.168.1.1", NOBODY)


def test_allow_list_matches_networks_not_prefixes(tmp_path):
    acl = acl_from(tmp_path, "[rest:producer]\nhosts_allow = 10.1.0.0/16 127.0.0.1\n")
    acl.check("rest:producer", "10.1.200.3", NOBODY)
    acl.check("rest:producer", "127.0.0.1", NOBODY)
    # a string prefix check would let 127.0.0.10 pass "127.0.0.1"
    with pytest.raises(Forbidden):
        acl.check("rest:producer", "127.0.0.10", NOBODY)
    with pytest.raises(Forbidden):
        acl.check("rest:producer", "10.2.0.1", NOBODY)


def test_original_prefix_notation_is_a_network(tmp_path):
    acl = acl_from(tmp_path, "[rest:consumer]\nhosts_deny = 192.168.0.\n")
    with pytest.raises(Forbidden):
        acl.check("rest:consumer", "192.168.0.77", NOBODY)
    acl.check("rest:consumer", "192.168.1.77", NOBODY)


def test_allow_with_deny_all(tmp_path):
    acl = acl_from(tmp_path, "[comet:consumer]\nhosts_allow = 127.0.0.1\nhosts_deny = all\n")
    acl.check("comet:consumer", "127.0.0.1", NOBODY)
    with pytest.raises(Forbidden):
        acl.check("comet:consumer", "10.0.0.1", NOBODY)


def test_allow_all_still_applies_the_deny_list(tmp_path):
    acl = acl_from(tmp_path, "[websocket:consumer]\nhosts_allow = all\nhosts_deny = 192.168.0.0/24\n")
    acl.check("websocket:consumer", "10.0.0.1", NOBODY)
    with pytest.raises(Forbidden):
        acl.check("websocket:consumer", "192.168.0.9", NOBODY)


def test_ipv6_and_mapped_addresses(tmp_path):
    acl = acl_from(tmp_path, "[rest:producer]\nhosts_allow = ::1 10.0.0.0/8\n")
    acl.check("rest:producer", "::1", NOBODY)
    acl.check("rest:producer", "::ffff:10.1.2.3", NOBODY)
    with pytest.raises(Forbidden):
        acl.check("rest:producer", "unix:", NOBODY)


def test_password_required(tmp_path):
    acl = acl_from(tmp_path, "[rest:producer]\nusername = alice\npassword = s3cret\n")
    acl.check("rest:producer", "1.2.3.4", Credentials("alice", "s3cret"))
    for wrong in (NOBODY, Credentials("alice", "nope"), Credentials("bob", "s3cret"),
                  Credentials("alice", "")):
        with pytest.raises(Unauthorized):
            acl.check("rest:producer", "1.2.3.4", wrong)


def test_token_is_accepted(tmp_path):
    acl = acl_from(tmp_path, "[websocket:consumer]\ntoken = t0ken\n")
    acl.check("websocket:consumer", "1.2.3.4", Credentials(token="t0ken"))
    with pytest.raises(Unauthorized):
        acl.check("websocket:consumer", "1.2.3.4", Credentials(token="other"))


@pytest.mark.parametrize("text", [
    "[rest:producer]\nhosts_allow = not-an-ip\n",
    "[nonsense]\nhosts_allow = all\n",
    "[rest:producer]\nusername = alone\n",
    "[rest:producer]\ncolour = blue\n",
    "not an ini file",
])
def test_bad_acl_file_names_the_problem(tmp_path, text):
    with pytest.raises(ConfigError) as caught:
        acl_from(tmp_path, text)
    assert "acl.conf" in caught.value.message


MATRIX_ACL = """
[rest:producer]
hosts_allow = 127.0.0.1
username = prod
password = p4ss

[rest:consumer]
hosts_deny = 127.0.0.0/8

[comet:consumer]
token = c0met

[websocket:consumer]
hosts_deny = all
"""


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()}


@pytest_twisted.ensureDeferred
async def test_acl_matrix_over_http(redis, redis_server, tmp_path):
    acl = acl_from(tmp_path, MATRIX_ACL)
    running = await start_app(redis_server.target, acl=acl)
    try:
        # producer: address allowed, password required
        denied = await running.post("/q/m", data={"value": "v"})
        assert denied.code == 401
        assert denied.headers.getRawHeaders("WWW-Authenticate") == ['Basic realm="RestMQ Restricted Access"']
        assert (await running.post("/q/m", data={"value": "v"}, headers=basic("prod", "wrong"))).code == 401
        # a request that brought a token is told so (RFC 6750): no password prompt in a browser
        for headers, path in (({"Authorization": "Bearer wrong"}, "/q/m"), ({}, "/q/m?token=wrong")):
            denied = await running.post(path, data={"value": "v"}, headers=headers)
            assert denied.code == 401
            assert denied.headers.getRawHeaders("WWW-Authenticate") == [
                'Bearer realm="RestMQ Restricted Access", error="invalid_token"']
        assert (await running.post("/q/m", data={"value": "v"}, headers=basic("prod", "p4ss"))).code == 200
        assert (await running.post("/p/m", data={"policy": "roundrobin"})).code == 401
        assert (await running.post("/", data={"queue": "m", "value": "v"})).code == 401
        add = {"body": '{"cmd":"add","queue":"m","value":"v"}'}
        assert (await running.post("/queue", data=add)).code == 401
        # purging and taking are consuming: 127.0.0.0/8 may not, whatever producer password it has
        assert (await running.delete("/q/m", headers=basic("prod", "p4ss"))).code == 403
        assert (await running.post("/queue", data={"body": '{"cmd":"take","queue":"m"}'},
                                   headers=basic("prod", "p4ss"))).code == 403
        # consumer: 127.0.0.0/8 is denied -> 403 on every consumer route, /j included
        for path in ("/q/m", "/q/", "/?queue=m", "/stats/", "/stats/m", "/p/m", "/control/m", "/j/m"):
            response = await running.get(path)
            assert response.code == 403, path
        # comet: token in the query or as a Bearer header
        assert (await running.get("/c/m", headers={"Accept": "text/event-stream"})).code == 401
        # websocket: everyone denied
        assert (await running.get("/ws/m")).code == 403
        # only the authenticated publish was stored
        length, _ = await running.store.jobs("m")
        assert length == 1
    finally:
        await stop_app(running)


@pytest_twisted.ensureDeferred
async def test_malformed_basic_header_is_401(redis, redis_server, tmp_path):
    acl = acl_from(tmp_path, "[rest:consumer]\nusername = a\npassword = b\n")
    running = await start_app(redis_server.target, acl=acl)
    try:
        response = await running.get("/q/x", headers={"Authorization": "Basic !!!notbase64"})
        assert response.code == 401
    finally:
        await stop_app(running)


# Every route and /queue command with the ACL categories it needs (all of them):
# (method, path, the /queue command or a query string, form, categories).
# Reading or removing messages is consuming; adding is producing; changing a
# queue's settings (which can make it drop messages) takes both.
P, C = ("rest:producer",), ("rest:consumer",)
COMET, WS, OPS = ("comet:consumer",), ("websocket:consumer",), ("ops",)
NONE: tuple = ()
PROTOCOL = "/queue"
ROUTE_CATEGORIES = [
    ("GET", "/", "?queue=t", None, C),
    ("POST", "/", "", {"queue": "t", "value": "v"}, P),
    ("GET", "/q/", "", None, C),
    ("GET", "/q/{queue}", "", None, C),
    ("POST", "/q/{queue}", "", {"value": "v"}, P),
    ("DELETE", "/q/{queue}", "", None, C),
    ("POST", "/q/{queue}/ack", "", {"receipt": "t:1:x"}, C),
    ("POST", "/q/{queue}/nack", "", {"receipt": "t:1:x"}, C),
    ("POST", "/q/{queue}/extend", "", {"receipt": "t:1:x"}, C),
    ("POST", "/q/{queue}/redrive", "", {"count": "1"}, P),
    ("GET", "/q/{queue}/dead", "", None, C),
    ("GET", "/q/{queue}/messages", "", None, C),
    ("GET", "/q/{queue}/consumers", "", None, C),
    ("GET", "/q/{queue}/groups", "", None, C),
    ("POST", "/q/{queue}/groups/{group}", "", {}, P),
    ("GET", "/q/{queue}/groups/{group}", "", None, C),
    ("DELETE", "/q/{queue}/groups/{group}", "", None, C),
    ("GET", "/take", "?queues=t,u", None, C),
    ("POST", "/rpc/{queue}", "?timeout=0.01", {"value": "v"}, P),
    ("POST", "/reply/{reply_to}", "", {"value": "v"}, P),
    ("GET", "/settings/{queue}", "", None, C),
    ("POST", "/settings/{queue}", "", {"maxlen": "5"}, P + C),
    ("GET", PROTOCOL, "", None, C),
    ("POST", PROTOCOL, "add", {"body": '{"cmd": "add", "queue": "t", "value": "v"}'}, P),
    ("POST", PROTOCOL, "get", {"body": '{"cmd": "get", "queue": "t"}'}, C),
    ("POST", PROTOCOL, "take", {"body": '{"cmd": "take", "queue": "t"}'}, C),
    ("POST", PROTOCOL, "del", {"body": '{"cmd": "del", "queue": "t", "key": "t:1"}'}, C),
    ("GET", "/c/{queue}", "", None, COMET),
    ("GET", "/sse/{queue}", "", None, COMET),
    ("GET", "/ws/{queue}", "", None, WS),
    ("GET", "/c/", "?queues=t,u", None, COMET),
    ("GET", "/sse/", "?queues=t,u", None, COMET),
    ("GET", "/ws/", "?queues=t,u", None, WS),
    ("GET", "/p/{queue}", "", None, C),
    ("POST", "/p/{queue}", "", {"policy": "roundrobin"}, P),
    ("GET", "/control/", "", None, C),
    ("GET", "/control/{queue}", "", None, C),
    ("POST", "/control/{queue}", "", {"status": "start"}, P),
    ("GET", "/stats/", "", None, C),
    ("GET", "/stats/{queue}", "", None, C),
    ("GET", "/j/{queue}", "", None, C),
    ("POST", "/collectd/data", "", {"x": "y"}, P),
    ("POST", "/collectd/event", "", {"x": "y"}, P),
    ("POST", "/collectd/{name}", "", {"x": "y"}, P),
    # redirects to the dashboard, and the dashboard's own files: they hold no data
    # (every number on the page comes from the routes above), so no credentials;
    # the files still need an address the ops section allows
    ("GET", "/static/index.html", "", None, NONE),
    ("GET", "/static/help.html", "", None, NONE),
    ("GET", "/health", "", None, OPS),
    ("GET", "/health/ready", "", None, OPS),
    ("GET", "/metrics", "", None, OPS),
    ("GET", "/openapi.json", "", None, OPS),
    ("GET", "/dashboard/", "", None, NONE),
    ("GET", "/dashboard/{file}", "", None, NONE),
    ("GET", "/dashboard/events", "", None, OPS),
]


def _concrete(path: str) -> str:
    return path.replace("{queue}", "t").replace("{file}", "dashboard.js").replace(
        "{group}", "g").replace("{reply_to}", "0123456789abcdef0123456789abcdef").replace(
        "{name}", "other")


def test_acl_table_covers_every_route_and_command():
    """The table above is the whole story: every served method of every route
    (and every /queue command) is in it, with the categories its handler checks."""
    import re

    import cyclone.web
    from twisted.internet import task

    from restmq.config import Config
    from restmq.web.app import routes
    from restmq.web.base import Context, NotFoundHandler
    from restmq.web.protocol import COMMAND_CATEGORIES, ProtocolHandler

    context = Context(store=None, dispatcher=None, acl=Acl(), config=Config(), clock=task.Clock())
    table = routes(context)

    def served(handler: type, method: str) -> bool:
        base = getattr(cyclone.web.RequestHandler, method.lower(), None)
        return handler is not NotFoundHandler and getattr(handler, method.lower(), None) is not base

    hit = set()
    for method, path, command, _, wanted in ROUTE_CATEGORIES:
        # the route the router picks: the first pattern that matches
        index, handler = next((i, route[1]) for i, route in enumerate(table)
                              if re.match(route[0] + "$", _concrete(path)))
        assert served(handler, method), "%s %s is in the table but not served" % (method, path)
        hit.add((index, method))
        if handler is ProtocolHandler and method == "POST":
            assert (COMMAND_CATEGORIES[command],) == wanted, command
        else:
            declared = handler.acl_categories.get(method, ())
            declared = (declared,) if isinstance(declared, str) else declared
            assert declared == wanted, (method, path)
    for index, (pattern, handler, _) in enumerate(table):
        for method in ("GET", "POST", "DELETE"):
            if served(handler, method):
                assert (index, method) in hit, "%s %s is served but has no row in ROUTE_CATEGORIES" % (
                    method, pattern)
    commands = {command for (_, path, command, _, _) in ROUTE_CATEGORIES if path == PROTOCOL and command}
    assert set(COMMAND_CATEGORIES) == commands


def test_openapi_names_the_same_acl_categories():
    from restmq.web.ops import static_file
    document = json.loads(static_file("openapi.json"))
    for method, path, command, _, categories in ROUTE_CATEGORIES:
        if path == PROTOCOL and method == "POST" or path not in document["paths"]:
            continue
        named = document["paths"][path][method.lower()]["x-restmq-acl"]
        if not categories:
            continue  # no credentials: the document says which address check, if any
        assert named.split() == list(categories), (method, path)
    commands = [(command, categories[0]) for _, path, command, _, categories in ROUTE_CATEGORIES
                if path == PROTOCOL and command]
    by_category: dict = {}
    for command, category in commands:
        by_category.setdefault(category, []).append(command)
    expected = "; ".join("%s: %s" % (", ".join(names), category) for category, names in by_category.items())
    assert document["paths"][PROTOCOL]["post"]["x-restmq-acl"] == expected


TABLE_ACL = """
[rest:producer]
token = tp

[rest:consumer]
username = cons
password = pw

[comet:consumer]
token = tc

[websocket:consumer]
token = tw

[ops]
token = to
"""
# how a request shows each category's credentials: a query token, or Basic (rest:consumer),
# so that one request can carry two categories' credentials
TOKENS = {"rest:producer": "tp", "comet:consumer": "tc", "websocket:consumer": "tw", "ops": "to"}


def _request(method: str, path: str, query: str, form, categories) -> bytes:
    tokens = [TOKENS[c] for c in categories if c in TOKENS]
    target = _concrete(path) + query
    if tokens:
        target += ("&" if "?" in target else "?") + "token=" + tokens[0]
    lines = ["%s %s HTTP/1.1" % (method, target), "Host: 127.0.0.1", "Connection: close"]
    if "rest:consumer" in categories:
        lines.append("Authorization: Basic " + base64.b64encode(b"cons:pw").decode())
    body = b""
    if form is not None:
        from urllib.parse import urlencode
        body = urlencode(form).encode()
        lines += ["Content-Type: application/x-www-form-urlencoded", "Content-Length: %d" % len(body)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest_twisted.ensureDeferred
async def test_acl_table_over_http(redis, redis_server, tmp_path):
    """Each route and command refuses every other category's credentials (401) and
    accepts its own; a route that needs two refuses either one alone."""
    from tests.helpers import raw_exchange
    acl = acl_from(tmp_path, TABLE_ACL)
    running = await start_app(redis_server.target, acl=acl)
    everything = ("rest:producer", "rest:consumer", "comet:consumer", "websocket:consumer", "ops")
    try:
        for method, path, command, form, categories in ROUTE_CATEGORIES:
            label = "%s %s %s" % (method, path, command)
            query = command if command.startswith("?") else ""
            # a route that asks for no credentials takes any
            attempts = [(other,) for other in everything if other not in categories] if categories else []
            if len(categories) > 1:
                attempts += [(one,) for one in categories]
            for wrong in attempts:
                raw = await raw_exchange(running.port, _request(method, path, query, form, wrong),
                                         stop_at=b"\r\n\r\n")
                assert raw.split(b" ")[1] == b"401", "%s with %s's credentials: %r" % (label, wrong, raw[:80])
            raw = await raw_exchange(running.port, _request(method, path, query, form, categories),
                                     stop_at=b"\r\n\r\n")
            status = int(raw.split(b" ")[1])
            # served with its own credentials: not refused, and not failed either (an RPC
            # nobody answers within its timeout is a 504, what that route promises)
            served = status < 500 or (status == 504 and path.startswith("/rpc/"))
            assert status not in (401, 403) and served, "%s with its own: %r" % (label, raw[:200])
        # HEAD needs what GET needs
        for path in ("/health", "/health/ready", "/metrics", "/openapi.json"):
            for categories, status in (((), b"401"), (P, b"401"), (OPS, b"200")):
                raw = await raw_exchange(running.port, _request("HEAD", path, "", None, categories),
                                         stop_at=b"\r\n\r\n")
                assert raw.split(b" ")[1] == status, (path, categories, raw[:80])
        # producer credentials alone neither read nor remove messages (the defect of issue 11)
        key = (await running.store.add("secretq", ["secret"])).keys[0]
        for command in ("get", "take", "del"):
            body = json.dumps({"cmd": command, "queue": "secretq", "key": key})
            raw = await raw_exchange(running.port, _request("POST", PROTOCOL, "", {"body": body}, P))
            assert raw.split(b" ")[1] == b"401" and b"secret" not in raw, command
        length, messages = await running.store.jobs("secretq")
        assert [m.value for m in messages] == ["secret"]
    finally:
        await stop_app(running)
