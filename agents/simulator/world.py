"""The simulated world: shops with their profiles and every order's and consultation's
life, as valid contract events in event-time order (see the package docstring)."""

from __future__ import annotations

import random
from bisect import bisect
from collections.abc import Iterator
from datetime import date, timedelta

from shopwatch.schemas.events import (
    PLATFORMS,
)

US = 1_000_000
MIN = 60 * US
H = 3600 * US
D = 86400 * US
OFF = 8 * H  # Asia/Shanghai, UTC+8, no DST
_EPOCH = date(1970, 1, 1)

DEFAULT_START = "2026-10-01"
DEFAULT_DAYS = 7
DEFAULT_SHOPS = 12
DEFAULT_ORDERS_PER_SHOP_DAY = 100.0
DEFAULT_CHATS_PER_ORDER = 0.2

ABBR = {"xiaohongshu": "xi", "douyin": "do", "kuaishou": "ku", "jd": "jd", "tmall": "tm"}

# Default latest ship time after payment (rules.md §2), hours.
_SHIP_HOURS = {
    ("xiaohongshu", "domestic"): 48, ("xiaohongshu", "bonded"): 72, ("xiaohongshu", "direct_mail"): 120,
}

# Platform mix: bonded, direct_mail, cod, fresh, presale, promised, live (shop-day probability).
_PLATFORM_MIX = {
    "xiaohongshu": (0.07, 0.05, 0.0, 0.08, 0.08, 0.015, 0.30),
    "douyin": (0.01, 0.0, 0.05, 0.15, 0.06, 0.015, 0.60),
    "kuaishou": (0.0, 0.0, 0.06, 0.12, 0.05, 0.01, 0.60),
    "jd": (0.03, 0.01, 0.03, 0.10, 0.04, 0.03, 0.15),
    "tmall": (0.03, 0.02, 0.0, 0.08, 0.08, 0.02, 0.25),
}

_ORDER_HOUR_W = (2.0, 1.2, 0.6, 0.4, 0.3, 0.3, 0.5, 1.0, 2.0, 3.5, 4.5, 5.0,
                 5.5, 5.0, 4.5, 4.5, 4.5, 4.8, 5.0, 5.5, 7.0, 8.0, 7.0, 4.0)
_CHAT_HOUR_W = (1.2, 0.6, 0.3, 0.2, 0.2, 0.2, 0.3, 0.8, 2.0, 4.0, 5.0, 5.0,
                4.5, 4.5, 5.0, 5.0, 4.8, 4.5, 4.0, 4.5, 5.5, 6.0, 5.0, 2.5)
_PRICES = (990, 1990, 2990, 3990, 5900, 6900, 9900, 12800, 19900, 29900, 39900, 59900, 88800, 129900)
_PRICE_W = (10, 10, 14, 10, 12, 8, 10, 9, 6, 4, 3, 2, 1.5, 0.5)
_CATEGORIES = ("general", "apparel", "beauty", "home", "electronics", "food", "baby", "sports")
_VIRTUAL_CATEGORIES = ("voucher", "membership", "course", "top_up")
_CARRIERS = ("SF", "YTO", "ZTO", "STO", "YD", "JT", "EMS", "JD")
_CITIES = ("上海", "杭州", "广州", "深圳", "北京", "成都", "武汉", "西安", "郑州", "南京", "长沙",
           "天津", "重庆", "苏州", "义乌", "金华", "沈阳", "昆明", "济南", "合肥", "福州", "南昌")
_HUBS = tuple(c + s for c in _CITIES for s in ("转运中心", "分拨中心"))
_ABROAD = ("东京", "大阪", "首尔", "悉尼", "洛杉矶", "法兰克福", "巴黎", "米兰", "奥克兰", "纽约")
_BONDED_WH = ("宁波保税仓", "杭州下沙保税仓", "广州南沙保税仓", "郑州保税仓", "天津保税仓")
_CANCEL_REASONS = ("buyer_changed_mind", "duplicate_order", "wrong_address", "out_of_stock", "price_issue", "other")
_REJECT_NOTES = ("商品已影响二次销售", "超过无理由退货期限", "买家未提供凭证", "商品无质量问题", "退回商品与原商品不符")

_REASONS = ("no_reason", "quality", "not_as_described", "damaged", "spoiled", "wrong_item", "counterfeit",
            "logistics", "not_received", "other")
_REASON_W_GENERAL = (26, 15, 16, 9, 0, 8, 2, 7, 4, 13)
_REASON_W_FRESH = (6, 10, 6, 12, 50, 4, 0, 6, 2, 4)
_REASON_W_LOGISTICS = (8, 5, 5, 10, 0, 2, 0, 45, 15, 10)
_QUALITY = frozenset(("quality", "not_as_described", "damaged", "spoiled", "wrong_item", "counterfeit"))

_RATING_W = {  # product / service rating weights for 1..5 by shop tier
    "good": (1, 1, 3, 15, 80),
    "average": (3, 3, 7, 22, 65),
    "poor": (8, 7, 12, 25, 48),
}
_RATING_BAD = (22, 15, 20, 23, 20)  # after a bad experience


