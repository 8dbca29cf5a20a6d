"""QueueStore against a real redis-server: the Lua scripts and the original layout."""

from __future__ import annotations

import pytest
import pytest_twisted

from restmq.errors import InvalidQueueName, QueueFull
from restmq.model import Policy, QueueState


@pytest_twisted.ensureDeferred
async def test_add_follows_the_original_layout(store, redis):
    result = await store.add("jobs", ["a"])
    assert result.keys == ["jobs:1"]
    assert await redis.get("jobs:UUID") == "1"
    assert await redis.get("jobs:1") == "a"
    assert await redis.lrange("jobs:queue", 0, -1) == ["jobs:1"]
    assert await redis.smembers("QUEUESET") == {"jobs"}
    assert await redis.get("queuestat::jobs") == "1"


@pytest_twisted.ensureDeferred
async def test_take_returns_oldest_first(store):
    await store.add("jobs", ["a"])
    await store.add("jobs", ["b"])
    assert [m.value for m in await store.take("jobs")] == ["a"]
    assert [m.value for m in await store.take("jobs")] == ["b"]
    assert await store.take("jobs") == []


@pytest_twisted.ensureDeferred
async def test_take_deletes_the_body(store, redis):
    await store.add("jobs", ["a"])
    await store.take("jobs")
    assert await redis.exists("jobs:1") == 0


@pytest_twisted.ensureDeferred
async def test_numeric_body_stays_text(store):
    # the original returned 7 for "007": txredisapi converts numbers unless told not to
    await store.add("jobs", ["007"])
    assert (await store.take("jobs"))[0].value == "007"


@pytest_twisted.ensureDeferred
async def test_bodies_are_exact(store):
    bodies = ["ünïcødé ✓ 😀", 'quote " and \\ backslash', "  spaces  ", "\x00\x01ctl", "x" * 512 * 1024]
    for body in bodies:
        await store.add("exact", [body])
    assert [m.value for m in await store.take("exact", 10)] == bodies


@pytest_twisted.ensureDeferred
async def test_message_posted_here_is_rpopped_by_a_plain_client(store, redis):
    # the original algorithm: RPOP <q>:queue, then GET the key
    await store.add("interop", ["from restmq"])
    key = await redis.rpop("interop:queue")
    assert key == "interop:1"
    assert await redis.get(key) == "from restmq"


@pytest_twisted.ensureDeferred
async def test_key_pushed_by_another_broker_is_served(store, redis):
    await redis.incr("other:UUID")
    await redis.set("other:1", "from another broker")
    await redis.lpush("other:queue", "other:1")
    await redis.sadd("QUEUESET", "other")
    messages = await store.take("other")
    assert [(m.key, m.value) for m in messages] == [("other:1", "from another broker")]


@pytest_twisted.ensureDeferred
async def test_foreign_element_is_dropped_not_dereferenced(store, redis):
    await redis.set("secret", "do not serve")
    await redis.lpush("jobs:queue", "secret")
    await store.add("jobs", ["real"])
    assert [m.value for m in await store.take("jobs", 5)] == ["real"]
    assert await redis.get("secret") == "do not serve"


@pytest_twisted.ensureDeferred
async def test_expired_message_is_skipped_not_served_as_null(store, redis):
    await store.add("ttl", ["gone"], ttl=100)
    await store.add("ttl", ["kept"])
    await redis.delete("ttl:1")  # what expiry does
    assert [m.value for m in await store.take("ttl", 5)] == ["kept"]


@pytest_twisted.ensureDeferred
async def test_ttl_sets_an_expiry_on_the_body(store, redis):
    await store.add("ttl", ["x"], ttl=100)
    assert 0 < await redis.ttl("ttl:1") <= 100


@pytest_twisted.ensureDeferred
async def test_purge_removes_bodies_too(store, redis):
    await store.add("p", ["a", "b", "c"])
    assert await store.purge("p") == 3
    assert await redis.exists("p:1") == 0
    assert await redis.exists("p:3") == 0
    assert await redis.exists("p:queue") == 0
    assert "p" not in await redis.smembers("QUEUESET")


@pytest_twisted.ensureDeferred
async def test_purge_keeps_the_id_counter(store):
    await store.add("p", ["a"])
    await store.purge("p")
    assert (await store.add("p", ["b"])).keys == ["p:2"]


