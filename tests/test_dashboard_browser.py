"""The dashboard in a real headless Chromium (Debian's, driven by playwright)
against the running broker on a real Redis: it follows the queues live over the
broker's own SSE, its queue view shows the next messages, dead letters with their
reasons, settings and consumers, and its actions really change Redis. Each
action's result or error stays on the page until it is dismissed."""

from __future__ import annotations

import json
import os
import textwrap
import time
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, List, Sequence

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread, deferToThread

from restmq.acl import load_acl
from tests.browser_page import CHROMIUM_ARGS
from tests.helpers import sleep, start_app, stop_app, wait_until
from tests.streaming import Stream

CHROMIUM = "/usr/bin/chromium"
# snapshots come every second; this only bounds a broken page, it measures nothing
UPDATE_TIMEOUT_MS = 10000


def _post(url: str, **fields: str) -> Dict[str, Any]:
    """A publish from the browser's thread (never from the reactor's)."""
    data = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(url, data=data, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _in_browser(drive: Callable[[Any], None], allowed: Sequence[str] = (), **context: Any) -> List[str]:
    """Open a page in Chromium, run ``drive(page)`` (in a thread: the reactor serves
    meanwhile) and return the page's errors, but for console lines containing one of
    ``allowed`` (the refused requests a test makes on purpose)."""
    from playwright.sync_api import sync_playwright

    errors: List[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            options = dict({"viewport": {"width": 1200, "height": 800}}, **context)
            page = browser.new_context(**options).new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: message.type == "error" and not any(
                text in message.text for text in allowed) and errors.append(message.text))
            drive(page)
        finally:
            browser.close()
    return errors


def _redis(method: Callable[..., Any], *args: Any) -> Any:
    """A Redis call from the browser's thread, on the test's own connection."""
    return blockingCallFromThread(reactor, method, *args)


def _wait_for_snapshots(page: Any, count: int) -> None:
    """Let ``count`` more snapshots reach the page (each one rewrites #updated)."""
    from playwright.sync_api import expect
    for _ in range(count):
        before = page.locator("#updated").text_content()
        expect(page.locator("#updated")).not_to_have_text(before, timeout=UPDATE_TIMEOUT_MS)


def _open_queue(page: Any, base: str, queue: str) -> None:
    page.goto(base + "/dashboard/#" + urllib.parse.urlencode({"queue": queue}))
    from playwright.sync_api import expect
    expect(page.locator("#live")).to_have_text("live", timeout=UPDATE_TIMEOUT_MS)
    expect(page.locator("#detail-name")).to_have_text(queue)


async def _publish(app, queue: str, *values: str) -> None:
    for value in values:
        assert (await app.post("/q/" + queue, data={"value": value})).code == 200


async def _json(response) -> Any:
    return json.loads(await response.text())


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_dashboard_is_live_and_its_queue_view_and_toggles_act(app, redis, tmp_path):
    await _publish(app, "browser-jobs", *["job %d" % n for n in range(1, 26)])
    await _publish(app, "browser-idle", "x")
    consumer = await Stream.open(app.port, "/sse/browser-acked?ack=1&prefetch=5")
    await wait_until(lambda: app.dispatcher.consumers("browser-acked"))
    screenshot = os.environ.get("RESTMQ_DASHBOARD_SCREENSHOT") or str(tmp_path / "dashboard.png")
    base = app.url

    def drive(page: Any) -> None:
        from playwright.sync_api import expect
        page.goto(base + "/")  # redirects to the dashboard
        assert page.url == base + "/dashboard/"
        expect(page.locator("#live")).to_have_text("live", timeout=UPDATE_TIMEOUT_MS)
        row = page.locator('tr[data-queue="browser-jobs"]')
        expect(row.locator("td.depth")).to_have_text("25", timeout=UPDATE_TIMEOUT_MS)
        expect(row.locator("td.status span")).to_have_text("started")

        # publishes show up with the next snapshots, and so do their rates
        for round_ in range(3):
            for n in range(5):
                _post(base + "/q/browser-acked", value="acked %d.%d" % (round_, n))
            _wait_for_snapshots(page, 1)
        rate = page.locator('tr[data-queue="browser-acked"] td.in')
        expect(rate).to_be_visible()  # a negated check alone passes when the cell is missing
        expect(rate).not_to_have_text("0.0")
        assert page.locator("#broker-chart path.published").get_attribute("d").count("L") >= 1
        expect(page.locator("#memory-used")).to_contain_text("B")

        # the queue view: the next messages, oldest first, twenty a page
        row.locator("td.name a").click()
        expect(page.locator("#detail-name")).to_have_text("browser-jobs")
        messages = page.locator("#messages tbody tr")
        expect(messages).to_have_count(20, timeout=UPDATE_TIMEOUT_MS)
        expect(messages.first.locator("td.key")).to_have_text("browser-jobs:1")
        expect(messages.first.locator("td.value")).to_have_text("job 1")
        expect(page.locator("#page-range")).to_have_text("1–20 of 25")
        page.click("#page-next")
        expect(page.locator("#page-range")).to_have_text("21–25 of 25", timeout=UPDATE_TIMEOUT_MS)
        expect(messages.first.locator("td.key")).to_have_text("browser-jobs:21")
        # browsing took nothing
        assert _redis(redis.llen, "browser-jobs:queue") == 25

        # the toggles act on the broker; the page shows what it answered, and keeps it
        row.locator(".status-toggle").click()
        expect(row.locator("td.status span")).to_have_text("stopped", timeout=UPDATE_TIMEOUT_MS)
        expect(row.locator(".status-toggle")).to_have_text("Resume")
        expect(page.locator("#overview-notices .notice.ok")).to_contain_text("Paused browser-jobs")
        row.locator(".policy-toggle").click()
        expect(row.locator("td.policy span")).to_have_text("roundrobin", timeout=UPDATE_TIMEOUT_MS)
        expect(page.locator("#d-policy")).to_have_text("roundrobin")

        # the consumers of a queue: transport, address, since, unacked / prefetch
        page.locator('tr[data-queue="browser-acked"] td.name a').click()
        consumers = page.locator("#consumers tbody tr")
        expect(consumers).to_have_count(1, timeout=UPDATE_TIMEOUT_MS)
        expect(consumers.first.locator("td.transport")).to_have_text("sse (acked)")
        expect(consumers.first.locator("td.remote")).to_have_text("127.0.0.1")
        expect(consumers.first.locator("td.prefetch")).to_have_text("5 / 5", timeout=UPDATE_TIMEOUT_MS)
        assert page.locator("#queue-chart path.delivered").get_attribute("d") != ""

        # a queue made after the page opened appears, and the filter hides the others
        _post(base + "/q/browser-later", value="x")
        expect(page.locator('tr[data-queue="browser-later"]')).to_be_visible(timeout=UPDATE_TIMEOUT_MS)
        page.fill("#filter", "later")
        expect(row).to_be_hidden()
        page.fill("#filter", "")
        expect(row).to_be_visible()
        page.screenshot(path=screenshot, full_page=True)

    try:
        errors = await deferToThread(_in_browser, drive)
    finally:
        consumer.close()
    assert errors == []
    assert os.path.getsize(screenshot) > 0
    # the pause is real: Redis has the queue stopped, /control says so
    assert await redis.get("queuestat::browser-jobs") == "0"
    control = await _json(await app.get("/control/browser-jobs"))
    assert control == {"queue": "browser-jobs", "status": "stopped"}
    assert (await _json(await app.get("/p/browser-jobs")))["value"] == "roundrobin"


async def _stats_until(app, queue: str, check: Callable[[Dict[str, Any]], bool]) -> Dict[str, Any]:
    """Ask /stats/<queue> until ``check`` holds (each ask is a real request; 10 s at most)."""
    deadline = time.monotonic() + 10
    while True:
        stats = await _json(await app.get("/stats/" + queue))
        if check(stats):
            return stats
        if time.monotonic() > deadline:
            raise AssertionError("stats of %s never came to pass: %r" % (queue, stats))
        await sleep(0.02)


async def _dead_letters(app, redis) -> None:
    """mail:dead holds three dead letters: one nacked twice, one whose leases ran out
    twice, and one another broker wrote with a reason of its own."""
    assert (await app.post("/settings/mail", data={"max_receives": "2"})).code == 200
    await _publish(app, "mail", "to ada", "to bob")
    for _ in range(2):
        leased = await _json(await app.get("/q/mail", params={"reserve": "30"}))
        assert leased["key"] == "mail:1"
        assert (await app.post("/q/mail/nack", data={"receipt": leased["receipt"]})).code == 200
    for deliveries in (1, 2):
        leased = await _json(await app.get("/q/mail", params={"reserve": "0.05"}))
        assert leased["key"] == "mail:2" and leased["deliveries"] == deliveries
        # /stats moves expired leases first: back to the queue, then to the dead letters
        await _stats_until(app, "mail", lambda stats: stats["inflight"] == 0)
    assert (await _json(await app.get("/stats/mail")))["dead"] == 2
    number = await redis.incr("mail:dead:UUID")
    key = "mail:dead:%d" % number
    await redis.set(key, "to eve")
    await redis.hset("mail:dead:deadinfo", key, json.dumps(
        {"reason": "rejected by billing", "from": "mail:9", "deliveries": 7, "at": 1700000000000}))
    await redis.lpush("mail:dead:queue", key)


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_dashboard_dead_letters_show_each_reason_and_redrive_delete_purge_change_redis(app, redis):
    await _dead_letters(app, redis)
    base = app.url

    def drive(page: Any) -> None:
        from playwright.sync_api import expect
        _open_queue(page, base, "mail")
        expect(page.locator("#d-dead")).to_have_text("3", timeout=UPDATE_TIMEOUT_MS)
        page.click("#d-dead")
        expect(page.locator("#detail-name")).to_have_text("mail:dead")
        expect(page.locator("#origin-link")).to_have_text("mail")
        rows = page.locator("#messages tbody tr")
        expect(rows).to_have_count(3, timeout=UPDATE_TIMEOUT_MS)
        assert rows.locator("td.reason").all_text_contents() == [
            "max_receives", "max_receives", "rejected by billing"]
        assert rows.locator("td.deliveries").all_text_contents() == ["2", "2", "7"]
        assert rows.locator("td.origin").all_text_contents() == ["mail:1", "mail:2", "mail:9"]
        assert rows.locator("td.value").all_text_contents() == ["to ada", "to bob", "to eve"]
        expect(rows.first.locator("td.reason")).to_be_visible()

        # Redrive: the dead letters go back to the end of mail
        page.click("#act-redrive")
        expect(page.locator("#detail-notices .notice.ok")).to_contain_text(
            "Redrove 3 dead letters of mail", timeout=UPDATE_TIMEOUT_MS)
        assert _redis(redis.llen, "mail:dead:queue") == 0
        assert _redis(redis.llen, "mail:queue") == 3

        # back to mail: delete one message, then purge the rest
        page.click("#origin-link")
        expect(page.locator("#detail-name")).to_have_text("mail")
        rows = page.locator("#messages tbody tr")
        expect(rows).to_have_count(3, timeout=UPDATE_TIMEOUT_MS)
        first = rows.first.locator("td.key").text_content()
        rows.first.locator("button", has_text="Delete").click()
        expect(page.locator("#detail-notices .notice.ok").first).to_contain_text("Deleted " + first)
        assert _redis(redis.llen, "mail:queue") == 2
        assert _redis(redis.exists, first) == 0
        expect(page.locator("#d-len")).to_have_text("2", timeout=UPDATE_TIMEOUT_MS)

        # Purge asks first, naming the queue and its depth; Cancel changes nothing
        page.click("#act-purge")
        dialog = page.locator("#purge-dialog")
        expect(dialog).to_be_visible()
        expect(dialog.locator("#purge-queue")).to_have_text("mail")
        expect(dialog).to_contain_text("2 waiting messages")
        page.click("#purge-cancel")
        expect(dialog).to_be_hidden()
        assert _redis(redis.llen, "mail:queue") == 2
        page.click("#act-purge")
        page.click("#purge-confirm")
        expect(page.locator("#detail-notices .notice.ok").first).to_contain_text(
            "Purged mail: 2 messages removed", timeout=UPDATE_TIMEOUT_MS)
        assert _redis(redis.exists, "mail:queue") == 0
        assert _redis(redis.sismember, "QUEUESET", "mail") == 0
        # every result is still there, newest first, until dismissed
        assert page.locator("#detail-notices .notice").count() == 3

    assert await deferToThread(_in_browser, drive) == []


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_dashboard_shows_a_queues_groups_and_their_consumers(app, redis):
    for group in ("billing", "audit"):
        assert (await app.post("/q/invoices/groups/" + group)).code == 201
    await _publish(app, "invoices", "inv 1", "inv 2", "inv 3")
    consumer = await Stream.open(app.port, "/sse/invoices?group=billing&ack=1&prefetch=2")
    await wait_until(lambda: app.dispatcher.consumers("invoices"))
    base = app.url

    def drive(page: Any) -> None:
        from playwright.sync_api import expect
        _open_queue(page, base, "invoices")
        groups = page.locator("#groups tbody tr")
        expect(groups).to_have_count(2, timeout=UPDATE_TIMEOUT_MS)
        assert groups.locator("td.name").all_text_contents() == ["audit", "billing"]
        audit = page.locator('#groups tr[data-group="audit"]')
        billing = page.locator('#groups tr[data-group="billing"]')
        expect(audit.locator("td.depth")).to_have_text("3")
        # billing's consumer holds its prefetch of two leased messages
        expect(billing.locator("td.inflight")).to_have_text("2", timeout=UPDATE_TIMEOUT_MS)
        expect(billing.locator("td.depth")).to_have_text("1")
        expect(billing.locator("td.subscribers")).to_have_text("sse 1")
        consumers = page.locator("#consumers tbody tr")
        expect(consumers).to_have_count(1, timeout=UPDATE_TIMEOUT_MS)
        expect(consumers.first.locator("td.group")).to_have_text("billing")
        expect(consumers.first.locator("td.prefetch")).to_have_text("2 / 2")
        # a group's dead count links to its own dead-letter queue
        assert audit.locator("td.dead a").get_attribute("href") == "#queue=invoices%3Adead%40audit"

    try:
        assert await deferToThread(_in_browser, drive) == []
    finally:
        consumer.close()


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_dashboard_refused_action_error_stays_until_dismissed(app, redis):
    assert (await app.post("/settings/full", data={"maxlen": "1", "overflow": "reject"})).code == 200
    await _publish(app, "full", "the only one")
    base = app.url

    def drive(page: Any) -> None:
        from playwright.sync_api import expect
        _open_queue(page, base, "full")
        page.fill("#publish-value", "one too many")
        page.click("#act-publish")
        error = page.locator("#detail-notices .notice.error")
        expect(error).to_have_count(1, timeout=UPDATE_TIMEOUT_MS)
        expect(error).to_contain_text("Publish to full failed")
        expect(error).to_contain_text("429 queue_full")
        # snapshots keep coming; the error stays
        _wait_for_snapshots(page, 3)
        expect(error).to_be_visible()
        expect(error).to_contain_text("at most 1 messages")
        error.locator("button.dismiss").click()
        expect(page.locator("#detail-notices .notice")).to_have_count(0)

    errors = await deferToThread(_in_browser, drive, allowed=("status of 429",))
    assert errors == []
    assert await redis.llen("full:queue") == 1


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_dashboard_settings_form_round_trips_and_shows_errors(app, redis):
    await _publish(app, "tuned", "x")
    base = app.url
    wanted = {"maxlen": "10", "overflow": "drop_oldest", "max_receives": "3", "lease_seconds": "2.5",
              "history_size": "50", "ttl": "3600"}

    def drive(page: Any) -> None:
        from playwright.sync_api import expect
        _open_queue(page, base, "tuned")
        # nothing set yet: empty fields, the broker's defaults as placeholders
        expect(page.locator("#s-max_receives")).to_have_attribute("placeholder", "5",
                                                                  timeout=UPDATE_TIMEOUT_MS)
        expect(page.locator("#s-maxlen")).to_have_value("")
        for name, value in wanted.items():
            if name == "overflow":
                page.select_option("#s-overflow", value)
            else:
                page.fill("#s-" + name, value)
        page.click("#settings-save")
        expect(page.locator("#detail-notices .notice.ok")).to_contain_text("Saved the settings of tuned")
        assert _redis(redis.hgetall, "tuned:settings") == wanted

        # a reload reads them back from the broker
        page.reload()
        expect(page.locator("#detail-name")).to_have_text("tuned")
        for name, value in wanted.items():
            expect(page.locator("#s-" + name)).to_have_value(value, timeout=UPDATE_TIMEOUT_MS)

        # a refused value is shown at its field and saves nothing
        page.fill("#s-maxlen", "-1")
        page.click("#settings-save")
        expect(page.locator("#e-maxlen")).to_be_visible(timeout=UPDATE_TIMEOUT_MS)
        expect(page.locator("#e-maxlen")).to_contain_text("maxlen")
        expect(page.locator("#s-maxlen")).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#settings-error")).to_contain_text("400 bad_request")
        _wait_for_snapshots(page, 2)
        expect(page.locator("#e-maxlen")).to_be_visible()
        assert _redis(redis.hget, "tuned:settings", "maxlen") == "10"

        # an emptied field goes back to the default
        page.fill("#s-maxlen", "20")
        page.fill("#s-ttl", "")
        page.click("#settings-save")
        expect(page.locator("#e-maxlen")).to_be_hidden(timeout=UPDATE_TIMEOUT_MS)
        expect(page.locator("#s-ttl")).to_have_attribute("placeholder", "none")
        assert _redis(redis.hget, "tuned:settings", "maxlen") == "20"
        assert _redis(redis.hexists, "tuned:settings", "ttl") == 0

    assert await deferToThread(_in_browser, drive, allowed=("status of 400",)) == []
    settings = await _json(await app.get("/settings/tuned"))
    assert settings["settings"]["maxlen"] == 20 and settings["settings"]["lease_seconds"] == 2.5


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_dashboard_fits_420px_and_works_from_the_keyboard(app, redis):
    await _publish(app, "keyboard-jobs", '{"a very long body": "%s"}' % ("x" * 300))
    await _publish(app, "a-queue-with-a-rather-long-name-for-a-narrow-screen", "y")
    base = app.url

    def drive(page: Any) -> None:
        from playwright.sync_api import expect
        page.goto(base + "/dashboard/")
        expect(page.locator("#live")).to_have_text("live", timeout=UPDATE_TIMEOUT_MS)
        expect(page.locator('tr[data-queue="keyboard-jobs"]')).to_be_visible(timeout=UPDATE_TIMEOUT_MS)
        width = "document.documentElement.scrollWidth"
        assert page.evaluate(width) <= 420

        # Tab reaches the queue's link; Enter opens its view with the focus on it
        page.focus("#filter")
        for _ in range(40):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.textContent") == "keyboard-jobs":
                break
        else:
            raise AssertionError("Tab never reached the queue's link")
        page.keyboard.press("Enter")
        expect(page.locator("#detail")).to_be_visible()
        expect(page.locator("#detail-title")).to_be_focused()
        expect(page.locator("#messages tbody tr")).to_have_count(1, timeout=UPDATE_TIMEOUT_MS)
        assert page.evaluate(width) <= 420

        # every action of the view is reachable with Tab
        reached = set()
        for _ in range(60):
            page.keyboard.press("Tab")
            reached.add(page.evaluate("document.activeElement.id || document.activeElement.className"))
        for target in ("act-status", "act-policy", "act-redrive", "act-purge", "publish-value",
                       "act-publish", "s-maxlen", "s-overflow", "s-ttl", "settings-save", "danger small"):
            assert target in reached, target
        # and works from it: Enter on Pause, Escape out of the Purge dialog
        page.focus("#act-status")
        page.keyboard.press("Enter")
        expect(page.locator("#detail-notices .notice.ok")).to_contain_text("Paused keyboard-jobs")
        assert _redis(redis.get, "queuestat::keyboard-jobs") == "0"
        page.focus("#act-purge")
        page.keyboard.press("Enter")
        expect(page.locator("#purge-dialog")).to_be_visible()
        expect(page.locator("#purge-cancel")).to_be_focused()
        page.keyboard.press("Escape")
        expect(page.locator("#purge-dialog")).to_be_hidden()
        assert _redis(redis.llen, "keyboard-jobs:queue") == 1

    errors = await deferToThread(_in_browser, drive, viewport={"width": 420, "height": 800})
    assert errors == []


# one user and one token for every section the page needs
_ACL = """\
    [ops]
    username = operator
    password = s3cret
    token = t0ken
    [rest:producer]
    username = operator
    password = s3cret
    token = t0ken
    [rest:consumer]
    username = operator
    password = s3cret
    token = t0ken
    """


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_dashboard_under_the_acl_with_basic_or_a_token_in_the_fragment(redis, redis_server, tmp_path):
    path = tmp_path / "acl.conf"
    path.write_text(textwrap.dedent(_ACL))
    running = await start_app(redis_server.target, acl=load_acl(str(path)))
    base = running.url
    try:
        published = await running.post("/q/guarded", data={"value": "secret job"},
                                       headers={"Authorization": "Bearer t0ken"})
        assert published.code == 200

        def with_basic(page: Any) -> None:
            from playwright.sync_api import expect
            _open_queue(page, base, "guarded")
            expect(page.locator("#messages tbody tr td.value")).to_have_text(
                "secret job", timeout=UPDATE_TIMEOUT_MS)
            page.click("#act-status")
            expect(page.locator("#detail-notices .notice.ok")).to_contain_text("Paused guarded")
            assert _redis(redis.get, "queuestat::guarded") == "0"

        def with_token(page: Any) -> None:
            from playwright.sync_api import expect
            page.goto(base + "/dashboard/#token=t0ken&queue=guarded")
            expect(page.locator("#live")).to_have_text("live", timeout=UPDATE_TIMEOUT_MS)
            # the token leaves the address bar (and what gets copied from it)
            assert "t0ken" not in page.url and page.url.endswith("#queue=guarded")
            expect(page.locator("#messages tbody tr td.value")).to_have_text(
                "secret job", timeout=UPDATE_TIMEOUT_MS)
            page.click("#act-status")
            expect(page.locator("#detail-notices .notice.ok")).to_contain_text("Resumed guarded")
            assert _redis(redis.get, "queuestat::guarded") == "1"
            # a reload in the same tab keeps it
            page.reload()
            expect(page.locator("#live")).to_have_text("live", timeout=UPDATE_TIMEOUT_MS)

        credentials = {"username": "operator", "password": "s3cret"}
        assert await deferToThread(_in_browser, with_basic, http_credentials=credentials) == []
        assert await deferToThread(_in_browser, with_token) == []
    finally:
        await stop_app(running)

    # a token that may look but not act: the view works, the action's refusal stays shown
    path.write_text(textwrap.dedent("""\
        [ops]
        token = v1ewer
        [rest:consumer]
        token = v1ewer
        [rest:producer]
        token = wr1ter
        """))
    running = await start_app(redis_server.target, acl=load_acl(str(path)))
    base = running.url
    try:
        def refused(page: Any) -> None:
            from playwright.sync_api import expect
            page.goto(base + "/dashboard/#token=v1ewer&queue=guarded")
            expect(page.locator("#live")).to_have_text("live", timeout=UPDATE_TIMEOUT_MS)
            expect(page.locator("#messages tbody tr td.value")).to_have_text(
                "secret job", timeout=UPDATE_TIMEOUT_MS)
            page.click("#act-status")
            error = page.locator("#detail-notices .notice.error")
            expect(error).to_contain_text("401 unauthorized", timeout=UPDATE_TIMEOUT_MS)
            assert _redis(redis.get, "queuestat::guarded") == "1"

        assert await deferToThread(_in_browser, refused, allowed=("status of 401",)) == []
    finally:
        await stop_app(running)