def _cum(weights) -> tuple[list[float], float]:
    acc, out = 0.0, []
    for w in weights:
        acc += w
        out.append(acc)
    return out, acc


class _Pick:
    """Weighted choice with precomputed cumulative weights (faster than rng.choices)."""

    __slots__ = ("items", "cum", "tot")

    def __init__(self, items, weights):
        self.items = tuple(items)
        self.cum, self.tot = _cum(weights)

    def __call__(self, r):  # r: rng.random
        return self.items[bisect(self.cum, r() * self.tot)]


_PICK_PRICE = _Pick(_PRICES, _PRICE_W)
_PICK_QTY = _Pick((1, 2, 3, 5), (84, 11, 4, 1))
_PICK_ORDER_HOUR = _Pick(range(24), _ORDER_HOUR_W)
_PICK_CHAT_HOUR = _Pick(range(24), _CHAT_HOUR_W)
_PICK_REASON_GENERAL = _Pick(_REASONS, _REASON_W_GENERAL)
_PICK_REASON_FRESH = _Pick(_REASONS, _REASON_W_FRESH)
_PICK_REASON_LOGISTICS = _Pick(_REASONS, _REASON_W_LOGISTICS)
_PICK_KIND = _Pick(("refund_only", "return_refund", "exchange"), (32, 50, 18))
_PICK_RESPONSIBLE = _Pick(("merchant", "buyer", "both", "none"), (40, 35, 15, 10))
_PICK_COMPLAINT_RESP = _Pick(("merchant", "buyer", "both", "none"), (50, 20, 15, 15))
_PICK_EXC_REASON = _Pick(("lost", "damaged", "returned", "rejected", "address", "other"), (12, 25, 10, 8, 30, 15))
_PICK_RATING = {k: _Pick((1, 2, 3, 4, 5), w) for k, w in _RATING_W.items()}
_PICK_RATING_BAD = _Pick((1, 2, 3, 4, 5), _RATING_BAD)
_PICK_CHAT_RATING_OK = _Pick((1, 2, 3, 4, 5), (2, 2, 6, 20, 70))
_PICK_CHAT_RATING_SLOW = _Pick((1, 2, 3, 4, 5), (20, 20, 25, 20, 15))


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 40:
        return max(0, round(rng.gauss(lam, lam ** 0.5)))
    # Knuth
    limit = 2.718281828459045 ** -lam
    k, p, r = 0, 1.0, rng.random
    while True:
        p *= r()
        if p <= limit:
            return k
        k += 1


def parse_start(value: str | date) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"start: expected YYYY-MM-DD, got {value!r}") from None


class _Shop:
    __slots__ = (
        "idx", "platform", "shop_id", "abbr", "tier", "scale", "bonded_p", "direct_p", "cod_p", "fresh_p",
        "presale_p", "promise_p", "live_p", "live_boost", "virtual_p", "cancel_p", "late_p", "exact_p",
        "nolog_p", "nopickup_p", "stall_p", "exc_p", "redeliver_p", "fake_p", "refund_p", "refund_slow_p",
        "refund_vslow_p", "reject_p", "receipt_slow_p", "proof_slow_p", "review_p", "complaint_p",
        "queue_slow_p", "reply_slow_p", "reply_med", "queue_med", "bot", "agents", "carriers", "origin", "categories", "pick_rating",
    )


def _make_shop(rng: random.Random, i: int) -> _Shop:
    s = _Shop()
    s.idx = i
    s.platform = PLATFORMS[i % len(PLATFORMS)]
    s.abbr = ABBR[s.platform]
    s.shop_id = f"{s.abbr}-shop-{i // len(PLATFORMS)}"
    r = rng.random
    x = r()
    s.tier = "good" if x < 0.5 else "average" if x < 0.85 else "poor"
    poor = s.tier == "poor"
    avg = s.tier == "average"
    s.scale = rng.lognormvariate(0.0, 0.4)
    bonded, direct, cod, fresh, presale, promise, live = _PLATFORM_MIX[s.platform]
    s.bonded_p, s.direct_p, s.cod_p, s.presale_p, s.promise_p = bonded, direct, cod, presale, promise
    s.fresh_p = fresh * rng.uniform(0.3, 2.0)
    s.live_p = live
    s.live_boost = rng.uniform(0.2, 0.8)
    if i == 1:  # the first douyin shop: a big live-stream seller that gets near its daily caps
        s.scale, s.live_p, s.live_boost = 3.5, 0.9, 0.5
    s.virtual_p = 0.02
    s.cancel_p = rng.uniform(0.02, 0.05)
    s.late_p = 0.10 if poor else 0.03 if avg else 0.008
    s.exact_p = 0.003
    s.nolog_p = 0.01
    s.nopickup_p = 0.03 if poor else 0.012
    s.stall_p = 0.05 if poor else 0.025
    s.exc_p = 0.012
    s.redeliver_p = 0.04
    s.fake_p = 0.01 if poor else 0.002
    s.refund_p = 0.12 if poor else 0.08 if avg else 0.05
    s.refund_slow_p = 0.10 if poor else 0.04
    s.refund_vslow_p = 0.06 if poor else 0.015
    s.reject_p = 0.15 if poor else 0.08
    s.receipt_slow_p = 0.08 if poor else 0.03
    s.proof_slow_p = 0.2 if poor else 0.08
    s.review_p = rng.uniform(0.2, 0.4)
    s.complaint_p = 0.03 if poor else 0.012
    s.queue_slow_p = 0.08 if poor else 0.025
    s.reply_slow_p = 0.10 if poor else 0.05 if avg else 0.02
    jd = s.platform == "jd"  # JD measures 30-second replies: its shops staff for it
    s.reply_med = rng.uniform(6, 12) if jd else rng.uniform(12, 30) * (1.5 if poor else 1.0)
    s.queue_med = rng.uniform(2, 5) if jd else rng.uniform(5, 20)
    s.bot = r() < 0.6
    s.agents = tuple(f"a{k}" for k in range(1, rng.randint(2, 6)))
    s.carriers = tuple(rng.sample(_CARRIERS[:7], 3)) + (("JD",) if s.platform == "jd" else ())
    s.origin = rng.choice(_CITIES)
    s.categories = _Pick(_CATEGORIES, [rng.uniform(0.1, 1.0) for _ in _CATEGORIES])
    s.pick_rating = _PICK_RATING[s.tier]
    return s


