"""Properties of the core (rules.md §1): duplicates have no effect, indicators do not depend on the
arrival order of one order's events, and state survives a snapshot/restore round trip."""

from __future__ import annotations

import orjson
from core_helpers import DAY, HOUR, MINUTE, Shop, local, streams, until_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shopwatch.schemas.events import validate
from shopwatch.streams.replay_engine import Engine

T0 = local(2026, 10, 1, 10)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def feed(eng: Engine, evs) -> Engine:
    for e in evs:
        eng.process(validate(dict(e)))
    return eng


def replay(evs, until: int, cut: int | None = None) -> Engine:
    eng = feed(Engine(until_us=cut), evs)
    eng.finish(until)
    return eng


def indicators(eng: Engine) -> dict:
    out = {}
    for s in eng.scores():
        for name, v in s["indicators"].items():
            out[(s["platform"], s["shop_id"], name)] = (v["value"], v.get("num"), v.get("den"))
    return out


def assert_same_indicators(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        for x, y in zip(a[k], b[k], strict=True):
            if isinstance(x, float) or isinstance(y, float):
                assert x is not None and y is not None and abs(x - y) <= 1e-9 * max(1.0, abs(x)), (k, a[k], b[k])
            else:
                assert x == y, (k, a[k], b[k])


# ---------------------------------------------------------------- (1) duplicates


@SETTINGS
@given(evs=streams(), data=st.data())
def test_duplicates_change_no_alert_and_no_indicator(evs, data):
    until = until_of(evs)
    plain = replay(evs, until)
    dup = list(evs)
    for i in data.draw(st.lists(st.integers(0, len(evs) - 1), min_size=1, max_size=len(evs)), label="dups"):
        original = evs[i]
        pos = dup.index(original) + 1
        dup.insert(data.draw(st.integers(pos, len(dup)), label="at"), dict(original))
    again = replay(dup, until)
    assert again.alerts == plain.alerts
    assert again.scores() == plain.scores()


# ---------------------------------------------------------------- (2) arrival order


@SETTINGS
@given(evs=streams(), data=st.data())
def test_indicators_do_not_depend_on_arrival_order(evs, data):
    until = until_of(evs)
    shuffled = data.draw(st.permutations(evs), label="arrival order")
    assert_same_indicators(indicators(replay(shuffled, until)), indicators(replay(evs, until)))


# ---------------------------------------------------------------- (3) snapshot / restore


def restored(eng: Engine, cut: int | None) -> Engine:
    """A new engine rebuilt from the states' snapshots (orjson round trip), timers rebuilt from states."""
    new = Engine(eng.rules, until_us=cut)
    for group, states in eng.states.items():
        logic = new.logic[group]
        for key, st_ in states.items():
            data = orjson.loads(orjson.dumps(st_.snapshot()))
            st2 = type(st_).restore(data)
            new.states[group][key] = st2
            new.timers.want(group, key, logic.timers(st2))
    new.clock.now_us = eng.clock.now_us
    new.alerts = list(eng.alerts)
    return new


@SETTINGS
@given(evs=streams(), data=st.data())
def test_snapshot_restore_mid_stream(evs, data):
    until = until_of(evs)
    # sometimes ask for scores at a cut before the last event (replay's --until)
    cut = data.draw(st.one_of(st.none(), st.sampled_from([validate(dict(e))["ts_us"] for e in evs])), label="cut")
    final = cut if cut is not None else until
    k = data.draw(st.integers(0, len(evs)), label="restore after")
    straight = replay(evs, final, cut)
    eng = restored(feed(Engine(until_us=cut), evs[:k]), cut)
    feed(eng, evs[k:])
    eng.finish(final)
    assert eng.alerts == straight.alerts
    assert eng.scores() == straight.scores()


def test_restore_round_trip_of_each_state_is_identity():
    sh = Shop("douyin", "s-rt")
    evs = [sh.paid("o", T0), sh.shipped("o", T0 + HOUR), sh.scan("picked_up", "o", T0 + 2 * HOUR),
           sh.requested("o", "r", T0 + DAY, kind="return_refund"), sh.refund("approved", "o", "r", T0 + 30 * HOUR),
           sh.review("o", T0 + 2 * DAY, product=4, service=5), sh.complaint("o", "c", T0 + DAY),
           sh.chat("started", "s", T0), sh.msg("s", T0 + MINUTE, "buyer"), sh.chat("assigned", "s", T0 + MINUTE),
           sh.msg("s", T0 + 2 * MINUTE, "agent"), sh.chat("rated", "s", T0 + 3 * MINUTE, rating=2)]
    # a cut before the last events, so the shop also holds deltas caused after it
    eng = replay(evs, T0 + DAY, cut=T0 + DAY)
    for states in eng.states.values():
        for st_ in states.values():
            snap = orjson.loads(orjson.dumps(st_.snapshot()))
            again = type(st_).restore(snap)
            assert orjson.loads(orjson.dumps(again.snapshot())) == snap
