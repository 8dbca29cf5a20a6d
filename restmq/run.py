"""`make run`: start RestMQ under twistd, one process or several (``--workers N``).

With several workers every process listens on the same port with
SO_REUSEPORT, and (unless --redis is given) they share one embedded
redis-server that this launcher starts first.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from typing import List


def _twistd(args: List[str]) -> List[str]:
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "--pidfile=", "-n", "restmq"] + args


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="restmq.run")
    parser.add_argument("--workers", type=int, default=1)
    known, rest = parser.parse_known_args(argv)
    if rest and rest[0] == "--":
        rest = rest[1:]
    if known.workers <= 1:
        os.execv(sys.executable, _twistd(rest))
    return _run_workers(known.workers, rest)


def _run_workers(workers: int, args: List[str]) -> int:
    from restmq.redisproc import EmbeddedRedis

    embedded = None
    if not any(a.startswith(("--redis", "--config")) for a in args):
        data_dir = "var/redis"
        for i, arg in enumerate(args):
            if arg == "--data-dir" and i + 1 < len(args):
                data_dir = args[i + 1]
            elif arg.startswith("--data-dir="):
                data_dir = arg.split("=", 1)[1]
        embedded = EmbeddedRedis(data_dir)
        embedded.startService()
        args = args + ["--redis", "unix://" + embedded.socket_path]
    children = [subprocess.Popen(_twistd(args + ["--reuse-port"])) for _ in range(workers)]

    def stop(signum: int, frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    try:
        for child in children:
            status = child.wait() or status
    finally:
        stop(signal.SIGTERM, None)
        for child in children:
            child.wait()
        if embedded is not None:
            embedded.stopService()
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
