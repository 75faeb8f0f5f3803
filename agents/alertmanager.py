"""Alertmanager sink: alert changes to a Prometheus Alertmanager (API v2).

Each alert of shared/spec/events.md "Output: alerts" becomes one Alertmanager
alert, POSTed in batches to ``{url}/api/v2/alerts`` (a JSON list)::

    {"labels":      {"alertname": kind, "platform": …, "shop_id": …, "severity": …,
                     "alert_id": alert_id},
     "annotations": {"summary": the Chinese summary, "description": 平台/店铺/订单/… lines,
                     "alert_id": …, "order_id": …, "refund_id": …, "session_id": …,
                     "at": …, "due_at": …, "details": compact JSON of details (when not empty)},
     "startsAt": …, "endsAt": …, "generatorURL": …}

Configuration (an object of ``SHOPWATCH_SINKS``, see :mod:`shopwatch.agents.sinks`)::

    {"type": "alertmanager", "url": "http://alertmanager:9093",
     "generator_url": "http://shopwatch-worker:6066", "resend": 60}

Keys: ``type`` (``alertmanager``) and ``url`` (required: the Alertmanager
base URL, with its ``--web.route-prefix`` path if it has one, without
``/api/v2/alerts``, credentials, query or fragment); ``name`` (the ``sink``
label of the metrics and logs; default ``alertmanager``); ``generator_url``
(a base URL, usually a worker's ``http://host:6066``: ``generatorURL`` is
``{base}/orders/{order_id}`` for an alert with an order, else
``{base}/alerts?shop_id={shop_id}``; without it there is no
``generatorURL``); ``resend`` (seconds, default 60, from 1 to 3600: how often
the delivery loop re-sends the firing alerts, see :meth:`resend_batch`);
``timeout`` (seconds per POST, default 10); ``min_severity`` (``info``
(default), ``warning`` or ``critical``: alerts below it are left out);
``username`` and ``password`` (HTTP basic auth, both or neither) or
``bearer_token`` (``Authorization: Bearer …``). Unknown keys and bad values
are :class:`~shopwatch.agents.sinks.SinkConfigError`. Credentials are never
logged nor shown in a sink's repr.

Labels, and why ``alert_id`` is one
-----------------------------------

Alertmanager identifies an alert by its label set (the fingerprint). With
only ``alertname``, ``platform``, ``shop_id`` and ``severity``, two overdue
orders of one shop would be *one* Alertmanager alert: the second firing
would merge into the first and the first order's resolve would resolve
both. So the labels carry the alert's own identity, ``alert_id``
(``{kind}:{platform}:{subject}[:{n}]``): it is deterministic, the same in the
firing, every re-send and the resolve, which is exactly what Alertmanager
needs to match them; and it tells apart two instances of a kind that fires
more than once for one order (``transit_timeout:…:2``), which an
``order_id`` label would not.

``order_id`` (and ``refund_id``, ``session_id``, ``due_at``) are
annotations, as the issue asks: they are not part of the identity, routing
or grouping interface. ``alert_id`` does contain the subject (order, refund
or ``shop:day``) and so is high-cardinality; that is accepted because (1)
the number of Alertmanager alerts is the number of open shopwatch alerts
under *any* label set that keeps them apart, so no other choice is cheaper
short of merging orders into one alert, which would lose per-order
resolves; (2) Alertmanager keeps no time series: a resolved alert is
dropped at its next alert GC (``--alerts.gc-interval``, 30 m); (3) notifications are
still grouped per shop: route on ``severity`` / ``alertname`` /
``platform`` / ``shop_id`` and ``group_by: [platform, shop_id]`` (see
deploy/alertmanager.yml), never on ``alert_id``. A hash of ``alert_id``
would have the same cardinality and be useless in a silence, so the
readable id is used; silence one alert with ``alert_id="…"``. Consequence
of keeping orders out of the labels: an inhibition cannot be scoped to one
order (e.g. ``ship_overdue`` inhibiting the same order's ``ship_warning``),
only to a shop.

Times
-----

``startsAt`` is the alert's ``at`` (event time) when firing; for a resolve,
the firing time when known (a ``fired_at`` key the delivery loop may add)
else ``at``. A resolve's ``endsAt`` is its ``at``, but never later than
``now``: a later ``endsAt`` (an event clock ahead of the wall clock) would
keep it active in Alertmanager until then. A firing alert's ``endsAt`` is
``max(now, startsAt) + 4 × resend``, as Prometheus does (``now + 4 ×
max(resend delay, evaluation interval)``): three lost re-sends do not
flap it, an Alertmanager restart (it keeps no alerts on disk) gets it back
at the next re-send, and if
shopwatch stops re-sending it (worker gone, sink removed) the alert
resolves by itself after ``4 × resend`` instead of firing forever in
Alertmanager (the workers' own death is alerted by deploy/alert-rules.yml).
Leaving ``endsAt`` out would tie that to Alertmanager's global
``resolve_timeout`` (5 m by default), which would flap every alert if it
were set below ``resend``. A resolved alert whose firing was never
delivered (``"folded": True``) is sent all the same: a firing may have
reached Alertmanager on a try that timed out, and Alertmanager does not
notify a resolve whose firing it did not notify (checked with a webhook
receiver). Times are sent in UTC.

Calls
-----

The delivery loop (agents/delivery.py) is told ``group_wait`` = ``group_interval``
= 0: it posts each change at once, since Alertmanager does the grouping.
``render_batch(batch, now)`` and ``resend_batch(open_alerts, now)`` are pure
(``now`` is epoch seconds, passed in) and give ``(url, headers, body)``; a
batch left empty by ``min_severity`` renders ``[]``, which Alertmanager
accepts as a no-op. ``await post(session, request)`` makes one try and
returns an :class:`Outcome`; it never raises (except cancellation):

- ``ok``: 2xx;
- ``retry``: 5xx, 408, timeouts, connection errors (``retry_after`` from a
  ``Retry-After`` header when there is one);
- ``throttled``: 429 (``retry_after`` from ``Retry-After``, seconds or an
  HTTP date; ``None`` without it);
- ``reject``: 3xx and other 4xx. Alertmanager answers 400 to a batch with an
  invalid alert *after* storing the valid ones, with the first error as the
  body (kept in ``detail``); :meth:`render_batch` only renders alerts it
  accepts (labels present, ``startsAt`` ≤ ``endsAt``).

Each try counts its alerts in ``shopwatch_sink_deliveries_total{sink,outcome}``
(the chat sinks' counter) with outcome ``delivered`` (ok), ``rejected``
(reject: deploy/alert-rules.yml alerts on it), ``retry`` or ``throttled``;
giving up is the delivery loop's decision and count.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import aiohttp

from shopwatch.agents.sinks import DELIVERIES, SinkConfigError
from shopwatch.streams.alerts import PLATFORM_NAMES

log = logging.getLogger(__name__)

SEVERITIES = ("info", "warning", "critical")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
ENDS_AFTER_RESENDS = 4  # a firing alert's endsAt: now + 4 × resend
API_PATH = "/api/v2/alerts"
SHANGHAI = timezone(timedelta(hours=8))  # event times without an offset are Asia/Shanghai

# Outcome kind -> the ``outcome`` label of shopwatch_sink_deliveries_total.
COUNTED = {"ok": "delivered", "reject": "rejected", "retry": "retry", "throttled": "throttled"}

Request = tuple[str, dict[str, str], bytes]


@dataclass
class Outcome:
    """What one POST came to: ``ok``, ``retry``, ``throttled`` or ``reject``."""

    kind: str
    detail: str
    retry_after: float | None


# --------------------------------------------------------------------------- helpers


def _ts(value: Any) -> datetime | None:
    """An aware datetime of an RFC 3339 string, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=SHANGHAI)


