"""The input event contract (shared/spec/events.md): bytes -> validated event dict.

Events stay plain dicts (the hot path of replay and of the workers touches
millions of them); validation fills the documented defaults and adds one
derived field, ``ts_us``: the event time as integer microseconds since the
Unix epoch (UTC). That is the one time convention of the whole project.

Choices where the spec is silent (an ops team's expectations):
- ``event_id`` 1-128 chars and ``shop_id`` 1-64 chars; every other id
  (``order_id``, ``refund_id``, ``session_id``, ``complaint_id``, ...) is a
  non-empty string of at most 128 chars.
- Optional fields present with JSON ``null`` are treated as absent.
- A ``presale`` object must have exactly one of ``ship_by`` (YYYY-MM-DD) or
  ``ship_within_days`` (int >= 0).
- ``damage_ratio`` must be a number in [0, 1].
- When a topic is given, an event whose type does not belong to that topic is
  invalid (it would be partitioned by the wrong key).
- A field the spec lists without ``?`` and without a default is required
  (``refund.requested`` ``reason`` and ``amount_fen``, ``shipment.exception``
  ``reason``); the booleans ``no_return`` and ``malicious`` default to false
  like the other flags (producers omit ``no_return`` when it is false).
- The sane window of event time (issue: one far-future ``ts`` fired every
  pending timer of a partition and left its clock in year 9999): ``ts``
  before ``MIN_EVENT_TIME`` (2000-01-01, configurable) is invalid, and so is a
  ``ts`` after the ``max_ts_us`` the caller passes (the workers: the record's
  Kafka timestamp or the wall clock, whichever is earlier, plus a skew of one
  day; replay: the later of the wall clock and ``--until``, plus that skew).
  ``promised_ship_by`` must lie between ``MIN_EVENT_TIME`` and ``ts`` plus
  ``MAX_PROMISE_DAYS`` (366), a presale ``ship_by`` date at most that many
  days after the day of ``ts``, ``ship_within_days`` at most that many days.
- Ids (every string field checked by length: ``event_id``, ``shop_id``,
  ``order_id``, ``tracking_no``...) must not contain control characters
  (C0, DEL, C1): ``bad\u0000shop`` would be a key no one can type or log.
- A record larger than ``MAX_EVENT_BYTES`` (64 KiB; real events are a few
  hundred bytes) is invalid: its queued copy would bloat the key's table
  document past what Kafka accepts.
- ``schemas/event.schema.json`` is the same contract as JSON Schema; the two
  are kept in step by tests/core/test_schemas.py.
"""

from __future__ import annotations

import operator
import re
from datetime import UTC, date, datetime

import orjson

_EPOCH_DATE = date(1970, 1, 1)

PLATFORMS = ("xiaohongshu", "douyin", "kuaishou", "jd", "tmall")
TRADE_TYPES = ("domestic", "bonded", "direct_mail")
RESPONSIBLE = ("merchant", "buyer", "both", "none")
REFUND_KINDS = ("refund_only", "return_refund", "exchange")
REFUND_REASONS = (
    "no_reason", "quality", "not_as_described", "damaged", "spoiled", "wrong_item",
    "counterfeit", "logistics", "not_received", "other",
)
QUALITY_REASONS = frozenset(("quality", "not_as_described", "damaged", "spoiled", "wrong_item", "counterfeit"))
LOGISTICS_REASONS = frozenset(("logistics", "not_received"))
CUSTOMS_STATUSES = ("declared", "cleared", "held", "exception")
EXCEPTION_REASONS = ("lost", "damaged", "returned", "rejected", "address", "other")
SENDERS = ("buyer", "agent", "bot", "system")

# Default topic names, and which event types travel on each.
TOPIC_ORDERS = "shop.orders"
TOPIC_SHIPMENTS = "shop.shipments"
TOPIC_REFUNDS = "shop.refunds"
TOPIC_CHATS = "shop.chats"
# ... and the topics the workers write (shop.ticks and shop.contribs are internal)
TOPIC_ALERTS = "shop.alerts"
TOPIC_SCORES = "shop.scores"
TOPIC_DLQ = "shop.dlq"
TOPIC_TICKS = "shop.ticks"
TOPIC_CONTRIBS = "shop.contribs"


class InvalidEvent(ValueError):
    """An event that breaks the contract; ``str(exc)`` is the reason for the DLQ."""


MAX_EVENT_BYTES = 64 * 1024
DAY_US = 86_400_000_000
MAX_FUTURE_SKEW_US = DAY_US  # default skew allowed past the caller's "now"
MAX_PROMISE_DAYS = 366
_CTRL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


