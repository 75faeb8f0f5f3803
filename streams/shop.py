"""Per-shop logic: indicator aggregates, scores, 抖音 levels and daily caps.

Keyed by (platform, shop_id). Takes the contribution deltas of orders and
sessions (see ``logic.py``) into daily buckets (local days), so one delta is
O(1); a snapshot sums the window's days (≤ 180 small additions per indicator)
and days older than every window are dropped as the shop's clock moves.

Choices where the spec is silent:
- 抖音 levels are evaluated at each local midnight on the day that just ended
  (window ending yesterday). A rate with no data (den 0) neither blocks an
  upgrade nor causes a downgrade, except the review-count conditions.
  The snapshot's outlook (``level.outlook``) shows such an upgrade condition
  as ``null``, not ``true``: an indicator with no data does not meet the bar,
  it is merely not held against the shop. ``im_first_response_minutes`` is
  the exception: rules.md §4 counts "no sessions" as meeting its upgrade bar,
  so it stays ``true``. The review conditions are ``false`` without the
  reviews they need, and a downgrade condition is ``false`` without data
  (not met), as the level machine takes them.
- ``cumulative_orders`` counts paid orders ever seen (not windowed).
"""

from __future__ import annotations

from .alerts import make_alert
from .clock import DAY_US, HOUR_US, LOCAL_OFFSET_US, day_start_us, day_str, fmt_ts, local_day
from .effects import Contribution, Effects
from .rules import Rules

RATE, MEAN, COUNT, COHORT = "rate", "mean", "count", "cohort"

# platform -> [(indicator, window days, kind)] in snapshot order
INDICATORS: dict[str, list[tuple[str, int, str]]] = {
    "xiaohongshu": [
        ("review_avg", 180, MEAN), ("quality_refund_rate", 180, RATE), ("on_time_ship_rate", 180, RATE),
        ("pay_to_sign_hours", 180, MEAN), ("pay_to_sign_hours.domestic", 180, MEAN),
        ("pay_to_sign_hours.bonded", 180, MEAN), ("pay_to_sign_hours.direct_mail", 180, MEAN),
        ("refund_only_hours", 180, MEAN), ("return_refund_hours", 180, MEAN), ("reply_3min_rate", 180, RATE),
        ("complaint_rate", 180, RATE),
    ],
    "douyin": [
        ("on_time_ship_rate", 30, RATE), ("fake_ship_rate", 30, RATE), ("im_first_response_minutes", 30, MEAN),
        ("service_good_rate", 30, RATE), ("complaint_rate", 30, RATE), ("product_good_rate", 30, RATE),
        ("cumulative_orders", 0, COUNT), ("negative_review_rate", 90, RATE), ("logistics_return_rate", 90, COHORT),
        ("im_dissatisfaction_rate", 90, RATE),
    ],
    "kuaishou": [
        ("refund_only_hours", 30, MEAN), ("return_refund_hours", 30, MEAN), ("merchant_dispute_rate", 30, RATE),
        ("quality_refund_rate", 30, RATE),
    ],
    "jd": [("reply_30s_rate", 30, RATE)],
    "tmall": [("refund_rate", 30, RATE), ("refund_dispute_rate", 30, RATE)],
}
COHORT_FIRST, COHORT_LAST = 104, 15  # 物流品退率: paid days date(T)-104 .. date(T)-15
KEEP_DAYS = 200  # older buckets can never be in a window
HALF_DAY_US = 12 * HOUR_US

XHS_DIMENSIONS = {
    "product": ("review_avg", "quality_refund_rate"),
    "logistics": ("on_time_ship_rate", "pay_to_sign_hours"),
    "after_sale": ("refund_only_hours", "return_refund_hours"),
    "consultation": ("reply_3min_rate",),
    "disputes": ("complaint_rate",),
}


