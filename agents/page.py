"""The worker's read-only HTML page (``GET /page``, agents/views.py): one document, no build step.

Inline CSS and JS, no external asset (no font, no script, no image), so it
works on a worker without Internet access and under a strict
Content-Security-Policy (:data:`CONTENT_SECURITY_POLICY`: only this script and
this style, by their SHA-256, and requests to the page's own origin).

The script fetches the JSON views ``shops`` and ``alerts?status=firing&sort=due&limit=1000``
(relative URLs: behind a reverse proxy under a path prefix they stay under it)
with the browser's ``shopwatch_token`` cookie (how the page gets the token:
agents/views.py), renders them with DOM calls (never ``innerHTML``: shop ids
and summaries come from events) and fetches again ``REFRESH_MS`` (5 s) after
each answer. It shows:

- the alerts firing across every shop, the earliest deadline first: severity,
  platform, shop, kind, order / refund / session, deadline (red once passed),
  when it fired, the summary; counts by severity; a note when the list is cut
  at 1000 or a partition did not answer (``partial``);
- the shops by platform (小红书, 抖音, 快手, 京东, 天猫), each a card: the score
  (小红书 服务分 and 旧版店铺分, 快手 dispute gate, 抖音 level), the 小红书
  dimensions and 快手 item scores as bars on the 3–5 scale, the 抖音 daily cap
  use (today's paid orders and GMV against the level's caps), upgrade outlook
  (✓ met, ✗ not met, — no data) and the downgrade conditions met, and every
  indicator with its value, ``num/den`` and the platform's bar, red where the
  value is worse than the bar (the ``worse`` of ``/shops``).

For tests and scripts the DOM carries the numbers as the JSON has them:
``#status[data-state]`` (``loading``, ``ok``, ``partial``, ``error``),
``data-shops``, ``data-alerts``, ``data-refreshes``; each shop card is
``article.shop[data-platform][data-shop-id]`` with ``.score[data-score]``,
``.level[data-level]``, ``.dim[data-name][data-value]``, ``.cap[data-measure][data-used][data-cap]``,
``.cond[data-name][data-met]`` and ``tr.ind[data-name][data-value][data-num][data-den][data-worse]``;
each alert is ``tr.alert[data-alert-id][data-due]``.
"""

from __future__ import annotations

import base64
import hashlib

import orjson

from shopwatch.schemas.events import PLATFORMS
from shopwatch.streams import digest as dg
from shopwatch.streams import summary as sm
from shopwatch.streams.alerts import PLATFORM_NAMES

REFRESH_MS = 5000
ALERTS_SHOWN = 1000

_OUTLOOK = ("on_time_ship_rate", "fake_ship_rate", "im_first_response_minutes", "service_good_rate",
            "complaint_rate", "product_good_rate", "cumulative_orders")

NAMES = {
    "platforms": [[p, PLATFORM_NAMES.get(p, p)] for p in PLATFORMS],
    "kinds": dict(dg.KIND_NAMES),
    "severities": {s: list(v) for s, v in dg.SEVERITY_LABEL.items()},
    "dimensions": dict(sm.DIMENSION_NAMES),
    "outlook": {k: sm.indicator_name("douyin", k) for k in _OUTLOOK},
}

