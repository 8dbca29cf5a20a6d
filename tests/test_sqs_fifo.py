"""Message attributes and FIFO queues through the real boto3 and the AWS CLI, on
issue 16's metadata and ordering keys: typed attributes with SQS's MD5 digests
(checked against moto's own computation), MessageGroupId order with one message
in flight per group, deduplication in SQS's 5-minute window, SequenceNumber,
ReceiveRequestAttemptId, and the same messages over RestMQ's API and groups."""

from __future__ import annotations

import json
import urllib.request

import pytest
from botocore.exceptions import ClientError
from moto.sqs.models import Message as MotoMessage

from tests.sqs_support import SqsBroker, aws_cli, cli_json, receive_all, sqs_client

ATTRIBUTES = {
    "color": {"DataType": "String", "StringValue": "blue \u00e9"},
    "count": {"DataType": "Number", "StringValue": "42"},
    "price": {"DataType": "Number.float", "StringValue": "-1.5e3"},
    "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xffraw"},
    "custom": {"DataType": "String.json", "StringValue": '{"a": 1}'},
}


@pytest.fixture(scope="module")
def broker(redis_server, tmp_path_factory):
    started = SqsBroker(tmp_path_factory.mktemp("sqs-fifo"), "fifo", redis_server.port).start()
    yield started
    started.stop()


@pytest.fixture()
def sqs(broker):
    client = sqs_client(broker.sqs_url)
    yield client
    client.close()


def moto_md5(attributes) -> str:
    message = MotoMessage("id", "body")
    message.message_attributes = {name: dict(value) for name, value in attributes.items()}
    return message.attribute_md5


def fifo_queue(sqs, name, **attributes):
    attributes = dict({"FifoQueue": "true"}, **attributes)
    return sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]


def code_of(excinfo):
    return (excinfo.value.response["Error"]["Code"],
            excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"])


# message attributes

def test_sqs_message_attributes_round_trip(sqs):
    url = sqs.create_queue(QueueName="attrs")["QueueUrl"]
    sent = sqs.send_message(QueueUrl=url, MessageBody="with attributes", MessageAttributes=ATTRIBUTES)
    assert sent["MD5OfMessageAttributes"] == moto_md5(ATTRIBUTES)
    [message] = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"],
                                    WaitTimeSeconds=1)["Messages"]
    assert message["MessageAttributes"] == ATTRIBUTES
    assert message["MD5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    # only the asked attributes come back, with the digest of those
    [again] = receive_all(sqs, url, 1, MessageAttributeNames=["color", "c.*", "nothere"])
    chosen = {name: ATTRIBUTES[name] for name in ("color", "count", "custom")}
    assert again["MessageAttributes"] == chosen and again["MD5OfMessageAttributes"] == moto_md5(chosen)
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"], VisibilityTimeout=0)
    [plain] = receive_all(sqs, url, 1)
    assert "MessageAttributes" not in plain and "MD5OfMessageAttributes" not in plain


def test_sqs_message_attributes_in_batches_and_the_query_protocol(sqs, broker):
    url = sqs.create_queue(QueueName="attrs-batch")["QueueUrl"]
    sent = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "a", "MessageBody": "a", "MessageAttributes": {"k": {"DataType": "String",
                                                                    "StringValue": "1"}}},
        {"Id": "b", "MessageBody": "b", "MessageAttributes": {"n": {"DataType": "Number",
                                                                    "StringValue": "x"}}},
        {"Id": "c", "MessageBody": "c"}])
    assert [e["Id"] for e in sent["Successful"]] == ["a", "c"]
    assert sent["Successful"][0]["MD5OfMessageAttributes"] == moto_md5({"k": {"DataType": "String",
                                                                              "StringValue": "1"}})
    assert [(f["Id"], f["Code"]) for f in sent["Failed"]] == [("b", "InvalidParameterValue")]
    body = urllib.parse.urlencode({
        "Action": "SendMessage", "MessageBody": "via query", "MessageAttribute.1.Name": "q",
        "MessageAttribute.1.Value.DataType": "Binary", "MessageAttribute.1.Value.BinaryValue": "AAEC"})
    request = urllib.request.Request(url, data=body.encode(), method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert moto_md5({"q": {"DataType": "Binary",
                               "BinaryValue": b"\x00\x01\x02"}}).encode() in reply.read()
    got = receive_all(sqs, url, 3, MessageAttributeNames=["All"])
    assert [m.get("MessageAttributes") for m in got] == [
        {"k": {"DataType": "String", "StringValue": "1"}}, None,
        {"q": {"DataType": "Binary", "BinaryValue": b"\x00\x01\x02"}}]


def test_sqs_attributes_are_restmq_attributes(sqs, broker):
    url = sqs.create_queue(QueueName="attrs-rest")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="to rest", MessageAttributes=ATTRIBUTES)
    with urllib.request.urlopen("%s/q/attrs-rest" % broker.url, timeout=10) as response:
        popped = json.loads(response.read())
    assert popped["value"] == "to rest"
    assert popped["attributes"] == {"color": "blue \u00e9", "count": "42", "price": "-1.5e3",
                                    "blob": "AP9yYXc=", "custom": '{"a": 1}'}
    # and the other way: a REST publish's attributes arrive as String attributes
    request = urllib.request.Request("%s/q/attrs-rest" % broker.url, method="POST",
                                     data=json.dumps({"value": "from rest",
                                                      "attributes": {"origin": "curl"}}).encode(),
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()
    [message] = receive_all(sqs, url, 1, MessageAttributeNames=["All"])
    assert message["Body"] == "from rest"
    assert message["MessageAttributes"] == {"origin": {"DataType": "String", "StringValue": "curl"}}
    assert message["MD5OfMessageAttributes"] == moto_md5(message["MessageAttributes"])


def test_sqs_messages_reach_restmq_consumer_groups(sqs, broker):
    url = sqs.create_queue(QueueName="with-groups")["QueueUrl"]
    urllib.request.urlopen(urllib.request.Request("%s/q/with-groups/groups/audit" % broker.url,
                                                  method="POST", data=b""), timeout=10).read()
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "m%d" % i} for i in range(3)])
    # the SQS consumers (the queue's default consumers) get them all, and so does the group
    assert [m["Body"] for m in receive_all(sqs, url, 3)] == ["m0", "m1", "m2"]
    audited = []
    for _ in range(3):
        with urllib.request.urlopen("%s/q/with-groups?group=audit" % broker.url, timeout=10) as response:
            audited.append(json.loads(response.read())["value"])
    assert audited == ["m0", "m1", "m2"]


