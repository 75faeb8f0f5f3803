"""Time, the one convention: integer microseconds since the Unix epoch (UTC), ``*_us``.

Event timestamps carry microseconds (``2026-10-05T15:16:27.963330+08:00``), so
``_ms`` would lose the instant an alert must report. Local time for every rule
is Asia/Shanghai, UTC+8 with no DST, so a local day is a fixed 24 h span and
is kept as an integer day number (days since 1970-01-01 local).

The core never reads a wall clock: a clock is injected and names its domain.
``EventClock`` (replay, tests, backfills) is driven by event time; the live
shell brings its own wall clock with the same interface.
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
    """Event-time clock: ``now_us`` is the watermark, the greatest event time seen."""

    domain = EVENT

    def __init__(self, start_us: int | None = None) -> None:
        self.now_us = start_us

    def observe(self, ts_us: int) -> int:
        if self.now_us is None or ts_us > self.now_us:
            self.now_us = ts_us
        return self.now_us
