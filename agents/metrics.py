"""What an operator watches (issue 15): metrics read from the live topology when /metrics is scraped.

:class:`TopologyCollector` is a Prometheus collector registered once per worker
(:func:`register`, from ``Topology.__init__``). It reads the partitions, the
consumer and Faust's table recovery at scrape time, in the event loop that runs
the agents (the /metrics view calls ``generate_latest``), so it sees each
partition between two records and the hot path pays nothing for it. Every
gauge is about what *this* worker owns: sum (or max) over the workers.

Per partition (``kind`` ``orders``, ``chats`` or ``shops``; ``partition`` the
topic partition):

- ``shopwatch_consumer_lag{topic,partition}``: records of a consumed topic
  (the four input topics, ``shop.ticks``, ``shop.contribs``, ``shop.alerts``)
  behind the end offset: the highwater of the consumer's last fetch minus the
  group's committed offset (Kafka's consumer-group lag; the read position
  before the first commit);
- ``shopwatch_watermark_timestamp_seconds{kind,partition}`` and
  ``shopwatch_watermark_lag_seconds{kind,partition}``: the partition's event
  clock and how far it is behind the wall clock, i.e. how late a deadline
  alert due now would fire. On the event clock every partition has one; on the
  wall clock the order and chat partitions apply records on arrival and keep
  none, and the shop partitions' clock is the lowest of every stream's last
  wall-clock tick. ``shopwatch_event_clock`` is 1 on the event clock
  (backfills: the lag is then how old the data is, not a delay);
- ``shopwatch_entities{kind,partition}``: orders or chat sessions kept in
  state (not retired), shops owned; ``shopwatch_open_entities{kind,partition}``:
  orders (sessions) with a deadline not reached yet on the partition's clock;
  ``shopwatch_pending_deadlines{kind,partition}``: timer heap entries
  (deadlines, daily retention sweeps, shop timers; an entry the state no longer
  wants stays until due and is skipped then); ``shopwatch_merge_queued{kind,partition}``:
  records (shop side: entity updates) held in the event-time merge.

Recovery: ``shopwatch_recovery_in_progress`` (Faust restores tables),
``shopwatch_table_partitions_assigned{table}`` and
``shopwatch_table_partitions_recovered{table}`` (active changelog partitions),
``shopwatch_table_recovery_remaining_records{table}``, and
``shopwatch_partitions_active{kind}`` (``orders``, ``chats``, ``shops``,
``alerts``: partitions with a state object in memory, made from the table on
the first record after an assignment; a chat or alert partition without
traffic has none).

Per shop, while the shops this worker owns (``shopwatch_shops``) are at most
``SHOPWATCH_SHOP_METRICS_MAX`` (default 200; above it no per-shop series is
exported, ``shopwatch_shop_metrics_suppressed`` is 1 and a warning is logged):
``shopwatch_shop_score{platform,shop}`` (小红书 服务分),
``shopwatch_shop_indicator{platform,shop,indicator}`` (each indicator's value,
none while its denominator is 0), ``shopwatch_shop_dimension_score{platform,shop,dimension}``
(小红书) and ``shopwatch_shop_level{platform,shop}`` (抖音): the snapshot the
``/shops/{platform}/{shop_id}/score`` view answers.

``shopwatch_alert_severity_info{kind,severity}`` (1 per alert kind, its
default severity: ``level_changed`` is critical when the level goes down) lets
a query give ``shopwatch_alerts_total{kind,status}`` a severity.

The one metric of the hot path, ``shopwatch_event_alert_latency_seconds{cause}``,
is observed by :func:`observe_alerts` where ``Topology._emit`` hands alerts to
the producer: the wall time from the Kafka timestamp of the record being
processed to that moment. ``cause="record"``: an input record's step made the
alert (on the event clock, a record the merge held back is released by a
later one, whose timestamp counts); ``cause="tick"``: a clock tick fired a
deadline (on the wall clock a tick carries the time it was sent, so this is
how long after a deadline passed its alert left). Alerts of the shop side
(caused by entity updates) are not observed. The time the producer then takes
to deliver is not in it.
"""

from __future__ import annotations

import logging
import time
import weakref
from functools import partial

from faust import current_event
from prometheus_client import REGISTRY, Gauge, Histogram