def test_sqs_system_attributes(sqs, broker):
    url = sqs.create_queue(QueueName="system-attrs")["QueueUrl"]
    sent = sqs.send_message(QueueUrl=url, MessageBody="traced", MessageSystemAttributes={
        "AWSTraceHeader": {"DataType": "String", "StringValue": "Root=1-5759e988-bd862e3fe1be46a994272793"}})
    assert sent["MD5OfMessageSystemAttributes"] == moto_md5(
        {"AWSTraceHeader": {"DataType": "String", "StringValue": "Root=1-5759e988-bd862e3fe1be46a994272793"}})
    [first] = sqs.receive_message(QueueUrl=url, MessageSystemAttributeNames=["All"], VisibilityTimeout=0,
                                  WaitTimeSeconds=1)["Messages"]
    attributes = first["Attributes"]
    assert attributes["AWSTraceHeader"] == "Root=1-5759e988-bd862e3fe1be46a994272793"
    assert int(attributes["ApproximateFirstReceiveTimestamp"]) >= int(attributes["SentTimestamp"])
    [second] = receive_all(sqs, url, 1, MessageSystemAttributeNames=["All"])
    assert second["Attributes"]["ApproximateReceiveCount"] == "2"
    assert second["Attributes"]["ApproximateFirstReceiveTimestamp"] == \
        attributes["ApproximateFirstReceiveTimestamp"]


# FIFO queues

