"""The whole core in one process on an event-time clock (replay, tests, benchmarks).

Routes each validated event to its order or session logic, their contribution
deltas to the shop logic, and keeps every wanted timer in one heap. Before an
event with ``ts`` t is applied, every timer due strictly before t fires, in
order of due time (ties by the timer's subject); ``finish(until)`` fires every
timer due at or before ``until``. No I/O: alerts and score snapshots are
handed to the caller.

The Kafka shell runs the same logic objects split by key across partitions;
``TimerHeap`` (streams/timers.py) is shared with it.
"""

from __future__ import annotations

from heapq import heappush

from .clock import EventClock, day_start_us
from .effects import Effects
from .orders import OrderLogic
from .retention import RETIRE, Calendar, Retention
from .rules import DEFAULT_RULES, Rules
from .sessions import SessionLogic
from .shop import ShopLogic
from .steps import Steps
from .timers import TimerHeap

ORDER, SESSION, SHOP = "order", "session", "shop"



def group_of(ev: dict) -> str:
    return SESSION if ev["type"][:5] == "chat." else ORDER


class Engine(Steps):
    """Hot path notes (the outputs are those of the plain loop: apply, want
    ``timers(state)``, drain; these only skip work that would change nothing):

    - Every change of a state is followed by ``want(timers(state))``, so for each
      key the heap's ``scheduled`` holds every timer its state wants, at the
      wanted time. Hence a popped entry that is not the scheduled one is stale:
      ``on_timer`` would be a no-op and the timers unchanged, so it is skipped.
      After an event, an order's timers it no longer wants (a ship warning once
      shipped...) are unscheduled, so that their entries are skipped too.
    - Session logic has no timers; a shop's timers depend only on
      ``ShopLogic.timer_key`` (its half-day of local time, open caps, level), so
      they are wanted again only when that key changed since they last were.
    - The heap is only popped by the shared loop (streams/steps.py), never through ``pop_due``.

    Retention (streams/retention.py): after each step an order or session is filed in
    ``calendar`` under its retirement day, and one heap entry per day (group ``RETIRE``, key the
    day) sweeps that day's entities at its midnight: those whose day did not move are dropped
    with their timers (``retired`` counts them), the others are filed again.
    """

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
        self._shop_tkeys: dict = {}  # shop key -> ShopLogic.timer_key when its timers were last wanted
        self.retention = Retention(rules)
        self.calendar = Calendar()  # (group, key) -> retirement day
        self.retired = {ORDER: 0, SESSION: 0}
        # the hot path's shortcuts to the same objects
        self._orders, self._order_logic = self.states[ORDER], self.logic[ORDER]
        self._sessions, self._session_logic = self.states[SESSION], self.logic[SESSION]
        self._order_sched = self.timers.scheduled.setdefault(ORDER, {})
        # the step loop's tables (streams/steps.py)
        self._group_logic, self._group_states = self.logic, self.states
        self._stepped = {ORDER: self._order_stepped, SESSION: self._session_stepped, SHOP: self._shop_stepped}

    # -------------------------------------------------------------- driving
    def process(self, ev: dict) -> None:
        """Apply one validated event (after firing the timers due strictly before it)."""
        ts = ev["ts_us"]
        heap = self.timers.heap
        if heap and heap[0][0] < ts:
            self.fire(ts, inclusive=False)
        clock = self.clock
        now = clock.now_us
        if now is None or ts > now:
            clock.now_us = ts
        if ev["type"][:5] == "chat.":
            self.step(SESSION, ev["session_id"], ev)
        else:
            self.step(ORDER, ev["order_id"], ev)

    def advance(self, limit_us: int, inclusive: bool) -> None:
        self.fire(limit_us, inclusive)

    # the step loop's hooks (streams/steps.py)
    def _new_state(self, group: str, key, ev: dict):
        return self.logic[group].new_state(key)

    def _order_stepped(self, key, st) -> None:
        wanted = self._order_logic.timers(st)
        per = self._order_sched.get(key)
        if wanted:  # self.timers.want(ORDER, key, wanted, exact=True), inline
            if per is None:
                per = self._order_sched[key] = {}
            for name, due in wanted.items():
                if per.get(name) != due:
                    per[name] = due
                    heappush(self.timers.heap, (due, f"{name}:{key}", ORDER, key, name))
            if len(per) > len(wanted):  # timers no longer wanted: their entries are stale now
                for name in list(per):
                    if name not in wanted:
                        del per[name]
        elif per is not None:
            del self._order_sched[key]
        self._file(ORDER, key, st, wanted)
        fx = self.fx
        if fx.contribs or fx.alerts or fx.snapshots:
            self._drain(fx)

    def _session_stepped(self, key, st) -> None:
        logic = self._session_logic
        if logic.has_timers:
            self.timers.want(SESSION, key, logic.timers(st))
        self._file(SESSION, key, st, None)
        fx = self.fx
        if fx.contribs or fx.alerts or fx.snapshots:
            self._drain(fx)

    def _shop_stepped(self, key, st) -> None:  # a shop timer fired
        self.timers.want(SHOP, key, self.logic[SHOP].timers(st))
        self._shop_tkeys.pop(key, None)
        fx = self.fx
        if fx.contribs or fx.alerts or fx.snapshots:
            self._drain(fx)

    # ------------------------------------------------------------ retention
    def _file(self, group: str, key, st, wanted) -> None:
        d = self.retention.day_of(self.logic[group], st, wanted)
        if d is not None and self.calendar.file((group, key), d):
            self.timers.want(RETIRE, d, {RETIRE: day_start_us(d)})

    def _sweep(self, day: int) -> None:
        """The midnight beginning ``day``: retire the entities filed there whose day did not move."""
        for gk in self.calendar.take(day):
            group, key = gk
            states = self.states[group]
            st = states.get(key)
            if st is None:
                continue
            logic = self.logic[group]
            wanted = logic.timers(st) if logic.has_timers else None
            d = self.retention.day_of(logic, st, wanted)
            if d is not None and d > day:
                if self.calendar.file(gk, d):
                    self.timers.want(RETIRE, d, {RETIRE: day_start_us(d)})
                continue
            del states[key]
            self.timers.scheduled.get(group, {}).pop(key, None)
            self.retired[group] += 1

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
        contribs = fx.contribs
        if contribs:
            shops = self.states[SHOP]
            shop_logic = self.logic[SHOP]
            tkeys = self._shop_tkeys
            n = len(contribs)
            i = 0
            while i < n:  # each run of one shop's contributions (a step's are all one shop's)
                c = contribs[i]
                p, shop_id = c.platform, c.shop_id
                j = i + 1
                while j < n and contribs[j].shop_id == shop_id and contribs[j].platform == p:
                    j += 1
                k = (p, shop_id)
                st = shops.get(k)
                if st is None:
                    st = shops[k] = shop_logic.new_state(k)
                shop_logic.on_contribs(st, contribs if j - i == n else contribs[i:j], fx)
                tk = shop_logic.timer_key(st)
                if tkeys.get(k) != tk:
                    self.timers.want(SHOP, k, shop_logic.timers(st))
                    tkeys[k] = tk
                i = j
            contribs.clear()
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
