"""Timers as data: the due-time heap every runner keeps (replay's engine, each partition).

A logic object names the deadlines its state wants (``timers(state)``: name ->
due instant, in its clock's domain); the runner keeps them here, pops the due
ones and calls ``on_timer``. After a recovery the heap is rebuilt from the
states, so it is never stored.
"""

from __future__ import annotations

from heapq import heappop, heappush

from .clock import EVENT


class TimerHeap:
    """Due-time heap of (due_us, tie, group, key, name) with lazy cancellation.

    Entries are only hints: the logic's ``on_timer`` checks that the state still
    wants that timer at that time, so a stale entry is harmless. ``scheduled``
    (group -> key -> {name: due} of the entries wanted and not yet popped)
    avoids pushing the same (key, name, due) twice.
    """

    domain = EVENT

    def __init__(self) -> None:
        self.heap: list[tuple] = []
        self.scheduled: dict[str, dict] = {}

    def want(self, group: str, key, wanted: dict[str, int], exact: bool = False) -> None:
        """Schedule each of ``wanted`` (name -> due) not scheduled at that time yet. ``exact``:
        ``wanted`` is every timer the key wants, so the others scheduled for it are no longer
        wanted: their entries become stale and are skipped when popped."""
        sg = self.scheduled.get(group)
        if not wanted:
            if exact and sg is not None:
                sg.pop(key, None)
            return
        if sg is None:
            sg = self.scheduled[group] = {}
        per = sg.get(key)
        if per is None:
            per = sg[key] = {}
        for name, due in wanted.items():
            if per.get(name) != due:
                per[name] = due
                heappush(self.heap, (due, f"{name}:{key}", group, key, name))
        if exact and len(per) > len(wanted):
            for name in [n for n in per if n not in wanted]:
                del per[name]

    def take(self, group: str, key, name: str, due: int) -> bool:
        """A popped entry: whether it was the scheduled one (then no longer scheduled)."""
        sg = self.scheduled[group]
        per = sg.get(key)
        if per is None or per.get(name) != due:
            return False
        del per[name]
        if not per:
            del sg[key]
        return True

    def pop_due(self, limit_us: int, inclusive: bool):
        """Yield (group, key, name, due) for entries due before (or at) ``limit_us``."""
        heap = self.heap
        while heap and (heap[0][0] < limit_us or (inclusive and heap[0][0] == limit_us)):
            due, _tie, group, key, name = heappop(heap)
            self.take(group, key, name, due)
            yield group, key, name, due

    def next_due(self):
        return self.heap[0][0] if self.heap else None

    def __len__(self) -> int:
        return len(self.heap)
