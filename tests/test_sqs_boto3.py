"""The SQS API through the real boto3, against a real `twistd -n restmq --sqs-port`:
every action, SQS's errors and statuses, visibility, dead letters, delays, long
polling, and the same queues over RestMQ's own HTTP API and SSE."""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET

import pytest
from botocore.exceptions import ClientError

from tests.sqs_support import SqsBroker, receive_all, sqs_client, wait_for_long_poll

NS = {"sqs": "http://queue.amazonaws.com/doc/2012-11-05/"}


@pytest.fixture(scope="module")
def broker(redis_server, tmp_path_factory):
    directory = tmp_path_factory.mktemp("sqs")
    started = SqsBroker(directory, "sqs", redis_server.port,
                        conf="[sqs]\nmax_inflight = 25\n").start()
    yield started
    started.stop()


@pytest.fixture()
def sqs(broker):
    client = sqs_client(broker.sqs_url)
    yield client
    client.close()


@pytest.fixture()
def queue(sqs, request):
    digest = hashlib.md5(request.node.name.encode()).hexdigest()[:8]
    label = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name.replace("test_sqs_", ""))[:60]
    name = "t-%s-%s" % (label, digest)
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    yield url
    try:
        sqs.delete_queue(QueueUrl=url)
    except ClientError:
        pass


def error_of(excinfo):
    error = excinfo.value.response["Error"]
    return error["Code"], excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"]


def md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


# queues

def test_sqs_create_get_list_delete(sqs, broker):
    names = ["ls-alpha", "ls-beta", "ls-gamma", "other-q"]
    urls = [sqs.create_queue(QueueName=name)["QueueUrl"] for name in names]
    assert urls[0] == broker.queue_url("ls-alpha")
    assert sqs.get_queue_url(QueueName="ls-beta")["QueueUrl"] == broker.queue_url("ls-beta")
    listed = sqs.list_queues(QueueNamePrefix="ls-")["QueueUrls"]
    assert listed == [broker.queue_url(n) for n in ("ls-alpha", "ls-beta", "ls-gamma")]
    first = sqs.list_queues(QueueNamePrefix="ls-", MaxResults=2)
    assert first["QueueUrls"] == [broker.queue_url("ls-alpha"), broker.queue_url("ls-beta")]
    second = sqs.list_queues(QueueNamePrefix="ls-", MaxResults=2, NextToken=first["NextToken"])
    assert second["QueueUrls"] == [broker.queue_url("ls-gamma")] and "NextToken" not in second
    # the paginator boto3 users iterate with follows NextToken
    pages = sqs.get_paginator("list_queues").paginate(QueueNamePrefix="ls-", PaginationConfig={"PageSize": 1})
    assert [url for page in pages for url in page.get("QueueUrls", [])] == listed
    # creating again with the same attributes answers the same URL
    assert sqs.create_queue(QueueName="ls-alpha")["QueueUrl"] == urls[0]
    for url in urls:
        sqs.delete_queue(QueueUrl=url)
    assert "QueueUrls" not in sqs.list_queues(QueueNamePrefix="ls-")
    with pytest.raises(sqs.exceptions.QueueDoesNotExist) as excinfo:
        sqs.get_queue_url(QueueName="ls-alpha")
    assert error_of(excinfo) == ("AWS.SimpleQueueService.NonExistentQueue", 400)


def test_sqs_create_existing_with_other_attributes(sqs, queue):
    name = queue.rsplit("/", 1)[1]
    with pytest.raises(sqs.exceptions.QueueNameExists) as excinfo:
        sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "7"})
    assert error_of(excinfo) == ("QueueAlreadyExists", 400)
    assert "VisibilityTimeout" in excinfo.value.response["Error"]["Message"]
    assert sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})["QueueUrl"] == queue


@pytest.mark.parametrize("name", ["", "a" * 81, "bad name", "x.fifo.y", "slash/name", "colon:name"])
def test_sqs_create_refuses_bad_names(sqs, name):
    with pytest.raises(ClientError) as excinfo:
        sqs.create_queue(QueueName=name)
    assert error_of(excinfo)[1] == 400


def test_sqs_fifo_name_needs_the_fifo_attribute(sqs):
    with pytest.raises(ClientError) as excinfo:
        sqs.create_queue(QueueName="named.fifo")
    assert error_of(excinfo) == ("InvalidParameterValue", 400)
    with pytest.raises(ClientError) as excinfo:
        sqs.create_queue(QueueName="plain", Attributes={"FifoQueue": "true"})
    assert error_of(excinfo) == ("InvalidParameterValue", 400)


