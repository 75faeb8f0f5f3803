"""Per-order logic: the order, its parcel, its reviews, complaints and refunds.

Everything keyed by ``order_id`` (shop.orders, shop.shipments, shop.refunds are
co-partitioned) lives in one ``OrderState``. Facts that may happen more than
once keep the earliest ``ts`` (rules.md §1), so indicator items depend only on
the set of events seen, never on their arrival order.

Alert lifecycle (rules.md §8): a timer checks its condition when it fires; an
event that ends the condition before then cancels it (the timer is no longer
wanted by ``timers``); one that ends it later resolves the alert with ``at`` =
that event's ``ts``.

Choices where the spec is silent (written down here):
- "Orders due" leave out an order cancelled before its latest ship time without
  having shipped by then (§3); one cancelled later, unshipped, counts as late.
- Package alerts need no ``order.paid``: scans of an order whose payment has not
  arrived yet are watched with the domestic thresholds until it does.
- Any carrier scan ends a pending ``delivery_timeout`` (its resolving event);
  only a new ``out_for_delivery`` starts the next one.
- 坏单包赔 payouts use the order's ``amount_fen`` (the refund's when the order
  is unknown).
- Ties of "the earliest" are broken without arrival order: two reviews with the
  same ``ts`` (or two rulings of one complaint) by ``event_id``, two first
  after-sale requests by ``refund_id``.
"""

from __future__ import annotations

from shopwatch.schemas.events import LOGISTICS_REASONS, QUALITY_REASONS

from .alerts import NUMBERED, make_alert, order_summary, refund_summary, resolved_summary
from .clock import DAY_US, HOUR_US, fmt_ts
from .effects import Effects
from .entity import EntityDocuments, admit, update_items
from .rules import Rules
from .ship_deadline import latest_ship_time_us

_ENDS = ("completed", "closed")
_MERCHANT_STEPS = ("approved", "rejected", "intervened", "completed", "closed")
_BLAME = ("merchant", "both")

# ------------------------------------------------------------------ documents
#
# An order's table document ("s" of its partition document) is a list, format 1:
# positions instead of field names, the format number first, instants (but
# ``first_us``) as offsets from ``first_us``, flags as 0/1, empty or unset fields
# at the end left out, and the indicator ``items`` not stored at all: they are a
# function of the other facts (``OrderLogic.items``, which the logic keeps equal
# to ``items`` after every step), recomputed by ``restore``. ``restore`` also
# takes the dict of the first documents (field names, items included).
DOC_FORMAT = 1

# Short forms of format 1: a value in one of these tables is stored as its index,
# any other value as itself (these fields hold strings, so an int is always an
# index). Frozen: a new value goes at the end of its table, never in between.
_PLATFORMS = ("xiaohongshu", "douyin", "kuaishou", "jd", "tmall")
_TRADE_TYPES = ("domestic", "bonded", "direct_mail")
_REFUND_KINDS = ("refund_only", "return_refund", "exchange")
_REFUND_REASONS = ("no_reason", "quality", "not_as_described", "damaged", "spoiled", "wrong_item", "counterfeit",
                   "logistics", "not_received", "other")
_RESPONSIBLE = ("merchant", "buyer", "both", "none")
_REFUND_STEPS = ("requested", "approved", "rejected", "return_shipped", "return_signed", "received", "intervened",
                 "judged", "completed", "closed", "proof_uploaded")
_PLATFORM_CODE = {v: i for i, v in enumerate(_PLATFORMS)}
_TRADE_CODE = {v: i for i, v in enumerate(_TRADE_TYPES)}
_KIND_CODE = {v: i for i, v in enumerate(_REFUND_KINDS)}
_REASON_CODE = {v: i for i, v in enumerate(_REFUND_REASONS)}
_RESP_CODE = {v: i for i, v in enumerate(_RESPONSIBLE)}
_STEP_CODE = {v: i for i, v in enumerate(_REFUND_STEPS)}
_PAID_KEYS = frozenset(("amount_fen", "trade_type", "category", "cod", "virtual", "live"))
_ORDER_FIELDS = 29  # elements of a complete format-1 order document


def pack_ids(ids) -> str | list:
    """A set of ids (event ids) as one string: their common prefix, then what follows it in
    each id, sorted, space-separated ("e0000 11189 7162" for e000011189 and e00007162); a
    sorted list when an id holds a space, or there is none."""
    ids = sorted(ids)
    if not ids:
        return []
    a, z = ids[0], ids[-1]  # (sorted: the common prefix of all is theirs)
    lo, hi = 0, min(len(a), len(z))
    while lo < hi:  # the length of that prefix, by bisection (few string compares, no loop per character)
        mid = (lo + hi + 1) >> 1
        if a[:mid] == z[:mid]:
            lo = mid
        else:
            hi = mid - 1
    j = " " + " ".join(ids)
    if j.count(" ") != len(ids):
        return ids  # an id holds a space
    prefix = a[:lo]
    # every space starts an id, and every id starts with the prefix
    return prefix + j.replace(" " + prefix, " ") if prefix else j


def unpack_ids(x) -> set:
    if type(x) is str:
        parts = x.split(" ")
        prefix = parts[0]
        return {prefix + rest for rest in parts[1:]}
    return set(x)


def time_offset(t: int | None, b: int) -> int | None:
    """A time as stored in a document: its offset from the base ``b`` (None stays None)."""
    return None if t is None else t - b


