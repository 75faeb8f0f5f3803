"""The event contract (shared/spec/events.md): schemas/events.py and the JSON Schema files.

(a) every kind of invalid event the spec lists is rejected with a reason naming the field;
(b) defaults, ts_us, extra fields, topics;
(c) the hand-written validator and event.schema.json accept and reject the same events;
(d) the alert and score schemas accept the spec's examples.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from shopwatch.schemas import events
from shopwatch.schemas.events import InvalidEvent, decode, parse_ts_us
from shopwatch.schemas.jsonschema_files import NAMES, load

SPEC = Path(__file__).resolve().parents[3] / "shared" / "spec" / "events.md"
ACCEPTANCE = Path(__file__).resolve().parents[3] / "shared" / "acceptance"


def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load(name), format_checker=Draft202012Validator.FORMAT_CHECKER)


EVENT_V = _validator("event")
ALERT_V = _validator("alert")
SCORE_V = _validator("score")

ENVELOPE = {"event_id": "e-1", "ts": "2026-11-20T10:00:00+08:00", "platform": "douyin", "shop_id": "s-17"}
ENVELOPE_FIELDS = ("event_id", "type", "ts", "platform", "shop_id")

_SHIP = {"order_id": "o-1", "tracking_no": "SF1001", "location": "杭州转运中心"}
_REF = {"order_id": "o-1", "refund_id": "r-1"}

# One valid example per event type, with every field the spec gives that type.
VALID: dict[str, dict] = {
    "order.paid": {
        "order_id": "o-1", "amount_fen": 12800, "trade_type": "bonded", "category": "fresh", "cod": True,
        "virtual": False, "live": True, "presale": {"ship_within_days": 3},
        "promised_ship_by": "2026-11-22T10:00:00+08:00",
    },
    "order.shipped": {"order_id": "o-1", "carrier": "SF", "tracking_no": "SF1001", "no_logistics": False},
    "order.cancelled": {"order_id": "o-1", "reason": "buyer changed their mind"},
    "review.posted": {"order_id": "o-1", "product_rating": 5, "service_rating": 4, "logistics_rating": 1},
    "complaint.filed": {"order_id": "o-1", "complaint_id": "c-1"},
    "complaint.judged": {"order_id": "o-1", "complaint_id": "c-1", "responsible": "merchant", "malicious": False},
    "shipment.picked_up": dict(_SHIP),
    "shipment.in_transit": dict(_SHIP),
    "shipment.out_for_delivery": dict(_SHIP),
    "shipment.signed": dict(_SHIP),
    "shipment.customs": {**_SHIP, "status": "held"},
    "shipment.exception": {**_SHIP, "reason": "lost"},
    "shipment.fake_flagged": dict(_SHIP),
    "refund.requested": {
        **_REF, "kind": "refund_only", "reason": "spoiled", "amount_fen": 990, "no_return": True,
        "damage_ratio": 0.26,
    },
    "refund.approved": dict(_REF),
    "refund.rejected": {**_REF, "note": "已发货，请拒收"},
    "refund.return_shipped": {**_REF, "tracking_no": "YT2002"},
    "refund.return_signed": dict(_REF),
    "refund.received": dict(_REF),
    "refund.intervened": dict(_REF),
    "refund.judged": {**_REF, "responsible": "both"},
    "refund.completed": {**_REF, "amount_fen": 990},
    "refund.closed": dict(_REF),
    "refund.proof_uploaded": dict(_REF),
    "chat.started": {"session_id": "q-1", "buyer_id": "b-1"},
    "chat.assigned": {"session_id": "q-1", "agent_id": "a-1"},
    "chat.message": {"session_id": "q-1", "sender": "agent"},
    "chat.closed": {"session_id": "q-1"},
    "chat.rated": {"session_id": "q-1", "rating": 4},
}

# The fields the spec makes required for each type (besides the envelope).
REQUIRED: dict[str, tuple[str, ...]] = {
    "order.paid": ("order_id", "amount_fen"),
    "order.shipped": ("order_id",),
    "order.cancelled": ("order_id",),
    "review.posted": ("order_id", "product_rating"),
    "complaint.filed": ("order_id", "complaint_id"),
    "complaint.judged": ("order_id", "complaint_id", "responsible"),
    "shipment.picked_up": ("order_id",),
    "shipment.in_transit": ("order_id",),
    "shipment.out_for_delivery": ("order_id",),
    "shipment.signed": ("order_id",),
    "shipment.customs": ("order_id", "status"),
    "shipment.exception": ("order_id", "reason"),
    "shipment.fake_flagged": ("order_id",),
    "refund.requested": ("order_id", "refund_id", "kind", "reason", "amount_fen"),
    "refund.approved": ("order_id", "refund_id"),
    "refund.rejected": ("order_id", "refund_id"),
    "refund.return_shipped": ("order_id", "refund_id"),
    "refund.return_signed": ("order_id", "refund_id"),
    "refund.received": ("order_id", "refund_id"),
    "refund.intervened": ("order_id", "refund_id"),
    "refund.judged": ("order_id", "refund_id", "responsible"),
    "refund.completed": ("order_id", "refund_id"),
    "refund.closed": ("order_id", "refund_id"),
    "refund.proof_uploaded": ("order_id", "refund_id"),
    "chat.started": ("session_id",),
    "chat.assigned": ("session_id",),
    "chat.message": ("session_id", "sender"),
    "chat.closed": ("session_id",),
    "chat.rated": ("session_id", "rating"),
}

TOPIC = {
    "order": "shop.orders", "review": "shop.orders", "complaint": "shop.orders",
    "shipment": "shop.shipments", "refund": "shop.refunds", "chat": "shop.chats",
}


def ev(type_: str, **changes) -> dict:
    """A full valid event of ``type_`` with ``changes`` applied (a value of ``DROP`` removes the field)."""
    d = {**copy.deepcopy(ENVELOPE), "type": type_, **copy.deepcopy(VALID[type_])}
    for k, v in changes.items():
        if v is DROP:
            d.pop(k, None)
        else:
            d[k] = v
    return d


def minimal(type_: str) -> dict:
    d = {**ENVELOPE, "type": type_}
    d.update({f: VALID[type_][f] for f in REQUIRED[type_]})
    return d


DROP = object()


def raw(d: object) -> bytes:
    return orjson.dumps(d)


def rejected(d: object, topic: str | None = None) -> str:
    """decode() must reject ``d``; returns the reason."""
    with pytest.raises(InvalidEvent) as ei:
        decode(d if isinstance(d, bytes | str) else raw(d), topic)
    reason = str(ei.value)
    assert reason
    return reason


def code_accepts(d: object) -> bool:
    # no topic and no max_ts_us: the rules that need them are the code's only (test_topics,
    # test_ts_ceiling_is_the_callers); the schema is compared with the rest
    try:
        decode(raw(d))
    except InvalidEvent:
        return False
    return True


def schema_accepts(d: object) -> bool:
    return EVENT_V.is_valid(d)


# ---------------------------------------------------------------------------------------------
# (a) invalid events: decode raises InvalidEvent with a reason naming the field
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"{not json at all", b'{"event_id": "broken", "type": ', b"", b"   ",
                                  b'{"a": 1,}', b"\xff\xfe", "{'single': 'quotes'}"])
def test_bad_json(data):
    assert "bad JSON" in rejected(data)


@pytest.mark.parametrize("data", [b"[1, 2, 3]", b'"order.paid"', b"42", b"null", b"true"])
def test_not_an_object(data):
    assert "object" in rejected(data)


@pytest.mark.parametrize("field", ENVELOPE_FIELDS)
@pytest.mark.parametrize("how", ["absent", "null"])
def test_missing_envelope_field(field, how):
    d = ev("order.paid", **{field: DROP if how == "absent" else None})
    assert field in rejected(d)
    assert not schema_accepts(d)


@pytest.mark.parametrize("type_,field", [(t, f) for t, fs in REQUIRED.items() for f in fs])
@pytest.mark.parametrize("how", ["absent", "null"])
def test_missing_required_field(type_, field, how):
    d = ev(type_, **{field: DROP if how == "absent" else None})
    reason = rejected(d)
    assert field in reason and "missing" in reason


# (type, field, value): a field of the wrong JSON type (string vs int, bool as int, int as bool, ...)
MISTYPED = [
    ("order.paid", "event_id", 17),
    ("order.paid", "shop_id", 17),
    ("order.paid", "platform", 1),
    ("order.paid", "ts", 1795168800),
    ("order.paid", "type", 3),
    ("order.paid", "order_id", 1001),
    ("order.paid", "amount_fen", "12800"),
    ("order.paid", "amount_fen", True),
    ("order.paid", "amount_fen", 128.5),
    ("order.paid", "amount_fen", [12800]),
    ("order.paid", "trade_type", 1),
    ("order.paid", "category", 7),
    ("order.paid", "cod", 1),
    ("order.paid", "cod", "true"),
    ("order.paid", "virtual", 0),
    ("order.paid", "live", "false"),
    ("order.paid", "presale", "2026-11-30"),
    ("order.paid", "presale", {"ship_within_days": "3"}),
    ("order.paid", "presale", {"ship_within_days": True}),
    ("order.paid", "promised_ship_by", 1795168800),
    ("order.shipped", "carrier", 5),
    ("order.shipped", "tracking_no", 123456),
    ("order.shipped", "no_logistics", "false"),
    ("order.cancelled", "reason", 5),
    ("review.posted", "product_rating", "5"),
    ("review.posted", "product_rating", True),
    ("review.posted", "service_rating", 4.5),
    ("review.posted", "logistics_rating", "1"),
    ("complaint.filed", "complaint_id", 9),
    ("complaint.judged", "malicious", 0),
    ("complaint.judged", "malicious", "no"),
    ("complaint.judged", "responsible", True),
    ("shipment.in_transit", "location", 5),
    ("shipment.signed", "tracking_no", 5),
    ("shipment.customs", "status", 1),
    ("refund.requested", "refund_id", 77),
    ("refund.requested", "amount_fen", "990"),
    ("refund.requested", "no_return", 1),
    ("refund.requested", "damage_ratio", "0.5"),
    ("refund.requested", "damage_ratio", True),
    ("refund.rejected", "note", ["x"]),
    ("refund.return_shipped", "tracking_no", 5),
    ("refund.completed", "amount_fen", "990"),
    ("refund.completed", "amount_fen", False),
    ("chat.started", "session_id", 3),
    ("chat.started", "buyer_id", 5),
    ("chat.assigned", "agent_id", {"id": 1}),
    ("chat.message", "sender", 1),
    ("chat.rated", "rating", "4"),
    ("chat.rated", "rating", False),
]

# (type, field, value): right JSON type, value outside the contract (bad enum, out of range, too long)
OUT_OF_CONTRACT = [
    ("order.paid", "type", "order.teleported"),
    ("order.paid", "platform", "amazon"),
    ("order.paid", "event_id", ""),
    ("order.paid", "event_id", "e" * 129),
    ("order.paid", "shop_id", ""),
    ("order.paid", "shop_id", "s" * 65),
    ("order.paid", "order_id", ""),
    ("order.paid", "order_id", "o" * 129),
    ("order.paid", "amount_fen", -1),
    ("order.paid", "trade_type", "cross_border"),
    ("order.paid", "presale", {}),
    ("order.paid", "presale", {"ship_by": "2026-11-30", "ship_within_days": 3}),
    ("order.paid", "presale", {"ship_by": "2026-02-30"}),
    ("order.paid", "presale", {"ship_by": "30/11/2026"}),
    ("order.paid", "presale", {"ship_within_days": -1}),
    ("order.paid", "presale", {"ship_within_days": 367}),
    ("order.paid", "presale", {"ship_within_days": 10**6}),
    ("order.paid", "promised_ship_by", "2026-11-22T10:00:00"),
    ("order.paid", "promised_ship_by", "1999-12-31T00:00:00+08:00"),
    ("order.paid", "ts", "0001-01-01T00:00:00Z"),
    ("order.paid", "ts", "1999-12-31T00:00:00+08:00"),
    ("order.paid", "ts", "1970-01-01T00:00:00Z"),
    ("order.paid", "event_id", "e\x00-1"),
    ("order.paid", "shop_id", "s-17\x7f"),
    ("order.paid", "order_id", "\x85o-1"),
    ("order.shipped", "carrier", ""),
    ("review.posted", "product_rating", 0),
    ("review.posted", "product_rating", 6),
    ("review.posted", "service_rating", 9),
    ("review.posted", "logistics_rating", -1),
    ("complaint.judged", "responsible", "platform"),
    ("shipment.customs", "status", "lost"),
    ("shipment.exception", "reason", "stolen"),
    ("refund.requested", "kind", "return"),
    ("refund.requested", "reason", "bored"),
    ("refund.requested", "amount_fen", -5),
    ("refund.requested", "damage_ratio", 1.5),
    ("refund.requested", "damage_ratio", -0.1),
    ("refund.judged", "responsible", "carrier"),
    ("refund.completed", "amount_fen", -1),
    ("chat.message", "sender", "customer"),
    ("chat.rated", "rating", 0),
    ("chat.rated", "rating", 6),
]


@pytest.mark.parametrize("type_,field,value", MISTYPED + OUT_OF_CONTRACT)
def test_bad_field_value_is_rejected_naming_the_field(type_, field, value):
    assert field in rejected(ev(type_, **{field: value}))


@pytest.mark.parametrize("type_", ["order.teleported", "ORDER.PAID", "order", "", "order.paid ", "shipment.*"])
def test_unknown_type(type_):
    assert "type" in rejected(ev("order.paid", type=type_))


@pytest.mark.parametrize("platform", ["amazon", "Douyin", "DOUYIN", "", "taobao", " jd"])
def test_unknown_platform(platform):
    assert "platform" in rejected(ev("order.paid", platform=platform))


@pytest.mark.parametrize("ts", ["2026-11-20T10:00:00", "2026-11-20T10:00:00.123", "2026-11-20T10:00:00.123456",
                                "2026-11-20 10:00:00", "2026-11-20T10:00"])
def test_timestamp_without_offset(ts):
    reason = rejected(ev("order.paid", ts=ts))
    assert "ts" in reason and "offset" in reason


@pytest.mark.parametrize("ts", [
    "yesterday", "", "2026-11-20", "10:00:00+08:00", "2026-11-20T10:00:00+08:00+0", "2026-11-20T10:00:00+0800",
    "2026-11-20T10:00:00+08", "2026-11-20T10:00:00 +08:00", "2026-11-20T10:00:00.+08:00",
    "2026-11-20T10:00:00.1234567890Z", "2026-13-01T00:00:00Z", "2026-02-30T10:00:00Z", "2026-11-20T24:00:00Z",
    "2026-11-20T10:60:00Z", "2026-11-20T10:00:60Z", "2026-11-20T10:00:00+24:00", "2026-11-20T10:00:00+05:60",
    "0000-01-01T00:00:00Z", "2026-11-20T10:00:00Z\n", " 2026-11-20T10:00:00Z", "2026-11-20T10:00:00.١٢٣Z",
    "٢٠٢٦-11-20T10:00:00Z", "20261120T100000Z", "2026-W47-5T10:00:00Z",
])
def test_garbage_timestamp(ts):
    assert "ts" in rejected(ev("order.paid", ts=ts))
    assert "promised_ship_by" in rejected(ev("order.paid", promised_ship_by=ts))


@pytest.mark.parametrize("type_,field", [("review.posted", "product_rating"), ("review.posted", "service_rating"),
                                         ("review.posted", "logistics_rating"), ("chat.rated", "rating")])
@pytest.mark.parametrize("value", [0, 6, 9, -1, 100])
def test_rating_outside_1_to_5(type_, field, value):
    reason = rejected(ev(type_, **{field: value}))
    assert field in reason and str(value) in reason


@pytest.mark.parametrize("type_", ["order.paid", "refund.requested", "refund.completed"])
@pytest.mark.parametrize("value", [-1, -5, -1_000_000])
def test_negative_amount(type_, value):
    reason = rejected(ev(type_, amount_fen=value))
    assert "amount_fen" in reason and "negative" in reason


@pytest.mark.parametrize("field,limit", [("event_id", 128), ("shop_id", 64), ("order_id", 128)])
def test_length_limits(field, limit):
    assert decode(raw(ev("order.paid", **{field: "x" * limit})))[field] == "x" * limit
    assert decode(raw(ev("order.paid", **{field: "好" * limit})))[field] == "好" * limit  # characters, not bytes
    assert field in rejected(ev("order.paid", **{field: "x" * (limit + 1)}))
    assert field in rejected(ev("order.paid", **{field: ""}))


# ---------------------------------------------------------------------------------------------
# (b) defaults, ts_us, extra fields, topics
# ---------------------------------------------------------------------------------------------


def test_order_paid_defaults():
    out = decode(raw(minimal("order.paid")))
    assert out["trade_type"] == "domestic"
    assert out["category"] == "general"
    assert out["cod"] is False and out["virtual"] is False and out["live"] is False
    for absent in ("presale", "promised_ship_by", "promised_ship_by_us"):
        assert absent not in out


@pytest.mark.parametrize("type_,field", [("order.shipped", "no_logistics"), ("refund.requested", "no_return"),
                                         ("complaint.judged", "malicious")])
def test_flag_defaults_false(type_, field):
    assert decode(raw(minimal(type_)))[field] is False
    assert decode(raw(ev(type_, **{field: None})))[field] is False
    assert decode(raw(ev(type_, **{field: True})))[field] is True


def test_null_optional_fields_count_as_absent():
    d = ev("order.paid", trade_type=None, category=None, cod=None, presale=None, promised_ship_by=None)
    out = decode(raw(d))
    assert out["trade_type"] == "domestic" and out["category"] == "general" and out["cod"] is False
    assert "presale" not in out and "promised_ship_by" not in out
    out = decode(raw(ev("review.posted", service_rating=None, logistics_rating=None)))
    assert "service_rating" not in out and "logistics_rating" not in out
    assert schema_accepts(d)


def test_given_values_are_kept():
    out = decode(raw(ev("order.paid")))
    for k, v in VALID["order.paid"].items():
        assert out[k] == v


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(dt: datetime) -> int:
    return (dt - _EPOCH) // timedelta(microseconds=1)


@pytest.mark.parametrize("ts,expected", [
    ("2026-11-20T02:00:00Z", datetime(2026, 11, 20, 2, 0, tzinfo=UTC)),
    ("2026-11-20T02:00:00z", datetime(2026, 11, 20, 2, 0, tzinfo=UTC)),
    ("2026-11-20T10:00:00+08:00", datetime(2026, 11, 20, 2, 0, tzinfo=UTC)),
    ("2026-11-20t10:00:00+08:00", datetime(2026, 11, 20, 2, 0, tzinfo=UTC)),
    ("2026-11-20T00:30:00+08:00", datetime(2026, 11, 19, 16, 30, tzinfo=UTC)),
    ("2026-11-19T21:30:00-04:30", datetime(2026, 11, 20, 2, 0, tzinfo=UTC)),
    ("2026-11-20T02:00:00-00:00", datetime(2026, 11, 20, 2, 0, tzinfo=UTC)),
    ("2026-11-20T10:00:00.123+08:00", datetime(2026, 11, 20, 2, 0, 0, 123000, tzinfo=UTC)),
    ("2026-11-20T02:00:00.123Z", datetime(2026, 11, 20, 2, 0, 0, 123000, tzinfo=UTC)),
    ("2026-11-20T10:00:00.123456+08:00", datetime(2026, 11, 20, 2, 0, 0, 123456, tzinfo=UTC)),
    ("2026-10-03T17:29:30.927533+08:00", datetime(2026, 10, 3, 9, 29, 30, 927533, tzinfo=UTC)),
    ("2026-11-20T02:00:00.000001Z", datetime(2026, 11, 20, 2, 0, 0, 1, tzinfo=UTC)),
    ("2026-11-20T02:00:00.5Z", datetime(2026, 11, 20, 2, 0, 0, 500000, tzinfo=UTC)),
    ("2026-11-20T02:00:00.123456789Z", datetime(2026, 11, 20, 2, 0, 0, 123456, tzinfo=UTC)),  # truncated
    ("2026-12-31T23:59:59.999999+08:00", datetime(2026, 12, 31, 15, 59, 59, 999999, tzinfo=UTC)),
    ("2027-01-01T00:00:00+08:00", datetime(2026, 12, 31, 16, 0, tzinfo=UTC)),
    ("2028-02-29T12:00:00+08:00", datetime(2028, 2, 29, 4, 0, tzinfo=UTC)),
    ("1969-12-31T23:59:59.5Z", datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC)),
])
def test_ts_us(ts, expected):
    assert parse_ts_us(ts) == _us(expected)
    if expected.year < 2000:  # parsed, but outside the sane window of event time
        with pytest.raises(InvalidEvent, match="before the earliest accepted event time"):
            decode(raw(ev("order.paid", ts=ts)))
        return
    out = decode(raw(ev("order.paid", ts=ts, promised_ship_by=ts)))
    assert out["ts_us"] == _us(expected)
    assert out["promised_ship_by_us"] == _us(expected)
    assert out["ts"] == ts  # the original string is kept
    assert schema_accepts(ev("order.paid", ts=ts))


def test_same_instant_same_ts_us():
    a = decode(raw(ev("chat.closed", ts="2026-11-20T02:00:00Z")))["ts_us"]
    b = decode(raw(ev("chat.closed", ts="2026-11-20T10:00:00+08:00")))["ts_us"]
    c = decode(raw(ev("chat.closed", ts="2026-11-20T10:00:00.000+08:00")))["ts_us"]
    assert a == b == c


def test_unknown_extra_fields_are_accepted_and_kept():
    d = ev("order.paid", x_source="sim", nested={"a": [1, 2, {"b": None}]}, amount_yuan=128.0, flag=None)
    out = decode(raw(d))
    assert out["x_source"] == "sim" and out["nested"] == {"a": [1, 2, {"b": None}]} and out["amount_yuan"] == 128.0
    assert schema_accepts(d)
    # fields of other types are just extra fields here
    assert code_accepts(ev("chat.closed", order_id=5, amount_fen=-1, rating=99))
    assert schema_accepts(ev("chat.closed", order_id=5, amount_fen=-1, rating=99))


def test_derived_fields_sent_by_the_producer_are_not_trusted():
    out = decode(raw(ev("order.paid", ts_us=0, promised_ship_by=DROP, promised_ship_by_us=0)))
    assert out["ts_us"] == _us(datetime(2026, 11, 20, 2, 0, tzinfo=UTC))
    assert "promised_ship_by_us" not in out
    out = decode(raw(ev("order.paid", promised_ship_by_us="garbage")))
    assert out["promised_ship_by_us"] == _us(datetime(2026, 11, 22, 2, 0, tzinfo=UTC))


@pytest.mark.parametrize("type_", sorted(VALID))
def test_topics(type_):
    own = TOPIC[type_.split(".")[0]]
    assert events.TOPIC_OF_TYPE[type_] == own
    assert decode(raw(ev(type_)), own)["type"] == type_
    assert decode(raw(ev(type_)))["type"] == type_  # no topic given: any type
    for other in events.INPUT_TOPICS:
        if other != own:
            reason = rejected(ev(type_), other)
            assert "topic" in reason and type_ in reason


@pytest.mark.parametrize("type_", sorted(VALID))
def test_key_of(type_):
    out = decode(raw(ev(type_)))
    assert events.key_of(out) == (out["session_id"] if type_.startswith("chat.") else out["order_id"])


def test_decode_accepts_str_and_bytes():
    assert decode(json.dumps(ev("chat.closed"), ensure_ascii=False))["session_id"] == "q-1"
    assert decode(json.dumps(ev("order.cancelled", reason="买家不想要了"), ensure_ascii=False).encode())


# ---------------------------------------------------------------------------------------------
# (c) code and schema in step
# ---------------------------------------------------------------------------------------------

SCHEMA = load("event")


def _resolve(node: dict) -> dict:
    ref = node.get("$ref")
    if ref:
        assert ref.startswith("#/$defs/")
        return {**_resolve(SCHEMA["$defs"][ref.removeprefix("#/$defs/")]), **{k: v for k, v in node.items()
                                                                               if k != "$ref"}}
    return node


def _then(type_: str) -> dict:
    for clause in SCHEMA["allOf"]:
        if clause["if"]["properties"]["type"] == {"const": type_}:
            return clause["then"]
    raise AssertionError(f"no schema clause for {type_}")


def schema_required(type_: str) -> set[str]:
    then = _then(type_)
    base = _resolve({"$ref": then["$ref"]}) if "$ref" in then else {}
    return set(base.get("required", ())) | set(then.get("required", ()))


def schema_properties(type_: str) -> dict[str, dict]:
    then = _then(type_)
    base = _resolve({"$ref": then["$ref"]}) if "$ref" in then else {}
    props = {**base.get("properties", {}), **then.get("properties", {})}
    return {k: _resolve(v) for k, v in props.items()}


def test_every_type_is_listed_everywhere():
    assert set(VALID) == set(REQUIRED) == set(events.EVENT_TYPES) == set(SCHEMA["properties"]["type"]["enum"])
    assert len(SCHEMA["allOf"]) == len(VALID)


def test_schema_topics_match_code():
    by_schema = {t: topic for topic, types in SCHEMA["x-topics"].items() for t in types}
    assert by_schema == events.TOPIC_OF_TYPE


def test_schema_envelope_matches_code():
    assert set(SCHEMA["required"]) == set(ENVELOPE_FIELDS)
    assert _resolve(SCHEMA["properties"]["platform"])["enum"] == list(events.PLATFORMS)
    assert _resolve(SCHEMA["properties"]["event_id"])["maxLength"] == 128
    assert SCHEMA["properties"]["shop_id"]["maxLength"] == 64


@pytest.mark.parametrize("type_,field,values", [
    ("order.paid", "trade_type", events.TRADE_TYPES),
    ("complaint.judged", "responsible", events.RESPONSIBLE),
    ("refund.judged", "responsible", events.RESPONSIBLE),
    ("refund.requested", "kind", events.REFUND_KINDS),
    ("refund.requested", "reason", events.REFUND_REASONS),
    ("shipment.customs", "status", events.CUSTOMS_STATUSES),
    ("shipment.exception", "reason", events.EXCEPTION_REASONS),
    ("chat.message", "sender", events.SENDERS),
])
def test_schema_enums_match_code(type_, field, values):
    assert [v for v in schema_properties(type_)[field]["enum"] if v is not None] == list(values)
    for v in values:
        d = ev(type_, **{field: v})
        assert code_accepts(d) and schema_accepts(d)


@pytest.mark.parametrize("type_", sorted(VALID))
def test_schema_required_and_properties_match_the_spec(type_):
    assert schema_required(type_) == set(REQUIRED[type_])
    assert set(schema_properties(type_)) == set(VALID[type_])  # the full examples use every field


@pytest.mark.parametrize("type_", sorted(VALID))
def test_schema_defaults_match_code(type_):
    out = decode(raw(minimal(type_)))
    for field, prop in schema_properties(type_).items():
        if "default" in prop:
            assert out[field] == prop["default"], field
        elif field not in REQUIRED[type_]:
            assert field not in out, field  # no default: stays absent


@pytest.mark.parametrize("type_", sorted(VALID))
@pytest.mark.parametrize("make", [ev, minimal], ids=["full", "minimal"])
def test_valid_examples_accepted_by_both(type_, make):
    d = make(type_)
    out = decode(raw(d))
    assert out["type"] == type_ and isinstance(out["ts_us"], int)
    EVENT_V.validate(d)
    EVENT_V.validate(out)  # the decoded event (with defaults and ts_us) is still a valid event


# Right-type values the contract allows, at its edges.
ACCEPTED = [
    ("order.paid", "amount_fen", 0),
    ("order.paid", "category", ""),
    ("order.paid", "presale", {"ship_by": "2026-11-30"}),
    ("order.paid", "presale", {"ship_by": "2027-02-28", "ship_within_days": None}),  # within 366 days of ts
    ("order.paid", "presale", {"ship_within_days": 0, "ship_by": None}),
    ("order.paid", "presale", {"ship_within_days": 366}),
    ("order.paid", "presale", {"ship_within_days": 3, "note": "extra"}),
    ("order.paid", "event_id", "e" * 128),
    ("order.paid", "shop_id", "s" * 64),
    ("order.paid", "shop_id", "店铺\xa017"),  # U+00A0 (no-break space) is just past C1: not a control character
    ("order.paid", "ts", "2026-11-20T10:00:00.123456789+08:00"),
    ("order.paid", "ts", "2026-11-20T10:00:00+23:59"),
    ("review.posted", "product_rating", 1),
    ("review.posted", "product_rating", 5),
    ("refund.requested", "damage_ratio", 0),
    ("refund.requested", "damage_ratio", 1),
    ("refund.requested", "damage_ratio", 1.0),
    ("refund.requested", "damage_ratio", None),
    ("refund.completed", "amount_fen", None),
    ("refund.completed", "amount_fen", DROP),
    ("chat.rated", "rating", 1),
    ("chat.rated", "rating", 5),
]


@pytest.mark.parametrize("type_,field,value", ACCEPTED)
def test_edge_values_accepted_by_both(type_, field, value):
    d = ev(type_, **{field: value})
    assert code_accepts(d)
    assert schema_accepts(d), list(EVENT_V.iter_errors(d))


@pytest.mark.parametrize("type_,field", [(t, f) for t, fs in REQUIRED.items() for f in (*fs, *ENVELOPE_FIELDS)])
def test_dropped_required_field_rejected_by_both(type_, field):
    d = ev(type_, **{field: DROP})
    assert not code_accepts(d)
    assert not schema_accepts(d)


@pytest.mark.parametrize("type_,field,value", MISTYPED + OUT_OF_CONTRACT)
def test_bad_values_rejected_by_both(type_, field, value):
    d = ev(type_, **{field: value})
    assert not code_accepts(d)
    assert not schema_accepts(d)


@pytest.mark.parametrize("type_,field,value", [
    ("order.paid", "ts", "2026-02-30T10:00:00Z"),  # no JSON Schema pattern knows the length of February
    ("order.paid", "amount_fen", 12800.0),        # JSON Schema: 12800.0 is an integer; JSON-wise it is a float
    ("review.posted", "product_rating", 5.0),
    # bounds relative to ts (2026-11-20T10:00:00+08:00): one value cannot be compared with another
    ("order.paid", "promised_ship_by", "9999-12-31T23:59:59Z"),
    ("order.paid", "promised_ship_by", "2027-11-21T10:00:00.000001+08:00"),  # ts + 366 days + 1 us
    ("order.paid", "presale", {"ship_by": "2027-11-22"}),  # 367 days after the day of ts
    ("order.paid", "presale", {"ship_by": "9999-12-31"}),
    # the floor is an instant, the schema's pattern only sees the written year
    ("order.paid", "ts", "2000-01-01T00:00:00+23:59"),
])
def test_known_schema_gaps_are_rejected_by_code(type_, field, value):
    """Where JSON Schema cannot say it, the code is the stricter of the two (documented in $comment)."""
    assert not code_accepts(ev(type_, **{field: value}))


# The id fields (checked by events._str), one event type where each appears.
ID_FIELDS = [
    ("order.paid", "event_id"), ("order.paid", "shop_id"), ("order.paid", "order_id"),
    ("refund.requested", "refund_id"), ("complaint.filed", "complaint_id"), ("chat.started", "session_id"),
    ("chat.started", "buyer_id"), ("chat.assigned", "agent_id"), ("order.shipped", "carrier"),
    ("order.shipped", "tracking_no"), ("shipment.signed", "tracking_no"), ("refund.return_shipped", "tracking_no"),
]
CONTROL_CHARS = ["\x00", "\x1f", "\x7f", "\x85", "\n", "\x80", "\x9f"]


@pytest.mark.parametrize("type_,field", ID_FIELDS)
@pytest.mark.parametrize("char", CONTROL_CHARS, ids=lambda c: f"U+{ord(c):04X}")
@pytest.mark.parametrize("where", ["alone", "start", "middle", "end"])
def test_control_characters_in_ids_rejected_by_both(type_, field, char, where):
    value = {"alone": char, "start": char + "id-1", "middle": "id" + char + "1", "end": "id-1" + char}[where]
    d = ev(type_, **{field: value})
    reason = rejected(d)
    assert field in reason and "control character" in reason
    assert not schema_accepts(d)


@pytest.mark.parametrize("type_,field", ID_FIELDS)
@pytest.mark.parametrize("value", ["id 1", "\xa0", "订单-1", "id\u2028", "~", "\xff"])
def test_ids_without_control_characters_accepted_by_both(type_, field, value):
    d = ev(type_, **{field: value})
    assert code_accepts(d)
    assert schema_accepts(d), list(EVENT_V.iter_errors(d))


@pytest.mark.parametrize("days,ok", [(0, True), (365, True), (366, True), (367, False), (10**9, False)])
def test_ship_within_days_at_most_366(days, ok):
    d = ev("order.paid", presale={"ship_within_days": days})
    assert code_accepts(d) is ok
    assert schema_accepts(d) is ok
    if not ok:
        assert "ship_within_days" in rejected(d)


@pytest.mark.parametrize("ts,last_ok", [
    ("2026-11-20T10:00:00+08:00", "2027-11-21"),
    ("2026-11-20T00:00:00+08:00", "2027-11-21"),  # the day of ts is its UTC+8 day...
    ("2026-11-19T16:00:00Z", "2027-11-21"),       # ...(2026-11-20 00:00 at UTC+8)
    ("2026-11-19T15:59:59Z", "2027-11-20"),       # 2026-11-19 23:59:59 at UTC+8
    ("2027-11-20T10:00:00+08:00", "2028-11-20"),  # a leap year: 2028-02-29 is counted
])
def test_presale_ship_by_at_most_366_days_after_the_day_of_ts(ts, last_ok):
    ok = ev("order.paid", ts=ts, promised_ship_by=DROP, presale={"ship_by": last_ok})
    assert code_accepts(ok) and schema_accepts(ok)
    late = (datetime.fromisoformat(last_ok) + timedelta(days=1)).date().isoformat()
    d = ev("order.paid", ts=ts, promised_ship_by=DROP, presale={"ship_by": late})
    reason = rejected(d)
    assert "presale.ship_by" in reason and "366 days" in reason
    assert schema_accepts(d)  # a known gap: JSON Schema cannot compare ship_by with ts


def test_presale_ship_by_367_days_after_ts_rejected_by_code():
    assert "presale.ship_by" in rejected(ev("order.paid", presale={"ship_by": "2027-11-22"}))
    assert code_accepts(ev("order.paid", presale={"ship_by": "2027-11-21"}))
    assert code_accepts(ev("order.paid", presale={"ship_by": "2001-01-01"}))  # before ts: no lower bound


@pytest.mark.parametrize("promised,ok", [
    ("2027-11-21T10:00:00+08:00", True),              # ts + 366 days
    ("2027-11-21T02:00:00Z", True),
    ("2027-11-21T10:00:00.000001+08:00", False),
    ("2028-01-01T00:00:00+08:00", False),
    ("9999-12-31T23:59:59Z", False),
    ("2000-01-01T00:00:00+08:00", True),              # before ts is allowed, down to MIN_EVENT_TIME
    ("1999-12-31T15:59:59Z", False),
])
def test_promised_ship_by_window(promised, ok):
    d = ev("order.paid", promised_ship_by=promised)
    if ok:
        assert decode(raw(d))["promised_ship_by_us"] == parse_ts_us(promised)
    else:
        reason = rejected(d)
        assert "promised_ship_by" in reason and "is not between" in reason


def test_promised_ship_by_9999_rejected_by_code():
    d = ev("order.paid", promised_ship_by="9999-12-31T23:59:59Z")
    assert "promised_ship_by" in rejected(d)
    assert schema_accepts(d)  # a known gap: relative to ts


@pytest.mark.parametrize("type_", ["chat.closed", "order.paid"])
def test_ts_floor(type_):
    def at(ts):  # order.paid: no promised_ship_by (which must be within 366 days of ts)
        return ev(type_, ts=ts, promised_ship_by=DROP)

    old = at("1999-12-31T00:00:00+08:00")
    assert "before the earliest accepted event time" in rejected(old)
    assert not schema_accepts(old)
    for ts in ("2000-01-02T00:00:00+08:00", "2000-01-02T00:00:00Z", events.MIN_EVENT_TIME):
        d = at(ts)
        assert code_accepts(d) and schema_accepts(d), ts
    assert not code_accepts(at("1999-12-31T23:59:59.999999+08:00"))  # 1 us before the floor
    assert not schema_accepts(at("1999-12-31T23:59:59.999999+08:00"))


def test_ts_floor_edge_by_offset():
    """Documented in the timestamp's $comment: near the floor, the offset can put the year and the instant apart."""
    d = ev("chat.closed", ts="1999-12-31T20:00:00Z")  # 2000-01-01 04:00 at UTC+8
    assert code_accepts(d) and not schema_accepts(d)
    d = ev("chat.closed", ts="2000-01-01T00:00:00+23:59")
    assert not code_accepts(d) and schema_accepts(d)


