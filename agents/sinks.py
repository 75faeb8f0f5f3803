"""Chat sinks: alert changes to the ops chats (飞书/Lark, 钉钉, 企业微信, Slack).

A sink is one chat webhook. It renders a **digest** of a batch of alert
changes (shared/spec/events.md "Output: alerts") of one (platform, shop_id)
in its vendor's format (:meth:`Sink.render_batch`, pure), posts it once
(:meth:`Sink.post`) and says what the answer means (:class:`Outcome`). The
delivery loop (agents/delivery.py) decides what goes into a batch and when:
it reads the sink's routing, rate, grouping and quiet hours from the
attributes below. The content of a digest (headline with counts per kind,
criticals first, per kind lines, resolutions, "另有 N 条" past the size
limit, alert ids as `` `alert_id` `` code spans) is :mod:`shopwatch.streams.digest`;
a batch of one alert reads like a single-alert message (title, summary,
labelled facts, ``告警 ID``).

Configuration: ``SHOPWATCH_SINKS``, a JSON list of objects::

    [{"type": "feishu",   "url": "https://open.feishu.cn/open-apis/bot/v2/hook/…", "secret": "…"},
     {"type": "dingtalk", "url": "https://oapi.dingtalk.com/robot/send?access_token=…", "secret": "SEC…",
      "owners": {"s-17": {"mobiles": ["13800001111"]}}, "quiet_hours": "22:00-08:00"},
     {"type": "wecom",    "url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…",
      "routes": {"platforms": ["douyin"], "min_severity": "warning"}, "morning_summary": "09:00"},
     {"type": "slack",    "url": "https://hooks.slack.com/services/…", "signing_secret": "…"}]

Keys of every sink (unknown keys and bad values are :class:`SinkConfigError`,
whose message never echoes a secret, URL, mobile or user id):

- ``type`` and ``url`` (required); ``name`` (the ``sink`` label of metrics
  and logs; default the type, ``feishu-2`` … for a second sink of one type);
- ``min_severity``: ``info`` (default), ``warning`` or ``critical``; alerts
  below it are not the sink's;
- ``routes``: an object, or a list of objects of which any may match, with
  ``platforms`` (platform codes), ``shops`` (shop ids), ``kinds`` (alert
  kinds of rules.md §8), each a non-empty list any of whose values matches
  (absent: any), and ``min_severity``. :meth:`Sink.routes` (pure) is True
  when the alert is at least ``min_severity`` and some route matches (no
  ``routes``: every alert);
- ``owners``: ``{shop_id: {"mobiles": [...], "user_ids": [...]}}`` (``"*"``:
  every shop without an entry of its own; at most 20 of each):
  :meth:`Sink.mentions` gives the delivery loop whom a shop's digest
  mentions. How each vendor mentions: 钉钉 ``at.atMobiles`` /
  ``at.atUserIds`` and ``@13800001111`` / ``@userid`` in the text (as 钉钉
  requires for the mention to show); 企业微信 ``<@userid>`` in the markdown
  content — the mobiles are not used, since 企业微信's
  ``mentioned_mobile_list`` only works with ``msgtype`` text, whose 2,048
  bytes and lack of formatting do not carry a digest (give 企业微信 owners
  ``user_ids``); 飞书 ``<at id=…></at>`` in the card's ``lark_md`` (``<at
  user_id="…"></at>`` with ``msg_type`` text), user ids only (open_id or
  user_id); Slack ``<@U…>``, user ids only;
- ``quiet_hours``: ``"22:00-08:00"`` (Asia/Shanghai; may wrap midnight),
  parsed to :attr:`Sink.quiet_hours` = (start, end) minutes of the day; the
  delivery loop holds ``info`` and ``warning`` alerts in them;
- ``morning_summary``: ``"09:00"`` (Asia/Shanghai; absent or null: off, the
  default), parsed to :attr:`Sink.morning_summary` = the minute of the day
  (540). Once a day at that time the delivery loop posts one morning summary
  (早报) per (platform, shop) the sink routes: the alerts firing now and the
  shop's latest score snapshot against its platform's bars
  (:func:`shopwatch.streams.summary.build_summary`), laid out by
  :meth:`Sink.render_summary` (pure; signed like ``render_batch``; within
  ``body_limit``, the lines past it dropped from the end and counted as
  "……另有 N 行未列出"; the shop's ``owners`` mentioned as in its digests);
- ``rate`` (messages per minute) and ``burst`` (tokens) of the delivery
  loop's token bucket; the defaults keep ``burst + rate`` (the most a
  bucket lets through in any minute) within each bot's documented limit:
  钉钉 20/min (over it: 10 minutes of 130101) → 18/min, burst 2; 企业微信
  20/min → 18/min, burst 2; 飞书 100/min and 5/s → 90/min, burst 3
  (3 + 1.5 in any second); Slack 1/s with short bursts → 60/min, burst 3;
- ``group_wait`` (default 30 s) and ``group_interval`` (default 300 s), as
  Alertmanager's: a group's first digest waits ``group_wait`` after it became
  owed, the next ones ``group_interval`` after the previous;
- ``body_limit``: the vendor's size limit (may only be lowered):
  钉钉 20,000 bytes of request body (钉钉 limits the text to 20,000 bytes);
  企业微信 4,096 bytes of ``markdown.content``; 飞书 20,000 bytes of request
  body (the custom bot guide: "请求体大小不能超过 20K", else code 9499;
  the 30 KB card limit is the app API's); Slack 3,000 characters per section
  block (with at most 50 blocks, header 150 characters);
- ``throttle_retry_after``: seconds to wait after a vendor-code throttle
  (钉钉 600, the 10-minute penalty; 企业微信 45009 and 飞书 11232/9499: 60);
  an HTTP 429's ``Retry-After`` (飞书: ``x-ogw-ratelimit-reset``) always wins;
- ``retry_min`` (default 1 s) and ``retry_max`` (default 300 s): a failed post
  (5xx, timeout, connection refused) is tried again after ``retry_min``,
  doubling up to ``retry_max``, each wait jittered by ±25 %, for as long as it
  takes (an outage of hours included);
- ``timeout``: seconds per post (default 10);
- ``tries``: ignored since delivery retries until the chat accepts; kept so
  older configurations still load (an integer from 1 to 10, as before).

Per type: ``feishu`` ``secret`` (签名校验) and ``msg_type`` (``interactive``
(default, a card) or ``text``); ``dingtalk`` ``secret`` (加签, ``SEC…``) and
``msgtype`` (``markdown`` (default) or ``text``); ``wecom`` nothing more
(the key is in the URL); ``slack`` ``signing_secret`` (adds
``X-Slack-Request-Timestamp`` / ``X-Slack-Signature`` for a receiver, e.g. a
relay, that verifies them; Slack's own incoming webhooks ignore them).

Signatures, as each vendor documents them (computed from the ``now`` passed
to ``render_batch``, so each post is signed afresh):

- 飞书: body fields ``timestamp`` (seconds, as a string) and ``sign`` =
  base64(HMAC-SHA256(key = ``f"{timestamp}\\n{secret}"``, message = empty));
- 钉钉: query parameters ``timestamp`` (milliseconds) and ``sign`` =
  urlencode(base64(HMAC-SHA256(key = secret, message = ``f"{timestamp}\\n{secret}"``)));
- Slack: ``X-Slack-Signature: v0=`` + hex(HMAC-SHA256(key = signing secret,
  message = ``f"v0:{timestamp}:"`` + body)), ``X-Slack-Request-Timestamp``
  in seconds.

What an answer means (:meth:`Sink.classify`, pure; :meth:`Sink.post` makes
ONE try and never raises except on cancellation):

- ``ok``: 2xx and vendor code 0 (Slack: any 2xx);
- ``throttled``: HTTP 429 (``retry_after`` from ``Retry-After``, or 飞书's
  ``x-ogw-ratelimit-reset``; None when absent); 钉钉 errcode 130101 "send too
  fast" and 410100, or a 3xx (钉钉 redirects a bot in its penalty) →
  ``throttle_retry_after`` (600 s); 企业微信 45009 "api freq out of limit" →
  60 s; 飞书 11232 "frequency limited", 9499 "too many request" (an HTTP 400)
  and 99991400 → 60 s;
- ``retry``: 5xx, timeouts, connection errors, 企业微信/钉钉 errcode -1
  (system busy);
- ``reject``: any other 3xx/4xx or vendor code: it will not succeed as
  configured (钉钉 310000 sign / keyword / IP, 300001 token; 飞书 19021 sign,
  19022 IP, 19024 keyword, 9499 Bad Request; 企业微信 93000 bad key; Slack
  400/403/404/410).

Every post is counted in ``shopwatch_sink_deliveries_total{sink,outcome}``:
``delivered`` (ok), ``throttled``, ``retry`` or ``rejected``. Giving up is
never a post's decision: the delivery loop keeps a batch owed and posts it
again (see ``retry_min`` / ``retry_max``).
Webhook URLs carry credentials (access tokens, keys): they are never logged,
nor shown in a sink's repr.

Usage (what agents/delivery.py does, one task per sink)::

    sinks = load_sinks(os.environ.get("SHOPWATCH_SINKS"))
    if sink.routes(alert): ...                                        # is it this sink's?
    rendered = sink.render_digest(batch, now, sink.mentions(shop_id))  # Rendered(url, headers, body, listed, omitted)
    outcome = await sink.post(session, rendered.request)              # ONE try: Outcome(kind, detail, retry_after)
    request = sink.render_batch(batch, now, sink.mentions(shop_id))   # the same request, as (url, headers, body)
    summary = build_summary(platform, shop_id, firing, snapshot, rules, now)  # streams/summary.py
    request = sink.render_summary(summary, now, sink.mentions(shop_id))      # the 早报, at sink.morning_summary

``rendered.listed`` are the alert ids the digest shows: past the body limit
the rest are only counted ("另有 N 条") and stay owed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import quote_plus, urlsplit

import aiohttp
from prometheus_client import Counter
from yarl import URL

from shopwatch.streams import digest as dg
from shopwatch.streams import summary as sm
from shopwatch.streams.alerts import PLATFORM_NAMES
from shopwatch.streams.alerts import SEVERITY as KIND_SEVERITY

log = logging.getLogger(__name__)

SINKS_ENV = "SHOPWATCH_SINKS"

DELIVERIES = Counter(
    "shopwatch_sink_deliveries_total",
    "Posts to chat sinks, by sink and outcome (delivered, throttled, retry, rejected)",
    ["sink", "outcome"],
)

SEVERITY_RANK = dg.SEVERITY_RANK
SEVERITY_LABEL = dg.SEVERITY_LABEL
STATUS_LABEL = dg.STATUS_LABEL

# What a post's answer means.
OK, RETRY, THROTTLED, REJECT = "ok", "retry", "throttled", "reject"
OUTCOME_LABEL = {OK: "delivered", RETRY: "retry", THROTTLED: "throttled", REJECT: "rejected"}
MAX_RETRY_AFTER = 86400.0

Request = tuple[str, dict[str, str], bytes]


class SinkConfigError(ValueError):
    """SHOPWATCH_SINKS cannot be used as it is."""


# --------------------------------------------------------------------------- content helpers


title = dg.title
facts = dg.facts


def plain_text(alert: Mapping[str, Any]) -> str:
    """A single alert as plain text (title, summary, facts; the id in a code span)."""
    rows = facts(alert)
    lines = [title(alert), dg.truncate_utf8(str(alert.get("summary", "")), dg.SINGLE_SUMMARY_MAX_BYTES)]
    lines += [f"{k}：{v}" for k, v in rows[:-1]]
    lines.append(f"{rows[-1][0]}：`{rows[-1][1]}`{dg.id_suffix(alert)}")
    return "\n".join(lines)


def _json(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _redact(url: str) -> str:
    """``https://host/…``: what may be logged of a webhook URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(a malformed URL)"
    return f"{parts.scheme}://{parts.netloc}/…"


