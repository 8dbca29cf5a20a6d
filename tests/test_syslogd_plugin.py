"""`twistd -n restmq-syslogd` as users run it: plugin discovery, options, Redis choice, errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
import pytest_twisted
from twisted.application.service import IServiceMaker
from twisted.internet import reactor
from twisted.plugin import getPlugins
from twisted.python import usage

from restmq.ingest import syslogtap
from restmq.config import RedisTarget
from restmq.storage.pool import RedisPool
from restmq.storage.store import QueueStore
from restmq.server.redisproc import redis_answers
from tests.helpers import free_port, sleep
from tests.processes import alive, spawn_twistd, wait_dead, wait_listening
from tests.test_embedded import redis_pid, wait_http
from tests.test_embedded import twistd as restmq_twistd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUEUE = "syslogd:127.0.0.1"


def syslogd(*args: str) -> subprocess.Popen:
    return spawn_twistd(*args, plugin="restmq-syslogd")


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    # twistd re-raises the signal it stopped on, so a clean stop reports SIGTERM
    assert proc.returncode in (0, -signal.SIGTERM), out.decode()
    return out.decode()


def log_line(port: int, *args: str) -> None:
    subprocess.run([shutil.which("logger") or "logger", "--server", "127.0.0.1", "--port", str(port),
                    *args], check=True, timeout=10)


async def wait_for_messages(store: QueueStore, count: int, timeout: float = 20.0) -> list:
    messages: list = []
    deadline = time.monotonic() + timeout
    while len(messages) < count:
        messages += [json.loads(m.value) for m in await store.take(QUEUE, count)]
        if time.monotonic() > deadline:
            raise AssertionError("%d of %d messages arrived" % (len(messages), count))
        await sleep(0.05)
    return messages


# the plugin and its options, in process

def test_plugin_is_found():
    makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
    assert "restmq-syslogd" in makers
    assert makers["restmq-syslogd"].options is syslogtap.Options
    assert "restmq" in makers


def test_defaults():
    options = syslogtap.Options()
    options.parseOptions([])
    assert (options["port"], options["listen"], options["max-line"]) == (25000, "127.0.0.1", 65536)
    assert options.config.redis.target is None


def test_options_parse_a_sample_command_line():
    options = syslogtap.Options()
    options.parseOptions(["--port", "5514", "--listen", "0.0.0.0", "--max-line", "8192",
                          "--redis-host", "127.0.0.1", "--redis-port", "6399", "--redis-db", "2",
                          "--redis-pool", "3", "--no-udp"])
    assert (options["port"], options["listen"], options["max-line"], options["no-udp"]) == (
        5514, "0.0.0.0", 8192, True)
    target = options.config.redis.target
    assert (target.host, target.port, target.db, options.config.redis.pool_size) == ("127.0.0.1", 6399, 2, 3)


def test_redis_comes_from_the_restmq_config_file(tmp_path):
    conf = tmp_path / "restmq.conf"
    conf.write_text("[server]\nport = 9999\n[redis]\nurl = redis://127.0.0.1:6400/5\n")
    options = syslogtap.Options()
    options.parseOptions(["--config", str(conf)])
    assert options.config.redis.target.port == 6400 and options.config.redis.target.db == 5
    # [server] is RestMQ's HTTP side, not ours
    assert options["port"] == 25000


@pytest.mark.parametrize("argv", [["--port", "x"], ["--port", "70000"], ["--max-line", "10"],
                                  ["--redis", "nope://"], ["--no-tcp", "--no-udp"],
                                  ["--max-connections", "0"], ["--bogus"]])
def test_bad_option_is_a_usage_error(argv):
    with pytest.raises(usage.UsageError):
        syslogtap.Options().parseOptions(argv)


def test_make_service_builds_named_services_without_listening(tmp_path):
    options = syslogtap.Options()
    options.parseOptions(["--data-dir", str(tmp_path / "data"), "--port", "0"])
    top = syslogtap.makeService(options)
    assert [child.name for child in top] == ["redis", "pool", "syslogd"]
    assert not any(child.running for child in top)
    assert top.getServiceNamed("syslogd").tcp_port is None


def test_make_service_with_a_configured_redis_has_no_redis_child():
    options = syslogtap.Options()
    options.parseOptions(["--redis", "redis://127.0.0.1:6399/0", "--port", "0"])
    assert [child.name for child in syslogtap.makeService(options)] == ["pool", "syslogd"]


# twistd as users run it

@pytest_twisted.ensureDeferred
async def test_twistd_syslogd_stores_into_the_configured_redis(store, redis_server):
    port = free_port()
    proc = syslogd("--port", str(port), "--redis", "redis://127.0.0.1:%d/0" % redis_server.port)
    try:
        wait_listening(port, proc)
        log_line(port, "--tcp", "-t", "plugin", "over tcp")
        log_line(port, "--udp", "--rfc3164", "-t", "plugin", "over udp")
        messages = await wait_for_messages(store, 2)
        assert sorted(m["message"] for m in messages) == ["over tcp", "over udp"]
    finally:
        out = stop(proc)
    assert "syslogd listening on 127.0.0.1 port %d (tcp and udp)" % port in out


def test_without_redis_it_uses_the_embedded_redis_of_restmq_on_the_same_data_dir(tmp_path):
    data = tmp_path / "data"
    http_port, syslog_port = free_port(), free_port()
    restmq = restmq_twistd("--port", str(http_port), "--data-dir", str(data))
    try:
        wait_http(http_port, restmq)
        proc = syslogd("--port", str(syslog_port), "--data-dir", str(data))
        try:
            wait_listening(syslog_port, proc)
            log_line(syslog_port, "--tcp", "-t", "shared", "through restmq's redis")
            deadline = time.monotonic() + 20
            while True:
                response = urllib.request.urlopen("http://127.0.0.1:%d/q/%s" % (http_port, QUEUE), timeout=5)
                if response.status == 200:
                    break
                assert time.monotonic() < deadline, "the line never reached RestMQ"
                time.sleep(0.05)
            message = json.loads(json.loads(response.read())["value"])
            assert message["message"] == "through restmq's redis" and message["app"] == "shared"
        finally:
            out = stop(proc)
        assert "Using the Redis already serving" in out
        # RestMQ's Redis outlives the adapter
        request = urllib.request.Request("http://127.0.0.1:%d/q/after" % http_port, data=b"value=x")
        assert urllib.request.urlopen(request, timeout=5).status == 200
    finally:
        restmq.send_signal(signal.SIGTERM)
        restmq.communicate(timeout=20)


@pytest_twisted.ensureDeferred
async def test_without_redis_or_restmq_it_runs_its_own_embedded_redis(tmp_path):
    data = tmp_path / "data"
    port = free_port()
    proc = syslogd("--port", str(port), "--data-dir", str(data))
    try:
        wait_listening(port, proc)
        # the port opens before services start (twistd's privileged phase): wait for Redis
        deadline = time.monotonic() + 20
        while not redis_answers(str(data / "redis.sock")):
            assert time.monotonic() < deadline and proc.poll() is None, "no embedded Redis came up"
            time.sleep(0.05)
        child = redis_pid(data)
        assert alive(child)
        pool = RedisPool(RedisTarget("unix", path=str(data / "redis.sock")), 1, 1.0, 1.5, reactor)
        pool.start()
        try:
            log_line(port, "--udp", "own redis")
            [message] = await wait_for_messages(QueueStore(pool), 1)
            assert message["message"] == "own redis"
        finally:
            await pool.stop()
    finally:
        stop(proc)
    wait_dead(child)


def test_port_in_use_is_one_clear_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = syslogd("--port", str(port), "--redis", "redis://127.0.0.1:1/0")
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "restmq-syslogd: cannot listen" in out.decode()


def test_unstartable_embedded_redis_is_one_clear_line_and_exit_1(tmp_path):
    conf = tmp_path / "r.conf"
    conf.write_text("[redis]\nserver_binary = /bin/false\ndata_dir = %s\n" % (tmp_path / "d"))
    proc = syslogd("--config", str(conf), "--port", str(free_port()))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "restmq-syslogd: redis-server exited at start" in out.decode()


def test_bad_option_exits_non_zero_with_one_line():
    proc = syslogd("--max-line", "nope")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert "--max-line must be a whole number" in out.decode()
