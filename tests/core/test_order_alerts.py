"""rules.md §8: order-level alerts (shipping and package), their ids, instants and boundaries."""

from __future__ import annotations

import pytest
from core_helpers import DAY, HOUR, SEC, Shop, alert_rows, assert_summaries, by_id, iso, local, run

T0 = local(2026, 10, 1, 10)
LST = T0 + 48 * HOUR  # default latest ship time of a domestic order paid at T0


def F(alert_id, at):
    return (alert_id, "firing", iso(at))


def R(alert_id, at):
    return (alert_id, "resolved", iso(at))


# ---------------------------------------------------------------- ship_warning / ship_overdue


def test_ship_warning_and_overdue_fire_and_resolve_when_shipped():
    sh = Shop("douyin")
    shipped = LST + 5 * HOUR
    eng = run([sh.paid("o-1", T0), sh.shipped("o-1", shipped)], until=shipped)
    assert alert_rows(eng) == [
        F("ship_warning:douyin:o-1", LST - 24 * HOUR),
        F("ship_overdue:douyin:o-1", LST),
        R("ship_warning:douyin:o-1", shipped),
        R("ship_overdue:douyin:o-1", shipped),
    ]
    w, o = by_id(eng, "ship_warning:douyin:o-1"), by_id(eng, "ship_overdue:douyin:o-1")
    assert (w["kind"], w["severity"], w["due_at"], w["order_id"]) == ("ship_warning", "warning", iso(LST), "o-1")
    assert (o["kind"], o["severity"], o["due_at"]) == ("ship_overdue", "critical", iso(LST))
    assert (w["platform"], w["shop_id"]) == ("douyin", "s-1")
    assert "compensation_fen" not in o["details"]  # only 天猫 shows a payout
    assert_summaries(eng)


def test_ship_warning_at_payment_when_the_deadline_is_less_than_24h_away():
    sh = Shop("xiaohongshu")
    promised = T0 + 10 * HOUR
    eng = run([sh.paid("o-1", T0, promised_ship_by=iso(promised))], until=T0 + DAY)
    assert alert_rows(eng) == [F("ship_warning:xiaohongshu:o-1", T0), F("ship_overdue:xiaohongshu:o-1", promised)]
    assert by_id(eng, "ship_warning:xiaohongshu:o-1")["due_at"] == iso(promised)


def test_shipped_exactly_at_the_deadline_is_on_time_no_overdue():
    sh = Shop("xiaohongshu")
    eng = run([sh.paid("o-1", T0), sh.shipped("o-1", LST)], until=LST + 10 * DAY)
    assert [r for r in alert_rows(eng) if not r[0].startswith("pickup_timeout")] == [
        F("ship_warning:xiaohongshu:o-1", LST - 24 * HOUR),
        R("ship_warning:xiaohongshu:o-1", LST),
    ]


def test_shipped_one_second_late_fires_then_resolves_overdue():
    sh = Shop("xiaohongshu")
    eng = run([sh.paid("o-1", T0), sh.shipped("o-1", LST + SEC)], until=LST + SEC)
    assert alert_rows(eng, "ship_overdue") == [F("ship_overdue:xiaohongshu:o-1", LST),
                                               R("ship_overdue:xiaohongshu:o-1", LST + SEC)]


def test_shipped_before_the_warning_gets_no_ship_alert():
    sh = Shop("kuaishou")
    eng = run([sh.paid("o-1", T0), sh.shipped("o-1", T0 + HOUR), sh.scan("picked_up", "o-1", T0 + 2 * HOUR),
               sh.scan("signed", "o-1", T0 + 30 * HOUR)], until=T0 + 10 * DAY)
    assert alert_rows(eng) == []


def test_bonded_xiaohongshu_warning_and_overdue_follow_72h():
    sh = Shop("xiaohongshu")
    eng = run([sh.paid("o-1", T0, trade_type="bonded")], until=T0 + 4 * DAY)
    assert alert_rows(eng) == [F("ship_warning:xiaohongshu:o-1", T0 + 48 * HOUR),
                               F("ship_overdue:xiaohongshu:o-1", T0 + 72 * HOUR)]


