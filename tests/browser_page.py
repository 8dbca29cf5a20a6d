"""Opens a page in headless Chromium (Debian's, driven by playwright) and prints
``window.results`` as JSON once ``window.done`` is true.

Usage: browser_page.py <page-url>. The page must come from the server itself:
Chromium refuses WebSockets to localhost from pages it did not load from there.
"""

from __future__ import annotations

import json
import sys

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main(url: str, timeout_ms: int = 20000) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                             args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url)
            try:
                page.wait_for_function("window.done === true", timeout=timeout_ms)
            finally:
                print(json.dumps(page.evaluate("window.results")))
        finally:
            browser.close()


if __name__ == "__main__":
    main(sys.argv[1])
