"""Consultations: 小红书 reply_3min_rate (§3), 京东 reply_30s_rate (§7), 抖音 IM indicators (§4, §5)."""

from __future__ import annotations

import pytest
from core_helpers import MINUTE, SEC, Shop, ind, local, run

START = local(2026, 10, 1, 10)


def session(sh, sid, start, msgs, assigned=None, closed=None, rated=None):
    """``msgs``: [(seconds after start, sender)]; ``assigned``/``closed``: seconds after start."""
    evs = [sh.chat("started", sid, start)]
    if assigned is not None:
        evs.append(sh.chat("assigned", sid, start + assigned * SEC))
    evs += [sh.msg(sid, start + off * SEC, who) for off, who in msgs]
    if closed is not None:
        evs.append(sh.chat("closed", sid, start + closed * SEC))
    if rated is not None:
        evs.append(sh.chat("rated", sid, start + (closed or 0) * SEC + SEC, rating=rated))
    return evs


def rate(platform, name, evs, until=None):
    i = ind(run(evs, until=until), platform, name)
    return i["num"], i["den"]


XHS_CASES = {
    # name: (messages, assigned, closed, (num, den))
    "reply_at_180s_good": ([(0, "buyer"), (180, "agent")], None, 600, (1, 1)),
    "reply_at_181s_not": ([(0, "buyer"), (181, "agent")], None, 600, (0, 1)),
    "queue_180s_good": ([(180, "buyer"), (190, "agent")], 180, 600, (1, 1)),
    "queue_181s_not": ([(181, "buyer"), (190, "agent")], 181, 600, (0, 1)),
    "never_assigned_queue_0": ([(0, "buyer"), (10, "agent")], None, 600, (1, 1)),
    "later_turn_180s_good": ([(0, "buyer"), (10, "agent"), (20, "buyer"), (200, "agent")], None, 600, (1, 1)),
    "later_slow_turn_not": ([(0, "buyer"), (10, "agent"), (20, "buyer"), (201, "agent")], None, 600, (0, 1)),
    "turn_starts_at_first_buyer_message": ([(0, "buyer"), (100, "buyer"), (181, "agent")], None, 600, (0, 1)),
    "bot_is_not_a_reply": ([(0, "buyer"), (5, "bot"), (181, "agent")], None, 600, (0, 1)),
    "bot_then_agent_in_time": ([(0, "buyer"), (5, "bot"), (170, "agent")], None, 600, (1, 1)),
    "system_is_not_a_reply": ([(0, "buyer"), (5, "system")], None, 600, (0, 1)),
    "bot_does_not_split_a_turn": ([(0, "buyer"), (5, "agent"), (10, "buyer"), (20, "bot"), (30, "buyer"),
                                   (191, "agent")], None, 600, (0, 1)),
    "unanswered_last_turn_not": ([(0, "buyer"), (10, "agent"), (20, "buyer")], None, 600, (0, 1)),
    "no_agent_message_not": ([(0, "buyer")], None, 600, (0, 1)),
    "agent_after_close_not": ([(0, "buyer"), (700, "agent")], None, 600, (0, 1)),
    "greeting_before_buyer_is_not_the_response": ([(0, "agent"), (10, "buyer"), (191, "agent")], None, 600, (0, 1)),
    "no_buyer_message_not_a_consultation": ([(0, "agent"), (10, "bot")], None, 600, (0, 0)),
    "not_closed_not_counted_yet": ([(0, "buyer"), (10, "agent")], None, None, (0, 0)),
}


@pytest.mark.parametrize("case", sorted(XHS_CASES))
def test_reply_3min_rate(case):
    msgs, assigned, closed, expected = XHS_CASES[case]
    sh = Shop("xiaohongshu")
    assert rate("xiaohongshu", "reply_3min_rate", session(sh, "c-1", START, msgs, assigned, closed)) == expected


@pytest.mark.parametrize(("hms", "counted"), [
    ((8, 59, 59), False), ((9, 0, 0), True), ((22, 59, 59), True), ((23, 0, 0), False), ((3, 0, 0), False),
])
def test_reply_3min_rate_service_hours_local(hms, counted):
    sh = Shop("xiaohongshu")
    start = local(2026, 10, 1, *hms)
    evs = session(sh, "c-1", start, [(0, "buyer"), (10, "agent")], closed=60)
    assert rate("xiaohongshu", "reply_3min_rate", evs) == ((1, 1) if counted else (0, 0))


def test_reply_3min_rate_mixes_sessions():
    sh = Shop("xiaohongshu")
    evs = (session(sh, "a", START, [(0, "buyer"), (30, "agent")], closed=100)
           + session(sh, "b", START + MINUTE, [(0, "buyer"), (400, "agent")], closed=500)
           + session(sh, "c", START + 2 * MINUTE, [(0, "buyer"), (3, "agent")], closed=50))
    eng = run(evs)
    i = ind(eng, "xiaohongshu", "reply_3min_rate")
    assert (i["num"], i["den"]) == (2, 3)
    assert i["value"] == pytest.approx(2 / 3)


