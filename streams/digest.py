"""Digests: the content of one chat message for a batch of alert changes of one shop. Pure.

No I/O, no clock read, no HTTP: the delivery loop hands a *batch* (the latest
owed change of each alert of one (platform, shop_id); events.md "Output:
alerts") to a chat sink, which builds a :class:`Digest` with :func:`build` and
lays it out in its vendor's format within the vendor's size limit with
:func:`render_within`.

A digest reads, top to bottom:

- a **headline** with the counts per kind, e.g. ``小红书 xi-shop-0：3 单即将超时未发货（最早 14:07），1 单已超时；2 个包裹中转超时；已恢复 5 条``
  (a Chinese phrase per kind of shared/spec/rules.md §8; related kinds share
  a clause; times are Asia/Shanghai ``HH:MM``, with ``MM-DD`` when not on the
  day of ``now``);
- the **criticals** (firing, severity ``critical``), whatever their kind;
- then per kind (rules.md order) the other firing alerts, by deadline: each
  line has the deadline (``截止 HH:MM``) and the alert's ``summary`` (which
  names the order / refund);
- then the **resolutions**, ``✅ 已恢复 N 条``, one line each. A resolved
  alert whose firing never reached the chat carries ``"folded": True`` and
  reads ``已发生并恢复`` (optionally with ``fired_at``, its firing time);
- when the lines do not all fit, the last ones are dropped and replaced by
  ``另有 N 单`` (all dropped lines are order alerts) or ``另有 N 条``.

**Machine-findable alert ids.** Every line names its alert exactly once as
the full ``alert_id`` in a code span: `` `ship_overdue:douyin:o-1001` ``
(:data:`ALERT_ID_RE` finds them; Slack escapes ``&<>`` as ``&amp;`` ``&lt;``
``&gt;``, so unescape first). A line that carries a resolution also carries
``✅`` (and ``已发生并恢复`` when folded); a line of a firing alert never
does. So a reader of the chat (tests/chat_receiver.py) can tell, line by
line, which alert changes reached it, and ``另有 N`` says how many of a
digest's alerts are only counted.

A batch of one alert keeps the shape of the single-alert message (title,
summary, labelled facts, ``告警 ID``); the sinks render that one from
:func:`title` and :func:`facts`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, TypeVar

from .alerts import PLATFORM_NAMES, SEVERITY

T = TypeVar("T")

CST = timezone(timedelta(hours=8))  # Asia/Shanghai: UTC+8, no DST

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
SEVERITY_LABEL = {"critical": ("🔴", "严重"), "warning": ("🟠", "警告"), "info": ("🔵", "提示")}
STATUS_LABEL = {"firing": "告警中", "resolved": "✅ 已恢复", "folded": "✅ 已发生并恢复"}
RESOLVED_MARK = "✅"
FOLDED_TEXT = "已发生并恢复"

# Every kind of rules.md §8, in its order (which is also the order of the sections).
KIND_ORDER: tuple[str, ...] = tuple(SEVERITY)
KIND_NAMES = {
    "ship_warning": "发货预警",
    "ship_overdue": "超时未发货",
    "pickup_timeout": "揽收超时",
    "transit_timeout": "中转超时",
    "delivery_timeout": "派签超时",
    "customs_exception": "清关异常",
    "carrier_exception": "物流异常",
    "refund_response_warning": "售后处理预警",
    "refund_response_overdue": "售后超时自动同意",
    "return_receipt_warning": "退货收货预警",
    "return_receipt_overdue": "退货自动确认收货",
    "cod_proof_overdue": "货到付款退款凭证超时",
    "fresh_claim": "坏单包赔",
    "fresh_claim_rejected": "坏单包赔被拒",
    "daily_cap_warning": "日限额预警",
    "daily_cap_reached": "日限额触顶",
    "level_changed": "商家等级变化",
}
# Kinds about one order (counted in 单); the others in 条.
ORDER_KINDS = frozenset(KIND_ORDER[:7])

# Headline clause per kind: (group, phrase, phrase when another kind of the group came first).
# ``{n}`` is the count, ``{earliest}`` "（最早 HH:MM）" of the earliest deadline.
PHRASES: dict[str, tuple[str, str, str]] = {
    "ship_warning": ("ship", "{n} 单即将超时未发货{earliest}", "{n} 单即将超时未发货{earliest}"),
    "ship_overdue": ("ship", "{n} 单已超时未发货", "{n} 单已超时"),
    "pickup_timeout": ("parcel", "{n} 个包裹揽收超时", "{n} 个揽收超时"),
    "transit_timeout": ("parcel", "{n} 个包裹中转超时", "{n} 个中转超时"),
    "delivery_timeout": ("parcel", "{n} 个包裹派签超时", "{n} 个派签超时"),
    "customs_exception": ("parcel", "{n} 个包裹清关异常", "{n} 个清关异常"),
    "carrier_exception": ("parcel", "{n} 个包裹物流异常", "{n} 个物流异常"),
    "refund_response_warning": ("refund", "{n} 个售后即将超时自动同意{earliest}",
                                "{n} 个即将超时自动同意{earliest}"),
    "refund_response_overdue": ("refund", "{n} 个售后已超时自动同意", "{n} 个已超时自动同意"),
    "return_receipt_warning": ("return", "{n} 个退货即将自动确认收货{earliest}",
                               "{n} 个即将自动确认收货{earliest}"),
    "return_receipt_overdue": ("return", "{n} 个退货已自动确认收货", "{n} 个已自动确认收货"),
    "cod_proof_overdue": ("cod", "{n} 个货到付款售后未传退款凭证", "{n} 个未传退款凭证"),
    "fresh_claim": ("fresh", "{n} 个生鲜坏单包赔待处理", "{n} 个坏单包赔待处理"),
    "fresh_claim_rejected": ("fresh", "{n} 个坏单包赔被拒需额外赔付", "{n} 个被拒需额外赔付"),
    "daily_cap_warning": ("cap", "{n} 项日限额接近上限", "{n} 项接近上限"),
    "daily_cap_reached": ("cap", "{n} 项日限额已触顶", "{n} 项已触顶"),
    "level_changed": ("level", "商家等级变化 {n} 次", "商家等级变化 {n} 次"),
}

SUMMARY_MAX_BYTES = 900  # one line's summary in a digest (UTF-8); a single alert's summary: 1,500
SINGLE_SUMMARY_MAX_BYTES = 1500
NAME_MAX_CHARS = 64  # shop ids (64 by the event schema); longer ones are cut for display


# --------------------------------------------------------------------------- small helpers


def truncate_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, ending in "…" when cut."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[: max(0, limit - len("…".encode()))].decode("utf-8", "ignore") + "…"


def severity_of(alert: Mapping[str, Any]) -> str:
    sev = alert.get("severity")
    return sev if sev in SEVERITY_RANK else "info"


def status_of(alert: Mapping[str, Any]) -> str:
    """``firing``, ``resolved`` or ``folded`` (resolved, its firing never delivered)."""
    if alert.get("status") == "resolved":
        return "folded" if alert.get("folded") else "resolved"
    return "firing"


def platform_name(platform: str) -> str:
    return PLATFORM_NAMES.get(platform, platform)


def local(ts: Any) -> datetime | None:
    """An RFC 3339 string as Asia/Shanghai time (None when it is not one)."""
    if not isinstance(ts, str) or not ts:
        return None
    try:
        dt = datetime.fromisoformat(ts)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=CST)
    return dt.astimezone(CST)


def hhmm(ts: Any, today: date | None = None) -> str:
    """``14:07`` (Asia/Shanghai); ``11-23 14:07`` when not on ``today``; "" when unparseable."""
    dt = local(ts)
    if dt is None:
        return ""
    if today is not None and dt.date() != today:
        return dt.strftime("%m-%d %H:%M")
    return dt.strftime("%H:%M")


def deadline(alert: Mapping[str, Any]) -> str | None:
    """The instant an alert's line and headline refer to: the platform's automatic
    step for a warning (``details.auto_at``), else ``due_at``, else ``at``."""
    details = alert.get("details")
    if isinstance(details, Mapping) and isinstance(details.get("auto_at"), str):
        return details["auto_at"]
    for key in ("due_at", "at"):
        if isinstance(alert.get(key), str):
            return alert[key]
    return None


def subject(alert: Mapping[str, Any]) -> tuple[str, str]:
    """(label, id) of what the alert is about: 售后单 / 订单 / 会话, or ("", "") for a shop."""
    for key, label in (("refund_id", "售后单"), ("order_id", "订单"), ("session_id", "会话")):
        if alert.get(key):
            return label, str(alert[key])
    return "", ""


def title(alert: Mapping[str, Any]) -> str:
    """``🔴 严重 | 告警中 | ship_overdue``: a single alert's title."""
    emoji, label = SEVERITY_LABEL[severity_of(alert)]
    return f"{emoji} {label} | {STATUS_LABEL[status_of(alert)]} | {alert.get('kind', 'alert')}"