def test_sqs_unknown_queue_errors(sqs, broker):
    url = broker.queue_url("never-made")
    for call, kwargs in [(sqs.send_message, {"MessageBody": "x"}), (sqs.receive_message, {}),
                         (sqs.get_queue_attributes, {"AttributeNames": ["All"]}),
                         (sqs.purge_queue, {}), (sqs.delete_queue, {}), (sqs.list_queue_tags, {}),
                         (sqs.delete_message, {"ReceiptHandle": "never-made:1:abc"})]:
        with pytest.raises(sqs.exceptions.QueueDoesNotExist) as excinfo:
            call(QueueUrl=url, **kwargs)
        assert error_of(excinfo) == ("AWS.SimpleQueueService.NonExistentQueue", 400), call
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.send_message(QueueUrl="http://elsewhere/123456789012/never-made", MessageBody="x")


def test_sqs_attributes_all_and_each(sqs, queue):
    every = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    for name in ("QueueArn", "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                 "ApproximateNumberOfMessagesDelayed", "CreatedTimestamp", "LastModifiedTimestamp",
                 "VisibilityTimeout", "MaximumMessageSize", "MessageRetentionPeriod", "DelaySeconds",
                 "ReceiveMessageWaitTimeSeconds"):
        assert name in every, name
        single = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=[name])["Attributes"]
        assert single == {name: every[name]}
    name = queue.rsplit("/", 1)[1]
    assert every["QueueArn"] == "arn:aws:sqs:us-east-1:000000000000:" + name
    assert (every["VisibilityTimeout"], every["MaximumMessageSize"], every["MessageRetentionPeriod"],
            every["DelaySeconds"]) == ("30", "262144", "345600", "0")
    assert "RedrivePolicy" not in every and "FifoQueue" not in every
    sqs.set_queue_attributes(QueueUrl=queue, Attributes={
        "VisibilityTimeout": "12", "DelaySeconds": "3", "MessageRetentionPeriod": "600",
        "ReceiveMessageWaitTimeSeconds": "2", "MaximumMessageSize": "2048", "Policy": "{}"})
    changed = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert (changed["VisibilityTimeout"], changed["DelaySeconds"], changed["MessageRetentionPeriod"],
            changed["ReceiveMessageWaitTimeSeconds"], changed["MaximumMessageSize"], changed["Policy"]) == \
        ("12", "3", "600", "2", "2048", "{}")
    assert int(changed["LastModifiedTimestamp"]) >= int(every["CreatedTimestamp"])


@pytest.mark.parametrize("attributes,code", [
    ({"NoSuchThing": "1"}, "InvalidAttributeName"),
    ({"QueueArn": "x"}, "InvalidAttributeName"),
    ({"ContentBasedDeduplication": "true"}, "InvalidAttributeName"),
    ({"VisibilityTimeout": "43201"}, "InvalidAttributeValue"),
    ({"DelaySeconds": "-1"}, "InvalidAttributeValue"),
    ({"MaximumMessageSize": "1023"}, "InvalidAttributeValue"),
    ({"MessageRetentionPeriod": "abc"}, "InvalidAttributeValue"),
    ({"RedrivePolicy": "not json"}, "InvalidParameterValue"),
    ({"RedrivePolicy": json.dumps({"maxReceiveCount": 2})}, "InvalidParameterValue"),
    ({"RedrivePolicy": json.dumps({"deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:nodlq",
                                   "maxReceiveCount": 2})}, "InvalidParameterValue"),
    ({"RedrivePolicy": json.dumps({"deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:x",
                                   "maxReceiveCount": 1001})}, "InvalidParameterValue"),
])
def test_sqs_set_attributes_refuses_bad_input(sqs, queue, attributes, code):
    with pytest.raises(ClientError) as excinfo:
        sqs.set_queue_attributes(QueueUrl=queue, Attributes=attributes)
    assert error_of(excinfo) == (code, 400)


def test_sqs_get_unknown_attribute_name(sqs, queue):
    with pytest.raises(ClientError) as excinfo:
        sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["Nope"])
    assert error_of(excinfo) == ("InvalidAttributeName", 400)


def test_sqs_tags(sqs, broker):
    url = sqs.create_queue(QueueName="tagged", tags={"team": "a", "env": "test"})["QueueUrl"]
    try:
        assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "a", "env": "test"}
        sqs.tag_queue(QueueUrl=url, Tags={"team": "b", "cost": "1"})
        assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "b", "env": "test", "cost": "1"}
        sqs.untag_queue(QueueUrl=url, TagKeys=["env", "cost"])
        assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "b"}
        with pytest.raises(ClientError) as excinfo:
            sqs.tag_queue(QueueUrl=url, Tags={"k%d" % i: "v" for i in range(50)})
        assert error_of(excinfo) == ("InvalidParameterValue", 400)
        assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "b"}
    finally:
        sqs.delete_queue(QueueUrl=url)