def test_sqs_fifo_groups_in_order_one_in_flight_each(sqs):
    url = fifo_queue(sqs, "orders.fifo", ContentBasedDeduplication="true")
    for i in range(3):
        for group in ("A", "B"):
            sent = sqs.send_message(QueueUrl=url, MessageBody="%s%d" % (group, i), MessageGroupId=group)
            assert len(sent["SequenceNumber"]) == 20
    seen = {"A": [], "B": []}
    sequence = []
    for _ in range(3):
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                  AttributeNames=["MessageGroupId", "SequenceNumber"])["Messages"]
        # one message in flight per group: each receive gets the next of each group
        assert sorted(m["Attributes"]["MessageGroupId"] for m in got) == ["A", "B"]
        for message in got:
            seen[message["Attributes"]["MessageGroupId"]].append(message["Body"])
            sequence.append(int(message["Attributes"]["SequenceNumber"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert seen == {"A": ["A0", "A1", "A2"], "B": ["B0", "B1", "B2"]}
    assert sorted(sequence) == sorted(set(sequence))


def test_sqs_fifo_unfinished_message_blocks_its_group(sqs):
    url = fifo_queue(sqs, "blocking.fifo")
    for i in range(2):
        sqs.send_message(QueueUrl=url, MessageBody="job %d" % i, MessageGroupId="g",
                         MessageDeduplicationId=str(i))
    [first] = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60,
                                  WaitTimeSeconds=1)["Messages"]
    assert first["Body"] == "job 0"
    # job 1 waits while job 0 is in flight; job 0 comes back first when its lease ends
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=1)
    [again] = receive_all(sqs, url, 1, AttributeNames=["ApproximateReceiveCount"])
    assert (again["Body"], again["Attributes"]["ApproximateReceiveCount"]) == ("job 0", "2")
    sqs.delete_message(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"])
    [second] = receive_all(sqs, url, 1)
    assert second["Body"] == "job 1"
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
                                    )["Attributes"]["ApproximateNumberOfMessages"] == "0"


def test_sqs_fifo_deduplication(sqs):
    url = fifo_queue(sqs, "dedup.fifo")
    first = sqs.send_message(QueueUrl=url, MessageBody="once", MessageGroupId="g",
                             MessageDeduplicationId="d1")
    again = sqs.send_message(QueueUrl=url, MessageBody="once more", MessageGroupId="g",
                             MessageDeduplicationId="d1")
    assert (again["MessageId"], again["SequenceNumber"]) == (first["MessageId"], first["SequenceNumber"])
    batch = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "x", "MessageBody": "x", "MessageGroupId": "g", "MessageDeduplicationId": "d1"},
        {"Id": "y", "MessageBody": "y", "MessageGroupId": "g", "MessageDeduplicationId": "d2"},
        {"Id": "z", "MessageBody": "z", "MessageGroupId": "g", "MessageDeduplicationId": "d2"}])
    ids = {e["Id"]: e["MessageId"] for e in batch["Successful"]}
    assert ids["x"] == first["MessageId"] and ids["y"] == ids["z"] != first["MessageId"]
    bodies = []
    for _ in range(2):
        [message] = receive_all(sqs, url, 1, AttributeNames=["MessageDeduplicationId"])
        bodies.append((message["Body"], message["Attributes"]["MessageDeduplicationId"]))
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert bodies == [("once", "d1"), ("y", "d2")]
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
    # the window outlives the message: a resend right after delivery is still a duplicate
    assert sqs.send_message(QueueUrl=url, MessageBody="late", MessageGroupId="g",
                            MessageDeduplicationId="d1")["MessageId"] == first["MessageId"]
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)


def test_sqs_fifo_content_based_deduplication(sqs):
    url = fifo_queue(sqs, "content.fifo", ContentBasedDeduplication="true")
    first = sqs.send_message(QueueUrl=url, MessageBody="same body", MessageGroupId="a")
    assert sqs.send_message(QueueUrl=url, MessageBody="same body", MessageGroupId="b")["MessageId"] == \
        first["MessageId"]
    other = sqs.send_message(QueueUrl=url, MessageBody="other body", MessageGroupId="a")
    assert other["MessageId"] != first["MessageId"]
    # an explicit id wins over the body's
    explicit = sqs.send_message(QueueUrl=url, MessageBody="same body", MessageGroupId="a",
                                MessageDeduplicationId="explicit")
    assert explicit["MessageId"] != first["MessageId"]
    bodies = []
    for _ in range(3):
        [message] = receive_all(sqs, url, 1)
        bodies.append(message["Body"])
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert bodies == ["same body", "other body", "same body"]


def test_sqs_fifo_deduplication_scope_message_group(sqs):
    url = fifo_queue(sqs, "scoped.fifo", DeduplicationScope="messageGroup",
                     FifoThroughputLimit="perMessageGroupId")
    ids = [sqs.send_message(QueueUrl=url, MessageBody="b", MessageGroupId=group,
                            MessageDeduplicationId="same")["MessageId"] for group in ("a", "b", "a")]
    assert ids[0] == ids[2] != ids[1]


