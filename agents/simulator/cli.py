"""`shopwatch simulate`: the command (JSONL to a file or stdout, or Kafka; paced or not)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from shopwatch.schemas.events import PLATFORMS

from .dirt import DEFAULT_DIRTY, records
from .world import (
    DEFAULT_CHATS_PER_ORDER,
    DEFAULT_DAYS,
    DEFAULT_ORDERS_PER_SHOP_DAY,
    DEFAULT_SHOPS,
    DEFAULT_START,
    parse_start,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Generate a realistic, deterministic event stream (JSONL or Kafka). Valid events are sorted by ts; "
        "--dirty adds re-delivered duplicates and malformed lines, half each."
    )
    parser.add_argument("--seed", default="42", help="random seed (same seed, same bytes); default 42")
    parser.add_argument("--shops", type=int, default=DEFAULT_SHOPS,
                        help=f"number of shops, round-robin over {', '.join(PLATFORMS)} (default {DEFAULT_SHOPS})")
    parser.add_argument("--days", type=int, default=None,
                        help=f"local days to simulate (default {DEFAULT_DAYS}; endless when --events is given)")
    parser.add_argument("--start", default=DEFAULT_START, help=f"first day, YYYY-MM-DD (default {DEFAULT_START})")
    parser.add_argument("--orders-per-shop-day", type=float, default=DEFAULT_ORDERS_PER_SHOP_DAY,
                        help=f"mean orders per shop and day, before each shop's scale (default "
                             f"{DEFAULT_ORDERS_PER_SHOP_DAY:g})")
    parser.add_argument("--chats-per-order", type=float, default=DEFAULT_CHATS_PER_ORDER,
                        help=f"consultations per order (default {DEFAULT_CHATS_PER_ORDER:g})")
    parser.add_argument("--events", type=int, default=None, help="stop after this many records (lines)")
    parser.add_argument("--dirty", type=float, default=DEFAULT_DIRTY,
                        help=f"fraction of dirty records: duplicates and malformed lines, half each "
                             f"(default {DEFAULT_DIRTY:g})")
    parser.add_argument("--id-prefix", default="", help="prefix of every generated id (default none)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--out", default="-", help="JSONL file to write, '-' for stdout (default)")
    out.add_argument("--kafka", action="store_true",
                     help="produce to the input topics (settings: KAFKA_BOOTSTRAP, SHOPWATCH_TOPIC_*)")
    parser.add_argument("--rate", type=float, default=0.0, help="records per second, 0 = as fast as possible")
    parser.add_argument("--quiet", action="store_true", help="no summary on stderr")
    parser.set_defaults(func=run)


def _seed(value: str) -> int | str:
    try:
        return int(value)
    except ValueError:
        return value


class _Pacer:
    """Keeps an average rate (records per second) using the monotonic clock; pacing only, never data."""

    def __init__(self, rate: float):
        self.rate = rate
        self.t0 = time.monotonic()
        self.every = max(1, min(1000, int(rate / 50) or 1))

    def delay(self, n: int) -> float:
        return n / self.rate - (time.monotonic() - self.t0)


def _write(recs, out: str, rate: float, counts: dict) -> None:
    f = sys.stdout.buffer if out == "-" else open(out, "wb")
    pacer = _Pacer(rate) if rate > 0 else None
    buf: list[bytes] = []
    try:
        n = 0
        for kind, _topic, _key, b in recs:
            buf.append(b)
            counts[kind] += 1
            n += 1
            if pacer is not None and n % pacer.every == 0:
                f.write(b"\n".join(buf) + b"\n")
                buf.clear()
                f.flush()
                d = pacer.delay(n)
                if d > 0:
                    time.sleep(d)
            elif len(buf) >= 8192:
                f.write(b"\n".join(buf) + b"\n")
                buf.clear()
        if buf:
            f.write(b"\n".join(buf) + b"\n")
        f.flush()
    finally:
        if f is not sys.stdout.buffer:
            f.close()


async def _produce(recs, rate: float, counts: dict) -> None:
    from aiokafka import AIOKafkaProducer

    from shopwatch.agents.settings import settings

    cfg = settings()
    topics: dict[str, str] = {}
    producer = AIOKafkaProducer(bootstrap_servers=cfg.bootstrap, acks="all", linger_ms=20,
                                max_batch_size=256 * 1024, max_request_size=4 * 1024 * 1024)
    await producer.start()
    pacer = _Pacer(rate) if rate > 0 else None
    try:
        futures = []
        n = 0
        for kind, topic, key, b in recs:
            name = topics.get(topic)
            if name is None:
                name = topics[topic] = cfg.topic(topic)
            futures.append(await producer.send(name, value=b, key=key.encode()))
            counts[kind] += 1
            n += 1
            if len(futures) >= 20000:
                await asyncio.gather(*futures)  # raises on a delivery failure
                futures.clear()
            if pacer is not None and n % pacer.every == 0:
                d = pacer.delay(n)
                if d > 0:
                    await asyncio.sleep(d)
        await producer.flush()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def run(args: argparse.Namespace) -> int:
    days = args.days
    if days is None and args.events is None:
        days = DEFAULT_DAYS
    try:
        start = parse_start(args.start)
        if args.shops < 1 or (days is not None and days < 1):
            raise ValueError("--shops and --days must be >= 1")
        if args.events is not None and args.events < 0:
            raise ValueError("--events must be >= 0")
        if args.rate < 0 or args.orders_per_shop_day < 0 or args.chats_per_order < 0:
            raise ValueError("--rate, --orders-per-shop-day and --chats-per-order must be >= 0")
        if not 0.0 <= args.dirty < 1.0:
            raise ValueError("--dirty must be in [0, 1)")
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    recs = records(_seed(args.seed), args.shops, days, start, dirty=args.dirty, events=args.events,
                   orders_per_shop_day=args.orders_per_shop_day, chats_per_order=args.chats_per_order,
                   id_prefix=args.id_prefix)
    counts = {"event": 0, "duplicate": 0, "malformed": 0}
    t0 = time.monotonic()
    try:
        if args.kafka:
            asyncio.run(_produce(recs, args.rate, counts))
            where = "kafka"
        else:
            _write(recs, args.out, args.rate, counts)
            where = "stdout" if args.out == "-" else args.out
    except BrokenPipeError:  # e.g. `| head`: not an error
        try:
            sys.stdout = open("/dev/null", "w")
        except OSError:
            pass
        return 0
    except OSError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        total = sum(counts.values())
        dt = time.monotonic() - t0
        print(f"simulate: {total} records to {where} ({counts['event']} events, {counts['duplicate']} duplicates, "
              f"{counts['malformed']} malformed) in {dt:.1f} s", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shopwatch simulate")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
