"""ACL: pure rule checks, file parsing, and the matrix over HTTP."""

from __future__ import annotations

import base64
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
        assert (await running.delete("/q/m")).code == 401
        assert (await running.post("/", data={"queue": "m", "value": "v"})).code == 401
        assert (await running.post("/queue", data={"body": '{"cmd":"take","queue":"m"}'})).code == 401
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