Content = dg.Digest | sm.Summary  # what a message lays out: a digest, or a morning summary


def _blocks(c: Content, markup: dg.Markup, shown: int, **kw: Any) -> list[str]:
    """The section blocks of a digest or a summary, its first ``shown`` lines."""
    return c.blocks(markup, shown, **kw) if isinstance(c, sm.Summary) else dg.blocks(c, markup, shown, **kw)


def _note(c: Content, shown: int) -> str | None:
    """"另有 N 单/条" (a digest) or "另有 N 行" (a summary) past ``shown``."""
    return c.omitted_note(shown) if isinstance(c, sm.Summary) else dg.omitted_note(c, shown)


def _text(c: Content, markup: dg.Markup, shown: int, mentions: str = "") -> str:
    return c.text(markup, shown, mentions=mentions) if isinstance(c, sm.Summary) else dg.text(
        c, markup, shown, mentions=mentions)


def _md_escape(text: str) -> str:
    """Text from an alert in 钉钉/企业微信 markdown and 飞书 lark_md: no tags (``<font>``,
    ``<at>``, ``<@…>``) can be forged, the angle brackets become full-width."""
    return text.replace("<", "＜").replace(">", "＞")


def _mrkdwn_escape(text: str) -> str:
    """Slack's three control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


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


def _json_obj(body: bytes) -> dict | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _int_field(data: Mapping[str, Any] | None, *keys: str) -> int | None:
    if data is None:
        return None
    for k in keys:
        v = data.get(k)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def _seconds(value: str | None) -> float | None:
    """A ``Retry-After`` (delta-seconds) value; None when absent or not a number."""
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(value))) if value else None
    except ValueError:
        return None


def _describe(exc: BaseException, url: str) -> str:
    text = str(exc).replace(url, _redact(url))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Outcome:
    """What one post's answer means: ``kind`` is ``ok``, ``retry`` (5xx, timeout,
    connection), ``throttled`` (wait ``retry_after`` seconds when given) or ``reject``
    (will not succeed as configured); ``detail`` is for logs (no credentials)."""

    kind: str
    detail: str = ""
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.kind == OK


@dataclass(frozen=True)
class Mentions:
    """Whom a digest mentions: mobiles (钉钉) and user ids (钉钉 userId, 企业微信
    userid, 飞书 open_id/user_id, Slack member id)."""

    mobiles: tuple[str, ...] = ()
    user_ids: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.mobiles or self.user_ids)

    @classmethod
    def of(cls, value: Any) -> Mentions:
        """A Mentions from None, a Mentions or a ``{"mobiles": …, "user_ids": …}`` mapping."""
        if value is None:
            return cls()
        if isinstance(value, Mentions):
            return value
        if isinstance(value, Mapping):
            return cls(tuple(str(x) for x in value.get("mobiles") or ()),
                       tuple(str(x) for x in value.get("user_ids") or ()))
        raise TypeError(f"mentions must be a Mentions or a mapping, not {type(value).__name__}")


@dataclass(frozen=True)
class Route:
    """One routing rule: every given condition must hold (a list: any of its values)."""

    platforms: frozenset[str] | None = None
    shops: frozenset[str] | None = None
    kinds: frozenset[str] | None = None
    min_severity: str = "info"

    def matches(self, alert: Mapping[str, Any]) -> bool:
        if self.platforms is not None and alert.get("platform") not in self.platforms:
            return False
        if self.shops is not None and alert.get("shop_id") not in self.shops:
            return False
        if self.kinds is not None and alert.get("kind") not in self.kinds:
            return False
        return SEVERITY_RANK[dg.severity_of(alert)] >= SEVERITY_RANK[self.min_severity]


@dataclass(frozen=True)
class Rendered:
    """A rendered digest: the request, the alert ids it lists (in order) and how
    many of the batch are only counted ("另有 N 条")."""

    url: str = field(repr=False)
    headers: dict[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    listed: tuple[str, ...] = ()
    omitted: int = 0

    @property
    def request(self) -> Request:
        return self.url, self.headers, self.body


TIME_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")


def parse_time_of_day(text: str) -> int:
    """``"09:00"`` -> 540: the minute of the day (Asia/Shanghai); ValueError when malformed."""
    m = TIME_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError("must be a time of day like 09:00 (HH:MM, Asia/Shanghai)")
    hours, minutes = int(m.group(1)), int(m.group(2))
    if hours > 23 or minutes > 59:
        raise ValueError("must be a time of day from 00:00 to 23:59")
    return hours * 60 + minutes


QUIET_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_quiet_hours(text: str) -> tuple[int, int]:
    """``"22:00-08:00"`` -> (1320, 480): start and end minutes of the day (Asia/Shanghai);
    the span may wrap midnight; ValueError when malformed or empty."""
    m = QUIET_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError("quiet hours must look like 22:00-08:00")
    h1, m1, h2, m2 = (int(x) for x in m.groups())
    if not (h1 < 24 and h2 < 24 and m1 < 60 and m2 < 60):
        raise ValueError("quiet hours must be times from 00:00 to 23:59")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise ValueError("quiet hours must not start and end at the same time")
    return start, end


# --------------------------------------------------------------------------- sinks


@dataclass(kw_only=True)
class Sink:
    """One chat webhook. Subclasses give the vendor's layout and answer codes."""

    type: ClassVar[str] = ""
    extra_keys: ClassVar[frozenset[str]] = frozenset()
    # Vendor codes (in a JSON answer) meaning "too fast: wait", "busy: try again".
    throttle_codes: ClassVar[frozenset[int]] = frozenset()
    retry_codes: ClassVar[frozenset[int]] = frozenset()
    MAX_BODY: ClassVar[int] = 20_000  # see body_limit
    MIN_BODY: ClassVar[int] = 1_000
    RATE: ClassVar[float] = 18.0  # messages per minute
    BURST: ClassVar[int] = 2
    THROTTLE_RETRY_AFTER: ClassVar[float] = 60.0

    url: str = field(repr=False)
    name: str = ""
    min_severity: str = "info"
    timeout: float = 10.0
    # for the delivery loop
    rate: float | None = None  # None: the vendor's default (RATE)
    burst: int | None = None
    body_limit: int | None = None
    group_wait: float = 30.0
    group_interval: float = 300.0
    route: tuple[Route, ...] = ()
    owners: Mapping[str, Mentions] = field(default_factory=dict, repr=False)
    quiet_hours: tuple[int, int] | None = None
    morning_summary: int | None = None  # minute of the day (Asia/Shanghai) of the 早报; None: off
    throttle_retry_after: float | None = None
    retry_min: float = 1.0
    retry_max: float = 300.0

    def __post_init__(self) -> None:
        if not self.name:
            self.name = self.type
        if self.rate is None:
            self.rate = self.RATE
        if self.burst is None:
            self.burst = self.BURST
        if self.body_limit is None:
            self.body_limit = self.MAX_BODY
        if self.throttle_retry_after is None:
            self.throttle_retry_after = self.THROTTLE_RETRY_AFTER
        if isinstance(self.quiet_hours, str):
            self.quiet_hours = parse_quiet_hours(self.quiet_hours)
        if isinstance(self.morning_summary, str):
            self.morning_summary = parse_time_of_day(self.morning_summary)
        self.route = tuple(self.route)
        self.owners = {k: Mentions.of(v) for k, v in dict(self.owners).items()}

    # -- routing (pure)

    def routes(self, alert: Mapping[str, Any]) -> bool:
        """Whether this sink takes ``alert``: at least ``min_severity`` and, with
        ``routes`` configured, matched by one of them."""
        if SEVERITY_RANK[dg.severity_of(alert)] < SEVERITY_RANK[self.min_severity]:
            return False
        return not self.route or any(r.matches(alert) for r in self.route)

    wants = routes  # the older name

    def mentions(self, shop_id: str) -> Mentions | None:
        """Whom a digest of ``shop_id`` mentions (``owners``; ``"*"`` for the others)."""
        m = self.owners.get(shop_id) or self.owners.get("*")
        return m if m else None

    def in_quiet_hours(self, minute_of_day: int) -> bool:
        """Whether a local (Asia/Shanghai) minute of the day is in the quiet hours."""
        if self.quiet_hours is None:
            return False
        start, end = self.quiet_hours
        return start <= minute_of_day < end if start < end else (minute_of_day >= start or minute_of_day < end)

    # -- rendering (pure)

    def render_digest(self, batch: Iterable[Mapping[str, Any]], now: float, mentions: Any = None, *,
                      shown: int | None = None) -> Rendered:
        """The digest of ``batch`` (one (platform, shop_id)), signed as of ``now``
        (epoch seconds), within ``body_limit``: the most lines that fit, or exactly
        ``shown`` lines when given (then the limit is not checked)."""
        d = dg.build(batch, now=now)
        m = Mentions.of(mentions)
        if shown is None:
            (url, headers, body, _), n = dg.render_within(
                len(d.items), lambda k: self._layout(d, now, m, k), lambda r: r[3])
        else:
            n = max(0, min(shown, len(d.items)))
            url, headers, body, _ = self._layout(d, now, m, n)
        return Rendered(url, headers, body, d.listed(n), len(d.items) - n)

    def render_batch(self, batch: Iterable[Mapping[str, Any]], now: float, mentions: Any = None) -> Request:
        """(url, headers, body) of the POST of ``batch``'s digest, signed as of ``now``."""
        return self.render_digest(batch, now, mentions).request

    def render_summary(self, summary: sm.Summary, now: float, mentions: Any = None) -> Request:
        """(url, headers, body) of the POST of a morning summary (:func:`shopwatch.streams.
        summary.build_summary`), signed as of ``now``, mentioning ``mentions`` (the shop's
        owners), within ``body_limit``: the lines that do not fit are dropped from the
        end and counted ("……另有 N 行未列出")."""
        m = Mentions.of(mentions)
        (url, headers, body, _), _n = dg.render_within(
            len(summary.lines), lambda k: self._layout(summary, now, m, k), lambda r: r[3])
        return url, headers, body

    def _layout(self, d: Content, now: float, m: Mentions, shown: int) -> tuple[str, dict[str, str], bytes, bool]:
        """(url, headers, body, within the limit) showing ``shown`` lines of ``d``."""
        raise NotImplementedError

    # -- answers (pure)

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
        """What an answer (HTTP status, headers, body) to a post means."""
        data = _json_obj(body)
        text = body[:300].decode("utf-8", "replace")
        if status == 429:
            return Outcome(THROTTLED, f"HTTP 429: {text}".rstrip(": "), self._retry_after(headers))
        vendor = self._vendor_outcome(status, headers, data, text)
        if vendor is not None:
            return vendor
        if status >= 500:
            return Outcome(RETRY, f"HTTP {status}", _seconds(headers.get("Retry-After")))
        if not 200 <= status < 300:
            return Outcome(REJECT, f"HTTP {status}: {text}")
        return self._verdict_2xx(data, text)

    def _retry_after(self, headers: Mapping[str, str]) -> float | None:
        return _seconds(headers.get("Retry-After"))

    def _code(self, data: Mapping[str, Any] | None) -> int | None:
        return None

    def _vendor_outcome(self, status: int, headers: Mapping[str, str], data: dict | None,
                        text: str) -> Outcome | None:
        code = self._code(data)
        if code is not None and code in self.throttle_codes:
            return Outcome(THROTTLED, f"HTTP {status}, code {code}: {text}", self.throttle_retry_after)
        if code is not None and code in self.retry_codes:
            return Outcome(RETRY, f"HTTP {status}, code {code}: {text}")
        return None

    def _verdict_2xx(self, data: dict | None, text: str) -> Outcome:
        if self._code(data) == 0:
            return Outcome(OK, "ok")
        return Outcome(REJECT, f"vendor error: {text}")

    # -- I/O

    async def post(self, session: aiohttp.ClientSession, request: Request) -> Outcome:
        """ONE try of ``request`` (from ``render_batch``); never raises except on cancellation."""
        url, headers, body = request
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            async with session.post(URL(url, encoded=True), data=body, headers=headers, timeout=timeout,
                                    allow_redirects=False) as resp:
                payload = await resp.read()
                outcome = self.classify(resp.status, resp.headers, payload)
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcome = Outcome(RETRY, _describe(exc, url))
        except Exception as exc:  # never raise: the delivery loop keeps the batch owed
            log.exception("sink %s: unexpected error posting to %s", self.name, _redact(url))
            outcome = Outcome(RETRY, f"unexpected {type(exc).__name__}")
        DELIVERIES.labels(self.name, OUTCOME_LABEL[outcome.kind]).inc()
        if outcome.kind == REJECT:
            log.warning("sink %s: %s rejected a post: %s", self.name, _redact(url), outcome.detail)
        elif outcome.kind != OK:
            log.info("sink %s: post %s: %s", self.name, outcome.kind, outcome.detail)
        return outcome


