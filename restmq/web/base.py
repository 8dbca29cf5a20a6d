"""BaseHandler: JSON in and out, the error format, ACL checks, the async adapter."""

from __future__ import annotations

import base64
import binascii
import functools
import re
import time
from email.utils import formatdate
from typing import Any, Callable, Coroutine, Dict, List, Optional, Tuple, Union, overload

import attr
import cyclone.web
import orjson
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from restmq import __version__
from restmq.acl import Acl, Credentials
from restmq.config import Config
from restmq.errors import AddressDenied, BadRequest, Forbidden, MessageTooLarge, RestMQError, Unauthorized
from restmq.web.errors import status_for
from restmq.web.hosts import AllowedHosts
from restmq.web.http import ChunkedTransferEncoding

__all__ = ["Context", "BaseHandler", "async_handler", "JSONP_CALLBACK"]

JSONP_CALLBACK = re.compile(r"[A-Za-z_$][\w$.]{0,63}\Z", re.ASCII)


@attr.s(frozen=True, auto_attribs=True)
class Context:
    """What handlers need, handed to them through the route table."""

    store: Any
    dispatcher: Any
    acl: Acl
    config: Config
    clock: Any
    metrics: Any = None
    #: the embedded redis-server's supervisor (restmq.server.redisproc.EmbeddedRedis), if any
    embedded: Any = None


def async_handler(method: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., defer.Deferred]:
    """Let Cyclone run an ``async def`` handler method (it only understands Deferreds)."""

    @functools.wraps(method)
    def wrapper(self, *args: Any, **kwargs: Any) -> defer.Deferred:
        return defer.ensureDeferred(method(self, *args, **kwargs))

    return wrapper


_SERVER = "RestMQ/%s" % __version__
_date_cache: List[Any] = [0, ""]


