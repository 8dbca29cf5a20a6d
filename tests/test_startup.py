"""Starting RestMQ as a user does: one-line errors and exit statuses, the start
banner, no pidfile in the current folder, the default data folder, the ``restmq``
command's twistd (no plugin scan), and what the log says while Redis is away."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from twisted.internet import task

from restmq.config import RedisTarget, default_data_dir
from restmq.storage.pool import REMINDER_INTERVAL, RedisPool
from tests.helpers import RedisProcess, free_port
from tests.processes import ROOT, Process, wait_http

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
RESTMQ = [sys.executable, "-m", "restmq.server.run"]


def run(command, cwd, env=None, timeout=60):
    return subprocess.run(command, cwd=str(cwd), env=env or dict(os.environ, PYTHONPATH=ROOT),
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)


@pytest.mark.parametrize("argv,status,needle", [
    (["--port", "eighty"], 2, "restmq: command line: [server] port = 'eighty': must be a port number"),
    (["--bogus"], 2, "restmq: option --bogus not recognized"),
    (["--port"], 2, "restmq: option --port requires argument"),
    (["--redis", "nope://x"], 2, "restmq: command line: [redis] url = 'nope://x'"),
    (["--config", "bad.conf"], 1, "restmq: bad.conf: [server] port = '99999': must be a port number"),
    (["--config", "missing.conf"], 1, "restmq: missing.conf: cannot read"),
    (["--config", "unknown.conf"], 1, "restmq: unknown.conf: [dispatch] mystery: unknown key"),
    (["--data-dir", "/tmp/" + "x" * 120], 1, "restmq: --data-dir /tmp/xxx"),
])
def test_twistd_bad_option_or_config_is_one_line_on_stderr(tmp_path, argv, status, needle):
    (tmp_path / "bad.conf").write_text("[server]\nport = 99999\n")
    (tmp_path / "unknown.conf").write_text("[dispatch]\nmystery = 1\n")
    done = run(TWISTD + ["-n", "restmq", *argv], tmp_path)
    assert done.returncode == status, done
    assert done.stdout == b""
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(needle), lines


@pytest.mark.parametrize("argv,status,needle", [
    (["--workers", "0"], 2, "restmq: --workers must be 1 or more"),
    (["--workers", "x"], 2, "restmq: argument --workers: invalid int value: 'x'"),
    (["--workers", "2", "--", "--port", "x"], 2, "restmq: command line: [server] port = 'x'"),
    (["--workers", "2", "--", "--config", "bad.conf"], 1, "restmq: bad.conf: [server] port"),
    (["--", "--port", "x"], 2, "restmq: command line: [server] port = 'x'"),
])
def test_restmq_command_bad_option_is_one_line_on_stderr(tmp_path, argv, status, needle):
    (tmp_path / "bad.conf").write_text("[server]\nport = 99999\n")
    done = run(RESTMQ + argv, tmp_path)
    assert done.returncode == status, done
    assert done.stdout == b""
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(needle), lines


def test_start_banner_names_url_dashboard_and_data_and_no_pidfile_lands_here(tmp_path):
    port = free_port()
    data = tmp_path / "data"
    here = tmp_path / "here"
    here.mkdir()
    for command in (TWISTD + ["-n", "restmq"], RESTMQ + ["--"]):
        proc = Process(command + ["--port", str(port), "--data-dir", str(data)], str(tmp_path / "log"))
        with open(proc.log_path, "ab") as log:
            proc.proc = subprocess.Popen(proc.command, cwd=str(here), env=dict(os.environ, PYTHONPATH=ROOT),
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_http(port, proc)
            url = "http://127.0.0.1:%d" % port
            banner = "RestMQ on %s \N{EM DASH} dashboard %s/dashboard/, data in %s" % (url, url, data)
            deadline = time.monotonic() + 10
            while banner not in proc.log():
                assert time.monotonic() < deadline, proc.log()
                time.sleep(0.05)
        finally:
            proc.stop()
        assert os.listdir(str(here)) == [], "twistd left %s in the current folder" % os.listdir(str(here))
        os.unlink(proc.log_path)


def test_default_data_dir_outside_a_checkout():
    assert default_data_dir({"HOME": "/home/ada"}, uid=1000, checkout=None) == \
        "/home/ada/.local/share/restmq/redis"
    assert default_data_dir({"HOME": "/home/ada", "XDG_DATA_HOME": "/data/ada"}, uid=1000, checkout=None) == \
        "/data/ada/restmq/redis"
    assert default_data_dir({}, uid=0, checkout=None) == "/var/lib/restmq/redis"
    assert default_data_dir({}, uid=0, checkout="/src/restmq") == "/src/restmq/var/redis"
    # this test runs in a checkout
    assert default_data_dir() == os.path.join(ROOT, "var", "redis")


def test_restmq_command_runs_twistd_without_scanning_twisted_plugins(tmp_path):
    # a plugin module that cannot be imported, as cyclone's is on Python 3.12+
    plugins = tmp_path / "site" / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "broken_plugin.py").write_text("import no_such_module_for_restmq\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, str(tmp_path / "site")]))
    scanned = run(TWISTD + ["-n", "restmq", "--port", "x"], tmp_path, env)
    assert b"no_such_module_for_restmq" in scanned.stdout + scanned.stderr  # plain twistd imports it
    ours = run([sys.executable, "-c", "from restmq.server.run import twistd; twistd()",
                "-n", "restmq", "--port", "x"], tmp_path, env)
    assert ours.returncode == 2
    assert b"no_such_module_for_restmq" not in ours.stdout + ours.stderr
    assert ours.stderr.decode().splitlines() == [
        "restmq: command line: [server] port = 'x': must be a port number (0-65535)"]
    helped = run([sys.executable, "-c", "from restmq.server.run import twistd; twistd()", "--help"],
                 tmp_path, env)
    assert b"restmq-syslogd" in helped.stdout and b"no_such_module" not in helped.stdout + helped.stderr


def test_unreachable_redis_is_one_warning_naming_it_then_one_line_when_it_answers(tmp_path):
    http_port, redis_port = free_port(), free_port()
    broker = Process(TWISTD + ["--pidfile=", "-n", "restmq", "--port", str(http_port),
                               "--redis", "redis://127.0.0.1:%d/0" % redis_port], str(tmp_path / "log"))
    broker.start()
    redis = RedisProcess(port=redis_port)
    try:
        wait_http(http_port, broker)
        target = "redis://127.0.0.1:%d/0" % redis_port
        warning = "Redis at %s is unreachable (Connection was refused" % target

        def wait_for(text):
            deadline = time.monotonic() + 20
            while text not in broker.log():
                assert time.monotonic() < deadline, broker.log()
                time.sleep(0.05)

        wait_for(warning)
        time.sleep(2.5)  # let the pool retry a couple of times (nothing else may be logged)
        redis.start()
        wait_for("Redis at %s is reachable again after" % target)
    finally:
        broker.stop()
        redis.stop()
    log = broker.log()
    assert log.count(warning) == 1, log
    assert "Scheduling retry" not in log


def test_unreachable_redis_reminder_every_30_seconds():
    clock = task.Clock()
    pool = RedisPool(RedisTarget("tcp", "127.0.0.1", 1), 1, 1.0, 1.5, clock)
    said = []
    pool.log = type(pool.log)(observer=lambda event: said.append(event["log_format"]))  # type: ignore
    pool._down_since = 0.0  # started at 0 and never connected (no factory: not connected)
    pool._report()
    assert said == []  # within connect_timeout: not yet
    clock.advance(1.0)
    pool._report()
    assert len(said) == 1 and said[0].startswith("Redis at {target} is unreachable")
    for _ in range(int(REMINDER_INTERVAL) - 1):
        clock.advance(1.0)
        pool._report()
    assert len(said) == 1
    clock.advance(1.0)
    pool._report()
    assert len(said) == 2 and "still unreachable" in said[1]
