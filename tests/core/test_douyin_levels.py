"""rules.md §4: 抖音 商家等级 (levels, level_changed, outlook) and §8 daily caps."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from core_helpers import DAY, HOUR, SEC, Shop, alert_rows, by_id, iso, local, local_midnight, run, snap

from shopwatch.streams.rules import DEFAULTS, Rules

D0 = local(2026, 10, 1, 10)  # the shop's first event
DATE0 = date(2026, 10, 1)


def midnight(n: int) -> int:
    """Local 00:00:00 of date(D0) + n."""
    return local_midnight(DATE0 + timedelta(days=n))


def dstr(n: int) -> str:
    return (DATE0 + timedelta(days=n)).isoformat()


def level(eng) -> dict:
    return snap(eng, "douyin")["level"]


def level_alerts(eng):
    return [a for a in eng.alerts if a["kind"] == "level_changed"]


def good_order(sh, oid, at, review_at=None, product=5, service=5, amount=10_000):
    evs = [sh.paid(oid, at, amount_fen=amount), sh.shipped(oid, at + HOUR),
           sh.scan("picked_up", oid, at + 2 * HOUR), sh.scan("signed", oid, at + DAY)]
    if review_at is not None:
        evs.append(sh.review(oid, review_at, product=product, service=service))
    return evs


# small thresholds so an upgrade needs a handful of orders, not thousands
CHEAP = {"douyin_cumulative_to_leave": [1, 3, 6, 10, 20, 30, 40], "douyin_upgrade": {"min_reviews": 2}}


# ---------------------------------------------------------------- start


def test_new_shop_starts_at_lv1_at_its_first_event():
    sh = Shop("douyin")
    eng = run([sh.paid("o1", D0)], until=D0 + HOUR)
    lv = level(eng)
    assert lv["level"] == 1
    assert lv["since"] == iso(D0)
    assert lv["cleared"] is False
    assert lv["daily_caps"] == {"orders": 500, "gmv_fen": 5_000_000}
    assert level_alerts(eng) == []


def test_start_level_is_configurable():
    sh = Shop("douyin")
    lv = level(run([sh.paid("o1", D0)], until=D0 + HOUR, rules=Rules({"douyin_start_level": 3})))
    assert lv["level"] == 3
    assert lv["daily_caps"] == {"orders": 6_000, "gmv_fen": 60_000_000}


def test_first_event_may_be_a_chat():
    sh = Shop("douyin")
    eng = run([sh.chat("started", "c1", D0), sh.paid("o1", D0 + DAY)], until=D0 + 2 * DAY)
    assert level(eng)["since"] == iso(D0)


# ---------------------------------------------------------------- downgrade


def _late_shop(sh):
    # one order never shipped: on_time_ship_rate 0/1, due date(D0)+2
    return [sh.paid("late", D0)]


def test_no_change_before_30_days():
    sh = Shop("douyin")
    eng = run(_late_shop(sh), until=midnight(31) - SEC)
    assert level(eng)["level"] == 1
    assert level_alerts(eng) == []
    # the downgrade condition already holds
    assert level(eng)["outlook"]["downgrade"]["on_time_ship_rate"] is True


def test_downgrade_one_level_after_30_days():
    sh = Shop("douyin")
    eng = run(_late_shop(sh), until=midnight(31))
    alerts = level_alerts(eng)
    assert [(a["alert_id"], a["status"], a["at"], a["severity"]) for a in alerts] == [
        (f"level_changed:douyin:s-1:{dstr(31)}", "firing", iso(midnight(31)), "critical")]
    d = alerts[0]["details"]
    assert (d["from"], d["to"], d["change"]) == (1, 0, "down")
    assert d["conditions"]["on_time_ship_rate"] is True
    assert alerts[0]["summary"].strip() and "LV0" in alerts[0]["summary"]
    lv = level(eng)
    assert (lv["level"], lv["since"]) == (0, iso(midnight(31)))
    assert lv["daily_caps"] == {"orders": 50, "gmv_fen": 500_000}


def test_after_a_change_wait_30_days_again_then_cleared_after_60_days_at_lv0():
    sh = Shop("douyin")
    rules = Rules({"douyin_start_level": 2})
    evs = _late_shop(sh) + [sh.paid("late2", midnight(40) + HOUR)]  # due date+42: late again
    eng = run(evs, until=midnight(200), rules=rules)
    rows = [(a["at"], a["details"]["from"], a["details"]["to"], a["details"]["change"], a["severity"])
            for a in level_alerts(eng)]
    assert rows == [
        (iso(midnight(31)), 2, 1, "down", "critical"),
        (iso(midnight(61)), 1, 0, "down", "critical"),  # not before 30 days after the first change
        (iso(midnight(121)), 0, None, "cleared", "critical"),  # 60 days at LV0
    ]
    assert level(eng)["cleared"] is True


def test_a_downgrade_condition_out_of_the_window_does_not_count():
    sh = Shop("douyin")
    # the late order is due on date(D0)+2; evaluated first on date(D0)+40 (wait from a later start)
    eng = run(_late_shop(sh) + good_order(sh, "ok", midnight(35) + HOUR), until=midnight(40),
              rules=Rules({"douyin_level_wait_days": 38}))
    assert level_alerts(eng) == []
    assert level(eng)["level"] == 1


@pytest.mark.parametrize(("name", "extra"), [
    ("fake_ship_rate", lambda sh: [sh.scan("fake_flagged", "o0", midnight(20))]),
    ("product_good_rate", lambda sh: [sh.review("o0", midnight(21), product=3, service=5)]),
    ("service_good_rate", lambda sh: [sh.review("o0", midnight(21), product=5, service=3)]),
    ("im_first_response_minutes", lambda sh: [sh.chat("started", "c", midnight(20)),
                                              sh.chat("assigned", "c", midnight(20) + SEC),
                                              sh.msg("c", midnight(20) + 2 * SEC, "buyer"),
                                              sh.msg("c", midnight(20) + SEC + 6 * 60 * SEC, "agent")]),
])
def test_each_downgrade_condition(name, extra):
    sh = Shop("douyin")
    evs = [sh.paid("first", D0), sh.shipped("first", D0 + HOUR)]
    evs += [e for k in range(3) for e in good_order(sh, f"o{k}", midnight(15) + HOUR)] + extra(sh)
    eng = run(evs, until=midnight(31))
    down = [a for a in level_alerts(eng) if a["details"]["change"] == "down"]
    assert len(down) == 1
    assert down[0]["details"]["conditions"][name] is True
    assert level(eng)["level"] == 0


def test_complaint_downgrade_needs_more_than_one_complaint():
    sh = Shop("douyin")
    evs = [sh.paid("first", D0), sh.shipped("first", D0 + HOUR)]
    evs += [e for k in range(3) for e in good_order(sh, f"o{k}", midnight(15) + HOUR)]
    one = evs + [sh.complaint("o0", "c0", midnight(16)), sh.judged("o0", "c0", midnight(17), "merchant")]
    eng = run(one, until=midnight(31))
    assert level_alerts(eng) == [] and level(eng)["level"] == 1
    two = one + [sh.complaint("o1", "c1", midnight(16)), sh.judged("o1", "c1", midnight(17), "both")]
    eng = run(two, until=midnight(31))
    assert [a["details"]["to"] for a in level_alerts(eng)] == [0]
    assert level_alerts(eng)[0]["details"]["conditions"]["complaint_rate"] is True


def test_malicious_complaints_do_not_downgrade():
    sh = Shop("douyin")
    evs = [sh.paid("first", D0), sh.shipped("first", D0 + HOUR)]
    evs += [e for k in range(3) for e in good_order(sh, f"o{k}", midnight(15) + HOUR)]
    for k in range(3):
        evs += [sh.complaint(f"o{k}", f"c{k}", midnight(16)),
                sh.judged(f"o{k}", f"c{k}", midnight(17), "merchant", malicious=True)]
    eng = run(evs, until=midnight(31))
    assert level_alerts(eng) == []


# ---------------------------------------------------------------- upgrade


def _upgrade_shop(sh, reviews=3):
    evs = [sh.paid("first", D0), sh.shipped("first", D0 + HOUR)]
    for k in range(3):
        evs += good_order(sh, f"o{k}", midnight(25) + HOUR, review_at=midnight(27) if k < reviews else None)
    return evs


def test_upgrade_when_all_conditions_hold():
    sh = Shop("douyin")
    eng = run(_upgrade_shop(sh), until=midnight(31), rules=Rules(CHEAP))
    alerts = level_alerts(eng)
    assert [(a["alert_id"], a["at"], a["severity"]) for a in alerts] == [
        (f"level_changed:douyin:s-1:{dstr(31)}", iso(midnight(31)), "info")]
    d = alerts[0]["details"]
    assert (d["from"], d["to"], d["change"]) == (1, 2, "up")
    assert all(d["conditions"].values())
    lv = level(eng)
    assert lv["level"] == 2 and lv["daily_caps"] == {"orders": 2_000, "gmv_fen": 20_000_000}


def test_no_upgrade_before_30_days():
    sh = Shop("douyin")
    eng = run(_upgrade_shop(sh), until=midnight(31) - SEC, rules=Rules(CHEAP))
    assert level_alerts(eng) == []
    assert all(level(eng)["outlook"]["upgrade"].values())


def test_no_upgrade_when_one_condition_fails_and_outlook_says_which():
    sh = Shop("douyin")
    eng = run(_upgrade_shop(sh, reviews=1), until=midnight(31), rules=Rules(CHEAP))  # 1 review < 2
    assert level_alerts(eng) == []
    out = level(eng)["outlook"]
    assert out["upgrade"]["product_good_rate"] is False
    assert out["upgrade"]["service_good_rate"] is False
    assert out["upgrade"]["on_time_ship_rate"] is True
    assert out["upgrade"]["cumulative_orders"] is True
    assert not any(out["downgrade"].values())
    assert out["review_rate"] == pytest.approx(1 / 3)


def test_default_thresholds_need_cumulative_orders_and_100_reviews():
    sh = Shop("douyin")
    eng = run(_upgrade_shop(sh), until=midnight(31))
    assert level_alerts(eng) == []
    up = level(eng)["outlook"]["upgrade"]
    assert up["cumulative_orders"] is False  # 4 < 4,000 to leave LV1
    assert up["product_good_rate"] is False  # 3 < 100 reviews
    assert up["fake_ship_rate"] is True and up["complaint_rate"] is True
    assert up["im_first_response_minutes"] is True  # no sessions


def test_outlook_in_every_douyin_snapshot():
    sh = Shop("douyin")
    out = level(run(_late_shop(sh), until=D0 + 3 * DAY))["outlook"]
    assert set(out["upgrade"]) == set(out["downgrade"]) == {
        "on_time_ship_rate", "fake_ship_rate", "im_first_response_minutes", "service_good_rate",
        "complaint_rate", "product_good_rate", "cumulative_orders"}
    assert out["upgrade"]["on_time_ship_rate"] is False
    assert out["downgrade"]["on_time_ship_rate"] is True
    assert out["downgrade"]["cumulative_orders"] is False


def _busy_day(sh, n):
    evs = []
    for k in range(n):  # n orders of 100 yuan; 1 review: a review rate of 1/n
        evs += good_order(sh, f"o{k}", D0 + k * 60 * SEC, amount=10_000,
                          review_at=D0 + 5 * HOUR if k == 0 else None)
    return evs


def test_fast_upgrade_at_the_next_day_boundary():
    caps = [list(c) if c else None for c in DEFAULTS["douyin_caps"]]
    caps[1] = [10, 1_000]  # LV1: 10 orders / 1,000 yuan
    rules = Rules({"douyin_caps": caps, "douyin_upgrade": {"min_reviews": 1}})
    sh = Shop("douyin")
    # 8 orders, 800 yuan: 80 % of both caps, a 12.5 % review rate
    eng = run(_busy_day(sh, 8), until=midnight(2), rules=rules)
    assert [(a["at"], a["details"]["from"], a["details"]["to"], a["severity"]) for a in level_alerts(eng)] == [
        (iso(midnight(1)), 1, 2, "info")]
    # 7 orders (70 %): nothing happens before 30 days
    assert level_alerts(run(_busy_day(sh, 7), until=midnight(2), rules=rules)) == []


# ---------------------------------------------------------------- daily caps (§8)


def test_daily_cap_gmv_warning_and_reached_resolve_at_next_local_midnight():
    sh = Shop("douyin")
    t1, t2 = local(2026, 10, 1, 20), local(2026, 10, 1, 23, 59, 59)
    evs = [sh.paid("a", t1, amount_fen=3_999_999), sh.paid("b", t1 + HOUR, amount_fen=1),
           sh.paid("c", t2, amount_fen=1_000_000), sh.paid("d", local(2026, 10, 2), amount_fen=4_500_000)]
    eng = run(evs, until=local(2026, 10, 2, 12))
    w, r = "daily_cap_warning:douyin:s-1:2026-10-01:gmv", "daily_cap_reached:douyin:s-1:2026-10-01:gmv"
    w2 = "daily_cap_warning:douyin:s-1:2026-10-02:gmv"
    rows = [x for x in alert_rows(eng) if x[0].startswith("daily_cap")]
    assert sorted(rows) == sorted([
        (w, "firing", iso(t1 + HOUR)), (r, "firing", iso(t2)), (w2, "firing", iso(local(2026, 10, 2))),
        (w, "resolved", iso(local(2026, 10, 2))), (r, "resolved", iso(local(2026, 10, 2))),
    ])
    a = by_id(eng, w)
    assert (a["severity"], a["due_at"]) == ("warning", iso(local(2026, 10, 2)))
    assert (a["details"]["measure"], a["details"]["cap"], a["details"]["value"]) == ("gmv", 5_000_000, 4_000_000)
    assert by_id(eng, r)["severity"] == "critical"
    assert "s-1" in a["summary"]


def test_daily_cap_orders():
    sh = Shop("douyin")
    evs = [sh.paid(f"o{k}", D0 + k * SEC, amount_fen=100) for k in range(501)]
    eng = run(evs, until=midnight(1) + HOUR)
    w, r = "daily_cap_warning:douyin:s-1:2026-10-01:orders", "daily_cap_reached:douyin:s-1:2026-10-01:orders"
    rows = [x for x in alert_rows(eng) if x[0].startswith("daily_cap")]
    assert rows == [(w, "firing", iso(D0 + 399 * SEC)), (r, "firing", iso(D0 + 499 * SEC)),
                    (r, "resolved", iso(midnight(1))), (w, "resolved", iso(midnight(1)))]


def test_daily_caps_only_for_douyin():
    sh = Shop("kuaishou")
    eng = run([sh.paid("a", D0, amount_fen=100_000_000)], until=D0 + 2 * DAY)
    assert [a for a in eng.alerts if a["kind"].startswith("daily_cap")] == []