def _header_color(d: Content) -> str:
    return FeishuSink.TEMPLATES.get(d.severity, "green")  # resolved (a digest), ok (a summary)


MARKDOWN = dg.Markup(bullet="- ", bold="**", heading="### ", gap="\n\n", escape=_md_escape)
LARK_MD = dg.Markup(bullet="- ", bold="**", heading="", gap="\n", escape=_md_escape)


@dataclass(kw_only=True)
class FeishuSink(Sink):
    """飞书/Lark custom bot (自定义机器人) webhook."""

    type: ClassVar[str] = "feishu"
    extra_keys: ClassVar[frozenset[str]] = frozenset({"secret", "msg_type"})
    # 11232 "frequency limited", 99991400 "request trigger frequency limit"; 9499 only as "too many request"
    throttle_codes: ClassVar[frozenset[int]] = frozenset({11232, 99991400})
    MAX_BODY: ClassVar[int] = 20_000
    RATE: ClassVar[float] = 90.0
    BURST: ClassVar[int] = 3
    THROTTLE_RETRY_AFTER: ClassVar[float] = 60.0

    secret: str | None = field(default=None, repr=False)
    msg_type: str = "interactive"

    TEMPLATES: ClassVar[dict[str, str]] = {"critical": "red", "warning": "orange", "info": "blue"}

    def card(self, alert: Mapping[str, Any], m: Mentions | None = None) -> dict[str, Any]:
        """A single alert's card."""
        template = "green" if alert.get("status") == "resolved" else self.TEMPLATES[dg.severity_of(alert)]
        rows = facts(alert)
        fields = [{"is_short": True, "text": {"tag": "plain_text", "content": f"{k}：{v}"}} for k, v in rows[:-1]]
        fields.append({"is_short": False, "text": {"tag": "plain_text",
                                                   "content": f"{rows[-1][0]}：`{rows[-1][1]}`{dg.id_suffix(alert)}"}})
        summary = dg.truncate_utf8(str(alert.get("summary", "")), dg.SINGLE_SUMMARY_MAX_BYTES)
        elements: list[dict[str, Any]] = [
            {"tag": "div", "text": {"tag": "plain_text", "content": summary}},
            {"tag": "div", "fields": fields},
        ]
        if m:
            elements.append({"tag": "div", "text": {"tag": "lark_md", "content": self._at_card(m)}})
        return {
            "config": {"wide_screen_mode": True},
            "header": {"template": template, "title": {"tag": "plain_text", "content": title(alert)}},
            "elements": elements,
        }

    @staticmethod
    def _at_card(m: Mentions) -> str:
        return " ".join(f"<at id={u}></at>" for u in m.user_ids)

    @staticmethod
    def _at_text(m: Mentions) -> str:
        return " ".join(f'<at user_id="{u}"></at>' for u in m.user_ids)

    def digest_card(self, d: Content, m: Mentions, shown: int) -> dict[str, Any]:
        head = f"**{_md_escape(d.headline)}**"
        if m.user_ids:
            head += "\n" + self._at_card(m)
        elements: list[dict[str, Any]] = [{"tag": "div", "text": {"tag": "lark_md", "content": head}}]
        for block in _blocks(d, LARK_MD, shown):
            elements.append({"tag": "div", "text": {"tag": "lark_md", "content": block}})
        note = _note(d, shown)
        if note:
            elements.append({"tag": "note", "elements": [{"tag": "plain_text", "content": note}]})
        return {
            "config": {"wide_screen_mode": True},
            "header": {"template": _header_color(d), "title": {"tag": "plain_text", "content": d.title}},
            "elements": elements,
        }

    def _layout(self, d: Content, now: float, m: Mentions, shown: int) -> tuple[str, dict[str, str], bytes, bool]:
        payload: dict[str, Any] = {}
        if self.secret:
            ts = int(now)
            payload["timestamp"] = str(ts)
            payload["sign"] = feishu_sign(ts, self.secret)
        single = d.single if shown == 1 else None
        if self.msg_type == "text":
            payload["msg_type"] = "text"
            at = self._at_text(m)
            if single is not None:
                content = plain_text(single) + ("\n" + at if at else "")
            else:
                content = _text(d, dg.PLAIN, shown, mentions=at)
            payload["content"] = {"text": content}
        else:
            payload["msg_type"] = "interactive"
            payload["card"] = self.card(single, m) if single is not None else self.digest_card(d, m, shown)
        body = _json(payload)
        return self.url, dict(JSON_HEADERS), body, len(body) <= self.body_limit

    def _code(self, data: Mapping[str, Any] | None) -> int | None:
        return _int_field(data, "code", "StatusCode")

    def _retry_after(self, headers: Mapping[str, str]) -> float | None:
        seconds = _seconds(headers.get("Retry-After"))
        return seconds if seconds is not None else _seconds(headers.get("x-ogw-ratelimit-reset"))

    def _vendor_outcome(self, status: int, headers: Mapping[str, str], data: dict | None,
                        text: str) -> Outcome | None:
        code = self._code(data)
        too_many = code == 9499 and "too many" in str((data or {}).get("msg", "")).lower()
        if too_many or code in self.throttle_codes:
            wait = self._retry_after(headers)
            return Outcome(THROTTLED, f"HTTP {status}, code {code}: {text}",
                           wait if wait is not None else self.throttle_retry_after)
        return super()._vendor_outcome(status, headers, data, text)


