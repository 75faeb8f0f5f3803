"""Clock objects (streams/clock.py) and the policy a partition follows in each domain."""

from __future__ import annotations

import pytest
from core_helpers import HOUR, Shop, local

from shopwatch.schemas.events import validate
from shopwatch.streams.clock import EVENT, WALL, EventClock, WallClock, clock_of
from shopwatch.streams.orders import OrderLogic
from shopwatch.streams.partition import KeyedPartition
from shopwatch.streams.rules import Rules

T0 = local(2026, 10, 1, 10)
SOURCES = ["shop.orders", "shop.shipments"]


def test_clock_of_a_domain_or_a_clock():
    assert isinstance(clock_of(EVENT), EventClock) and isinstance(clock_of(WALL), WallClock)
    wall = WallClock(read=lambda: T0)
    assert clock_of(wall) is wall
    with pytest.raises(ValueError):
        clock_of("lunar")


def test_the_event_clock_moves_with_events_and_its_ticks_carry_no_time():
    c = EventClock()
    assert c.now_us is None and c.tick_time() is None
    assert c.observe(T0 + HOUR) == T0 + HOUR
    assert c.observe(T0) == T0 + HOUR  # never back


def test_the_wall_clock_reads_what_the_shell_injects_and_events_do_not_move_it():
    now = [T0]
    c = WallClock(read=lambda: now[0])
    assert c.now_us == T0 and c.tick_time() == T0
    assert c.observe(T0 + 5 * HOUR) == T0
    now[0] += HOUR
    assert c.tick_time() == T0 + HOUR


def _partition(clock):
    return KeyedPartition(OrderLogic(Rules()), 0, SOURCES, clock, key_of=lambda ev: ev["order_id"],
                          kind="orders", committed=lambda src: None)


@pytest.mark.parametrize("clock", [EVENT, WALL, EventClock(), WallClock(read=lambda: T0)])
def test_records_merge_by_event_time_only_on_the_event_clock(clock):
    sh = Shop("douyin", "s-1")
    kp = _partition(clock)
    # the other source has shown nothing and is not idle: the event clock holds the record back
    out = kp.on_record("shop.orders", 0, validate(sh.paid("o-1", T0)))
    applied = "o-1" in kp.states
    assert applied == (kp.clock.domain == WALL)
    assert out.updates if applied else not out.updates
    assert kp.watermark is None  # the wall clock never takes event time as its clock; no event applied yet


@pytest.mark.parametrize("domain", [EVENT, WALL])
def test_a_tick_fires_deadlines_at_it_on_the_event_clock_and_strictly_before_it_on_the_wall(domain):
    sh = Shop("douyin", "s-1")
    kp = _partition(domain)
    kp.on_record("shop.orders", 0, validate(sh.paid("o-1", T0)), idle=frozenset({"shop.shipments"}))
    wanted = OrderLogic(Rules()).timers(kp.states["o-1"])
    due = min(wanted.values())
    at_due = kp.on_tick("shop.ticks", 0, due)
    fired_at_due = [a["kind"] for a in at_due.alerts]
    if domain == EVENT:
        assert fired_at_due and kp.watermark == due  # replay's --until: at or before
    else:
        assert not fired_at_due and kp.watermark is None  # the wall: due strictly before now
        later = kp.on_tick("shop.ticks", 1, due + 1)
        assert [a["kind"] for a in later.alerts]
