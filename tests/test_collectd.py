"""collectd's write_http bodies posted to /collectd/data and /collectd/event of a live RestMQ.

The bodies under tests/data/collectd/ follow collectd's documented formats:
write_http's ``Format "JSON"`` value lists and ``Format "Command"`` PUTVAL
lines (CRLF-terminated, as write_http sends them), its Alertmanager-style
JSON notifications, PUTNOTIF lines of the plain text protocol, and the text
a ``NotificationExec`` program reads.
"""

from __future__ import annotations

import json
import os

import pytest
import pytest_twisted

from restmq.acl import load_acl
from restmq.ingest.collectd import parse_data, parse_events
from restmq.errors import BadRequest
from tests.helpers import start_app, stop_app, test_config

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "collectd")
HOST = "leeloo.lan.home.verplant.org"


def fixture(name: str) -> bytes:
    with open(os.path.join(DATA, name), "rb") as handle:
        return handle.read()


@pytest_twisted.async_yield_fixture()
async def app(redis, redis_server):
    """A broker storing collectd's bodies in the parsed form (``[collectd] format =
    parsed``); the original's form is tested in tests/test_original.py."""
    running = await start_app(redis_server.target, test_config(
        dispatch={"sweep_interval": 1.0}, collectd={"format": "parsed"}))
    yield running
    await stop_app(running)


async def post(app, path: str, body: bytes, content_type: str):
    response = await app.post(path, data=body, headers={"Content-Type": content_type})
    return response.code, json.loads(await response.text())


async def stored(store, queue: str):
    return [json.loads(message.value) for message in await store.take(queue, 100)]


# parsing, no reactor

def test_putval_with_several_value_groups_gives_one_value_list_each():
    lists = parse_data(fixture("values.txt"), now=0.0)
    assert [(entry["plugin_instance"], entry["time"]) for entry in lists[-2:]] == [
        ("my disk", 1251533309.125), ("my disk", 1251533319.125)]


def test_putval_time_n_is_now():
    [entry] = parse_data(b"PUTVAL h/p/t N:1", now=1700000000.5)
    assert entry["time"] == 1700000000.5 and entry["interval"] is None


def test_putval_counters_stay_exact_integers():
    [entry] = parse_data(b"PUTVAL h/p/t 1:18446744073709551615:-5:1e3", now=0.0)
    assert entry["values"] == [18446744073709551615, -5, 1000.0]


@pytest.mark.parametrize("body,needle", [
    (b"", "empty body"),
    (b"   \r\n", "empty body"),
    (b"\xff\xfe", "UTF-8"),
    (b"PUTVAL", "line 1"),
    (b"PUTVAL h/p/t", "line 1"),
    (b"PUTVAL h/p/t interval=10", "line 1"),
    (b"PUTVAL h/p 1:2", "identifier"),
    (b"PUTVAL h//t 1:2", "identifier"),
    (b"PUTVAL h/-x/t 1:2", "empty plugin"),
    (b"PUTVAL h/p/t 1:x", "not a number"),
    (b"PUTVAL h/p/t x:1", "time"),
    (b"PUTVAL h/p/t interval=nan 1:1", "interval"),
    (b"PUTVAL h/p/t 12", "time:value"),
    (b'PUTVAL "h/p/t 1:2', "unterminated"),
    (b"PUTVAL h/p/t 1:2\nGETVAL h/p/t", "line 2"),
    (b"[", "malformed JSON"),
    (b"[]", "empty JSON array"),
    (b"[1]", "value list 0"),
    (b'[{"values": [1], "host": "h", "plugin": "p"}]', "'type'"),
    (b'[{"values": [], "host": "h", "plugin": "p", "type": "t"}]', "'values'"),
    (b'[{"values": ["1"], "host": "h", "plugin": "p", "type": "t"}]', "numbers"),
    (b'[{"values": [true], "host": "h", "plugin": "p", "type": "t"}]', "numbers"),
    (b'[{"values": [1], "dsnames": ["a", "b"], "host": "h", "plugin": "p", "type": "t"}]', "dsnames"),
    (b'[{"values": [1], "host": "h", "plugin": "p", "type": "t", "meta": 3}]', "meta"),
    (b'[{"values": [1], "host": "h", "plugin": "p", "type": "t", "time": "now"}]', "time"),
    (b'[{"values": [1], "host": 7, "plugin": "p", "type": "t"}]', "host"),
])
def test_bad_value_bodies_are_bad_requests(body, needle):
    with pytest.raises(BadRequest) as caught:
        parse_data(body, now=0.0)
    assert needle in caught.value.message