# ASCII digits only (``\d`` would take any Unicode digit, e.g. in the fraction); the
# offset's minutes are 00-59 (fromisoformat would take "+05:60").
_TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:[0-5]\d)$", re.ASCII)


# Fast path of parse_ts_us for the canonical form YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|+HH:MM|-HH:MM)
# with integer arithmetic; anything else (or anything invalid) goes the general way below,
# which alone words the reasons. tests/core/test_fastpaths.py checks both agree.
_SS = {f"{i:02d}": i for i in range(60)}  # seconds 00-59 (never 60: fromisoformat refuses it)
# the offsets datetime.timezone takes: hours 00-23, minutes 00-59 ("-00:00" is UTC)
_OFFSETS = {f"{sign}{h:02d}:{m:02d}": (1 if sign == "+" else -1) * (h * 3600 + m * 60)
            for sign in "+-" for h in range(24) for m in range(60)}
_FRAC_SCALE = (0, 100_000, 10_000, 1_000, 100, 10, 1)
_PREFIX_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})", re.ASCII)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_PREFIXES: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM" -> seconds since the epoch of that time as UTC
_MAX_PREFIXES = 1 << 16


def _prefix_seconds(p: str) -> int | None:
    """A valid "YYYY-MM-DDTHH:MM" (ASCII digits, a real date, hour 00-23) -> seconds; else None."""
    m = _PREFIX_RE.fullmatch(p)
    if m is None:
        return None
    y, mo, d, h, mi = map(int, m.groups())
    if h > 23 or mi > 59:
        return None
    try:
        days = date(y, mo, d).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return None
    secs = days * 86_400 + h * 3600 + mi * 60
    if len(_PREFIXES) >= _MAX_PREFIXES:
        _PREFIXES.clear()
    _PREFIXES[p] = secs
    return secs


def _fast_ts_us(v: str) -> int | None:
    """``parse_ts_us`` of a canonical timestamp string, or None to take the general path."""
    n = len(v)
    if n < 20:
        return None
    base = _PREFIXES.get(v[:16])
    if base is None:
        base = _prefix_seconds(v[:16])
        if base is None:
            return None
    if v[16] != ":":
        return None
    sec = _SS.get(v[17:19])
    if sec is None:
        return None
    if v[-1] == "Z":
        off = 0
        end = n - 1
    else:
        off = _OFFSETS.get(v[-6:])
        if off is None:
            return None
        end = n - 6
    if end == 19:
        return (base + sec - off) * 1_000_000
    if end < 21 or end > 29 or v[19] != ".":
        return None
    digits = v[20:end]
    if not (digits.isdigit() and digits.isascii()):
        return None
    k = end - 20
    frac = int(digits) * _FRAC_SCALE[k] if k <= 6 else int(digits[:6])
    return (base + sec - off) * 1_000_000 + frac


def parse_ts_us(value: object, field: str = "ts") -> int:
    """RFC 3339 with an offset -> microseconds since the epoch. Raises InvalidEvent."""
    if type(value) is str:
        us = _fast_ts_us(value)
        if us is not None:
            return us
    return _parse_ts_us_general(value, field)


def _parse_ts_us_general(value: object, field: str = "ts") -> int:
    """``parse_ts_us`` for every input: the reference the fast path agrees with."""
    if not isinstance(value, str):
        raise InvalidEvent(f"{field}: expected an RFC 3339 timestamp string, got {type(value).__name__}")
    if not _TS_RE.match(value):
        if re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$", value):
            raise InvalidEvent(f"{field}: timestamp without offset: {value!r}")
        raise InvalidEvent(f"{field}: not an RFC 3339 timestamp: {value!r}")
    s = value
    frac = ""
    # datetime.fromisoformat takes at most 6 fraction digits; keep microseconds.
    dot = s.find(".")
    if dot != -1:
        end = dot + 1
        while end < len(s) and s[end].isdigit():
            end += 1
        frac = s[dot + 1:end]
        s = s[:dot] + s[end:]
    if s[-1] in "Zz":
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError as exc:
        raise InvalidEvent(f"{field}: not an RFC 3339 timestamp: {value!r} ({exc})") from None
    us = int(dt.timestamp()) * 1_000_000
    if frac:
        us += int((frac + "000000")[:6])
    return us


MIN_EVENT_TIME = "2000-01-01T00:00:00+08:00"
MIN_EVENT_TIME_US = parse_ts_us(MIN_EVENT_TIME)


def fmt_us(us: int) -> str:
    """An instant as RFC 3339 in UTC, for reasons (any year datetime can show)."""
    try:
        return datetime.fromtimestamp(us / 1e6, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):
        return f"{us} us since the epoch"