STYLE = """
:root { --red: #b3261e; --red-bg: #fdecea; --amber: #9a6700; --amber-bg: #fff4d6; --green: #1a7f37;
  --ink: #1f2328; --muted: #656d76; --line: #d0d7de; --bg: #f6f8fa; --card: #fff; --bar: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 -apple-system, "Segoe UI", "PingFang SC", "Noto Sans CJK SC", sans-serif;
  color: var(--ink); background: var(--bg); }
header.top { position: sticky; top: 0; z-index: 1; display: flex; gap: 16px; align-items: baseline;
  padding: 10px 20px; background: #24292f; color: #fff; }
header.top h1 { margin: 0; font-size: 18px; }
#status { padding: 1px 8px; border-radius: 10px; background: #57606a; font-size: 12px; }
#status[data-state="ok"] { background: var(--green); }
#status[data-state="partial"] { background: var(--amber); }
#status[data-state="error"] { background: var(--red); }
#updated { color: #d0d7de; font-size: 12px; }
main { padding: 12px 20px 40px; }
h2 { font-size: 16px; margin: 18px 0 8px; }
.notes { margin: 6px 0; }
.note { padding: 6px 10px; border-radius: 6px; background: var(--amber-bg); color: var(--amber); margin: 4px 0; }
.note.error { background: var(--red-bg); color: var(--red); }
table { border-collapse: collapse; width: 100%; background: var(--card); }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #eaeef2; font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.sev { white-space: nowrap; font-weight: 600; }
.sev-critical { color: var(--red); } .sev-warning { color: var(--amber); } .sev-info { color: var(--bar); }
tr.overdue td.due { color: var(--red); font-weight: 600; }
.counts span { margin-right: 12px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 12px; }
article.shop { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
article.shop.firing { border-left: 4px solid var(--red); }
article.shop > header { display: flex; gap: 10px; align-items: baseline; flex-wrap: wrap; margin-bottom: 6px; }
article.shop h3 { margin: 0; font-size: 15px; }
.score, .level, .gate { font-weight: 600; }
.badge { font-size: 12px; padding: 0 6px; border-radius: 8px; background: var(--red-bg); color: var(--red); }
.muted { color: var(--muted); font-size: 12px; }
.dims { margin: 6px 0; }
.dim { display: grid; grid-template-columns: 110px 1fr 48px; gap: 8px; align-items: center; font-size: 13px; }
.track { height: 8px; background: #eaeef2; border-radius: 4px; overflow: hidden; }
.fill { height: 100%; background: var(--bar); }
.cap .fill { background: var(--green); } .cap.warn .fill { background: #d4a72c; } .cap.full .fill { background: var(--red); }
.cap { display: grid; grid-template-columns: 110px 1fr 190px; gap: 8px; align-items: center; font-size: 13px; }
.conds { display: flex; flex-wrap: wrap; gap: 4px 10px; font-size: 12px; margin: 4px 0; }
.cond[data-met="true"] { color: var(--green); } .cond[data-met="false"] { color: var(--red); }
.cond[data-met="null"] { color: var(--muted); }
table.inds { font-size: 13px; margin-top: 6px; }
table.inds td { padding: 2px 6px; }
tr.ind.worse td { color: var(--red); background: var(--red-bg); }
tr.ind td.bar { color: var(--muted); font-size: 12px; }
tr.ind.worse td.bar { color: var(--red); }
.empty { color: var(--muted); padding: 8px 0; }
"""

