"""Differential: one boto3 scenario run against moto's server (`moto_server`, an SQS
that boto3 users test with) and against RestMQ, answer by answer: the same keys,
the same value types, the same error codes and statuses. Values that must differ
(URLs, ids, receipt handles, times) are compared by shape only; the few deliberate
differences are listed, each with its reason."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from typing import Any, Callable, Dict, List, Tuple

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.helpers import free_port
from tests.sqs_support import SqsBroker, sqs_client

# (step, path) -> why RestMQ answers otherwise than moto there
KNOWN_DIFFERENCES = {
    # RestMQ checks what SQS checks; moto accepts these
    ("set-unknown-attribute", ""): "SQS refuses an unknown attribute name (InvalidAttributeName)",
    ("set-bad-visibility", ""): "SQS refuses VisibilityTimeout over 43200 (InvalidAttributeValue)",
    ("send-too-large", ""): "SQS refuses a body over MaximumMessageSize (InvalidParameterValue)",
    ("send-bad-characters", ""): "SQS refuses characters outside XML's (InvalidMessageContents)",
}


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory):
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1",
                             "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = "http://127.0.0.1:%d" % port
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=2).read()
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError("moto_server did not start")
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


@pytest.fixture(scope="module")
def broker(redis_server, tmp_path_factory):
    started = SqsBroker(tmp_path_factory.mktemp("sqs-diff"), "diff", redis_server.port).start()
    yield started
    started.stop()


def shape(value: Any) -> Any:
    """What a client parses of an answer: keys and value types, not values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        shapes = []
        for item in value:
            if shape(item) not in shapes:
                shapes.append(shape(item))
        return shapes
    return type(value).__name__


def _recorder(steps: List[Tuple[str, Any]]) -> Callable[..., Dict[str, Any]]:
    """step(name, call, **kwargs): runs the call, records its answer without
    ResponseMetadata, or the error's code, status and botocore exception class."""
    def step(name: str, call: Callable[..., Dict[str, Any]], **kwargs: Any) -> Dict[str, Any]:
        try:
            answer = call(**kwargs)
        except ClientError as error:
            steps.append((name, {"error": error.response["Error"]["Code"],
                                 "status": error.response["ResponseMetadata"]["HTTPStatusCode"],
                                 "exception": type(error).__name__}))
            return {}
        answer.pop("ResponseMetadata", None)
        steps.append((name, answer))
        return answer
    return step


