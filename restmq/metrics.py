"""Metrics: the Prometheus counters, gauges and histograms of one RestMQ process.

Counters and histograms are updated as things happen (handlers, dispatcher,
store). Queue gauges (depth, in flight, delayed, dead, oldest age, paused) and
subscriber counts are not kept here: ``/metrics`` reads them at scrape time
(one ``store.stats()`` call) and hands them to :meth:`Metrics.render`.

Every metric lives in the ``CollectorRegistry`` of its ``Metrics`` object, never
in prometheus_client's global registry, so several apps can live in one process.
The ``queue`` label takes at most ``max_queues`` distinct values: the first
queues seen keep their own name, every later one is counted as ``_other``.

Several workers on one port (``restmq --workers N``) share their counters
through prometheus_client's multiprocess mode: the launcher gives them one fresh
directory (``PROMETHEUS_MULTIPROC_DIR``), each worker's values live in files
there, and a scrape of any worker sums them all, so no counter goes backwards
whichever worker answers. Process metrics then carry a ``pid`` label per worker.
"""

from __future__ import annotations

import bisect
import functools
import os
import platform
import re
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Set, Tuple

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from restmq import __version__
from restmq.model import QueueState

__all__ = ["Metrics", "OTHER", "DEFAULT_MAX_QUEUES", "CONTENT_TYPE", "MULTIPROCESS_ENV"]

#: prometheus_client's own variable: set (by the workers launcher), metrics are shared there
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

# A _created sample per labelled child doubles the series and says nothing an
# operator reads; prometheus_client's switch for it is process-wide.
prometheus_client.disable_created_metrics()

#: the ``queue`` label of every queue past the cap
OTHER = "_other"
DEFAULT_MAX_QUEUES = 200
#: the Content-Type of the text exposition format that :meth:`Metrics.render` writes
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_METHODS = frozenset(("GET", "POST", "DELETE", "HEAD", "OPTIONS", "PUT", "PATCH"))
# Redis answers in well under a millisecond on a healthy host; the top buckets
# catch the stalls that reply_timeout (1.5 s by default) turns into 503s.
_REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                  0.1, 0.25, 0.5, 1.0, 2.5)
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                 10.0, 30.0, 60.0)
# with workers, histogram observations reach the shared files this often
_OBSERVED_SECONDS = 1.0


