"""Python clients of RestMQ's HTTP API, in the spirit of HotQueue, rq and the SQS SDK.

:class:`Queue` blocks, on the standard library alone::

    jobs = Queue("jobs", url="http://127.0.0.1:8888")
    jobs.put("one", "two")                 # several: one atomic batch request
    jobs.get(block=True, timeout=5)        # long-polls with wait=
    for job in jobs.consume(ack=True):     # competes with the other consumers
        ...
    jobs.work(handler, concurrency=4)      # reserve, run, ack; retries, dead letters

:class:`TxQueue` has the same methods for Twisted and returns Deferreds (it
needs treq: ``pip install restmq[twisted]``; importing it is deferred until it
is used, so the blocking client never imports Twisted). :class:`Broker` and
:class:`TxBroker` cover what spans queues (list, stats, health).
"""

from __future__ import annotations

from typing import Any

from restmq.client.blocking import Broker, Consumption, Queue
from restmq.client.core import (DEFAULT_URL, ClientError, ConnectionFailed, DeadLetter, Message,
                                RequestTimeout)

__all__ = ["Queue", "TxQueue", "Broker", "TxBroker", "Consumption", "TxConsumption", "Message",
           "DeadLetter", "ClientError", "ConnectionFailed", "RequestTimeout", "DEFAULT_URL"]

_TWISTED = ("TxQueue", "TxBroker", "TxConsumption")


def __getattr__(name: str) -> Any:
    if name in _TWISTED:
        from restmq.client import tx
        return getattr(tx, name)
    raise AttributeError("module 'restmq.client' has no attribute %r" % name)
