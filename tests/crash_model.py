"""A small model of the topology for the crash tests (tests/core/test_partition.py,
tests/core/test_retention.py): order, chat and shop partitions, their tables with
changelogs, a producer whose buffers reach the log in random pieces, commits
that first write back every document changed since the last commit (the record
cache: ``drain()``) and the entity updates held for the shops, then flush
everything, and crashes that lose whatever was not delivered or written back
(the worker then rebuilds its tables from the changelogs and reads its inputs
again from the committed offsets). Events are split the way Kafka splits them
(topic by type, partition by key) and consumed with one topic running far ahead
of the others."""

from __future__ import annotations

import zlib

import orjson

from shopwatch.agents.simulator import generate
from shopwatch.schemas.events import TOPIC_CHATS, TOPIC_OF_TYPE, key_of, validate
from shopwatch.streams.clock import EVENT, fmt_ts
from shopwatch.streams.orders import OrderLogic
from shopwatch.streams.partition import KeyedPartition, ShopPartition
from shopwatch.streams.replay_engine import Engine
from shopwatch.streams.sessions import SessionLogic
from shopwatch.streams.shop import ShopLogic

P = 3
ORDER_SOURCES = ["orders", "shipments", "refunds"]


def _events(seed=5, shops=10, days=4):
    return [validate(orjson.loads(orjson.dumps(e))) for e in generate(seed=seed, shops=shops, days=days)]


def _part(key: str, n: int = P) -> int:
    return zlib.crc32(key.encode()) % n


def _key(a):
    return (a["alert_id"], a["status"], a["at"])


def _topic(ev):
    t = TOPIC_OF_TYPE[ev["type"]]
    return "chats" if t == TOPIC_CHATS else t.split(".")[1]


def _run_replay(evs, until):
    e = Engine()
    for ev in evs:
        e.process(ev)
    e.finish(until)
    return e.alerts, {(s["platform"], s["shop_id"]): s["indicators"] for s in e.scores()}


def _copy(x):
    return orjson.loads(orjson.dumps(x))  # what goes through Kafka is JSON


class _Log:
    """One topic partition: ``log`` is what the broker has (readable, durable);
    ``buffer`` is still in the producer and dies with the worker. For a changelog,
    ``table`` is what its log restores."""

    def __init__(self) -> None:
        self.log: list = []
        self.buffer: list = []
        self.table: dict = {}  # key -> the raw [key, doc] that set it
        self._applied = 0

    def send(self, item) -> None:
        self.buffer.append(orjson.dumps(item))

    def deliver(self, n: int | None = None) -> None:
        n = len(self.buffer) if n is None else n
        for raw in self.buffer[:n]:
            self.log.append(raw)
        del self.buffer[:n]

    def items(self) -> list:
        return [orjson.loads(raw) for raw in self.log]

    def restore(self) -> dict:
        for raw in self.log[self._applied:]:
            k, doc = orjson.loads(raw)
            if doc is None:
                self.table.pop(k, None)
            else:
                self.table[k] = raw
        self._applied = len(self.log)
        return {k: orjson.loads(raw)[1] for k, raw in self.table.items()}


