"""The dashboard in a real headless Chromium (Debian's, driven by playwright)
against the running broker: it shows queues, follows publishes live over the
broker's own SSE, shows a queue's newest messages, and its toggles really act."""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from typing import Any, Dict, List

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.browser_page import CHROMIUM_ARGS

CHROMIUM = "/usr/bin/chromium"
# snapshots come every second; this only bounds a broken page, it measures nothing
UPDATE_TIMEOUT_MS = 10000


def _post(url: str, **fields: str) -> Dict[str, Any]:
    data = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(url, data=data, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _drive(base: str, screenshot: str) -> List[str]:
    """Everything the browser does (in a thread: the reactor serves meanwhile).
    Returns the page's errors."""
    from playwright.sync_api import expect, sync_playwright

    errors: List[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: message.type == "error" and errors.append(message.text))
            page.goto(base + "/")  # redirects to the dashboard
            assert page.url == base + "/dashboard/"
            expect(page.locator("#live")).to_have_text("live", timeout=UPDATE_TIMEOUT_MS)

            row = page.locator('tr[data-queue="browser-jobs"]')
            expect(row.locator("td.depth")).to_have_text("1", timeout=UPDATE_TIMEOUT_MS)
            expect(row.locator("td.status span")).to_have_text("started")

            # a publish shows up with the next snapshot
            _post(base + "/q/browser-jobs", value="second")
            expect(row.locator("td.depth")).to_have_text("2", timeout=UPDATE_TIMEOUT_MS)

            # the detail view: the newest messages and the depth chart
            row.locator("td.name").click()
            expect(page.locator("#detail-name")).to_have_text("browser-jobs")
            expect(page.locator("#jobs li").first).to_contain_text("second", timeout=UPDATE_TIMEOUT_MS)
            expect(page.locator("#jobs li")).to_have_count(2)
            page.wait_for_function(
                "document.getElementById('chart-line').getAttribute('points').split(' ').length >= 2",
                timeout=UPDATE_TIMEOUT_MS)

            # the toggles act on the broker; the page shows what it answered
            row.locator(".status-toggle").click()
            expect(row.locator("td.status span")).to_have_text("stopped", timeout=UPDATE_TIMEOUT_MS)
            expect(row.locator(".status-toggle")).to_have_text("resume")
            row.locator(".policy-toggle").click()
            expect(row.locator("td.policy span")).to_have_text("roundrobin", timeout=UPDATE_TIMEOUT_MS)

            # a queue made after the page opened appears, and the filter hides the others
            _post(base + "/q/browser-later", value="x")
            expect(page.locator('tr[data-queue="browser-later"]')).to_be_visible(timeout=UPDATE_TIMEOUT_MS)
            page.fill("#filter", "later")
            expect(row).to_be_hidden()
            page.fill("#filter", "")
            expect(row).to_be_visible()
            page.screenshot(path=screenshot, full_page=True)
        finally:
            browser.close()
    return errors


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_dashboard_is_live_and_its_toggles_act(app, redis, tmp_path):
    await app.post("/q/browser-jobs", data={"value": "first"})
    screenshot = os.environ.get("RESTMQ_DASHBOARD_SCREENSHOT") or str(tmp_path / "dashboard.png")
    errors = await deferToThread(_drive, app.url, screenshot)
    assert errors == []
    assert os.path.getsize(screenshot) > 0
    # the pause is real: Redis has the queue stopped, /control says so
    assert await redis.get("queuestat::browser-jobs") == "0"
    control = json.loads(await (await app.get("/control/browser-jobs")).text())
    assert control == {"queue": "browser-jobs", "status": "stopped"}
    assert json.loads(await (await app.get("/p/browser-jobs")).text())["value"] == "roundrobin"
