"""Months of traffic in bounded state (issue 13), on the real broker.

130 simulated days of five shops (one per platform, ~13k events) with the retention
shortened to 7 days (``{"retention_days": 7}``, the same rules file for `shopwatch replay
--rules` and the workers' ``SHOPWATCH_RULES``): the run is over 18 retention periods
long. Two workers on the event clock take the stream in slices (days 0-40, 40-80,
80-120, 120-130), each drained before the next, and are then ticked to the end.

- The alerts and final scores are replay's, with the same rules; replay retires most of
  the entities too (its engine's ``retired`` counts and state sizes).
- State is bounded on the broker: at each checkpoint and at the end, the keys whose last
  record on the ``orders`` changelog is not a tombstone are exactly the orders replay
  holds then, a small part of the keys ever written, and every other key ends with a
  tombstone; the ``shops`` changelog's entity records (``rec/…``) of retired entities are
  tombstoned too; the sessions with a state are replay's, with a small slack.
- A plateau: the live order documents after days 40, 80 and 120 stay within a factor 1.5
  of each other (the simulated rate is flat).

Every measure reads the changelogs until they settle (polling, no fixed sleep that only
holds on an idle machine). A worker that never retired anything fails at the first
checkpoint ("day 40: 420 orders documents with a state on the changelog, replay keeps 133").

Known gap, reported as XFAIL at the end (once every other check passed): retired sessions'
documents are not tombstoned on the workers (see the comment there).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from datetime import date, datetime, timedelta

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from broker_helpers import (
    P,
    _compare,
    _final_scores,
    _produce,
    _read,
    _records,
    _start,
    _tick,
    _wait_drained,
    _wait_shops_caught_up,
    _workers,
    shopwatch_cmd,
)

from shopwatch.agents.replay import load_rules, replay_lines
from shopwatch.agents.simulator import generate
from shopwatch.streams.replay_engine import ORDER, SESSION, Engine

pytestmark = [pytest.mark.broker, pytest.mark.timeout(600)]

RULES = {"retention_days": 7}
START = date(2026, 3, 1)  # a past date: no event is in the future of the wall clock
DAYS = 130
UNTIL = f"{START + timedelta(days=DAYS)}T00:00:00+08:00"  # the midnight ending the last day
CHECKPOINTS = (40, 80, 120)  # days after START at which the live documents are counted
SIM = {"seed": 13, "shops": 5, "days": DAYS, "start": START, "orders_per_shop_day": 1.0, "chats_per_order": 0.3}
PLATEAU = 1.5  # hi <= PLATEAU * lo over the checkpoints
SETTLE_S = 120  # how long a measure may wait for the changelogs to settle


def _slack(n: int) -> int:
    """Sessions the workers may hold beyond replay's ``n``: a chat partition runs the sweep
    of a midnight only at its first record after it (chat partitions get no ticks), replay
    at the first record of any session after it, and at its end."""
    return 5 + n // 10


def _us(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1_000_000)


class Changelog:
    """The last record of every key of a table's changelog, read up to the end offsets on
    each ``update()`` (from where the previous one stopped)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.last: dict[str, dict | None] = {}
        self.records = 0
        self.tombstones = 0  # records with no value
        self._pos: dict[TopicPartition, int] = {}

    async def _update(self, timeout: float) -> None:
        c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
        await c.start()
        try:
            assert self.topic in await c.topics(), f"no topic {self.topic} (the workers' table changelog)"
            tps = [TopicPartition(self.topic, p) for p in range(P)]
            c.assign(tps)
            for tp in tps:
                if tp in self._pos:
                    c.seek(tp, self._pos[tp])
                else:
                    await c.seek_to_beginning(tp)
            ends = await c.end_offsets(tps)
            todo = {tp for tp in tps if await c.position(tp) < ends[tp]}
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while todo:
                assert loop.time() < deadline, f"{self.topic}: not read to its end within {timeout}s"
                batch = await c.getmany(*todo, timeout_ms=500)
                for msgs in batch.values():
                    for m in msgs:
                        self.records += 1
                        if m.value is None:
                            self.tombstones += 1
                            self.last[m.key.decode()] = None
                        else:
                            self.last[m.key.decode()] = orjson.loads(m.value)
                for tp in list(todo):
                    if await c.position(tp) >= ends[tp]:
                        todo.discard(tp)
            for tp in tps:
                self._pos[tp] = await c.position(tp)
        finally:
            await c.stop()

    def update(self, timeout: float = 60.0) -> Changelog:
        asyncio.run(self._update(timeout))
        return self

    def live(self, prefix: str = "") -> set[str]:
        """Keys whose last record is a document (not a tombstone)."""
        return {k for k, v in self.last.items() if v is not None and k.startswith(prefix)}

    def with_state(self) -> set[str]:
        """Keys whose last document holds an entity's state (an order's or session's ``s``)."""
        return {k for k, v in self.last.items() if v is not None and v.get("s") is not None}

    def written(self, prefix: str = "") -> set[str]:
        return {k for k in self.last if k.startswith(prefix)}


