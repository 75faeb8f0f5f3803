"""The simulator: determinism, contract validity, dirt, coverage, causality, ordering, CLI, Kafka path."""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from shopwatch.agents import simulator as simulate
from shopwatch.agents.simulator.cli import main as simulate_main
from shopwatch.schemas.events import EVENT_TYPES, PLATFORMS, TOPIC_OF_TYPE, InvalidEvent, decode, key_of

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / ".venv" / "bin" / "shopwatch"
PY = ROOT / ".venv" / "bin" / "python"

# A multi-day, multi-shop run shared by most tests (about 50k records, well under a second).
RUN = {"seed": 42, "shops": 10, "days": 14, "start": "2026-10-01", "orders_per_shop_day": 30}
DIRTY = 0.01


def _small(**kw):
    args = {"seed": 7, "shops": 5, "days": 2, "orders_per_shop_day": 20} | kw
    return list(simulate.records(**args))


def _blob(recs) -> bytes:
    return b"".join(b + b"\n" for _, _, _, b in recs)


@pytest.fixture(scope="module")
def recs():
    return list(simulate.records(**RUN, dirty=DIRTY))


@pytest.fixture(scope="module")
def events(recs):
    """The first delivery of every valid event, decoded, in stream order."""
    return [decode(b) for kind, _, _, b in recs if kind == "event"]


@pytest.fixture(scope="module")
def by_order(events):
    out = collections.defaultdict(list)
    for ev in events:
        if "order_id" in ev:
            out[ev["order_id"]].append(ev)
    return out


# -- determinism ------------------------------------------------------------------------------------------


def test_same_seed_same_bytes():
    assert _blob(_small()) == _blob(_small())


def test_different_seed_different_bytes():
    a, b = _blob(_small(seed=7)), _blob(_small(seed=8))
    assert a != b
    assert len(set(a.splitlines()) & set(b.splitlines())) < 10


def test_dirt_does_not_change_the_valid_events():
    clean = [b for kind, _, _, b in _small(dirty=0.0)]
    dirty = [b for kind, _, _, b in _small(dirty=0.05) if kind == "event"]
    assert clean == dirty


def test_generate_is_prefix_stable_and_endless_without_days():
    three = [orjson.dumps(e) for e in simulate.generate(7, 5, 3, orders_per_shop_day=20)]
    endless = [orjson.dumps(e) for e in itertools.islice(simulate.generate(7, 5, None, orders_per_shop_day=20),
                                                          len(three) + 5000)]
    assert len(endless) == len(three) + 5000
    # Up to the cut at the end of day 3 the two streams are the same events.
    cut = next(i for i, b in enumerate(endless) if orjson.loads(b)["ts"] >= "2026-10-04")
    assert cut <= len(three)
    assert endless[:cut] == three[:cut]


def test_no_global_random_or_wall_clock(monkeypatch):
    import random
    import time

    def boom(*a, **k):
        raise AssertionError("the simulator must not use the global random generator or the wall clock")

    for name in ("random", "randint", "choice", "uniform", "gauss", "randrange", "shuffle", "sample"):
        monkeypatch.setattr(random, name, boom)
    monkeypatch.setattr(time, "time", boom)
    assert len(_small(days=1)) > 100


# -- validity, dirt ---------------------------------------------------------------------------------------


def test_every_valid_record_decodes_and_is_in_contract_form(recs):
    for kind, topic, key, b in recs:
        if kind == "malformed":
            continue
        ev = decode(b)
        assert TOPIC_OF_TYPE[ev["type"]] == topic
        assert key_of(ev) == key
        decode(b, topic)  # on its own topic
        assert ev["ts"].endswith("+08:00") and len(ev["ts"]) == len("2026-10-01T00:00:00.000000+08:00")
        raw = orjson.loads(b)
        assert "ts_us" not in raw and "promised_ship_by_us" not in raw


