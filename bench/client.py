"""Figure w: the Python client's loops (``work()``, ``consume(ack=True)``) beside a
bare ``reserve()`` / ``ack()`` loop, each in this one process, on one keep-alive
connection, against the same broker in the same run."""

from __future__ import annotations

import time
from typing import Callable, Dict

from bench.loads import SMALL_MESSAGE
from restmq.client import Message, Queue

__all__ = ["LOOPS", "fill"]


def fill(url: str, name: str, count: int) -> None:
    """``count`` small messages in ``name`` (batches of 1000, one request each)."""
    queue = Queue(name, url=url)
    queue.purge()
    queue.put(*[SMALL_MESSAGE] * count)
    queue.close()


def _noop(message: Message) -> None:
    return None


def bare(url: str, name: str, count: int) -> float:
    """reserve() then ack() by hand: the baseline every loop below is measured against."""
    queue = Queue(name, url=url)
    done = 0
    began = time.monotonic()
    while done < count:
        message = queue.reserve()
        if message is None:
            break
        queue.ack(message)
        done += 1
    rate = done / (time.monotonic() - began)
    queue.close()
    return rate


def work(url: str, name: str, count: int, prefetch: int = 1, concurrency: int = 1) -> float:
    queue = Queue(name, url=url)
    began = time.monotonic()
    done = queue.work(_noop, limit=count, prefetch=prefetch, concurrency=concurrency, idle_timeout=5)
    rate = done / (time.monotonic() - began)
    queue.close()
    return rate


def consume(url: str, name: str, count: int) -> float:
    queue = Queue(name, url=url)
    done = 0
    began = time.monotonic()
    with queue.consume(ack=True, timeout=5) as values:
        for _ in values:
            done += 1
            if done == count:
                break
    rate = done / (time.monotonic() - began)
    queue.close()
    return rate


#: loop name -> measure(url, queue, count) -> messages/s
LOOPS: Dict[str, Callable[[str, str, int], float]] = {
    "bare": bare,
    "work": work,
    "work10": lambda url, name, count: work(url, name, count, prefetch=10),
    "work4": lambda url, name, count: work(url, name, count, concurrency=4),
    "consume": consume,
}
