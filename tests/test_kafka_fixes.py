"""The worker's fixes around Faust: commits after table writes, partitions without
a committed offset read from their start, idleness of a merge source."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from faust.types import TP

from shopwatch.agents.app import build_app, seek_uncommitted_to_start
from shopwatch.agents.settings import settings
from shopwatch.agents.topology import Topology


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


def _topology(verified, last_offset, committed):
    return SimpleNamespace(app=SimpleNamespace(consumer=SimpleNamespace(_committed_offset=committed)),
                           verified=verified, last_offset=last_offset)


def test_a_merge_source_is_idle_only_when_the_broker_showed_it_read_after_the_waiting_records():
    ships, refunds = "shop.shipments", "shop.refunds"
    t = _topology({TP(ships, 1): (0, 100.0, 0), TP(refunds, 1): (5, 100.0, 0)}, {(refunds, 1): 4}, {})
    # both read to the end the broker gave at 100.0: idle for records produced a margin before
    assert Topology._idle(t, 1, [ships, refunds], since=98.5) == {ships, refunds}
    # a record produced shortly before (or after) that answer may not have reached the broker then
    assert Topology._idle(t, 1, [ships, refunds], since=99.5) == frozenset()
    assert Topology._idle(t, 1, [ships, refunds], since=100.5) == frozenset()
    # records the broker has and the worker did not read yet
    t.verified[TP(ships, 1)] = (7, 101.0, 0)
    assert Topology._idle(t, 1, [ships, refunds], since=98.5) == {refunds}
    # never asked (just assigned): not idle; read up to the committed offset counts
    t2 = _topology({TP(ships, 2): (7, 100.0, 0)}, {}, {TP(ships, 2): 7})
    assert Topology._idle(t2, 2, [ships, refunds], since=50.0) == {ships}
    # never committed and retention removed every record: nothing to read
    t3 = _topology({TP(ships, 3): (7, 100.0, 7)}, {}, {})
    assert Topology._idle(t3, 3, [ships], since=50.0) == {ships}