@pytest_twisted.ensureDeferred
async def test_batch_add_is_atomic_and_in_order(store):
    result = await store.add("batch", ["1", "2", "3"])
    assert result.keys == ["batch:1", "batch:2", "batch:3"]
    assert [m.value for m in await store.take("batch", 3)] == ["1", "2", "3"]


@pytest_twisted.ensureDeferred
async def test_add_is_one_atomic_script(store, redis):
    # the original's non-atomic add could leave an id without a body; ours writes
    # nothing when the script fails
    await redis.hset("full:settings", "maxlen", 1)
    await store.add("full", ["a"])
    with pytest.raises(QueueFull):
        await store.add("full", ["b"])
    assert await redis.get("full:UUID") == "1"
    assert await redis.exists("full:2") == 0


@pytest_twisted.ensureDeferred
async def test_peek_counts_deliveries_and_keeps_the_message(store):
    await store.add("peek", ["a"])
    first = await store.peek("peek")
    second = await store.peek("peek")
    assert (first.key, first.value, first.deliveries) == ("peek:1", "a", 1)
    assert second.deliveries == 2
    assert [m.value for m in await store.take("peek")] == ["a"]


@pytest_twisted.ensureDeferred
async def test_peek_on_empty_queue_returns_none(store):
    assert await store.peek("nothing") is None


@pytest_twisted.ensureDeferred
async def test_delete_removes_one_message(store, redis):
    await store.add("d", ["a", "b"])
    assert await store.delete("d", "d:1") is True
    assert await store.delete("d", "d:1") is False
    assert await redis.lrange("d:queue", 0, -1) == ["d:2"]
    assert await redis.exists("d:1") == 0


@pytest_twisted.ensureDeferred
async def test_delete_refuses_keys_of_other_queues(store, redis):
    await store.add("mine", ["a"])
    assert await store.delete("other", "mine:1") is False
    assert await redis.exists("mine:1") == 1


@pytest_twisted.ensureDeferred
async def test_policy_keeps_the_original_encoding(store, redis):
    assert await store.get_policy("q") is Policy.BROADCAST
    await store.set_policy("q", Policy.ROUNDROBIN)
    assert await redis.get("q:queuepolicy") == "2"
    assert await store.get_policy("q") is Policy.ROUNDROBIN


@pytest_twisted.ensureDeferred
async def test_state_keeps_the_original_encoding(store, redis):
    await store.set_state("q", QueueState.STOPPED)
    assert await redis.get("queuestat::q") == "0"
    assert await store.get_state("q") is QueueState.STOPPED


@pytest_twisted.ensureDeferred
async def test_stats_report_lengths(store):
    await store.add("s1", ["a", "b"])
    await store.add("s2", ["c"])
    infos = {info.name: info for info in await store.stats()}
    assert infos["s1"].length == 2 and infos["s2"].length == 1
    assert infos["s1"].oldest_age is not None and infos["s1"].oldest_age >= 0


@pytest_twisted.ensureDeferred
async def test_invalid_queue_name_is_refused(store):
    for name in ["", "a\x00b", "a\nb", "tab\there", "x" * 201, "é" * 201, "queuestat:x", "\udcff"]:
        with pytest.raises(InvalidQueueName):
            await store.add(name, ["v"])


@pytest_twisted.ensureDeferred
async def test_any_other_name_is_a_queue_of_its_own(store):
    # what the original accepted: spaces, slashes, non-ASCII, the key suffixes themselves
    names = ["a b", "a/b", "é", "日本", "a:queue", "a:UUID", "a:5", "a", "queuestat", "%41",
             "x" * 200, "é" * 200]
    for name in names:
        await store.add(name, [name])
    for name in names:
        assert [m.value for m in await store.take(name)] == [name]


@pytest_twisted.ensureDeferred
async def test_jobs_view_lists_newest_first(store):
    await store.add("j", ["a", "b", "c"])
    length, messages = await store.jobs("j", 2)
    assert length == 3
    assert [m.value for m in messages] == ["c", "b"]


@pytest_twisted.ensureDeferred
async def test_script_reloads_after_script_flush(store, redis):
    await store.add("flush", ["a"])
    await redis.execute_command("SCRIPT", "FLUSH")
    assert (await store.add("flush", ["b"])).keys == ["flush:2"]
