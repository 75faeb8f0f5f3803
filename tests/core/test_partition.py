"""The Kafka-shaped core (streams.partition) against replay (streams.replay_engine), without
Kafka, in the crash model of tests/crash_model.py: alerts and scores must equal replay's.
"""

from __future__ import annotations

import random

import orjson
import pytest
from crash_model import _check, _Cluster, _events

from shopwatch.streams.rules import Rules


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_partitions_with_skewed_topics_equal_replay(seed):
    evs = _events(seed=seed)
    until = max(e["ts_us"] for e in evs) + 3 * 86_400_000_000
    c = _Cluster(evs, Rules(), random.Random(seed))
    c.run(until)
    r_alerts = _check(c, evs, until)
    assert len(c.alerts.log) == len(r_alerts), "no crash, so no alert change goes out twice"


@pytest.mark.slow
@pytest.mark.parametrize("seed", [3, 4, 5, 6])
def test_crashes_lose_and_double_count_nothing(seed):
    """Workers die again and again at random instants, with random parts of their
    output and changelog writes delivered: still replay's alerts and scores."""
    evs = _events(seed=seed, shops=6, days=3)
    until = max(e["ts_us"] for e in evs) + 86_400_000_000
    c = _Cluster(evs, Rules(), random.Random(seed))
    c.run(until, crash_every=97)
    assert c.crashes >= 3
    _check(c, evs, until)


def test_redelivered_updates_change_nothing():
    """A copy of an entity update (any version already applied) is a no-op."""
    evs = _events(seed=7, shops=4, days=2)
    until = max(e["ts_us"] for e in evs) + 86_400_000_000
    c = _Cluster(evs, Rules(), random.Random(7))
    c.run(until)
    before = c.final_scores(until)
    sp = c.shops[0]
    n = len(c.contribs[0].log)
    for m in c.contribs[0].items():
        for u in m.get("updates", ()):
            out = sp.on_update({**u, "stream": m["stream"]}, n, idle=frozenset(sp.merger.sources))
            assert not out.changed and not out.alerts
    states = {k: orjson.dumps(st.snapshot()) for k, st in sp.states.items()}
    assert before and states == {k: orjson.dumps(st.snapshot()) for k, st in c.shops[0].states.items()}


def test_a_record_behind_the_partitions_clock_is_late_unless_applied_before():
    """The shell counts (and logs) records the merge applied out of order: ``is_late``."""
    from core_helpers import HOUR, Shop, local

    from shopwatch.schemas.events import validate
    from shopwatch.streams.clock import EVENT
    from shopwatch.streams.orders import OrderLogic
    from shopwatch.streams.partition import KeyedPartition

    sh, t0 = Shop("douyin", "s-1"), local(2026, 10, 1, 10)
    kp = KeyedPartition(OrderLogic(Rules()), 0, ["shop.orders", "shop.shipments"], EVENT,
                        key_of=lambda ev: ev["order_id"], kind="orders", committed=lambda src: None)
    paid = validate(sh.paid("o-1", t0))
    shipped = validate(sh.shipped("o-1", t0 + 2 * HOUR))
    assert not kp.is_late(paid)  # no clock yet
    kp.on_record("shop.orders", 0, paid, idle=frozenset({"shop.shipments"}))
    kp.on_record("shop.shipments", 0, shipped, idle=frozenset({"shop.orders"}))
    assert kp.watermark == t0 + 2 * HOUR
    assert kp.is_late(validate(sh.paid("o-2", t0 + HOUR)))  # a new record behind the clock
    assert not kp.is_late(paid)  # a copy of one applied before changes nothing: not late
    assert not kp.is_late(validate(sh.paid("o-3", t0 + 3 * HOUR)))


def test_a_deadline_no_longer_wanted_fires_nothing_and_writes_nothing():
    """The shared step loop (streams/steps.py) skips stale timer entries, in partitions as in
    replay: a shipped order's ship warning passing changes no document."""
    from core_helpers import HOUR, Shop, local

    from shopwatch.schemas.events import validate
    from shopwatch.streams.clock import EVENT
    from shopwatch.streams.orders import OrderLogic
    from shopwatch.streams.partition import KeyedPartition

    sh, t0 = Shop("douyin", "s-1"), local(2026, 10, 1, 10)
    logic = OrderLogic(Rules())
    kp = KeyedPartition(logic, 0, ["shop.orders"], EVENT, key_of=lambda ev: ev["order_id"], kind="orders",
                        committed=lambda src: None)
    kp.on_record("shop.orders", 0, validate(sh.paid("o-1", t0)))
    warning_due = logic.timers(kp.states["o-1"])["ship_warning"]
    kp.on_record("shop.orders", 1, validate(sh.shipped("o-1", t0 + HOUR)))
    assert "ship_warning" not in logic.timers(kp.states["o-1"])
    assert [k for k, _doc in kp.drain()] == ["o-1"]
    out = kp.on_tick("shop.ticks", 0, warning_due + 1)
    assert not out.alerts and not out.updates
    assert kp.drain() == []