def test_cancel_resolves_pending_ship_alerts():
    sh = Shop("jd")
    eng = run([sh.paid("o-1", T0), sh.cancelled("o-1", LST + HOUR)], until=LST + 5 * DAY)
    assert alert_rows(eng) == [
        F("ship_warning:jd:o-1", LST - 24 * HOUR),
        F("ship_overdue:jd:o-1", LST),
        R("ship_warning:jd:o-1", LST + HOUR),
        R("ship_overdue:jd:o-1", LST + HOUR),
    ]


def test_cancel_between_warning_and_overdue():
    sh = Shop("jd")
    eng = run([sh.paid("o-1", T0), sh.cancelled("o-1", LST - HOUR)], until=LST + 5 * DAY)
    assert alert_rows(eng) == [F("ship_warning:jd:o-1", LST - 24 * HOUR), R("ship_warning:jd:o-1", LST - HOUR)]


def test_cancel_before_warning_cancels_every_ship_alert():
    sh = Shop("jd")
    eng = run([sh.paid("o-1", T0), sh.cancelled("o-1", T0 + HOUR)], until=LST + 5 * DAY)
    assert alert_rows(eng) == []


def test_virtual_orders_get_no_shipping_or_package_alert():
    sh = Shop("douyin")
    evs = [sh.paid("v-1", T0, virtual=True), sh.shipped("v-1", LST + DAY),
           sh.scan("picked_up", "v-1", LST + 3 * DAY), sh.scan("out_for_delivery", "v-1", LST + 10 * DAY),
           sh.scan("exception", "v-1", LST + 11 * DAY, reason="lost"),
           sh.scan("customs", "v-1", LST + 11 * DAY, status="held")]
    eng = run(evs, until=LST + 30 * DAY)
    assert alert_rows(eng) == []


def test_tmall_ship_overdue_shows_compensation_exposure():
    sh = Shop("tmall")
    eng = run([sh.paid("small", T0, amount_fen=12_345), sh.paid("big", T0, amount_fen=1_000_000)],
              until=LST + HOUR)
    small = by_id(eng, "ship_overdue:tmall:small")["details"]
    assert small["compensation_fen"] == 3_704  # 30 % of 123.45 yuan, rounded to the fen
    assert small["compensation_claimable_at"] == iso(T0 + 72 * HOUR)
    assert small["latest_ship_time"] == iso(LST)
    big = by_id(eng, "ship_overdue:tmall:big")
    assert big["details"]["compensation_fen"] == 50_000  # capped
    assert "500.00" in big["summary"]
    assert_summaries(eng)


# ---------------------------------------------------------------- pickup_timeout


def _shipped(sh, oid="o-1", at=T0 + HOUR, **kw):
    return [sh.paid(oid, T0, **kw.pop("paid", {})), sh.shipped(oid, at, **kw)]


def test_pickup_timeout_fires_and_resolves_at_first_scan():
    sh = Shop("kuaishou")
    shipped = T0 + HOUR
    scan = shipped + 30 * HOUR
    eng = run(_shipped(sh) + [sh.scan("picked_up", "o-1", scan)], until=scan)
    assert alert_rows(eng) == [F("pickup_timeout:kuaishou:o-1", shipped + 24 * HOUR),
                               R("pickup_timeout:kuaishou:o-1", scan)]
    a = by_id(eng, "pickup_timeout:kuaishou:o-1")
    assert (a["severity"], a["due_at"]) == ("warning", iso(shipped + 24 * HOUR))
    assert_summaries(eng)


@pytest.mark.parametrize(("delay", "fires"), [(0, False), (SEC, True)])
def test_pickup_scan_at_the_threshold_cancels_one_second_later_resolves(delay, fires):
    sh = Shop("kuaishou")
    shipped = T0 + HOUR
    due = shipped + 24 * HOUR
    eng = run(_shipped(sh) + [sh.scan("in_transit", "o-1", due + delay)], until=due + DAY)
    expected = [F("pickup_timeout:kuaishou:o-1", due), R("pickup_timeout:kuaishou:o-1", due + delay)] if fires else []
    assert alert_rows(eng, "pickup_timeout") == expected