def time_at(o: int | None, b: int) -> int | None:
    """A stored offset from the base ``b`` back as a time (None stays None)."""
    return None if o is None else o + b


def restore_head(cls, key: str, p, shop_id, seen, first, ver):
    """A new state of ``cls`` with the fields every entity document starts with."""
    s = cls(key)
    s.platform = _PLATFORMS[p] if type(p) is int else p
    s.shop_id = shop_id
    s.seen = unpack_ids(seen)
    s.first_us = first
    s.ver = ver
    return s


def _pack_paid(p: dict):
    if p.keys() != _PAID_KEYS:
        return p  # (not built by on_event: kept as it is)
    cod, virtual, live = p["cod"], p["virtual"], p["live"]
    tt = p["trade_type"]
    flags = (cod + 2 * virtual + 4 * live if type(cod) is bool and type(virtual) is bool and type(live) is bool
             else [cod, virtual, live])
    return [p["amount_fen"], _TRADE_CODE.get(tt, tt), p["category"], flags]


def _unpack_paid(x) -> dict:
    if type(x) is dict:
        return x
    amount, tt, category, flags = x
    if type(flags) is int:
        cod, virtual, live = bool(flags & 1), bool(flags & 2), bool(flags & 4)
    else:
        cod, virtual, live = flags
    return {"amount_fen": amount, "trade_type": _TRADE_TYPES[tt] if type(tt) is int else tt, "category": category,
            "cod": cod, "virtual": virtual, "live": live}


def _short_key(k: str, suffix: str, n: int) -> str:
    """An alert key "kind|subject" without "|order_id" when that is its subject (kinds hold no "|")."""
    if k.endswith(suffix):
        short = k[:-n]
        if "|" not in short:
            return short
    return k


class Refund:
    __slots__ = ("rid", "kind", "reason", "no_return", "amount", "damage_ratio", "t", "seq", "responsible",
                 "judged_us", "judged_eid")

    def __init__(self, rid: str) -> None:
        self.rid = rid
        self.kind = None
        self.reason = None
        self.no_return = False
        self.amount = None
        self.damage_ratio = None
        self.t: dict[str, int] = {}  # refund step -> earliest ts_us
        self.seq: list[list] = []  # [ts_us, step] of every step, for awaiting-buyer time
        self.responsible = None
        self.judged_us = None
        self.judged_eid = None  # breaks a tie between two rulings at one instant

    @property
    def requested_us(self):
        return self.t.get("requested")

    @property
    def end_us(self):
        t = self.t
        c, x = t.get("completed"), t.get("closed")
        if c is None:
            return x
        return c if x is None or c <= x else x

    def merchant_step_us(self):
        ts = [self.t[s] for s in _MERCHANT_STEPS if s in self.t]
        return min(ts) if ts else None

    def awaiting_buyer_us(self) -> int:
        """待用户处理时长 (rules.md §3)."""
        end = self.end_us
        total, since, mode = 0, None, None
        for ts, step in sorted(self.seq):
            if end is not None and ts > end:
                break
            if step in ("approved", "rejected"):
                if since is None:
                    since, mode = ts, step
            elif step == "return_shipped" or (step == "intervened" and mode == "rejected"):
                if since is not None:
                    total += ts - since
                    since = mode = None
            elif step in _ENDS:
                break
        if since is not None and end is not None:
            total += end - since
        return total

    def snapshot(self) -> dict:
        """The dict of the first documents (kept for tests and tools; orders store ``pack``)."""
        return {k: getattr(self, k) for k in self.__slots__}

    @classmethod
    def restore(cls, d: dict) -> Refund:
        r = cls(d["rid"])
        for k in cls.__slots__:
            setattr(r, k, d[k])
        return r

    def pack(self, b: int) -> list:
        """Format 1, instants as offsets from ``b``: [rid, kind, reason, no_return, amount,
        damage_ratio, steps, responsible, judged_us, judged_eid], trailing nulls left out;
        steps flat ([ts, step, ts, step, ...]); ``t`` is left out (the earliest ts of each step)."""
        seq = []
        for ts, step in self.seq:
            seq.append(ts - b)
            seq.append(_STEP_CODE.get(step, step))
        kind, reason, resp, judged = self.kind, self.reason, self.responsible, self.judged_us
        d = [self.rid, _KIND_CODE.get(kind, kind), _REASON_CODE.get(reason, reason), 1 if self.no_return else 0,
             self.amount, self.damage_ratio, seq, _RESP_CODE.get(resp, resp),
             None if judged is None else judged - b, self.judged_eid]
        while d[-1] is None:
            d.pop()
        return d

    @classmethod
    def unpack(cls, d: list, b: int) -> Refund:
        n = len(d)
        if n < 10:
            d = [*d, *(None,) * (10 - n)]
        rid, kind, reason, no_return, amount, ratio, flat, resp, judged, judged_eid = d
        r = cls(rid)
        r.kind = _REFUND_KINDS[kind] if type(kind) is int else kind
        r.reason = _REFUND_REASONS[reason] if type(reason) is int else reason
        r.no_return = bool(no_return)
        r.amount = amount
        r.damage_ratio = ratio
        t = r.t
        seq = r.seq
        for i in range(0, len(flat), 2):
            ts, step = flat[i] + b, flat[i + 1]
            if type(step) is int:
                step = _REFUND_STEPS[step]
            seq.append([ts, step])
            if step not in t or ts < t[step]:  # as _on_refund keeps it
                t[step] = ts
        r.responsible = _RESPONSIBLE[resp] if type(resp) is int else resp
        r.judged_us = None if judged is None else judged + b
        r.judged_eid = judged_eid
        return r