def test_ts_ceiling_is_the_callers():
    x = parse_ts_us(ENVELOPE["ts"])
    for type_ in ("order.paid", "chat.closed"):
        assert decode(raw(ev(type_)), max_ts_us=x)["ts_us"] == x  # ts == the ceiling: accepted
        with pytest.raises(InvalidEvent, match="in the future") as ei:
            decode(raw(ev(type_)), max_ts_us=x - 1)
        assert str(ei.value).startswith("ts: ")
        with pytest.raises(InvalidEvent, match="in the future"):
            decode(raw(ev(type_, ts="2026-11-20T10:00:00.000001+08:00")), max_ts_us=x)
        assert decode(raw(ev(type_, ts="2026-11-20T09:59:59.999999+08:00")), max_ts_us=x)
    with pytest.raises(InvalidEvent, match="in the future"):
        events.validate(ev("chat.closed"), max_ts_us=x - 1)
    far = ev("chat.closed", ts="9999-12-31T23:59:59Z")
    assert code_accepts(far) and schema_accepts(far)  # no ceiling unless the caller gives one
    with pytest.raises(InvalidEvent, match="in the future"):
        decode(raw(far), max_ts_us=x)


def _padded(type_: str, size: int) -> bytes:
    """A valid event of exactly ``size`` bytes (an extra field pads it)."""
    base = raw(ev(type_, x_pad=""))
    out = raw(ev(type_, x_pad="p" * (size - len(base))))
    assert len(out) == size
    return out


