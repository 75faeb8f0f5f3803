"""Chat sinks: alert changes to the ops chats (飞书/Lark, 钉钉, 企业微信, Slack).

Every alert dict (shared/spec/events.md "Output: alerts") goes to every
configured sink as one chat message: severity emoji and label, status
(firing / resolved), the Chinese ``summary``, platform, shop, order /
refund / session id, ``at``, ``due_at`` and ``alert_id``.

Configuration: ``SHOPWATCH_SINKS``, a JSON list of objects::

    [{"type": "feishu",   "url": "https://open.feishu.cn/open-apis/bot/v2/hook/…", "secret": "…"},
     {"type": "dingtalk", "url": "https://oapi.dingtalk.com/robot/send?access_token=…", "secret": "SEC…"},
     {"type": "wecom",    "url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…"},
     {"type": "slack",    "url": "https://hooks.slack.com/services/…", "signing_secret": "…"}]

Keys of every sink: ``type`` and ``url`` (required); ``name`` (the ``sink``
label of the metrics and logs; default the type, ``feishu-2`` … for a second
sink of one type); ``min_severity`` (``info`` (default), ``warning`` or
``critical``: alerts below it are not sent); ``timeout`` (seconds per try,
default 10); ``tries`` (default 3). Per type: ``feishu`` ``secret`` (签名校验)
and ``msg_type`` (``interactive`` (default, a card) or ``text``);
``dingtalk`` ``secret`` (加签, ``SEC…``) and ``msgtype`` (``markdown``
(default) or ``text``); ``wecom`` nothing more (the key is in the URL);
``slack`` ``signing_secret`` (adds ``X-Slack-Request-Timestamp`` /
``X-Slack-Signature`` for a receiver, e.g. a relay, that verifies them;
Slack's own incoming webhooks ignore them). Unknown types and keys are
errors (:class:`SinkConfigError`), so that a misspelt ``secret`` does not
silently send unsigned messages.

Signatures, as each vendor documents them:

- 飞书: body fields ``timestamp`` (seconds, as a string) and ``sign`` =
  base64(HMAC-SHA256(key = ``f"{timestamp}\\n{secret}"``, message = empty));
- 钉钉: query parameters ``timestamp`` (milliseconds) and ``sign`` =
  urlencode(base64(HMAC-SHA256(key = secret, message = ``f"{timestamp}\\n{secret}"``)));
- Slack: ``X-Slack-Signature: v0=`` + hex(HMAC-SHA256(key = signing secret,
  message = ``f"v0:{timestamp}:"`` + body)), ``X-Slack-Request-Timestamp``
  in seconds.

``Sink.render(alert, now)`` is pure: the clock value ``now`` (epoch seconds)
is passed in, never read. ``Sink.send(session, alert)`` reads the sink's
clock (``time.time`` unless injected) once per try, so that each retry is
signed afresh; it never raises (apart from cancellation): the outcome is
logged and counted in ``shopwatch_sink_deliveries_total{sink,outcome}`` with
outcome ``delivered``, ``rejected`` (a 4xx or a vendor error code: not
retried), ``failed`` (5xx, 429, vendor rate limiting, timeouts or connection
errors on every try), ``filtered`` (below ``min_severity``) or ``error``
(the alert could not be rendered). Tries are spaced by exponential backoff
(0.5 s, 1 s, …, at most 5 s; a 429's ``Retry-After`` is honoured up to that
bound). Webhook URLs carry credentials (access tokens, keys): they are never
logged, nor shown in a sink's repr.

Usage::

    dispatcher = SinkDispatcher.from_env()        # reads SHOPWATCH_SINKS
    await dispatcher.dispatch(alert)              # all sinks concurrently
    await dispatcher.close()                      # or: async with dispatcher: …
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import quote_plus, urlsplit

import aiohttp
from prometheus_client import Counter
from yarl import URL

from shopwatch.streams.alerts import PLATFORM_NAMES

log = logging.getLogger(__name__)

SINKS_ENV = "SHOPWATCH_SINKS"

DELIVERIES = Counter(
    "shopwatch_sink_deliveries_total",
    "Alert deliveries to chat sinks, by sink and outcome (delivered, rejected, failed, filtered, error)",
    ["sink", "outcome"],
)

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
SEVERITY_LABEL = {"critical": ("🔴", "严重"), "warning": ("🟠", "警告"), "info": ("🔵", "提示")}
STATUS_LABEL = {"firing": "告警中", "resolved": "✅ 已恢复"}

# What a try's response means.
OK, RETRY, REJECT = "ok", "retry", "reject"

Clock = Callable[[], float]


class SinkConfigError(ValueError):
    """SHOPWATCH_SINKS cannot be used as it is."""


# --------------------------------------------------------------------------- content


def _severity(alert: Mapping[str, Any]) -> str:
    sev = alert.get("severity")
    return sev if sev in SEVERITY_RANK else "info"


def title(alert: Mapping[str, Any]) -> str:
    """``🔴 严重 | 告警中 | ship_overdue``: severity emoji and label, status, kind."""
    emoji, label = SEVERITY_LABEL[_severity(alert)]
    status = alert.get("status", "firing")
    return f"{emoji} {label} | {STATUS_LABEL.get(status, status)} | {alert.get('kind', 'alert')}"


def facts(alert: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The labelled fields of a message, in display order."""
    platform = str(alert.get("platform", ""))
    rows = [("平台", f"{PLATFORM_NAMES[platform]} ({platform})" if platform in PLATFORM_NAMES else platform)]
    rows.append(("店铺", str(alert.get("shop_id", ""))))
    for key, label in (("order_id", "订单"), ("refund_id", "售后单"), ("session_id", "会话")):
        if alert.get(key):
            rows.append((label, str(alert[key])))
    if alert.get("at"):
        rows.append(("恢复时间" if alert.get("status") == "resolved" else "发生时间", str(alert["at"])))
    if alert.get("due_at"):
        rows.append(("截止时间", str(alert["due_at"])))
    rows.append(("告警 ID", str(alert.get("alert_id", ""))))
    return rows