def facts(alert: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A single alert's labelled fields, in display order; the last is ``告警 ID``
    (its value is the raw id: the sinks put it in a code span, with ✅ when resolved)."""
    platform = str(alert.get("platform", ""))
    rows = [("平台", f"{PLATFORM_NAMES[platform]} ({platform})" if platform in PLATFORM_NAMES else platform)]
    rows.append(("店铺", str(alert.get("shop_id", ""))))
    for key, label in (("order_id", "订单"), ("refund_id", "售后单"), ("session_id", "会话")):
        if alert.get(key):
            rows.append((label, str(alert[key])))
    status = status_of(alert)
    if status == "folded" and alert.get("fired_at"):
        rows.append(("发生时间", str(alert["fired_at"])))
    if alert.get("at"):
        rows.append(("恢复时间" if status != "firing" else "发生时间", str(alert["at"])))
    if alert.get("due_at"):
        rows.append(("截止时间", str(alert["due_at"])))
    rows.append(("告警 ID", str(alert.get("alert_id", ""))))
    return rows


def id_suffix(alert: Mapping[str, Any]) -> str:
    """What follows a single alert's id: " ✅ 已恢复" / " ✅ 已发生并恢复" / ""."""
    status = status_of(alert)
    return "" if status == "firing" else " " + STATUS_LABEL[status]


# --------------------------------------------------------------------------- the digest


@dataclass(frozen=True)
class Item:
    """One alert of a digest: one line."""

    alert: Mapping[str, Any] = field(repr=False)
    alert_id: str
    kind: str
    status: str  # firing | resolved | folded
    severity: str
    when: str  # firing: "截止 14:07"; resolved: "14:30 恢复"; folded: "已发生并恢复（…）"
    summary: str

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, self.kind)

    @property
    def unit(self) -> str:
        return "单" if self.kind in ORDER_KINDS else "条"