@pytest.mark.parametrize("type_", ["order.paid", "chat.closed"])
def test_record_size_limit(type_):
    limit = events.MAX_EVENT_BYTES
    assert limit == 64 * 1024
    assert decode(_padded(type_, limit))["type"] == type_
    assert decode(_padded(type_, limit).decode())["type"] == type_
    big = _padded(type_, limit + 1)
    assert "record too large" in rejected(big)
    assert "record too large" in rejected(big.decode())
    assert schema_accepts(orjson.loads(big))  # a known gap: JSON Schema sees the value, not the bytes


# Strings that matter somewhere in the contract, to mutate events with.
_TIMESTAMPS = [
    "2026-11-20T10:00:00+08:00", "2026-11-20T02:00:00Z", "2026-11-20T10:00:00.123+08:00",
    "2026-11-20T10:00:00.123456789-03:30", "2026-11-20t10:00:00z", "2026-11-20T10:00:00",
    "2026-11-20 10:00:00+08:00", "2026-11-20T10:00:00+0800", "2026-11-20T10:00:00+05:60",
    "2026-11-20T24:00:00Z", "2026-13-20T10:00:00Z", "0000-01-01T00:00:00Z", "2026-11-20T10:00:00Z\n",
    "2026-11-20T10:00:00.Z", "2026-11-20T10:00:00.١٢٣Z", "yesterday", "2026-11-20",
]
_INTERESTING = sorted({
    *events.PLATFORMS, *events.EVENT_TYPES, *events.TRADE_TYPES, *events.RESPONSIBLE, *events.REFUND_KINDS,
    *events.REFUND_REASONS, *events.CUSTOMS_STATUSES, *events.EXCEPTION_REASONS, *events.SENDERS,
    *_TIMESTAMPS, "", "x", "x" * 64, "x" * 65, "x" * 128, "x" * 129, "fresh", "general", "2026-11-30",
    "2026-02-30", "Douyin", "true", "1", "x\x00y", "\x7f", "\x85", "\xa0",
})
_PRESALES = [
    {"ship_by": "2026-11-30"}, {"ship_within_days": 3}, {"ship_by": "2026-11-30", "ship_within_days": None},
    {"ship_by": None, "ship_within_days": 0}, {}, {"ship_by": "2026-02-30"}, {"ship_by": "0000-01-01"},
    {"ship_within_days": -1}, {"ship_by": "20261130"}, {"ship_by": "2026-11-30", "ship_within_days": 3},
    {"ship_within_days": 2.5}, {"ship_within_days": False}, {"ship_by": "2026-11-30\n"},
    {"ship_within_days": 366}, {"ship_within_days": 367}, {"ship_by": "2027-02-28"}, {"ship_by": "1999-12-31"},
]
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 10),
    st.integers(-(2**40), 2**40),
    # integral floats (1.0) are left out: JSON Schema takes them as integers, the code does not
    st.floats(-1e6, 1e6, allow_nan=False).filter(lambda x: not x.is_integer()),
    st.text(max_size=6),
    st.sampled_from(_INTERESTING),
)
_values = st.one_of(
    st.recursive(_scalars, lambda ch: st.lists(ch, max_size=3) | st.dictionaries(st.text(max_size=4), ch,
                                                                                   max_size=3), max_leaves=4),
    st.sampled_from(_PRESALES),
)
def _field_pool(field: str) -> list:
    """Values worth trying in ``field``: those of the tables above, the examples, enums and boundaries."""
    vals: list = [v for _, f, v in MISTYPED + OUT_OF_CONTRACT + ACCEPTED if f == field and v is not DROP]
    vals += [VALID[t][field] for t in VALID if field in VALID[t]]
    for t in VALID:
        prop = schema_properties(t).get(field, {})
        vals += prop.get("enum", [])
    if field in ("ts", "promised_ship_by"):
        vals += _TIMESTAMPS
    if field == "presale":
        vals += _PRESALES
    if field in ("type", "platform"):
        vals += list(events.EVENT_TYPES if field == "type" else events.PLATFORMS)
    vals += [None, "", "x" * 64, "x" * 65, "x" * 128, "x" * 129, -1, 0, 1, 5, 6, 0.5, True, False, [], {}]
    vals += ["x\x00", "\x1fx", "x\x7fy", "\x85", "\x9f", "x\n", "\xa0", "x\u2028"]
    out = []
    for v in vals:
        if not any(type(v) is type(w) and v == w for w in out):
            out.append(v)
    return out


