"""Delivery to a chat that fails, on the real broker: nothing lost, scoring never waits.

One worker (event clock) with a 钉钉 sink pointed at the local receiver
(tests/chat_receiver.py), which plays the faults of issue 12 one after
another while the simulated stream goes through:

1. connection refused for 60 s from the moment the input is produced —
   meanwhile every alert change of replay reaches shop.alerts (scoring does
   not wait for the chat) and /metrics and /readyz show what the sink owes;
2. HTTP 500 for 30 s, during which the worker is killed (SIGKILL) and
   restarted: what it owed survives;
3. a receiver that hangs (accepts, never answers) for 20 s;
4. throughout: 钉钉's throttling (errcode 130101 "send too fast" and a
   penalty) past 6 messages a minute (a bot that another poster shares; alone,
   the digests stay far below 钉钉's 20), and the burst of alerts the final
   clock tick fires at once.

Then every alert change replay gives is in the chat, as a message or inside a
digest (a crash may post one twice; none may be missing), and no post was
rejected.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest
from broker_helpers import (
    P,
    Worker,
    _http,
    _produce,
    _read,
    _records,
    _replay,
    _sim,
    _tick,
    _wait_drained,
    free_port,
)
from chat_receiver import Receiver

pytestmark = [pytest.mark.broker, pytest.mark.timeout(900)]


def _sink_env(r: Receiver) -> str:
    # short grouping and backoff so the test takes minutes, not the defaults' hours of patience;
    # a bucket of twice 钉钉's rate (as two workers on one bot would post)
    return r.sinks_env("dingtalk", group_wait=1, group_interval=5, retry_max=8, timeout=3,
                       throttle_retry_after=15, rate=40, burst=5)


def _owed(worker) -> tuple[float, float]:
    m = worker.metrics()
    depth = sum(m.get("shopwatch_sink_queue_depth", {}).values())
    oldest = max(m.get("shopwatch_sink_oldest_undelivered_seconds", {0: 0.0}).values())
    return depth, oldest


def test_chat_faults_lose_nothing_and_do_not_slow_scoring(kafka_bootstrap, shopwatch_env, topic_prefix, tmp_path):
    path = tmp_path / "events.jsonl"
    lines = _sim(path, seed=5)
    r_alerts, _ = _replay(path, tmp_path)
    want = {(a["alert_id"], a["status"]) for a in r_alerts}
    assert len(want) > 100
    with Receiver() as r:
        # 钉钉 allows 20 a minute per bot; digests keep this sink far below that, so the bot
        # here also serves another poster and has 6 a minute left for it
        r.throttle("dingtalk", 6, penalty=15)
        env = {**shopwatch_env, "SHOPWATCH_PARTITIONS": str(P), "SHOPWATCH_CLOCK": "event",
               "SHOPWATCH_WEB_PORT": str(free_port()), "SHOPWATCH_DATA_DIR": str(tmp_path / "data"),
               "SHOPWATCH_SINKS": _sink_env(r)}
        worker = Worker(env, tmp_path / "w.log")
        try:
            worker.wait_ready()
            # 1. refused for 60 s: scoring goes on, the sink's queue grows
            r.refuse(60)
            refused_until = time.monotonic() + 60
            asyncio.run(_produce(kafka_bootstrap, _records(lines, topic_prefix)))
            _wait_drained(env, topic_prefix)
            _tick(env)
            k_alerts = asyncio.run(_read(kafka_bootstrap, topic_prefix + "shop.alerts",
                                         until=lambda got: {(a["alert_id"], a["status"]) for a in got} >= want))
            assert {(a["alert_id"], a["status"]) for a in k_alerts} == want
            scored_in_outage = time.monotonic() < refused_until
            depth, oldest = _owed(worker)
            st, body = _http(worker.port, "/readyz", timeout=10)
            sinks = json.loads(body)["sinks"]["dingtalk"]
            if scored_in_outage:
                assert r.changes("dingtalk") == set(), "the chat was down"
                assert depth > 0 and oldest > 0, (depth, oldest)
                assert sinks["owed"] > 0 and sinks["problem"], sinks
            print(f"all {len(want)} alert changes on shop.alerts "
                  f"{'during' if scored_in_outage else 'after'} the outage; owed {depth:.0f}, oldest {oldest:.0f}s")
            while time.monotonic() < refused_until:
                time.sleep(0.5)

            # 2. HTTP 500 for 30 s; the worker dies in the middle of it and comes back
            r.fail(30, "dingtalk", status=500)
            time.sleep(10)
            worker.proc.send_signal(signal.SIGKILL)
            worker.proc.wait(10)
            worker = Worker(env, tmp_path / "w-restarted.log")
            worker.wait_ready(timeout=180)

            # 3. a receiver that accepts and never answers, for 20 s
            r.hang(20, "dingtalk")
            time.sleep(20)

            # every change in the chat, as a message or inside a digest
            ok = r.wait_for(lambda rr: rr.changes("dingtalk") >= want, timeout=300)
            got = r.changes("dingtalk")
            missing = sorted(want - got)
            assert ok and not missing, (f"{len(missing)} of {len(want)} never reached the chat: {missing[:5]}\n"
                                        + worker.log_tail(40))
            assert not r.rejected.get("dingtalk"), r.rejected.get("dingtalk")[:3]
            assert r.throttled.get("dingtalk", 0) > 0, "the test meant to hit 钉钉's limit"
            deadline = time.monotonic() + 30
            while _owed(worker)[0] and time.monotonic() < deadline:
                time.sleep(1)
            assert _owed(worker) == (0, 0), "the sink owes nothing once the chat has it all"
            msgs = r.snapshot("dingtalk")
            # (a digest past 钉钉's 20,000 bytes counts the rest as 另有 N 条; those came in later digests)
            print(f"{len(want)} changes in {len(msgs)} messages; throttled answers {r.throttled.get('dingtalk')}; "
                  f"lines counted as 另有 N 条 {r.omitted('dingtalk')}")
        finally:
            if worker.proc.poll() is None:
                worker.stop()
