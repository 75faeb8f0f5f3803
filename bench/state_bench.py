"""State figures (issue 13): bytes and memory per order, and the restore time of a worker.

usage: python bench/state_bench.py [--seed S] [--shops N] [--days D] [--retention-days R]
           [--partitions P] [--commit-every K] [--docs M] [--bootstrap HOST:PORT]
           [--steps state,restore] [--ready-timeout S] [--profile FILE] [--keep]

1. State (no broker). A simulated run (agents/simulator/ ``generate``) goes through
   the worker's partitions, as the Faust agents drive them: a ``KeyedPartition`` per
   order and chat partition and a ``ShopPartition`` per contributions partition
   (streams/partition.py), with the rules ``{"retention_days": R}`` (default 7, so
   orders retire within the run). Their tables are real RocksDB databases opened with
   the worker's options (agents/topology.py ``ROCKSDB_OPTIONS`` through Faust's
   ``RocksDBOptions``, one database per partition, keys the key bytes, values the JSON
   documents as Faust's json codec writes them), written back every K input records
   (the write-back at each commit), after which everything processed counts as
   committed. At the end of the input every live order document is classed *open*
   (not signed or cancelled, or a deadline, alert or refund still pending) or
   *finished, not retired*; then the clock moves 60 days on (a tick) and every order
   retires: its document becomes a tombstone and its shop's entity record
   (``rec/orders/<id>`` in the shops table) goes.

   Per order of each class: key+value bytes of its document and of its shop's entity
   record; RocksDB bytes (the class's documents alone written to fresh databases,
   flushed and compacted: SST bytes per order; a retired order: its document written,
   then deleted, SST bytes after the flush, tombstones included, and after a full
   compaction); memory (in a fresh child process, by ``tracemalloc`` and by RSS before
   and after): a ``KeyedPartition.recover`` of the class's documents (what a worker
   keeps per order after a restore: timers, retirement calendar; states stay on disk)
   and then the states themselves (``OrderState.restore``, what the partition caches for
   an order it touched). Beside them the whole run's figures: the tables' SST bytes,
   the partitions' heap (a deep ``sys.getsizeof`` walk), the changelog records written
   per order over its life, at the end of the input and after retirement, and replay's
   own ``Engine`` state before and after retirement.

2. Restore (the local broker). M order documents (default 200,000; the issue's 1M
   with ``--docs 1000000``), clones of the live documents of part 1 with fresh order
   ids, are produced to the orders changelog of a fresh app id (its name and config
   from the worker's own ``build_app``/``Topology``: ``<app id>-orders-changelog``,
   compacted, P partitions), each to the partition of its key as the worker writes
   them (key = the order id bytes, value = the JSON document, lz4 batches). Then
   (a) a raw read of the whole topic in a child process (aiokafka, consume to the end,
   ``orjson.loads`` each value), and (b) a real ``shopwatch worker`` on that app id with
   an empty data directory, timed from its start until ``GET /readyz`` answers 200 (the
   restore), beside the same worker on an app id whose changelogs are empty (its fixed
   start-up: group join, topic creation, leader election) and the phases of Faust's
   recovery from the worker's log. Printed: both times, the docs/s and the ratio
   raw/restore (the issue's aim: >= 0.5). After the worker stops, the documents in
   its RocksDB databases are counted. ``--profile FILE`` records the restoring worker
   with py-spy (on the PATH, beside the interpreter or in /tmp/py-spy/bin), idle threads
   included, into FILE: collapsed stacks for ``.txt``, a flame graph for ``.svg``, else
   speedscope JSON.

Prints progress on stderr and the table on stdout. A benchmark, not a test: ratios
and figures are printed, nothing is asserted. The topics (one unique prefix), the
worker processes and the temporary directory are removed at the end, also on
Ctrl-C or SIGTERM (``--keep`` keeps the topics and the directory).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from datetime import datetime
from pathlib import Path

import orjson
from _common import (  # bench/ is on sys.path when a bench runs
    BenchError,
    Proc,
    begin,
    cpu_s,
    create_topics,
    delete_topics,
    free_port,
    loadavg,
    machine,
    not_loopback,
    rss_bytes,
    say,
    set_label,
    stop_all,
)

set_label("state-bench")
HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
DAY_US = 86_400_000_000
ORDER_SOURCES = ("shop.orders", "shop.shipments", "shop.refunds")
TICKS = "shop.ticks"
CHATS = "shop.chats"
# Faust's json codec (faust.utils.json.dumps with orjson installed): what the tables store
JSON_OPT = orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z
OPEN, FINISHED, RETIRED = "open", "finished, not retired", "retired"


def encode(doc) -> bytes:
    return orjson.dumps(doc, option=JSON_OPT)


# ---------------------------------------------------------------- machine


def dir_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(dirpath, name))
    return total


def deep_size(roots, skip=()) -> int:
    """Bytes of the Python objects reachable from ``roots`` (sys.getsizeof of each object once;
    containers, instance dicts and __slots__ followed; functions, types, modules and ``skip``
    not)."""
    import types

    opaque = (type, types.ModuleType, types.FunctionType, types.MethodType, types.BuiltinFunctionType)
    seen = {id(x) for x in skip}
    stack = list(roots)
    total = 0
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, opaque) or callable(o) and not isinstance(o, (dict, list, set)):
            continue
        total += sys.getsizeof(o)
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset, deque)):
            stack.extend(o)
        elif not isinstance(o, (str, bytes, int, float, bool)) and o is not None:
            d = getattr(o, "__dict__", None)
            if d is not None:
                stack.append(d)
            for cls in type(o).__mro__:
                for s in getattr(cls, "__slots__", ()):
                    v = getattr(o, s, None)
                    if v is not None:
                        stack.append(v)
    return total


# ---------------------------------------------------------------- tables

def part_of(key: bytes, n: int) -> int:
    """The partition the producer's default partitioner (murmur2) gives ``key``."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % n


class RocksPart:
    """One partition's database seen as the partitions see a table (str key -> document)."""

    def __init__(self, db) -> None:
        self.db = db

    def get(self, key: str, default=None):
        v = self.db.get(key.encode())
        return default if v is None else orjson.loads(v)