_FIELDS = {t: sorted({*ENVELOPE_FIELDS, *VALID[t]}) for t in VALID}
_POOLS = {f: _field_pool(f) for t in VALID for f in _FIELDS[t]}


def test_pools_stay_clear_of_the_code_only_bounds():
    """The comparisons below hold only where the code-only rules cannot fire.

    Like the topic (code_accepts passes none) and the ts ceiling (code_accepts passes no max_ts_us), the bounds of
    order.paid fields relative to ts and the exact ts floor are rules JSON Schema cannot state (see
    test_known_schema_gaps_are_rejected_by_code): every ts the pools hold is far enough from the promised_ship_by
    and presale.ship_by values they hold, and none is near the floor with a year that says otherwise.
    """
    def instants(values):
        out = []
        for v in values:
            try:
                out.append((v, parse_ts_us(v)))
            except InvalidEvent:
                pass
        return out

    timestamps = instants([*_POOLS["ts"], *_POOLS["promised_ship_by"], *_INTERESTING])
    assert timestamps
    for v, us in timestamps:  # the schema's year floor and the code's instant floor agree
        assert (int(v[:4]) >= 2000) == (us >= events.MIN_EVENT_TIME_US), v
    ts_ok = [us for _, us in instants([*_POOLS["ts"], *_INTERESTING]) if us >= events.MIN_EVENT_TIME_US]
    promised = [us for _, us in instants([*_POOLS["promised_ship_by"], *_INTERESTING])
                if us >= events.MIN_EVENT_TIME_US]
    assert ts_ok and promised
    assert max(promised) <= min(ts_ok) + events.MAX_PROMISE_DAYS * events.DAY_US
    ship_by = [p["ship_by"] for p in [*_POOLS["presale"], *_PRESALES]
               if isinstance(p, dict) and isinstance(p.get("ship_by"), str)]
    days = []
    for s in ship_by:
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", s):
            try:
                days.append((datetime.fromisoformat(s).replace(tzinfo=UTC) - _EPOCH).days)
            except ValueError:
                pass
    first_day = (min(ts_ok) + 8 * 3_600_000_000) // events.DAY_US  # the UTC+8 day of the earliest ts
    assert days and max(days) <= first_day + events.MAX_PROMISE_DAYS


