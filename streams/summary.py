"""The morning summary (早报) of one (platform, shop): what fires and how the scores stand. Pure.

No I/O, no clock read: the delivery loop (agents/delivery.py) decides when a
chat sink with ``morning_summary`` set gets one, and hands :func:`build_summary`
the shop's firing alerts (events.md "Output: alerts"), its latest score
snapshot (events.md "Output: score snapshots", as ``shop.scores`` and
``shopwatch replay --scores-out`` carry it; None when not known), the rules
and ``now``. The sinks lay the :class:`Summary` out in their vendor's format
within its size limit (``Sink.render_summary``), dropping lines from the end
("……另有 N 行").

A summary reads, top to bottom:

- a **title** ``早报 抖音 do-shop-1 · 12-01`` (the date of ``now``, Asia/Shanghai)
  and a **headline** ``抖音 do-shop-1：告警中 12 条（严重 3 条）；LV1；2 项指标差于平台线``;
- **告警中**: one line per kind, criticals first, then rules.md §8 order:
  count, the earliest due time (``截止``; ``发生`` when the alert has no due
  time) and the first few order / refund ids by due time; ``无告警`` when
  nothing fires;
- per platform: 小红书 **服务分** (score, the legacy 店铺分, the five
  dimensions), 抖音 **商家等级** (level, since, daily caps, the outlook: which
  upgrade conditions hold, which downgrade conditions are met, the review
  rate, when the level can next change), 快手 **纠纷商责门槛** (the gate);
- the **indicators** of the snapshot, grouped by window: value (a percentage,
  hours, minutes ...) with ``（num/den）``, and where the platform has a bar,
  the bar; :data:`MARK` (⚠️) starts the line when the value is worse than it.
  The bars come from the rules object (streams/rules.py), never from
  constants here: 小红书 and 快手 duration items: the curve's value at score 3
  (the floor; the value at score 5 is shown as 满分线); 抖音: the downgrade
  conditions of rules.md §4 (the upgrade ones shown next to them); 快手
  ``merchant_dispute_rate``: the dispute gate of §6. 京东 and 天猫 have no bar.

Alert ids never appear in a summary (the ids shown are order and refund ids),
and its "另有 N 行" counts lines, not alerts: a summary is not a delivery of
alert changes (tests/chat_receiver.py reads none from it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from . import digest as dg
from .rules import DEFAULT_RULES, Rules
from .shop import COUNT, INDICATORS, MEAN, RATE

MARK = "⚠️"  # starts the line of an indicator worse than its platform's bar
OK_MARK = "✅"
FEW_IDS = 3  # order / refund ids shown per kind
NO_ALERTS = "无告警"
NO_SNAPSHOT = "暂无评分快照：尚未收到该店铺的指标数据"
LINE_MAX_BYTES = 600  # one line (shop and order ids come from events; they are cut, not trusted)

INDICATOR_NAMES = {
    "review_avg": "商品评分",
    "quality_refund_rate": "品质退款率",
    "on_time_ship_rate": "发货及时率",
    "pay_to_sign_hours": "支签时长",
    "pay_to_sign_hours.domestic": "支签时长·内贸",
    "pay_to_sign_hours.bonded": "支签时长·保税",
    "pay_to_sign_hours.direct_mail": "支签时长·直邮",
    "refund_only_hours": "仅退款完结时长",
    "return_refund_hours": "退货退款完结时长",
    "reply_3min_rate": "3分钟回复率",
    "complaint_rate": "纠纷发起率",
    "fake_ship_rate": "虚假发货率",
    "im_first_response_minutes": "IM 首响时长",
    "service_good_rate": "服务好评率",
    "product_good_rate": "商品好评率",
    "cumulative_orders": "累计支付订单",
    "negative_review_rate": "综合差评率",
    "logistics_return_rate": "物流品退率（15–104 天前支付）",
    "im_dissatisfaction_rate": "IM 不满意率",
    "merchant_dispute_rate": "纠纷商责率",
    "reply_30s_rate": "30秒回复率",
    "refund_rate": "退款率",
    "refund_dispute_rate": "退款纠纷率",
}
PLATFORM_INDICATOR_NAMES = {
    ("douyin", "on_time_ship_rate"): "准时发货率",
    ("douyin", "complaint_rate"): "商责投诉率",
    ("kuaishou", "refund_only_hours"): "仅退款自主完结时长",
    ("kuaishou", "return_refund_hours"): "退货退款自主完结时长",
}
GROUP_NAMES = {("xiaohongshu", 180): "服务分指标", ("douyin", 30): "等级指标", ("douyin", 90): "体验分指标",
               ("kuaishou", 30): "店铺分指标"}
DIMENSION_NAMES = {"product": "商品体验", "logistics": "物流体验", "after_sale": "售后体验",
                   "consultation": "咨询体验", "disputes": "投诉纠纷"}
CURVES_KEY = {"xiaohongshu": "xiaohongshu_curves", "kuaishou": "kuaishou_curves"}


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Section:
    """A titled block of lines (plain text: the sinks escape and bullet them)."""

    title: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Summary:
    """One shop's morning summary. ``severity``: the highest firing severity, or
    ``"ok"`` when nothing fires; ``firing``: how many alerts fire; ``marked``: how
    many indicators are worse than their platform's bar (None without a snapshot)."""

    platform: str
    shop_id: str
    title: str  # "早报 抖音 do-shop-1 · 12-01"
    headline: str
    severity: str
    sections: tuple[Section, ...]
    firing: int
    marked: int | None

    single: ClassVar[None] = None  # (a digest of one alert has a layout of its own; a summary never)

    @property
    def lines(self) -> tuple[str, ...]:
        return tuple(x for s in self.sections for x in s.lines)

    def omitted_note(self, shown: int) -> str | None:
        """``……另有 N 行未列出`` for the lines past ``shown`` (None when all are shown)."""
        rest = len(self.lines) - max(0, shown)
        return f"……另有 {rest} 行未列出" if rest > 0 else None

    def blocks(self, markup: dg.Markup, shown: int, *, max_len: int | None = None,
               measure: Callable[[str], int] = len) -> list[str]:
        """The sections with the first ``shown`` lines, each a bold title and bulleted
        lines; with ``max_len`` a section is split into blocks of at most that (as
        ``measure`` counts). Sections with no line shown are left out."""
        out: list[str] = []
        left = max(0, shown)
        for s in self.sections:
            if left <= 0:
                break
            rows = [markup.bullet + markup.escape(x) for x in s.lines[:left]]
            if not rows:
                continue
            left -= len(rows)
            block = f"{markup.bold}{markup.escape(s.title)}{markup.bold}"
            for row in rows:
                joined = f"{block}\n{row}"
                if max_len is None or measure(joined) <= max_len:
                    block = joined
                    continue
                out.append(block)
                block = row if measure(row) <= max_len else dg._cut(row, max_len, measure)
            out.append(block)
        return out

    def text(self, markup: dg.Markup, shown: int, *, mentions: str = "") -> str:
        """The whole summary as one text: title, headline (and ``mentions``), sections, note."""
        strong = markup.bold if not markup.heading else ""
        first = "\n".join(x for x in (markup.heading + strong + markup.escape(self.title) + strong,
                                       markup.escape(self.headline), mentions) if x)
        note = self.omitted_note(shown)
        return markup.gap.join([first, *self.blocks(markup, shown), *([note] if note else [])])


