"""The SQS API's figures: raw HTTP load beside RestMQ's native API, and boto3 end to
end against RestMQ beside boto3 against moto's server (``moto_server``).

n1  SendMessageBatch of 10, driven by wrk; vs POST /q/<q> with a JSON array of 10
n2  ReceiveMessage(10) + DeleteMessageBatch, by a raw HTTP loop in several processes;
    vs GET /q/<q>?reserve=60&count=10 + POST /q/<q>/ack by the same loop
o   boto3 SendMessageBatch(10) + ReceiveMessage(10) + DeleteMessageBatch, one client;
    vs the same boto3 loop against moto_server
"""

from __future__ import annotations

import http.client
import multiprocessing
import os
import sys
import time
from typing import Any, Callable, Dict, List, Tuple

import orjson

from bench.loads import SMALL_MESSAGE
from bench.procs import BenchError, Proc, free_port, wait_port

__all__ = ["phase_sqs", "phase_sqs_boto3", "SQS_FIGURES"]

SQS_FIGURES: Dict[str, tuple] = {
    "n1": ("n. SendMessageBatch of 10, raw HTTP (wrk); vs POST /q JSON array of 10", "messages/s"),
    "n2": ("n. ReceiveMessage(10) + DeleteMessageBatch, raw HTTP; vs reserve + ack of 10", "messages/s"),
    "o": ("o. boto3 send, receive, delete in batches of 10, one client; vs boto3 against moto_server",
          "messages/s"),
}

ACCOUNT = "000000000000"
JSON_10 = "application/x-amz-json-1.0"
# load generator processes of n2 (each keeps one connection busy)
CYCLE_PROCESSES = 4


def _request(connection: http.client.HTTPConnection, method: str, path: str, body: bytes,
             headers: Dict[str, str]) -> Tuple[int, bytes]:
    connection.request(method, path, body, headers)
    response = connection.getresponse()
    return response.status, response.read()


def _sqs_call(connection: http.client.HTTPConnection, action: str, params: Dict[str, Any]) -> Any:
    status, body = _request(connection, "POST", "/", orjson.dumps(params), {
        "Content-Type": JSON_10, "X-Amz-Target": "AmazonSQS." + action})
    if status != 200:
        raise BenchError("%s answered %d: %s" % (action, status, body[:200]))
    return orjson.loads(body) if body else {}


def _cycle(port: int, kind: str, queue: str, seconds: float, results: Any) -> None:
    """One load process of n2: receive/reserve 10, delete/ack them, until time is up."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    url = "http://127.0.0.1:%d/%s/%s" % (port, ACCOUNT, queue)
    done = empty = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if kind == "sqs":
            got = _sqs_call(connection, "ReceiveMessage", {
                "QueueUrl": url, "MaxNumberOfMessages": 10, "VisibilityTimeout": 60}).get("Messages", [])
            if got:
                _sqs_call(connection, "DeleteMessageBatch", {"QueueUrl": url, "Entries": [
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)]})
        else:
            status, body = _request(connection, "GET", "/q/%s?reserve=60&count=10" % queue, b"", {})
            got = orjson.loads(body)["messages"] if status == 200 else []
            if got:
                status, body = _request(connection, "POST", "/q/%s/ack" % queue,
                                        orjson.dumps({"receipts": [m["receipt"] for m in got]}),
                                        {"Content-Type": "application/json"})
                if status != 200:
                    raise BenchError("ack answered %d: %s" % (status, body[:200]))
        done += len(got)
        empty += not got
    connection.close()
    results.put((done, empty))


def _cycles(port: int, kind: str, queue: str, seconds: float) -> Tuple[float, int]:
    """(messages/s over every process, how many receives came back empty)."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [context.Process(target=_cycle, args=(port, kind, queue, seconds, results), daemon=True)
               for _ in range(CYCLE_PROCESSES)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=seconds + 60) for _ in workers]
    elapsed = time.monotonic() - started
    for worker in workers:
        worker.join(timeout=10)
    return sum(n for n, _ in outcomes) / elapsed, sum(e for _, e in outcomes)


