"""Chat sinks (shopwatch.agents.sinks) against the local vendors' endpoints (tests/chat_receiver.py).

The receiver re-implements each vendor's signature, shape and size checks
independently of the code under test, can be made to refuse, fail, hang or
throttle, and records which alert ids reached the chat. Pytest-asyncio is
not used: each test is a sync function running its coroutine with
``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import time
from urllib.parse import parse_qs, quote_plus

import aiohttp
import pytest
from chat_receiver import DINGTALK_SECRET, Receiver
from prometheus_client import REGISTRY

from shopwatch.agents import sinks as sinks_mod
from shopwatch.agents.sinks import (
    SINKS_ENV,
    DingTalkSink,
    FeishuSink,
    SinkConfigError,
    SlackSink,
    WeComSink,
    load_sinks,
)

ALERT = {
    "alert_id": "ship_overdue:douyin:o-1001",
    "kind": "ship_overdue",
    "severity": "critical",
    "status": "firing",
    "platform": "douyin",
    "shop_id": "s-17",
    "order_id": "o-1001",
    "at": "2026-11-22T10:00:00+08:00",
    "due_at": "2026-11-22T10:00:00+08:00",
    "summary": "订单 o-1001 已超过最晚发货时间 2026-11-22 10:00，仍未发货",
    "details": {},
}


def alert(**changes) -> dict:
    a = dict(ALERT)
    a.update(changes)
    return {k: v for k, v in a.items() if v is not None}


# --------------------------------------------------------------------------- helpers


def one_sink(receiver: Receiver, vendor: str, **extra):
    [sink] = load_sinks(json.dumps([receiver.config(vendor, **extra)]))
    return sink


def count(sink_name: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("shopwatch_sink_deliveries_total", {"sink": sink_name, "outcome": outcome}) or 0.0


async def post_batch(sink, batch, mentions=None, *, now=None):
    """What the delivery loop does with one batch: ``render_batch`` as of ``now`` + ONE ``post``."""
    async with aiohttp.ClientSession() as s:
        return await sink.post(s, sink.render_batch(batch, time.time() if now is None else now, mentions))


async def post_one(sink, a: dict, **kw):
    """A batch of one alert (laid out like a single-alert message)."""
    return await post_batch(sink, [a], **kw)


VENDORS = ["feishu", "dingtalk", "wecom", "slack"]
SIGNED = ["feishu", "dingtalk", "slack"]


def text_of(payload: dict) -> str:
    """Everything a person would read in the delivered message."""
    return json.dumps(payload, ensure_ascii=False)


# --------------------------------------------------------------------------- delivery


@pytest.mark.parametrize("vendor", VENDORS)
def test_each_sink_is_accepted_by_its_vendor_check(vendor):
    async def main():
        async with Receiver() as r:
            sink = one_sink(r, vendor, name=f"ok-{vendor}")
            before = count(sink.name, "delivered")
            outcome = await post_one(sink, alert())
            assert outcome == sinks_mod.Outcome("ok", "ok", None), r.rejected[vendor]
            assert r.hits[vendor] == 1 and len(r.accepted[vendor]) == 1, r.rejected[vendor]
            assert count(sink.name, "delivered") == before + 1
            return r.accepted[vendor][0]

    payload = asyncio.run(main())
    text = text_of(payload)
    for value in (ALERT["summary"], ALERT["alert_id"], "s-17", "o-1001", ALERT["at"], "抖音", "严重", "🔴", "告警中"):
        assert value in text, (value, text)
    assert "截止时间" in text and "发生时间" in text


@pytest.mark.parametrize("vendor", VENDORS)
def test_resolved_refund_alert_content(vendor):
    a = alert(kind="refund_response_warning", severity="warning", status="resolved", order_id=None,
              refund_id="r-77", due_at=None, alert_id="refund_response_warning:jd:r-77", platform="jd",
              summary="售后单 r-77 已处理")

    async def main():
        async with Receiver() as r:
            sink = one_sink(r, vendor, name=f"resolved-{vendor}")
            assert (await post_one(sink, a)).ok, r.rejected[vendor]
            return r.accepted[vendor][0]

    text = text_of(asyncio.run(main()))
    for value in ("售后单 r-77 已处理", "r-77", "已恢复", "警告", "🟠", "京东", "恢复时间", a["alert_id"]):
        assert value in text, (value, text)
    assert "截止时间" not in text and "订单：" not in text


def test_variants_text_msg_types_and_unsigned():
    async def main():
        async with Receiver(feishu_secret=None, dingtalk_secret=None, slack_secret=None) as r:
            s1 = one_sink(r, "feishu", secret=None, msg_type="text", name="fs-text")
            s2 = one_sink(r, "dingtalk", secret=None, msgtype="text", name="dt-text")
            s3 = one_sink(r, "slack", signing_secret=None, name="slack-unsigned")
            for sink in (s1, s2, s3):
                assert (await post_one(sink, alert())).ok, (sink.name, r.rejected)
            assert r.accepted["feishu"][0]["msg_type"] == "text"
            assert "timestamp" not in r.accepted["feishu"][0]
            assert r.accepted["dingtalk"][0]["msgtype"] == "text"

    asyncio.run(main())


# --------------------------------------------------------------------------- signatures


@pytest.mark.parametrize("vendor", SIGNED)
def test_wrong_secret_is_rejected(vendor):
    key = {"feishu": "secret", "dingtalk": "secret", "slack": "signing_secret"}[vendor]

    async def main():
        async with Receiver() as r:
            sink = one_sink(r, vendor, name=f"badsecret-{vendor}", **{key: "not-the-secret"})
            before = count(sink.name, "rejected")
            outcome = await post_one(sink, alert())
            assert outcome.kind == "reject", outcome
            assert r.hits[vendor] == 1 and r.accepted[vendor] == []
            assert count(sink.name, "rejected") == before + 1

    asyncio.run(main())


@pytest.mark.parametrize("vendor", SIGNED)
def test_missing_signature_is_rejected(vendor):
    key = {"feishu": "secret", "dingtalk": "secret", "slack": "signing_secret"}[vendor]

    async def main():
        async with Receiver() as r:
            sink = one_sink(r, vendor, name=f"nosig-{vendor}", **{key: None})
            assert (await post_one(sink, alert())).kind == "reject"
            assert r.accepted[vendor] == []

    asyncio.run(main())


@pytest.mark.parametrize("vendor", SIGNED)
def test_stale_timestamp_is_rejected(vendor):
    async def main():
        async with Receiver() as r:
            sink = one_sink(r, vendor, name=f"stale-{vendor}")
            assert (await post_one(sink, alert(), now=time.time() - 2 * 3600)).kind == "reject"
            assert r.accepted[vendor] == [] and r.hits[vendor] == 1

    asyncio.run(main())


def test_receiver_rejects_unencoded_dingtalk_sign():
    """The receiver decodes the query as a form: a sign whose "+" is not URL-encoded fails, as at 钉钉."""
    from yarl import URL

    secret = DINGTALK_SECRET
    ts = int(time.time() * 1000)
    while True:  # a recent timestamp whose signature contains a "+"
        raw = base64.b64encode(hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256).digest()).decode()
        if "+" in raw:
            break
        ts -= 1

    async def main():
        async with Receiver() as r:
            sink = one_sink(r, "dingtalk", name="dt-encoding")
            url, headers, body = sink.render_batch([alert()], ts / 1000)
            assert url.endswith(f"&timestamp={ts}&sign={quote_plus(raw)}")  # what the sink sends
            async with aiohttp.ClientSession() as s:
                async with s.post(URL(url, encoded=True), data=body, headers=headers) as resp:
                    assert (await resp.json()) == {"errcode": 0, "errmsg": "ok"}
                unencoded = url.rsplit("&sign=", 1)[0] + "&sign=" + raw
                async with s.post(URL(unencoded, encoded=True), data=body, headers=headers) as resp:
                    assert (await resp.json())["errcode"] == 310000

    asyncio.run(main())


def forbid_wall_clock(monkeypatch) -> None:
    def no_wall_clock():
        raise AssertionError("render_batch read the wall clock")

    monkeypatch.setattr(time, "time", no_wall_clock)


def offline_sinks() -> list:
    """One signed sink of each vendor, at addresses nothing answers (rendering only)."""
    return [
        FeishuSink(url="https://fs.invalid/open-apis/bot/v2/hook/x", secret="s"),
        DingTalkSink(url="https://dt.invalid/robot/send?access_token=t", secret="SECs"),
        WeComSink(url="https://wc.invalid/cgi-bin/webhook/send?key=k"),
        SlackSink(url="https://sl.invalid/services/a/b/c", signing_secret="s"),
    ]


def test_render_batch_of_one_is_pure_and_signs_with_the_given_clock(monkeypatch):
    forbid_wall_clock(monkeypatch)
    sinks = offline_sinks()
    for s in sinks:
        first = s.render_batch([ALERT], 1_763_776_800.0)
        assert s.render_batch([ALERT], 1_763_776_800.0) == first
        if not isinstance(s, WeComSink):
            assert s.render_batch([ALERT], 1_763_776_860.0) != first
    # the documented formulas, on fixed inputs
    ts = 1_763_776_800
    _, _, body = sinks[0].render_batch([ALERT], ts)
    fs = json.loads(body)
    assert fs["timestamp"] == str(ts)
    assert fs["sign"] == base64.b64encode(hmac.new(f"{ts}\ns".encode(), b"", hashlib.sha256).digest()).decode()
    url, _, _ = sinks[1].render_batch([ALERT], ts + 0.123)
    q = parse_qs(url.split("?", 1)[1])
    assert q["timestamp"] == [str(ts * 1000 + 123)] and q["access_token"] == ["t"]
    digest = hmac.new(b"SECs", f"{ts * 1000 + 123}\nSECs".encode(), hashlib.sha256).digest()
    assert q["sign"] == [base64.b64encode(digest).decode()]
    _, headers, body = sinks[3].render_batch([ALERT], ts)
    assert headers["X-Slack-Request-Timestamp"] == str(ts)
    assert headers["X-Slack-Signature"] == "v0=" + hmac.new(b"s", f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------- one post: 5xx, 4xx, 429, network
# (trying again, and when, is the delivery loop's: tests/shell/test_delivery.py)


@pytest.mark.parametrize("status", [500, 503])
@pytest.mark.parametrize("vendor", VENDORS)
def test_5xx_is_retry_and_the_next_post_is_accepted(vendor, status):
    async def main():
        async with Receiver() as r:
            r.fail_next(vendor, status)
            sink = one_sink(r, vendor, name=f"5xx-{vendor}")
            retry, delivered = count(sink.name, "retry"), count(sink.name, "delivered")
            outcome = await post_one(sink, alert())
            assert outcome.kind == "retry" and f"HTTP {status}" in outcome.detail, outcome
            assert r.hits[vendor] == 1 and r.accepted[vendor] == [], "post makes ONE try"
            assert count(sink.name, "retry") == retry + 1
            assert (await post_one(sink, alert())).ok
            assert r.hits[vendor] == 2 and len(r.accepted[vendor]) == 1
            assert count(sink.name, "delivered") == delivered + 1

    asyncio.run(main())


@pytest.mark.parametrize("vendor", VENDORS)
def test_4xx_is_reject(vendor):
    async def main():
        async with Receiver() as r:
            r.fail_next(vendor, 400)
            sink = one_sink(r, vendor, name=f"4xx-{vendor}")
            before = count(sink.name, "rejected")
            outcome = await post_one(sink, alert())
            assert outcome.kind == "reject" and "HTTP 400" in outcome.detail, outcome
            assert r.hits[vendor] == 1
            assert count(sink.name, "rejected") == before + 1

    asyncio.run(main())


@pytest.mark.parametrize("vendor", VENDORS)
def test_429_is_throttled(vendor):
    """A bare 429 (no Retry-After): throttled, retry_after None; with the header see
    test_vendor_throttling_gives_throttled_with_the_right_retry_after and test_classify_answers."""

    async def main():
        async with Receiver() as r:
            r.fail_next(vendor, 429)
            sink = one_sink(r, vendor, name=f"429-{vendor}")
            before = count(sink.name, "throttled")
            outcome = await post_one(sink, alert())
            assert (outcome.kind, outcome.retry_after) == ("throttled", None), outcome
            assert count(sink.name, "throttled") == before + 1
            assert (await post_one(sink, alert())).ok
            assert r.hits[vendor] == 2

    asyncio.run(main())


def test_connection_errors_and_timeouts_are_retry_and_never_raise():
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]

    async def main():
        dead = SlackSink(url=f"http://127.0.0.1:{dead_port}/services/a/b/c", name="dead")
        before = count("dead", "retry")
        outcome = await post_one(dead, alert())
        assert outcome.kind == "retry", outcome
        assert count("dead", "retry") == before + 1
        async with Receiver(delay=0.5) as r:
            slow = one_sink(r, "wecom", name="slow", timeout=0.1, tries=2)  # tries: accepted, ignored
            t0 = time.monotonic()
            outcome = await post_one(slow, alert())
            assert outcome.kind == "retry" and "Timeout" in outcome.detail, outcome
            assert r.hits["wecom"] == 1, "post makes ONE try, whatever tries says"
            assert time.monotonic() - t0 < 2

    asyncio.run(main())


# --------------------------------------------------------------------------- severity, long content


def test_min_severity_filters():
    async def main():
        async with Receiver() as r:
            sink = one_sink(r, "dingtalk", name="onlywarn", min_severity="warning")
            assert sink.routes(alert(severity="info", kind="level_changed")) is False
            assert sink.routes(alert(severity="warning")) is True
            assert sink.routes(alert(severity="critical")) is True
            for sev in ("warning", "critical"):
                assert (await post_one(sink, alert(severity=sev))).ok
            assert r.hits["dingtalk"] == 2

    asyncio.run(main())


def test_wecom_long_content_is_truncated_to_the_limit():
    async def main():
        async with Receiver() as r:
            sink = one_sink(r, "wecom", name="long")
            assert (await post_one(sink, alert(summary="超时" * 3000))).ok, r.rejected["wecom"]
            content = r.accepted["wecom"][0]["markdown"]["content"]
            assert len(content.encode()) <= 4096

    asyncio.run(main())


# --------------------------------------------------------------------------- configuration


def test_load_sinks_parses_the_env_json():
    env = json.dumps([
        {"type": "feishu", "url": "https://open.feishu.cn/open-apis/bot/v2/hook/abc", "secret": "fs"},
        {"type": "dingtalk", "url": "https://oapi.dingtalk.com/robot/send?access_token=t", "secret": "SECx",
         "min_severity": "warning"},
        {"type": "wecom", "url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"},
        {"type": "slack", "url": "https://hooks.slack.com/services/T/B/X", "signing_secret": "ss"},
        {"type": "feishu", "url": "https://open.feishu.cn/open-apis/bot/v2/hook/def", "msg_type": "text",
         "min_severity": "critical", "timeout": 5, "tries": 2},
        {"type": "slack", "url": "https://hooks.slack.com/services/T/B/Y", "name": "slack-oncall"},
    ])
    s = load_sinks(env)
    assert [type(x) for x in s] == [FeishuSink, DingTalkSink, WeComSink, SlackSink, FeishuSink, SlackSink]
    assert [x.name for x in s] == ["feishu", "dingtalk", "wecom", "slack", "feishu-2", "slack-oncall"]
    assert s[0].secret == "fs" and s[1].secret == "SECx" and s[3].signing_secret == "ss"
    assert [x.min_severity for x in s] == ["info", "warning", "info", "info", "critical", "info"]
    assert s[4].msg_type == "text" and s[4].timeout == 5.0
    assert not hasattr(s[4], "tries")  # accepted (older configurations), ignored: delivery retries
    for x in s:  # webhook URLs and secrets are credentials: not in reprs
        assert "access_token" not in repr(x) and "SECx" not in repr(x) and "key=k" not in repr(x)
    assert load_sinks(None) == [] and load_sinks("") == [] and load_sinks("  ") == [] and load_sinks("[]") == []
    assert SINKS_ENV == "SHOPWATCH_SINKS"


@pytest.mark.parametrize(
    "value, message",
    [
        ('[{"type": "teams", "url": "https://x.invalid/"}]',
         r"SHOPWATCH_SINKS\[0\]: unknown sink type 'teams'; known types: alertmanager, dingtalk, feishu, slack, wecom"),
        ('[{"url": "https://x.invalid/"}]', r"unknown sink type None"),
        ("{not json", r"not valid JSON"),
        ('{"type": "slack"}', r"must be a JSON list"),
        ('["slack"]', r"\[0\] must be an object"),
        ('[{"type": "wecom"}]', r"'url' must be an http\(s\) URL"),
        ('[{"type": "wecom", "url": "ftp://x"}]', r"'url' must be an http\(s\) URL"),
        ('[{"type": "wecom", "url": "http://[::1"}]', r"'url' must be an http\(s\) URL"),
        ('[{"type": "feishu", "url": "https://x.invalid/", "secrect": "s"}]', r"unknown key\(s\) secrect"),
        ('[{"type": "wecom", "url": "https://x.invalid/", "secret": "s"}]', r"unknown key\(s\) secret"),
        ('[{"type": "slack", "url": "https://x.invalid/", "min_severity": "high"}]', r"'min_severity' must be one of"),
        ('[{"type": "dingtalk", "url": "https://x.invalid/", "msgtype": "card"}]', r"'msgtype' must be one of"),
        ('[{"type": "feishu", "url": "https://x.invalid/", "tries": 0}]', r"'tries' must be an integer"),
        ('[{"type": "feishu", "url": "https://x.invalid/", "timeout": "5"}]', r"'timeout' must be a number"),
        ('[{"type": "feishu", "url": "https://x.invalid/", "secret": ""}]', r"'secret' must be a non-empty string"),
        ('[{"type": "wecom", "url": "https://x.invalid/a", "name": "n"}, '
         '{"type": "wecom", "url": "https://x.invalid/b", "name": "n"}]', r"\[1\]: duplicate name 'n'"),
    ],
)
def test_load_sinks_rejects_bad_config_with_a_clear_error(value, message):
    with pytest.raises(SinkConfigError, match=message):
        load_sinks(value)


def test_config_errors_do_not_echo_secrets():
    with pytest.raises(SinkConfigError) as exc:
        load_sinks('[{"type": "dingtalk", "url": "https://x.invalid/", "secret": "SECtopsecret", "oops": 1}]')
    assert "SECtopsecret" not in str(exc.value)


# --------------------------------------------------------------------------- digests: render_batch + post

TS = "2026-11-22T{}:00+08:00"


def batch_of(n: int, shop: str = "s-17", platform: str = "douyin") -> list[dict]:
    """``n`` alert changes of one shop: warnings, criticals, resolutions, folded ones."""
    out = []
    for i in range(n):
        kind, sev = [("ship_warning", "warning"), ("ship_overdue", "critical"), ("transit_timeout", "warning")][i % 3]
        a = alert(alert_id=f"{kind}:{platform}:o-{i}", kind=kind, severity=sev, platform=platform, shop_id=shop,
                  order_id=f"o-{i}", due_at=TS.format(f"{14 + i % 9}:{i % 60:02d}"),
                  summary=f"订单 o-{i} 需要处理")
        if i % 7 == 3:
            a.update(status="resolved", due_at=None, folded=(i % 2 == 1))
            a = {k: v for k, v in a.items() if v is not None}
        out.append(a)
    return out


@pytest.mark.parametrize("size", [1, 30, 2000])
@pytest.mark.parametrize("vendor", VENDORS)
def test_each_vendor_accepts_a_digest_and_every_change_is_accounted_for(vendor, size):
    batch = batch_of(size)

    async def main():
        async with Receiver() as r:
            sink = one_sink(r, vendor, name=f"digest-{vendor}")
            before = count(sink.name, "delivered")
            outcome = await post_batch(sink, batch)
            assert outcome == sinks_mod.Outcome("ok", "ok", None), r.rejected[vendor]
            assert count(sink.name, "delivered") == before + 1
            [m] = r.snapshot(vendor)
            return m

    m = asyncio.run(main())
    assert len(m.alert_ids) + m.omitted == size
    assert set(m.alert_ids) <= {a["alert_id"] for a in batch}
    want = {(a["alert_id"], "folded" if a.get("folded") else a["status"]) for a in batch}
    assert set(m.changes) <= want
    if m.omitted == 0:
        assert set(m.changes) == want


def test_digest_variants_text_msg_types_are_accepted():
    async def main():
        async with Receiver() as r:
            for vendor, extra in (("feishu", {"msg_type": "text"}), ("dingtalk", {"msgtype": "text"})):
                sink = one_sink(r, vendor, **extra)
                assert (await post_batch(sink, batch_of(400), {"user_ids": ["ou_1"]})).ok
                [m] = r.snapshot(vendor)
                assert len(m.alert_ids) + m.omitted == 400 and m.omitted > 0

    asyncio.run(main())


def test_the_receiver_rejects_an_over_limit_body_as_the_vendor_would():
    big = "超" * 7000  # 21,000 bytes

    async def main():
        async with Receiver(feishu_secret=None, dingtalk_secret=None, slack_secret=None) as r, \
                aiohttp.ClientSession() as s:
            async def raw(vendor, payload):
                async with s.post(r.url(vendor), json=payload) as resp:
                    return resp.status, await resp.text()

            st, text = await raw("dingtalk", {"msgtype": "markdown", "markdown": {"title": "t", "text": big}})
            assert json.loads(text)["errcode"] == 460101
            st, text = await raw("wecom", {"msgtype": "markdown", "markdown": {"content": "超" * 1366}})
            assert json.loads(text)["errcode"] == 40058
            st, text = await raw("feishu", {"msg_type": "text", "content": {"text": big}})
            assert st == 400 and json.loads(text)["code"] == 9499
            blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]
            assert (await raw("slack", {"text": "t", "blocks": blocks}))[0] == 400
            blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "x"}}] * 51
            assert (await raw("slack", {"text": "t", "blocks": blocks}))[0] == 400
            assert r.snapshot() == []

    asyncio.run(main())


# --------------------------------------------------------------------------- mentions


OWNERS = {"s-17": {"mobiles": ["13800001111"], "user_ids": ["U0123ABC"]}, "*": {"user_ids": ["ou_oncall"]}}


@pytest.mark.parametrize("size", [1, 20])
@pytest.mark.parametrize("vendor", VENDORS)
def test_mentions_of_the_shop_owner_in_each_vendor_format(vendor, size):
    async def main():
        async with Receiver() as r:
            sink = one_sink(r, vendor, owners=OWNERS)
            m = sink.mentions("s-17")
            assert m == sinks_mod.Mentions(("13800001111",), ("U0123ABC",))
            assert sink.mentions("s-99") == sinks_mod.Mentions((), ("ou_oncall",))
            assert (await post_batch(sink, batch_of(size), m)).ok, r.rejected[vendor]
            return r.snapshot(vendor)[0]

    msg = asyncio.run(main())
    raw = json.dumps(msg.body, ensure_ascii=False)
    if vendor == "dingtalk":
        assert msg.body["at"] == {"atMobiles": ["13800001111"], "atUserIds": ["U0123ABC"], "isAtAll": False}
        assert "@13800001111" in msg.body["markdown"]["text"] and "@U0123ABC" in msg.body["markdown"]["text"]
    elif vendor == "wecom":
        assert "<@U0123ABC>" in msg.body["markdown"]["content"]
        assert "13800001111" not in raw  # mobiles cannot be mentioned in markdown
    elif vendor == "feishu":
        assert "<at id=U0123ABC></at>" in raw
        lark_md = [e["text"]["content"] for e in msg.body["card"]["elements"]
                   if e.get("tag") == "div" and e.get("text", {}).get("tag") == "lark_md"]
        assert any("<at id=U0123ABC></at>" in t for t in lark_md)
    else:
        assert "<@U0123ABC>" in raw
    assert msg.mentions == (("13800001111", "U0123ABC") if vendor == "dingtalk" else ("U0123ABC",))


def test_feishu_text_mentions_use_the_at_user_id_tag():
    sink = FeishuSink(url="https://x.invalid/h", msg_type="text")
    body = json.loads(sink.render_batch(batch_of(3), time.time(), {"user_ids": ["ou_1"]})[2])
    assert '<at user_id="ou_1"></at>' in body["content"]["text"]


def test_no_mentions_no_at_field():
    sink = DingTalkSink(url="https://x.invalid/robot/send?access_token=t")
    body = json.loads(sink.render_batch(batch_of(3), time.time())[2])
    assert "at" not in body and "@" not in body["markdown"]["text"]


# --------------------------------------------------------------------------- answers: throttled, retry, reject


@pytest.mark.parametrize("vendor, retry_after", [("dingtalk", 600.0), ("wecom", 60.0), ("feishu", 60.0),
                                                 ("slack", None)])
def test_vendor_throttling_gives_throttled_with_the_right_retry_after(vendor, retry_after):
    async def main():
        async with Receiver() as r:
            r.throttle(vendor, per_minute=1)  # 钉钉: then 600 s of refusals, as 钉钉 does
            sink = one_sink(r, vendor, name=f"throttle-{vendor}")
            before = count(sink.name, "throttled")
            assert (await post_batch(sink, batch_of(2))).ok
            second = await post_batch(sink, batch_of(2))
            assert second.kind == "throttled", second
            assert count(sink.name, "throttled") == before + 1 and r.throttled[vendor] == 1
            if retry_after is None:  # Slack: HTTP 429, Retry-After = until the minute has room
                assert 55 <= second.retry_after <= 60
            else:
                assert second.retry_after == retry_after
            assert (await post_batch(sink, batch_of(1))).kind == "throttled"  # still refused
            assert r.throttled[vendor] == 2
            r.unthrottle(vendor)
            assert (await post_batch(sink, batch_of(1))).ok
            assert len(r.snapshot(vendor)) == 2

    asyncio.run(main())


def test_throttle_retry_after_is_configurable():
    async def main():
        async with Receiver() as r:
            r.throttle("dingtalk", per_minute=0, penalty=0)
            sink = one_sink(r, "dingtalk", throttle_retry_after=5)
            assert (await post_batch(sink, batch_of(1))) == sinks_mod.Outcome(
                "throttled", 'HTTP 200, code 130101: {"errcode": 130101, "errmsg": "send too fast, exceed 20 '
                             'times per minute"}', 5.0)

    asyncio.run(main())


def H(**h):
    return h


@pytest.mark.parametrize(
    "cls, status, headers, body, kind, retry_after",
    [
        # throttled
        (FeishuSink, 200, H(), {"code": 11232, "msg": "frequency limited"}, "throttled", 60.0),
        (FeishuSink, 400, H(), {"code": 9499, "msg": "too many request", "data": {}}, "throttled", 60.0),
        (FeishuSink, 429, {"x-ogw-ratelimit-reset": "52"}, {"code": 99991400, "msg": "limit"}, "throttled", 52.0),
        (FeishuSink, 400, {"x-ogw-ratelimit-reset": "7"}, {"code": 99991400, "msg": "limit"}, "throttled", 7.0),
        (DingTalkSink, 200, H(), {"errcode": 130101, "errmsg": "send too fast"}, "throttled", 600.0),
        (DingTalkSink, 200, H(), {"errcode": 410100, "errmsg": "发送速度太快而限流"}, "throttled", 600.0),
        (DingTalkSink, 302, {"Location": "https://x.invalid/"}, None, "throttled", 600.0),
        (WeComSink, 200, H(), {"errcode": 45009, "errmsg": "api freq out of limit"}, "throttled", 60.0),
        (SlackSink, 429, {"Retry-After": "17"}, None, "throttled", 17.0),
        (WeComSink, 429, H(), None, "throttled", None),
        # retry
        (SlackSink, 503, {"Retry-After": "3"}, None, "retry", 3.0),
        (FeishuSink, 500, H(), None, "retry", None),
        (WeComSink, 200, H(), {"errcode": -1, "errmsg": "system busy"}, "retry", None),
        (DingTalkSink, 200, H(), {"errcode": -1, "errmsg": "系统繁忙"}, "retry", None),
        # reject
        (DingTalkSink, 200, H(), {"errcode": 310000, "errmsg": "keywords not in content"}, "reject", None),
        (DingTalkSink, 200, H(), {"errcode": 300001, "errmsg": "token is not exist"}, "reject", None),
        (FeishuSink, 200, H(), {"code": 19021, "msg": "sign match fail"}, "reject", None),
        (FeishuSink, 200, H(), {"code": 19024, "msg": "Key Words Not Found"}, "reject", None),
        (FeishuSink, 400, H(), {"code": 9499, "msg": "Bad Request", "data": {}}, "reject", None),
        (WeComSink, 200, H(), {"errcode": 93000, "errmsg": "invalid webhook url"}, "reject", None),
        (SlackSink, 403, H(), None, "reject", None),
        (SlackSink, 404, H(), None, "reject", None),
        (WeComSink, 200, H(), None, "reject", None),  # not JSON: not an ok
        # ok
        (FeishuSink, 200, H(), {"StatusCode": 0, "code": 0, "msg": "success"}, "ok", None),
        (SlackSink, 200, H(), None, "ok", None),
    ],
)
def test_classify_answers(cls, status, headers, body, kind, retry_after):
    sink = cls(url="https://x.invalid/hook")
    raw = json.dumps(body).encode() if body is not None else b"ok"
    outcome = sink.classify(status, headers, raw)
    assert (outcome.kind, outcome.retry_after) == (kind, retry_after), outcome


@pytest.mark.parametrize("vendor", VENDORS)
def test_reject_codes_of_a_bad_configuration(vendor):
    async def main():
        async with Receiver() as r:
            if vendor == "wecom":
                sink = WeComSink(url=r.url("wecom").replace("key=", "key=x"), name="badkey")
            elif vendor == "slack":
                sink = one_sink(r, vendor, signing_secret="wrong")
            else:
                sink = one_sink(r, vendor, secret="wrong")
            before = count(sink.name, "rejected")
            outcome = await post_batch(sink, batch_of(5))
            assert outcome.kind == "reject", outcome
            assert count(sink.name, "rejected") == before + 1
            code = {"dingtalk": "310000", "feishu": "19021", "wecom": "93000", "slack": "HTTP 401"}[vendor]
            assert code in outcome.detail
            assert "access_token" not in outcome.detail and "key=" not in outcome.detail

    asyncio.run(main())


def test_post_makes_one_try_and_never_raises():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]

    async def main():
        dead = SlackSink(url=f"http://127.0.0.1:{dead_port}/services/a/b/c", name="post-dead")
        before = count("post-dead", "retry")
        outcome = await post_batch(dead, batch_of(3))
        assert outcome.kind == "retry" and "127.0.0.1" in outcome.detail
        assert count("post-dead", "retry") == before + 1
        async with Receiver() as r:
            sink = one_sink(r, "feishu", name="post-once", timeout=0.3)
            r.fail(0.3, "feishu", status=502)
            assert (await post_batch(sink, batch_of(3))).kind == "retry"
            assert r.hits["feishu"] == 1, "post makes ONE try"
            await asyncio.sleep(0.35)
            r.hang(0.2, "feishu")
            t0 = time.monotonic()
            outcome = await post_batch(sink, batch_of(3))
            assert outcome.kind == "retry" and "Timeout" in outcome.detail and time.monotonic() - t0 < 1.5
            await asyncio.sleep(0.25)
            assert (await post_batch(sink, batch_of(3))).ok
            bad = FeishuSink(url="http://[::1", name="post-badurl")
            assert (await post_batch(bad, batch_of(1))).kind == "retry"

    asyncio.run(main())


def test_receiver_refuses_connections_then_listens_again():
    async def main():
        async with Receiver() as r:
            sink = one_sink(r, "wecom", name="refused")
            async with aiohttp.ClientSession() as s:
                assert (await sink.post(s, sink.render_batch(batch_of(1), time.time()))).ok
                r.refuse(0.5)
                kept_alive = await sink.post(s, sink.render_batch(batch_of(1), time.time()))
                assert kept_alive.kind == "retry", kept_alive
            fresh = await post_batch(sink, batch_of(1))
            assert fresh.kind == "retry" and ("Connect" in fresh.detail or "refused" in fresh.detail), fresh
            await asyncio.sleep(0.6)
            assert (await post_batch(sink, batch_of(1))).ok
            r.refuse(30)
            r.clear()
            await asyncio.sleep(0.05)
            assert (await post_batch(sink, batch_of(1))).ok
            assert len(r.snapshot("wecom")) == 3

    asyncio.run(main())


def test_receiver_on_its_own_thread_with_faults_switched_from_the_test():
    with Receiver() as r:
        [sink] = load_sinks(r.sinks_env("slack"))
        batch = batch_of(4)
        r.fail(0.4, "slack", status=500)
        assert asyncio.run(post_batch(sink, batch)).kind == "retry"
        r.clear()
        r.refuse(0.3)
        assert asyncio.run(post_batch(sink, batch)).kind == "retry"
        assert r.wait_for(lambda rr: asyncio.run(post_batch(sink, batch)).ok, timeout=5)
        assert r.alert_ids("slack") == {a["alert_id"] for a in batch}
        assert r.changes() == {(a["alert_id"], s) for a in batch
                               for s in (("firing", "resolved") if a.get("folded") else (a["status"],))}
        assert r.omitted() == 0


# --------------------------------------------------------------------------- routing, owners, quiet hours


def test_routes_filter_by_platform_shop_kind_and_severity():
    [s] = load_sinks(json.dumps([{"type": "wecom", "url": "https://x.invalid/w", "min_severity": "warning",
                                  "routes": [{"platforms": ["douyin", "jd"], "kinds": ["ship_overdue", "ship_warning"]},
                                             {"shops": ["vip-1"], "min_severity": "critical"}]}]))
    assert s.routes(alert()) is True  # douyin ship_overdue critical
    assert s.routes(alert(kind="ship_warning", severity="warning", platform="jd")) is True
    assert s.routes(alert(kind="transit_timeout", severity="warning")) is False  # kind
    assert s.routes(alert(platform="tmall")) is False  # platform
    assert s.routes(alert(platform="tmall", shop_id="vip-1")) is True  # second route
    assert s.routes(alert(platform="tmall", shop_id="vip-1", severity="warning", kind="ship_warning")) is False
    assert s.routes(alert(kind="ship_warning", severity="info")) is False  # the sink's min_severity
    [plain] = load_sinks('[{"type": "slack", "url": "https://x.invalid/s"}]')
    assert plain.routes(alert(severity="info", kind="level_changed")) is True
    [one] = load_sinks('[{"type": "slack", "url": "https://x.invalid/s", "routes": {"shops": ["s-17"]}}]')
    assert one.routes(alert()) and not one.routes(alert(shop_id="s-18"))
    assert one.wants(alert()) and not one.wants(alert(shop_id="s-18"))


def test_delivery_loop_attributes_and_defaults():
    s = load_sinks(json.dumps([
        {"type": "dingtalk", "url": "https://x.invalid/d"},
        {"type": "wecom", "url": "https://x.invalid/w"},
        {"type": "feishu", "url": "https://x.invalid/f"},
        {"type": "slack", "url": "https://x.invalid/s"},
        {"type": "feishu", "url": "https://x.invalid/f2", "rate": 30, "burst": 1, "body_limit": 8000,
         "group_wait": 0, "group_interval": 60, "quiet_hours": "22:30-07:15", "throttle_retry_after": 120,
         "owners": {"s-1": {"user_ids": ["ou_1"]}}},
    ]))
    assert [(x.rate, x.burst) for x in s[:4]] == [(18.0, 2), (18.0, 2), (90.0, 3), (60.0, 3)]
    # the most a bucket lets through in a minute stays within each bot's documented limit
    for x, per_minute in zip(s[:3], (20, 20, 100), strict=True):
        assert x.burst + x.rate <= per_minute
    assert s[2].burst + s[2].rate / 60 <= 5  # 飞书: 5 per second
    assert [x.body_limit for x in s[:4]] == [20_000, 4096, 20_000, 3000]
    assert all((x.group_wait, x.group_interval, x.quiet_hours) == (30.0, 300.0, None) for x in s[:4])
    assert [x.throttle_retry_after for x in s[:4]] == [600.0, 60.0, 60.0, 60.0]
    f = s[4]
    assert (f.rate, f.burst, f.body_limit, f.group_wait, f.group_interval, f.throttle_retry_after) == (
        30.0, 1, 8000, 0.0, 60.0, 120.0)
    assert f.quiet_hours == (22 * 60 + 30, 7 * 60 + 15)
    assert f.in_quiet_hours(23 * 60) and f.in_quiet_hours(60) and not f.in_quiet_hours(12 * 60)
    assert f.mentions("s-1") == sinks_mod.Mentions((), ("ou_1",)) and f.mentions("s-2") is None
    assert not s[0].in_quiet_hours(23 * 60)
    assert sinks_mod.parse_quiet_hours("08:00-18:00") == (480, 1080)


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"rate": 0}, r"'rate' must be a number of messages per minute in \(0, 6000\]"),
        ({"rate": "20"}, r"'rate' must be a number"),
        ({"burst": 0}, r"'burst' must be an integer from 1 to 100"),
        ({"burst": 1.5}, r"'burst' must be an integer"),
        ({"body_limit": 4097}, r"'body_limit' must be an integer from 1000 to 4096"),
        ({"body_limit": 10}, r"'body_limit' must be an integer"),
        ({"group_wait": -1}, r"'group_wait' must be a number of seconds from 0 to 86400"),
        ({"group_interval": 0}, r"'group_interval' must be a number of seconds in \(0, 86400\]"),
        ({"throttle_retry_after": True}, r"'throttle_retry_after' must be a number"),
        ({"quiet_hours": "22-8"}, r"'quiet_hours': quiet hours must look like 22:00-08:00"),
        ({"quiet_hours": "25:00-08:00"}, r"'quiet_hours': quiet hours must be times from 00:00 to 23:59"),
        ({"quiet_hours": "08:00-08:00"}, r"'quiet_hours': quiet hours must not start and end at the same time"),
        ({"routes": []}, r"'routes' must be an object or a non-empty list of objects"),
        ({"routes": {"platform": ["jd"]}}, r"routes: unknown key\(s\) platform; allowed: platforms"),
        ({"routes": {"platforms": ["pdd"]}}, r"'platforms' has unknown value\(s\) 'pdd'; known: douyin, jd"),
        ({"routes": [{"kinds": ["ship_late"]}]}, r"routes\[0\]: 'kinds' has unknown value\(s\) 'ship_late'"),
        ({"routes": {"shops": []}}, r"'shops' must be a non-empty list of non-empty strings"),
        ({"routes": {"min_severity": "high"}}, r"routes: 'min_severity' must be one of info, warning, critical"),
        ({"owners": []}, r"'owners' must be an object"),
        ({"owners": {"s-1": {"phones": ["1"]}}}, r"owners entry 1 \('s-1'\): unknown key\(s\) phones"),
        ({"owners": {"s-1": {"mobiles": ["call-me"]}}}, r"owners entry 1 \('s-1'\): mobiles\[0\] must be a phone"),
        ({"owners": {"s-1": {"user_ids": ["<@all>"]}}}, r"user_ids\[0\] must be a user id"),
        ({"owners": {"s-1": {}}}, r"give at least one of mobiles, user_ids"),
        ({"owners": {"s-1": {"mobiles": ["13800001111"] * 21}}}, r"'mobiles' must be a list of at most 20"),
    ],
)
def test_new_config_keys_are_validated(extra, message):
    with pytest.raises(SinkConfigError, match=message):
        load_sinks(json.dumps([{"type": "wecom", "url": "https://x.invalid/cgi-bin/webhook/send?key=k", **extra}]))


def test_config_errors_do_not_echo_mobiles_or_urls():
    with pytest.raises(SinkConfigError) as exc:
        load_sinks(json.dumps([{"type": "dingtalk", "url": "https://x.invalid/robot/send?access_token=tok123",
                                "owners": {"s-1": {"mobiles": ["13800001111", "+86 138"]}}}]))
    assert "13800001111" not in str(exc.value) and "+86" not in str(exc.value) and "tok123" not in str(exc.value)
    with pytest.raises(SinkConfigError) as exc:
        load_sinks(json.dumps([{"type": "slack", "url": "https://x.invalid/s", "signing_secret": "sssh",
                                "quiet_hours": "sssh"}]))
    assert "sssh" not in str(exc.value)


def test_render_batch_is_pure_and_signed_as_of_now(monkeypatch):
    forbid_wall_clock(monkeypatch)
    batch = batch_of(40)
    sinks = offline_sinks()
    for s in sinks:
        first = s.render_batch(batch, 1_763_776_800.0, {"user_ids": ["u1"]})
        assert s.render_batch(batch, 1_763_776_800.0, {"user_ids": ["u1"]}) == first
        if not isinstance(s, WeComSink):
            assert s.render_batch(batch, 1_763_776_860.0, {"user_ids": ["u1"]}) != first
    ts = 1_763_776_800
    fs = json.loads(sinks[0].render_batch(batch, ts)[2])
    assert fs["sign"] == base64.b64encode(hmac.new(f"{ts}\ns".encode(), b"", hashlib.sha256).digest()).decode()
    _, headers, body = sinks[3].render_batch(batch, ts)
    assert headers["X-Slack-Signature"] == "v0=" + hmac.new(b"s", f"v0:{ts}:".encode() + body,
                                                            hashlib.sha256).hexdigest()


def test_receiver_throttle_penalty_outlasts_the_window():
    """Past N a minute (or per second) the vendor refuses; 钉钉 goes on refusing for its penalty."""

    async def main():
        async with Receiver() as r:
            r.throttle("dingtalk", per_minute=2, penalty=0.4)
            sink = one_sink(r, "dingtalk", throttle_retry_after=0.4)
            assert [(await post_batch(sink, batch_of(1))).kind for _ in range(4)] == [
                "ok", "ok", "throttled", "throttled"]
            r.throttle("dingtalk", per_minute=100, penalty=0.4)  # a new window: only the penalty could refuse
            assert (await post_batch(sink, batch_of(1))).ok
            r.throttle("feishu", per_minute=100, per_second=2)
            fs = one_sink(r, "feishu")
            kinds = [(await post_batch(fs, batch_of(1))).kind for _ in range(3)]
            assert kinds == ["ok", "ok", "throttled"]
            await asyncio.sleep(1.05)
            assert (await post_batch(fs, batch_of(1))).ok

    asyncio.run(main())
