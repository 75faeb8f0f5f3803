"""The worker's fixes around Faust: commits after table writes, partitions without
a committed offset read from their start, idleness of a merge source."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from aiokafka.structs import TopicPartition
from faust.types import TP

from shopwatch.agents.app import build_app
from shopwatch.agents.faust_fixes import after_seek, seek_uncommitted_to_start
from shopwatch.agents.settings import settings
from shopwatch.agents.source_ends import SourceEnds
from shopwatch.agents.topology import OFFSET_JUMPS, Topology
from shopwatch.schemas.events import TOPIC_ALERTS


def test_the_producer_flush_before_a_commit_leaves_no_table_write_behind():
    """Faust flushes the producer buffer (table changelog writes) before it commits
    offsets; the app's flush must wait for every queued write, also when handing
    one over takes longer than Faust's 0.1 s step (a busy producer)."""
    async def scenario():
        app = build_app(settings(), app_id="flush-test")
        buf = app.producer.buffer
        sent = []

        class Slow:  # a changelog write whose hand-over to aiokafka waits (a busy producer)
            def __init__(self, i):
                self.i = i
                self.message = self
                self.channel = self

            async def publish_message(self, fut, wait=False):
                await asyncio.sleep(0.15)
                sent.append(self.i)

        await buf.start()
        try:
            for i in range(4):
                buf.put(Slow(i))
            await buf.flush()
            return buf.size, list(sent)
        finally:
            await buf.stop()

    left, sent = asyncio.run(scenario())
    assert left == 0 and sent == [0, 1, 2, 3]


def test_the_flush_before_a_commit_does_not_wait_for_writes_put_after_it():
    async def scenario():
        app = build_app(settings(), app_id="flush-test-2")
        buf = app.producer.buffer
        sent = []

        class Slow:
            def __init__(self, i):
                self.i, self.message, self.channel = i, self, self

            async def publish_message(self, fut, wait=False):
                await asyncio.sleep(0.05)
                sent.append(self.i)

        async def keep_putting():
            i = 3
            while True:
                await asyncio.sleep(0.04)  # faster than the hand-over: the buffer never empties
                buf.put(Slow(i))
                i += 1

        await buf.start()
        putter = None
        try:
            for i in range(3):
                buf.put(Slow(i))
            putter = asyncio.create_task(keep_putting())
            await asyncio.wait_for(buf.flush(), timeout=5)
            return list(sent)
        finally:
            putter.cancel()
            buf.pending = asyncio.Queue()  # drop the rest: the test stops here
            await buf.stop()

    sent = asyncio.run(scenario())
    assert sent[:3] == [0, 1, 2]


class _Consumer:
    def __init__(self, committed):
        self.committed = committed
        self.seeks = []

    async def seek_to_committed(self):
        return dict(self.committed)

    def _is_changelog_tp(self, tp):
        return tp.topic.endswith("-changelog")

    async def earliest_offsets(self, *tps):
        return {tp: 3 for tp in tps}  # retention removed the first records

    async def seek_wait(self, offsets):
        self.seeks.extend(offsets.items())


def test_partitions_without_a_committed_offset_go_back_to_their_start_after_a_seek():
    fresh, zero, done, changelog = TP("shop.refunds", 2), TP("shop.alerts", 1), TP("shop.orders", 0), TP(
        "app-orders-changelog", 0)
    c = _Consumer({fresh: None, zero: 0, done: 42, changelog: None})
    seek_uncommitted_to_start(c)
    got = asyncio.run(c.seek_to_committed())
    assert got[done] == 42 and got[fresh] is None  # what Faust's perform_seek reads is unchanged
    # a changelog's position belongs to table recovery
    assert sorted(c.seeks) == sorted([(fresh, 3), (zero, 3)])


