"""`make run WORKERS=N` (python -m restmq.server.run): N twistd processes on one port,
one embedded Redis, a clean stop that leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import time
import urllib.error
import urllib.request

from tests.helpers import free_port
from tests.processes import Process, alive, children_of, listens_on, wait_dead, wait_http


def launcher(tmp_path, *args: str) -> Process:
    return Process([sys.executable, "-m", "restmq.server.run", *args], str(tmp_path / "run.log"))


def post(port: int, queue: str, value: str) -> bytes:
    return urllib.request.urlopen("http://127.0.0.1:%d/q/%s" % (port, queue),
                                  data=("value=" + value).encode(), timeout=5).read()


def pop(port: int, queue: str) -> bytes:
    return urllib.request.urlopen("http://127.0.0.1:%d/q/%s" % (port, queue), timeout=5).read()


def wait_children(pid: int, count: int, timeout: float = 30.0) -> list:
    """The launcher's children once it has ``count`` of them (workers + redis-server)."""
    deadline = time.monotonic() + timeout
    while True:
        found = children_of(pid)
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, "launcher has children %s" % found
        time.sleep(0.05)


def redis_pid(data_dir) -> int:
    return int((data_dir / "redis.pid").read_text().strip())


def start_workers(tmp_path, workers: int = 2):
    port = free_port()
    data = tmp_path / "data"
    run = launcher(tmp_path, "--workers", str(workers), "--", "--port", str(port),
                   "--data-dir", str(data)).start()
    wait_http(port, run)
    children = wait_children(run.pid, workers + 1)
    redis = redis_pid(data)
    workers_pids = [pid for pid in children if pid != redis]
    # every worker holds its own listening socket on the shared port
    deadline = time.monotonic() + 30
    while not all(listens_on(pid, port) for pid in workers_pids):
        assert time.monotonic() < deadline, "workers not all listening:\n" + run.log()
        time.sleep(0.05)
    return run, port, workers_pids, redis


def test_workers_share_the_port_and_sigterm_stops_everything(tmp_path):
    run, port, workers, redis = start_workers(tmp_path)
    try:
        assert len(workers) == 2 and alive(redis)
        for i in range(10):
            assert post(port, "shared", "m%d" % i) == b"shared:%d\r\n" % (i + 1)
        popped = [pop(port, "shared") for _ in range(10)]
        assert all(b'"value":"m%d"' % i in popped[i] for i in range(10))
        run.proc.send_signal(signal.SIGTERM)
        run.proc.wait(timeout=60)
    finally:
        run.kill()
    assert run.proc.returncode == 0, run.log()
    for pid in workers + [redis]:
        wait_dead(pid)
    assert (tmp_path / "data" / "appendonly.aof").exists()


def test_ctrl_c_stops_everything(tmp_path):
    run, port, workers, redis = start_workers(tmp_path)
    try:
        run.proc.send_signal(signal.SIGINT)
        run.proc.wait(timeout=60)
    finally:
        run.kill()
    assert run.proc.returncode == 0, run.log()
    for pid in workers + [redis]:
        wait_dead(pid)


def test_killed_launcher_leaves_no_orphans(tmp_path):
    run, port, workers, redis = start_workers(tmp_path)
    try:
        run.proc.kill()
        run.proc.wait(timeout=10)
    finally:
        run.kill()
    for pid in workers + [redis]:
        wait_dead(pid)


def test_dying_worker_stops_the_others_and_exits_1(tmp_path):
    run, port, workers, redis = start_workers(tmp_path)
    try:
        survivor = workers[1]
        # a crash, as far as the launcher can tell
        os.kill(workers[0], signal.SIGKILL)
        run.proc.wait(timeout=60)
    finally:
        run.kill()
    assert run.proc.returncode == 1
    assert "worker %d exited" % workers[0] in run.log()
    wait_dead(survivor)
    wait_dead(redis)


def test_port_taken_by_another_program_exits_1_without_orphans(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        run = launcher(tmp_path, "--workers", "2", "--", "--port", str(port),
                       "--data-dir", str(tmp_path / "data")).start()
        try:
            run.proc.wait(timeout=60)
        finally:
            run.kill()
    assert run.proc.returncode == 1
    log = run.log()
    assert "restmq: cannot listen on 127.0.0.1:%d" % port in log
    redis = re.search(r"embedded redis-server (\d+) on", log)
    assert redis, log
    wait_dead(int(redis.group(1)))


def test_bad_option_is_refused_before_anything_starts(tmp_path):
    run = launcher(tmp_path, "--workers", "2", "--", "--port", "notaport",
                   "--data-dir", str(tmp_path / "data")).start()
    try:
        run.proc.wait(timeout=30)
    finally:
        run.kill()
    assert run.proc.returncode == 2
    assert "[server] port" in run.log()
    assert not (tmp_path / "data").exists()


def test_killed_embedded_redis_is_restarted_and_the_workers_carry_on(tmp_path):
    run, port, workers, redis = start_workers(tmp_path)
    try:
        assert post(port, "carry", "before") == b"carry:1\r\n"
        os.kill(redis, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            try:
                if (tmp_path / "data" / "redis.pid").exists() and redis_pid(tmp_path / "data") != redis:
                    if post(port, "carry", "after") == b"carry:2\r\n":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "not served again:\n" + run.log()
            time.sleep(0.05)
        assert all(alive(pid) for pid in workers) and run.proc.poll() is None
        # the pop may reach the other worker, whose pool reconnects on its own schedule
        # (slower on a loaded machine): each worker carries on once it has reconnected
        while True:
            try:
                popped = pop(port, "carry")
                break
            except urllib.error.HTTPError as exc:
                assert exc.code == 503 and time.monotonic() < deadline, "not served again:\n" + run.log()
                time.sleep(0.05)
        assert b'"value":"before"' in popped
        assert "restarting it" in run.log()
    finally:
        run.stop()
    assert run.proc.returncode == 0, run.log()