class OrderState(EntityDocuments):
    __slots__ = (
        "order_id", "platform", "shop_id", "seen", "first_us",
        "paid", "paid_us", "lst_us", "due_passed",
        "shipped_us", "carrier", "tracking_no", "no_logistics", "cancelled_us", "fake_us",
        "first_scan_us", "last_scan_us", "scans", "last_ofd_us", "signed_us",
        "review", "complaints", "refunds",
        "open", "count", "done", "marks", "items", "ver",
    )

    def __init__(self, order_id: str) -> None:
        self.order_id = order_id
        self._init_entity()
        self.paid = None  # the order.paid facts (dict)
        self.paid_us = None
        self.lst_us = None
        self.due_passed = False
        self.shipped_us = None
        self.carrier = None
        self.tracking_no = None
        self.no_logistics = False
        self.cancelled_us = None
        self.fake_us = None
        self.first_scan_us = None
        self.last_scan_us = None
        self.scans = 0
        self.last_ofd_us = None
        self.signed_us = None
        self.review = None  # [ts_us, product, service, event_id] of the earliest review
        self.complaints: dict[str, list] = {}  # id -> [filed_us, judged_us, responsible, malicious, judged eid]
        self.refunds: dict[str, Refund] = {}
        self.open: dict[str, str] = {}  # "kind|subject" -> alert_id firing now
        self.count: dict[str, int] = {}  # "kind|subject" -> instances so far
        self.done: set[str] = set()  # one-shot "kind|subject" already fired
        self.marks: dict[str, int] = {}  # scan count at which a numbered alert last fired
        self.items: dict[str, tuple] = {}
        self.ver = 0  # how many times the items changed: the version a shop has applied

    def snapshot(self) -> list:
        """The state as a table document, format 1 (a JSON-able list; see "documents" above):
        [1, order_id, platform, shop_id, seen, first_us, ver, paid, paid_us, lst_us, due_passed,
        shipped_us, carrier, tracking_no, no_logistics, first_scan_us, last_scan_us, scans,
        last_ofd_us, signed_us, cancelled_us, fake_us, review, complaints, refunds, open, count,
        done, marks]. Built from fresh lists only: nothing in it is shared with the state."""
        b = self.first_us or 0
        rel = time_offset
        p = self.platform
        paid = self.paid
        d = [DOC_FORMAT, self.order_id, _PLATFORM_CODE.get(p, p), self.shop_id, pack_ids(self.seen), self.first_us,
             self.ver, None if paid is None else _pack_paid(paid), rel(self.paid_us, b), rel(self.lst_us, b),
             1 if self.due_passed else 0, rel(self.shipped_us, b), self.carrier, self.tracking_no,
             1 if self.no_logistics else 0, rel(self.first_scan_us, b), rel(self.last_scan_us, b), self.scans,
             rel(self.last_ofd_us, b), rel(self.signed_us, b), rel(self.cancelled_us, b), rel(self.fake_us, b)]
        # the rarely set ones: null when unset or empty (and left out at the end)
        rv = self.review
        d.append(None if rv is None else [rv[0] - b, rv[1], rv[2], rv[3]])
        if self.complaints:
            flat = []
            for cid, (filed, judged, resp, malicious, eid) in self.complaints.items():
                flat += (cid, rel(filed, b), rel(judged, b), resp, malicious, eid)
            d.append(flat)
        else:
            d.append(None)
        d.append([r.pack(b) for r in self.refunds.values()] if self.refunds else None)
        if self.open or self.count or self.done or self.marks:
            suffix = "|" + self.order_id
            n = len(suffix)
            count = self.count
            opened = []
            for key, alert_id in self.open.items():
                kind, _, subject = key.partition("|")
                base = f"{kind}:{p}:{subject}"
                short = _short_key(key, suffix, n)
                # the alert id is the one _fire makes from the key: stored only when it is not
                opened.append(short if alert_id == (f"{base}:{count.get(key)}" if kind in NUMBERED else base)
                              else [short, alert_id])
            d.append(opened or None)
            d.append({_short_key(k, suffix, n): c for k, c in count.items()} if count else None)
            d.append(sorted(_short_key(k, suffix, n) for k in self.done) if self.done else None)
            d.append(dict(self.marks) if self.marks else None)
        return self._trimmed(d)

    _key, _what, _format, _fields = "order_id", "order", DOC_FORMAT, _ORDER_FIELDS

    @classmethod
    def _restore_fields(cls, d: list) -> OrderState:
        (_f, oid, p, shop_id, seen, first, ver, paid, paid_us, lst, due_passed, shipped, carrier, tracking_no,
         no_logistics, fscan, lscan, scans, ofd, signed, canc, fake, review, complaints, refunds, opened, count,
         done, marks) = d
        b = first or 0
        s = restore_head(cls, oid, p, shop_id, seen, first, ver)
        p = s.platform
        if paid is not None:
            s.paid = _unpack_paid(paid)
        s.paid_us = time_at(paid_us, b)
        s.lst_us = time_at(lst, b)
        s.due_passed = bool(due_passed)
        s.shipped_us = time_at(shipped, b)
        s.carrier = carrier
        s.tracking_no = tracking_no
        s.no_logistics = bool(no_logistics)
        s.first_scan_us = time_at(fscan, b)
        s.last_scan_us = time_at(lscan, b)
        s.scans = scans
        s.last_ofd_us = time_at(ofd, b)
        s.signed_us = time_at(signed, b)
        s.cancelled_us = time_at(canc, b)
        s.fake_us = time_at(fake, b)
        if review is not None:
            s.review = [review[0] + b, review[1], review[2], review[3]]
        if complaints:
            cs = s.complaints
            for i in range(0, len(complaints), 6):
                cid, filed, judged, resp, malicious, eid = complaints[i:i + 6]
                cs[cid] = [time_at(filed, b), time_at(judged, b), resp, malicious, eid]
        if refunds:
            s.refunds = {r.rid: r for r in (Refund.unpack(x, b) for x in refunds)}
        suffix = "|" + oid
        if count:
            s.count = {(k if "|" in k else k + suffix): c for k, c in count.items()}
        if opened:
            for e in opened:
                if type(e) is str:
                    key = e if "|" in e else e + suffix
                    kind, _, subject = key.partition("|")
                    alert_id = f"{kind}:{p}:{subject}"
                    if kind in NUMBERED:
                        alert_id = f"{alert_id}:{s.count.get(key)}"
                else:
                    key = e[0] if "|" in e[0] else e[0] + suffix
                    alert_id = e[1]
                s.open[key] = alert_id
        if done:
            s.done = {(k if "|" in k else k + suffix) for k in done}
        if marks:
            s.marks = dict(marks)
        # the items the logic keeps (OrderLogic.items of these facts; none before the first event)
        s.items = OrderLogic.items(s) if ver else {}
        return s

    def snapshot_dict(self) -> dict:
        """The dict of the first documents (field names, items included), which ``restore``
        still takes: what existing tables and changelogs hold."""
        d = self._dict_head()
        d["done"] = sorted(self.done)
        d["refunds"] = {k: r.snapshot() for k, r in self.refunds.items()}
        return d

    @classmethod
    def _restore_dict(cls, d: dict) -> OrderState:
        s = super()._restore_dict(d)
        s.done = set(d["done"])
        s.refunds = {k: Refund.restore(r) for k, r in d["refunds"].items()}
        return s

    @property
    def physical(self) -> bool:
        return self.paid is None or not self.paid.get("virtual")

    @property
    def shipping_excluded(self) -> bool:
        """Cancelled before its latest ship time without having shipped (§3 "orders due")."""
        c = self.cancelled_us
        return c is not None and c < self.lst_us and (self.shipped_us is None or c < self.shipped_us)


