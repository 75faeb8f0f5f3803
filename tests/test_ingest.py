"""shopwatch.agents.ingest.ingest: one raw record -> event or dead letter (no broker)."""

from __future__ import annotations

import base64

import orjson
import pytest

from shopwatch.agents.ingest import EVENTS, INVALID, DeadLetter, ingest

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
    assert isinstance(ingest("shop.orders", 0, 0, None, orjson.dumps(GOOD)), dict)
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
