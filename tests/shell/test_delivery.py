"""agents.delivery: the per-sink delivery rounds over alert books, with a fake sink and clock."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from core_helpers import alert_change as alert

from shopwatch.agents.delivery import Delivery
from shopwatch.streams.outbox import AlertBook


class FakeSink:
    def __init__(self, name="chat", outcomes=(), **attrs):
        self.name = name
        self.outcomes = list(outcomes)
        self.posts: list = []
        self.rate = None
        self.group_wait = 0.0
        self.group_interval = 0.0
        self.retry_min, self.retry_max = 1.0, 60.0
        self.__dict__.update(attrs)

    def wants(self, a):
        return True

    def render_batch(self, entries, now, mentions=None):
        return ("batch", [dict(a) for a in entries])

    def resend_batch(self, open_alerts, now):
        return ("resend", list(open_alerts))

    async def post(self, session, request):
        self.posts.append(request)
        kind, retry_after = self.outcomes.pop(0) if self.outcomes else ("ok", None)
        return SimpleNamespace(kind=kind, detail=f"fake {kind}", retry_after=retry_after)


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def setup(sink, clock):
    books = {}
    d = Delivery([sink], lambda: books, clock=clock, rng=lambda: 0.5)
    books[0] = AlertBook(d.routes(), 0)
    return d, books[0]


def run(coro):
    return asyncio.run(coro)


def test_failures_keep_everything_owed_until_the_chat_accepts():
    sink = FakeSink(outcomes=[("retry", None), ("retry", None), ("ok", None)])
    clock = Clock()
    d, book = setup(sink, clock)
    book.on_change(alert(1), clock.t)
    book.on_change(alert(1, status="resolved"), clock.t)
    wake = run(d._round(sink))
    assert len(sink.posts) == 1 and wake == clock.t + 1.0, "backed off 1 s"
    assert d.status()["chat"]["owed"] == 1 and d.status()["chat"]["problem"] == "fake retry"
    clock.t = wake
    wake = run(d._round(sink))
    assert wake == clock.t + 2.0, "then 2 s"
    clock.t = wake
    assert run(d._round(sink)) == 0
    assert d.status()["chat"] == {"owed": 0, "oldest_owed_s": None, "misconfigured": False, "problem": None}
    [(_, entries)] = [p for p in sink.posts[-1:]]
    assert [(a["status"], a.get("folded")) for a in entries] == [("resolved", True)], "fired and resolved, once"
    assert run(d._round(sink)) is None and len(sink.posts) == 3, "nothing owed: no post"


def test_a_rejected_sink_reports_it_and_keeps_the_queue():
    sink = FakeSink(outcomes=[("reject", None)], rejected_retry=600.0)
    clock = Clock()
    d, book = setup(sink, clock)
    book.on_change(alert(1), clock.t - 30)
    assert run(d._round(sink)) == clock.t + 600.0
    st = d.status()["chat"]
    assert st["misconfigured"] and st["owed"] == 1 and st["oldest_owed_s"] == 30.0
    clock.t += 600
    assert run(d._round(sink)) == 0 and d.status()["chat"]["owed"] == 0


def test_throttled_posts_wait_and_the_digest_grows():
    sink = FakeSink(outcomes=[("throttled", 60.0)], rate=20, burst=1)
    clock = Clock()
    d, book = setup(sink, clock)
    book.on_change(alert(1), clock.t)
    assert run(d._round(sink)) == clock.t + 60
    for n in range(2, 30):
        book.on_change(alert(n), clock.t + 1)
    clock.t += 60
    run(d._round(sink))
    assert run(d._round(sink)) is not None
    clock.t += 3
    assert run(d._round(sink)) == 0
    assert len(sink.posts[-1][1]) == 29, "one digest of everything owed"


def test_alerts_firing_are_resent_every_resend_seconds():
    sink = FakeSink(resend=60.0)
    clock = Clock()
    d, book = setup(sink, clock)
    book.on_change(alert(1), clock.t)
    book.on_change(alert(2), clock.t)
    book.on_change(alert(2, status="resolved"), clock.t)
    run(d._round(sink))
    resends = [p for p in sink.posts if p[0] == "resend"]
    assert [a["order_id"] for a in resends[0][1]] == ["o-1"]
    clock.t += 30
    run(d._round(sink))
    assert len([p for p in sink.posts if p[0] == "resend"]) == 1
    clock.t += 30
    run(d._round(sink))
    assert len([p for p in sink.posts if p[0] == "resend"]) == 2


def test_morning_summary_once_a_day_per_platform_and_shop_with_its_score():
    from datetime import datetime

    from shopwatch.streams.outbox import CST

    nine = datetime(2026, 12, 1, 9, 0, tzinfo=CST).timestamp()
    sink = FakeSink(morning_summary=9 * 60)
    sink.render_summary = lambda summary, now, mentions=None: ("summary", summary)
    asked = []

    async def scores(platform, shop_id):
        asked.append((platform, shop_id))
        return None if shop_id == "s-2" else {"platform": platform, "shop_id": shop_id, "indicators": {}}

    clock = Clock(nine - 60)
    books = {}
    d = Delivery([sink], lambda: books, clock=clock, rng=lambda: 0.5, scores=scores)
    books[0] = AlertBook(d.routes(), 0)
    books[0].on_change(alert(1, shop="s-1"), clock.t)
    books[0].on_change(alert(2, shop="s-2", platform="jd"), clock.t)
    books[0].on_change(alert(2, shop="s-2", platform="jd", status="resolved"), clock.t)
    books[0].on_change(alert(3, shop="s-1", platform="jd"), clock.t)
    run(d._round(sink))
    assert not [p for p in sink.posts if p[0] == "summary"], "not 09:00 yet"
    clock.t = nine
    run(d._round(sink))
    summaries = [p[1] for p in sink.posts if p[0] == "summary"]
    assert sorted((s.platform, s.shop_id, s.firing) for s in summaries) == [
        ("douyin", "s-1", 1), ("jd", "s-1", 1), ("jd", "s-2", 0)]
    assert sorted(asked) == [("douyin", "s-1"), ("jd", "s-1"), ("jd", "s-2")]
    clock.t = nine + 3600
    run(d._round(sink))
    assert len([p for p in sink.posts if p[0] == "summary"]) == 3, "once a day"
    clock.t = nine + 86400
    run(d._round(sink))
    assert len([p for p in sink.posts if p[0] == "summary"]) == 6