def test_pickup_timeout_not_for_no_logistics():
    sh = Shop("kuaishou")
    eng = run(_shipped(sh, no_logistics=True), until=T0 + 20 * DAY)
    assert alert_rows(eng) == []


def test_pickup_timeout_fires_once():
    sh = Shop("kuaishou")
    shipped = T0 + HOUR
    eng = run(_shipped(sh), until=T0 + 20 * DAY)
    assert alert_rows(eng) == [F("pickup_timeout:kuaishou:o-1", shipped + 24 * HOUR)]


# ---------------------------------------------------------------- transit_timeout


def test_transit_timeout_numbered_instances_domestic_48h():
    sh = Shop("douyin")
    p = T0 + 2 * HOUR
    t1 = p + 60 * HOUR  # 12 h after the first stall began
    t2 = t1 + 48 * HOUR + SEC  # 1 s after the second threshold
    ofd = t2 + 10 * HOUR
    evs = _shipped(sh) + [sh.scan("picked_up", "o-1", p), sh.scan("in_transit", "o-1", t1),
                          sh.scan("in_transit", "o-1", t2), sh.scan("out_for_delivery", "o-1", ofd),
                          sh.scan("signed", "o-1", ofd + HOUR)]
    eng = run(evs, until=ofd + 30 * DAY)
    assert alert_rows(eng, "transit_timeout") == [
        F("transit_timeout:douyin:o-1:1", p + 48 * HOUR), R("transit_timeout:douyin:o-1:1", t1),
        F("transit_timeout:douyin:o-1:2", t1 + 48 * HOUR), R("transit_timeout:douyin:o-1:2", t2),
    ]
    a = by_id(eng, "transit_timeout:douyin:o-1:2")
    assert (a["severity"], a["due_at"]) == ("warning", iso(t1 + 48 * HOUR))
    assert alert_rows(eng, "delivery_timeout") == []
    assert_summaries(eng)


def test_transit_scan_exactly_at_the_threshold_cancels():
    sh = Shop("douyin")
    p = T0 + 2 * HOUR
    evs = _shipped(sh) + [sh.scan("picked_up", "o-1", p), sh.scan("in_transit", "o-1", p + 48 * HOUR),
                          sh.scan("signed", "o-1", p + 50 * HOUR)]
    eng = run(evs, until=p + 20 * DAY)
    assert alert_rows(eng) == []


@pytest.mark.parametrize("platform", ["xiaohongshu", "douyin"])
@pytest.mark.parametrize("trade_type", ["bonded", "direct_mail"])
def test_transit_timeout_96h_for_cross_border(platform, trade_type):
    sh = Shop(platform)
    p = T0 + 2 * HOUR
    evs = _shipped(sh, paid={"trade_type": trade_type}) + [sh.scan("picked_up", "o-1", p),
                                                          sh.scan("in_transit", "o-1", p + 50 * HOUR)]
    eng = run(evs, until=p + 50 * HOUR + 96 * HOUR)
    assert alert_rows(eng, "transit_timeout") == [F(f"transit_timeout:{platform}:o-1:1", p + 50 * HOUR + 96 * HOUR)]


def test_no_transit_timeout_once_out_for_delivery_or_signed():
    sh = Shop("jd")
    p = T0 + 2 * HOUR
    evs = _shipped(sh) + [sh.scan("picked_up", "o-1", p), sh.scan("signed", "o-1", p + HOUR)]
    assert alert_rows(run(evs, until=p + 30 * DAY)) == []


# ---------------------------------------------------------------- delivery_timeout


def test_delivery_timeout_reattempt_numbered():
    sh = Shop("jd")
    o1 = T0 + 20 * HOUR
    o2 = o1 + 30 * HOUR
    signed = o2 + 26 * HOUR
    evs = _shipped(sh) + [sh.scan("picked_up", "o-1", T0 + 2 * HOUR), sh.scan("out_for_delivery", "o-1", o1),
                          sh.scan("out_for_delivery", "o-1", o2), sh.scan("signed", "o-1", signed)]
    eng = run(evs, until=signed + 10 * DAY)
    assert alert_rows(eng) == [
        F("delivery_timeout:jd:o-1:1", o1 + 24 * HOUR), R("delivery_timeout:jd:o-1:1", o2),
        F("delivery_timeout:jd:o-1:2", o2 + 24 * HOUR), R("delivery_timeout:jd:o-1:2", signed),
    ]
    assert by_id(eng, "delivery_timeout:jd:o-1:2")["due_at"] == iso(o2 + 24 * HOUR)
    assert_summaries(eng)


