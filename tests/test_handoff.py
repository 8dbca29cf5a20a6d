"""Hand-off (issue 18): a publish gives its messages to the consumers waiting on the
publisher's own process in the same script call that stores them.

Storage tests call add.lua with takers against the real redis-server; HTTP tests
count the Redis calls a delivery costs (INFO commandstats of the test server), which
is what the issue's "within one round trip of the publish" means.
"""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import defer, task

from restmq.config import DispatchConfig
from restmq.dispatch import Dispatcher
from restmq.model import Message, Policy, QueueState, Taker
from restmq.storage.notify import Notifier
from tests.helpers import start_app, stop_app, test_config, wait_until
from tests.streaming import Stream


async def _calls(redis, command: str) -> int:
    """How many times the test server ran ``command`` so far (scripts' own calls included)."""
    info = await redis.execute_command("INFO", "commandstats")
    if isinstance(info, bytes):
        info = info.decode()
    for line in info.splitlines():
        if line.startswith("cmdstat_%s:" % command):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


# storage: add.lua with takers

@pytest_twisted.ensureDeferred
async def test_add_hands_the_oldest_message_to_a_taker(store):
    await store.add("h1", ["old"])
    result = await store.add("h1", ["new"], takers=[Taker()])
    assert [[m.value for m in got] for got in result.handed] == [["old"]]
    assert [m.value for m in await store.take("h1", 10)] == ["new"]


@pytest_twisted.ensureDeferred
async def test_add_passes_messages_through_to_takers_when_nothing_waits(store, redis):
    result = await store.add("hp", ["a", "b", "c"], takers=[Taker(count=2)])
    assert [m.value for m in result.handed[0]] == ["a", "b"]
    assert [m.key for m in result.handed[0]] == ["hp:1", "hp:2"]
    # handed without being stored: no body, no bookkeeping; the rest waits as usual
    assert await redis.exists("hp:1") == 0 and await redis.exists("hp:2") == 0
    assert await redis.hexists("hp:enqueued", "hp:1") == 0
    assert [m.value for m in await store.take("hp", 10)] == ["c"]


@pytest_twisted.ensureDeferred
async def test_add_leaves_a_passed_body_at_its_key_for_a_rest_taker(store, redis):
    # as a REST pop does (popped_ttl): the original's clients read the body there
    result = await store.add("hk", ["kept"], takers=[Taker(keep_ms=60000)])
    assert [m.key for m in result.handed[0]] == ["hk:1"]
    assert await redis.get("hk:1") == "kept"
    assert 0 < int(await redis.execute_command("PTTL", "hk:1")) <= 60000
    await store.add("hk", ["old"])
    handed = await store.add("hk", ["new"], takers=[Taker(keep_ms=60000)])
    assert [m.value for m in handed.handed[0]] == ["old"]  # popped from the list, kept too
    assert await redis.get("hk:2") == "old" and 0 < int(await redis.execute_command("PTTL", "hk:2")) <= 60000


@pytest_twisted.ensureDeferred
async def test_add_passes_through_with_attributes(store):
    from restmq.model import MessageMeta
    meta = MessageMeta({"color": "blue"})
    result = await store.add("hpa", ["x"], metas=[meta], takers=[Taker()])
    assert result.handed[0][0].attributes == {"color": "blue"}


@pytest_twisted.ensureDeferred
async def test_requeue_stores_again_a_body_only_kept_for_popped_ttl(store, redis):
    # a long-poll's pop leaves the body at its key for popped_ttl; if its client left
    # before the answer, requeue must not leave the message to expire with that body
    from restmq.model import MessageMeta
    await store.add("rk", ["popped"], metas=[MessageMeta({"color": "red"})])
    taken = await store.take("rk", keep_ms=60000)
    passed = (await store.add("rk", ["passed"], takers=[Taker(keep_ms=60000)])).handed[0]
    assert int(await redis.execute_command("PTTL", "rk:1")) > 0
    publishes = await _calls(redis, "publish")
    assert await store.requeue("rk", taken + passed) == 2
    assert await _calls(redis, "publish") == publishes + 1  # the script woke the consumers
    for key in ("rk:1", "rk:2"):
        assert int(await redis.execute_command("PTTL", key)) == -1  # no expiry left
    again = await store.take("rk", 10)
    assert [m.value for m in again] == ["popped", "passed"]
    assert again[0].attributes == {"color": "red"}