class Metrics:
    """The metrics of one RestMQ process, in a registry of their own.

    :param max_queues: distinct values the ``queue`` label may take; later
        queues share the series ``queue="_other"``.
    """

    def __init__(self, max_queues: int = DEFAULT_MAX_QUEUES,
                 registry: Optional[CollectorRegistry] = None,
                 multiprocess_dir: Optional[str] = None) -> None:
        self.max_queues = max_queues
        self.registry = registry if registry is not None else CollectorRegistry()
        self.multiprocess_dir = (os.environ.get(MULTIPROCESS_ENV) or None
                                 if multiprocess_dir is None else multiprocess_dir)
        self._labelled: Set[str] = set()
        self._published = Counter(
            "restmq_messages_published", "Messages stored by producers through this process.",
            ["queue"], registry=self.registry)
        self._delivered = Counter(
            "restmq_messages_delivered", "Messages handed to consumers by this process.",
            ["queue", "transport"], registry=self.registry)
        self._acked = Counter(
            "restmq_messages_acked", "Leased messages acknowledged through this process.",
            ["queue"], registry=self.registry)
        self._nacked = Counter(
            "restmq_messages_nacked", "Leased messages given back (nack) through this process.",
            ["queue"], registry=self.registry)
        self._redelivered = Counter(
            "restmq_messages_redelivered", "Messages handed out again after a lease ran out or a nack.",
            ["queue"], registry=self.registry)
        self._group_delivered = Counter(
            "restmq_group_messages_delivered", "Messages of a consumer group handed to its members.",
            ["queue", "group"], registry=self.registry)
        self._group_acked = Counter(
            "restmq_group_messages_acked", "Leased messages of a consumer group acknowledged.",
            ["queue", "group"], registry=self.registry)
        self._cut_off = Counter(
            "restmq_consumers_cut_off", "Streaming consumers cut off for falling too far behind.",
            ["queue", "transport"], registry=self.registry)
        self._redis = Histogram(
            "restmq_redis_roundtrip_seconds", "Time of one Redis round trip (script or command).",
            buckets=_REDIS_BUCKETS, registry=self.registry)
        self._requests = Counter(
            "restmq_http_requests", "HTTP requests answered, by route pattern, method and status.",
            ["route", "method", "status"], registry=self.registry)
        self._durations = Histogram(
            "restmq_http_request_duration_seconds",
            "Time from request to the end of the response, by route pattern.",
            ["route"], buckets=_HTTP_BUCKETS, registry=self.registry)
        self._snapshot: Optional[_Snapshot] = None
        # labelled children by (metric, labels): prometheus_client's labels() locks and
        # validates on every call, and these are called on every request
        self._children: Dict[Tuple[int, Tuple[str, ...]], Any] = {}
        # counter increments not yet applied (one process only): (counter, labels) -> amount
        self._pending: Dict[Tuple[Any, Tuple[str, ...]], float] = {}
        # histogram observations not yet applied: (id, labels) -> _Observed
        self._observed: Dict[Tuple[int, Tuple[str, ...]], _Observed] = {}
        self._observed_call: Any = None  # with workers: the timer that writes them
        self._observed_trigger = False
        scrape = _ScrapeCollector(self)
        if self.multiprocess_dir:
            # Scrapes read every worker's files, never this process's live values
            # (they are in the files too): a registry of their own.
            self.exposition = CollectorRegistry()
            MultiProcessCollector(self.exposition, path=self.multiprocess_dir)
            self.exposition.register(_WorkerProcesses(self.multiprocess_dir))
        else:
            self.exposition = self.registry
            ProcessCollector(registry=self.registry)
        self.exposition.register(scrape)

    def _count(self, counter: Any, labels: Tuple[str, ...], amount: float) -> None:
        """``counter`` (with ``labels``) goes up by ``amount``. In one process the
        increments are added up here and applied when a scrape reads them
        (prometheus_client takes a lock per increment, several times a request);
        with workers sharing files every increment is written at once."""
        if self.multiprocess_dir:
            self._child(counter, *labels).inc(amount)
            return
        key = (counter, labels)
        pending = self._pending
        pending[key] = pending.get(key, 0.0) + amount

    def _apply_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for (counter, labels), amount in pending.items():
            self._child(counter, *labels).inc(amount)
        self._apply_observed()

    def _observe(self, histogram: Any, labels: Tuple[str, ...], bounds: Tuple[float, ...],
                 value: float) -> None:
        """``histogram`` (with ``labels``) observes ``value``: counted per bucket here
        and applied in bulk (prometheus_client locks, and with workers writes a file,
        twice per observation; one request makes two). In one process they are
        applied when a scrape reads them; with workers at most a second later (the
        counters are written at once), so another worker's scrape sees them by then."""
        key = (id(histogram), labels)
        observed = self._observed.get(key)
        if observed is None:
            observed = self._observed[key] = _Observed(histogram, labels, len(bounds) + 1)
        observed.counts[bisect.bisect_left(bounds, value)] += 1
        observed.total += value
        if self._observed_call is None and self.multiprocess_dir:
            self._schedule_observed()

    def _schedule_observed(self) -> None:
        from twisted.internet import reactor
        clock: Any = reactor
        if self._observed_call is None and not self._observed_trigger:
            # a worker stopping writes what it holds (its files outlive it)
            self._observed_trigger = True
            clock.addSystemEventTrigger("before", "shutdown", self._apply_observed)
        self._observed_call = clock.callLater(_OBSERVED_SECONDS, self._write_observed)

    def _write_observed(self) -> None:
        self._observed_call = None  # the next observation sets the timer again
        self._apply_observed()

    def _apply_observed(self) -> None:
        for observed in self._observed.values():
            if observed.total or any(observed.counts):
                observed.apply(self._child(observed.histogram, *observed.labels))

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels) if labels else metric
        return child

    # labels

    def queue_label(self, queue: str) -> str:
        """``queue`` itself while fewer than ``max_queues`` names are in use, else ``_other``."""
        if queue in self._labelled:
            return queue
        if len(self._labelled) < self.max_queues:
            self._labelled.add(queue)
            return queue
        return OTHER

    # events (called by handlers, the dispatcher and the store)

    def published(self, queue: str, count: int) -> None:
        """``count`` messages were stored in ``queue``."""
        if count:
            label = self.queue_label(queue)
            self._count(self._published, (label,), count)

    def delivered(self, queue: str, transport: str, count: int, group: str = "") -> None:
        """``count`` messages of ``queue`` (of its consumer ``group``) went to
        consumers over ``transport``."""
        if count:
            label = self.queue_label(queue)
            self._count(self._delivered, (label, transport), count)
            if group:
                self._count(self._group_delivered, (label, group), count)

    def acked(self, queue: str, count: int, group: str = "") -> None:
        if count:
            label = self.queue_label(queue)
            self._child(self._acked, label).inc(count)
            if group:
                self._child(self._group_acked, label, group).inc(count)

    def nacked(self, queue: str, count: int) -> None:
        if count:
            self._child(self._nacked, self.queue_label(queue)).inc(count)

    def redelivered(self, queue: str, count: int) -> None:
        if count:
            self._child(self._redelivered, self.queue_label(queue)).inc(count)

    def cut_off(self, queue: str, transport: str) -> None:
        """A slow ``transport`` consumer of ``queue`` was cut off."""
        self._child(self._cut_off, self.queue_label(queue), transport).inc()

    def observe_redis(self, seconds: float) -> None:
        """One Redis round trip took ``seconds`` (the store's ``observe`` hook)."""
        self._observe(self._redis, (), _REDIS_BUCKETS, seconds)

    def http(self, route: str, status: int, method: str = "GET",
             seconds: Optional[float] = None) -> None:
        """A request to ``route`` (a pattern such as ``/q/{queue}``) was answered."""
        method = method if method in _METHODS else "other"
        self._count(self._requests, (route, method, str(status)), 1)
        if seconds is not None:
            self._observe(self._durations, (route,), _HTTP_BUCKETS, seconds)

    # reading

    def render(self, queues: Optional[Iterable[Any]],
               subscribers: Mapping[str, Mapping[str, int]],
               counters: Optional[Mapping[str, Mapping[str, int]]] = None,
               accept: str = "") -> bytes:
        """The exposition of every metric, with queue gauges from this scrape.

        :param queues: ``QueueInfo`` objects of ``store.stats()``; None when Redis
            did not answer (``restmq_redis_up`` is then 0 and no queue gauge is given).
        :param subscribers: ``dispatcher.all_subscriber_counts()``.
        :param counters: ``store.counters()`` (events counted in Redis), or None.
        :param accept: the scraper's Accept header: OpenMetrics when it asks for it.
        """
        return self.exposition_for(accept)[0](queues, subscribers, counters)

    def exposition_for(self, accept: str) -> Tuple[Callable[..., bytes], str]:
        """(render function, Content-Type) for a scraper's Accept header."""
        encoder, content_type = choose_encoder(accept or "")

        def render(queues: Optional[Iterable[Any]], subscribers: Mapping[str, Mapping[str, int]],
                   counters: Optional[Mapping[str, Mapping[str, int]]] = None) -> bytes:
            self._apply_pending()
            self._snapshot = _Snapshot(self, queues, subscribers, counters)
            try:
                return encoder(self.exposition)
            finally:
                self._snapshot = None

        return render, content_type


