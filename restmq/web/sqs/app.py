"""make_sqs_app: the SQS listener's Cyclone application (one handler for every path)."""

from __future__ import annotations

from typing import Optional

from restmq.acl import SqsKeys
from restmq.storage.sqs import SqsStore
from restmq.web.app import RestMQApplication, _request_logger
from restmq.web.base import Context
from restmq.web.hosts import AllowedHosts
from restmq.web.http import ChunkedTransferEncoding, ConnectionLimiter, HttpLimits
from restmq.web.sqs.actions import SqsApi
from restmq.web.sqs.handler import SqsHandler

__all__ = ["make_sqs_app"]


def make_sqs_app(context: Context, keys: Optional[SqsKeys] = None) -> RestMQApplication:
    """The SQS API over ``context``'s store and dispatcher.

    :param keys: the access keys of ``[sqs] credentials`` (none: any signature,
        or none, is accepted, as ElasticMQ does).
    """
    server, sqs = context.config.server, context.config.sqs
    keys = keys or SqsKeys()
    # a batch holds at most max_message_bytes of bodies; JSON may escape each
    # character into six
    request_bytes = min(server.max_request_bytes, 6 * sqs.max_message_bytes + 64 * 1024)
    limits = HttpLimits(max_request_bytes=request_bytes, max_header_bytes=server.max_header_bytes,
                        request_timeout=server.request_timeout, idle_timeout=server.idle_timeout,
                        header_timeout=server.header_timeout, max_output_bytes=server.max_output_bytes)
    api = SqsApi(SqsStore(context.store), context.dispatcher, context.clock, context.config,
                 context.metrics)
    # the Host is checked by the handler, which answers in SQS's error shape; with
    # access keys the signature covers the Host, so any name may be used
    hosts = AllowedHosts(("*",) if keys.enabled else sqs.allowed_hosts, sqs.listen)
    table = [(r"/.*", SqsHandler, {"context": context, "api": api, "keys": keys, "hosts": hosts})]
    app = RestMQApplication(
        table, transforms=[ChunkedTransferEncoding], http_limits=limits, clock=context.clock,
        xheaders=server.xheaders, allowed_hosts=AllowedHosts(("*",)),
        log_function=_request_logger(server.access_log, context.metrics, table))
    app.limiter = ConnectionLimiter(server.max_connections, server.max_connections_per_ip, context.clock)
    return app
