"""`shopwatch worker`: a Faust worker consuming the input topics on Kafka.

Settings come from the environment (shopwatch.agents.settings); the options
override them. The worker creates its topics if they are missing, validates
every input record (invalid ones go to the dead-letter topic), and serves
Prometheus metrics on http://WEB_BIND:WEB_PORT/metrics, liveness on /healthz
and readiness (partitions assigned) on /readyz. SIGTERM/SIGINT stop it
cleanly (exit status 0).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os

from shopwatch.agents.settings import settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--web-port", type=int, help="HTTP port for /metrics, /healthz (env SHOPWATCH_WEB_PORT, 6066)")
    p.add_argument("--web-bind", help="HTTP listen address (env SHOPWATCH_WEB_BIND, 127.0.0.1)")
    p.add_argument("--data-dir", help="local state directory (env SHOPWATCH_DATA_DIR, var/shopwatch)")
    p.add_argument(
        "--clock",
        choices=("event", "wall"),
        help="timer clock: event time (backfills, tests) or wall time (live) (env SHOPWATCH_CLOCK, wall)",
    )
    p.add_argument("-l", "--loglevel", default="info", help="log level: debug, info, warning, error (default info)")
    p.add_argument("--ingest-only", action="store_true",
                   help="only validate and count (no rules): the skeleton's ingestion worker")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import faust

    from shopwatch.agents import ingest
    from shopwatch.agents.app import build_app

    s = settings()
    overrides = {
        "web_port": args.web_port,
        "web_bind": args.web_bind,
        "data_dir": args.data_dir,
        "clock": args.clock,
    }
    s = dataclasses.replace(s, **{k: v for k, v in overrides.items() if v is not None})
    app = build_app(s)
    if args.ingest_only:
        ingest.install(app)
    else:
        from shopwatch.agents.replay import load_rules
        from shopwatch.agents.topology import Topology

        Topology(app, s, load_rules(os.environ.get("SHOPWATCH_RULES")), ingest.make_ingest(app))
        ingest.install_views(app)
    logging.getLogger(__name__).debug("settings: %s", s)
    worker = faust.Worker(app, loglevel=args.loglevel)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0
