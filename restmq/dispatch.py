"""Dispatcher: the streaming consumers of this process, fed by wake-ups.

Consumers (COMET, SSE, WebSocket adapters in web/streams.py) register per
queue through the small :class:`Consumer` interface. A wake-up for a queue
(Redis pub/sub, or the safety sweep) makes the dispatcher take messages for it
with one script call:

* roundrobin: the messages taken are dealt to the consumers that can take
  more, in turn, continuing where the last deal stopped.
* broadcast: the script publishes each batch on the queue's broadcast channel
  and every process (this one included) hands it to all its consumers of the
  queue: one ordered stream, each message encoded once per transport.

A queue's consumer group is one more name here, "<q>#<g>"
(keys.namespace): its members always compete. Long-poll pops wait here too
(:meth:`Dispatcher.waiter`), woken to retry their own pop, and so do callers
of request/reply (:meth:`Dispatcher.reply_waiter`). Nothing here polls on
the hot path; the sweep (``sweep_interval``) only catches what other brokers pushed straight into Redis.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Protocol, Sequence, Set, Tuple, TypeGuard

import attr
from twisted.internet import defer, task
from twisted.logger import Logger

from restmq.config import DispatchConfig
from restmq.errors import RestMQError
from restmq.keys import namespace, split_namespace
from restmq.model import Batch, ConsumerInfo, Message, MessageMeta, Policy, Taker

__all__ = ["Consumer", "AckedConsumer", "Dispatcher", "Waiter", "Claim", "deal", "deal_by_credit"]


class Consumer(Protocol):
    """What the dispatcher needs from a streaming connection."""

    transport: str

    def send(self, message: Message) -> None:
        """Write one message (it must not raise for a closed connection)."""

    def send_batch(self, batch: Batch) -> None:
        """Write several messages at once (one write on the connection)."""

    def can_take(self) -> bool:
        """False while its connection's buffer is full (slow reader)."""

    def overflowing(self) -> bool:
        """True once it is more than the buffer limit behind: cut it off."""

    def close(self, reason: str) -> None:
        """End the stream (queue purged, cut off as too slow, shutdown)."""


class AckedConsumer(Consumer, Protocol):
    """A consumer that asked for at-least-once (``?ack=1``): it gets leased
    messages, at most ``prefetch`` unacked at a time."""

    acked: bool

    def credit(self, now: float) -> int:
        """How many more leased messages it may hold now (expired leases free credit)."""

    def hold(self, message: Message, deadline: float) -> None:
        """Remember a leased message until it is settled or its lease ends."""

    def release(self, keys: Sequence[str]) -> bool:
        """Forget settled messages; True if it held any of them."""

    def outstanding(self) -> List[str]:
        """Receipts of the leased messages it still holds."""


def _is_acked(consumer: Consumer) -> TypeGuard[AckedConsumer]:
    return bool(getattr(consumer, "acked", False))


def deal(consumers: Sequence[Consumer], cursor: int, count: int) -> List[Consumer]:
    """Round robin: the consumer for each of ``count`` messages, starting at ``cursor``."""
    return [consumers[(cursor + i) % len(consumers)] for i in range(count)]


def deal_by_credit(consumers: Sequence[Any], credits: List[int], cursor: int, count: int) -> List[Any]:
    """Round robin over consumers that still have credit; one consumer per message."""
    credits = list(credits)
    chosen: List[Any] = []
    i = cursor
    while len(chosen) < count and any(credits):
        index = i % len(consumers)
        if credits[index] > 0:
            credits[index] -= 1
            chosen.append(consumers[index])
        i += 1
    return chosen


