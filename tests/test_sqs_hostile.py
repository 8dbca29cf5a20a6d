"""A hostile peer on the SQS listener: malformed JSON and form input for every action,
wrong types, absurd numbers, oversized and truncated requests. Every answer is an
SQS error with a 4xx status (never a 500, a hang or a dead broker)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from tests.sqs_support import SqsBroker, sqs_client
from restmq.web.sqs.actions import ACTIONS

WEIRD_VALUES = [None, True, 0, -1, 1e309, "", "x" * 5000, [], {}, [1, "a", None], {"a": {"b": []}},
                "\u0000", "\ud7ff\ue000", "12345678901234567890", "http://[x/000000000000/q"]
FIELDS = ["QueueUrl", "QueueName", "MessageBody", "ReceiptHandle", "Entries", "Attributes", "AttributeNames",
          "MessageAttributes", "MessageAttributeNames", "MaxNumberOfMessages", "WaitTimeSeconds",
          "VisibilityTimeout", "DelaySeconds", "Tags", "TagKeys", "tags", "MaxResults", "NextToken",
          "MessageGroupId", "MessageDeduplicationId", "MessageSystemAttributes", "QueueNamePrefix",
          "ReceiveRequestAttemptId", "QueueOwnerAWSAccountId"]


@pytest.fixture(scope="module")
def broker(redis_server, tmp_path_factory):
    started = SqsBroker(tmp_path_factory.mktemp("sqs-hostile"), "hostile", redis_server.port).start()
    client = sqs_client(started.sqs_url)
    started.queue = client.create_queue(QueueName="hostile")["QueueUrl"]
    client.create_queue(QueueName="hostile.fifo", Attributes={"FifoQueue": "true"})
    yield started
    started.stop()
    assert "Unhandled error" not in started.log(), started.log()[-3000:]


def _json(broker, action: str, body: bytes):
    request = urllib.request.Request(broker.sqs_url + "/", data=body, method="POST", headers={
        "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS." + action})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_sqs_wrong_types_for_every_field(broker, action):
    for field in FIELDS:
        for value in WEIRD_VALUES:
            params = {"QueueUrl": broker.queue, field: value}
            if action == "ReceiveMessage":
                params.setdefault("WaitTimeSeconds", 0)
            status, body = _json(broker, action, json.dumps(params).encode())
            assert status < 500, (action, field, value, body[:300])
            if status >= 400:
                assert json.loads(body)["__type"].startswith("com.amazonaws.sqs#"), (action, field, body)


@pytest.mark.parametrize("action", ["SendMessageBatch", "DeleteMessageBatch", "ChangeMessageVisibilityBatch"])
def test_sqs_wrong_types_in_batch_entries(broker, action):
    for field in ("Id", "MessageBody", "ReceiptHandle", "VisibilityTimeout", "DelaySeconds",
                  "MessageAttributes",
                  "MessageGroupId", "MessageDeduplicationId"):
        for value in WEIRD_VALUES:
            for queue in (broker.queue, broker.queue_url("hostile.fifo")):
                entry = {"Id": "a", "MessageBody": "b", "ReceiptHandle": "hostile:1:x",
                         "VisibilityTimeout": 1,
                         field: value}
                status, body = _json(broker, action, json.dumps({"QueueUrl": queue,
                                                                 "Entries": [entry]}).encode())
                assert status < 500, (action, field, value, body[:300])


def test_sqs_malformed_bodies(broker):
    for body in (b"", b"{", b"\xff\xfe", b"null", b"1", b'"s"', b"[]", b'{"QueueUrl": ' + b"[" * 10000,
                 json.dumps({"QueueName": "q", "Attributes": {"a": {"b": 1}}}).encode()):
        status, answer = _json(broker, "CreateQueue", body)
        assert 400 <= status < 500, (body[:40], answer[:200])


@pytest.mark.parametrize("fields", [
    "Action=SendMessage&QueueUrl=%s&MessageBody=%%FF%%FE",
    "Action=SendMessageBatch&QueueUrl=%s&SendMessageBatchRequestEntry.1=x",
    "Action=SendMessageBatch&QueueUrl=%s&SendMessageBatchRequestEntry.99999999999999999999.Id=x",
    "Action=CreateQueue&QueueName=a&Attribute.1.Value=5",
    "Action=ReceiveMessage&QueueUrl=%s&AttributeName=All&AttributeName.1=x",
    "Action=TagQueue&QueueUrl=%s&Tag.1.Value=v",
    "Action=SendMessage&QueueUrl=%s&MessageBody=x&MessageAttribute.1.Name=a&MessageAttribute.1.Value=5",
    "Action=ReceiveMessage&QueueUrl=%s&MaxNumberOfMessages=99999999999999999999999",
    "Action=ReceiveMessage&QueueUrl=%s&WaitTimeSeconds=-5",
    "Action=%00",
])
def test_sqs_malformed_query_forms(broker, fields):
    body = (fields % broker.queue if "%s" in fields else fields).encode()
    request = urllib.request.Request(broker.sqs_url + "/", data=body, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            status, answer = reply.status, reply.read()
    except urllib.error.HTTPError as error:
        status, answer = error.code, error.read()
    # an error, or a batch whose entry failed alone
    assert (400 <= status < 500 and b"<ErrorResponse" in answer) or \
        (status == 200 and b"<BatchResultErrorEntry>" in answer), (fields, status, answer[:300])


def test_sqs_oversized_and_truncated_requests(broker):
    # a Content-Length far over the limit is refused before the body is read
    with socket.create_connection(("127.0.0.1", broker.sqs_port), timeout=10) as conn:
        conn.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 999999999\r\n"
                     b"Content-Type: application/x-amz-json-1.0\r\n"
                     b"X-Amz-Target: AmazonSQS.ListQueues\r\n\r\n")
        assert conn.recv(100).startswith(b"HTTP/1.1 413")
    # a client that stops mid-body leaves nothing behind: the broker still answers
    with socket.create_connection(("127.0.0.1", broker.sqs_port), timeout=10) as conn:
        conn.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"Queue")
    client = sqs_client(broker.sqs_url)
    url = client.create_queue(QueueName="after-truncation")["QueueUrl"]
    assert url in client.list_queues()["QueueUrls"]


def test_sqs_paths_and_methods(broker):
    for method, path in (("GET", "/"), ("DELETE", "/000000000000/hostile"), ("OPTIONS", "/"),
                         ("GET", "/000000000000/hostile/extra?Action=GetQueueAttributes"),
                         ("GET", "/999999999999/hostile?Action=GetQueueAttributes"),
                         ("GET", "/000000000000/%00?Action=GetQueueAttributes")):
        request = urllib.request.Request(broker.sqs_url + path, method=method)
        try:
            urllib.request.urlopen(request, timeout=10).read()
            status = 200
        except urllib.error.HTTPError as error:
            status = error.code
        assert 400 <= status < 500, (method, path, status)