def plain_text(alert: Mapping[str, Any]) -> str:
    lines = [title(alert), str(alert.get("summary", ""))]
    lines += [f"{k}：{v}" for k, v in facts(alert)]
    return "\n".join(lines)


def _json(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _truncate_utf8(text: str, limit: int) -> str:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[: limit - len("…".encode())].decode("utf-8", "ignore") + "…"


def _redact(url: str) -> str:
    """``https://host/…``: what may be logged of a webhook URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…"


JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


# --------------------------------------------------------------------------- signatures


def feishu_sign(timestamp: int, secret: str) -> str:
    """飞书/Lark: base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b""))."""
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode("ascii")


def dingtalk_sign(timestamp_ms: int, secret: str) -> str:
    """钉钉: base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}")), before URL encoding."""
    msg = f"{timestamp_ms}\n{secret}".encode()
    return base64.b64encode(hmac.new(secret.encode(), msg, hashlib.sha256).digest()).decode("ascii")


def slack_signature(timestamp: int, body: bytes, signing_secret: str) -> str:
    """Slack: "v0=" + hex(HMAC-SHA256(key=signing secret, msg=b"v0:{ts}:" + body))."""
    base = f"v0:{timestamp}:".encode() + body
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


def _json_code(body: bytes, *keys: str) -> int | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    for k in keys:
        if isinstance(data.get(k), int):
            return data[k]
    return None


# --------------------------------------------------------------------------- sinks


