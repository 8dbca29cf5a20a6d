"""Redis unreachable or stalled: a fast 503 JSON error, never a hang; recovery without restart."""

from __future__ import annotations

import json
import os
import signal

import pytest_twisted
import treq

from tests.helpers import RedisProcess, start_app, stop_app, wait_until


async def answer(app, method, path, **kwargs):
    # the timeout turns a hang into a failure; 503s come from RestMQ's own timeouts
    return await treq.request(method, app.url + path, pool=app.http_pool, timeout=5, **kwargs)


async def assert_503(app, method, path, **kwargs):
    response = await answer(app, method, path, **kwargs)
    assert response.code == 503
    payload = json.loads(await response.text())
    assert payload["error"]["code"] == "backend_unavailable"


async def works_again(app) -> None:
    ok = []

    async def probe():
        response = await answer(app, "POST", "/q/back", data={"value": "v"})
        ok.append(response.code)

    while not ok or ok[-1] != 200:
        await probe()
        if ok[-1] != 200:
            from tests.helpers import sleep
            await sleep(0.1)
        assert len(ok) < 200, "RestMQ did not recover after Redis came back"


@pytest_twisted.ensureDeferred
async def test_redis_killed_gives_503_then_recovers():
    server = RedisProcess().start()
    app = await start_app(server.target)
    try:
        assert (await answer(app, "POST", "/q/o", data={"value": "v"})).code == 200
        server.stop()
        await wait_until(lambda: not app.pool.connected)
        await assert_503(app, "POST", "/q/o", data={"value": "v"})
        await assert_503(app, "GET", "/q/o")
        await assert_503(app, "GET", "/stats/")
        await assert_503(app, "POST", "/queue", data={"body": '{"cmd":"get","queue":"o"}'})
        server.start()
        await works_again(app)
        assert (await answer(app, "GET", "/stats/back")).code == 200
    finally:
        await stop_app(app)
        server.stop()


@pytest_twisted.ensureDeferred
async def test_redis_stalled_gives_503_then_recovers():
    server = RedisProcess().start()
    app = await start_app(server.target)
    try:
        assert (await answer(app, "POST", "/q/s", data={"value": "v"})).code == 200
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            await assert_503(app, "GET", "/q/s")
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        await works_again(app)
    finally:
        await stop_app(app)
        server.stop()


@pytest_twisted.ensureDeferred
async def test_redis_down_at_startup_gives_503():
    server = RedisProcess()  # never started
    app = await start_app(server.target, wait_ready=False)
    try:
        await assert_503(app, "GET", "/q/x")
    finally:
        await stop_app(app)