# messages

def test_sqs_send_receive_delete(sqs, queue):
    body = "hello \u00e9\u4e16 \U0001f600\r\n<x>&"
    sent = sqs.send_message(QueueUrl=queue, MessageBody=body)
    assert sent["MD5OfMessageBody"] == md5(body)
    reply = sqs.receive_message(QueueUrl=queue, AttributeNames=["All"], WaitTimeSeconds=1)
    [message] = reply["Messages"]
    assert (message["Body"], message["MessageId"], message["MD5OfBody"]) == \
        (body, sent["MessageId"], md5(body))
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"
    assert int(message["Attributes"]["SentTimestamp"]) > 1_600_000_000_000
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert (attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesNotVisible"]) \
        == ("0", "1")
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    # deleting again succeeds, as SQS's does
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert (attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesNotVisible"]) \
        == ("0", "0")
    assert "Messages" not in sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0)


def test_sqs_receive_only_asked_attributes(sqs, queue):
    sqs.send_message(QueueUrl=queue, MessageBody="a")
    [message] = sqs.receive_message(QueueUrl=queue, MessageSystemAttributeNames=["ApproximateReceiveCount"],
                                    WaitTimeSeconds=1)["Messages"]
    assert message["Attributes"] == {"ApproximateReceiveCount": "1"}


def test_sqs_batches(sqs, queue):
    entries = [{"Id": "m%d" % i, "MessageBody": "body %d" % i} for i in range(10)]
    sent = sqs.send_message_batch(QueueUrl=queue, Entries=entries)
    assert sent["Failed"] == [] and [e["Id"] for e in sent["Successful"]] == ["m%d" % i for i in range(10)]
    assert all(e["MD5OfMessageBody"] == md5("body %s" % e["Id"][1:]) for e in sent["Successful"])
    got = receive_all(sqs, queue, 10)
    assert sorted(m["Body"] for m in got) == sorted("body %d" % i for i in range(10))
    # RestMQ's queues are FIFO lists: a standard queue answers in order, too
    assert [m["Body"] for m in got] == ["body %d" % i for i in range(10)]
    handles = [{"Id": "d%d" % i, "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)]
    deleted = sqs.delete_message_batch(QueueUrl=queue, Entries=handles[:9] + [
        {"Id": "bad", "ReceiptHandle": "garbage"}])
    assert sorted(e["Id"] for e in deleted["Successful"]) == sorted("d%d" % i for i in range(9))
    assert [(f["Id"], f["Code"], f["SenderFault"]) for f in deleted["Failed"]] == \
        [("bad", "ReceiptHandleIsInvalid", True)]
    assert sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
                                    )["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "1"
    assert sqs.delete_message_batch(QueueUrl=queue, Entries=handles[9:])["Successful"] == [{"Id": "d9"}]
    assert sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
                                    )["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "0"


@pytest.mark.parametrize("entries,exception,code", [
    ([], "EmptyBatchRequest", "AWS.SimpleQueueService.EmptyBatchRequest"),
    ([{"Id": "x%d" % i, "MessageBody": "b"} for i in range(11)], "TooManyEntriesInBatchRequest",
     "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"),
    ([{"Id": "same", "MessageBody": "b"}, {"Id": "same", "MessageBody": "c"}], "BatchEntryIdsNotDistinct",
     "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"),
    ([{"Id": "bad id!", "MessageBody": "b"}], "InvalidBatchEntryId",
     "AWS.SimpleQueueService.InvalidBatchEntryId"),
    ([{"Id": "a", "MessageBody": "x" * 200000}, {"Id": "b", "MessageBody": "y" * 100000}],
     "BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong"),
])
def test_sqs_batch_errors(sqs, queue, entries, exception, code):
    with pytest.raises(getattr(sqs.exceptions, exception)) as excinfo:
        sqs.send_message_batch(QueueUrl=queue, Entries=entries)
    assert error_of(excinfo) == (code, 400)
    assert sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"]
                                    )["Attributes"]["ApproximateNumberOfMessages"] == "0"


def test_sqs_batch_entry_errors_fail_alone(sqs, queue):
    sent = sqs.send_message_batch(QueueUrl=queue, Entries=[
        {"Id": "ok", "MessageBody": "fine"}, {"Id": "big", "MessageBody": "x" * 262145},
        {"Id": "ctl", "MessageBody": "bad \u0001 char"}])
    assert [e["Id"] for e in sent["Successful"]] == ["ok"]
    assert sorted((f["Id"], f["Code"]) for f in sent["Failed"]) == [
        ("big", "InvalidParameterValue"), ("ctl", "InvalidMessageContents")]


def test_sqs_message_limits(sqs, queue):
    with pytest.raises(ClientError) as excinfo:
        sqs.send_message(QueueUrl=queue, MessageBody="x" * (256 * 1024 + 1))
    assert error_of(excinfo) == ("InvalidParameterValue", 400)
    sqs.send_message(QueueUrl=queue, MessageBody="x" * (256 * 1024))
    with pytest.raises(ClientError) as excinfo:
        sqs.send_message(QueueUrl=queue, MessageBody="nul \u0000 here")
    assert error_of(excinfo) == ("InvalidMessageContents", 400)
    sqs.set_queue_attributes(QueueUrl=queue, Attributes={"MaximumMessageSize": "1024"})
    with pytest.raises(ClientError) as excinfo:
        sqs.send_message(QueueUrl=queue, MessageBody="x" * 1025)
    assert error_of(excinfo) == ("InvalidParameterValue", 400)
    for bad in ({"MaxNumberOfMessages": 11}, {"MaxNumberOfMessages": 0}, {"WaitTimeSeconds": 21},
                {"VisibilityTimeout": 43201}):
        with pytest.raises(ClientError) as excinfo:
            sqs.receive_message(QueueUrl=queue, **bad)
        assert error_of(excinfo) == ("InvalidParameterValue", 400), bad


def test_sqs_send_to_a_full_queue_is_refused_and_counted(sqs, queue, broker):
    # maxlen set over REST; the refusal counts in /metrics as a REST one does
    name = queue.rsplit("/", 1)[1]
    urllib.request.urlopen(urllib.request.Request("%s/settings/%s" % (broker.url, name),
                                                  data=b"maxlen=1", method="POST"), timeout=10).read()
    sqs.send_message(QueueUrl=queue, MessageBody="fits")
    with pytest.raises(ClientError) as excinfo:
        sqs.send_message(QueueUrl=queue, MessageBody="does not")
    assert error_of(excinfo)[0] == "OverLimit"
    with urllib.request.urlopen("%s/metrics" % broker.url, timeout=10) as reply:
        metrics = reply.read().decode()
    assert 'restmq_queue_full_refusals_total{queue="%s"} 1.0' % name in metrics


def test_sqs_in_flight_limit(sqs, queue):
    # this broker allows 25 in flight per queue ([sqs] max_inflight)
    for start in range(0, 30, 10):
        sqs.send_message_batch(QueueUrl=queue, Entries=[{"Id": "i%d" % i, "MessageBody": str(i)}
                                                        for i in range(start, start + 10)])
    got = receive_all(sqs, queue, 25)
    assert len(got) == 25
    with pytest.raises(sqs.exceptions.OverLimit) as excinfo:
        sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)
    assert error_of(excinfo) == ("OverLimit", 403)
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=got[0]["ReceiptHandle"])
    assert len(sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]) == 1