class ShopState:
    __slots__ = ("platform", "shop_id", "buckets", "late", "cumulative", "cumulative_late", "first_us", "now_us", "open_caps", "level",
                 "level_since_us", "lv0_days", "cleared", "fast_day", "changes")

    def __init__(self, key: tuple[str, str] | str) -> None:
        # (platform, shop_id), or the topic key "platform:shop_id"
        self.platform, self.shop_id = key.split(":", 1) if isinstance(key, str) else key
        self.buckets: dict[str, dict[int, list]] = {}
        self.late: dict[str, dict[int, list]] = {}  # the same, for deltas caused after the cut
        self.cumulative = 0
        self.cumulative_late = 0
        self.first_us = None
        self.now_us = None
        self.open_caps: dict[str, int] = {}  # alert_id -> day
        self.level = None
        self.level_since_us = None
        self.lv0_days = 0
        self.cleared = False
        self.fast_day = None  # a day since the last change that met the fast-upgrade bar
        self.changes = 0

    def snapshot(self) -> dict:
        d = {k: getattr(self, k) for k in self.__slots__}
        d["buckets"] = {i: {str(day): v for day, v in b.items()} for i, b in self.buckets.items()}
        d["late"] = {i: {str(day): v for day, v in b.items()} for i, b in self.late.items()}
        return d

    @classmethod
    def restore(cls, d: dict) -> ShopState:
        s = cls((d["platform"], d["shop_id"]))
        for k in cls.__slots__:
            setattr(s, k, d[k])
        s.buckets = {i: {int(day): v for day, v in b.items()} for i, b in d["buckets"].items()}
        s.late = {i: {int(day): v for day, v in b.items()} for i, b in d["late"].items()}
        return s


def curve(value: float, at3: float, at5: float) -> float:
    """Piecewise-linear 3-5 scale, clamped."""
    if at5 == at3:
        return 5.0
    return max(3.0, min(5.0, 3.0 + 2.0 * (value - at3) / (at5 - at3)))


