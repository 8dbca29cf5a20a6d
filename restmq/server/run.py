"""The ``restmq`` command (and `make run`): RestMQ under twistd, one process or several.

``restmq [--workers N] [--pidfile FILE] [--] [restmq options]`` (also
``python -m restmq.server.run``). With one worker this becomes ``twistd -n
restmq``. With several, every process listens on the same port with
SO_REUSEPORT, and when no Redis is configured they share one embedded
redis-server that this launcher starts first and stops last. Their metrics
are shared through prometheus_client's multiprocess mode (a fresh directory
per run, removed at the end), so any worker answers ``/metrics`` for all.

twistd runs here knowing RestMQ's own plugins only: it does not scan
``twisted/plugins`` (where cyclone's own plugin fails to import on Python 3.12+).

The launcher supervises: SIGTERM or Ctrl-C stops every worker, then Redis,
and exits 0; a worker that exits on its own stops the others and the launcher
exits 1. The embedded Redis is restarted at once should it die (on its
append-only file; the workers reconnect), unless it died ``max_restarts`` times
within a minute: then the launcher stops the workers and exits 1. The children
die with the launcher should it be killed (PR_SET_PDEATHSIG), so no orphan is
left behind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any, Iterable, List, NoReturn, Optional

if TYPE_CHECKING:
    from restmq.server.redisproc import EmbeddedRedis

__all__ = ["main", "console", "twistd", "METRICS_DIR_ENV"]

# how long a worker may take to stop after SIGTERM before it is killed
STOP_TIMEOUT = 20.0
#: prometheus_client's multiprocess directory (its own variable name)
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _twistd(args: List[str], pidfile: str = "") -> List[str]:
    return [sys.executable, "-c", "from restmq.server.run import twistd; twistd()",
            "--pidfile=" + pidfile, "-n", "restmq"] + args


def _say(text: str) -> None:
    sys.stderr.write("restmq: %s\n" % text)
    sys.stderr.flush()


def _restmq_plugins() -> List[Any]:
    from twisted.plugins.restmq_plugin import restmq
    from twisted.plugins.restmq_syslogd_plugin import restmq_syslogd
    return [restmq, restmq_syslogd]


def twistd() -> None:
    """twistd, with RestMQ's plugins only (no scan of ``twisted/plugins``, whose
    other modules, cyclone's among them, need not import on this Python)."""
    from twisted.application import app
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins
    from twisted.scripts._twistd_unix import ServerOptions
    from twisted.scripts.twistd import runApp

    class RestMQServerOptions(ServerOptions):
        @staticmethod
        def _getPlugins(interface: Any, package: Any = None) -> Iterable[Any]:  # type: ignore[override]
            if interface is IServiceMaker:
                return _restmq_plugins()
            return getPlugins(interface, package)

    app.run(runApp, RestMQServerOptions)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # one line, as the broker's own option errors (no usage text)
        self.exit(2, "restmq: %s (restmq --help)\n" % message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="restmq", usage="restmq [--workers N] [--pidfile FILE] [--] [restmq options]",
        description="Start RestMQ (twistd -n restmq) in the foreground, on one process or several "
                    "sharing the port; the restmq options are those of `twistd -n restmq --help`.")
    parser.add_argument("--workers", type=int, default=1,
                        help="RestMQ processes sharing the port with SO_REUSEPORT [1]")
    parser.add_argument("--pidfile", default="",
                        help="write the process id here (with several workers, the launcher's) [none]")
    return parser


def main(argv: List[str]) -> int:
    known, rest = _parser().parse_known_args(argv)
    if rest and rest[0] == "--":
        rest = rest[1:]
    if known.workers < 1:
        _say("--workers must be 1 or more")
        return 2
    if known.workers == 1:
        os.execv(sys.executable, _twistd(rest, known.pidfile))
    return _run_workers(known.workers, rest, known.pidfile)


def console() -> None:
    """The ``restmq`` console script."""
    sys.exit(main(sys.argv[1:]))


