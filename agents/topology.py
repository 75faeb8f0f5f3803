"""The core on Kafka: stateful Faust agents, tables, ticks and HTTP views.

Flow (all topic names configurable, see settings.py):

  shop.orders, shop.shipments, shop.refunds, shop.ticks ──► order agent ──┐
  shop.chats ─────────────────────────────────────────────► chat agent ──┤
       (per partition: streams.partition.KeyedPartition)                   │
                              contributions keyed "platform:shop_id"       ▼
                                          shop.contribs ──► shop agent ──► shop.scores (compacted)
                                                  │
                      alerts keyed shop_id ──► shop.alerts ──► alert agent (open alerts, chat sinks)

The order-keyed topics and shop.ticks have the same partition count, so
partition p of each is consumed by the same agent instance (concurrency=1).
State lives in plain RocksDB tables (rocksdict) keyed by the topic key bytes,
so Faust's table_route and the producer's partitioner agree on the owner.
Values are orjson bytes carrying their partition, so each partition rebuilds
its timer heap and merge queues from the tables after recovery.

Clock domains: ``event`` (watermarks from event time, for backfills and the
replay-equivalence tests; `shopwatch tick --until T` moves the clock to T at
the end) and ``wall`` (live: a leader timer sends the wall clock as ticks).
"""

from __future__ import annotations

import logging
import time

import faust
import orjson
from faust.types import TP
from prometheus_client import Counter

from shopwatch.schemas.events import INPUT_TOPICS, TOPIC_CHATS, TOPIC_ORDERS, TOPIC_REFUNDS, TOPIC_SHIPMENTS
from shopwatch.streams.clock import EVENT, US, WALL
from shopwatch.streams.config import Rules
from shopwatch.streams.orders import OrderLogic, OrderState
from shopwatch.streams.partition import KeyedPartition, ShopPartition
from shopwatch.streams.sessions import SessionLogic, SessionState
from shopwatch.streams.shop import ShopLogic, ShopState

from .settings import Settings

log = logging.getLogger("shopwatch.topology")

TOPIC_TICKS = "shop.ticks"
TOPIC_CONTRIBS = "shop.contribs"
TOPIC_ALERTS = "shop.alerts"
TOPIC_SCORES = "shop.scores"
TOPIC_DLQ = "shop.dlq"

ALERTS_EMITTED = Counter("shopwatch_alerts_total", "Alerts emitted", ["kind", "status"])
CONTRIBS_SENT = Counter("shopwatch_contributions_total", "Indicator contribution batches sent to shops")

ROCKSDB_OPTIONS = {
    "driver": "rocksdict",
    "write_buffer_size": 8 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 16 * 1024 * 1024,
    "block_cache_compressed_size": 4 * 1024 * 1024,
    "max_open_files": 256,
    "target_file_size_base": 16 * 1024 * 1024,
}


def _doc(p: int, state) -> dict:
    return {"p": p, "s": state.snapshot()}


class TableStates:
    """Dict-like view of a table of state snapshots with a per-step write-back cache."""

    def __init__(self, table, state_cls, partition: int) -> None:
        self.table = table
        self.cls = state_cls
        self.p = partition
        self.cache: dict = {}

    def _k(self, key) -> bytes:
        return key.encode() if isinstance(key, str) else key

    def get(self, key, default=None):
        st = self.cache.get(key)
        if st is not None:
            return st
        doc = self.table.get(self._k(key))
        if doc is None:
            return default
        st = self.cls.restore(doc["s"])
        self.cache[key] = st
        return st

    def __getitem__(self, key):
        st = self.get(key)
        if st is None:
            raise KeyError(key)
        return st

    def __setitem__(self, key, st) -> None:
        self.cache[key] = st

    def __contains__(self, key) -> bool:
        return self.get(key) is not None

    def flush(self, dirty) -> None:
        for key in dirty:
            st = self.cache.get(key)
            if st is not None:
                self.table[self._k(key)] = _doc(self.p, st)
        self.cache.clear()

    def items_of_partition(self):
        for k, d in list(self.table.items()):
            if d.get("p") == self.p:
                yield (k.decode() if isinstance(k, bytes) else k), self.cls.restore(d["s"])


