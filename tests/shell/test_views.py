"""agents/views.py without a broker: the alert list's filters, order and paging (pure), the
merge of several workers' shares, the /shops entries, the 抖音 outlook of a shop without
data (streams/shop.py), and the page's token handling on an in-process web server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from broker_helpers import free_port
from hypothesis import given, settings
from hypothesis import strategies as st

from shopwatch.agents import page as sw_page
from shopwatch.agents import views
from shopwatch.agents.views import (
    AlertQuery,
    QueryError,
    merge_alert_pages,
    parse_alert_query,
    rank_alerts,
    select_alerts,
    shop_alerts_of_old,
    shop_entry,
)
from shopwatch.streams.clock import local_day
from shopwatch.streams.rules import Rules
from shopwatch.streams.shop import ShopLogic, ShopState

T0 = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
KINDS = ("ship_overdue", "ship_warning", "pickup_timeout", "refund_response_warning", "daily_cap_reached")
SEV = {"ship_overdue": "critical", "ship_warning": "warning", "pickup_timeout": "warning",
       "refund_response_warning": "warning", "daily_cap_reached": "critical"}


def ts(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).astimezone().isoformat()


def alert(i: int, at: float, *, status: str = "firing", platform: str = "douyin", shop: str = "s-1",
          kind: str = "ship_overdue", due: float | None = None, auto: float | None = None) -> dict:
    a = {"alert_id": f"{kind}:{platform}:o-{i}", "kind": kind, "severity": SEV[kind], "status": status,
         "platform": platform, "shop_id": shop, "order_id": f"o-{i}", "at": ts(at), "summary": f"alert {i}",
         "details": {}}
    if due is not None:
        a["due_at"] = ts(due)
    if auto is not None:
        a["details"] = {"auto_at": ts(auto)}
    return a


def q(**params) -> AlertQuery:
    return parse_alert_query(params)


SAMPLE = [
    alert(1, 10, due=100), alert(2, 30, shop="s-2", kind="ship_warning", due=50),
    alert(3, 20, status="resolved", platform="jd", shop="j-1", kind="pickup_timeout"),
    alert(4, 30, platform="tmall", shop="t-1", kind="refund_response_warning", due=500, auto=40),
    alert(5, 5, platform="douyin", shop="s-1", kind="daily_cap_reached"),
    alert(6, 40, status="resolved", shop="s-2", due=60),
]


# --------------------------------------------------------------------------- parsing


def test_query_defaults():
    d = parse_alert_query({})
    assert (d.status, d.sort, d.limit, d.offset, d.after, d.paged) == ("firing", "at", 100, 0, None, True)
    assert not (d.platforms or d.shop_ids or d.kinds or d.severities)


def test_query_filters_repeat_or_take_commas_but_shop_ids_only_repeat():
    p = q(platform=["douyin", "jd,tmall"], severity="critical, warning", kind="ship_overdue",
          shop_id=["a,b", "c"])
    assert p.platforms == {"douyin", "jd", "tmall"} and p.severities == {"critical", "warning"}
    assert p.kinds == {"ship_overdue"} and p.shop_ids == {"a,b", "c"}


@pytest.mark.parametrize("params", [
    {"status": "open"}, {"platform": "taobao"}, {"severity": "fatal"}, {"sort": "shop"},
    {"limit": "0"}, {"limit": "1001"}, {"limit": "ten"}, {"offset": "-1"}, {"offset": "10001"},
    {"cursor": "!!"}, {"cursor": "bm90IGpzb24"}, {"status": ["firing", "all"]},
    {"sort": "due", "cursor": views.encode_cursor("at", (-5, "x"))},
    {"cursor": base64.urlsafe_b64encode(b'["at", "x", 5]').decode()},
])
def test_bad_queries_are_refused(params):
    with pytest.raises(QueryError):
        parse_alert_query(params)


def test_one_shop_without_paging_is_the_answer_of_old():
    assert not q(shop_id="s-1").paged
    assert not q(shop_id="s-1", status="all", kind="ship_overdue").paged
    for extra in ({"limit": "5"}, {"offset": "0"}, {"sort": "at"}, {"cursor": views.encode_cursor("at", (0, ""))}):
        assert q(shop_id="s-1", **extra).paged, extra
    assert q(shop_id=["s-1", "s-2"]).paged
    old = shop_alerts_of_old(SAMPLE, q(shop_id="s-1", status="all"))
    assert [a["alert_id"] for a in old] == [a["alert_id"] for a in sorted(
        (a for a in SAMPLE if a["shop_id"] == "s-1"), key=lambda a: a["at"])]


def test_params_round_trip():
    p = q(status="all", platform="jd,douyin", shop_id=["x", "y"], kind="ship_overdue", severity="critical",
          sort="due", limit="7", offset="3", cursor=views.encode_cursor("due", (0, 12, "a")))
    pairs: dict[str, list[str]] = {}
    for k, v in p.params():
        pairs.setdefault(k, []).append(v)
    assert parse_alert_query(pairs) == p


# --------------------------------------------------------------------------- filters, order, paging


def ids(page) -> list[str]:
    return [a["alert_id"].split(":")[-1] for a in page["alerts"]]


def test_firing_across_shops_newest_first_with_counts():
    page = select_alerts(SAMPLE, q())
    assert ids(page) == ["o-4", "o-2", "o-1", "o-5"]  # at 30, 30 (ties by alert_id: refund_… < ship_…), 10, 5
    assert page["total"] == 4 and page["next_cursor"] is None
    assert page["by_severity"] == {"critical": 2, "warning": 2, "info": 0}
    assert ids(select_alerts(SAMPLE, q(status="all"))) == ["o-6", "o-4", "o-2", "o-3", "o-1", "o-5"]
    assert ids(select_alerts(SAMPLE, q(status="resolved"))) == ["o-6", "o-3"]


def test_filters():
    assert ids(select_alerts(SAMPLE, q(platform="douyin"))) == ["o-2", "o-1", "o-5"]
    assert ids(select_alerts(SAMPLE, q(platform="tmall,jd", status="all"))) == ["o-4", "o-3"]
    assert ids(select_alerts(SAMPLE, q(shop_id=["s-2", "t-1"]))) == ["o-4", "o-2"]
    assert ids(select_alerts(SAMPLE, q(kind="daily_cap_reached"))) == ["o-5"]
    assert ids(select_alerts(SAMPLE, q(severity="critical"))) == ["o-1", "o-5"]
    page = select_alerts(SAMPLE, q(severity="critical", platform="jd"))
    assert page["alerts"] == [] and page["total"] == 0


def test_sort_by_due_takes_the_automatic_step_first_and_puts_alerts_without_a_deadline_last():
    # o-4: auto_at 40 (before its due_at 500); o-2: 50; o-1: 100; o-5: none
    assert ids(select_alerts(SAMPLE, q(sort="due"))) == ["o-4", "o-2", "o-1", "o-5"]


def test_offset_and_limit():
    page = select_alerts(SAMPLE, q(status="all", limit="2", offset="1"))
    assert ids(page) == ["o-4", "o-2"] and page["total"] == 6
    assert page["next_cursor"] is not None
    assert select_alerts(SAMPLE, q(status="all", offset="6"))["alerts"] == []


def test_the_cursor_walks_the_list_and_new_alerts_do_not_shift_it():
    got, cursor = [], None
    alerts = list(SAMPLE)
    while True:
        params = {"status": "all", "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = select_alerts(alerts, q(**params))
        got.extend(ids(page))
        cursor = page["next_cursor"]
        if cursor is None:
            break
        alerts.append(alert(100 + len(alerts), 1000))  # newer than everything: ahead of the cursor
    assert got == ["o-6", "o-4", "o-2", "o-3", "o-1", "o-5"]


alerts_strategy = st.lists(
    st.builds(alert, st.integers(0, 60), st.integers(0, 50),
              status=st.sampled_from(["firing", "resolved"]), platform=st.sampled_from(["douyin", "jd", "tmall"]),
              shop=st.sampled_from(["a", "b", "c", "d"]), kind=st.sampled_from(KINDS),
              due=st.none() | st.integers(0, 80), auto=st.none() | st.integers(0, 80)),
    max_size=40, unique_by=lambda a: a["alert_id"])


@settings(max_examples=150, deadline=None)
@given(alerts_strategy, st.integers(1, 4), st.sampled_from(["at", "due"]), st.sampled_from(["firing", "all"]),
       st.integers(1, 12), st.integers(0, 15), st.integers(0, 3), st.data())
def test_workers_shares_merge_into_the_single_list(alerts, workers, sort, status, limit, offset, cut, data):
    """Split by shop over ``workers`` workers, merged shares give what one worker holding
    everything gives, with or without a cursor."""
    base = {"status": status, "sort": sort, "limit": str(limit), "offset": str(offset)}
    whole = select_alerts(alerts, q(**base))
    if cut and whole["alerts"]:
        key = views.alert_key(whole["alerts"][min(cut, len(whole["alerts"])) - 1], sort)
        base["cursor"] = views.encode_cursor(sort, key)
        whole = select_alerts(alerts, q(**base))
    owner = {s: data.draw(st.integers(0, workers - 1)) for s in "abcd"}
    query = q(**base)
    shares = [rank_alerts([a for a in alerts if owner[a["shop_id"]] == w], query) for w in range(workers)]
    assert merge_alert_pages(shares, query) == whole
    every = sorted((a for a in alerts if query.matches(a)), key=query.key)
    after = [a for a in every if query.after is None or query.key(a) > query.after]
    assert whole["alerts"] == after[offset:offset + limit]
    assert whole["total"] == len(every)
    assert (whole["next_cursor"] is not None) == (len(after) > offset + limit and bool(whole["alerts"]))


# --------------------------------------------------------------------------- shops


def _douyin_shop_without_data() -> tuple[ShopLogic, ShopState, int]:
    logic = ShopLogic(Rules())
    s = ShopState(("douyin", "do-empty"))
    now = int(datetime(2026, 10, 20, 12, tzinfo=UTC).timestamp() * 1_000_000)
    s.first_us = s.level_since_us = now - 40 * 86_400_000_000
    s.level, s.now_us = 1, now
    return logic, s, now


def test_douyin_outlook_shows_no_data_as_null_but_the_level_machine_is_unchanged():
    logic, s, now = _douyin_shop_without_data()
    snap = logic.snapshot(s, now)
    assert all(snap["indicators"][n]["value"] is None for n in ("on_time_ship_rate", "fake_ship_rate",
                                                               "complaint_rate", "im_first_response_minutes"))
    up = snap["level"]["outlook"]["upgrade"]
    assert up["on_time_ship_rate"] is None and up["fake_ship_rate"] is None and up["complaint_rate"] is None
    assert up["im_first_response_minutes"] is True  # rules.md §4: "≤ 3 min, or no sessions"
    assert up["service_good_rate"] is False and up["product_good_rate"] is False  # < 100 reviews
    down = snap["level"]["outlook"]["downgrade"]
    assert down.pop("cumulative_orders") is True and not any(down.values())  # no data is not below a bar
    machine = logic.level_outlook(s, local_day(now))["upgrade"]  # what _evaluate_level takes: no data passes
    assert machine["on_time_ship_rate"] is True and machine["fake_ship_rate"] is True
    assert machine["complaint_rate"] is True


def test_shop_entry_marks_indicators_worse_than_the_bar():
    logic, s, now = _douyin_shop_without_data()
    snap = logic.snapshot(s, now)
    snap["indicators"]["on_time_ship_rate"] = {"value": 0.5, "num": 1, "den": 2, "window_days": 30}
    snap["indicators"]["fake_ship_rate"] = {"value": 0.0, "num": 0, "den": 2, "window_days": 30}
    e = shop_entry(snap, Rules(), {"orders": 3})
    assert e["snapshot"] is snap and e["cap_use"] == {"orders": 3}
    assert e["indicators"]["on_time_ship_rate"] == {"label": "准时发货率", "shown": "50.00%",
                                                   "bar": e["indicators"]["on_time_ship_rate"]["bar"], "worse": True}
    assert "降级线" in e["indicators"]["on_time_ship_rate"]["bar"]
    assert e["indicators"]["fake_ship_rate"]["worse"] is False
    assert e["indicators"]["complaint_rate"]["worse"] is False  # no data is never worse
    jd = shop_entry({"platform": "jd", "shop_id": "j", "indicators": {
        "reply_30s_rate": {"value": 0.1, "num": 1, "den": 10, "window_days": 30}}}, Rules())
    assert jd["indicators"]["reply_30s_rate"]["bar"] is None and not jd["indicators"]["reply_30s_rate"]["worse"]


# --------------------------------------------------------------------------- the page


def test_page_is_one_document_without_external_assets_and_its_csp_allows_its_own_script():
    html = sw_page.PAGE_HTML
    assert html.count("<script>") == 1 and html.count("<style>") == 1
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "innerHTML" not in html and "eval(" not in html
    script = html.split("<script>", 1)[1].split("</script>", 1)[0]
    style = html.split("<style>", 1)[1].split("</style>", 1)[0]
    for text in (script, style):
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in sw_page.CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in sw_page.CONTENT_SECURITY_POLICY
    assert "connect-src 'self'" in sw_page.CONTENT_SECURITY_POLICY


TOKEN = "views-test-token-0123456789abcdef"


def _serve(paths: list[tuple[str, dict]], token: str = TOKEN) -> list[tuple[int, dict, str]]:
    """(status, headers, body) of each GET on a worker's web server in-process (no Kafka)."""
    import tempfile

    import aiohttp
    from aiohttp.test_utils import TestServer

    from shopwatch.agents import ingest
    from shopwatch.agents import web as sw_web
    from shopwatch.agents.app import build_app
    from shopwatch.agents.settings import Settings
    from shopwatch.agents.topology import Topology

    async def run():
        s = Settings(web_bind="127.0.0.1", web_token=token, data_dir=tempfile.mkdtemp(), store="memory://")
        app = build_app(s)
        Topology(app, s, Rules(), lambda *a, **k: None)
        ingest.install_views(app)
        sw_web.secure(app, s)
        app.web.init_server()
        server = TestServer(app.web.web_app, host="127.0.0.1", port=free_port())
        await server.start_server()
        out = []
        try:
            async with aiohttp.ClientSession() as http:
                for path, headers in paths:
                    async with http.get(server.make_url(path), headers=headers) as r:
                        out.append((r.status, dict(r.headers), await r.text()))
        finally:
            await server.close()
        return out

    return asyncio.run(run())


