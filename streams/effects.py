"""What a logic step records: its effects (past-tense outputs) and its contributions.

A logic object (orders, sessions, shops) follows bytewax's StatefulLogic:
``on_event(state, event, fx)`` and ``on_timer(state, name, due_us, fx)`` update
the state the caller owns and record what happened in ``fx``; ``timers(state)``
names every deadline the state wants (timers are data: a shell keeps them in
a heap, ``streams/timers.py``, and rebuilds the heap from states after recovery).

Indicator contributions are *absolute* facts per entity: item key -> (indicator,
attribution instant, num, den). After each step the entity's items are recomputed
from its state and diffed against the previous items; only the difference
(a ``Contribution``) travels to the shop aggregate. That makes every indicator
independent of the arrival order of an entity's events and of duplicates, by
construction.
"""

from __future__ import annotations

from typing import NamedTuple


class Contribution(NamedTuple):
    """One delta of a shop's indicator: ``dnum``/``dden`` added to the local day of
    ``attribution_us``, caused by a step at ``at_us`` (the shop's clock)."""

    platform: str
    shop_id: str
    indicator: str
    attribution_us: int
    dnum: float
    dden: int
    at_us: int


class Effects:
    """Outputs of one step: alerts emitted and indicator contribution deltas."""

    __slots__ = ("alerts", "contribs", "snapshots")

    def __init__(self) -> None:
        self.alerts: list[dict] = []
        self.snapshots: list[dict] = []  # score snapshots due (小红书 12:00)
        self.contribs: list[Contribution] = []

    def clear(self) -> None:
        self.alerts.clear()
        self.contribs.clear()
        self.snapshots.clear()


def diff_items(old: dict, new: dict, platform: str, shop_id: str, at_us: int, out: list) -> None:
    """Append the deltas that turn ``old`` items into ``new`` ones."""
    if old == new:
        return
    for k, o in old.items():
        n = new.get(k)
        if n == o:
            continue
        out.append(Contribution(platform, shop_id, o[0], o[1], -o[2], -o[3], at_us))
    for k, n in new.items():
        if old.get(k) != n:
            out.append(Contribution(platform, shop_id, n[0], n[1], n[2], n[3], at_us))
