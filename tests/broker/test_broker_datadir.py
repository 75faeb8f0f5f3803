"""Local state on the real broker: one data directory shared by two app ids, and local
state ahead of its changelog (topics deleted and recreated).

Before: the table files were ``data_dir/v1/tables/<table>-<partition>.db`` whatever the
app id, so a worker of another app id found the first app's files, with persisted
changelog offsets above the end of its own (empty) changelogs, and died at start with
Faust's ``ConsistencyError``; the same happened to a worker whose changelog topics
were deleted and recreated. Now each app id and topic prefix has its own directory,
and a partition whose local state is ahead of its changelog is dropped and restored.
"""

from __future__ import annotations

import asyncio
import json
import time

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from broker_helpers import Worker, _http, _produce, delete_topics, free_port, unique_prefix

from shopwatch.agents.app import state_dir
from shopwatch.agents.settings import Settings
from shopwatch.agents.worker import CLEAN_MARK

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

AHEAD = "ahead of the changelog"  # ShopwatchRecovery's warning


def _orders(prefix: str, ids: list[str]) -> list[tuple[str, bytes, bytes]]:
    """order.paid events on ``prefix`` + shop.orders, keyed by order_id."""
    out = []
    for i, oid in enumerate(ids):
        ev = {"event_id": f"e-{oid}", "type": "order.paid", "platform": "douyin", "shop_id": "s-1",
              "ts": f"2026-11-{10 + i % 10:02d}T10:00:00+08:00", "order_id": oid, "amount_fen": 12900,
              "trade_type": "bonded", "presale": {"ship_within_days": 3}}
        out.append((prefix + "shop.orders", oid.encode(), orjson.dumps(ev)))
    return out


def _order_status(worker: Worker, oid: str) -> int:
    status, _body = _http(worker.port, f"/orders/{oid}", timeout=10)
    return status


def _wait_orders(worker: Worker, ids: list[str], timeout: float = 90.0) -> None:
    """Until GET /orders/<id> answers 200 for every id."""
    deadline = time.monotonic() + timeout
    missing = list(ids)
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            pytest.fail(f"worker exited with {worker.proc.returncode}:\n{worker.log_tail()}", pytrace=False)
        missing = [oid for oid in missing if _order_status(worker, oid) != 200]
        if not missing:
            return
        time.sleep(0.5)
    pytest.fail(f"orders {missing} not served after {timeout}s:\n{worker.log_tail()}", pytrace=False)


def _state_dir(env: dict[str, str]):
    return state_dir(Settings(data_dir=env["SHOPWATCH_DATA_DIR"], app_id=env["SHOPWATCH_APP_ID"],
                              topic_prefix=env["SHOPWATCH_TOPIC_PREFIX"]))


def _log(worker: Worker) -> str:
    return worker.log_path.read_text(errors="replace")


def _stop(worker: Worker) -> None:
    rc = worker.stop()
    assert rc == 0, f"worker exit status {rc}:\n{worker.log_tail()}"


@pytest.fixture
def other_prefix(kafka_bootstrap):
    """A second unique topic prefix (app B's); its topics are deleted afterwards."""
    prefix = unique_prefix("datadir-b")
    yield prefix
    delete_topics(kafka_bootstrap, prefix)


