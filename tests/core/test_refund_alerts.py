"""rules.md §8: after-sale alerts (refund response, return receipt, COD proof, 坏单包赔)."""

from __future__ import annotations

import pytest
from core_helpers import DAY, HOUR, SEC, Shop, alert_rows, assert_summaries, by_id, iso, local, run

T0 = local(2026, 10, 1, 10)
REQ = T0 + 3 * DAY  # refund requested


def F(alert_id, at):
    return (alert_id, "firing", iso(at))


def R(alert_id, at):
    return (alert_id, "resolved", iso(at))


def base(sh, oid="o-1", **paid):
    return [sh.paid(oid, T0, **paid), sh.shipped(oid, T0 + HOUR), sh.scan("picked_up", oid, T0 + 2 * HOUR),
            sh.scan("signed", oid, T0 + DAY)]


def refund_rows(eng, *kinds):
    return [r for r in alert_rows(eng) if r[0].split(":", 1)[0] in kinds]


# ---------------------------------------------------------------- refund response (超时自动同意)


def test_refund_response_warning_and_overdue_fire_and_resolve():
    sh = Shop("xiaohongshu")
    step = REQ + 50 * HOUR
    eng = run(base(sh) + [sh.requested("o-1", "r-1", REQ), sh.refund("approved", "o-1", "r-1", step)], until=step)
    assert refund_rows(eng, "refund_response_warning", "refund_response_overdue") == [
        F("refund_response_warning:xiaohongshu:r-1", REQ + 36 * HOUR),
        F("refund_response_overdue:xiaohongshu:r-1", REQ + 48 * HOUR),
        R("refund_response_warning:xiaohongshu:r-1", step),
        R("refund_response_overdue:xiaohongshu:r-1", step),
    ]
    w = by_id(eng, "refund_response_warning:xiaohongshu:r-1")
    o = by_id(eng, "refund_response_overdue:xiaohongshu:r-1")
    assert (w["severity"], w["refund_id"], w["order_id"], w["due_at"]) == \
        ("warning", "r-1", "o-1", iso(REQ + 36 * HOUR))
    assert (o["severity"], o["due_at"]) == ("critical", iso(REQ + 48 * HOUR))
    resolved = [a for a in eng.alerts if a["status"] == "resolved"]
    assert all(a["refund_id"] == "r-1" for a in resolved)
    assert_summaries(eng, ids=("order_id", "refund_id"), required=True)


@pytest.mark.parametrize("step", ["approved", "rejected", "intervened", "completed", "closed"])
def test_any_merchant_step_or_end_cancels_the_response_timers(step):
    sh = Shop("douyin")
    eng = run(base(sh) + [sh.requested("o-1", "r-1", REQ), sh.refund(step, "o-1", "r-1", REQ + 10 * HOUR)],
              until=REQ + 30 * DAY)
    assert refund_rows(eng, "refund_response_warning", "refund_response_overdue") == []


@pytest.mark.parametrize("step", ["approved", "rejected", "intervened", "completed", "closed"])
def test_step_between_warning_and_overdue_resolves_the_warning(step):
    sh = Shop("kuaishou")
    at = REQ + 40 * HOUR
    eng = run(base(sh) + [sh.requested("o-1", "r-1", REQ), sh.refund(step, "o-1", "r-1", at)], until=REQ + 30 * DAY)
    assert refund_rows(eng, "refund_response_warning", "refund_response_overdue") == [
        F("refund_response_warning:kuaishou:r-1", REQ + 36 * HOUR), R("refund_response_warning:kuaishou:r-1", at)]


@pytest.mark.parametrize(("delay", "fires"), [(0, False), (SEC, True)])
def test_response_exactly_at_36h_cancels(delay, fires):
    sh = Shop("jd")
    at = REQ + 36 * HOUR + delay
    eng = run(base(sh) + [sh.requested("o-1", "r-1", REQ), sh.refund("approved", "o-1", "r-1", at)],
              until=REQ + 30 * DAY)
    expected = [F("refund_response_warning:jd:r-1", REQ + 36 * HOUR), R("refund_response_warning:jd:r-1", at)]
    assert refund_rows(eng, "refund_response_warning", "refund_response_overdue") == (expected if fires else [])


def test_return_shipped_is_not_a_merchant_step():
    sh = Shop("jd")
    eng = run(base(sh) + [sh.requested("o-1", "r-1", REQ, kind="return_refund"),
                          sh.refund("return_shipped", "o-1", "r-1", REQ + HOUR)], until=REQ + 48 * HOUR)
    assert [r[0] for r in refund_rows(eng, "refund_response_warning", "refund_response_overdue")] == [
        "refund_response_warning:jd:r-1", "refund_response_overdue:jd:r-1"]