from shopwatch.agents.faust_fixes import committed_offset, read_offset
from shopwatch.schemas.events import INPUT_TOPICS, TOPIC_ALERTS, TOPIC_CONTRIBS, TOPIC_TICKS
from shopwatch.streams.alerts import SEVERITY
from shopwatch.streams.clock import EVENT

log = logging.getLogger("shopwatch.metrics")

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)
LATENCY = Histogram("shopwatch_event_alert_latency_seconds",
                    "Wall time from the Kafka timestamp of the record (or tick) that made an alert to its send",
                    ["cause"], buckets=LATENCY_BUCKETS)
_LATENCY_OF = {cause: LATENCY.labels(cause) for cause in ("record", "tick")}

# Set by the delivery loop (agents/delivery.py), per chat sink.
QUEUE_DEPTH = Gauge("shopwatch_sink_queue_depth", "Alert changes a sink still owes (this worker's partitions)",
                    ["sink"])
OLDEST_OWED = Gauge("shopwatch_sink_oldest_undelivered_seconds",
                    "Age of the oldest alert change a sink still owes (0 when none)", ["sink"])
SINK_REJECTED = Gauge("shopwatch_sink_misconfigured",
                      "1 while a sink's posts are rejected as configured (bad token, signature, keyword)", ["sink"])

# Read at scrape time by TopologyCollector: not registered themselves, refilled on every collect().
_ScrapedGauge = partial(Gauge, registry=None)


CONSUMER_LAG = _ScrapedGauge("shopwatch_consumer_lag",
                             "Records behind the end offset (last fetched highwater minus the committed offset)",
                             ["topic", "partition"])
WATERMARK = _ScrapedGauge("shopwatch_watermark_timestamp_seconds", "A partition's event clock (Unix time)",
                          ["kind", "partition"])
WATERMARK_LAG = _ScrapedGauge("shopwatch_watermark_lag_seconds",
                              "How far a partition's event clock is behind the wall clock", ["kind", "partition"])
EVENT_CLOCK = _ScrapedGauge("shopwatch_event_clock", "1 on the event clock (backfills), 0 on the wall clock")
ENTITIES = _ScrapedGauge("shopwatch_entities", "Orders or chat sessions kept in state (not retired); shops owned",
                         ["kind", "partition"])
OPEN_ENTITIES = _ScrapedGauge("shopwatch_open_entities",
                              "Orders (chat sessions) with a deadline not reached yet on the partition's clock",
                              ["kind", "partition"])
PENDING_DEADLINES = _ScrapedGauge("shopwatch_pending_deadlines",
                                  "Timer heap entries: deadlines, retention sweeps, shop timers (stale ones included)",
                                  ["kind", "partition"])
MERGE_QUEUED = _ScrapedGauge("shopwatch_merge_queued", "Records (shops: entity updates) held in the event-time merge",
                             ["kind", "partition"])
PARTITIONS_ACTIVE = _ScrapedGauge("shopwatch_partitions_active",
                                  "Partitions with a state object in memory (recovered from the table and processing)",
                                  ["kind"])
RECOVERING = _ScrapedGauge("shopwatch_recovery_in_progress", "1 while Faust restores this worker's tables")
TABLE_ASSIGNED = _ScrapedGauge("shopwatch_table_partitions_assigned", "Active table partitions assigned to this worker",
                               ["table"])
TABLE_RECOVERED = _ScrapedGauge("shopwatch_table_partitions_recovered",
                                "Active table partitions restored from their changelog", ["table"])
TABLE_REMAINING = _ScrapedGauge("shopwatch_table_recovery_remaining_records",
                                "Changelog records still to restore into the active table partitions", ["table"])
SHOPS = _ScrapedGauge("shopwatch_shops", "Shops whose aggregates this worker owns")
SHOP_SUPPRESSED = _ScrapedGauge("shopwatch_shop_metrics_suppressed",
                                "1 while per-shop series are not exported (more shops than SHOPWATCH_SHOP_METRICS_MAX)")
SHOP_SCORE = _ScrapedGauge("shopwatch_shop_score", "A shop's score (小红书 服务分)", ["platform", "shop"])
SHOP_INDICATOR = _ScrapedGauge("shopwatch_shop_indicator", "A shop's indicator value over its window",
                               ["platform", "shop", "indicator"])
