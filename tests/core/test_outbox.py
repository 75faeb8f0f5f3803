"""streams.outbox: the alert log, what each sink owes, and when a sink may post (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta

import orjson
from core_helpers import alert_change as alert
from hypothesis import given, settings
from hypothesis import strategies as st

from shopwatch.streams.outbox import CST, AlertBook, ShopAlerts, SinkPlan, parse_quiet_hours, quiet_until

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=CST)


def everything(_a) -> bool:
    return True


def critical_only(a) -> bool:
    return a["severity"] == "critical"


def book(*sinks) -> AlertBook:
    return AlertBook(sinks or [("chat", everything)], 0)


# ----------------------------------------------------------------------------- the log


def test_a_copy_changes_nothing_and_a_firing_after_its_resolution_is_a_copy():
    b = book()
    assert b.on_change(alert(), 1.0)
    assert not b.on_change(alert(), 2.0)
    assert b.on_change(alert(status="resolved"), 3.0)
    assert not b.on_change(alert(), 4.0), "a firing after the resolution is a late copy"
    assert not b.on_change(alert(status="resolved"), 5.0)
    assert b.shop("s-1").log[alert()["alert_id"]]["status"] == "resolved"


def test_each_sink_owes_what_its_routing_takes():
    b = book(("all", everything), ("crit", critical_only))
    b.on_change(alert(1), 1.0)
    b.on_change(alert(2, kind="ship_overdue", severity="critical"), 2.0)
    assert {a["order_id"] for _, _, es in b.owed("all") for a in es} == {"o-1", "o-2"}
    assert [(a["order_id"]) for _, _, es in b.owed("crit") for a in es] == ["o-2"]
    assert b.depth("all") == (2, 1.0) and b.depth("crit") == (1, 2.0)


def test_groups_are_per_platform_and_shop():
    b = book()
    b.on_change(alert(1, shop="s-1", platform="douyin"), 1.0)
    b.on_change(alert(2, shop="s-1", platform="jd"), 1.0)
    b.on_change(alert(3, shop="s-2", platform="douyin"), 1.0)
    assert sorted(g for g, _, _ in b.owed("chat")) == ["douyin:s-1", "douyin:s-2", "jd:s-1"]


def test_a_firing_never_delivered_then_resolved_is_owed_once_as_fired_and_resolved():
    b = book()
    b.on_change(alert(), 1.0)
    b.on_change(alert(status="resolved", at=T0 + timedelta(hours=1)), 2.0)
    [(_g, since, [e])] = b.owed("chat")
    assert e["status"] == "resolved" and e["folded"] is True and since == 1.0
    assert b.delivered("chat", "s-1", [e]) == 1
    assert b.owed("chat") == [] and b.depth("chat") == (0, None)


def test_a_change_while_a_post_was_on_its_way_stays_owed():
    b = book()
    b.on_change(alert(), 1.0)
    [(_g, _s, sent)] = b.owed("chat")
    b.on_change(alert(status="resolved"), 2.0)  # arrives during the post of the firing
    assert b.delivered("chat", "s-1", sent) == 0
    [(_g, _s, [e])] = b.owed("chat")
    assert e["status"] == "resolved" and "folded" not in e, "the firing is in the chat: only the resolution is owed"
    assert b.delivered("chat", "s-1", [e]) == 1


def test_delivered_then_resolved_owes_the_resolution():
    b = book()
    b.on_change(alert(), 1.0)
    b.delivered("chat", "s-1", b.owed("chat")[0][2])
    b.on_change(alert(status="resolved"), 5.0)
    [(_g, since, [e])] = b.owed("chat")
    assert e["status"] == "resolved" and "folded" not in e and since == 5.0


def test_drain_writes_changed_shops_once_and_restores_with_everything_owed():
    b = book()
    b.on_change(alert(1), 1.0)
    b.on_change(alert(2, shop="s-2"), 1.0)
    b.on_change(alert(1, status="resolved"), 2.0)
    writes = b.drain()
    assert sorted(k for k, _ in writes) == ["s-1", "s-2"] and b.drain() == []
    docs = {k: orjson.loads(orjson.dumps(d)) for k, d in writes}
    assert all(d["p"] == 0 for d in docs.values())
    again = AlertBook([("chat", everything)], 0)
    again.recover(docs.items())
    assert sorted(again.owed("chat")) == sorted(b.owed("chat"))
    assert not again.on_change(alert(1, status="resolved"), 9.0), "the restored log knows the copy"


def test_lazy_restore_from_the_table_and_the_old_document_form():
    old = {alert(1)["alert_id"]: alert(1)}  # {alert_id: latest change}, before the owed sets
    b = AlertBook([("chat", everything)], 0, docs={"s-1": old})
    assert not b.on_change(alert(1), 1.0), "the old document's log is kept"
    assert b.on_change(alert(1, status="resolved"), 2.0)
    assert ShopAlerts.restore(old, "s-1").owed == {}


def test_resolved_alerts_are_forgotten_after_14_days_unless_still_owed():
    b = book(("chat", everything), ("none", lambda a: False))
    b.on_change(alert(1), 1.0)
    b.on_change(alert(1, status="resolved"), 1.0)
    b.delivered("chat", "s-1", b.owed("chat")[0][2])
    b.on_change(alert(2), 1.0)
    b.on_change(alert(2, status="resolved"), 1.0)  # still owed to "chat"
    b.on_change(alert(3, at=T0 + timedelta(days=15)), 2.0)
    log = b.shop("s-1").log
    assert alert(1)["alert_id"] not in log
    assert alert(2)["alert_id"] in log, "still owed"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.sampled_from(["firing", "resolved"])), max_size=30), st.data())
def test_copies_anywhere_change_nothing(changes, data):
    """A stream with copies (shop.alerts is at-least-once) gives the log and the
    owed sets of the stream without them."""
    # the stream without copies: each alert fires once, then resolves once
    clean, state = [], {}
    for n, status in changes:
        if state.get(n) is None and status == "firing" or state.get(n) == "firing" and status == "resolved":
            state[n] = status
            clean.append(alert(n, status=status))
    noisy = []
    for i, a in enumerate(clean):
        noisy.append(a)
        for _ in range(data.draw(st.integers(0, 2))):  # copies of this or an earlier change
            noisy.append(clean[data.draw(st.integers(0, i))])
    b1, b2 = book(), book()
    assert all(b1.on_change(a, 1.0) for a in clean)
    assert sum(b2.on_change(a, 1.0) for a in noisy) == len(clean)
    assert b1.shop("s-1", create=True).log == b2.shop("s-1", create=True).log
    assert b1.owed("chat") == b2.owed("chat")


# ----------------------------------------------------------------------------- the plan


def plan(**kw) -> SinkPlan:
    kw.setdefault("rate", None)
    return SinkPlan("chat", **kw)


def test_group_wait_then_group_interval():
    p = plan(group_wait=30, group_interval=300)
    g = [("douyin:s-1", 100.0, [alert()])]
    assert p.next_posts(g, 110.0) == ([], 130.0)
    posts, _ = p.next_posts(g, 130.0)
    assert posts == [("douyin:s-1", [alert()])]
    p.accepted("douyin:s-1", 130.0, emptied=True)
    g = [("douyin:s-1", 140.0, [alert(2)])]
    assert p.next_posts(g, 140.0) == ([], 430.0), "group_interval after the last post"
    assert p.next_posts(g, 430.0)[0]


def test_a_firing_critical_goes_at_once_and_takes_its_group_along():
    p = plan(group_wait=30)
    crit = alert(2, kind="ship_overdue", severity="critical")
    posts, _ = p.next_posts([("douyin:s-1", 100.0, [alert(1), crit]), ("douyin:s-2", 100.0, [alert(3, shop="s-2")])],
                            100.0)
    assert posts == [("douyin:s-1", [alert(1), crit])]


def test_quiet_hours_hold_warnings_not_criticals_and_release_them_as_one_digest():
    q = parse_quiet_hours("22:00-08:00")
    night = datetime(2026, 11, 22, 23, 30, tzinfo=CST).timestamp()
    morning = datetime(2026, 11, 23, 8, 0, tzinfo=CST).timestamp()
    assert quiet_until(q, night) == morning
    assert quiet_until(q, morning) is None
    assert quiet_until(parse_quiet_hours("12:00-13:00"), datetime(2026, 11, 22, 12, 59, tzinfo=CST).timestamp()) \
        == datetime(2026, 11, 22, 13, 0, tzinfo=CST).timestamp()
    p = plan(group_wait=0, quiet=q)
    crit = alert(2, kind="ship_overdue", severity="critical")
    warnings = [alert(1), alert(3), alert(4, status="resolved")]
    assert p.next_posts([("douyin:s-1", night, warnings)], night) == ([], morning)
    posts, _ = p.next_posts([("douyin:s-1", night, [*warnings, crit])], night)
    assert posts == [("douyin:s-1", [crit])], "a critical is never held; the warnings stay"
    posts, _ = p.next_posts([("douyin:s-1", night, warnings)], morning)
    assert posts == [("douyin:s-1", warnings)]


def test_token_bucket_lets_groups_grow_instead_of_messages_queueing():
    p = plan(rate=20, burst=2, group_wait=0, group_interval=0)
    groups = [(f"douyin:s-{i}", 0.0, [alert(i, shop=f"s-{i}")]) for i in range(10)]
    posts, wake = p.next_posts(groups, 0.0)
    assert len(posts) == 2 and wake == 3.0, "two tokens, then one every 3 s (20 a minute)"
    posts, wake = p.next_posts(groups, 2.0)
    assert posts == [] and wake == 3.0
    posts, _ = p.next_posts(groups, 3.0)
    assert len(posts) == 1
    sent = 3
    for t in range(4, 61):
        sent += len(p.next_posts(groups, float(t))[0])
    assert sent <= 2 + 20, sent


def test_oldest_group_first_under_the_limit():
    p = plan(rate=1, burst=1, group_wait=0)
    posts, _ = p.next_posts([("a:new", 50.0, [alert(1)]), ("a:old", 10.0, [alert(2)])], 60.0)
    assert [g for g, _ in posts] == ["a:old"]


def test_failures_back_off_with_jitter_up_to_the_cap_and_reset_on_success():
    delays = []
    for r in (0.0, 0.999):
        p = plan(retry_min=1, retry_max=300, rng=lambda r=r: r)
        delays.append([p.failed(0.0, "HTTP 500") for _ in range(12)])
    low, high = delays
    assert low[0] == 0.75 and high[0] < 1.25
    assert all(b >= a for a, b in zip(low, low[1:], strict=False))
    assert max(high) == 300 and low[-1] == 225
    p = plan(group_wait=0)
    p.failed(10.0, "HTTP 500")
    assert p.next_posts([("g", 0.0, [alert()])], 10.1) == ([], p.paused_until)
    p.accepted("g", 20.0, emptied=True)
    assert p.failures == 0 and p.problem is None and p.paused_until == 0


def test_throttled_waits_what_the_vendor_said_and_empties_the_bucket():
    p = plan(rate=20, burst=5, group_wait=0)
    assert p.throttled(100.0, 600.0, "errcode 130101") == 600.0
    assert p.next_posts([("g", 0.0, [alert()])], 200.0) == ([], 700.0)
    posts, _ = p.next_posts([("g", 0.0, [alert()])], 700.0)
    assert posts == [], "the bucket starts empty after the pause"
    assert p.next_posts([("g", 0.0, [alert()])], 703.0)[0]


def test_a_rejected_sink_keeps_its_queue_and_says_why():
    p = plan(group_wait=0, rejected_retry=600)
    p.rejected_post(0.0, "errcode 310000 sign not match")
    assert p.rejected and "310000" in p.problem
    assert p.next_posts([("g", 0.0, [alert()])], 599.0)[0] == []
    assert p.next_posts([("g", 0.0, [alert()])], 600.0)[0]


def test_bad_quiet_hours_are_refused():
    for bad in ("22-08", "25:00-08:00", "08:00-08:00", ""):
        try:
            parse_quiet_hours(bad)
        except ValueError as exc:
            assert "quiet hours" in str(exc)
        else:
            raise AssertionError(bad)
