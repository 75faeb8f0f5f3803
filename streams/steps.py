"""The step loop every runner shares: replay's engine (streams/replay_engine.py) and both
partition kinds (streams/partition.py).

A runner holds, per group of keys, the states of one logic object (orders, chat
sessions, shops) and one timer heap (streams/timers.py) for all of them. A step is
one event applied to its entity (``step``) or one due timer fired (``fire``); after
each, the runner's ``_stepped[group](key, state)`` wants the state's timers again,
so that the heap's ``scheduled`` holds every timer each state wants, at the wanted
time, files the state for retirement and hands on what the step recorded in
``self.fx`` (replay: to the shop logic and the alert list; a partition: to its
outbox and outputs). Because of that invariant a popped entry that is not the
scheduled one is stale (``on_timer`` would do nothing) and is skipped.

What a runner provides: ``timers`` (a TimerHeap), ``fx`` (Effects), and per group
(dicts, the hot path's lookups): ``_group_logic`` (its logic object),
``_group_states`` (its states), ``_stepped`` (``after(key, state)``, run after each
step); and the methods ``_new_state(group, key, ev)`` and ``_sweep(day)`` (the
retirement sweep that a ``RETIRE`` entry, keyed by its day, asks for).
"""

from __future__ import annotations

from heapq import heappop

from .retention import RETIRE


class Steps:
    """The shared loop; see the module docstring for what a subclass provides."""

    __slots__ = ()

    def step(self, group: str, key, ev: dict):
        """Apply ``ev`` to the state of ``key`` (a new one when there is none yet)."""
        states = self._group_states[group]
        st = states.get(key)
        if st is None:
            st = states[key] = self._new_state(group, key, ev)
        self._group_logic[group].on_event(st, ev, self.fx)
        self._stepped[group](key, st)
        return st

    def fire(self, limit_us: int, inclusive: bool) -> None:
        """Fire every timer due before ``limit_us`` (at or before it, if ``inclusive``), in
        order of due time (ties by the timer's subject)."""
        timers = self.timers
        heap = timers.heap
        take = timers.take
        fx = self.fx
        group_states, group_logic, stepped = self._group_states, self._group_logic, self._stepped
        while heap and (heap[0][0] < limit_us or (inclusive and heap[0][0] == limit_us)):
            due, _tie, group, key, name = heappop(heap)
            if not take(group, key, name, due):
                continue  # stale: on_timer would do nothing
            if group == RETIRE:
                self._sweep(key)
                continue
            st = group_states[group].get(key)
            if st is None:
                continue
            group_logic[group].on_timer(st, name, due, fx)
            stepped[group](key, st)
