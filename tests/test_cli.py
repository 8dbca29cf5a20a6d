"""restmq-cli run as users run it (python -m restmq.client.cli, a subprocess) against the live app."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest_twisted
from twisted.internet.threads import deferToThread

from restmq.model import Policy, QueueState
from tests.helpers import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(app, *args: str) -> list:
    return [sys.executable, "-m", "restmq.client.cli", "--url", app.url, *args]


def run(app, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    """The CLI in a thread: the reactor keeps serving it meanwhile."""
    return deferToThread(subprocess.run, command(app, *args), input=stdin, capture_output=True,
                         cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)


@pytest_twisted.ensureDeferred
async def test_put_and_get(app):
    done = await run(app, "put", "jobs", "one", "two")
    assert done.returncode == 0
    assert done.stdout.decode().split() == ["jobs:1", "jobs:2"]
    assert (await run(app, "get", "jobs")).stdout == b"one\n"
    taken = await run(app, "get", "jobs", "--json")
    assert json.loads(taken.stdout) == {"key": "jobs:2", "value": "two"}
    empty = await run(app, "get", "jobs")
    assert empty.returncode == 1 and empty.stdout == b""


@pytest_twisted.ensureDeferred
async def test_bulk_put_from_a_file_shows_progress(app, tmp_path):
    lines = tmp_path / "messages.txt"
    lines.write_text("".join("message %d\n" % i for i in range(2500)) + "\n")  # a blank line is skipped
    done = await run(app, "put", "bulk", "--file", str(lines), "--batch", "400")
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode().splitlines()[-1].startswith("put 2500 messages to bulk in ")
    length, newest = await app.store.jobs("bulk", 1)
    assert length == 2500 and newest[0].value == "message 2499"
    tail = await run(app, "tail", "bulk", "-n", "2")
    assert tail.stdout.decode().splitlines() == ["message 2498", "message 2499"]
    assert (await run(app, "get", "bulk")).stdout == b"message 0\n"


@pytest_twisted.ensureDeferred
async def test_bulk_put_from_stdin(app):
    done = await run(app, "put", "piped", "--quiet", stdin="é\nb\n\nc".encode("utf-8"))
    assert done.returncode == 0 and done.stderr == b""
    length, messages = await app.store.jobs("piped", 10)
    assert length == 3 and [m.value for m in reversed(messages)] == ["é", "b", "c"]


@pytest_twisted.ensureDeferred
async def test_tail_follow_prints_what_streams_in(app):
    proc = subprocess.Popen(command(app, "tail", "-f", "followed"), stdout=subprocess.PIPE,
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        await wait_until(lambda: app.dispatcher.subscriber_counts("followed").get("sse") == 1)
        await app.post("/q/followed", data={"value": "first"})
        await app.post("/q/followed", data={"value": "second"})
        lines = [await deferToThread(proc.stdout.readline) for _ in range(2)]
        assert lines == [b"first\n", b"second\n"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


@pytest_twisted.ensureDeferred
async def test_stats_policy_pause_resume_purge(app):
    await run(app, "put", "ctl", "a", "b")
    stats = await run(app, "stats", "ctl")
    assert "len          2" in stats.stdout.decode()
    table = (await run(app, "stats")).stdout.decode().splitlines()
    assert table[0].split()[:2] == ["queue", "len"] and table[1].split()[:2] == ["ctl", "2"]
    assert json.loads((await run(app, "stats", "--json")).stdout)["count"] == 1
    assert (await run(app, "policy", "ctl")).stdout == b"broadcast\n"
    assert (await run(app, "policy", "ctl", "roundrobin")).stdout == b"roundrobin\n"
    assert await app.store.get_policy("ctl") is Policy.ROUNDROBIN
    assert (await run(app, "pause", "ctl")).stdout == b"stopped\n"
    assert await app.store.get_state("ctl") is QueueState.STOPPED
    assert (await run(app, "resume", "ctl")).stdout == b"started\n"
    assert await app.store.get_state("ctl") is QueueState.STARTED
    assert (await run(app, "purge", "ctl")).stdout == b"2\n"


@pytest_twisted.ensureDeferred
async def test_errors_are_one_line_and_status_3(app):
    refused = await run(app, "get", "queuestat:x")
    assert refused.returncode == 3
    assert refused.stderr.decode().startswith("restmq-cli: 400 bad_request: invalid queue name")
    usage = await run(app, "policy", "q", "random")
    assert usage.returncode == 2
    gone = await deferToThread(subprocess.run, [sys.executable, "-m", "restmq.client.cli", "--url",
                                                "http://127.0.0.1:1", "get", "q"],
                               capture_output=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert gone.returncode == 3 and b"cannot talk to http://127.0.0.1:1" in gone.stderr
