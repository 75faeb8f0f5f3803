"""The `shopwatch` command: replay, simulate, worker, tick, watch."""

from __future__ import annotations

import argparse
import sys

from shopwatch.agents import replay, tick, watch, worker
from shopwatch.agents.simulator import cli as simulate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shopwatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    replay.add_arguments(sub.add_parser("replay", help="run the rules over a JSONL file on an event-time clock"))
    simulate.add_arguments(sub.add_parser("simulate", help="generate realistic event streams"))
    worker.add_arguments(sub.add_parser("worker", help="run a Faust worker on Kafka"))
    tick.add_arguments(sub.add_parser("tick", help="move the event-time clock of the running workers"))
    watch.add_arguments(sub.add_parser("watch", help="follow alerts and a live per-shop scoreboard"))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