def test_sqs_visibility_timeout(sqs, queue):
    sqs.send_message(QueueUrl=queue, MessageBody="again")
    # a lease long enough that the "not visible" check cannot outlive it on a slow machine
    [first] = sqs.receive_message(QueueUrl=queue, VisibilityTimeout=60, WaitTimeSeconds=1)["Messages"]
    assert "Messages" not in sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0)
    sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=1)
    # the lease runs out: the message is visible again, one receive more
    [second] = receive_all(sqs, queue, 1, AttributeNames=["ApproximateReceiveCount"])
    assert second["MessageId"] == first["MessageId"]
    assert second["ReceiptHandle"] != first["ReceiptHandle"]
    assert second["Attributes"]["ApproximateReceiveCount"] == "2"
    # the old receipt no longer changes anything
    with pytest.raises(sqs.exceptions.MessageNotInflight) as excinfo:
        sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=first["ReceiptHandle"],
                                      VisibilityTimeout=5)
    assert error_of(excinfo) == ("AWS.SimpleQueueService.MessageNotInflight", 400)
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=first["ReceiptHandle"])
    assert sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
                                    )["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "1"
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=second["ReceiptHandle"])


def test_sqs_queue_visibility_timeout_is_the_default(sqs, queue):
    sqs.set_queue_attributes(QueueUrl=queue, Attributes={"VisibilityTimeout": "0"})
    sqs.send_message(QueueUrl=queue, MessageBody="zero")
    [first] = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"]
    # a visibility timeout of 0: visible again at once
    [again] = receive_all(sqs, queue, 1, AttributeNames=["ApproximateReceiveCount"])
    assert again["MessageId"] == first["MessageId"] and again["Attributes"]["ApproximateReceiveCount"] == "2"