@dataclass(kw_only=True)
class Sink:
    """One chat webhook. Subclasses give ``render`` and ``verdict``."""

    type: ClassVar[str] = ""
    extra_keys: ClassVar[frozenset[str]] = frozenset()
    # Vendor error codes (in a JSON body) that mean "rate limited / busy: try again".
    retry_codes: ClassVar[frozenset[int]] = frozenset()

    url: str = field(repr=False)
    name: str = ""
    min_severity: str = "info"
    timeout: float = 10.0
    tries: int = 3
    backoff: float = 0.5
    max_backoff: float = 5.0
    clock: Clock = field(default=time.time, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            self.name = self.type

    # -- pure parts

    def wants(self, alert: Mapping[str, Any]) -> bool:
        return SEVERITY_RANK[_severity(alert)] >= SEVERITY_RANK[self.min_severity]

    def render(self, alert: Mapping[str, Any], now: float) -> tuple[str, dict[str, str], bytes]:
        """(url, headers, body) of the POST for ``alert``, signed as of ``now`` (epoch seconds)."""
        raise NotImplementedError

    def verdict(self, status: int, body: bytes) -> tuple[str, str]:
        """(OK | RETRY | REJECT, detail) for a response."""
        if status >= 500 or status == 429:
            return RETRY, f"HTTP {status}"
        code = self._code(body)
        if code is not None and code in self.retry_codes:
            return RETRY, f"HTTP {status}, code {code}"
        if not 200 <= status < 300:
            return REJECT, f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}"
        return self._verdict_2xx(code, body)

    def _code(self, body: bytes) -> int | None:
        return None

    def _verdict_2xx(self, code: int | None, body: bytes) -> tuple[str, str]:
        if code == 0:
            return OK, "ok"
        return REJECT, f"vendor error: {body[:300].decode('utf-8', 'replace')}"

    # -- I/O

    async def send(self, session: aiohttp.ClientSession, alert: Mapping[str, Any]) -> bool:
        """Deliver ``alert``; True when the vendor accepted it. Never raises (except cancellation)."""
        try:
            return await self._send(session, alert)
        except Exception:
            log.exception("sink %s: unexpected error delivering %s", self.name, alert.get("alert_id"))
            DELIVERIES.labels(self.name, "error").inc()
            return False

    async def _send(self, session: aiohttp.ClientSession, alert: Mapping[str, Any]) -> bool:
        alert_id = alert.get("alert_id")
        if not self.wants(alert):
            DELIVERIES.labels(self.name, "filtered").inc()
            return False
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        detail = ""
        for attempt in range(1, self.tries + 1):
            try:
                url, headers, body = self.render(alert, self.clock())
            except Exception:
                log.exception("sink %s: cannot render alert %s", self.name, alert_id)
                DELIVERIES.labels(self.name, "error").inc()
                return False
            retry_after: float | None = None
            try:
                async with session.post(URL(url, encoded=True), data=body, headers=headers, timeout=timeout) as resp:
                    payload = await resp.read()
                    outcome, detail = self.verdict(resp.status, payload)
                    if resp.status == 429:
                        retry_after = _seconds(resp.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome, detail = RETRY, _describe(exc, url)
            if outcome == OK:
                log.debug("sink %s: delivered %s (try %d)", self.name, alert_id, attempt)
                DELIVERIES.labels(self.name, "delivered").inc()
                return True
            if outcome == REJECT:
                log.warning("sink %s: %s rejected %s: %s", self.name, _redact(url), alert_id, detail)
                DELIVERIES.labels(self.name, "rejected").inc()
                return False
            if attempt < self.tries:
                delay = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
                if retry_after is not None:
                    delay = min(max(delay, retry_after), self.max_backoff)
                log.info("sink %s: try %d/%d for %s failed (%s); retrying in %.2fs",
                         self.name, attempt, self.tries, alert_id, detail, delay)
                await asyncio.sleep(delay)
        log.warning("sink %s: giving up on %s after %d tries: %s", self.name, alert_id, self.tries, detail)
        DELIVERIES.labels(self.name, "failed").inc()
        return False


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _describe(exc: BaseException, url: str) -> str:
    text = str(exc).replace(url, _redact(url))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(kw_only=True)
class FeishuSink(Sink):
    """飞书/Lark custom bot (自定义机器人) webhook."""

    type: ClassVar[str] = "feishu"
    extra_keys: ClassVar[frozenset[str]] = frozenset({"secret", "msg_type"})
    retry_codes: ClassVar[frozenset[int]] = frozenset({11232})  # frequency limited

    secret: str | None = field(default=None, repr=False)
    msg_type: str = "interactive"

    TEMPLATES: ClassVar[dict[str, str]] = {"critical": "red", "warning": "orange", "info": "blue"}

    def card(self, alert: Mapping[str, Any]) -> dict[str, Any]:
        template = "green" if alert.get("status") == "resolved" else self.TEMPLATES[_severity(alert)]
        return {
            "config": {"wide_screen_mode": True},
            "header": {"template": template, "title": {"tag": "plain_text", "content": title(alert)}},
            "elements": [
                {"tag": "div", "text": {"tag": "plain_text", "content": str(alert.get("summary", ""))}},
                {
                    "tag": "div",
                    "fields": [
                        {"is_short": True, "text": {"tag": "plain_text", "content": f"{k}：{v}"}}
                        for k, v in facts(alert)
                    ],
                },
            ],
        }

    def render(self, alert: Mapping[str, Any], now: float) -> tuple[str, dict[str, str], bytes]:
        payload: dict[str, Any] = {}
        if self.secret:
            ts = int(now)
            payload["timestamp"] = str(ts)
            payload["sign"] = feishu_sign(ts, self.secret)
        if self.msg_type == "text":
            payload["msg_type"] = "text"
            payload["content"] = {"text": plain_text(alert)}
        else:
            payload["msg_type"] = "interactive"
            payload["card"] = self.card(alert)
        return self.url, dict(JSON_HEADERS), _json(payload)

    def _code(self, body: bytes) -> int | None:
        return _json_code(body, "code", "StatusCode")


@dataclass(kw_only=True)
class DingTalkSink(Sink):
    """钉钉 custom robot (自定义机器人) webhook."""

    type: ClassVar[str] = "dingtalk"
    extra_keys: ClassVar[frozenset[str]] = frozenset({"secret", "msgtype"})
    retry_codes: ClassVar[frozenset[int]] = frozenset({130101})  # send too fast

    secret: str | None = field(default=None, repr=False)
    msgtype: str = "markdown"

    def markdown(self, alert: Mapping[str, Any]) -> str:
        lines = [f"### {title(alert)}", "", f"**{alert.get('summary', '')}**", ""]
        lines += [f"- {k}：{v}" for k, v in facts(alert)]
        return "\n".join(lines)

    def render(self, alert: Mapping[str, Any], now: float) -> tuple[str, dict[str, str], bytes]:
        url = self.url
        if self.secret:
            ts_ms = int(now * 1000)
            sep = "&" if "?" in url else "?"
            url = f"{url}{sep}timestamp={ts_ms}&sign={quote_plus(dingtalk_sign(ts_ms, self.secret))}"
        if self.msgtype == "text":
            payload: dict[str, Any] = {"msgtype": "text", "text": {"content": plain_text(alert)}}
        else:
            payload = {"msgtype": "markdown", "markdown": {"title": title(alert), "text": self.markdown(alert)}}
        return url, dict(JSON_HEADERS), _json(payload)

    def _code(self, body: bytes) -> int | None:
        return _json_code(body, "errcode")


@dataclass(kw_only=True)
class WeComSink(Sink):
    """企业微信 group robot (群机器人) webhook; the key is in the URL, there is no signature."""

    type: ClassVar[str] = "wecom"
    retry_codes: ClassVar[frozenset[int]] = frozenset({-1, 45009})  # system busy, api freq out of limit

    MAX_BYTES: ClassVar[int] = 4096  # markdown.content limit, UTF-8 bytes

    def markdown(self, alert: Mapping[str, Any]) -> str:
        lines = [f"### {title(alert)}", f"**{alert.get('summary', '')}**"]
        lines += [f"> {k}：<font color=\"comment\">{v}</font>" for k, v in facts(alert)]
        return _truncate_utf8("\n".join(lines), self.MAX_BYTES)

    def render(self, alert: Mapping[str, Any], now: float) -> tuple[str, dict[str, str], bytes]:
        payload = {"msgtype": "markdown", "markdown": {"content": self.markdown(alert)}}
        return self.url, dict(JSON_HEADERS), _json(payload)

    def _code(self, body: bytes) -> int | None:
        return _json_code(body, "errcode")


def _mrkdwn_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(kw_only=True)
class SlackSink(Sink):
    """Slack incoming webhook (Block Kit), optionally signed for a verifying receiver."""

    type: ClassVar[str] = "slack"
    extra_keys: ClassVar[frozenset[str]] = frozenset({"signing_secret"})

    signing_secret: str | None = field(default=None, repr=False)

    def payload(self, alert: Mapping[str, Any]) -> dict[str, Any]:
        summary = str(alert.get("summary", ""))
        rows = facts(alert)
        return {
            "text": f"{title(alert)}: {summary}",
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": title(alert)[:150], "emoji": True}},
                {"type": "section", "text": {"type": "plain_text", "text": summary[:3000], "emoji": True}},
                {
                    "type": "section",
                    "fields": [
                        {"type": "mrkdwn", "text": f"*{k}*\n{_mrkdwn_escape(v)}"} for k, v in rows[:-1]
                    ][:10],
                },
                {"type": "context", "elements": [{"type": "mrkdwn", "text": f"{rows[-1][0]}: `{_mrkdwn_escape(rows[-1][1])}`"}]},
            ],
        }

    def render(self, alert: Mapping[str, Any], now: float) -> tuple[str, dict[str, str], bytes]:
        body = _json(self.payload(alert))
        headers = dict(JSON_HEADERS)
        if self.signing_secret:
            ts = int(now)
            headers["X-Slack-Request-Timestamp"] = str(ts)
            headers["X-Slack-Signature"] = slack_signature(ts, body, self.signing_secret)
        return self.url, headers, body

    def _verdict_2xx(self, code: int | None, body: bytes) -> tuple[str, str]:
        return OK, "ok"  # Slack answers 200 "ok"; a relay may answer otherwise, any 2xx is accepted