def _rfc3339(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _severity(alert: Mapping[str, Any]) -> str:
    sev = alert.get("severity")
    return sev if sev in SEVERITY_RANK else "info"


def description(alert: Mapping[str, Any]) -> str:
    """The alert's facts, one ``标签：值`` per line (the ``description`` annotation)."""
    platform = str(alert.get("platform") or "")
    rows = [("平台", f"{PLATFORM_NAMES[platform]} ({platform})" if platform in PLATFORM_NAMES else platform),
            ("店铺", str(alert.get("shop_id") or ""))]
    for key, label in (("order_id", "订单"), ("refund_id", "售后单"), ("session_id", "会话")):
        if alert.get(key):
            rows.append((label, str(alert[key])))
    if alert.get("at"):
        rows.append(("恢复时间" if alert.get("status") == "resolved" else "发生时间", str(alert["at"])))
    if alert.get("due_at"):
        rows.append(("截止时间", str(alert["due_at"])))
    rows.append(("告警 ID", str(alert.get("alert_id") or "")))
    return "\n".join(f"{k}：{v}" for k, v in rows)


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds of a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _count(body: bytes) -> int:
    try:
        data = json.loads(body)
    except ValueError:
        return 1
    return len(data) if isinstance(data, list) else 1


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _http_url(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise SinkConfigError(f"{where}: {key!r} must be an http(s) URL string")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SinkConfigError(f"{where}: {key!r} must be an http(s) URL, e.g. http://127.0.0.1:9093")
    if parts.username is not None or parts.password is not None:
        raise SinkConfigError(f"{where}: {key!r} must not carry credentials; use 'username'/'password' "
                              "or 'bearer_token'")
    if parts.query or parts.fragment:
        raise SinkConfigError(f"{where}: {key!r} must be a base URL, without query or fragment")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise SinkConfigError(f"{where}: {key!r} has an invalid port") from None
    return value.rstrip("/")


# --------------------------------------------------------------------------- the sink


@dataclass(kw_only=True)
class AlertmanagerSink:
    """One Alertmanager (or an HA pair's load balancer): API v2 ``POST /api/v2/alerts``."""

    type: ClassVar[str] = "alertmanager"
    KEYS: ClassVar[frozenset[str]] = frozenset({
        "type", "name", "url", "generator_url", "resend", "timeout", "min_severity",
        "username", "password", "bearer_token",
    })
    # The delivery loop's digest timing (agents/delivery.py): none, every change is posted at once;
    # Alertmanager groups (group_wait, group_interval) and throttles the notifications itself.
    group_wait: ClassVar[float] = 0.0
    group_interval: ClassVar[float] = 0.0

    url: str = field(repr=False)
    name: str = ""
    generator_url: str | None = None
    resend: float = 60.0
    timeout: float = 10.0
    min_severity: str = "info"
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.name:
            self.name = self.type
        self.url = self.url.rstrip("/")
        if self.generator_url:
            self.generator_url = self.generator_url.rstrip("/")

    # -- pure parts

    @property
    def endpoint(self) -> str:
        return self.url + API_PATH

    @property
    def where(self) -> str:
        """What may be logged of the endpoint: scheme, host, port and path."""
        parts = urlsplit(self.endpoint)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"

    def headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.bearer_token:
            h["Authorization"] = f"Bearer {self.bearer_token}"
        elif self.username is not None:
            user_pass = f"{self.username}:{self.password or ''}".encode()
            h["Authorization"] = "Basic " + base64.b64encode(user_pass).decode("ascii")
        return h

    def wants(self, alert: Mapping[str, Any]) -> bool:
        return SEVERITY_RANK[_severity(alert)] >= SEVERITY_RANK[self.min_severity]

    def generator(self, alert: Mapping[str, Any]) -> str | None:
        if not self.generator_url:
            return None
        if alert.get("order_id"):
            return f"{self.generator_url}/orders/{quote(str(alert['order_id']), safe='')}"
        if alert.get("shop_id"):
            return f"{self.generator_url}/alerts?shop_id={quote(str(alert['shop_id']), safe='')}"
        return f"{self.generator_url}/alerts"

    def am_alert(self, alert: Mapping[str, Any], now: float) -> dict[str, Any]:
        """The Alertmanager alert (postable alert of API v2) of one shopwatch alert, as of ``now``."""
        now_dt = datetime.fromtimestamp(now, UTC)
        labels = {
            "alertname": str(alert.get("kind") or "shopwatch"),
            "platform": str(alert.get("platform") or ""),
            "shop_id": str(alert.get("shop_id") or ""),
            "severity": _severity(alert),
            "alert_id": str(alert.get("alert_id") or ""),
        }
        annotations = {
            "summary": str(alert.get("summary") or ""),
            "description": description(alert),
        }
        for key in ("alert_id", "order_id", "refund_id", "session_id", "at", "due_at"):
            if alert.get(key):
                annotations[key] = str(alert[key])
        if alert.get("details"):
            annotations["details"] = json.dumps(alert["details"], ensure_ascii=False, separators=(",", ":"),
                                                sort_keys=True, default=str)
        at = _ts(alert.get("at"))
        if alert.get("status") == "resolved":
            ends = min(at or now_dt, now_dt)
            starts = min(_ts(alert.get("fired_at")) or at or ends, ends)
        else:
            starts = at or now_dt
            ends = max(now_dt, starts) + timedelta(seconds=ENDS_AFTER_RESENDS * self.resend)
        out: dict[str, Any] = {
            "labels": {k: v for k, v in labels.items() if v},
            "annotations": {k: v for k, v in annotations.items() if v},
            "startsAt": _rfc3339(starts),
            "endsAt": _rfc3339(ends),
        }
        gen = self.generator(alert)
        if gen:
            out["generatorURL"] = gen
        return out

    def _request(self, alerts: Iterable[Mapping[str, Any]], now: float) -> Request:
        body = [self.am_alert(a, now) for a in alerts if self.wants(a)]
        return self.endpoint, self.headers(), json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    def render_batch(self, batch: Iterable[Mapping[str, Any]], now: float,
                     mentions: Any = None) -> Request:
        """(url, headers, body) of the POST of ``batch`` (alert changes, firing or resolved) as of
        ``now`` (epoch seconds). ``mentions`` is for the chat sinks: Alertmanager has none."""
        return self._request(batch, now)

    def resend_batch(self, open_alerts: Iterable[Mapping[str, Any]], now: float) -> Request:
        """(url, headers, body) re-sending the firing ones of ``open_alerts`` as of ``now``: the
        delivery loop calls it every ``resend`` seconds, so that their ``endsAt`` moves on."""
        return self._request((a for a in open_alerts if a.get("status", "firing") == "firing"), now)

    def verdict(self, status: int, body: bytes, retry_after: str | None, now: float) -> Outcome:
        if 200 <= status < 300:
            return Outcome("ok", f"HTTP {status}", None)
        text = body[:300].decode("utf-8", "replace").strip()
        if status == 429:
            return Outcome("throttled", f"HTTP 429: {text}", _retry_after(retry_after, now))
        if status >= 500 or status == 408:
            return Outcome("retry", f"HTTP {status}: {text}", _retry_after(retry_after, now))
        return Outcome("reject", f"HTTP {status}: {text}", None)

    # -- I/O

    async def post(self, session: aiohttp.ClientSession, request: Request) -> Outcome:
        """One try of ``request``; never raises (except cancellation)."""
        url, headers, body = request
        try:
            async with session.post(url, data=body, headers=headers, allow_redirects=False,
                                    timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                payload = await resp.read()
                outcome = self.verdict(resp.status, payload, resp.headers.get("Retry-After"), time.time())
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            outcome = Outcome("retry", _describe(exc), None)
        except Exception as exc:
            log.exception("sink %s: unexpected error posting to %s", self.name, self.where)
            outcome = Outcome("retry", _describe(exc), None)
        n = _count(body)
        DELIVERIES.labels(self.name, COUNTED[outcome.kind]).inc(n)
        if outcome.kind == "ok":
            log.debug("sink %s: %d alert(s) to %s", self.name, n, self.where)
        elif outcome.kind == "reject":
            log.warning("sink %s: %s rejected %d alert(s): %s", self.name, self.where, n, outcome.detail)
        else:
            log.info("sink %s: %s: %s (%d alert(s))", self.name, self.where, outcome.detail, n)
        return outcome

    # -- configuration

    @classmethod
    def from_config(cls, item: Any, where: str = "sink") -> AlertmanagerSink:
        """The sink of one configuration object; :class:`SinkConfigError` says what is wrong."""
        if not isinstance(item, Mapping):
            raise SinkConfigError(f"{where} must be an object, not {type(item).__name__}")
        if item.get("type") != cls.type:
            raise SinkConfigError(f"{where}: 'type' must be {cls.type!r}, not {item.get('type')!r}")
        where = f"{where} ({cls.type})"
        unknown = sorted(set(item) - cls.KEYS)
        if unknown:
            raise SinkConfigError(
                f"{where}: unknown key(s) {', '.join(map(str, unknown))}; allowed: {', '.join(sorted(cls.KEYS))}")
        if "url" not in item:
            raise SinkConfigError(f"{where}: 'url' (the Alertmanager base URL) is required")
        url = _http_url(item["url"], where, "url")
        if urlsplit(url).path.rstrip("/").endswith(("/api/v2/alerts", "/api/v1/alerts", "/api/v2", "/api/v1")):
            raise SinkConfigError(f"{where}: 'url' is the Alertmanager base URL (e.g. http://host:9093), "
                                  f"without {API_PATH}")
        kwargs: dict[str, Any] = {"url": url}
        if "name" in item:
            if not isinstance(item["name"], str) or not item["name"]:
                raise SinkConfigError(f"{where}: 'name' must be a non-empty string")
            kwargs["name"] = item["name"]
        if item.get("generator_url") is not None:
            kwargs["generator_url"] = _http_url(item["generator_url"], where, "generator_url")
        for key, ok, span in (("resend", lambda v: 1 <= v <= 3600, "[1, 3600]"),
                              ("timeout", lambda v: 0 < v <= 300, "(0, 300]")):
            if key not in item:
                continue
            v = item[key]
            if isinstance(v, bool) or not isinstance(v, int | float) or not ok(v):
                raise SinkConfigError(f"{where}: {key!r} must be a number of seconds in {span}, not {v!r}")
            kwargs[key] = float(v)
        if "min_severity" in item:
            if item["min_severity"] not in SEVERITY_RANK:
                raise SinkConfigError(f"{where}: 'min_severity' must be one of {', '.join(SEVERITIES)}, "
                                      f"not {item['min_severity']!r}")
            kwargs["min_severity"] = item["min_severity"]
        for key in ("username", "password", "bearer_token"):
            if item.get(key) is not None:
                if not isinstance(item[key], str) or not item[key]:
                    raise SinkConfigError(f"{where}: {key!r} must be a non-empty string")  # never the value
                kwargs[key] = item[key]
        if ("username" in kwargs) != ("password" in kwargs):
            raise SinkConfigError(f"{where}: 'username' and 'password' go together (HTTP basic auth)")
        if "bearer_token" in kwargs and "username" in kwargs:
            raise SinkConfigError(f"{where}: either 'bearer_token' or 'username'/'password', not both")
        return cls(**kwargs)
