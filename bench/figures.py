"""The measurements: each figure beside its baseline, measured in the same run.

A phase starts its own servers (a fresh broker, the bare Cyclone app, nginx)
against the run's redis-server and stops them when it ends, so one phase's
backlog never weighs on the next. A phase that cannot run turns its rows into
``n/a: <reason>``; the others go on.
"""

from __future__ import annotations

import http.client
import os
import statistics
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence

import attr
import orjson

from bench.loads import (SMALL_MESSAGE, Wrk, form_stamp, hotqueue_puts, longpoll_latency,
                         nchan_next, paced_publish, post_on, text_stamp)
from bench.procs import (ROOT, BenchError, CpuMeter, Proc, Procs, children_of, cpu_seconds, free_port,
                         percentile, rss_kb)
from bench.activemq import ACTIVEMQ_FIGURES, phase_activemq
from bench.sqsbench import SQS_FIGURES, phase_sqs, phase_sqs_boto3

__all__ = ["Plan", "Row", "Bench", "PHASES"]

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


@attr.s(auto_attribs=True)
class Plan:
    """How long and how often; ``quick()`` is the smoke-run version."""

    runs: int = 3                 # wrk runs per target (the median is reported)
    wrk_seconds: float = 5.0
    warm_seconds: float = 1.0
    connections: int = 50         # wrk connections
    latency_seconds: float = 10.0
    rate: float = 200.0           # messages/s of the latency figures
    laps: int = 3                 # throughput windows of the streaming floods (median)
    lap_seconds: float = 3.0
    subscribers: int = 100
    rr_subscribers: int = 10
    idle_connections: int = 10000
    batch: int = 100              # messages per batch publish
    # SSE client processes sharing the subscribers: one leaves the other core
    # to the server on a 2-core machine
    client_processes: int = 1
    longpoll_samples: int = 1200  # per long-poll latency figure, in `runs` interleaved rounds
    client_messages: int = 3000   # messages per run of each client loop (figure w)
    mode: str = "full"

    @classmethod
    def quick(cls) -> "Plan":
        return cls(runs=1, wrk_seconds=1.0, warm_seconds=0.5, latency_seconds=2.0, laps=1,
                   lap_seconds=1.5, idle_connections=1000, longpoll_samples=200,
                   client_messages=500, mode="quick")

    def describe(self) -> str:
        return ("%s: wrk %d x %.0f s per target (median), %d connections; streaming floods "
                "%d x %.1f s windows (median); latency %.0f s at %.0f msg/s; %d idle connections"
                % (self.mode, self.runs, self.wrk_seconds, self.connections, self.laps,
                   self.lap_seconds, self.latency_seconds, self.rate, self.idle_connections))


@attr.s(auto_attribs=True)
class Row:
    """One line of the table."""

    key: str
    figure: str
    unit: str
    restmq: Optional[float] = None
    baseline: Optional[float] = None
    note: str = ""
    na: Optional[str] = None

    @property
    def ratio(self) -> Optional[float]:
        if self.restmq is None or not self.baseline:
            return None
        return self.restmq / self.baseline


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _post(port: int, path: str, body: bytes, content_type: str = FORM) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", path, body, {"Content-Type": content_type})
        response = connection.getresponse()
        data = response.read()
        if response.status >= 300:
            raise BenchError("POST %s answered %d: %s" % (path, response.status, data[:200]))
        return data
    finally:
        connection.close()


def _cpu_text(cpu: Dict[str, float]) -> str:
    return ", ".join("%s %.0f%%" % (name, value) for name, value in cpu.items())


def _cpu_note(restmq: Dict[str, float], baseline: Optional[Dict[str, float]]) -> str:
    """'CPU % server/redis/clients 55/5/22 vs 45/0/21': was a load generator the limit?"""
    def triple(cpu: Dict[str, float]) -> str:
        return "/".join("%.0f" % cpu[name] for name in ("server", "redis", "clients"))
    text = "CPU %% server/redis/clients %s" % triple(restmq)
    return text + (" vs %s" % triple(baseline) if baseline else "")


def _cpu_per_request(results: Sequence[Dict[str, float]]) -> Optional[float]:
    """Microseconds of server CPU per request over the runs (None when not metered)."""
    used = sum(r.get("cpu", 0.0) for r in results)
    requests = sum(r.get("requests", 0.0) for r in results)
    return used / requests * 1e6 if used and requests else None


def _wrk_note(results: Sequence[Dict[str, float]]) -> str:
    bad = sum(r["non2xx"] for r in results)
    errors = sum(r["errors"] for r in results)
    parts = []
    if bad:
        parts.append("%d non-2xx" % bad)
    if errors:
        parts.append("%d socket errors" % errors)
    return ", ".join(parts)


