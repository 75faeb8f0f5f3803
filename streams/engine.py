"""The whole core in one process on an event-time clock (replay, tests, benchmarks).

Routes each validated event to its order or session logic, their contribution
deltas to the shop logic, and keeps every wanted timer in one heap. Before an
event with ``ts`` t is applied, every timer due strictly before t fires, in
order of due time (ties by the timer's subject); ``finish(until)`` fires every
timer due at or before ``until``. No I/O: alerts and score snapshots are
handed to the caller.

The Kafka shell runs the same logic objects split by key across partitions;
``TimerHeap`` is shared with it.
"""

from __future__ import annotations

import heapq

from .clock import EVENT, EventClock
from .config import DEFAULT_RULES, Rules
from .logic import Effects
from .orders import OrderLogic
from .sessions import SessionLogic
from .shop import ShopLogic

ORDER, SESSION, SHOP = "order", "session", "shop"


class TimerHeap:
    """Due-time heap of (due_us, tie, group, key, name) with lazy cancellation.

    Entries are only hints: the logic's ``on_timer`` checks that the state still
    wants that timer at that time, so a stale entry is harmless. ``scheduled``
    avoids pushing the same (key, name, due) twice.
    """

    domain = EVENT

    def __init__(self) -> None:
        self.heap: list[tuple] = []
        self.scheduled: dict[tuple, int] = {}

    def want(self, group: str, key, wanted: dict[str, int]) -> None:
        sched = self.scheduled
        for name, due in wanted.items():
            k = (group, key, name)
            if sched.get(k) != due:
                sched[k] = due
                heapq.heappush(self.heap, (due, f"{name}:{key}", group, key, name))

    def pop_due(self, limit_us: int, inclusive: bool):
        """Yield (group, key, name, due) for entries due before (or at) ``limit_us``."""
        heap = self.heap
        while heap and (heap[0][0] < limit_us or (inclusive and heap[0][0] == limit_us)):
            due, _tie, group, key, name = heapq.heappop(heap)
            k = (group, key, name)
            if self.scheduled.get(k) == due:
                del self.scheduled[k]
            yield group, key, name, due

    def next_due(self):
        return self.heap[0][0] if self.heap else None

    def __len__(self) -> int:
        return len(self.heap)


def group_of(ev: dict) -> str:
    return SESSION if ev["type"].startswith("chat.") else ORDER


class Engine:
    def __init__(self, rules: Rules | None = None, until_us: int | None = None) -> None:
        """``until_us``: the instant scores will be asked for (replay's --until), if known."""
        rules = rules or DEFAULT_RULES
        self.rules = rules
        self.logic = {ORDER: OrderLogic(rules), SESSION: SessionLogic(rules), SHOP: ShopLogic(rules, until_us)}
        self.states: dict[str, dict] = {ORDER: {}, SESSION: {}, SHOP: {}}
        self.timers = TimerHeap()
        self.clock = EventClock()
        self.fx = Effects()
        self.alerts: list[dict] = []
        self.snapshots: list[dict] = []
        self.final_us: int | None = None  # the final clock, once finish() ran

    # -------------------------------------------------------------- driving
    def process(self, ev: dict) -> None:
        """Apply one validated event (after firing the timers due strictly before it)."""
        ts = ev["ts_us"]
        self.advance(ts, inclusive=False)
        self.clock.observe(ts)
        group = group_of(ev)
        key = ev["session_id"] if group == SESSION else ev["order_id"]
        states = self.states[group]
        st = states.get(key)
        logic = self.logic[group]
        if st is None:
            st = states[key] = logic.new_state(key)
        fx = self.fx
        logic.on_event(st, ev, fx)
        self.timers.want(group, key, logic.timers(st))
        self._drain(fx)

    def advance(self, limit_us: int, inclusive: bool) -> None:
        fx = self.fx
        for group, key, name, due in self.timers.pop_due(limit_us, inclusive):
            st = self.states[group].get(key)
            if st is None:
                continue
            logic = self.logic[group]
            logic.on_timer(st, name, due, fx)
            self.timers.want(group, key, logic.timers(st))
            self._drain(fx)

    def finish(self, until_us: int | None = None) -> None:
        """Move the clock to ``until`` (default: the greatest ts seen) firing every timer due by then."""
        if until_us is None:
            until_us = self.clock.now_us
        if until_us is None:
            return
        self.advance(until_us, inclusive=True)
        self.clock.observe(until_us)
        self.final_us = until_us

    def _drain(self, fx: Effects) -> None:
        if fx.contribs:
            shops = self.states[SHOP]
            shop_logic = self.logic[SHOP]
            touched = set()
            for c in fx.contribs:
                k = (c[0], c[1])
                st = shops.get(k)
                if st is None:
                    st = shops[k] = shop_logic.new_state(k)
                shop_logic.on_contrib(st, c, fx)
                touched.add(k)
            fx.contribs.clear()
            for k in touched:
                self.timers.want(SHOP, k, shop_logic.timers(shops[k]))
        if fx.alerts:
            self.alerts.extend(fx.alerts)
            fx.alerts.clear()
        if fx.snapshots:
            self.snapshots.extend(fx.snapshots)
            fx.snapshots.clear()

    # -------------------------------------------------------------- reading
    def scores(self, as_of_us: int | None = None) -> list[dict]:
        if as_of_us is None:
            as_of_us = self.final_us if self.final_us is not None else self.clock.now_us
        as_of = as_of_us
        shop_logic = self.logic[SHOP]
        return [shop_logic.snapshot(st, as_of) for _k, st in sorted(self.states[SHOP].items())]
