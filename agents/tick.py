"""`shopwatch tick --until T`: move the event-time clock of a running topology to T.

In the ``event`` clock domain the workers' clock is the event time they have
seen. At the end of a backfill (or a test), this sends one tick per partition
of shop.ticks that flushes every partition's merge queues and fires every
timer due at or before T, the way `shopwatch replay --until T` ends.

T must lie in the sane window of event time the workers accept (see
schemas/events.py): not before ``SHOPWATCH_MIN_EVENT_TIME`` and not after the
wall clock (read once, here) plus ``SHOPWATCH_MAX_FUTURE_SKEW_S``. A tick to
9999-12-31 would otherwise fire every pending timer of every partition and
leave their clocks there. A refused T, a bad setting and a broker that cannot
be reached are each one line on stderr (exit 2 for the first two, 1 for the
broker), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import orjson

from shopwatch.schemas.events import TOPIC_TICKS, InvalidEvent, fmt_us, parse_ts_us

from .replay import UsageError, time_window, wall_now_us
from .settings import settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--until", required=True, help="RFC 3339 timestamp to move the clock to")
    p.add_argument("--no-flush", action="store_true", help="do not release queued records")
    p.set_defaults(func=run)


async def send_ticks(until_us: int, flush: bool = True, bootstrap: str | None = None) -> None:
    from aiokafka import AIOKafkaProducer

    s = settings()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap or s.bootstrap, acks="all")
    try:
        await producer.start()
        topic = s.topic(TOPIC_TICKS)
        parts = await producer.partitions_for(topic)
        value = orjson.dumps({"now_us": until_us, "flush": flush})
        for q in sorted(parts):
            await producer.send_and_wait(topic, value, key=b"__tick__", partition=q)
    finally:
        await producer.stop()


def check_until(until_us: int, now_us: int) -> None:
    """Refuse a tick outside [SHOPWATCH_MIN_EVENT_TIME, now + SHOPWATCH_MAX_FUTURE_SKEW_S]."""
    min_us, max_us = time_window(None, now_us)
    if until_us < min_us:
        raise UsageError(f"--until: {fmt_us(until_us)} is before the earliest accepted event time "
                         f"{settings().min_event_time} (SHOPWATCH_MIN_EVENT_TIME)")
    if until_us > max_us:
        raise UsageError(f"--until: {fmt_us(until_us)} is in the future: after the latest accepted event "
                         f"time {fmt_us(max_us)} (the wall clock plus SHOPWATCH_MAX_FUTURE_SKEW_S)")


def run(args: argparse.Namespace) -> int:
    try:
        until = parse_ts_us(args.until, "--until")
        check_until(until, wall_now_us())
    except (InvalidEvent, UsageError) as exc:
        print(f"shopwatch tick: {exc}", file=sys.stderr)
        return 2
    # the failure is reported below in one line; aiokafka would log it again (and its retries)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        asyncio.run(send_ticks(until, not args.no_flush))
    except KeyboardInterrupt:
        print("shopwatch tick: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a broker error is one line, not a traceback
        print(f"shopwatch tick: cannot send the ticks to {settings().bootstrap}: "
              f"{str(exc) or type(exc).__name__}", file=sys.stderr)
        return 1
    return 0