def test_sqs_fifo_rules(sqs):
    url = fifo_queue(sqs, "rules.fifo")
    with pytest.raises(ClientError) as excinfo:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageDeduplicationId="d")
    assert code_of(excinfo) == ("MissingParameter", 400)
    with pytest.raises(ClientError) as excinfo:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g")
    assert code_of(excinfo) == ("InvalidParameterValue", 400)
    with pytest.raises(ClientError) as excinfo:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g", MessageDeduplicationId="d",
                         DelaySeconds=5)
    assert code_of(excinfo) == ("InvalidParameterValue", 400)
    plain = sqs.create_queue(QueueName="rules-standard")["QueueUrl"]
    with pytest.raises(ClientError) as excinfo:
        sqs.send_message(QueueUrl=plain, MessageBody="x", MessageDeduplicationId="d")
    assert code_of(excinfo) == ("InvalidParameterValue", 400)
    with pytest.raises(ClientError) as excinfo:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"FifoQueue": "false"})
    assert code_of(excinfo)[1] == 400
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (attributes["FifoQueue"], attributes["ContentBasedDeduplication"],
            attributes["DeduplicationScope"],
            attributes["FifoThroughputLimit"]) == ("true", "false", "queue", "perQueue")
    # a FIFO queue's dead letters go to a FIFO queue
    arn = sqs.get_queue_attributes(QueueUrl=plain, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    with pytest.raises(ClientError) as excinfo:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": arn, "maxReceiveCount": 2})})
    assert code_of(excinfo) == ("InvalidParameterValue", 400)


def test_sqs_fifo_receive_request_attempt_id(sqs):
    url = fifo_queue(sqs, "attempts.fifo", ContentBasedDeduplication="true")
    for group in ("a", "b", "c"):
        sqs.send_message(QueueUrl=url, MessageBody=group, MessageGroupId=group)
    first = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2, ReceiveRequestAttemptId="try-1",
                                WaitTimeSeconds=1)["Messages"]
    # the retry of a receive whose answer was lost gets the same messages and receipts
    retry = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2,
                                ReceiveRequestAttemptId="try-1")["Messages"]
    assert [(m["Body"], m["ReceiptHandle"]) for m in retry] == [(m["Body"],
                                                                 m["ReceiptHandle"]) for m in first]
    fresh = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2,
                                ReceiveRequestAttemptId="try-2")["Messages"]
    assert [m["Body"] for m in fresh] == ["c"]


def test_aws_cli_fifo(broker):
    def aws(*args):
        return cli_json(aws_cli(broker.sqs_url, *args))

    url = aws("create-queue", "--queue-name", "cli.fifo", "--attributes", "FifoQueue=true")["QueueUrl"]
    one = aws("send-message", "--queue-url", url, "--message-body", "first", "--message-group-id", "g",
              "--message-deduplication-id", "one")
    dup = aws("send-message", "--queue-url", url, "--message-body", "first again", "--message-group-id", "g",
              "--message-deduplication-id", "one")
    assert dup["MessageId"] == one["MessageId"]
    aws("send-message", "--queue-url", url, "--message-body", "second", "--message-group-id", "g",
        "--message-deduplication-id", "two", "--message-attributes",
        json.dumps({"kind": {"DataType": "String", "StringValue": "cli"}}))
    got = aws("receive-message", "--queue-url", url, "--max-number-of-messages", "10", "--wait-time-seconds",
              "1",
              "--attribute-names", "All", "--message-attribute-names", "All")["Messages"]
    assert [m["Body"] for m in got] == ["first"]
    aws("delete-message", "--queue-url", url, "--receipt-handle", got[0]["ReceiptHandle"])
    [second] = aws("receive-message", "--queue-url", url, "--wait-time-seconds", "2",
                   "--message-attribute-names", "All")["Messages"]
    assert second["Body"] == "second"
    assert second["MessageAttributes"] == {"kind": {"DataType": "String", "StringValue": "cli"}}


def test_purge_clears_messages_parked_behind_holders_that_are_gone(sqs, redis_server):
    # 300 message groups, each with one message in flight (holding its group) and one
    # parked behind it; the holders' leases vanish (as if lost): PurgeQueue still
    # finds every parked message, a few hundred groups per script call
    import redis
    from tests.sqs_support import SQS_DB
    url = fifo_queue(sqs, "parked.fifo", ContentBasedDeduplication="true")
    for g in range(300):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": "g%d m%d" % (g, i), "MessageGroupId": "g%d" % g}
            for i in range(2)])
    held = 0
    while held < 300:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=600)
        assert got.get("Messages"), held
        held += len(got["Messages"])
    assert held == 300
    client = redis.Redis(port=redis_server.port, db=SQS_DB)
    try:
        assert client.hlen("parked.fifo:okeys") == 300
        # each group's second message: parked once a receive met it, else still waiting
        assert int(client.get("parked.fifo:parked")) + client.llen("parked.fifo:queue") == 300
        assert int(client.get("parked.fifo:parked")) > 200
        # the holders are gone (their bodies expired with their leases)
        client.delete("parked.fifo:inflight", *client.hvals("parked.fifo:okeys"))
        sqs.purge_queue(QueueUrl=url)
        assert client.exists("parked.fifo:okeys") == 0
        assert list(client.scan_iter("parked.fifo#:ok.*")) == []
        assert [key for key in client.scan_iter("parked.fifo:*") if key.split(b":")[-1].isdigit()] == []
    finally:
        client.close()
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
