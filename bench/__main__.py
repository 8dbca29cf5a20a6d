"""``make bench`` / ``python -m bench``: measure RestMQ beside its baselines, print the table.

Writes the table as reStructuredText to bench/results/latest.rst as well.
``--quick`` is a smoke run of about a minute; the full run takes about eleven minutes (14 phases).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import List

from bench.figures import PHASES, Bench, Plan
from bench.machine import load, machine, versions
from bench.procs import ROOT, BenchError, Pinning, Procs
from bench.report import render

RESULTS = os.path.join(ROOT, "bench", "results")


def _log(message: str) -> None:
    sys.stderr.write("[bench %s] %s\n" % (time.strftime("%H:%M:%S"), message))
    sys.stderr.flush()


def _parse(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of about a minute")
    parser.add_argument("--only", default="", help="comma-separated phases: " + ",".join(PHASES))
    parser.add_argument("--runs", type=int, help="wrk runs per target (median reported)")
    parser.add_argument("--seconds", type=float, help="seconds per wrk run")
    parser.add_argument("--idle-connections", type=int, help="connections of the RSS figures")
    parser.add_argument("--client-processes", type=int, help="SSE client processes per measurement [1]")
    parser.add_argument("--out", default=os.path.join(RESULTS, "latest.rst"), help="the .rst to write")
    parser.add_argument("--profile", action="store_true",
                        help="record the broker with py-spy in each phase (bench/results/profile-*); "
                             "slows it, so the figures of such a run are not comparable")
    parser.add_argument("--no-pin", action="store_true",
                        help="leave CPU placement to the scheduler (by default the server measured "
                             "gets the first CPU, everything else the others)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, configs)")
    return parser.parse_args(argv)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: List[str]) -> int:
    args = _parse(argv)
    plan = Plan.quick() if args.quick else Plan()
    if args.runs:
        plan.runs = args.runs
    if args.seconds:
        plan.wrk_seconds = args.seconds
    if args.idle_connections:
        plan.idle_connections = args.idle_connections
    if args.client_processes:
        plan.client_processes = args.client_processes
    phases = [p.strip() for p in args.only.split(",") if p.strip()] or list(PHASES)
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        sys.stderr.write("unknown phase(s) %s; choose from %s\n" % (", ".join(unknown), ", ".join(PHASES)))
        return 2
    phases = [p for p in PHASES if p in phases]

    # whatever stops the run, the finally clauses stop every child
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # unix socket paths must stay short: a work folder in /tmp, not in the checkout
    workdir = tempfile.mkdtemp(prefix="restmq-bench-")
    pinning = Pinning(enabled=not args.no_pin)
    pinning.harness()
    procs = Procs(workdir, pinning)
    fields = machine()
    load_before = load()
    started = time.monotonic()
    _log("%s; %s; work folder %s" % (plan.describe(), pinning.describe(), workdir))
    bench = Bench(plan, procs, _log, RESULTS if args.profile else None)
    failed = False
    try:
        try:
            rows = bench.run(phases)
        except BenchError as exc:  # no redis-server: nothing can be measured
            _log("cannot run: %s" % exc)
            failed = True
            return 1
        elapsed = time.monotonic() - started
        fields += [
            ("versions", versions(bench.redis.version)),
            ("load average", "%s before, %s after (1, 5, 15 min)" % (load_before, load())),
            ("plan", plan.describe()),
            ("CPUs", pinning.describe()),
            ("run time", "%d min %02d s" % divmod(round(elapsed), 60)),
        ]
        footnotes = [
            "ratio = RestMQ / baseline (for latency and RSS, lower is better).",
            "One CPython process per server; wrk for plain HTTP; SSE subscribers are "
            "bench/sseclient.py processes; all on this machine: "
            + ("the server measured on a CPU of its own, the load generators and Redis on the "
               "others (figure j: two workers, nothing pinned)."
               if pinning.enabled else "the load generators share its cores with the servers."),
        ]
        if args.profile:
            footnotes.append("Recorded under py-spy (--profile): the broker was slowed; "
                             "do not compare these figures.")
        report = render("RestMQ benchmark", fields, rows, footnotes)
        sys.stdout.write("\n" + report)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(report)
        _log("written to %s in %d min %02d s" % ((args.out,) + divmod(round(elapsed), 60)))
        return 0
    finally:
        procs.stop_all()
        if os.path.exists(procs.path("errors.log")):
            _log("harness errors: see %s" % procs.path("errors.log"))
            args.keep = True
        if args.keep or failed:
            _log("work folder kept: %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        _log("interrupted; every child process was stopped")
        sys.exit(130)