def _disagreement(d: dict) -> str | None:
    code, schema = code_accepts(d), schema_accepts(d)
    if code == schema:
        return None
    reason = "" if code else rejected(d)
    errors = [e.message for e in EVENT_V.iter_errors(d)][:3]
    return f"code {'accepts' if code else 'rejects'} ({reason}), schema {errors}: {d!r}"


def test_code_and_schema_agree_on_every_single_field_mutation():
    """Each type x each of its fields x each pool value (and the field dropped), full and minimal."""
    bad = []
    for t in sorted(VALID):
        for make in (ev, minimal):
            for f in _FIELDS[t]:
                for v in (DROP, *_POOLS[f]):
                    d = make(t)
                    if v is DROP:
                        d.pop(f, None)
                    else:
                        d[f] = copy.deepcopy(v)
                    msg = _disagreement(d)
                    if msg:
                        bad.append(msg)
    assert not bad, "\n".join(bad[:10])


@st.composite
def mutated_events(draw):
    type_ = draw(st.sampled_from(sorted(VALID)))
    d = draw(st.sampled_from([ev, minimal]))(type_)
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from([*_FIELDS[type_], "x_extra"]))
        value = draw(st.one_of(st.just(DROP), st.sampled_from(_POOLS.get(field, [None])), _values))
        if value is DROP:
            d.pop(field, None)
        else:
            d[field] = copy.deepcopy(value)
    return d


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_events())
def test_code_and_schema_agree_on_mutations(d):
    msg = _disagreement(d)
    assert msg is None, msg


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(VALID)), st.dictionaries(st.text(min_size=1, max_size=8).filter(
    lambda k: k not in {*ENVELOPE_FIELDS, "ts_us", "promised_ship_by_us"}), _values, max_size=4))