def test_data_dir_shared_by_two_app_ids(kafka_bootstrap, shopwatch_env, topic_prefix, other_prefix, tmp_path):
    env_a = {**shopwatch_env, "SHOPWATCH_CLOCK": "event"}
    env_b = {**env_a, "SHOPWATCH_APP_ID": other_prefix + "shopwatch", "SHOPWATCH_TOPIC_PREFIX": other_prefix,
             "SHOPWATCH_WEB_PORT": str(free_port())}
    assert env_b["SHOPWATCH_DATA_DIR"] == env_a["SHOPWATCH_DATA_DIR"]
    a_ids = [f"o-a-{i}" for i in range(12)]
    b_ids = [f"o-b-{i}" for i in range(4)]

    # A: a few orders, then a clean stop (its tables and mark stay on disk).
    a = Worker(env_a, tmp_path / "a.log")
    try:
        a.wait_ready()
        asyncio.run(_produce(kafka_bootstrap, _orders(topic_prefix, a_ids)))
        _wait_orders(a, a_ids)
    finally:
        _stop(a)
    dir_a = _state_dir(env_a)
    assert (dir_a / CLEAN_MARK).exists()
    assert list((dir_a / "v1" / "tables").glob("*.db")), "A kept no tables on disk"

    # B, another app id and prefix on the SAME data dir: starts, serves its own orders only.
    b = Worker(env_b, tmp_path / "b.log")
    try:
        b.wait_ready()
        asyncio.run(_produce(kafka_bootstrap, _orders(other_prefix, b_ids)))
        _wait_orders(b, b_ids)
        assert _order_status(b, a_ids[0]) == 404  # A's tables are not B's
    finally:
        _stop(b)
    dir_b = _state_dir(env_b)
    assert dir_b != dir_a and (dir_b / CLEAN_MARK).exists()
    assert "ConsistencyError" not in _log(b)
    assert AHEAD not in _log(b), "B met A's tables (recovered instead of keeping apart)"

    # A again: its own tables, clean mark kept through B's run, every order served.
    a2 = Worker(env_a, tmp_path / "a2.log")
    try:
        a2.wait_ready()
        _wait_orders(a2, a_ids, timeout=60)
        st, body = _http(a2.port, f"/orders/{a_ids[0]}", timeout=10)
        assert st == 200 and json.loads(body)["order_id"] == a_ids[0]
        assert _order_status(a2, b_ids[0]) == 404
    finally:
        _stop(a2)
    log = _log(a2)
    assert "did not stop cleanly" not in log, "B's run touched A's clean-shutdown mark"
    assert AHEAD not in log and "ConsistencyError" not in log
    data = tmp_path / "data"
    assert not (data / "v1").exists() and not (data / CLEAN_MARK).exists()  # nothing shared at the top


async def _topics_with(bootstrap: str, prefix: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return [t for t in await admin.list_topics() if t.startswith(prefix)]
    finally:
        await admin.close()


def test_local_state_ahead_of_recreated_changelog_is_dropped(kafka_bootstrap, shopwatch_env, topic_prefix,
                                                             tmp_path):
    env = {**shopwatch_env, "SHOPWATCH_CLOCK": "event"}
    ids = [f"o-{i}" for i in range(16)]  # several per partition: persisted offsets > 0
    w = Worker(env, tmp_path / "w.log")
    try:
        w.wait_ready()
        asyncio.run(_produce(kafka_bootstrap, _orders(topic_prefix, ids)))
        _wait_orders(w, ids)
    finally:
        _stop(w)
    changelogs = [t for t in asyncio.run(_topics_with(kafka_bootstrap, topic_prefix)) if t.endswith("-changelog")]
    assert changelogs, "no changelog topics"

    # Delete every topic of the app (inputs, changelogs, Faust's internal ones) and wait
    # until they are gone; the worker recreates them, empty, at its next start.
    delete_topics(kafka_bootstrap, topic_prefix)
    deadline = time.monotonic() + 60
    while asyncio.run(_topics_with(kafka_bootstrap, topic_prefix)):
        assert time.monotonic() < deadline, "topics not deleted within 60s"
        time.sleep(0.5)
    time.sleep(2)

    w2 = Worker(env, tmp_path / "w2.log")
    try:
        w2.wait_ready()  # fails if the worker died (ConsistencyError)
        time.sleep(2)
        assert w2.proc.poll() is None, w2.log_tail()
        # the stale local state was dropped: restored from the (empty) changelog
        assert _order_status(w2, ids[0]) == 404
        # and the worker serves new input
        asyncio.run(_produce(kafka_bootstrap, _orders(topic_prefix, ["o-new"])))
        _wait_orders(w2, ["o-new"])
    finally:
        _stop(w2)
    log = _log(w2)
    assert "ConsistencyError" not in log, log[-3000:]
    assert AHEAD in log, "no partition was found ahead of its changelog:\n" + log[-3000:]
    assert set(asyncio.run(_topics_with(kafka_bootstrap, topic_prefix))) >= set(changelogs)  # recreated
