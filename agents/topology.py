"""The core on Kafka: stateful Faust agents, tables, ticks and HTTP views.

Flow (all topic names configurable, see settings.py):

  shop.orders, shop.shipments, shop.refunds, shop.ticks ──► order agent ──┐
  shop.chats ─────────────────────────────────────────────► chat agent ──┤
       (per partition: streams.partition.KeyedPartition)                   │
               entity updates (items, version) keyed "platform:shop_id"   ▼
                                          shop.contribs ──► shop agent ──► shop.scores (compacted)
                                                  │
                      alerts keyed shop_id ──► shop.alerts ──► alert agent (streams.outbox.AlertBook)
                                                                        │ what each chat owes
                                                    delivery.py, a task per sink ──► 飞书 / 钉钉 / 企业微信 / Slack / Alertmanager

The order-keyed topics and shop.ticks have the same partition count, so
partition p of each is consumed by the same agent instance (concurrency=1).
State lives in plain RocksDB tables (rocksdict) keyed by the topic key bytes,
so Faust's table_route and the producer's partitioner agree on the owner.
Values are JSON documents carrying their partition, so each partition rebuilds
its timer heap, merge queues and outbox from its table after recovery and
sends again what a crash may have lost (streams/partition.py says why that is
safe). The worker drops its local RocksDB files after an unclean stop
(worker.py), so a restarted worker restores its tables from the changelogs:
a prefix of the writes it made, never writes the changelog did not get.

Clock domains: ``event`` (watermarks from event time, for backfills and the
replay-equivalence tests; `shopwatch tick --until T` moves the clock to T at
the end) and ``wall`` (live: a leader timer sends the wall clock as ticks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from urllib.parse import quote

import faust
import orjson
from aiokafka.partitioner import murmur2
from faust.types import TP
from prometheus_client import Counter
from yarl import URL

from shopwatch.schemas.events import (
    INPUT_TOPICS,
    ORDER_KEYED_TOPICS,
    TOPIC_ALERTS,
    TOPIC_CHATS,
    TOPIC_CONTRIBS,
    TOPIC_ORDERS,
    TOPIC_SCORES,
    TOPIC_TICKS,
)
from shopwatch.streams.clock import US, EventClock, WallClock, fmt_ts
from shopwatch.streams.orders import OrderLogic
from shopwatch.streams.outbox import AlertBook
from shopwatch.streams.partition import KeyedPartition, ShopPartition
from shopwatch.streams.rules import Rules
from shopwatch.streams.sessions import SessionLogic
from shopwatch.streams.shop import ShopLogic, ShopState

from . import metrics
from .delivery import Delivery
from .faust_fixes import committed_offset, leave_unacknowledged, partition_documents, write_documents
from .settings import Settings
from .source_ends import SourceEnds

log = logging.getLogger("shopwatch.topology")


ALERTS_EMITTED = Counter("shopwatch_alerts_total", "Alert changes recorded for the chat sinks (each once)",
                         ["kind", "status"])
ALERT_COPIES = Counter("shopwatch_alert_copies_total", "Copies of an alert change dropped (redelivery after a crash)")
LATE_RECORDS = Counter("shopwatch_late_records_total",
                       "Records older than their partition's event clock (applied, but after timers due before them)")

CONTRIBS_SENT = Counter("shopwatch_contributions_total", "Entity updates sent to the shop aggregates")
DOCS_WRITTEN = Counter("shopwatch_state_documents_written_total",
                       "State documents written back to the tables (once per key and commit)")
RECORDS_BEFORE_SEEK = Counter("shopwatch_records_before_seek_total",
                               "Records taken before a rebalance's seek and left to the next owner (another rebalance came)")
OFFSET_JUMPS = Counter("shopwatch_offset_jumps_total",
                       "Records taken past the offset that follows the previous one (or the committed one)")
HELD_MAX = 500  # entity updates held per stream before a batch goes out anyway (and per message)

ROCKSDB_OPTIONS = {
    "driver": "rocksdict",
    "write_buffer_size": 8 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 16 * 1024 * 1024,
    "block_cache_compressed_size": 4 * 1024 * 1024,
    "max_open_files": 256,
    "target_file_size_base": 16 * 1024 * 1024,
}


class Docs:
    """A Faust table of JSON documents seen with str keys (the table keys are their
    UTF-8 bytes, the same bytes as the topic keys, so table_route finds the owner)."""

    def __init__(self, table) -> None:
        self.table = table

    def get(self, key: str, default=None):
        return self.table.get(key.encode(), default)

    def of_partition(self, p: int) -> list:
        """(key, doc) of partition ``p`` (a scan of the local store: recovery only)."""
        return [(k.decode(), d) for k, d in partition_documents(self.table, p) if d.get("p") == p]

    def write(self, p: int, writes) -> None:
        """Write documents of partition ``p`` to the local store and the changelog, outside
        any event (the write-back): faust_fixes.write_documents."""
        write_documents(self.table, p, [(key.encode(), doc) for key, doc in writes])


class Topology:
    def __init__(self, app: faust.App, settings: Settings, rules: Rules, ingest, sinks=None) -> None:
        """``ingest(topic, partition, offset, key, value)`` validates one raw record
        (counting it, sending invalid ones to the DLQ) and returns the event or None;
        ``sinks`` (agents.sinks.load_sinks) are owed every alert change their
        routing takes, posted by the delivery tasks (delivery.py)."""
        self.app = app
        self.s = settings
        self.rules = rules
        self.ingest = ingest
        self.sinks = list(sinks or ())
        # event time (backfills, tests) or the wall clock, read here and carried by the ticks
        self.clock = EventClock() if settings.clock == "event" else WallClock(read=lambda: int(time.time() * US))
        self.domain = self.clock.domain
        P = settings.partitions
        t = settings.topic
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
        self.names = {n: t(n) for n in (*INPUT_TOPICS, TOPIC_TICKS, TOPIC_CONTRIBS, TOPIC_ALERTS, TOPIC_SCORES)}
        self.order_sources = [t(d) for d in ORDER_KEYED_TOPICS]
        for name in (t(TOPIC_TICKS), t(TOPIC_CONTRIBS)):
            app.require_topic(name, copartition_with=t(TOPIC_ORDERS) if name == t(TOPIC_TICKS) else None)
        self.ticks = app.topic(t(TOPIC_TICKS), partitions=P, **raw)
        self.contribs = app.topic(t(TOPIC_CONTRIBS), partitions=P, **raw)
        self.alerts = app.topic(t(TOPIC_ALERTS), partitions=P, **raw)
        self.scores = app.topic(t(TOPIC_SCORES), partitions=P, compacting=True, **raw)
        self.order_in = app.topic(*self.order_sources, t(TOPIC_TICKS), partitions=P, **raw)
        self.chat_in = app.topic(t(TOPIC_CHATS), partitions=P, **raw)
        # keys: the topic key bytes (so table_route and the producer agree); values: JSON documents
        schema = faust.Schema(key_type=bytes, key_serializer="raw", value_serializer="json")
        # (Faust picks the store's key codec from key_type, not from the schema)
        topts = {"partitions": P, "options": dict(ROCKSDB_OPTIONS), "schema": schema, "key_type": bytes}
        # One table per agent: its changelog partition is one ordered log of every
        # write the partition made, which streams.partition relies on after a crash.
        self.orders_table = app.Table("orders", **topts)
        self.sessions_table = app.Table("sessions", **topts)
        self.shops_table = app.Table("shops", **topts)
        self.alerts_table = app.Table("alerts", **topts)
        self.orders_docs = Docs(self.orders_table)
        self.sessions_docs = Docs(self.sessions_table)
        self.shops_docs = Docs(self.shops_table)
        self.alerts_docs = Docs(self.alerts_table)
        self.streams = [f"{k}:{p}" for k in ("orders", "chats") for p in range(P)]
        self.order_logic = OrderLogic(rules)
        self.session_logic = SessionLogic(rules)
        self.shop_logic = ShopLogic(rules)
        self.order_parts: dict[int, KeyedPartition] = {}
        self.chat_parts: dict[int, KeyedPartition] = {}
        self.shop_parts: dict[int, ShopPartition] = {}
        self.alert_books: dict[int, AlertBook] = {}
        self.delivery = (Delivery(self.sinks, lambda: self.alert_books, scores=self.score_snapshot, rules=rules)
                         if self.sinks else None)
        self.last_offset: dict[tuple, int] = {}  # (source topic, partition) -> last offset read
        self.taken: dict[int, dict] = {}  # stream -> {(topic, partition): offset of the last record taken}
        self.source_ends = SourceEnds()  # the broker's end offsets of the order sources: what _idle trusts
        self.last_produced: dict[int, float] = {}  # partition -> latest Kafka timestamp of its order records
        self.held: dict[str, list] = {}  # stream -> entity updates not sent yet (batched per shop partition)
        # cleared while the write-back runs: no record is processed between sending
        # the held outputs and draining the documents (KeyedPartition.drain)
        self.gate = asyncio.Event()
        self.gate.set()
        app.sw_before_commit.append(self.write_back)
        # set once a rebalance's seek to the committed offsets is done (app.after_seek): a
        # partition rebuilds its state only then, records taken before it are read again (_ready)
        self.sought = asyncio.Event()
        app.sw_after_seek.append(self._after_seek)
        metrics.register(self)  # /metrics reads the partitions at scrape time (agents/metrics.py)
        self._install()

    # ------------------------------------------------------------ partitions
    def _committed(self, topic: str, p: int) -> int | None:
        """The group's committed offset of (topic, p): outputs of records before it are durable."""
        return committed_offset(self.app.consumer, TP(topic, p))

    async def _order_part(self, p: int) -> KeyedPartition:
        return await self._keyed_part(self.order_parts, p, self.order_logic, self.order_sources, "order_id",
                                      "orders", self.orders_docs)

    async def _chat_part(self, p: int) -> KeyedPartition:
        return await self._keyed_part(self.chat_parts, p, self.session_logic, [self.names[TOPIC_CHATS]],
                                      "session_id", "chats", self.sessions_docs)

    async def _keyed_part(self, parts: dict, p: int, logic, sources: list, key: str, kind: str,
                          docs: Docs) -> KeyedPartition:
        """Partition ``p`` of an entity agent, recovered from its table on first use."""
        kp = parts.get(p)
        if kp is None:
            kp = parts[p] = KeyedPartition(logic, p, sources, self.domain, key_of=lambda ev: ev[key], kind=kind,
                                           committed=lambda src: self._committed(src, p), docs=docs)
            self._emit(p, kp.recover(docs.of_partition(p)), docs, f"{kind}:{p}")
        return kp

    async def _shop_part(self, p: int) -> ShopPartition:
        part = self.shop_parts.get(p)
        if part is None:
            contribs = self.names[TOPIC_CONTRIBS]
            part = self.shop_parts[p] = ShopPartition(self.shop_logic, self.domain, self.streams, partition=p,
                                                      committed=lambda: self._committed(contribs, p),
                                                      docs=self.shops_docs)
            self._emit(p, part.recover(self.shops_docs.of_partition(p)), self.shops_docs, None)
        return part

    def _after_seek(self) -> None:
        """The rebalance's seek is done: records may be processed, and the alert books of
        this worker's partitions are recovered now, not at their next alert, so what
        the chats are still owed (a crash during an outage) is posted even when no
        alert comes after the restart."""
        self.sought.set()
        alerts = self.names[TOPIC_ALERTS]
        for tp in self.app.consumer.assignment():
            if tp.topic == alerts:
                self._book(tp.partition)

    async def _alert_book(self, p: int) -> AlertBook:
        return self._book(p)

    def _book(self, p: int) -> AlertBook:
        book = self.alert_books.get(p)
        if book is None:
            routes = self.delivery.routes() if self.delivery is not None else []
            book = self.alert_books[p] = AlertBook(routes, p, docs=self.alerts_docs)
            book.recover(self.alerts_docs.of_partition(p))
            if self.delivery is not None:
                self.delivery.wake()
        return book

    async def score_snapshot(self, platform: str, shop_id: str) -> dict | None:
        """A shop's score snapshot as of its clock (the morning summaries): from memory or
        the table when this worker owns the shop, else from its owner's score view."""
        key = f"{platform}:{shop_id}"
        part = self.shop_parts.get(self.partition_of(key))
        st = part.states.get(key) if part is not None else None
        if st is None:
            owner = None
            with contextlib.suppress(Exception):  # no assignment metadata yet: read the table
                owner = self.app.router.key_store(self.shops_table.name, key.encode())
            me = URL(str(self.app.conf.canonical_url))
            if owner is not None and (owner.host, owner.port) != (me.host, me.port):
                headers = {"Authorization": f"Bearer {self.s.web_token}"} if self.s.web_token else {}
                url = owner.with_path(f"/shops/{quote(platform, safe='')}/{quote(shop_id, safe='')}/score",
                                      encoded=True)
                try:
                    async with self.app.http_client.get(url, headers=headers, timeout=10) as resp:
                        return await resp.json() if resp.status == 200 else None
                except (TimeoutError, OSError, ValueError) as exc:
                    log.warning("score of %s from %s: %r", key, owner, exc)
                    return None
            doc = self.shops_docs.get(key)
            if doc is None or doc.get("s") is None:
                return None
            st = ShopState.restore(doc["s"])
        return self.shop_logic.snapshot(st, st.now_us or 0)

    def partition_of(self, key: str) -> int:
        """The partition a key's records (and documents) are on: the producer's default partitioner."""
        return (murmur2(key.encode()) & 0x7FFFFFFF) % self.s.partitions

    def _idle(self, p: int, sources, since: float) -> frozenset:
        """Sources of partition ``p`` with nothing more to read for records produced
        up to ``since`` (epoch seconds, a Kafka record timestamp): source_ends.py.

        The consumer's own highwater is not enough: it comes with each partition's
        last fetch and can be older than records of another source in hand (at
        start-up an empty source looked idle while its first records were on
        their way, and the merge ran hours of event time ahead of them)."""
        consumer = self.app.consumer

        def position(tp, first):
            last = self.last_offset.get((tp.topic, tp.partition))
            return last + 1 if last is not None else (committed_offset(consumer, tp) or first)

        return frozenset(tp.topic for tp in self.source_ends.idle([TP(s, p) for s in sources], since, position))

    # --------------------------------------------------------------- outputs
    def _emit(self, p: int, out, docs: Docs, stream: str | None) -> None:
        """Send a step's alerts and snapshots, hold its entity updates, write the
        documents recovery gave (a step's own documents wait for the write-back).
        Synchronous: a record is processed with no await, so the write-back never
        sees one half done."""
        for a in out.alerts:
            self.alerts.send_soon(key=a["shop_id"].encode(), value=orjson.dumps(a))
        if out.alerts:
            metrics.observe_alerts(out.alerts)  # record (or tick) -> alert latency
        if out.updates:
            CONTRIBS_SENT.inc(len(out.updates))
            held = self.held.setdefault(stream, [])
            held.extend(out.updates)
            if len(held) >= HELD_MAX:
                self._send_held(stream)
        for snap in out.snapshots:
            self.scores.send_soon(key=f"{snap['platform']}:{snap['shop_id']}".encode(), value=orjson.dumps(snap))
        if out.writes:
            docs.write(p, out.writes)

    def _send_held(self, stream: str) -> None:
        """A stream's held updates, one message per shop partition (the partition its
        shop key hashes to, as a keyed send would pick)."""
        held = self.held.pop(stream, None)
        if not held:
            return
        by_q: dict[int, list] = {}
        for u in held:
            by_q.setdefault(self.partition_of(u["shop"]), []).append(u)
        for q, us in by_q.items():
            for i in range(0, len(us), HELD_MAX):
                self.contribs.send_soon(key=b"__batch__", partition=q,
                                        value=orjson.dumps({"stream": stream, "updates": us[i:i + HELD_MAX]}))

    def _forward_watermark(self, stream: str, now_us: int, flush: bool) -> None:
        """After its own updates, a stream tells every shop partition its clock."""
        self._send_held(stream)
        msg = orjson.dumps({"wm": now_us, "stream": stream, "flush": flush})
        for q in range(self.s.partitions):
            self.contribs.send_soon(key=b"__tick__", value=msg, partition=q)

    async def write_back(self) -> None:
        """Before each offset commit (app.sw_before_commit), the protocol of
        KeyedPartition.drain: with processing paused, every held output is sent and
        flushed, then every document changed since the last write-back is written;
        the commit then flushes those writes before it commits the offsets."""
        self.gate.clear()
        try:
            for stream in list(self.held):
                self._send_held(stream)
            await self.app.producer.flush()
            assigned = {tp.partition for tp in self.app.consumer.assignment()}
            for parts, docs in ((self.order_parts, self.orders_docs), (self.chat_parts, self.sessions_docs),
                                (self.shop_parts, self.shops_docs), (self.alert_books, self.alerts_docs)):
                for p, part in parts.items():
                    if p in assigned:
                        writes = part.drain()
                        if writes:
                            docs.write(p, writes)
                            DOCS_WRITTEN.inc(len(writes))
                        part.trim()
        finally:
            self.gate.set()

    async def _ready(self, event) -> bool:
        """Wait until the write-back is over and this rebalance's seek to the committed
        offsets is done (app.after_seek: a partition rebuilds its state only once it
        knows which queued records and outputs are committed). False when another
        rebalance starts first: the record is then dropped without being
        acknowledged (no commit covers it, and Faust's revocation, which waits for
        every record taken to be acknowledged, is not held up), and the
        partition's next owner reads it from the committed offset."""
        rebalances = self.app.rebalancing_count  # (counted as a rebalance starts, before Faust waits for acks)
        while not (self.gate.is_set() and self.sought.is_set()):
            if self.sought.is_set():
                await self.gate.wait()
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.sought.wait(), 0.2)
            if self.app.rebalancing_count != rebalances:
                leave_unacknowledged(event.message)
                RECORDS_BEFORE_SEEK.inc()
                return False
        return True

    async def _messages(self, stream):
        """The messages of ``stream``'s events, each once ``_ready`` for it (an event it
        turns down is dropped unacknowledged)."""
        sid = id(stream)
        async for event in stream.events():
            if not (self.gate.is_set() and self.sought.is_set()) and not await self._ready(event):
                continue
            m = event.message
            key = (m.topic, m.partition)
            taken = self.taken.get(sid)
            if taken is None:  # (cleared at each rebalance)
                taken = self.taken[sid] = {}
            prev = taken.get(key)
            expected = prev + 1 if prev is not None else committed_offset(self.app.consumer, TP(*key))
            if expected is not None and m.offset > expected:
                # records the consumer skipped (faust_fixes.after_seek closes the way it
                # happened); a transaction's commit marker also takes one offset, so a gap
                # of one is only counted
                OFFSET_JUMPS.inc()
                log.log(logging.WARNING if m.offset > expected + 1 else logging.DEBUG,
                        "%s:%d: offset %d taken %s: offsets %d-%d not taken", m.topic, m.partition, m.offset,
                        f"after {prev}" if prev is not None else "first after the seek", expected, m.offset - 1)
            taken[key] = m.offset
            yield m

    # ---------------------------------------------------------------- agents
    def _install(self) -> None:
        app = self.app
        ticks_name = self.names[TOPIC_TICKS]

        @app.agent(self.order_in, name="shopwatch-orders", concurrency=1)
        async def order_agent(stream):
            async for m in self._messages(stream):
                p = m.partition
                kp = await self._order_part(p)
                if m.topic == ticks_name:
                    tick = orjson.loads(m.value)
                    idle = (self._idle(p, self.order_sources, self.last_produced.get(p, 0.0))
                            if self.clock.merges else frozenset())
                    out = kp.on_tick(m.topic, m.offset, tick.get("now_us"), flush=tick.get("flush", False), idle=idle)
                    self._emit(p, out, self.orders_docs, f"orders:{p}")
                    wm = tick.get("now_us") if tick.get("now_us") is not None else kp.watermark
                    if wm is not None:
                        self._forward_watermark(f"orders:{p}", wm, tick.get("flush", False))
                    continue
                self.last_offset[(m.topic, p)] = m.offset
                if m.timestamp and m.timestamp > self.last_produced.get(p, 0.0):
                    self.last_produced[p] = m.timestamp
                ev = self.ingest(m.topic, p, m.offset, m.key, m.value, m.timestamp)
                if ev is None:
                    continue
                # only the event clock merges sources; the wall clock applies records as they come
                idle = (self._idle(p, self.order_sources, self.last_produced[p] if m.timestamp else time.time())
                        if self.clock.merges else frozenset())
                if kp.is_late(ev):
                    LATE_RECORDS.inc()
                    log.warning("late record %s:%d@%d (ts %s, partition clock %s; idle %s)", m.topic, p, m.offset,
                                fmt_ts(ev["ts_us"]), fmt_ts(kp.watermark), sorted(idle))
                out = kp.on_record(m.topic, m.offset, ev, idle=idle)
                self._emit(p, out, self.orders_docs, f"orders:{p}")

        @app.agent(self.chat_in, name="shopwatch-chats", concurrency=1)
        async def chat_agent(stream):
            async for m in self._messages(stream):
                p = m.partition
                kp = await self._chat_part(p)
                ev = self.ingest(m.topic, p, m.offset, m.key, m.value, m.timestamp)
                if ev is None:
                    continue
                out = kp.on_record(m.topic, m.offset, ev)
                self._emit(p, out, self.sessions_docs, f"chats:{p}")

        @app.agent(self.ticks, name="shopwatch-chat-ticks", concurrency=1)
        async def chat_tick_agent(stream):
            # A chat partition's only timers are its retirement sweeps; a tick fires those due
            # (and forgets retired sessions once their notices are committed), then passes
            # the clock on to the shops.
            async for m in self._messages(stream):
                tick = orjson.loads(m.value)
                p = m.partition
                kp = await self._chat_part(p)
                flush = tick.get("flush", False)
                self._emit(p, kp.on_tick(m.topic, m.offset, tick.get("now_us"), flush=flush), self.sessions_docs,
                           f"chats:{p}")
                wm = tick.get("now_us") if tick.get("now_us") is not None else kp.watermark
                if wm is not None:
                    self._forward_watermark(f"chats:{p}", wm, flush)

        @app.agent(self.contribs, name="shopwatch-shops", concurrency=1)
        async def shop_agent(stream):
            async for m in self._messages(stream):
                p = m.partition
                part = await self._shop_part(p)
                d = orjson.loads(m.value)
                if "wm" in d:
                    self._emit(p, part.on_watermark(m.offset, d["stream"], d["wm"], d.get("flush", False)),
                               self.shops_docs, None)
                    continue
                stream_name = d["stream"]
                for i, u in enumerate(d["updates"]):
                    u["stream"] = stream_name
                    self._emit(p, part.on_update(u, m.offset, index=i), self.shops_docs, None)

        @app.agent(self.alerts, name="shopwatch-alerts", concurrency=1)
        async def alert_agent(stream):
            # Every alert change once: shop.alerts is at-least-once, so the book keeps each
            # alert's status per shop and drops a copy; what the chats owe is written back
            # with it once per commit, and the delivery tasks post it (never awaited here).
            async for m in self._messages(stream):
                book = await self._alert_book(m.partition)
                a = orjson.loads(m.value)
                if book.on_change(a, time.time()):
                    ALERTS_EMITTED.labels(a["kind"], a["status"]).inc()
                    if self.delivery is not None:
                        self.delivery.wake()
                else:
                    ALERT_COPIES.inc()

        if self.delivery is not None:
            @app.task
            async def deliver():
                await self.delivery.run()

        @app.timer(interval=1.0, on_leader=True)
        async def send_ticks():
            now = self.clock.tick_time()
            value = orjson.dumps({} if now is None else {"now_us": now})
            for q in range(self.s.partitions):
                await self.ticks.send(key=b"__tick__", value=value, partition=q)

        @app.timer(interval=0.5)
        async def verify_source_ends():
            # The broker's end offsets of every partition of the order sources, and when
            # they were asked for: what _idle trusts (source_ends.py).
            if not self.clock.merges:
                return
            c = app.consumer
            mine = [tp for tp in c.assignment() if tp.topic in self.order_sources]
            if not mine or app.rebalancing:
                return
            every = [TP(s, q) for s in self.order_sources for q in range(self.s.partitions)]
            asked = time.time()
            generation = app.consumer_generation_id
            try:
                ends = await c.highwaters(*every)
                starts = await c.earliest_offsets(*mine)
            except Exception as exc:  # the broker is away: nothing is idle meanwhile
                log.debug("end offsets of the order sources: %r", exc)
                return
            if app.rebalancing or app.consumer_generation_id != generation:
                return  # asked before a rebalance: _reset has started afresh
            self.source_ends.observe({TP(tp.topic, tp.partition): e for tp, e in ends.items()}, asked,
                                     {TP(tp.topic, tp.partition): o for tp, o in starts.items()},
                                     mine=[TP(tp.topic, tp.partition) for tp in mine])

        async def _reset(*_args, **_kw):
            # what was not written back is not committed either: the new owner reads it again
            self.held.clear()
            self.source_ends.clear()
            self.last_produced.clear()
            self.last_offset.clear()
            self.taken.clear()
            self.order_parts.clear()
            self.chat_parts.clear()
            self.shop_parts.clear()
            self.alert_books.clear()

        async def _revoked(*args, **kw):
            self.sought.clear()  # (a rebalance always revokes first, if only the empty set)
            self.taken.clear()
            await _reset(*args, **kw)

        app.on_partitions_revoked.connect(_revoked)
        app.on_partitions_assigned.connect(_reset)
        self._install_views()

    # ----------------------------------------------------------------- views
    def _install_views(self) -> None:
        from .views import install_views

        install_views(self.app, self)