class RocksTable:
    """A table as the worker's Faust store keeps it: one RocksDB database per partition
    (``<name>-<p>.db``), opened with agents/topology.py ``ROCKSDB_OPTIONS`` through Faust's
    ``RocksDBOptions``; keys the key bytes, values the JSON documents. Counts what a write
    sends to the changelog (records, key+value bytes)."""

    def __init__(self, path: Path, name: str, partitions: int) -> None:
        from faust.stores.rocksdb import RocksDBOptions

        from shopwatch.agents.topology import ROCKSDB_OPTIONS

        opts = RocksDBOptions(**{k: v for k, v in ROCKSDB_OPTIONS.items() if k != "driver"}, use_rocksdict=True)
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.dbs = [opts.open(path / f"{name}-{p}.db") for p in range(partitions)]
        self.parts = [RocksPart(db) for db in self.dbs]
        self.records = 0
        self.bytes = 0
        self.tombstones = 0

    def write(self, p: int, writes) -> None:
        db = self.dbs[p]
        for key, doc in writes:
            k = key.encode()
            self.records += 1
            if doc is None:
                db.delete(k)
                self.tombstones += 1
                self.bytes += len(k)
            else:
                v = encode(doc)
                db.put(k, v)
                self.bytes += len(k) + len(v)

    def put_raw(self, key: bytes, value: bytes | None) -> None:
        db = self.dbs[part_of(key, len(self.dbs))]
        if value is None:
            db.delete(key)
        else:
            db.put(key, value)

    def items(self, p: int):
        for k, v in self.dbs[p].items():
            yield k.decode(), v

    def flush(self) -> None:
        for db in self.dbs:
            db.flush()

    def compact(self) -> None:
        for db in self.dbs:
            db.compact_range(None, None)

    def sst(self) -> int:
        return sum(db.property_int_value("rocksdb.total-sst-files-size") or 0 for db in self.dbs)

    def keys(self) -> int:
        return sum(1 for db in self.dbs for _ in db.keys())

    def close(self) -> None:
        for db in self.dbs:
            with contextlib.suppress(Exception):
                db.close()
        self.dbs = []


# ------------------------------------------------------------ 1. state

def order_class(logic, st) -> str:
    """OPEN or FINISHED: finished = signed or cancelled, no deadline wanted, no alert firing,
    every refund ended (waiting only for its retirement)."""
    if st.signed_us is None and st.cancelled_us is None:
        return OPEN
    if st.open or logic.timers(st):
        return OPEN
    if any(r.end_us is None for r in st.refunds.values()):
        return OPEN
    return FINISHED


class Run:
    """The simulated run through the worker's partitions (see the module docstring)."""

    def __init__(self, args, tmp: Path) -> None:
        from shopwatch.streams.clock import EVENT
        from shopwatch.streams.orders import OrderLogic
        from shopwatch.streams.partition import KeyedPartition, ShopPartition
        from shopwatch.streams.rules import Rules
        from shopwatch.streams.sessions import SessionLogic
        from shopwatch.streams.shop import ShopLogic

        self.args = args
        P = self.P = args.partitions
        self.rules = Rules({"retention_days": args.retention_days})
        self.order_logic = OrderLogic(self.rules)
        self.session_logic = SessionLogic(self.rules)
        self.shop_logic = ShopLogic(self.rules)
        self.orders_t = RocksTable(tmp / "run", "orders", P)
        self.sessions_t = RocksTable(tmp / "run", "sessions", P)
        self.shops_t = RocksTable(tmp / "run", "shops", P)
        self.next_off: dict = {}
        self.committed: dict = {}
        self.streams = [f"{k}:{p}" for k in ("orders", "chats") for p in range(P)]
        self.idle_streams = frozenset(self.streams)
        self.idle_orders = frozenset(ORDER_SOURCES)

        def committed_of(p):
            return lambda src: self.committed.get((src, p))

        def shop_committed(p):
            return lambda: self.committed.get(("contribs", p))

        self.order_parts = [KeyedPartition(self.order_logic, p, list(ORDER_SOURCES), EVENT,
                                           key_of=lambda ev: ev["order_id"], kind="orders",
                                           committed=committed_of(p), docs=self.orders_t.parts[p])
                            for p in range(P)]
        self.chat_parts = [KeyedPartition(self.session_logic, p, [CHATS], EVENT,
                                          key_of=lambda ev: ev["session_id"], kind="chats",
                                          committed=committed_of(p), docs=self.sessions_t.parts[p])
                           for p in range(P)]
        self.shop_parts = [ShopPartition(self.shop_logic, EVENT, self.streams, partition=p,
                                         committed=shop_committed(p), docs=self.shops_t.parts[p])
                           for p in range(P)]

    def _off(self, src: str, p: int) -> int:
        k = (src, p)
        o = self.next_off.get(k, 0)
        self.next_off[k] = o + 1
        return o

    def _route(self, updates, stream: str) -> None:
        for u in updates:
            p = part_of(u["shop"].encode(), self.P)
            self.shop_parts[p].on_update({**u, "stream": stream}, self._off("contribs", p), idle=self.idle_streams)

    def feed(self, ev: dict, topic: str) -> None:
        if topic == CHATS:
            key, parts, kind, idle = ev["session_id"], self.chat_parts, "chats", frozenset((CHATS,))
        else:
            key, parts, kind, idle = ev["order_id"], self.order_parts, "orders", self.idle_orders
        p = part_of(key.encode(), self.P)
        out = parts[p].on_record(topic, self._off(topic, p), ev, idle=idle)
        self._route(out.updates, f"{kind}:{p}")

    def tick(self, now_us: int | None, flush: bool) -> None:
        for parts, kind in ((self.order_parts, "orders"), (self.chat_parts, "chats")):
            for kp in parts:
                out = kp.on_tick(TICKS, self._off(TICKS, kp.partition), now_us, flush=flush)
                self._route(out.updates, f"{kind}:{kp.partition}")
        for sp in self.shop_parts:
            sp.on_tick(self._off("contribs", sp.partition), now_us, True, flush=flush)

    def write_back(self) -> None:
        """The write-back at a commit, then the commit: everything processed so far is committed."""
        for kp in self.order_parts:
            self.orders_t.write(kp.partition, kp.drain())
            kp.trim()
        for kp in self.chat_parts:
            self.sessions_t.write(kp.partition, kp.drain())
            kp.trim()
        for sp in self.shop_parts:
            self.shops_t.write(sp.partition, sp.drain())
            sp.trim()
        self.committed.update(self.next_off)

    def heap(self) -> dict:
        """Deep size of what the partitions keep in memory: {"keyed": order and chat partitions
        (states cached, timers, calendars, queues, outboxes), "shops": shop partitions}."""
        skip = [self.order_logic, self.session_logic, self.shop_logic, self.rules]
        keyed, shops = [], []
        for kp in self.order_parts + self.chat_parts:
            skip += [kp.retention, kp.states.docs]
            keyed += [kp.states.cache, kp.states.gone, kp.pending, kp.outbox, kp.merger, kp.timers, kp.calendar,
                      kp.dirty, kp._gone_boxes]
        for sp in self.shop_parts:
            skip.append(sp.docs)
            shops += [sp.states, sp.gen, sp.queued, sp.outbox, sp.timers, sp.merger, sp.retired_recs,
                      sp._w_recs, sp._w_pend, sp._w_del, sp._w_shops, sp._w_rdel]
        return {"keyed": deep_size(keyed, skip), "shops": deep_size(shops, skip)}

    def live_docs(self):
        """{class: [(key, raw value)]} of the orders table; sessions apart."""
        from shopwatch.streams.orders import OrderState

        out: dict[str, list] = {OPEN: [], FINISHED: [], "no state": []}
        for p in range(self.P):
            for key, raw in self.orders_t.items(p):
                doc = orjson.loads(raw)
                if doc.get("s") is None:
                    out["no state"].append((key, raw))
                else:
                    out[order_class(self.order_logic, OrderState.restore(doc["s"]))].append((key, raw))
        return out

    def close(self) -> None:
        for t in (self.orders_t, self.sessions_t, self.shops_t):
            t.close()


