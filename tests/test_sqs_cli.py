"""The SQS API through the real AWS CLI (this venv's `aws`), as a shell user runs it."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from tests.sqs_support import SqsBroker, aws_cli, cli_json


@pytest.fixture(scope="module")
def broker(redis_server, tmp_path_factory):
    started = SqsBroker(tmp_path_factory.mktemp("sqs-cli"), "cli", redis_server.port).start()
    yield started
    started.stop()


def test_aws_cli_through_the_queue_actions(broker):
    def aws(*args):
        return cli_json(aws_cli(broker.sqs_url, *args))

    dlq = aws("create-queue", "--queue-name", "cli-dlq")["QueueUrl"]
    dlq_arn = aws("get-queue-attributes", "--queue-url", dlq,
                  "--attribute-names", "QueueArn")["Attributes"]["QueueArn"]
    attributes = json.dumps({"VisibilityTimeout": "20", "RedrivePolicy": json.dumps(
        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3})})
    url = aws("create-queue", "--queue-name", "cli-jobs", "--attributes", attributes,
              "--tags", "team=cli")["QueueUrl"]
    assert url == broker.queue_url("cli-jobs")
    assert aws("get-queue-url", "--queue-name", "cli-jobs")["QueueUrl"] == url
    assert aws("list-queues", "--queue-name-prefix", "cli-")["QueueUrls"] == [dlq, url]
    assert aws("list-dead-letter-source-queues", "--queue-url", dlq)["queueUrls"] == [url]
    assert aws("start-message-move-task", "--source-arn", dlq_arn)["TaskHandle"]
    deadline = time.monotonic() + 30
    while aws("list-message-move-tasks", "--source-arn", dlq_arn)["Results"][0]["Status"] != "COMPLETED":
        assert time.monotonic() < deadline
    aws("set-queue-attributes", "--queue-url", url, "--attributes", "DelaySeconds=0,MaximumMessageSize=4096")
    shown = aws("get-queue-attributes", "--queue-url", url, "--attribute-names", "All")["Attributes"]
    assert (shown["VisibilityTimeout"], shown["MaximumMessageSize"]) == ("20", "4096")
    assert json.loads(shown["RedrivePolicy"])["maxReceiveCount"] == 3
    aws("tag-queue", "--queue-url", url, "--tags", "env=test")
    aws("untag-queue", "--queue-url", url, "--tag-keys", "team")
    assert aws("list-queue-tags", "--queue-url", url)["Tags"] == {"env": "test"}

    sent = aws("send-message", "--queue-url", url, "--message-body", "from the cli")
    assert sent["MD5OfMessageBody"] == hashlib.md5(b"from the cli").hexdigest()
    entries = json.dumps([{"Id": "a", "MessageBody": "batch a"}, {"Id": "b", "MessageBody": "batch b"}])
    batch = aws("send-message-batch", "--queue-url", url, "--entries", entries)
    assert sorted(e["Id"] for e in batch["Successful"]) == ["a", "b"]
    got = aws("receive-message", "--queue-url", url, "--max-number-of-messages", "10",
              "--wait-time-seconds", "2", "--attribute-names", "All")["Messages"]
    assert [m["Body"] for m in got] == ["from the cli", "batch a", "batch b"]
    assert got[0]["MessageId"] == sent["MessageId"]
    aws("change-message-visibility", "--queue-url", url, "--receipt-handle", got[0]["ReceiptHandle"],
        "--visibility-timeout", "0")
    changes = json.dumps([{"Id": "x", "ReceiptHandle": got[1]["ReceiptHandle"], "VisibilityTimeout": 0}])
    assert aws("change-message-visibility-batch", "--queue-url", url, "--entries", changes)["Successful"] == \
        [{"Id": "x"}]
    aws("delete-message", "--queue-url", url, "--receipt-handle", got[2]["ReceiptHandle"])
    again = aws("receive-message", "--queue-url", url, "--max-number-of-messages", "10",
                "--wait-time-seconds", "2")["Messages"]
    assert sorted(m["Body"] for m in again) == ["batch a", "from the cli"]
    deletes = json.dumps([{"Id": "d%d" % i, "ReceiptHandle": m["ReceiptHandle"]}
                          for i, m in enumerate(again)])
    assert len(aws("delete-message-batch", "--queue-url", url, "--entries", deletes)["Successful"]) == 2
    aws("send-message", "--queue-url", url, "--message-body", "to purge")
    aws("purge-queue", "--queue-url", url)
    counts = aws("get-queue-attributes", "--queue-url", url, "--attribute-names",
                 "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")["Attributes"]
    assert counts == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}
    aws("delete-queue", "--queue-url", url)
    aws("delete-queue", "--queue-url", dlq)
    missing = aws_cli(broker.sqs_url, "get-queue-url", "--queue-name", "cli-jobs", check=False)
    assert missing.returncode != 0 and "AWS.SimpleQueueService.NonExistentQueue" in missing.stderr