class Waiter:
    """A long-poll request waiting for a wake-up of its queue.

    With a ``taker`` (what it would pop) a publish on this process may hand it
    messages in the publish's own script call (:meth:`Dispatcher.publish`):
    ``next_wake`` then fires with those messages instead of True.
    """

    transport = "longpoll"

    def __init__(self, dispatcher: "Dispatcher", queue: str, remote: str = "",
                 taker: Optional[Taker] = None) -> None:
        self.dispatcher = dispatcher
        self.queue = queue
        self.remote = remote
        self.since = dispatcher.clock.seconds()
        self.taker = taker
        # a publish in flight will hand it messages (or nothing): hold the timeout
        self.claimed = False
        self._woken = False
        self._expired = False
        self._pending: Optional[defer.Deferred] = None
        self._timer: Any = None

    @property
    def parked(self) -> bool:
        """Waiting in :meth:`next_wake` (not popping, not answered)."""
        return self._pending is not None

    def wake(self) -> None:
        if self._pending is not None and not self.claimed:
            pending, self._pending = self._pending, None
            self._timer.cancel()
            pending.callback(True)
        else:
            self._woken = True

    def next_wake(self, timeout: float) -> defer.Deferred:
        """Fires True at the next wake-up (at once if one came since the last
        call), False after ``timeout`` seconds, or with the list of messages a
        publish handed it."""
        if self._woken:
            self._woken = False
            return defer.succeed(True)
        self._expired = False
        self._pending = defer.Deferred(lambda _: self._stop_timer())
        self._timer = self.dispatcher.clock.callLater(timeout, self._timed_out)
        return self._pending

    def hand(self, messages: List[Message]) -> bool:
        """What the publish that claimed it took for it; False when it is gone
        (the messages must be given back)."""
        self.claimed = False
        pending = self._pending
        if pending is None:
            return not messages
        if messages or self._expired or self._woken:
            self._pending = None
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            woken, self._woken = self._woken, False
            pending.callback(messages or (woken and not self._expired))
        return True

    def _timed_out(self) -> None:
        if self.claimed:
            self._expired = True  # answered by hand(), a round trip from now
            return
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.callback(False)

    def _stop_timer(self) -> None:
        self._pending = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()

    def close(self) -> None:
        """Leave the queue (the request is answered or gone)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._stop_timer()
            pending.callback(False)
        self.dispatcher._drop_waiter(self)


class Claim:
    """The takers a publish hands messages to, and who they stand for."""

    __slots__ = ("takers", "owners")

    def __init__(self) -> None:
        self.takers: List[Taker] = []
        self.owners: List[Tuple[str, Any]] = []  # (target, Waiter or _QueueState)

    def add(self, target: str, owner: Any, taker: Taker) -> None:
        self.takers.append(taker)
        self.owners.append((target, owner))


@attr.s(slots=True, auto_attribs=True)
class _QueueState:
    consumers: List[Any] = attr.Factory(list)
    waiters: List[Waiter] = attr.Factory(list)
    cursor: int = 0
    busy: bool = False
    again: bool = False
    ready: bool = False
    ready_waiters: List[defer.Deferred] = attr.Factory(list)
    due_timer: Any = None
    acked_cursor: int = 0
    policy: Policy = Policy.BROADCAST
    # subscribed to the broadcast channel (streaming consumers need it; waiters do not)
    watched: bool = False


class Dispatcher:
    """Consumers per queue, policies, fan-out. Time comes from ``clock``."""

    log = Logger()

    def __init__(self, store: Any, clock: Any, config: DispatchConfig, metrics: Any = None,
                 lease_seconds: float = 30.0) -> None:
        self.store = store
        self.clock = clock
        self.config = config
        self.metrics = metrics
        self.notifier: Any = None
        self._queues: Dict[str, _QueueState] = {}
        # queue name -> the targets ("<q>", "<q>#<g>") of it that have a state here
        self._targets: Dict[str, Set[str]] = {}
        # this process in the wake-ups its publishes send (see Notifier)
        self.origin = os.urandom(6).hex()
        self._replies: Dict[str, Waiter] = {}
        self._sweep: Optional[task.LoopingCall] = None
        self._heartbeat: Optional[task.LoopingCall] = None
        self._heartbeats: set = set()
        # rr deals this many messages per consumer per round trip at most
        self.roundrobin_depth = 100
        # lease of the messages given to acked streaming consumers
        self.lease_seconds = lease_seconds

    @staticmethod
    def target(queue: str, group: str = "") -> str:
        """The name under which consumers of ``group`` of ``queue`` ("" = its default
        consumers) subscribe and wait here."""
        return namespace(queue, group)

    @property
    def listener_ttl_ms(self) -> int:
        """How long <q>:listeners outlives the last sweep of this process."""
        return int(max(3 * self.config.sweep_interval, 5.0) * 1000)

    # lifecycle (DispatcherService calls these)

    def start(self) -> None:
        self._sweep = task.LoopingCall(self.sweep)
        self._sweep.clock = self.clock
        self._sweep.start(self.config.sweep_interval, now=False)
        self._heartbeat = task.LoopingCall(self._beat)
        self._heartbeat.clock = self.clock
        self._heartbeat.start(self.config.heartbeat_interval, now=False)

    def stop(self) -> None:
        for loop in (self._sweep, self._heartbeat):
            if loop is not None and loop.running:
                loop.stop()
        for queue in list(self._queues):
            self.close_queue(queue, "shutdown")

    # registration

    def _state(self, queue: str) -> _QueueState:
        state = self._queues.get(queue)
        if state is None:
            state = self._queues[queue] = _QueueState(ready=True)
            self._targets.setdefault(split_namespace(queue)[0], set()).add(queue)
        return state

    def subscribe(self, queue: str, consumer: Consumer) -> None:
        """Start delivering ``queue`` to ``consumer``."""
        state = self._state(queue)
        if not state.watched:
            self._watch(queue, state)
        state.consumers.append(consumer)
        self.log.debug("Consumer {transport} joined {queue}", transport=consumer.transport, queue=queue)
        if state.ready:
            self.wake(queue)

    def unsubscribe(self, queue: str, consumer: Consumer) -> None:
        state = self._queues.get(queue)
        if state is None:
            return
        try:
            state.consumers.remove(consumer)
        except ValueError:
            return
        if _is_acked(consumer):
            name = split_namespace(queue)[0]
            receipts = [r for r in consumer.outstanding() if Message(r.rpartition(":")[0], "").queue == name]
            if receipts:
                # its unacked messages go back to the head of the queue at once
                defer.ensureDeferred(self._give_back(queue, receipts))
        self._forget_if_idle(queue, state)

    async def _give_back(self, queue: str, receipts: List[str]) -> None:
        name, group = split_namespace(queue)
        try:
            await self.store.nack(name, receipts, group=group)
        except RestMQError as exc:
            self.log.warn("Could not give back {count} messages of {queue} ({error}); "
                          "their leases will expire", count=len(receipts), queue=queue, error=exc.message)

    def settled(self, queue: str, receipts: Sequence[str]) -> None:
        """Receipts were acked or nacked: free the credit of whoever held them."""
        state = self._queues.get(queue)
        if state is None:
            return
        message_keys = [receipt.rpartition(":")[0] for receipt in receipts]
        freed = False
        for consumer in state.consumers:
            if getattr(consumer, "acked", False) and consumer.release(message_keys):
                freed = True
        if freed:
            self.wake(queue)

    def add_heartbeat(self, consumer: Any) -> None:
        """Call ``consumer.heartbeat()`` every heartbeat_interval while it lives
        (one timer for every connection, not one each)."""
        self._heartbeats.add(consumer)

    def remove_heartbeat(self, consumer: Any) -> None:
        self._heartbeats.discard(consumer)

    def _beat(self) -> None:
        for consumer in list(self._heartbeats):
            consumer.heartbeat()

    def ready(self, queue: str) -> defer.Deferred:
        """Fires once this process receives ``queue``'s broadcast batches."""
        state = self._queues.get(queue)
        if state is None or state.ready:
            return defer.succeed(None)
        waiter: defer.Deferred = defer.Deferred()
        state.ready_waiters.append(waiter)
        return waiter

    def waiter(self, queue: str, remote: str = "", taker: Optional[Taker] = None) -> Waiter:
        """Register a long-poll request on ``queue``; close() it when done.

        :param remote: the client's address, for :meth:`consumers`.
        :param taker: what the request pops: publishes on this process may then
            hand it messages directly (see :meth:`publish`).
        """
        waiter = Waiter(self, queue, remote, taker)
        self._state(queue).waiters.append(waiter)
        return waiter

    def reply_waiter(self, request_id: str) -> Waiter:
        """Wait for the reply to request ``request_id`` (woken by ``r<id>`` on the
        notify channel, and at every reconnection); close() it when done."""
        waiter = self._replies[request_id] = Waiter(self, request_id)
        return waiter

    def replied(self, request_id: str) -> None:
        """The reply to ``request_id`` is stored (some process got it)."""
        waiter = self._replies.get(request_id)
        if waiter is not None:
            waiter.wake()

    def _drop_waiter(self, waiter: Waiter) -> None:
        if self._replies.get(waiter.queue) is waiter:
            del self._replies[waiter.queue]
            return
        state = self._queues.get(waiter.queue)
        if state is not None and waiter in state.waiters:
            state.waiters.remove(waiter)
            self._forget_if_idle(waiter.queue, state)

    def _watch(self, queue: str, state: _QueueState) -> None:
        state.watched = True
        if self.notifier is None:
            state.ready = True
            return
        state.ready = False

        def subscribed(_: Any) -> None:
            if self._queues.get(queue) is state:
                state.ready = True
                waiting, state.ready_waiters = state.ready_waiters, []
                for waiter in waiting:
                    waiter.callback(None)
                self.wake(queue)

        self.notifier.watch(queue).addCallbacks(
            subscribed, lambda failure: failure.trap(defer.CancelledError))

    def _forget_if_idle(self, queue: str, state: _QueueState) -> None:
        if not state.consumers and not state.waiters and self._queues.get(queue) is state:
            del self._queues[queue]
            name = split_namespace(queue)[0]
            targets = self._targets.get(name)
            if targets is not None:
                targets.discard(queue)
                if not targets:
                    del self._targets[name]
            if state.due_timer is not None and state.due_timer.active():
                state.due_timer.cancel()
            # whoever waited for the subscription (an SSE replay) must not wait forever
            waiting, state.ready_waiters = state.ready_waiters, []
            for waiter in waiting:
                waiter.callback(None)
            if self.notifier is not None and state.watched:
                self.notifier.unwatch(queue)

    def subscriber_counts(self, queue: str) -> Dict[str, int]:
        """This process's subscribers of ``queue`` by transport."""
        counts: Dict[str, int] = {}
        state = self._queues.get(queue)
        if state is not None:
            for consumer in state.consumers:
                counts[consumer.transport] = counts.get(consumer.transport, 0) + 1
            if state.waiters:
                counts["longpoll"] = len(state.waiters)
        return counts

    def consumers(self, queue: str) -> List[ConsumerInfo]:
        """This process's consumers of ``queue`` and of its consumer groups (streams
        and long-polls), longest connected first."""
        now = self.clock.seconds()
        out = []
        for name, state in list(self._queues.items()):
            owner, group = split_namespace(name)
            if owner != queue:
                continue
            for consumer in list(state.consumers) + list(state.waiters):
                acked = _is_acked(consumer)
                prefetch = getattr(consumer, "prefetch", None) if acked else None
                out.append(ConsumerInfo(
                    transport=consumer.transport, remote=getattr(consumer, "remote", "") or "",
                    since=getattr(consumer, "since", 0.0) or 0.0, group=group, acked=acked,
                    prefetch=prefetch,
                    # credit() forgets the leases that ran out: what is left is really unacked
                    unacked=(prefetch - consumer.credit(now)) if acked and prefetch is not None else None))
        return sorted(out, key=lambda info: info.since)

    def all_subscriber_counts(self) -> Dict[str, Dict[str, int]]:
        return {queue: self.subscriber_counts(queue) for queue in self._queues}

    # hand-off: a publish on this process feeds its waiting consumers directly

    def claim(self, queue: str, count: int) -> Claim:
        """The consumers of ``queue`` (and of its groups) waiting here that a publish
        of ``count`` messages can hand messages to in its own script call: parked
        long-polls (in order of arrival, until they want ``count``), then the
        round-robin streams of a queue or group (any number of publishes at once,
        dispatch calls too: they all run on the connection pinned to the queue, so
        their replies, and the deals, come in the order Redis ran them). Every claim
        must end in :meth:`deliver` or :meth:`release`."""
        claim = Claim()
        targets = self._targets.get(queue)
        if not targets:
            return claim
        for target in targets:
            state = self._queues[target]
            group = split_namespace(target)[1]
            wanted = count
            for waiter in state.waiters:
                if wanted <= 0:
                    break
                if waiter.taker is not None and waiter.parked and not waiter.claimed:
                    waiter.claimed = True
                    claim.add(target, waiter, waiter.taker)
                    wanted -= waiter.taker.count
            if wanted > 0 and state.consumers and state.ready and self._ordered_replies and \
                    (group or state.policy is Policy.ROUNDROBIN):
                able = sum(1 for c in state.consumers if c.can_take() and not _is_acked(c))
                if able:
                    claim.add(target, state, Taker(
                        group, min(able * self.roundrobin_depth, self.config.batch_size), stream=True))
        return claim

    async def publish(self, queue: str, bodies: Sequence[str], **options: Any) -> Any:
        """``store.add(queue, bodies, **options)``, handing the new messages to the
        consumers waiting on this process in the same Redis call (see add.lua):
        a waiting long-poll or round-robin stream gets a message published here one
        round trip after the publish began, without the pub/sub hop. What is left
        wakes every other process as before. Resolves to the ``AddResult``."""
        claim = self.claim(queue, len(bodies)) if not options.get("delay_ms") else Claim()
        try:
            # on the queue's pinned connection, in order with its dispatch calls
            result = await self.store.add(queue, bodies, takers=claim.takers, origin=self.origin,
                                          pin=queue, **options)
        except BaseException:
            self.release(claim)
            raise
        self.deliver(queue, claim, result.handed, result.woken)
        return result

    @property
    def _ordered_replies(self) -> bool:
        """Publishes and dispatch calls of a queue are answered in the order they ran
        (one pinned connection, nothing awaited after the script): not with
        ``--redis-wait``, whose WAIT comes between a publish and its deal."""
        return not getattr(self.store, "wait_replicas", 0)

    def release(self, claim: Claim) -> None:
        """The publish failed: whoever was claimed waits on (or times out) as before."""
        self.deliver("", claim, [[] for _ in claim.takers], [])

    def deliver(self, queue: str, claim: Claim, handed: Sequence[List[Message]],
                woken: Sequence[str]) -> None:
        """Hand each claimed consumer what the publish took for it, give back what
        nobody can take any more, and wake this process's consumers of ``woken``."""
        for (target, owner), taker, messages in zip(claim.owners, claim.takers, handed):
            if isinstance(owner, Waiter):
                if not owner.hand(messages):
                    self._give_back_later(target, messages)
                continue
            if messages and not (self._queues.get(target) is owner
                                 and self._deal_now(target, owner, messages)):
                self._give_back_later(target, messages)
        if self.notifier is not None and not self.notifier.listening:
            # a broadcast taken now would go to a channel this process does not hear;
            # the sweep at the reconnection takes it instead (as the wake-up would have)
            return
        for target in woken:
            self.wake(target)

    def _give_back_later(self, target: str, messages: List[Message]) -> None:
        defer.ensureDeferred(self._give_back_messages(target, messages))

    async def _give_back_messages(self, target: str, messages: List[Message]) -> None:
        """Messages taken for a consumer that left before they reached it: leased
        ones are nacked, popped ones put back at the head; each script wakes everyone."""
        name, group = split_namespace(target)
        receipts = [m.receipt for m in messages if m.receipt]
        try:
            if receipts:
                await self.store.nack(name, receipts, group=group)  # nack.lua wakes
            plain = [m for m in messages if not m.receipt]
            if plain:
                await self.store.requeue(name, plain, group=group)  # requeue.lua wakes
        except RestMQError as exc:
            self.log.warn("Could not give back {count} messages of {queue} ({error})",
                          count=len(messages), queue=target, error=exc.message)

    # wake-ups

    def wake(self, queue: str) -> None:
        """Something may be waiting in ``queue``: deliver it (coalesced)."""
        state = self._queues.get(queue)
        if state is None:
            return
        for waiter in list(state.waiters):
            waiter.wake()
        if not state.consumers or not state.ready:
            return
        if state.busy:
            state.again = True
            return
        defer.ensureDeferred(self._run(queue, state))

    def sweep(self) -> None:
        """The safety net: look at every queue that has consumers or waiters."""
        for queue, state in list(self._queues.items()):
            if not state.ready:
                continue
            if state.consumers:
                self.wake(queue)
            elif state.waiters and not state.busy:
                defer.ensureDeferred(self._run(queue, state))

    def resumed(self, queue: str) -> None:
        """A consumer's buffer drained: it can take more."""
        self.wake(queue)

    async def _run(self, queue: str, state: _QueueState) -> None:
        state.busy = True
        try:
            while True:
                state.again = False
                able = [c for c in state.consumers if c.can_take() and not getattr(c, "acked", False)]
                broadcast_max = self.config.batch_size if able else 0
                roundrobin_max = min(len(able) * self.roundrobin_depth, self.config.batch_size)
                popping = bool(state.waiters) or any(getattr(c, "acked", False) for c in state.consumers)
                name, group = split_namespace(queue)
                result = await self.store.dispatch(
                    name, broadcast_max, roundrobin_max, self.listener_ttl_ms,
                    self.config.history_size, broadcasting=bool(able) and state.ready,
                    popping=popping, group=group)
                state.policy = result.policy
                if self._queues.get(queue) is not state:
                    if result.policy is Policy.ROUNDROBIN and result.messages:
                        await self.store.requeue(name, result.messages, group=group)
                    return
                if result.policy is Policy.ROUNDROBIN and result.messages:
                    await self._deal(queue, state, result.messages)
                self._schedule_due(queue, state, result.next_due_ms)
                leased_full = False
                if result.started:
                    leased_full = await self._lease(queue, state)
                if result.length and state.waiters and result.started:
                    for waiter in list(state.waiters):
                        waiter.wake()
                full = result.started and len(result.messages) >= max(
                    1, broadcast_max if result.policy is Policy.BROADCAST else roundrobin_max)
                if not (state.again or full or leased_full) or not state.consumers:
                    return
        except RestMQError as exc:
            # Redis is away; the sweep (or the reconnection) will try again
            self.log.warn("Dispatch to {queue} failed: {error}", queue=queue, error=exc.message)
        except Exception:
            self.log.failure("Dispatch to {queue} failed", queue=queue)
        finally:
            state.busy = False

    async def _lease(self, queue: str, state: _QueueState) -> bool:
        """Lease messages to the acked consumers, as many as their credit allows.

        :returns: True when the full credit was used (there may be more to lease).
        """
        now = self.clock.seconds()
        acked = [c for c in state.consumers if getattr(c, "acked", False) and c.can_take()]
        if not acked:
            return False
        credits = [c.credit(now) for c in acked]
        wanted = min(sum(credits), self.config.batch_size)
        if not wanted:
            return False
        # the queue's (or the group's) own lease_seconds setting wins over the default, as on REST
        name, group = split_namespace(queue)
        messages, lease_ms = await self.store.reserve_leased(
            name, wanted, int(self.lease_seconds * 1000), hold_if_stopped=True, default_lease=True,
            group=group)
        live = [c for c in acked if c in state.consumers and c.can_take()]
        if not live:
            if messages:
                await self.store.nack(name, [m.receipt for m in messages if m.receipt], group=group)
            return False
        credits = [c.credit(now) for c in live]
        chosen = deal_by_credit(live, credits, state.acked_cursor, len(messages))
        state.acked_cursor += len(messages)
        deadline = now + lease_ms / 1000.0
        for message, consumer in zip(messages, chosen):
            consumer.hold(message, deadline)
        self._send_grouped(queue, messages, chosen)
        extra = messages[len(chosen):]
        if extra:
            await self.store.nack(name, [m.receipt for m in extra if m.receipt], group=group)
        return len(messages) >= wanted

    def _schedule_due(self, queue: str, state: _QueueState, due_ms: int) -> None:
        """Wake the queue when its next delayed message is due (not at the next sweep)."""
        if due_ms < 0:
            return
        delay = due_ms / 1000.0 + 0.002
        timer = state.due_timer
        if timer is not None and timer.active():
            if timer.getTime() <= self.clock.seconds() + delay:
                return
            timer.cancel()
        state.due_timer = self.clock.callLater(delay, self.wake, queue)

    async def _deal(self, queue: str, state: _QueueState, messages: List[Message]) -> None:
        if not self._deal_now(queue, state, messages):
            name, group = split_namespace(queue)
            await self.store.requeue(name, messages, group=group)

    def _deal_now(self, queue: str, state: _QueueState, messages: List[Message]) -> bool:
        """Deal popped messages round robin; False (nothing sent) when no consumer can take."""
        able = [c for c in state.consumers if c.can_take() and not _is_acked(c)]
        if not able:
            return False
        # deal(): message i goes to able[(cursor + i) % n], so each consumer's share
        # is a slice, in order; one write each
        count, cursor = len(able), state.cursor
        for offset in range(min(count, len(messages))):
            self._send_batch(queue, able[(cursor + offset) % count],
                             Batch(messages[offset::count], shared=False))
        state.cursor = (cursor + len(messages)) % count
        return True

    def on_broadcast(self, queue: str, batch: Sequence[str]) -> None:
        """A broadcast batch from the channel: hand it to every local consumer."""
        state = self._queues.get(queue)
        if state is None or not state.consumers:
            return
        # key, body, metadata blob ("" none) per message
        shared = Batch([Message(batch[i], batch[i + 1], meta=MessageMeta.decode(batch[i + 2]))
                        for i in range(0, len(batch) - 2, 3)])
        for consumer in list(state.consumers):
            if getattr(consumer, "acked", False):
                continue  # acked consumers only get leased messages
            if consumer.overflowing():
                self._cut_off(queue, consumer)
                continue
            self._send_batch(queue, consumer, shared)

    def _send_batch(self, queue: str, consumer: Consumer, batch: Batch) -> None:
        try:
            consumer.send_batch(batch)
        except Exception:
            self.log.failure("Consumer {transport} of {queue} failed; dropped",
                             transport=consumer.transport, queue=queue)
            self.unsubscribe(queue, consumer)
            return
        if self.metrics is not None:
            name, group = split_namespace(queue)
            self.metrics.delivered(name, consumer.transport, len(batch), group)
            again = sum(1 for m in batch.messages if m.receipt is not None and m.deliveries > 1)
            if again:
                self.metrics.redelivered(queue, again)

    def _send_grouped(self, queue: str, messages: List[Message], consumers: List[Any]) -> None:
        """Each consumer gets its messages (in order) as one batch: one write each."""
        groups: Dict[int, List[Message]] = {}
        owners: Dict[int, Any] = {}
        for message, consumer in zip(messages, consumers):
            groups.setdefault(id(consumer), []).append(message)
            owners[id(consumer)] = consumer
        for key, group in groups.items():
            self._send_batch(queue, owners[key], Batch(group))

    def _cut_off(self, queue: str, consumer: Consumer) -> None:
        self.log.warn("Cut off a slow {transport} consumer of {queue}: over {limit} bytes behind",
                      transport=consumer.transport, queue=queue, limit=self.config.buffer_limit)
        if self.metrics is not None:
            self.metrics.cut_off(queue, consumer.transport)
        self.unsubscribe(queue, consumer)
        consumer.close("too slow")

    def close_queue(self, queue: str, reason: str = "queue purged") -> None:
        """Close every consumer and waiter of ``queue`` (it was purged, or shutdown)."""
        state = self._queues.get(queue)
        if state is None:
            return
        for consumer in list(state.consumers):
            self.unsubscribe(queue, consumer)
            consumer.close(reason)
        for waiter in list(state.waiters):
            waiter.close()

    def reconnected(self) -> None:
        """The pub/sub connection came back: wake-ups may have been missed."""
        self.sweep()
        for waiter in list(self._replies.values()):
            waiter.wake()