@dataclass(kw_only=True)
class DingTalkSink(Sink):
    """钉钉 custom robot (自定义机器人) webhook."""

    type: ClassVar[str] = "dingtalk"
    extra_keys: ClassVar[frozenset[str]] = frozenset({"secret", "msgtype"})
    throttle_codes: ClassVar[frozenset[int]] = frozenset({130101, 410100})  # send too fast
    retry_codes: ClassVar[frozenset[int]] = frozenset({-1})  # system busy
    MAX_BODY: ClassVar[int] = 20_000
    RATE: ClassVar[float] = 18.0
    BURST: ClassVar[int] = 2
    THROTTLE_RETRY_AFTER: ClassVar[float] = 600.0  # over 20/min: 10 minutes of refusals

    secret: str | None = field(default=None, repr=False)
    msgtype: str = "markdown"

    def markdown(self, alert: Mapping[str, Any]) -> str:
        """A single alert's markdown (without mentions)."""
        rows = facts(alert)
        summary = dg.truncate_utf8(str(alert.get("summary", "")), dg.SINGLE_SUMMARY_MAX_BYTES)
        lines = [f"### {title(alert)}", "", f"**{_md_escape(summary)}**", ""]
        lines += [f"- {k}：{_md_escape(v)}" for k, v in rows[:-1]]
        lines.append(f"- {rows[-1][0]}：`{rows[-1][1]}`{dg.id_suffix(alert)}")
        return "\n".join(lines)

    def _layout(self, d: Content, now: float, m: Mentions, shown: int) -> tuple[str, dict[str, str], bytes, bool]:
        url = self.url
        if self.secret:
            ts_ms = int(now * 1000)
            sep = "&" if "?" in url else "?"
            url = f"{url}{sep}timestamp={ts_ms}&sign={quote_plus(dingtalk_sign(ts_ms, self.secret))}"
        at = " ".join(f"@{x}" for x in (*m.mobiles, *m.user_ids))  # 钉钉 shows a mention only if in the text
        single = d.single if shown == 1 else None
        if self.msgtype == "text":
            if single is not None:
                content = plain_text(single) + ("\n" + at if at else "")
            else:
                content = _text(d, dg.PLAIN, shown, mentions=at)
            payload: dict[str, Any] = {"msgtype": "text", "text": {"content": content}}
        else:
            if single is not None:
                text, head = self.markdown(single) + ("\n\n" + at if at else ""), title(single)
            else:
                text, head = _text(d, MARKDOWN, shown, mentions=at), d.title
            payload = {"msgtype": "markdown", "markdown": {"title": head, "text": text}}
        if m:
            payload["at"] = {"atMobiles": list(m.mobiles), "atUserIds": list(m.user_ids), "isAtAll": False}
        body = _json(payload)
        return url, dict(JSON_HEADERS), body, len(body) <= self.body_limit

    def _code(self, data: Mapping[str, Any] | None) -> int | None:
        return _int_field(data, "errcode")

    def _vendor_outcome(self, status: int, headers: Mapping[str, str], data: dict | None,
                        text: str) -> Outcome | None:
        if 300 <= status < 400:  # 钉钉 redirects a robot in its throttling penalty
            return Outcome(THROTTLED, f"HTTP {status} (throttling penalty)", self.throttle_retry_after)
        return super()._vendor_outcome(status, headers, data, text)