def _settle(logs: list[Changelog], problem, what: str, timeout: float = SETTLE_S) -> None:
    """Read the changelogs until ``problem()`` is None (or fail with its last answer)."""
    deadline = time.monotonic() + timeout
    while True:
        for log in logs:
            log.update()
        why = problem()
        if why is None:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: the changelogs did not settle within {timeout}s: {why}")
        time.sleep(1)


def _entities(log: Changelog, keep: set[str], tombstoned: bool = True):
    """None once every entity replay holds has its state on the changelog and (``tombstoned``)
    every other key's last record is a tombstone (no retired entity's document left)."""
    live, st = log.live(), log.with_state()
    missing, stateless = keep - st, (live - st if tombstoned else set())
    if missing or stateless:
        return (f"{log.topic}: {len(missing)} of replay's {len(keep)} entities without their state "
                f"(e.g. {sorted(missing)[:3]}), {len(stateless)} documents without a state, not tombstoned "
                f"(e.g. {sorted(stateless)[:3]}: {[log.last[k] for k in sorted(stateless)[:1]]})")
    return None


def _bounded(what: str, at: str, log: Changelog, keep: set[str], run: dict) -> None:
    """The entities whose state is on the changelog are replay's, plus a small slack."""
    st = log.with_state()
    extra = st - keep
    assert len(extra) <= _slack(len(keep)), (
        f"{at}: {len(st)} {what} documents with a state on the changelog, replay keeps {len(keep)} "
        f"(of {len(run[what])} in the run): {len(extra)} more, e.g. {sorted(extra)[:3]} -- not retired "
        f"on the workers?")


