"""The dirt of a real feed mixed into the world's events: re-delivered duplicates and
malformed lines (see the package docstring)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date
from heapq import heappop, heappush

import orjson

from shopwatch.schemas.events import EVENT_TYPES, TOPIC_CHATS, TOPIC_OF_TYPE

from .world import DEFAULT_DAYS, DEFAULT_SHOPS, DEFAULT_START, generate

DEFAULT_DIRTY = 0.005

MALFORMS = ("bad_json", "unknown_type", "missing_field", "ts_no_offset", "rating_out_of_range",
             "negative_amount", "unknown_platform", "mistyped_field")
_NOT_JSON = (b"{not json at all", b"[1, 2, 3]", b"null", b'"order.paid"', b"\xef\xbb\xbf{}", b"{}")
_UNKNOWN_TYPES = ("order.teleported", "order.refunded", "shipment.lost_in_space", "chat.typing", "Order.Paid",
                  "review.deleted", "refund.reopened")
_BAD_PLATFORMS = ("amazon", "taobao", "pinduoduo", "Douyin", "")
_REQUIRED_EXTRA = {
    "order.paid": ("amount_fen",),
    "review.posted": ("product_rating",),
    "complaint.filed": ("complaint_id",),
    "complaint.judged": ("complaint_id", "responsible"),
    "shipment.customs": ("status",),
    "refund.requested": ("refund_id", "kind"),
    "refund.judged": ("refund_id", "responsible"),
    "chat.message": ("sender",),
    "chat.rated": ("rating",),
}
_ENVELOPE = ("event_id", "type", "ts", "platform", "shop_id")
assert all(t not in EVENT_TYPES for t in _UNKNOWN_TYPES)


def malform(ev: dict, rng: random.Random, event_id: str) -> tuple[str, bytes]:
    """A malformed line derived from a valid event: (variant, bytes). Never passes ``decode``."""
    c = dict(ev)
    c["event_id"] = event_id
    chat = "session_id" in c
    key = "session_id" if chat else "order_id"
    kind = MALFORMS[int(rng.random() * len(MALFORMS))]
    if kind == "negative_amount" and chat:
        kind = "unknown_platform"
    if kind == "bad_json":
        if rng.random() < 0.25:
            return kind, _NOT_JSON[int(rng.random() * len(_NOT_JSON))]
        s = orjson.dumps(c).decode()
        return kind, s[: rng.randrange(1, len(s) - 1)].encode()  # a cut object: never valid JSON
    if kind == "unknown_type":
        c["type"] = _UNKNOWN_TYPES[int(rng.random() * len(_UNKNOWN_TYPES))]
    elif kind == "missing_field":
        req = _ENVELOPE + (key,) + _REQUIRED_EXTRA.get(c["type"], ("refund_id",) if c["type"][:7] == "refund." else ())
        del c[req[int(rng.random() * len(req))]]
    elif kind == "ts_no_offset":
        c["ts"] = c["ts"][:-6]
    elif kind == "rating_out_of_range":
        bad = rng.choice((0, 6, 9, 10, -1, 55))
        c = {k: c[k] for k in _ENVELOPE}
        c[key] = ev[key]
        if chat:
            c["type"], c["rating"] = "chat.rated", bad
        else:
            c["type"], c["product_rating"] = "review.posted", rng.randint(1, 5)
            c[rng.choice(("product_rating", "service_rating", "logistics_rating"))] = bad
    elif kind == "negative_amount":
        neg = -rng.randrange(1, 100000)
        if "amount_fen" in c:
            c["amount_fen"] = -c["amount_fen"] if c["amount_fen"] > 0 else neg
        elif "refund_id" in c:
            c["type"], c["amount_fen"] = "refund.completed", neg
        else:
            c = {k: c[k] for k in _ENVELOPE} | {"type": "order.paid", key: ev[key], "amount_fen": neg}
    elif kind == "unknown_platform":
        c["platform"] = _BAD_PLATFORMS[int(rng.random() * len(_BAD_PLATFORMS))]
    else:  # mistyped_field
        if rng.random() < 0.5:
            c[key] = rng.randrange(1, 10**9)
        else:
            c["ts"] = rng.randrange(1_700_000_000, 1_900_000_000)  # epoch seconds, not RFC 3339
    return kind, orjson.dumps(c)


def records(seed: int | str = 42, shops: int = DEFAULT_SHOPS, days: int | None = DEFAULT_DAYS,
            start: str | date = DEFAULT_START, *, dirty: float = DEFAULT_DIRTY, events: int | None = None,
            **kwargs) -> Iterator[tuple[str, str, str, bytes]]:
    """Output records ``(kind, default_topic, key, json_bytes)``; kind is event, duplicate or malformed.

    ``events`` caps the number of records (all kinds). A malformed record
    travels on the topic of, and with the key of, the event it was made from.
    """
    if not 0.0 <= dirty < 1.0:
        raise ValueError("dirty must be in [0, 1)")
    limit = -1 if events is None else events
    if limit == 0:
        return
    drng = random.Random(f"shopwatch-simulate-dirt:{seed}")
    dr = drng.random
    half = dirty / 2
    pfx = kwargs.get("id_prefix", "")
    dumps = orjson.dumps
    topic_of = TOPIC_OF_TYPE
    pending: list = []  # duplicates due: (record index, seq, topic, key, bytes)
    n = nbad = 0
    for ev in generate(seed, shops, days, start, **kwargs):
        while pending and pending[0][0] <= n:
            _, _, topic, key, b = heappop(pending)
            yield "duplicate", topic, key, b
            n += 1
            if n == limit:
                return
        b = dumps(ev)
        topic = topic_of[ev["type"]]
        key = ev["session_id"] if topic == TOPIC_CHATS else ev["order_id"]
        if dirty:
            x = dr()
            if x < half:
                nbad += 1
                yield "malformed", topic, key, malform(ev, drng, f"{pfx}x{nbad:08d}")[1]
                n += 1
                if n == limit:
                    return
            elif x < dirty:
                heappush(pending, (n + 1 + int(dr() * 2000), n, topic, key, b))
        yield "event", topic, key, b
        n += 1
        if n == limit:
            return
    while pending:
        _, _, topic, key, b = heappop(pending)
        yield "duplicate", topic, key, b
        n += 1
        if n == limit:
            return