@dataclass(kw_only=True)
class WeComSink(Sink):
    """企业微信 group robot (群机器人) webhook; the key is in the URL, there is no signature.

    Markdown (``msgtype`` markdown): owners are mentioned as ``<@userid>`` in the
    content; their mobiles are not used (``mentioned_mobile_list`` is for msgtype
    text only)."""

    type: ClassVar[str] = "wecom"
    throttle_codes: ClassVar[frozenset[int]] = frozenset({45009})  # api freq out of limit
    retry_codes: ClassVar[frozenset[int]] = frozenset({-1})  # system busy
    MAX_BODY: ClassVar[int] = 4096  # markdown.content, UTF-8 bytes
    MIN_BODY: ClassVar[int] = 1_000
    RATE: ClassVar[float] = 18.0
    BURST: ClassVar[int] = 2
    THROTTLE_RETRY_AFTER: ClassVar[float] = 60.0

    MAX_BYTES: ClassVar[int] = 4096

    WECOM_MD: ClassVar[dg.Markup] = dg.Markup(bullet="- ", bold="**", heading="", gap="\n\n", escape=_md_escape)

    def markdown(self, alert: Mapping[str, Any]) -> str:
        """A single alert's markdown content (without mentions)."""
        rows = facts(alert)
        summary = dg.truncate_utf8(str(alert.get("summary", "")), dg.SINGLE_SUMMARY_MAX_BYTES)
        lines = [f"### {title(alert)}", f"**{_md_escape(summary)}**"]
        lines += [f"> {k}：<font color=\"comment\">{_md_escape(v)}</font>" for k, v in rows[:-1]]
        lines.append(f"> {rows[-1][0]}：`{rows[-1][1]}`{dg.id_suffix(alert)}")
        return "\n".join(lines)

    def content(self, d: Content, m: Mentions, shown: int) -> str:
        at = " ".join(f"<@{u}>" for u in m.user_ids)
        single = d.single if shown == 1 else None
        if single is not None:
            return self.markdown(single) + ("\n" + at if at else "")
        return _text(d, self.WECOM_MD, shown, mentions=at)

    def _layout(self, d: Content, now: float, m: Mentions, shown: int) -> tuple[str, dict[str, str], bytes, bool]:
        content = self.content(d, m, shown)
        payload = {"msgtype": "markdown", "markdown": {"content": content}}
        return self.url, dict(JSON_HEADERS), _json(payload), len(content.encode("utf-8")) <= self.body_limit

    def _code(self, data: Mapping[str, Any] | None) -> int | None:
        return _int_field(data, "errcode")