@dataclass(frozen=True)
class Section:
    title: str  # "🔴 严重 2 条", "🟠 中转超时 3 单", "✅ 已恢复 5 条"
    items: tuple[Item, ...]
    with_kind: bool  # lines name their kind (criticals, resolutions)


@dataclass(frozen=True)
class Digest:
    platform: str
    shop_id: str
    title: str  # short: "🔴 小红书 xi-shop-0：4 条告警，已恢复 5 条"
    headline: str
    severity: str  # highest firing severity, or "resolved" when nothing fires
    sections: tuple[Section, ...]
    items: tuple[Item, ...]  # every line, in display order (sections' items, concatenated)
    firing: int
    resolved: int

    @property
    def single(self) -> Mapping[str, Any] | None:
        """The alert, when the batch is one alert."""
        return self.items[0].alert if len(self.items) == 1 else None

    def listed(self, shown: int) -> tuple[str, ...]:
        return tuple(i.alert_id for i in self.items[:shown])


def _item(alert: Mapping[str, Any], today: date | None) -> Item:
    status = status_of(alert)
    if status == "firing":
        t = hhmm(deadline(alert), today)
        if not t:
            when = ""
        elif deadline(alert) == alert.get("at") and not alert.get("due_at"):
            when = f"{t} 发生"
        else:
            when = f"截止 {t}"
    else:
        t = hhmm(alert.get("at"), today)
        if status == "folded":
            fired = hhmm(alert.get("fired_at"), today)
            inner = "，".join(x for x in (f"{fired} 发生" if fired else "", f"{t} 恢复" if t else "") if x)
            when = f"{FOLDED_TEXT}（{inner}）" if inner else FOLDED_TEXT
        else:
            when = f"{t} 恢复" if t else "已恢复"
    return Item(alert=alert, alert_id=str(alert.get("alert_id", "")), kind=str(alert.get("kind", "alert")),
                status=status, severity=severity_of(alert), when=when,
                summary=truncate_utf8(" ".join(str(alert.get("summary", "")).split()), SUMMARY_MAX_BYTES))


def _kind_key(kind: str) -> tuple[int, str]:
    return (KIND_ORDER.index(kind), "") if kind in KIND_NAMES else (len(KIND_ORDER), kind)


def _by_deadline(item: Item) -> tuple:
    dt = local(deadline(item.alert))
    return (dt is None, dt.timestamp() if dt else 0.0, item.alert_id)


def _by_time(item: Item) -> tuple:
    dt = local(item.alert.get("at"))
    return (dt is None, dt.timestamp() if dt else 0.0, item.alert_id)