class _Observed:
    """Observations of one histogram child not applied yet: a count per bucket
    (the last one past the largest bound, +Inf) and their sum."""

    __slots__ = ("histogram", "labels", "counts", "total")

    def __init__(self, histogram: Any, labels: Tuple[str, ...], buckets: int) -> None:
        self.histogram = histogram
        self.labels = labels
        self.counts = [0] * buckets
        self.total = 0.0

    def apply(self, child: Any) -> None:
        """Add them to prometheus_client's child: its bucket and sum values (what
        ``observe`` adds to, one at a time) each take the bulk amount."""
        counts, total = self.counts, self.total
        self.counts, self.total = [0] * len(counts), 0.0
        buckets = child._buckets
        for i, count in enumerate(counts):
            if count:
                buckets[i].inc(count)
        child._sum.inc(total)


class _Snapshot:
    """Queue gauges of one scrape, already folded under the label cap."""

    _FIELDS = ("length", "inflight", "delayed", "dead")

    def __init__(self, metrics: Metrics, queues: Optional[Iterable[Any]],
                 subscribers: Mapping[str, Mapping[str, int]],
                 counters: Optional[Mapping[str, Mapping[str, int]]] = None) -> None:
        self.redis_up = queues is not None
        self.counters: Dict[str, Dict[str, float]] = {}
        for event, by_queue in (counters or {}).items():
            folded = self.counters.setdefault(event, {})
            for queue, count in by_queue.items():
                label = metrics.queue_label(queue)
                folded[label] = folded.get(label, 0.0) + count
        self.count = 0
        self.values: Dict[str, Dict[str, float]] = {}
        self.ages: Dict[str, float] = {}
        self.paused: Dict[str, float] = {}
        self.groups: Dict[Tuple[str, str], Dict[str, float]] = {}
        for info in queues or ():
            self.count += 1
            label = metrics.queue_label(info.name)
            values = self.values.setdefault(label, dict.fromkeys(self._FIELDS, 0.0))
            for field in self._FIELDS:
                values[field] += getattr(info, field)
            self.paused[label] = self.paused.get(label, 0.0) + (info.state is QueueState.STOPPED)
            if info.oldest_age is not None:
                self.ages[label] = max(self.ages.get(label, 0.0), info.oldest_age)
            for group in getattr(info, "groups", ()):
                totals = self.groups.setdefault((label, group.name), dict.fromkeys(self._FIELDS, 0.0))
                for field in self._FIELDS:
                    totals[field] += getattr(group, field)
        self.subscribers: Dict[Tuple[str, str], float] = {}
        for queue, counts in subscribers.items():
            label = metrics.queue_label(queue)
            for transport, count in counts.items():
                key = (label, transport)
                self.subscribers[key] = self.subscribers.get(key, 0.0) + count