@dataclass(kw_only=True)
class SlackSink(Sink):
    """Slack incoming webhook (Block Kit), optionally signed for a verifying receiver.

    ``body_limit`` is per section block (characters); a digest has at most
    ``MAX_BLOCKS`` blocks."""

    type: ClassVar[str] = "slack"
    extra_keys: ClassVar[frozenset[str]] = frozenset({"signing_secret"})
    MAX_BODY: ClassVar[int] = 3000  # characters of one section block's text
    MIN_BODY: ClassVar[int] = 500
    MAX_BLOCKS: ClassVar[int] = 50
    HEADER_MAX: ClassVar[int] = 150
    RATE: ClassVar[float] = 60.0
    BURST: ClassVar[int] = 3
    THROTTLE_RETRY_AFTER: ClassVar[float] = 60.0

    signing_secret: str | None = field(default=None, repr=False)

    MRKDWN: ClassVar[dg.Markup] = dg.Markup(bullet="• ", bold="*", heading="", gap="\n\n", escape=_mrkdwn_escape,
                                            code=lambda s: f"`{_mrkdwn_escape(s)}`")

    @staticmethod
    def _at(m: Mentions) -> str:
        return " ".join(f"<@{u}>" for u in m.user_ids)

    def payload(self, alert: Mapping[str, Any], m: Mentions | None = None) -> dict[str, Any]:
        """A single alert's message."""
        summary = dg.truncate_utf8(str(alert.get("summary", "")), dg.SINGLE_SUMMARY_MAX_BYTES)
        rows = facts(alert)
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": title(alert)[: self.HEADER_MAX], "emoji": True}},
            {"type": "section", "text": {"type": "plain_text", "text": summary[: self.body_limit], "emoji": True}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{k}*\n{_mrkdwn_escape(v)}"[:2000]} for k, v in rows[:-1]
                ][:10],
            },
            {"type": "context", "elements": [
                {"type": "mrkdwn",
                 "text": f"{rows[-1][0]}: `{_mrkdwn_escape(rows[-1][1])}`{dg.id_suffix(alert)}"}]},
        ]
        if m and m.user_ids:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": self._at(m)[: self.body_limit]}})
        return {"text": f"{title(alert)}: {summary}"[:3000], "blocks": blocks}

    def digest_payload(self, d: Content, m: Mentions, shown: int) -> dict[str, Any]:
        head = f"*{_mrkdwn_escape(d.headline)}*"
        at = self._at(m)
        if at:
            head += "\n" + at
        limit = self.body_limit
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": d.title[: self.HEADER_MAX], "emoji": True}},
            {"type": "section", "text": {"type": "mrkdwn", "text": head[:limit]}},
        ]
        for chunk in _blocks(d, self.MRKDWN, shown, max_len=limit):
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": chunk}})
        note = _note(d, shown)
        if note:
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note}]})
        return {"text": d.headline[:3000], "blocks": blocks}

    def _layout(self, d: Content, now: float, m: Mentions, shown: int) -> tuple[str, dict[str, str], bytes, bool]:
        single = d.single if shown == 1 else None
        payload = self.payload(single, m) if single is not None else self.digest_payload(d, m, shown)
        body = _json(payload)
        headers = dict(JSON_HEADERS)
        if self.signing_secret:
            ts = int(now)
            headers["X-Slack-Request-Timestamp"] = str(ts)
            headers["X-Slack-Signature"] = slack_signature(ts, body, self.signing_secret)
        fits = len(payload["blocks"]) <= self.MAX_BLOCKS and all(
            len(b["text"]["text"]) <= self.body_limit for b in payload["blocks"]
            if b["type"] == "section" and "text" in b)
        return self.url, headers, body, fits

    def _verdict_2xx(self, data: dict | None, text: str) -> Outcome:
        return Outcome(OK, "ok")  # Slack answers 200 "ok"; a relay may answer otherwise, any 2xx is accepted