@pytest.mark.parametrize("body,needle", [
    (b"hello", "expected JSON, PUTNOTIF"),
    (b"PUTNOTIF severity=warning time=1", "message="),
    (b"PUTNOTIF time=1 message=x", "severity"),
    (b"PUTNOTIF severity=okay time=soon message=x", "time"),
    (b"PUTNOTIF severity=okay bare message=x", "key=value"),
    (b"PUTNOTIF severity=okay message=x\nPUTVAL h/p/t 1:1", "line 2"),
    (b"Severity: OKAY\nnot a header\n\ntext", "line 2"),
    (b"Severity: OKAY\nTime: later\n\ntext", "Time"),
    (b"Host: h\n\nno severity", "severity"),
    (b"[{}]", "severity"),
    (b'[{"labels": {"severity": 1}}]', "labels"),
    (b'[{"labels": {"severity": "OKAY"}, "startsAt": "yesterday"}]', "startsAt"),
    (b'[{"labels": {"severity": "OKAY"}, "annotations": []}]', "annotations"),
    (b'["x"]', "notification 0"),
])
def test_bad_event_bodies_are_bad_requests(body, needle):
    with pytest.raises(BadRequest) as caught:
        parse_events(body, now=0.0)
    assert needle in caught.value.message


def test_putnotif_without_time_is_stamped_now():
    [event] = parse_events(b"PUTNOTIF severity=okay message=fine", now=42.0)
    assert event["time"] == 42.0 and event["severity"] == "okay" and event["host"] == ""


def test_plain_json_notification_is_read_too():
    [event] = parse_events(b'{"severity": "FAILURE", "time": 5, "host": "h", "plugin": "p", '
                           b'"message": "down", "meta": {"k": 1}}', now=0.0)
    assert event == {"severity": "failure", "time": 5, "message": "down", "host": "h",
                     "plugin": "p", "plugin_instance": "", "type": "", "type_instance": "",
                     "meta": {"k": 1}}


# over HTTP, into Redis

@pytest_twisted.ensureDeferred
async def test_json_values_become_one_message_per_value_list(app):
    code, answer = await post(app, "/collectd/data", fixture("values.json"), "application/json")
    assert code == 200
    assert answer == {"queue": "collectd_data", "keys": ["collectd_data:%d" % n for n in (1, 2, 3, 4)]}
    messages = await stored(app.store, "collectd_data")
    assert messages[0] == {
        "host": HOST, "plugin": "disk", "plugin_instance": "sda", "type": "disk_octets",
        "type_instance": "", "time": 1251533299.0, "interval": 10.0,
        "values": [197141504, 175136768], "dstypes": ["counter", "counter"],
        "dsnames": ["read", "write"], "meta": None}
    assert messages[2]["values"] == [0.42, None]
    assert messages[2]["meta"] == {"network:received": True, "network:ttl": 64}
    assert messages[3]["values"] == [18446744073709551615]


@pytest_twisted.ensureDeferred
async def test_command_values_become_one_message_per_value_list(app):
    code, answer = await post(app, "/collectd/data", fixture("values.txt"), "text/plain")
    assert code == 200 and len(answer["keys"]) == 5
    messages = await stored(app.store, "collectd_data")
    assert messages[0] == {
        "host": HOST, "plugin": "disk", "plugin_instance": "sda", "type": "disk_octets",
        "type_instance": "", "time": 1251533299.0, "interval": 10.0,
        "values": [197141504, 175136768], "dstypes": None, "dsnames": None, "meta": None}
    assert messages[2]["values"] == [0.42, None, None]
    assert [(m["plugin"], m["plugin_instance"], m["type"], m["type_instance"], m["values"])
            for m in messages[3:]] == [("df", "my disk", "df_complex", "free", [116497408]),
                                       ("df", "my disk", "df_complex", "free", [116497409])]


@pytest_twisted.ensureDeferred
async def test_format_is_read_from_the_body_not_the_content_type(app):
    # curl -d sends application/x-www-form-urlencoded; the body decides
    code, _ = await post(app, "/collectd/data", fixture("values.txt"), "application/x-www-form-urlencoded")
    assert code == 200
    code, _ = await post(app, "/collectd/data/", fixture("values.json"), "text/plain")
    assert code == 200
    assert len(await stored(app.store, "collectd_data")) == 9