SINK_TYPES: dict[str, type[Sink]] = {cls.type: cls for cls in (FeishuSink, DingTalkSink, WeComSink, SlackSink)}
COMMON_KEYS = frozenset({"type", "url", "name", "min_severity", "timeout", "tries"})
CHOICES = {"msg_type": ("interactive", "text"), "msgtype": ("markdown", "text")}


# --------------------------------------------------------------------------- configuration


def load_sinks(env_value: str | None, *, clock: Clock = time.time) -> list[Sink]:
    """The sinks of a ``SHOPWATCH_SINKS`` value; ``[]`` when it is unset or blank."""
    if env_value is None or not env_value.strip():
        return []
    try:
        raw = json.loads(env_value)
    except ValueError as exc:
        raise SinkConfigError(f"{SINKS_ENV} is not valid JSON: {exc}") from None
    if not isinstance(raw, list):
        raise SinkConfigError(f"{SINKS_ENV} must be a JSON list of sink objects, not {type(raw).__name__}")
    sinks: list[Sink] = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        sink = _load_one(f"{SINKS_ENV}[{i}]", item, clock)
        if sink.name in names:
            if isinstance(item, dict) and item.get("name"):
                raise SinkConfigError(f"{SINKS_ENV}[{i}]: duplicate name {sink.name!r}")
            n = 2
            while f"{sink.type}-{n}" in names:
                n += 1
            sink.name = f"{sink.type}-{n}"
        names.add(sink.name)
        sinks.append(sink)
    return sinks