class _Cluster:
    """P order partitions, P chat partitions and P shop partitions, wired like agents/topology.py."""

    def __init__(self, evs, rules, rng):
        self.rules = rules
        self.rng = rng
        self.shop_logic = ShopLogic(rules)
        self.streams = [f"{k}:{p}" for k in ("orders", "chats") for p in range(P)]
        self.inputs: dict[tuple, list] = {}
        for ev in evs:
            t = _topic(ev)
            self.inputs.setdefault((t, _part(key_of(ev))), []).append(ev)
        self.pos: dict[tuple, int] = {}
        self.committed: dict[tuple, int] = {}
        self.contribs = [_Log() for _ in range(P)]
        self.alerts = _Log()
        self.scores = _Log()
        self.changelogs = {n: _Log() for n in self._tables()}
        self.ticks = dict.fromkeys(range(P), 0)
        self.held: dict[str, list] = {}  # stream -> entity updates not yet sent (batched per shop partition)
        self.crashes = 0
        self._start()

    @staticmethod
    def _tables():
        return [(kind, p) for kind in ("orders", "chats", "shops") for p in range(P)]

    def _start(self):
        """(Re)start every partition from the changelogs: a new worker after a crash."""
        self.tables = {name: cl.restore() for name, cl in self.changelogs.items()}
        for tp in list(self.pos):
            self.pos[tp] = self.committed.get(tp, 0)
        self.orders, self.chats, self.shops = [], [], []
        self.held = {}
        for p in range(P):
            kp = KeyedPartition(OrderLogic(self.rules), p, ORDER_SOURCES, EVENT, key_of=lambda ev: ev["order_id"],
                                kind="orders", docs=self.tables[("orders", p)],
                                committed=lambda src, p=p: self.committed.get((src, p)))
            self._emit(("orders", p), kp.recover(list(self.tables[("orders", p)].items())))
            self.orders.append(kp)
            cp = KeyedPartition(SessionLogic(self.rules), p, ["chats"], EVENT, key_of=lambda ev: ev["session_id"],
                                kind="chats", docs=self.tables[("chats", p)],
                                committed=lambda src, p=p: self.committed.get((src, p)))
            self._emit(("chats", p), cp.recover(list(self.tables[("chats", p)].items())))
            self.chats.append(cp)
            sp = ShopPartition(self.shop_logic, EVENT, self.streams, partition=p, docs=self.tables[("shops", p)],
                               committed=lambda p=p: self.committed.get(("contribs", p)))
            self._emit(("shops", p), sp.recover(list(self.tables[("shops", p)].items())))
            self.shops.append(sp)

    def _write(self, table, writes):
        for k, doc in writes:
            if doc is None:
                self.tables[table].pop(k, None)
            else:
                self.tables[table][k] = _copy(doc)
            self.changelogs[table].send([k, doc])

    def _emit(self, table, out, stream=None):
        self._write(table, out.writes)
        for a in out.alerts:
            self.alerts.send(a)
        if out.updates:
            self.held.setdefault(stream or f"{table[0]}:{table[1]}", []).extend(out.updates)
        for s in out.snapshots:
            self.scores.send(s)

    def _send_held(self, stream):
        by_q: dict[int, list] = {}
        for u in self.held.pop(stream, ()):
            by_q.setdefault(_part(u["shop"]), []).append(u)
        for q, us in by_q.items():
            self.contribs[q].send({"stream": stream, "updates": us})

    def _forward(self, stream, wm, flush=False):
        self._send_held(stream)  # a stream's clock goes after its updates
        if wm is not None:
            for q in range(P):
                self.contribs[q].send({"wm": wm, "stream": stream, "flush": flush})

    def write_back(self):
        """Before a commit (the protocol of KeyedPartition.drain): the held updates,
        delivered with every other output, then every document changed since the
        last write-back."""
        for stream in list(self.held):
            self._send_held(stream)
        for lg in [*self.contribs, self.alerts, self.scores]:
            lg.deliver()
        for kind, parts in (("orders", self.orders), ("chats", self.chats), ("shops", self.shops)):
            for p, part in enumerate(parts):
                self._write((kind, p), part.drain())
                part.trim()

    # ------------------------------------------------------------ actions
    def _idle(self, p):
        return frozenset(s for s in ORDER_SOURCES if self.pos.get((s, p), 0) >= len(self.inputs.get((s, p), [])))

    def step_keyed(self, kind, p) -> bool:
        sources = ORDER_SOURCES if kind == "orders" else ["chats"]
        ready = [s for s in sources if self.pos.get((s, p), 0) < len(self.inputs.get((s, p), []))]
        if not ready:
            return False
        s = self.rng.choice(ready)
        for _ in range(self.rng.choice([1, 5, 40])):
            off = self.pos.get((s, p), 0)
            if off >= len(self.inputs.get((s, p), [])):
                break
            self.pos[(s, p)] = off + 1
            kp = (self.orders if kind == "orders" else self.chats)[p]
            out = kp.on_record(s, off, _copy(self.inputs[(s, p)][off]), idle=self._idle(p))
            self._emit((kind, p), out)
        return True

    def tick(self, p, now_us=None, flush=False):
        """A leader tick on partition p: the order partition merges, both forward their clocks."""
        off = self.ticks[p]
        self.ticks[p] += 1
        kp = self.orders[p]
        out = kp.on_tick("ticks", off, now_us, flush=flush, idle=self._idle(p))
        self._emit(("orders", p), out)
        self._forward(f"orders:{p}", now_us if now_us is not None else kp.watermark, flush)
        self._forward(f"chats:{p}", now_us if now_us is not None else self.chats[p].watermark, flush)

    def step_shop(self, q) -> bool:
        log = self.contribs[q].log
        start = self.pos.get(("contribs", q), 0)
        if start >= len(log):
            return False
        for off in range(start, min(len(log), start + self.rng.choice([1, 10]))):
            self.pos[("contribs", q)] = off + 1
            m = orjson.loads(log[off])
            sp = self.shops[q]
            if "wm" in m:
                self._emit(("shops", q), sp.on_watermark(off, m["stream"], m["wm"], m["flush"]))
                continue
            for i, u in enumerate(m["updates"]):
                self._emit(("shops", q), sp.on_update({**u, "stream": m["stream"]}, off, index=i))
        return True

    def send_some(self):
        logs = [*self.contribs, self.alerts, self.scores, *self.changelogs.values()]
        lg = self.rng.choice(logs)
        lg.deliver(self.rng.randint(0, len(lg.buffer)))

    def commit(self):
        """Faust's commit with the record cache: write back, flush the producer, then
        commit every position."""
        self.write_back()
        for lg in [*self.contribs, self.alerts, self.scores, *self.changelogs.values()]:
            lg.deliver()
        self.committed.update(self.pos)
        self.committed.update({("ticks", p): n for p, n in self.ticks.items()})

    def crash(self):
        """SIGKILL: undelivered buffers are gone; the worker starts again. Half the
        crashes come during a commit, after its write-back, with random parts of
        each changelog's buffer delivered."""
        self.crashes += 1
        if self.rng.random() < 0.5:
            self.write_back()
            for lg in [*self.contribs, self.alerts, self.scores, *self.changelogs.values()]:
                lg.deliver(self.rng.randint(0, len(lg.buffer)))
        for lg in [*self.contribs, self.alerts, self.scores, *self.changelogs.values()]:
            lg.buffer.clear()
        self.ticks = {p: self.committed.get(("ticks", p), 0) for p in range(P)}
        self._start()

    def run(self, until, crash_every=0):
        steps = 0
        while True:
            steps += 1
            acts = [lambda k=k, p=p: self.step_keyed(k, p) for k in ("orders", "chats") for p in range(P)]
            acts += [lambda q=q: self.step_shop(q) for q in range(P)]
            self.rng.shuffle(acts)
            progressed = any(a() for a in acts)
            if self.rng.random() < 0.3:
                self.tick(self.rng.randrange(P))
            self.send_some()
            if self.rng.random() < 0.05:
                self.commit()
            if crash_every and steps % crash_every == 0:
                self.crash()
            if not progressed:
                self.commit()
                if all(self.pos.get(("contribs", q), 0) >= len(self.contribs[q].log) for q in range(P)):
                    break
        for p in range(P):
            self.tick(p, until, flush=True)
        self.commit()
        while any(self.step_shop(q) for q in range(P)):
            self.commit()
        self.commit()

    def final_scores(self, until):
        snaps = {}
        for s in self.scores.items():
            if s["as_of"] == fmt_ts(until):
                snaps[(s["platform"], s["shop_id"])] = s["indicators"]
        return snaps


def _check(c, evs, until):
    r_alerts, r_scores = _run_replay(evs, until)
    got = {_key(a) for a in c.alerts.items()}
    want = {_key(a) for a in r_alerts}
    assert got == want, (sorted(want - got)[:3], sorted(got - want)[:3])
    assert c.final_scores(until) == r_scores
    return r_alerts