def test_every_malformed_record_fails_decode(recs):
    bad = [b for kind, _, _, b in recs if kind == "malformed"]
    assert bad
    for b in bad:
        with pytest.raises(InvalidEvent):
            decode(b)
        assert b"\n" not in b
        b.decode("utf-8")  # a line reader in text mode must not choke on it


def test_malformed_variants_all_fail():
    import random

    rng = random.Random(1)
    evs = list(itertools.islice(simulate.generate(3, 5, 3, orders_per_shop_day=30), 20000))
    variants = collections.Counter()
    for i, ev in enumerate(evs):
        variant, b = simulate.malform(ev, rng, f"x{i}")
        variants[variant] += 1
        with pytest.raises(InvalidEvent):
            decode(b)
    assert set(variants) == set(simulate.MALFORMS)


def test_dirty_shares(recs):
    kinds = collections.Counter(kind for kind, _, _, _ in recs)
    total = sum(kinds.values())
    assert total > 40000
    for kind in ("malformed", "duplicate"):
        share = kinds[kind] / total
        assert DIRTY / 2 * 0.75 < share < DIRTY / 2 * 1.25, (kind, share)
    # On the wire, what fails decode is exactly the malformed share.
    failing = 0
    for _, _, _, b in recs:
        try:
            decode(b)
        except InvalidEvent:
            failing += 1
    assert failing == kinds["malformed"]


def test_duplicates_are_later_byte_identical_redeliveries(recs):
    seen: dict[bytes, int] = {}
    for i, (kind, _, _, b) in enumerate(recs):
        if kind == "event":
            assert b not in seen
            seen[b] = i
        elif kind == "duplicate":
            assert b in seen and seen[b] < i
    ids = collections.Counter(orjson.loads(b)["event_id"] for kind, _, _, b in recs if kind != "malformed")
    dup_ids = {orjson.loads(b)["event_id"] for kind, _, _, b in recs if kind == "duplicate"}
    assert all(ids[i] >= 2 for i in dup_ids)
    assert sum(1 for i, c in ids.items() if c > 1) == len(dup_ids)


def test_no_dirt():
    recs = _small(dirty=0.0)
    assert {kind for kind, _, _, _ in recs} == {"event"}
    ids = [orjson.loads(b)["event_id"] for _, _, _, b in recs]
    assert len(ids) == len(set(ids))


# -- coverage ---------------------------------------------------------------------------------------------


def test_every_event_type_appears(events):
    assert set(EVENT_TYPES) <= {ev["type"] for ev in events}


def test_all_platforms_round_robin(events):
    shops = {(ev["platform"], ev["shop_id"]) for ev in events}
    assert len(shops) == 10
    assert collections.Counter(p for p, _ in shops) == {p: 2 for p in PLATFORMS}
    assert ("xiaohongshu", "xi-shop-0") in shops and ("tmall", "tm-shop-1") in shops


def _pairs(events, etype, field):
    return {ev[field] if not isinstance(ev[field], dict) else next(iter(ev[field]))
            for ev in events if ev["type"] == etype and field in ev}


