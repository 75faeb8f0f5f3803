"""The `wall` clock on the real broker: a deadline fires on time with no event after it."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from broker_helpers import Worker, _produce, _records, _utc

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

CST = timezone(timedelta(hours=8))


def _ts(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, CST).isoformat()


async def _alerts_until(bootstrap, topic, done, timeout=90.0):
    """(alert, Kafka timestamp in s) of ``topic`` until ``done(got)``."""
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                         enable_auto_commit=False)
    await c.start()
    got = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not done(got):
            for msgs in (await c.getmany(timeout_ms=300)).values():
                got.extend((orjson.loads(m.value), m.timestamp / 1000) for m in msgs)
        return got
    finally:
        await c.stop()


def test_wall_clock_fires_a_deadline_on_time_without_a_later_event(kafka_bootstrap, shopwatch_env, topic_prefix,
                                                                    tmp_path):
    env = {**shopwatch_env, "SHOPWATCH_CLOCK": "wall"}
    w = Worker(env, tmp_path / "w.log")
    try:
        w.wait_ready()
        now = time.time()
        due = now + 12  # ship_overdue fires at the promised ship-by time
        base = {"platform": "douyin", "shop_id": "wall-shop", "amount_fen": 1000}
        events = [
            {**base, "event_id": "w1", "type": "order.paid", "ts": _ts(now - 60), "order_id": "late",
             "promised_ship_by": _ts(due)},
            {**base, "event_id": "w2", "type": "order.paid", "ts": _ts(now - 60), "order_id": "on-time",
             "promised_ship_by": _ts(due)},
            {"event_id": "w3", "type": "order.shipped", "ts": _ts(now - 30), "platform": "douyin",
             "shop_id": "wall-shop", "order_id": "on-time", "tracking_no": "SF1"},
        ]
        asyncio.run(_produce(kafka_bootstrap, _records([orjson.dumps(e) for e in events], topic_prefix)))

        def overdue(got):
            return [(a, t) for a, t in got if a["kind"] == "ship_overdue"]

        got = asyncio.run(_alerts_until(kafka_bootstrap, topic_prefix + "shop.alerts",
                                        lambda g: overdue(g) and time.time() > due + 5))
        seen = {(a["alert_id"], a["status"]) for a, _t in got}
        assert ("ship_warning:douyin:late", "firing") in seen
        fired = overdue(got)
        assert [a["alert_id"] for a, _t in fired] == ["ship_overdue:douyin:late"], w.log_tail(20)
        a, sent = fired[0]
        assert _utc(a["at"]) == _utc(_ts(due))
        # no event came after the deadline: the wall clock fired it, on time (ticks every second)
        assert due <= sent <= due + 5, (sent - due, datetime.fromtimestamp(sent, UTC))
    finally:
        w.stop()
