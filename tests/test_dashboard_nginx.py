"""The dashboard behind the shipped nginx recipe (etc/nginx/restmq.conf), over TLS
with a self-signed certificate: Debian's nginx, Debian's headless Chromium, the
broker on a real Redis. The page's actions must pass the broker's Origin check,
which compares the browser's Origin with the Host that nginx forwards."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any, List

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.helpers import free_port
from tests.processes import wait_listening
from tests.test_dashboard_browser import UPDATE_TIMEOUT_MS, _in_browser, _redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "etc", "nginx", "restmq.conf")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

# Only what a test needs changes in the recipe: where it listens, where the broker
# and the certificate are. Each substitution must match exactly once, so a changed
# recipe fails here loudly instead of being tested half.
_SUBSTITUTIONS = (
    (r"server 127\.0\.0\.1:8888;", "server 127.0.0.1:{upstream};"),
    (r"listen 80;", "listen 127.0.0.1:{http};"),
    (r"listen 443 ssl http2;", "listen 127.0.0.1:{https} ssl http2;"),
    (r"ssl_certificate\s+\S+;", "ssl_certificate {cert};"),
    (r"ssl_certificate_key\s+\S+;", "ssl_certificate_key {key};"),
)

_MAIN = """\
# the test's own nginx: one process in the foreground, everything in {prefix}
daemon off;
master_process off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/restmq.conf;
}}
"""


def recipe_for(upstream: int, http: int, https: int, cert: str, key: str) -> str:
    """etc/nginx/restmq.conf pointed at the test's broker, ports and certificate."""
    with open(RECIPE, encoding="utf-8") as handle:
        text = handle.read()
    # the test machine may have no IPv6
    text = re.sub(r"(?m)^\s*listen \[::\]:.*$\n", "", text)
    for pattern, replacement in _SUBSTITUTIONS:
        text, count = re.subn(pattern, replacement.format(
            upstream=upstream, http=http, https=https, cert=cert, key=key), text)
        assert count == 1, "%s: %r matched %d times" % (RECIPE, pattern, count)
    return text


def _self_signed(folder: str) -> tuple:
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_dashboard_actions_work_behind_the_nginx_tls_recipe(app, redis, tmp_path):
    assert os.access(NGINX, os.X_OK), "nginx is missing: `make test` installs Debian's nginx-light"
    prefix = str(tmp_path)
    cert, key = _self_signed(prefix)
    https, http = free_port(), free_port()
    with open(os.path.join(prefix, "restmq.conf"), "w", encoding="utf-8") as handle:
        handle.write(recipe_for(app.port, http, https, cert, key))
    main = os.path.join(prefix, "nginx.conf")
    with open(main, "w", encoding="utf-8") as handle:
        handle.write(_MAIN.format(prefix=prefix))
    log = os.path.join(prefix, "error.log")
    proc = subprocess.Popen([NGINX, "-p", prefix + "/", "-c", main, "-e", log],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    await deferToThread(wait_listening, https, proc, 10.0, log)
    await app.post("/q/behind-tls", data={"value": "first"})
    base = "https://127.0.0.1:%d" % https

    def drive(page: Any) -> None:
        from playwright.sync_api import expect
        page.goto(base + "/")       # the broker's relative redirect, through nginx
        assert page.url == base + "/dashboard/"
        expect(page.locator("#live")).to_have_text("live", timeout=UPDATE_TIMEOUT_MS)
        page.locator('tr[data-queue="behind-tls"] td.name a').click()
        expect(page.locator("#messages tbody tr")).to_have_count(1, timeout=UPDATE_TIMEOUT_MS)
        notices = page.locator("#detail-notices .notice")
        # POST through the proxy: the Origin check sees the public origin
        page.fill("#publish-value", "through nginx")
        page.click("#act-publish")
        expect(notices.first).to_contain_text("Published behind-tls:2", timeout=UPDATE_TIMEOUT_MS)
        assert _redis(redis.llen, "behind-tls:queue") == 2
        page.click("#act-status")
        expect(notices.first).to_contain_text("Paused behind-tls", timeout=UPDATE_TIMEOUT_MS)
        assert _redis(redis.get, "queuestat::behind-tls") == "0"
        page.click("#act-purge")
        page.click("#purge-confirm")
        expect(notices.first).to_contain_text("Purged behind-tls: 2 messages", timeout=UPDATE_TIMEOUT_MS)
        assert _redis(redis.exists, "behind-tls:queue") == 0
        assert page.locator("#detail-notices .notice.error").count() == 0

    errors: List[str] = []
    try:
        errors = await deferToThread(_in_browser, drive, ignore_https_errors=True)
    finally:
        proc.terminate()
        await deferToThread(proc.wait, 10)
    assert errors == []
