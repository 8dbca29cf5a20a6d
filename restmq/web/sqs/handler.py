"""SqsHandler: one Cyclone handler for every SQS request, in either wire protocol.

It tells the protocol apart, refuses what a browser page sent (Origin, Host),
checks the signature when the listener has credentials, runs the action and
renders its answer, or its error, in that protocol's shape.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import cyclone.web
from twisted.python.failure import Failure

from restmq.acl import Acl, SqsKeys
from restmq.errors import Forbidden
from restmq.web.base import BaseHandler, async_handler
from restmq.web.hosts import AllowedHosts
from restmq.web.http import parse_form
from restmq.web.sqs import codec
from restmq.web.sqs.actions import Call, SqsApi
from restmq.web.sqs.errors import SqsError, from_domain
from restmq.web.sqs.sigv4 import SignedRequest, verify

__all__ = ["SqsHandler", "RECEIVING_ACTIONS"]

_FORM = "application/x-www-form-urlencoded"
# actions that take messages out (rest:consumer); the others put in or manage (rest:producer)
RECEIVING_ACTIONS = ("ReceiveMessage", "DeleteMessage", "DeleteMessageBatch", "ChangeMessageVisibility",
                     "ChangeMessageVisibilityBatch", "GetQueueUrl", "GetQueueAttributes", "ListQueues",
                     "ListQueueTags", "ListDeadLetterSourceQueues", "ListMessageMoveTasks",
                     "StartMessageMoveTask", "CancelMessageMoveTask")


class SqsHandler(BaseHandler):
    """Every path of the SQS listener: ``POST /`` (JSON or query), ``POST|GET
    /<account>/<queue>`` (query)."""

    def initialize(self, context: Any, api: Optional[SqsApi] = None,
                   keys: Optional[SqsKeys] = None, hosts: Optional[AllowedHosts] = None) -> None:
        super().initialize(context)
        assert api is not None, "the route table hands every SqsHandler its api"
        self.api = api
        self.keys = keys or SqsKeys()
        self.hosts = hosts or AllowedHosts(("*",))
        self.protocol = "query"
        self.request_id = ""

    def prepare(self) -> None:
        # the checks below raise SqsError, answered by _handle_request_exception
        self.request_id = _request_id()
        headers = self.request.headers
        self.protocol = "json" if headers.get("X-Amz-Target") and \
            headers.get("Content-Type", "").startswith("application/x-amz-json") else "query"
        self._refuse_browsers()

    def _refuse_browsers(self) -> None:
        """A web page must not drive the broker through a visitor's browser: SDKs
        send no Origin, and the Host of a page that rebinds its DNS is its own."""
        origin = self.request.headers.get("Origin")
        allowed = self.config.server.allowed_origins
        if origin is not None and "*" not in allowed and origin not in allowed:
            raise SqsError("AccessDenied", "Requests from web pages (Origin %s) are refused; see "
                           "[server] allowed_origins." % origin[:200])
        if not self.hosts.allows(self.request.headers.get("Host")):
            raise SqsError("AccessDenied", "Host %s is not one of this broker's names; add it to "
                           "[sqs] allowed_hosts." % self.request.headers.get("Host", "")[:200])

    @async_handler
    async def post(self, *args: Any) -> None:
        await self._serve()

    @async_handler
    async def get(self, *args: Any) -> None:
        await self._serve()

    def head(self, *args: Any) -> None:
        raise SqsError("InvalidAction", "Send SQS actions with POST.")

    options = delete = head

    async def _serve(self) -> None:
        action, params = self._input()
        key = None
        if self.keys.enabled:
            key = verify(self._signed_request(), self.keys, self.context.clock.seconds(),
                         self.config.sqs.signature_max_age)
        self._check_rest_acl(action)
        call = Call(params=params, base_url="%s://%s" % (self.request.protocol, self.request.host),
                    path=self.request.path, key=key, on_gone=self._on_gone)
        result = await self.api.run(action, call)
        if self._finished:
            return
        if self.protocol == "json":
            self.set_header("Content-Type", codec.JSON_CONTENT_TYPE)
            self.set_header("x-amzn-RequestId", self.request_id)
            self.finish(codec.render_json(result))
        else:
            self.set_header("Content-Type", "text/xml")
            self.finish(codec.render_xml(action, result, self.request_id))

    def _input(self) -> Tuple[str, Dict[str, Any]]:
        request = self.request
        if self.protocol == "json":
            if request.method != "POST":
                raise SqsError("InvalidAction", "AWS JSON requests are POSTed.")
            target = request.headers.get("X-Amz-Target", "")
            prefix, _, action = target.partition(".")
            if prefix != "AmazonSQS" or not action:
                raise SqsError("InvalidAction", "X-Amz-Target must be AmazonSQS.<Action>.")
            return action, codec.parse_json(request.body)
        fields: Dict[str, str] = {}
        raw = parse_form(request.query.encode("ascii")) if request.query else {}
        if request.body and request.headers.get("Content-Type", "").startswith(_FORM):
            for name, values in parse_form(request.body).items():
                raw.setdefault(name, []).extend(values)
        for name, values in raw.items():
            try:
                fields[name] = values[-1].decode("utf-8")
            except UnicodeDecodeError:
                raise SqsError("MalformedQueryString", "Parameter %s is not UTF-8." % name[:100]) from None
        if "Action" not in fields:
            raise SqsError("MissingParameter" if not fields else "InvalidAction",
                           "The request must contain the parameter Action (or X-Amz-Target for "
                           "AWS JSON 1.0).")
        return codec.parse_query(fields)

    def _signed_request(self) -> SignedRequest:
        request = self.request
        headers: List[Tuple[str, str]] = []
        for name, values in request.headers._as_list.items():
            headers.extend((name, value) for value in values)
        return SignedRequest(request.method, request.path, request.query, headers, request.body)

    def _check_rest_acl(self, action: str) -> None:
        """The address rules of the REST ACL hold on this listener too (its
        credentials are the SQS access keys, checked by signature)."""
        acl: Acl = self.context.acl
        category = "rest:consumer" if action in RECEIVING_ACTIONS else "rest:producer"
        try:
            acl.check_address(category, self.request.remote_ip)
        except Forbidden as exc:
            raise SqsError("AccessDenied", exc.message) from None

    def _on_gone(self, callback: Callable[[], None]) -> None:
        self.notifyFinish().addBoth(lambda _: callback())

    # errors in SQS's shapes

    def _handle_request_exception(self, error: Any) -> None:
        exc = error.value if isinstance(error, Failure) else error
        sqs_error = from_domain(exc)
        if sqs_error is None and isinstance(exc, cyclone.web.HTTPError):
            sqs_error = SqsError("InvalidAction", exc.log_message or "bad request")
        if sqs_error is None:
            failure = error if isinstance(error, Failure) else Failure(exc)
            self.log.failure("Unhandled error in SQS {method} {uri}", failure,
                             method=self.request.method, uri=self.request.path)
            sqs_error = SqsError("InternalFailure", "internal error (see the broker's log)")
        self._send_sqs_error(sqs_error)

    def _send_sqs_error(self, error: SqsError) -> None:
        if self._finished:
            return
        self.clear()
        self.set_status(error.status)
        self.set_header("x-amzn-RequestId", self.request_id or _request_id())
        if self.protocol == "json":
            body, headers = codec.render_json_error(error)
            self.set_header("Content-Type", codec.JSON_CONTENT_TYPE)
            for name, value in headers.items():
                self.set_header(name, value)
        else:
            body = codec.render_xml_error(error, self.request_id)
            self.set_header("Content-Type", "text/xml")
        self.finish(body)


def _request_id() -> str:
    raw = os.urandom(16).hex()
    return "%s-%s-%s-%s-%s" % (raw[:8], raw[8:12], raw[12:16], raw[16:20], raw[20:])
