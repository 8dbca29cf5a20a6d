"""Long polling across two RestMQ processes on one Redis: a ReceiveMessage waiting on
one process gets what is sent on the other. Both sweep once an hour, so a message
can only arrive through the publish's wake-up (Redis pub/sub), never a poll."""

from __future__ import annotations

import threading
import urllib.request

import pytest

from tests.sqs_support import SqsBroker, sqs_client, wait_for_long_poll

SLOW_SWEEP = "[dispatch]\nsweep_interval = 3600\n"


@pytest.fixture(scope="module")
def brokers(redis_server, tmp_path_factory):
    directory = tmp_path_factory.mktemp("sqs-two")
    started = []
    try:
        for name in ("a", "b"):
            started.append(SqsBroker(directory, name, redis_server.port, conf=SLOW_SWEEP).start())
        yield started
    finally:
        for broker in started:
            broker.stop()


def _wait_in_thread(broker, url, results, **kwargs):
    def receive():
        client = sqs_client(broker.sqs_url)
        results.append(client.receive_message(QueueUrl=url, WaitTimeSeconds=20, **kwargs))
    thread = threading.Thread(target=receive)
    thread.start()
    return thread


def test_sqs_long_poll_on_one_process_gets_a_send_on_the_other(brokers):
    a, b = brokers
    url = sqs_client(a.sqs_url).create_queue(QueueName="two-procs")["QueueUrl"]
    for round_ in range(3):
        results = []
        waiting = _wait_in_thread(a, url, results, MaxNumberOfMessages=10)
        wait_for_long_poll(a, "two-procs")
        sqs_client(b.sqs_url).send_message(QueueUrl=url, MessageBody="round %d" % round_)
        waiting.join(timeout=60)
        assert [m["Body"] for m in results[0]["Messages"]] == ["round %d" % round_]
        handle = results[0]["Messages"][0]["ReceiptHandle"]
        sqs_client(a.sqs_url).delete_message(QueueUrl=url, ReceiptHandle=handle)


def test_sqs_long_poll_wakes_on_a_rest_publish_elsewhere(brokers):
    a, b = brokers
    url = sqs_client(a.sqs_url).create_queue(QueueName="two-procs-rest")["QueueUrl"]
    results = []
    waiting = _wait_in_thread(a, url, results)
    wait_for_long_poll(a, "two-procs-rest")
    urllib.request.urlopen(urllib.request.Request("%s/q/two-procs-rest" % b.url, data=b"value=via+rest",
                                                  method="POST"), timeout=10).read()
    waiting.join(timeout=60)
    assert [m["Body"] for m in results[0]["Messages"]] == ["via rest"]


def test_sqs_visibility_change_elsewhere_wakes_a_long_poll(brokers):
    a, b = brokers
    client = sqs_client(b.sqs_url)
    url = client.create_queue(QueueName="two-procs-visible")["QueueUrl"]
    client.send_message(QueueUrl=url, MessageBody="held")
    [held] = client.receive_message(QueueUrl=url, VisibilityTimeout=600, WaitTimeSeconds=2)["Messages"]
    results = []
    waiting = _wait_in_thread(a, url, results)
    wait_for_long_poll(a, "two-procs-visible")
    client.change_message_visibility(QueueUrl=url, ReceiptHandle=held["ReceiptHandle"], VisibilityTimeout=0)
    waiting.join(timeout=60)
    assert [m["Body"] for m in results[0]["Messages"]] == ["held"]
