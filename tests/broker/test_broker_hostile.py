"""Hostile input on the real broker: no record can stop a worker or poison its clocks.

A hostile producer's records (poison pills just under Kafka's 1 MB limit,
event times in 9999, 2999 and 1970, a key that is not the event's order_id, a
NUL in an id) are mixed into a simulated stream. On both clocks the worker
stays up, every such record is in shop.dlq with its reason, and the alerts and
scores are those of the same stream without the bad records.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from broker_helpers import (
    UNTIL,
    P,
    Worker,
    _compare,
    _final_scores,
    _http,
    _produce,
    _read,
    _read_dlq,
    _records,
    _replay,
    _sim,
    _tick,
    _utc,
    _wait_consumed,
    _wait_drained,
    _workers,
    shopwatch_cmd,
)

pytestmark = [pytest.mark.broker, pytest.mark.timeout(600)]

CST = timezone(timedelta(hours=8))


def _ts(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, CST).isoformat()


def _paid(eid: str, order_id: str, ts: str, shop: str = "xi-shop-0", platform: str = "xiaohongshu", **extra) -> bytes:
    return orjson.dumps({"event_id": eid, "type": "order.paid", "ts": ts, "platform": platform, "shop_id": shop,
                         "order_id": order_id, "amount_fen": 990, **extra})


def hostile(prefix: str, *, shop: str, platform: str, recent: str) -> list[tuple[str, bytes | None, bytes, str]]:
    """(topic, key, value, expected part of the DLQ reason) of every kind of bad record.

    ``recent`` is a sane event time: each bad event is otherwise valid, so only the
    check that refuses it keeps it out of the rules."""
    orders = prefix + "shop.orders"
    p = {"shop": shop, "platform": platform}
    return [
        (orders, b"poison-random", os.urandom(900_000), "record too large"),
        (orders, b"poison-quotes", b'"' * 900_000, "record too large"),
        (orders, b"h-9999", _paid("h-1", "h-9999", "9999-12-31T23:59:59+08:00", **p), "in the future"),
        (orders, b"h-2999", _paid("h-2", "h-2999", "2999-01-01T00:00:00+08:00", **p), "in the future"),
        (orders, b"h-1970", _paid("h-3", "h-1970", "1970-01-01T08:00:00+08:00", **p), "before the earliest"),
        (orders, b"h-other-key", _paid("h-4", "h-mismatch", recent, **p), "key does not match order_id"),
        (orders, b"h-nul", _paid("h-5", "h-nul", recent, shop=shop + "\u0000", platform=platform),
         "control character"),
        (prefix + "shop.chats", b"h-chat", orjson.dumps({
            "event_id": "h-6", "type": "chat.started", "ts": "9999-01-01T00:00:00Z", "platform": platform,
            "shop_id": shop, "session_id": "h-chat"}), "in the future"),
    ]


def _dead_letters(bootstrap, prefix, bad, metas):
    """shop.dlq has each bad record (topic, partition, offset) once, with its reason."""
    want = {(m.topic, m.partition, m.offset): reason for (_t, _k, _v, reason), m in zip(bad, metas, strict=True)}
    got = asyncio.run(_read_dlq(bootstrap, prefix + "shop.dlq", len(want), timeout=120))
    seen = {}
    for msg in got:
        assert len(msg.value) < 200_000, "a dead letter must always fit"
        rec = json.loads(msg.value)
        seen.setdefault((rec["topic"], rec["partition"], rec["offset"]), []).append(rec)
    for where, reason in want.items():
        assert where in seen, f"not dead-lettered: {where} ({reason})"
        assert len(seen[where]) == 1, seen[where]
        assert reason in seen[where][0]["error"], (reason, seen[where][0]["error"])
    return seen


def test_event_clock_hostile_records_change_nothing(kafka_bootstrap, shopwatch_env, topic_prefix, tmp_path):
    path = tmp_path / "events.jsonl"
    lines = _sim(path, seed=5)
    r_alerts, r_scores = _replay(path, tmp_path)
    assert len(r_alerts) > 100
    good = _records(lines, topic_prefix)
    bad = hostile(topic_prefix, shop="xi-shop-0", platform="xiaohongshu", recent="2026-10-02T10:00:00+08:00")
    # spread over the stream: early enough that a poisoned clock would fire everything after it
    records, slots = list(good), []
    for i, b in enumerate(bad):
        at = len(good) * (i + 1) // (len(bad) + 2)
        records.insert(at + i, b[:3])
        slots.append(at + i)

    envs = _workers(shopwatch_env, tmp_path, n=1)
    w = Worker(envs[0], tmp_path / "w.log")
    try:
        w.wait_ready()
        metas = asyncio.run(_produce(kafka_bootstrap, records, max_request_size=1_048_000))
        _wait_consumed([w], len(records))
        _wait_drained(envs[0], topic_prefix)
        _tick(envs[0])
        scores_msgs = asyncio.run(_read(kafka_bootstrap, topic_prefix + "shop.scores",
                                        until=lambda g: len(_final_scores(g, r_scores)) >= len(r_scores)))
        k_alerts = asyncio.run(_read(kafka_bootstrap, topic_prefix + "shop.alerts"))
        k, r = _compare(k_alerts, r_alerts)
        assert sum(k.values()) == sum(r.values())
        assert _final_scores(scores_msgs, r_scores) == r_scores
        _dead_letters(kafka_bootstrap, topic_prefix, bad, [metas[s] for s in slots])
        assert w.proc.poll() is None, w.log_tail()
        # no partition clock was moved to 9999: every score snapshot is as of the backfill's days
        assert max(_utc(s["as_of"]) for s in scores_msgs) == _utc(UNTIL)
        st, body = _http(w.port, "/orders/h-9999", timeout=10)
        assert st == 404, body
        assert "late record" not in w.log_path.read_text(errors="replace")
    finally:
        w.stop()
    assert w.proc.returncode == 0, w.log_tail()


def test_wall_clock_hostile_records_change_nothing(kafka_bootstrap, shopwatch_env, topic_prefix, tmp_path):
    env = {**shopwatch_env, "SHOPWATCH_CLOCK": "wall", "SHOPWATCH_PARTITIONS": str(P)}
    w = Worker(env, tmp_path / "w.log")
    try:
        w.wait_ready()
        now = time.time()
        shop, platform = "wall-ku", "kuaishou"
        good_lines = [
            _paid("g-1", "g-1", _ts(now - 7200), shop=shop, platform=platform),
            _paid("g-2", "g-2", _ts(now - 3600), shop=shop, platform=platform),
            orjson.dumps({"event_id": "g-3", "type": "order.shipped", "ts": _ts(now - 1800), "platform": platform,
                          "shop_id": shop, "order_id": "g-1", "tracking_no": "SF1"}),
        ]
        bad = hostile(topic_prefix, shop=shop, platform=platform, recent=_ts(now - 600))
        records = [bad[0][:3], *_records(good_lines[:1], topic_prefix), *(b[:3] for b in bad[1:]),
                   *_records(good_lines[1:], topic_prefix)]
        metas = asyncio.run(_produce(kafka_bootstrap, records, max_request_size=1_048_000))
        bad_metas = [metas[0], *metas[2:2 + len(bad) - 1]]
        _dead_letters(kafka_bootstrap, topic_prefix, bad, bad_metas)

        # the shop's clock is not 9999 (nor 1970): its score is replay's as of that instant
        deadline = time.monotonic() + 60
        while True:
            st, body = _http(w.port, f"/shops/{platform}/{shop}/score", timeout=10)
            snap = json.loads(body) if st == 200 else None
            if snap and snap["indicators"]["quality_refund_rate"]["den"] >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert st == 200, body
        as_of = datetime.fromisoformat(snap["as_of"]).timestamp()
        assert now - 3601 <= as_of <= time.time() + 5, snap["as_of"]  # the newest good event, at least
        src = tmp_path / "good.jsonl"
        src.write_bytes(b"\n".join(good_lines) + b"\n")
        out = tmp_path / "scores.json"
        subprocess.run(shopwatch_cmd("replay", str(src), "--until", snap["as_of"], "--alerts-out",
                                     str(tmp_path / "alerts.jsonl"), "--scores-out", str(out)),
                       check=True, capture_output=True)
        want = next(s for s in orjson.loads(out.read_bytes()) if s["shop_id"] == shop)
        assert snap["indicators"] == want["indicators"]

        # the 1970 order would have fired ship_warning and ship_overdue at once: nothing fired
        time.sleep(3)  # a few wall-clock ticks
        alerts = asyncio.run(_read(kafka_bootstrap, topic_prefix + "shop.alerts", settle=2.0, timeout=10))
        assert not [a for a in alerts if a.get("order_id", "").startswith("h-")], alerts
        st, body = _http(w.port, "/orders/h-1970", timeout=10)
        assert st == 404, body
        assert w.proc.poll() is None, w.log_tail()
    finally:
        w.stop()
    assert w.proc.returncode == 0, w.log_tail()