SHOP_DIMENSION = _ScrapedGauge("shopwatch_shop_dimension_score", "A shop's dimension score (小红书)",
                               ["platform", "shop", "dimension"])
SHOP_LEVEL = _ScrapedGauge("shopwatch_shop_level", "A shop's level (抖音 商家等级)", ["platform", "shop"])
SEVERITY_INFO = _ScrapedGauge("shopwatch_alert_severity_info", "The default severity of each alert kind (value 1)",
                              ["kind", "severity"])

UNLABELED = (EVENT_CLOCK, RECOVERING, SHOPS, SHOP_SUPPRESSED)  # a sample only when set in this scrape
PER_PARTITION = (WATERMARK, WATERMARK_LAG, ENTITIES, OPEN_ENTITIES, PENDING_DEADLINES, MERGE_QUEUED)
RECOVERY = (PARTITIONS_ACTIVE, RECOVERING, TABLE_ASSIGNED, TABLE_RECOVERED, TABLE_REMAINING)
PER_SHOP = (SHOP_SCORE, SHOP_INDICATOR, SHOP_DIMENSION, SHOP_LEVEL)
GAUGES = (CONSUMER_LAG, EVENT_CLOCK, *PER_PARTITION, *RECOVERY, SHOPS, SHOP_SUPPRESSED, *PER_SHOP, SEVERITY_INFO)
DEFAULT_SHOP_METRICS_MAX = 200


def observe_alerts(alerts: list, event=None, now: float | None = None) -> None:
    """Observe the send of ``alerts`` (``Topology._emit``) in ``shopwatch_event_alert_latency_seconds``.

    ``event``: the Faust event being processed (default: Faust's current one).
    Alerts of a record of an input topic are ``cause="record"``, of a tick
    ``cause="tick"``; others (the shop side's, made by entity updates) are not
    observed."""
    c = _collector
    if c is None or not alerts:
        return
    if event is None:
        event = current_event()
        if event is None:
            return
    m = event.message
    child = c.causes.get(m.topic)
    ts = m.timestamp
    if child is None or not ts:
        return
    latency = max(0.0, (time.time() if now is None else now) - ts)
    for _ in alerts:
        child.observe(latency)