SINK_TYPES: dict[str, type[Sink]] = {cls.type: cls for cls in (FeishuSink, DingTalkSink, WeComSink, SlackSink)}
COMMON_KEYS = frozenset({"type", "url", "name", "min_severity", "timeout", "tries", "rate", "burst", "body_limit",
                         "group_wait", "group_interval", "routes", "owners", "quiet_hours", "morning_summary",
                         "throttle_retry_after", "retry_min", "retry_max"})
CHOICES = {"msg_type": ("interactive", "text"), "msgtype": ("markdown", "text")}
ROUTE_KEYS = ("platforms", "shops", "kinds", "min_severity")
OWNER_KEYS = ("mobiles", "user_ids")
MAX_MENTIONS = 20
MOBILE_RE = re.compile(r"^\+?[0-9][0-9-]{4,19}$")
USER_ID_RE = re.compile(r"^[A-Za-z0-9_.@:+=/-]{1,64}$")


# --------------------------------------------------------------------------- configuration


def load_sinks(env_value: str | None) -> list[Sink]:
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
        sink = _load_one(f"{SINKS_ENV}[{i}]", item)
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


def _number(value: Any, lo: float, hi: float, *, lo_open: bool = False) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value != value or (value <= lo if lo_open else value < lo) or value > hi:
        return None
    return float(value)


