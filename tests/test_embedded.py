"""`twistd -n restmq` as users run it: embedded Redis start, stop, persistence, errors."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from tests.helpers import free_port
from tests.processes import alive, spawn_twistd, wait_dead


def twistd(*args: str) -> subprocess.Popen:
    return spawn_twistd(*args)


def wait_http(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/stats/" % port, timeout=2).read()
            return
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None:
                raise AssertionError("restmq exited: %s" % proc.stdout.read().decode())
            if time.monotonic() > deadline:
                raise AssertionError("restmq did not answer on port %d" % port)
            time.sleep(0.05)


def post(port: int, queue: str, value: str) -> str:
    data = ("value=" + value).encode()
    url = "http://127.0.0.1:%d/q/%s" % (port, queue)
    return urllib.request.urlopen(url, data=data, timeout=5).read().decode()


def pop(port: int, queue: str) -> bytes:
    return urllib.request.urlopen("http://127.0.0.1:%d/q/%s" % (port, queue), timeout=5).read()


def redis_pid(data_dir) -> int:
    return int((data_dir / "redis.pid").read_text().strip())


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    return out.decode()


def test_embedded_redis_starts_persists_and_stops(tmp_path):
    data = tmp_path / "data"
    port = free_port()
    proc = twistd("--port", str(port), "--data-dir", str(data))
    try:
        wait_http(port, proc)
        assert post(port, "persist", "kept across restarts") == "persist:1\r\n"
        child = redis_pid(data)
        assert alive(child)
    finally:
        stop(proc)
    # twistd re-raises the signal it stopped on, so a clean stop reports SIGTERM
    assert proc.returncode in (0, -signal.SIGTERM)
    wait_dead(child)
    assert (data / "appendonly.aof").exists()

    port = free_port()
    proc = twistd("--port", str(port), "--data-dir", str(data))
    try:
        wait_http(port, proc)
        assert b'"value":"kept across restarts"' in pop(port, "persist")
    finally:
        stop(proc)


def test_killed_restmq_leaves_no_orphan_redis(tmp_path):
    data = tmp_path / "data"
    port = free_port()
    proc = twistd("--port", str(port), "--data-dir", str(data))
    wait_http(port, proc)
    child = redis_pid(data)
    proc.kill()
    proc.wait(timeout=10)
    wait_dead(child)


def test_unstartable_redis_is_one_clear_line_and_exit_1(tmp_path):
    conf = tmp_path / "r.conf"
    conf.write_text("[redis]\nserver_binary = /bin/false\ndata_dir = %s\n" % (tmp_path / "d"))
    proc = twistd("--config", str(conf), "--port", str(free_port()))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "restmq: redis-server exited at start" in out.decode()


def test_second_restmq_on_the_same_data_dir_is_refused(tmp_path):
    data = tmp_path / "data"
    port = free_port()
    first = twistd("--port", str(port), "--data-dir", str(data))
    try:
        wait_http(port, first)
        second = twistd("--port", str(free_port()), "--data-dir", str(data))
        out, _ = second.communicate(timeout=30)
        assert second.returncode == 1
        assert "already serves" in out.decode()
    finally:
        stop(first)


@pytest.mark.parametrize("args,needle", [
    (["--port", "notaport"], "[server] port"),
    (["--redis", "nope://x"], "[redis] url"),
])
def test_bad_option_exits_non_zero_with_one_line(args, needle):
    proc = twistd(*args)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert needle in out.decode()


def test_port_in_use_is_one_clear_line(tmp_path):
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = twistd("--port", str(port), "--data-dir", str(tmp_path / "d"))
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "restmq: cannot listen" in out.decode()


def get_json(port: int, path: str):
    import json
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_for(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def current_pid(data_dir) -> int:
    """The live redis-server of ``data_dir``, or 0 (none, or its pidfile is being written)."""
    try:
        pid = redis_pid(data_dir)
    except (OSError, ValueError):
        return 0
    return pid if alive(pid) else 0


def test_killed_embedded_redis_is_restarted_on_its_append_only_file(tmp_path):
    data = tmp_path / "data"
    port = free_port()
    proc = twistd("--port", str(port), "--data-dir", str(data))
    try:
        wait_http(port, proc)
        assert post(port, "survive", "acknowledged before the kill") == "survive:1\r\n"
        status, health = get_json(port, "/health")
        assert status == 200 and health["redis"]["embedded"]["state"] == "running"
        first = redis_pid(data)
        assert health["redis"]["embedded"]["pid"] == first
        os.kill(first, signal.SIGKILL)
        # a new redis-server, and requests are served again (the pool reconnects)
        wait_for(lambda: get_json(port, "/health/ready")[0] == 200 and current_pid(data) not in (0, first),
                 "the broker did not recover from a killed embedded redis-server")
        status, health = get_json(port, "/health")
        assert status == 200 and health["redis"]["embedded"]["restarts"] == 1
        assert alive(redis_pid(data))
        assert b'"value":"acknowledged before the kill"' in pop(port, "survive")
        assert post(port, "survive", "after") == "survive:2\r\n"
    finally:
        out = stop(proc)
    assert "[restmq.server.redisproc.EmbeddedRedis#error] The embedded redis-server %d exited" % first in out
    assert "restarted in" in out


def test_embedded_redis_that_keeps_dying_makes_restmq_exit_non_zero(tmp_path):
    data = tmp_path / "data"
    conf = tmp_path / "restmq.conf"
    conf.write_text("[redis]\nmax_restarts = 2\n")
    port = free_port()
    proc = twistd("--config", str(conf), "--port", str(port), "--data-dir", str(data))
    try:
        wait_http(port, proc)
        for _ in range(3):
            victim = redis_pid(data)
            os.kill(victim, signal.SIGKILL)
            wait_dead(victim)
            wait_for(lambda: proc.poll() is not None or current_pid(data) not in (0, victim),
                     "no new redis-server")
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out.decode()
    assert "giving up" in out.decode()
    pid = redis_pid(data)
    wait_dead(pid)