def test_sqs_change_visibility(sqs, queue):
    sqs.send_message_batch(QueueUrl=queue, Entries=[{"Id": "a", "MessageBody": "a"},
                                                    {"Id": "b", "MessageBody": "b"}])
    got = receive_all(sqs, queue, 2, VisibilityTimeout=300)
    assert "Messages" not in sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0)
    sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=got[0]["ReceiptHandle"], VisibilityTimeout=0)
    [back] = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=2)["Messages"]
    assert back["Body"] == got[0]["Body"]
    changed = sqs.change_message_visibility_batch(QueueUrl=queue, Entries=[
        {"Id": "ok", "ReceiptHandle": got[1]["ReceiptHandle"], "VisibilityTimeout": 0},
        {"Id": "stale", "ReceiptHandle": got[0]["ReceiptHandle"], "VisibilityTimeout": 0},
        {"Id": "junk", "ReceiptHandle": "junk", "VisibilityTimeout": 0}])
    assert [e["Id"] for e in changed["Successful"]] == ["ok"]
    assert sorted((f["Id"], f["Code"]) for f in changed["Failed"]) == [
        ("junk", "ReceiptHandleIsInvalid"), ("stale", "AWS.SimpleQueueService.MessageNotInflight")]
    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid) as excinfo:
        sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle="nope", VisibilityTimeout=1)
    assert error_of(excinfo) == ("ReceiptHandleIsInvalid", 400)
    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):
        sqs.delete_message(QueueUrl=queue, ReceiptHandle="other-queue:1:abc")


def test_sqs_redrive_policy_dead_letters(sqs, broker):
    dlq = sqs.create_queue(QueueName="redrive-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 2})
    source = sqs.create_queue(QueueName="redrive-src", Attributes={
        "RedrivePolicy": policy, "VisibilityTimeout": "0"})["QueueUrl"]
    try:
        shown = json.loads(sqs.get_queue_attributes(QueueUrl=source, AttributeNames=["RedrivePolicy"]
                                                    )["Attributes"]["RedrivePolicy"])
        assert shown == {"deadLetterTargetArn": arn, "maxReceiveCount": 2}
        assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == [source]
        poison_id = sqs.send_message(QueueUrl=source, MessageBody="poison")["MessageId"]
        counts = []
        for _ in range(2):
            [message] = receive_all(sqs, source, 1, AttributeNames=["ApproximateReceiveCount"])
            counts.append(message["Attributes"]["ApproximateReceiveCount"])
        assert counts == ["1", "2"]
        # received maxReceiveCount times and not deleted: the next receive (as in SQS)
        # moves it to the dead-letter queue instead of handing it out again
        assert "Messages" not in sqs.receive_message(QueueUrl=source, WaitTimeSeconds=0)
        [dead] = receive_all(sqs, dlq, 1, AttributeNames=["All"])
        assert dead["Body"] == "poison"
        # it keeps its MessageId and says where it died, as in SQS
        source_arn = sqs.get_queue_attributes(QueueUrl=source, AttributeNames=["QueueArn"]
                                              )["Attributes"]["QueueArn"]
        assert (dead["MessageId"], dead["Attributes"]["DeadLetterQueueSourceArn"]) == (poison_id, source_arn)
        # no RedrivePolicy any more: no dead letters
        sqs.set_queue_attributes(QueueUrl=source, Attributes={"RedrivePolicy": ""})
        assert "RedrivePolicy" not in sqs.get_queue_attributes(QueueUrl=source, AttributeNames=["All"]
                                                               )["Attributes"]
        assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == []
    finally:
        sqs.delete_queue(QueueUrl=source)
        sqs.delete_queue(QueueUrl=dlq)


def test_sqs_delays(sqs, queue):
    # counted as delayed and not received while its delay runs (long enough for a slow machine)
    sqs.send_message(QueueUrl=queue, MessageBody="not yet", DelaySeconds=900)
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert (attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesDelayed"]) == \
        ("0", "1")
    assert "Messages" not in sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0)
    # and received once it ran out
    sqs.send_message(QueueUrl=queue, MessageBody="later", DelaySeconds=1)
    [message] = receive_all(sqs, queue, 1)
    assert message["Body"] == "later"
    # the queue's DelaySeconds applies to sends without their own
    sqs.set_queue_attributes(QueueUrl=queue, Attributes={"DelaySeconds": "900"})
    sqs.send_message(QueueUrl=queue, MessageBody="much later")
    sqs.send_message(QueueUrl=queue, MessageBody="now", DelaySeconds=0)
    [now] = receive_all(sqs, queue, 1)
    assert now["Body"] == "now"
    assert sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
                                    )["Attributes"]["ApproximateNumberOfMessagesDelayed"] == "2"