@pytest.fixture
def long_run(tmp_path):
    """The simulated lines, cut into the slices fed one after another; replay of the whole
    (the CLI: alerts, scores) and the engine's state after each slice and at the end."""
    rules_path = tmp_path / "rules.json"
    rules_path.write_text(json.dumps(RULES))
    events = list(generate(**SIM))
    lines = [orjson.dumps(ev) for ev in events]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    cuts = [sum(1 for ev in events if datetime.fromisoformat(ev["ts"]).date() < START + timedelta(days=d))
            for d in CHECKPOINTS]
    slices = [lines[a:b] for a, b in zip([0, *cuts], [*cuts, len(lines)], strict=True)]

    a, s = tmp_path / "r-alerts.jsonl", tmp_path / "r-scores.json"
    subprocess.run(shopwatch_cmd("replay", str(path), "--until", UNTIL, "--rules", str(rules_path),
                                 "--alerts-out", str(a), "--scores-out", str(s)), check=True, capture_output=True)
    alerts = [orjson.loads(x) for x in a.read_bytes().splitlines() if x.strip()]
    scores = {(x["platform"], x["shop_id"]): x["indicators"] for x in orjson.loads(s.read_bytes())}

    engine = Engine(load_rules(str(rules_path)), _us(UNTIL))
    kept = []  # (orders, sessions) replay holds after each checkpoint's slice
    for sl in slices[:-1]:
        assert replay_lines(sl, engine) == 0
        kept.append((set(engine.states[ORDER]), set(engine.states[SESSION])))
    assert replay_lines(slices[-1], engine) == 0
    engine.finish(_us(UNTIL))
    final = (set(engine.states[ORDER]), set(engine.states[SESSION]))
    assert len(engine.alerts) == len(alerts), "the engine here is not the CLI's replay"
    return {"rules": rules_path, "lines": lines, "slices": slices, "alerts": alerts, "scores": scores,
            "kept": kept, "final": final, "retired": dict(engine.retired),
            "orders": {ev["order_id"] for ev in events if not ev["type"].startswith("chat.")},
            "sessions": {ev["session_id"] for ev in events if ev["type"].startswith("chat.")}}