def test_realism_features(events, by_order):
    paid = [ev for ev in events if ev["type"] == "order.paid"]
    assert {ev["trade_type"] for ev in paid} == {"domestic", "bonded", "direct_mail"}
    for flag in ("cod", "virtual", "live"):
        assert any(ev[flag] for ev in paid), flag
    assert any(ev["category"] == "fresh" for ev in paid)
    assert _pairs(paid, "order.paid", "presale") == {"ship_by", "ship_within_days"}
    assert any("promised_ship_by" in ev for ev in paid)
    assert any(ev["no_logistics"] for ev in events if ev["type"] == "order.shipped")
    assert _pairs(events, "shipment.customs", "status") == {"declared", "cleared", "held", "exception"}
    assert {"lost", "damaged", "address"} <= _pairs(events, "shipment.exception", "reason")
    req = [ev for ev in events if ev["type"] == "refund.requested"]
    assert {ev["kind"] for ev in req} == {"refund_only", "return_refund", "exchange"}
    assert {"quality", "logistics", "spoiled", "not_received", "no_reason"} <= {ev["reason"] for ev in req}
    assert any(ev["no_return"] for ev in req) and any("damage_ratio" in ev for ev in req)
    assert {ev["sender"] for ev in events if ev["type"] == "chat.message"} == {"buyer", "agent", "bot", "system"}
    judged = [ev for ev in events if ev["type"] == "complaint.judged"]
    assert any(ev["malicious"] for ev in judged) and not all(ev["malicious"] for ev in judged)

    two_ofd = stalls = missing_pickup = slow_refund = twice_reviewed = fresh_claims = cancelled = late = 0
    for evs in by_order.values():
        types = collections.Counter(ev["type"] for ev in evs)
        two_ofd += types["shipment.out_for_delivery"] >= 2
        twice_reviewed += types["review.posted"] >= 2
        cancelled += types["order.cancelled"] > 0
        scans = [ev["ts_us"] for ev in evs if ev["type"].startswith("shipment.") and ev["type"] != "shipment.fake_flagged"]
        stalls += any(b - a > 48 * 3600 * 10**6 for a, b in itertools.pairwise(scans))
        shipped = next((ev for ev in evs if ev["type"] == "order.shipped"), None)
        if shipped and not shipped["no_logistics"]:
            missing_pickup += not any(s <= shipped["ts_us"] + 24 * 3600 * 10**6 for s in scans)
        pay = evs[0]
        if shipped and pay["type"] == "order.paid" and "presale" not in pay and "promised_ship_by" not in pay:
            late += shipped["ts_us"] > pay["ts_us"] + 72 * 3600 * 10**6
        reqs = {ev["refund_id"]: ev["ts_us"] for ev in evs if ev["type"] == "refund.requested"}
        for ev in evs:
            if ev["type"] in ("refund.approved", "refund.rejected") and ev["ts_us"] - reqs[ev["refund_id"]] > 48 * 3600 * 10**6:
                slow_refund += 1
        signed = next((ev["ts_us"] for ev in evs if ev["type"] == "shipment.signed"), None)
        if signed and pay["category"] == "fresh":
            fresh_claims += any(ev["type"] == "refund.requested" and ev["reason"] == "spoiled"
                                and ev["ts_us"] - signed <= 24 * 3600 * 10**6 for ev in evs)
    assert two_ofd and stalls and missing_pickup and slow_refund and twice_reviewed and fresh_claims
    assert late and cancelled

    # Consultations: queue delays, slow (> 3 min) replies, night sessions.
    sessions = collections.defaultdict(list)
    for ev in events:
        if "session_id" in ev:
            sessions[ev["session_id"]].append(ev)
    slow = night = 0
    for evs in sessions.values():
        last_buyer = None
        for ev in evs:
            if ev["type"] == "chat.message" and ev["sender"] == "buyer" and last_buyer is None:
                last_buyer = ev["ts_us"]
            elif ev["type"] == "chat.message" and ev["sender"] == "agent" and last_buyer is not None:
                slow += ev["ts_us"] - last_buyer > 180 * 10**6
                last_buyer = None
        hour = int(evs[0]["ts"][11:13])
        night += hour >= 23 or hour < 9
    assert slow > 0 and night > 0
    assert sum(1 for evs in sessions.values() if evs[0]["type"] == "chat.started") == len(sessions)


# -- causality and ordering -------------------------------------------------------------------------------


def test_sorted_by_ts(recs):
    ts = [decode(b)["ts_us"] for kind, _, _, b in recs if kind == "event"]
    assert ts == sorted(ts)