@pytest_twisted.ensureDeferred
async def test_json_notification_lands_in_collectd_event(app):
    code, answer = await post(app, "/collectd/event", fixture("notification.json"), "application/json")
    assert code == 200 and answer == {"queue": "collectd_event", "keys": ["collectd_event:1"]}
    [event] = await stored(app.store, "collectd_event")
    assert event["severity"] == "warning"
    assert event["host"] == HOST
    assert event["time"] == 1251533309.125
    assert event["message"].startswith("Host %s, plugin df (instance boot)" % HOST)
    assert event["alertname"] == "collectd_df"
    assert event["labels"]["df"] == "boot"
    assert event["meta"]["CurrentValue"] == "1.164974e+08"


@pytest_twisted.ensureDeferred
async def test_putnotif_lines_land_in_collectd_event(app):
    code, answer = await post(app, "/collectd/event", fixture("notification.txt"), "text/plain")
    assert code == 200 and len(answer["keys"]) == 2
    first, second = await stored(app.store, "collectd_event")
    assert first == {"severity": "failure", "time": 1251533299.0, "message": 'Disk "boot" is full',
                     "host": HOST, "plugin": "df", "plugin_instance": "boot", "type": "df_complex",
                     "type_instance": "free", "meta": None}
    assert second["message"] == "Disk boot is fine again"
    assert second["time"] == 1251533359.5


@pytest_twisted.ensureDeferred
async def test_notification_exec_text_lands_in_collectd_event(app):
    # what the original's README had NotificationExec pipe in with curl -d
    code, _ = await post(app, "/collectd/event", fixture("notification-exec.txt"),
                         "application/x-www-form-urlencoded")
    assert code == 200
    [event] = await stored(app.store, "collectd_event")
    assert event["severity"] == "warning" and event["time"] == 1288548727.125
    assert (event["host"], event["plugin"], event["plugin_instance"], event["type"],
            event["type_instance"]) == ("collectd_restmq_server", "df", "boot", "df_complex", "used")
    assert event["meta"]["data_source"] == "value"
    assert event["meta"]["warning_max"] == "1.000000e+01"
    assert event["message"].endswith("above the warning threshold of 10.000000.")


@pytest_twisted.ensureDeferred
async def test_messages_stream_to_comet_consumers_like_any_queue(app):
    await post(app, "/collectd/data", b"PUTVAL h/cpu-0/cpu-idle interval=10 1700000000:99", "text/plain")
    response = await app.get("/q/collectd_data")
    popped = json.loads(await response.text())
    assert popped["key"] == "collectd_data:1"
    assert json.loads(popped["value"])["type_instance"] == "idle"


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("path,body", [
    ("/collectd/data", b""),
    ("/collectd/data", b"PUTVAL h/p/t 1:x"),
    ("/collectd/data", b"\xff\xfe\x00"),
    ("/collectd/data", b'[{"values": [1]}]'),
    ("/collectd/data", b"[" * 5000),
    ("/collectd/event", b"nonsense"),
    ("/collectd/event", b"[{}]"),
    ("/collectd/event", b'{"labels": {"severity": "OKAY"}, "startsAt": 3}'),
])
async def test_bad_bodies_answer_400_and_store_nothing(app, path, body):
    code, answer = await post(app, path, body, "text/plain")
    assert code == 400
    assert answer["error"]["code"] == "bad_request"
    assert await app.store.queues() == []


@pytest_twisted.ensureDeferred
async def test_too_many_value_lists_in_one_body_is_400(app):
    limit = app.config.delivery.max_batch
    body = "".join("PUTVAL h/p/t %d:1\n" % n for n in range(limit + 1)).encode()
    code, answer = await post(app, "/collectd/data", body, "text/plain")
    assert code == 400 and "at most %d" % limit in answer["error"]["message"]


@pytest_twisted.ensureDeferred
async def test_get_is_not_allowed(app):
    response = await app.get("/collectd/data")
    assert response.code == 405
    assert json.loads(await response.text())["error"]["code"] == "method_not_allowed"


@pytest_twisted.ensureDeferred
async def test_posting_is_a_producer_right_under_the_acl(redis, redis_server, tmp_path):
    # write_http sends HTTP Basic with its User and Password options
    acl_file = tmp_path / "acl.conf"
    acl_file.write_text("[rest:producer]\nusername = collectd\npassword = weCh3ik0\n")
    running = await start_app(redis_server.target, acl=load_acl(str(acl_file)))
    try:
        response = await running.post("/collectd/data", data=fixture("values.txt"))
        assert response.code == 401
        response = await running.post("/collectd/data", data=fixture("values.txt"),
                                      auth=("collectd", "weCh3ik0"))
        assert response.code == 200
    finally:
        await stop_app(running)