def _topology(verified, last_offset, committed, moved_at=0.0):
    """A Topology seen by _idle: the broker answered ``verified`` (TP -> (end, asked,
    first)) and the order sources' ends last moved at ``moved_at``."""
    ends = SourceEnds()
    for tp, (end, asked, first) in verified.items():
        ends.observe({tp: end}, moved_at, {tp: first}, mine=[tp])
        ends.verified[tp] = (end, asked, first)
    return SimpleNamespace(app=SimpleNamespace(consumer=SimpleNamespace(_committed_offset=committed)),
                           source_ends=ends, last_offset=last_offset)


def test_a_merge_source_is_idle_only_when_the_broker_showed_it_read_after_the_waiting_records():
    ships, refunds = "shop.shipments", "shop.refunds"
    t = _topology({TP(ships, 1): (0, 100.0, 0), TP(refunds, 1): (5, 100.0, 0)}, {(refunds, 1): 4}, {})
    # both read to the end the broker gave at 100.0: idle for records produced a margin before
    assert Topology._idle(t, 1, [ships, refunds], since=97.5) == {ships, refunds}
    # a record produced shortly before (or after) that answer may not have reached the broker then
    assert Topology._idle(t, 1, [ships, refunds], since=98.5) == frozenset()
    assert Topology._idle(t, 1, [ships, refunds], since=100.5) == frozenset()
    # records the broker has and the worker did not read yet
    t.source_ends.verified[TP(ships, 1)] = (7, 101.0, 0)
    assert Topology._idle(t, 1, [ships, refunds], since=97.5) == {refunds}
    # never asked (just assigned): not idle; read up to the committed offset counts
    t2 = _topology({TP(ships, 2): (7, 100.0, 0)}, {}, {TP(ships, 2): 7})
    assert Topology._idle(t2, 2, [ships, refunds], since=50.0) == {ships}
    # never committed and retention removed every record: nothing to read
    t3 = _topology({TP(ships, 3): (7, 100.0, 7)}, {}, {})
    assert Topology._idle(t3, 3, [ships], since=50.0) == {ships}


def test_a_read_source_is_not_idle_while_any_order_source_is_still_being_appended_to():
    """A producer with a backlog appends records seconds after it stamped them and
    not in stamp order across partitions: while any end moves, a record stamped
    before the waiting ones may still be on its way (the kill test under load)."""
    orders, refunds = TP("shop.orders", 0), TP("shop.refunds", 0)
    other = TP("shop.orders", 3)  # another worker's partition
    e = SourceEnds(quiet_s=2.0, max_idle_s=30.0)
    at_end = lambda tp, first: {orders: 10, refunds: 5}[tp]  # noqa: E731
    e.observe({orders: 10, refunds: 5, other: 100}, 100.0, mine=[orders, refunds])
    assert e.idle([refunds], since=90.0, position=at_end) == []  # nothing known before the first answer
    e.observe({orders: 10, refunds: 5, other: 100}, 101.0, mine=[orders, refunds])
    assert e.idle([refunds], since=90.0, position=at_end) == []  # quiet for 1 s only
    e.observe({orders: 10, refunds: 5, other: 100}, 102.0, mine=[orders, refunds])
    assert e.idle([refunds], since=90.0, position=at_end) == [refunds]  # quiet for 2 s
    # the producer appends elsewhere: refunds:0, read to its end, may still get an older record
    e.observe({orders: 10, refunds: 5, other: 140}, 102.5, mine=[orders, refunds])
    assert e.idle([refunds], since=90.0, position=at_end) == []
    e.observe({orders: 10, refunds: 5, other: 180}, 104.0, mine=[orders, refunds])
    assert e.idle([refunds], since=90.0, position=at_end) == []
    e.observe({orders: 10, refunds: 5, other: 180}, 106.0, mine=[orders, refunds])
    assert e.idle([refunds], since=90.0, position=at_end) == [refunds]
    # a steady stream never goes quiet: a sparse source counts as idle once its own end
    # has stood still for max_idle_s
    for i in range(1, 60):
        e.observe({orders: 10 + i, refunds: 5, other: 180 + i}, 106.5 + i, mine=[orders, refunds])
        got = e.idle([refunds], since=90.0, position=lambda tp, first, i=i: {orders: 10 + i, refunds: 5}[tp])
        assert got == ([refunds] if 106.5 + i - 100.0 >= 30.0 else []), i
    e.clear()
    assert e.idle([refunds], since=0.0, position=at_end) == []


