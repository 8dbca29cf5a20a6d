"""Long polling across two RestMQ processes on one Redis: a ReceiveMessage waiting on
one process gets what is sent on the other. Both sweep once an hour, so a message
can only arrive through the publish's wake-up (Redis pub/sub), never a poll."""

from __future__ import annotations

import json
import re
import socket
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


def test_sqs_send_wakes_its_own_process_at_once_and_tags_the_others_wake_up(brokers, redis_server):
    # an SQS receive and a REST long-poll wait on a; a sends. Nothing sweeps: the
    # pub/sub wake-up carries a's id (so a skips it) and a wakes its own waiters itself
    a, _ = brokers
    queue = "two-procs-self"
    url = sqs_client(a.sqs_url).create_queue(QueueName=queue)["QueueUrl"]
    watch = socket.create_connection(("127.0.0.1", redis_server.port), timeout=30)
    try:
        watch.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$13\r\nrestmq:notify\r\n")
        seen = b""
        while b"subscribe" not in seen:
            seen += watch.recv(4096)
        results = []
        waiting = _wait_in_thread(a, url, results)
        wait_for_long_poll(a, queue)
        sqs_client(a.sqs_url).send_message(QueueUrl=url, MessageBody="sent here")
        waiting.join(timeout=60)
        assert [m["Body"] for m in results[0]["Messages"]] == ["sent here"]
        seen = b""
        while not re.search(rb"w%s [0-9a-f]{12}\r\n" % queue.encode(), seen):
            seen += watch.recv(4096)
        # a REST long-poll on a gets the next SQS send the same way
        polled = []
        poll = threading.Thread(target=lambda: polled.append(urllib.request.urlopen(
            "%s/q/%s?wait=20" % (a.url, queue), timeout=60).read()))
        poll.start()
        wait_for_long_poll(a, queue)
        sqs_client(a.sqs_url).send_message(QueueUrl=url, MessageBody="for rest")
        poll.join(timeout=60)
        assert json.loads(polled[0])["value"] == "for rest"
    finally:
        watch.close()