class OrderLogic:
    """Hot path notes. The indicator items are recomputed only after a step that
    changed a fact ``items`` reads (platform, first_us, paid, shipped, cancelled,
    signed, fake, review, refunds, complaints, due_passed; not the scans' other
    facts nor the alerts' bookkeeping): most scans change none.
    ``on_timer`` checks only the timer it is asked about (``_due``), and after
    any timer but ``ship_overdue`` (the only one that changes such a fact) the
    items stay as they were."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self._pr: dict = {}  # platform -> PlatformRules

    new_state = OrderState
    has_timers = True

    def _platform_rules(self, platform: str):
        pr = self._pr.get(platform)
        if pr is None:
            pr = self._pr[platform] = self.rules.for_platform(platform)
        return pr

    # ------------------------------------------------------------------ events
    def on_event(self, s: OrderState, ev: dict, fx: Effects) -> None:
        changed = admit(s, ev)  # whether a fact the items read changed (first_us moved)
        if changed is None:
            return
        ts = ev["ts_us"]
        eid = ev["event_id"]
        kind, _, step = ev["type"].partition(".")
        if kind == "shipment":
            if self._on_shipment(s, ev, step, ts, fx):
                changed = True
        elif kind == "order":
            if step == "paid":
                if s.paid_us is None or ts < s.paid_us:
                    g = ev.get
                    s.paid = {"amount_fen": g("amount_fen"), "trade_type": g("trade_type"), "category": g("category"),
                              "cod": g("cod"), "virtual": g("virtual"), "live": g("live")}
                    s.paid_us = ts
                    s.lst_us = latest_ship_time_us(ev, self._platform_rules(s.platform))
                    changed = True
            elif step == "shipped":
                if s.shipped_us is None or ts < s.shipped_us:
                    s.shipped_us = ts
                    s.no_logistics = bool(ev.get("no_logistics"))
                    s.carrier = ev.get("carrier") or s.carrier
                    s.tracking_no = ev.get("tracking_no") or s.tracking_no
                    changed = True
            elif step == "cancelled":
                if s.cancelled_us is None or ts < s.cancelled_us:
                    s.cancelled_us = ts
                    changed = True
        elif kind == "refund":
            self._on_refund(s, ev, step, ts)
            changed = True
        elif kind == "review":
            if s.review is None or (ts, eid) < (s.review[0], s.review[3]):  # ties: by event_id
                s.review = [ts, ev["product_rating"], ev.get("service_rating"), eid]
                changed = True
        elif kind == "complaint":
            c = s.complaints.setdefault(ev["complaint_id"], [None, None, None, False, None])
            if step == "filed":
                if c[0] is None or ts < c[0]:
                    c[0] = ts
            else:
                if c[1] is None or (ts, eid) < (c[1], c[4]):  # ties: by event_id
                    c[1], c[2], c[4] = ts, ev["responsible"], eid
                c[3] = c[3] or bool(ev.get("malicious"))
            changed = True
        if s.open:
            self._resolve(s, ev, step, ts, fx)
        if s.refunds:
            self._fire_on_event(s, fx)
        # alerts (open, done, count, marks) and scan facts are not read by ``items``
        if changed:
            self._update_items(s, self._effective_us(s, ev, step, ts), fx)

    @staticmethod
    def _effective_us(s: OrderState, ev: dict, step: str, ts: int) -> int:
        """When the change an event makes to the indicators takes effect.

        A judgment about a past fact rewrites that fact where it stood: the
        platform flagging a shipment fake (虚假发货) makes it a fake shipment as of
        its shipping, and a complaint judged malicious never counted. Everything
        else takes effect at its own ``ts`` (a review posted later is new).
        """
        if step == "fake_flagged" and s.shipped_us is not None:
            return min(ts, s.shipped_us)
        if step == "judged" and ev["type"] == "complaint.judged" and ev.get("malicious"):
            filed = s.complaints[ev["complaint_id"]][0]
            if filed is not None:
                return min(ts, filed)
        return ts

    def _on_shipment(self, s: OrderState, ev: dict, step: str, ts: int, fx: Effects) -> bool:
        """Apply a shipment event; True when it changed a fact ``items`` reads (fake_us, signed_us)."""
        if step == "fake_flagged":
            if s.fake_us is None or ts < s.fake_us:
                s.fake_us = ts
                return True
            return False
        if ev.get("tracking_no") and not s.tracking_no:
            s.tracking_no = ev["tracking_no"]
        s.scans += 1
        if s.first_scan_us is None or ts < s.first_scan_us:
            s.first_scan_us = ts
        if s.last_scan_us is None or ts >= s.last_scan_us:
            s.last_scan_us = ts
        if step == "signed":
            if s.signed_us is None or ts < s.signed_us:
                s.signed_us = ts
                return True
        elif step == "out_for_delivery":
            if s.last_ofd_us is None or ts >= s.last_ofd_us:
                s.last_ofd_us = ts
        elif s.paid is not None and s.paid.get("virtual"):  # not s.physical: package alerts concern
            return False  # physical orders only (rules.md §1)
        elif step == "customs":
            if ev["status"] in ("held", "exception") and ("customs_exception|" + s.order_id) not in s.open:
                self._fire(s, "customs_exception", s.order_id, ts, None, fx, {"status": ev["status"]})
        elif step == "exception":
            if ("carrier_exception|" + s.order_id) not in s.open:
                self._fire(s, "carrier_exception", s.order_id, ts, None, fx, {"reason": ev.get("reason")})
        return False

    def _on_refund(self, s: OrderState, ev: dict, step: str, ts: int) -> None:
        rid = ev["refund_id"]
        r = s.refunds.get(rid)
        if r is None:
            r = s.refunds[rid] = Refund(rid)
        if step == "requested" and (r.requested_us is None or ts < r.requested_us):
            r.kind, r.reason, r.no_return = ev["kind"], ev.get("reason"), bool(ev.get("no_return"))
            r.amount, r.damage_ratio = ev.get("amount_fen"), ev.get("damage_ratio")
        elif step == "judged" and (r.judged_us is None or (ts, ev["event_id"]) < (r.judged_us, r.judged_eid)):
            r.judged_us, r.judged_eid, r.responsible = ts, ev["event_id"], ev["responsible"]
        if step not in r.t or ts < r.t[step]:
            r.t[step] = ts
        r.seq.append([ts, step])

    # ------------------------------------------------------------------ alerts
    def _fire(self, s: OrderState, kind: str, subject: str, at_us: int, due_us, fx: Effects, extra: dict,
              refund: Refund | None = None) -> None:
        key = kind + "|" + subject
        base = f"{kind}:{s.platform}:{subject}"
        if kind in NUMBERED:
            n = s.count.get(key, 0) + 1
            s.count[key] = n
            alert_id = f"{base}:{n}"
            s.marks[kind] = s.scans
        else:
            if key in s.done:
                return
            s.done.add(key)
            alert_id = base
        s.open[key] = alert_id
        details = dict(extra)
        if refund is None:
            facts = {"order_id": s.order_id, "live": bool(s.paid and s.paid.get("live")), "carrier": s.carrier,
                     "tracking_no": s.tracking_no, "lst_us": s.lst_us}
            summary = order_summary(kind, facts, due_us, extra)
            fx.alerts.append(make_alert(kind, "firing", s.platform, s.shop_id, alert_id, at_us, summary,
                                        order_id=s.order_id, due_us=due_us, details=_public(details)))
        else:
            summary = refund_summary(kind, refund.rid, s.order_id, due_us, extra)
            fx.alerts.append(make_alert(kind, "firing", s.platform, s.shop_id, alert_id, at_us, summary,
                                        order_id=s.order_id, refund_id=refund.rid, due_us=due_us,
                                        details=_public(details)))

    def _close(self, s: OrderState, key: str, at_us: int, fx: Effects) -> None:
        alert_id = s.open.pop(key)
        kind, subject = key.split("|", 1)
        is_refund = subject != s.order_id
        fx.alerts.append(make_alert(kind, "resolved", s.platform, s.shop_id, alert_id, at_us,
                                    resolved_summary(kind, subject), order_id=s.order_id,
                                    refund_id=subject if is_refund else None))

    def _resolve(self, s: OrderState, ev: dict, step: str, ts: int, fx: Effects) -> None:
        if not s.open:
            return
        t = ev["type"]
        is_scan = t.startswith("shipment.") and step != "fake_flagged"
        for key in list(s.open):
            kind, subject = key.split("|", 1)
            end = False
            if kind in ("ship_warning", "ship_overdue"):
                end = s.shipped_us is not None or s.cancelled_us is not None
            elif kind == "pickup_timeout":
                end = s.first_scan_us is not None
            elif kind in ("transit_timeout", "delivery_timeout"):
                end = is_scan and s.scans > s.marks.get(kind, 0)
            elif kind == "customs_exception":
                end = step == "signed" or (step == "customs" and ev.get("status") == "cleared")
            elif kind == "carrier_exception":
                end = s.signed_us is not None
            else:
                r = s.refunds.get(subject)
                if r is None:
                    continue
                if kind.startswith("refund_response"):
                    end = r.merchant_step_us() is not None
                elif kind.startswith("return_receipt"):
                    end = "received" in r.t or r.end_us is not None
                elif kind == "cod_proof_overdue":
                    end = "proof_uploaded" in r.t or r.end_us is not None
                else:  # fresh_claim, fresh_claim_rejected
                    end = r.end_us is not None
            if end:
                self._close(s, key, ts, fx)

    def _fire_on_event(self, s: OrderState, fx: Effects) -> None:
        """坏单包赔 (fresh_claim) and its rejection fire on the facts, whenever they are all known."""
        if not s.refunds or s.paid is None or s.paid.get("category") != "fresh" or s.signed_us is None:
            return
        pr = self.rules.for_platform(s.platform)
        for r in s.refunds.values():
            req = r.requested_us
            if req is None or r.reason != "spoiled" or not 0 <= req - s.signed_us <= pr.fresh_claim_window_us:
                continue
            raw = pr.raw
            amount = s.paid.get("amount_fen") if s.paid.get("amount_fen") is not None else (r.amount or 0)
            ratio = r.damage_ratio
            due = amount if ratio is None or ratio > raw["fresh_claim_full_ratio"] else round(ratio * amount)
            extra_pay = min(max(round(amount * raw["fresh_claim_extra_share"]), raw["fresh_claim_extra_min_fen"]),
                            raw["fresh_claim_extra_max_fen"])
            details = {"amount_fen": amount, "damage_ratio": ratio, "refund_due_fen": due,
                       "extra_payout_fen": extra_pay}
            if "fresh_claim|" + r.rid not in s.done:
                self._fire(s, "fresh_claim", r.rid, req, None, fx, details, r)
                if r.end_us is not None:
                    self._close(s, "fresh_claim|" + r.rid, r.end_us, fx)
            rej = r.t.get("rejected")
            if rej is not None and "fresh_claim_rejected|" + r.rid not in s.done:
                self._fire(s, "fresh_claim_rejected", r.rid, rej, None, fx, details, r)
                if r.end_us is not None:
                    self._close(s, "fresh_claim_rejected|" + r.rid, r.end_us, fx)

    # ------------------------------------------------------------------ timers
    def timers(self, s: OrderState) -> dict[str, int]:
        """Every deadline this order wants now: name -> due_us (event time)."""
        out: dict[str, int] = {}
        pr = self._order_timers(s, out)
        if pr is not None and s.refunds:
            for r in s.refunds.values():
                self._refund_timers(s, r, pr, out)
        return out

    def _due(self, s: OrderState, name: str):
        """``timers(s).get(name)``, computing only the part that can hold ``name``: a refund's
        timers are named ``kind|refund_id`` (kinds hold no "|"), the order's have no "|"."""
        out: dict[str, int] = {}
        _kind, bar, rid = name.partition("|")
        if not bar:
            self._order_timers(s, out)
        else:
            r = s.refunds.get(rid)
            if r is None:
                return None
            pr = self._order_timers(s, None)
            if pr is None:
                return None
            self._refund_timers(s, r, pr, out)
        return out.get(name)

    def _order_timers(self, s: OrderState, out: dict | None):
        """The order's own deadlines into ``out`` (None: only the answer); returns the platform
        rules when refund deadlines apply too (a known platform, a physical order), else None."""
        p = s.platform
        if p is None:
            return None
        paid = s.paid
        if paid is not None and paid.get("virtual"):
            return None  # not physical: no deadline (rules.md §1)
        pr = self._pr.get(p)
        if pr is None:
            pr = self._platform_rules(p)
        if out is None:
            return pr
        # (most orders have no alert yet: empty ``done`` and ``open`` need no key built)
        oid = s.order_id
        done, open_ = s.done, s.open
        shipped = s.shipped_us
        if paid is not None:
            if not s.due_passed:
                out["ship_overdue"] = s.lst_us
            if shipped is None and s.cancelled_us is None and not (done and ("ship_warning|" + oid) in done):
                out["ship_warning"] = max(s.paid_us, s.lst_us - pr.ship_warning_before_us)
        if shipped is not None and not s.no_logistics and s.first_scan_us is None \
                and not (done and ("pickup_timeout|" + oid) in done):
            out["pickup_timeout"] = shipped + pr.pickup_timeout_us
        last = s.last_scan_us
        if last is not None and s.signed_us is None:
            ofd = s.last_ofd_us
            if ofd is None:
                if not (open_ and ("transit_timeout|" + oid) in open_) \
                        and s.marks.get("transit_timeout", 0) < s.scans:
                    tt = (paid.get("trade_type") if paid is not None else None) or "domestic"
                    out["transit_timeout"] = last + pr.transit_timeout_us[tt]
            elif last == ofd and not (open_ and ("delivery_timeout|" + oid) in open_) \
                    and s.marks.get("delivery_timeout", 0) < s.scans:
                out["delivery_timeout"] = ofd + pr.delivery_timeout_us
        return pr

    @staticmethod
    def _refund_timers(s: OrderState, r: Refund, pr, out: dict) -> None:
        req = r.requested_us
        if req is None:
            return
        rid = r.rid
        if r.merchant_step_us() is None:
            if ("refund_response_warning|" + rid) not in s.done:
                out["refund_response_warning|" + rid] = req + pr.refund_response_warning_us
            if ("refund_response_overdue|" + rid) not in s.done:
                out["refund_response_overdue|" + rid] = req + pr.refund_response_overdue_us
        if r.end_us is not None:
            return
        shipped_back = r.t.get("return_shipped")
        if shipped_back is not None and "received" not in r.t:
            if ("return_receipt_warning|" + rid) not in s.done:
                out["return_receipt_warning|" + rid] = shipped_back + pr.return_receipt_warning_us
            if ("return_receipt_overdue|" + rid) not in s.done:
                out["return_receipt_overdue|" + rid] = shipped_back + pr.return_receipt_overdue_us
        received = r.t.get("received")
        if received is not None and s.paid is not None and s.paid.get("cod") \
                and "proof_uploaded" not in r.t and ("cod_proof_overdue|" + rid) not in s.done:
            out["cod_proof_overdue|" + rid] = received + pr.cod_proof_overdue_us

    def on_timer(self, s: OrderState, name: str, due_us: int, fx: Effects) -> None:
        if self._due(s, name) != due_us:
            return  # cancelled or moved since it was scheduled
        kind, _, rid = name.partition("|")
        pr = self.rules.for_platform(s.platform)
        if kind == "ship_overdue":
            s.due_passed = True
            if s.shipped_us is None and s.cancelled_us is None:
                extra = {"latest_ship_time": _iso(s.lst_us)}
                share = pr.raw["overdue_compensation_share"]
                if share:
                    amount = s.paid.get("amount_fen") or 0
                    extra["compensation_fen"] = min(round(amount * share), pr.raw["overdue_compensation_max_fen"])
                    extra["compensation_claimable_at"] = _iso(
                        s.paid_us + int(pr.raw["overdue_compensation_claim_after_hours"] * HOUR_US))
                self._fire(s, "ship_overdue", s.order_id, due_us, due_us, fx, extra)
        elif kind == "ship_warning":
            self._fire(s, "ship_warning", s.order_id, due_us, s.lst_us, fx, {"latest_ship_time": _iso(s.lst_us)})
        elif kind == "pickup_timeout":
            self._fire(s, kind, s.order_id, due_us, due_us, fx, {"hours": pr.pickup_timeout_us / HOUR_US})
        elif kind == "transit_timeout":
            tt = (s.paid or {}).get("trade_type") or "domestic"
            self._fire(s, kind, s.order_id, due_us, due_us, fx,
                       {"hours": pr.transit_timeout_us[tt] / HOUR_US, "last_scan_us": s.last_scan_us})
        elif kind == "delivery_timeout":
            self._fire(s, kind, s.order_id, due_us, due_us, fx, {"hours": pr.delivery_timeout_us / HOUR_US})
        else:
            r = s.refunds[rid]
            if kind == "refund_response_warning":
                extra = {"hours": pr.refund_response_warning_us / HOUR_US,
                         "auto_us": r.requested_us + pr.refund_response_overdue_us}
            elif kind == "return_receipt_warning":
                extra = {"hours": pr.return_receipt_warning_us / HOUR_US,
                         "auto_us": r.t["return_shipped"] + pr.return_receipt_overdue_us}
            elif kind == "cod_proof_overdue":
                extra = {"hours": pr.cod_proof_overdue_us / HOUR_US}
            else:
                extra = {}
            self._fire(s, kind, rid, due_us, due_us, fx, extra, r)
            return  # an alert changes no fact ``items`` reads
        if kind == "ship_overdue":  # due_passed: the order counts in the on-time rate
            self._update_items(s, due_us, fx)

    # -------------------------------------------------------------- retention
    @staticmethod
    def latest_us(s: OrderState):
        """The latest instant of the order's facts (streams/retention.py): every instant it keeps,
        the latest ship time included; None before its first event."""
        m = s.first_us
        if m is None:
            return None
        for v in (s.paid_us, s.lst_us, s.shipped_us, s.cancelled_us, s.fake_us, s.first_scan_us, s.last_scan_us,
                  s.last_ofd_us, s.signed_us):
            if v is not None and v > m:
                m = v
        if s.review is not None and s.review[0] > m:
            m = s.review[0]
        for c in s.complaints.values():
            for v in (c[0], c[1]):
                if v is not None and v > m:
                    m = v
        for r in s.refunds.values():
            for ts, _step in r.seq:
                if ts > m:
                    m = ts
            if r.judged_us is not None and r.judged_us > m:
                m = r.judged_us
        return m

    # ------------------------------------------------------------- indicators
    def _update_items(self, s: OrderState, at_us: int, fx: Effects) -> None:
        update_items(s, self.items(s), at_us, fx)

    @staticmethod
    def items(s: OrderState) -> dict[str, tuple]:
        """The order's indicator items: a function of its facts alone (no rules), so a
        compact document leaves them out and ``OrderState.restore`` recomputes them."""
        p = s.platform
        out: dict[str, tuple] = {"_seen": ("_seen", s.first_us, s.first_us, 0)}
        paid = s.paid
        paid_at = s.paid_us
        physical = paid is None or not paid.get("virtual")  # s.physical
        if (p == "xiaohongshu" or p == "douyin") and paid is not None and physical and s.due_passed:
            c, lst, shipped = s.cancelled_us, s.lst_us, s.shipped_us
            if not (c is not None and c < lst and (shipped is None or c < shipped)):  # s.shipping_excluded
                on_time = 1 if shipped is not None and shipped <= lst else 0
                out["ots"] = ("on_time_ship_rate", lst, on_time, 1)
        if p == "xiaohongshu":
            if s.signed_us is not None:
                signed_at = s.signed_us
                if paid is not None and physical:
                    h = (s.signed_us - s.paid_us) / HOUR_US
                    out["pts"] = ("pay_to_sign_hours", signed_at, h, 1)
                    out["pts.tt"] = ("pay_to_sign_hours." + (paid.get("trade_type") or "domestic"), signed_at, h, 1)
                if s.review is not None:
                    out["rev"] = ("review_avg", signed_at, s.review[1], 1)
                quality = any(r.reason in QUALITY_REASONS and r.requested_us is not None
                              for r in s.refunds.values())
                out["qrr"] = ("quality_refund_rate", signed_at, 1 if quality else 0, 1)
                n = sum(1 for c in s.complaints.values() if c[0] is not None and not c[3])
                out["cr"] = ("complaint_rate", signed_at, n, 1)
            for r in s.refunds.values():
                end, req = r.end_us, r.requested_us
                if end is None or req is None:
                    continue
                if r.kind == "refund_only":
                    out["rf:" + r.rid] = ("refund_only_hours", end, (end - req) / HOUR_US, 1)
                elif r.kind == "return_refund":
                    h = (end - req - r.awaiting_buyer_us()) / HOUR_US
                    out["rf:" + r.rid] = ("return_refund_hours", end, h, 1)
        elif p == "douyin":
            if s.shipped_us is not None:
                out["fake"] = ("fake_ship_rate", s.shipped_us, 1 if s.fake_us is not None else 0, 1)
            if s.review is not None:
                review_at = s.review[0]
                pr_, sr = s.review[1], s.review[2]
                out["pg"] = ("product_good_rate", review_at, 1 if pr_ >= 4 else 0, 1)
                out["neg"] = ("negative_review_rate", review_at, 1 if pr_ <= 2 else 0, 1)
                if sr is not None:
                    out["sg"] = ("service_good_rate", review_at, 1 if sr >= 4 else 0, 1)
            if paid is not None:
                out["cum"] = ("cumulative_orders", paid_at, 1, 0)
                out["cr"] = ("complaint_rate", paid_at, 0, 1)
                out["gmv"] = ("_paid_gmv", paid_at, paid.get("amount_fen") or 0, 0)
                first = None
                for r in s.refunds.values():
                    if r.requested_us is not None and (first is None or (r.requested_us, r.rid)
                                                       < (first.requested_us, first.rid)):
                        first = r
                lrr = 0
                if first is not None and first.kind == "return_refund" and first.reason in LOGISTICS_REASONS \
                        and s.shipped_us is not None and 0 <= first.requested_us - s.shipped_us <= 14 * DAY_US:
                    lrr = 1
                out["lrr"] = ("logistics_return_rate", paid_at, lrr, 1)
            for cid, c in s.complaints.items():
                if c[1] is not None and c[2] in _BLAME and not c[3]:
                    out["cj:" + cid] = ("complaint_rate", c[1], 1, 0)
        elif p == "kuaishou":
            if paid is not None:
                q = any(r.reason in QUALITY_REASONS and not r.no_return and r.requested_us is not None
                        for r in s.refunds.values())
                out["qrr"] = ("quality_refund_rate", paid_at, 1 if q else 0, 1)
            for r in s.refunds.values():
                end, req = r.end_us, r.requested_us
                if end is None or req is None:
                    continue
                end_at = end
                out["md:" + r.rid] = ("merchant_dispute_rate", end_at, 1 if r.responsible in _BLAME else 0, 1)
                if "intervened" in r.t:
                    continue
                if r.kind == "refund_only":
                    out["rf:" + r.rid] = ("refund_only_hours", end_at, (end - req) / HOUR_US, 1)
                elif r.kind == "return_refund":
                    t = r.t
                    seg1 = t["approved"] - req if "approved" in t else 0
                    seg2 = t["received"] - t["return_signed"] if "received" in t and "return_signed" in t else 0
                    out["rf:" + r.rid] = ("return_refund_hours", end_at, (seg1 + seg2) / HOUR_US, 1)
        elif p == "tmall":
            if paid is not None:
                out["rr"] = ("refund_rate", paid_at, 0, 1)
                out["rd"] = ("refund_dispute_rate", paid_at, 0, 1)
            for r in s.refunds.values():
                c = r.t.get("completed")
                if c is not None:
                    out["rc:" + r.rid] = ("refund_rate", c, 1, 0)
                if r.judged_us is not None and r.responsible in _BLAME:
                    out["rj:" + r.rid] = ("refund_dispute_rate", r.judged_us, 1, 0)
        return out


def _iso(us):
    return fmt_ts(us) if us is not None else None


def _public(details: dict) -> dict:
    """Alert details as JSON: instants as RFC 3339 strings."""
    out = {}
    for k, v in details.items():
        if k.endswith("_us"):
            out[k[:-3] + "_at"] = _iso(v)
        else:
            out[k] = v
    return out