def _http_date() -> str:
    """The Date header, formatted once per second rather than once per response."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = formatdate(now, usegmt=True)
    return _date_cache[1]


class BaseHandler(cyclone.web.RequestHandler):
    """Parses arguments strictly, checks the ACL, renders JSON and JSON errors.

    ``acl_categories`` maps HTTP method -> ACL category (or a tuple of categories,
    all required); every route has one. HEAD takes GET's. A handler whose category
    depends on the request body (``/queue``) calls :meth:`check_acl` itself.

    Cyclone's per-request set-up (template UI modules, a Deferred per phase, a
    formatted date) cost more than the broker's own work; ``__init__``,
    ``clear`` and ``_execute`` below keep its behaviour without that weight.
    """

    log = Logger()
    SUPPORTED_METHODS = ("GET", "POST", "DELETE", "OPTIONS", "HEAD")
    acl_categories: Dict[str, Union[str, Tuple[str, ...]]] = {}

    def __init__(self, application: Any, request: Any, **kwargs: Any) -> None:
        self.application = application
        self.request = request
        self._headers_written = False
        self._finished = False
        self._auto_finish = True
        self._transforms = None
        self.path_args: Optional[List[Any]] = None
        self.path_kwargs: Optional[Dict[str, Any]] = None
        self.clear()
        self.initialize(**kwargs)

    def initialize(self, context: Context) -> None:
        self.context = context
        self.store = context.store
        self.config = context.config

    def clear(self) -> None:
        self._headers = {"Server": _SERVER, "Content-Type": "application/json", "Date": _http_date()}
        self._list_headers: List[Tuple[str, str]] = []
        if not self.request.supports_http_1_1() and self.request.headers.get("Connection") == "Keep-Alive":
            self._headers["Connection"] = "Keep-Alive"
        self._write_buffer: List[bytes] = []
        self._status_code = 200
        self._reason = "OK"

    def _execute(self, transforms: Any, *args: Any, **kwargs: Any) -> None:
        self._transforms = transforms
        try:
            method = self.request.method
            if method not in self.SUPPORTED_METHODS:
                raise cyclone.web.HTTPError(405, "%s is not served here" % method)
            self.path_args = list(args)
            self.prepare()
            handler = getattr(self, method.lower(), None)
            if handler is None:
                raise cyclone.web.HTTPError(405, "%s is not served on %s" % (method, self.request.path))
            result = handler(*args)
        except Exception:
            self._handle_request_exception(Failure())
            return
        if isinstance(result, defer.Deferred):
            result.addCallbacks(self._execute_success, self._execute_failure)
        elif self._auto_finish and not self._finished:
            self.finish()

    def compute_etag(self) -> None:
        # a pop must never be answered 304 because an earlier pop looked alike
        return None

    def finish(self, chunk: Any = None) -> None:
        """Cyclone's ``finish`` for the usual response, written whole at once: the
        same bytes (status line, headers, Content-Length, body) without its
        generic detours (transforms, per-header encoding, ETag). Anything else
        (a HEAD, a stream already started, a dict) takes Cyclone's own path."""
        transforms = self._transforms or ()
        if self._finished or self._headers_written or self._status_code == 304 \
                or self.request.method == "HEAD" or (chunk is not None and type(chunk) is not bytes) \
                or len(transforms) != 1 or type(transforms[0]) is not ChunkedTransferEncoding:
            return super().finish(chunk)
        buffered = self._write_buffer
        body = chunk if not buffered else b"".join(buffered) + (chunk or b"")
        body = body or b""
        self._write_buffer = []
        headers = self._headers
        if "Content-Length" not in headers:
            headers["Content-Length"] = str(len(body))
        lines = ["%s %d %s" % (self.request.version, self._status_code, self._reason)]
        lines += ["%s: %s" % item for item in headers.items()]
        lines += ["%s: %s" % item for item in self._list_headers]
        self._headers_written = True
        self.request.connection.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body)
        self.request.finish()
        self._log()
        self._finished = True
        self.on_finish()

    # access control

    def origin_allowed(self) -> bool:
        """No Origin (not a browser), one in ``allowed_origins``, or the broker's own:
        the allow-listed Host this request was sent to (HTTPConnection refused any
        other Host with 421, so a rebinding page's own name never gets here)."""
        origin = self.request.headers.get("Origin")
        if origin is None:
            return True
        allowed = self.config.server.allowed_origins
        if "*" in allowed or origin in allowed:
            return True
        return AllowedHosts.same_origin(origin, self.request.headers.get("Host"))

    def prepare(self) -> None:
        if self.request.method in ("POST", "DELETE") and not self.origin_allowed():
            # a page elsewhere must not act with a visitor's credentials (CSRF)
            raise Forbidden("origin %s may not change this broker (see allowed_origins)"
                            % self.request.headers.get("Origin"))
        method = self.request.method
        category = self.acl_categories.get(method)
        if category is None and method == "HEAD":
            category = self.acl_categories.get("GET")
        if category is not None:
            self.check_acl(category)
        # refuse an unsafe callback before anything is popped
        self.jsonp_callback()

    def check_acl(self, category: Union[str, Tuple[str, ...]]) -> None:
        """:raises Forbidden, Unauthorized: unless the request passes ``category``
        (every one of them, for a tuple)."""
        acl = self.context.acl
        if not acl.enabled:
            return
        credentials = self.credentials()
        for name in (category,) if isinstance(category, str) else category:
            acl.check(name, self.request.remote_ip, credentials)

    def credentials(self) -> Credentials:
        username = password = token = None
        header = self.request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise Unauthorized("malformed Basic credentials") from None
            username, _, password = decoded.partition(":")
        elif scheme.lower() == "bearer":
            token = value.strip()
        if token is None:
            token = self.argument("token")
        return Credentials(username, password, token)

    # input

    def arguments(self, name: str) -> List[str]:
        """Every value of a query or form field, decoded as strict UTF-8, exact."""
        raw = getattr(self.request, "raw_arguments", {}).get(name)
        if not raw:
            return []
        try:
            return [value.decode("utf-8") for value in raw]
        except UnicodeDecodeError:
            raise BadRequest("field %r is not valid UTF-8" % name) from None

    def argument(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The last value of a field, or ``default``."""
        if not getattr(self.request, "raw_arguments", {}).get(name):
            return default  # most fields are absent from most requests
        return self.arguments(name)[-1]

    def required(self, name: str) -> str:
        value = self.argument(name)
        if value is None:
            raise BadRequest("missing field %r" % name)
        return value

    @overload
    def number(self, name: str, default: float, low: float = 0,
               high: Optional[float] = None, integer: bool = False) -> float: ...

    @overload
    def number(self, name: str, default: None = None, low: float = 0,
               high: Optional[float] = None, integer: bool = False) -> Optional[float]: ...

    def number(self, name: str, default: Optional[float] = None, low: float = 0,
               high: Optional[float] = None, integer: bool = False) -> Optional[float]:
        """A numeric field within [low, high]; ``default`` when absent."""
        text = self.argument(name)
        if text is None or text == "":
            return default
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise BadRequest("field %r must be a number" % name) from None
        if value != value or value < low or (high is not None and value > high):
            raise BadRequest("field %r must be between %s and %s" % (name, low, high))
        return value

    def message_body(self, value: str) -> str:
        """:raises MessageTooLarge: over max_message_bytes."""
        limit = self.config.server.max_message_bytes
        if len(value) > limit // 4 and len(value.encode("utf-8")) > limit:
            raise MessageTooLarge("message larger than %d bytes" % limit)
        return value

    def json_body(self) -> Any:
        """The request body parsed as JSON. :raises BadRequest: when it is not."""
        try:
            return orjson.loads(self.request.body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest("malformed JSON: %s" % exc) from None

    def is_json_request(self) -> bool:
        return self.request.headers.get("Content-Type", "").startswith("application/json")

    def jsonp_callback(self) -> Optional[str]:
        """The JSONP callback name, if any. ``?`` is what jQuery leaves in a URL it
        does not treat as JSONP (the original's dashboard posted so): accepted, and
        answered as text, never as script."""
        callback = self.argument("callback")
        if callback is not None and callback != "?" and not JSONP_CALLBACK.match(callback):
            raise BadRequest("unsafe JSONP callback name")
        return callback

    # content negotiation: the original's answers unless the client asks for JSON

    def wants_json(self) -> bool:
        """Does the client ask for this broker's JSON answers (``Accept:
        application/json`` and nothing else, as restmq.client and the dashboard
        send)? Everyone else, old clients and jQuery's ``*/*`` lists included, gets
        the original's answers."""
        accept = self.request.headers.get("Accept", "")
        if "application/json" not in accept:
            return False
        return all(part.split(";", 1)[0].strip().lower() == "application/json"
                   for part in accept.split(",") if part.strip())

    def wants_html(self) -> bool:
        """A browser navigating here (its Accept names text/html)."""
        return "text/html" in self.request.headers.get("Accept", "")

    # output

    def respond(self, payload: Any, status: int = 200) -> None:
        """Write ``payload`` as JSON (wrapped in the JSONP callback if one was asked)."""
        self.set_status(status)
        body = orjson.dumps(payload)
        callback = self.jsonp_callback()
        if callback:
            body = self._jsonp(callback, body, b";")
        self.finish(body)

    def respond_original(self, payload: Any, content_type: str = "text/plain; charset=utf-8",
                         terminator: bytes = b"\r\n", status: int = 200) -> None:
        """Answer as the original did: ``payload`` (JSON, or a str written as is)
        then ``terminator``, as ``content_type``. The original wrote most answers as
        strings (served as text/html); they are text/plain here, with nosniff, so a
        message body can never run as a page of the broker's origin."""
        self.set_status(status)
        body = payload.encode("utf-8") if isinstance(payload, str) else orjson.dumps(payload)
        callback = self.jsonp_callback()
        if callback:
            self.finish(self._jsonp(callback, orjson.dumps(payload), b";" + terminator))
            return
        # constant values of this module's callers: set_header's checks would find nothing
        self._headers["Content-Type"] = content_type
        if content_type.startswith("text/"):
            self._headers["X-Content-Type-Options"] = "nosniff"
        self.finish(body + terminator)

    def _jsonp(self, callback: str, body: bytes, end: bytes) -> bytes:
        if callback == "?":
            # not a function name: a page's script must not run it
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.set_header("X-Content-Type-Options", "nosniff")
        else:
            self.set_header("Content-Type", "application/javascript")
        return b"%s(%s)%s" % (callback.encode(), body, end)

    def respond_text(self, text: str, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(text.encode("utf-8"))

    def respond_html(self, page: str, status: int = 200) -> None:
        """A page for browsers: no script, nothing loaded from elsewhere."""
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy",
                        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(page.encode("utf-8"))

    def no_content(self) -> None:
        self.set_status(204)
        self.clear_header("Content-Type")
        self.finish()

    # errors

    def _handle_request_exception(self, error: Any) -> None:
        exc = error.value if isinstance(error, Failure) else error
        if isinstance(exc, cyclone.web.HTTPError):
            status = exc.status_code
            code = {404: "not_found", 405: "method_not_allowed"}.get(status, "bad_request")
            if status >= 500:
                code = "internal_error"
            if status == 405:
                # RFC 9110: a 405 names the methods the route does serve
                self.set_header("Allow", ", ".join(self.allowed_methods()))
            self._send_json_error(status, code, exc.log_message or self._reason_for(status))
            return
        status, code = status_for(exc)
        if isinstance(exc, AddressDenied) and not self.wants_json():
            # the original answered 401 to an address its ACL refuses
            status = 401
        if status == 500:
            failure = error if isinstance(error, Failure) else Failure(exc)
            self.log.failure("Unhandled error in {method} {uri}", failure,
                             method=self.request.method, uri=self.request.path)
            message = "internal error (see the broker's log)"
        else:
            message = exc.message if isinstance(exc, RestMQError) else str(exc)
        if isinstance(exc, Unauthorized):
            self.set_header("WWW-Authenticate", self._challenge(exc.realm))
        self._send_json_error(status, code, message)

    def _challenge(self, realm: str) -> str:
        """Basic, unless the request presented a token: then RFC 6750's Bearer
        challenge, which browsers do not answer with a password prompt (the
        dashboard, holding a token, shows the refusal instead)."""
        header = self.request.headers.get("Authorization", "")
        if header[:7].lower() == "bearer " or "token" in getattr(self.request, "raw_arguments", {}):
            return 'Bearer realm="%s", error="invalid_token"' % realm
        return 'Basic realm="%s"' % realm

    def allowed_methods(self) -> List[str]:
        """The methods this handler implements (Cyclone's defaults answer 405)."""
        base = cyclone.web.RequestHandler
        return [method for method in self.SUPPORTED_METHODS
                if getattr(type(self), method.lower(), None) is not getattr(base, method.lower(), None)]

    @staticmethod
    def _reason_for(status: int) -> str:
        from http import HTTPStatus
        try:
            return HTTPStatus(status).phrase
        except ValueError:
            return "error"

    def _send_json_error(self, status: int, code: str, message: str) -> None:
        if self._finished:
            return
        if self._headers_written:
            # a stream already started: all we can do is end it
            self.finish()
            return
        kept = {name: self._headers[name] for name in ("WWW-Authenticate", "Allow") if name in self._headers}
        self.clear()
        for name, value in kept.items():
            self.set_header(name, value)
        self.set_status(status)
        self.finish(orjson.dumps({"error": {"code": code, "message": message}}))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish(orjson.dumps({"error": {"code": "error", "message": self._reason_for(status_code)}}))


class NotFoundHandler(BaseHandler):
    """Every path no route matches."""

    def prepare(self) -> None:
        raise cyclone.web.HTTPError(404, "no route for %s" % self.request.path)
