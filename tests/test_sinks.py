"""Chat sinks (shopwatch.agents.sinks) against a local receiver on 127.0.0.1.

The receiver plays the four vendors' webhook endpoints and re-implements each
vendor's check *independently* of the code under test, from the vendors'
documentation:

- 飞书/Lark: body ``timestamp`` (s) and ``sign`` = base64(HMAC-SHA256(key =
  "{timestamp}\\n{secret}", msg = b"")); off by more than 1 h or not matching:
  HTTP 200 ``{"code": 19021, "msg": "sign match fail or timestamp is not within
  one hour from current time"}``; ``msg_type`` text/interactive shapes.
- 钉钉: query ``timestamp`` (ms) and ``sign`` = urlencode(base64(HMAC-SHA256(key =
  secret, msg = "{timestamp}\\n{secret}"))), decoded here as a form query would
  be (so an un-encoded "+" breaks it); errors ``{"errcode": 310000, ...}``;
  ``msgtype`` markdown/text shapes; the access_token must be the robot's.
- 企业微信: the ``key`` must be the robot's (``{"errcode": 93000, ...}``);
  ``markdown.content`` present and at most 4096 bytes.
- Slack: ``text`` and ``blocks`` shapes (HTTP 400 ``invalid_blocks`` /
  ``no_text`` as Slack answers); with a signing secret, ``X-Slack-Signature`` =
  "v0=" + hex(HMAC-SHA256(secret, "v0:{ts}:" + body)) and a timestamp within
  5 minutes (HTTP 401 otherwise).

Pytest-asyncio is not used: each test is a sync function running its
coroutine with ``asyncio.run``.
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

import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from shopwatch.agents import sinks as sinks_mod
from shopwatch.agents.sinks import (
    SINKS_ENV,
    DingTalkSink,
    FeishuSink,
    SinkConfigError,
    SinkDispatcher,
    SlackSink,
    WeComSink,
    load_sinks,
)

FEISHU_SECRET = "fs-secret-0123456789"
DINGTALK_SECRET = "SECd1n9+t4lk/s3cr3t=="  # characters that base64 and URL encoding both care about
DINGTALK_TOKEN = "dt-access-token"
WECOM_KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_PATH = "/services/T000/B000/XXXXXXXX"

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


# --------------------------------------------------------------------------- the receiver


class Receiver:
    """The vendors' webhook endpoints, each with its own check."""

    def __init__(self, *, feishu_secret=FEISHU_SECRET, dingtalk_secret=DINGTALK_SECRET,
                 slack_secret: str | None = SLACK_SECRET, delay: float = 0.0) -> None:
        self.feishu_secret = feishu_secret
        self.dingtalk_secret = dingtalk_secret
        self.slack_secret = slack_secret
        self.delay = delay
        self.hits: dict[str, int] = {"feishu": 0, "dingtalk": 0, "wecom": 0, "slack": 0}
        self.accepted: dict[str, list[dict]] = {"feishu": [], "dingtalk": [], "wecom": [], "slack": []}
        self.rejected: dict[str, list] = {"feishu": [], "dingtalk": [], "wecom": [], "slack": []}
        self.plan: dict[str, list[int]] = {}  # vendor -> HTTP statuses to answer first
        self.runner: web.AppRunner | None = None
        self.base = ""

    def fail_next(self, vendor: str, *statuses: int) -> None:
        self.plan.setdefault(vendor, []).extend(statuses)

    def url(self, vendor: str) -> str:
        return {
            "feishu": f"{self.base}/open-apis/bot/v2/hook/fs-hook-id",
            "dingtalk": f"{self.base}/robot/send?access_token={DINGTALK_TOKEN}",
            "wecom": f"{self.base}/cgi-bin/webhook/send?key={WECOM_KEY}",
            "slack": f"{self.base}{SLACK_PATH}",
        }[vendor]

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/open-apis/bot/v2/hook/{hook}", self._wrap("feishu", self.feishu))
        app.router.add_post("/robot/send", self._wrap("dingtalk", self.dingtalk))
        app.router.add_post("/cgi-bin/webhook/send", self._wrap("wecom", self.wecom))
        app.router.add_post("/services/{a}/{b}/{c}", self._wrap("slack", self.slack))
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.base = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    def _wrap(self, vendor, handler):
        async def handle(request: web.Request) -> web.StreamResponse:
            self.hits[vendor] += 1
            body = await request.read()
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.plan.get(vendor):
                status = self.plan[vendor].pop(0)
                return web.Response(status=status, text=f"planned {status}")
            accepted, response = handler(request, body)
            if accepted:
                self.accepted[vendor].append(accepted)
            else:
                self.rejected[vendor].append(response.text)
            return response

        return handle

    # -- 飞书 / Lark

    def feishu(self, request: web.Request, body: bytes):
        def error(code: int, msg: str):
            return False, web.json_response({"code": code, "msg": msg, "data": {}})

        try:
            data = json.loads(body)
        except ValueError:
            return error(9499, "Bad Request")
        if self.feishu_secret is not None:
            ts, sign = data.get("timestamp"), data.get("sign")
            if not isinstance(ts, str | int) or not isinstance(sign, str):
                return error(19021, "sign match fail or timestamp is not within one hour from current time")
            string_to_sign = f"{ts}\n{self.feishu_secret}".encode()
            expected = base64.b64encode(hmac.new(string_to_sign, b"", hashlib.sha256).digest()).decode()
            if abs(time.time() - int(ts)) > 3600 or not hmac.compare_digest(expected, sign):
                return error(19021, "sign match fail or timestamp is not within one hour from current time")
        if data.get("msg_type") == "text":
            if not isinstance(data.get("content", {}).get("text"), str) or not data["content"]["text"]:
                return error(9499, "Bad Request")
        elif data.get("msg_type") == "interactive":
            card = data.get("card")
            if not isinstance(card, dict) or not isinstance(card.get("elements"), list) or not card["elements"]:
                return error(9499, "Bad Request")
            if card.get("header", {}).get("title", {}).get("tag") not in ("plain_text", "lark_md"):
                return error(9499, "Bad Request")
        else:
            return error(9499, "Bad Request")
        return data, web.json_response({"code": 0, "msg": "success", "data": {}})

    # -- 钉钉

    def dingtalk(self, request: web.Request, body: bytes):
        def error(code: int, msg: str):
            return False, web.json_response({"errcode": code, "errmsg": msg})

        query = parse_qs(request.query_string, keep_blank_values=True)  # form decoding: "+" is a space
        if query.get("access_token") != [DINGTALK_TOKEN]:
            return error(300001, "token is not exist")
        if self.dingtalk_secret is not None:
            ts, sign = query.get("timestamp", [""])[0], query.get("sign", [""])[0]
            if not ts.isdigit() or abs(time.time() * 1000 - int(ts)) > 3600 * 1000:
                return error(310000, "invalid timestamp")
            string_to_sign = f"{ts}\n{self.dingtalk_secret}".encode()
            digest = hmac.new(self.dingtalk_secret.encode(), string_to_sign, hashlib.sha256).digest()
            if not hmac.compare_digest(base64.b64encode(digest).decode(), sign):
                return error(310000, "sign not match")
        try:
            data = json.loads(body)
        except ValueError:
            return error(40035, "缺少参数 json")
        if data.get("msgtype") == "markdown":
            md = data.get("markdown", {})
            if not (isinstance(md.get("title"), str) and md["title"] and isinstance(md.get("text"), str) and md["text"]):
                return error(40035, "缺少参数 markdown")
        elif data.get("msgtype") == "text":
            if not isinstance(data.get("text", {}).get("content"), str):
                return error(40035, "缺少参数 text")
        else:
            return error(40035, "缺少参数 msgtype")
        return data, web.json_response({"errcode": 0, "errmsg": "ok"})

    # -- 企业微信

    def wecom(self, request: web.Request, body: bytes):
        def error(code: int, msg: str):
            return False, web.json_response({"errcode": code, "errmsg": msg})

        if request.query.get("key") != WECOM_KEY:
            return error(93000, "invalid webhook url")
        try:
            data = json.loads(body)
        except ValueError:
            return error(40058, "invalid json")
        if data.get("msgtype") != "markdown":
            return error(40008, "invalid message type")
        content = data.get("markdown", {}).get("content")
        if not isinstance(content, str) or not content:
            return error(41009, "missing markdown.content")
        if len(content.encode("utf-8")) > 4096:
            return error(40058, "markdown.content exceed max length 4096")
        return data, web.json_response({"errcode": 0, "errmsg": "ok"})

    # -- Slack

    def slack(self, request: web.Request, body: bytes):
        if request.path != SLACK_PATH:
            return False, web.Response(status=404, text="no_service")
        if self.slack_secret is not None:
            ts = request.headers.get("X-Slack-Request-Timestamp", "")
            sig = request.headers.get("X-Slack-Signature", "")
            if not ts.isdigit() or abs(time.time() - int(ts)) > 5 * 60:
                return False, web.Response(status=401, text="invalid_timestamp")
            base = f"v0:{ts}:".encode() + body
            expected = "v0=" + hmac.new(self.slack_secret.encode(), base, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, sig):
                return False, web.Response(status=401, text="invalid_signature")
        try:
            data = json.loads(body)
        except ValueError:
            return False, web.Response(status=400, text="invalid_payload")
        if not isinstance(data.get("text"), str) or not data["text"]:
            return False, web.Response(status=400, text="no_text")
        blocks = data.get("blocks")
        if not isinstance(blocks, list) or not blocks:
            return False, web.Response(status=400, text="invalid_blocks")
        for b in blocks:
            kind = b.get("type")
            if kind == "header":
                if b["text"]["type"] != "plain_text" or len(b["text"]["text"]) > 150:
                    return False, web.Response(status=400, text="invalid_blocks")
            elif kind == "section":
                if "text" not in b and not b.get("fields"):
                    return False, web.Response(status=400, text="invalid_blocks")
                if len(b.get("fields", [])) > 10:
                    return False, web.Response(status=400, text="invalid_blocks")
            elif kind == "context":
                if not b.get("elements"):
                    return False, web.Response(status=400, text="invalid_blocks")
            else:
                return False, web.Response(status=400, text="invalid_blocks")
        return data, web.Response(text="ok")