@dataclass(frozen=True)
class Bar:
    """A platform's bar for one indicator: the value is *worse* than it when below
    ``bad`` (``higher`` is better) or above it (lower is better), and, with
    ``min_num``, its numerator is above that too; ``text`` shows the bar."""

    bad: float
    higher: bool
    text: str
    min_num: float = -math.inf

    def worse(self, value: float | None, num: Any = None) -> bool:
        if value is None:
            return False
        if isinstance(num, int | float) and not num > self.min_num:
            return False
        return value < self.bad if self.higher else value > self.bad


# --------------------------------------------------------------------------- formatting


def _clean(text: Any, limit: int = LINE_MAX_BYTES) -> str:
    """One line of text from outside: whitespace collapsed, no backticks (no code span
    can be forged), at most ``limit`` bytes."""
    return dg.truncate_utf8(" ".join(str(text).replace("`", "'").split()), limit)


def _trim(x: float, places: int = 2) -> str:
    s = f"{x:.{places}f}"
    return s.rstrip("0").rstrip(".") if "." in s else s


def _amount(x: Any) -> str:
    if isinstance(x, float) and not x.is_integer():
        return f"{x:.1f}"
    return str(int(x)) if isinstance(x, int | float) else "—"


def indicator_kind(platform: str, name: str) -> str:
    """``rate``, ``mean``, ``count`` or ``cohort`` (streams/shop.py); a name the code does
    not know is a rate when it ends in ``_rate``, else a mean."""
    for n, _days, kind in INDICATORS.get(platform, ()):
        if n == name:
            return kind
    return RATE if name.endswith("_rate") else MEAN