def _headline(name: str, firing: Sequence[Item], resolved: Sequence[Item], today: date | None) -> str:
    per_kind: dict[str, list[Item]] = {}
    for it in firing:
        per_kind.setdefault(it.kind, []).append(it)
    groups: dict[str, list[str]] = {}
    for kind in sorted(per_kind, key=_kind_key):
        items = per_kind[kind]
        n = len(items)
        group, first, later = PHRASES.get(kind, (kind, f"{{n}} 条 {kind}", f"{{n}} 条 {kind}"))
        earliest = ""
        if "{earliest}" in first:
            t = hhmm(deadline(min(items, key=_by_deadline).alert), today)
            earliest = f"（最早 {t}）" if t else ""
        clauses = groups.setdefault(group, [])
        clauses.append((later if clauses else first).format(n=n, earliest=earliest))
    parts = ["，".join(c) for c in groups.values()]
    if resolved:
        folded = sum(1 for i in resolved if i.status == "folded")
        parts.append(f"已恢复 {len(resolved)} 条" + (f"（{folded} 条{FOLDED_TEXT}）" if folded else ""))
    return f"{name}：" + "；".join(parts)


def build(batch: Iterable[Mapping[str, Any]], *, now: float | None = None) -> Digest:
    """The digest of ``batch`` (alert dicts of ONE (platform, shop_id); each the latest
    owed change of its alert). ``now`` (epoch seconds, optional) only decides which
    times need their date. Raises ValueError for an empty or mixed batch."""
    alerts = list(batch)
    if not alerts:
        raise ValueError("a digest needs at least one alert")
    platform, shop_id = str(alerts[0].get("platform", "")), str(alerts[0].get("shop_id", ""))
    for a in alerts:
        if (str(a.get("platform", "")), str(a.get("shop_id", ""))) != (platform, shop_id):
            raise ValueError("a digest is for one (platform, shop_id)")
    today = datetime.fromtimestamp(now, CST).date() if now is not None else None
    items = [_item(a, today) for a in alerts]
    firing = [i for i in items if i.status == "firing"]
    resolved = sorted((i for i in items if i.status != "firing"), key=_by_time)
    critical = sorted((i for i in firing if i.severity == "critical"),
                      key=lambda i: (_kind_key(i.kind), _by_deadline(i)))
    sections: list[Section] = []
    if critical:
        emoji, label = SEVERITY_LABEL["critical"]
        sections.append(Section(f"{emoji} {label} {len(critical)} 条", tuple(critical), True))
    others: dict[str, list[Item]] = {}
    for i in firing:
        if i.severity != "critical":
            others.setdefault(i.kind, []).append(i)
    for kind in sorted(others, key=_kind_key):
        its = sorted(others[kind], key=_by_deadline)
        sev = max((i.severity for i in its), key=SEVERITY_RANK.__getitem__)
        sections.append(Section(f"{SEVERITY_LABEL[sev][0]} {its[0].kind_name} {len(its)} {its[0].unit}",
                                tuple(its), False))
    if resolved:
        folded = sum(1 for i in resolved if i.status == "folded")
        extra = f"（其中 {folded} 条{FOLDED_TEXT}）" if folded else ""
        sections.append(Section(f"{RESOLVED_MARK} 已恢复 {len(resolved)} 条{extra}", tuple(resolved), True))
    shown_shop = shop_id if len(shop_id) <= NAME_MAX_CHARS else shop_id[: NAME_MAX_CHARS - 1] + "…"
    name = f"{platform_name(platform)} {shown_shop}"
    if firing:
        severity = max((i.severity for i in firing), key=SEVERITY_RANK.__getitem__)
        emoji = SEVERITY_LABEL[severity][0]
        short = f"{emoji} {name}：{len(firing)} 条告警" + (f"，已恢复 {len(resolved)} 条" if resolved else "")
    else:
        severity = "resolved"
        short = f"{RESOLVED_MARK} {name}：已恢复 {len(resolved)} 条"
    ordered = tuple(i for s in sections for i in s.items)
    return Digest(platform=platform, shop_id=shop_id, title=short,
                  headline=_headline(name, firing, resolved, today), severity=severity,
                  sections=tuple(sections), items=ordered, firing=len(firing), resolved=len(resolved))


# --------------------------------------------------------------------------- layout


def _identity(text: str) -> str:
    return text


def _backticks(alert_id: str) -> str:
    return f"`{alert_id}`"