def test_unknown_fields_never_change_the_verdict(type_, extra):
    d = ev(type_)
    for k, v in extra.items():
        if k not in VALID[type_]:
            d[k] = v
    assert code_accepts(d) and schema_accepts(d)


def test_acceptance_events_agree():
    """Every line of the shared acceptance files gets the same verdict from code and schema."""
    files = sorted(p for p in ACCEPTANCE.glob("*.jsonl") if not p.name.endswith(".expected-alerts.jsonl"))
    if not files:
        pytest.skip("no shared acceptance files")
    n = 0
    for path in files:
        for i, line in enumerate(path.read_bytes().splitlines(), 1):
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                assert not code_accepts_bytes(line)
                continue
            code = code_accepts(obj)
            if code and i > 3000:
                continue  # jsonschema is slow: every rejected line, but only the head of the long files
            n += 1
            assert code == schema_accepts(obj), f"{path.name}:{i}"
    assert n > 0


def code_accepts_bytes(b: bytes) -> bool:
    try:
        decode(b)
    except InvalidEvent:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# (d) the alert and score schemas
# ---------------------------------------------------------------------------------------------

ALERT_EXAMPLE = {
    "alert_id": "ship_overdue:douyin:o-1001",
    "kind": "ship_overdue",
    "severity": "critical",
    "status": "firing",
    "platform": "douyin",
    "shop_id": "s-17",
    "order_id": "o-1001",
    "at": "2026-11-22T10:00:00+08:00",
    "due_at": "2026-11-22T10:00:00+08:00",
    "summary": "订单 o-1001 已超过最晚发货时间 2026-11-22 10:00，仍未发货",
    "details": {},
}