def fmt_value(platform: str, name: str, value: Any, *, bar: bool = False) -> str:
    """A value as an ops person reads it: ``97.85%``, ``38.0 小时``, ``1.6 分钟``,
    ``4.85 分``, ``1688 单``; ``bar``: a threshold (trailing zeros dropped)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "暂无数据"
    kind = indicator_kind(platform, name)
    base = name.split(".", 1)[0]
    if kind == COUNT:
        return f"{int(value)} 单"
    if kind != MEAN:
        return f"{_trim(value * 100) if bar else f'{value * 100:.2f}'}%"
    unit, places = ("小时", 1) if base.endswith("_hours") else ("分钟", 1) if base.endswith("_minutes") else ("分", 2)
    return f"{_trim(value, places) if bar else f'{value:.{places}f}'} {unit}"


def indicator_name(platform: str, name: str) -> str:
    return PLATFORM_INDICATOR_NAMES.get((platform, name)) or INDICATOR_NAMES.get(name, name)


def _rules(rules: Rules | None) -> Rules:
    return DEFAULT_RULES if rules is None else rules


# --------------------------------------------------------------------------- bars


def bars(platform: str, rules: Rules | None = None, level: int | None = None) -> dict[str, Bar]:
    """Each indicator's bar for ``platform`` under ``rules`` (rules.md §3, §4, §6):
    indicators without one are absent. ``level``: the 抖音 level (for the
    cumulative orders it needs to leave it)."""
    rules = _rules(rules)
    out: dict[str, Bar] = {}
    if platform in CURVES_KEY:
        for name, (at3, at5) in rules.get(platform, CURVES_KEY[platform]).items():
            out[name] = Bar(at3, at5 > at3, f"3分线 {fmt_value(platform, name, at3, bar=True)}，"
                                            f"满分线 {fmt_value(platform, name, at5, bar=True)}")
    if platform == "douyin":
        up, down = rules.get(platform, "douyin_upgrade"), rules.get(platform, "douyin_downgrade")
        for name, key, higher in (("on_time_ship_rate", "on_time_ship_rate", True),
                                  ("fake_ship_rate", "fake_ship_rate", False),
                                  ("im_first_response_minutes", "im_first_response_minutes", False),
                                  ("service_good_rate", "good_rate", True), ("product_good_rate", "good_rate", True),
                                  ("complaint_rate", "complaint_rate", False)):
            worse, better = ("<", "≥") if higher else (">", "≤")
            text = (f"降级线 {worse}{fmt_value(platform, name, down[key], bar=True)}，"
                    f"升级线 {better}{fmt_value(platform, name, up[key], bar=True)}")
            out[name] = Bar(down[key], higher, text)
        complaints = down["complaint_count"]
        out["complaint_rate"] = Bar(down["complaint_rate"], False, out["complaint_rate"].text
                                    + f"（降级另需 >{complaints} 起）", complaints)
        need = rules.get(platform, "douyin_cumulative_to_leave")
        text = f"升级需 ≥{need[level]} 单" if level is not None and 0 <= level < len(need) else "降级线 0 单"
        out["cumulative_orders"] = Bar(1, True, text)
    if platform == "kuaishou":
        g = rules.get(platform, "kuaishou_gate")
        out["merchant_dispute_rate"] = Bar(
            g["max_rate"], False,
            f"门槛 ≤{fmt_value(platform, 'merchant_dispute_rate', g['max_rate'], bar=True)}"
            f"（判商责少于 {g['max_judged']} 单亦达标）", g["max_judged"] - 1)
    return out


# --------------------------------------------------------------------------- sections


def _due(alert: Mapping[str, Any]) -> tuple:
    dt = dg.local(dg.deadline(alert))
    return (dt is None, dt.timestamp() if dt else 0.0, str(alert.get("alert_id", "")))


def _kind_order(kind: str) -> int:
    return dg.KIND_ORDER.index(kind) if kind in dg.KIND_ORDER else len(dg.KIND_ORDER)


def _alerts(firing: list[Mapping[str, Any]], today) -> Section:
    if not firing:
        return Section("告警", (NO_ALERTS,))
    per_kind: dict[str, list[Mapping[str, Any]]] = {}
    for a in firing:
        per_kind.setdefault(str(a.get("kind", "alert")), []).append(a)

    def rank(kind: str) -> int:
        return max(dg.SEVERITY_RANK[dg.severity_of(a)] for a in per_kind[kind])

    lines = []
    for kind in sorted(per_kind, key=lambda k: (-rank(k), _kind_order(k), k)):
        alerts = sorted(per_kind[kind], key=_due)
        sev = max((dg.severity_of(a) for a in alerts), key=dg.SEVERITY_RANK.__getitem__)
        unit = "单" if kind in dg.ORDER_KINDS else "条"
        parts = [f"{dg.SEVERITY_LABEL[sev][0]} {dg.KIND_NAMES.get(kind, _clean(kind, 64))} {len(alerts)} {unit}"]
        first = alerts[0]
        when = dg.hhmm(dg.deadline(first), today)
        if when:
            had_due = first.get("due_at") or isinstance((first.get("details") or {}).get("auto_at"), str)
            parts.append(f"最早截止 {when}" if had_due else f"最早 {when} 发生")
        ids = list(dict.fromkeys(_clean(dg.subject(a)[1], 80) for a in alerts if dg.subject(a)[1]))
        if ids:
            parts.append("、".join(ids[:FEW_IDS]) + (f" 等 {len(ids)} {unit}" if len(ids) > FEW_IDS else ""))
        lines.append(" · ".join(parts))
    counts = {s: sum(1 for a in firing if dg.severity_of(a) == s) for s in ("critical", "warning", "info")}
    per_sev = " · ".join(f"{dg.SEVERITY_LABEL[s][1]} {n}" for s, n in counts.items() if n)
    return Section(f"告警中 {len(firing)} 条（{per_sev}）", tuple(lines))


def _num(x: Any, fmt: str = "{:.2f}") -> str:
    return fmt.format(x) if isinstance(x, int | float) and not isinstance(x, bool) else "暂无"


def _xhs(snapshot: Mapping[str, Any]) -> Section:
    profiles = snapshot.get("profiles") or {}
    head = f"服务分 {_num(snapshot.get('score'))}"
    if profiles.get("legacy_shop_score") is not None:
        head += f"（旧版店铺分 {_num(profiles['legacy_shop_score'])}）"
    dims = snapshot.get("dimensions") or {}
    dim_line = " · ".join(f"{DIMENSION_NAMES.get(k, k)} {_num(v)}" for k, v in dims.items())
    return Section("小红书服务分", (head, dim_line) if dim_line else (head,))


def _douyin(snapshot: Mapping[str, Any], rules: Rules, today) -> Section:
    lv = snapshot.get("level") or {}
    level = lv.get("level")
    if level is None:
        return Section("商家等级", ("等级未知（尚无该店铺的首个事件）",))
    if lv.get("cleared"):
        days = rules.get("douyin", "douyin_lv0_clear_days")
        return Section("商家等级", (f"{MARK} 已清退（连续 {days} 天处于 LV0）",))
    head = f"LV{level}"
    since = dg.local(lv.get("since"))
    if since is not None:
        head += f"（自 {since.strftime('%m-%d')} 起）"
    caps = lv.get("daily_caps")
    head += (f" · 日限额 {caps['orders']} 单 / {caps['gmv_fen'] / 100:,.0f} 元" if caps else " · 无日限额")
    lines = [head]
    outlook = lv.get("outlook") or {}
    up, down = outlook.get("upgrade") or {}, outlook.get("downgrade") or {}
    if up:
        missing = [indicator_name("douyin", k) for k, ok in up.items() if not ok]
        lines.append(f"升级条件 {len(up) - len(missing)}/{len(up)} 已满足"
                     + (f"；未满足：{'、'.join(missing)}" if missing else f" {OK_MARK}"))
    if down:
        met = [indicator_name("douyin", k) for k, hit in down.items() if hit]
        lines.append(f"{MARK} 降级条件已触发：{'、'.join(met)}" if met else "降级条件：均未触发")
    if outlook:
        need = rules.get("douyin", "douyin_upgrade")["review_rate"]
        lines.append(f"评价率 {fmt_value('douyin', 'review_rate', outlook.get('review_rate'))}"
                     f"（升级需 ≥{fmt_value('douyin', 'review_rate', need, bar=True)}）")
    if since is not None:
        nxt = since + timedelta(days=rules.get("douyin", "douyin_level_wait_days"))
        if nxt.date() > today:
            lines.append(f"等级最早 {nxt.strftime('%m-%d')} 起可变更（满足快速升级条件除外）")
    return Section("商家等级", tuple(lines))


def _kuaishou(snapshot: Mapping[str, Any], rules: Rules) -> Section | None:
    gate = snapshot.get("gate")
    if not isinstance(gate, Mapping):
        return None
    g = rules.get("kuaishou", "kuaishou_gate")
    rate = fmt_value("kuaishou", "merchant_dispute_rate", gate.get("rate"))
    facts = (f"判商责 {_amount(gate.get('judged_against'))} 单，纠纷商责率 {rate}"
             f"（门槛：少于 {g['max_judged']} 单，或 ≤{fmt_value('kuaishou', 'merchant_dispute_rate', g['max_rate'], bar=True)}）")
    if gate.get("met"):
        return Section("纠纷商责门槛", (f"{OK_MARK} 达标：{facts}",))
    cap = gate.get("cap", g["cap"])
    return Section("纠纷商责门槛", (f"{MARK} 未达标：{facts}", f"仅退款、退货退款时长两项得分封顶 {_trim(cap)} 分"))


def _indicators(platform: str, snapshot: Mapping[str, Any], rules: Rules) -> tuple[list[Section], int]:
    inds = snapshot.get("indicators") or {}
    level = (snapshot.get("level") or {}).get("level")
    the_bars = bars(platform, rules, level)
    items = snapshot.get("item_scores") or {}
    groups: dict[int, list[str]] = {}
    marked = 0
    for name, ind in inds.items():
        if not isinstance(ind, Mapping):
            continue
        value, num, den = ind.get("value"), ind.get("num"), ind.get("den")
        bar = the_bars.get(name)
        worse = bar is not None and bar.worse(value, num)
        marked += worse
        line = f"{MARK} " if worse else ""
        line += f"{indicator_name(platform, name)} {fmt_value(platform, name, value)}"
        if den is not None:
            line += f"（{_amount(num)}/{_amount(den)}）"
        if isinstance(items.get(name), int | float):
            line += f" · 得分 {items[name]:.1f}"
        if bar is not None:
            line += f" · {bar.text}"
        days = ind.get("window_days")
        key = days if isinstance(days, int) and days > 0 else next(iter(groups), 0)  # a count: the first group
        groups.setdefault(key, []).append(line)
    sections = [Section(f"{GROUP_NAMES.get((platform, d), '指标')}（近 {d} 天）" if d else "指标", tuple(ls))
                for d, ls in groups.items()]
    return sections, marked


# --------------------------------------------------------------------------- the summary


def build_summary(platform: str, shop_id: str, firing: Iterable[Mapping[str, Any]], snapshot: Mapping[str, Any] | None,
                  rules: Rules | None, now: float) -> Summary:
    """The morning summary of (``platform``, ``shop_id``) at ``now`` (epoch seconds): its
    firing alerts (of several changes of one ``alert_id`` the last counts; resolved
    ones are skipped), its latest score snapshot (None: not known) judged against
    ``rules`` (None: the defaults).
    Raises ValueError for an alert or a snapshot of another shop."""
    rules = _rules(rules)
    latest: dict[Any, Mapping[str, Any]] = {}  # an alert's later change replaces an earlier one
    for i, a in enumerate(firing):
        if (a.get("platform"), a.get("shop_id")) != (platform, shop_id):
            raise ValueError("a summary is for one (platform, shop_id)")
        latest.pop(a.get("alert_id") or i, None)
        latest[a.get("alert_id") or i] = a
    alerts = [a for a in latest.values() if a.get("status", "firing") == "firing"]
    if snapshot is not None and (snapshot.get("platform"), snapshot.get("shop_id")) != (platform, shop_id):
        raise ValueError("the snapshot is of another (platform, shop_id)")
    day = datetime.fromtimestamp(now, dg.CST)
    today = day.date()
    shop = _clean(shop_id, 200)
    shop = shop if len(shop) <= dg.NAME_MAX_CHARS else shop[: dg.NAME_MAX_CHARS - 1] + "…"
    name = f"{dg.platform_name(platform)} {shop}"
    sections = [_alerts(alerts, today)]
    critical = sum(1 for a in alerts if dg.severity_of(a) == "critical")
    parts = [f"告警中 {len(alerts)} 条" + (f"（严重 {critical} 条）" if critical else "") if alerts else NO_ALERTS]
    marked: int | None = None
    if snapshot is None:
        sections.append(Section("指标", (NO_SNAPSHOT,)))
        parts.append("暂无评分数据")
    else:
        extra: Section | None = None
        if platform == "xiaohongshu":
            extra = _xhs(snapshot)
            parts.append(f"服务分 {_num(snapshot.get('score'))}")
        elif platform == "douyin":
            extra = _douyin(snapshot, rules, today)
            lv = (snapshot.get("level") or {}).get("level")
            parts.append("已清退" if (snapshot.get("level") or {}).get("cleared") else
                         f"LV{lv}" if lv is not None else "等级未知")
        elif platform == "kuaishou":
            extra = _kuaishou(snapshot, rules)
            if extra is not None:
                parts.append("纠纷商责门槛" + ("达标" if snapshot["gate"].get("met") else "未达标"))
        if extra is not None:
            sections.append(extra)
        groups, marked = _indicators(platform, snapshot, rules)
        sections += groups
        if marked:
            parts.append(f"{marked} 项指标差于平台线")
        elif bars(platform, rules):
            parts.append("无指标差于平台线")
    severity = max((dg.severity_of(a) for a in alerts), key=dg.SEVERITY_RANK.__getitem__) if alerts else "ok"
    return Summary(platform=platform, shop_id=shop_id, title=f"早报 {name} · {day.strftime('%m-%d')}",
                   headline=f"{name}：" + "；".join(parts), severity=severity, sections=tuple(sections),
                   firing=len(alerts), marked=marked)


__all__ = ["MARK", "NO_ALERTS", "NO_SNAPSHOT", "Bar", "Section", "Summary", "bars", "build_summary", "fmt_value",
           "indicator_kind", "indicator_name"]
