"""What the figures were measured on: CPU, cores, RAM, kernel, Python, date, versions."""

from __future__ import annotations

import datetime
import os
import platform
import re
import shutil
import subprocess
from typing import List, Tuple

from bench.procs import ROOT

__all__ = ["machine", "versions", "load"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram() -> str:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return "%.1f GiB" % (int(line.split()[1]) / 1024.0 / 1024.0)
    except OSError:
        pass
    return "unknown"


def _output(argv: List[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout + done.stderr).strip()


def _commit() -> str:
    commit = _output(["git", "rev-parse", "--short", "HEAD"])
    if not commit or " " in commit:
        return "unknown"
    branch = _output(["git", "rev-parse", "--abbrev-ref", "HEAD"])
    dirty = _output(["git", "status", "--porcelain", "--untracked-files=no"])
    return "%s (%s)%s" % (commit, branch, ", uncommitted changes" if dirty else "")


def load() -> str:
    return "%.2f %.2f %.2f" % os.getloadavg()


def machine() -> List[Tuple[str, str]]:
    """(field, value) pairs for the head of the table."""
    return [
        ("CPU", _cpu_model()),
        ("cores", str(os.cpu_count())),
        ("RAM", _ram()),
        ("kernel", "%s %s" % (platform.system(), platform.release())),
        ("Python", "%s %s" % (platform.python_implementation(), platform.python_version())),
        ("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("commit", _commit()),
    ]


def versions(redis_version: str) -> str:
    from importlib import metadata
    parts = []
    for package in ("Twisted", "cyclone", "txredisapi"):
        try:
            parts.append("%s %s" % (package, metadata.version(package)))
        except metadata.PackageNotFoundError:
            pass
    parts.append("redis-server %s" % redis_version)
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx:
        found = re.search(r"nginx/([\d.]+)", _output([nginx, "-v"]))
        if found:
            parts.append("nginx %s" % found.group(1))
    nchan = _output(["dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-nchan"])
    if nchan and "no packages" not in nchan:
        parts.append("nchan %s" % nchan.split(":")[-1])
    from bench.activemq import activemq_versions
    parts += activemq_versions()
    if shutil.which("wrk"):
        found = re.search(r"wrk ([\d.]+)", _output(["wrk", "-v"]))
        if found:
            parts.append("wrk %s" % found.group(1))
    return ", ".join(parts)
