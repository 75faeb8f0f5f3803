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
import time
from collections import Counter

import pytest
from broker_helpers import (
    Worker,
    _compare,
    _consumed,
    _final_scores,
    _http,
    _produce,
    _read,
    _records,
    _replay,
    _sim,
    _start,
    _tick,
    _utc,
    _wait_consumed,
    _wait_drained,
    _wait_shops_caught_up,
    _workers,
)
from chat_receiver import Receiver

pytestmark = [pytest.mark.broker, pytest.mark.timeout(600)]

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
