"""Metrics: the registry of one process, the queue label cap, scrape-time gauges, the hooks."""

from __future__ import annotations

from typing import Dict, Optional

import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import task

from restmq.config import DispatchConfig
from restmq.dispatch import Dispatcher
from restmq.metrics import OTHER, Metrics
from restmq.model import Message, Policy, QueueInfo, QueueState
from restmq.web.app import route_label


def samples(exposition: bytes) -> Dict[tuple, float]:
    """{(sample name, sorted label items): value} of a text exposition."""
    out = {}
    for family in text_string_to_metric_families(exposition.decode("utf-8")):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(exposition: bytes, name: str, **labels: str) -> Optional[float]:
    return samples(exposition).get((name, tuple(sorted(labels.items()))))


def info(name: str, length: int = 0, **fields) -> QueueInfo:
    return QueueInfo(name=name, length=length, state=fields.pop("state", QueueState.STARTED),
                     policy=Policy.BROADCAST, **fields)


def test_each_metrics_object_has_its_own_registry():
    first, second = Metrics(), Metrics()
    first.published("jobs", 3)
    assert value(first.render([], {}), "restmq_messages_published_total", queue="jobs") == 3
    assert value(second.render([], {}), "restmq_messages_published_total", queue="jobs") is None


def test_counters_by_queue_and_transport():
    metrics = Metrics()
    metrics.published("jobs", 2)
    metrics.delivered("jobs", "sse", 1)
    metrics.delivered("jobs", "rest", 1)
    metrics.acked("jobs", 1)
    metrics.redelivered("jobs", 1)
    metrics.cut_off("jobs", "comet")
    metrics.observe_redis(0.0004)
    metrics.http("/q/{queue}", 200, "POST", 0.003)
    metrics.http("/q/{queue}", 404, "BREW")
    text = metrics.render([], {})
    assert value(text, "restmq_messages_delivered_total", queue="jobs", transport="sse") == 1
    assert value(text, "restmq_messages_acked_total", queue="jobs") == 1
    assert value(text, "restmq_messages_redelivered_total", queue="jobs") == 1
    assert value(text, "restmq_consumers_cut_off_total", queue="jobs", transport="comet") == 1
    assert value(text, "restmq_redis_roundtrip_seconds_count") == 1
    assert value(text, "restmq_http_requests_total", route="/q/{queue}", method="POST", status="200") == 1
    # an unknown method does not become a label value of its own
    assert value(text, "restmq_http_requests_total", route="/q/{queue}", method="other", status="404") == 1
    assert value(text, "restmq_http_request_duration_seconds_count", route="/q/{queue}") == 1


def test_histograms_counted_in_bulk_read_as_observed_one_by_one():
    # observations are counted per bucket and applied at the scrape: the exposition
    # must be what prometheus_client's own observe() gives for the same values
    from prometheus_client import CollectorRegistry, Histogram, generate_latest
    from restmq.metrics import _HTTP_BUCKETS, _REDIS_BUCKETS
    registry = CollectorRegistry()
    redis = Histogram("restmq_redis_roundtrip_seconds", "x", buckets=_REDIS_BUCKETS, registry=registry)
    http = Histogram("restmq_http_request_duration_seconds", "x", ["route"], buckets=_HTTP_BUCKETS,
                     registry=registry)
    metrics = Metrics()
    # on a bound, between bounds, below the first, past the last (+Inf), zero
    values = [0.0001, 0.00011, 0.00001, 2.5, 3.0, 0.0, 0.01, 0.01, 100.0]
    for n, seconds in enumerate(values):
        metrics.observe_redis(seconds)
        redis.observe(seconds)
        route = "/q/{queue}" if n % 2 else "/stats/"
        metrics.http(route, 200, "GET", seconds * 10)
        http.labels(route).observe(seconds * 10)
    wanted = samples(generate_latest(registry))
    got = samples(metrics.render([], {}))
    assert [k for k in wanted if k[0].startswith("restmq_redis")]
    for key, number in wanted.items():
        assert got.get(key) == number, key
    # applied once: a second scrape shows the same, a new observation adds one
    metrics.observe_redis(0.0001)
    again = samples(metrics.render([], {}))
    assert again[("restmq_redis_roundtrip_seconds_count", ())] == len(values) + 1
    assert again[("restmq_redis_roundtrip_seconds_bucket", (("le", "0.0001"),))] == \
        wanted[("restmq_redis_roundtrip_seconds_bucket", (("le", "0.0001"),))] + 1