def _integer(value: Any, lo: int, hi: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        return None
    return value


def _string_list(where: str, key: str, value: Any, allowed: Iterable[str] | None = None) -> frozenset[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise SinkConfigError(f"{where}: {key!r} must be a non-empty list of non-empty strings")
    if allowed is not None:
        allowed = set(allowed)
        bad = sorted({v for v in value if v not in allowed})
        if bad:
            raise SinkConfigError(f"{where}: {key!r} has unknown value(s) {', '.join(map(repr, bad))}; "
                                  f"known: {', '.join(sorted(allowed))}")
    return frozenset(value)


def _load_route(where: str, item: Any) -> Route:
    if not isinstance(item, dict):
        raise SinkConfigError(f"{where} must be an object with {', '.join(ROUTE_KEYS)}")
    unknown = sorted(set(item) - set(ROUTE_KEYS))
    if unknown:
        raise SinkConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(ROUTE_KEYS)}")
    kwargs: dict[str, Any] = {}
    if "platforms" in item:
        kwargs["platforms"] = _string_list(where, "platforms", item["platforms"], PLATFORM_NAMES)
    if "shops" in item:
        kwargs["shops"] = _string_list(where, "shops", item["shops"])
    if "kinds" in item:
        kwargs["kinds"] = _string_list(where, "kinds", item["kinds"], KIND_SEVERITY)
    if "min_severity" in item:
        if item["min_severity"] not in SEVERITY_RANK:
            raise SinkConfigError(f"{where}: 'min_severity' must be one of {', '.join(SEVERITY_RANK)}")
        kwargs["min_severity"] = item["min_severity"]
    return Route(**kwargs)


def _load_routes(where: str, value: Any) -> tuple[Route, ...]:
    if isinstance(value, dict):
        return (_load_route(f"{where}.routes", value),)
    if isinstance(value, list) and value:
        return tuple(_load_route(f"{where}.routes[{i}]", r) for i, r in enumerate(value))
    raise SinkConfigError(f"{where}: 'routes' must be an object or a non-empty list of objects")


def _load_owners(where: str, value: Any) -> dict[str, Mentions]:
    if not isinstance(value, dict):
        raise SinkConfigError(f"{where}: 'owners' must be an object {{shop_id: {{\"mobiles\": [...], "
                              f"\"user_ids\": [...]}}}}")
    out: dict[str, Mentions] = {}
    for n, (shop, entry) in enumerate(value.items()):
        at = f"{where}: owners entry {n + 1}"  # shop ids are not secret, but mobiles are personal: no values
        if not shop:
            raise SinkConfigError(f"{at}: the shop id must be a non-empty string")
        if not isinstance(entry, dict):
            raise SinkConfigError(f"{at} ({shop!r}) must be an object with mobiles and/or user_ids")
        unknown = sorted(set(entry) - set(OWNER_KEYS))
        if unknown:
            raise SinkConfigError(f"{at} ({shop!r}): unknown key(s) {', '.join(unknown)}; "
                                  f"allowed: {', '.join(OWNER_KEYS)}")
        lists: dict[str, tuple[str, ...]] = {}
        for key, pattern, what in (("mobiles", MOBILE_RE, "a phone number (digits, optional + and -)"),
                                   ("user_ids", USER_ID_RE, "a user id (1-64 letters, digits, _.@:+=/-)")):
            items = entry.get(key, [])
            if not isinstance(items, list) or len(items) > MAX_MENTIONS:
                raise SinkConfigError(f"{at} ({shop!r}): {key!r} must be a list of at most {MAX_MENTIONS}")
            for j, x in enumerate(items):
                if not isinstance(x, str) or not pattern.match(x):
                    raise SinkConfigError(f"{at} ({shop!r}): {key}[{j}] must be {what}")
            lists[key] = tuple(items)
        m = Mentions(lists["mobiles"], lists["user_ids"])
        if not m:
            raise SinkConfigError(f"{at} ({shop!r}): give at least one of mobiles, user_ids")
        out[shop] = m
    return out


def _load_one(where: str, item: Any) -> Sink:
    if not isinstance(item, dict):
        raise SinkConfigError(f"{where} must be an object, not {type(item).__name__}")
    kind = item.get("type")
    if kind == "alertmanager":
        from shopwatch.agents.alertmanager import AlertmanagerSink  # it imports this module

        return AlertmanagerSink.from_config(item, where)
    cls = SINK_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise SinkConfigError(
            f"{where}: unknown sink type {kind!r}; known types: {', '.join(sorted([*SINK_TYPES, 'alertmanager']))}"
        )
    where = f"{where} ({kind})"
    allowed = COMMON_KEYS | cls.extra_keys
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise SinkConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    url = item.get("url")
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise SinkConfigError(f"{where}: 'url' must be an http(s) URL")
    kwargs: dict[str, Any] = {"url": url}
    if "name" in item:
        if not isinstance(item["name"], str) or not item["name"]:
            raise SinkConfigError(f"{where}: 'name' must be a non-empty string")
        kwargs["name"] = item["name"]
    if "min_severity" in item:
        if item["min_severity"] not in SEVERITY_RANK:
            raise SinkConfigError(
                f"{where}: 'min_severity' must be one of {', '.join(SEVERITY_RANK)}, not {item['min_severity']!r}"
            )
        kwargs["min_severity"] = item["min_severity"]
    numbers = {  # key: (parse, message)
        "timeout": (lambda v: _number(v, 0, 300, lo_open=True), "a number of seconds in (0, 300]"),
        "tries": (lambda v: _integer(v, 1, 10), "an integer from 1 to 10"),  # checked, then ignored
        "rate": (lambda v: _number(v, 0, 6000, lo_open=True), "a number of messages per minute in (0, 6000]"),
        "burst": (lambda v: _integer(v, 1, 100), "an integer from 1 to 100"),
        "body_limit": (lambda v: _integer(v, cls.MIN_BODY, cls.MAX_BODY),
                       f"an integer from {cls.MIN_BODY} to {cls.MAX_BODY} (the vendor's limit)"),
        "group_wait": (lambda v: _number(v, 0, 86400), "a number of seconds from 0 to 86400"),
        "group_interval": (lambda v: _number(v, 0, 86400, lo_open=True), "a number of seconds in (0, 86400]"),
        "throttle_retry_after": (lambda v: _number(v, 0, 86400), "a number of seconds from 0 to 86400"),
        "retry_min": (lambda v: _number(v, 0, 3600, lo_open=True), "a number of seconds in (0, 3600]"),
        "retry_max": (lambda v: _number(v, 0, 86400, lo_open=True), "a number of seconds in (0, 86400]"),
    }
    for key, (parse, what) in numbers.items():
        if key in item:
            value = parse(item[key])
            if value is None:
                raise SinkConfigError(f"{where}: {key!r} must be {what}")
            if key != "tries":  # ignored since delivery retries until the chat accepts
                kwargs[key] = value
    if "routes" in item:
        kwargs["route"] = _load_routes(where, item["routes"])
    if "owners" in item:
        kwargs["owners"] = _load_owners(where, item["owners"])
    for key, parse in (("quiet_hours", parse_quiet_hours), ("morning_summary", parse_time_of_day)):
        if item.get(key) is not None:  # null: off, the default
            try:
                kwargs[key] = parse(item[key])
            except ValueError as exc:
                raise SinkConfigError(f"{where}: {key!r}: {exc}") from None
    for key in cls.extra_keys:
        if key not in item or item[key] is None:
            continue
        value = item[key]
        if key in CHOICES:
            if value not in CHOICES[key]:
                raise SinkConfigError(f"{where}: {key!r} must be one of {', '.join(CHOICES[key])}")
        elif not isinstance(value, str) or not value:
            raise SinkConfigError(f"{where}: {key!r} must be a non-empty string")
        kwargs[key] = value
    return cls(**kwargs)


__all__ = [
    "DELIVERIES", "OK", "REJECT", "RETRY", "SINKS_ENV", "THROTTLED", "DingTalkSink", "FeishuSink", "Mentions",
    "Outcome", "Rendered", "Route", "Sink", "SinkConfigError", "SlackSink", "WeComSink",
    "dingtalk_sign", "facts", "feishu_sign", "load_sinks", "parse_quiet_hours", "parse_time_of_day", "plain_text",
    "slack_signature",
    "title",
]