SCORE_EXAMPLE = {
    "platform": "xiaohongshu",
    "shop_id": "s-17",
    "as_of": "2026-11-22T12:00:00+08:00",
    "indicators": {
        "on_time_ship_rate": {"value": 0.985, "num": 197, "den": 200, "window_days": 180},
    },
    "dimensions": {"logistics": 4.6},
    "score": 4.52,
}


def _spec_json_examples() -> list[dict]:
    if not SPEC.exists():
        pytest.skip(f"{SPEC} not found")
    return [json.loads(m) for m in re.findall(r"```json\n(.*?)```", SPEC.read_text(encoding="utf-8"), re.S)]


def test_schema_files_load_and_are_valid_schemas():
    for name in NAMES:
        s = load(name)
        assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Draft202012Validator.check_schema(s)
    a = load("event")
    a["title"] = "changed"
    assert load("event")["title"] != "changed"  # a fresh dict every time
    with pytest.raises(KeyError):
        load("nope")


def test_spec_examples_validate():
    examples = _spec_json_examples()
    alerts = [e for e in examples if "alert_id" in e]
    scores = [e for e in examples if "indicators" in e]
    assert alerts and scores and len(alerts) + len(scores) == len(examples)
    for a in alerts:
        ALERT_V.validate(a)
    for s in scores:
        SCORE_V.validate(s)
    assert alerts[0] == ALERT_EXAMPLE and scores[0] == SCORE_EXAMPLE  # the copies below are the spec's


