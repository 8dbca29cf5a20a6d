"""restmq.client.core without a broker: the calls each operation makes, the retry
rules, the worker's retry schedule, the SSE parser."""

from __future__ import annotations

import json
import sys
import subprocess

import orjson
import pytest

from restmq.client.core import (BATCH_SIZE, Backoff, ClientError, Message, WorkPlan, _Endpoint, _QueueCalls,
                                _SSEParser, retry_after_answer)
from tests.processes import ROOT


def calls(name: str = "jobs", **options) -> _QueueCalls:
    return _QueueCalls(name, "http://127.0.0.1:8888/prefix", **options)


def test_work_plan_retry_delay_grows_exponentially_up_to_its_cap():
    plan = WorkPlan(retry_delay=2.0, backoff=3.0, max_retry_delay=50.0)
    assert [plan.retry_delay_for(n) for n in (1, 2, 3, 4, 5)] == [2.0, 6.0, 18.0, 50.0, 50.0]
    assert WorkPlan(retry_delay=1.0, backoff=2.0).retry_delay_for(10 ** 6) == 300.0
    assert WorkPlan(retry_delay=0.0).retry_delay_for(3) == 0.0


@pytest.mark.parametrize("options", [
    {"concurrency": 0}, {"lease": 0}, {"limit": -1}, {"idle_timeout": -1}, {"backoff": 0.5},
    {"retry_delay": -1}, {"prefetch": 0}, {"prefetch": BATCH_SIZE + 1},
])
def test_work_plan_refuses_nonsense(options):
    with pytest.raises(ValueError):
        WorkPlan(**options)


def test_work_plan_extends_well_before_the_lease_ends():
    assert WorkPlan.extend_every(30.0) == 10.0
    assert WorkPlan.extend_every(0.01) == 0.05


def test_backoff_doubles_with_jitter_and_stays_under_its_cap():
    backoff = Backoff(0.1, 2.0)
    for attempt, base in ((0, 0.1), (1, 0.2), (2, 0.4), (10, 2.0), (500, 2.0)):
        delays = [backoff.delay(attempt) for _ in range(50)]
        assert all(base / 2 <= d <= base for d in delays)
        assert len(set(delays)) > 1  # jittered: clients cut off together do not return together


def test_put_without_idempotency_key_is_never_retried_after_sending():
    call, = calls()._put_calls(["a"], None, None)
    assert call.method == "POST" and call.path == "/q/jobs" and not call.idempotent
    assert dict(call.headers) == {}


def test_put_with_idempotency_key_is_retryable_and_each_batch_has_its_own_key():
    single, = calls()._put_calls(["a"], None, None, "order-7")
    assert single.idempotent and dict(single.headers) == {"Idempotency-Key": "order-7"}
    batches = calls()._put_calls([str(i) for i in range(2500)], 60, 1.5, "bulk")
    assert [dict(b.headers)["Idempotency-Key"] for b in batches] == ["bulk", "bulk#2", "bulk#3"]
    assert all(b.idempotent for b in batches)
    assert [len(orjson.loads(b.body)) for b in batches] == [1000, 1000, 500]
    assert dict(batches[0].query) == {"ttl": "60", "delay": "1.5"}
    with pytest.raises(ValueError):
        calls()._put_calls(["a"], None, None, "")


def test_a_pop_is_not_retryable_but_a_reserve_is():
    queue = calls()
    assert not queue._pop_call(0, None).idempotent
    reserve = queue._pop_call(5.0, 0, 10)
    assert reserve.idempotent and dict(reserve.query) == {"wait": "5.0", "reserve": "", "count": "10"}
    assert dict(queue._pop_call(0, 2.5).query) == {"reserve": "2.5"}
    with pytest.raises(ValueError):
        queue._pop_call(0, 0, 1001)


def test_pop_answers_parse_into_messages_of_the_queue():
    queue = calls(serializer=json)
    pop = queue._pop_call(0, 0, 2)
    body = orjson.dumps({"queue": "jobs", "messages": [
        {"key": "jobs:1", "value": '{"n": 1}', "receipt": "jobs:1:ab-1", "deliveries": 2, "count": 2}]})
    assert pop.parse(200, body) == [Message("jobs:1", {"n": 1}, "jobs:1:ab-1", 2, "jobs")]
    assert pop.parse(204, b"") == []
    one = orjson.dumps({"key": "jobs:3", "value": "[1]", "count": 1})
    assert pop.parse(200, one) == [Message("jobs:3", [1], None, 1, "jobs")]


