"""Digests (shopwatch.streams.digest) and each vendor's layout of them within its limit. Pure: no I/O.

The vendor layouts are ``Sink.render_digest`` / ``render_batch`` of
shopwatch.agents.sinks, which are pure (the clock value is passed in). The
alert ids a body lists are read back with the receiver's own pattern
(tests/chat_receiver.py), not with the code under test.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from chat_receiver import ALERT_ID_RE, OMITTED_RE, read_message

from shopwatch.agents.sinks import DingTalkSink, FeishuSink, Mentions, SlackSink, WeComSink
from shopwatch.streams import digest as dg

CST = timezone(timedelta(hours=8))
NOW = datetime(2026, 11, 22, 13, 0, tzinfo=CST).timestamp()  # 13:00 local, the day of the alerts
SHOP = "xi-shop-0"


def ts(hh: int, mm: int, day: int = 22) -> str:
    return f"2026-11-{day:02d}T{hh:02d}:{mm:02d}:00+08:00"


def alert(kind: str, n: int, *, status: str = "firing", due: str | None = None, at: str | None = None,
          severity: str | None = None, platform: str = "xiaohongshu", shop: str = SHOP, **extra) -> dict:
    from shopwatch.streams.alerts import SEVERITY

    refund = kind.startswith(("refund_", "return_", "cod_", "fresh_"))
    a = {
        "alert_id": f"{kind}:{platform}:{'r' if refund else 'o'}-{n}",
        "kind": kind,
        "severity": severity or SEVERITY[kind],
        "status": status,
        "platform": platform,
        "shop_id": shop,
        "order_id": f"o-{n}",
        "at": at or ts(12, 0),
        "summary": f"订单 o-{n}（非直播订单）{dg.KIND_NAMES.get(kind, kind)}，请尽快处理",
        "details": {},
    }
    if refund:
        a["refund_id"] = f"r-{n}"
    if due:
        a["due_at"] = due
    a.update(extra)
    return a


def mixed(n: int) -> list[dict]:
    """``n`` alerts of one shop: a mix of kinds, severities, resolutions and folded ones."""
    kinds = ["ship_warning", "ship_overdue", "transit_timeout", "refund_response_warning", "carrier_exception",
             "pickup_timeout", "fresh_claim"]
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        if i % 11 == 5:
            out.append(alert(kind, i, status="resolved", at=ts(12, 30), folded=(i % 2 == 0)))
        else:
            out.append(alert(kind, i, due=ts(14 + i % 8, i % 60)))
    return out


VENDOR_SINKS = {
    "dingtalk": lambda: DingTalkSink(url="https://oapi.dingtalk.com/robot/send?access_token=t", secret="SECs"),
    "dingtalk-text": lambda: DingTalkSink(url="https://oapi.dingtalk.com/robot/send?access_token=t", secret="SECs",
                                          msgtype="text"),
    "wecom": lambda: WeComSink(url="https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"),
    "feishu": lambda: FeishuSink(url="https://open.feishu.cn/open-apis/bot/v2/hook/x", secret="s"),
    "feishu-text": lambda: FeishuSink(url="https://open.feishu.cn/open-apis/bot/v2/hook/x", secret="s",
                                      msg_type="text"),
    "slack": lambda: SlackSink(url="https://hooks.slack.com/services/a/b/c", signing_secret="s"),
}


def within_limit(vendor: str, body: bytes, sink) -> bool:
    """The vendor's documented limit, measured here."""
    data = json.loads(body)
    if vendor.startswith("dingtalk") or vendor.startswith("feishu"):
        return len(body) <= 20_000
    if vendor == "wecom":
        return len(data["markdown"]["content"].encode("utf-8")) <= 4096
    blocks = data["blocks"]
    return (len(blocks) <= 50 and all(len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section"
                                      and "text" in b)
            and all(len(b["text"]["text"]) <= 150 for b in blocks if b["type"] == "header"))


def listed_and_omitted(vendor: str, body: bytes) -> tuple[list[str], int]:
    data = json.loads(body)
    ids, _changes, omitted, _ = read_message(vendor.split("-")[0], data)
    return list(ids), omitted


# --------------------------------------------------------------------------- the headline