def test_alert_examples():
    ALERT_V.validate(ALERT_EXAMPLE)
    resolved = {**ALERT_EXAMPLE, "status": "resolved", "at": "2026-11-22T11:00:00Z"}
    del resolved["due_at"]
    ALERT_V.validate(resolved)
    ALERT_V.validate({**ALERT_EXAMPLE, "alert_id": "transit_timeout:douyin:o-1001:2", "kind": "transit_timeout",
                      "severity": "warning"})
    ALERT_V.validate({**ALERT_EXAMPLE, "alert_id": "refund_response_overdue:tmall:r-9",
                      "kind": "refund_response_overdue", "platform": "tmall", "refund_id": "r-9",
                      "details": {"auto_agree": True}})
    ALERT_V.validate({**ALERT_EXAMPLE, "alert_id": "daily_cap_warning:douyin:s-17:2026-11-22:gmv",
                      "kind": "daily_cap_warning", "severity": "warning", "order_id": "o-7"})
    for sev in ("info", "critical"):
        ALERT_V.validate({**ALERT_EXAMPLE, "alert_id": "level_changed:douyin:s-17:2026-11-22",
                          "kind": "level_changed", "severity": sev, "details": {"from": "LV1", "to": "LV2"}})
    ALERT_V.validate({**ALERT_EXAMPLE, "alert_id": "fresh_claim:jd:r-1", "kind": "fresh_claim", "severity": "info",
                      "platform": "jd", "refund_id": "r-1", "details": {"refund_due_fen": 990}})


ALL_KINDS = (
    "ship_warning ship_overdue pickup_timeout transit_timeout delivery_timeout customs_exception carrier_exception "
    "refund_response_warning refund_response_overdue return_receipt_warning return_receipt_overdue "
    "cod_proof_overdue fresh_claim fresh_claim_rejected daily_cap_warning daily_cap_reached level_changed"
).split()


def test_alert_kinds_are_rules_section_8():
    assert load("alert")["properties"]["kind"]["enum"] == ALL_KINDS


@pytest.mark.parametrize("change", [
    {"kind": "ship_late"},
    {"severity": "fatal"},
    {"severity": "warning"},                         # ship_overdue is critical
    {"status": "open"},
    {"platform": "amazon"},
    {"platform": "tmall"},                           # alert_id says douyin
    {"alert_id": "ship_warning:douyin:o-1001"},      # alert_id says another kind
    {"alert_id": "ship_overdue"},
    {"at": "2026-11-22T10:00:00"},
    {"due_at": "soon"},
    {"summary": ""},
    {"summary": None},
    {"details": []},
    {"shop_id": ""},
    {"order_id": 1001},
    {"kind": "daily_cap_reached", "alert_id": "daily_cap_reached:douyin:s-17:2026-11-22:orders",
     "severity": "warning"},
])
def test_bad_alerts_rejected(change):
    assert not ALERT_V.is_valid({**ALERT_EXAMPLE, **change})


@pytest.mark.parametrize("field", ["alert_id", "kind", "severity", "status", "platform", "shop_id", "at",
                                   "summary", "details"])
def test_alert_required_fields(field):
    a = dict(ALERT_EXAMPLE)
    del a[field]
    assert not ALERT_V.is_valid(a)


def test_douyin_only_alert_kinds():
    a = {**ALERT_EXAMPLE, "alert_id": "level_changed:tmall:s-17:2026-11-22", "kind": "level_changed",
         "severity": "info", "platform": "tmall"}
    assert not ALERT_V.is_valid(a)


def test_score_examples():
    SCORE_V.validate(SCORE_EXAMPLE)
    SCORE_V.validate({
        "platform": "douyin", "shop_id": "s-1", "as_of": "2026-10-09T00:00:00+08:00",
        "indicators": {
            "cumulative_orders": {"value": 841},
            "logistics_return_rate": {"value": None, "num": 0, "den": 0, "window_days": 90},
            "im_first_response_minutes": {"value": 3.78, "num": 117.27, "den": 31, "window_days": 30},
        },
        "level": {"level": "LV1", "since": "2026-10-01"},
    })
    SCORE_V.validate({
        "platform": "kuaishou", "shop_id": "k-1", "as_of": "2026-10-09T00:00:00Z",
        "indicators": {"refund_only_hours": {"value": 48.5, "num": 48.5, "den": 1, "window_days": 30}},
        "dimensions": {"after_sale": None}, "score": None, "gate": {"met": True, "judged_against": 1},
    })


@pytest.mark.parametrize("change", [
    {"as_of": "2026-11-22T12:00:00"},
    {"as_of": None},
    {"platform": "amazon"},
    {"score": "4.5"},
    {"dimensions": {"logistics": "good"}},
    {"indicators": []},
    {"indicators": {"x": {"num": 1, "den": 2}}},                                  # no value
    {"indicators": {"x": {"value": "0.5", "num": 1, "den": 2, "window_days": 30}}},
    {"indicators": {"x": {"value": 0.5, "num": 1, "window_days": 30}}},           # num without den
    {"indicators": {"x": {"value": 0.5, "num": 1, "den": 2, "window_days": 0}}},
    {"indicators": {"x": {"value": 0.0, "num": 0, "den": 0, "window_days": 30}}},  # den 0 -> value null
    {"indicators": {"x": {"value": 0.5, "num": -1, "den": 2, "window_days": 30}}},
    {"level": "LV1"},
    {"gate": True},
])
def test_bad_scores_rejected(change):
    assert not SCORE_V.is_valid({**SCORE_EXAMPLE, **change})


@pytest.mark.parametrize("field", ["platform", "shop_id", "as_of", "indicators"])
def test_score_required_fields(field):
    s = dict(SCORE_EXAMPLE)
    del s[field]
    assert not SCORE_V.is_valid(s)


def test_acceptance_expected_indicators_fit_the_score_schema():
    files = sorted(ACCEPTANCE.glob("*.expected-indicators.json"))
    if not files:
        pytest.skip("no shared acceptance files")
    for path in files:
        for shop in json.loads(path.read_text(encoding="utf-8")):
            SCORE_V.validate({"as_of": "2026-10-09T00:00:00+08:00", **shop})
