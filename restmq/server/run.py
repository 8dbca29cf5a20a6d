"""`make run`: start RestMQ under twistd, one process or several (``--workers N``).

``python -m restmq.server.run [--workers N] [--] [restmq options]``. With one worker
this simply becomes ``twistd -n restmq``. With several, every process listens
on the same port with SO_REUSEPORT, and when no Redis is configured they share
one embedded redis-server that this launcher starts first and stops last.

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
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, List, Optional

if TYPE_CHECKING:
    from restmq.server.redisproc import EmbeddedRedis

__all__ = ["main"]

# how long a worker may take to stop after SIGTERM before it is killed
STOP_TIMEOUT = 20.0


def _twistd(args: List[str]) -> List[str]:
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "--pidfile=", "-n", "restmq"] + args


def _say(text: str) -> None:
    sys.stderr.write("restmq.server.run: %s\n" % text)
    sys.stderr.flush()


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="restmq.server.run", usage="python -m restmq.server.run [--workers N] [--] [restmq options]")
    parser.add_argument("--workers", type=int, default=1,
                        help="RestMQ processes sharing the port with SO_REUSEPORT [1]")
    known, rest = parser.parse_known_args(argv)
    if rest and rest[0] == "--":
        rest = rest[1:]
    if known.workers < 1:
        parser.error("--workers must be 1 or more")
    if known.workers == 1:
        os.execv(sys.executable, _twistd(rest))
    return _run_workers(known.workers, rest)


def _run_workers(workers: int, args: List[str]) -> int:
    from twisted.python import usage

    from restmq.errors import ConfigError
    from restmq.server.redisproc import EmbeddedRedis, EmbeddedRedisError, die_with_parent
    from restmq.tap import Options

    # The workers read the same options; reading them here too tells whether
    # they need the embedded Redis, and refuses a bad option before starting.
    options = Options()
    try:
        options.parseOptions(args)
    except usage.UsageError as exc:
        sys.stderr.write("restmq: %s\n" % exc)
        return 2
    config = options.config

    embedded: Optional["EmbeddedRedis"] = None
    if config.redis.target is None:
        try:
            embedded = EmbeddedRedis(config.redis.data_dir, config.redis.server_binary,
                                     max_restarts=config.redis.max_restarts)
            embedded.start_process()
        except (ConfigError, EmbeddedRedisError) as exc:
            sys.stderr.write("restmq: %s\n" % exc)
            return 1
        redis_pid = embedded.process.pid if embedded.process is not None else 0
        _say("embedded redis-server %d on %s" % (redis_pid, embedded.socket_path))
        # a later --redis wins over any Redis setting of a --config file
        args = args + ["--redis", "unix://" + embedded.socket_path]

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
            children.append(subprocess.Popen(_twistd(args + ["--reuse-port"]),
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