SCRIPT = """
"use strict";
const NAMES = /*NAMES*/null;
const REFRESH_MS = /*REFRESH_MS*/0;
const ALERTS_URL = "alerts?status=firing&sort=due&limit=/*ALERTS_SHOWN*/0";
let refreshes = 0;

if (location.search.indexOf("token=") >= 0) {
  // the token is in the HttpOnly cookie now: out of the address bar and the history
  history.replaceState(null, "", location.pathname);
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined) continue;
    if (k === "class") e.className = v;
    else if (k === "width") e.style.width = v;
    else e.setAttribute(k, v === null ? "null" : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return e;
}

function amount(x) {
  if (typeof x !== "number") return "—";
  return Number.isInteger(x) ? String(x) : x.toFixed(1);
}

function two(x) { return typeof x === "number" ? x.toFixed(2) : "暂无数据"; }

function pct(x) { return typeof x === "number" ? (x * 100).toFixed(2) + "%" : "暂无数据"; }

const TIME_FMT = new Intl.DateTimeFormat("zh-CN", {timeZone: "Asia/Shanghai", month: "2-digit", day: "2-digit",
  hour: "2-digit", minute: "2-digit", hourCycle: "h23"});

function when(iso) {
  if (typeof iso !== "string" || !iso) return "";
  const d = new Date(iso.replace(/\\.(\\d{3})\\d*/, ".$1"));
  return isNaN(d) ? iso : TIME_FMT.format(d);
}

function dueOf(a) {
  const d = a.details || {};
  if (typeof d.auto_at === "string") return d.auto_at;
  return typeof a.due_at === "string" && a.due_at ? a.due_at : null;
}

function subject(a) {
  for (const [k, label] of [["refund_id", "售后单"], ["order_id", "订单"], ["session_id", "会话"]]) {
    if (a[k]) return label + " " + a[k];
  }
  return "";
}

function platformName(p) {
  for (const [k, name] of NAMES.platforms) if (k === p) return name;
  return p;
}

async function getJSON(url) {
  const r = await fetch(url, {credentials: "same-origin", cache: "no-store", headers: {"Accept": "application/json"}});
  if (!r.ok) throw new Error(url + ": HTTP " + r.status);
  return r.json();
}

function notes(box, answers) {
  box.replaceChildren();
  for (const [what, a] of answers) {
    if (a.partial) {
      const missing = (a.partitions && a.partitions.missing) || [];
      box.append(el("div", {class: "note"}, what + "：数据不完整",
        missing.length ? "，分区 " + missing.join("、") + " 无响应" : "",
        ...(a.errors || []).map((e) => "；" + e.worker + " " + e.error)));
    }
    if (a.recovering) box.append(el("div", {class: "note"}, what + "：有 worker 正在恢复状态，数据可能滞后"));
  }
}

function renderAlerts(data) {
  const rows = data.alerts || [];
  const sev = data.by_severity || {};
  const counts = $("alert-counts");
  counts.replaceChildren(
    el("span", {}, "共 ", el("b", {id: "alert-total"}, data.total), " 条"),
    ...["critical", "warning", "info"].map((s) =>
      el("span", {class: "sev sev-" + s, "data-severity": s, "data-count": sev[s] || 0},
        (NAMES.severities[s] || [s, s])[0] + " " + (NAMES.severities[s] || [s, s])[1] + " " + (sev[s] || 0))),
    ...(data.total > rows.length ? [el("span", {class: "muted"}, "（仅显示最早截止的 " + rows.length + " 条）")] : []));
  const body = $("alerts-body");
  body.replaceChildren();
  const now = Date.now();
  for (const a of rows) {
    const due = dueOf(a);
    const overdue = due && new Date(due.replace(/\\.(\\d{3})\\d*/, ".$1")).getTime() < now;
    const s = NAMES.severities[a.severity] || ["", a.severity];
    body.append(el("tr", {class: "alert" + (overdue ? " overdue" : ""), "data-alert-id": a.alert_id,
                          "data-platform": a.platform, "data-shop-id": a.shop_id, "data-kind": a.kind,
                          "data-severity": a.severity, "data-due": due},
      el("td", {class: "sev sev-" + a.severity}, s[0] + " " + s[1]),
      el("td", {}, platformName(a.platform)),
      el("td", {class: "shop-id"}, a.shop_id),
      el("td", {}, NAMES.kinds[a.kind] || a.kind),
      el("td", {class: "subject"}, subject(a)),
      el("td", {class: "due"}, due ? when(due) : "—"),
      el("td", {class: "at"}, when(a.at)),
      el("td", {class: "summary"}, a.summary || "")));
  }
  if (!rows.length) body.append(el("tr", {}, el("td", {colspan: 8, class: "empty"}, "无告警")));
}

function dimRow(name, label, v) {
  const w = typeof v === "number" ? Math.max(0, Math.min(1, (v - 3) / 2)) * 100 : 0;
  return el("div", {class: "dim", "data-name": name, "data-value": typeof v === "number" ? v : null},
    el("span", {}, label), el("div", {class: "track"}, el("div", {class: "fill", width: w.toFixed(1) + "%"})),
    el("span", {class: "num"}, two(v)));
}

function capRow(measure, label, used, cap, shown) {
  const share = cap ? used / cap : 0;
  return el("div", {class: "cap" + (share >= 1 ? " full" : share >= 0.8 ? " warn" : ""), "data-measure": measure,
                    "data-used": used, "data-cap": cap},
    el("span", {}, label),
    el("div", {class: "track"}, el("div", {class: "fill", width: (Math.min(1, share) * 100).toFixed(1) + "%"})),
    el("span", {class: "num"}, shown + "（" + (share * 100).toFixed(1) + "%）"));
}

function douyinBlock(snap, capUse) {
  const lv = snap.level || {};
  const out = [];
  if (lv.daily_caps && capUse) {
    out.push(capRow("orders", "今日支付订单", capUse.orders, lv.daily_caps.orders,
                    capUse.orders + " / " + lv.daily_caps.orders + " 单"));
    out.push(capRow("gmv", "今日支付金额", capUse.gmv_fen, lv.daily_caps.gmv_fen,
                    "¥" + (capUse.gmv_fen / 100).toFixed(2) + " / ¥" + (lv.daily_caps.gmv_fen / 100).toFixed(0)));
  } else if (lv.level !== null && lv.level !== undefined) {
    out.push(el("div", {class: "muted"}, "无日限额"));
  }
  const o = lv.outlook;
  if (o) {
    const up = o.upgrade || {};
    const met = Object.values(up).filter((v) => v === true).length;
    out.push(el("div", {class: "muted"}, "升级条件 " + met + "/" + Object.keys(up).length + " 已满足 · 评价率 " + pct(o.review_rate)));
    out.push(el("div", {class: "conds upgrade"}, Object.entries(up).map(([k, v]) =>
      el("span", {class: "cond", "data-name": k, "data-met": v},
        (v === true ? "✓ " : v === false ? "✗ " : "— ") + (NAMES.outlook[k] || k) + (v === null ? "（无数据）" : "")))));
    const down = Object.entries(o.downgrade || {}).filter(([, v]) => v).map(([k]) => NAMES.outlook[k] || k);
    out.push(el("div", {class: down.length ? "note error" : "muted", "data-downgrade": down.length},
                down.length ? "降级条件已触发：" + down.join("、") : "降级条件：均未触发"));
  }
  return out;
}

function shopCard(entry, firing) {
  const snap = entry.snapshot;
  const head = [el("h3", {}, entry.shop_id)];
  if (snap.platform === "xiaohongshu") {
    head.push(el("span", {class: "score", "data-score": snap.score}, "服务分 " + two(snap.score)));
    const legacy = (snap.profiles || {}).legacy_shop_score;
    if (legacy !== undefined) head.push(el("span", {class: "muted"}, "旧版店铺分 " + two(legacy)));
  } else if (snap.platform === "douyin") {
    const lv = snap.level || {};
    head.push(el("span", {class: "level", "data-level": lv.level},
      lv.cleared ? "已清退" : lv.level === null || lv.level === undefined ? "等级未知" : "LV" + lv.level));
    if (lv.since) head.push(el("span", {class: "muted"}, "自 " + when(lv.since)));
  } else if (snap.platform === "kuaishou" && snap.gate) {
    head.push(el("span", {class: "gate", "data-met": snap.gate.met},
      snap.gate.met ? "纠纷商责门槛达标" : "纠纷商责门槛未达标（封顶 " + snap.gate.cap + " 分）"));
  }
  if (firing) head.push(el("span", {class: "badge"}, "告警中 " + firing));
  head.push(el("span", {class: "muted"}, "截至 " + when(snap.as_of)));
  const body = [el("header", {}, head)];
  const dims = snap.platform === "xiaohongshu" ? Object.entries(snap.dimensions || {}).map(([k, v]) =>
    dimRow(k, NAMES.dimensions[k] || k, v)) : snap.platform === "kuaishou" ?
    Object.entries(snap.item_scores || {}).map(([k, v]) => dimRow(k, (entry.indicators[k] || {}).label || k, v)) : [];
  if (dims.length) body.push(el("div", {class: "dims"}, dims));
  if (snap.platform === "douyin") body.push(...douyinBlock(snap, entry.cap_use));
  const rows = Object.entries(snap.indicators || {}).map(([name, ind]) => {
    const v = entry.indicators[name] || {};
    const hasDen = ind.den !== undefined;
    return el("tr", {class: "ind" + (v.worse ? " worse" : ""), "data-name": name, "data-value": ind.value,
                     "data-num": hasDen ? ind.num : undefined, "data-den": hasDen ? ind.den : undefined,
                     "data-worse": !!v.worse},
      el("td", {}, v.label || name),
      el("td", {class: "num value"}, v.shown || amount(ind.value)),
      el("td", {class: "num nd"}, hasDen ? amount(ind.num) + "/" + amount(ind.den) : ""),
      el("td", {class: "bar"}, v.bar || ""));
  });
  body.push(el("table", {class: "inds"}, el("tbody", {}, rows)));
  return el("article", {class: "shop" + (firing ? " firing" : ""), "data-platform": entry.platform,
                        "data-shop-id": entry.shop_id, "data-firing": firing}, body);
}

function renderShops(data, alerts) {
  const firing = new Map();
  for (const a of alerts.alerts || []) {
    const k = a.platform + ":" + a.shop_id;
    firing.set(k, (firing.get(k) || 0) + 1);
  }
  const box = $("platforms");
  box.replaceChildren();
  const shops = data.shops || [];
  for (const [p, name] of NAMES.platforms) {
    const mine = shops.filter((e) => e.platform === p);
    if (!mine.length) continue;
    box.append(el("section", {class: "platform", "data-platform": p},
      el("h2", {}, name + " ", el("span", {class: "muted"}, mine.length + " 家店铺")),
      el("div", {class: "cards"}, mine.map((e) => shopCard(e, firing.get(e.platform + ":" + e.shop_id) || 0)))));
  }
  if (!shops.length) box.append(el("div", {class: "empty"}, "暂无店铺数据"));
}

function $(id) { return document.getElementById(id); }

async function refresh() {
  try {
    const [shops, alerts] = await Promise.all([getJSON("shops"), getJSON(ALERTS_URL)]);
    renderAlerts(alerts);
    renderShops(shops, alerts);
    notes($("notes"), [["店铺", shops], ["告警", alerts]]);
    refreshes += 1;
    const st = $("status");
    const partial = shops.partial || alerts.partial;
    st.dataset.state = partial ? "partial" : "ok";
    st.dataset.shops = String((shops.shops || []).length);
    st.dataset.alerts = String(alerts.total);
    st.dataset.refreshes = String(refreshes);
    st.textContent = partial ? "数据不完整" : "正常";
    $("updated").textContent = "更新于 " + new Date().toLocaleTimeString("zh-CN", {hour12: false});
  } catch (e) {
    const st = $("status");
    st.dataset.state = "error";
    st.textContent = "出错";
    $("notes").replaceChildren(el("div", {class: "note error"}, "刷新失败：" + e.message));
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
"""

