"""What every logic object shares: effects (past-tense outputs) and contribution diffs.

A logic object (orders, sessions, shops) follows bytewax's StatefulLogic:
``on_event(state, event, fx)`` and ``on_timer(state, name, due_us, fx)`` update
the state the caller owns and record what happened in ``fx``; ``timers(state)``
names every deadline the state wants (timers are data: a shell keeps them in
a heap and rebuilds the heap from states after recovery); ``snapshot`` /
``restore`` turn state into JSON-able dicts for a changelogged table.

Indicator contributions are *absolute* facts per entity: item key -> (indicator,
attribution instant, num, den). After each step the entity's items are recomputed
from its state and diffed against the previous items; only the difference
travels to the shop aggregate. That makes every indicator independent of the
arrival order of an entity's events and of duplicates, by construction.
"""

from __future__ import annotations


class Effects:
    """Outputs of one step: alerts emitted and indicator contribution deltas."""

    __slots__ = ("alerts", "contribs", "snapshots")

    def __init__(self) -> None:
        self.alerts: list[dict] = []
        self.snapshots: list[dict] = []  # score snapshots due (小红书 12:00)
        # (platform, shop_id, indicator, attribution_us, dnum, dden, at_us)
        self.contribs: list[tuple] = []

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
        out.append((platform, shop_id, o[0], o[1], -o[2], -o[3], at_us))
    for k, n in new.items():
        if old.get(k) != n:
            out.append((platform, shop_id, n[0], n[1], n[2], n[3], at_us))


def admit(s, ev: dict) -> bool:
    """The common first step of an entity's logic: drop a duplicate ``event_id``,
    take platform and shop from the first event, keep the earliest ``ts``."""
    eid = ev["event_id"]
    if eid in s.seen:
        return False
    s.seen.add(eid)
    if s.platform is None:
        s.platform, s.shop_id = ev["platform"], ev["shop_id"]
    ts = ev["ts_us"]
    if s.first_us is None or ts < s.first_us:
        s.first_us = ts
    return True


def update_items(s, new: dict, at_us: int, fx: Effects) -> None:
    """Replace an entity's indicator items, sending the difference to its shop."""
    if new != s.items:
        diff_items(s.items, new, s.platform, s.shop_id, at_us, fx.contribs)
        s.items = new
        s.ver += 1


def document_fields(d: list, what: str, fmt: int, n: int) -> list:
    """The fields of a positional state document of format ``fmt``, padded to ``n``
    with None (a document does not store its trailing empty fields)."""
    if d[0] != fmt:
        raise ValueError(f"{what} document of an unknown format: {d[0]!r}")
    return d if len(d) >= n else [*d, *(None,) * (n - len(d))]
