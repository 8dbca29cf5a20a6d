"""Redis Sentinel: RestMQ follows a failover without a restart; --redis-wait.

Real processes: a master, two replicas and three sentinels (tests/sentinels.py),
RestMQ under twistd. Request timeouts are hang detectors only.
"""

from __future__ import annotations

import json
import time

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, protocol, reactor
from twisted.web.client import HTTPConnectionPool
import txredisapi

from restmq.storage.pool import _master_only
from tests.helpers import RedisProcess, free_port, sleep, start_app, stop_app, test_config, wait_until
from tests.processes import Broker, StreamClient, connections_to
from tests.sentinels import MASTER_NAME, SentinelCluster, command, wait_for

# a hung request fails the test; RestMQ itself answers within about reply_timeout
HANG = 10


@pytest.fixture()
def http_pool():
    pool = HTTPConnectionPool(reactor, persistent=False)
    yield pool
    pytest_twisted.blockon(pool.closeCachedConnections())


async def request(method: str, url: str, pool, **kwargs):
    """(status, body) of one request; 503 must be RestMQ's JSON error."""
    response = await treq.request(method, url, pool=pool, timeout=HANG, **kwargs)
    body = await response.text()
    if response.code == 503:
        assert json.loads(body)["error"]["code"] == "backend_unavailable", body
    return response.code, body


@pytest_twisted.ensureDeferred
async def test_failover_answers_503_then_serves_the_acknowledged_messages(tmp_path, http_pool):
    cluster = SentinelCluster(replicas=2)
    broker = stream = None
    try:
        cluster.start()
        conf = tmp_path / "restmq.conf"
        # an hourly sweep: after the failover, streams are fed through pub/sub again
        conf.write_text("[dispatch]\nsweep_interval = 3600\n")
        broker = Broker(free_port(), ["--config", str(conf), "--redis", cluster.url,
                                      "--redis-wait", "1"], str(tmp_path / "restmq.log")).start()
        url = broker.url
        stream = await StreamClient.open(url, "live", http_pool)

        acknowledged = []
        for i in range(20):
            status, body = await request("POST", url + "/q/kept", http_pool, data={"value": "k%d" % i})
            assert status == 200, body
            acknowledged.append("k%d" % i)
        assert (await request("POST", url + "/q/live", http_pool, data={"value": "before"}))[0] == 200
        await wait_until(lambda: stream.values == ["before"], timeout=20)

        old_master = cluster.master_port()
        cluster.master.kill()

        # during the switch every request is answered, 503 or success, until a
        # publish is acknowledged by the new master and a replica again
        seen = []
        deadline = time.monotonic() + 90
        while True:
            status, _ = await request("POST", url + "/q/during", http_pool, data={"value": "d"})
            seen.append(status)
            if status == 200:
                break
            assert status == 503
            status, _ = await request("GET", url + "/q/probe", http_pool)
            assert status in (204, 503)
            assert time.monotonic() < deadline, "no recovery; answers: %s" % seen[-20:]
            await sleep(0.05)
        print("answers during the switch:", len(seen), seen.count(503))
        assert 503 in seen  # the switch was visible, as a clean error
        assert cluster.master_port() not in (None, old_master)

        popped = []
        for _ in acknowledged:
            status, body = await request("GET", url + "/q/kept", http_pool)
            assert status == 200, body
            popped.append(json.loads(body)["value"])
        assert popped == acknowledged
        assert (await request("GET", url + "/q/kept", http_pool))[0] == 204

        # the stream opened before the failover is fed again: pub/sub followed the master
        assert (await request("POST", url + "/q/live", http_pool, data={"value": "after"}))[0] == 200
        await wait_until(lambda: stream.values == ["before", "after"], timeout=30)
        assert not stream.closed
    finally:
        if stream is not None:
            await stream.close()
        if broker is not None:
            broker.stop()
        cluster.stop()


@pytest_twisted.ensureDeferred
async def test_sentinels_unreachable_gives_503_not_a_hang(tmp_path, http_pool):
    dead = "sentinel://127.0.0.1:%d,127.0.0.1:%d/nothing" % (free_port(), free_port())
    broker = Broker(free_port(), ["--redis", dead], str(tmp_path / "restmq.log"))
    broker.start()
    try:
        for _ in range(3):
            assert (await request("GET", broker.url + "/q/x", http_pool))[0] == 503
            assert (await request("POST", broker.url + "/q/x", http_pool, data={"value": "v"}))[0] == 503
    finally:
        broker.stop()