@pytest_twisted.ensureDeferred
async def test_requeue_keeps_the_ordering_key_of_a_message_given_back(store, redis):
    # popped and given back: the message still holds its ordering key once leased
    from restmq.model import MessageMeta
    key = MessageMeta(ordering_key="k")
    await store.add("ro", ["1", "2"], metas=[key, key])
    taken = await store.take("ro", keep_ms=60000)
    assert await redis.hget("ro:okey", "ro:1") is None  # the pop finished it
    assert await store.requeue("ro", taken) == 1
    assert await redis.hget("ro:okey", "ro:1") == "k"
    assert await redis.hexists("ro:enqueued", "ro:1") == 1
    leased = await store.reserve("ro", 2, 30000)
    assert [m.value for m in leased] == ["1"]  # "2" waits behind the held key
    await store.ack("ro", [leased[0].receipt])
    assert [m.value for m in await store.reserve("ro", 2, 30000)] == ["2"]


@pytest_twisted.ensureDeferred
async def test_requeue_gives_a_group_held_body_its_holder_back(store, redis):
    await store.create_group("rg", "g")
    await store.add("rg", ["x"])
    taken = await store.take("rg", keep_ms=60000)  # the default consumers; group g still holds it
    assert await store.requeue("rg", taken) == 1
    assert [m.value for m in await store.take("rg", group="g")] == ["x"]
    assert [m.value for m in await store.take("rg")] == ["x"]
    assert await redis.exists("rg:1") == 0  # both holders done: the body is gone


@pytest_twisted.ensureDeferred
async def test_add_hands_each_taker_its_count_in_order(store):
    result = await store.add("h2", ["a", "b", "c", "d"], takers=[Taker(count=3), Taker(count=3)])
    assert [[m.value for m in got] for got in result.handed] == [["a", "b", "c"], ["d"]]
    assert result.keys == ["h2:1", "h2:2", "h2:3", "h2:4"]
    assert await store.take("h2") == []


@pytest_twisted.ensureDeferred
async def test_add_leases_for_a_reserving_taker_and_the_lease_can_be_acked(store):
    result = await store.add("h3", ["job"], takers=[Taker(lease_ms=30000)])
    message = result.handed[0][0]
    assert message.receipt is not None and message.deliveries == 1
    assert (await store.stats("h3"))[0].inflight == 1
    done, refused = await store.ack("h3", [message.receipt])
    assert (done, refused) == (1, [])
    assert (await store.stats("h3"))[0].inflight == 0


@pytest_twisted.ensureDeferred
async def test_add_hands_a_group_taker_the_group_copy_only(store):
    await store.create_group("h4", "g")
    result = await store.add("h4", ["x"], takers=[Taker(group="g")])
    assert [m.value for m in result.handed[0]] == ["x"]
    assert [m.value for m in await store.take("h4")] == ["x"]  # the default consumers keep theirs
    assert await store.take("h4", group="g") == []


@pytest_twisted.ensureDeferred
async def test_add_hands_nothing_to_a_taker_of_a_missing_group(store):
    result = await store.add("h5", ["x"], takers=[Taker(group="nope")])
    assert result.handed == [[]]
    assert [m.value for m in await store.take("h5")] == ["x"]


@pytest_twisted.ensureDeferred
async def test_add_hands_streams_only_while_the_queue_is_roundrobin(store):
    result = await store.add("h6", ["b1"], takers=[Taker(count=10, stream=True)])
    assert result.handed == [[]]  # broadcast: its streams are fed by dispatch, not here
    await store.set_policy("h6", Policy.ROUNDROBIN)
    result = await store.add("h6", ["r1"], takers=[Taker(count=10, stream=True)])
    assert [m.value for m in result.handed[0]] == ["b1", "r1"]


@pytest_twisted.ensureDeferred
async def test_add_hands_nothing_from_a_stopped_queue_that_holds(store):
    await store.set_state("h7", QueueState.STOPPED)
    result = await store.add("h7", ["x"], takers=[Taker(hold_if_stopped=True), Taker(count=5, stream=True)])
    assert result.handed == [[], []]
    result = await store.add("h7", ["y"], takers=[Taker(hold_if_stopped=False)])
    assert [m.value for m in result.handed[0]] == ["x"]


@pytest_twisted.ensureDeferred
async def test_add_hands_nothing_when_the_messages_are_delayed(store):
    result = await store.add("h8", ["later"], delay_ms=60000, takers=[Taker()])
    assert result.handed == [[]]


