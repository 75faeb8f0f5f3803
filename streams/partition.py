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
        self.queues: dict[str, deque] = {s: deque() for s in self.sources}
        self.last_ts: dict[str, int] = {}
        self.timers = TimerHeap()
        self.fx = Effects()
        self.watermark: int | None = None
        self._cause = (None, -1)
        self._index = 0

    # ---------------------------------------------------------------- recovery
    def recover(self, states: dict, pending: dict) -> None:
        """Rebuild from restored tables: states, pending queues and the timer heap."""
        self.states = dict(states)
        for key, st in self.states.items():
            self.timers.want("k", key, self.logic.timers(st))
        recs = []
        for key, items in pending.items():
            self.pending[key] = [list(r) for r in items]
            recs.extend(self.pending[key])
        for src, off, ev in sorted(recs, key=lambda r: (r[0], r[1])):
            self.queues.setdefault(src, deque()).append((ev["ts_us"], off, ev))

    # ------------------------------------------------------------------ input
    def on_record(self, source: str, offset: int, ev: dict, idle: frozenset = frozenset()) -> Outputs:
        out = Outputs()
        key = self.key_of(ev)
        st = self.states.get(key)
        if st is not None and ev["event_id"] in st.seen:
            return out
        if self.domain == WALL:
            self._cause = (source, offset)
            self._index = 0
            self._apply(key, ev, out)
            return out
        plist = self.pending.setdefault(key, [])
        if any(r[2]["event_id"] == ev["event_id"] for r in plist):
            return out
        plist.append([source, offset, ev])
        out.pending_changed.add(key)
        ts = ev["ts_us"]
        if self.last_ts.get(source, ts - 1) < ts:
            self.last_ts[source] = ts
        self.queues.setdefault(source, deque()).append((ts, offset, ev))
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
                    if other == src or q or other in idle:
                        continue
                    if self.last_ts.get(other, ts - 1) < ts:
                        return  # that source may still bring something earlier
                for other in self.sources:
                    if other not in queues and other not in idle:
                        return  # never heard from: wait for it (or for it to go idle)
            _ts, off, ev = queues[src].popleft()
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

    Applies contribution batches once (per source, (offset, index) only grows),
    fires shop timers on its own event-time watermark (the greatest attribution
    trigger seen) or on wall-clock ticks, and produces alerts and snapshots.
    """

    def __init__(self, logic, domain: str = EVENT) -> None:
        self.logic = logic
        self.domain = domain
        self.states: dict = {}
        self.timers = TimerHeap()
        self.fx = Effects()
        self.watermark: int | None = None

    def recover(self, states: dict) -> None:
        self.states = dict(states)
        for key, st in self.states.items():
            self.timers.want("s", key, self.logic.timers(st))
            wm = getattr(st, "now_us", None)
            if wm is not None and (self.watermark is None or wm > self.watermark):
                self.watermark = wm

    def on_contribs(self, key, source: str, offset: int, first_index: int, contribs: list,
                    out_alerts: list, dirty: set) -> bool:
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = self.logic.new_state(key)
        applied = st.applied.get(source)
        if applied is not None and [offset, first_index] <= applied:
            return False
        if self.domain == EVENT and contribs:
            at = max(c[6] for c in contribs)
            self._fire(at, False, out_alerts, dirty)
        for c in contribs:
            self.logic.on_contrib(st, c, self.fx)
        st.applied[source] = [offset, first_index]
        if self.domain == EVENT:
            for c in contribs:
                if self.watermark is None or c[6] > self.watermark:
                    self.watermark = c[6]
        self.timers.want("s", key, self.logic.timers(st))
        dirty.add(key)
        self._collect(out_alerts)
        return True

    def on_tick(self, now_us: int, inclusive: bool, out_alerts: list, dirty: set) -> list:
        """Fire shop timers; returns the snapshots they asked for (小红书 12:00)."""
        self._fire(now_us, inclusive, out_alerts, dirty)
        if self.watermark is None or now_us > self.watermark:
            self.watermark = now_us
        snaps = list(self.fx.snapshots)
        self.fx.snapshots.clear()
        return snaps

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
