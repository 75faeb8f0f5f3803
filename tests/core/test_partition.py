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