@pytest_twisted.ensureDeferred
async def test_redis_wait_answers_503_until_a_replica_acknowledges():
    master = RedisProcess().start()
    replica = None
    app = await start_app(master.target, test_config(redis={"wait_replicas": 1}))
    try:
        status, body = await request("POST", app.url + "/q/w", app.http_pool, data={"value": "alone"})
        assert status == 503 and "replicas acknowledged" in body
        replica = RedisProcess(extra=["--replicaof", "127.0.0.1", str(master.port)]).start()

        async def replicated() -> bool:
            info = await app.store._command("INFO", "replication")
            return "state=online" in str(info)

        deadline = time.monotonic() + 30
        while not await replicated():
            assert time.monotonic() < deadline, "the replica never came online"
            await sleep(0.05)
        status, body = await request("POST", app.url + "/q/w", app.http_pool, data={"value": "copied"})
        assert status == 200, body
    finally:
        await stop_app(app)
        if replica is not None:
            replica.stop()
        master.stop()


class _Subscriber(txredisapi.SubscriberProtocol):
    made: list = []

    def connectionMade(self):
        ready = super().connectionMade()
        ready.addCallback(lambda _: self.made.append(self))
        return ready


async def _subscribe_to(port: int) -> tuple:
    """Connect a master-only subscriber; (was it accepted, connections dropped)."""
    checked = type("Checked", (_Subscriber,), {"made": []})
    factory = txredisapi.SubscriberFactory(isLazy=True)
    factory.protocol = _master_only(checked)
    factory.convertNumbers = False
    factory.reconnect = False
    ended: defer.Deferred = defer.Deferred()
    endpoint = txredisapi._makeEndpoint("127.0.0.1", port, 2)

    class _Watch(protocol.Factory):
        def buildProtocol(self, addr):
            built = factory.buildProtocol(addr)
            lost = built.connectionLost

            def connection_lost(reason):
                lost(reason)
                if not ended.called:
                    ended.callback(None)

            built.connectionLost = connection_lost
            return built

    connected = await endpoint.connect(_Watch())
    try:
        await wait_until(lambda: checked.made or ended.called, timeout=HANG)
        return bool(checked.made), ended.called
    finally:
        connected.transport.loseConnection()
        await ended


@pytest_twisted.ensureDeferred
async def test_pubsub_connection_to_a_replica_is_refused():
    master = RedisProcess().start()
    replica = RedisProcess(extra=["--replicaof", "127.0.0.1", str(master.port)]).start()
    try:
        assert await _subscribe_to(master.port) == (True, False)
        assert await _subscribe_to(replica.port) == (False, True)
    finally:
        replica.stop()
        master.stop()


@pytest_twisted.ensureDeferred
async def test_switchover_is_followed_before_the_old_master_is_demoted(tmp_path, http_pool):
    cluster = SentinelCluster(replicas=2)
    broker = stream = None
    try:
        cluster.start()
        conf = tmp_path / "restmq.conf"
        conf.write_text("[dispatch]\nsweep_interval = 3600\n")
        broker = Broker(free_port(), ["--config", str(conf), "--redis", cluster.url, "--redis-wait", "1",
                                      "--redis-pool", "2"], str(tmp_path / "restmq.log")).start()
        url = broker.url
        stream = await StreamClient.open(url, "live", http_pool)
        assert (await request("POST", url + "/q/kept", http_pool, data={"value": "k"}))[0] == 200
        old_master = cluster.master_port()
        # A planned switchover: the old master stays up, still a master that
        # accepts writes, until Sentinel demotes it seconds later (writes made
        # there meanwhile are lost then). RestMQ must leave it on +switch-master.
        assert command(cluster.sentinels[0].port, "SENTINEL", "FAILOVER", MASTER_NAME) == "OK"
        wait_for(lambda: cluster.master_port() not in (None, old_master), "the switchover")
        new_master = cluster.master_port()
        # the pool (2) and the pub/sub connection (1) are all on the new master
        wait_for(lambda: connections_to(broker.pid, new_master) == 3
                 and connections_to(broker.pid, old_master) == 0, "RestMQ on the new master")
        assert "role:master" in command(old_master, "INFO", "replication"), \
            "RestMQ only moved once Sentinel demoted the old master"

        deadline = time.monotonic() + 60
        while (await request("POST", url + "/q/live", http_pool, data={"value": "after"}))[0] != 200:
            assert time.monotonic() < deadline, "publishing never worked again"
            await sleep(0.05)
        await wait_until(lambda: "after" in stream.values, timeout=30)
        status, body = await request("GET", url + "/q/kept", http_pool)
        assert status == 200 and json.loads(body)["value"] == "k"
    finally:
        if stream is not None:
            await stream.close()
        if broker is not None:
            broker.stop()
        cluster.stop()