def test_sqs_long_poll_wakes_on_send(sqs, queue, broker):
    got = []

    def wait_for_it():
        client = sqs_client(broker.sqs_url)
        got.append(client.receive_message(QueueUrl=queue, WaitTimeSeconds=20))

    waiting = threading.Thread(target=wait_for_it)
    waiting.start()
    wait_for_long_poll(broker, queue.rsplit("/", 1)[1])
    sqs.send_message(QueueUrl=queue, MessageBody="wake up")
    waiting.join(timeout=60)
    assert [m["Body"] for m in got[0]["Messages"]] == ["wake up"]


def test_sqs_queue_wait_time_is_the_default(sqs, queue, broker):
    sqs.set_queue_attributes(QueueUrl=queue, Attributes={"ReceiveMessageWaitTimeSeconds": "20"})
    got = []
    waiting = threading.Thread(target=lambda: got.append(
        sqs_client(broker.sqs_url).receive_message(QueueUrl=queue)))
    waiting.start()
    wait_for_long_poll(broker, queue.rsplit("/", 1)[1])
    sqs.send_message(QueueUrl=queue, MessageBody="waited")
    waiting.join(timeout=60)
    assert got[0]["Messages"][0]["Body"] == "waited"


def test_sqs_purge(sqs, queue):
    sqs.send_message_batch(QueueUrl=queue, Entries=[{"Id": str(i), "MessageBody": "p"} for i in range(10)])
    sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=3)
    sqs.send_message(QueueUrl=queue, MessageBody="late", DelaySeconds=60)
    sqs.purge_queue(QueueUrl=queue)
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert [attributes[n] for n in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                                    "ApproximateNumberOfMessagesDelayed")] == ["0", "0", "0"]
    # the queue stays
    sqs.send_message(QueueUrl=queue, MessageBody="after")
    assert receive_all(sqs, queue, 1)[0]["Body"] == "after"


# the same queues over RestMQ's own API

def test_sqs_send_is_popped_by_rest(sqs, queue, broker):
    sqs.send_message(QueueUrl=queue, MessageBody="to rest")
    name = queue.rsplit("/", 1)[1]
    with urllib.request.urlopen("%s/q/%s" % (broker.url, name), timeout=10) as response:
        assert json.loads(response.read())["value"] == "to rest"