def _str(ev: dict, f: str, req: bool, maxlen: int = 128) -> None:
    v = ev.get(f)
    if v is None:
        if req:
            raise InvalidEvent(f"missing field {f}")
        ev.pop(f, None)
        return
    if not isinstance(v, str):
        raise InvalidEvent(f"{f}: expected string, got {type(v).__name__}")
    if not 1 <= len(v) <= maxlen:
        raise InvalidEvent(f"{f}: length must be 1-{maxlen}")
    if _CTRL_RE.search(v):
        raise InvalidEvent(f"{f}: contains a control character: {v!r}")


def _enum(ev: dict, f: str, allowed: tuple, req: bool, default: str | None = None) -> None:
    v = ev.get(f)
    if v is None:
        if req:
            raise InvalidEvent(f"missing field {f}")
        if default is None:
            ev.pop(f, None)
        else:
            ev[f] = default
        return
    if v not in allowed:
        raise InvalidEvent(f"{f}: {v!r} is not one of {', '.join(allowed)}")


def _bool(ev: dict, f: str) -> None:
    v = ev.get(f)
    if v is None:
        ev[f] = False
    elif v is not True and v is not False:
        raise InvalidEvent(f"{f}: expected boolean, got {type(v).__name__}")


def _amount(ev: dict, f: str, req: bool) -> None:
    v = ev.get(f)
    if v is None:
        if req:
            raise InvalidEvent(f"missing field {f}")
        ev.pop(f, None)
        return
    if type(v) is not int:
        raise InvalidEvent(f"{f}: expected integer fen, got {type(v).__name__}")
    if v < 0:
        raise InvalidEvent(f"{f}: negative amount {v}")


def _rating(ev: dict, f: str, req: bool) -> None:
    v = ev.get(f)
    if v is None:
        if req:
            raise InvalidEvent(f"missing field {f}")
        ev.pop(f, None)
        return
    if type(v) is not int:
        raise InvalidEvent(f"{f}: expected integer rating, got {type(v).__name__}")
    if not 1 <= v <= 5:
        raise InvalidEvent(f"{f}: rating {v} outside 1-5")


