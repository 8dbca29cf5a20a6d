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


JOB = r"""
import os, sys
value = sys.stdin.read()
with open(sys.argv[1], "a") as out:
    out.write("%s %s %s\n" % (value, os.environ["RESTMQ_KEY"], os.environ["RESTMQ_DELIVERIES"]))
sys.exit(1 if value == "bad" else 0)
"""


@pytest_twisted.ensureDeferred
async def test_work_runs_a_command_per_message_acking_on_success(app, tmp_path):
    assert (await run(app, "settings", "cliwork", "max_receives=2")).returncode == 0
    await run(app, "put", "cliwork", "ok-1", "bad", "ok-2")
    record = tmp_path / "done.txt"
    worked = await run(app, "work", "cliwork", "--idle-timeout", "1", "--retry-delay", "0", "--",
                       sys.executable, "-c", JOB, str(record))
    assert worked.returncode == 0, worked.stderr
    runs = sorted(record.read_text().splitlines())
    assert runs == ["bad cliwork:2 1", "bad cliwork:2 2", "ok-1 cliwork:1 1", "ok-2 cliwork:3 1"]
    log = worked.stderr.decode()
    assert "exited with status 1" in log and "to the dead letters" in log
    assert "Traceback" not in log  # a failed command is one line, not a traceback
    assert log.splitlines()[-1] == "restmq-cli work: 4 message(s) handled"
    stats = await app.store.stats("cliwork")
    assert (stats[0].length, stats[0].inflight) == (0, 0)

    dead = await run(app, "dead", "cliwork", "--json")
    letter = json.loads(dead.stdout)
    assert (letter["value"], letter["reason"], letter["deliveries"], letter["from"]) == \
        ("bad", "max_receives", 2, "cliwork:2")
    table = (await run(app, "dead", "cliwork")).stdout.decode().splitlines()
    assert table[0].split() == ["key", "deliveries", "reason", "from", "value"]
    assert table[1].split() == ["cliwork:dead:1", "2", "max_receives", "cliwork:2", "bad"]
    assert (await run(app, "redrive", "cliwork")).stdout == b"1\n"
    assert (await run(app, "dead", "cliwork", "--json")).stdout == b""


@pytest_twisted.ensureDeferred
async def test_work_refuses_a_missing_command(app):
    none = await run(app, "work", "q")
    assert none.returncode == 2 and b"work needs a command" in none.stderr
    missing = await run(app, "work", "q", "--", "no-such-command-here")
    assert missing.returncode == 2 and b"command not found" in missing.stderr


@pytest_twisted.ensureDeferred
async def test_reserve_ack_nack_and_settings(app):
    await run(app, "put", "leases", "a", "b", "c")
    reserved = await run(app, "reserve", "leases", "--count", "2", "--lease", "60")
    first, second = [json.loads(line) for line in reserved.stdout.decode().splitlines()]
    assert (first["value"], first["deliveries"]) == ("a", 1) and second["receipt"].startswith("leases:2:")
    assert (await run(app, "ack", "leases", first["receipt"])).stdout == b"1\n"
    assert (await run(app, "nack", "leases", second["receipt"], "--delay", "3600")).stdout == b"1\n"
    lost = await run(app, "ack", "leases", first["receipt"])
    assert lost.returncode == 3 and b"409 lease_lost" in lost.stderr
    assert json.loads((await run(app, "reserve", "leases")).stdout)["value"] == "c"
    assert (await run(app, "reserve", "leases")).returncode == 1  # "b" is delayed
    shown = (await run(app, "settings", "leases", "lease_seconds=45", "maxlen=10")).stdout.decode()
    assert "lease_seconds  45" in shown and "maxlen         10" in shown
    assert json.loads((await run(app, "settings", "leases", "--json")).stdout)["maxlen"] == 10
    assert (await run(app, "settings", "leases", "maxlen=")).returncode == 0
    assert json.loads((await run(app, "settings", "leases", "--json")).stdout)["maxlen"] == 0
    bad = await run(app, "settings", "leases", "maxlen")
    assert bad.returncode == 2 and b"NAME=VALUE" in bad.stderr
    refused = await run(app, "settings", "leases", "max_receives=0")
    assert refused.returncode == 3 and b"400 bad_request" in refused.stderr


@pytest_twisted.ensureDeferred
async def test_version(app):
    from restmq import __version__
    done = await run(app, "--version")
    assert done.returncode == 0 and done.stdout.decode().strip() == "restmq-cli " + __version__


@pytest_twisted.ensureDeferred
async def test_put_from_a_terminal_says_it_reads_stdin(app):
    import pty
    master, slave = pty.openpty()
    proc = subprocess.Popen(command(app, "put", "typed"), stdin=slave, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    os.close(slave)
    try:
        notice = await deferToThread(proc.stderr.readline)
        assert notice.startswith(b"restmq-cli: reading messages from standard input")
        os.write(master, b"by hand\n\x04")  # a line, then Ctrl-D
        assert await deferToThread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
        proc.stdout.close()
        proc.stderr.close()
    length, messages = await app.store.jobs("typed", 10)
    assert length == 1 and messages[0].value == "by hand"
