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
import shutil
from pathlib import Path

from shopwatch.agents.settings import settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--web-port", type=int, help="HTTP port for /metrics, /healthz (env SHOPWATCH_WEB_PORT, 6066)")
    p.add_argument("--web-bind", help="HTTP listen address (env SHOPWATCH_WEB_BIND, 127.0.0.1)")
    p.add_argument("--data-dir", help="local state directory (env SHOPWATCH_DATA_DIR, var/shopwatch); "
                   "the tables are in DATA_DIR/<app id>/<topic prefix>")
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
        from shopwatch.agents.sinks import SINKS_ENV, load_sinks
        from shopwatch.agents.topology import Topology

        topo = Topology(app, s, load_rules(os.environ.get("SHOPWATCH_RULES")), ingest.make_ingest(app),
                        sinks=load_sinks(os.environ.get(SINKS_ENV)))
        if topo.delivery is not None:
            app.sw_sink_status = topo.delivery.status
        ingest.install_views(app)
    from shopwatch.agents.web import secure
    secure(app, s)  # only our views; bearer token; refuses a non-loopback bind without one
    logging.getLogger(__name__).debug("settings: %s", s)
    # data_dir/<app id>/<topic prefix> (shopwatch.agents.app.state_dir): tables and mark
    state = Path(str(app.conf.datadir))
    note_old_layout(Path(s.data_dir))
    drop_local_state_after_crash(state, Path(str(app.conf.tabledir)))
    worker = faust.Worker(app, loglevel=args.loglevel)
    code = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if code == 0:
        (state / CLEAN_MARK).touch()
    return code


CLEAN_MARK = "clean-shutdown"


def drop_local_state_after_crash(state_dir: Path, tabledir: Path) -> bool:
    """Remove the local table stores unless the last worker on ``state_dir`` stopped cleanly.

    ``state_dir`` is the app's own directory, ``data_dir/<app id>/<topic prefix>``
    (shopwatch.agents.app.state_dir), which holds ``tabledir`` and the mark: a
    clean stop of one app never vouches for another app's tables.

    At-least-once Faust writes a table change to RocksDB at once and to its
    changelog a moment later, so after a SIGKILL the local store can hold
    writes the changelog never got, and restoring the changelog on top mixes
    both. Rebuilt from the changelog alone, a table is a prefix of what the
    partition wrote, which streams.partition turns into a correct state (Kafka
    Streams wipes its stores after an unclean stop under exactly-once the
    same way). The mark is removed while the worker runs."""
    mark = state_dir / CLEAN_MARK
    clean = mark.exists()
    mark.unlink(missing_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    if clean or not tabledir.exists():
        return False
    logging.getLogger(__name__).warning("%s did not stop cleanly: rebuilding its tables from the changelogs",
                                        state_dir)
    shutil.rmtree(tabledir)
    return True


def note_old_layout(data_dir: Path) -> bool:
    """Warn about tables left by a worker older than the per-app layout.

    Before it, every app on ``data_dir`` used ``data_dir/v1/tables`` and
    ``data_dir/clean-shutdown``; they are no longer read (the tables are restored
    from the changelogs into the app's own directory) and can be deleted."""
    old = data_dir / "v1" / "tables"
    if not old.is_dir():
        return False
    logging.getLogger(__name__).warning(
        "%s holds tables of the old layout (one directory for every app id), no longer used: "
        "tables now live in %s/<app id>/<topic prefix>; delete %s and %s when no older worker uses them",
        old, data_dir, data_dir / "v1", data_dir / CLEAN_MARK)
    return True