def test_headline_counts_per_kind_with_the_earliest_deadline():
    batch = [
        alert("ship_warning", 1, due=ts(14, 30)),
        alert("ship_warning", 2, due=ts(14, 7)),
        alert("ship_warning", 3, due=ts(16, 0)),
        alert("ship_overdue", 4, due=ts(12, 0)),
        alert("transit_timeout", 5, due=ts(12, 5)),
        alert("transit_timeout", 6, due=ts(12, 6)),
    ]
    d = dg.build(batch, now=NOW)
    assert d.headline == "小红书 xi-shop-0：3 单即将超时未发货（最早 14:07），1 单已超时；2 个包裹中转超时"
    assert d.firing == 6 and d.resolved == 0 and d.severity == "critical"
    assert d.title.startswith("🔴 小红书 xi-shop-0")


def test_headline_times_are_shanghai_with_the_date_when_not_today():
    utc = "2026-11-22T06:07:00Z"  # 14:07 in Asia/Shanghai
    d = dg.build([alert("ship_warning", 1, due=utc)], now=NOW)
    assert "（最早 14:07）" in d.headline
    d = dg.build([alert("ship_warning", 1, due=ts(9, 15, day=23))], now=NOW)
    assert "（最早 11-23 09:15）" in d.headline


def test_headline_refund_warning_uses_the_automatic_step_and_counts_resolutions():
    batch = [
        alert("refund_response_warning", 1, due=ts(12, 0), details={"auto_at": ts(20, 45), "hours": 36}),
        alert("refund_response_overdue", 2, due=ts(12, 0)),
        alert("ship_warning", 3, status="resolved", at=ts(12, 40)),
        alert("transit_timeout", 4, status="resolved", at=ts(12, 41), folded=True),
    ]
    d = dg.build(batch, now=NOW)
    assert d.headline == ("小红书 xi-shop-0：1 个售后即将超时自动同意（最早 20:45），1 个已超时自动同意；"
                          "已恢复 2 条（1 条已发生并恢复）")


def test_only_resolutions_and_unknown_kinds_read_well():
    d = dg.build([alert("ship_warning", 1, status="resolved", at=ts(12, 40))], now=NOW)
    assert d.headline == "小红书 xi-shop-0：已恢复 1 条" and d.severity == "resolved" and d.title.startswith("✅")
    a = {**alert("ship_warning", 1), "kind": "brand_new_kind", "alert_id": "brand_new_kind:xiaohongshu:o-1"}
    d = dg.build([a], now=NOW)
    assert d.headline == "小红书 xi-shop-0：1 条 brand_new_kind"


def test_a_batch_is_one_shop_and_not_empty():
    with pytest.raises(ValueError):
        dg.build([], now=NOW)
    with pytest.raises(ValueError):
        dg.build([alert("ship_warning", 1), alert("ship_warning", 2, shop="other")], now=NOW)
    with pytest.raises(ValueError):
        dg.build([alert("ship_warning", 1), alert("ship_warning", 2, platform="douyin")], now=NOW)


# --------------------------------------------------------------------------- order of the lines


def test_criticals_first_then_kinds_by_deadline_then_resolutions():
    batch = [
        alert("transit_timeout", 1, due=ts(15, 0)),
        alert("ship_warning", 2, due=ts(16, 0)),
        alert("ship_warning", 3, due=ts(14, 0)),
        alert("ship_warning", 9, status="resolved", at=ts(12, 50)),
        alert("carrier_exception", 4, due=ts(12, 0)),
        alert("ship_overdue", 5, due=ts(11, 0)),
        alert("pickup_timeout", 6, status="resolved", at=ts(12, 10), folded=True),
    ]
    d = dg.build(batch, now=NOW)
    assert [s.title for s in d.sections] == [
        "🔴 严重 2 条", "🟠 发货预警 2 单", "🟠 中转超时 1 单", "✅ 已恢复 2 条（其中 1 条已发生并恢复）"]
    assert [i.alert_id for i in d.items] == [
        "ship_overdue:xiaohongshu:o-5", "carrier_exception:xiaohongshu:o-4",  # criticals, rules.md order
        "ship_warning:xiaohongshu:o-3", "ship_warning:xiaohongshu:o-2",  # by deadline
        "transit_timeout:xiaohongshu:o-1",
        "pickup_timeout:xiaohongshu:o-6", "ship_warning:xiaohongshu:o-9",  # resolutions by time
    ]
    text = dg.text(d, dg.PLAIN, len(d.items))
    lines = text.split("\n")
    crit = next(ln for ln in lines if "ship_overdue:xiaohongshu:o-5" in ln)
    assert "超时未发货" in crit and "截止 11:00" in crit and "订单 o-5" in crit and "✅" not in crit
    folded = next(ln for ln in lines if "pickup_timeout:xiaohongshu:o-6" in ln)
    assert "已发生并恢复" in folded and "✅" in folded and "12:10 恢复" in folded
    resolved = next(ln for ln in lines if "ship_warning:xiaohongshu:o-9" in ln)
    assert "✅" in resolved and "12:50 恢复" in resolved and "已发生并恢复" not in resolved
    assert text.index("o-5") < text.index("o-3") < text.index("o-1") < text.index("o-6")


