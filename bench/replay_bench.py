"""Replay speed on a simulated file, side by side with two loops over the same file.

usage: python bench/replay_bench.py [--events N] [--file PATH] [--repeat K]

From one run on one file it prints the events/s of:

- ``bare``: ``orjson.loads`` of each line and nothing else;
- ``floor``: a pure-Python floor: ``orjson.loads`` and a few dict updates per
  event (count per type, per shop, the greatest ``ts``), the least any Python
  stream processor does per event;
- ``replay``: what ``shopwatch replay`` does in-process: lines read as the CLI
  reads them, each decoded and validated within the same window of event time,
  applied to the engine, alerts serialized as written; then the clock moved to
  the end and the score snapshots serialized;

and the ratios replay/floor (the aim: >= 0.4) and replay/bare, plus the peak
resident memory. Rates are by wall clock and by CPU time of this process (the
second is steadier on a busy machine); the two loops take the best of
``--repeat`` runs. A benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

import orjson

from shopwatch.agents.replay import Counts, read_lines, replay_lines
from shopwatch.schemas.events import MAX_FUTURE_SKEW_US, MIN_EVENT_TIME_US
from shopwatch.streams.replay_engine import Engine


def ensure_file(path: str, events: int) -> None:
    if os.path.exists(path):
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    exe = os.path.join(os.path.dirname(sys.executable), "shopwatch")
    subprocess.run([exe, "simulate", "--seed", "7", "--shops", "60", "--events", str(events),
                    "--out", path, "--quiet"], check=True)


def timed(fn, *args):
    """(result, wall seconds, CPU seconds) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    r = fn(*args)
    return r, time.perf_counter() - w0, time.process_time() - c0


def bare_loop(path: str) -> int:
    n = 0
    loads = orjson.loads
    with open(path, "rb") as f:
        for line in f:
            try:
                loads(line)
            except orjson.JSONDecodeError:
                pass
            n += 1
    return n


def floor_loop(path: str) -> int:
    n = 0
    loads = orjson.loads
    per_type: dict = {}
    per_shop: dict = {}
    max_ts = ""
    with open(path, "rb") as f:
        for line in f:
            n += 1
            try:
                ev = loads(line)
            except orjson.JSONDecodeError:
                continue
            if type(ev) is not dict:
                continue
            t = ev.get("type")
            if type(t) is str:
                per_type[t] = per_type.get(t, 0) + 1
            shop = ev.get("shop_id")
            if type(shop) is str:
                per_shop[shop] = per_shop.get(shop, 0) + 1
            ts = ev.get("ts")
            if type(ts) is str and ts > max_ts:
                max_ts = ts
    return n


class _Sink:
    """Counts the bytes the CLI would write."""

    def __init__(self) -> None:
        self.n = 0

    def write(self, b: bytes) -> None:
        self.n += len(b)


def replay(path: str) -> tuple[int, int, int]:
    """(lines, invalid lines, alerts) of one replay of ``path``."""
    engine = Engine()
    counts = Counts()
    out = _Sink()
    now_us = time.time_ns() // 1000

    def on_alerts(alerts: list[dict]) -> None:
        out.write(b"".join(orjson.dumps(a) + b"\n" for a in alerts))

    with open(path, "rb") as f:
        replay_lines(read_lines(f), engine, on_alerts=on_alerts, min_ts_us=MIN_EVENT_TIME_US,
                     max_ts_us=now_us + MAX_FUTURE_SKEW_US, counts=counts)
    engine.finish()
    counts.alerts += len(engine.alerts)
    on_alerts(engine.alerts)
    out.write(orjson.dumps(engine.scores(), option=orjson.OPT_INDENT_2))
    return counts.lines, counts.invalid, counts.alerts


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--file", default=None)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each loop (the best is shown)")
    args = ap.parse_args()
    path = args.file or f"var/bench/sim-{args.events}.jsonl"
    ensure_file(path, args.events)

    loops = {}
    for name, fn in (("bare", bare_loop), ("floor", floor_loop)):
        runs = [timed(fn, path) for _ in range(max(1, args.repeat))]
        n = runs[0][0]
        loops[name] = (n, min(r[1] for r in runs), min(r[2] for r in runs))
    (n, invalid, alerts), w, c = timed(replay, path)
    loops["replay"] = (n, w, c)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"file: {path} ({n} lines, {invalid} invalid, {alerts} alerts)")
    print(f"{'':8s} {'events/s (wall)':>16s} {'events/s (CPU)':>16s} {'s (wall)':>9s} {'s (CPU)':>9s}")
    for name in ("bare", "floor", "replay"):
        n, w, c = loops[name]
        print(f"{name:8s} {n / w:16,.0f} {n / c:16,.0f} {w:9.2f} {c:9.2f}")
    for other in ("floor", "bare"):
        _, w, c = loops[other]
        print(f"ratio replay/{other}: {w / loops['replay'][1]:.3f} (wall)  {c / loops['replay'][2]:.3f} (CPU)")
    print(f"peak RSS: {rss_mb:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
