"""The blocking client in processes of its own, as users run it: two workers sharing
a queue, a worker stopped by SIGTERM / Ctrl-C mid-job, and consume(ack=True) across
a broker that is killed and started again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Any, List

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from restmq.client import Queue
from tests.helpers import free_port, wait_until
from tests.processes import ROOT, Broker

WORKER = r"""
import sys, time
from restmq.client import Queue
queue = Queue(sys.argv[1], url=sys.argv[2])
seconds = float(sys.argv[3])

def handle(message):
    print("start", message.value, flush=True)
    time.sleep(seconds)  # the job
    print("done", message.value, flush=True)

print("handled", queue.work(handle), flush=True)
"""

TX_WORKER = r"""
import sys
from twisted.internet import reactor, task
from restmq.client import TxQueue
queue = TxQueue(sys.argv[1], url=sys.argv[2])

def handle(message):
    print("start", message.value, flush=True)
    return task.deferLater(reactor, float(sys.argv[3]), print, "done", message.value, flush=True)

queue.work(handle).addCallback(lambda count: print("handled", count, flush=True))
reactor.run()
"""

CONSUMER = r"""
import sys, time
from restmq.client import Queue
queue = Queue(sys.argv[1], url=sys.argv[2])
wanted = int(sys.argv[3])
seen = set()
with queue.consume(ack=True, lease=2, timeout=60) as values:
    for value in values:
        time.sleep(0.02)  # the job
        print(value, flush=True)
        seen.add(value)
        if len(seen) == wanted:
            break
print("complete", len(seen), flush=True)
"""


class Lines:
    """A child process whose standard output is read line by line in a thread."""

    def __init__(self, *argv: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", *argv], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=ROOT))
        self.lines: List[str] = []
        self.log: List[str] = []
        self._readers = [threading.Thread(target=self._read, args=(stream, into), daemon=True)
                         for stream, into in ((self.proc.stdout, self.lines), (self.proc.stderr, self.log))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, into: List[str]) -> None:
        for raw in stream:
            into.append(raw.decode().rstrip("\n"))

    def starting_with(self, word: str) -> List[str]:
        return [line.split(" ", 1)[1] for line in self.lines if line.startswith(word + " ")]

    async def finish(self, timeout: float = 60.0) -> int:
        def wait() -> int:
            code = self.proc.wait(timeout=timeout)
            for reader in self._readers:
                reader.join(10)
            return code
        return await deferToThread(wait)

    def errors(self) -> str:
        return "\n".join(self.log)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


async def stats(url: str, name: str) -> dict:
    return await deferToThread(Queue(name, url=url).stats)


@pytest_twisted.ensureDeferred
async def test_two_worker_processes_share_200_jobs_and_do_each_exactly_once(app):
    workers = [Lines(WORKER, "jobs200", app.url, "0.005") for _ in range(2)]
    try:
        # both are waiting (long-polling) before the jobs come
        await wait_until(lambda: app.dispatcher.subscriber_counts("jobs200").get("longpoll", 0) == 2,
                         timeout=30)
        jobs = ["job-%03d" % i for i in range(200)]
        await deferToThread(Queue("jobs200", url=app.url).put, *jobs)
        await wait_until(lambda: sum(len(w.starting_with("done")) for w in workers) >= 200, timeout=60)
        for worker in workers:
            worker.proc.send_signal(signal.SIGTERM)  # idle by now: it stops at once
        codes = [await worker.finish() for worker in workers]
        assert codes == [0, 0], [w.errors() for w in workers]
        done = [w.starting_with("done") for w in workers]
        assert sorted(done[0] + done[1]) == jobs  # every job, none twice
        assert done[0] and done[1], "both workers took a share"
        assert [int(w.starting_with("handled")[0]) for w in workers] == [len(d) for d in done]
        left = await stats(app.url, "jobs200")
        assert (left["len"], left["inflight"]) == (0, 0)
    finally:
        for worker in workers:
            worker.kill()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest_twisted.ensureDeferred
async def test_a_stopped_worker_finishes_its_current_job_then_exits(app, signum):
    name = "stopping-%d" % signum
    await deferToThread(Queue(name, url=app.url).put, "first", "second", "third")
    worker = Lines(WORKER, name, app.url, "1.0")
    try:
        await wait_until(lambda: worker.starting_with("start") == ["first"], timeout=30)
        worker.proc.send_signal(signum)
        assert await worker.finish() == 0, worker.errors()
        assert worker.starting_with("done") == ["first"]
        assert worker.starting_with("handled") == ["1"]
        left = await stats(app.url, name)
        assert (left["len"], left["inflight"]) == (2, 0)  # "first" acked; the others untouched
    finally:
        worker.kill()


@pytest_twisted.ensureDeferred
async def test_a_twisted_worker_finishes_its_current_job_before_the_reactor_stops(app):
    await deferToThread(Queue("txstopping", url=app.url).put, "first", "second")
    worker = Lines(TX_WORKER, "txstopping", app.url, "1.0")
    try:
        await wait_until(lambda: worker.starting_with("start") == ["first"], timeout=30)
        worker.proc.send_signal(signal.SIGTERM)  # the reactor shuts down: the job finishes first
        assert await worker.finish() == 0, worker.errors()
        assert worker.starting_with("done") == ["first"]
        assert worker.starting_with("handled") == ["1"]
        left = await stats(app.url, "txstopping")
        assert (left["len"], left["inflight"]) == (1, 0)
    finally:
        worker.kill()


@pytest_twisted.ensureDeferred
async def test_consume_with_ack_survives_a_broker_restart_and_loses_nothing(redis, redis_server, tmp_path):
    port = free_port()
    args = ["--redis", "redis://127.0.0.1:%d/0" % redis_server.port]
    broker = await deferToThread(Broker(port, args, str(tmp_path / "broker-1.log")).start)
    url = broker.url
    consumer = None
    try:
        before = ["before-%03d" % i for i in range(100)]
        await deferToThread(Queue("restart", url=url).put, *before)
        consumer = Lines(CONSUMER, "restart", url, "150")
        await wait_until(lambda: len(consumer.lines) >= 20, timeout=30)
        broker.kill()  # SIGKILL in the middle of the stream
        at_kill = len(consumer.lines)
        # the broker stays away until the consumer has run out of per-call retries
        await wait_until(lambda: any("reconnecting" in line for line in consumer.log), timeout=30)
        broker = await deferToThread(Broker(port, args, str(tmp_path / "broker-2.log")).start)
        after = ["after-%03d" % i for i in range(50)]
        await deferToThread(Queue("restart", url=url).put, *after)
        assert await consumer.finish(90) == 0, consumer.errors()
        assert consumer.lines[-1] == "complete 150"
        got = consumer.lines[:-1]
        # nothing lost; a message whose ack the kill swallowed comes back once its lease ends
        assert set(got) == set(before + after)
        assert len(got) - len(set(got)) <= 5
        assert at_kill < 100, "the kill landed in the middle of the stream"
    finally:
        if consumer is not None:
            consumer.kill()
        broker.stop()
