"""The core on the real broker: 2 workers, 4 partitions, event clock — identical to replay.

The same simulated events (several days, all five platforms, with duplicates
and malformed lines) go through Kafka and through `shopwatch replay`; the
alerts (alert_id, status, at) and the scores must be identical. One test kills
a worker with SIGKILL mid-stream and restarts it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from broker_helpers import free_port, shopwatch_cmd
from chat_receiver import Receiver
from test_broker_ingest import Worker, _http

from shopwatch.schemas.events import TOPIC_OF_TYPE, InvalidEvent, decode, key_of

pytestmark = [pytest.mark.broker, pytest.mark.timeout(600)]

P = 4
UNTIL = "2026-10-06T00:00:00+08:00"


def _utc(s: str) -> str:
    return datetime.fromisoformat(s).astimezone(UTC).isoformat()


def _sim(path, seed=11) -> list[bytes]:
    subprocess.run(shopwatch_cmd("simulate", "--seed", str(seed), "--shops", "10", "--days", "4",
                                 "--orders-per-shop-day", "40", "--out", str(path), "--quiet"), check=True)
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def _replay(path, tmp_path):
    a, s = tmp_path / "r-alerts.jsonl", tmp_path / "r-scores.json"
    subprocess.run(shopwatch_cmd("replay", str(path), "--until", UNTIL, "--alerts-out", str(a), "--scores-out", str(s)),
                   check=True, capture_output=True)
    alerts = [orjson.loads(x) for x in a.read_bytes().splitlines() if x.strip()]
    scores = {(x["platform"], x["shop_id"]): x["indicators"] for x in orjson.loads(s.read_bytes())}
    return alerts, scores


def _records(lines: list[bytes], prefix: str) -> list[tuple[str, bytes | None, bytes]]:
    out = []
    for line in lines:
        try:
            ev = decode(line)
        except InvalidEvent:
            out.append((prefix + "shop.orders", None, line))  # dead-lettered by the worker
            continue
        out.append((prefix + TOPIC_OF_TYPE[ev["type"]], key_of(ev).encode(), line))
    return out


async def _produce(bootstrap, records):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        futs = [await producer.send(t, key=k, value=v) for t, k, v in records]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def _read(bootstrap, topic, settle: float = 4.0, timeout: float = 120.0, until=None):
    """Everything on ``topic`` once nothing new came for ``settle`` s (and ``until(msgs)`` holds)."""
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                         enable_auto_commit=False)
    await c.start()
    got = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet_since = loop.time()
        while loop.time() < deadline:
            batch = await c.getmany(timeout_ms=500)
            n = sum(len(v) for v in batch.values())
            for msgs in batch.values():
                got.extend(orjson.loads(m.value) for m in msgs)
            if n:
                quiet_since = loop.time()
            elif loop.time() - quiet_since >= settle and (until is None or until(got)):
                break
        return got
    finally:
        await c.stop()


def _consumed(workers) -> float:
    total = 0.0
    for w in workers:
        try:
            m = w.metrics()
        except (OSError, AssertionError):
            continue
        total += sum(m.get("shopwatch_events_total", {}).values()) + sum(
            m.get("shopwatch_invalid_events_total", {}).values())
    return total


def _wait_consumed(workers, n, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _consumed(workers) >= n:
            return
        time.sleep(1)
    pytest.fail(f"consumed {_consumed(workers)} of {n}:\n" + "\n---\n".join(w.log_tail(30) for w in workers))


async def _lag(bootstrap, group, topics, detail=False):
    """Records of ``topics`` not yet committed by the consumer group ``group``."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.structs import TopicPartition

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(P)]
        ends = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group)
        lags = {f"{tp.topic.rsplit('.', 1)[1]}:{tp.partition}": ends[tp] - (committed[tp].offset if tp in committed
                                                                              else 0) for tp in tps}
        return {k: v for k, v in lags.items() if v} if detail else sum(max(0, v) for v in lags.values())
    finally:
        await consumer.stop()
        await admin.close()


def _wait_drained(env, prefix, timeout=150):
    """Until the workers' group has committed every input record (then they were all processed)."""
    topics = [prefix + t for t in ("shop.orders", "shop.shipments", "shop.refunds", "shop.chats")]
    deadline = time.monotonic() + timeout
    lag = None
    while time.monotonic() < deadline:
        lag = asyncio.run(_lag(env["KAFKA_BOOTSTRAP"], env["SHOPWATCH_APP_ID"], topics))
        if lag == 0:
            return
        time.sleep(2)
    detail = asyncio.run(_lag(env["KAFKA_BOOTSTRAP"], env["SHOPWATCH_APP_ID"], topics, detail=True))
    pytest.fail(f"input not drained after {timeout}s: lag {lag} {detail}")


