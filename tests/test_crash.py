"""Crashes lose nothing acknowledged: a consumer or RestMQ itself killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest_twisted
import treq
from twisted.internet import defer, reactor
from twisted.web.client import HTTPConnectionPool

from tests.helpers import free_port, start_app, stop_app, wait_until
from tests.processes import ROOT, twistd_command

CONSUMER = r"""
import json, sys, time, urllib.request
url = sys.argv[1]
while True:
    response = urllib.request.urlopen(url + "/q/work?reserve=0.5&wait=10")
    if response.status == 200:
        print(json.dumps(json.loads(response.read())), flush=True)
        time.sleep(3600)  # the job never finishes: this process gets killed
"""


@pytest_twisted.ensureDeferred
async def test_consumer_killed_mid_job_gets_its_message_redelivered(app):
    await app.post("/q/work", data={"value": "the job"})
    consumer = subprocess.Popen([sys.executable, "-c", CONSUMER, app.url], stdout=subprocess.PIPE)
    try:
        line = await _read_line(consumer)
        taken = json.loads(line)
        assert taken["value"] == "the job" and taken["deliveries"] == 1
    finally:
        consumer.send_signal(signal.SIGKILL)
        consumer.wait()
    again = {}

    async def redelivered():
        response = await app.get("/q/work?reserve=30&wait=5")
        if response.code == 200:
            again.update(json.loads(await response.text()))

    while not again:
        await redelivered()
    assert (again["key"], again["value"], again["deliveries"]) == (taken["key"], "the job", 2)


async def _read_line(proc):
    from twisted.internet import threads
    return await threads.deferToThread(proc.stdout.readline)


def _twistd(port: int, redis_port: int) -> subprocess.Popen:
    return subprocess.Popen(
        twistd_command("--port", str(port), "--redis", "redis://127.0.0.1:%d/0" % redis_port),
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest_twisted.ensureDeferred
async def test_restmq_killed_during_a_publish_storm_loses_no_acknowledged_message(redis, redis_server):
    port = free_port()
    broker = _twistd(port, redis_server.port)
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 50
    acknowledged = []
    failed = []
    url = "http://127.0.0.1:%d/q/storm" % port
    try:
        async def up():
            try:
                return (await treq.get("http://127.0.0.1:%d/stats/" % port, pool=pool, timeout=2)).code == 200
            except Exception:
                return False

        while not await up():
            assert broker.poll() is None, "restmq did not start"
            from tests.helpers import sleep
            await sleep(0.05)

        async def publish(i: int) -> None:
            try:
                response = await treq.post(url, data={"value": "m%d" % i}, pool=pool, timeout=10)
                body = await response.text()
                if 200 <= response.code < 300:
                    acknowledged.append(("m%d" % i, body.strip()))
                else:
                    failed.append(i)
            except Exception:
                failed.append(i)

        storm = [defer.ensureDeferred(publish(i)) for i in range(3000)]
        await wait_until(lambda: len(acknowledged) >= 500, timeout=60)
        broker.send_signal(signal.SIGKILL)
        await defer.DeferredList(storm)
    finally:
        if broker.poll() is None:
            broker.kill()
        broker.wait()
        await pool.closeCachedConnections()
    assert acknowledged and failed, "the kill did not land in the middle of the storm"

    # every acknowledged publish is there, consumed by a fresh broker
    checker = await start_app(redis_server.target)
    try:
        consumed = []
        while True:
            response = await checker.get("/q/storm?count=1000")
            if response.code == 204:
                break
            consumed += [m["value"] for m in json.loads(await response.text())["messages"]]
    finally:
        await stop_app(checker)
    missing = {value for value, _ in acknowledged} - set(consumed)
    duplicates = len(consumed) - len(set(consumed))
    print("storm: %d acknowledged, %d failed, %d consumed, %d duplicates"
          % (len(acknowledged), len(failed), len(consumed), duplicates))
    assert not missing
    assert duplicates == 0
    assert all(key.startswith("storm:") for _, key in acknowledged)