def test_two_refunds_of_one_order_have_their_own_alerts():
    sh = Shop("tmall")
    eng = run(base(sh) + [sh.requested("o-1", "r-1", REQ), sh.requested("o-1", "r-2", REQ + HOUR),
                          sh.refund("approved", "o-1", "r-1", REQ + 2 * HOUR)], until=REQ + 49 * HOUR)
    assert refund_rows(eng, "refund_response_warning", "refund_response_overdue") == [
        F("refund_response_warning:tmall:r-2", REQ + 37 * HOUR),
        F("refund_response_overdue:tmall:r-2", REQ + 49 * HOUR)]


# ---------------------------------------------------------------- return receipt (自动确认收货)


def _return(sh, platform_rid="r-1"):
    return [sh.requested("o-1", platform_rid, REQ, kind="return_refund", reason="quality"),
            sh.refund("approved", "o-1", platform_rid, REQ + HOUR),
            sh.refund("return_shipped", "o-1", platform_rid, REQ + 5 * HOUR)]


@pytest.mark.parametrize("end", ["received", "completed", "closed"])
def test_return_receipt_warning_overdue_resolved(end):
    sh = Shop("xiaohongshu")
    rs = REQ + 5 * HOUR
    at = rs + 7 * DAY + HOUR
    eng = run(base(sh) + _return(sh) + [sh.refund(end, "o-1", "r-1", at)], until=at + 10 * DAY)
    assert refund_rows(eng, "return_receipt_warning", "return_receipt_overdue") == [
        F("return_receipt_warning:xiaohongshu:r-1", rs + 6 * DAY),
        F("return_receipt_overdue:xiaohongshu:r-1", rs + 7 * DAY),
        R("return_receipt_warning:xiaohongshu:r-1", at),
        R("return_receipt_overdue:xiaohongshu:r-1", at),
    ]
    w = by_id(eng, "return_receipt_warning:xiaohongshu:r-1")
    assert (w["severity"], w["due_at"]) == ("warning", iso(rs + 6 * DAY))
    assert by_id(eng, "return_receipt_overdue:xiaohongshu:r-1")["severity"] == "critical"
    assert_summaries(eng, ids=("order_id", "refund_id"), required=True)


def test_return_received_in_time_no_receipt_alert():
    sh = Shop("xiaohongshu")
    rs = REQ + 5 * HOUR
    eng = run(base(sh) + _return(sh) + [sh.refund("received", "o-1", "r-1", rs + 6 * DAY)], until=rs + 30 * DAY)
    assert refund_rows(eng, "return_receipt_warning", "return_receipt_overdue") == []


# ---------------------------------------------------------------- COD proof


@pytest.mark.parametrize("end", ["proof_uploaded", "completed", "closed"])
def test_cod_proof_overdue(end):
    sh = Shop("jd")
    rcv = REQ + 2 * DAY
    at = rcv + 50 * HOUR
    evs = base(sh, cod=True) + _return(sh) + [sh.refund("received", "o-1", "r-1", rcv), sh.refund(end, "o-1", "r-1", at)]
    eng = run(evs, until=at + DAY)
    assert refund_rows(eng, "cod_proof_overdue") == [F("cod_proof_overdue:jd:r-1", rcv + 48 * HOUR),
                                                     R("cod_proof_overdue:jd:r-1", at)]
    a = by_id(eng, "cod_proof_overdue:jd:r-1")
    assert (a["severity"], a["due_at"], a["refund_id"]) == ("critical", iso(rcv + 48 * HOUR), "r-1")
    assert_summaries(eng, ids=("order_id", "refund_id"), required=True)


def test_cod_proof_in_time_or_non_cod_no_alert():
    sh = Shop("jd")
    rcv = REQ + 2 * DAY
    evs = base(sh, cod=True) + _return(sh) + [sh.refund("received", "o-1", "r-1", rcv),
                                              sh.refund("proof_uploaded", "o-1", "r-1", rcv + 48 * HOUR)]
    assert refund_rows(run(evs, until=rcv + 10 * DAY), "cod_proof_overdue") == []
    evs = base(sh) + _return(sh) + [sh.refund("received", "o-1", "r-1", rcv)]
    assert refund_rows(run(evs, until=rcv + 10 * DAY), "cod_proof_overdue") == []


# ---------------------------------------------------------------- 坏单包赔


SIGNED = T0 + DAY


def fresh(sh, amount, ratio, req=SIGNED + 10 * HOUR, rid="r-1", **kw):
    return base(sh, category="fresh", amount_fen=amount) + [
        sh.requested("o-1", rid, req, reason="spoiled", amount_fen=kw.pop("refund_amount", amount),
                     damage_ratio=ratio, **kw)]


