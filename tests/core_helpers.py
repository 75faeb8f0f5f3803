"""Event builders and small readers for the functional-core tests.

Times are integer microseconds (the project's one convention); ``local(...)``
builds an Asia/Shanghai wall-clock instant, ``iso(us)`` turns one back into the
RFC 3339 string an event carries.
"""

from __future__ import annotations

import itertools
import re
from datetime import datetime, timedelta, timezone

from hypothesis import strategies as st

from shopwatch.schemas.events import PLATFORMS, validate
from shopwatch.streams.clock import DAY_US, HOUR_US, MINUTE_US, US, fmt_ts
from shopwatch.streams.replay_engine import Engine

__all__ = ["DAY", "HOUR", "MINUTE", "SEC", "Shop", "alert_change", "alert_rows", "by_id", "ind", "iso", "local", "run",
           "snap",
           "streams", "until_of", "local_midnight", "assert_summaries", "CJK"]

SEC, MINUTE, HOUR, DAY = US, MINUTE_US, HOUR_US, DAY_US
CST = timezone(timedelta(hours=8))
_ids = itertools.count(1)


def local(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    """An Asia/Shanghai local wall-clock instant, in microseconds."""
    return int(datetime(y, mo, d, h, mi, s, tzinfo=CST).timestamp()) * US


def iso(us: int) -> str:
    return fmt_ts(us)


class Shop:
    """Builds raw (unvalidated) events for one (platform, shop)."""

    def __init__(self, platform: str = "xiaohongshu", shop_id: str = "s-1") -> None:
        self.platform = platform
        self.shop_id = shop_id

    def ev(self, type_: str, ts_us: int, **fields) -> dict:
        e = {"event_id": fields.pop("event_id", None) or f"e{next(_ids)}", "type": type_, "ts": iso(ts_us),
             "platform": self.platform, "shop_id": self.shop_id}
        e.update({k: v for k, v in fields.items() if v is not None})
        return e

    # orders topic
    def paid(self, oid: str, ts: int, amount_fen: int = 10_000, **kw) -> dict:
        return self.ev("order.paid", ts, order_id=oid, amount_fen=amount_fen, **kw)

    def shipped(self, oid: str, ts: int, **kw) -> dict:
        kw.setdefault("carrier", "SF")
        kw.setdefault("tracking_no", f"SF{oid}")
        return self.ev("order.shipped", ts, order_id=oid, **kw)

    def cancelled(self, oid: str, ts: int, **kw) -> dict:
        return self.ev("order.cancelled", ts, order_id=oid, **kw)

    def review(self, oid: str, ts: int, product: int = 5, service: int | None = None, **kw) -> dict:
        return self.ev("review.posted", ts, order_id=oid, product_rating=product, service_rating=service, **kw)

    def complaint(self, oid: str, cid: str, ts: int, **kw) -> dict:
        return self.ev("complaint.filed", ts, order_id=oid, complaint_id=cid, **kw)

    def judged(self, oid: str, cid: str, ts: int, responsible: str = "merchant", malicious: bool = False,
               **kw) -> dict:
        return self.ev("complaint.judged", ts, order_id=oid, complaint_id=cid, responsible=responsible,
                       malicious=malicious, **kw)

    # shipments topic
    def scan(self, step: str, oid: str, ts: int, **kw) -> dict:
        return self.ev("shipment." + step, ts, order_id=oid, **kw)

    # refunds topic
    def requested(self, oid: str, rid: str, ts: int, kind: str = "refund_only", reason: str = "other",
                  amount_fen: int = 10_000, **kw) -> dict:
        return self.ev("refund.requested", ts, order_id=oid, refund_id=rid, kind=kind, reason=reason,
                       amount_fen=amount_fen, **kw)

    def refund(self, step: str, oid: str, rid: str, ts: int, **kw) -> dict:
        return self.ev("refund." + step, ts, order_id=oid, refund_id=rid, **kw)

    # chats topic
    def chat(self, step: str, sid: str, ts: int, **kw) -> dict:
        return self.ev("chat." + step, ts, session_id=sid, **kw)

    def msg(self, sid: str, ts: int, sender: str) -> dict:
        return self.ev("chat.message", ts, session_id=sid, sender=sender)


def run(events, until: int | None = None, rules=None, sort: bool = True) -> Engine:
    """Validate and process ``events`` (sorted by time unless ``sort`` is false), then finish."""
    evs = [validate(dict(e)) for e in events]
    if sort:
        evs.sort(key=lambda e: e["ts_us"])
    eng = Engine(rules)
    for e in evs:
        eng.process(e)
    eng.finish(until)
    return eng


def alert_rows(eng: Engine, kind: str | None = None) -> list[tuple]:
    """(alert_id, status, at) of every alert emitted, in order, optionally of one kind."""
    return [(a["alert_id"], a["status"], a["at"]) for a in eng.alerts if kind is None or a["kind"] == kind]


def by_id(eng: Engine, alert_id: str, status: str = "firing") -> dict:
    found = [a for a in eng.alerts if a["alert_id"] == alert_id and a["status"] == status]
    assert len(found) == 1, (alert_id, status, alert_rows(eng))
    return found[0]


def snap(eng: Engine, platform: str, shop_id: str = "s-1", as_of: int | None = None) -> dict:
    for s in eng.scores(as_of):
        if s["platform"] == platform and s["shop_id"] == shop_id:
            return s
    raise AssertionError(f"no snapshot for {platform}:{shop_id}")


def ind(eng: Engine, platform: str, name: str, shop_id: str = "s-1", as_of: int | None = None) -> dict:
    return snap(eng, platform, shop_id, as_of)["indicators"][name]


def alert_change(n: int = 1, status: str = "firing", kind: str = "ship_warning", severity: str = "warning",
                 shop: str = "s-1", platform: str = "douyin",
                 at: datetime = datetime(2026, 11, 22, 10, 0, tzinfo=CST)) -> dict:
    """One alert change as shop.alerts carries it (events.md "Output: alerts"), for order o-{n}."""
    return {"alert_id": f"{kind}:{platform}:o-{n}", "kind": kind, "severity": severity, "status": status,
            "platform": platform, "shop_id": shop, "order_id": f"o-{n}", "at": at.isoformat(),
            "summary": f"订单 o-{n}", "details": {}}


# ------------------------------------------------------- hypothesis: one order and one chat session
T0 = local(2026, 10, 1, 10)
SPAN_MIN = 12 * 24 * 60  # events within 12 days of the payment

SCANS = ("picked_up", "in_transit", "out_for_delivery", "signed", "customs", "exception", "fake_flagged")
REFUND_STEPS = ("approved", "rejected", "return_shipped", "return_signed", "received", "intervened",
                "judged", "completed", "closed", "proof_uploaded")


@st.composite
def streams(draw):
    """Events of one order and one chat session of one shop, in time order (ties by generation)."""
    platform = draw(st.sampled_from(PLATFORMS))
    sh = Shop(platform, "s-prop")
    # minutes after T0; a small range sometimes, so that instants coincide
    span = draw(st.sampled_from([SPAN_MIN, 6 * 60, 3]))

    def t():
        return T0 + draw(st.integers(0, span)) * MINUTE

    evs = []
    paid = {"trade_type": draw(st.sampled_from(["domestic", "bonded", "direct_mail"])),
            "category": draw(st.sampled_from(["general", "fresh"])),
            "cod": draw(st.booleans()), "virtual": draw(st.sampled_from([False] * 5 + [True]))}
    shape = draw(st.sampled_from(["default", "presale_days", "presale_date", "promised"]))
    if shape == "presale_days":
        paid["presale"] = {"ship_within_days": draw(st.integers(0, 5))}
    elif shape == "presale_date":
        paid["presale"] = {"ship_by": draw(st.sampled_from(["2026-10-01", "2026-10-03", "2026-10-06"]))}
    elif shape == "promised":
        paid["promised_ship_by"] = iso(T0 + draw(st.integers(-2, 72)) * HOUR)
    evs.append(sh.paid("o", T0, amount_fen=draw(st.integers(0, 300_000)), **paid))
    for _ in range(draw(st.integers(0, 2))):
        evs.append(sh.shipped("o", t(), no_logistics=draw(st.sampled_from([False, False, True]))))
    if draw(st.integers(0, 5)) == 0:
        evs.append(sh.cancelled("o", t()))
    for _ in range(draw(st.integers(0, 5))):
        step = draw(st.sampled_from(SCANS))
        kw = {}
        if step == "customs":
            kw["status"] = draw(st.sampled_from(["declared", "cleared", "held", "exception"]))
        elif step == "exception":
            kw["reason"] = draw(st.sampled_from(["lost", "damaged", "address"]))
        evs.append(sh.scan(step, "o", t(), **kw))
    for _ in range(draw(st.integers(0, 2))):
        evs.append(sh.review("o", t(), product=draw(st.integers(1, 5)),
                             service=draw(st.one_of(st.none(), st.integers(1, 5)))))
    for c in range(draw(st.integers(0, 2))):
        cid = f"c{c}"
        evs.append(sh.complaint("o", cid, t()))
        for _ in range(draw(st.integers(0, 2))):  # a ruling, sometimes a second one
            evs.append(sh.judged("o", cid, t(), draw(st.sampled_from(["merchant", "buyer", "both", "none"])),
                                 malicious=draw(st.booleans())))
    for r in range(draw(st.integers(0, 2))):
        rid = f"r{r}"
        evs.append(sh.requested("o", rid, t(), kind=draw(st.sampled_from(["refund_only", "return_refund", "exchange"])),
                                reason=draw(st.sampled_from(["quality", "spoiled", "logistics", "not_received",
                                                             "no_reason", "other"])),
                                no_return=draw(st.booleans()),
                                damage_ratio=draw(st.one_of(st.none(), st.sampled_from([0.0, 0.2, 0.3, 0.8])))))
        for step in draw(st.lists(st.sampled_from(REFUND_STEPS), max_size=5, unique=True)):
            kw = {"responsible": draw(st.sampled_from(["merchant", "buyer", "both"]))} if step == "judged" else {}
            evs.append(sh.refund(step, "o", rid, t(), **kw))
    # one chat session
    start = t()
    evs.append(sh.chat("started", "c", start))
    if draw(st.booleans()):
        evs.append(sh.chat("assigned", "c", start + draw(st.integers(0, 400)) * 1_000_000))
    at = start
    for _ in range(draw(st.integers(0, 6))):
        at += draw(st.sampled_from([0, 0, 30, 180, 181, 300])) * 1_000_000
        evs.append(sh.msg("c", at, draw(st.sampled_from(["buyer", "buyer", "agent", "bot", "system"]))))
    if draw(st.booleans()):
        evs.append(sh.chat("closed", "c", at + draw(st.integers(0, 300)) * 1_000_000))
        for _ in range(draw(st.integers(0, 2))):
            evs.append(sh.chat("rated", "c", at + draw(st.sampled_from([400, 401])) * 1_000_000,
                               rating=draw(st.integers(1, 5))))
    order = sorted(range(len(evs)), key=lambda i: (evs[i]["ts"], i))
    return [evs[i] for i in order]


def until_of(evs) -> int:
    """Late enough for every timer of the stream to have fired."""
    return max(validate(dict(e))["ts_us"] for e in evs) + 30 * DAY


# ------------------------------------------------------- small readers shared by the rule tests
CJK = re.compile(r"[\u4e00-\u9fff]")


def local_midnight(d) -> int:
    """Local 00:00:00 of the date ``d``."""
    return local(d.year, d.month, d.day)


def assert_summaries(eng, ids=("order_id",), required: bool = False) -> None:
    """Every alert carries a Chinese summary; a firing one names its ``ids`` (those it has,
    or, ``required``, every one of them)."""
    for a in eng.alerts:
        assert isinstance(a["summary"], str) and a["summary"].strip() and CJK.search(a["summary"]), a
        if a["status"] == "firing":
            for k in ids:
                if required or a.get(k):
                    assert a[k] in a["summary"], a
