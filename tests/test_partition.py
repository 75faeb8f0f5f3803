"""The Kafka-shaped core (streams.partition) against replay (streams.engine), without Kafka.

Events are split the way Kafka splits them (topic by type, partition by key),
consumed with one topic running far ahead of the others, contributions sent
through shop partitions, redelivered, and the states snapshotted and restored
mid-stream: alerts and scores must equal replay's.
"""

from __future__ import annotations

import random
import zlib

import orjson
import pytest

from shopwatch.agents.simulate import generate
from shopwatch.schemas.events import TOPIC_CHATS, TOPIC_OF_TYPE, key_of, validate
from shopwatch.streams.clock import EVENT
from shopwatch.streams.config import Rules
from shopwatch.streams.engine import Engine
from shopwatch.streams.orders import OrderLogic, OrderState
from shopwatch.streams.partition import KeyedPartition, ShopPartition
from shopwatch.streams.sessions import SessionLogic
from shopwatch.streams.shop import ShopLogic, ShopState

P = 3


def _events(seed=5, shops=10, days=4):
    evs = [validate(orjson.loads(orjson.dumps(e))) for e in generate(seed=seed, shops=shops, days=days)]
    return evs


def _part(key: str, n: int = P) -> int:
    return zlib.crc32(key.encode()) % n


def _key(a):
    return (a["alert_id"], a["status"], a["at"])


def _run_replay(evs, until):
    e = Engine()
    for ev in evs:
        e.process(ev)
    e.finish(until)
    return e.alerts, {(s["platform"], s["shop_id"]): s["indicators"] for s in e.scores()}


class _Cluster:
    """P order partitions, P chat partitions and P shop partitions, wired like the topology."""

    def __init__(self, rules):
        self.rules = rules
        self.orders = [KeyedPartition(OrderLogic(rules), p, ["orders", "shipments", "refunds"], EVENT,
                                      key_of=lambda ev: ev["order_id"]) for p in range(P)]
        self.chats = [KeyedPartition(SessionLogic(rules), p, ["chats"], EVENT,
                                     key_of=lambda ev: ev["session_id"]) for p in range(P)]
        self.shop_logic = ShopLogic(rules)
        self.streams = [f"{k}:{p}" for k in ("orders", "chats") for p in range(P)]
        self.shops = [ShopPartition(self.shop_logic, EVENT, self.streams) for _ in range(P)]
        self.alerts = []
        self.offsets = {}
        self.sent = []  # every contribution batch, to redeliver some

    def deliver(self, batch):
        key, stream, src, off, idx, cs = batch
        sp = self.shops[_part(key)]
        sp.on_batch(key, stream, src, off, idx, cs, self.alerts, set())

    def _out(self, p, out, stream):
        self.alerts.extend(out.alerts)
        batches = {}
        for src, off, idx, c in out.contribs:
            k = (f"{c[0]}:{c[1]}", f"{src}:{p}", off)
            if k not in batches:
                batches[k] = [idx, []]
            batches[k][1].append(c)
        for (key, src, off), (idx, cs) in batches.items():
            b = (key, stream, src, off, idx, cs)
            self.sent.append(b)
            self.deliver(b)

    def record(self, topic, ev):
        p = _part(key_of(ev))
        off = self.offsets[(topic, p)] = self.offsets.get((topic, p), -1) + 1
        kps = self.chats if topic == "chats" else self.orders
        stream = f"chats:{p}" if topic == "chats" else f"orders:{p}"
        self._out(p, kps[p].on_record(topic, off, ev), stream)

    def finish(self, until):
        for p in range(P):
            self._out(p, self.orders[p].on_tick("ticks", 10**9, until, flush=True), f"orders:{p}")
        for sp in self.shops:
            sp.on_tick(until, True, self.alerts, set(), flush=True)

    def scores(self, until):
        out = {}
        for sp in self.shops:
            for st in sp.states.values():
                snap = self.shop_logic.snapshot(st, until)
                out[(snap["platform"], snap["shop_id"])] = snap["indicators"]
        return out


def _topic(ev):
    t = TOPIC_OF_TYPE[ev["type"]]
    return "chats" if t == TOPIC_CHATS else t.split(".")[1]


def _skewed(evs, rng):
    """Per-topic FIFO streams consumed in random chunk sizes: one topic often runs days ahead."""
    streams = {}
    for ev in evs:
        streams.setdefault(_topic(ev), []).append(ev)
    pos = {t: 0 for t in streams}
    out = []
    while any(pos[t] < len(streams[t]) for t in streams):
        t = rng.choice([t for t in streams if pos[t] < len(streams[t])])
        n = rng.choice([1, 5, 50, 400])
        out.extend((t, ev) for ev in streams[t][pos[t]:pos[t] + n])
        pos[t] += n
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_partitions_with_skewed_topics_equal_replay(seed):
    evs = _events(seed=seed)
    until = max(e["ts_us"] for e in evs) + 3 * 86_400_000_000
    r_alerts, r_scores = _run_replay(evs, until)
    c = _Cluster(Rules())
    rng = random.Random(seed)
    for topic, ev in _skewed(evs, rng):
        c.record(topic, ev)
    # at-least-once: every tenth batch delivered a second time changes nothing
    for b in c.sent[::10]:
        c.deliver(b)
    c.finish(until)
    assert sorted(map(_key, c.alerts)) == sorted(map(_key, r_alerts))
    assert len(c.alerts) == len(r_alerts)
    assert c.scores(until) == r_scores


def test_snapshot_restore_midstream_equals_replay():
    evs = _events(seed=3, shops=6, days=3)
    until = max(e["ts_us"] for e in evs) + 86_400_000_000
    r_alerts, r_scores = _run_replay(evs, until)
    c = _Cluster(Rules())
    half = len(evs) // 2
    for ev in evs[:half]:
        c.record(_topic(ev), ev)
    # a worker dies: states go through their JSON snapshots, heaps and queues are rebuilt
    for p, kp in enumerate(c.orders):
        items = [(k, OrderState.restore(orjson.loads(orjson.dumps(st.snapshot())))) for k, st in kp.states.items()]
        pending = orjson.loads(orjson.dumps(kp.pending))
        fresh = KeyedPartition(OrderLogic(c.rules), p, ["orders", "shipments", "refunds"], EVENT,
                               key_of=lambda ev: ev["order_id"])
        fresh.recover(items, pending)
        c.orders[p] = fresh
    for i, sp in enumerate(c.shops):
        fresh = ShopPartition(c.shop_logic, EVENT, c.streams)
        fresh.recover({k: ShopState.restore(orjson.loads(orjson.dumps(st.snapshot()))) for k, st in sp.states.items()},
                      orjson.loads(orjson.dumps(sp.pending)))
        c.shops[i] = fresh
    # and the records after its last commit come again
    for ev in evs[half - 50:]:
        c.record(_topic(ev), ev)
    c.finish(until)
    assert sorted(map(_key, c.alerts)) == sorted(map(_key, r_alerts))
    assert c.scores(until) == r_scores
