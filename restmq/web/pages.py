"""The small HTML pages the original served to browsers (queue list, job view, the
JSON command form), and the redirects from where its own pages used to be.

Everything shown is escaped; the pages carry no script (base.respond_html sends a
Content-Security-Policy that allows none).
"""

from __future__ import annotations

import html
import urllib.parse
from typing import Dict, List, Sequence

import orjson

from restmq.web.base import BaseHandler

__all__ = ["MovedHandler", "queue_list", "jobs", "protocol_form"]

_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:60em}"
          "pre,textarea{font-family:monospace}textarea{width:100%}"
          "td,th{padding:.2em .8em;text-align:left;vertical-align:top}")


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>%s</title>"
            "<style>%s</style></head>\n<body>\n%s\n</body></html>\n" % (html.escape(title), _STYLE, body))


def _link(prefix: str, queue: str) -> str:
    """A relative link to /<prefix>/<queue> from a page one level below the root."""
    return "../%s/%s" % (prefix, urllib.parse.quote(queue, safe=""))


def queue_list(names: Sequence[str]) -> str:
    """GET /q/ for a browser: every queue, linked to its job view (a link to /q/<q>
    would pop a message when followed)."""
    items = "\n".join('<li><a href="%s">%s</a></li>' % (html.escape(_link("j", name)), html.escape(name))
                      for name in names)
    return _page("RestMQ queues", "<h1>Queues</h1>\n<p>%d queue(s); JSON at this address with "
                 "<code>Accept: application/json</code>.</p>\n<ul>\n%s\n</ul>" % (len(names), items))


def jobs(queue: str, length: int, messages: List[Dict[str, str]]) -> str:
    """GET /j/<q> for a browser: the length and the newest waiting messages."""
    rows = "\n".join("<tr><td>%s</td><td><pre>%s</pre></td></tr>"
                     % (html.escape(m["key"]), html.escape(m["value"])) for m in messages)
    return _page("jobs in queue %s" % queue,
                 "<h1>Queue %s</h1>\n<p>waiting messages: %d</p>\n<p>newest %d:</p>\n"
                 "<table>\n<tr><th>key</th><th>value</th></tr>\n%s\n</table>"
                 % (html.escape(queue), length, len(messages), rows))


_EXAMPLES = (
    ("Add", {"cmd": "add", "queue": "test", "value": "oi"}),
    ("Get", {"cmd": "get", "queue": "test"}),
    ("Del", {"cmd": "del", "queue": "test", "key": "test:1"}),
    ("Take", {"cmd": "take", "queue": "test"}),
)


def protocol_form() -> str:
    """GET /queue for a browser: the original's JSON command form."""
    examples = "\n".join("<h2>%s <small>example</small></h2>\n<pre>%s</pre>"
                         % (name, html.escape(orjson.dumps(command, option=orjson.OPT_INDENT_2).decode()))
                         for name, command in _EXAMPLES)
    return _page("JSON command form",
                 "<h1>JSON command form</h1>\n<form method=\"POST\" action=\"queue\">\n"
                 "<label for=\"body\">Command:</label>\n"
                 "<textarea id=\"body\" name=\"body\" rows=\"8\"></textarea>\n"
                 "<p><input type=\"submit\" value=\"Send\"></p>\n</form>\n<hr>\n%s" % examples)


class MovedHandler(BaseHandler):
    """Where the original's static pages were: a redirect to what replaced them."""

    def initialize(self, context, location: str) -> None:  # type: ignore[override]
        super().initialize(context)
        self.location = location

    def get(self, *args: str) -> None:
        self.set_status(302)
        self.clear_header("Content-Type")
        self.set_header("Location", self.location)
        self.finish()