def rocks_per_doc(path: Path, docs, partitions: int, delete: bool = False) -> dict:
    """SST bytes of ``docs`` ((key, raw value)) alone in fresh databases (the worker's options),
    flushed and compacted; with ``delete`` written, flushed, then deleted (tombstones)."""
    t = RocksTable(path, "orders", partitions)
    try:
        for key, raw in docs:
            t.put_raw(key.encode(), raw)
        t.flush()
        out = {"put_flushed": t.sst()}
        t.compact()
        out["put_compacted"] = t.sst()
        if delete:
            for key, _raw in docs:
                t.put_raw(key.encode(), None)
            t.flush()
            out["deleted_flushed"] = t.sst()
            t.compact()
            out["deleted_compacted"] = t.sst()
        t.close()
        out["dir"] = dir_bytes(path)
        return out
    finally:
        t.close()
        shutil.rmtree(path, ignore_errors=True)


def memory_child(path: str, retention_days: float) -> int:
    """(--_memory) Per order of the documents in ``path`` (JSON lines [key, doc]): the heap and
    RSS a KeyedPartition's recover() of them keeps, then the states restored and held."""
    import tracemalloc

    from shopwatch.streams.clock import EVENT
    from shopwatch.streams.orders import OrderLogic, OrderState
    from shopwatch.streams.partition import KeyedPartition
    from shopwatch.streams.rules import Rules

    docs = [tuple(orjson.loads(line)) for line in open(path, "rb")]
    logic = OrderLogic(Rules({"retention_days": retention_days}))

    def part():
        # a worker's partition after the restore: every cause committed, states on disk (DocStates)
        return KeyedPartition(logic, 0, list(ORDER_SOURCES), EVENT, key_of=lambda ev: ev["order_id"], kind="orders",
                              committed=lambda src: 1 << 62, docs={})

    warm = part()  # imports, interned strings, the logic's caches
    warm.recover(docs[:50])
    [OrderState.restore(d["s"]) for _k, d in docs[:50] if d.get("s") is not None]
    del warm
    gc.collect()
    r0 = rss_bytes()
    kp = part()
    c0 = time.process_time()
    kp.recover(docs)
    recover_cpu = time.process_time() - c0
    gc.collect()
    r1 = rss_bytes()
    states = [OrderState.restore(d["s"]) for _k, d in docs if d.get("s") is not None]
    gc.collect()
    r2 = rss_bytes()
    tracemalloc.start()
    kp2 = part()
    kp2.recover(docs)
    h1 = tracemalloc.get_traced_memory()[0]
    states2 = [OrderState.restore(d["s"]) for _k, d in docs if d.get("s") is not None]
    h2 = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(json.dumps({"n": len(docs), "states": len(states), "rss_part": r1 - r0, "rss_state": r2 - r1,
                      "heap_part": h1, "heap_state": h2 - h1, "timers": len(kp.timers),
                      "calendar": len(kp.calendar), "recover_cpu": recover_cpu, "_keep": len(states2) + len(kp2.timers)}))
    return 0


def measure_memory(tmp: Path, name: str, docs, retention_days: float) -> dict:
    path = tmp / f"mem-{re.sub(r'[^a-z]+', '-', name)}.jsonl"
    with open(path, "wb") as f:
        for key, raw in docs:
            f.write(b'["' + key.encode() + b'",' + raw + b"]\n")
    r = subprocess.run([sys.executable, str(HERE), "--_memory", str(path), "--retention-days", str(retention_days)],
                       capture_output=True, timeout=600, cwd=ROOT)
    path.unlink(missing_ok=True)
    if r.returncode != 0:
        raise BenchError(f"memory child failed: {r.stderr.decode(errors='replace')[-400:]}")
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