class TopologyCollector:
    """Reads the topology given to :meth:`attach` (agents.topology.Topology or an object with
    its attributes) when collected."""

    def __init__(self, clock=time.time) -> None:
        self.clock = clock
        self._topo = None
        self.causes: dict = {}  # topic -> latency histogram child
        self.suppressed = False
        self._set: set = set()  # unlabeled gauges set in this scrape (a labeled one is cleared instead)

    @property
    def topo(self):
        return self._topo() if self._topo is not None else None

    def attach(self, topo) -> None:
        self._topo = weakref.ref(topo)
        names = topo.names
        causes = {names[t]: _LATENCY_OF["record"] for t in INPUT_TOPICS if t in names}
        if TOPIC_TICKS in names:
            causes[names[TOPIC_TICKS]] = _LATENCY_OF["tick"]
        self.causes = causes

    def describe(self):
        return [m for g in GAUGES for m in g.describe()]

    def collect(self):
        for g in GAUGES:
            g.clear()
        self._set = set()
        topo = self.topo
        if topo is not None:
            now = self.clock()
            for part in (self._consumer_lag, self._partitions, self._recovery, self._shops):
                try:
                    part(topo, now)
                except Exception:  # one part failing must not take /metrics down
                    log.debug("collecting %s", part.__name__, exc_info=True)
            for kind, severity in SEVERITY.items():
                SEVERITY_INFO.labels(kind, severity).set(1)
        for g in GAUGES:
            yield from (g.describe() if g in UNLABELED and g not in self._set else g.collect())

    def _value(self, gauge: Gauge, v: float) -> None:
        gauge.set(v)
        self._set.add(gauge)

    # ------------------------------------------------------------------ parts
    def _consumer_lag(self, topo, now: float) -> None:
        names = topo.names
        consumed = {names[t] for t in (*INPUT_TOPICS, TOPIC_TICKS, TOPIC_CONTRIBS, TOPIC_ALERTS) if t in names}
        consumer = topo.app.consumer
        for tp in consumer.assignment():
            if tp.topic not in consumed:
                continue
            try:  # the last fetch's highwater (no request); None before the first fetch
                end = consumer.highwater(tp)
            except Exception:  # revoked meanwhile, or the consumer thread is not up yet
                continue
            if end is None:
                continue
            pos = committed_offset(consumer, tp)
            if pos is None:
                pos = read_offset(consumer, tp) or 0
            CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, end - pos))

    def _partitions(self, topo, now: float) -> None:
        self._value(EVENT_CLOCK, 1 if topo.domain == EVENT else 0)
        for kind, parts in (("orders", topo.order_parts), ("chats", topo.chat_parts), ("shops", topo.shop_parts)):
            for p, part in list(parts.items()):
                label = str(p)
                wm = part.watermark
                if wm is not None:
                    WATERMARK.labels(kind, label).set(wm / 1e6)
                    WATERMARK_LAG.labels(kind, label).set(max(0.0, now - wm / 1e6))
                if kind == "shops":
                    ENTITIES.labels(kind, label).set(len(part.states))
                else:
                    ENTITIES.labels(kind, label).set(len(part.calendar.day_of))
                    OPEN_ENTITIES.labels(kind, label).set(len(part.timers.scheduled.get("k") or ()))
                PENDING_DEADLINES.labels(kind, label).set(len(part.timers.heap))
                MERGE_QUEUED.labels(kind, label).set(sum(len(q) for q in part.merger.queues.values()))

    def _recovery(self, topo, now: float) -> None:
        for kind, parts in (("orders", topo.order_parts), ("chats", topo.chat_parts), ("shops", topo.shop_parts),
                            ("alerts", topo.alert_books)):
            PARTITIONS_ACTIVE.labels(kind).set(len(parts))
        rec = topo.app.tables.recovery
        recovering = bool(rec.in_recovery)
        self._value(RECOVERING, 1 if recovering else 0)
        remaining = rec.active_remaining()
        highwaters = rec.active_highwaters
        for table, tps in list(rec.actives_for_table.items()):
            left = [max(0, remaining.get(tp, 0)) for tp in tps]
            done = len(tps) if not recovering else sum(
                1 for tp in tps if tp in highwaters and remaining.get(tp, 0) <= 0)
            TABLE_ASSIGNED.labels(table.name).set(len(tps))
            TABLE_RECOVERED.labels(table.name).set(done)
            TABLE_REMAINING.labels(table.name).set(sum(left))

    def _shops(self, topo, now: float) -> None:
        states = [st for part in list(topo.shop_parts.values()) for st in list(part.states.values())]
        self._value(SHOPS, len(states))
        limit = getattr(topo.s, "shop_metrics_max", DEFAULT_SHOP_METRICS_MAX)
        suppressed = len(states) > limit
        if suppressed != self.suppressed:
            self.suppressed = suppressed
            if suppressed:
                log.warning("per-shop metrics suppressed: this worker owns %d shops, more than "
                            "SHOPWATCH_SHOP_METRICS_MAX=%d", len(states), limit)
            else:
                log.info("per-shop metrics exported again: %d shops (SHOPWATCH_SHOP_METRICS_MAX=%d)",
                         len(states), limit)
        self._value(SHOP_SUPPRESSED, 1 if suppressed else 0)
        if suppressed:
            return
        snapshot = topo.shop_logic.snapshot
        for st in states:
            snap = snapshot(st, st.now_us or 0)  # as the /shops/{platform}/{shop_id}/score view
            platform, shop = snap["platform"], snap["shop_id"]
            if snap.get("score") is not None:
                SHOP_SCORE.labels(platform, shop).set(snap["score"])
            for name, ind in snap["indicators"].items():
                if ind.get("value") is not None:
                    SHOP_INDICATOR.labels(platform, shop, name).set(ind["value"])
            for name, value in (snap.get("dimensions") or {}).items():
                if value is not None:
                    SHOP_DIMENSION.labels(platform, shop, name).set(value)
            level = (snap.get("level") or {}).get("level")
            if level is not None:
                SHOP_LEVEL.labels(platform, shop).set(level)


_collector: TopologyCollector | None = None


def register(topo, registry=REGISTRY) -> TopologyCollector:
    """Have /metrics read ``topo``: the collector is registered once per process (a later
    topology replaces the earlier one)."""
    global _collector
    if _collector is None:
        c = TopologyCollector()
        registry.register(c)
        _collector = c
    _collector.attach(topo)
    return _collector