class _ScrapeCollector(Collector):
    """Yields the gauges of the scrape under way (none outside :meth:`Metrics.render`)."""

    _GAUGES = (
        ("restmq_queue_depth", "Messages waiting in the queue.", "length"),
        ("restmq_queue_inflight", "Messages leased and not yet acknowledged.", "inflight"),
        ("restmq_queue_delayed", "Messages waiting for their delay to pass.", "delayed"),
        ("restmq_queue_dead", "Messages in the queue's dead-letter queue.", "dead"),
    )

    _GROUP_GAUGES = (
        ("restmq_group_depth", "Messages waiting for a consumer group.", "length"),
        ("restmq_group_inflight", "Messages of a consumer group leased and not yet acknowledged.",
         "inflight"),
        ("restmq_group_delayed", "Messages of a consumer group waiting for their delay.", "delayed"),
        ("restmq_group_dead", "Messages in a consumer group's dead-letter queue.", "dead"),
    )

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> List[Metric]:
        # registering must not call collect(): there is no snapshot then
        return []

    _COUNTED = (
        ("restmq_messages_dead_lettered", "Messages moved to their queue's dead-letter queue "
         "(every broker on this Redis).", "dead_lettered"),
        ("restmq_messages_expired", "Messages whose ttl ran out before anyone took them "
         "(every broker on this Redis).", "expired"),
        ("restmq_queue_full_refusals", "Publishes refused because the queue was full, 429 "
         "(every broker on this Redis).", "queue_full"),
    )

    def collect(self) -> Iterator[Metric]:
        snapshot = self.metrics._snapshot
        if snapshot is None:
            return
        build = GaugeMetricFamily("restmq_build_info", "The RestMQ version and Python that run here.",
                                  labels=["version", "python"])
        build.add_metric([__version__, platform.python_version()], 1.0)
        yield build
        for name, documentation, event in self._COUNTED:
            if event in snapshot.counters or snapshot.redis_up:
                family = CounterMetricFamily(name, documentation, labels=["queue"])
                for label, count in sorted(snapshot.counters.get(event, {}).items()):
                    family.add_metric([label], count)
                yield family
        up = GaugeMetricFamily("restmq_redis_up", "1 when Redis answered this scrape's stats call.")
        up.add_metric([], 1.0 if snapshot.redis_up else 0.0)
        yield up
        if snapshot.redis_up:
            yield from self._queue_gauges(snapshot)
        subscribers = GaugeMetricFamily("restmq_subscribers",
                                        "Streaming and long-poll subscribers on this process.",
                                        labels=["queue", "transport"])
        for (label, transport), count in sorted(snapshot.subscribers.items()):
            subscribers.add_metric([label, transport], count)
        yield subscribers

    def _queue_gauges(self, snapshot: _Snapshot) -> Iterator[Metric]:
        queues = GaugeMetricFamily("restmq_queues", "Queues known to Redis (QUEUESET).")
        queues.add_metric([], snapshot.count)
        yield queues
        for name, documentation, field in self._GAUGES:
            family = GaugeMetricFamily(name, documentation, labels=["queue"])
            for label, values in sorted(snapshot.values.items()):
                family.add_metric([label], values[field])
            yield family
        age = GaugeMetricFamily("restmq_queue_oldest_message_age_seconds",
                                "Age of the oldest waiting message.", labels=["queue"])
        for label, seconds in sorted(snapshot.ages.items()):
            age.add_metric([label], seconds)
        yield age
        for name, documentation, field in self._GROUP_GAUGES:
            family = GaugeMetricFamily(name, documentation, labels=["queue", "group"])
            for (label, group), counts in sorted(snapshot.groups.items()):
                family.add_metric([label, group], counts[field])
            yield family
        paused = GaugeMetricFamily("restmq_queue_paused",
                                   "1 while the queue is stopped (/control); for _other, how many are.",
                                   labels=["queue"])
        for label, value in sorted(snapshot.paused.items()):
            paused.add_metric([label], value)
        yield paused


_PID_FILE = re.compile(r"_(\d+)\.db\Z")


class _WorkerProcesses(Collector):
    """Process metrics (RSS, CPU, open fds...) of every live worker writing to the
    multiprocess directory, each with its ``pid`` label."""

    def __init__(self, directory: str, proc: str = "/proc") -> None:
        self.directory = directory
        self.proc = proc

    def describe(self) -> List[Metric]:
        return []

    def _pids(self) -> List[int]:
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        pids = {int(match.group(1)) for match in map(_PID_FILE.search, names) if match}
        return sorted(pid for pid in pids if os.path.exists(os.path.join(self.proc, str(pid), "stat")))

    def collect(self) -> Iterator[Metric]:
        families: Dict[str, Metric] = {}
        for pid in self._pids():
            collector = ProcessCollector(pid=functools.partial(int, pid), proc=self.proc, registry=None)
            for family in collector.collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation, family.type)
                for sample in family.samples:
                    merged.add_sample(sample.name, dict(sample.labels, pid=str(pid)), sample.value)
        yield from families.values()