def test_settle_calls_take_messages_receipts_or_a_list():
    queue = calls()
    message = Message("jobs:1", "x", "jobs:1:ab-1", 1)
    for call in (queue._settle_call("ack", [message, "jobs:2:cd-1"]),
                 queue._settle_call("ack", [[message, "jobs:2:cd-1"]])):
        assert call.body == b"receipt=jobs%3A1%3Aab-1&receipt=jobs%3A2%3Acd-1"
    assert queue._settle_call("nack", [message], delay=3).body.endswith(b"&delay=3")
    with pytest.raises(ValueError):
        queue._settle_call("ack", [Message("jobs:1", "not reserved")])
    with pytest.raises(ValueError):
        queue._settle_call("ack", [])


def test_redrive_is_not_retryable_and_settings_go_as_json():
    queue = calls()
    assert not queue._redrive_call(None).idempotent
    with pytest.raises(ValueError):
        queue._redrive_call(0)
    configure = queue._settings_call({"max_receives": 3, "ttl": None, "overflow": "drop_oldest"})
    assert configure.content_type == "application/json"
    assert orjson.loads(configure.body) == {"max_receives": 3, "ttl": None, "overflow": "drop_oldest"}
    with pytest.raises(ValueError):
        queue._settings_call({})
    with pytest.raises(TypeError):
        queue._settings_call({"maxlen": [1]})


def test_answers_are_read_robustly():
    queue = calls()
    status = queue._field_call("p", "policy", "value")
    # a richer answer keeps working; an answer without the field is a clear error, not a KeyError
    assert status.parse(200, b'{"queue": "jobs", "value": "broadcast", "policy": 1}') == "broadcast"
    with pytest.raises(ClientError) as raised:
        status.parse(200, b'{"queue": "jobs"}')
    assert raised.value.code == "bad_answer"
    with pytest.raises(ClientError) as raised:
        status.parse(200, b"<html>proxy page</html>")
    assert raised.value.code == "bad_answer"
    with pytest.raises(ClientError) as raised:
        status.parse(502, b"<html>Bad Gateway</html>")
    assert (raised.value.status, raised.value.code) == (502, "http_error")


def test_dead_letters_carry_reason_deliveries_and_origin():
    dead = calls()._dead_call(5)
    body = orjson.dumps({"queue": "jobs", "messages": [
        {"key": "jobs:dead:1", "value": "x",
         "dead": {"reason": "max_receives", "from": "jobs:7", "deliveries": 5, "at": 1700000000123}}]})
    letter, = dead.parse(200, body)
    assert (letter.key, letter.reason, letter.deliveries, letter.source) == ("jobs:dead:1", "max_receives", 5,
                                                                             "jobs:7")
    assert letter.died_at == 1700000000.123


def test_only_idempotent_calls_are_retried_on_503():
    queue = calls()
    assert retry_after_answer(queue._stats_call(), 503, 0, 3)
    assert not retry_after_answer(queue._stats_call(), 503, 3, 3)
    assert not retry_after_answer(queue._stats_call(), 500, 0, 3)
    assert not retry_after_answer(queue._pop_call(0, None), 503, 0, 3)


def test_endpoint_keeps_the_path_prefix_and_credentials():
    endpoint = _Endpoint("https://user:pw@broker.example:8443/mq/", None, "t0k", 5.0, None, 2, 0.5)
    call = calls()._stats_call()
    assert endpoint.origin == "https://broker.example:8443"
    assert endpoint.target(call) == "/mq/stats/jobs"
    assert endpoint.request_headers(call)["Authorization"] == "Bearer t0k"
    assert endpoint.connect_timeout == 5.0 and endpoint.read_timeout(calls()._pop_call(20, None)) == 25.0
    for bad in ("ftp://x", "http://", "jobs"):
        with pytest.raises(ValueError):
            _Endpoint(bad, None, None, 5.0)
    with pytest.raises(ValueError):
        _Endpoint("http://x", None, None, 0)


def test_sse_parser_reads_ids_events_and_the_retry_delay():
    parser = _SSEParser()
    events = parser.feed(b"retry: 2000\n\nid: q:1\ndata: {\"key\": \"q:1\"}\n\nevent: gap\ndata: {}\n")
    assert events == [("message", "q:1", '{"key": "q:1"}')]
    assert parser.retry == 2000
    assert parser.feed(b"\n:heartbeat\n\n") == [("gap", "q:1", "{}")]


def test_importing_the_blocking_client_does_not_import_twisted():
    code = ("import sys, restmq.client; from restmq.client import Queue; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('twisted', 'treq')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