def _presale(ev: dict) -> None:
    p = ev.get("presale")
    if p is None:
        ev.pop("presale", None)
        return
    if not isinstance(p, dict):
        raise InvalidEvent("presale: expected an object")
    ship_by, within = p.get("ship_by"), p.get("ship_within_days")
    if (ship_by is None) == (within is None):
        raise InvalidEvent("presale: needs exactly one of ship_by, ship_within_days")
    if ship_by is not None:
        if not isinstance(ship_by, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", ship_by):
            raise InvalidEvent("presale.ship_by: expected YYYY-MM-DD")
        try:
            d = date.fromisoformat(ship_by)
        except ValueError:
            raise InvalidEvent(f"presale.ship_by: not a date: {ship_by!r}") from None
        # local (UTC+8) day of ts, in days since 1970-01-01
        if (d - _EPOCH_DATE).days > (ev["ts_us"] + 8 * 3_600_000_000) // DAY_US + MAX_PROMISE_DAYS:
            raise InvalidEvent(f"presale.ship_by: {ship_by} is more than {MAX_PROMISE_DAYS} days after ts")
    elif type(within) is not int or within < 0:
        raise InvalidEvent("presale.ship_within_days: expected an integer >= 0")
    elif within > MAX_PROMISE_DAYS:
        raise InvalidEvent(f"presale.ship_within_days: {within} is more than {MAX_PROMISE_DAYS}")


def _v_order_paid(ev: dict) -> None:
    _str(ev, "order_id", True)
    _amount(ev, "amount_fen", True)
    _enum(ev, "trade_type", TRADE_TYPES, False, "domestic")
    cat = ev.get("category")
    if cat is None:
        ev["category"] = "general"
    elif not isinstance(cat, str):
        raise InvalidEvent("category: expected string")
    for f in ("cod", "virtual", "live"):
        _bool(ev, f)
    _order_paid_dates(ev)


def _order_paid_dates(ev: dict) -> None:
    """The last checks of ``order.paid`` (shared with its fast path): presale, promised_ship_by."""
    _presale(ev)
    if ev.get("promised_ship_by") is not None:
        promised = ev["promised_ship_by_us"] = parse_ts_us(ev["promised_ship_by"], "promised_ship_by")
        if promised < MIN_EVENT_TIME_US or promised > ev["ts_us"] + MAX_PROMISE_DAYS * DAY_US:
            raise InvalidEvent(f"promised_ship_by: {ev['promised_ship_by']} is not between {MIN_EVENT_TIME} "
                               f"and {MAX_PROMISE_DAYS} days after ts")
    else:
        ev.pop("promised_ship_by", None)
        ev.pop("promised_ship_by_us", None)  # derived only: never trust one sent by the producer


def _v_order_shipped(ev: dict) -> None:
    _str(ev, "order_id", True)
    _str(ev, "carrier", False)
    _str(ev, "tracking_no", False)
    _bool(ev, "no_logistics")


def _v_order_cancelled(ev: dict) -> None:
    _str(ev, "order_id", True)
    r = ev.get("reason")
    if r is not None and not isinstance(r, str):
        raise InvalidEvent("reason: expected string")


def _v_review(ev: dict) -> None:
    _str(ev, "order_id", True)
    _rating(ev, "product_rating", True)
    _rating(ev, "service_rating", False)
    _rating(ev, "logistics_rating", False)


def _v_complaint_filed(ev: dict) -> None:
    _str(ev, "order_id", True)
    _str(ev, "complaint_id", True)


def _v_complaint_judged(ev: dict) -> None:
    _str(ev, "order_id", True)
    _str(ev, "complaint_id", True)
    _enum(ev, "responsible", RESPONSIBLE, True)
    _bool(ev, "malicious")


def _v_shipment(ev: dict) -> None:
    _str(ev, "order_id", True)
    _str(ev, "tracking_no", False)
    loc = ev.get("location")
    if loc is not None and not isinstance(loc, str):
        raise InvalidEvent("location: expected string")


def _v_customs(ev: dict) -> None:
    _v_shipment(ev)
    _enum(ev, "status", CUSTOMS_STATUSES, True)


def _v_exception(ev: dict) -> None:
    _v_shipment(ev)
    _enum(ev, "reason", EXCEPTION_REASONS, True)


def _v_refund(ev: dict) -> None:
    _str(ev, "order_id", True)
    _str(ev, "refund_id", True)


def _v_refund_requested(ev: dict) -> None:
    _v_refund(ev)
    _enum(ev, "kind", REFUND_KINDS, True)
    _enum(ev, "reason", REFUND_REASONS, True)
    _amount(ev, "amount_fen", True)
    _bool(ev, "no_return")
    d = ev.get("damage_ratio")
    if d is None:
        ev.pop("damage_ratio", None)
    elif type(d) not in (int, float) or not 0 <= d <= 1:
        raise InvalidEvent("damage_ratio: expected a number in [0, 1]")


def _v_refund_rejected(ev: dict) -> None:
    _v_refund(ev)
    n = ev.get("note")
    if n is not None and not isinstance(n, str):
        raise InvalidEvent("note: expected string")


def _v_refund_return_shipped(ev: dict) -> None:
    _v_refund(ev)
    _str(ev, "tracking_no", False)


def _v_refund_judged(ev: dict) -> None:
    _v_refund(ev)
    _enum(ev, "responsible", RESPONSIBLE, True)


def _v_refund_completed(ev: dict) -> None:
    _v_refund(ev)
    _amount(ev, "amount_fen", False)


def _v_chat(ev: dict) -> None:
    _str(ev, "session_id", True)


def _v_chat_started(ev: dict) -> None:
    _v_chat(ev)
    _str(ev, "buyer_id", False)


def _v_chat_assigned(ev: dict) -> None:
    _v_chat(ev)
    _str(ev, "agent_id", False)


def _v_chat_message(ev: dict) -> None:
    _v_chat(ev)
    _enum(ev, "sender", SENDERS, True)


def _v_chat_rated(ev: dict) -> None:
    _v_chat(ev)
    _rating(ev, "rating", True)


# type -> (topic, validator)
EVENT_TYPES: dict[str, tuple[str, object]] = {
    "order.paid": (TOPIC_ORDERS, _v_order_paid),
    "order.shipped": (TOPIC_ORDERS, _v_order_shipped),
    "order.cancelled": (TOPIC_ORDERS, _v_order_cancelled),
    "review.posted": (TOPIC_ORDERS, _v_review),
    "complaint.filed": (TOPIC_ORDERS, _v_complaint_filed),
    "complaint.judged": (TOPIC_ORDERS, _v_complaint_judged),
    "shipment.picked_up": (TOPIC_SHIPMENTS, _v_shipment),
    "shipment.in_transit": (TOPIC_SHIPMENTS, _v_shipment),
    "shipment.out_for_delivery": (TOPIC_SHIPMENTS, _v_shipment),
    "shipment.signed": (TOPIC_SHIPMENTS, _v_shipment),
    "shipment.customs": (TOPIC_SHIPMENTS, _v_customs),
    "shipment.exception": (TOPIC_SHIPMENTS, _v_exception),
    "shipment.fake_flagged": (TOPIC_SHIPMENTS, _v_shipment),
    "refund.requested": (TOPIC_REFUNDS, _v_refund_requested),
    "refund.approved": (TOPIC_REFUNDS, _v_refund),
    "refund.rejected": (TOPIC_REFUNDS, _v_refund_rejected),
    "refund.return_shipped": (TOPIC_REFUNDS, _v_refund_return_shipped),
    "refund.return_signed": (TOPIC_REFUNDS, _v_refund),
    "refund.received": (TOPIC_REFUNDS, _v_refund),
    "refund.intervened": (TOPIC_REFUNDS, _v_refund),
    "refund.judged": (TOPIC_REFUNDS, _v_refund_judged),
    "refund.completed": (TOPIC_REFUNDS, _v_refund_completed),
    "refund.closed": (TOPIC_REFUNDS, _v_refund),
    "refund.proof_uploaded": (TOPIC_REFUNDS, _v_refund),
    "chat.started": (TOPIC_CHATS, _v_chat_started),
    "chat.assigned": (TOPIC_CHATS, _v_chat_assigned),
    "chat.message": (TOPIC_CHATS, _v_chat_message),
    "chat.closed": (TOPIC_CHATS, _v_chat),
    "chat.rated": (TOPIC_CHATS, _v_chat_rated),
}

TOPIC_OF_TYPE = {t: topic for t, (topic, _) in EVENT_TYPES.items()}
# Keyed by order_id and co-partitioned: partition p of each holds the same orders.
ORDER_KEYED_TOPICS = (TOPIC_ORDERS, TOPIC_SHIPMENTS, TOPIC_REFUNDS)
INPUT_TOPICS = (*ORDER_KEYED_TOPICS, TOPIC_CHATS)
_PLATFORMS = frozenset(PLATFORMS)
_PLATFORM_INDEX = {p: i for i, p in enumerate(PLATFORMS)}
_COMMON = operator.itemgetter("type", "event_id", "ts", "platform", "shop_id")


# ---------------------------------------------------------------- fast path
# ``validate`` first tries a validator per type written for the common case,
# without a call per field. Each checks what the type's validator above checks
# and, at the first doubt (a type, a bound, a character ``isprintable`` refuses:
# every C0, DEL and C1 control character is unprintable), returns False
# *before changing the event*: ``validate`` then runs the reference path from
# the start, which alone words the reasons. When every check passes it records
# ``ts_us`` and fills the same defaults in the same order as the reference.
# ``ids`` is the ids checked so far (event_id + shop_id), so that one
# ``isprintable`` covers every id of the event. tests/core/test_fastpaths.py checks
# both paths agree.
_TRADE_SET = frozenset(TRADE_TYPES)
_RESPONSIBLE_SET = frozenset(RESPONSIBLE)
_KIND_SET = frozenset(REFUND_KINDS)
_REASON_SET = frozenset(REFUND_REASONS)
_CUSTOMS_SET = frozenset(CUSTOMS_STATUSES)
_EXCEPTION_SET = frozenset(EXCEPTION_REASONS)
_SENDER_SET = frozenset(SENDERS)


def _f_order_paid(ev: dict, ids: str, ts_us: int) -> bool:
    g = ev.get
    oid, amt, tt, cat, cod, virtual, live = (g("order_id"), g("amount_fen"), g("trade_type"), g("category"),
                                             g("cod"), g("virtual"), g("live"))
    if (type(oid) is not str or not 0 < len(oid) <= 128 or type(amt) is not int or amt < 0
            or (tt is not None and (type(tt) is not str or tt not in _TRADE_SET))
            or (cat is not None and type(cat) is not str)
            or (cod is not None and cod is not True and cod is not False)
            or (virtual is not None and virtual is not True and virtual is not False)
            or (live is not None and live is not True and live is not False)
            or not (ids + oid).isprintable()):
        return False
    ev["ts_us"] = ts_us
    if tt is None:
        ev["trade_type"] = "domestic"
    if cat is None:
        ev["category"] = "general"
    if cod is None:
        ev["cod"] = False
    if virtual is None:
        ev["virtual"] = False
    if live is None:
        ev["live"] = False
    _order_paid_dates(ev)  # the last checks: what they raise is what the reference would
    return True


def _f_order_shipped(ev: dict, ids: str, ts_us: int) -> bool:
    g = ev.get
    oid, carrier, tn, nl = g("order_id"), g("carrier"), g("tracking_no"), g("no_logistics")
    if (type(oid) is not str or not 0 < len(oid) <= 128
            or (carrier is not None and (type(carrier) is not str or not 0 < len(carrier) <= 128))
            or (tn is not None and (type(tn) is not str or not 0 < len(tn) <= 128))
            or (nl is not None and nl is not True and nl is not False)
            or not (ids + oid + (carrier or "") + (tn or "")).isprintable()):
        return False
    ev["ts_us"] = ts_us
    if carrier is None:
        ev.pop("carrier", None)
    if tn is None:
        ev.pop("tracking_no", None)
    if nl is None:
        ev["no_logistics"] = False
    return True


def _f_order_cancelled(ev: dict, ids: str, ts_us: int) -> bool:
    oid, r = ev.get("order_id"), ev.get("reason")
    if (type(oid) is not str or not 0 < len(oid) <= 128 or (r is not None and type(r) is not str)
            or not (ids + oid).isprintable()):
        return False
    ev["ts_us"] = ts_us
    return True


def _f_review(ev: dict, ids: str, ts_us: int) -> bool:
    g = ev.get
    oid, pr, sr, lr = g("order_id"), g("product_rating"), g("service_rating"), g("logistics_rating")
    if (type(oid) is not str or not 0 < len(oid) <= 128 or type(pr) is not int or not 1 <= pr <= 5
            or (sr is not None and (type(sr) is not int or not 1 <= sr <= 5))
            or (lr is not None and (type(lr) is not int or not 1 <= lr <= 5))
            or not (ids + oid).isprintable()):
        return False
    ev["ts_us"] = ts_us
    if sr is None:
        ev.pop("service_rating", None)
    if lr is None:
        ev.pop("logistics_rating", None)
    return True


def _f_complaint_filed(ev: dict, ids: str, ts_us: int) -> bool:
    oid, cid = ev.get("order_id"), ev.get("complaint_id")
    if (type(oid) is not str or not 0 < len(oid) <= 128 or type(cid) is not str or not 0 < len(cid) <= 128
            or not (ids + oid + cid).isprintable()):
        return False
    ev["ts_us"] = ts_us
    return True


def _f_complaint_judged(ev: dict, ids: str, ts_us: int) -> bool:
    g = ev.get
    oid, cid, resp, mal = g("order_id"), g("complaint_id"), g("responsible"), g("malicious")
    if (type(oid) is not str or not 0 < len(oid) <= 128 or type(cid) is not str or not 0 < len(cid) <= 128
            or type(resp) is not str or resp not in _RESPONSIBLE_SET
            or (mal is not None and mal is not True and mal is not False)
            or not (ids + oid + cid).isprintable()):
        return False
    ev["ts_us"] = ts_us
    if mal is None:
        ev["malicious"] = False
    return True


def _f_shipment(ev: dict, ids: str, ts_us: int) -> bool:
    oid, tn, loc = ev.get("order_id"), ev.get("tracking_no"), ev.get("location")
    if (type(oid) is not str or not 0 < len(oid) <= 128
            or (tn is not None and (type(tn) is not str or not 0 < len(tn) <= 128))
            or (loc is not None and type(loc) is not str)
            or not (ids + oid + (tn or "")).isprintable()):
        return False
    ev["ts_us"] = ts_us
    if tn is None:
        ev.pop("tracking_no", None)
    return True


def _f_customs(ev: dict, ids: str, ts_us: int) -> bool:
    st = ev.get("status")
    return type(st) is str and st in _CUSTOMS_SET and _f_shipment(ev, ids, ts_us)


def _f_exception(ev: dict, ids: str, ts_us: int) -> bool:
    r = ev.get("reason")
    return type(r) is str and r in _EXCEPTION_SET and _f_shipment(ev, ids, ts_us)


def _f_refund(ev: dict, ids: str, ts_us: int) -> bool:
    oid, rid = ev.get("order_id"), ev.get("refund_id")
    if (type(oid) is not str or not 0 < len(oid) <= 128 or type(rid) is not str or not 0 < len(rid) <= 128
            or not (ids + oid + rid).isprintable()):
        return False
    ev["ts_us"] = ts_us
    return True


def _f_refund_requested(ev: dict, ids: str, ts_us: int) -> bool:
    g = ev.get
    kind, reason, amt, nr, d = g("kind"), g("reason"), g("amount_fen"), g("no_return"), g("damage_ratio")
    if (type(kind) is not str or kind not in _KIND_SET or type(reason) is not str or reason not in _REASON_SET
            or type(amt) is not int or amt < 0 or (nr is not None and nr is not True and nr is not False)
            or (d is not None and (type(d) not in (int, float) or not 0 <= d <= 1))
            or not _f_refund(ev, ids, ts_us)):
        return False
    if nr is None:
        ev["no_return"] = False
    if d is None:
        ev.pop("damage_ratio", None)
    return True


def _f_refund_rejected(ev: dict, ids: str, ts_us: int) -> bool:
    n = ev.get("note")
    return (n is None or type(n) is str) and _f_refund(ev, ids, ts_us)


def _f_refund_return_shipped(ev: dict, ids: str, ts_us: int) -> bool:
    tn = ev.get("tracking_no")
    if tn is None:
        if not _f_refund(ev, ids, ts_us):
            return False
        ev.pop("tracking_no", None)
        return True
    return type(tn) is str and 0 < len(tn) <= 128 and _f_refund(ev, ids + tn, ts_us)


def _f_refund_judged(ev: dict, ids: str, ts_us: int) -> bool:
    resp = ev.get("responsible")
    return type(resp) is str and resp in _RESPONSIBLE_SET and _f_refund(ev, ids, ts_us)


def _f_refund_completed(ev: dict, ids: str, ts_us: int) -> bool:
    amt = ev.get("amount_fen")
    if amt is None:
        if not _f_refund(ev, ids, ts_us):
            return False
        ev.pop("amount_fen", None)
        return True
    return type(amt) is int and amt >= 0 and _f_refund(ev, ids, ts_us)


def _f_chat(ev: dict, ids: str, ts_us: int) -> bool:
    sid = ev.get("session_id")
    if type(sid) is not str or not 0 < len(sid) <= 128 or not (ids + sid).isprintable():
        return False
    ev["ts_us"] = ts_us
    return True


def _f_chat_opt_id(f: str):
    def check(ev: dict, ids: str, ts_us: int) -> bool:
        v = ev.get(f)
        if v is None:
            if not _f_chat(ev, ids, ts_us):
                return False
            ev.pop(f, None)
            return True
        return type(v) is str and 0 < len(v) <= 128 and _f_chat(ev, ids + v, ts_us)
    return check


def _f_chat_message(ev: dict, ids: str, ts_us: int) -> bool:
    sender = ev.get("sender")
    return type(sender) is str and sender in _SENDER_SET and _f_chat(ev, ids, ts_us)


def _f_chat_rated(ev: dict, ids: str, ts_us: int) -> bool:
    r = ev.get("rating")
    return type(r) is int and 1 <= r <= 5 and _f_chat(ev, ids, ts_us)


# type -> fast validator; the same types as EVENT_TYPES (a test checks)
_FAST = {
    "order.paid": _f_order_paid,
    "order.shipped": _f_order_shipped,
    "order.cancelled": _f_order_cancelled,
    "review.posted": _f_review,
    "complaint.filed": _f_complaint_filed,
    "complaint.judged": _f_complaint_judged,
    "shipment.picked_up": _f_shipment,
    "shipment.in_transit": _f_shipment,
    "shipment.out_for_delivery": _f_shipment,
    "shipment.signed": _f_shipment,
    "shipment.customs": _f_customs,
    "shipment.exception": _f_exception,
    "shipment.fake_flagged": _f_shipment,
    "refund.requested": _f_refund_requested,
    "refund.approved": _f_refund,
    "refund.rejected": _f_refund_rejected,
    "refund.return_shipped": _f_refund_return_shipped,
    "refund.return_signed": _f_refund,
    "refund.received": _f_refund,
    "refund.intervened": _f_refund,
    "refund.judged": _f_refund_judged,
    "refund.completed": _f_refund_completed,
    "refund.closed": _f_refund,
    "refund.proof_uploaded": _f_refund,
    "chat.started": _f_chat_opt_id("buyer_id"),
    "chat.assigned": _f_chat_opt_id("agent_id"),
    "chat.message": _f_chat_message,
    "chat.closed": _f_chat,
    "chat.rated": _f_chat_rated,
}


def validate(ev: object, topic: str | None = None, max_ts_us: int | None = None,
             min_ts_us: int | None = None) -> dict:
    """Check a decoded JSON value against the contract, in place; returns it.

    ``topic`` is the *default* topic name of the source (shop.orders, ...);
    ``max_ts_us`` the latest acceptable event time (None: no ceiling),
    ``min_ts_us`` the earliest (default ``MIN_EVENT_TIME_US``).
    """
    if type(ev) is dict:
        try:
            t, eid, ts, p, shop = _COMMON(ev)
            fast = _FAST[t]  # KeyError: an unknown type; TypeError: one that cannot be a key
            _PLATFORM_INDEX[p]
        except (KeyError, TypeError):
            fast = None
        if (fast is not None and type(eid) is str and type(ts) is str and type(shop) is str
                and 0 < len(eid) <= 128 and 0 < len(shop) <= 64 and (topic is None or TOPIC_OF_TYPE[t] == topic)):
            # _fast_ts_us(ts), inline; first its commonest form, YYYY-MM-DDTHH:MM:SS.ffffff+HH:MM
            base = _PREFIXES.get(ts[:16])
            if base is None:
                base = _prefix_seconds(ts[:16])
            n = len(ts)
            off = _OFFSETS.get(ts[26:]) if n == 32 else None
            if base is not None and off is not None and ts[19] == "." and ts[16] == ":":
                sub = ts[17:19] + ts[20:26]  # seconds and microseconds: as an int, the us into the minute
                if sub.isdigit() and sub.isascii() and sub < "60":
                    ts_us = (base - off) * 1_000_000 + int(sub)
                    if (ts_us >= (MIN_EVENT_TIME_US if min_ts_us is None else min_ts_us)
                            and (max_ts_us is None or ts_us <= max_ts_us) and fast(ev, eid + shop, ts_us)):
                        return ev
                return _validate_reference(ev, topic, max_ts_us, min_ts_us)
            sec = _SS.get(ts[17:19])
            if base is not None and sec is not None and ts[16:17] == ":":
                if ts[-1] == "Z":
                    off = 0
                    end = n - 1
                else:
                    off = _OFFSETS.get(ts[-6:])
                    end = n - 6
                if off is None:
                    ts_us = None
                elif end == 19:
                    ts_us = (base + sec - off) * 1_000_000
                elif 21 <= end <= 29 and ts[19] == ".":
                    digits = ts[20:end]
                    if digits.isdigit() and digits.isascii():
                        k = end - 20
                        ts_us = (base + sec - off) * 1_000_000 + (
                            int(digits) * _FRAC_SCALE[k] if k <= 6 else int(digits[:6]))
                    else:
                        ts_us = None
                else:
                    ts_us = None
                if (ts_us is not None and ts_us >= (MIN_EVENT_TIME_US if min_ts_us is None else min_ts_us)
                        and (max_ts_us is None or ts_us <= max_ts_us) and fast(ev, eid + shop, ts_us)):
                    return ev
    return _validate_reference(ev, topic, max_ts_us, min_ts_us)


def _validate_reference(ev: object, topic: str | None = None, max_ts_us: int | None = None,
                        min_ts_us: int | None = None) -> dict:
    """``validate`` field by field: every check in the contract's order, and every reason."""
    if not isinstance(ev, dict):
        raise InvalidEvent(f"expected a JSON object, got {type(ev).__name__}")
    t = ev.get("type")
    if t is None:
        raise InvalidEvent("missing field type")
    spec = EVENT_TYPES.get(t) if isinstance(t, str) else None
    if spec is None:
        raise InvalidEvent(f"type: unknown event type {t!r}")
    _str(ev, "event_id", True, 128)
    if "ts" not in ev:
        raise InvalidEvent("missing field ts")
    ts_us = ev["ts_us"] = parse_ts_us(ev["ts"])
    if ts_us < (MIN_EVENT_TIME_US if min_ts_us is None else min_ts_us):
        raise InvalidEvent(f"ts: {ev['ts']} is before the earliest accepted event time "
                           f"{MIN_EVENT_TIME if min_ts_us is None else fmt_us(min_ts_us)}")
    if max_ts_us is not None and ts_us > max_ts_us:
        raise InvalidEvent(f"ts: {ev['ts']} is in the future: after the latest accepted event time "
                           f"{fmt_us(max_ts_us)}")
    p = ev.get("platform")
    if p is None:
        raise InvalidEvent("missing field platform")
    if not isinstance(p, str) or p not in _PLATFORMS:
        raise InvalidEvent(f"platform: {p!r} is not one of {', '.join(PLATFORMS)}")
    _str(ev, "shop_id", True, 64)
    if topic is not None and spec[0] != topic:
        raise InvalidEvent(f"type: {t} does not belong on topic {topic}")
    spec[1](ev)
    return ev


def decode(raw: bytes | str, topic: str | None = None, max_ts_us: int | None = None,
           min_ts_us: int | None = None) -> dict:
    """Bytes (one JSON object) -> validated event dict. Raises InvalidEvent."""
    if len(raw) > MAX_EVENT_BYTES // (4 if isinstance(raw, str) else 1):  # 4: UTF-8's widest character
        size = len(raw.encode("utf-8", "surrogatepass")) if isinstance(raw, str) else len(raw)
        if size > MAX_EVENT_BYTES:
            raise InvalidEvent(f"record too large: {size} bytes (at most {MAX_EVENT_BYTES})")
    try:
        ev = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"bad JSON: {exc}") from None
    return validate(ev, topic, max_ts_us, min_ts_us)


def key_of(ev: dict) -> str:
    """The partition key of an event on its input topic (order_id or session_id)."""
    return ev["session_id"] if TOPIC_OF_TYPE[ev["type"]] == TOPIC_CHATS else ev["order_id"]
