"""Who may use the SQS listener: SigV4 signatures from boto3 accepted and refused,
per-queue rights of each access key, presigned URLs, the REST ACL's address rules,
and the browser checks (Origin, a rebinding page's Host) of a listener without keys."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request

import pytest
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.helpers import free_port
from tests.processes import spawn_twistd
from tests.sqs_support import SqsBroker, sqs_client

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
CREDENTIALS = """
[AKIDWORKER]
secret = %s
send = auth-*
receive = auth-* shared
[AKIDREADER]
secret = reader-secret
receive = shared
[AKIDADMIN]
secret = admin-secret
send = *
receive = *
""" % SECRET


@pytest.fixture(scope="module")
def brokers(redis_server, tmp_path_factory):
    directory = tmp_path_factory.mktemp("sqs-auth")
    (directory / "keys.conf").write_text(CREDENTIALS)
    signed = SqsBroker(directory, "signed", redis_server.port,
                       conf="[sqs]\ncredentials = %s\n" % (directory / "keys.conf"))
    open_broker = SqsBroker(directory, "open", redis_server.port,
                            conf="[sqs]\nallowed_hosts = mq.internal\n")
    started = []
    try:
        for broker in (signed, open_broker):
            started.append(broker.start())
        yield {"signed": signed, "open": open_broker}
    finally:
        for broker in started:
            broker.stop()


def code_of(excinfo):
    return (excinfo.value.response["Error"]["Code"],
            excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"])


def test_sigv4_signed_by_boto3_is_accepted(brokers):
    client = sqs_client(brokers["signed"].sqs_url, key="AKIDWORKER", secret=SECRET)
    url = client.create_queue(QueueName="auth-jobs")["QueueUrl"]
    client.send_message(QueueUrl=url, MessageBody="signed")
    [message] = client.receive_message(QueueUrl=url, WaitTimeSeconds=2)["Messages"]
    assert message["Body"] == "signed"
    client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def test_sigv4_wrong_secret_is_refused(brokers):
    client = sqs_client(brokers["signed"].sqs_url, key="AKIDWORKER", secret="wrong")
    with pytest.raises(ClientError) as excinfo:
        client.list_queues()
    assert code_of(excinfo) == ("SignatureDoesNotMatch", 403)


def test_sigv4_unknown_key_is_refused(brokers):
    client = sqs_client(brokers["signed"].sqs_url, key="AKIDNOBODY", secret=SECRET)
    with pytest.raises(ClientError) as excinfo:
        client.create_queue(QueueName="auth-nobody")
    assert code_of(excinfo) == ("InvalidClientTokenId", 403)


def test_unsigned_requests_are_refused(brokers):
    broker = brokers["signed"]
    request = urllib.request.Request(broker.sqs_url + "/", data=b'{"QueueName": "auth-x"}', method="POST",
                                     headers={"Content-Type": "application/x-amz-json-1.0",
                                              "X-Amz-Target": "AmazonSQS.CreateQueue"})
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(request, timeout=10)
    assert excinfo.value.code == 403
    assert excinfo.value.headers["x-amzn-query-error"] == "MissingAuthenticationToken;Sender"
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(broker.sqs_url + "/?Action=ListQueues", timeout=10)
    assert excinfo.value.code == 403 and b"<Code>MissingAuthenticationToken</Code>" in excinfo.value.read()


def test_rights_are_per_queue(brokers):
    broker = brokers["signed"]
    worker = sqs_client(broker.sqs_url, key="AKIDWORKER", secret=SECRET)
    reader = sqs_client(broker.sqs_url, key="AKIDREADER", secret="reader-secret")
    # the worker may only create auth-* queues; "shared" is made over REST
    with pytest.raises(ClientError) as excinfo:
        worker.create_queue(QueueName="shared")
    assert code_of(excinfo) == ("AccessDenied", 403)
    urllib.request.urlopen(urllib.request.Request("%s/q/shared" % broker.url, data=b"value=rest",
                                                  method="POST"), timeout=10).read()
    url = reader.get_queue_url(QueueName="shared")["QueueUrl"]
    with pytest.raises(ClientError) as excinfo:
        reader.send_message(QueueUrl=url, MessageBody="not mine to send")
    assert code_of(excinfo) == ("AccessDenied", 403)
    with pytest.raises(ClientError) as excinfo:
        reader.purge_queue(QueueUrl=url)
    assert code_of(excinfo) == ("AccessDenied", 403)
    [message] = reader.receive_message(QueueUrl=url, WaitTimeSeconds=2)["Messages"]
    assert message["Body"] == "rest"
    reader.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    worker.create_queue(QueueName="auth-private")
    with pytest.raises(ClientError) as excinfo:
        reader.get_queue_url(QueueName="auth-private")
    assert code_of(excinfo) == ("AccessDenied", 403)
    # each key lists only the queues it has a right on
    assert all(u.endswith("/shared") for u in reader.list_queues().get("QueueUrls", []))
    assert any(u.endswith("/auth-private") for u in worker.list_queues()["QueueUrls"])


def test_a_dead_letter_target_needs_the_send_right(brokers):
    # a key that may send only to auth-* must not route its dead letters elsewhere
    broker = brokers["signed"]
    worker = sqs_client(broker.sqs_url, key="AKIDWORKER", secret=SECRET)
    urllib.request.urlopen(urllib.request.Request("%s/q/not-yours" % broker.url, data=b"value=rest",
                                                  method="POST"), timeout=10).read()

    def redrive(target: str) -> dict:
        return {"RedrivePolicy": json.dumps({"deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:"
                                                                    + target, "maxReceiveCount": "2"})}

    with pytest.raises(ClientError) as excinfo:
        worker.create_queue(QueueName="auth-leaky", Attributes=redrive("not-yours"))
    assert code_of(excinfo) == ("AccessDenied", 403)
    worker.create_queue(QueueName="auth-dlq")
    url = worker.create_queue(QueueName="auth-source", Attributes=redrive("auth-dlq"))["QueueUrl"]
    with pytest.raises(ClientError) as excinfo:
        worker.set_queue_attributes(QueueUrl=url, Attributes=redrive("not-yours"))
    assert code_of(excinfo) == ("AccessDenied", 403)
    policy = worker.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
    assert "auth-dlq" in policy["Attributes"]["RedrivePolicy"]


def test_a_move_task_back_to_the_sources_needs_the_send_right_on_them(brokers):
    broker = brokers["signed"]
    admin = sqs_client(broker.sqs_url, key="AKIDADMIN", secret="admin-secret")
    worker = sqs_client(broker.sqs_url, key="AKIDWORKER", secret=SECRET)
    arn = "arn:aws:sqs:us-east-1:000000000000:"
    worker.create_queue(QueueName="auth-move-dlq")
    worker.create_queue(QueueName="auth-move-elsewhere")
    admin.create_queue(QueueName="ext-move-source", Attributes={"RedrivePolicy": json.dumps(
        {"deadLetterTargetArn": arn + "auth-move-dlq", "maxReceiveCount": "2"})})
    # without a destination the dead letters would go back to ext-move-source
    with pytest.raises(ClientError) as excinfo:
        worker.start_message_move_task(SourceArn=arn + "auth-move-dlq")
    assert code_of(excinfo) == ("AccessDenied", 403)
    started = worker.start_message_move_task(SourceArn=arn + "auth-move-dlq",
                                             DestinationArn=arn + "auth-move-elsewhere")
    assert started["TaskHandle"]


def test_presigned_url_signed_by_botocore(brokers):
    broker = brokers["signed"]
    worker = sqs_client(broker.sqs_url, key="AKIDWORKER", secret=SECRET)
    url = worker.create_queue(QueueName="auth-presigned")["QueueUrl"]

    def presign(query: str, secret: str = SECRET) -> str:
        request = AWSRequest(method="GET", url="%s?%s" % (url, query))
        SigV4QueryAuth(Credentials("AKIDWORKER", secret), "sqs", "us-east-1", expires=300).add_auth(request)
        return request.prepare().url

    sent = presign("Action=SendMessage&MessageBody=presigned%20hi")
    with urllib.request.urlopen(sent, timeout=10) as reply:
        assert b"<SendMessageResult>" in reply.read()
    [message] = worker.receive_message(QueueUrl=url, WaitTimeSeconds=2)["Messages"]
    assert message["Body"] == "presigned hi"
    tampered = presign("Action=SendMessage&MessageBody=original").replace("original", "changed")
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(tampered, timeout=10)
    assert excinfo.value.code == 403 and b"SignatureDoesNotMatch" in excinfo.value.read()
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(presign("Action=ListQueues", secret="wrong"), timeout=10)
    assert excinfo.value.code == 403
    # an expiry that is not whole seconds within 7 days is refused before anything else
    for expires in ("nan", "inf", "1e9", "0", "604801"):
        forged = presign("Action=ListQueues").replace("X-Amz-Expires=300", "X-Amz-Expires=" + expires)
        with pytest.raises(urllib.error.HTTPError) as excinfo:
            urllib.request.urlopen(forged, timeout=10)
        assert b"IncompleteSignature" in excinfo.value.read(), expires


def test_rest_acl_address_rules_hold_on_the_sqs_listener(brokers, tmp_path, redis_server):
    # [rest:producer] denies 127.0.0.1: sending from there is refused, receiving is not
    (tmp_path / "keys.conf").write_text(CREDENTIALS)
    (tmp_path / "acl.conf").write_text("[rest:producer]\nhosts_deny = 127.0.0.1\n")
    denied = SqsBroker(tmp_path, "denied", redis_server.port,
                       conf="[sqs]\ncredentials = %s\n[acl]\nfile = %s\n"
                       % (tmp_path / "keys.conf", tmp_path / "acl.conf")).start()
    try:
        url = sqs_client(brokers["signed"].sqs_url, key="AKIDWORKER", secret=SECRET).create_queue(
            QueueName="auth-denied")["QueueUrl"]
        worker = sqs_client(denied.sqs_url, key="AKIDWORKER", secret=SECRET)
        with pytest.raises(ClientError) as excinfo:
            worker.send_message(QueueUrl=url, MessageBody="from a denied address")
        assert code_of(excinfo) == ("AccessDenied", 403)
        with pytest.raises(ClientError) as excinfo:
            worker.create_queue(QueueName="auth-denied-too")
        assert code_of(excinfo) == ("AccessDenied", 403)
        assert "Messages" not in worker.receive_message(QueueUrl=url, WaitTimeSeconds=0)
    finally:
        denied.stop()


def test_rest_acl_with_credentials_needs_sqs_credentials(tmp_path, redis_server):
    acl = tmp_path / "acl.conf"
    acl.write_text("[rest:producer]\nusername = u\npassword = p\n")
    proc = spawn_twistd("--port", str(free_port()), "--sqs-port", str(free_port()), "--acl", str(acl),
                        "--redis", "redis://127.0.0.1:%d/5" % redis_server.port)
    try:
        output, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode != 0
    assert b"[sqs] credentials" in output


# a listener without keys: open to SDKs, closed to web pages

def _create(broker, host: str = None, origin: str = None, port: int = None):
    headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS.ListQueues"}
    if host is not None:
        headers["Host"] = host
    if origin is not None:
        headers["Origin"] = origin
    request = urllib.request.Request("http://127.0.0.1:%d/" % (port or broker.sqs_port), data=b"{}",
                                     method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_open_listener_accepts_any_signature(brokers):
    client = sqs_client(brokers["open"].sqs_url, key="anything", secret="at all")
    url = client.create_queue(QueueName="open-queue")["QueueUrl"]
    client.send_message(QueueUrl=url, MessageBody="x")
    assert _create(brokers["open"])[0] == 200


def test_open_listener_refuses_browser_pages(brokers):
    broker = brokers["open"]
    status, body = _create(broker, origin="http://evil.example")
    assert status == 403 and body["__type"].endswith("#AccessDenied")
    # a page that rebinds its DNS name to this machine sends its own name as Host
    status, body = _create(broker, host="evil.example:%d" % broker.sqs_port)
    assert status == 403 and "allowed_hosts" in body["message"]
    for host in ("localhost:%d" % broker.sqs_port, "127.0.0.1", "[::1]:%d" % broker.sqs_port,
                 "mq.internal:%d" % broker.sqs_port):
        assert _create(broker, host=host)[0] == 200, host