def test_months_of_traffic_keep_state_bounded(kafka_bootstrap, shopwatch_env, topic_prefix, tmp_path, long_run):
    run = long_run
    r_alerts, r_scores, (f_orders, f_sessions) = run["alerts"], run["scores"], run["final"]
    # replay retires on its side too: most orders and sessions are gone by the end
    assert run["retired"][ORDER] > 0.8 * len(run["orders"]), run["retired"]
    assert run["retired"][SESSION] > 0.8 * len(run["sessions"]), run["retired"]
    assert len(f_orders) < 0.2 * len(run["orders"])
    assert {p for p, _s in r_scores} == {"xiaohongshu", "douyin", "kuaishou", "jd", "tmall"}
    assert len(r_alerts) > 100

    envs = _workers({**shopwatch_env, "SHOPWATCH_RULES": str(run["rules"])}, tmp_path)
    app_id = envs[0]["SHOPWATCH_APP_ID"]  # Faust names a table's changelog <app id>-<table>-changelog
    orders = Changelog(kafka_bootstrap, f"{app_id}-orders-changelog")
    sessions = Changelog(kafka_bootstrap, f"{app_id}-sessions-changelog")
    shops = Changelog(kafka_bootstrap, f"{app_id}-shops-changelog")
    workers = _start(envs, tmp_path)
    plateau = []
    leftover = []  # retired sessions' documents not tombstoned, at each checkpoint (see below)
    try:
        for day, sl, (r_orders, r_sessions) in zip(CHECKPOINTS, run["slices"], run["kept"], strict=False):
            asyncio.run(_produce(kafka_bootstrap, _records(sl, topic_prefix)))
            _wait_drained(envs[0], topic_prefix)
            _settle([orders, sessions], lambda ro=r_orders, rs=r_sessions: _entities(orders, ro)
                    or _entities(sessions, rs, tombstoned=False), f"day {day}")
            live_o = orders.live()
            leftover.append(len(sessions.live() - sessions.with_state()))
            print(f"day {day}: live orders {len(live_o)} (replay {len(r_orders)}) of {len(orders.written())} "
                  f"written, {orders.tombstones} tombstones; sessions with a state "
                  f"{len(sessions.with_state())} (replay {len(r_sessions)}), {leftover[-1]} documents of "
                  f"retired ones, of {len(sessions.written())} written")
            # every order partition had records after the day's midnight, so it ran the same
            # sweeps as replay: exactly replay's orders, each retired one's key tombstoned
            assert live_o == orders.with_state()  # (settled)
            _bounded("orders", f"day {day}", orders, r_orders, run)
            assert live_o == r_orders, (f"day {day}: extra {sorted(live_o - r_orders)[:3]}, "
                                        f"missing {sorted(r_orders - live_o)[:3]}")
            _bounded("sessions", f"day {day}", sessions, r_sessions, run)
            plateau.append(len(live_o))
        assert len(plateau) == len(CHECKPOINTS)
        assert max(plateau) <= PLATEAU * min(plateau), f"live orders at days {CHECKPOINTS}: {plateau}"

        asyncio.run(_produce(kafka_bootstrap, _records(run["slices"][-1], topic_prefix)))
        _wait_drained(envs[0], topic_prefix)
        _tick(envs[0], UNTIL)
        _wait_shops_caught_up(envs[0], topic_prefix)

        # (1) the alerts and final scores of replay with the same rules
        scores_msgs = asyncio.run(_read(kafka_bootstrap, topic_prefix + "shop.scores",
                                        until=lambda g: len(_final_scores(g, r_scores, UNTIL)) >= len(r_scores)))
        k_alerts = asyncio.run(_read(kafka_bootstrap, topic_prefix + "shop.alerts"))
        k, r = _compare(k_alerts, r_alerts)
        assert sum(k.values()) == sum(r.values()), "an alert change was emitted twice"
        assert _final_scores(scores_msgs, r_scores, UNTIL) == r_scores

        # (2) bounded state: exactly replay's orders live on, every other key ends in a
        # tombstone, and so do the shops' entity records of every retired entity
        def rec_problem():
            alive = {f"orders/{o}" for o in orders.with_state()} | {f"chats/{s}" for s in sessions.with_state()}
            stale = {k[len("rec/"):] for k in shops.live("rec/")} - alive
            if stale:
                return f"{len(stale)} entity records of retired entities not tombstoned, e.g. {sorted(stale)[:3]}"
            return None

        _settle([orders, sessions, shops], lambda: _entities(orders, f_orders)
                or _entities(sessions, f_sessions, tombstoned=False) or rec_problem(), "the end")
        live, written = orders.live(), orders.written()
        print(f"end: orders changelog {orders.records} records, {len(written)} keys written, {len(live)} live "
              f"(replay keeps {len(f_orders)}), {orders.tombstones} tombstones; replay retired {run['retired']}")
        assert written == run["orders"], "not every order of the run was written"
        assert live == f_orders, (f"{len(live)} live order documents, replay keeps {len(f_orders)}: "
                                  f"extra {sorted(live - f_orders)[:3]}, missing {sorted(f_orders - live)[:3]}")
        # every retired order's key ends in a tombstone (a retirement and the rebirth of the
        # same order in one step, an event past its retention, leaves no tombstone between them)
        assert orders.tombstones >= len(written - live) > 0.8 * run["retired"][ORDER]
        assert len(live) * 5 < len(written)
        assert sessions.written() == run["sessions"]
        _bounded("sessions", "the end", sessions, f_sessions, run)
        recs, live_recs = shops.written("rec/"), shops.live("rec/")
        print(f"end: shops changelog {len(recs)} entity records written, {len(live_recs)} live; sessions "
              f"changelog {len(sessions.with_state())} with a state (replay keeps {len(f_sessions)}), "
              f"{len(sessions.live() - sessions.with_state())} documents of retired ones, "
              f"{sessions.tombstones} tombstones")
        assert len(recs) - len(live_recs) > 0.8 * (run["retired"][ORDER] + run["retired"][SESSION])
        assert len(live_recs) * 5 < len(recs)

        # chat partitions retire on ticks too: a retired session's document goes once its notice
        # is committed, and `shopwatch tick --until` runs the sweeps due by then, as replay's end
        s_live, s_state = sessions.live(), sessions.with_state()
        assert s_live == s_state, (f"retired sessions' documents not tombstoned: {leftover} at days {CHECKPOINTS}, "
                                   f"{len(s_live - s_state)} at the end")
        assert s_state == f_sessions, (len(s_state), len(f_sessions))
    finally:
        for w in workers:
            w.stop()
