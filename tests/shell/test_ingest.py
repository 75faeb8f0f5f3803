"""shopwatch.agents.ingest.ingest: one raw record -> event or dead letter (no broker)."""

from __future__ import annotations

import base64
import hashlib
import os

import orjson
import pytest

from shopwatch.agents.ingest import (
    EVENTS,
    INVALID,
    KEY_KEPT_BYTES,
    RAW_KEPT_BYTES,
    DeadLetter,
    Window,
    ingest,
)
from shopwatch.schemas.events import parse_ts_us

GOOD = {
    "event_id": "e-1", "type": "order.paid", "ts": "2026-11-20T10:00:00+08:00", "platform": "jd",
    "shop_id": "s-1", "order_id": "o-1", "amount_fen": 100,
}


def _count(counter, **labels) -> float:
    return counter.labels(**labels)._value.get()


def test_valid_event_is_returned_and_counted():
    before = _count(EVENTS, topic="u1.shop.orders", type="order.paid")
    ev = ingest("u1.shop.orders", 2, 41, b"o-1", orjson.dumps(GOOD), default_topic="shop.orders")
    assert isinstance(ev, dict) and ev["order_id"] == "o-1" and ev["trade_type"] == "domestic"
    assert _count(EVENTS, topic="u1.shop.orders", type="order.paid") == before + 1


@pytest.mark.parametrize(
    "value, reason",
    [
        (b"{", "bad JSON"),
        (orjson.dumps({**GOOD, "amount_fen": -1}), "negative amount"),
        (orjson.dumps({**GOOD, "platform": "taobao"}), "platform"),
        (orjson.dumps({**GOOD, "ts": "2026-11-20T10:00:00"}), "timestamp without offset"),
        (orjson.dumps({**GOOD, "type": "chat.closed", "session_id": "c"}), "does not belong on topic"),
    ],
)
def test_invalid_record_becomes_a_dead_letter(value, reason):
    before = _count(INVALID, topic="u2.shop.orders")
    out = ingest("u2.shop.orders", 1, 7, b"k", value, default_topic="shop.orders")
    assert isinstance(out, DeadLetter)
    assert out.key == b"k"
    assert reason in out.record["error"]
    assert out.record == {"error": out.record["error"], "topic": "u2.shop.orders", "partition": 1, "offset": 7,
                          "raw": value.decode()}
    assert orjson.loads(out.encode()) == out.record
    assert _count(INVALID, topic="u2.shop.orders") == before + 1


def test_without_default_topic_the_topic_name_is_the_default_name():
    assert isinstance(ingest("shop.orders", 0, 0, b"o-1", orjson.dumps(GOOD)), dict)
    out = ingest("shop.chats", 0, 0, None, orjson.dumps(GOOD))
    assert isinstance(out, DeadLetter) and "does not belong" in out.record["error"]


def test_non_utf8_value_is_kept_as_base64():
    raw = b"\xff\xfe{\x80"
    out = ingest("shop.refunds", 3, 9, None, raw)
    assert isinstance(out, DeadLetter) and out.key is None
    assert out.record["raw_encoding"] == "base64"
    assert base64.b64decode(out.record["raw"]) == raw


def test_null_value_is_a_dead_letter():
    out = ingest("shop.shipments", 0, 5, b"o-9", None)
    assert isinstance(out, DeadLetter)
    assert out.record["raw"] is None and "null value" in out.record["error"]


KAFKA_LIMIT = 1_000_000  # the broker's default message.max.bytes is 1 MB


@pytest.mark.parametrize("value", [os.urandom(900_000), b'"' * 900_000, b"\x01" * 900_000],
                         ids=["random", "quotes", "control"])
def test_a_poison_pill_becomes_a_dead_letter_that_fits(value):
    out = ingest("shop.orders", 0, 1, b"o-1", value)
    assert isinstance(out, DeadLetter)
    assert "record too large" in out.record["error"]
    assert len(out.encode()) + len(out.key) < KAFKA_LIMIT // 4
    rec = out.record
    assert rec["raw_truncated"] is True and rec["raw_bytes"] == len(value)
    assert rec["raw_sha256"] == hashlib.sha256(value).hexdigest()
    kept = base64.b64decode(rec["raw"]) if rec.get("raw_encoding") == "base64" else rec["raw"].encode()
    assert value.startswith(kept) and len(kept) <= RAW_KEPT_BYTES


