"""The operator metrics (agents/metrics.py) without Kafka: the collector over a hand-built
topology (real order, chat and shop partitions fed a simulated stream; a stand-in consumer
and table recovery), the per-shop cardinality limit and the event-to-alert latency hook.
The real worker and a real Prometheus are in tests/broker/test_broker_prometheus.py."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from types import SimpleNamespace

import orjson
import pytest
from faust.types import TP
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shopwatch.agents import metrics
from shopwatch.agents.simulator import generate
from shopwatch.schemas.events import (
    INPUT_TOPICS,
    TOPIC_ALERTS,
    TOPIC_CHATS,
    TOPIC_CONTRIBS,
    TOPIC_OF_TYPE,
    TOPIC_ORDERS,
    TOPIC_SCORES,
    TOPIC_TICKS,
    validate,
)
from shopwatch.streams.clock import EVENT
from shopwatch.streams.orders import OrderLogic
from shopwatch.streams.partition import KeyedPartition, ShopPartition
from shopwatch.streams.rules import Rules
from shopwatch.streams.sessions import SessionLogic
from shopwatch.streams.shop import ShopLogic

PREFIX = "m."
NAMES = {t: PREFIX + t for t in (*INPUT_TOPICS, TOPIC_TICKS, TOPIC_CONTRIBS, TOPIC_ALERTS, TOPIC_SCORES)}
NOW = 1_800_000_000.0  # the collector's wall clock


class FakeConsumer:
    def __init__(self, highwaters: dict, committed: dict, read: dict) -> None:
        self.highwaters = highwaters
        self._committed_offset = defaultdict(lambda: None, committed)
        self._read_offset = defaultdict(lambda: None, read)

    def assignment(self):
        return {*self.highwaters, TP(PREFIX + "orders-changelog", 0)}

    def highwater(self, tp):
        hw = self.highwaters[tp]
        if isinstance(hw, Exception):
            raise hw
        return hw


class FakeTopology(SimpleNamespace):
    """The attributes of agents.topology.Topology the collector reads."""


class FakeTable:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeRecovery:
    def __init__(self, in_recovery: bool, actives: dict, highwaters: dict, remaining: dict) -> None:
        self.in_recovery = in_recovery
        self.actives_for_table = actives
        self.active_highwaters = highwaters
        self._remaining = remaining

    def active_remaining(self):
        return Counter(self._remaining)


def _events(seed=3, shops=5, days=2):
    return [validate(orjson.loads(orjson.dumps(e))) for e in generate(seed=seed, shops=shops, days=days)]


def _topology(shop_metrics_max: int = 200):
    """One order, one chat and one shop partition run over a simulated stream, as the agents would."""
    rules = Rules()
    sources = [NAMES[t] for t in ("shop.orders", "shop.shipments", "shop.refunds")]
    orders = KeyedPartition(OrderLogic(rules), 0, sources, EVENT, key_of=lambda ev: ev["order_id"], kind="orders")
    chats = KeyedPartition(SessionLogic(rules), 0, [NAMES[TOPIC_CHATS]], EVENT,
                           key_of=lambda ev: ev["session_id"], kind="chats")
    shop_logic = ShopLogic(rules)
    shops = ShopPartition(shop_logic, EVENT, ["orders:0", "chats:0"], partition=0)
    offsets: Counter = Counter()
    contribs = 0
    alerts = 0
    for ev in _events():
        topic = NAMES[TOPIC_OF_TYPE[ev["type"]]]
        chat = topic == NAMES[TOPIC_CHATS]
        part, stream = (chats, "chats:0") if chat else (orders, "orders:0")
        out = part.on_record(topic, offsets[topic], ev, idle=frozenset(part.sources))
        offsets[topic] += 1
        alerts += len(out.alerts)
        for u in out.updates:
            shops.on_update({**u, "stream": stream}, contribs)
            contribs += 1
        shops.on_watermark(contribs, stream, part.watermark)
    for stream, part in (("orders:0", orders), ("chats:0", chats)):
        shops.on_watermark(contribs, stream, part.watermark, flush=True)
    assert alerts and shops.states and orders.calendar.day_of and chats.calendar.day_of
    tp_orders, tp_chats, tp_ticks, tp_broken = (TP(NAMES[TOPIC_ORDERS], 0), TP(NAMES[TOPIC_CHATS], 0),
                                                TP(NAMES[TOPIC_TICKS], 0), TP(NAMES["shop.refunds"], 0))
    consumer = FakeConsumer(
        {tp_orders: offsets[NAMES[TOPIC_ORDERS]], tp_chats: offsets[NAMES[TOPIC_CHATS]], tp_ticks: None,
         tp_broken: AssertionError("Partition is not assigned")},
        committed={tp_orders: offsets[NAMES[TOPIC_ORDERS]] - 7}, read={tp_chats: offsets[NAMES[TOPIC_CHATS]] - 3})
    table = FakeTable("orders")
    clog = TP(PREFIX + "orders-changelog", 0), TP(PREFIX + "orders-changelog", 1)
    recovery = FakeRecovery(True, {table: set(clog)}, {clog[0]: 40}, {clog[0]: 0, clog[1]: 25})
    app = SimpleNamespace(consumer=consumer, tables=SimpleNamespace(recovery=recovery))
    return FakeTopology(names=dict(NAMES), domain=EVENT, s=SimpleNamespace(shop_metrics_max=shop_metrics_max),
                           order_parts={0: orders}, chat_parts={0: chats}, shop_parts={0: shops},
                           alert_books={}, shop_logic=shop_logic, app=app)


def _scrape(topo) -> dict[str, dict[tuple, float]]:
    registry = CollectorRegistry()
    c = metrics.TopologyCollector(clock=lambda: NOW)
    registry.register(c)
    c.attach(topo)
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def _one(m, name, **labels) -> float:
    return m[name][tuple(sorted(labels.items()))]


@pytest.fixture(scope="module")
def topo():
    return _topology()


def test_consumer_lag_per_partition(topo):
    m = _scrape(topo)
    lag = m["shopwatch_consumer_lag"]
    # committed offset when there is one, else the read position; no highwater yet, a revoked
    # partition and the changelog are left out
    assert lag == {(("partition", "0"), ("topic", NAMES[TOPIC_ORDERS])): 7.0,
                   (("partition", "0"), ("topic", NAMES[TOPIC_CHATS])): 3.0}


def test_partition_clocks_and_state(topo):
    m = _scrape(topo)
    for kind, part in (("orders", topo.order_parts[0]), ("chats", topo.chat_parts[0]),
                       ("shops", topo.shop_parts[0])):
        wm = part.watermark / 1e6
        assert _one(m, "shopwatch_watermark_timestamp_seconds", kind=kind, partition="0") == wm
        assert _one(m, "shopwatch_watermark_lag_seconds", kind=kind, partition="0") == pytest.approx(NOW - wm)
        assert _one(m, "shopwatch_pending_deadlines", kind=kind, partition="0") == len(part.timers.heap)
    orders = topo.order_parts[0]
    assert _one(m, "shopwatch_entities", kind="orders", partition="0") == len(orders.calendar.day_of) > 0
    assert 0 < _one(m, "shopwatch_open_entities", kind="orders", partition="0") <= len(orders.calendar.day_of)
    assert _one(m, "shopwatch_open_entities", kind="chats", partition="0") == 0  # sessions have no deadlines
    assert _one(m, "shopwatch_entities", kind="shops", partition="0") == len(topo.shop_parts[0].states)
    assert _one(m, "shopwatch_merge_queued", kind="orders", partition="0") == 0
    assert _one(m, "shopwatch_event_clock") == 1


def test_recovery_progress(topo):
    m = _scrape(topo)
    assert _one(m, "shopwatch_recovery_in_progress") == 1
    assert _one(m, "shopwatch_table_partitions_assigned", table="orders") == 2
    assert _one(m, "shopwatch_table_partitions_recovered", table="orders") == 1
    assert _one(m, "shopwatch_table_recovery_remaining_records", table="orders") == 25
    for kind, n in (("orders", 1), ("chats", 1), ("shops", 1), ("alerts", 0)):
        assert _one(m, "shopwatch_partitions_active", kind=kind) == n


def test_shop_series_are_the_score_view(topo):
    m = _scrape(topo)
    states = topo.shop_parts[0].states
    assert _one(m, "shopwatch_shops") == len(states)
    assert _one(m, "shopwatch_shop_metrics_suppressed") == 0
    scored = 0
    for st in states.values():
        snap = topo.shop_logic.snapshot(st, st.now_us or 0)
        p, s = snap["platform"], snap["shop_id"]
        if snap["score"] is not None:
            scored += 1
            assert _one(m, "shopwatch_shop_score", platform=p, shop=s) == snap["score"]
        got = {dict(k)["indicator"]: v for k, v in m["shopwatch_shop_indicator"].items()
               if dict(k)["shop"] == s and dict(k)["platform"] == p}
        assert got == {k: v["value"] for k, v in snap["indicators"].items() if v["value"] is not None}
        for dim, v in snap["dimensions"].items():
            if v is not None:
                assert _one(m, "shopwatch_shop_dimension_score", platform=p, shop=s, dimension=dim) == v
        if p == "douyin" and snap["level"]["level"] is not None:
            assert _one(m, "shopwatch_shop_level", platform=p, shop=s) == snap["level"]["level"]
    assert scored == 1  # the 小红书 shop
    assert _one(m, "shopwatch_alert_severity_info", kind="ship_overdue", severity="critical") == 1


def test_shop_series_suppressed_above_the_limit(topo, caplog):
    n = len(topo.shop_parts[0].states)
    registry = CollectorRegistry()
    c = metrics.TopologyCollector(clock=lambda: NOW)
    registry.register(c)
    small = FakeTopology(**{**vars(topo), "s": SimpleNamespace(shop_metrics_max=n - 1)})
    c.attach(small)
    with caplog.at_level(logging.INFO, logger="shopwatch.metrics"):
        for _ in range(2):
            text = generate_latest(registry).decode()
            assert "shopwatch_shop_metrics_suppressed 1.0" in text and f"shopwatch_shops {float(n)}" in text
            for name in ("shopwatch_shop_score{", "shopwatch_shop_indicator{", "shopwatch_shop_dimension_score{"):
                assert name not in text
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "SHOPWATCH_SHOP_METRICS_MAX" in warnings[0].getMessage()  # once, not per scrape
    c.attach(topo)  # the limit raised: exported again
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="shopwatch.metrics"):
        text = generate_latest(registry).decode()
    assert "shopwatch_shop_metrics_suppressed 0.0" in text and "shopwatch_shop_indicator{" in text
    assert any("exported again" in r.getMessage() for r in caplog.records)


def test_a_failing_part_leaves_the_others():
    topo = _topology()
    topo.app = SimpleNamespace()  # no consumer, no tables
    m = _scrape(topo)
    assert "shopwatch_consumer_lag" not in m and "shopwatch_table_partitions_assigned" not in m
    assert m["shopwatch_entities"] and m["shopwatch_shop_indicator"]


def test_a_gone_topology_exports_no_series():
    registry = CollectorRegistry()
    c = metrics.TopologyCollector()
    registry.register(c)
    c.attach(_topology())  # only the collector's weak reference is left
    text = generate_latest(registry).decode()
    assert "# TYPE shopwatch_consumer_lag gauge" in text
    assert not [line for line in text.splitlines() if line and not line.startswith("#")]


def test_register_once_per_process(monkeypatch):
    monkeypatch.setattr(metrics, "_collector", None)
    registry = CollectorRegistry()
    a, b = _topology(), _topology()
    c = metrics.register(a, registry)
    assert metrics.register(b, registry) is c and c.topo is b  # a second registration would raise
    assert "shopwatch_event_clock 1.0" in generate_latest(registry).decode()


def _event(topic: str, timestamp: float | None):
    return SimpleNamespace(message=SimpleNamespace(topic=topic, timestamp=timestamp))


def _latency(cause: str) -> tuple[float, float]:
    count = REGISTRY.get_sample_value("shopwatch_event_alert_latency_seconds_count", {"cause": cause})
    total = REGISTRY.get_sample_value("shopwatch_event_alert_latency_seconds_sum", {"cause": cause})
    return count, total


def test_event_to_alert_latency(monkeypatch):
    c = metrics.TopologyCollector()
    topo = _topology()
    c.attach(topo)
    monkeypatch.setattr(metrics, "_collector", c)
    alerts = [{"kind": "ship_overdue"}, {"kind": "ship_warning"}]
    r0, t0 = _latency("record"), _latency("tick")
    metrics.observe_alerts(alerts, _event(NAMES["shop.shipments"], NOW - 2.5), now=NOW)
    r1 = _latency("record")
    assert r1[0] - r0[0] == 2 and r1[1] - r0[1] == pytest.approx(5.0)
    le1 = REGISTRY.get_sample_value("shopwatch_event_alert_latency_seconds_bucket", {"cause": "record", "le": "1.0"})
    metrics.observe_alerts(alerts[:1], _event(NAMES[TOPIC_TICKS], NOW - 0.5), now=NOW)
    assert _latency("tick")[0] - t0[0] == 1
    # not observed: shop-side alerts (contributions), a record without a timestamp, no alert,
    # no event (recovery outside an agent), a clock behind the producer's (never negative)
    metrics.observe_alerts(alerts, _event(NAMES[TOPIC_CONTRIBS], NOW - 1), now=NOW)
    metrics.observe_alerts(alerts, _event(NAMES[TOPIC_ORDERS], None), now=NOW)
    metrics.observe_alerts([], _event(NAMES[TOPIC_ORDERS], NOW - 1), now=NOW)
    metrics.observe_alerts(alerts, now=NOW)
    assert _latency("record")[0] == r1[0] and _latency("tick")[0] - t0[0] == 1
    metrics.observe_alerts(alerts[:1], _event(NAMES[TOPIC_CHATS], NOW + 3), now=NOW)
    assert _latency("record")[0] == r1[0] + 1 and _latency("record")[1] == pytest.approx(r1[1])
    assert REGISTRY.get_sample_value("shopwatch_event_alert_latency_seconds_bucket",
                                     {"cause": "record", "le": "1.0"}) == le1 + 1


def test_a_topology_registers_its_collector(tmp_path):
    """agents.topology.Topology registers the collector (once per process) and /metrics reads it."""
    from shopwatch.agents.app import build_app
    from shopwatch.agents.settings import Settings
    from shopwatch.agents.topology import Topology

    s = Settings(store="memory://", data_dir=str(tmp_path), topic_prefix="metrics-unit.", clock="wall",
                 shop_metrics_max=3)
    topo = Topology(build_app(s), s, Rules(), lambda *a: None)
    assert metrics._collector is not None and metrics._collector.topo is topo
    assert metrics._collector.causes[topo.names[TOPIC_TICKS]] is metrics._LATENCY_OF["tick"]
    text = generate_latest(REGISTRY).decode()
    assert "shopwatch_event_clock 0.0" in text and 'shopwatch_partitions_active{kind="orders"} 0.0' in text
    assert "shopwatch_shop_metrics_suppressed 0.0" in text