# --------------------------------------------------------------------------- helpers


def config(receiver: Receiver, vendor: str, **extra) -> dict:
    c = {"type": vendor, "url": receiver.url(vendor)}
    c.update({"feishu": {"secret": FEISHU_SECRET}, "dingtalk": {"secret": DINGTALK_SECRET},
              "wecom": {}, "slack": {"signing_secret": SLACK_SECRET}}[vendor])
    c.update(extra)
    return {k: v for k, v in c.items() if v is not None}


def one_sink(receiver: Receiver, vendor: str, *, clock=time.time, **extra):
    [sink] = load_sinks(json.dumps([config(receiver, vendor, **extra)]), clock=clock)
    sink.backoff = 0.01
    return sink


def count(sink_name: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("shopwatch_sink_deliveries_total", {"sink": sink_name, "outcome": outcome}) or 0.0


async def deliver(sink, a: dict) -> bool:
    async with SinkDispatcher([sink]) as d:
        return (await d.dispatch(a))[sink.name]


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
            assert await deliver(sink, alert()) is True
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
            assert await deliver(sink, a) is True
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
            async with SinkDispatcher([s1, s2, s3]) as d:
                assert await d.dispatch(alert()) == {"fs-text": True, "dt-text": True, "slack-unsigned": True}
            assert r.accepted["feishu"][0]["msg_type"] == "text"
            assert "timestamp" not in r.accepted["feishu"][0]
            assert r.accepted["dingtalk"][0]["msgtype"] == "text"

    asyncio.run(main())


# --------------------------------------------------------------------------- signatures


@pytest.mark.parametrize("vendor", SIGNED)
def test_wrong_secret_is_rejected_and_not_retried(vendor):
    key = {"feishu": "secret", "dingtalk": "secret", "slack": "signing_secret"}[vendor]

    async def main():
        async with Receiver() as r:
            sink = one_sink(r, vendor, name=f"badsecret-{vendor}", **{key: "not-the-secret"})
            before = count(sink.name, "rejected")
            assert await deliver(sink, alert()) is False
            assert r.hits[vendor] == 1, "a rejected signature must not be retried"
            assert r.accepted[vendor] == []
            assert count(sink.name, "rejected") == before + 1

    asyncio.run(main())


@pytest.mark.parametrize("vendor", SIGNED)
def test_missing_signature_is_rejected(vendor):
    key = {"feishu": "secret", "dingtalk": "secret", "slack": "signing_secret"}[vendor]

    async def main():
        async with Receiver() as r:
            sink = one_sink(r, vendor, name=f"nosig-{vendor}", **{key: None})
            assert await deliver(sink, alert()) is False
            assert r.accepted[vendor] == []

    asyncio.run(main())


@pytest.mark.parametrize("vendor", SIGNED)
def test_stale_timestamp_is_rejected(vendor):
    async def main():
        async with Receiver() as r:
            sink = one_sink(r, vendor, name=f"stale-{vendor}", clock=lambda: time.time() - 2 * 3600)
            assert await deliver(sink, alert()) is False
            assert r.accepted[vendor] == [] and r.hits[vendor] == 1

    asyncio.run(main())


def test_receiver_rejects_unencoded_dingtalk_sign():
    """The receiver decodes the query as a form: a sign whose "+" is not URL-encoded fails, as at 钉钉."""
    import aiohttp
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
            url, headers, body = sink.render(alert(), ts / 1000)
            assert url.endswith(f"&timestamp={ts}&sign={quote_plus(raw)}")  # what the sink sends
            async with aiohttp.ClientSession() as s:
                async with s.post(URL(url, encoded=True), data=body, headers=headers) as resp:
                    assert (await resp.json()) == {"errcode": 0, "errmsg": "ok"}
                unencoded = url.rsplit("&sign=", 1)[0] + "&sign=" + raw
                async with s.post(URL(unencoded, encoded=True), data=body, headers=headers) as resp:
                    assert (await resp.json())["errcode"] == 310000

    asyncio.run(main())


def test_render_is_pure_and_signs_with_the_given_clock(monkeypatch):
    def no_wall_clock():
        raise AssertionError("render read the wall clock")

    monkeypatch.setattr(sinks_mod.time, "time", no_wall_clock)
    sinks = [
        FeishuSink(url="https://fs.invalid/open-apis/bot/v2/hook/x", secret="s"),
        DingTalkSink(url="https://dt.invalid/robot/send?access_token=t", secret="SECs"),
        WeComSink(url="https://wc.invalid/cgi-bin/webhook/send?key=k"),
        SlackSink(url="https://sl.invalid/services/a/b/c", signing_secret="s"),
    ]
    for s in sinks:
        first = s.render(ALERT, 1_763_776_800.0)
        assert s.render(ALERT, 1_763_776_800.0) == first
        if not isinstance(s, WeComSink):
            assert s.render(ALERT, 1_763_776_860.0) != first
    # the documented formulas, on fixed inputs
    ts = 1_763_776_800
    _, _, body = sinks[0].render(ALERT, ts)
    fs = json.loads(body)
    assert fs["timestamp"] == str(ts)
    assert fs["sign"] == base64.b64encode(hmac.new(f"{ts}\ns".encode(), b"", hashlib.sha256).digest()).decode()
    url, _, _ = sinks[1].render(ALERT, ts + 0.123)
    q = parse_qs(url.split("?", 1)[1])
    assert q["timestamp"] == [str(ts * 1000 + 123)] and q["access_token"] == ["t"]
    digest = hmac.new(b"SECs", f"{ts * 1000 + 123}\nSECs".encode(), hashlib.sha256).digest()
    assert q["sign"] == [base64.b64encode(digest).decode()]
    _, headers, body = sinks[3].render(ALERT, ts)
    assert headers["X-Slack-Request-Timestamp"] == str(ts)
    assert headers["X-Slack-Signature"] == "v0=" + hmac.new(b"s", f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize("vendor", VENDORS)
def test_5xx_is_retried_then_succeeds(vendor):
    async def main():
        async with Receiver() as r:
            r.fail_next(vendor, 500, 503)
            sink = one_sink(r, vendor, name=f"retry-{vendor}")
            before = count(sink.name, "delivered")
            assert await deliver(sink, alert()) is True
            assert r.hits[vendor] == 3 and len(r.accepted[vendor]) == 1
            assert count(sink.name, "delivered") == before + 1

    asyncio.run(main())


def test_5xx_on_every_try_gives_up_after_tries():
    async def main():
        async with Receiver() as r:
            r.fail_next("feishu", 502, 502, 502, 502)
            sink = one_sink(r, "feishu", name="giveup", tries=3)
            before = count("giveup", "failed")
            assert await deliver(sink, alert()) is False
            assert r.hits["feishu"] == 3
            assert count("giveup", "failed") == before + 1

    asyncio.run(main())


@pytest.mark.parametrize("vendor", VENDORS)
def test_4xx_is_not_retried(vendor):
    async def main():
        async with Receiver() as r:
            r.fail_next(vendor, 400)
            sink = one_sink(r, vendor, name=f"4xx-{vendor}")
            before = count(sink.name, "rejected")
            assert await deliver(sink, alert()) is False
            assert r.hits[vendor] == 1
            assert count(sink.name, "rejected") == before + 1

    asyncio.run(main())


def test_429_is_retried():
    async def main():
        async with Receiver() as r:
            r.fail_next("wecom", 429)
            sink = one_sink(r, "wecom", name="ratelimited")
            assert await deliver(sink, alert()) is True
            assert r.hits["wecom"] == 2

    asyncio.run(main())


def test_connection_errors_and_timeouts_are_retried_and_never_raise():
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]

    async def main():
        dead = SlackSink(url=f"http://127.0.0.1:{dead_port}/services/a/b/c", name="dead", backoff=0.01)
        before = count("dead", "failed")
        assert await deliver(dead, alert()) is False
        assert count("dead", "failed") == before + 1
        async with Receiver(delay=0.5) as r:
            slow = one_sink(r, "wecom", name="slow", timeout=0.1, tries=2)
            t0 = time.monotonic()
            assert await deliver(slow, alert()) is False
            assert r.hits["wecom"] == 2
            assert time.monotonic() - t0 < 2

    asyncio.run(main())


# --------------------------------------------------------------------------- severity filter, dispatch


def test_min_severity_filters():
    async def main():
        async with Receiver() as r:
            sink = one_sink(r, "dingtalk", name="onlywarn", min_severity="warning")
            before = count("onlywarn", "filtered")
            assert await deliver(sink, alert(severity="info", kind="level_changed")) is False
            assert r.hits["dingtalk"] == 0
            assert count("onlywarn", "filtered") == before + 1
            assert await deliver(sink, alert(severity="warning")) is True
            assert await deliver(sink, alert(severity="critical")) is True
            assert r.hits["dingtalk"] == 2

    asyncio.run(main())


def test_dispatcher_sends_concurrently_and_isolates_failures():
    async def main():
        async with Receiver(delay=0.4) as r:
            r.fail_next("wecom", 404)
            sinks = [one_sink(r, v, name=f"conc-{v}") for v in VENDORS]
            async with SinkDispatcher(sinks) as d:
                t0 = time.monotonic()
                result = await d.dispatch(alert())
                elapsed = time.monotonic() - t0
            assert result == {"conc-feishu": True, "conc-dingtalk": True, "conc-wecom": False, "conc-slack": True}
            assert elapsed < 1.2, f"four 0.4 s deliveries took {elapsed:.2f}s: not concurrent"

    asyncio.run(main())


def test_dispatcher_without_sinks_is_a_no_op():
    async def main():
        d = SinkDispatcher.from_env({})
        assert not d
        assert await d.dispatch(alert()) == {}
        await d.close()

    asyncio.run(main())


def test_wecom_long_content_is_truncated_to_the_limit():
    async def main():
        async with Receiver() as r:
            sink = one_sink(r, "wecom", name="long")
            assert await deliver(sink, alert(summary="超时" * 3000)) is True
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
    assert s[4].msg_type == "text" and s[4].timeout == 5.0 and s[4].tries == 2
    for x in s:  # webhook URLs and secrets are credentials: not in reprs
        assert "access_token" not in repr(x) and "SECx" not in repr(x) and "key=k" not in repr(x)
    assert load_sinks(None) == [] and load_sinks("") == [] and load_sinks("  ") == [] and load_sinks("[]") == []
    assert SINKS_ENV == "SHOPWATCH_SINKS"
    d = SinkDispatcher.from_env({SINKS_ENV: env})
    assert len(d.sinks) == 6


@pytest.mark.parametrize(
    "value, message",
    [
        ('[{"type": "teams", "url": "https://x.invalid/"}]',
         r"SHOPWATCH_SINKS\[0\]: unknown sink type 'teams'; known types: dingtalk, feishu, slack, wecom"),
        ('[{"url": "https://x.invalid/"}]', r"unknown sink type None"),
        ("{not json", r"not valid JSON"),
        ('{"type": "slack"}', r"must be a JSON list"),
        ('["slack"]', r"\[0\] must be an object"),
        ('[{"type": "wecom"}]', r"'url' must be an http\(s\) URL"),
        ('[{"type": "wecom", "url": "ftp://x"}]', r"'url' must be an http\(s\) URL"),
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
