"""The `shopwatch` command: replay, worker, simulate."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shopwatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    from shopwatch.agents import replay

    replay.add_arguments(sub.add_parser("replay", help="run the rules over a JSONL file on an event-time clock"))
    try:
        from shopwatch.agents import simulate
    except ImportError:  # pragma: no cover - during bootstrap
        simulate = None
    if simulate is not None:
        simulate.add_arguments(sub.add_parser("simulate", help="generate realistic event streams"))
    try:
        from shopwatch.agents import worker
    except ImportError:  # pragma: no cover - during bootstrap
        worker = None
    if worker is not None:
        worker.add_arguments(sub.add_parser("worker", help="run a Faust worker on Kafka"))

    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