def engine_figures(events, rules, until_us: int) -> dict:
    """Replay's Engine over the same events: states and heap at the end of the input and after
    its clock moved to ``until_us`` (finish)."""
    from shopwatch.streams.replay_engine import ORDER, SESSION, SHOP, Engine

    eng = Engine(rules)
    w0 = time.perf_counter()
    for ev in events:
        eng.process(dict(ev))
    wall = time.perf_counter() - w0

    def figs():
        skip = [*eng.logic.values(), eng.rules, eng.retention]
        return {"orders": len(eng.states[ORDER]), "sessions": len(eng.states[SESSION]),
                "shops": len(eng.states[SHOP]), "timers": len(eng.timers), "calendar": len(eng.calendar),
                "heap": deep_size([eng.states, eng.timers, eng.calendar, eng._shop_tkeys], skip),
                "order_heap": deep_size([eng.states[ORDER]], skip)}

    before = figs()
    eng.finish(until_us)
    after = figs()
    return {"before": before, "after": after, "retired": dict(eng.retired), "wall": wall}


def state_part(args, tmp: Path, res: dict) -> list:
    """Part 1; returns the live order documents at the end of the input (templates for part 2)."""
    from shopwatch.agents.simulator import generate
    from shopwatch.schemas.events import TOPIC_OF_TYPE, validate
    from shopwatch.streams.clock import fmt_ts

    say(f"simulating {args.shops} shops x {args.days} days (seed {args.seed})")
    events = [validate(e) for e in generate(args.seed, shops=args.shops, days=args.days)]
    orders = {e["order_id"] for e in events if "order_id" in e}
    sessions = {e["session_id"] for e in events if "session_id" in e}
    res["run"] = {"events": len(events), "orders": len(orders), "sessions": len(sessions),
                  "first": events[0]["ts"], "last": events[-1]["ts"]}
    say(f"{len(events):,} events, {len(orders):,} orders, {len(sessions):,} chat sessions: through the partitions")
    run = Run(args, tmp)
    try:
        w0 = time.perf_counter()
        for i, ev in enumerate(events, 1):
            run.feed(ev, TOPIC_OF_TYPE[ev["type"]])
            if i % args.commit_every == 0:
                run.write_back()
        run.write_back()
        res["run"]["wall"] = time.perf_counter() - w0
        end_us = events[-1]["ts_us"]

        # ---- at the end of the input
        say("end of input: classing the live documents")
        live = run.live_docs()
        cls_docs = {c: v for c, v in live.items()}
        recs = {}
        for c in (OPEN, FINISHED):
            b = n = 0
            for key, _raw in cls_docs[c]:
                rk = f"rec/orders/{key}"  # in the shops table, on the partition of its shop
                for db in run.shops_t.dbs:
                    raw = db.get(rk.encode())
                    if raw is not None:
                        b += len(rk) + len(raw)
                        n += 1
                        break
            recs[c] = (n, b)
        sess_n = sess_b = 0
        for p in range(run.P):
            for key, raw in run.sessions_t.items(p):
                sess_n += 1
                sess_b += len(key.encode()) + len(raw)
        run.orders_t.flush()
        run.orders_t.compact()
        run.sessions_t.flush()
        run.sessions_t.compact()
        run.shops_t.flush()
        run.shops_t.compact()
        retired_so_far = sum(kp.retired for kp in run.order_parts)
        live_entities = sum(len(v) for v in live.values()) + sess_n
        res["end"] = {
            "clock": fmt_ts(end_us), "classes": {c: len(v) for c, v in live.items()}, "retired": retired_so_far,
            "sessions": (sess_n, sess_b), "recs": recs,
            "orders_sst": run.orders_t.sst(), "sessions_sst": run.sessions_t.sst(), "shops_sst": run.shops_t.sst(),
            "shops_keys": run.shops_t.keys(), "heap": run.heap(), "rss": rss_bytes(),
            "live_entities": live_entities,
            "cl_records": run.orders_t.records, "cl_bytes": run.orders_t.bytes,
            "cached_states": sum(len(kp.states.cache) for kp in run.order_parts),
        }

        # ---- retirement: the clock moves on, every order retires and its document goes
        until = end_us + args.retire_after_days * DAY_US
        say(f"retirement: tick to {fmt_ts(until)}")
        run.tick(until, flush=True)
        run.write_back()  # retired documents keep their notice in the outbox until it is committed
        run.tick(None, flush=False)  # committed now: the outboxes go, the documents become tombstones
        run.write_back()
        run.write_back()  # the shops drop the records whose notice's offset is committed
        after_live = run.live_docs()
        sst_tomb = []
        for t in (run.orders_t, run.sessions_t, run.shops_t):
            t.flush()
            sst_tomb.append(t.sst())
            t.compact()
        res["after"] = {
            "clock": fmt_ts(until), "classes": {c: len(v) for c, v in after_live.items()},
            "retired": sum(kp.retired for kp in run.order_parts),
            "s_retired": sum(kp.retired for kp in run.chat_parts),
            "sessions_left": run.sessions_t.keys(), "shops_keys": run.shops_t.keys(),
            "recs_left": sum(1 for db in run.shops_t.dbs for k in db.keys() if k.startswith(b"rec/")),
            "orders_sst_tomb": sst_tomb[0], "orders_sst": run.orders_t.sst(),
            "sessions_sst": run.sessions_t.sst(), "shops_sst": run.shops_t.sst(), "heap": run.heap(),
            "cl_records": run.orders_t.records, "cl_bytes": run.orders_t.bytes, "tombstones": run.orders_t.tombstones,
        }
    finally:
        run.close()
    shutil.rmtree(tmp / "run", ignore_errors=True)

    # ---- per order of each class
    per = {}
    for c in (OPEN, FINISHED):
        docs = cls_docs[c]
        if not docs:
            continue
        say(f"{c}: {len(docs):,} documents: RocksDB alone, then memory in a child process")
        b = sum(len(k.encode()) + len(v) for k, v in docs)
        rocks = rocks_per_doc(tmp / "rocks", docs, args.partitions, delete=(c == FINISHED))
        try:
            mem = measure_memory(tmp, c, docs, args.retention_days)
        except (BenchError, subprocess.SubprocessError, ValueError) as exc:
            res.setdefault("notes", []).append(f"memory of {c}: {exc}")
            mem = None
        per[c] = {"n": len(docs), "bytes": b, "rocks": rocks, "mem": mem,
                  "key_len": sum(len(k.encode()) for k, _v in docs) / len(docs)}
    res["per"] = per

    say("replay's Engine over the same events")
    res["engine"] = engine_figures(events, rules_of(args), until)
    return cls_docs[OPEN] + cls_docs[FINISHED]