def _run_workers(workers: int, args: List[str], pidfile: str = "") -> int:
    from twisted.python import usage

    from restmq.errors import ConfigError
    from restmq.server.redisproc import EmbeddedRedis, EmbeddedRedisError, die_with_parent
    from restmq.tap import USAGE_STATUS, Options, StartupError

    # The workers read the same options; reading them here too tells whether
    # they need the embedded Redis, and refuses a bad option before starting.
    options = Options()
    try:
        options.parseOptions(args)
    except usage.UsageError as exc:
        _say(str(exc))
        return exc.status if isinstance(exc, StartupError) else USAGE_STATUS
    config = options.config

    embedded: Optional["EmbeddedRedis"] = None
    if config.redis.target is None:
        try:
            embedded = EmbeddedRedis(config.redis.data_dir, config.redis.server_binary,
                                     max_restarts=config.redis.max_restarts)
            embedded.start_process()
        except (ConfigError, EmbeddedRedisError) as exc:
            _say(str(exc))
            return 1
        redis_pid = embedded.process.pid if embedded.process is not None else 0
        _say("embedded redis-server %d on %s" % (redis_pid, embedded.socket_path))
        # a later --redis wins over any Redis setting of a --config file
        args = args + ["--redis", "unix://" + embedded.socket_path]

    # one fresh metrics directory per run: counters start at 0 with the run and
    # are summed over the workers (and over a worker's files once it is gone)
    metrics_dir = tempfile.mkdtemp(prefix="restmq-metrics-")
    environment = dict(os.environ, **{METRICS_DIR_ENV: metrics_dir})
    if pidfile:
        with open(pidfile, "w") as handle:
            handle.write("%d\n" % os.getpid())
    children: List[subprocess.Popen] = []
    stopping: List[int] = []

    def stop(signum: int, frame: object) -> None:
        stopping.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        for _ in range(workers):
            if stopping:
                break
            # its own process group: a terminal's Ctrl-C reaches the launcher
            # only, which then stops workers first and Redis last
            children.append(subprocess.Popen(_twistd(args + ["--reuse-port"]), env=environment,
                                             preexec_fn=die_with_parent, process_group=0))
        pids = " ".join(str(child.pid) for child in children)
        _say("%d workers on port %d: %s" % (len(children), config.server.port, pids))
        status = _supervise(children, embedded, stopping)
    finally:
        stop(signal.SIGTERM, None)
        for child in children:
            try:
                child.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _say("worker %d did not stop within %.0f s; killed" % (child.pid, STOP_TIMEOUT))
                child.kill()
                child.wait()
        if embedded is not None:
            embedded.stopService()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        if pidfile:
            try:
                os.unlink(pidfile)
            except OSError:
                pass
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


def _supervise(children: List[subprocess.Popen], embedded: Optional["EmbeddedRedis"],
               stopping: List[int]) -> int:
    """Wait until a stop is asked (0) or a child exits on its own (1); restart the
    embedded Redis when it dies, unless it keeps dying (1)."""
    from restmq.server.redisproc import EmbeddedRedisError

    redis = embedded.process if embedded is not None else None
    while not stopping:
        try:
            # WNOWAIT: only learn that some child exited; poll() below reaps it.
            # A signal interrupts this wait (the handler runs, then it resumes).
            exited = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            return 1
        if stopping:
            return 0
        known = {child.pid for child in children} | ({redis.pid} if redis is not None else set())
        if exited is not None and exited.si_pid not in known:
            os.waitpid(exited.si_pid, 0)  # not ours to watch; reap it so the wait moves on
            continue
        for child in children:
            code = child.poll()
            if code is not None:
                _say("worker %d exited with status %s; stopping the others" % (child.pid, code))
                return 1
        if embedded is not None and redis is not None and redis.poll() is not None:
            _say("the embedded redis-server %d exited with status %s; restarting it"
                 % (redis.pid, redis.returncode))
            while True:
                if not embedded.begin_restart(time.monotonic(), redis.returncode):
                    _say("the embedded redis-server died %d times within a minute; stopping the workers"
                         % (embedded.budget.limit + 1))
                    return 1
                try:
                    embedded.wait_ready()
                    break
                except EmbeddedRedisError as exc:
                    _say("redis-server did not start again: %s" % exc)
            redis = embedded.process
            _say("embedded redis-server restarted: %d" % embedded.pid)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