def test_folded_alert_with_its_firing_time():
    a = alert("ship_warning", 1, status="resolved", at=ts(12, 40), folded=True, fired_at=ts(12, 1))
    line = dg.line(dg.build([a], now=NOW).items[0], dg.PLAIN, with_kind=True)
    assert "已发生并恢复（12:01 发生，12:40 恢复）" in line


def test_every_line_names_its_alert_once_in_a_code_span():
    batch = mixed(60)
    d = dg.build(batch, now=NOW)
    text = dg.text(d, dg.PLAIN, len(d.items))
    found = ALERT_ID_RE.findall(text)
    assert sorted(found) == sorted(a["alert_id"] for a in batch)  # each exactly once


def test_the_omitted_note_counts_what_is_not_listed():
    batch = [alert("ship_warning", i, due=ts(14, i)) for i in range(5)]
    d = dg.build(batch, now=NOW)
    assert dg.omitted_note(d, 5) is None
    assert dg.omitted_note(d, 2) == "……另有 3 单未列出"
    d = dg.build([*batch, alert("fresh_claim", 9)], now=NOW)
    assert dg.omitted_note(d, 2) == "……另有 4 条未列出"  # not all orders: 条
    text = dg.text(d, dg.PLAIN, 2)
    assert len(ALERT_ID_RE.findall(text)) == 2 and OMITTED_RE.findall(text) == ["4"]


def test_render_within_finds_the_most_that_fits():
    sizes = [10 + 7 * n for n in range(101)]
    r, n = dg.render_within(100, lambda k: k, lambda k: sizes[k] <= 400)
    assert n == r == 55 and sizes[55] <= 400 < sizes[56]
    assert dg.render_within(100, lambda k: k, lambda k: True) == (100, 100)
    with pytest.raises(ValueError):
        dg.render_within(100, lambda k: k, lambda k: False)


# --------------------------------------------------------------------------- each vendor within its limit


@pytest.mark.parametrize("size", [1, 50, 2000])
@pytest.mark.parametrize("vendor", list(VENDOR_SINKS))
def test_each_vendor_body_is_within_its_limit_and_accounts_for_every_alert(vendor, size):
    sink = VENDOR_SINKS[vendor]()
    batch = mixed(size)
    mentions = Mentions(("13800001111",), ("U0123", "ou_abc"))
    r = sink.render_digest(batch, NOW, mentions)
    assert within_limit(vendor, r.body, sink), vendor
    ids, omitted = listed_and_omitted(vendor, r.body)
    assert len(ids) + omitted == size
    assert len(set(ids)) == len(ids) and set(ids) <= {a["alert_id"] for a in batch}
    assert list(r.listed) == ids and r.omitted == omitted
    if size == 1:
        assert omitted == 0
    if omitted:
        # exactly at the limit: one more line would not fit
        bigger = sink.render_digest(batch, NOW, mentions, shown=len(ids) + 1)
        assert not within_limit(vendor, bigger.body, sink)
    assert (url_headers_body := sink.render_batch(batch, NOW, mentions))[2] == r.body and url_headers_body[0] == r.url