def rules_of(args):
    from shopwatch.streams.rules import Rules

    return Rules({"retention_days": args.retention_days})


# ------------------------------------------------------------ 2. restore


def clone_docs(templates, m: int, partitions: int):
    """``m`` (partition, key bytes, value bytes): the template documents again and again, each
    with a fresh order id of the same length (o<8 digits>-<platform>), in the partition of its
    key, its ``p`` that partition."""
    tpl = []
    for key, raw in templates:
        doc = orjson.loads(raw)
        rest = encode({k: v for k, v in doc.items() if k != "p"})
        if rest == b"{}":
            continue
        suffix = key.rsplit("-", 1)[-1] if "-" in key else "xx"
        tpl.append((key.encode(), rest[1:], suffix))
    if not tpl:
        raise BenchError("no template documents")
    for i in range(m):
        old, body, suffix = tpl[i % len(tpl)]
        new = f"o{i:08d}-{suffix}".encode()
        p = part_of(new, partitions)
        yield p, new, b'{"p":%d,' % p + body.replace(old, new)


async def produce_docs(bootstrap: str, topic: str, docs, partitions: int) -> tuple[int, int]:
    """Produce (partition, key, value) records in batches, lz4 as the worker's producer."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.codec import has_lz4

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=10,
                                compression_type="lz4" if has_lz4() else "gzip", max_batch_size=256 * 1024,
                                request_timeout_ms=120_000)
    await producer.start()
    n = nbytes = 0
    try:
        batches = {p: producer.create_batch() for p in range(partitions)}
        futs = []
        for p, k, v in docs:
            n += 1
            nbytes += len(k) + len(v)
            b = batches[p]
            if b.append(key=k, value=v, timestamp=None) is None:
                futs.append(await producer.send_batch(b, topic, partition=p))
                b = batches[p] = producer.create_batch()
                if b.append(key=k, value=v, timestamp=None) is None:
                    raise BenchError("a document larger than a batch")
            if len(futs) > 200:
                await asyncio.gather(*futs)
                futs = []
        for p, b in batches.items():
            if b.record_count():
                futs.append(await producer.send_batch(b, topic, partition=p))
        await asyncio.gather(*futs)
    finally:
        await producer.stop()
    return n, nbytes


async def raw_read(bootstrap: str, topic: str) -> dict:
    """Consume ``topic`` from the beginning to its end offsets, ``orjson.loads`` each value."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    t0 = time.perf_counter()
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest")
    await c.start()
    try:
        parts = c.partitions_for_topic(topic)
        if not parts:
            await c._client.force_metadata_update()
            parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        c.assign(tps)
        ends = await c.end_offsets(tps)
        await c.seek_to_beginning(*tps)
        todo = {tp for tp in tps if ends[tp] > 0}
        t1 = time.perf_counter()
        n = nbytes = 0
        loads = orjson.loads
        while todo:
            batch = await c.getmany(timeout_ms=500)
            for tp, msgs in batch.items():
                for m in msgs:
                    n += 1
                    nbytes += len(m.key or b"") + len(m.value or b"")
                    if m.value is not None:
                        loads(m.value)
                if msgs and msgs[-1].offset + 1 >= ends[tp]:
                    todo.discard(tp)
        t2 = time.perf_counter()
    finally:
        await c.stop()
    return {"n": n, "bytes": nbytes, "read": t2 - t1, "connect": t1 - t0}


def raw_read_child(bootstrap: str, topic: str) -> int:
    """(--_raw-read) A fresh process reading the topic; prints the figures as JSON."""
    r = asyncio.run(raw_read(bootstrap, topic))
    r["cpu"] = time.process_time()
    r["rss"] = rss_bytes()
    print(json.dumps(r))
    return 0


def worker_env(args, app_id: str, prefix: str, data_dir: Path, port: int) -> dict:
    keep = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k in keep or k.startswith("LC_")}
    env.update(KAFKA_BOOTSTRAP=args.bootstrap, SHOPWATCH_APP_ID=app_id, SHOPWATCH_TOPIC_PREFIX=prefix,
               SHOPWATCH_DATA_DIR=str(data_dir), SHOPWATCH_WEB_PORT=str(port), SHOPWATCH_WEB_BIND="127.0.0.1",
               SHOPWATCH_CLOCK="event", SHOPWATCH_PARTITIONS=str(args.partitions), PYTHONUNBUFFERED="1")
    return env


LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] \[\d+\] \[\w+\] \[([^\]]*)\]: (.*)$")
PHASES = (("start", "^Worker", "Starting..."), ("restoring", "", "Restoring state from changelog topics..."),
          ("read", "", "Done reading from changelog topics"), ("recovered", "", "Recovery complete"),
          ("ready", "", "Worker ready"))


def log_phases(path: Path) -> dict:
    """{phase: wall time (epoch s) of its first log line} from a worker's log."""
    out: dict = {}
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            m = LOG_LINE.match(line)
            if not m:
                continue
            for name, who, text in PHASES:
                if name not in out and m.group(3).strip().startswith(text) and (not who or m.group(2) == who):
                    out[name] = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return out