class Bench:
    """Runs the phases; ``rows`` collects the table."""

    def __init__(self, plan: Plan, procs: Procs, log: Callable[[str], None],
                 profile_dir: Optional[str] = None) -> None:
        self.plan = plan
        self.procs = procs
        self.log = log
        self.profile_dir = profile_dir
        self.rows: List[Row] = []
        self.redis: Any = None
        self.wrk = Wrk(procs.workdir)

    # plumbing

    def run(self, phases: Sequence[str]) -> List[Row]:
        self.redis = self.procs.redis()
        try:
            for name in phases:
                method, keys = PHASES[name]
                started = time.monotonic()
                self.log("phase %s ..." % name)
                try:
                    rows = getattr(self, method)()
                except BenchError as exc:
                    rows = self._failed(keys, str(exc))
                except Exception as exc:  # a harness bug must not lose the other phases
                    with open(self.procs.path("errors.log"), "a") as f:
                        traceback.print_exc(file=f)
                    rows = self._failed(keys, "harness error %s: %s" % (type(exc).__name__, exc))
                finally:
                    self._stop_servers()
                self.rows.extend(rows)
                self.log("phase %s done in %.0f s" % (name, time.monotonic() - started))
        finally:
            self.procs.stop_all()
        return self.rows

    def _failed(self, keys: Sequence[str], reason: str) -> List[Row]:
        return [Row(key, FIGURES[key][0], FIGURES[key][1], na=reason) for key in keys]

    def _stop_servers(self) -> None:
        """Stop what the phase started (newest first: profilers before their broker)."""
        for proc in reversed(list(self.procs.started)):
            if proc is not self.redis.proc:
                self.procs.stop(proc)
        self.redis.flush()

    def _broker(self, port: Optional[int] = None, extra: Sequence[str] = (), name: str = "restmq",
                profile: Optional[str] = None) -> tuple:
        port = port or free_port()
        proc = self.procs.broker(self.redis, port, extra, name)
        # the first requests connect the pool and load the scripts
        _post(port, "/q/warmup", b"value=1")
        self._get(port, "/q/warmup")
        if profile and self.profile_dir:
            self._profile(proc, profile)
        return proc, port

    def _bare(self) -> tuple:
        port = free_port()
        proc = self.procs.bare(self.redis, port)
        _post(port, "/form", b"value=1")
        _post(port, "/lpush", b"value=1")
        return proc, port

    def _nginx(self) -> tuple:
        port = free_port()
        return self.procs.nginx(port), port

    @staticmethod
    def _get(port: int, path: str) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

    def _profile(self, broker: Proc, phase: str) -> None:
        from bench.profile import start_recording
        self.procs.start(start_recording(broker.pid, self.profile_dir, phase, self.procs.workdir))

    def _wrk_series(self, targets: Dict[str, tuple], extra: Optional[Dict[str, Callable[[], float]]] = None,
                    threads: int = 1, before_run: Optional[Callable[[str], None]] = None,
                    after_run: Optional[Callable[[str], None]] = None,
                    cpu: Optional[Dict[str, Callable[[], List[int]]]] = None
                    ) -> Dict[str, List[Dict[str, float]]]:
        """Warm every target, then ``runs`` rounds, the targets interleaved in each
        round so that a disturbance of the machine hits them alike.

        ``targets``: name -> (url, wrk script); ``extra``: name -> a callable
        measuring one run itself (returns a rate); ``cpu``: name -> the server's
        pids, whose CPU seconds during each run go to the result's ``cpu``.
        """
        plan = self.plan
        for name, (url, script) in targets.items():
            if before_run:
                before_run(name)
            self.wrk.run(url, script, plan.warm_seconds, plan.connections, threads)
        results: Dict[str, List[Dict[str, float]]] = {name: [] for name in list(targets) + list(extra or {})}
        for _ in range(plan.runs):
            for name, (url, script) in targets.items():
                if before_run:
                    before_run(name)
                pids = (cpu or {}).get(name)
                used = cpu_seconds(pids()) if pids else 0.0
                result = self.wrk.run(url, script, plan.wrk_seconds, plan.connections, threads)
                if pids:
                    result["cpu"] = cpu_seconds(pids()) - used
                results[name].append(result)
                if after_run:
                    after_run(name)
            for name, measure in (extra or {}).items():
                results[name].append({"rps": measure(), "non2xx": 0.0, "errors": 0.0})
        return results

    # issue 5: request rates

    def phase_post(self) -> List[Row]:
        self.wrk.check()
        broker_proc, broker = self._broker(profile="post")
        bare_proc, bare = self._bare()
        form = self.wrk.script("POST", "value=" + SMALL_MESSAGE, FORM)
        targets = {
            "restmq": ("http://127.0.0.1:%d/q/bench" % broker, form),
            "form": ("http://127.0.0.1:%d/form" % bare, form),
            "lpush": ("http://127.0.0.1:%d/lpush" % bare, form),
            "evalsha": ("http://127.0.0.1:%d/evalsha" % bare, form),
        }
        hotqueue: Dict[str, Callable[[], float]] = {}
        hotqueue_error = None
        try:
            hotqueue_puts(self.redis.sock, 0.2)
            hotqueue["hotqueue"] = lambda: hotqueue_puts(self.redis.sock, self.plan.wrk_seconds)
        except BenchError as exc:
            hotqueue_error = str(exc)
        results = self._wrk_series(targets, hotqueue, cpu={
            "restmq": lambda: [broker_proc.pid], "form": lambda: [bare_proc.pid],
            "lpush": lambda: [bare_proc.pid], "evalsha": lambda: [bare_proc.pid]})
        restmq = _median([r["rps"] for r in results["restmq"]])
        note = _wrk_note(results["restmq"])
        restmq_cpu = _cpu_per_request(results["restmq"])
        rows = []
        for key, name in (("e1", "form"), ("e2", "lpush"), ("e3", "evalsha"), ("e4", "hotqueue")):
            row = self._row(key, restmq=restmq, note=note)
            if name == "hotqueue" and hotqueue_error:
                row.note = "; ".join(filter(None, [note, "baseline n/a: " + hotqueue_error]))
            else:
                row.baseline = _median([r["rps"] for r in results[name]])
                extra = _wrk_note(results[name])
                if extra:
                    row.note = "; ".join(filter(None, [note, "baseline: " + extra]))
                base_cpu = _cpu_per_request(results[name])
                if base_cpu and restmq_cpu:
                    # server CPU per request: what load on the machine disturbs least
                    row.note = "; ".join(filter(None, [row.note, "server CPU per request %.0f vs %.0f us "
                                                       "(ratio %.2f)" % (restmq_cpu, base_cpu,
                                                                         base_cpu / restmq_cpu)]))
            rows.append(row)
        return rows

    def phase_pop(self) -> List[Row]:
        self.wrk.check()
        _, broker = self._broker(profile="pop")
        _, bare = self._bare()
        targets = {
            "restmq": ("http://127.0.0.1:%d/q/pop" % broker, self.wrk.script("GET")),
            "rpop": ("http://127.0.0.1:%d/rpop" % bare, self.wrk.script("GET")),
        }
        # enough for a run at 10,000 pops/s; refilled before every run and checked after
        need = int(10000 * max(self.plan.wrk_seconds, self.plan.warm_seconds)) + 1000
        dry: Dict[str, int] = {"restmq": 0, "rpop": 0}
        client = self.redis.client
        batch = orjson.dumps([SMALL_MESSAGE] * 1000)

        def fill(name: str) -> None:
            if name == "restmq":
                have = client.llen("pop:queue")
                for _ in range(max(0, need - have) // 1000 + 1):
                    _post(broker, "/q/pop", batch, JSON)
            else:
                have = client.llen("bare:pop")
                missing = max(0, need - have) + 1000
                pipe = client.pipeline(transaction=False)
                for start in range(0, missing, 1000):
                    pipe.lpush("bare:pop", *([SMALL_MESSAGE] * min(1000, missing - start)))
                pipe.execute()

        def check(name: str) -> None:
            if client.llen("pop:queue" if name == "restmq" else "bare:pop") == 0:
                dry[name] += 1

        results = self._wrk_series(targets, before_run=fill, after_run=check)
        notes = ["%s ran dry in %d run(s) (204s counted)" % (name, count)
                 for name, count in dry.items() if count]
        row = self._row("f", restmq=_median([r["rps"] for r in results["restmq"]]),
                        baseline=_median([r["rps"] for r in results["rpop"]]))
        row.note = "; ".join(filter(None, notes + [_wrk_note(results["restmq"])]))
        return [row]

    def phase_batch(self) -> List[Row]:
        self.wrk.check()
        _, broker = self._broker(profile="batch")
        _, bare = self._bare()
        body = orjson.dumps([SMALL_MESSAGE] * self.plan.batch).decode()
        script = self.wrk.script("POST", body, JSON)
        targets = {
            "restmq": ("http://127.0.0.1:%d/q/batch" % broker, script),
            "bare": ("http://127.0.0.1:%d/batch" % bare, script),
        }
        # each run starts from an empty Redis, so memory does not grow run after run
        results = self._wrk_series(targets, before_run=lambda name: self.redis.flush())
        batch = self.plan.batch
        restmq = _median([r["rps"] for r in results["restmq"]]) * batch
        row = self._row("g", restmq=restmq,
                        baseline=_median([r["rps"] for r in results["bare"]]) * batch)
        row.note = "; ".join(filter(None, [
            "%d messages per request; target >= 50,000: %s" % (batch, "met" if restmq >= 50000 else "missed"),
            _wrk_note(results["restmq"])]))
        return [row]

    def phase_workers(self) -> List[Row]:
        # two workers want both cores: nothing pinned in this phase
        with self.procs.pinning.unpinned():
            return self._workers()

    def _workers(self) -> List[Row]:
        self.wrk.check()
        if not os.path.exists(os.path.join(ROOT, "restmq", "server", "reuseport.py")):
            return [self._row("j", na="--reuse-port missing (restmq/server/reuseport.py)")]
        port = free_port()
        first, _ = self._broker(port, ["--reuse-port"], "restmq-1", profile="workers")
        script = self.wrk.script("POST", "value=" + SMALL_MESSAGE, FORM)
        url = "http://127.0.0.1:%d/q/bench" % port
        redis_pid = self.redis.proc.pid
        # two wrk threads in both cases, so the load generator is the same
        measured: Dict[str, Any] = {}
        one_redis = self._redis_share(lambda: measured.update(self._wrk_series(
            {"one": (url, script)}, threads=2, cpu={"one": lambda: [first.pid]})), redis_pid)
        one = measured["one"]
        second, _ = self._broker(port, ["--reuse-port"], "restmq-2")
        two = self._wrk_series({"two": (url, script)}, threads=2,
                               cpu={"two": lambda: [first.pid, second.pid]})["two"]
        row = self._row("j", restmq=_median([r["rps"] for r in two]),
                        baseline=_median([r["rps"] for r in one]))
        notes = ["wrk -t2 for both", _wrk_note(one + two)]
        per_one, per_two = _cpu_per_request(one), _cpu_per_request(two)
        if per_one and per_two:
            # equal CPU per request: the workers do not slow each other; the rate is then
            # bounded by the cores (here 2, shared with wrk and Redis)
            notes.append("broker CPU per request %.0f us with one worker, %.0f us with two; Redis "
                         "%.0f%% of a core with one" % (per_one, per_two, one_redis))
        row.note = "; ".join(filter(None, notes))
        return [row]

    def _redis_share(self, run: Callable[[], Any], pid: int) -> float:
        """Percent of one core that Redis used while ``run`` ran."""
        started, used = time.monotonic(), cpu_seconds([pid])
        run()
        return 100.0 * (cpu_seconds([pid]) - used) / max(1e-6, time.monotonic() - started)

    # issue 3 and 5: streaming

    def _stream_targets(self) -> Dict[str, Callable[[], Dict[str, Any]]]:
        """system -> starts its server; returns where to subscribe and publish."""
        def restmq(profile: str) -> Dict[str, Any]:
            proc, port = self._broker(profile=profile)
            return {"proc": proc, "port": port, "sub": "/c/%s", "pub": "/q/%s"}

        def bare(profile: str) -> Dict[str, Any]:
            proc, port = self._bare()
            return {"proc": proc, "port": port, "sub": "/sse/%s", "pub": "/pub/%s"}

        def nchan(profile: str) -> Dict[str, Any]:
            proc, port = self._nginx()
            return {"proc": proc, "port": port, "sub": "/sub/%s", "pub": "/pub/%s"}

        return {"restmq": restmq, "bare": bare, "nchan": nchan}

    def _stop_system(self) -> None:
        self._stop_servers()

    def _on_each_stream_system(self, measure: Callable[[str, Any], Any],
                               systems: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """``measure(system, start)`` for RestMQ and each baseline (or those of
        ``systems``), servers stopped after each; a baseline that cannot run gives its
        BenchError (its rows read n/a)."""
        found: Dict[str, Any] = {}
        targets = self._stream_targets()
        for system in systems if systems is not None else list(targets):
            start = targets[system]
            try:
                found[system] = measure(system, start)
            except BenchError as exc:
                if system == "restmq":
                    raise
                found[system] = exc
            finally:
                self._stop_system()
        return found

    def phase_latency(self) -> List[Row]:
        plan = self.plan
        found = self._on_each_stream_system(self._latency)
        restmq = found["restmq"]
        rows = []
        expected = plan.rate * plan.latency_seconds * plan.subscribers
        for key, baseline, stat in (("a-p50", "bare", "p50"), ("a-p99", "bare", "p99"),
                                    ("i-p50", "nchan", "p50"), ("i-p99", "nchan", "p99")):
            row = self._row(key, restmq=restmq[stat] * 1000)
            row.note = "%d of %d deliveries timed" % (restmq["samples"], expected)
            if restmq["late"] > 0.05:
                # every publishing connection was waiting for an answer
                row.note += "; publisher fell behind by up to %.0f ms" % (restmq["late"] * 1000)
            if restmq["closed"]:
                row.note += "; %d subscribers cut off" % restmq["closed"]
            other = found[baseline]
            if isinstance(other, Exception):
                row.note += "; baseline n/a: %s" % other
                row.note += "; " + _cpu_note(restmq["cpu"], None)
            else:
                row.baseline = other[stat] * 1000
                if other["samples"] < 0.99 * expected:
                    row.note += "; baseline timed %d" % other["samples"]
                row.note += "; " + _cpu_note(restmq["cpu"], other["cpu"])
            rows.append(row)
        return rows

    def _latency(self, system: str, start: Callable[[str], Dict[str, Any]]) -> Dict[str, Any]:
        plan = self.plan
        where = start("latency")
        port, queue = where["port"], "lat"
        client = self.procs.clients(port, where["sub"] % queue, plan.subscribers, "latency",
                                    name="latency-%s" % system, processes=plan.client_processes)
        ready = client.wait_ready(60)
        if ready["ready"] < plan.subscribers:
            raise BenchError("%s: only %d of %d subscribers connected: %s"
                             % (system, ready["ready"], plan.subscribers, ready["failures"]))
        body = text_stamp if system == "nchan" else form_stamp
        pub = where["pub"] % queue
        paced_publish(port, pub, plan.rate, plan.warm_seconds, body)
        time.sleep(0.2)
        client.lap()
        meter = self._meter(where["proc"], client)
        sent = paced_publish(port, pub, plan.rate, plan.latency_seconds, body)
        cpu = meter.percent()
        time.sleep(0.5)  # the last messages are still on their way
        result = client.lap()
        if not result["samples"]:
            raise BenchError("%s: no message reached the subscribers (%d sent, %d errors)"
                             % (system, sent["sent"], sent["errors"]))
        result.update(sent=sent["sent"], cpu=cpu, late=sent["max_late"])
        self.log("  latency %s: p50 %.2f ms p99 %.2f ms (%d samples, publisher late by up to "
                 "%.1f ms; CPU %s)" % (system, result["p50"] * 1000, result["p99"] * 1000,
                                       result["samples"], sent["max_late"] * 1000, _cpu_text(cpu)))
        return result

    def _meter(self, server: Proc, client: Any) -> CpuMeter:
        """CPU of the server (with its children: nginx's worker), Redis and the clients."""
        return CpuMeter({
            "server": lambda: [server.pid] + children_of(server.pid),
            "redis": lambda: [self.redis.proc.pid],
            "clients": lambda: [member.pid for member in client.members],
        })

    def _flood(self, system: str, start: Callable[[str], Dict[str, Any]], queue: str,
               subscribers: int, roundrobin: bool = False) -> Dict[str, Any]:
        plan = self.plan
        where = start("roundrobin" if roundrobin else "fanout")
        port = where["port"]
        if roundrobin:
            _post(port, "/p/%s" % queue, b"policy=roundrobin")
        client = self.procs.clients(port, where["sub"] % queue, subscribers, "count",
                                    name="flood-%s" % system, processes=plan.client_processes)
        ready = client.wait_ready(60)
        if ready["ready"] < subscribers:
            raise BenchError("%s: only %d of %d subscribers connected: %s"
                             % (system, ready["ready"], subscribers, ready["failures"]))
        pub = "http://127.0.0.1:%d%s" % (port, where["pub"] % queue)
        if system == "nchan":
            # nchan takes one message per request: more connections, same flood
            script, connections = self.wrk.script("POST", SMALL_MESSAGE, "text/plain"), 4
        else:
            script = self.wrk.script("POST", orjson.dumps([SMALL_MESSAGE] * plan.batch).decode(), JSON)
            connections = 2
        seconds = plan.warm_seconds + plan.laps * plan.lap_seconds + 1
        flood = self.wrk.start(pub, script, seconds, connections)
        try:
            time.sleep(plan.warm_seconds)
            client.lap()
            meter = self._meter(where["proc"], client)
            laps = []
            backlog = []  # RestMQ: messages waiting in Redis at each lap (0: the publisher was the limit)
            for _ in range(plan.laps):
                time.sleep(plan.lap_seconds)
                laps.append(client.lap())
                if system == "restmq":
                    backlog.append(int(self.redis.client.llen("%s:queue" % queue)))
            cpu = meter.percent()
        except BaseException:
            self.wrk.kill(flood)
            raise
        published = self.wrk.finish(flood, seconds + 30)
        rate = _median([lap["events"] / lap["seconds"] for lap in laps])
        closed = laps[-1]["closed"]
        spread = (min(lap["per_conn_min"] for lap in laps), max(lap["per_conn_max"] for lap in laps))
        per_request = 1 if system == "nchan" else plan.batch
        events = sum(lap["events"] for lap in laps)
        seconds_metered = sum(lap["seconds"] for lap in laps)
        result = {"rate": rate, "closed": closed, "spread": spread, "cpu": cpu,
                  "published": published["rps"] * per_request,
                  # microseconds of CPU per delivery: what the scheduler disturbs least
                  "us": {name: value / 100.0 * seconds_metered / max(1, events) * 1e6
                         for name, value in cpu.items()}}
        if system == "restmq":
            result["backlog"] = "%d..%d" % (min(backlog), max(backlog))
        self.log("  flood %s: %.0f deliveries/s (published %.0f msg/s, %d cut off; CPU %s; "
                 "server %.2f us a delivery)"
                 % (system, rate, result["published"], closed, _cpu_text(cpu), result["us"]["server"]))
        return result

    def phase_fanout(self) -> List[Row]:
        found = self._on_each_stream_system(
            lambda system, start: self._flood(system, start, "fan", self.plan.subscribers))
        restmq = found["restmq"]
        rows = []
        for key, baseline in (("b", "bare"), ("h", "nchan")):
            row = self._row(key, restmq=restmq["rate"])
            notes = ["published %.0f msg/s, backlog %s waiting at the laps"
                     % (restmq["published"], restmq["backlog"])]
            if restmq["closed"]:
                notes.append("%d subscribers cut off" % restmq["closed"])
            other = found[baseline]
            if isinstance(other, Exception):
                notes.append("baseline n/a: %s" % other)
                notes.append(_cpu_note(restmq["cpu"], None))
            else:
                row.baseline = other["rate"]
                if other["closed"]:
                    notes.append("baseline lost %d subscribers" % other["closed"])
                notes.append(_cpu_note(restmq["cpu"], other["cpu"]))
            row.note = "; ".join(notes)
            rows.append(row)
        return rows

    def phase_roundrobin(self) -> List[Row]:
        # alternating rounds (RestMQ, bare, RestMQ, bare ...), each on fresh servers: the
        # median round of each, so a slow spell of the machine hits both
        found: Dict[str, Any] = {}  # a system's median round, or why it could not run
        series: Dict[str, List[Dict[str, Any]]] = {"restmq": [], "bare": []}

        def flood(system: str, start: Callable[[str], Dict[str, Any]]) -> Dict[str, Any]:
            return self._flood(system, start, "rr", self.plan.rr_subscribers, roundrobin=True)

        for _ in range(max(1, self.plan.runs)):
            got = self._on_each_stream_system(flood, [name for name in series if name not in found])
            for system, result in got.items():
                if isinstance(result, Exception):
                    found[system] = result
                else:
                    series[system].append(result)
        for system, runs in series.items():
            if runs and system not in found:
                found[system] = sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]
        restmq, bare = found["restmq"], found["bare"]
        row = self._row("c", restmq=restmq["rate"])
        notes = ["median of %d alternating rounds (RestMQ %s; bare %s msg/s)" % (
                     len(series["restmq"]), "/".join("%.0f" % r["rate"] for r in series["restmq"]),
                     "/".join("%.0f" % r["rate"] for r in series["bare"]) or "n/a"),
                 "published %.0f msg/s, backlog %s waiting at the laps; per subscriber %d..%d a lap"
                 % (restmq["published"], restmq["backlog"], *restmq["spread"])]
        if restmq["closed"]:
            notes.append("%d subscribers cut off" % restmq["closed"])
        if isinstance(bare, Exception):
            notes.append("baseline n/a: %s" % bare)
            notes.append(_cpu_note(restmq["cpu"], None))
        else:
            row.baseline = bare["rate"]
            notes.append(_cpu_note(restmq["cpu"], bare["cpu"]))
            notes.append("CPU per message: server %.2f vs %.2f us (ratio %.2f), Redis %.2f us" % (
                restmq["us"]["server"], bare["us"]["server"],
                bare["us"]["server"] / max(1e-9, restmq["us"]["server"]), restmq["us"]["redis"]))
        row.note = "; ".join(notes)
        return [row]

    def phase_idle(self) -> List[Row]:
        plan = self.plan
        found = self._on_each_stream_system(self._idle)
        restmq = found["restmq"]
        rows = []
        for key, baseline in (("d", "bare"), ("k", "nchan")):
            row = self._row(key, restmq=restmq["rss"] / 1024.0)
            notes = ["%d connections, %.1f MB before them" % (restmq["ready"], restmq["rss0"] / 1024.0)]
            if key == "k":
                notes.append("target <= 100 MB: %s" % ("met" if restmq["rss"] <= 100 * 1024 else "missed"))
            other = found[baseline]
            if isinstance(other, Exception):
                notes.append("baseline n/a: %s" % other)
            else:
                row.baseline = other["rss"] / 1024.0
                if other["ready"] < restmq["ready"]:
                    notes.append("baseline held %d" % other["ready"])
            if key == "k":
                notes.append("nginx: its worker's VmRSS")
            if plan.idle_connections != 10000:
                notes.append("not the 10,000 of the figure")
            row.note = "; ".join(notes)
            rows.append(row)
        return rows

    def _idle(self, system: str, start: Callable[[str], Dict[str, Any]]) -> Dict[str, Any]:
        plan = self.plan
        where = start("idle")
        server = where["proc"]

        def rss() -> int:
            # nginx: its worker holds the connections; the master holds none, and
            # adding the two would count their shared memory twice
            return rss_kb((children_of(server.pid) if system == "nchan" else [server.pid])[0])

        rss0 = rss()
        client = self.procs.clients(where["port"], where["sub"] % "idle", plan.idle_connections,
                                    "idle", name="idle-%s" % system)
        began = time.monotonic()
        ready = client.wait_ready(240)
        connected = time.monotonic() - began
        if ready["ready"] < 0.99 * plan.idle_connections:
            raise BenchError("%s: only %d of %d connections held: %s"
                             % (system, ready["ready"], plan.idle_connections, ready["failures"]))
        time.sleep(2.0)
        held = client.lap()
        if held["open"] < ready["ready"]:
            raise BenchError("%s dropped %d idle connections" % (system, ready["ready"] - held["open"]))
        result = {"rss": rss(), "rss0": rss0, "ready": held["open"]}
        self.log("  idle %s: %d connections in %.1f s, RSS %.1f MB (%.1f MB before)"
                 % (system, held["open"], connected, result["rss"] / 1024.0, rss0 / 1024.0))
        return result

    # issue 16: consumer groups

    def _make_groups(self, port: int) -> None:
        for queue, count in (("g1", 1), ("g4", 4), ("gd", 1)):
            for i in range(count):
                _post(port, "/q/%s/groups/w%d" % (queue, i), b"")

    def phase_groups(self) -> List[Row]:
        """Publish to a queue with 0, 1 and 4 groups (one Redis round trip each), and
        pops from a group beside pops from a plain queue, in the same run."""
        self.wrk.check()
        _, broker = self._broker(profile="groups")
        form = self.wrk.script("POST", "value=" + SMALL_MESSAGE, FORM)
        url = "http://127.0.0.1:%d" % broker

        def fresh(name: str) -> None:
            # every run from an empty Redis (the bodies stay for the default consumers)
            self.redis.flush()
            self._make_groups(broker)

        publish = self._wrk_series({name: (url + "/q/" + name, form) for name in ("g0", "g1", "g4")},
                                   before_run=fresh)
        need = int(10000 * max(self.plan.wrk_seconds, self.plan.warm_seconds)) + 1000
        client = self.redis.client
        batch = orjson.dumps([SMALL_MESSAGE] * 1000)
        lists = {"plain": "pd:queue", "group": "gd#w0:queue"}

        def fill(name: str) -> None:
            if name == "plain":
                self.redis.flush()
                self._make_groups(broker)
            queue = "pd" if name == "plain" else "gd"
            for _ in range(max(0, need - client.llen(lists[name])) // 1000 + 1):
                _post(broker, "/q/" + queue, batch, JSON)

        pops = self._wrk_series({"plain": (url + "/q/pd", self.wrk.script("GET")),
                                 "group": (url + "/q/gd?group=w0", self.wrk.script("GET"))},
                                before_run=fill)
        rate = {name: _median([r["rps"] for r in runs]) for name, runs in {**publish, **pops}.items()}
        rows = [self._row("l1", restmq=rate["g1"], baseline=rate["g0"], note=_wrk_note(publish["g1"])),
                self._row("l4", restmq=rate["g4"], baseline=rate["g0"], note=_wrk_note(publish["g4"])),
                self._row("m", restmq=rate["group"], baseline=rate["plain"], note=_wrk_note(pops["group"]))]
        return rows

    # issue 18: a consumer that already waits

    def _roundtrips(self, port: int) -> float:
        """The broker's count of Redis round trips so far (its /metrics)."""
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("GET", "/metrics")
            text = connection.getresponse().read().decode()
        finally:
            connection.close()
        for line in text.splitlines():
            if line.startswith("restmq_redis_roundtrip_seconds_count"):
                return float(line.split()[-1])
        raise BenchError("no restmq_redis_roundtrip_seconds_count in /metrics")

    def _publishes(self) -> int:
        """PUBLISH calls so far (in scripts too): the pub/sub hops."""
        stats = self.redis.client.info("commandstats")
        return int(stats.get("cmdstat_publish", {}).get("calls", 0))

    def phase_longpoll(self) -> List[Row]:
        """Publish -> consume latency for a consumer already waiting (long-poll, reserve
        with wait=), on the publisher's process and on another one, beside a bare
        Cyclone long-poll; Redis round trips and pub/sub messages per delivery."""
        plan = self.plan
        _, one = self._broker(profile="longpoll")
        _, two = self._broker(name="restmq-2")
        _, bare = self._bare()

        def ack(sock: Any, body: bytes) -> None:
            receipt = orjson.loads(body)["receipt"]
            if post_on(sock, one, "/q/lr/ack", b"receipt=" + receipt.encode()) != 200:
                raise BenchError("ack refused")

        targets: Dict[str, tuple] = {
            "same": (one, "/q/lp?wait=10", one, "/q/lp", {}),
            "cross": (one, "/q/lx?wait=10", two, "/q/lx", {}),
            "reserve": (one, "/q/lr?reserve=30&wait=10", one, "/q/lr", {"after": ack}),
            "bare": (bare, "/poll/lp", bare, "/pub/lp", {}),
        }
        nchan_error = None
        try:
            _, nginx = self._nginx()
            targets["nchan"] = (nginx, "/lp/lp", nginx, "/pub/lp", {
                "headers_for": nchan_next, "pub_body": lambda i: (b'"m%d"' % i, "text/plain")})
        except BenchError as exc:
            nchan_error = str(exc)
        brokers = {"same": [one], "cross": [one, two], "reserve": [one]}
        found: Dict[str, Dict[str, Any]] = {
            name: {"latencies": [], "misses": 0, "trips": 0.0, "pubs": 0, "rounds": 0}
            for name in targets}
        # what one /metrics scrape costs in round trips
        scrape = self._roundtrips(one)
        scrape = self._roundtrips(one) - scrape
        share = max(1, plan.longpoll_samples // max(1, plan.runs))
        for _ in range(max(1, plan.runs)):
            for name, (get_port, get_path, pub_port, pub_path, options) in targets.items():
                ports = brokers.get(name, [])
                trips = [self._roundtrips(port) for port in ports]
                pubs = self._publishes()
                result = longpoll_latency(get_port, get_path, pub_port, pub_path, share,
                                          warm=20, **options)
                entry = found[name]
                entry["pubs"] += self._publishes() - pubs
                entry["trips"] += sum(self._roundtrips(port) - before - scrape
                                      for port, before in zip(ports, trips))
                entry["latencies"] += result["latencies"]
                entry["misses"] += result["misses"]
                entry["rounds"] += result["samples"] + 20
        for entry in found.values():
            entry["latencies"].sort()
            if not entry["latencies"]:
                raise BenchError("no long-poll delivery was timed")
        base = found["bare"]["latencies"]
        rows = []
        amq = {"p50": 0.36, "p99": 0.80}
        nchan = found.get("nchan")
        nchan_rows = []
        for stat, fraction in (("p50", 0.50), ("p99", 0.99)):
            row = self._row("u-%s" % stat, restmq=percentile(found["same"]["latencies"], fraction) * 1000)
            if nchan is None:
                row.note = "baseline n/a: %s" % nchan_error
            else:
                row.baseline = percentile(nchan["latencies"], fraction) * 1000
                row.note = "%d samples vs %d" % (len(found["same"]["latencies"]), len(nchan["latencies"]))
                if nchan["misses"]:
                    row.note += "; nchan answered %d rounds with another message" % nchan["misses"]
            nchan_rows.append(row)
        for key, name in (("r", "same"), ("s", "cross"), ("t", "reserve")):
            entry = found[name]
            samples = entry["latencies"]
            rounds = max(1, entry["rounds"])
            per = "%.2f Redis round trips and %.2f pub/sub messages per delivery" % (
                entry["trips"] / rounds, entry["pubs"] / rounds)
            if name == "reserve":
                per += " (the ack included)"
            for stat, fraction in (("p50", 0.50), ("p99", 0.99)):
                value = percentile(samples, fraction)
                notes = ["%d samples" % len(samples), per,
                         "ActiveMQ 5.17 REST in issue 18 (not run here): %.2f ms" % amq[stat]]
                if entry["misses"]:
                    notes.append("%d rounds got another message" % entry["misses"])
                rows.append(self._row("%s-%s" % (key, stat), restmq=value * 1000,
                                      baseline=percentile(base, fraction) * 1000,
                                      note="; ".join(notes)))
        rows += nchan_rows
        self.log("  long-poll p50/p99 ms: " + ", ".join(
            "%s %.3f/%.3f" % (name, percentile(e["latencies"], 0.5) * 1000,
                              percentile(e["latencies"], 0.99) * 1000) for name, e in found.items()))
        return rows

    # issue 18: ActiveMQ's waiting consumer (bench/activemq.py)

    def phase_activemq(self) -> List[Row]:
        return phase_activemq(self)

    # issue 17: the SQS API (bench/sqsbench.py)

    def phase_sqs(self) -> List[Row]:
        return phase_sqs(self)

    def phase_sqs_boto3(self) -> List[Row]:
        return phase_sqs_boto3(self)

    # issue 14: the Python client's worker loop

    def phase_client(self) -> List[Row]:
        """work() and consume(ack=True) with a no-op body beside a bare reserve()/ack()
        loop, all in this process on one connection, the loops interleaved per round."""
        from bench.client import LOOPS, fill
        proc, port = self._broker(profile="client")
        url = "http://127.0.0.1:%d" % port
        count = self.plan.client_messages
        fill(url, "cw", 200)
        for measure in LOOPS.values():  # warm: connections, scripts, the worker's threads
            measure(url, "cw", 50)
        rates: Dict[str, List[float]] = {name: [] for name in LOOPS}
        # this process's CPU per message: steadier than a rate on a shared machine
        costs: Dict[str, List[float]] = {name: [] for name in LOOPS}
        meter = CpuMeter({"server": lambda: [proc.pid], "redis": lambda: [self.redis.proc.pid],
                          "clients": lambda: [os.getpid()]})
        for _ in range(self.plan.runs):
            for name, measure in LOOPS.items():
                fill(url, "cw", count)
                used = time.process_time()
                rates[name].append(measure(url, "cw", count))
                costs[name].append((time.process_time() - used) * 1e6 / count)
        cpu = meter.percent()
        rate = {name: _median(values) for name, values in rates.items()}
        cost = {name: _median(values) for name, values in costs.items()}
        self.log("  client loops: " + ", ".join(
            "%s %.0f msg/s (%.0f us CPU/msg)" % (name, rate[name], cost[name]) for name in LOOPS))
        cpu_text = _cpu_note(cpu, None).replace("clients", "client")
        rows = []
        for key, name in (("w1", "work"), ("w2", "consume"), ("w3", "work10"), ("w4", "work4")):
            note = "client CPU %.0f us/message vs %.0f; %d messages a run, median of %d; %s" % (
                cost[name], cost["bare"], count, self.plan.runs, cpu_text)
            rows.append(self._row(key, restmq=rate[name], baseline=rate["bare"], note=note))
        return rows

    def _row(self, key: str, **fields: Any) -> Row:
        figure, unit = FIGURES[key]
        return Row(key, figure, unit, **fields)


# key -> (figure, unit)
FIGURES: Dict[str, tuple] = {
    "a-p50": ("a. publish->SSE latency p50, 200 msg/s x 100 subscribers; vs bare Cyclone", "ms"),
    "a-p99": ("a. publish->SSE latency p99, same run; vs bare Cyclone", "ms"),
    "b": ("b. broadcast deliveries to 100 SSE subscribers, batch flood; vs bare Cyclone", "deliveries/s"),
    "c": ("c. round-robin deliveries, 10 SSE subscribers, batch flood; vs bare Cyclone", "messages/s"),
    "d": ("d. RSS holding 10,000 idle SSE connections; vs bare Cyclone", "MB"),
    "e1": ("e. POST /q small message; vs bare Cyclone form handler", "req/s"),
    "e2": ("e. POST /q small message; vs bare Cyclone + one LPUSH", "req/s"),
    "e3": ("e. POST /q small message; vs bare Cyclone + one EVALSHA", "req/s"),
    "e4": ("e. POST /q small message; vs HotQueue puts, in-process loop", "req/s"),
    "f": ("f. GET /q pop; vs bare Cyclone + one RPOP", "req/s"),
    "g": ("g. batch publish, one process; vs bare Cyclone JSON array + one LPUSH", "messages/s"),
    "h": ("h. fan-out to 100 SSE subscribers; vs nginx + nchan (1 worker)", "deliveries/s"),
    "i-p50": ("i. publish->SSE latency p50, 200 msg/s x 100 subscribers; vs nchan", "ms"),
    "i-p99": ("i. publish->SSE latency p99, same run; vs nchan", "ms"),
    "j": ("j. POST /q with two workers (--reuse-port); vs one worker", "req/s"),
    "k": ("k. RSS holding 10,000 idle SSE connections; vs nginx + nchan", "MB"),
    "l1": ("l. POST /q to a queue with 1 consumer group; vs the same with none", "req/s"),
    "l4": ("l. POST /q to a queue with 4 consumer groups; vs the same with none", "req/s"),
    "m": ("m. GET /q?group= pop from a consumer group; vs GET /q pop of a plain queue", "req/s"),
    "r-p50": ("r. publish->long-poll latency p50, consumer waiting, same process; vs bare Cyclone "
              "long-poll", "ms"),
    "r-p99": ("r. publish->long-poll latency p99, same run; vs bare Cyclone long-poll", "ms"),
    "s-p50": ("s. publish->long-poll latency p50, publisher on another process; vs bare Cyclone "
              "(one process)", "ms"),
    "s-p99": ("s. publish->long-poll latency p99, same run; vs bare Cyclone (one process)", "ms"),
    "t-p50": ("t. publish->reserve with wait= latency p50, same process; vs bare Cyclone long-poll", "ms"),
    "t-p99": ("t. publish->reserve with wait= latency p99, same run; vs bare Cyclone long-poll", "ms"),
    "u-p50": ("u. publish->long-poll latency p50, same process (as r); vs nginx + nchan long-poll", "ms"),
    "u-p99": ("u. publish->long-poll latency p99, same run; vs nginx + nchan long-poll", "ms"),
    "w1": ("w. Python client work(), no-op handler, one process; vs a bare reserve()/ack() loop",
           "messages/s"),
    "w2": ("w. Python client consume(ack=True), one process; vs the same bare loop", "messages/s"),
    "w3": ("w. Python client work(prefetch=10), one process; vs the same bare loop", "messages/s"),
    "w4": ("w. Python client work(concurrency=4), one process; vs the same bare loop", "messages/s"),
    **ACTIVEMQ_FIGURES,
    **SQS_FIGURES,
}

# phase -> (method, the rows it produces), in the order they run
PHASES: Dict[str, tuple] = {
    "post": ("phase_post", ["e1", "e2", "e3", "e4"]),
    "pop": ("phase_pop", ["f"]),
    "batch": ("phase_batch", ["g"]),
    "workers": ("phase_workers", ["j"]),
    "latency": ("phase_latency", ["a-p50", "a-p99", "i-p50", "i-p99"]),
    "fanout": ("phase_fanout", ["b", "h"]),
    "roundrobin": ("phase_roundrobin", ["c"]),
    "idle": ("phase_idle", ["d", "k"]),
    "groups": ("phase_groups", ["l1", "l4", "m"]),
    "longpoll": ("phase_longpoll", ["r-p50", "r-p99", "s-p50", "s-p99", "t-p50", "t-p99",
                                    "u-p50", "u-p99"]),
    "activemq": ("phase_activemq", ["v-p50", "v-p99"]),
    "sqs": ("phase_sqs", ["n1", "n2"]),
    "sqs-boto3": ("phase_sqs_boto3", ["o"]),
    "client": ("phase_client", ["w1", "w2", "w3", "w4"]),
}
