"""Retention (issue 13): an order or chat session that no rule can touch again is retired.

The rule, the same in replay (``engine.py``) and in the workers (``partition.py``):

- An entity's *latest instant* L is the latest of its facts (every event instant it keeps:
  paid, latest ship time, shipped, scans, signed, cancelled, reviews, complaints, refund
  steps; a session's start, assignment, messages, close, rating), of the deadlines it still
  wants (``timers``) and so of every attribution instant of its items.
- Its platform's *retention* is ``retention_days`` when set (rules, global or per platform),
  else the derived horizon plus ``retention_margin_days``. The derived horizon is the longest
  reach of the rules in force for that platform: its longest indicator window (小红书 180 days
  from signing, ...), the 抖音 物流品退率 cohort's reach (104 days after payment), and
  ``after_sale_days``, how long after the trade an after-sale request or dispute may still come
  (rules.md §9: 抖音 耐用品 6 months, the longest the seeds name, taken for every platform).
- The entity retires at the first local midnight M strictly after L + retention, on the event
  clock, as a timer due at M would fire: before an event with ts > M is applied, or at the end
  of a replay whose final clock is ≥ M. Only event time decides; the facts keep their earliest
  instants, so L (and M) does not depend on the arrival order of an entity's events.
- Retiring drops the state, its deadlines and its event ids (duplicates are recognised as long
  as the entity lives). Its indicator items stay counted in its shop's day buckets. An event for
  a retired entity is an event for an unknown one: a fresh state, whose items add to the
  shop's like any new entity's.

Entities are filed by their retirement day in a ``Calendar``; one timer per day (not per
entity) sweeps that day's entities, and an entity whose M moved later is filed again.
"""

from __future__ import annotations

from .clock import DAY_US, LOCAL_OFFSET_US
from .shop import COHORT_FIRST, INDICATORS

RETIRE = "retire"  # the timer group (and timer name) of the daily sweep


def derived_horizon_days(rules, platform: str) -> int:
    """The longest reach, in days, of the rules in force for ``platform`` (no margin)."""
    windows = [days for _name, days, _kind in INDICATORS.get(platform, ())]
    if platform == "douyin":
        windows.append(COHORT_FIRST)
    windows.append(rules.get(platform, "after_sale_days") or 0)
    return int(max(windows))


def retention_days(rules, platform: str) -> float:
    over = rules.get(platform, "retention_days")
    if over is not None:
        return over
    return derived_horizon_days(rules, platform) + (rules.get(platform, "retention_margin_days") or 0)


class Retention:
    """The rule for one set of rules: ``day(platform, latest_us)`` is the local day whose
    midnight retires an entity of that platform with that latest instant."""

    def __init__(self, rules) -> None:
        self.rules = rules
        self._us: dict = {}

    def retention_us(self, platform) -> int:
        r = self._us.get(platform)
        if r is None:
            r = self._us[platform] = int(retention_days(self.rules, platform) * DAY_US)
        return r

    def day(self, platform, latest_us: int) -> int:
        # the first midnight strictly after latest + retention: the day after that instant's day
        return (latest_us + self.retention_us(platform) + LOCAL_OFFSET_US) // DAY_US + 1

    def day_of(self, logic, st, wanted: dict | None = None) -> int | None:
        """The retirement day of a state (None: no event applied yet)."""
        latest = logic.latest_us(st)
        if latest is None:
            return None
        if wanted:
            m = max(wanted.values())
            if m > latest:
                latest = m
        return self.day(st.platform, latest)


class Calendar:
    """key -> retirement day, and day -> keys filed there."""

    __slots__ = ("day_of", "days")

    def __init__(self) -> None:
        self.day_of: dict = {}
        self.days: dict[int, dict] = {}

    def file(self, key, day: int) -> bool:
        """File ``key`` under ``day``; True when that day had nothing filed yet (a sweep to want)."""
        if self.day_of.get(key) == day:
            return False
        self.forget(key)
        self.day_of[key] = day
        ks = self.days.get(day)
        if ks is None:
            self.days[day] = {key: None}
            return True
        ks[key] = None
        return False

    def forget(self, key) -> None:
        old = self.day_of.pop(key, None)
        if old is not None:
            ks = self.days.get(old)
            if ks is not None:
                ks.pop(key, None)
                if not ks:
                    del self.days[old]

    def take(self, day: int) -> list:
        """The keys filed under ``day`` (no longer filed), in the order they were filed."""
        ks = self.days.pop(day, None)
        if not ks:
            return []
        for k in ks:
            del self.day_of[k]
        return list(ks)

    def __len__(self) -> int:
        return len(self.day_of)