@pytest.mark.parametrize("vendor", list(VENDOR_SINKS))
def test_a_lowered_body_limit_is_respected(vendor):
    sink = VENDOR_SINKS[vendor]()
    sink.body_limit = {"slack": 800, "wecom": 1500}.get(vendor.split("-")[0], 3000)
    size = 600 if vendor == "slack" else 200
    r = sink.render_digest(mixed(size), NOW)
    data = json.loads(r.body)
    if vendor == "wecom":
        assert len(data["markdown"]["content"].encode()) <= 1500
    elif vendor == "slack":
        assert all(len(b["text"]["text"]) <= 800 for b in data["blocks"] if b["type"] == "section" and "text" in b)
    else:
        assert len(r.body) <= 3000
    assert len(r.listed) + r.omitted == size and r.omitted > 0


@pytest.mark.parametrize("vendor", list(VENDOR_SINKS))
def test_a_batch_of_one_reads_like_the_single_alert_message(vendor):
    a = alert("ship_overdue", 1001, due=ts(10, 0), at=ts(10, 0), platform="douyin", shop="s-17")
    r = VENDOR_SINKS[vendor]().render_digest([a], NOW)
    text = json.dumps(json.loads(r.body), ensure_ascii=False)
    for value in (a["summary"], "`ship_overdue:douyin:o-1001`", "s-17", "抖音", "严重", "🔴", "告警中",
                  "截止时间", "发生时间", a["at"]):
        assert value in text, (vendor, value)
    assert "另有" not in text and r.listed == ("ship_overdue:douyin:o-1001",)


@pytest.mark.parametrize("vendor", list(VENDOR_SINKS))
def test_a_single_resolution_is_marked_on_its_id_line(vendor):
    a = alert("transit_timeout", 7, status="resolved", at=ts(12, 30), folded=True)
    r = VENDOR_SINKS[vendor]().render_digest([a], NOW)
    _ids, changes, _, _ = read_message(vendor.split("-")[0], json.loads(r.body))
    assert changes == ((a["alert_id"], "folded"),)
    a = alert("transit_timeout", 7, status="resolved", at=ts(12, 30))
    r = VENDOR_SINKS[vendor]().render_digest([a], NOW)
    _ids, changes, _, _ = read_message(vendor.split("-")[0], json.loads(r.body))
    assert changes == ((a["alert_id"], "resolved"),)
    assert "恢复时间" in r.body.decode()


def test_a_huge_summary_is_cut_not_dropped():
    a = alert("ship_warning", 1, due=ts(14, 0), summary="超时" * 5000)
    for vendor, make in VENDOR_SINKS.items():
        r = make().render_digest([a], NOW)
        assert r.omitted == 0 and r.listed == (a["alert_id"],), vendor
        assert within_limit(vendor, r.body, None)
        r = make().render_digest([a, alert("ship_warning", 2, due=ts(14, 0), summary="超时" * 5000)], NOW)
        assert r.omitted == 0, vendor


def test_the_digest_is_pure():
    batch = mixed(80)
    for make in VENDOR_SINKS.values():
        sink = make()
        assert sink.render_digest(batch, NOW) == sink.render_digest(list(batch), NOW)
    assert batch == mixed(80)  # the batch is not modified


def test_markdown_text_from_alerts_cannot_forge_tags():
    a = alert("ship_warning", 1, due=ts(14, 0), summary="<@all> <font color=\"warning\">x</font> <at id=all></at>")
    body = WeComSink(url="https://x.invalid/cgi-bin/webhook/send?key=k").render_digest([a, alert("ship_warning", 2)],
                                                                                       NOW).body
    content = json.loads(body)["markdown"]["content"]
    assert "<@all>" not in content and "<font color=\"warning\">" not in content
    body = FeishuSink(url="https://x.invalid/h").render_digest([a, alert("ship_warning", 2)], NOW).body
    assert "<at id=all>" not in body.decode()
    body = SlackSink(url="https://x.invalid/s").render_digest([a, alert("ship_warning", 2)], NOW).body
    assert "<@all>" not in body.decode() and "&lt;@all&gt;" in body.decode()
    assert re.search(r"`ship_warning:xiaohongshu:o-1`", body.decode())
