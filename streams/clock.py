"""Time, the one convention: integer microseconds since the Unix epoch (UTC), ``*_us``.

Event timestamps carry microseconds (``2026-10-05T15:16:27.963330+08:00``), so
``_ms`` would lose the instant an alert must report. Local time for every rule
is Asia/Shanghai, UTC+8 with no DST, so a local day is a fixed 24 h span and
is kept as an integer day number (days since 1970-01-01 local).

The core never reads a wall clock: a clock object is injected and names its
domain (``EVENT`` or ``WALL``); every rule is computed in event time either way,
the domain only says what moves the clock and when timers fire.
``EventClock`` (replay, tests, backfills) is driven by event time;
``WallClock`` is driven by the instants the shell reads from the wall (its
``read`` is injected, so the core still reads none) and hands in with ticks.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

US = 1_000_000
MINUTE_US = 60 * US
HOUR_US = 3600 * US
DAY_US = 24 * HOUR_US
LOCAL_OFFSET_US = 8 * HOUR_US
LOCAL_TZ = timezone(timedelta(hours=8))
_EPOCH_DATE = date(1970, 1, 1)

EVENT = "event"
WALL = "wall"


def local_day(us: int) -> int:
    """Local (Asia/Shanghai) calendar day number of an instant."""
    return (us + LOCAL_OFFSET_US) // DAY_US


def day_start_us(day: int) -> int:
    """The instant local midnight begins ``day``."""
    return day * DAY_US - LOCAL_OFFSET_US


def local_second_of_day(us: int) -> int:
    return ((us + LOCAL_OFFSET_US) % DAY_US) // US


def day_str(day: int) -> str:
    return (_EPOCH_DATE + timedelta(days=day)).isoformat()


def day_of_date(s: str) -> int:
    return (date.fromisoformat(s) - _EPOCH_DATE).days


def fmt_ts(us: int) -> str:
    """RFC 3339 in local time (+08:00), microseconds only when present."""
    dt = datetime.fromtimestamp(us // US, LOCAL_TZ)
    frac = us % US
    s = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        s += f".{frac:06d}"
    return s + "+08:00"


def fmt_minute(us: int) -> str:
    """Short local form for summaries: 2026-11-22 10:00."""
    return datetime.fromtimestamp(us // US, LOCAL_TZ).strftime("%Y-%m-%d %H:%M")


def hours(us: int) -> float:
    return us / HOUR_US


class EventClock:
    """Event-time clock: ``now_us`` is the watermark, the greatest event time seen.

    The policy the partitions follow (``streams/partition.py``): sources are
    merged by event time before their records apply (``merges``); an applied
    event moves the clock and first fires the timers due strictly before it
    (``events_advance``); a tick to T fires the timers due at or before T, like
    replay's ``--until`` (``ticks_inclusive``)."""

    domain = EVENT
    merges = True
    events_advance = True
    ticks_inclusive = True

    def __init__(self, start_us: int | None = None) -> None:
        self.now_us = start_us

    def observe(self, ts_us: int) -> int:
        if self.now_us is None or ts_us > self.now_us:
            self.now_us = ts_us
        return self.now_us

    def tick_time(self) -> None:
        """What a tick the shell sends carries: no time (events move this clock; an empty
        tick only lets idle sources release the merge)."""
        return None


class WallClock:
    """Wall-clock time (a live worker): ``read()`` is the wall clock the shell injects
    (the core never calls it); ticks carry what it read.

    The policy the partitions follow: records apply as they arrive (no merge),
    events do not move the clock, and a tick to now fires the timers due strictly
    before it."""

    domain = WALL
    merges = False
    events_advance = False
    ticks_inclusive = False

    def __init__(self, read=None) -> None:
        self.read = read

    @property
    def now_us(self) -> int | None:
        return None if self.read is None else self.read()

    def observe(self, ts_us: int) -> int | None:
        return self.now_us

    def tick_time(self) -> int:
        """What a tick the shell sends carries: the wall clock's now."""
        return self.read()


def clock_of(domain) -> EventClock | WallClock:
    """A clock object for ``domain`` (``EVENT`` or ``WALL``); a clock object is returned as is."""
    if domain == EVENT:
        return EventClock()
    if domain == WALL:
        return WallClock()
    if getattr(domain, "domain", None) in (EVENT, WALL):
        return domain
    raise ValueError(f"unknown clock domain {domain!r}")