def test_queue_label_is_capped_and_the_rest_is_other():
    metrics = Metrics(max_queues=2)
    for queue in ("a", "b", "c", "d"):
        metrics.published(queue, 1)
    text = metrics.render([info("a", 1), info("b", 2), info("c", 3), info("d", 4, dead=1)], {"d": {"sse": 2}})
    assert value(text, "restmq_messages_published_total", queue="a") == 1
    assert value(text, "restmq_messages_published_total", queue="c") is None
    assert value(text, "restmq_messages_published_total", queue=OTHER) == 2
    assert value(text, "restmq_queue_depth", queue=OTHER) == 7
    assert value(text, "restmq_queue_dead", queue=OTHER) == 1
    assert value(text, "restmq_subscribers", queue=OTHER, transport="sse") == 2
    assert value(text, "restmq_queues") == 4
    queue_labels = {dict(labels).get("queue") for (_, labels) in samples(text)} - {None}
    assert queue_labels == {"a", "b", OTHER}


def test_scrape_gauges_come_from_the_snapshot_only():
    metrics = Metrics()
    text = metrics.render([info("jobs", 5, inflight=2, delayed=1, oldest_age=7.5, state=QueueState.STOPPED)],
                          {"jobs": {"comet": 1, "longpoll": 3}})
    assert value(text, "restmq_redis_up") == 1
    assert value(text, "restmq_queue_depth", queue="jobs") == 5
    assert value(text, "restmq_queue_inflight", queue="jobs") == 2
    assert value(text, "restmq_queue_delayed", queue="jobs") == 1
    assert value(text, "restmq_queue_oldest_message_age_seconds", queue="jobs") == 7.5
    assert value(text, "restmq_queue_paused", queue="jobs") == 1
    assert value(text, "restmq_subscribers", queue="jobs", transport="longpoll") == 3
    # a purged queue is gone from the next scrape
    assert value(metrics.render([], {}), "restmq_queue_depth", queue="jobs") is None


def test_scrape_without_redis_keeps_the_process_metrics():
    metrics = Metrics()
    metrics.published("jobs", 1)
    text = metrics.render(None, {})
    assert value(text, "restmq_redis_up") == 0
    assert value(text, "restmq_queues") is None
    assert value(text, "restmq_messages_published_total", queue="jobs") == 1


def test_route_labels_are_the_route_patterns():
    assert route_label(r"/q/(.+?)/?") == "/q/{queue}"
    assert route_label(r"/q/(.+?)/dead/?") == "/q/{queue}/dead"
    assert route_label(r"/collectd/(.*)") == "/collectd/{name}"
    assert route_label(r"/q/?") == "/q"
    assert route_label(r"/") == "/"
    assert route_label(r"/openapi\.json") == "/openapi.json"
    assert route_label(r".*") == "(unmatched)"


class SlowConsumer:
    """A streaming consumer whose reader stopped reading long ago."""

    transport = "comet"

    def __init__(self) -> None:
        self.sent = []
        self.closed_because = None

    def send(self, message: Message) -> None:
        self.sent.append(message)

    def can_take(self) -> bool:
        return False

    def overflowing(self) -> bool:
        return True

    def close(self, reason: str) -> None:
        self.closed_because = reason


@pytest_twisted.ensureDeferred
async def test_dispatcher_counts_a_slow_consumer_cut_off(store):
    metrics = Metrics()
    dispatcher = Dispatcher(store, task.Clock(), DispatchConfig(), metrics=metrics)
    slow = SlowConsumer()
    dispatcher.subscribe("news", slow)
    dispatcher.on_broadcast("news", ["news:1", "hello", ""])
    assert slow.closed_because == "too slow"
    assert slow.sent == []
    text = metrics.render([], {})
    assert value(text, "restmq_consumers_cut_off_total", queue="news", transport="comet") == 1
    assert dispatcher.subscriber_counts("news") == {}
    dispatcher.stop()


@pytest_twisted.ensureDeferred
async def test_store_reports_each_round_trip(store):
    seen = []
    store.observe = seen.append
    await store.add("jobs", ["a"])
    await store.ping()
    assert len(seen) == 2 and all(seconds >= 0 for seconds in seen)