@pytest_twisted.ensureDeferred
async def test_add_keeps_an_ordering_key_held_by_a_leased_message(store):
    from restmq.model import MessageMeta
    key = MessageMeta(ordering_key="k")
    first = await store.add("h9", ["1"], metas=[key], takers=[Taker(lease_ms=30000)])
    assert [m.value for m in first.handed[0]] == ["1"]
    second = await store.add("h9", ["2"], metas=[key], takers=[Taker(lease_ms=30000)])
    assert second.handed == [[]]  # "2" waits until "1" is acked
    await store.ack("h9", [first.handed[0][0].receipt])
    assert [m.value for m in await store.reserve("h9", 1, 30000)] == ["2"]


@pytest_twisted.ensureDeferred
async def test_add_wakes_only_namespaces_with_messages_left(store, redis):
    await store.take("h10", 1, listen_ms=5000)  # a long-poll marks h10 as listened to
    handed_all = await store.add("h10", ["x"], takers=[Taker()])
    assert handed_all.woken == []
    left = await store.add("h10", ["y"])
    assert left.woken == ["h10"]


@pytest_twisted.ensureDeferred
async def test_add_replay_hands_nothing(store):
    await store.add("h11", ["once"], idempotency_key="k1")
    again = await store.add("h11", ["once"], idempotency_key="k1", takers=[Taker()])
    assert again.replayed and again.keys == ["h11:1"] and again.handed == [[]]


# the notifier skips the wake-ups of its own process

def test_notifier_skips_its_own_wake_ups_and_strips_the_origin_of_others():
    woken = []
    notifier = Notifier(None, 1.0, woken.append, lambda q: None, lambda q, b: None, lambda: None,
                        origin="abc")
    notifier._received(b"restmq:notify", b"wq1 abc")
    notifier._received(b"restmq:notify", b"wq2 def")
    notifier._received(b"restmq:notify", b"wq3#g")
    assert woken == ["q2", "q3#g"]


# the waiter: what a claimed long-poll does when the publish returns

def _dispatcher():
    return Dispatcher(None, task.Clock(), DispatchConfig())


def test_waiter_claimed_gets_the_messages_instead_of_a_wake_up():
    dispatcher = _dispatcher()
    waiter = dispatcher.waiter("q", taker=Taker())
    fired = []
    waiter.next_wake(10).addCallback(fired.append)
    claim = dispatcher.claim("q", 1)
    assert claim.takers == [Taker()] and waiter.claimed
    assert dispatcher.claim("q", 1).takers == []  # claimed once
    dispatcher.deliver("q", claim, [[Message("q:1", "x")]], [])
    assert [m.value for m in fired[0]] == ["x"]


def test_waiter_claimed_past_its_deadline_still_gets_what_the_publish_took():
    dispatcher = _dispatcher()
    waiter = dispatcher.waiter("q", taker=Taker())
    fired = []
    waiter.next_wake(1).addCallback(fired.append)
    claim = dispatcher.claim("q", 1)
    dispatcher.clock.advance(2)
    assert fired == []  # held while the publish is on its way
    dispatcher.deliver("q", claim, [[Message("q:1", "x")]], [])
    assert [m.value for m in fired[0]] == ["x"]


def test_waiter_claimed_past_its_deadline_times_out_when_nothing_came():
    dispatcher = _dispatcher()
    waiter = dispatcher.waiter("q", taker=Taker())
    fired = []
    waiter.next_wake(1).addCallback(fired.append)
    claim = dispatcher.claim("q", 1)
    dispatcher.clock.advance(2)
    dispatcher.release(claim)
    assert fired == [False]


class _RecordingStore:
    """Records what the dispatcher gives back (the dispatcher is what is tested)."""

    def __init__(self):
        self.requeued, self.nacked = [], []

    async def requeue(self, queue, messages, group=""):
        self.requeued.append((queue, group, [m.value for m in messages]))
        return len(messages)

    async def nack(self, queue, receipts, delay_ms=0, group=""):
        self.nacked.append((queue, group, list(receipts)))
        return len(receipts), []


def test_waiter_gone_while_claimed_gives_the_messages_back():
    store = _RecordingStore()
    dispatcher = Dispatcher(store, task.Clock(), DispatchConfig())
    plain = dispatcher.waiter("q#g", taker=Taker(group="g"))
    leased = dispatcher.waiter("q#g", taker=Taker(group="g", lease_ms=1000))
    waits = [plain.next_wake(10), leased.next_wake(10)]
    claim = dispatcher.claim("q", 2)
    assert len(claim.takers) == 2
    for wait in waits:
        wait.addErrback(lambda failure: failure.trap(defer.CancelledError))
        wait.cancel()  # both clients went away
    dispatcher.deliver("q", claim, [[Message("q:1", "a")], [Message("q:2", "b", 1, "q:2:t")]], [])
    assert store.requeued == [("q", "g", ["a"])]
    assert store.nacked == [("q", "g", ["q:2:t"])]


