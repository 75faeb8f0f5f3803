"""`shopwatch worker` on the real broker: valid events counted, invalid ones dead-lettered.

The worker runs as a subprocess on topics unique to the test. Records are
produced with aiokafka; the DLQ topic is read back from the beginning and
/metrics is scraped until the counts settle, so a lost, duplicated or
misrouted record fails the test.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import time
from collections import Counter

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from broker_helpers import Worker, _http, _produce, _read_dlq, shopwatch_cmd

from shopwatch.schemas.events import TOPIC_OF_TYPE

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

PARTITIONS = 3  # not the broker's default (4): proves the worker creates its topics

BASE = {"platform": "douyin", "shop_id": "s-1", "ts": "2026-11-20T10:00:00+08:00"}
# One valid event of every type, with its type's required fields.
VALID_FIELDS: dict[str, dict] = {
    "order.paid": {"order_id": "o-1", "amount_fen": 12900, "trade_type": "bonded", "presale": {"ship_within_days": 3}},
    "order.shipped": {"order_id": "o-1", "carrier": "SF", "tracking_no": "SF1"},
    "order.cancelled": {"order_id": "o-2", "reason": "buyer"},
    "review.posted": {"order_id": "o-1", "product_rating": 5, "service_rating": 4},
    "complaint.filed": {"order_id": "o-1", "complaint_id": "c-1"},
    "complaint.judged": {"order_id": "o-1", "complaint_id": "c-1", "responsible": "merchant", "malicious": False},
    "shipment.picked_up": {"order_id": "o-1"},
    "shipment.in_transit": {"order_id": "o-1", "location": "杭州"},
    "shipment.out_for_delivery": {"order_id": "o-1"},
    "shipment.signed": {"order_id": "o-1"},
    "shipment.customs": {"order_id": "o-3", "status": "cleared"},
    "shipment.exception": {"order_id": "o-3", "reason": "lost"},
    "shipment.fake_flagged": {"order_id": "o-4"},
    "refund.requested": {"order_id": "o-1", "refund_id": "r-1", "kind": "return_refund", "reason": "quality",
                         "amount_fen": 500},
    "refund.approved": {"order_id": "o-1", "refund_id": "r-1"},
    "refund.rejected": {"order_id": "o-1", "refund_id": "r-2", "note": "no"},
    "refund.return_shipped": {"order_id": "o-1", "refund_id": "r-1"},
    "refund.return_signed": {"order_id": "o-1", "refund_id": "r-1"},
    "refund.received": {"order_id": "o-1", "refund_id": "r-1"},
    "refund.intervened": {"order_id": "o-1", "refund_id": "r-2"},
    "refund.judged": {"order_id": "o-1", "refund_id": "r-2", "responsible": "buyer"},
    "refund.completed": {"order_id": "o-1", "refund_id": "r-1", "amount_fen": 500},
    "refund.closed": {"order_id": "o-1", "refund_id": "r-2"},
    "refund.proof_uploaded": {"order_id": "o-5", "refund_id": "r-3"},
    "chat.started": {"session_id": "cs-1", "buyer_id": "b-1"},
    "chat.assigned": {"session_id": "cs-1", "agent_id": "a-1"},
    "chat.message": {"session_id": "cs-1", "sender": "agent"},
    "chat.closed": {"session_id": "cs-1"},
    "chat.rated": {"session_id": "cs-1", "rating": 5},
}
# Extra copies of some types, on other keys (so several partitions are used).
EXTRA = ["order.paid"] * 6 + ["shipment.in_transit"] * 4 + ["refund.requested"] * 3 + ["chat.message"] * 5


def _ev(n: int, type_: str, **over) -> dict:
    return {"event_id": f"e-{n}", "type": type_, **BASE, **VALID_FIELDS[type_], **over}


def valid_events() -> list[tuple[str, bytes, bytes]]:
    """(default topic, key, value) for every valid event to produce."""
    out = []
    n = 0
    for t in VALID_FIELDS:
        n += 1
        out.append(_ev(n, t))
    for i, t in enumerate(EXTRA):
        n += 1
        key_field = "session_id" if t.startswith("chat.") else "order_id"
        out.append(_ev(n, t, **{key_field: f"k-{i}"}, platform=["jd", "tmall", "kuaishou", "xiaohongshu"][i % 4]))
    res = []
    for ev in out:
        key = ev.get("session_id") or ev["order_id"]
        res.append((TOPIC_OF_TYPE[ev["type"]], key.encode(), orjson.dumps(ev)))
    return res


def invalid_records() -> list[tuple[str, bytes | None, bytes | None, str]]:
    """(default topic, key, value, expected substring of the DLQ error)."""
    def bad(type_: str, drop: str | None = None, **over) -> bytes:
        ev = _ev(900, type_, **over)
        if drop:
            del ev[drop]
        return json.dumps(ev, ensure_ascii=False).encode()

    return [
        ("shop.orders", b"o-bad-json", b'{"event_id": "x", "type": "order.paid",', "bad JSON"),
        ("shop.orders", None, b"not json at all", "bad JSON"),
        ("shop.orders", b"o-missing", bad("order.paid", drop="amount_fen"), "missing field amount_fen"),
        ("shop.shipments", b"o-missing-ts", bad("shipment.signed", drop="ts"), "missing field ts"),
        ("shop.orders", b"o-type", bad("order.paid", type="order.teleported"), "unknown event type"),
        ("shop.refunds", b"o-platform", bad("refund.approved", platform="taobao"), "platform"),
        ("shop.chats", b"cs-naive-ts", bad("chat.started", ts="2026-11-20T10:00:00"), "timestamp without offset"),
        ("shop.orders", b"o-rating", bad("review.posted", product_rating=9), "rating 9 outside 1-5"),
        ("shop.chats", b"cs-rating", bad("chat.rated", rating=9), "rating 9 outside 1-5"),
        ("shop.refunds", b"o-negative", bad("refund.requested", amount_fen=-5), "negative amount"),
        ("shop.orders", b"o-negative", bad("order.paid", amount_fen=-1), "negative amount"),
        ("shop.orders", b"o-wrong-topic", bad("shipment.signed"), "does not belong on topic"),
        ("shop.shipments", b"o-not-object", b"[1, 2, 3]", "expected a JSON object"),
        ("shop.shipments", b"o-binary", b"\xff\xfe\x00garbage\x80", "bad JSON"),
        ("shop.refunds", b"o-tombstone", None, "null value"),
        ("shop.chats", b"cs-mistyped", bad("chat.message", sender=7), "sender"),
    ]


async def _describe(bootstrap: str, topics: list[str]) -> tuple[dict[str, int], dict[str, dict]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        meta = await admin.describe_topics(topics)
        parts = {t["topic"]: len(t["partitions"]) for t in meta}
        resp = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
        configs: dict[str, dict] = {}
        for r in resp:
            for _code, _msg, _rtype, name, entries in r.resources:
                configs[name] = {e[0]: e[1] for e in entries}
        return parts, configs
    finally:
        await admin.close()


def test_worker_validates_counts_and_dead_letters(kafka_bootstrap, shopwatch_env, topic_prefix, tmp_path):
    env = {**shopwatch_env, "SHOPWATCH_PARTITIONS": str(PARTITIONS)}
    name = {d: topic_prefix + d for d in ("shop.orders", "shop.shipments", "shop.refunds", "shop.chats",
                                           "shop.dlq", "shop.alerts", "shop.scores")}
    worker = Worker(env, tmp_path / "worker.log")
    try:
        health = worker.wait_ready()
        assert health["app_id"] == env["SHOPWATCH_APP_ID"]
        assert health["assigned_input_partitions"] == 4 * PARTITIONS

        # The worker created its topics, with our partition count and the compacted scores topic.
        parts, configs = asyncio.run(_describe(kafka_bootstrap, list(name.values())))
        assert parts == {n: PARTITIONS for n in name.values()}
        assert configs[name["shop.scores"]]["cleanup.policy"] == "compact"
        assert configs[name["shop.orders"]]["cleanup.policy"] == "delete"

        valid = valid_events()
        invalid = invalid_records()
        # Interleave: every third record is an invalid one while they last.
        records: list[tuple[str, bytes | None, bytes | None, str | None]] = []
        vi, ii = iter(valid), iter(invalid)
        for i in range(len(valid) + len(invalid)):
            nxt = next(ii, None) if i % 3 == 0 else None
            if nxt is None:
                v = next(vi, None)
                nxt = (*v, None) if v is not None else next(ii)
            records.append(nxt)
        assert len(records) == len(valid) + len(invalid)
        metas = asyncio.run(_produce(kafka_bootstrap, [(name[t], k, v) for t, k, v, _ in records]))

        expected_dlq = {}
        for (_t, key, value, reason), md in zip(records, metas, strict=True):
            if reason is not None:
                expected_dlq[(md.topic, md.partition, md.offset)] = (key, value, reason)
        assert len(expected_dlq) == len(invalid)

        got = asyncio.run(_read_dlq(kafka_bootstrap, name["shop.dlq"], len(expected_dlq), timeout=90))
        seen = {}
        for msg in got:
            rec = json.loads(msg.value)
            where = (rec["topic"], rec["partition"], rec["offset"])
            assert where not in seen, f"dead-lettered twice: {rec}"
            seen[where] = (msg.key, rec)
        missing = set(expected_dlq) - set(seen)
        extra = set(seen) - set(expected_dlq)
        assert not missing, f"not in the DLQ: {[expected_dlq[m] for m in missing]}\n{worker.log_tail()}"
        assert not extra, f"unexpected DLQ records: {[seen[e] for e in extra]}"
        for where, (key, value, reason) in expected_dlq.items():
            dkey, rec = seen[where]
            assert dkey == key, (where, dkey, key)
            assert reason in rec["error"], (reason, rec)
            assert set(rec) <= {"error", "topic", "partition", "offset", "raw", "raw_encoding"}, rec
            if value is None:
                assert rec["raw"] is None
            else:
                try:
                    text = value.decode("utf-8")
                except UnicodeDecodeError:
                    assert rec["raw_encoding"] == "base64"
                    assert base64.b64decode(rec["raw"]) == value
                else:
                    assert rec["raw"] == text
                    assert "raw_encoding" not in rec

        # Every valid event counted once, by topic and type; the invalid ones by topic.
        want_events = Counter((name[t], orjson.loads(v)["type"]) for t, _k, v in valid)
        want_invalid = Counter(name[t] for t, *_ in invalid)
        prefix_of = tuple(name.values())
        deadline = time.monotonic() + 60
        while True:
            m = worker.metrics()
            got_events = {
                (lab["topic"], lab["type"]): v
                for labels, v in m.get("shopwatch_events_total", {}).items()
                for lab in [dict(labels)]
                if lab["topic"] in prefix_of
            }
            got_invalid = {
                dict(labels)["topic"]: v
                for labels, v in m.get("shopwatch_invalid_events_total", {}).items()
                if dict(labels)["topic"] in prefix_of
            }
            done = got_events == dict(want_events) and got_invalid == dict(want_invalid)
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert got_events == dict(want_events), f"valid events counted {got_events}, want {dict(want_events)}"
        assert got_invalid == dict(want_invalid)
        assert sum(got_events.values()) == len(valid)
        assert {t for t, _ in got_events} == {name[t] for t in ("shop.orders", "shop.shipments", "shop.refunds",
                                                                  "shop.chats")}
        errors = m.get("shopwatch_processing_errors_total", {})
        assert not any(v for v in errors.values()), errors

        status, body = _http(worker.port, "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
    finally:
        rc = worker.stop()
    assert rc == 0, f"worker exit status {rc}:\n{worker.log_tail()}"


def test_worker_refuses_mismatched_order_topics(kafka_bootstrap, shopwatch_env, topic_prefix, tmp_path):
    """The three order-keyed topics must be co-partitioned: a worker finding them otherwise stops."""
    from aiokafka.admin import NewTopic

    async def make() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([
                NewTopic(topic_prefix + "shop.orders", 2, 1),
                NewTopic(topic_prefix + "shop.refunds", 3, 1),
            ])
        finally:
            await admin.close()

    asyncio.run(make())
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        r = subprocess.run(shopwatch_cmd("worker"), env=shopwatch_env, stdout=out, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=120, cwd=tmp_path)
    text = log.read_text(errors="replace")
    assert r.returncode != 0, text[-3000:]
    assert "same partition count" in text, text[-3000:]
    assert os.environ.get("SHOPWATCH_TOPIC_PREFIX") != topic_prefix
