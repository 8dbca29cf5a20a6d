"""Helpers of the SQS tests: a real `twistd -n restmq` with its SQS listener, and
real clients for it (boto3, the AWS CLI from this venv)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

import boto3
from botocore.config import Config

from tests.helpers import free_port
from tests.processes import Broker

ACCOUNT = "000000000000"
REGION = "us-east-1"
# the SQS tests' own Redis database: other modules flush db 0 between tests
SQS_DB = 5


class SqsBroker(Broker):
    """``twistd -n restmq --sqs-port N`` on the session's Redis."""

    def __init__(self, directory: Any, name: str, redis_port: int, conf: str = "",
                 args: Optional[List[str]] = None, db: int = SQS_DB) -> None:
        self.sqs_port = free_port()
        path = directory / ("%s.conf" % name)
        path.write_text(conf)
        super().__init__(free_port(), ["--config", str(path), "--redis",
                                       "redis://127.0.0.1:%d/%d" % (redis_port, db),
                                       "--sqs-port", str(self.sqs_port), *(args or [])],
                         str(directory / ("%s.log" % name)))
        self.sqs_url = "http://127.0.0.1:%d" % self.sqs_port

    def start(self) -> "SqsBroker":
        super().start()
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.sqs_port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise AssertionError("no SQS listener on %d:\n%s" % (self.sqs_port, self.log()))
                time.sleep(0.05)

    def queue_url(self, queue: str) -> str:
        return "%s/%s/%s" % (self.sqs_url, ACCOUNT, queue)


def sqs_client(endpoint: str, key: str = "test-key", secret: str = "test-secret",
               read_timeout: float = 60.0) -> Any:
    """A boto3 SQS client for ``endpoint``; no retries, so errors are seen at once."""
    return boto3.client(
        "sqs", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"mode": "standard", "max_attempts": 1}, read_timeout=read_timeout,
                      connect_timeout=5))


def aws_cli(endpoint: str, *args: str, key: str = "test-key", secret: str = "test-secret",
            check: bool = True) -> subprocess.CompletedProcess:
    """Run this venv's ``aws sqs ...`` (the AWS CLI) against ``endpoint``."""
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret,
               AWS_DEFAULT_REGION=REGION, AWS_MAX_ATTEMPTS="1", AWS_RETRY_MODE="standard",
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_PAGER="")
    env.pop("AWS_PROFILE", None)
    command = [os.path.join(os.path.dirname(sys.executable), "aws"), "--endpoint-url", endpoint,
               "--output", "json", "sqs", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise AssertionError("aws %s failed (%d): %s" % (" ".join(args), done.returncode, done.stderr))
    return done


def cli_json(done: subprocess.CompletedProcess) -> Dict[str, Any]:
    return json.loads(done.stdout) if done.stdout.strip() else {}


def wait_for_long_poll(broker: Broker, queue: str, timeout: float = 20.0) -> None:
    """Block until ``broker`` has a long poll waiting on ``queue`` (its /stats say so),
    so what the test sends next can only reach it through a wake-up."""
    import urllib.request
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request("%s/stats/%s" % (broker.url, queue),
                                         headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            if json.loads(response.read()).get("subscribers", {}).get("longpoll"):
                return
        if time.monotonic() > deadline:
            raise AssertionError("no long poll waits on %s" % queue)
        time.sleep(0.01)


def receive_all(client: Any, url: str, expected: int, attempts: int = 50, **kwargs: Any) -> List[dict]:
    """Receive until ``expected`` messages came (each call long-polls, so no sleeping)."""
    got: List[dict] = []
    for _ in range(attempts):
        if len(got) >= expected:
            break
        reply = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, **kwargs)
        got.extend(reply.get("Messages", []))
    return got