# HTTP: what a delivery costs

def _quiet_config():
    # no safety sweep during the count
    return test_config(dispatch={"sweep_interval": 3600.0})


def _parked(app, target, count=1):
    state = app.dispatcher._queues.get(target)
    return state is not None and sum(1 for w in state.waiters if w.parked) == count


@pytest_twisted.ensureDeferred
async def test_long_poll_gets_a_local_publish_in_the_publish_call_itself(redis, redis_server):
    app = await start_app(redis_server.target, _quiet_config())
    try:
        for path in ("/q/lh?wait=30", "/q/lh?wait=30&reserve=30"):
            pending = app.get(path)
            await wait_until(lambda: _parked(app, "lh"))
            scripts, publishes = await _calls(redis, "evalsha"), await _calls(redis, "publish")
            assert (await app.post("/q/lh", data={"value": path})).code == 200
            response = await pending
            assert response.code == 200 and json.loads(await response.text())["value"] == path
            # the publish's own script call delivered it: no pop after it, no pub/sub hop
            assert await _calls(redis, "evalsha") - scripts == 1
            assert await _calls(redis, "publish") == publishes
    finally:
        await stop_app(app)


@pytest_twisted.ensureDeferred
async def test_long_poll_gets_a_queue_command_or_collectd_add_in_the_publish_call(redis, redis_server):
    # the original's JSON protocol and collectd's write_http publish like POST /q does
    app = await start_app(redis_server.target, _quiet_config())
    try:
        for queue, post in (
                ("lq", lambda: app.post("/queue", data={"body": json.dumps(
                    {"cmd": "add", "queue": "lq", "value": "by /queue"})})),
                ("collectd_event", lambda: app.post(
                    "/collectd/event", data=b"PUTNOTIF severity=okay time=1 message=up",
                    headers={"Content-Type": "text/plain"}))):
            pending = app.get("/q/%s?wait=30" % queue)
            await wait_until(lambda: _parked(app, queue))
            scripts, publishes = await _calls(redis, "evalsha"), await _calls(redis, "publish")
            assert (await post()).code == 200
            response = await pending
            assert response.code == 200 and json.loads(await response.text())["key"] == queue + ":1"
            assert await _calls(redis, "evalsha") - scripts == 1
            assert await _calls(redis, "publish") == publishes
    finally:
        await stop_app(app)


@pytest_twisted.ensureDeferred
async def test_long_poll_of_a_group_gets_a_local_publish_in_the_publish_call(redis, redis_server):
    app = await start_app(redis_server.target, _quiet_config())
    try:
        assert (await app.post("/q/lg/groups/w")).code == 201
        pending = app.get("/q/lg?wait=30&group=w")
        await wait_until(lambda: _parked(app, "lg#w"))
        scripts = await _calls(redis, "evalsha")
        await app.post("/q/lg", data={"value": "for the group"})
        response = await pending
        assert json.loads(await response.text())["value"] == "for the group"
        assert await _calls(redis, "evalsha") - scripts == 1
        # the default consumers still have their copy
        assert json.loads(await (await app.get("/q/lg")).text())["value"] == "for the group"
    finally:
        await stop_app(app)


@pytest_twisted.ensureDeferred
async def test_roundrobin_streams_get_a_local_publish_in_the_publish_call(redis, redis_server):
    app = await start_app(redis_server.target, _quiet_config())
    try:
        await app.post("/p/rrh", data={"policy": "roundrobin"})
        streams = [await Stream.open(app.port, "/c/rrh") for _ in range(2)]
        await wait_until(lambda: app.dispatcher.subscriber_counts("rrh").get("comet") == 2)
        state = app.dispatcher._queues["rrh"]
        await wait_until(lambda: state.ready and not state.busy and state.policy is Policy.ROUNDROBIN)
        scripts, publishes = await _calls(redis, "evalsha"), await _calls(redis, "publish")
        for i in range(6):
            await app.post("/q/rrh", data={"value": str(i)})
        await wait_until(lambda: sum(len(s.lines()) for s in streams) == 6)
        assert sorted(m["value"] for s in streams for m in s.lines()) == [str(i) for i in range(6)]
        assert [len(s.lines()) for s in streams] == [3, 3]
        # one script call per publish: the deal needed no dispatch call of its own
        assert await _calls(redis, "evalsha") - scripts == 6
        assert await _calls(redis, "publish") == publishes
        for stream in streams:
            stream.close()
    finally:
        await stop_app(app)