@dataclass(frozen=True)
class Markup:
    """How a vendor writes a digest's text: ``escape`` for text from alerts (summaries,
    ids in lines), ``code`` for the alert id marker (always a backtick code span,
    escaped as the vendor needs), ``bold`` wrapper, ``bullet`` before each line,
    ``heading`` before the headline, ``gap`` between blocks."""

    bullet: str = "- "
    bold: str = "**"
    heading: str = ""
    gap: str = "\n\n"
    escape: Callable[[str], str] = _identity
    code: Callable[[str], str] = _backticks


PLAIN = Markup(bullet="· ", bold="", heading="", gap="\n\n")


def line(item: Item, markup: Markup, *, with_kind: bool) -> str:
    """One alert's line, e.g. ``- 截止 14:07 · 订单 o-1 … `ship_warning:xiaohongshu:o-1```."""
    if item.status == "firing":
        parts = [item.kind_name] if with_kind else []
        if item.when:
            parts.append(item.when)
        label, sid = subject(item.alert)
        if sid and sid not in item.summary:
            parts.append(markup.escape(f"{label} {sid}"))
        parts.append(markup.escape(item.summary))
    else:
        label, sid = subject(item.alert)
        who = f" {label} {sid}" if sid else ""
        parts = [f"{RESOLVED_MARK} " + markup.escape(f"{item.kind_name}{who}"), item.when]
    return markup.bullet + " · ".join(p for p in parts if p) + " " + markup.code(item.alert_id)


def omitted_note(d: Digest, shown: int) -> str | None:
    """``另有 N 单`` / ``另有 N 条`` for the lines past ``shown`` (None when all are shown)."""
    rest = d.items[shown:]
    if not rest:
        return None
    unit = "单" if all(i.kind in ORDER_KINDS for i in rest) else "条"
    return f"……另有 {len(rest)} {unit}未列出"


def blocks(d: Digest, markup: Markup, shown: int, *, max_len: int | None = None,
           measure: Callable[[str], int] = len) -> list[str]:
    """The sections' texts with the first ``shown`` lines: a bold title, then the
    lines. With ``max_len``, a section longer than that (as ``measure`` counts) is
    split into several blocks, each at most ``max_len`` (a line longer than that alone
    is cut). Sections with no line shown are left out; see :func:`omitted_note`."""
    out: list[str] = []
    left = max(0, shown)
    for s in d.sections:
        if left <= 0:
            break
        its = s.items[:left]
        left -= len(its)
        head = f"{markup.bold}{markup.escape(s.title)}{markup.bold}"
        cur = head
        for it in its:
            ln = line(it, markup, with_kind=s.with_kind)
            if max_len is not None and measure(cur + "\n" + ln) > max_len:
                out.append(cur)
                cur = ln if measure(ln) <= max_len else _cut(ln, max_len, measure)
            else:
                cur = cur + "\n" + ln
        out.append(cur)
    return out


def _cut(text: str, max_len: int, measure: Callable[[str], int]) -> str:
    while text and measure(text) > max_len:
        text = text[: max(1, len(text) * 9 // 10 - 1)]
    return text


def text(d: Digest, markup: Markup, shown: int, *, mentions: str = "") -> str:
    """The whole digest as one text: headline (and ``mentions``), sections, note."""
    bold = "" if markup.heading else markup.bold  # a heading is bold already
    head = f"{markup.heading}{bold}{markup.escape(d.headline)}{bold}"
    if mentions:
        head += "\n" + mentions
    parts = [head, *blocks(d, markup, shown)]
    note = omitted_note(d, shown)
    if note:
        parts.append(note)
    return markup.gap.join(parts)


def render_within(count: int, render: Callable[[int], T], fits: Callable[[T], bool]) -> tuple[T, int]:
    """The rendering showing the most of ``count`` lines that ``fits``, and how many it
    shows: ``render(n)`` lays out the first n lines (and "另有 count − n") in the
    vendor's whole request, ``fits`` checks it against the vendor's limit. Tries
    ``count`` first, then searches (the size grows with n). Raises ValueError when
    even ``render(0)`` does not fit."""
    full = render(count)
    if fits(full):
        return full, count
    lo, hi = 0, count - 1  # the answer is in [lo, hi]; best: the largest n known to fit
    best: tuple[T, int] | None = None
    while lo <= hi:
        mid = (lo + hi) // 2
        r = render(mid)
        if fits(r):
            best = (r, mid)
            lo = mid + 1
        else:
            hi = mid - 1
    if best is None:
        raise ValueError("even the headline does not fit the limit")
    return best
