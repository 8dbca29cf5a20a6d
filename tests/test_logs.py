"""JSON logs: the observer keeps the fields, and twistd picks it from --json-log or json_log."""

from __future__ import annotations

import io
import json
import signal
import urllib.request

from twisted.logger import Logger
from twisted.scripts._twistd_unix import ServerOptions

from restmq.logs import json_observer
from tests.helpers import free_port
from tests.test_embedded import twistd, wait_http


def records(text: str) -> list:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_keep_the_fields_of_an_event():
    out = io.StringIO()
    log = Logger(namespace="restmq.test", observer=json_observer(out))
    log.info("Consumer {consumer_id} joined {queue}", consumer_id=3, queue="jobs", odd=object())
    (record,) = records(out.getvalue())
    assert record["message"] == "Consumer 3 joined jobs"
    assert record["level"] == "info" and record["namespace"] == "restmq.test"
    assert record["consumer_id"] == 3 and record["queue"] == "jobs"
    assert record["odd"].startswith("<object object")  # not JSON: its repr
    assert record["time"].endswith("+00:00")
    assert not any(key.startswith("log_") for key in record)


def test_json_lines_carry_the_traceback_of_a_failure():
    out = io.StringIO()
    log = Logger(namespace="restmq.test", observer=json_observer(out))
    try:
        raise ValueError("kaput")
    except ValueError:
        log.failure("Dispatch to {queue} failed", queue="jobs")
    (record,) = records(out.getvalue())
    assert record["level"] == "critical"
    assert record["message"] == "Dispatch to jobs failed"
    assert "ValueError: kaput" in record["traceback"]


def test_json_log_flag_and_config_key_choose_the_twistd_logger(tmp_path):
    for argv in (["restmq", "--json-log"], ["restmq", "--config", str(tmp_path / "r.conf")]):
        (tmp_path / "r.conf").write_text("[server]\njson_log = true\n")
        options = ServerOptions()
        options.parseOptions(argv)
        assert options["logger"] is json_observer, argv
    options = ServerOptions()
    options.parseOptions(["restmq"])
    assert options["logger"] is None
    # an explicit --logger wins
    options = ServerOptions()
    options.parseOptions(["--logger", "twisted.logger.textFileLogObserver", "restmq", "--json-log"])
    assert options["logger"].__name__ == "textFileLogObserver"


def test_twistd_with_json_log_writes_json_lines_with_access_fields(redis_server):
    port = free_port()
    proc = twistd("--json-log", "--access-log", "--port", str(port),
                  "--redis", "redis://127.0.0.1:%d/0" % redis_server.port)
    try:
        wait_http(port, proc)
        url = "http://127.0.0.1:%d/q/logged" % port
        body = urllib.request.urlopen(url, data=b"value=v", timeout=5).read()
        assert body == b"logged:1\r\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=20)[0].decode()
    lines = records(output)  # every line is JSON
    access = [r for r in lines if r["namespace"] == "restmq.access" and r.get("method") == "POST"]
    assert access, output
    assert access[0]["route"] == "/q/{queue}" and access[0]["path"] == "/q/logged"
    assert access[0]["status"] == 200 and access[0]["queue"] == "logged"
    assert access[0]["duration_ms"] >= 0


def test_json_lines_of_twisted_legacy_log_have_a_namespace_and_durations_are_rounded():
    from twisted.logger import LogLevel
    from restmq.logs import format_json
    legacy = {"log_namespace": "log_legacy", "log_system": "-", "log_level": LogLevel.info,
              "log_format": "{log_text}", "log_text": "RestMQApplication starting on 8888",
              "log_time": 1.0, "message": ("RestMQApplication starting on 8888",), "system": "-",
              "isError": 0, "log_legacy": object()}
    record = json.loads(format_json(legacy))
    assert record["namespace"] == "twisted"
    assert record["message"] == "RestMQApplication starting on 8888"
    access = {"log_namespace": "restmq.access", "log_level": LogLevel.info, "log_time": 1.0,
              "log_format": "{duration_ms:.1f}ms", "duration_ms": 1.23456789}
    record = json.loads(format_json(access))
    assert record["duration_ms"] == 1.23 and record["namespace"] == "restmq.access"
