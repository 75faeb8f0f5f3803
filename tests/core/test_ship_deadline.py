"""rules.md §2: latest ship time (最晚发货时间), and on-time shipping at its boundary."""

from __future__ import annotations

import pytest
from core_helpers import DAY, HOUR, SEC, Shop, by_id, ind, iso, local, run

from shopwatch.schemas.events import validate
from shopwatch.streams.rules import DEFAULT_RULES, Rules
from shopwatch.streams.ship_deadline import latest_ship_time_us

T0 = local(2026, 10, 1, 10)


def lst(platform: str = "xiaohongshu", rules: Rules = DEFAULT_RULES, **paid_fields) -> int:
    ev = validate(Shop(platform).paid("o-1", T0, **paid_fields))
    return latest_ship_time_us(ev, rules.for_platform(platform))


# ---------------------------------------------------------------- first rule that applies


def test_promised_ship_by_wins_over_presale_and_default():
    promised = local(2026, 10, 1, 20)
    assert lst(promised_ship_by=iso(promised)) == promised
    assert lst(promised_ship_by=iso(promised), presale={"ship_by": "2026-10-09"}) == promised
    assert lst(promised_ship_by=iso(promised), presale={"ship_within_days": 5}) == promised
    assert lst("douyin", promised_ship_by=iso(promised), trade_type="bonded") == promised


def test_promised_ship_by_in_another_offset_is_the_same_instant():
    assert lst(promised_ship_by="2026-10-02T02:00:00Z") == local(2026, 10, 2, 10)


def test_presale_fixed_date_is_235959_local_of_that_date():
    assert lst(presale={"ship_by": "2026-10-05"}) == local(2026, 10, 5, 23, 59, 59)
    # the platform default (and the trade type) no longer matter
    assert lst("douyin", presale={"ship_by": "2026-10-05"}, trade_type="direct_mail") == \
        local(2026, 10, 5, 23, 59, 59)


def test_presale_relative_is_paid_plus_n_days():
    assert lst(presale={"ship_within_days": 3}) == T0 + 3 * DAY
    assert lst("tmall", presale={"ship_within_days": 15}) == T0 + 15 * DAY
    assert lst(presale={"ship_within_days": 0}) == T0


@pytest.mark.parametrize(("trade_type", "hours"), [("domestic", 48), ("bonded", 72), ("direct_mail", 120)])
def test_xiaohongshu_default_by_trade_type(trade_type, hours):
    assert lst("xiaohongshu", trade_type=trade_type) == T0 + hours * HOUR


def test_xiaohongshu_trade_type_defaults_to_domestic():
    assert lst("xiaohongshu") == T0 + 48 * HOUR


@pytest.mark.parametrize("platform", ["douyin", "kuaishou", "jd", "tmall"])
@pytest.mark.parametrize("trade_type", ["domestic", "bonded", "direct_mail"])
def test_other_platforms_default_48h(platform, trade_type):
    assert lst(platform, trade_type=trade_type) == T0 + 48 * HOUR


def test_configurable_per_platform():
    rules = Rules({"platforms": {"douyin": {"ship_after_payment_hours":
                                            {"domestic": 24, "bonded": 36, "direct_mail": 60}}}})
    assert lst("douyin", rules) == T0 + 24 * HOUR
    assert lst("douyin", rules, trade_type="bonded") == T0 + 36 * HOUR
    assert lst("douyin", rules, trade_type="direct_mail") == T0 + 60 * HOUR
    # other platforms keep their defaults
    assert lst("kuaishou", rules) == T0 + 48 * HOUR
    assert lst("xiaohongshu", rules, trade_type="bonded") == T0 + 72 * HOUR


def test_configurable_partial_override_keeps_other_trade_types():
    rules = Rules({"platforms": {"xiaohongshu": {"ship_after_payment_hours": {"bonded": 96}}}})
    assert lst("xiaohongshu", rules, trade_type="bonded") == T0 + 96 * HOUR
    assert lst("xiaohongshu", rules, trade_type="domestic") == T0 + 48 * HOUR
    assert lst("xiaohongshu", rules, trade_type="direct_mail") == T0 + 120 * HOUR
    # a platform without its own defaults: the global ones fill the trade types not overridden
    rules = Rules({"platforms": {"jd": {"ship_after_payment_hours": {"domestic": 24}}}})
    assert lst("jd", rules) == T0 + 24 * HOUR
    assert lst("jd", rules, trade_type="bonded") == T0 + 48 * HOUR