def test_reply_3min_rate_does_not_depend_on_message_arrival_order():
    sh = Shop("xiaohongshu")
    evs = session(sh, "c-1", START, [(0, "buyer"), (10, "agent"), (20, "buyer"), (201, "agent")], closed=600)
    assert rate("xiaohongshu", "reply_3min_rate", evs) == (0, 1)
    eng = run(list(reversed(evs)), sort=False)
    i = ind(eng, "xiaohongshu", "reply_3min_rate")
    assert (i["num"], i["den"]) == (0, 1)


def test_duplicate_message_has_no_effect():
    sh = Shop("xiaohongshu")
    evs = session(sh, "c-1", START, [(0, "buyer"), (10, "agent")], closed=600)
    late_buyer = sh.msg("c-1", START + 20 * SEC, "buyer")
    # the same buyer message delivered again must not open a second turn nor count twice
    assert rate("xiaohongshu", "reply_3min_rate", evs + [dict(evs[2]), dict(evs[2])]) == (1, 1)
    assert rate("xiaohongshu", "reply_3min_rate", evs + [late_buyer]) == (0, 1)


# ---------------------------------------------------------------- 京东 30 s


@pytest.mark.parametrize(("reply_s", "good"), [(30, 1), (31, 0), (0, 1)])
def test_jd_reply_30s_rate(reply_s, good):
    sh = Shop("jd")
    evs = session(sh, "c-1", START, [(0, "buyer"), (reply_s, "agent")], closed=600)
    assert rate("jd", "reply_30s_rate", evs) == (good, 1)


def test_jd_counts_any_hour_and_no_reply_is_not_good():
    sh = Shop("jd")
    night = local(2026, 10, 1, 3)
    evs = (session(sh, "a", night, [(0, "buyer"), (5, "agent")], closed=60)
           + session(sh, "b", local(2026, 10, 1, 23, 30), [(0, "buyer")], closed=60)
           + session(sh, "c", START, [(0, "agent")], closed=60))  # no buyer message: not a consultation
    assert rate("jd", "reply_30s_rate", evs) == (1, 2)


def test_jd_first_response_is_after_first_buyer_message():
    sh = Shop("jd")
    evs = session(sh, "c-1", START, [(0, "agent"), (5, "buyer"), (40, "agent")], closed=100)
    assert rate("jd", "reply_30s_rate", evs) == (0, 1)


# ---------------------------------------------------------------- 抖音 IM


def test_douyin_im_first_response_minutes_from_assignment():
    sh = Shop("douyin")
    evs = (session(sh, "a", START, [(0, "buyer"), (50, "agent"), (200, "agent")], assigned=60, closed=600)
           # first agent message at or after assignment: 60 s + 240 s
           + session(sh, "b", START + MINUTE, [(0, "buyer"), (300, "agent")], assigned=60, closed=600)
           + session(sh, "c", START + 2 * MINUTE, [(0, "buyer"), (30, "agent")], closed=600))  # never assigned
    i = ind(run(evs), "douyin", "im_first_response_minutes")
    assert i["den"] == 2
    assert i["value"] == pytest.approx((140 / 60 + 240 / 60) / 2)


def test_douyin_im_dissatisfaction_rate_earliest_rating():
    sh = Shop("douyin")
    evs = (session(sh, "a", START, [(0, "buyer"), (10, "agent")], closed=60, rated=3)
           + session(sh, "b", START, [(0, "buyer"), (10, "agent")], closed=60, rated=4)
           + session(sh, "c", START, [(0, "buyer"), (10, "agent")], closed=60, rated=1)
           + session(sh, "d", START, [(0, "buyer"), (10, "agent")], closed=60))
    # a second rating of session b (later) does not replace the first
    evs.append(sh.chat("rated", "b", START + 3 * MINUTE, rating=1))
    i = ind(run(evs), "douyin", "im_dissatisfaction_rate")
    assert (i["num"], i["den"]) == (2, 3)
    assert i["window_days"] == 90


@pytest.mark.parametrize("agent_first", [False, True])
def test_messages_at_the_same_instant_do_not_depend_on_arrival_order(agent_first):
    sh = Shop("xiaohongshu")
    buyer, agent = sh.msg("c-1", START + SEC, "buyer"), sh.msg("c-1", START + SEC, "agent")
    evs = [sh.chat("started", "c-1", START)] + ([agent, buyer] if agent_first else [buyer, agent])
    evs.append(sh.chat("closed", "c-1", START + MINUTE))
    i = ind(run(evs, sort=False), "xiaohongshu", "reply_3min_rate")
    assert (i["num"], i["den"]) == (1, 1)  # a reply at the buyer's instant: 0 s
