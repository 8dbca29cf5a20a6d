"""``--profile``: py-spy records the broker during a phase; a text summary is written beside it.

py-spy (bench/requirements.txt) samples the broker process from outside;
the raw (collapsed stacks) file can be turned into a flame graph with any
collapsed-stack tool, and ``profile-<phase>.txt`` lists where the time went.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import sys
import time
from typing import Dict, List, Tuple

from bench.procs import BenchError, Proc

__all__ = ["start_recording", "summarize"]

_FRAME_LINE = re.compile(r":\d+\)$")


class _Recorder(Proc):
    """py-spy record; stopped with SIGINT so that it writes its file."""

    def __init__(self, argv: List[str], log_path: str, raw_path: str, summary_path: str) -> None:
        super().__init__("py-spy", argv, log_path, nofile=0)
        self.raw_path = raw_path
        self.summary_path = summary_path

    def stop(self, grace: float = 10.0) -> None:
        if self.popen is not None and self.popen.returncode is None:
            try:
                os.killpg(self.popen.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + grace
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
        super().stop()
        if os.path.exists(self.raw_path):
            with open(self.summary_path, "w") as out:
                out.write(summarize(self.raw_path))


def start_recording(pid: int, out_dir: str, phase: str, workdir: str) -> Proc:
    binary = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
    if binary is None:
        raise BenchError("py-spy not installed (bench/requirements.txt)")
    os.makedirs(out_dir, exist_ok=True)
    raw = os.path.join(out_dir, "profile-%s.raw" % phase)
    summary = os.path.join(out_dir, "profile-%s.txt" % phase)
    return _Recorder([binary, "record", "--pid", str(pid), "--rate", "200", "--nonblocking",
                      "--format", "raw", "--output", raw],
                     os.path.join(workdir, "py-spy-%s.log" % phase), raw, summary)


def _function(frame: str) -> str:
    """'write (twisted/internet/abstract.py:350)' -> 'write (twisted/internet/abstract.py)'."""
    frame = _FRAME_LINE.sub(")", frame)
    return frame.replace(sys.prefix + "/lib/python%d.%d/site-packages/" % sys.version_info[:2], "")


def _file(function: str) -> str:
    """'write (twisted/internet/abstract.py)' -> 'twisted/internet/abstract.py'."""
    return function[function.rfind("(") + 1:].rstrip(")") if "(" in function else function


def summarize(raw_path: str, top: int = 30) -> str:
    """Self and inclusive sample shares per function, from py-spy's raw output."""
    own: Dict[str, int] = collections.Counter()
    inclusive: Dict[str, int] = collections.Counter()
    by_file: Dict[str, int] = collections.Counter()
    total = 0
    with open(raw_path) as raw:
        for line in raw:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_function(f) for f in stack.split(";")]
            total += count
            own[frames[-1]] += count
            by_file[_file(frames[-1])] += count
            for name in set(frames):
                inclusive[name] += count
    if not total:
        return "no samples\n"

    def table(counter: Dict[str, int]) -> List[str]:
        ranked: List[Tuple[str, int]] = sorted(counter.items(), key=lambda item: -item[1])[:top]
        return ["%6.1f%%  %s" % (100.0 * n / total, name) for name, n in ranked]

    # the trunk every stack shares (reactor.run and above) says nothing
    branches = {name: n for name, n in inclusive.items() if n < 0.85 * total}
    return "\n".join(["%d busy samples" % total, "", "self time by file:"] + table(by_file)
                     + ["", "self time:"] + table(own)
                     + ["", "inclusive time (below the reactor loop):"] + table(branches)) + "\n"
