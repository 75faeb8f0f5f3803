"""One Kafka partition's worth of the core, still without Kafka: what the Faust agents run.

``KeyedPartition`` serves the order-keyed input topics (shop.orders,
shop.shipments, shop.refunds are co-partitioned, so partition p of each holds
the same orders) or the session-keyed chats, plus the tick topic.

Replay applies events in file order and fires every timer due strictly before
the next event. A Kafka partition sees three topics at different speeds, so
applying records as they arrive would let one topic's clock fire another
topic's timers early. In the ``event`` clock domain the partition therefore
merges its sources by event time: each source is a FIFO queue (never reordered
inside, so offsets stay increasing per source), and the head with the smallest
``ts`` is applied once every other source has either a queued record, or has
already shown a later ``ts``, or is idle/closed (the shell says which). That is
replay's order whenever each source is in event-time order, which is how
events are produced. In the ``wall`` domain records are applied on arrival and
ticks carry the wall clock.

Idempotence (at-least-once delivery): states deduplicate by ``event_id``;
records still queued are kept in ``pending`` (a changelogged table in the
shell) and deduplicated there; every contribution batch carries the source
(topic:partition), the offset of the record (or tick) that caused it and an
index, increasing per source, so the shop side can drop a redelivered batch.
"""

from __future__ import annotations

from collections import deque

from .clock import EVENT, WALL
from .engine import TimerHeap
from .logic import Effects


class Outputs:
    """What one step produced, for the shell to send."""

    __slots__ = ("alerts", "contribs", "dirty", "pending_changed")

    def __init__(self) -> None:
        self.alerts: list[dict] = []
        self.contribs: list[tuple] = []  # (source, offset, index, contrib tuple)
        self.dirty: set = set()  # keys whose state changed (to write to the table)
        self.pending_changed: set = set()  # keys whose pending records changed


class Merger:
    """Merges FIFO sources by time: the head with the smallest time is released once
    every other source has a queued item, has already shown a later time, or is
    idle; ``flush`` releases everything. Sources never seen hold the merge back
    until they go idle."""

    def __init__(self, sources) -> None:
        self.sources = list(sources)
        self.queues: dict[str, deque] = {s: deque() for s in self.sources}
        self.last: dict[str, int] = {}

    def push(self, source: str, ts: int, item) -> None:
        if self.last.get(source, ts - 1) < ts:
            self.last[source] = ts
        q = self.queues.get(source)
        if q is None:
            q = self.queues[source] = deque()
        q.append((ts, item))

    def promise(self, source: str, ts: int) -> None:
        """The source says it will bring nothing earlier than ``ts`` (a watermark)."""
        if self.last.get(source, ts - 1) < ts:
            self.last[source] = ts

    def pop_ready(self, idle: frozenset = frozenset(), flush: bool = False):
        queues = self.queues
        while True:
            best = None
            for src, q in queues.items():
                if q and (best is None or q[0][0] < best[0]):
                    best = (q[0][0], src)
            if best is None:
                return
            ts, src = best
            if not flush:
                for other, q in queues.items():
                    if other != src and not q and other not in idle and self.last.get(other, ts - 1) < ts:
                        return  # that source may still bring something earlier
            yield src, queues[src].popleft()[1]