def test_sqs_rest_post_is_received_by_boto3(sqs, broker):
    post = urllib.request.Request("%s/q/from-rest" % broker.url, data=b"value=posted+over+REST",
                                  method="POST")
    with urllib.request.urlopen(post, timeout=10) as response:
        key = response.read().decode().strip()
    url = sqs.get_queue_url(QueueName="from-rest")["QueueUrl"]
    try:
        [message] = receive_all(sqs, url, 1)
        assert message["Body"] == "posted over REST"
        assert message["MD5OfBody"] == md5("posted over REST")
        # the receipt handle is RestMQ's receipt: REST can ack it
        assert message["ReceiptHandle"].startswith(key + ":")
        request = urllib.request.Request("%s/q/from-rest/ack" % broker.url,
                                         data=("receipt=" + message["ReceiptHandle"]).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["acked"] == 1
    finally:
        sqs.delete_queue(QueueUrl=url)


def test_sqs_send_is_streamed_over_sse(sqs, queue, broker):
    name = queue.rsplit("/", 1)[1]
    connection = http.client.HTTPConnection("127.0.0.1", broker.port, timeout=20)
    connection.request("GET", "/c/%s" % name, headers={"Accept": "text/event-stream"})
    response = connection.getresponse()
    assert response.status == 200
    sqs.send_message(QueueUrl=queue, MessageBody="over sse")
    data = None
    while data is None:
        line = response.fp.readline().decode()
        assert line, "the stream ended"
        if line.startswith("data:"):
            data = json.loads(line[5:])
    connection.close()
    assert data["value"] == "over sse"


# the query protocol (older SDKs): form fields in, XML out

def _query(broker, path: str, fields: dict):
    body = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(broker.sqs_url + path, data=body, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, ET.fromstring(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, ET.fromstring(error.read())


def test_sqs_query_protocol(broker):
    status, headers, root = _query(broker, "/", {"Action": "CreateQueue", "QueueName": "query-q",
                                                 "Attribute.1.Name": "VisibilityTimeout",
                                                 "Attribute.1.Value": "40", "Version": "2012-11-05"})
    assert status == 200 and headers["Content-Type"].startswith("text/xml")
    assert root.tag == "{%s}CreateQueueResponse" % NS["sqs"]
    url = root.find("sqs:CreateQueueResult/sqs:QueueUrl", NS).text
    assert url == broker.queue_url("query-q")
    assert root.find("sqs:ResponseMetadata/sqs:RequestId", NS).text
    path = "/000000000000/query-q"
    status, _, root = _query(broker, path, {"Action": "SendMessageBatch",
                                            "SendMessageBatchRequestEntry.1.Id": "one",
                                            "SendMessageBatchRequestEntry.1.MessageBody": "first\r\n&<",
                                            "SendMessageBatchRequestEntry.2.Id": "two",
                                            "SendMessageBatchRequestEntry.2.MessageBody": "second",
                                            "SendMessageBatchRequestEntry.2.DelaySeconds": "0"})
    entries = root.findall("sqs:SendMessageBatchResult/sqs:SendMessageBatchResultEntry", NS)
    assert [e.find("sqs:Id", NS).text for e in entries] == ["one", "two"]
    assert entries[0].find("sqs:MD5OfMessageBody", NS).text == md5("first\r\n&<")
    status, _, root = _query(broker, "/", {"Action": "ReceiveMessage", "QueueUrl": url,
                                           "MaxNumberOfMessages": "10", "AttributeName.1": "All"})
    messages = root.findall("sqs:ReceiveMessageResult/sqs:Message", NS)
    assert [m.find("sqs:Body", NS).text for m in messages] == ["first\r\n&<", "second"]
    names = [a.find("sqs:Name", NS).text for a in messages[0].findall("sqs:Attribute", NS)]
    assert "ApproximateReceiveCount" in names
    status, _, root = _query(broker, path, {"Action": "GetQueueAttributes", "AttributeName.1": "All"})
    attributes = {a.find("sqs:Name", NS).text: a.find("sqs:Value", NS).text
                  for a in root.findall("sqs:GetQueueAttributesResult/sqs:Attribute", NS)}
    assert (attributes["VisibilityTimeout"], attributes["ApproximateNumberOfMessagesNotVisible"]) == \
        ("40", "2")
    status, _, root = _query(broker, path, {"Action": "DeleteMessageBatch",
                                            "DeleteMessageBatchRequestEntry.1.Id": "a",
                                            "DeleteMessageBatchRequestEntry.1.ReceiptHandle":
                                                messages[0].find("sqs:ReceiptHandle", NS).text})
    assert root.find("sqs:DeleteMessageBatchResult/sqs:DeleteMessageBatchResultEntry/sqs:Id", NS).text == "a"
    status, _, root = _query(broker, path, {"Action": "TagQueue", "Tag.1.Key": "k", "Tag.1.Value": "v"})
    assert status == 200 and root.find("sqs:TagQueueResult", NS) is None
    status, _, root = _query(broker, path, {"Action": "ListQueueTags"})
    tag = root.find("sqs:ListQueueTagsResult/sqs:Tag", NS)
    assert (tag.find("sqs:Key", NS).text, tag.find("sqs:Value", NS).text) == ("k", "v")
    status, _, root = _query(broker, path, {"Action": "DeleteQueue"})
    assert status == 200
    status, headers, root = _query(broker, "/", {"Action": "GetQueueUrl", "QueueName": "query-q"})
    assert status == 400 and root.tag == "{%s}ErrorResponse" % NS["sqs"]
    assert root.find("sqs:Error/sqs:Code", NS).text == "AWS.SimpleQueueService.NonExistentQueue"
    assert root.find("sqs:Error/sqs:Type", NS).text == "Sender"


@pytest.mark.parametrize("fields,code,status", [
    ({"Action": "NoSuchAction"}, "InvalidAction", 400),
    ({"QueueName": "x"}, "InvalidAction", 400),
    ({"Action": "AddPermission", "Label": "x"}, "AWS.SimpleQueueService.UnsupportedOperation", 400),
    ({"Action": "CreateQueue"}, "MissingParameter", 400),
    ({"Action": "SendMessage", "QueueUrl": "http://x/000000000000/none", "MessageBody": "x"},
     "AWS.SimpleQueueService.NonExistentQueue", 400),
    ({"Action": "CreateQueue", "QueueName": "q", "Attribute.x.Name": "a"}, "MalformedQueryString", 400),
])
def test_sqs_query_protocol_errors(broker, fields, code, status):
    got_status, _, root = _query(broker, "/", fields)
    assert (root.find("sqs:Error/sqs:Code", NS).text, got_status) == (code, status)


def test_sqs_json_protocol_bad_bodies(broker):
    for body in (b"not json", b"[1, 2]", b'{"QueueName": 5}'):
        request = urllib.request.Request(broker.sqs_url + "/", data=body, method="POST", headers={
            "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS.CreateQueue"})
        with pytest.raises(urllib.error.HTTPError) as excinfo:
            urllib.request.urlopen(request, timeout=10)
        assert excinfo.value.code == 400
        error = json.loads(excinfo.value.read())
        assert error["__type"].startswith("com.amazonaws.sqs#")
        assert excinfo.value.headers["x-amzn-query-error"].endswith(";Sender")


# redrive: message move tasks

def _dead_letters(sqs, source, dlq, count):
    """``count`` messages of ``source`` received and never deleted (maxReceiveCount 1,
    VisibilityTimeout 0): the receives after the first move them to the dead-letter queue."""
    sqs.send_message_batch(QueueUrl=source, Entries=[{"Id": str(i), "MessageBody": "dead %d" % i}
                                                     for i in range(count)])
    deadline = time.monotonic() + 30
    while sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"]
                                   )["Attributes"]["ApproximateNumberOfMessages"] != str(count):
        assert time.monotonic() < deadline
        sqs.receive_message(QueueUrl=source, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        time.sleep(0.01)


def _redrive_pair(sqs, name):
    dlq = sqs.create_queue(QueueName=name + "-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 1})
    source = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "0",
                                                          "RedrivePolicy": policy})["QueueUrl"]
    return source, dlq, arn


def _task(sqs, arn):
    return sqs.list_message_move_tasks(SourceArn=arn)["Results"][0]


def test_sqs_message_move_task_redrives_to_the_sources(sqs):
    source, dlq, arn = _redrive_pair(sqs, "move-src")
    _dead_letters(sqs, source, dlq, 3)
    sqs.set_queue_attributes(QueueUrl=source, Attributes={"VisibilityTimeout": "30"})
    handle = sqs.start_message_move_task(SourceArn=arn)["TaskHandle"]
    deadline = time.monotonic() + 30
    while _task(sqs, arn)["Status"] != "COMPLETED":
        assert time.monotonic() < deadline, _task(sqs, arn)
        time.sleep(0.05)
    done = _task(sqs, arn)
    assert (done["ApproximateNumberOfMessagesMoved"], done["ApproximateNumberOfMessagesToMove"]) == (3, 3)
    assert "TaskHandle" not in done and handle
    got = receive_all(sqs, source, 3)
    assert sorted(m["Body"] for m in got) == ["dead 0", "dead 1", "dead 2"]
    assert sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"]
                                    )["Attributes"]["ApproximateNumberOfMessages"] == "0"


def test_sqs_message_move_task_to_a_destination_and_cancelled(sqs):
    source, dlq, arn = _redrive_pair(sqs, "move-dest")
    _dead_letters(sqs, source, dlq, 5)
    other = sqs.create_queue(QueueName="move-elsewhere")["QueueUrl"]
    other_arn = sqs.get_queue_attributes(QueueUrl=other,
                                         AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    # one message a second: the task is still running when it is cancelled
    handle = sqs.start_message_move_task(SourceArn=arn, DestinationArn=other_arn,
                                         MaxNumberOfMessagesPerSecond=1)["TaskHandle"]
    running = _task(sqs, arn)
    assert (running["Status"], running["TaskHandle"], running["DestinationArn"],
            running["MaxNumberOfMessagesPerSecond"]) == ("RUNNING", handle, other_arn, 1)
    with pytest.raises(ClientError) as excinfo:
        sqs.start_message_move_task(SourceArn=arn)
    assert error_of(excinfo)[1] == 400
    sqs.cancel_message_move_task(TaskHandle=handle)
    deadline = time.monotonic() + 30
    while _task(sqs, arn)["Status"] != "CANCELLED":
        assert time.monotonic() < deadline, _task(sqs, arn)
        time.sleep(0.05)
    moved = _task(sqs, arn)["ApproximateNumberOfMessagesMoved"]
    assert 1 <= moved < 5
    assert len(receive_all(sqs, other, moved)) == moved
    with pytest.raises(sqs.exceptions.ResourceNotFoundException):
        sqs.cancel_message_move_task(TaskHandle=handle)


def test_sqs_message_move_task_needs_a_dead_letter_queue(sqs, queue):
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    with pytest.raises(ClientError) as excinfo:
        sqs.start_message_move_task(SourceArn=arn)
    assert error_of(excinfo) == ("InvalidParameterValue", 400)
    assert sqs.list_message_move_tasks(SourceArn=arn)["Results"] == []
    with pytest.raises(sqs.exceptions.ResourceNotFoundException):
        sqs.cancel_message_move_task(TaskHandle="bm90IGEgaGFuZGxl")