def _fill(port: int, queue: str, count: int) -> None:
    """``count`` messages in ``queue``, 1000 per native batch publish."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    batch = orjson.dumps([SMALL_MESSAGE] * 1000)
    for _ in range(count // 1000 + 1):
        status, body = _request(connection, "POST", "/q/" + queue, batch,
                                {"Content-Type": "application/json"})
        if status != 200:
            raise BenchError("filling %s answered %d" % (queue, status))
    connection.close()


def _sqs_wrk_script(wrk: Any, path: str, action: str, body: bytes) -> str:
    with open(path, "w") as f:
        f.write('wrk.method = "POST"\nwrk.body = [==[%s]==]\n'
                'wrk.headers["Content-Type"] = "%s"\nwrk.headers["X-Amz-Target"] = "AmazonSQS.%s"\n'
                % (body.decode(), JSON_10, action))
    return path


def phase_sqs(bench: Any) -> List[Any]:
    """n1 and n2: the SQS API under raw HTTP load, beside the native API, one broker."""
    bench.wrk.check()
    sqs_port = free_port()
    broker, port = bench._broker(extra=["--sqs-port", str(sqs_port)], name="restmq-sqs", profile="sqs")
    wait_port(sqs_port, broker)
    connection = http.client.HTTPConnection("127.0.0.1", sqs_port, timeout=30)
    for queue in ("sqsbatch", "sqscycle"):
        _sqs_call(connection, "CreateQueue", {"QueueName": queue})
    connection.close()
    entries = [{"Id": "m%d" % i, "MessageBody": SMALL_MESSAGE} for i in range(10)]
    send = _sqs_wrk_script(bench.wrk, bench.procs.path("wrk-sqs-send.lua"), "SendMessageBatch", orjson.dumps(
        {"QueueUrl": "http://127.0.0.1:%d/%s/sqsbatch" % (sqs_port, ACCOUNT), "Entries": entries}))
    native = bench.wrk.script("POST", orjson.dumps([SMALL_MESSAGE] * 10).decode(), "application/json")

    def empty_queues(name: str) -> None:
        # every run from an empty queue (the SQS queue's attributes stay)
        for key in bench.redis.client.scan_iter("sqsbatch:*"):
            if not key.endswith((b":sqs", b":settings")):
                bench.redis.client.delete(key)
        bench.redis.client.delete("nativebatch:queue")

    publish = bench._wrk_series({"sqs": ("http://127.0.0.1:%d/" % sqs_port, send),
                                 "native": ("http://127.0.0.1:%d/q/nativebatch" % port, native)},
                                before_run=empty_queues)
    # n2: both loops drain a queue filled with enough for a run at 20,000 messages/s
    need = int(20000 * bench.plan.wrk_seconds) + 1000
    rates: Dict[str, List[float]] = {"sqs": [], "native": []}
    dry: Dict[str, int] = {"sqs": 0, "native": 0}
    for round_ in range(bench.plan.runs + 1):  # the first round warms up
        for kind, queue in (("sqs", "sqscycle"), ("native", "nativecycle")):
            backlog = bench.redis.client.llen(queue + ":queue")
            if backlog < need:
                _fill(port, queue, need - backlog)
            seconds = bench.plan.warm_seconds if round_ == 0 else bench.plan.wrk_seconds
            rate, empty = _cycles(sqs_port if kind == "sqs" else port, kind, queue, seconds)
            if round_:
                rates[kind].append(rate)
                dry[kind] += empty
    from bench.figures import _median, _wrk_note
    batch_rows = [bench._row("n1", restmq=_median([r["rps"] for r in publish["sqs"]]) * 10,
                             baseline=_median([r["rps"] for r in publish["native"]]) * 10,
                             note=_wrk_note(publish["sqs"]))]
    notes = ["%s: %d empty receives" % (kind, count) for kind, count in dry.items() if count]
    batch_rows.append(bench._row("n2", restmq=_median(rates["sqs"]), baseline=_median(rates["native"]),
                                 note="; ".join(["%d load processes" % CYCLE_PROCESSES] + notes)))
    return batch_rows


def _boto3_loop(endpoint: str, seconds: float) -> float:
    """messages/s of one boto3 client: send 10, receive them, delete them, again."""
    import boto3
    from botocore.config import Config
    client = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                          aws_secret_access_key="bench", config=Config(retries={"max_attempts": 1}))
    url = client.create_queue(QueueName="boto3bench")["QueueUrl"]
    entries = [{"Id": "m%d" % i, "MessageBody": SMALL_MESSAGE} for i in range(10)]
    done = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        client.send_message_batch(QueueUrl=url, Entries=entries)
        got = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if got:
            client.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
        done += len(got)
    return done / (time.monotonic() - started)


def phase_sqs_boto3(bench: Any) -> List[Any]:
    """o: boto3 end to end against RestMQ beside boto3 against moto's server."""
    try:
        import boto3  # noqa: F401
    except ImportError:
        raise BenchError("boto3 not installed (bench/requirements.txt)") from None
    moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
    if not os.access(moto, os.X_OK):
        raise BenchError("moto_server not installed (moto[server] in bench/requirements.txt)")
    sqs_port = free_port()
    broker, _ = bench._broker(extra=["--sqs-port", str(sqs_port)], name="restmq-sqs", profile="sqs-boto3")
    wait_port(sqs_port, broker)
    moto_port = free_port()
    moto_proc = bench.procs.start(Proc("moto_server", [moto, "-H", "127.0.0.1", "-p", str(moto_port)],
                                       bench.procs.path("moto.log"), cpus=bench.procs.pinning.server))
    wait_port(moto_port, moto_proc)
    loops: Dict[str, Callable[[float], float]] = {
        "restmq": lambda s: _boto3_loop("http://127.0.0.1:%d" % sqs_port, s),
        "moto": lambda s: _boto3_loop("http://127.0.0.1:%d" % moto_port, s)}
    rates: Dict[str, List[float]] = {"restmq": [], "moto": []}
    for name, loop in loops.items():
        loop(bench.plan.warm_seconds)
    for _ in range(bench.plan.runs):
        for name, loop in loops.items():
            rates[name].append(loop(bench.plan.wrk_seconds))
    from bench.figures import _median
    return [bench._row("o", restmq=_median(rates["restmq"]), baseline=_median(rates["moto"]),
                       note="boto3 %s, one client process" % boto3_version())]


def boto3_version() -> str:
    import boto3
    return boto3.__version__
