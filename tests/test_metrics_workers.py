"""Two workers on one port (``restmq --workers 2``): whichever answers a scrape,
/metrics sums both (prometheus_client's multiprocess mode), so no counter ever
goes backwards from one scrape to the next."""

from __future__ import annotations

import os
import signal
import tempfile
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.processes import wait_dead
from tests.test_run import post, start_workers


def scrape(port: int):
    """({(name, labels): value} of the counters and histograms, {pid labels seen})."""
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read().decode()
    counters, pids = {}, set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "pid" in sample.labels:
                pids.add(int(sample.labels["pid"]))
            if family.type in ("counter", "histogram"):
                counters[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return counters, pids


def _stop(run, pids) -> None:
    """SIGTERM to the launcher; every worker and the embedded Redis go with it."""
    try:
        run.proc.send_signal(signal.SIGTERM)
        run.proc.wait(timeout=60)
    finally:
        run.kill()
    for pid in pids:
        wait_dead(pid)


def test_two_workers_counters_never_go_backwards_across_20_scrapes(tmp_path):
    run, port, workers, redis = start_workers(tmp_path, workers=2)
    try:
        previous: dict = {}
        seen_pids: set = set()
        for i in range(20):
            # a new connection each time: the kernel spreads them over both workers
            assert post(port, "counted", "m%d" % i) == b"counted:%d\r\n" % (i + 1)
            counters, pids = scrape(port)
            seen_pids |= pids
            for key, value in previous.items():
                assert counters.get(key, 0.0) >= value, "%s went from %s to %s at scrape %d" % (
                    key, value, counters.get(key), i + 1)
            # the sum of both workers, whichever answered
            assert counters[("restmq_messages_published_total", (("queue", "counted"),))] == i + 1
            previous = counters
        assert set(workers) <= seen_pids, (workers, seen_pids)  # process metrics of each worker
    finally:
        _stop(run, workers + [redis])
    # the run's metrics directory (in the temporary folder) is removed with it
    temporary = tempfile.gettempdir()
    left = [name for name in os.listdir(temporary) if name.startswith("restmq-metrics-")
            and any(os.path.exists(os.path.join(temporary, name, "counter_%d.db" % pid)) for pid in workers)]
    assert left == []


def test_two_workers_histograms_reach_every_scrape(tmp_path):
    # a worker applies its histogram observations to the shared files within a
    # second (counters at once): every POST is counted, whichever worker scrapes
    run, port, workers, redis = start_workers(tmp_path, workers=2)
    try:
        for i in range(20):
            assert post(port, "timed", "m%d" % i) == b"timed:%d\r\n" % (i + 1)
        key = ("restmq_http_request_duration_seconds_count", (("route", "/q/{queue}"),))
        deadline = time.monotonic() + 30
        while True:
            counters, _ = scrape(port)
            if counters.get(key, 0.0) >= 20 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert counters.get(key) == 20
        # the requests counter (written at once) agrees
        assert sum(v for (name, labels), v in counters.items()
                   if name == "restmq_http_requests_total" and ("route", "/q/{queue}") in labels) == 20
    finally:
        _stop(run, workers + [redis])