async def _ends(bootstrap, topic):
    from aiokafka.structs import TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await c.start()
    try:
        return await c.end_offsets([TopicPartition(topic, p) for p in range(P)])
    finally:
        await c.stop()


def _wait_shops_caught_up(env, prefix, timeout=150):
    """Until the shop agents have committed everything on shop.contribs that was there
    now (after a restart, recovery resends and reprocessing can still be on their way to
    the shops when every shop has already sent a snapshot as of the end)."""
    from aiokafka.admin import AIOKafkaAdminClient

    topic = prefix + "shop.contribs"
    ends = asyncio.run(_ends(env["KAFKA_BOOTSTRAP"], topic))

    async def committed():
        admin = AIOKafkaAdminClient(bootstrap_servers=env["KAFKA_BOOTSTRAP"])
        await admin.start()
        try:
            return await admin.list_consumer_group_offsets(env["SHOPWATCH_APP_ID"])
        finally:
            await admin.close()

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = asyncio.run(committed())
        if all(tp in got and got[tp].offset >= end for tp, end in ends.items()):
            return
        time.sleep(2)
    pytest.fail(f"shops did not catch up on {topic} within {timeout}s")


def _tick(env):
    subprocess.run(shopwatch_cmd("tick", "--until", UNTIL), env=env, check=True, capture_output=True)


def _compare(kafka_alerts, replay_alerts):
    k = Counter((a["alert_id"], a["status"], _utc(a["at"])) for a in kafka_alerts)
    r = Counter((a["alert_id"], a["status"], _utc(a["at"])) for a in replay_alerts)
    assert set(k) == set(r), (f"missing on Kafka: {sorted(set(r) - set(k))[:5]}; "
                              f"extra on Kafka: {sorted(set(k) - set(r))[:5]}")
    return k, r


def _final_scores(msgs, shops):
    snaps = {}
    for s in msgs:
        if _utc(s["as_of"]) == _utc(UNTIL):
            snaps[(s["platform"], s["shop_id"])] = s["indicators"]
    return snaps


@pytest.fixture
def sim(tmp_path):
    path = tmp_path / "events.jsonl"
    lines = _sim(path)
    alerts, scores = _replay(path, tmp_path)
    assert {p for p, _s in scores} == {"xiaohongshu", "douyin", "kuaishou", "jd", "tmall"}
    assert len(alerts) > 100
    return lines, alerts, scores


@pytest.fixture
def chat():
    with Receiver() as r:
        yield r


def _chat_env(chat) -> str:
    # Slack digests (1 s group wait, 2 s interval) so the test sees them within seconds
    return chat.sinks_env("slack", group_wait=1, group_interval=2)


def _notified(chat, r_alerts, timeout=90):
    """How often each (alert_id, status) of replay reached the chat (a fired-and-resolved
    line counts as both), once every change came (or ``timeout`` passed)."""
    want = {(a["alert_id"], a["status"]) for a in r_alerts}
    chat.wait_for(lambda r: r.changes("slack") >= want, timeout=timeout)
    time.sleep(3)  # a late copy would show now
    got: Counter = Counter()
    for m in chat.snapshot("slack"):
        for aid, status in m.changes:
            got.update([(aid, "firing"), (aid, "resolved")] if status == "folded" else [(aid, status)])
    return got, want


def _alert_states_equal_replay(worker, r_alerts):
    """GET /alerts?status=all for every shop: the last status of each alert is replay's."""
    last: dict = {}
    for a in r_alerts:
        last.setdefault(a["shop_id"], {})[a["alert_id"]] = (a["status"], _utc(a["at"]))
    for shop, want in last.items():
        st, body = _http(worker.port, f"/alerts?shop_id={shop}&status=all", timeout=10)
        assert st == 200, body
        got = {a["alert_id"]: (a["status"], _utc(a["at"])) for a in json.loads(body)["alerts"]}
        assert got == want, shop


def _workers(shopwatch_env, tmp_path, n=2, chat=None):
    base = {**shopwatch_env, "SHOPWATCH_PARTITIONS": str(P), "SHOPWATCH_CLOCK": "event"}
    if chat is not None:
        base["SHOPWATCH_SINKS"] = _chat_env(chat)
    envs = []
    for i in range(n):
        envs.append({**base, "SHOPWATCH_WEB_PORT": str(free_port()),
                     "SHOPWATCH_DATA_DIR": str(tmp_path / f"data-{i}")})
    return envs


def _start(envs, tmp_path):
    """The workers, ready, once the group has settled with all of them."""
    workers = [Worker(e, tmp_path / f"w{i}.log") for i, e in enumerate(envs)]
    try:
        for w in workers:
            w.wait_ready()
    except BaseException:
        for w in workers:
            w.stop()
        raise
    time.sleep(5)
    return workers