def test_configurable_globally():
    rules = Rules({"ship_after_payment_hours": {"domestic": 36, "bonded": 36, "direct_mail": 36}})
    assert lst("kuaishou", rules) == T0 + 36 * HOUR
    # 小红书's own per-platform values still apply
    assert lst("xiaohongshu", rules, trade_type="bonded") == T0 + 72 * HOUR


def test_config_drives_the_engine():
    sh = Shop("douyin")
    rules = Rules({"platforms": {"douyin": {"ship_after_payment_hours": {"domestic": 24}}}})
    eng = run([sh.paid("o-1", T0)], until=T0 + 3 * DAY, rules=rules)
    a = by_id(eng, "ship_overdue:douyin:o-1")
    assert a["at"] == a["due_at"] == iso(T0 + 24 * HOUR)


# ---------------------------------------------------------------- on time at the boundary


@pytest.mark.parametrize(("delay", "on_time"), [(-SEC, 1), (0, 1), (SEC, 0)])
def test_on_time_ship_rate_at_the_deadline(delay, on_time):
    sh = Shop("xiaohongshu")
    due = T0 + 48 * HOUR
    eng = run([sh.paid("o-1", T0), sh.shipped("o-1", due + delay)], until=due + 2 * DAY)
    i = ind(eng, "xiaohongshu", "on_time_ship_rate")
    assert (i["num"], i["den"]) == (on_time, 1)
    overdue = [a for a in eng.alerts if a["kind"] == "ship_overdue"]
    assert bool(overdue) == (not on_time)


def test_presale_fixed_shipped_at_235959_is_on_time_and_000000_is_late():
    sh = Shop("douyin")
    evs = [sh.paid("ok", T0, presale={"ship_by": "2026-10-05"}),
           sh.paid("late", T0, presale={"ship_by": "2026-10-05"}),
           sh.shipped("ok", local(2026, 10, 5, 23, 59, 59)),
           sh.shipped("late", local(2026, 10, 6))]
    eng = run(evs, until=local(2026, 10, 7))
    i = ind(eng, "douyin", "on_time_ship_rate")
    assert (i["num"], i["den"]) == (1, 2)
    a = by_id(eng, "ship_overdue:douyin:late")
    assert a["at"] == a["due_at"] == iso(local(2026, 10, 5, 23, 59, 59))
    assert not [x for x in eng.alerts if x["alert_id"] == "ship_overdue:douyin:ok"]


def test_earliest_shipment_counts():
    sh = Shop("xiaohongshu")
    due = T0 + 48 * HOUR
    # a second order.shipped (new tracking number) after the deadline does not make it late
    evs = [sh.paid("o-1", T0), sh.shipped("o-1", due - HOUR), sh.shipped("o-1", due + HOUR)]
    eng = run(evs, until=due + DAY)
    assert ind(eng, "xiaohongshu", "on_time_ship_rate")["num"] == 1
    # ... and arriving in the other order changes nothing
    eng = run([evs[0], evs[2], evs[1]], until=due + DAY, sort=False)
    assert ind(eng, "xiaohongshu", "on_time_ship_rate")["num"] == 1


def test_orders_not_yet_due_are_not_counted():
    sh = Shop("xiaohongshu")
    eng = run([sh.paid("o-1", T0)], until=T0 + 48 * HOUR - SEC)
    assert ind(eng, "xiaohongshu", "on_time_ship_rate")["den"] == 0
    eng = run([sh.paid("o-1", T0)], until=T0 + 48 * HOUR)
    assert ind(eng, "xiaohongshu", "on_time_ship_rate")["den"] == 1


def test_cancelled_before_the_deadline_leaves_on_time_rate_virtual_never_in_it():
    sh = Shop("xiaohongshu")
    evs = [sh.paid("c", T0), sh.cancelled("c", T0 + HOUR),
           sh.paid("v", T0, virtual=True),
           sh.paid("ok", T0), sh.shipped("ok", T0 + HOUR)]
    eng = run(evs, until=T0 + 5 * DAY)
    i = ind(eng, "xiaohongshu", "on_time_ship_rate")
    assert (i["num"], i["den"], i["value"]) == (1, 1, 1.0)
