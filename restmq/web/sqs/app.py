"""make_sqs_app: the SQS listener's Cyclone application (one handler for every path)."""

from __future__ import annotations

from typing import Optional

from restmq.acl import SqsKeys
from restmq.storage.sqs import SqsStore
from restmq.web.app import RestMQApplication, _request_logger
from restmq.web.base import Context
from restmq.web.http import ChunkedTransferEncoding, HttpLimits
from restmq.web.sqs.actions import SqsApi
from restmq.web.sqs.handler import SqsHandler

__all__ = ["make_sqs_app"]


def make_sqs_app(context: Context, keys: Optional[SqsKeys] = None) -> RestMQApplication:
    """The SQS API over ``context``'s store and dispatcher.

    :param keys: the access keys of ``[sqs] credentials`` (none: any signature,
        or none, is accepted, as ElasticMQ does).
    """
    server, sqs = context.config.server, context.config.sqs
    # a batch holds at most max_message_bytes of bodies; JSON may escape each
    # character into six
    request_bytes = min(server.max_request_bytes, 6 * sqs.max_message_bytes + 64 * 1024)
    limits = HttpLimits(max_request_bytes=request_bytes, max_header_bytes=server.max_header_bytes,
                        request_timeout=server.request_timeout, idle_timeout=server.idle_timeout)
    api = SqsApi(SqsStore(context.store), context.dispatcher, context.clock, context.config,
                 context.metrics)
    table = [(r"/.*", SqsHandler, {"context": context, "api": api, "keys": keys or SqsKeys()})]
    return RestMQApplication(
        table, transforms=[ChunkedTransferEncoding], http_limits=limits, clock=context.clock,
        xheaders=server.xheaders, log_function=_request_logger(server.access_log, context.metrics, table))