def test_publish_wakes_nothing_here_while_the_notifier_does_not_listen():
    class Deaf:
        listening = False

        def watch(self, queue):
            return defer.Deferred()

    store = _RecordingStore()
    dispatcher = Dispatcher(store, task.Clock(), DispatchConfig())
    waiter = dispatcher.waiter("q", taker=Taker())
    dispatcher.notifier = Deaf()
    fired = []
    waiter.next_wake(10).addCallback(fired.append)
    # a broadcast taken now would be published where this process cannot hear it:
    # the sweep at the reconnection takes it instead
    dispatcher.deliver("q", dispatcher.claim("q", 0), [], ["q"])
    assert fired == []
    dispatcher.notifier.listening = True
    dispatcher.deliver("q", dispatcher.claim("q", 0), [], ["q"])
    assert fired == [True]


class _Stream:
    """A streaming consumer as the dispatcher sees it, recording what it is sent."""

    transport = "comet"

    def __init__(self):
        self.got = []

    def send(self, message):
        self.got.append(message.value)

    def send_batch(self, batch):
        self.got.extend(m.value for m in batch.messages)

    def can_take(self):
        return True

    def overflowing(self):
        return False

    def close(self, reason):
        pass


def test_several_publishes_may_claim_the_streams_at_once():
    from restmq.storage.store import DispatchResult

    class Store(_RecordingStore):
        wait_replicas = 0

        async def dispatch(self, *args, **kwargs):
            return DispatchResult(True, Policy.ROUNDROBIN, [])

    dispatcher = Dispatcher(Store(), task.Clock(), DispatchConfig())
    stream = _Stream()
    dispatcher.subscribe("q", stream)
    assert dispatcher._queues["q"].policy is Policy.ROUNDROBIN
    first, second = dispatcher.claim("q", 1), dispatcher.claim("q", 1)
    assert first.takers and second.takers  # both publishes hand to the streams
    dispatcher.deliver("q", first, [[Message("q:1", "1")]], [])
    dispatcher.deliver("q", second, [[Message("q:2", "2")]], [])
    assert stream.got == ["1", "2"]
    Store.wait_replicas = 1  # a WAIT between script and deal: replies may not come in order
    assert dispatcher.claim("q", 1).takers == []


@pytest_twisted.ensureDeferred
async def test_a_queue_is_pinned_to_one_connection(store):
    await store.queues()  # connected
    first = store.pool.pinned("jobs")
    assert first is not None and all(store.pool.pinned("jobs") is first for _ in range(10))


@pytest_twisted.ensureDeferred
async def test_concurrent_publishes_reach_each_roundrobin_stream_in_order(redis, redis_server):
    app = await start_app(redis_server.target, _quiet_config())
    try:
        await app.post("/p/rro", data={"policy": "roundrobin"})
        streams = [await Stream.open(app.port, "/c/rro") for _ in range(2)]
        await wait_until(lambda: app.dispatcher.subscriber_counts("rro").get("comet") == 2)
        posts = [app.post("/q/rro", data={"value": str(i)}) for i in range(40)]
        for post in posts:
            assert (await post).code == 200
        await wait_until(lambda: sum(len(s.lines()) for s in streams) == 40)
        for stream in streams:
            numbers = [int(m["key"].rpartition(":")[2]) for m in stream.lines()]
            assert numbers == sorted(numbers)  # the queue's order, whatever the publishes did
        assert sorted(m["value"] for s in streams for m in s.lines()) == sorted(str(i) for i in range(40))
        for stream in streams:
            stream.close()
    finally:
        await stop_app(app)


def test_replies_decode_like_txredisapi_utf8_text_and_bytes_otherwise():
    from restmq.storage.fastproto import _decoded, _encode, encode_command
    assert _decoded([b"caf\xc3\xa9", 7, [b"x", b"\xff"], None]) == ["café", 7, ["x", b"\xff"], None]
    assert _decoded(b"\xe9\xe9") == b"\xe9\xe9"
    args = ("EVALSHA", "abc", 1, "q:queue", "é", b"\x00raw", 300000)
    assert encode_command(args) == _encode(args)