class KeyedPartition:
    def __init__(self, logic, partition: int, sources: list[str], domain: str = EVENT,
                 key_of=None) -> None:
        self.logic = logic
        self.partition = partition
        self.sources = list(sources)
        self.domain = domain
        self.key_of = key_of
        self.states: dict = {}
        self.pending: dict = {}  # key -> list of [source, offset, event] still queued
        self.merger = Merger(self.sources)
        self.timers = TimerHeap()
        self.fx = Effects()
        self.watermark: int | None = None
        self._cause = (None, -1)
        self._index = 0

    # ---------------------------------------------------------------- recovery
    def recover(self, state_items, pending: dict, store=None) -> None:
        """Rebuild from restored tables: states, pending queues and the timer heap.

        ``state_items`` yields (key, state); ``store`` (dict-like) replaces the
        in-memory state dict when the shell keeps states in a table."""
        if store is not None:
            self.states = store
        for key, st in state_items:
            if store is None:
                self.states[key] = st
            self.timers.want("k", key, self.logic.timers(st))
        recs = []
        for key, items in pending.items():
            self.pending[key] = [list(r) for r in items]
            recs.extend(self.pending[key])
        for src, off, ev in sorted(recs, key=lambda r: (r[0], r[1])):
            self.merger.push(src, ev["ts_us"], (off, ev))

    # ------------------------------------------------------------------ input
    def on_record(self, source: str, offset: int, ev: dict, idle: frozenset = frozenset()) -> Outputs:
        out = Outputs()
        key = self.key_of(ev)
        st = self.states.get(key)
        if st is not None and ev["event_id"] in st.seen:
            return out
        if self.domain == WALL or len(self.sources) == 1:
            # nothing to merge: one source is already in order
            self._cause = (source, offset)
            self._index = 0
            self._apply(key, ev, out)
            return out
        plist = self.pending.setdefault(key, [])
        if any(r[2]["event_id"] == ev["event_id"] for r in plist):
            return out
        plist.append([source, offset, ev])
        out.pending_changed.add(key)
        self.merger.push(source, ev["ts_us"], (offset, ev))
        self._merge(out, idle, flush=False)
        return out

    def on_tick(self, source: str, offset: int, now_us: int | None, flush: bool = False,
                idle: frozenset = frozenset()) -> Outputs:
        """A tick: in ``event`` mode ``flush`` releases every queued record and
        ``now_us`` (if given) moves the clock there, firing timers due at or before
        it (replay's end of file); in ``wall`` mode ``now_us`` is the wall clock
        and timers due strictly before it fire."""
        out = Outputs()
        self._cause = (source, offset)
        self._index = 0
        if self.domain == EVENT:
            self._merge(out, idle, flush=flush)
            if now_us is not None:
                self._fire(now_us, True, out)
        elif now_us is not None:
            self._fire(now_us, False, out)
        return out

    # ------------------------------------------------------------------ merge
    def _merge(self, out: Outputs, idle: frozenset, flush: bool) -> None:
        for src, (off, ev) in self.merger.pop_ready(idle, flush):
            key = self.key_of(ev)
            plist = self.pending.get(key)
            if plist is not None:
                plist[:] = [r for r in plist if r[2]["event_id"] != ev["event_id"]]
                if not plist:
                    del self.pending[key]
                out.pending_changed.add(key)
            self._cause = (src, off)
            self._index = 0
            self._apply(key, ev, out)

    # ------------------------------------------------------------------ apply
    def _apply(self, key, ev: dict, out: Outputs) -> None:
        ts = ev["ts_us"]
        if self.domain == EVENT:
            self._fire(ts, False, out)
            if self.watermark is None or ts > self.watermark:
                self.watermark = ts
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = self.logic.new_state(key)
        self.logic.on_event(st, ev, self.fx)
        self.timers.want("k", key, self.logic.timers(st))
        out.dirty.add(key)
        self._collect(out)

    def _fire(self, limit_us: int, inclusive: bool, out: Outputs) -> None:
        for _g, key, name, due in self.timers.pop_due(limit_us, inclusive):
            st = self.states.get(key)
            if st is None:
                continue
            self.logic.on_timer(st, name, due, self.fx)
            self.timers.want("k", key, self.logic.timers(st))
            out.dirty.add(key)
            self._collect(out)
        if self.domain == EVENT and (self.watermark is None or limit_us > self.watermark) and inclusive:
            self.watermark = limit_us

    def _collect(self, out: Outputs) -> None:
        fx = self.fx
        if fx.alerts:
            out.alerts.extend(fx.alerts)
            fx.alerts.clear()
        if fx.contribs:
            src, off = self._cause
            for c in fx.contribs:
                out.contribs.append((src, off, self._index, c))
                self._index += 1
            fx.contribs.clear()


