"""Browser consumers in a real headless Chromium: EventSource, WebSocket, long-poll, JSONP."""

from __future__ import annotations

import json
import os
import sys

import cyclone.web
import pytest_twisted
from twisted.internet import utils

from tests.helpers import start_app, stop_app

HERE = os.path.dirname(os.path.abspath(__file__))

PAGE = r"""
window.results = {sse: [], ws: [], poll: [], jsonp: [], errors: []};
window.done = false;
function got(message) { results.jsonp.push(message); }
const wanted = 3;
function check() {
  if (results.sse.length >= wanted && results.ws.length >= wanted &&
      results.poll.length >= 2 && results.jsonp.length >= 1) { window.done = true; }
}
async function publish(queue, value) {
  const body = new URLSearchParams({value: value});
  const response = await fetch('/q/' + queue, {method: 'POST', body: body});
  if (response.status !== 200) results.errors.push('publish ' + response.status);
}
let opened = 0;
async function whenBothOpen() {
  opened += 1;
  if (opened < 2) return;
  for (const v of ['one', 'two', 'three']) await publish('browser', v);
  await publish('browser-poll', 'p1');
  await publish('browser-poll', 'p2');
  await publish('browser-jsonp', 'j1');
  const tag = document.createElement('script');
  tag.src = '/q/browser-jsonp?callback=got';
  tag.onload = check;
  document.body.appendChild(tag);
}
const source = new EventSource('/c/browser');
source.onopen = whenBothOpen;
source.onmessage = (e) => {
  results.sse.push({id: e.lastEventId, value: JSON.parse(e.data).value});
  check();
};
source.onerror = () => results.errors.push('eventsource error');
const socket = new WebSocket('ws://' + location.host + '/ws/browser');
socket.onopen = whenBothOpen;
socket.onmessage = (e) => { results.ws.push(JSON.parse(e.data).value); check(); };
async function longPoll() {
  while (results.poll.length < 2) {
    const response = await fetch('/q/browser-poll?wait=10');
    if (response.status === 200) results.poll.push((await response.json()).value);
  }
  check();
}
longPoll();
"""


class PageHandler(cyclone.web.RequestHandler):
    """Serves the test page from the broker's own origin."""

    def get(self) -> None:
        self.finish("<!doctype html><html><body><script>%s</script></body></html>" % PAGE)


@pytest_twisted.async_yield_fixture()
async def page_app(redis, redis_server):
    running = await start_app(redis_server.target, extra_routes=((r"/__test__", PageHandler),))
    yield running
    await stop_app(running)


@pytest_twisted.ensureDeferred
async def test_browser_clients_receive_what_is_published(page_app):
    out, err, code = await utils.getProcessOutputAndValue(
        sys.executable, [os.path.join(HERE, "browser_page.py"), page_app.url + "/__test__"],
        env=dict(os.environ), path=os.path.dirname(HERE))
    assert code == 0, (out.decode()[-2000:], err.decode()[-1000:])
    results = json.loads(out.decode().strip().splitlines()[-1])
    assert results["errors"] == []
    assert results["sse"] == [{"id": "browser:1", "value": "one"}, {"id": "browser:2", "value": "two"},
                              {"id": "browser:3", "value": "three"}]
    assert results["ws"] == ["one", "two", "three"]
    assert results["poll"] == ["p1", "p2"]
    assert results["jsonp"] == [{"key": "browser-jsonp:1", "value": "j1", "count": 0}]
