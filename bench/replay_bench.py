"""Replay speed on a simulated file, next to a bare orjson parse loop over the same file.

usage: python bench/replay_bench.py [--events N] [--file PATH]

Prints events/s of each and their ratio (the aim for replay: >= 0.3 of the
bare loop), and the peak resident memory. A benchmark, not a test: nothing is
asserted.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

import orjson

from shopwatch.agents.replay import replay_lines
from shopwatch.streams.engine import Engine


def ensure_file(path: str, events: int) -> None:
    if os.path.exists(path):
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    exe = os.path.join(os.path.dirname(sys.executable), "shopwatch")
    subprocess.run([exe, "simulate", "--seed", "7", "--shops", "60", "--events", str(events),
                    "--out", path, "--quiet"], check=True)


def bare_loop(path: str) -> tuple[int, float]:
    n = 0
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        for line in f:
            try:
                orjson.loads(line)
            except orjson.JSONDecodeError:
                pass
            n += 1
    return n, time.perf_counter() - t0


def replay(path: str) -> tuple[int, float, int]:
    engine = Engine()
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        bad = replay_lines(f, engine)
    engine.finish()
    engine.scores()  # part of the job: the snapshots as of the final clock
    dt = time.perf_counter() - t0
    return len(engine.alerts), dt, bad


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--file", default=None)
    args = ap.parse_args()
    path = args.file or f"var/bench/sim-{args.events}.jsonl"
    ensure_file(path, args.events)
    n, t_bare = bare_loop(path)
    alerts, t_replay, bad = replay(path)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"file: {path} ({n} lines, {bad} invalid)")
    print(f"bare orjson loop: {n / t_bare:,.0f} events/s ({t_bare:.2f} s)")
    print(f"replay:           {n / t_replay:,.0f} events/s ({t_replay:.2f} s, {alerts} alerts)")
    print(f"ratio replay/bare: {t_bare / t_replay:.3f}")
    print(f"peak RSS: {rss_mb:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