class ShopPartition:
    """The shop side of one partition of the contributions topic.

    Contribution batches come from every order and chat partition ("streams"),
    each stream in event-time order. In the ``event`` domain they are merged by
    time like the keyed side's sources, so shop timers (midnight cap resets,
    抖音 level evaluation) and the daily-cap crossing see replay's order. A
    batch is applied once: per source, (offset, index) only grows.
    """

    def __init__(self, logic, domain: str = EVENT, streams=()) -> None:
        self.logic = logic
        self.domain = domain
        self.states: dict = {}
        self.timers = TimerHeap()
        self.fx = Effects()
        self.watermark: int | None = None
        self.merger = Merger(streams)
        self.pending: dict = {}  # shop key -> batches still queued

    def recover(self, states: dict, pending: dict | None = None) -> None:
        self.states = dict(states)
        for key, st in self.states.items():
            self.timers.want("s", key, self.logic.timers(st))
        recs = [b for batches in (pending or {}).values() for b in batches]
        # each stream is in event-time order; within equal times, its sources' offsets
        for b in sorted(recs, key=lambda b: (b[1], b[5][0][6], b[2], b[3], b[4])):
            self.pending.setdefault(b[0], []).append(b)
            self.merger.push(b[1], b[5][0][6], b)

    def on_batch(self, key, stream: str, source: str, offset: int, first_index: int, contribs: list,
                 out_alerts: list, dirty: set, idle: frozenset = frozenset()) -> set:
        """Take one batch; returns the shop keys whose pending batches changed."""
        b = [key, stream, source, offset, first_index, contribs]
        if self.domain != EVENT or not contribs:
            self._apply(b, out_alerts, dirty)
            return set()
        st = self.states.get(key)
        applied = st.applied.get(source) if st is not None else None
        if applied is not None and [offset, first_index] <= applied:
            return set()
        plist = self.pending.setdefault(key, [])
        if any(q[2] == source and q[3] == offset and q[4] == first_index for q in plist):
            return set()
        plist.append(b)
        self.merger.push(stream, contribs[0][6], b)
        return self._release(out_alerts, dirty, idle, False) | {key}

    def on_contribs(self, key, source: str, offset: int, first_index: int, contribs: list,
                    out_alerts: list, dirty: set) -> bool:
        """Apply one batch now (no merge)."""
        return self._apply([key, source, source, offset, first_index, contribs], out_alerts, dirty)

    def _release(self, out_alerts: list, dirty: set, idle: frozenset, flush: bool) -> set:
        changed = set()
        for _stream, b in self.merger.pop_ready(idle, flush):
            plist = self.pending.get(b[0])
            if plist is not None:
                plist[:] = [q for q in plist if q is not b]
                if not plist:
                    del self.pending[b[0]]
            changed.add(b[0])
            self._apply(b, out_alerts, dirty)
        return changed

    def _apply(self, b: list, out_alerts: list, dirty: set) -> bool:
        key, _stream, source, offset, first_index, contribs = b
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = self.logic.new_state(key)
        applied = st.applied.get(source)
        if applied is not None and [offset, first_index] <= applied:
            return False
        if self.domain == EVENT and contribs:
            at = contribs[0][6]
            self._fire(at, False, out_alerts, dirty)
            if self.watermark is None or at > self.watermark:
                self.watermark = at
        for c in contribs:
            self.logic.on_contrib(st, c, self.fx)
        st.applied[source] = [offset, first_index]
        self.timers.want("s", key, self.logic.timers(st))
        dirty.add(key)
        self._collect(out_alerts)
        return True

    def on_tick(self, now_us: int | None, inclusive: bool, out_alerts: list, dirty: set,
                flush: bool = False, idle: frozenset = frozenset()) -> tuple[list, set]:
        """Release merged batches (all of them on ``flush``), then fire shop timers due
        before ``now_us`` (at or before, if ``inclusive``). Returns the snapshots the
        timers asked for (小红书 12:00) and the shop keys whose pending batches changed."""
        changed = self._release(out_alerts, dirty, idle, flush) if self.domain == EVENT else set()
        if now_us is not None:
            self._fire(now_us, inclusive, out_alerts, dirty)
            if self.watermark is None or now_us > self.watermark:
                self.watermark = now_us
        snaps = list(self.fx.snapshots)
        self.fx.snapshots.clear()
        return snaps, changed

    def _fire(self, limit_us: int, inclusive: bool, out_alerts: list, dirty: set) -> None:
        for _g, key, name, due in self.timers.pop_due(limit_us, inclusive):
            st = self.states.get(key)
            if st is None:
                continue
            self.logic.on_timer(st, name, due, self.fx)
            self.timers.want("s", key, self.logic.timers(st))
            dirty.add(key)
            self._collect(out_alerts)

    def _collect(self, out_alerts: list) -> None:
        if self.fx.alerts:
            out_alerts.extend(self.fx.alerts)
            self.fx.alerts.clear()