class _Gen:
    """The world: shops, counters, and per-local-day buckets of pending events."""

    def __init__(self, seed, shops: int, days: int | None, start: date, orders_per_shop_day: float,
                 chats_per_order: float, id_prefix: str):
        if shops < 1:
            raise ValueError("shops must be >= 1")
        if days is not None and days < 0:
            raise ValueError("days must be >= 0")
        self.rng = random.Random(seed)
        self.day0 = (start - _EPOCH).days  # local day number
        self.end = None if days is None else (self.day0 + days) * D - OFF
        self.opsd = float(orders_per_shop_day)
        self.cpo = float(chats_per_order)
        self.pfx = id_prefix
        self.shops = [_make_shop(self.rng, i) for i in range(shops)]
        self.env = [(s.platform, s.shop_id) for s in self.shops]
        self.buckets: dict[int, list] = {}
        self.seq = 0
        self.n_events = 0
        self.n_orders = 0
        self.n_refunds = 0
        self.n_complaints = 0
        self.n_sessions = 0
        self._dates: dict[int, str] = {}

    # -- time ---------------------------------------------------------------------------------------------
    def datestr(self, local_day: int) -> str:
        s = self._dates.get(local_day)
        if s is None:
            s = self._dates[local_day] = (_EPOCH + timedelta(days=local_day)).isoformat()
        return s

    def fmt(self, ts: int) -> str:
        loc = ts + OFF
        day, rem = divmod(loc, D)
        s, us = divmod(rem, US)
        h, s = divmod(s, 3600)
        m, s = divmod(s, 60)
        return f"{self.datestr(day)}T{h:02d}:{m:02d}:{s:02d}.{us:06d}+08:00"

    def push(self, ts: int, typ: str, shop: int, fields: dict) -> None:
        if self.end is not None and ts >= self.end:
            return
        b = (ts + OFF) // D
        bucket = self.buckets.get(b)
        if bucket is None:
            bucket = self.buckets[b] = []
        bucket.append((ts, self.seq, typ, shop, fields))
        self.seq += 1

    def sec(self, lo: float, hi: float) -> int:
        """A uniform duration in [lo, hi] seconds, as microseconds."""
        return int((lo + (hi - lo) * self.rng.random()) * US)

    def logn(self, median_s: float, sigma: float, lo_s: float, hi_s: float) -> int:
        """A log-normal duration (median, sigma), clamped to [lo, hi] seconds, as microseconds."""
        x = median_s * self.rng.lognormvariate(0.0, sigma)
        return int((lo_s if x < lo_s else hi_s if x > hi_s else x) * US)

    @staticmethod
    def daytime(ts: int, rng: random.Random, first: int = 8, last: int = 20) -> int:
        """Move a carrier/merchant step into working hours [first, last) local time."""
        hour = ((ts + OFF) // H) % 24
        if first <= hour < last:
            return ts
        day_start = ((ts + OFF) // D) * D - OFF
        if hour >= last:
            day_start += D
        return day_start + first * H + int(rng.random() * 3 * H)

    # -- one day --------------------------------------------------------------------------------------------
    def day(self, local_day: int) -> None:
        rng = self.rng
        r = rng.random
        start = local_day * D - OFF
        weekend = (local_day + 3) % 7 >= 5  # 1970-01-01 was a Thursday
        for sh in self.shops:
            lam = self.opsd * sh.scale * (1.15 if weekend else 1.0) * (0.85 + 0.3 * r())
            for _ in range(_poisson(rng, lam)):
                self.order(sh, start + _PICK_ORDER_HOUR(r) * H + int(r() * H), False)
            if r() < sh.live_p:  # a live-stream session: a burst of orders, front-loaded
                ls = start + rng.randint(18, 21) * H + int(r() * H)
                dur = (1.5 + 2.0 * r()) * H
                for _ in range(_poisson(rng, lam * sh.live_boost)):
                    self.order(sh, ls + int(dur * r() ** 1.7), True)
            for _ in range(_poisson(rng, lam * self.cpo)):
                self.chat(sh, start + _PICK_CHAT_HOUR(r) * H + int(r() * H))

    # -- orders ---------------------------------------------------------------------------------------------
    def order(self, sh: _Shop, paid: int, live: bool) -> None:
        rng = self.rng
        r = rng.random
        push = self.push
        si = sh.idx
        self.n_orders += 1
        oid = f"{self.pfx}o{self.n_orders:08d}-{sh.abbr}"
        x = r()
        tt = "bonded" if x < sh.bonded_p else "direct_mail" if x < sh.bonded_p + sh.direct_p else "domestic"
        virtual = tt == "domestic" and r() < sh.virtual_p
        if virtual:
            cat = _VIRTUAL_CATEGORIES[int(r() * len(_VIRTUAL_CATEGORIES))]
        elif tt == "domestic" and r() < sh.fresh_p:
            cat = "fresh"
        else:
            cat = sh.categories(r)
        fresh = cat == "fresh"
        amount = _PICK_PRICE(r) * _PICK_QTY(r)
        cod = not virtual and tt == "domestic" and r() < sh.cod_p
        f = {"order_id": oid, "amount_fen": amount, "trade_type": tt, "category": cat}
        if cod:
            f["cod"] = True
        if virtual:
            f["virtual"] = True
        if live:
            f["live"] = True
        presale = False
        x = r()
        if not virtual and x < sh.presale_p:
            presale = True
            if r() < 0.5:
                ld = (paid + OFF) // D + rng.randint(2, 15)
                f["presale"] = {"ship_by": self.datestr(ld)}
                deadline = (ld + 1) * D - OFF - US  # 23:59:59 local of the ship-by date
            else:
                k = rng.randint(3, 15)
                f["presale"] = {"ship_within_days": k}
                deadline = paid + k * D
        elif not virtual and x < sh.presale_p + sh.promise_p:
            if r() < 0.5:
                deadline = (paid // US) * US + rng.choice((24, 24, 36, 48)) * H
            else:  # "ship by 18:00 tomorrow"
                deadline = ((paid + OFF) // D + rng.randint(1, 2)) * D - OFF + rng.choice((12, 16, 18, 20)) * H
            f["promised_ship_by"] = self.fmt(deadline)
        else:
            deadline = paid + _SHIP_HOURS.get((sh.platform, tt), 48) * H
        push(paid, "order.paid", si, f)

        if virtual:
            if r() < sh.refund_p * 0.6:
                reason = rng.choice(("no_reason", "not_as_described", "other"))
                self.refund(sh, oid, paid + self.logn(6 * 3600, 1.2, 300, 5 * 86400), "refund_only", reason,
                            amount, False, False)
            if r() < sh.review_p:
                self.review(sh, oid, paid + self.logn(86400, 1.0, 1800, 10 * 86400), False, False)
            return

        # Cancellation before shipping.
        if r() < sh.cancel_p * (2 if presale else 1):
            if r() < 0.75:
                tc = paid + self.logn(1800, 1.2, 60, 12 * 3600)
            else:  # late: around the ship-by time, after a warning or an overdue
                tc = deadline + self.sec(-30 * 3600, 30 * 3600)
            tc = max(tc, paid + MIN)
            push(tc, "order.cancelled", si, {"order_id": oid, "reason": rng.choice(_CANCEL_REASONS)})
            return
        # Refund before shipping (未发货仅退款): the order is closed when it completes.
        if r() < 0.01:
            end = self.refund(sh, oid, paid + self.logn(3 * 3600, 1.0, 300, 40 * 3600), "refund_only",
                              rng.choice(("no_reason", "other")), amount, cod, False, preship=True)
            if end is not None:
                push(end + US, "order.cancelled", si, {"order_id": oid, "reason": "refunded"})
            return

        # Shipping.
        window = deadline - paid
        x = r()
        late = x < sh.late_p
        if late:
            ship = deadline + self.logn(8 * 3600, 1.1, 60, 6 * 86400)
        elif x < sh.late_p + sh.exact_p:
            ship = deadline  # exactly at the latest ship time: still on time
        elif presale:
            ship = max(paid + 10 * MIN, deadline - int(window * 0.5 * r()) - MIN)
        else:
            d = self.logn(6 * 3600, 0.9, 300, 10 * 86400)
            if d >= window * 0.95:
                d = int(window * (0.2 + 0.75 * r()))
            ship = paid + d
            moved = self.daytime(ship, rng, 8, 22)
            if moved < deadline - MIN:
                ship = moved
        if r() < sh.nolog_p and tt == "domestic":
            push(ship, "order.shipped", si, {"order_id": oid, "no_logistics": True})
            if r() < sh.review_p:
                self.review(sh, oid, ship + self.logn(2 * 86400, 0.6, 3600, 10 * 86400), late, False)
            return
        if fresh:
            carrier = "SF" if r() < 0.7 else "JD"
        elif tt != "domestic":
            carrier = "EMS" if r() < 0.5 else "SF"
        else:
            carrier = sh.carriers[int(r() * len(sh.carriers))]
        tracking = f"{carrier}{rng.randrange(10**11, 10**12)}"
        push(ship, "order.shipped", si, {"order_id": oid, "carrier": carrier, "tracking_no": tracking})

        signed, trouble, last = self.deliver(sh, oid, ship, tt, fresh, cod)
        if r() < sh.fake_p or (trouble == "no_pickup" and r() < 0.5):
            push(ship + self.sec(86400, 5 * 86400), "shipment.fake_flagged", si, {"order_id": oid})
            trouble = trouble or "fake"

        bad_logistics = late or trouble is not None
        refunded = False
        if signed is None:
            if trouble != "cod_rejected" and r() < 0.7:
                reason = "not_received" if r() < 0.6 else "logistics"
                self.refund(sh, oid, last + self.sec(86400, 4 * 86400), "refund_only", reason, amount, cod,
                            fresh)
                refunded = True
            if r() < 0.15:
                self.complaint(sh, oid, last + self.sec(3600, 3 * 86400))
            return

        if r() < sh.refund_p + (0.06 if fresh else 0.0) + (0.05 if bad_logistics else 0.0):
            refunded = True
            if bad_logistics and r() < 0.4:
                reason = _PICK_REASON_LOGISTICS(r)
            elif fresh:
                reason = _PICK_REASON_FRESH(r)
            else:
                reason = _PICK_REASON_GENERAL(r)
            if reason == "spoiled":
                kind = "refund_only" if r() < 0.75 else "return_refund"
                delay = self.sec(1800, 23 * 3600) if r() < 0.8 else self.sec(25 * 3600, 72 * 3600)
            else:
                kind = _PICK_KIND(r)
                if reason in ("logistics", "not_received") and kind == "exchange":
                    kind = "return_refund"
                delay = self.logn(2 * 86400, 0.9, 3600, 15 * 86400)
            self.refund(sh, oid, signed + delay, kind, reason, amount, cod, fresh)
        if r() < sh.review_p:
            self.review(sh, oid, signed + self.logn(1.5 * 86400, 0.9, 3600, 14 * 86400), bad_logistics,
                        refunded)
        if r() < sh.complaint_p + (0.04 if late else 0.0) + (0.05 if trouble == "fake" else 0.0):
            self.complaint(sh, oid, signed + self.sec(1800, 5 * 86400))
        elif late and r() < 0.02:  # delayed-shipping complaint, filed before it shipped
            self.complaint(sh, oid, deadline + self.sec(60, max(61, (ship - deadline) / US - 1)))

    def customs(self, sh: _Shop, oid: str, t: int, loc: str) -> tuple[int, bool]:
        push, r, si = self.push, self.rng.random, sh.idx
        t += self.sec(1800, 8 * 3600)
        push(t, "shipment.customs", si, {"order_id": oid, "status": "declared", "location": loc})
        x = r()
        if x < 0.08:  # held (5%) or an exception (3%): cleared after a while, or returned
            held = x < 0.05
            t += self.sec(2 * 3600, (20 if held else 30) * 3600)
            push(t, "shipment.customs", si, {"order_id": oid, "status": "held" if held else "exception",
                                             "location": loc})
            if r() < (0.85 if held else 0.6):
                t += self.sec(86400, (5 if held else 4) * 86400)
            else:
                if held:
                    t += self.sec(3600, 2 * 86400)
                    push(t, "shipment.customs", si, {"order_id": oid, "status": "exception", "location": loc})
                t += self.sec(86400, 3 * 86400)
                push(t, "shipment.exception", si, {"order_id": oid, "reason": "returned", "location": loc})
                return t, False
        else:
            t += self.sec(3600, 20 * 3600)
        push(t, "shipment.customs", si, {"order_id": oid, "status": "cleared", "location": loc})
        return t, True

    def deliver(self, sh: _Shop, oid: str, ship: int, tt: str, fresh: bool, cod: bool):
        """The parcel's carrier scans. Returns (signed ts or None, trouble or None, last ts)."""
        rng = self.rng
        r = rng.random
        push, si = self.push, sh.idx
        trouble = None
        t = ship
        cross = tt != "domestic"
        if tt == "bonded":
            t, ok = self.customs(sh, oid, t, rng.choice(_BONDED_WH))
            if not ok:
                return None, "customs", t
        if r() < sh.nopickup_p:
            if r() < 0.45:
                return None, "no_pickup", t  # never collected
            t += self.sec(25 * 3600, 60 * 3600)  # collected late: pickup_timeout fires, then resolves
            trouble = "late_pickup"
        else:
            t += self.logn(3 * 3600, 0.8, 600, 20 * 3600)
        if tt == "direct_mail":
            abroad = rng.choice(_ABROAD)
            push(t, "shipment.picked_up", si, {"order_id": oid, "location": abroad})
            for _ in range(rng.randint(1, 2)):
                t += self.logn(20 * 3600, 0.6, 4 * 3600, 80 * 3600)
                push(t, "shipment.in_transit", si, {"order_id": oid, "location": abroad + "国际转运中心"})
            t, ok = self.customs(sh, oid, t, rng.choice(("上海浦东口岸", "广州白云口岸", "杭州萧山口岸")))
            if not ok:
                return None, "customs", t
        else:
            push(t, "shipment.picked_up", si, {"order_id": oid, "location": sh.origin})

        n = rng.randint(1, 2) if fresh else rng.randint(1, 4)
        stall_at = rng.randrange(n) if r() < sh.stall_p else -1
        exc_at = rng.randrange(n) if r() < sh.exc_p else -1
        med, hi = (4 * 3600, 12 * 3600) if fresh else (9 * 3600, 40 * 3600)
        for i in range(n):
            if i == stall_at:
                trouble = "stall"
                t += self.sec(97 * 3600, 150 * 3600) if cross else self.sec(49 * 3600, 110 * 3600)
            else:
                t += self.logn(med, 0.7, 3600, hi)
            push(t, "shipment.in_transit", si, {"order_id": oid, "location": _HUBS[int(r() * len(_HUBS))]})
            if i == stall_at and r() < 0.2:  # a second stall on the same parcel
                t += self.sec(97 * 3600, 130 * 3600) if cross else self.sec(49 * 3600, 80 * 3600)
                push(t, "shipment.in_transit", si, {"order_id": oid, "location": _HUBS[int(r() * len(_HUBS))]})
            if i == exc_at:
                reason = _PICK_EXC_REASON(r)
                t += self.sec(3600, 20 * 3600)
                push(t, "shipment.exception", si, {"order_id": oid, "reason": reason})
                if reason in ("lost", "returned", "rejected"):
                    return None, reason, t
                trouble = trouble or reason
                t += self.sec(12 * 3600, 40 * 3600)  # re-routed / repacked, then on its way
                push(t, "shipment.in_transit", si, {"order_id": oid, "location": _HUBS[int(r() * len(_HUBS))]})

        city = rng.choice(_CITIES)
        if r() < 0.05 and not cod:  # collected at a parcel locker / 驿站: no out-for-delivery scan
            t += self.sec(3 * 3600, 30 * 3600)
            push(t, "shipment.signed", si, {"order_id": oid, "location": city + "驿站"})
            return t, trouble, t
        t = self.daytime(t + self.logn(6 * 3600, 0.6, 3600, 20 * 3600), rng)
        push(t, "shipment.out_for_delivery", si, {"order_id": oid, "location": city})
        if cod and r() < 0.12:  # the buyer refuses the COD parcel at the door
            t += self.sec(600, 6 * 3600)
            push(t, "shipment.exception", si, {"order_id": oid, "reason": "rejected", "location": city})
            return None, "cod_rejected", t
        if r() < sh.redeliver_p:
            trouble = trouble or "redelivery"
            for _ in range(2 if r() < 0.1 else 1):
                t += self.sec(24 * 3600 + 600, 30 * 3600) if r() < 0.6 else self.sec(16 * 3600, 23.5 * 3600)
                push(t, "shipment.out_for_delivery", si, {"order_id": oid, "location": city})
        t += self.logn(2 * 3600, 0.8, 300, 9 * 3600)
        push(t, "shipment.signed", si, {"order_id": oid})
        return t, trouble, t

    # -- after-sale -----------------------------------------------------------------------------------------
    def refund(self, sh: _Shop, oid: str, t: int, kind: str, reason: str, amount: int, cod: bool,
               fresh: bool, preship: bool = False) -> int | None:
        """One after-sale request and its whole course. Returns the end time (completed/closed) or None."""
        rng = self.rng
        r = rng.random
        push, si = self.push, sh.idx
        self.n_refunds += 1
        rid = f"{self.pfx}r{self.n_refunds:08d}-{sh.abbr}"

        def ev(ts, typ, **extra):
            push(ts, typ, si, {"order_id": oid, "refund_id": rid, **extra})

        req = {"kind": kind, "reason": reason, "amount_fen": amount, "no_return": False}
        if reason in ("spoiled", "damaged") and (fresh or r() < 0.3):
            ratio = round(0.05 + 0.9 * r(), 2)
            req["damage_ratio"] = ratio
            if kind == "refund_only" and ratio <= 0.3:
                req["amount_fen"] = int(amount * ratio)
        if kind == "refund_only" and not preship and reason in _QUALITY and r() < 0.5:
            req["no_return"] = True
        if kind == "return_refund" and reason in _QUALITY and r() < 0.05:
            req["no_return"] = True  # merchant lets the buyer keep it (退款不退货)
        push(t, "refund.requested", si, {"order_id": oid, "refund_id": rid, **req})

        x = r()
        if x < sh.refund_vslow_p:
            if not preship and r() < 0.3:  # no answer for 48 h: the buyer gets the platform to step in
                t += self.sec(48 * 3600 + 300, 60 * 3600)
                ev(t, "refund.intervened")
                t += self.sec(3600, 3 * 86400)
                resp = _PICK_RESPONSIBLE(r)
                ev(t, "refund.judged", responsible=resp)
                t += self.sec(60, 6 * 3600)
                if resp in ("merchant", "both") or r() < 0.3:
                    ev(t, "refund.completed", amount_fen=req["amount_fen"])
                else:
                    ev(t, "refund.closed")
                return t
            t += self.sec(48 * 3600 + 300, 80 * 3600)
        elif x < sh.refund_vslow_p + sh.refund_slow_p:
            t += self.sec(36 * 3600 + 300, 47.9 * 3600)
        else:
            t += self.logn(3 * 3600, 1.1, 120, 30 * 3600)

        if not preship and r() < sh.reject_p:
            ev(t, "refund.rejected", note=rng.choice(_REJECT_NOTES))
            x = r()
            if x < 0.6:  # the buyer asks the platform to step in
                t += self.sec(3600, 72 * 3600)
                ev(t, "refund.intervened")
                t += self.sec(86400, 5 * 86400)
                resp = _PICK_RESPONSIBLE(r)
                ev(t, "refund.judged", responsible=resp)
                t += self.sec(60, 6 * 3600)
                if resp in ("merchant", "both"):
                    ev(t, "refund.completed", amount_fen=req["amount_fen"])
                else:
                    ev(t, "refund.closed")
                return t
            if x < 0.85:  # the buyer gives up; the platform closes it
                t += self.sec(86400, 7 * 86400)
                ev(t, "refund.closed")
                return t
            t += self.sec(2 * 3600, 48 * 3600)  # the merchant reconsiders
        ev(t, "refund.approved")

        def settle(t: int, proof_min: int, median: int, most: int) -> int:
            """The money goes back: a COD refund's proof first (slow at times), then the refund."""
            if cod:
                t += self.sec(proof_min, 40 * 3600) if r() > sh.proof_slow_p else self.sec(49 * 3600, 80 * 3600)
                ev(t, "refund.proof_uploaded")
            t += self.logn(median, 1.2, 5, most)
            ev(t, "refund.completed", amount_fen=req["amount_fen"])
            return t

        if kind == "refund_only" or req["no_return"]:
            return settle(t, 3600, 600, 4 * 3600)

        # A return: the buyer ships it back (or never does).
        if r() < 0.08:
            t += self.sec(7 * 86400, 7 * 86400 + 3600)
            ev(t, "refund.closed")
            return t
        t += self.logn(20 * 3600, 0.9, 1800, 6 * 86400)
        shipped = t
        ev(t, "refund.return_shipped", tracking_no=f"{rng.choice(_CARRIERS[:6])}{rng.randrange(10**11, 10**12)}")
        t += self.sec(86400, 4 * 86400)
        ev(t, "refund.return_signed")
        x = r()
        if x < sh.receipt_slow_p * 0.5:
            t = max(t + MIN, shipped + self.sec(7 * 86400 + 600, 8 * 86400))
        elif x < sh.receipt_slow_p:
            t = max(t + MIN, shipped + self.sec(6 * 86400 + 600, 7 * 86400 - 600))
        else:
            t += self.logn(8 * 3600, 1.0, 600, 3 * 86400)
        ev(t, "refund.received")
        if r() < 0.05:  # a dispute over the returned goods' condition
            t += self.sec(3600, 48 * 3600)
            ev(t, "refund.intervened")
            t += self.sec(86400, 4 * 86400)
            ev(t, "refund.judged", responsible=_PICK_RESPONSIBLE(r))
        if kind == "exchange":  # the replacement goes out; no money moves
            t += self.sec(3600, 48 * 3600)
            ev(t, "refund.closed")
            return t
        return settle(t, 1800, 1800, 12 * 3600)

    def review(self, sh: _Shop, oid: str, t: int, bad_logistics: bool, bad_product: bool) -> None:
        r = self.rng.random
        for k in range(2 if r() < 0.05 else 1):  # 追评: some orders are reviewed twice
            if k:
                t += self.sec(86400, 15 * 86400)
            f = {"order_id": oid, "product_rating": (_PICK_RATING_BAD if bad_product else sh.pick_rating)(r)}
            if r() < 0.85:
                f["service_rating"] = sh.pick_rating(r)
            if r() < 0.7:
                f["logistics_rating"] = (_PICK_RATING_BAD if bad_logistics else sh.pick_rating)(r)
            self.push(t, "review.posted", sh.idx, f)

    def complaint(self, sh: _Shop, oid: str, t: int) -> None:
        r = self.rng.random
        self.n_complaints += 1
        cid = f"{self.pfx}c{self.n_complaints:07d}-{sh.abbr}"
        self.push(t, "complaint.filed", sh.idx, {"order_id": oid, "complaint_id": cid})
        if r() < 0.85:
            malicious = r() < 0.2
            resp = ("buyer" if r() < 0.7 else "none") if malicious else _PICK_COMPLAINT_RESP(r)
            self.push(t + self.sec(86400, 6 * 86400), "complaint.judged", sh.idx,
                      {"order_id": oid, "complaint_id": cid, "responsible": resp, "malicious": malicious})

    # -- consultations --------------------------------------------------------------------------------------
    def chat(self, sh: _Shop, t: int) -> None:
        rng = self.rng
        r = rng.random
        push, si = self.push, sh.idx
        self.n_sessions += 1
        sid = f"{self.pfx}s{self.n_sessions:08d}-{sh.abbr}"

        def msg(ts, sender):
            push(ts, "chat.message", si, {"session_id": sid, "sender": sender})

        push(t, "chat.started", si, {"session_id": sid, "buyer_id": f"b{rng.randrange(1, 200000)}"})
        hour = ((t + OFF) // H) % 24
        night = hour >= 23 or hour < 9
        if r() < 0.1:
            t += self.sec(0.05, 1)
            msg(t, "system")  # order card / greeting
        if r() < 0.03:  # opened and left without a word
            t += self.sec(60, 900)
            push(t, "chat.closed", si, {"session_id": sid})
            return
        assigned_at = None
        bot_only = sh.bot and r() < 0.08
        if not bot_only:
            slow_q = r() < sh.queue_slow_p * (3 if night else 1)
            queue = self.sec(181, 900) if slow_q else self.logn(sh.queue_med, 0.9, 1, 170)
            assigned_at = t + queue
            agent = sh.agents[int(r() * len(sh.agents))]
        slow_p = sh.reply_slow_p * (3 if night else 1)
        slow_seen = False
        turns = 1 + min(7, int(rng.expovariate(0.7)))
        unanswered_last = r() < 0.03
        t += self.sec(1, 25)
        for k in range(turns):
            for j in range(1 if r() < 0.5 else rng.randint(2, 3)):
                if j:
                    t += self.sec(2, 40)
                msg(t, "buyer")
            if sh.bot and k == 0 and r() < 0.4:
                msg(t + self.sec(0.3, 2), "bot")
            if bot_only or (unanswered_last and k == turns - 1):
                t += self.sec(1, 5)
                break
            if r() < slow_p:
                slow_seen = True
                delay = self.sec(181, 1200)
            else:
                delay = self.logn(sh.reply_med, 0.8, 2, 175)
            t = max(t + delay, assigned_at + self.sec(2, 10))
            for _ in range(1 if r() < 0.7 else 2):
                msg(t, "agent")
                t += self.sec(3, 30)
            t += self.logn(30, 0.9, 3, 600)  # the buyer reads and types
        t += self.sec(60, 1200)
        if assigned_at is not None and assigned_at < t:  # else the buyer left the queue first
            push(assigned_at, "chat.assigned", si, {"session_id": sid, "agent_id": agent})
        push(t, "chat.closed", si, {"session_id": sid})
        if r() < 0.35:
            pick = _PICK_CHAT_RATING_SLOW if slow_seen or bot_only else _PICK_CHAT_RATING_OK
            push(t + self.sec(5, 600), "chat.rated", si, {"session_id": sid, "rating": pick(r)})

    # -- emission -------------------------------------------------------------------------------------------
    def emit(self, local_day: int) -> Iterator[dict]:
        bucket = self.buckets.pop(local_day, None)
        if not bucket:
            return
        bucket.sort()  # by (ts, seq): the seq is unique, so it never compares further
        ds = self.datestr(local_day)
        base = local_day * D - OFF
        env = self.env
        pfx = self.pfx + "e"
        n = self.n_events
        for ts, _, typ, si, fields in bucket:
            s, us = divmod(ts - base, US)
            h, s = divmod(s, 3600)
            m, s = divmod(s, 60)
            n += 1
            self.n_events = n
            p, shop_id = env[si]
            ev = {"event_id": f"{pfx}{n:09d}", "type": typ, "ts": f"{ds}T{h:02d}:{m:02d}:{s:02d}.{us:06d}+08:00",
                  "platform": p, "shop_id": shop_id}
            ev.update(fields)
            yield ev


def generate(seed: int | str = 42, shops: int = DEFAULT_SHOPS, days: int | None = DEFAULT_DAYS,
             start: str | date = DEFAULT_START, *, orders_per_shop_day: float = DEFAULT_ORDERS_PER_SHOP_DAY,
             chats_per_order: float = DEFAULT_CHATS_PER_ORDER, id_prefix: str = "") -> Iterator[dict]:
    """Valid events, as contract dicts, sorted by ``ts`` (ties in generation order).

    ``shops`` shops spread round-robin over the five platforms, ``days`` local
    days from ``start`` (00:00 +08:00); ``days=None`` never ends. About
    ``orders_per_shop_day`` orders per shop and day (each shop has its own
    scale) and ``chats_per_order`` consultations per order. ``id_prefix``
    prefixes every id (event, order, refund, complaint, session), to keep two
    runs apart on one cluster.
    """
    g = _Gen(seed, shops, days, parse_start(start), orders_per_shop_day, chats_per_order, id_prefix)
    d = g.day0
    last = None if days is None else g.day0 + days
    while last is None or d < last:
        g.day(d)
        yield from g.emit(d)
        d += 1