def test_causal_order_per_order(by_order):
    rank = {"order.paid": 0, "order.shipped": 1, "shipment.picked_up": 2, "shipment.out_for_delivery": 3,
            "shipment.signed": 4}
    for oid, evs in by_order.items():
        first: dict[str, int] = {}
        for ev in evs:
            first.setdefault(ev["type"], ev["ts_us"])
        assert evs[0]["type"] == "order.paid", oid
        assert sum(ev["type"] == "order.paid" for ev in evs) == 1
        steps = [first[t] for t in sorted(first, key=lambda t: rank.get(t, 99)) if t in rank]
        assert steps == sorted(steps) and len(set(steps)) == len(steps), oid
        pay = evs[0]
        if pay["virtual"] or "order.cancelled" in first:
            assert not any(t.startswith("shipment.") or t == "order.shipped" for t in first), oid
        if "shipment.signed" in first:
            reviews = [ev["ts_us"] for ev in evs if ev["type"] == "review.posted"]
            assert all(r > first["shipment.signed"] for r in reviews), oid
        if "order.cancelled" in first and "refund.requested" not in first:
            assert first["order.cancelled"] > pay["ts_us"]
        filed = {ev["complaint_id"]: ev["ts_us"] for ev in evs if ev["type"] == "complaint.filed"}
        for ev in evs:
            if ev["type"] == "complaint.judged":
                assert ev["ts_us"] > filed[ev["complaint_id"]]


def test_causal_order_per_refund(by_order):
    for evs in by_order.values():
        paid = evs[0]["ts_us"]
        refunds = collections.defaultdict(list)
        for ev in evs:
            if "refund_id" in ev:
                refunds[ev["refund_id"]].append(ev)
        for rid, revs in refunds.items():
            types = [ev["type"] for ev in revs]
            assert types[0] == "refund.requested" and revs[0]["ts_us"] > paid, rid
            ts = [ev["ts_us"] for ev in revs]
            assert len(set(ts)) == len(ts), rid
            ends = [t for t in types if t in ("refund.completed", "refund.closed")]
            assert len(ends) <= 1 and (not ends or types[-1] == ends[0]), rid
            order = ["refund.return_shipped", "refund.return_signed", "refund.received"]
            present = [types.index(t) for t in order if t in types]
            assert present == sorted(present), rid
            if "refund.judged" in types:
                assert types.index("refund.intervened") < types.index("refund.judged"), rid


def test_causal_order_per_session(events):
    sessions = collections.defaultdict(list)
    for ev in events:
        if "session_id" in ev:
            sessions[ev["session_id"]].append(ev["type"])
    for sid, types in sessions.items():
        assert types[0] == "chat.started", sid
        if "chat.closed" in types:
            after = types[types.index("chat.closed") + 1:]
            assert set(after) <= {"chat.rated"}, sid
        if "chat.rated" in types:
            assert "chat.closed" in types[: types.index("chat.rated")]


def test_unique_ids(events):
    ids = [ev["event_id"] for ev in events]
    assert len(ids) == len(set(ids))
    refund_orders = {}
    for ev in events:
        if "refund_id" in ev:
            assert refund_orders.setdefault(ev["refund_id"], ev["order_id"]) == ev["order_id"]


def test_days_cut(events):
    assert events[0]["ts"] >= "2026-10-01T00:00:00"
    assert events[-1]["ts"] < "2026-10-15T00:00:00"


# -- --events, CLI ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 999, 12345])
def test_events_limit(n):
    got = list(simulate.records(seed=5, shops=3, days=None, orders_per_shop_day=20, dirty=0.02, events=n))
    assert len(got) == n


def test_events_limit_with_days_stops_at_days():
    full = list(simulate.records(seed=5, shops=3, days=2, orders_per_shop_day=20))
    assert len(list(simulate.records(seed=5, shops=3, days=2, orders_per_shop_day=20, events=10**9))) == len(full)


def _run_cli(args, **env):
    exe = [str(CLI), "simulate"] if CLI.exists() else [str(PY), "-m", "shopwatch.agents.cli", "simulate"]
    return subprocess.run(exe + args, capture_output=True, timeout=120, env=os.environ | env, cwd=ROOT)