@pytest.mark.parametrize(("amount", "ratio", "due", "extra"), [
    (10_000, 0.5, 10_000, 3_000),  # > 30 % damaged: the full amount
    (10_000, 0.31, 10_000, 3_000),
    (10_000, 0.3, 3_000, 3_000),  # exactly 30 %: the damaged share
    (10_001, 0.2, 2_000, 3_000),  # rounded to the fen
    (10_000, None, 10_000, 3_000),  # no ratio given: the full amount
    (1_000, 0.1, 100, 500),  # extra payout at least 500 fen
    (100_000, 0.05, 5_000, 10_000),  # ... at most 10,000 fen
    (20_000, 0.0, 0, 6_000),
])
def test_fresh_claim_payouts(amount, ratio, due, extra):
    sh = Shop("douyin")
    eng = run(fresh(sh, amount, ratio), until=SIGNED + 11 * HOUR)
    assert refund_rows(eng, "fresh_claim", "fresh_claim_rejected") == [F("fresh_claim:douyin:r-1", SIGNED + 10 * HOUR)]
    a = by_id(eng, "fresh_claim:douyin:r-1")
    assert a["severity"] == "info"
    d = a["details"]
    assert (d["amount_fen"], d["refund_due_fen"], d["extra_payout_fen"]) == (amount, due, extra)
    assert d["damage_ratio"] == ratio
    assert_summaries(eng, ids=("order_id", "refund_id"), required=True)


def test_fresh_claim_uses_the_order_amount():
    sh = Shop("douyin")
    eng = run(fresh(sh, 8_000, 0.5, refund_amount=3_000), until=SIGNED + 11 * HOUR)
    assert by_id(eng, "fresh_claim:douyin:r-1")["details"]["refund_due_fen"] == 8_000


@pytest.mark.parametrize(("delay", "fires"), [(0, True), (24 * HOUR, True), (24 * HOUR + SEC, False), (-HOUR, False)])
def test_fresh_claim_window_24h_after_signing(delay, fires):
    sh = Shop("xiaohongshu")
    eng = run(fresh(sh, 10_000, 0.5, req=SIGNED + delay), until=SIGNED + 2 * DAY)
    assert bool(refund_rows(eng, "fresh_claim")) == fires


def test_fresh_claim_needs_fresh_category_and_spoiled_reason():
    sh = Shop("xiaohongshu")
    evs = base(sh, amount_fen=10_000) + [sh.requested("o-1", "r-1", SIGNED + HOUR, reason="spoiled")]
    assert refund_rows(run(evs, until=SIGNED + DAY), "fresh_claim") == []
    evs = base(sh, category="fresh") + [sh.requested("o-1", "r-1", SIGNED + HOUR, reason="quality")]
    assert refund_rows(run(evs, until=SIGNED + DAY), "fresh_claim") == []


def test_fresh_claim_rejected_and_both_resolve_at_the_end():
    sh = Shop("douyin")
    req = SIGNED + 10 * HOUR
    rej, end = req + 2 * HOUR, req + 60 * HOUR
    evs = fresh(sh, 50_000, 0.2) + [sh.refund("rejected", "o-1", "r-1", rej),
                                    sh.refund("intervened", "o-1", "r-1", rej + HOUR),
                                    sh.refund("completed", "o-1", "r-1", end)]
    eng = run(evs, until=end + DAY)
    assert refund_rows(eng, "fresh_claim", "fresh_claim_rejected") == [
        F("fresh_claim:douyin:r-1", req), F("fresh_claim_rejected:douyin:r-1", rej),
        R("fresh_claim:douyin:r-1", end), R("fresh_claim_rejected:douyin:r-1", end)]
    a = by_id(eng, "fresh_claim_rejected:douyin:r-1")
    assert a["severity"] == "critical"
    assert (a["details"]["refund_due_fen"], a["details"]["extra_payout_fen"]) == (10_000, 10_000)
    assert "100.00" in a["summary"]
    assert_summaries(eng, ids=("order_id", "refund_id"), required=True)


def test_fresh_claim_ended_without_rejection():
    sh = Shop("douyin")
    req = SIGNED + 10 * HOUR
    eng = run(fresh(sh, 10_000, 0.5) + [sh.refund("completed", "o-1", "r-1", req + HOUR)], until=req + 5 * DAY)
    assert refund_rows(eng, "fresh_claim", "fresh_claim_rejected") == [
        F("fresh_claim:douyin:r-1", req), R("fresh_claim:douyin:r-1", req + HOUR)]


def test_fresh_claim_fires_once_signing_arrives_late():
    # the refund request (refunds topic) may be processed before the signing scan (shipments topic)
    sh = Shop("douyin")
    evs = fresh(sh, 10_000, 0.5)
    signed = [e for e in evs if e["type"] == "shipment.signed"]
    rest = [e for e in evs if e["type"] != "shipment.signed"]
    eng = run(rest + signed, until=SIGNED + 3 * DAY, sort=False)
    assert refund_rows(eng, "fresh_claim") == [F("fresh_claim:douyin:r-1", SIGNED + 10 * HOUR)]