def test_the_page_takes_the_token_from_the_query_once_and_then_from_its_cookie():
    cookie = {"Cookie": f"{views.TOKEN_COOKIE}={TOKEN}"}
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    res = _serve([
        ("/page", {}), ("/page?token=wrong", {}), (f"/page?token={TOKEN}", {}), ("/page", cookie),
        ("/page", bearer), (f"/alerts?token={TOKEN}", {}), (f"/shops?token={TOKEN}", {}),
        ("/alerts", cookie), ("/shops", cookie), ("/alerts", {"Cookie": f"{views.TOKEN_COOKIE}=wrong"}),
        ("/alerts", {**cookie, "Authorization": "Bearer wrong"}),  # a header wins over the cookie
        ("/healthz", {}), ("/metrics", {}), ("/", bearer), ("/router/", cookie),
        ("/alerts?status=nope", bearer), ("/shops?platform=taobao", bearer),
    ])
    statuses = [r[0] for r in res]
    assert statuses == [401, 401, 200, 200, 200, 401, 401, 200, 200, 401, 401, 200, 200, 404, 404, 400, 400]
    page_status, headers, body = res[2]
    assert body == sw_page.PAGE_HTML
    set_cookie = headers["Set-Cookie"]
    assert set_cookie.startswith(f"{views.TOKEN_COOKIE}={TOKEN};")
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/" in set_cookie
    assert headers["Content-Security-Policy"] == sw_page.CONTENT_SECURITY_POLICY
    assert headers["Referrer-Policy"] == "no-referrer" and headers["Cache-Control"] == "no-store"
    assert json.loads(res[0][2]) == {"error": "unauthorized"}


def test_without_a_token_the_page_is_open_and_sets_no_cookie():
    res = _serve([("/page", {}), ("/alerts", {}), ("/shops", {})], token="")
    assert [r[0] for r in res] == [200, 200, 200]
    assert "Set-Cookie" not in res[0][1]
