"""Python clients of RestMQ's HTTP API, in the spirit of HotQueue.

:class:`Queue` blocks, on the standard library alone::

    jobs = Queue("jobs", url="http://127.0.0.1:8888")
    jobs.put("one", "two")                 # several: one atomic batch request
    jobs.get(block=True, timeout=5)        # long-polls with wait=
    for message in jobs.consume():         # a Server-Sent Events stream
        ...

:class:`TxQueue` has the same methods for Twisted and returns Deferreds (it
needs treq: ``pip install restmq[twisted]``). :class:`Broker` and
:class:`TxBroker` cover what spans queues (list, stats, health).
"""

from restmq.client.blocking import Broker, Queue
from restmq.client.core import DEFAULT_URL, ClientError, Message
from restmq.client.tx import TxBroker, TxQueue

__all__ = ["Queue", "TxQueue", "Broker", "TxBroker", "Message", "ClientError", "DEFAULT_URL"]