def scenario(client) -> List[Tuple[str, Any]]:
    """The steps; each answer without ResponseMetadata, or the error's code and status."""
    steps: List[Tuple[str, Any]] = []
    step = _recorder(steps)

    url = step("create", client.create_queue, QueueName="diff-main",
               Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    dlq = step("create-dlq", client.create_queue, QueueName="diff-dlq")["QueueUrl"]
    step("create-again-other-attributes", client.create_queue, QueueName="diff-main",
         Attributes={"VisibilityTimeout": "31"})
    step("create-bad-name", client.create_queue, QueueName="bad name")
    step("get-url", client.get_queue_url, QueueName="diff-main")
    step("get-url-missing", client.get_queue_url, QueueName="diff-none")
    step("list", client.list_queues, QueueNamePrefix="diff-")
    step("list-page", client.list_queues, QueueNamePrefix="diff-", MaxResults=1)
    step("list-empty", client.list_queues, QueueNamePrefix="nothing-")
    step("attributes-all", client.get_queue_attributes, QueueUrl=url, AttributeNames=["All"])
    step("attributes-none", client.get_queue_attributes, QueueUrl=url)
    step("attributes-unknown", client.get_queue_attributes, QueueUrl=url, AttributeNames=["Nope"])
    arn = client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    step("set-redrive", client.set_queue_attributes, QueueUrl=url, Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 3})})
    step("attributes-redrive", client.get_queue_attributes, QueueUrl=url, AttributeNames=["RedrivePolicy"])
    step("dead-letter-sources", client.list_dead_letter_source_queues, QueueUrl=dlq)
    step("set-unknown-attribute", client.set_queue_attributes, QueueUrl=url, Attributes={"Nope": "1"})
    step("set-bad-visibility", client.set_queue_attributes, QueueUrl=url,
         Attributes={"VisibilityTimeout": "99999"})
    step("send", client.send_message, QueueUrl=url, MessageBody="hello", MessageAttributes={
        "s": {"DataType": "String", "StringValue": "text"}, "n": {"DataType": "Number", "StringValue": "7"},
        "b": {"DataType": "Binary", "BinaryValue": b"\x01\x02"}})
    step("send-delayed", client.send_message, QueueUrl=url, MessageBody="later", DelaySeconds=60)
    step("send-batch", client.send_message_batch, QueueUrl=url, Entries=[
        {"Id": "a", "MessageBody": "a"},
        {"Id": "b", "MessageBody": "b", "MessageAttributes": {"x": {"DataType": "String.c",
                                                                    "StringValue": "y"}}}])
    step("send-batch-empty", client.send_message_batch, QueueUrl=url, Entries=[])
    step("send-batch-same-ids", client.send_message_batch, QueueUrl=url, Entries=[
        {"Id": "a", "MessageBody": "a"}, {"Id": "a", "MessageBody": "b"}])
    step("send-batch-too-many", client.send_message_batch, QueueUrl=url,
         Entries=[{"Id": str(i), "MessageBody": "a"} for i in range(11)])
    step("send-batch-bad-id", client.send_message_batch, QueueUrl=url,
         Entries=[{"Id": "x!", "MessageBody": "a"}])
    received = step("receive", client.receive_message, QueueUrl=url, MaxNumberOfMessages=3,
                    AttributeNames=["All"], MessageAttributeNames=["All"], WaitTimeSeconds=1)
    step("receive-bad-count", client.receive_message, QueueUrl=url, MaxNumberOfMessages=11)
    step("receive-empty", client.receive_message, QueueUrl=url, WaitTimeSeconds=0)
    messages = received.get("Messages", [])
    assert [m["Body"] for m in messages] == ["hello", "a", "b"]
    steps.append(("attribute-digests", [m.get("MD5OfMessageAttributes") for m in messages]))
    assert all(m["MD5OfBody"] == hashlib.md5(m["Body"].encode()).hexdigest() for m in messages)
    step("change-visibility", client.change_message_visibility, QueueUrl=url,
         ReceiptHandle=messages[0]["ReceiptHandle"], VisibilityTimeout=100)
    step("change-visibility-bad-handle", client.change_message_visibility, QueueUrl=url,
         ReceiptHandle="garbage", VisibilityTimeout=1)
    step("change-visibility-batch", client.change_message_visibility_batch, QueueUrl=url, Entries=[
        {"Id": "x", "ReceiptHandle": messages[1]["ReceiptHandle"], "VisibilityTimeout": 100}])
    step("delete", client.delete_message, QueueUrl=url, ReceiptHandle=messages[0]["ReceiptHandle"])
    step("delete-bad-handle", client.delete_message, QueueUrl=url, ReceiptHandle="garbage")
    step("delete-batch", client.delete_message_batch, QueueUrl=url, Entries=[
        {"Id": "x", "ReceiptHandle": messages[1]["ReceiptHandle"]}, {"Id": "y", "ReceiptHandle": "garbage"}])
    step("attributes-counts", client.get_queue_attributes, QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed"])
    step("tag", client.tag_queue, QueueUrl=url, Tags={"team": "a"})
    step("tags", client.list_queue_tags, QueueUrl=url)
    step("untag", client.untag_queue, QueueUrl=url, TagKeys=["team"])
    step("tags-empty", client.list_queue_tags, QueueUrl=url)
    # moto stores these two (SQS and RestMQ refuse them): sent after the receives
    step("send-too-large", client.send_message, QueueUrl=url, MessageBody="x" * 262145)
    step("send-bad-characters", client.send_message, QueueUrl=url, MessageBody="\u0000")
    step("purge", client.purge_queue, QueueUrl=url)
    step("delete-queue", client.delete_queue, QueueUrl=url)
    step("delete-dlq", client.delete_queue, QueueUrl=dlq)
    step("send-deleted", client.send_message, QueueUrl=url, MessageBody="x")
    return steps


def fifo_scenario(client) -> List[Tuple[str, Any]]:
    """FIFO steps: groups, deduplication, sequence numbers, attempt ids."""
    steps: List[Tuple[str, Any]] = []
    step = _recorder(steps)

    url = step("create-fifo", client.create_queue, QueueName="diff.fifo",
               Attributes={"FifoQueue": "true"})["QueueUrl"]
    step("fifo-attributes", client.get_queue_attributes, QueueUrl=url, AttributeNames=["All"])
    first = step("fifo-send", client.send_message, QueueUrl=url, MessageBody="one", MessageGroupId="g",
                 MessageDeduplicationId="d1")
    again = step("fifo-send-duplicate", client.send_message, QueueUrl=url, MessageBody="one",
                 MessageGroupId="g",
                 MessageDeduplicationId="d1")
    steps.append(("fifo-duplicate-same-id", first.get("MessageId") == again.get("MessageId")))
    step("fifo-send-batch", client.send_message_batch, QueueUrl=url, Entries=[
        {"Id": "a", "MessageBody": "two", "MessageGroupId": "g", "MessageDeduplicationId": "d2"},
        {"Id": "b", "MessageBody": "three", "MessageGroupId": "h", "MessageDeduplicationId": "d3"}])
    step("fifo-send-no-group", client.send_message, QueueUrl=url, MessageBody="x",
         MessageDeduplicationId="d9")
    step("fifo-send-no-dedup", client.send_message, QueueUrl=url, MessageBody="x", MessageGroupId="g")
    got = step("fifo-receive", client.receive_message, QueueUrl=url, MaxNumberOfMessages=10,
               AttributeNames=["All"], ReceiveRequestAttemptId="attempt-1", WaitTimeSeconds=1)
    steps.append(("fifo-bodies", sorted(m["Body"] for m in got.get("Messages", []))))
    return steps


def _differences(theirs: Any, ours: Any, path: str = "") -> List[Tuple[str, Any, Any]]:
    if isinstance(theirs, dict) and isinstance(ours, dict):
        found = []
        for key in sorted(set(theirs) | set(ours)):
            found += _differences(theirs.get(key, "<absent>"), ours.get(key, "<absent>"), path + "/" + key)
        return found
    return [] if theirs == ours else [(path, theirs, ours)]


def test_sqs_answers_have_moto_shapes(moto_url, broker):
    theirs = scenario(sqs_client(moto_url, key="testing", secret="testing"))
    ours = scenario(sqs_client(broker.sqs_url))
    assert [name for name, _ in theirs] == [name for name, _ in ours]
    unexpected = []
    for (name, their_answer), (_, our_answer) in zip(theirs, ours):
        if (name, "") in KNOWN_DIFFERENCES:
            continue
        their_shape, our_shape = shape(their_answer), shape(our_answer)
        # error answers must agree on the code and status, not only on the types
        if "error" in their_answer or "error" in our_answer or name == "attribute-digests":
            their_shape, our_shape = their_answer, our_answer
        for path, their_value, our_value in _differences(their_shape, our_shape):
            if (name, path) not in KNOWN_DIFFERENCES:
                unexpected.append((name, path, their_value, our_value))
    assert unexpected == []


def test_sqs_fifo_answers_have_moto_shapes(moto_url, broker):
    theirs = fifo_scenario(sqs_client(moto_url, key="testing", secret="testing"))
    ours = fifo_scenario(sqs_client(broker.sqs_url))
    assert [name for name, _ in theirs] == [name for name, _ in ours]
    for (name, their_answer), (_, our_answer) in zip(theirs, ours):
        if name == "fifo-duplicate-same-id":
            # a duplicate send answers the first message's id and sequence number, as SQS
            # does (moto makes up a new id for the message it drops)
            assert our_answer is True
        elif name == "fifo-bodies":
            # SQS (and moto) may hand out several messages of one group in one receive;
            # RestMQ keeps one message in flight per group (ordering keys, issue 16)
            assert their_answer == ["one", "three", "two"] and our_answer == ["one", "three"]
        elif "error" in their_answer or "error" in our_answer:
            assert their_answer == our_answer, name
        else:
            assert shape(their_answer) == shape(our_answer), name


def test_sqs_attribute_values_agree_with_moto(moto_url, broker):
    """Values that do not vary per run agree too: the defaults of a new queue."""
    answers = []
    for client in (sqs_client(moto_url, key="testing", secret="testing"), sqs_client(broker.sqs_url)):
        url = client.create_queue(QueueName="diff-defaults")["QueueUrl"]
        answers.append(client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"])
        client.delete_queue(QueueUrl=url)
    theirs, ours = answers
    same = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed", "DelaySeconds", "MessageRetentionPeriod",
            "ReceiveMessageWaitTimeSeconds", "VisibilityTimeout")
    assert {name: theirs[name] for name in same} == {name: ours[name] for name in same}
    assert set(theirs) == set(ours)
    # moto defaults to SQS's newer 1 MiB; RestMQ to the 256 KiB ([sqs] max_message_bytes)
    assert ours["MaximumMessageSize"] == "262144"


def _signed_form(base: str, path: str, body: str) -> Tuple[int, ET.Element]:
    request = AWSRequest(method="POST", url=base + path, data=body,
                         headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    SigV4Auth(Credentials("testing", "testing"), "sqs", "us-east-1").add_auth(request)
    prepared = request.prepare()
    data = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
    raw = urllib.request.Request(prepared.url, data=data, headers=dict(prepared.headers), method="POST")
    try:
        with urllib.request.urlopen(raw, timeout=30) as reply:
            return reply.status, ET.fromstring(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, ET.fromstring(error.read())


def _tags(element: ET.Element) -> Any:
    """The element tree's tag structure (text only where it is a fixed code)."""
    children = [_tags(child) for child in element]
    name = element.tag.split("}")[-1]
    if name in ("Code", "Type", "Id", "Name"):
        return (name, element.text)
    return (name, children) if children else name


def test_sqs_query_protocol_xml_has_moto_structure(moto_url, broker):
    def run(base: str, account: str) -> List[Any]:
        queue = "/%s/diff-xml" % account
        bodies = [("/", "Action=CreateQueue&QueueName=diff-xml&Version=2012-11-05"),
                  (queue, "Action=SendMessage&MessageBody=hi&Version=2012-11-05"),
                  (queue, "Action=SendMessageBatch&SendMessageBatchRequestEntry.1.Id=a&"
                          "SendMessageBatchRequestEntry.1.MessageBody=x&Version=2012-11-05"),
                  (queue, "Action=ReceiveMessage&MaxNumberOfMessages=1&AttributeName.1=SentTimestamp&"
                          "Version=2012-11-05"),
                  (queue, "Action=GetQueueAttributes&AttributeName.1=VisibilityTimeout&Version=2012-11-05"),
                  (queue, "Action=TagQueue&Tag.1.Key=k&Tag.1.Value=v&Version=2012-11-05"),
                  (queue, "Action=ListQueueTags&Version=2012-11-05"),
                  ("/", "Action=ListQueues&QueueNamePrefix=diff-xml&Version=2012-11-05"),
                  ("/", "Action=GetQueueUrl&QueueName=diff-nothing&Version=2012-11-05"),
                  (queue, "Action=PurgeQueue&Version=2012-11-05"),
                  (queue, "Action=DeleteQueue&Version=2012-11-05")]
        out = []
        for path, body in bodies:
            status, root = _signed_form(base, path, body)
            tree = _tags(root)
            if tree[0] == "ErrorResponse":
                # moto adds a lower-case <message> of its own to its errors
                tree = ("ErrorResponse", [[item for item in tree[1][0][1] if item in (
                    ("Type", "Sender"), ("Code", "AWS.SimpleQueueService.NonExistentQueue"))], "RequestId"])
            out.append((status, tree))
        return out

    assert run(moto_url, "123456789012") == run(broker.sqs_url, "000000000000")
