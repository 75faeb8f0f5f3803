"""Indicators at their window edges and attribution rules (rules.md §1, §3, §5, §6, §7), and the
小红书 and 快手 scores."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from core_helpers import DAY, HOUR, MINUTE, SEC, Shop, ind, local, local_midnight, run, snap

from shopwatch.schemas.events import validate
from shopwatch.streams.replay_engine import Engine
from shopwatch.streams.rules import Rules
from shopwatch.streams.shop import curve

T = local(2026, 10, 1, 12)  # the as-of instant; date(T) = 2026-10-01
TODAY = date(2026, 10, 1)


def midnight(n: int) -> int:
    """Local 00:00:00 of date(T) - n."""
    return local_midnight(TODAY - timedelta(days=n))


def delivered(sh, oid, paid_at, signed_at=None, **paid):
    """An order paid, shipped 1 h later, picked up, and signed (default 30 h after payment)."""
    signed_at = paid_at + 30 * HOUR if signed_at is None else signed_at
    return [sh.paid(oid, paid_at, **paid), sh.shipped(oid, paid_at + HOUR),
            sh.scan("picked_up", oid, paid_at + 2 * HOUR), sh.scan("signed", oid, signed_at)]


def nd(i):
    return i["num"], i["den"]


# ---------------------------------------------------------------- window edges, local days


def test_local_midnight_attribution_30_day_window():
    """date(T)-29 00:00:00 local is in, date(T)-30 23:59:59 local is out (16:00 UTC: a UTC day would differ)."""
    sh = Shop("jd")
    evs = []
    for sid, start in (("in", midnight(29)), ("out", midnight(29) - SEC), ("today", T - HOUR)):
        evs += [sh.chat("started", sid, start), sh.msg(sid, start + SEC, "buyer"),
                sh.msg(sid, start + 2 * SEC, "agent"), sh.chat("closed", sid, start + MINUTE)]
    i = ind(run(evs, until=T), "jd", "reply_30s_rate")
    assert nd(i) == (2, 2)
    assert i["window_days"] == 30


def test_xiaohongshu_180th_day_on_time_ship_rate():
    sh = Shop("xiaohongshu")
    d179, d180 = TODAY - timedelta(days=179), TODAY - timedelta(days=180)
    paid = midnight(190)
    evs = [sh.paid("in", paid, presale={"ship_by": d179.isoformat()}),  # due date(T)-179 23:59:59: in
           sh.paid("out", paid, presale={"ship_by": d180.isoformat()}),  # due date(T)-180 23:59:59: out
           sh.paid("in0", paid, promised_ship_by=f"{d179.isoformat()}T00:00:00+08:00")]  # 00:00:00: in
    i = ind(run(evs, until=T), "xiaohongshu", "on_time_ship_rate")
    assert nd(i) == (0, 2)
    assert i["window_days"] == 180


def test_xiaohongshu_review_lands_on_the_signed_day():
    sh = Shop("xiaohongshu")
    evs = (delivered(sh, "in", midnight(181), signed_at=midnight(179))
           + delivered(sh, "out", midnight(182), signed_at=midnight(179) - SEC)
           # both reviews are posted well inside the window: only the signed day decides
           + [sh.review("in", T - 10 * DAY, product=5), sh.review("out", T - 5 * DAY, product=1)])
    eng = run(evs, until=T)
    assert nd(ind(eng, "xiaohongshu", "review_avg")) == (5, 1)
    assert ind(eng, "xiaohongshu", "review_avg")["value"] == 5.0
    for name in ("quality_refund_rate", "complaint_rate", "pay_to_sign_hours"):
        assert ind(eng, "xiaohongshu", name)["den"] == 1, name


def test_xiaohongshu_only_the_earliest_review_counts():
    sh = Shop("xiaohongshu")
    evs = delivered(sh, "o", T - 5 * DAY) + [sh.review("o", T - 2 * DAY, product=5),
                                              sh.review("o", T - 3 * DAY, product=2),
                                              sh.review("o", T - DAY, product=1)]
    assert nd(ind(run(evs, until=T), "xiaohongshu", "review_avg")) == (2, 1)


def test_xiaohongshu_complaints_land_on_the_signed_day_and_malicious_ones_are_removed():
    sh = Shop("xiaohongshu")
    evs = (delivered(sh, "a", midnight(182), signed_at=midnight(179) + HOUR)
           + delivered(sh, "old", midnight(183), signed_at=midnight(180) + HOUR)
           + delivered(sh, "b", T - 10 * DAY) + delivered(sh, "c", T - 10 * DAY)
           + delivered(sh, "d", T - 10 * DAY) + [sh.paid("unsigned", T - 10 * DAY)]
           + [sh.complaint("a", "c-a", T - DAY),  # filed long after signing: counts on the signed day
              sh.complaint("old", "c-old", T - DAY),  # its order was signed out of the window
              sh.complaint("b", "c-b1", T - 9 * DAY), sh.complaint("b", "c-b2", T - 8 * DAY),
              sh.complaint("c", "c-c", T - 9 * DAY), sh.judged("c", "c-c", T - 2 * DAY, "buyer", malicious=True),
              sh.complaint("d", "c-d", T - 9 * DAY), sh.judged("d", "c-d", T - 2 * DAY, "merchant"),
              sh.complaint("unsigned", "c-u", T - 9 * DAY)])
    i = ind(run(evs, until=T), "xiaohongshu", "complaint_rate")
    assert nd(i) == (4, 4)  # a, b (twice), d; c was malicious; "old" and "unsigned" are out


def test_xiaohongshu_quality_refund_rate():
    sh = Shop("xiaohongshu")
    evs = []
    for oid in "abcd":
        evs += delivered(sh, oid, T - 10 * DAY)
    evs += [sh.requested("a", "ra1", T - 5 * DAY, reason="quality"),
            sh.requested("a", "ra2", T - 4 * DAY, reason="wrong_item"),
            sh.requested("b", "rb", T - 5 * DAY, reason="no_reason"),
            sh.requested("c", "rc", T - 5 * DAY, reason="counterfeit", kind="return_refund")]
    assert nd(ind(run(evs, until=T), "xiaohongshu", "quality_refund_rate")) == (2, 4)


def test_xiaohongshu_pay_to_sign_hours_by_trade_type():
    sh = Shop("xiaohongshu")
    evs = (delivered(sh, "d1", T - 10 * DAY, signed_at=T - 10 * DAY + 30 * HOUR)
           + delivered(sh, "d2", T - 10 * DAY, signed_at=T - 10 * DAY + 50 * HOUR)
           + delivered(sh, "b1", T - 10 * DAY, signed_at=T - 10 * DAY + 100 * HOUR, trade_type="bonded")
           + [sh.paid("unsigned", T - 10 * DAY)])
    eng = run(evs, until=T)
    assert ind(eng, "xiaohongshu", "pay_to_sign_hours")["value"] == pytest.approx(60.0)
    assert ind(eng, "xiaohongshu", "pay_to_sign_hours.domestic")["value"] == pytest.approx(40.0)
    assert ind(eng, "xiaohongshu", "pay_to_sign_hours.bonded")["value"] == pytest.approx(100.0)
    assert ind(eng, "xiaohongshu", "pay_to_sign_hours.direct_mail")["value"] is None


def test_xiaohongshu_after_sale_hours_with_awaiting_buyer_time():
    sh = Shop("xiaohongshu")
    t = T - 20 * DAY
    evs = [sh.paid(o, t - DAY) for o in ("o1", "o2", "o3", "o4", "o5", "o6", "o7")]
    evs += [
        # refund_only: end - requested, intervened ones included
        sh.requested("o1", "ra", t), sh.refund("completed", "o1", "ra", t + 5 * HOUR),
        sh.requested("o2", "re", t), sh.refund("intervened", "o2", "re", t + 3 * HOUR),
        sh.refund("completed", "o2", "re", t + 15 * HOUR),
        # return_refund: approved -> return_shipped is the buyer's time (24 h)
        sh.requested("o3", "rb", t, kind="return_refund"), sh.refund("approved", "o3", "rb", t + 2 * HOUR),
        sh.refund("return_shipped", "o3", "rb", t + 26 * HOUR), sh.refund("received", "o3", "rb", t + 50 * HOUR),
        sh.refund("completed", "o3", "rb", t + 52 * HOUR),
        # rejected -> intervened is the buyer's time (8 h)
        sh.requested("o4", "rc", t, kind="return_refund"), sh.refund("rejected", "o4", "rc", t + HOUR),
        sh.refund("intervened", "o4", "rc", t + 9 * HOUR), sh.refund("completed", "o4", "rc", t + 20 * HOUR),
        # approved, the buyer never ships: up to the end (99 h)
        sh.requested("o5", "rd", t, kind="return_refund"), sh.refund("approved", "o5", "rd", t + HOUR),
        sh.refund("closed", "o5", "rd", t + 100 * HOUR),
        # not ended: not counted; an exchange: neither indicator
        sh.requested("o6", "rf", t, kind="return_refund"), sh.refund("approved", "o6", "rf", t + HOUR),
        sh.requested("o7", "rx", t, kind="exchange"), sh.refund("completed", "o7", "rx", t + HOUR),
    ]
    eng = run(evs, until=T)
    ro, rr = ind(eng, "xiaohongshu", "refund_only_hours"), ind(eng, "xiaohongshu", "return_refund_hours")
    assert ro["den"] == 2 and ro["value"] == pytest.approx(10.0)
    assert rr["den"] == 3 and rr["value"] == pytest.approx((28 + 12 + 1) / 3)


def test_xiaohongshu_refund_attributed_to_its_end():
    sh = Shop("xiaohongshu")
    evs = [sh.paid("o1", midnight(200)), sh.requested("o1", "r1", midnight(190)),
           sh.refund("completed", "o1", "r1", midnight(179)),
           sh.paid("o2", midnight(200)), sh.requested("o2", "r2", midnight(190)),
           sh.refund("completed", "o2", "r2", midnight(179) - SEC)]
    assert ind(run(evs, until=T), "xiaohongshu", "refund_only_hours")["den"] == 1


# ---------------------------------------------------------------- 抖音


def test_douyin_30_day_window_on_review_time():
    sh = Shop("douyin")
    evs = (delivered(sh, "in", midnight(60)) + delivered(sh, "out", midnight(60))
           + [sh.review("in", midnight(29), product=5, service=5),
              sh.review("out", midnight(29) - SEC, product=1, service=1)])
    eng = run(evs, until=T)
    assert nd(ind(eng, "douyin", "product_good_rate")) == (1, 1)
    assert nd(ind(eng, "douyin", "service_good_rate")) == (1, 1)
    # the 90-day experience indicator still sees both
    assert nd(ind(eng, "douyin", "negative_review_rate")) == (1, 2)


def test_douyin_90_day_negative_review_rate_edge():
    sh = Shop("douyin")
    evs = (delivered(sh, "in", midnight(120)) + delivered(sh, "out", midnight(120))
           + [sh.review("in", midnight(89), product=2), sh.review("out", midnight(89) - SEC, product=2)])
    i = ind(run(evs, until=T), "douyin", "negative_review_rate")
    assert nd(i) == (1, 1) and i["window_days"] == 90


def test_douyin_review_rates():
    sh = Shop("douyin")
    ratings = [(5, 5), (4, None), (3, 3), (2, 4), (1, None)]
    evs = []
    for n, (p, s) in enumerate(ratings):
        evs += delivered(sh, f"o{n}", T - 10 * DAY) + [sh.review(f"o{n}", T - 5 * DAY, product=p, service=s)]
    evs.append(sh.review("o0", T - 6 * DAY, product=1, service=1))  # earlier review of o0: it counts
    eng = run(evs, until=T)
    assert nd(ind(eng, "douyin", "product_good_rate")) == (1, 5)
    assert nd(ind(eng, "douyin", "negative_review_rate")) == (3, 5)
    assert nd(ind(eng, "douyin", "service_good_rate")) == (1, 3)


def test_douyin_fake_ship_rate_lands_on_the_shipping_day():
    sh = Shop("douyin")
    evs = (delivered(sh, "f-in", midnight(29) - HOUR)  # shipped date(T)-29 00:00:00 local
           + delivered(sh, "f-out", midnight(29) - HOUR - SEC)  # shipped date(T)-30 23:59:59
           + delivered(sh, "ok1", T - 5 * DAY) + delivered(sh, "ok2", T - 5 * DAY)
           + [sh.scan("fake_flagged", "f-in", T - DAY), sh.scan("fake_flagged", "f-out", T - DAY)])
    assert nd(ind(run(evs, until=T), "douyin", "fake_ship_rate")) == (1, 3)


def test_douyin_complaint_rate_judged_against_merchant_over_orders_paid():
    sh = Shop("douyin")
    evs = [sh.paid(o, T - 10 * DAY) for o in ("a", "b", "c", "d", "e")]
    evs.append(sh.paid("old", midnight(40)))
    evs += [sh.complaint("a", "ca", T - 9 * DAY), sh.judged("a", "ca", T - 8 * DAY, "merchant"),
            sh.complaint("b", "cb", T - 9 * DAY), sh.judged("b", "cb", T - 8 * DAY, "both", malicious=True),
            sh.complaint("c", "cc", T - 9 * DAY), sh.judged("c", "cc", T - 8 * DAY, "buyer"),
            sh.complaint("d", "cd", T - 9 * DAY),  # not judged
            sh.complaint("e", "ce", T - 9 * DAY), sh.judged("e", "ce", T - 8 * DAY, "both"),
            # an old order judged now: counts (judged time), its order does not (paid time)
            sh.complaint("old", "co", T - 9 * DAY), sh.judged("old", "co", T - 8 * DAY, "merchant")]
    assert nd(ind(run(evs, until=T), "douyin", "complaint_rate")) == (3, 5)


def _paid_on(sh, oid, day_us, **kw):
    return [sh.paid(oid, day_us + 10 * HOUR, **kw), sh.shipped(oid, day_us + 11 * HOUR)]


def test_douyin_logistics_return_rate_cohort_edges():
    sh = Shop("douyin")
    evs = []
    for oid, n in (("d104", 104), ("d105", 105), ("d15", 15), ("d14", 14), ("d60", 60)):
        evs += _paid_on(sh, oid, midnight(n))
    i = ind(run(evs, until=T), "douyin", "logistics_return_rate")
    assert nd(i) == (0, 3)  # d104, d60, d15


def test_douyin_logistics_return_rate_numerator():
    sh = Shop("douyin")
    base = midnight(50)
    ship = base + 11 * HOUR
    evs = []
    for oid in ("yes", "late", "refund_only_first", "quality", "edge", "no_refund"):
        evs += _paid_on(sh, oid, base)
    evs += [sh.requested("yes", "r1", ship + 3 * DAY, kind="return_refund", reason="not_received"),
            sh.requested("late", "r2", ship + 14 * DAY + SEC, kind="return_refund", reason="logistics"),
            sh.requested("refund_only_first", "r3", ship + DAY, kind="refund_only", reason="logistics"),
            sh.requested("refund_only_first", "r4", ship + 2 * DAY, kind="return_refund", reason="logistics"),
            sh.requested("quality", "r5", ship + DAY, kind="return_refund", reason="quality"),
            sh.requested("edge", "r6", ship + 14 * DAY, kind="return_refund", reason="logistics")]
    assert nd(ind(run(evs, until=T), "douyin", "logistics_return_rate")) == (2, 6)


# ---------------------------------------------------------------- 快手


def test_kuaishou_after_sale_indicators():
    sh = Shop("kuaishou")
    t = T - 10 * DAY
    evs = [sh.paid(o, t - DAY) for o in ("o1", "o2", "o3", "o4", "o5", "o6")]
    evs += [
        # self-completed refund_only: 10 h
        sh.requested("o1", "r1", t, reason="quality"), sh.refund("completed", "o1", "r1", t + 10 * HOUR),
        # intervened: not self-completed (no duration), but a merchant-blamed ended refund
        sh.requested("o2", "r2", t, reason="quality", no_return=True), sh.refund("intervened", "o2", "r2", t + HOUR),
        sh.refund("judged", "o2", "r2", t + 20 * HOUR, responsible="merchant"),
        sh.refund("completed", "o2", "r2", t + 30 * HOUR),
        # return_refund: (approved - requested) + (received - return_signed) = 2 h + 3 h
        sh.requested("o3", "r3", t, kind="return_refund"), sh.refund("approved", "o3", "r3", t + 2 * HOUR),
        sh.refund("return_shipped", "o3", "r3", t + 20 * HOUR),
        sh.refund("return_signed", "o3", "r3", t + 40 * HOUR), sh.refund("received", "o3", "r3", t + 43 * HOUR),
        sh.refund("judged", "o3", "r3", t + 43 * HOUR, responsible="both"),
        sh.refund("completed", "o3", "r3", t + 44 * HOUR),
        # return_refund without an approval: the missing segment counts 0 -> 2 h
        sh.requested("o4", "r4", t, kind="return_refund", reason="damaged"),
        sh.refund("return_signed", "o4", "r4", t + 10 * HOUR), sh.refund("received", "o4", "r4", t + 12 * HOUR),
        sh.refund("judged", "o4", "r4", t + 12 * HOUR, responsible="buyer"),
        sh.refund("closed", "o4", "r4", t + 13 * HOUR),
        # still open: only the quality rate sees it
        sh.requested("o5", "r5", t, reason="wrong_item"),
    ]
    eng = run(evs, until=T)
    ro, rr = ind(eng, "kuaishou", "refund_only_hours"), ind(eng, "kuaishou", "return_refund_hours")
    assert ro["den"] == 1 and ro["value"] == pytest.approx(10.0)
    assert rr["den"] == 2 and rr["value"] == pytest.approx(3.5)
    assert nd(ind(eng, "kuaishou", "merchant_dispute_rate")) == (2, 4)
    # o1 quality, o4 damaged, o5 wrong_item; o2 is 退款不退货
    assert nd(ind(eng, "kuaishou", "quality_refund_rate")) == (3, 6)


def test_kuaishou_refunds_attributed_to_end_time_quality_to_paid_time():
    sh = Shop("kuaishou")
    evs = [sh.paid("in", midnight(29)), sh.requested("in", "r1", midnight(29) + HOUR, reason="quality"),
           sh.refund("completed", "in", "r1", midnight(29) + 2 * HOUR),
           sh.paid("out", midnight(29) - SEC), sh.requested("out", "r2", midnight(29), reason="quality"),
           sh.refund("completed", "out", "r2", midnight(29) - SEC + 3 * HOUR)]
    eng = run(evs, until=T)
    assert nd(ind(eng, "kuaishou", "quality_refund_rate")) == (1, 1)
    assert ind(eng, "kuaishou", "refund_only_hours")["den"] == 2


# ---------------------------------------------------------------- 天猫


def test_tmall_refund_rate_and_dispute_rate():
    sh = Shop("tmall")
    t = T - 10 * DAY
    evs = [sh.paid(o, t) for o in ("a", "b", "c", "d")] + [sh.paid("old", midnight(40))]
    evs += [sh.requested("a", "ra", t + HOUR), sh.refund("judged", "a", "ra", t + 5 * HOUR, responsible="merchant"),
            sh.refund("completed", "a", "ra", t + 6 * HOUR),
            sh.requested("b", "rb", t + HOUR), sh.refund("judged", "b", "rb", t + 5 * HOUR, responsible="both"),
            sh.refund("closed", "b", "rb", t + 6 * HOUR),  # closed: not a refund completed
            sh.requested("c", "rc", t + HOUR), sh.refund("judged", "c", "rc", t + 5 * HOUR, responsible="buyer"),
            sh.refund("completed", "c", "rc", t + 6 * HOUR),
            # an order paid out of the window, refunded inside it: counts in the numerator only
            sh.requested("old", "ro", t + HOUR), sh.refund("completed", "old", "ro", t + 6 * HOUR)]
    eng = run(evs, until=T)
    assert nd(ind(eng, "tmall", "refund_rate")) == (3, 4)
    assert nd(ind(eng, "tmall", "refund_dispute_rate")) == (2, 4)


# ---------------------------------------------------------------- 小红书 score


def test_curve_is_piecewise_linear_and_clamped():
    assert curve(4.0, 4.0, 4.9) == 3.0
    assert curve(4.9, 4.0, 4.9) == 5.0
    assert curve(4.45, 4.0, 4.9) == pytest.approx(4.0)
    assert curve(1.0, 4.0, 4.9) == 3.0
    assert curve(5.0, 4.0, 4.9) == 5.0
    # decreasing curves (lower is better)
    assert curve(0.0275, 0.05, 0.005) == pytest.approx(4.0)
    assert curve(0.0, 0.05, 0.005) == 5.0
    assert curve(0.5, 0.05, 0.005) == 3.0


def _xhs_shop_events(sh):
    evs = []
    for oid, rating in (("o1", 4), ("o2", 5)):
        evs += delivered(sh, oid, T - 5 * DAY, signed_at=T - 4 * DAY) + [sh.review(oid, T - 3 * DAY, product=rating)]
    # two consultations: one good, one not -> 0.5
    for sid, reply in (("good", 10), ("slow", 400)):
        start = T - 2 * DAY
        evs += [sh.chat("started", sid, start), sh.msg(sid, start + SEC, "buyer"),
                sh.msg(sid, start + (1 + reply) * SEC, "agent"), sh.chat("closed", sid, start + 1000 * SEC)]
    return evs


def test_xiaohongshu_score_dimensions_and_renormalisation():
    sh = Shop("xiaohongshu")
    s = snap(run(_xhs_shop_events(sh), until=T), "xiaohongshu")
    ind_ = s["indicators"]
    assert ind_["review_avg"]["value"] == pytest.approx(4.5)
    assert ind_["on_time_ship_rate"]["value"] == 1.0
    assert ind_["pay_to_sign_hours"]["value"] == pytest.approx(24.0)
    assert ind_["reply_3min_rate"]["value"] == 0.5
    review = 3 + 2 * 0.5 / 0.9
    items = s["item_scores"]
    assert items["review_avg"] == pytest.approx(review)
    assert items["quality_refund_rate"] == 5.0  # 0 is better than the score-5 value: clamped
    assert items["pay_to_sign_hours"] == 5.0
    assert items["reply_3min_rate"] == 3.0  # 0.5 is below the score-3 value: clamped
    assert items["refund_only_hours"] is None
    dims = s["dimensions"]
    assert dims["product"] == pytest.approx((review + 5) / 2)
    assert dims["logistics"] == 5.0
    assert dims["consultation"] == 3.0
    assert dims["disputes"] == 5.0
    assert dims["after_sale"] is None
    # the missing after-sale dimension renormalises the rest
    assert s["score"] == pytest.approx(((review + 5) / 2 + 5 + 3 + 5) / 4)
    legacy = (0.25 * (review + 5) / 2 + 0.25 * 5 + 0.2 * 3 + 0.1 * 5) / 0.8
    assert s["profiles"]["legacy_shop_score"] == pytest.approx(legacy)
    assert s["profiles"]["service_score"] == s["score"]


def test_xiaohongshu_score_with_only_some_dimensions():
    sh = Shop("xiaohongshu")
    t = T - 10 * DAY
    evs = [sh.paid("o1", t), sh.shipped("o1", t + HOUR),  # on time, never signed
           sh.requested("o1", "r1", t + 2 * HOUR), sh.refund("completed", "o1", "r1", t + 27 * HOUR)]  # 25 h
    s = snap(run(evs, until=T), "xiaohongshu")
    after_sale = 3 + 2 * (25 - 48) / (2 - 48)
    assert s["dimensions"] == {"product": None, "logistics": 5.0, "after_sale": pytest.approx(after_sale),
                               "consultation": None, "disputes": None}
    assert s["score"] == pytest.approx((5.0 + after_sale) / 2)
    assert s["profiles"]["legacy_shop_score"] == pytest.approx((0.25 * 5 + 0.2 * after_sale) / 0.45)


def test_xiaohongshu_score_none_without_data():
    sh = Shop("xiaohongshu")
    s = snap(run([sh.paid("o1", T - HOUR)], until=T), "xiaohongshu")
    assert s["score"] is None
    assert all(v is None for v in s["dimensions"].values())


def test_xiaohongshu_curves_are_configurable():
    sh = Shop("xiaohongshu")
    rules = Rules({"xiaohongshu_curves": {"review_avg": [3.0, 5.0]}})
    s = snap(run(_xhs_shop_events(sh), until=T, rules=rules), "xiaohongshu")
    assert s["item_scores"]["review_avg"] == pytest.approx(4.5)
    assert s["item_scores"]["quality_refund_rate"] == 5.0  # the other curves keep their defaults


def test_xiaohongshu_recent_data_weighs_more_with_a_half_life():
    sh = Shop("xiaohongshu")
    evs = (delivered(sh, "old", T - 40 * DAY, signed_at=T - 39 * DAY) + [sh.review("old", T - 38 * DAY, product=1)]
           + delivered(sh, "new", T - 3 * DAY, signed_at=T - 2 * DAY) + [sh.review("new", T - DAY, product=5)])
    plain = snap(run(evs, until=T), "xiaohongshu")
    decayed = snap(run(evs, until=T, rules=Rules({"score_half_life_days": 1})), "xiaohongshu")
    # indicators stay unweighted
    assert plain["indicators"]["review_avg"]["value"] == decayed["indicators"]["review_avg"]["value"] == 3.0
    assert plain["item_scores"]["review_avg"] == 3.0
    assert decayed["item_scores"]["review_avg"] == pytest.approx(5.0)


# ---------------------------------------------------------------- 快手 dispute gate


def _ks_refunds(sh, n_blamed, n_total):
    t = T - 5 * DAY
    evs = []
    for k in range(n_total):
        oid, rid = f"o{k}", f"r{k}"
        evs += [sh.paid(oid, t - DAY), sh.requested(oid, rid, t), sh.refund("completed", oid, rid, t + HOUR)]
        if k < n_blamed:
            evs.append(sh.refund("judged", oid, rid, t + HOUR, responsible="merchant"))
    # one quick self-completed return_refund: 1 h approval + 1 h receipt
    evs += [sh.paid("rr", t - DAY), sh.requested("rr", "rr", t, kind="return_refund"),
            sh.refund("approved", "rr", "rr", t + HOUR), sh.refund("return_signed", "rr", "rr", t + 2 * DAY),
            sh.refund("received", "rr", "rr", t + 2 * DAY + HOUR), sh.refund("completed", "rr", "rr", t + 3 * DAY)]
    return evs


def test_kuaishou_gate_met_with_fewer_than_four_blamed():
    sh = Shop("kuaishou")
    s = snap(run(_ks_refunds(sh, 3, 3), until=T), "kuaishou")
    assert s["gate"]["met"] is True and s["gate"]["judged_against"] == 3
    assert s["item_scores"] == {"refund_only_hours": 5.0, "return_refund_hours": 5.0}


def test_kuaishou_gate_not_met_caps_duration_items_at_4():
    sh = Shop("kuaishou")
    s = snap(run(_ks_refunds(sh, 4, 4), until=T), "kuaishou")
    assert s["indicators"]["merchant_dispute_rate"]["num"] == 4
    assert s["gate"]["met"] is False
    assert s["item_scores"] == {"refund_only_hours": 4.0, "return_refund_hours": 4.0}


def test_kuaishou_gate_met_when_the_rate_is_low_enough():
    sh = Shop("kuaishou")
    rules = Rules({"kuaishou_gate": {"max_rate": 0.5}})  # default 0.35 % needs > 1,000 refunds
    s = snap(run(_ks_refunds(sh, 4, 9), until=T, rules=rules), "kuaishou")
    assert s["indicators"]["merchant_dispute_rate"]["value"] == pytest.approx(0.4)
    assert s["gate"]["met"] is True
    assert s["item_scores"]["refund_only_hours"] == 5.0
    s = snap(run(_ks_refunds(sh, 4, 9), until=T), "kuaishou")
    assert s["gate"]["met"] is False and s["item_scores"]["refund_only_hours"] == 4.0


def test_kuaishou_gate_cap_only_lowers():
    sh = Shop("kuaishou")
    t = T - 5 * DAY
    evs = _ks_refunds(sh, 4, 4) + [sh.paid("slow", t - DAY), sh.requested("slow", "slow", t),
                                   sh.refund("completed", "slow", "slow", t + 100 * HOUR)]
    s = snap(run(evs, until=T), "kuaishou")
    ro = s["indicators"]["refund_only_hours"]["value"]
    assert ro == pytest.approx((4 + 100) / 5)
    assert s["item_scores"]["refund_only_hours"] == pytest.approx(min(4.0, curve(ro, 48, 2)))


# ---------------------------------------------------------------- ties of "the earliest"


@pytest.mark.parametrize("swap", [False, True])
def test_two_reviews_at_the_same_instant_do_not_depend_on_arrival_order(swap):
    sh = Shop("xiaohongshu")
    a = sh.review("o", T - 2 * DAY, product=5, event_id="rv-a")
    b = sh.review("o", T - 2 * DAY, product=1, event_id="rv-b")
    evs = delivered(sh, "o", T - 5 * DAY) + ([b, a] if swap else [a, b])
    assert nd(ind(run(evs, until=T, sort=False), "xiaohongshu", "review_avg")) == (5, 1)  # by event_id


@pytest.mark.parametrize("swap", [False, True])
def test_first_after_sale_request_tie_does_not_depend_on_arrival_order(swap):
    sh = Shop("douyin")
    base = midnight(50)
    at = base + 2 * DAY
    a = sh.requested("o", "r-a", at, kind="return_refund", reason="logistics")
    b = sh.requested("o", "r-b", at, kind="refund_only", reason="quality")
    evs = _paid_on(sh, "o", base) + ([b, a] if swap else [a, b])
    assert nd(ind(run(evs, until=T, sort=False), "douyin", "logistics_return_rate")) == (1, 1)  # by refund_id


# ---------------------------------------------------------------- snapshots


def test_xiaohongshu_snapshot_at_noon_every_day():
    sh = Shop("xiaohongshu")
    eng = Engine()
    for e in delivered(sh, "o", local(2026, 10, 1, 10)):
        eng.process(validate(e))
    eng.finish(local(2026, 10, 4, 12))
    assert [s["as_of"] for s in eng.snapshots] == [
        "2026-10-01T12:00:00+08:00", "2026-10-02T12:00:00+08:00", "2026-10-03T12:00:00+08:00",
        "2026-10-04T12:00:00+08:00"]
    assert all(s["platform"] == "xiaohongshu" and s["shop_id"] == "s-1" for s in eng.snapshots)
    # the noon snapshot of Oct 2 counts what had happened by then: signed on Oct 2 16:00, not yet
    assert eng.snapshots[1]["indicators"]["pay_to_sign_hours"]["den"] == 0
    assert eng.snapshots[2]["indicators"]["pay_to_sign_hours"]["den"] == 1


def test_scores_as_of_a_cut_before_the_last_event_leave_later_events_out():
    sh = Shop("xiaohongshu")
    cut = T - DAY
    evs = delivered(sh, "o", T - 5 * DAY) + [sh.review("o", T - HOUR, product=2)]
    eng = Engine(until_us=cut)
    for e in evs:
        eng.process(validate(e))
    eng.finish(cut)
    s = snap(eng, "xiaohongshu")
    assert s["as_of"] == "2026-09-30T12:00:00+08:00"
    assert nd(s["indicators"]["review_avg"]) == (0, 0)  # posted after the cut
    assert s["indicators"]["pay_to_sign_hours"]["den"] == 1


def test_complaint_judged_twice_at_the_same_instant_does_not_depend_on_arrival_order():
    sh = Shop("douyin")
    at = T - 2 * DAY
    a = sh.judged("o", "c", at, "merchant", event_id="j-a")
    b = sh.judged("o", "c", at, "buyer", event_id="j-b")
    base = [sh.paid("o", T - 5 * DAY), sh.complaint("o", "c", T - 4 * DAY)]
    one = ind(run(base + [a, b], until=T, sort=False), "douyin", "complaint_rate")
    other = ind(run(base + [b, a], until=T, sort=False), "douyin", "complaint_rate")
    assert nd(one) == nd(other)


def test_session_rated_twice_at_the_same_instant_does_not_depend_on_arrival_order():
    sh = Shop("douyin")
    start = T - DAY
    base = [sh.chat("started", "s", start), sh.chat("closed", "s", start + MINUTE)]
    a = sh.chat("rated", "s", start + 2 * MINUTE, rating=1, event_id="rt-a")
    b = sh.chat("rated", "s", start + 2 * MINUTE, rating=5, event_id="rt-b")
    one = ind(run(base + [a, b], until=T, sort=False), "douyin", "im_dissatisfaction_rate")
    other = ind(run(base + [b, a], until=T, sort=False), "douyin", "im_dissatisfaction_rate")
    assert nd(one) == nd(other)


def test_refund_judged_twice_at_the_same_instant_does_not_depend_on_arrival_order():
    sh = Shop("tmall")
    at = T - 2 * DAY
    base = [sh.paid("o", T - 5 * DAY), sh.requested("o", "r", T - 4 * DAY)]
    a = sh.refund("judged", "o", "r", at, responsible="merchant", event_id="j-a")
    b = sh.refund("judged", "o", "r", at, responsible="buyer", event_id="j-b")
    one = ind(run(base + [a, b], until=T, sort=False), "tmall", "refund_dispute_rate")
    other = ind(run(base + [b, a], until=T, sort=False), "tmall", "refund_dispute_rate")
    assert nd(one) == nd(other)