class Topology:
    def __init__(self, app: faust.App, settings: Settings, rules: Rules, ingest) -> None:
        """``ingest(topic, partition, offset, key, value)`` validates one raw record
        (counting it, sending invalid ones to the DLQ) and returns the event or None."""
        self.app = app
        self.s = settings
        self.rules = rules
        self.ingest = ingest
        self.domain = EVENT if settings.clock == "event" else WALL
        P = settings.partitions
        t = settings.topic
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
        self.names = {n: t(n) for n in (*INPUT_TOPICS, TOPIC_TICKS, TOPIC_CONTRIBS, TOPIC_ALERTS, TOPIC_SCORES)}
        self.order_sources = [t(TOPIC_ORDERS), t(TOPIC_SHIPMENTS), t(TOPIC_REFUNDS)]
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
        self.orders_table = app.Table("orders", **topts)
        self.pending_table = app.Table("pending", **topts)
        self.sessions_table = app.Table("sessions", **topts)
        self.shops_table = app.Table("shops", **topts)
        self.shop_pending_table = app.Table("shop-pending", **topts)
        self.streams = [f"{k}:{p}" for k in ("orders", "chats") for p in range(P)]
        self.alerts_table = app.Table("alerts", **topts)
        self.order_logic = OrderLogic(rules)
        self.session_logic = SessionLogic(rules)
        self.shop_logic = ShopLogic(rules)
        self.order_parts: dict[int, tuple] = {}
        self.chat_parts: dict[int, tuple] = {}
        self.shop_parts: dict[int, ShopPartition] = {}
        self.last_offset: dict[tuple, int] = {}  # (source topic, partition) -> last offset read
        self.shop_wm: dict[int, dict] = {}  # shop partition -> stream -> [watermark, flushed watermark]
        self.shop_final: dict[int, int] = {}  # shop partition -> the last backfill end it flushed
        self.shop_dirty: dict[int, set] = {}
        self._install()

    # ------------------------------------------------------------ partitions
    def _order_part(self, p: int):
        part = self.order_parts.get(p)
        if part is None:
            store = TableStates(self.orders_table, OrderState, p)
            kp = KeyedPartition(self.order_logic, p, self.order_sources, self.domain, key_of=lambda ev: ev["order_id"])
            pending = {}
            for k, d in list(self.pending_table.items()):
                if d.get("p") == p:
                    pending[k.decode()] = d["s"]
            kp.recover(store.items_of_partition(), pending, store=store)
            part = self.order_parts[p] = (kp, store)
        return part

    def _chat_part(self, p: int):
        part = self.chat_parts.get(p)
        if part is None:
            store = TableStates(self.sessions_table, SessionState, p)
            kp = KeyedPartition(self.session_logic, p, [self.names[TOPIC_CHATS]], self.domain,
                                key_of=lambda ev: ev["session_id"])
            kp.recover(store.items_of_partition(), {}, store=store)
            part = self.chat_parts[p] = (kp, store)
        return part

    def _shop_part(self, p: int) -> ShopPartition:
        part = self.shop_parts.get(p)
        if part is None:
            part = self.shop_parts[p] = ShopPartition(self.shop_logic, self.domain, self.streams)
            store = TableStates(self.shops_table, ShopState, p)
            pending = {}
            for k, d in list(self.shop_pending_table.items()):
                if d.get("p") == p:
                    pending[k.decode()] = d["s"]
            part.recover(dict(store.items_of_partition()), pending)
        return part

    def _idle(self, p: int, sources) -> frozenset:
        """Sources of partition ``p`` with nothing more to read now: the consumer has
        reached their high watermark. Such a source cannot bring anything earlier
        at the moment, so it does not hold back the event-time merge (a record
        produced there later is applied late, never lost)."""
        consumer = self.app.consumer
        out = []
        for s in sources:
            tp = TP(s, p)
            try:
                hw = consumer.highwater(tp)
            except Exception:  # not assigned (yet)
                hw = None
            if hw is None:
                continue
            last = self.last_offset.get((s, p))
            if last is not None:
                pos = last + 1
            else:
                pos = getattr(consumer, "_committed_offset", {}).get(tp) or 0
            if pos >= hw:
                out.append(s)
        return frozenset(out)

    # --------------------------------------------------------------- outputs
    async def _emit(self, p: int, kp: KeyedPartition, store: TableStates, out, stream: str) -> None:
        for a in out.alerts:
            ALERTS_EMITTED.labels(a["kind"], a["status"]).inc()
            await self.alerts.send(key=a["shop_id"].encode(), value=orjson.dumps(a))
        batches: dict[tuple, list] = {}
        for src, off, idx, c in out.contribs:
            b = batches.get((c[0], c[1], src, off))
            if b is None:
                b = batches[(c[0], c[1], src, off)] = [idx, []]
            b[1].append(c)
        for (platform, shop_id, src, off), (idx, cs) in batches.items():
            CONTRIBS_SENT.inc()
            await self.contribs.send(key=f"{platform}:{shop_id}".encode(), value=orjson.dumps(
                {"stream": stream, "src": f"{src}:{p}", "off": off, "i": idx, "cs": cs}))
        store.flush(out.dirty)
        for key in out.pending_changed:
            plist = kp.pending.get(key)
            if plist:
                self.pending_table[key.encode()] = {"p": p, "s": plist}
            else:
                self.pending_table.pop(key.encode(), None)

    async def _forward_watermark(self, stream: str, now_us: int, flush: bool) -> None:
        """After its own contributions, a stream tells every shop partition its clock."""
        msg = orjson.dumps({"wm": now_us, "stream": stream, "flush": flush})
        for q in range(self.s.partitions):
            await self.contribs.send(key=b"__tick__", value=msg, partition=q)

    # ---------------------------------------------------------------- agents
    def _install(self) -> None:
        app = self.app
        ticks_name = self.names[TOPIC_TICKS]

        @app.agent(self.order_in, name="shopwatch-orders", concurrency=1)
        async def order_agent(stream):
            async for event in stream.events():
                m = event.message
                p = m.partition
                kp, store = self._order_part(p)
                if m.topic == ticks_name:
                    tick = orjson.loads(m.value)
                    out = kp.on_tick(m.topic, m.offset, tick.get("now_us"), flush=tick.get("flush", False),
                                     idle=self._idle(p, self.order_sources))
                    await self._emit(p, kp, store, out, f"orders:{p}")
                    wm = tick.get("now_us") if tick.get("now_us") is not None else kp.watermark
                    if wm is not None:
                        await self._forward_watermark(f"orders:{p}", wm, tick.get("flush", False))
                    continue
                self.last_offset[(m.topic, p)] = m.offset
                ev = self.ingest(m.topic, p, m.offset, m.key, m.value)
                if ev is None:
                    continue
                out = kp.on_record(m.topic, m.offset, ev, idle=self._idle(p, self.order_sources))
                await self._emit(p, kp, store, out, f"orders:{p}")

        @app.agent(self.chat_in, name="shopwatch-chats", concurrency=1)
        async def chat_agent(stream):
            async for event in stream.events():
                m = event.message
                p = m.partition
                kp, store = self._chat_part(p)
                ev = self.ingest(m.topic, p, m.offset, m.key, m.value)
                if ev is None:
                    continue
                out = kp.on_record(m.topic, m.offset, ev)
                await self._emit(p, kp, store, out, f"chats:{p}")

        @app.agent(self.ticks, name="shopwatch-chat-ticks", concurrency=1)
        async def chat_tick_agent(stream):
            # Chats have no timers; their partition only passes the clock on to the shops.
            async for event in stream.events():
                tick = orjson.loads(event.message.value)
                p = event.message.partition
                wm = tick.get("now_us")
                if wm is None and p in self.chat_parts:
                    wm = self.chat_parts[p][0].watermark
                if wm is not None:
                    await self._forward_watermark(f"chats:{p}", wm, tick.get("flush", False))

        @app.agent(self.contribs, name="shopwatch-shops", concurrency=1)
        async def shop_agent(stream):
            async for event in stream.events():
                m = event.message
                p = m.partition
                part = self._shop_part(p)
                d = orjson.loads(m.value)
                alerts: list = []
                dirty: set = set()
                snaps: list = []
                changed: set = set()
                idle = frozenset()  # shop streams promise their progress with watermarks instead
                if "wm" in d:
                    # per stream: [greatest watermark, greatest flushed watermark]
                    wms = self.shop_wm.setdefault(p, {})
                    w = wms.setdefault(d["stream"], [d["wm"], None])
                    w[0] = max(w[0], d["wm"])
                    if d.get("flush"):
                        w[1] = d["wm"] if w[1] is None else max(w[1], d["wm"])
                    part.merger.promise(d["stream"], d["wm"])
                    if len(wms) >= len(self.streams):
                        low = min(x[0] for x in wms.values())
                        flushed = [x[1] for x in wms.values()]
                        final = None if None in flushed else min(flushed)
                        flush = final is not None and final != self.shop_final.get(p)
                        if flush:
                            self.shop_final[p] = low = final
                        # the end of a backfill (`shopwatch tick --until`) fires timers due at T too, like replay
                        snaps, changed = part.on_tick(low, self.domain == EVENT and flush, alerts, dirty,
                                                      flush=flush, idle=idle)
                        # on change (at most once a round), and every shop at the end of a backfill
                        keys = set(part.states) if flush else self.shop_dirty.pop(p, set()) | dirty
                        for key in sorted(keys):
                            snaps.append(self.shop_logic.snapshot(part.states[key], low))
                    else:
                        _snaps, changed = part.on_tick(None, False, alerts, dirty, idle=idle)
                else:
                    cs = [tuple(c) for c in d["cs"]]
                    changed = part.on_batch(m.key.decode(), d["stream"], d["src"], d["off"], d["i"], cs, alerts,
                                            dirty, idle=idle)
                self.shop_dirty.setdefault(p, set()).update(dirty)
                for a in alerts:
                    ALERTS_EMITTED.labels(a["kind"], a["status"]).inc()
                    await self.alerts.send(key=a["shop_id"].encode(), value=orjson.dumps(a))
                for snap in snaps:
                    await self.scores.send(key=f"{snap['platform']}:{snap['shop_id']}".encode(),
                                           value=orjson.dumps(snap))
                for key in dirty:
                    self.shops_table[key.encode()] = _doc(p, part.states[key])
                for key in changed:
                    plist = part.pending.get(key)
                    if plist:
                        self.shop_pending_table[key.encode()] = {"p": p, "s": plist}
                    else:
                        self.shop_pending_table.pop(key.encode(), None)

        @app.agent(self.alerts, name="shopwatch-alerts", concurrency=1)
        async def alert_agent(stream):
            # Open alerts per shop for GET /alerts; a redelivered alert change is dropped here.
            async for event in stream.events():
                a = orjson.loads(event.message.value)
                k = a["shop_id"].encode()
                cur = dict(self.alerts_table.get(k) or {})
                prev = cur.get(a["alert_id"])
                if prev is not None and prev["status"] == a["status"]:
                    continue
                if a["status"] == "firing":
                    cur[a["alert_id"]] = a
                else:
                    cur.pop(a["alert_id"], None)
                self.alerts_table[k] = cur

        @app.timer(interval=1.0, on_leader=True)
        async def send_ticks():
            # Wall clock: ticks carry now; event clock: empty ticks let idle sources release the merge.
            msg = {"now_us": int(time.time() * US)} if self.domain == WALL else {}
            value = orjson.dumps(msg)
            for q in range(self.s.partitions):
                await self.ticks.send(key=b"__tick__", value=value, partition=q)

        async def _reset(*_args, **_kw):
            self.last_offset.clear()
            self.shop_wm.clear()
            self.order_parts.clear()
            self.chat_parts.clear()
            self.shop_parts.clear()

        app.on_partitions_revoked.connect(_reset)
        app.on_partitions_assigned.connect(_reset)
        self._install_views()

    # ----------------------------------------------------------------- views
    def _install_views(self) -> None:
        app = self.app
        topo = self

        @app.page("/shops/{platform}/{shop_id}/score")
        async def shop_score(web, request, platform, shop_id):
            key = f"{platform}:{shop_id}"
            try:
                return await app.router.route_req(topo.shops_table.name, key.encode(), web, request)
            except faust.exceptions.SameNode:
                pass
            doc = topo.shops_table.get(key.encode())
            if doc is None:
                return web.json({"error": "unknown shop", "shop": key}, status=404)
            st = ShopState.restore(doc["s"])
            return web.json(topo.shop_logic.snapshot(st, st.now_us or 0))

        @app.page("/orders/{order_id}")
        async def order_view(web, request, order_id):
            try:
                return await app.router.route_req(topo.orders_table.name, order_id.encode(), web, request)
            except faust.exceptions.SameNode:
                pass
            doc = topo.orders_table.get(order_id.encode())
            if doc is None:
                return web.json({"error": "unknown order", "order_id": order_id}, status=404)
            st = OrderState.restore(doc["s"])
            from shopwatch.streams.clock import fmt_ts

            return web.json({
                "order_id": order_id, "platform": st.platform, "shop_id": st.shop_id,
                "paid_at": fmt_ts(st.paid_us) if st.paid_us else None,
                "latest_ship_time": fmt_ts(st.lst_us) if st.lst_us else None,
                "shipped_at": fmt_ts(st.shipped_us) if st.shipped_us else None,
                "cancelled_at": fmt_ts(st.cancelled_us) if st.cancelled_us else None,
                "signed_at": fmt_ts(st.signed_us) if st.signed_us else None,
                "deadlines": {n: fmt_ts(d) for n, d in topo.order_logic.timers(st).items()},
                "open_alerts": sorted(st.open.values()),
                "refunds": sorted(st.refunds),
            })

        @app.page("/alerts")
        async def alerts_view(web, request):
            shop_id = request.query.get("shop_id")
            status = request.query.get("status", "firing")
            if not shop_id:
                return web.json({"error": "shop_id is required"}, status=400)
            try:
                return await app.router.route_req(topo.alerts_table.name, shop_id.encode(), web, request)
            except faust.exceptions.SameNode:
                pass
            cur = topo.alerts_table.get(shop_id.encode()) or {}
            items = [a for a in cur.values() if status in ("firing", "all")]
            return web.json({"shop_id": shop_id, "status": status, "alerts": sorted(items, key=lambda a: a["at"])})