def test_a_cut_inside_a_character_keeps_valid_text():
    value = "单".encode() * 30_000  # 3 bytes each: RAW_KEPT_BYTES is not a multiple of 3
    out = ingest("shop.orders", 0, 1, b"o-1", value)
    assert isinstance(out, DeadLetter) and "raw_encoding" not in out.record
    assert set(out.record["raw"]) == {"单"} and len(out.record["raw"]) == RAW_KEPT_BYTES // 3


def test_a_huge_key_is_replaced_by_its_digest():
    key = b"k" * 900_000
    out = ingest("shop.orders", 0, 1, key, orjson.dumps(GOOD))
    assert isinstance(out, DeadLetter) and "key does not match order_id" in out.record["error"]
    assert out.key == hashlib.sha256(key).hexdigest().encode()
    assert out.record["key_bytes"] == len(key) and len(out.encode()) < KAFKA_LIMIT // 4
    assert len(out.key) <= KEY_KEPT_BYTES


@pytest.mark.parametrize("topic, key, value", [
    ("shop.orders", b"o-2", GOOD),
    ("shop.orders", None, GOOD),
    ("shop.orders", b"", GOOD),
    ("shop.refunds", b"r-1", {**GOOD, "type": "refund.approved", "refund_id": "r-1"}),
    ("shop.chats", b"o-1", {**GOOD, "type": "chat.closed", "session_id": "cs-1"}),
])
def test_a_key_that_is_not_the_entity_id_is_a_dead_letter(topic, key, value):
    out = ingest(topic, 0, 1, key, orjson.dumps(value))
    assert isinstance(out, DeadLetter)
    field = "session_id" if topic == "shop.chats" else "order_id"
    assert f"key does not match {field}" in out.record["error"]
    assert isinstance(ingest(topic, 0, 1, value[field].encode(), orjson.dumps(value)), dict)


def test_an_id_with_a_control_character_is_a_dead_letter():
    out = ingest("shop.orders", 0, 1, b"o-1", orjson.dumps({**GOOD, "shop_id": "bad\u0000shop"}))
    assert isinstance(out, DeadLetter) and "control character" in out.record["error"]


NOW = parse_ts_us("2026-12-01T12:00:00+08:00") / 1e6  # the wall clock, seconds


@pytest.mark.parametrize("ts, kafka_ts, ok", [
    ("9999-12-31T23:59:59+08:00", NOW, False),
    ("2999-01-01T00:00:00+08:00", NOW, False),
    ("1970-01-01T00:00:00Z", NOW, False),
    ("1999-12-31T23:59:59+08:00", NOW, False),
    ("2000-01-01T00:00:00+08:00", NOW, True),
    ("2026-12-02T12:00:00+08:00", NOW, True),  # one day of skew
    ("2026-12-02T12:00:01+08:00", NOW, False),
    ("2026-12-02T12:00:00+08:00", NOW - 3600, False),  # bounded by the record's own Kafka timestamp
    ("2026-12-02T11:00:00+08:00", NOW - 3600, True),
    ("2026-12-02T12:00:00+08:00", NOW + 3600 * 24 * 365, True),  # a producer clock ahead: the wall clock bounds
    ("2026-12-02T12:00:01+08:00", NOW + 3600 * 24 * 365, False),
    ("2026-12-02T12:00:00+08:00", None, True),
])
def test_event_time_outside_the_sane_window_is_a_dead_letter(ts, kafka_ts, ok):
    out = ingest("shop.orders", 0, 1, b"o-1", orjson.dumps({**GOOD, "ts": ts}), timestamp=kafka_ts, now=NOW)
    if ok:
        assert isinstance(out, dict)
    else:
        assert isinstance(out, DeadLetter)
        assert "in the future" in out.record["error"] or "before the earliest" in out.record["error"]


def test_the_window_is_configurable():
    window = Window(parse_ts_us("2026-01-01T00:00:00Z"), 3600 * 1_000_000)
    value = orjson.dumps({**GOOD, "ts": "2025-12-31T23:00:00Z"})
    assert isinstance(ingest("shop.orders", 0, 1, b"o-1", value, window=window, now=NOW), DeadLetter)
    late = orjson.dumps({**GOOD, "ts": "2026-12-01T05:00:00Z"})  # 1 h past NOW (04:00Z)
    assert isinstance(ingest("shop.orders", 0, 1, b"o-1", late, window=window, now=NOW), dict)
    later = orjson.dumps({**GOOD, "ts": "2026-12-01T05:00:01Z"})
    assert isinstance(ingest("shop.orders", 0, 1, b"o-1", later, window=window, now=NOW), DeadLetter)