class _RebalancingConsumer:
    """Faust's consumer as after_seek sees it, in a rebalance: what it resumes and seeks
    goes to ``order``; ``committed`` is what its seek fills in; ``thread`` its aiokafka
    consumer thread (None: another transport)."""

    def __init__(self, order: list, assigned: set, committed: dict | None = None, thread=None) -> None:
        self.app = SimpleNamespace(rebalancing=True)
        self._committed_offset: dict = {}
        self.order, self.assigned, self.committed = order, assigned, committed or {}
        if thread is not None:
            self._thread = thread

    def assignment(self):
        return set(self.assigned)

    def _is_changelog_tp(self, tp):
        return tp.topic.endswith("-changelog")

    def resume_partitions(self, tps):
        self.order.append(("resume", sorted(tps)))

    async def perform_seek(self):
        await asyncio.sleep(0)
        self._committed_offset.update(self.committed)
        self.order.append("seek")


def test_stream_partitions_resumed_in_a_rebalance_are_fetched_only_after_the_seek():
    """Faust resumes the stream partitions before its seek and fills _committed_offset at
    the seek's end: records fetched in between were skipped and their copies dropped."""
    orders, changelog = TP("shop.orders", 0), TP("app-orders-changelog", 0)
    order = []
    c = _RebalancingConsumer(order, {orders, changelog}, committed={orders: 7})
    after_seek(c, [lambda: order.append(("hook", dict(c._committed_offset)))])
    c.resume_partitions({changelog})  # table recovery: at once
    c.resume_partitions({orders})  # Recovery._resume_streams: held until the seek
    assert order == [("resume", [changelog])]
    asyncio.run(c.perform_seek())
    assert order[1:] == ["seek", ("resume", [orders]), ("hook", {orders: 7})]
    # the seek Faust's fetch loop makes when it finds the flow stopped is not that one
    asyncio.run(c.perform_seek())
    assert order[-1] == "seek"
    c.app.rebalancing = False  # outside a rebalance nothing is held
    c.resume_partitions({orders})
    assert order[-1] == ("resume", [orders])


def test_stream_partitions_held_for_the_seek_are_paused_in_aiokafka_too():
    """Faust's pause is its own bookkeeping: aiokafka kept fetching the held partitions,
    and a batch of them Faust took while they were not active was dropped with their
    position past it (the kill test: the first record taken after a seek 78 past the
    committed offset). Held, they are paused in aiokafka from before the seek until
    Faust takes them again."""
    orders, refunds, changelog = TP("shop.orders", 0), TP("shop.refunds", 0), TP("app-orders-changelog", 0)
    order = []

    class Client:  # the aiokafka consumer, in the consumer thread
        def assignment(self):
            return {TopicPartition("shop.orders", 0), TopicPartition("app-orders-changelog", 0)}  # not refunds:0

        def pause(self, *tps):
            assert all(type(tp) is TopicPartition for tp in tps)
            order.append(("aiokafka pause", sorted(tps)))

        def resume(self, *tps):
            order.append(("aiokafka resume", sorted(tps)))

    class Thread:
        def _ensure_consumer(self):
            return Client()

        async def call_thread(self, fun, *args):
            return await fun(*args)

    c = _RebalancingConsumer(order, {orders, refunds, changelog}, thread=Thread())
    after_seek(c, [lambda: order.append("hook")])
    c.resume_partitions({orders, refunds, changelog})
    asyncio.run(c.perform_seek())
    assert order == [("resume", [changelog]),
                     ("aiokafka pause", [TopicPartition("shop.orders", 0)]), "seek",
                     ("resume", [orders, refunds]),  # Faust's first: what aiokafka then returns is taken
                     ("aiokafka resume", [TopicPartition("shop.orders", 0)]), "hook"]