def test_cli_writes_the_file(tmp_path):
    out = tmp_path / "events.jsonl"
    p = _run_cli(["--seed", "7", "--shops", "5", "--days", "2", "--orders-per-shop-day", "20", "--out", str(out)])
    assert p.returncode == 0, p.stderr.decode()
    assert b"records" in p.stderr
    data = out.read_bytes()
    assert data == _blob(_small())  # same bytes as in-process, across processes and hash seeds
    lines = data.splitlines()
    assert len(lines) > 1000


def test_cli_deterministic_across_processes(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    args = ["--seed", "11", "--shops", "6", "--events", "20000", "--dirty", "0.01", "--quiet"]
    assert _run_cli(args + ["--out", str(a)], PYTHONHASHSEED="1").returncode == 0
    assert _run_cli(args + ["--out", str(b)], PYTHONHASHSEED="2").returncode == 0
    assert a.read_bytes() == b.read_bytes()
    assert len(a.read_bytes().splitlines()) == 20000


def test_cli_stdout_and_events_limit():
    p = _run_cli(["--seed", "3", "--events", "500", "--quiet"])
    assert p.returncode == 0
    assert len(p.stdout.splitlines()) == 500
    assert p.stderr == b""


def test_cli_bad_arguments():
    assert _run_cli(["--start", "2026-13-01"]).returncode == 2
    assert _run_cli(["--dirty", "1.5"]).returncode == 2
    assert _run_cli(["--shops", "0"]).returncode == 2


def test_module_entry_point_and_rate(tmp_path):
    out = tmp_path / "r.jsonl"
    rc = simulate_main(["--seed", "1", "--events", "300", "--rate", "100000", "--out", str(out), "--quiet"])
    assert rc == 0 and len(out.read_bytes().splitlines()) == 300
    p = subprocess.run([str(PY), "-m", "shopwatch.agents.simulator", "--events", "10", "--quiet"],
                       capture_output=True, timeout=60, cwd=ROOT)
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 10


# -- Kafka code path (the real broker is exercised by the broker tests) -------------------------------------


class _FakeProducer:
    instances: list[_FakeProducer] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.calls: list[str] = []
        _FakeProducer.instances.append(self)

    async def start(self):
        self.calls.append("start")

    async def send(self, topic, value=None, key=None):
        self.sent.append((topic, key, value))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def flush(self):
        self.calls.append("flush")

    async def stop(self):
        self.calls.append("stop")


def test_kafka_path_sends_keyed_records_to_the_configured_topics(monkeypatch):
    import aiokafka

    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", _FakeProducer)
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "broker.example:9092")
    monkeypatch.setenv("SHOPWATCH_TOPIC_PREFIX", "t1.")
    monkeypatch.setenv("SHOPWATCH_TOPIC_CHATS", "custom-chats")
    _FakeProducer.instances.clear()
    rc = simulate_main(["--kafka", "--seed", "9", "--shops", "5", "--events", "3000", "--dirty", "0.02", "--quiet"])
    assert rc == 0
    (prod,) = _FakeProducer.instances
    assert prod.kwargs["bootstrap_servers"] == "broker.example:9092"
    assert prod.calls == ["start", "flush", "stop"]
    expected = list(simulate.records(seed=9, shops=5, days=None, dirty=0.02, events=3000))
    assert len(prod.sent) == 3000
    names = {"shop.orders": "t1.shop.orders", "shop.shipments": "t1.shop.shipments",
             "shop.refunds": "t1.shop.refunds", "shop.chats": "custom-chats"}
    for (topic, key, value), (_, etopic, ekey, evalue) in zip(prod.sent, expected, strict=True):
        assert (topic, key, value) == (names[etopic], ekey.encode(), evalue)
    assert {t for t, _, _ in prod.sent} == set(names.values())
    for _topic, key, value in prod.sent:
        try:
            ev = decode(value)
        except InvalidEvent:
            continue
        assert key == key_of(ev).encode()


def test_events_limit_counts_records():
    """--events caps the stream by records (speed is measured in bench/, never asserted here)."""
    n = sum(1 for _ in simulate.records(seed=1, days=None, events=5_000))
    assert n == 5_000


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