_BODY = """<header class="top"><h1>shopwatch</h1><span id="status" data-state="loading">加载中…</span>
<span id="updated"></span></header>
<main>
<div id="notes" class="notes"></div>
<section id="alerts-section"><h2>告警中</h2><div id="alert-counts" class="counts"></div>
<table id="alerts"><thead><tr><th>级别</th><th>平台</th><th>店铺</th><th>类型</th><th>对象</th><th>截止</th><th>发生</th>
<th>摘要</th></tr></thead><tbody id="alerts-body"></tbody></table></section>
<section id="shops-section"><div id="platforms"></div></section>
</main>"""


def _names_json() -> str:
    # inside <script>: no "</" can close it
    return orjson.dumps(NAMES).decode().replace("</", "<\\/")


SCRIPT_TEXT = (SCRIPT.replace("/*NAMES*/null", _names_json()).replace("/*REFRESH_MS*/0", str(REFRESH_MS))
               .replace("/*ALERTS_SHOWN*/0", str(ALERTS_SHOWN)))


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


PAGE_HTML = ("<!doctype html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">"
             "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
             "<meta name=\"referrer\" content=\"no-referrer\"><link rel=\"icon\" href=\"data:,\">"
             "<title>shopwatch</title><style>" + STYLE + "</style></head>\n<body>\n" + _BODY
             + "\n<script>" + SCRIPT_TEXT + "</script>\n</body></html>\n")

CONTENT_SECURITY_POLICY = (f"default-src 'none'; script-src {_sha256(SCRIPT_TEXT)}; style-src {_sha256(STYLE)}; "
                           "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
                           "frame-ancestors 'none'")