def test_two_workers_equal_replay_and_answer_http(kafka_bootstrap, shopwatch_env, topic_prefix, tmp_path, sim,
                                                  chat):
    lines, r_alerts, r_scores = sim
    envs = _workers(shopwatch_env, tmp_path, chat=chat)
    workers = _start(envs, tmp_path)
    try:
        asyncio.run(_produce(kafka_bootstrap, _records(lines, topic_prefix)))
        _wait_consumed(workers, len(lines))
        _wait_drained(envs[0], topic_prefix)
        _tick(envs[0])
        scores_msgs = asyncio.run(_read(kafka_bootstrap, topic_prefix + "shop.scores",
                                        until=lambda g: len(_final_scores(g, r_scores)) >= len(r_scores)))
        k_scores = _final_scores(scores_msgs, r_scores)
        k_alerts = asyncio.run(_read(kafka_bootstrap, topic_prefix + "shop.alerts"))
        k, r = _compare(k_alerts, r_alerts)
        assert sum(k.values()) == sum(r.values()), "an alert change was emitted twice"
        assert k_scores == r_scores
        notified, want = _notified(chat, r_alerts)
        assert set(notified) == want and not chat.rejected["slack"]
        assert max(notified.values()) == 1, "the chat got a change twice"

        # HTTP views answer from either worker, for keys owned by either.
        (platform, shop), inds = sorted(r_scores.items())[0]
        order_id = next(a["order_id"] for a in r_alerts if a.get("order_id"))
        for w in workers:
            st, body = _http(w.port, f"/shops/{platform}/{shop}/score", timeout=10)
            assert st == 200, body
            assert json.loads(body)["indicators"] == inds
            st, body = _http(w.port, f"/orders/{order_id}", timeout=10)
            assert st == 200, body
            assert json.loads(body)["order_id"] == order_id
            st, body = _http(w.port, f"/alerts?shop_id={shop}&status=firing", timeout=10)
            assert st == 200, body
            firing = {a["alert_id"] for a in json.loads(body)["alerts"]}
            last = {}
            for a in r_alerts:
                if a["shop_id"] == shop:
                    last[a["alert_id"]] = a["status"]
            assert firing == {i for i, s in last.items() if s == "firing"}
    finally:
        for w in workers:
            w.stop()


def test_worker_killed_mid_stream_loses_and_duplicates_nothing(kafka_bootstrap, shopwatch_env, topic_prefix,
                                                               tmp_path, sim, chat):
    lines, r_alerts, r_scores = sim
    envs = _workers(shopwatch_env, tmp_path, chat=chat)
    workers = _start(envs, tmp_path)
    try:
        records = _records(lines, topic_prefix)
        half = len(records) // 2
        asyncio.run(_produce(kafka_bootstrap, records[:half]))
        deadline = time.monotonic() + 120
        while _consumed(workers) < half // 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers[1].proc.send_signal(signal.SIGKILL)  # dies mid-stream, no goodbye
        workers[1].proc.wait(10)
        asyncio.run(_produce(kafka_bootstrap, records[half:]))
        workers[1] = Worker(envs[1], tmp_path / "w1-restarted.log")
        workers[1].wait_ready(timeout=180)
        _wait_drained(envs[0], topic_prefix)
        _tick(envs[0])
        time.sleep(5)  # the backfill's end reaches the shops through the tick and order agents
        _wait_shops_caught_up(envs[0], topic_prefix)
        scores_msgs = asyncio.run(_read(kafka_bootstrap, topic_prefix + "shop.scores",
                                        until=lambda g: len(_final_scores(g, r_scores)) >= len(r_scores)))
        k_alerts = asyncio.run(_read(kafka_bootstrap, topic_prefix + "shop.alerts"))
        # shop.alerts is at-least-once: after the crash a change may come again, an
        # identical copy; the set of changes is replay's, none lost and none different
        _compare(k_alerts, r_alerts)
        k_scores = _final_scores(scores_msgs, r_scores)
        diff = {shop: {n: (k_scores.get(shop, {}).get(n), v) for n, v in inds.items()
                       if k_scores.get(shop, {}).get(n) != v} for shop, inds in r_scores.items()}
        assert k_scores == r_scores, {s: d for s, d in diff.items() if d}
        # the alert agent kept each alert's last status as replay has it
        _alert_states_equal_replay(workers[0], r_alerts)
        # and the chat got every change (at least once: see README "Delivery guarantees")
        notified, want = _notified(chat, r_alerts)
        assert set(notified) == want and not chat.rejected["slack"]
        print(f"copies on shop.alerts: {len(k_alerts) - len(r_alerts)}; "
              f"changes the chat got twice: {sum(1 for n in notified.values() if n > 1)}")
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.stop()
