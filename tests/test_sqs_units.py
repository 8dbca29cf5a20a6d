"""The SQS front-end's pure parts, no reactor: SigV4 verification of requests signed
by the real botocore, the query protocol's decoding, XML answers, attribute rules
and the MD5 digests (against moto's own implementation)."""

from __future__ import annotations

import base64
import datetime
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from restmq.acl import SqsKey, SqsKeys, load_sqs_credentials
from restmq.config import load_config
from restmq.errors import ConfigError
from restmq.web.sqs import codec
from restmq.web.sqs.attributes import (Naming, check_body, is_sqs_queue_name, md5_of_attributes,
                                       parse_message_attributes, parse_queue_attributes)
from restmq.web.sqs.errors import SqsError
from restmq.web.sqs.sigv4 import SignedRequest, access_key_of, verify

KEYS = SqsKeys({"AKIDEXAMPLE": SqsKey("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                                      ("*",), ("*",))})
NAMING = Naming("000000000000", "us-east-1")


def signed(url: str, body: bytes = b"", method: str = "POST", headers=None, secret: str = None,
           presign: bool = False, expires: int = 60, when: datetime.datetime = None,
           monkeypatch=None) -> SignedRequest:
    """A request as botocore signs it, taken apart as the broker receives it."""
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    credentials = Credentials("AKIDEXAMPLE", secret or KEYS.get("AKIDEXAMPLE").secret)
    if when is not None:
        monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: when)
    signer = SigV4QueryAuth(credentials, "sqs", "us-east-1", expires=expires) if presign \
        else SigV4Auth(credentials, "sqs", "us-east-1")
    signer.add_auth(request)
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    sent_headers = [(name, value) for name, value in prepared.headers.items()]
    if not any(name.lower() == "host" for name, _ in sent_headers):
        sent_headers.append(("Host", parts.netloc))
    return SignedRequest(method, parts.path or "/", parts.query, sent_headers, prepared.body or b"")


def now() -> float:
    return datetime.datetime.now(datetime.timezone.utc).timestamp()


def test_sigv4_accepts_botocore_header_signatures():
    json_request = signed("http://127.0.0.1:9324/", b'{"QueueName": "jobs"}', headers={
        "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS.CreateQueue"})
    assert verify(json_request, KEYS, now(), 900).access_key == "AKIDEXAMPLE"
    query_request = signed("http://localhost:9324/000000000000/a-queue%20x",
                           b"Action=SendMessage&MessageBody=h%C3%A9llo+w%2Frld%26more",
                           headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    assert verify(query_request, KEYS, now(), 900).access_key == "AKIDEXAMPLE"
    with_query = signed("http://127.0.0.1:9324/?Action=ListQueues&QueueNamePrefix=a%2Bb&Z=1&A=%20", b"",
                        method="GET")
    assert verify(with_query, KEYS, now(), 900).access_key == "AKIDEXAMPLE"
    assert access_key_of(with_query) == "AKIDEXAMPLE"


def test_sigv4_accepts_botocore_presigned_urls():
    request = signed("http://127.0.0.1:9324/000000000000/jobs?Action=ReceiveMessage&MaxNumberOfMessages=2",
                     method="GET", presign=True)
    assert "X-Amz-Signature=" in request.query
    assert verify(request, KEYS, now(), 900).access_key == "AKIDEXAMPLE"
    assert access_key_of(request) == "AKIDEXAMPLE"


def _code(request, keys=KEYS, at=None):
    with pytest.raises(SqsError) as excinfo:
        verify(request, keys, now() if at is None else at, 900)
    return excinfo.value.name, excinfo.value.status


def test_sigv4_refuses_a_wrong_secret():
    request = signed("http://127.0.0.1:9324/", b"{}", secret="not the secret")
    assert _code(request) == ("SignatureDoesNotMatch", 403)


def test_sigv4_refuses_an_unknown_key():
    request = signed("http://127.0.0.1:9324/", b"{}")
    assert _code(request, SqsKeys({"OTHER": SqsKey("OTHER", "x")})) == ("InvalidClientTokenId", 403)


def test_sigv4_refuses_tampering():
    request = signed("http://127.0.0.1:9324/", b'{"QueueName": "a"}', headers={
        "X-Amz-Target": "AmazonSQS.CreateQueue"})
    for changed in (
            SignedRequest(request.method, request.path, request.query, request.headers,
                          b'{"QueueName": "b"}'),
            SignedRequest(request.method, "/000000000000/a", request.query, request.headers, request.body),
            SignedRequest(request.method, request.path, "x=1", request.headers, request.body),
            SignedRequest(request.method, request.path, request.query,
                          [(n, "AmazonSQS.DeleteQueue" if n == "X-Amz-Target" else v)
                           for n, v in request.headers], request.body),
            SignedRequest(request.method, request.path, request.query,
                          [(n, "evil.example" if n == "Host" else v) for n, v in request.headers],
                          request.body)):
        assert _code(changed) == ("SignatureDoesNotMatch", 403)


def test_sigv4_refuses_missing_or_malformed_authorization():
    plain = SignedRequest("POST", "/", "", [("Host", "127.0.0.1")], b"{}")
    assert _code(plain) == ("MissingAuthenticationToken", 403)
    for header in ("AWS AKIDEXAMPLE:abc", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/x",
                   "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/us-east-1/sqs/aws4_request, "
                   "SignedHeaders=host, Signature=00"):
        request = SignedRequest("POST", "/", "", [("Host", "h"), ("Authorization", header)], b"")
        assert _code(request)[0] in ("IncompleteSignature", "SignatureDoesNotMatch")


def test_sigv4_refuses_old_and_expired_signatures(monkeypatch):
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
    request = signed("http://127.0.0.1:9324/", b"{}", when=old, monkeypatch=monkeypatch)
    assert _code(request) == ("RequestExpired", 400)
    presigned = signed("http://127.0.0.1:9324/?Action=ListQueues", method="GET", presign=True, expires=60,
                       when=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=61),
                       monkeypatch=monkeypatch)
    assert _code(presigned) == ("RequestExpired", 400)


def test_sqs_credentials_file(tmp_path):
    path = tmp_path / "keys.conf"
    path.write_text("[AKIDONE]\nsecret = s/ec+ret\nsend = jobs orders-*\nreceive = *\n"
                    "[AKIDTWO]\nsecret = other\nreceive = jobs\n")
    keys = load_sqs_credentials(str(path))
    one, two = keys.get("AKIDONE"), keys.get("AKIDTWO")
    assert one.secret == "s/ec+ret" and "s/ec+ret" not in repr(one)
    assert one.may("send", "orders-eu") and not one.may("send", "other")
    assert two.may("receive", "jobs") and not two.may("send", "jobs") and not two.sees("orders-eu")
    for text in ("[bad key!]\nsecret = x\n", "[AKID]\nsend = *\n", "[AKID]\nsecret = x\nadmin = *\n", ""):
        path.write_text(text)
        with pytest.raises(ConfigError):
            load_sqs_credentials(str(path))


def test_sqs_config_section(tmp_path):
    path = tmp_path / "restmq.conf"
    path.write_text("[sqs]\nport = 9324\naccount_id = 123456789012\nregion = eu-west-1\n"
                    "allowed_hosts = mq.internal\n")
    sqs = load_config(str(path)).sqs
    assert (sqs.port, sqs.account_id, sqs.region, sqs.allowed_hosts) == \
        (9324, "123456789012", "eu-west-1", ("mq.internal",))
    assert load_config(None).sqs.port == 0
    for bad in ("account_id = 12", "region = a b", "credentials = /no/such/file", "port = 70000",
                "base_url = ftp://x"):
        path.write_text("[sqs]\n%s\n" % bad)
        with pytest.raises(ConfigError):
            load_config(str(path))


def test_query_protocol_decoding():
    action, params = codec.parse_query({
        "Action": "SendMessageBatch", "Version": "2012-11-05", "QueueUrl": "http://h/1/q",
        "SendMessageBatchRequestEntry.2.Id": "b", "SendMessageBatchRequestEntry.2.MessageBody": "two",
        "SendMessageBatchRequestEntry.10.Id": "j", "SendMessageBatchRequestEntry.10.MessageBody": "ten",
        "SendMessageBatchRequestEntry.1.Id": "a", "SendMessageBatchRequestEntry.1.MessageBody": "one",
        "SendMessageBatchRequestEntry.1.MessageAttribute.1.Name": "color",
        "SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue": "red",
        "SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.DataType": "String"})
    assert action == "SendMessageBatch"
    assert params == {"QueueUrl": "http://h/1/q", "Entries": [
        {"Id": "a", "MessageBody": "one",
         "MessageAttributes": {"color": {"StringValue": "red", "DataType": "String"}}},
        {"Id": "b", "MessageBody": "two"}, {"Id": "j", "MessageBody": "ten"}]}
    _, params = codec.parse_query({"Action": "CreateQueue", "QueueName": "q",
                                   "Attribute.1.Name": "DelaySeconds", "Attribute.1.Value": "5",
                                   "Tag.1.Key": "team", "Tag.1.Value": "a"})
    assert params == {"QueueName": "q", "Attributes": {"DelaySeconds": "5"}, "tags": {"team": "a"}}
    _, params = codec.parse_query({"Action": "TagQueue", "Tag.1.Key": "k", "Tag.1.Value": "v"})
    assert params == {"Tags": {"k": "v"}}
    _, params = codec.parse_query({"Action": "ReceiveMessage", "AttributeName.1": "All",
                                   "MessageAttributeName.1": "x", "MessageAttributeName.2": "y"})
    assert params == {"AttributeNames": ["All"], "MessageAttributeNames": ["x", "y"]}
    for bad in ({"Action": "X", "Attribute.one.Name": "a"}, {"Action": "X", "A": "1", "A.1": "2"}):
        with pytest.raises(SqsError):
            codec.parse_query(bad)


def test_xml_answers_escape_and_keep_carriage_returns():
    body = codec.render_xml("ReceiveMessage", {"Messages": [{
        "MessageId": "id", "Body": "a\r\nb <&> \"q\"", "Attributes": {"SentTimestamp": "1"},
        "MessageAttributes": {"bin": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}}}]}, "req")
    root = ET.fromstring(body)
    ns = {"s": codec.XML_NAMESPACE}
    message = root.find("s:ReceiveMessageResult/s:Message", ns)
    assert message.find("s:Body", ns).text == "a\r\nb <&> \"q\""
    assert message.find("s:Attribute/s:Name", ns).text == "SentTimestamp"
    value = message.find("s:MessageAttribute/s:Value", ns)
    assert base64.b64decode(value.find("s:BinaryValue", ns).text) == b"\x00\x01"
    assert root.find("s:ResponseMetadata/s:RequestId", ns).text == "req"
    error = ET.fromstring(codec.render_xml_error(SqsError("QueueDoesNotExist", "gone <x>"), "r"))
    assert error.find("s:Error/s:Code", ns).text == "AWS.SimpleQueueService.NonExistentQueue"
    assert error.find("s:Error/s:Message", ns).text == "gone <x>"


def test_md5_of_message_attributes_matches_moto():
    from moto.sqs.models import Message as MotoMessage
    given = {"color": {"DataType": "String", "StringValue": "blue \u00e9"},
             "count": {"DataType": "Number.int", "StringValue": "42"},
             "blob": {"DataType": "Binary", "BinaryValue": base64.b64encode(b"\x00\xffdata").decode()},
             "Alpha": {"DataType": "String.custom", "StringValue": "x"}}
    parsed = parse_message_attributes(given)
    moto_message = MotoMessage("id", "body")
    # moto keeps Binary values decoded
    moto_message.message_attributes = {name: dict(value) for name, value in parsed.items()}
    assert md5_of_attributes(parsed) == moto_message.attribute_md5


@pytest.mark.parametrize("attributes", [
    {"AWS.reserved": {"DataType": "String", "StringValue": "x"}},
    {"a..b": {"DataType": "String", "StringValue": "x"}},
    {"n": {"DataType": "Number", "StringValue": "twelve"}},
    {"n": {"DataType": "Text", "StringValue": "x"}},
    {"n": {"DataType": "String", "StringValue": ""}},
    {"n": {"DataType": "Binary", "BinaryValue": "not base64!"}},
    {"n%d" % i: {"DataType": "String", "StringValue": "x"} for i in range(11)},
])
def test_bad_message_attributes_are_refused(attributes):
    with pytest.raises(SqsError) as excinfo:
        parse_message_attributes(attributes)
    assert excinfo.value.name == "InvalidParameterValue"


def test_queue_names_and_bodies():
    assert is_sqs_queue_name("a-b_C9") and is_sqs_queue_name("x" * 75 + ".fifo")
    assert not is_sqs_queue_name("x" * 81) and not is_sqs_queue_name("a.b") and not is_sqs_queue_name("")
    assert check_body("tab\tok \U0001f600") == "tab\tok \U0001f600"
    for bad in ("\u0000", "\ufffe", "a\u0008"):
        with pytest.raises(SqsError):
            check_body(bad)


def test_queue_attributes_map_onto_settings():
    changes, target = parse_queue_attributes(
        {"VisibilityTimeout": "0", "MessageRetentionPeriod": "60", "DelaySeconds": "5",
         "RedrivePolicy": '{"deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:dlq", '
                          '"maxReceiveCount": "3"}'}, False, NAMING, 262144, creating=True)
    assert target == "dlq"
    assert sorted(changes) == sorted([("settings", "lease_seconds", "0.001"), ("settings", "ttl", "60"),
                                      ("sqs", "DelaySeconds", "5"), ("settings", "max_receives", "3"),
                                      ("settings", "dead_letter_queue", "dlq")])
    assert NAMING.queue_of_arn("arn:aws:sqs:eu-west-1:000000000000:q") == "q"
    assert NAMING.queue_of_arn("arn:aws:sqs:us-east-1:999999999999:q") is None


def test_setup_cfg_ships_the_sqs_package():
    import configparser
    parser = configparser.ConfigParser()
    parser.read("setup.cfg")
    packages = parser.get("options", "packages").split()
    assert "restmq.web.sqs" in packages


def test_make_service_adds_the_sqs_listener(tmp_path):
    from restmq.tap import Options, makeService
    options = Options()
    options.parseOptions(["--redis", "redis://127.0.0.1:1/0", "--port", "0", "--sqs-port", "9324",
                          "--sqs-listen", "127.0.0.2"])
    names = [child.name for child in makeService(options)]
    assert "sqs" in names and names.index("sqs") > names.index("http")
    off = Options()
    off.parseOptions(["--redis", "redis://127.0.0.1:1/0", "--port", "0"])
    assert "sqs" not in [child.name for child in makeService(off)]