def test_signed_at_the_delivery_threshold_cancels():
    sh = Shop("jd")
    o1 = T0 + 20 * HOUR
    evs = _shipped(sh) + [sh.scan("picked_up", "o-1", T0 + 2 * HOUR), sh.scan("out_for_delivery", "o-1", o1),
                          sh.scan("signed", "o-1", o1 + 24 * HOUR)]
    assert alert_rows(run(evs, until=o1 + 30 * DAY)) == []


# ---------------------------------------------------------------- customs / carrier exceptions


def test_customs_exception_held_exception_cleared_signed():
    sh = Shop("xiaohongshu")
    p = T0 + 2 * HOUR
    held, exc, cleared = p + HOUR, p + 5 * HOUR, p + 20 * HOUR
    exc2, signed = p + 30 * HOUR, p + 40 * HOUR
    evs = _shipped(sh, paid={"trade_type": "bonded"}) + [
        sh.scan("picked_up", "o-1", p),
        sh.scan("customs", "o-1", held, status="held"),
        sh.scan("customs", "o-1", exc, status="exception"),  # already firing: no new instance
        sh.scan("customs", "o-1", cleared, status="cleared"),
        sh.scan("customs", "o-1", exc2, status="exception"),
        sh.scan("customs", "o-1", exc2 + HOUR, status="declared"),  # not an end
        sh.scan("signed", "o-1", signed),
    ]
    eng = run(evs, until=signed + 20 * DAY)
    assert alert_rows(eng) == [
        F("customs_exception:xiaohongshu:o-1:1", held), R("customs_exception:xiaohongshu:o-1:1", cleared),
        F("customs_exception:xiaohongshu:o-1:2", exc2), R("customs_exception:xiaohongshu:o-1:2", signed),
    ]
    a = by_id(eng, "customs_exception:xiaohongshu:o-1:1")
    assert (a["kind"], a["severity"]) == ("customs_exception", "critical")
    assert a["details"]["status"] == "held"
    assert_summaries(eng)


def test_carrier_exception_fires_once_while_firing_and_resolves_when_signed():
    sh = Shop("kuaishou")
    p = T0 + 2 * HOUR
    e1, e2, signed = p + 3 * HOUR, p + 6 * HOUR, p + 20 * HOUR
    evs = _shipped(sh) + [sh.scan("picked_up", "o-1", p), sh.scan("exception", "o-1", e1, reason="address"),
                          sh.scan("exception", "o-1", e2, reason="damaged"), sh.scan("signed", "o-1", signed)]
    eng = run(evs, until=signed + 20 * DAY)
    assert alert_rows(eng) == [F("carrier_exception:kuaishou:o-1:1", e1), R("carrier_exception:kuaishou:o-1:1", signed)]
    a = by_id(eng, "carrier_exception:kuaishou:o-1:1")
    assert (a["severity"], a["details"]["reason"]) == ("critical", "address")
    assert_summaries(eng)


def test_fake_flag_is_not_a_carrier_scan():
    sh = Shop("douyin")
    shipped = T0 + HOUR
    evs = _shipped(sh) + [sh.scan("fake_flagged", "o-1", shipped + 2 * HOUR)]
    eng = run(evs, until=shipped + 25 * HOUR)
    assert alert_rows(eng) == [F("pickup_timeout:douyin:o-1", shipped + 24 * HOUR)]


def test_replaying_the_same_events_gives_the_same_alert_ids():
    sh = Shop("douyin")
    evs = _shipped(sh, at=LST + HOUR) + [sh.scan("picked_up", "o-1", LST + 30 * HOUR),
                                         sh.scan("exception", "o-1", LST + 31 * HOUR, reason="lost")]
    a, b = run(evs, until=LST + 20 * DAY), run(evs, until=LST + 20 * DAY)
    assert a.alerts == b.alerts and a.alerts