def http_status(port: int, path: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


def find_py_spy() -> str | None:
    cand = [shutil.which("py-spy"), str(Path(sys.executable).parent / "py-spy"), "/tmp/py-spy/bin/py-spy"]
    return next((c for c in cand if c and os.access(c, os.X_OK)), None)


def time_worker(args, tmp: Path, name: str, app_id: str, prefix: str, profile: str | None = None) -> dict:
    """Start a worker with an empty data directory; seconds until /readyz answers 200."""
    data = tmp / f"data-{name}"
    port = free_port()
    w = Proc(f"worker {name}", [sys.executable, "-m", "shopwatch.agents.cli", "worker", "-l", "info"],
             worker_env(args, app_id, prefix, data, port), tmp / f"worker-{name}.log")
    spy = None
    if profile:
        exe = find_py_spy()
        if exe is None:
            say("--profile: py-spy not found (PATH, beside the interpreter, /tmp/py-spy/bin)")
        else:
            fmt = {".txt": "raw", ".svg": "flamegraph"}.get(Path(profile).suffix, "speedscope")
            spy = subprocess.Popen([exe, "record", "-p", str(w.pid), "-o", profile, "--format", fmt, "-r", "50",
                                    "--idle", "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + args.ready_timeout
        m0 = time.monotonic()
        while True:
            if not w.alive():
                raise BenchError(f"{w.name} exited with {w.proc.returncode}:\n{w.tail()}")
            if http_status(port, "/readyz") == 200:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{w.name} not ready after {args.ready_timeout:.0f}s:\n{w.tail()}")
            time.sleep(0.1)
        ready = time.monotonic() - m0
        out = {"ready": ready, "cpu": cpu_s(w.pid), "rss": rss_bytes(w.pid), "t_spawn": w.t_spawn}
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(30)
        code = w.stop()
        out["exit"] = code
        out["phases"] = {k: v - w.t_spawn for k, v in log_phases(w.log_path).items()}
        # the documents the restore put in the worker's orders databases
        tables = list(data.glob("*/*/v1/tables")) + list(data.glob("*/v1/tables"))
        if tables:
            import rocksdict

            n = 0
            for db_path in sorted(tables[0].glob("orders-*.db")):
                db = rocksdict.Rdict(str(db_path), options=rocksdict.Options(raw_mode=True),
                                     access_type=rocksdict.AccessType.read_only())
                n += sum(1 for k in db.keys() if not k.startswith(b"__faust"))
                db.close()
            out["restored"] = n
            out["disk"] = dir_bytes(tables[0])
        return out
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
            spy.wait(10)
        w.stop()


def restore_part(args, tmp: Path, templates, res: dict, prefix: str) -> None:
    from shopwatch.agents import ingest
    from shopwatch.agents.app import build_app
    from shopwatch.agents.settings import Settings
    from shopwatch.agents.topology import Topology

    app_id = prefix + "shopwatch"
    # the changelog topic of the orders table as the worker names and configures it
    s = dataclasses.replace(Settings(), bootstrap=args.bootstrap, app_id=app_id, topic_prefix=prefix,
                            partitions=args.partitions, replication_factor=1, data_dir=str(tmp / "probe"))
    app = build_app(s)
    topo = Topology(app, s, rules_of(args), ingest.make_ingest(app))
    changelog = topo.orders_table.changelog_topic.get_topic_name()
    config = app.sw_changelogs().get(changelog)
    if config is None:
        raise BenchError(f"{changelog} is not among the changelogs the worker creates itself")
    say(f"producing {args.docs:,} order documents to {changelog} ({args.partitions} partitions, {config})")
    asyncio.run(create_topics(args.bootstrap, [changelog], args.partitions, {changelog: config}))
    w0 = time.perf_counter()
    n, nbytes = asyncio.run(produce_docs(args.bootstrap, changelog, clone_docs(templates, args.docs, args.partitions),
                                         args.partitions))
    res["restore"] = {"topic": changelog, "config": config, "docs": n, "bytes": nbytes,
                      "produce": time.perf_counter() - w0}
    rr = res["restore"]

    say("raw read of the changelog in a child process")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(HERE), "--_raw-read", changelog, "--bootstrap", args.bootstrap],
                       capture_output=True, timeout=args.ready_timeout, cwd=ROOT)
    if r.returncode != 0:
        raise BenchError(f"raw read failed: {r.stderr.decode(errors='replace')[-400:]}")
    rr["raw"] = json.loads(r.stdout.decode().strip().splitlines()[-1])
    rr["raw"]["total"] = time.perf_counter() - t0
    if rr["raw"]["n"] != n:
        res.setdefault("notes", []).append(f"raw read saw {rr['raw']['n']:,} records of {n:,}")

    say("worker on an app id with empty changelogs (its start-up)")
    try:
        rr["empty"] = time_worker(args, tmp, "empty", prefix + "e.shopwatch", prefix + "e.")
    except BenchError as exc:
        res.setdefault("notes", []).append(f"empty worker: {str(exc).splitlines()[0]}")
    say(f"worker restoring {n:,} documents")
    rr["worker"] = time_worker(args, tmp, "restore", app_id, prefix, profile=args.profile)


# ---------------------------------------------------------------- table

def table(args, res: dict) -> str:
    L = [f"state_bench: {res['machine']}", f"load average at start {res['load0']}, at end {loadavg()}"]
    run = res.get("run")
    if run:
        L.append(f"simulated run: seed {args.seed}, {args.shops} shops, {args.days} days ({run['first'][:10]} .. "
                 f"{run['last'][:10]}), {run['events']:,} events, {run['orders']:,} orders, {run['sessions']:,} chat "
                 f"sessions; rules {{\"retention_days\": {args.retention_days:g}}}; {args.partitions} partitions, "
                 f"write-back every {args.commit_every:,} records; through the partitions in {run['wall']:.1f} s")
    end, after, per = res.get("end"), res.get("after"), res.get("per")
    if end and per:
        L.append("")
        L.append(f"per order, at the end of the input (clock {end['clock']}); bytes = key + value as the tables "
                 "store them (Faust's json)")
        head = (f"{'':24s} {'orders':>7s} {'doc B':>7s} {'+shop rec B':>11s} {'RocksDB B':>10s} "
                f"{'heap B':>8s} {'+state B':>9s} {'RSS B':>8s} {'+state B':>9s}")
        L.append(head)
        L.append("-" * len(head))
        for c in (OPEN, FINISHED):
            p = per.get(c)
            if not p:
                L.append(f"{c:24s} {0:7d}")
                continue
            n = p["n"]
            rn, rb = end["recs"][c]
            m = p["mem"]
            mem = (f"{m['heap_part'] / n:8,.0f} {m['heap_state'] / n:9,.0f} {m['rss_part'] / n:8,.0f} "
                   f"{m['rss_state'] / n:9,.0f}") if m else f"{'n/a':>8s} {'n/a':>9s} {'n/a':>8s} {'n/a':>9s}"
            L.append(f"{c:24s} {n:7,d} {p['bytes'] / n:7,.0f} {(rb / rn if rn else 0):11,.0f} "
                     f"{p['rocks']['put_compacted'] / n:10,.1f} {mem}")
        fin = per.get(FINISHED)
        if fin and after:
            n = fin["n"]
            rk = fin["rocks"]
            L.append(f"{RETIRED:24s} {n:7,d} {0:7d} {0:11d} {rk['deleted_compacted'] / n:10,.1f} "
                     f"{after['heap']['keyed'] / max(1, after['retired'] + after['s_retired']):8,.1f} {'0':>9s} "
                     f"{'n/a':>8s} {'0':>9s}")
            L.append("-" * len(head))
            L.append("  doc B: the order's document in the orders table (its changelog record); +shop rec B: its "
                     "entity record rec/orders/<id> in the shops table; RocksDB B: SST bytes per order of the "
                     "class's documents alone, flushed and compacted (snappy, the worker's options)")
            L.append(f"  retired: its document becomes a tombstone (key only: "
                     f"{(rk['deleted_flushed'] - rk['put_compacted']) / n:,.1f} B/order of SST beside the documents "
                     f"until a compaction drops both), its shop record is deleted; the compacted changelog keeps the "
                     f"tombstone (~{fin['key_len']:.0f} B key) for delete.retention.ms (24 h by default), then "
                     f"nothing. heap B of a retired order: what the order and chat partitions still hold after "
                     f"retirement / orders and sessions retired (no entity is left in them: emptied dicts and sets "
                     f"keep the capacity of their peak)")
            L.append("  heap B: tracemalloc of a KeyedPartition.recover() of the class's documents (timers, "
                     "retirement calendar: what a restored worker keeps per order, states on disk); +state B: the "
                     "OrderState restored and held (the partition caches it once the order is touched); RSS B: the "
                     "same by the child process's RSS before/after")
            rec = [(c, per[c]["mem"]) for c in (OPEN, FINISHED) if per.get(c) and per[c]["mem"]]
            if rec:
                L.append("  KeyedPartition.recover() CPU per order (the worker runs it at the first record of each "
                         "partition after the restore, not before /readyz): "
                         + ", ".join(f"{c} {m['recover_cpu'] / m['n'] * 1e6:,.0f} us" for c, m in rec))
        sn, sb = end["sessions"]
        if sn:
            L.append(f"chat sessions live at the end of the input: {sn:,}, {sb / sn:,.0f} B/session (document)")
    if end and after:
        live = sum(end["classes"].values())
        L.append("")
        L.append("whole run (the partitions' RocksDB tables, SST bytes after flush + full compaction)")
        L.append(f"  end of input: {live:,} order documents ({end['classes'][OPEN]:,} open, "
                 f"{end['classes'][FINISHED]:,} finished, {end['classes']['no state']:,} retired, their "
                 f"document still holding the notice to their shop until a tick finds it committed), {end['retired']:,} orders retired during the run; orders table "
                 f"{end['orders_sst']:,} B = {end['orders_sst'] / max(1, live):,.0f} B/live order; sessions "
                 f"{end['sessions_sst']:,} B; shops {end['shops_sst']:,} B ({end['shops_keys']:,} keys: shop "
                 f"documents + entity records)")
        kh = end["heap"]["keyed"]
        L.append(f"  partitions' heap (deep getsizeof): order and chat partitions {kh:,} B = "
                 f"{kh / max(1, end['live_entities']):,.0f} B per live order or session ({end['cached_states']:,} "
                 f"order states cached), shop partitions {end['heap']['shops']:,} B; bench process RSS "
                 f"{end['rss'] / 2**20:,.0f} MiB")
        L.append(f"  changelog writes of the orders table so far: {end['cl_records']:,} records, {end['cl_bytes']:,} B"
                 f" = {end['cl_records'] / max(1, run['orders']):.1f} records, "
                 f"{end['cl_bytes'] / max(1, run['orders']):,.0f} B per order")
        L.append(f"  after retirement (clock {after['clock']}): {sum(after['classes'].values()):,} order documents, "
                 f"{after['retired']:,} orders retired, {after['sessions_left']:,} session documents, shops table "
                 f"{after['shops_keys']:,} keys ({after['recs_left']:,} entity records); SST: orders "
                 f"{after['orders_sst_tomb']:,} B flushed (tombstones), {after['orders_sst']:,} B compacted, "
                 f"sessions {after['sessions_sst']:,} B, shops {after['shops_sst']:,} B; partitions' heap: order "
                 f"and chat {after['heap']['keyed']:,} B, shops {after['heap']['shops']:,} B")
        L.append(f"  changelog writes of the orders table over the whole life: {after['cl_records']:,} records "
                 f"({after['tombstones']:,} tombstones), {after['cl_bytes']:,} B = "
                 f"{after['cl_records'] / max(1, run['orders']):.1f} records, "
                 f"{after['cl_bytes'] / max(1, run['orders']):,.0f} B per order")
    eng = res.get("engine")
    if eng:
        b, a = eng["before"], eng["after"]
        L.append(f"replay Engine, same events ({eng['wall']:.1f} s): end of input {b['orders']:,} orders, "
                 f"{b['sessions']:,} sessions, {b['timers']:,} timer entries, heap {b['heap']:,} B "
                 f"(orders {b['order_heap'] / max(1, b['orders']):,.0f} B/order); after retirement "
                 f"{a['orders']:,} orders, {a['sessions']:,} sessions, {a['timers']:,} timer entries, heap "
                 f"{a['heap']:,} B; retired {eng['retired']}")
    rr = res.get("restore")
    if rr:
        n = rr["docs"]
        L.append("")
        L.append(f"restore: {n:,} order documents ({rr['bytes'] / n:,.0f} B key+value each, {rr['bytes'] / 2**20:,.0f} "
                 f"MiB) on {rr['topic']} ({args.partitions} partitions, {rr['config']}), produced in "
                 f"{rr['produce']:.1f} s")
        head = f"{'':60s} {'wall s':>8s} {'docs/s':>10s} {'raw/this':>9s}"
        L.append(head)
        L.append("-" * len(head))
        raw = rr.get("raw")

        def row(label, secs, base=None):
            if secs is None or secs <= 0:
                L.append(f"{label:60s} {'n/a':>8s}")
                return
            ratio = f"{base / secs:9.3f}" if base else f"{'':9s}"
            L.append(f"{label:60s} {secs:8.2f} {n / secs:10,.0f} {ratio}")

        if raw:
            row("a  raw read: aiokafka consume to the end + orjson.loads", raw["read"])
            row("   the same, child process from spawn (imports, connect)", raw["total"])
        w, e = rr.get("worker"), rr.get("empty")
        base = raw["read"] if raw else None
        if w:
            row("b  worker, start -> /readyz 200", w["ready"], base)
            if e:
                row("   worker on empty changelogs, start -> /readyz 200", e["ready"])
                row("   restore = the difference", w["ready"] - e["ready"], base)
            ph = w.get("phases", {})
            if "restoring" in ph and "read" in ph:
                row("   Faust: 'Restoring state from changelog' -> 'Done reading'", ph["read"] - ph["restoring"], base)
            if "restoring" in ph and "ready" in ph:
                row("   Faust: 'Restoring state from changelog' -> 'Worker ready'", ph["ready"] - ph["restoring"], base)
            L.append("-" * len(head))
            phases = ", ".join(f"{k} +{v:.1f}s" for k, v in sorted(w.get("phases", {}).items(), key=lambda kv: kv[1]))
            L.append(f"worker log phases after spawn: {phases or 'n/a'}")
            if e and e.get("phases"):
                phases = ", ".join(f"{k} +{v:.1f}s" for k, v in sorted(e["phases"].items(), key=lambda kv: kv[1]))
                L.append(f"empty worker's phases: {phases}")
            L.append(f"worker at ready: CPU {w['cpu']:.1f} s, RSS {w['rss'] / 2**20:,.0f} MiB; documents in its "
                     f"orders RocksDB after the stop: {w.get('restored', 'n/a'):,} ({w.get('disk', 0) / 2**20:,.0f} MiB"
                     f" tables dir)" if isinstance(w.get("restored"), int) else
                     f"worker at ready: CPU {w['cpu']:.1f} s, RSS {w['rss'] / 2**20:,.0f} MiB")
            if raw:
                rest = w["ready"] - e["ready"] if e else w["ready"]
                L.append(f"ratio raw/restore (restore speed / raw read speed; the aim >= 0.5): "
                         f"{raw['read'] / rest:.3f} (restore = worker start-up subtracted), "
                         f"{raw['read'] / w['ready']:.3f} (start to ready)")
            if raw:
                L.append(f"raw read child: CPU {raw['cpu']:.1f} s, RSS {raw['rss'] / 2**20:,.0f} MiB, connect "
                         f"{raw['connect']:.2f} s")
    for note in res.get("notes", []):
        L.append("note: " + note)
    return "\n".join(L)


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--shops", type=int, default=10, help="simulated shops (default 10)")
    ap.add_argument("--days", type=int, default=14, help="simulated days (default 14)")
    ap.add_argument("--retention-days", type=float, default=7.0, help="rules retention_days (default 7)")
    ap.add_argument("--retire-after-days", type=int, default=60,
                    help="how far the clock moves past the last event to retire everything (default 60)")
    ap.add_argument("--partitions", type=int, default=4, help="partitions of the tables and topics (default 4)")
    ap.add_argument("--commit-every", type=int, default=2000, help="input records between write-backs (default 2000)")
    ap.add_argument("--docs", type=int, default=200_000, help="order documents on the changelog (default 200000)")
    ap.add_argument("--bootstrap", default="127.0.0.1:" + os.environ.get("KAFKA_PORT", "9092"),
                    help="a loopback broker (default 127.0.0.1:$KAFKA_PORT or 9092)")
    ap.add_argument("--steps", default="state,restore",
                    help="comma-separated subset of state,restore (restore alone still simulates up to 10 days "
                         "for the documents it clones)")
    ap.add_argument("--ready-timeout", type=float, default=900.0, help="seconds a worker may take to be ready")
    ap.add_argument("--profile", help="record the restoring worker with py-spy into this file (speedscope)")
    ap.add_argument("--keep", action="store_true", help="keep the topics and the temporary directory")
    ap.add_argument("--_memory", help=argparse.SUPPRESS)
    ap.add_argument("--_raw-read", dest="raw_read", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._memory:
        return memory_child(args._memory, args.retention_days)
    if args.raw_read:
        return raw_read_child(args.bootstrap, args.raw_read)
    steps = set(args.steps.split(","))
    if "restore" in steps and not_loopback("state_bench", args.bootstrap):
        return 2
    begin()
    tmp = Path(tempfile.mkdtemp(prefix="state-bench-"))
    prefix = f"sb-{int(time.time())}-{uuid.uuid4().hex[:8]}."
    res: dict = {"machine": machine(), "load0": loadavg()}
    say(f"temporary files in {tmp}" + (f", topics {prefix}*" if "restore" in steps else ""))
    code = 0
    created = False
    try:
        templates = None
        if "state" in steps:
            templates = state_part(args, tmp, res)
        if "restore" in steps:
            if templates is None:  # documents of a short run to clone
                a = argparse.Namespace(**{**vars(args), "days": min(args.days, 10)})
                templates = state_part(a, tmp, {})
            created = True
            try:
                restore_part(args, tmp, templates, res, prefix)
            except (BenchError, subprocess.SubprocessError, OSError) as exc:
                code = 1
                res.setdefault("notes", []).append(f"restore: {str(exc).splitlines()[0] if str(exc) else exc!r}")
                say(f"restore failed: {exc}")
        print(table(args, res), flush=True)
    except KeyboardInterrupt:
        say("interrupted")
        code = 130
    finally:
        stop_all()
        if args.keep:
            say(f"kept {tmp}" + (f" and the topics {prefix}*" if created else ""))
        else:
            if created:
                try:
                    deleted = asyncio.run(asyncio.wait_for(delete_topics(args.bootstrap, prefix), 60))
                    say(f"deleted {len(deleted)} topics {prefix}*")
                except BaseException as exc:
                    say(f"could not delete the topics {prefix}*: {exc!r}")
            shutil.rmtree(tmp, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
