"""A real Celery worker on kombu's SQS transport (pycurl, boto3) against RestMQ's SQS
listener: tasks sent by a client run in the worker and their results come back
(through Celery's file result backend, so only the task queue is SQS)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
from celery import Celery

from tests.processes import ROOT
from tests.sqs_support import SqsBroker, sqs_client, wait_for_long_poll

TASKS = '''
"""Tasks of the Celery test: a worker runs them, fed through RestMQ's SQS API."""
import os

from celery import Celery

app = Celery("restmqtasks")
app.conf.update(
    broker_url=os.environ["RESTMQ_CELERY_BROKER"],
    broker_transport_options={"region": "us-east-1", "is_secure": False, "wait_time_seconds": 5,
                              "polling_interval": 0.1, "queue_name_prefix": "celery-test-",
                              "visibility_timeout": 60},
    result_backend="file://" + os.environ["RESTMQ_CELERY_RESULTS"],
    task_default_queue="work",
    broker_connection_retry_on_startup=True,
)


@app.task(name="restmqtasks.add")
def add(x, y):
    return x + y


@app.task(name="restmqtasks.shout")
def shout(text):
    return text.upper() + "!"


@app.task(name="restmqtasks.fail")
def fail():
    raise ValueError("failed on purpose")
'''


def _settings(broker: SqsBroker, results: str) -> dict:
    return {"RESTMQ_CELERY_BROKER": "sqs://celery-key:celery-secret@127.0.0.1:%d" % broker.sqs_port,
            "RESTMQ_CELERY_RESULTS": results}


@pytest.fixture(scope="module")
def worker(redis_server, tmp_path_factory):
    directory = tmp_path_factory.mktemp("celery")
    broker = SqsBroker(directory, "celery-broker", redis_server.port).start()
    (directory / "restmqtasks.py").write_text(TASKS)
    results = directory / "results"
    results.mkdir()
    env = dict(os.environ, PYTHONPATH=str(directory) + os.pathsep + ROOT, **_settings(broker, str(results)))
    log = open(directory / "worker.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "restmqtasks", "worker", "--pool=solo",
                             "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
                             "-Q", "work", "-n", "restmq-test@%h"],
                            cwd=str(directory), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        # the worker declares its queue through CreateQueue when it is ready
        client = sqs_client(broker.sqs_url)
        deadline = time.monotonic() + 60
        while not client.list_queues(QueueNamePrefix="celery-test-work").get("QueueUrls"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the Celery worker did not start:\n"
                                     + (directory / "worker.log").read_text(errors="replace"))
            time.sleep(0.1)
        yield {"broker": broker, "results": str(results), "directory": directory}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        broker.stop()


@pytest.fixture()
def client_app(worker):
    settings = _settings(worker["broker"], worker["results"])
    app = Celery("restmqtasks-client")
    app.conf.update(
        broker_url=settings["RESTMQ_CELERY_BROKER"],
        broker_transport_options={"region": "us-east-1", "is_secure": False,
                                  "queue_name_prefix": "celery-test-"},
        result_backend="file://" + settings["RESTMQ_CELERY_RESULTS"], task_default_queue="work")
    yield app
    app.close()


def test_celery_worker_runs_tasks_sent_through_restmq(client_app, worker):
    results = [client_app.send_task("restmqtasks.add", args=(i, 100)) for i in range(5)]
    results.append(client_app.send_task("restmqtasks.shout", args=("über sqs",)))
    assert [result.get(timeout=90) for result in results] == [100, 101, 102, 103, 104, "ÜBER SQS!"]
    # every task message was deleted once done: nothing waits or is in flight
    sqs = sqs_client(worker["broker"].sqs_url)
    url = sqs.get_queue_url(QueueName="celery-test-work")["QueueUrl"]
    deadline = time.monotonic() + 30
    while True:
        counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        if counts["ApproximateNumberOfMessages"] == counts["ApproximateNumberOfMessagesNotVisible"] == "0":
            break
        assert time.monotonic() < deadline, counts
        time.sleep(0.1)


def test_celery_task_failure_comes_back(client_app):
    result = client_app.send_task("restmqtasks.fail")
    with pytest.raises(Exception) as excinfo:
        result.get(timeout=90)
    assert "failed on purpose" in str(excinfo.value)
    assert result.state == "FAILURE"


def test_celery_worker_waits_in_a_long_poll(worker):
    """Between tasks the worker waits in ReceiveMessage(WaitTimeSeconds), which RestMQ
    holds open on the queue's wake-ups: it shows as a long-poll subscriber."""
    wait_for_long_poll(worker["broker"], "celery-test-work", timeout=30)


TASKS = textwrap.dedent(TASKS)
