"""Helpers of the broker tests (fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from shopwatch.schemas.events import TOPIC_OF_TYPE, InvalidEvent, decode, key_of

ROOT = Path(__file__).resolve().parents[1]
KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"


def unique_prefix(label: str = "t") -> str:
    """A topic-name prefix unique to this call, e.g. 't-ingest-1795425575-3f9a1c2e.'."""
    label = re.sub(r"[^A-Za-z0-9_-]+", "-", label).strip("-")[:40] or "t"
    return f"t-{label}-{int(time.time())}-{uuid.uuid4().hex[:8]}."


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shopwatch_cmd(*args: str) -> list[str]:
    """The `shopwatch` command of the interpreter running the tests."""
    return [sys.executable, "-m", "shopwatch.agents.cli", *args]


def delete_topics(bootstrap: str, prefix: str, timeout: float = 30.0) -> None:
    """Best effort: delete every topic whose name starts with ``prefix``."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
        await admin.start()
        try:
            names = [t for t in await admin.list_topics() if t.startswith(prefix)]
            if names:
                await admin.delete_topics(names)
        finally:
            await admin.close()

    try:
        asyncio.run(asyncio.wait_for(run(), timeout))
    except Exception as exc:  # cleanup must not fail a test
        warnings.warn(f"could not delete test topics {prefix}*: {exc!r}", stacklevel=2)


# ---------------------------------------------------------------- workers on the event clock
# Shared by the broker tests that run the core through workers and compare with replay
# (test_broker_topology.py, test_broker_retention.py, ...).

P = 4  # partitions of every topic the workers create
UNTIL = "2026-10-06T00:00:00+08:00"  # the end of test_broker_topology's simulated days (its _sim)


def _utc(s: str) -> str:
    return datetime.fromisoformat(s).astimezone(UTC).isoformat()


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


async def _produce(bootstrap, records, **producer_conf) -> list:
    """Produce ``records`` (topic, key, value) and wait for every one; their metadata."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, **producer_conf)
    await producer.start()
    try:
        futs = [await producer.send(t, key=k, value=v) for t, k, v in records]
        return list(await asyncio.gather(*futs))
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


def _tick(env, until=UNTIL):
    subprocess.run(shopwatch_cmd("tick", "--until", until), env=env, check=True, capture_output=True)


def _compare(kafka_alerts, replay_alerts):
    k = Counter((a["alert_id"], a["status"], _utc(a["at"])) for a in kafka_alerts)
    r = Counter((a["alert_id"], a["status"], _utc(a["at"])) for a in replay_alerts)
    assert set(k) == set(r), (f"missing on Kafka: {sorted(set(r) - set(k))[:5]}; "
                              f"extra on Kafka: {sorted(set(k) - set(r))[:5]}")
    return k, r


def _final_scores(msgs, shops, until=UNTIL):
    snaps = {}
    for s in msgs:
        if _utc(s["as_of"]) == _utc(until):
            snaps[(s["platform"], s["shop_id"])] = s["indicators"]
    return snaps


def _chat_env(chat) -> str:
    # Slack digests (1 s group wait, 2 s interval) so the test sees them within seconds
    return chat.sinks_env("slack", group_wait=1, group_interval=2)


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
    # (imported here: test_broker_ingest imports this module)
    from test_broker_ingest import Worker

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


# ------------------------------------------------------------------ a worker process
def _http(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Worker:
    """A `shopwatch worker` subprocess with its log in a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.port = int(env["SHOPWATCH_WEB_PORT"])
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            shopwatch_cmd("worker", "-l", "info"),
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=log_path.parent,
        )

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def wait_ready(self, timeout: float = 90.0) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}", pytrace=False)
            try:
                status, body = _http(self.port, "/readyz")
                last = (status, body)
                if status == 200:
                    return json.loads(body)
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"worker not ready after {timeout}s (last /readyz: {last}):\n{self.log_tail()}", pytrace=False)

    def metrics(self) -> dict[str, dict[tuple, float]]:
        status, body = _http(self.port, "/metrics", timeout=5.0)
        assert status == 200, body
        out: dict[str, dict[tuple, float]] = {}
        for fam in text_string_to_metric_families(body.decode()):
            for s in fam.samples:
                if s.name.endswith("_total") or fam.type == "gauge":
                    out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
        return out

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                self._log.close()
                pytest.fail(f"worker did not stop within {timeout}s of SIGTERM:\n{self.log_tail()}", pytrace=False)
        self._log.close()
        return self.proc.returncode


async def _read_dlq(bootstrap: str, topic: str, expected: int, timeout: float) -> list:
    """All DLQ records once ``expected`` are in (plus a grace period for extras)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    got = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        grace_until = None
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for msgs in batch.values():
                got.extend(msgs)
            if len(got) >= expected:
                grace_until = grace_until or loop.time() + 2.0
                if loop.time() >= grace_until:
                    break
        return got
    finally:
        await consumer.stop()


# ------------------------------------------------------------------ a simulated run and its replay
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
