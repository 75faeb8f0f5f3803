"""`shopwatch tick --until T`: move the event-time clock of a running topology to T.

In the ``event`` clock domain the workers' clock is the event time they have
seen. At the end of a backfill (or a test), this sends one tick per partition
of shop.ticks that flushes every partition's merge queues and fires every
timer due at or before T, the way `shopwatch replay --until T` ends.
"""

from __future__ import annotations

import argparse
import asyncio

import orjson

from shopwatch.schemas.events import InvalidEvent, parse_ts_us

from .settings import settings
from .topology import TOPIC_TICKS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--until", required=True, help="RFC 3339 timestamp to move the clock to")
    p.add_argument("--no-flush", action="store_true", help="do not release queued records")
    p.set_defaults(func=run)


async def send_ticks(until_us: int, flush: bool = True, bootstrap: str | None = None) -> None:
    from aiokafka import AIOKafkaProducer

    s = settings()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap or s.bootstrap, acks="all")
    await producer.start()
    try:
        topic = s.topic(TOPIC_TICKS)
        parts = await producer.partitions_for(topic)
        value = orjson.dumps({"now_us": until_us, "flush": flush})
        for q in sorted(parts):
            await producer.send_and_wait(topic, value, key=b"__tick__", partition=q)
    finally:
        await producer.stop()


def run(args: argparse.Namespace) -> int:
    try:
        until = parse_ts_us(args.until, "--until")
    except InvalidEvent as exc:
        print(f"shopwatch tick: {exc}")
        return 2
    asyncio.run(send_ticks(until, not args.no_flush))
    return 0