def _load_one(where: str, item: Any, clock: Clock) -> Sink:
    if not isinstance(item, dict):
        raise SinkConfigError(f"{where} must be an object, not {type(item).__name__}")
    kind = item.get("type")
    cls = SINK_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise SinkConfigError(
            f"{where}: unknown sink type {kind!r}; known types: {', '.join(sorted(SINK_TYPES))}"
        )
    allowed = COMMON_KEYS | cls.extra_keys
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise SinkConfigError(
            f"{where} ({kind}): unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    url = item.get("url")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise SinkConfigError(f"{where} ({kind}): 'url' must be an http(s) URL")
    kwargs: dict[str, Any] = {"url": url, "clock": clock}
    if "name" in item:
        if not isinstance(item["name"], str) or not item["name"]:
            raise SinkConfigError(f"{where} ({kind}): 'name' must be a non-empty string")
        kwargs["name"] = item["name"]
    if "min_severity" in item:
        if item["min_severity"] not in SEVERITY_RANK:
            raise SinkConfigError(
                f"{where} ({kind}): 'min_severity' must be one of {', '.join(SEVERITY_RANK)}, "
                f"not {item['min_severity']!r}"
            )
        kwargs["min_severity"] = item["min_severity"]
    if "timeout" in item:
        t = item["timeout"]
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t <= 300:
            raise SinkConfigError(f"{where} ({kind}): 'timeout' must be a number of seconds in (0, 300]")
        kwargs["timeout"] = float(t)
    if "tries" in item:
        n = item["tries"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10:
            raise SinkConfigError(f"{where} ({kind}): 'tries' must be an integer from 1 to 10")
        kwargs["tries"] = n
    for key in cls.extra_keys:
        if key not in item or item[key] is None:
            continue
        value = item[key]
        if key in CHOICES:
            if value not in CHOICES[key]:
                raise SinkConfigError(f"{where} ({kind}): {key!r} must be one of {', '.join(CHOICES[key])}")
        elif not isinstance(value, str) or not value:
            raise SinkConfigError(f"{where} ({kind}): {key!r} must be a non-empty string")
        kwargs[key] = value
    return cls(**kwargs)


# --------------------------------------------------------------------------- dispatch


class SinkDispatcher:
    """Sends each alert to every sink concurrently, on one shared aiohttp session."""

    def __init__(self, sinks: Iterable[Sink], *, session: aiohttp.ClientSession | None = None) -> None:
        self.sinks = list(sinks)
        self._session = session
        self._own_session = session is None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SinkDispatcher:
        env = os.environ if environ is None else environ
        return cls(load_sinks(env.get(SINKS_ENV)))

    def __bool__(self) -> bool:
        return bool(self.sinks)

    async def dispatch(self, alert: Mapping[str, Any]) -> dict[str, bool]:
        """{sink name: delivered} for ``alert``; never raises (except cancellation)."""
        if not self.sinks:
            return {}
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        session = self._session
        results = await asyncio.gather(*(s.send(session, alert) for s in self.sinks), return_exceptions=True)
        out: dict[str, bool] = {}
        for sink, result in zip(self.sinks, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                log.error("sink %s: %r", sink.name, result)
                result = False
            out[sink.name] = bool(result)
        return out

    async def close(self) -> None:
        if self._session is not None and self._own_session and not self._session.closed:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> SinkDispatcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
