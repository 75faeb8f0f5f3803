"""`shopwatch replay EVENTS.jsonl [--until T] [--alerts-out F] [--scores-out F]` (events.md "Replay").

The shell around ``streams.engine.Engine``: reads the file in order, reports
invalid lines on stderr with their line number and reason, writes alerts as
they are emitted and the score snapshots as of the final clock.
"""

from __future__ import annotations

import argparse
import sys

import orjson

from shopwatch.schemas.events import InvalidEvent, parse_ts_us, validate
from shopwatch.streams.config import Rules
from shopwatch.streams.engine import Engine


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("events", help="JSONL file of input events ('-' for stdin)")
    p.add_argument("--until", help="RFC 3339 timestamp to run the clock to (default: greatest ts seen)")
    p.add_argument("--alerts-out", default="-", help="alerts JSONL (default stdout)")
    p.add_argument("--scores-out", help="score snapshots JSON array")
    p.add_argument("--rules", help="JSON file of rule overrides (see streams/config.py)")
    p.set_defaults(func=run)


def load_rules(path: str | None) -> Rules:
    if not path:
        return Rules()
    with open(path, "rb") as f:
        return Rules(orjson.loads(f.read()))


def replay_lines(lines, engine: Engine, on_invalid=None, on_alerts=None) -> int:
    """Feed raw lines to the engine; returns the number of invalid lines."""
    bad = 0
    loads = orjson.loads
    process = engine.process
    alerts = engine.alerts
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            try:
                ev = loads(line)
            except orjson.JSONDecodeError as exc:
                raise InvalidEvent(f"bad JSON: {exc}") from None
            validate(ev)
        except InvalidEvent as exc:
            bad += 1
            if on_invalid is not None:
                on_invalid(n, str(exc))
            continue
        process(ev)
        if on_alerts is not None and alerts:
            on_alerts(alerts)
            alerts.clear()
    return bad


def run(args: argparse.Namespace) -> int:
    try:
        until = parse_ts_us(args.until, "--until") if args.until else None
    except InvalidEvent as exc:
        print(f"shopwatch replay: {exc}", file=sys.stderr)
        return 2
    try:
        src = sys.stdin.buffer if args.events == "-" else open(args.events, "rb")
    except OSError as exc:
        print(f"shopwatch replay: cannot read {args.events}: {exc}", file=sys.stderr)
        return 1
    engine = Engine(load_rules(args.rules), until)
    out = sys.stdout.buffer if args.alerts_out in (None, "-") else open(args.alerts_out, "wb")
    err = sys.stderr

    def on_invalid(n: int, reason: str) -> None:
        err.write(f"{args.events}:{n}: invalid event: {reason}\n")

    def on_alerts(alerts: list[dict]) -> None:
        out.write(b"".join(orjson.dumps(a) + b"\n" for a in alerts))

    with src:
        try:
            replay_lines(src, engine, on_invalid, on_alerts)
        except OSError as exc:
            print(f"shopwatch replay: cannot read {args.events}: {exc}", file=sys.stderr)
            return 1
    engine.finish(until)
    on_alerts(engine.alerts)
    engine.alerts.clear()
    if out is not sys.stdout.buffer:
        out.close()
    else:
        out.flush()
    if args.scores_out:
        with open(args.scores_out, "wb") as f:
            f.write(orjson.dumps(engine.scores(), option=orjson.OPT_INDENT_2))
    return 0