def _waiting_topology():
    t = SimpleNamespace(app=SimpleNamespace(rebalancing_count=1), gate=asyncio.Event(), sought=asyncio.Event())
    t.gate.set()
    return t


def test_a_record_taken_before_the_seek_waits_for_it_and_is_then_processed():
    async def scenario():
        t = _waiting_topology()
        msg = SimpleNamespace(acked=False)
        task = asyncio.ensure_future(Topology._ready(t, SimpleNamespace(message=msg)))
        await asyncio.sleep(0.3)
        assert not task.done()  # the committed offsets are not known yet
        t.sought.set()
        return await task, msg.acked

    assert asyncio.run(scenario()) == (True, False)


def test_a_record_still_waiting_when_a_rebalance_starts_is_dropped_unacknowledged():
    async def scenario():
        t = _waiting_topology()
        msg = SimpleNamespace(acked=False)
        task = asyncio.ensure_future(Topology._ready(t, SimpleNamespace(message=msg)))
        await asyncio.sleep(0.1)
        t.app.rebalancing_count += 1  # Faust waits for every record taken to be acked before it revokes
        return await asyncio.wait_for(task, 5), msg.acked

    # not processed, and marked so that Message.ack leaves its offset out of any commit
    assert asyncio.run(scenario()) == (False, True)


def test_a_record_waits_for_the_write_back():
    async def scenario():
        t = _waiting_topology()
        t.sought.set()
        t.gate.clear()  # a write-back is running
        task = asyncio.ensure_future(Topology._ready(t, SimpleNamespace(message=SimpleNamespace(acked=False))))
        await asyncio.sleep(0.1)
        assert not task.done()
        t.gate.set()
        return await task

    assert asyncio.run(scenario()) is True


def test_after_the_seek_the_alert_books_of_the_assignment_are_recovered_at_once():
    """What the chats are owed is posted after a restart even when no alert comes: the
    books are not left to their partition's next alert."""
    alerts = "p.shop.alerts"
    scanned = []
    t = SimpleNamespace(
        sought=asyncio.Event(), names={TOPIC_ALERTS: alerts}, alert_books={}, delivery=None,
        app=SimpleNamespace(consumer=SimpleNamespace(assignment=lambda: {TP(alerts, 1), TP(alerts, 3),
                                                                            TP("p.shop.orders", 0)})),
        alerts_docs=SimpleNamespace(of_partition=lambda p: scanned.append(p) or []))
    t._book = lambda p: Topology._book(t, p)
    Topology._after_seek(t)
    assert t.sought.is_set()
    assert sorted(t.alert_books) == [1, 3] == sorted(scanned)


def test_a_record_taken_past_the_offset_that_follows_is_counted():
    """The agents see a skipped range (the kill test's hole) as a record taken past the
    offset following the previous one, or past the committed offset after a seek."""
    orders = TP("shop.orders", 0)

    class Stream:
        async def events(self):
            for off in (12, 13, 13, 20, 22):  # 12 after committed 10; 13 again; 20 after 13; 22 after 20
                yield SimpleNamespace(message=SimpleNamespace(topic=orders.topic, partition=0, offset=off))

    async def scenario():
        t = _waiting_topology()
        t.sought.set()
        t.taken = {}
        t.app.consumer = SimpleNamespace(_committed_offset={orders: 10})
        return [m.offset async for m in Topology._messages(t, Stream())]

    before = OFFSET_JUMPS._value.get()
    assert asyncio.run(scenario()) == [12, 13, 13, 20, 22]  # every record is still processed
    assert OFFSET_JUMPS._value.get() - before == 3