class ShopLogic:
    """``cut_us``: an instant a snapshot will be asked for while later events are
    still applied (replay's ``--until`` before the last event). Deltas caused by
    events (or timers) after the cut are kept in ``late`` buckets, so the
    snapshot as of the cut counts what had happened by then: a review posted
    after the cut is not in it even though it is attributed to an earlier
    signing; every other snapshot counts both."""

    def __init__(self, rules: Rules, cut_us: int | None = None) -> None:
        self.rules = rules
        self.cut_us = cut_us

    new_state = ShopState

    # ------------------------------------------------------------- aggregates
    def on_contrib(self, s: ShopState, c: Contribution, fx: Effects) -> None:
        self.on_contribs(s, (c,), fx)

    def on_contribs(self, s: ShopState, cs, fx: Effects) -> None:
        """``on_contrib`` of each contribution of ``cs`` in turn (one call for a step's deltas)."""
        cut = self.cut_us
        douyin = s.platform == "douyin"
        for _p, _shop, ind, inst, dnum, dden, at_us in cs:
            now = s.now_us
            if now is None or at_us > now:
                # local_day, inline (the hot path)
                if now is not None and (at_us + LOCAL_OFFSET_US) // DAY_US != (now + LOCAL_OFFSET_US) // DAY_US:
                    self._prune(s, local_day(at_us))
                s.now_us = at_us
            if ind == "_seen":
                if dnum > 0 and (s.first_us is None or dnum < s.first_us):
                    s.first_us = dnum
                    if douyin and s.changes == 0:
                        s.level = self.rules.raw["douyin_start_level"]
                        s.level_since_us = dnum
                continue
            day = (inst + LOCAL_OFFSET_US) // DAY_US  # local_day(inst)
            late = cut is not None and at_us > cut
            if ind == "cumulative_orders":
                s.cumulative += dnum
                if late:
                    s.cumulative_late += dnum
            buckets = s.late if late else s.buckets
            b = buckets.get(ind)
            if b is None:
                b = buckets[ind] = {}
            v = b.get(day)
            if v is None:
                v = b[day] = [0, 0]
            v[0] += dnum
            v[1] += dden
            if douyin and dnum > 0 and (ind == "cumulative_orders" or ind == "_paid_gmv"):
                after = self.window(s, ind, day, day)[0]
                self._check_caps(s, ind, day, after - dnum, after, at_us, fx)

    def _prune(self, s: ShopState, today: int) -> None:
        cutoff = today - KEEP_DAYS
        for buckets in (s.buckets, s.late):
            for b in buckets.values():
                if len(b) > KEEP_DAYS:
                    for d in [d for d in b if d < cutoff]:
                        del b[d]

    def window(self, s: ShopState, ind: str, first_day: int, last_day: int, at_cut: bool = False) -> tuple:
        """Sums over local days first_day..last_day; ``at_cut``: as of the cut instant itself."""
        num = den = 0
        for b in (s.buckets.get(ind), None if at_cut else s.late.get(ind)):
            if not b:
                continue
            if len(b) <= last_day - first_day + 1:
                for d, v in b.items():
                    if first_day <= d <= last_day:
                        num += v[0]
                        den += v[1]
            else:
                for d in range(first_day, last_day + 1):
                    v = b.get(d)
                    if v is not None:
                        num += v[0]
                        den += v[1]
        return num, den

    def indicator(self, s: ShopState, ind: str, days: int, kind: str, today: int, at_cut: bool = False) -> dict:
        if kind == COUNT:
            return {"value": s.cumulative - s.cumulative_late if at_cut else s.cumulative}
        if kind == COHORT:
            num, den = self.window(s, ind, today - COHORT_FIRST, today - COHORT_LAST, at_cut)
        else:
            num, den = self.window(s, ind, today - days + 1, today, at_cut)
        if isinstance(num, float) and abs(num) < 1e-9:
            num = 0.0
        return {"value": (num / den) if den else None, "num": num, "den": den, "window_days": days}

    # ------------------------------------------------------------- daily caps
    def _caps(self, s: ShopState):
        caps = self.rules.raw["douyin_caps"]
        c = caps[min(s.level or 0, len(caps) - 1)]
        return None if c is None else (c[0], c[1] * 100)

    def _check_caps(self, s: ShopState, ind: str, day: int, before, after, at_us: int, fx: Effects) -> None:
        caps = self._caps(s)
        if caps is None:
            return
        what, cap = ("orders", caps[0]) if ind == "cumulative_orders" else ("gmv", caps[1])
        share = self.rules.raw["daily_cap_warning_share"]
        for kind, thr in (("daily_cap_warning", share * cap), ("daily_cap_reached", cap)):
            if before < thr <= after:
                subject = f"{s.shop_id}:{day_str(day)}:{what}"
                alert_id = f"{kind}:{s.platform}:{subject}"
                if alert_id in s.open_caps:
                    continue
                s.open_caps[alert_id] = day
                label = "支付订单数" if what == "orders" else "支付金额"
                shown = (f"{after}/{cap} 单" if what == "orders" else f"{after / 100:.2f}/{cap / 100:.0f} 元")
                fx.alerts.append(make_alert(
                    kind, "firing", s.platform, s.shop_id, alert_id, at_us,
                    f"店铺 {s.shop_id} 今日{label}已达 LV{s.level} 日限额的 {after / cap:.0%}（{shown}），"
                    + ("已触顶，新订单将受限" if kind == "daily_cap_reached" else "请注意控制流量"),
                    due_us=day_start_us(day + 1),
                    details={"level": s.level, "measure": what, "value": after, "cap": cap, "date": day_str(day)}))

    # ------------------------------------------------------------------ timers
    @staticmethod
    def timer_key(s: ShopState) -> tuple:
        """All that ``timers(s)`` depends on besides the platform: equal keys, equal timers. The
        local half-day of ``now_us`` gives both its day and which side of noon it is on."""
        now = s.now_us
        caps = s.open_caps
        return (min(caps.values()) if caps else None,
                None if now is None else (now + LOCAL_OFFSET_US) // HALF_DAY_US, s.level is None, s.cleared)

    def timers(self, s: ShopState) -> dict[str, int]:
        out: dict[str, int] = {}
        if s.open_caps:
            out["cap_reset"] = day_start_us(min(s.open_caps.values()) + 1)
        if s.now_us is not None:
            today = local_day(s.now_us)
            if s.platform == "douyin" and s.level is not None and not s.cleared:
                out["day"] = day_start_us(today + 1)
            if s.platform == "xiaohongshu":
                noon = day_start_us(today) + 12 * HOUR_US
                out["noon"] = noon if noon > s.now_us else noon + DAY_US
        return out

    def on_timer(self, s: ShopState, name: str, due_us: int, fx: Effects) -> None:
        if self.timers(s).get(name) != due_us:
            return
        if name == "cap_reset":
            for alert_id, day in sorted(s.open_caps.items()):
                if day_start_us(day + 1) <= due_us:
                    del s.open_caps[alert_id]
                    kind = alert_id.split(":", 1)[0]
                    fx.alerts.append(make_alert(kind, "resolved", s.platform, s.shop_id, alert_id, due_us,
                                                f"已恢复：店铺 {s.shop_id} 日限额统计已在零点重置"))
            return
        s.now_us = max(s.now_us or due_us, due_us)
        if name == "day":
            self._prune(s, local_day(due_us))
            self._evaluate_level(s, due_us, fx)
        elif name == "noon":
            fx.snapshots.append(self.snapshot(s, due_us))

    # ------------------------------------------------------------- 抖音 levels
    def level_outlook(self, s: ShopState, today: int, shown: bool = False) -> dict:
        """Which upgrade and downgrade conditions pass, over the 30 days ending ``today``.

        ``shown`` (the snapshot): an upgrade condition on a rate with no data is
        None (not met, not held against the shop) where the level machine takes
        it as passing; see the module docstring."""
        raw = self.rules.raw
        up, down = raw["douyin_upgrade"], raw["douyin_downgrade"]

        def val(ind):
            return self.indicator(s, ind, 30, RATE, today)

        ot, fake, fr = val("on_time_ship_rate"), val("fake_ship_rate"), val("im_first_response_minutes")
        sg, pg, cr = val("service_good_rate"), val("product_good_rate"), val("complaint_rate")
        orders = cr["den"]
        reviews = pg["den"]
        review_rate = reviews / orders if orders else None
        level = s.level or 0
        need = raw["douyin_cumulative_to_leave"][level] if level < len(raw["douyin_cumulative_to_leave"]) else None

        def ok(v, pred):
            if v is None:
                return None if shown else True
            return pred(v)

        upgrade = {
            "on_time_ship_rate": ok(ot["value"], lambda v: v >= up["on_time_ship_rate"]),
            "fake_ship_rate": ok(fake["value"], lambda v: v <= up["fake_ship_rate"]),
            # rules.md §4: "≤ 3 min, or no sessions": no sessions meets this bar
            "im_first_response_minutes": fr["value"] is None or fr["value"] <= up["im_first_response_minutes"],
            "service_good_rate": sg["value"] is not None and sg["value"] >= up["good_rate"]
            and sg["den"] >= up["min_reviews"] and review_rate is not None and review_rate >= up["review_rate"],
            "complaint_rate": ok(cr["value"], lambda v: v <= up["complaint_rate"]),
            "product_good_rate": pg["value"] is not None and pg["value"] >= up["good_rate"]
            and pg["den"] >= up["min_reviews"] and review_rate is not None and review_rate >= up["review_rate"],
            "cumulative_orders": need is not None and s.cumulative >= need,
        }
        downgrade = {
            "on_time_ship_rate": ot["value"] is not None and ot["value"] < down["on_time_ship_rate"],
            "fake_ship_rate": fake["value"] is not None and fake["value"] > down["fake_ship_rate"],
            "im_first_response_minutes": fr["value"] is not None and fr["value"] > down["im_first_response_minutes"],
            "service_good_rate": sg["den"] >= 1 and sg["value"] < down["good_rate"],
            "complaint_rate": cr["value"] is not None and cr["value"] > down["complaint_rate"]
            and cr["num"] > down["complaint_count"],
            "product_good_rate": pg["den"] >= 1 and pg["value"] < down["good_rate"],
            "cumulative_orders": s.cumulative == 0,
        }
        return {"upgrade": upgrade, "downgrade": downgrade, "review_rate": review_rate}

    def _day_meets_fast_bar(self, s: ShopState, day: int) -> bool:
        raw = self.rules.raw
        caps = self._caps(s)
        if caps is None:
            return False
        share = raw["douyin_fast_upgrade"]["cap_share"]
        orders = self.window(s, "cumulative_orders", day, day)[0]
        gmv = self.window(s, "_paid_gmv", day, day)[0]
        pg = self.window(s, "product_good_rate", day, day)
        sg = self.window(s, "service_good_rate", day, day)
        bar = raw["douyin_upgrade"]["good_rate"]
        return (orders >= share * caps[0] and gmv >= share * caps[1] and orders > 0
                and pg[1] / orders >= raw["douyin_fast_upgrade"]["review_rate"]
                and pg[1] > 0 and pg[0] / pg[1] >= bar and (sg[1] == 0 or sg[0] / sg[1] >= bar))

    def _evaluate_level(self, s: ShopState, boundary_us: int, fx: Effects) -> None:
        if s.level is None or s.cleared:
            return
        raw = self.rules.raw
        yesterday = local_day(boundary_us) - 1
        if s.level == 0:
            s.lv0_days += 1
            if s.lv0_days >= raw["douyin_lv0_clear_days"]:
                s.cleared = True
                self._level_alert(s, boundary_us, 0, None, "cleared", fx)
                return
        if s.fast_day is None and self._day_meets_fast_bar(s, yesterday):
            s.fast_day = yesterday
        out = self.level_outlook(s, yesterday)
        up, down = out["upgrade"], out["downgrade"]
        waited = boundary_us - s.level_since_us >= raw["douyin_level_wait_days"] * DAY_US
        fast = s.fast_day is not None and all(up[k] for k in ("complaint_rate", "product_good_rate",
                                                              "service_good_rate"))
        new = s.level
        if (waited and all(up.values())) or fast:
            new = min(7, s.level + 1)
        elif waited and any(down.values()):
            new = max(0, s.level - 1)
        if new != s.level:
            old = s.level
            s.level, s.level_since_us, s.fast_day = new, boundary_us, None
            s.changes += 1
            if new != 0:
                s.lv0_days = 0
            self._level_alert(s, boundary_us, old, new, "up" if new > old else "down", fx,
                              {k: v for k, v in (up if new > old else down).items()})

    def _level_alert(self, s: ShopState, at_us: int, old, new, how: str, fx: Effects, conds=None) -> None:
        day = day_str(local_day(at_us))
        alert_id = f"level_changed:{s.platform}:{s.shop_id}:{day}"
        if how == "cleared":
            summary = f"店铺 {s.shop_id} 连续 60 天处于 LV0，已被清退"
        elif how == "up":
            summary = f"店铺 {s.shop_id} 商家等级由 LV{old} 升至 LV{new}"
        else:
            summary = f"店铺 {s.shop_id} 商家等级由 LV{old} 降至 LV{new}，请关注未达标指标"
        fx.alerts.append(make_alert("level_changed", "firing", s.platform, s.shop_id, alert_id, at_us, summary,
                                    severity="info" if how == "up" else "critical",
                                    details={"from": old, "to": new, "change": how, "conditions": conds or {}}))

    # ----------------------------------------------------------------- scores
    def snapshot(self, s: ShopState, as_of_us: int) -> dict:
        today = local_day(as_of_us)
        at_cut = as_of_us == self.cut_us
        inds = {name: self.indicator(s, name, days, kind, today, at_cut)
                for name, days, kind in INDICATORS.get(s.platform, [])}
        snap = {"platform": s.platform, "shop_id": s.shop_id, "as_of": fmt_ts(as_of_us), "indicators": inds,
                "dimensions": {}, "score": None}
        if s.platform == "xiaohongshu":
            self._xhs_score(s, snap, today)
        elif s.platform == "douyin":
            caps = self._caps(s)
            snap["level"] = {
                "level": s.level, "since": fmt_ts(s.level_since_us) if s.level_since_us is not None else None,
                "cleared": s.cleared,
                "daily_caps": None if caps is None else {"orders": caps[0], "gmv_fen": caps[1]},
                "outlook": self.level_outlook(s, today, shown=True) if s.level is not None else None,
            }
        elif s.platform == "kuaishou":
            self._kuaishou_gate(snap)
        return snap

    def _xhs_score(self, s: ShopState, snap: dict, today: int) -> None:
        raw = self.rules.raw
        curves = raw["xiaohongshu_curves"]
        half_life = raw.get("score_half_life_days")
        values = {}
        for name in curves:
            if half_life:
                num = den = 0.0
                for d, v in (s.buckets.get(name) or {}).items():
                    if today - 180 < d <= today:
                        w = 0.5 ** ((today - d) / half_life)
                        num += w * v[0]
                        den += w * v[1]
                values[name] = num / den if den else None
            else:
                values[name] = snap["indicators"][name]["value"]
        items = {n: (curve(v, *curves[n]) if v is not None else None) for n, v in values.items()}
        dims = {}
        for dim, names in XHS_DIMENSIONS.items():
            present = [items[n] for n in names if items.get(n) is not None]
            dims[dim] = sum(present) / len(present) if present else None
        snap["dimensions"] = dims
        profiles = {}
        for pname, weights in raw["xiaohongshu_profiles"].items():
            w = sum(weights[d] for d in weights if dims.get(d) is not None)
            profiles[pname] = (sum(weights[d] * dims[d] for d in weights if dims.get(d) is not None) / w) if w else None
        snap["score"] = profiles.get("service_score")
        snap["item_scores"] = items
        snap["profiles"] = profiles

    def _kuaishou_gate(self, snap: dict) -> None:
        raw = self.rules.raw
        g = raw["kuaishou_gate"]
        md = snap["indicators"]["merchant_dispute_rate"]
        met = md["num"] < g["max_judged"] or (md["value"] is not None and md["value"] <= g["max_rate"])
        items = {}
        for name, (a3, a5) in raw["kuaishou_curves"].items():
            v = snap["indicators"][name]["value"]
            sc = curve(v, a3, a5) if v is not None else None
            if sc is not None and not met:
                sc = min(sc, g["cap"])
            items[name] = sc
        snap["gate"] = {"met": met, "judged_against": md["num"], "rate": md["value"], "cap": g["cap"]}
        snap["item_scores"] = items
