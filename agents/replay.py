"""`shopwatch replay EVENTS.jsonl [--until T] [--alerts-out F] [--scores-out F] [--rules R]` (events.md "Replay").

The shell around ``streams.replay_engine.Engine``: reads the file in order, reports
invalid lines on stderr with their line number and reason, writes alerts as
they are emitted and the score snapshots as of the final clock.

Choices where the spec is silent (hostile or mistaken input):

- Every argument is checked before any work: a bad ``--until``, a missing or
  malformed ``--rules`` file (not JSON, not an object, an unknown rule name: a
  typo would silently keep the default, or a value not shaped like the default
  it overrides), an output in a directory that does not exist (both outputs
  are checked, then opened, before the first line is read, so a bad
  ``--scores-out`` fails before any alert is written), an output that is the
  input file, or a malformed
  ``SHOPWATCH_MIN_EVENT_TIME`` / ``SHOPWATCH_MAX_FUTURE_SKEW_S`` prints one line
  ``shopwatch replay: ...`` and exits 2; an input that cannot be read exits 1
  (the spec: "the exit status is 0 unless the file cannot be read"); a failed
  write exits 1. Never a traceback.
- Each line goes through ``schemas.events.decode``: a line over
  ``MAX_EVENT_BYTES`` (64 KiB) is invalid, and is skipped without being held in
  memory whole. Invalid lines are reported one per line, their reason cut to
  200 characters; after 100 of them one line says the rest are only counted,
  so a binary file gives a bounded report.
- The window of event time: an event dated before ``SHOPWATCH_MIN_EVENT_TIME``
  (default 2000-01-01T00:00:00+08:00) or after replay's "now" plus
  ``SHOPWATCH_MAX_FUTURE_SKEW_S`` (default one day) is an invalid line. Replay's
  "now" is the later of the wall clock (read once, here, at start; never in
  ``streams/``) and ``--until``, so the backfill of a future-dated test scenario
  given with its ``--until`` still runs. ``--until`` before the floor is a usage
  error.
- The run ends with one summary line on stderr::

      shopwatch replay: 14351 lines, 14120 events applied, 37 invalid, 194 duplicates, 1681 alerts, 10 shops

  ``lines`` counts every line read; ``duplicates`` are valid events whose
  ``event_id`` their order (or chat session) had already applied, which the
  core ignores; ``alerts`` counts the records written (firing and resolved);
  ``shops`` the (platform, shop) pairs with a score snapshot. When the file has
  blank lines (skipped silently), ``, N blank`` is appended so the counts add up.
"""

from __future__ import annotations

import argparse
import math
import os
import stat
import sys
import time

import orjson

from shopwatch.schemas.events import MAX_EVENT_BYTES, PLATFORMS, InvalidEvent, decode, fmt_us, parse_ts_us
from shopwatch.streams.replay_engine import SESSION, SHOP, Engine, group_of
from shopwatch.streams.rules import DEFAULTS, Rules

from .settings import settings

MAX_REPORTED_INVALID = 100  # invalid lines reported one by one; the rest are only counted
MAX_REASON_CHARS = 200
PLATFORM_NAMES = PLATFORMS


class UsageError(Exception):
    """A bad argument or setting: one line on stderr, exit status 2."""


class RulesError(ValueError):
    """A rules file that cannot be used; ``str(exc)`` says why."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("events", help="JSONL file of input events ('-' for stdin)")
    p.add_argument("--until", help="RFC 3339 timestamp to run the clock to (default: greatest ts seen)")
    p.add_argument("--alerts-out", default="-", help="alerts JSONL (default stdout)")
    p.add_argument("--scores-out", help="score snapshots JSON array")
    p.add_argument("--rules", help="JSON file of rule overrides (see streams/rules.py)")
    p.set_defaults(func=run)


# ---------------------------------------------------------------- rules
def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check_shape(v: object, default: object, path: str) -> None:
    """``v`` must have the shape of the default it overrides: a number for a number, an object
    with known keys for an object, a list of the same length for a list (``None`` allowed where
    the default has one: "no cap"). ``xiaohongshu_profiles`` may name new profiles."""
    if default is None:
        if v is not None and not _is_number(v):
            raise RulesError(f"{path}: expected a number or null")
    elif _is_number(default):
        if not _is_number(v):
            raise RulesError(f"{path}: expected a number, got {orjson.dumps(v).decode()[:60]}")
    elif isinstance(default, dict):
        if not isinstance(v, dict):
            raise RulesError(f"{path}: expected an object")
        open_keys = path.endswith("xiaohongshu_profiles")
        for k, x in v.items():
            if k in default:
                _check_shape(x, default[k], f"{path}.{k}")
            elif open_keys:
                if not isinstance(x, dict) or not all(_is_number(w) for w in x.values()):
                    raise RulesError(f"{path}.{k}: expected an object of numeric weights")
            else:
                raise RulesError(f"{path}: unknown key {k!r} (one of {', '.join(map(str, default))})")
    elif isinstance(default, list):
        if not isinstance(v, list) or len(v) != len(default):
            raise RulesError(f"{path}: expected a list of {len(default)}")
        shaped = next((d for d in default if d is not None), None)
        for i, x in enumerate(v):
            if x is None and None in default:
                continue
            _check_shape(x, default[i] if default[i] is not None else shaped, f"{path}[{i}]")


def check_rules(overrides: object) -> Rules:
    """Overrides -> Rules, refusing what would only fail (or be ignored) in the middle of a run:
    not an object, an unknown rule name (a typo would silently keep the default), a value not
    shaped like the default, or anything ``Rules.for_platform`` cannot resolve."""
    if not isinstance(overrides, dict):
        raise RulesError(f"expected a JSON object of rule overrides, got {type(overrides).__name__}")
    known = set(DEFAULTS) - {"platforms"}
    for k, v in overrides.items():
        if k == "platforms":
            if not isinstance(v, dict):
                raise RulesError("platforms: expected an object")
            for p, over in v.items():
                if p not in PLATFORM_NAMES:
                    raise RulesError(f"platforms: unknown platform {p!r} (one of {', '.join(PLATFORM_NAMES)})")
                if not isinstance(over, dict):
                    raise RulesError(f"platforms.{p}: expected an object")
                for pk, pv in over.items():
                    if pk not in known:
                        raise RulesError(f"platforms.{p}: unknown rule {pk!r}")
                    _check_shape(pv, DEFAULTS[pk], f"platforms.{p}.{pk}")
        elif k not in known:
            raise RulesError(f"unknown rule {k!r} (see streams/rules.py)")
        else:
            _check_shape(v, DEFAULTS[k], k)
    try:
        rules = Rules(overrides)
        for p in PLATFORM_NAMES:
            rules.for_platform(p)
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
        raise RulesError(f"rejected by the rules: {type(exc).__name__}: {exc}") from None
    return Rules(overrides)  # a fresh one: nothing resolved from the check is kept


def load_rules(path: str | None) -> Rules:
    """The rules of a JSON overrides file (None: the defaults). Raises RulesError."""
    if not path:
        return Rules()
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise RulesError(f"cannot read rules file {path}: {exc.strerror or exc}") from None
    try:
        overrides = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RulesError(f"rules file {path} is not JSON: {exc}") from None
    try:
        return check_rules(overrides)
    except RulesError as exc:
        raise RulesError(f"rules file {path}: {exc}") from None


# ---------------------------------------------------------------- window
def time_window(until_us: int | None, now_us: int, who: str = "--until") -> tuple[int, int]:
    """(min_ts_us, max_ts_us) of acceptable event time: [SHOPWATCH_MIN_EVENT_TIME,
    max(now, until) + SHOPWATCH_MAX_FUTURE_SKEW_S]. Raises UsageError on a bad setting or an
    ``until`` before the floor."""
    try:
        s = settings()
    except ValueError as exc:
        raise UsageError(f"bad setting in the environment: {exc}") from None
    try:
        min_us = parse_ts_us(s.min_event_time, "SHOPWATCH_MIN_EVENT_TIME")
    except InvalidEvent as exc:
        raise UsageError(str(exc)) from None
    skew = s.max_future_skew_s
    if not math.isfinite(skew) or skew < 0:
        raise UsageError(f"SHOPWATCH_MAX_FUTURE_SKEW_S: expected a number of seconds >= 0, got {skew}")
    if until_us is not None and until_us < min_us:
        raise UsageError(f"{who}: {fmt_us(until_us)} is before the earliest accepted event time "
                         f"{s.min_event_time} (SHOPWATCH_MIN_EVENT_TIME)")
    now = now_us if until_us is None else max(now_us, until_us)
    return min_us, now + int(skew * 1_000_000)


def wall_now_us() -> int:
    """The wall clock, in microseconds: read once per command, only in the shells."""
    return time.time_ns() // 1000


# ---------------------------------------------------------------- lines
def read_lines(src, limit: int = MAX_EVENT_BYTES):
    """Yield each line of a binary file without its line end, or, for a line longer than
    ``limit``, its length (an int): such a line is skipped in chunks, never held whole."""
    readline = src.readline
    while True:
        line = readline(limit + 2)
        if not line:
            return
        if line[-1:] == b"\n":
            yield line[:-2] if line[-2:] == b"\r\n" else line[:-1]
        elif len(line) < limit + 2:
            yield line  # the last line, without a line end
        else:
            size = len(line)
            while True:
                chunk = readline(1 << 20)
                if chunk[-1:] == b"\n":
                    yield size + len(chunk) - 1
                    break
                size += len(chunk)
                if not chunk:
                    yield size
                    break


class Counts:
    __slots__ = ("lines", "blank", "applied", "invalid", "duplicates", "alerts")

    def __init__(self) -> None:
        self.lines = self.blank = self.applied = self.invalid = self.duplicates = self.alerts = 0


def replay_lines(lines, engine: Engine, on_invalid=None, on_alerts=None, min_ts_us: int | None = None,
                 max_ts_us: int | None = None, counts: Counts | None = None) -> int:
    """Feed raw lines (bytes; or, from ``read_lines``, the int length of a line too long to
    read) to the engine; returns the number of invalid lines. ``counts`` is filled as it goes.
    Without ``on_alerts`` the alerts stay in ``engine.alerts``."""
    c = counts if counts is not None else Counts()
    process = engine.process
    alerts = engine.alerts
    states = engine.states
    n = 0
    for n, line in enumerate(lines, 1):
        try:
            if type(line) is int:
                raise InvalidEvent(f"record too large: {line} bytes (at most {MAX_EVENT_BYTES})")
            if not line.strip():
                c.blank += 1
                continue
            ev = decode(line, None, max_ts_us, min_ts_us)
        except InvalidEvent as exc:
            c.invalid += 1
            if on_invalid is not None:
                on_invalid(n, str(exc))
            continue
        # a duplicate is one the core ignores: its order (or session) already applied that event_id
        group = group_of(ev)
        st = states[group].get(ev["session_id"] if group == SESSION else ev["order_id"])
        if st is not None and ev["event_id"] in st.seen:
            c.duplicates += 1
        else:
            c.applied += 1
        k = len(alerts)
        process(ev)
        if len(alerts) != k:
            c.alerts += len(alerts) - k
            if on_alerts is not None:
                on_alerts(alerts)
                alerts.clear()
    c.lines += n
    return c.invalid


def summary(c: Counts, shops: int) -> str:
    s = (f"{c.lines} lines, {c.applied} events applied, {c.invalid} invalid, {c.duplicates} duplicates, "
         f"{c.alerts} alerts, {shops} shops")
    return s + (f", {c.blank} blank" if c.blank else "")


# ---------------------------------------------------------------- command
def _same_file(fd: int, path: str) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(a.st_mode) and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _check_out(path: str, what: str, src) -> None:
    """Refuse an output that cannot be opened for writing, without creating or truncating it."""
    if src is not sys.stdin.buffer and _same_file(src.fileno(), path):
        raise UsageError(f"{what} {path} is the input file")
    if os.path.isdir(path):
        raise UsageError(f"cannot write {what} {path}: is a directory")
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise UsageError(f"cannot write {what} {path}: permission denied")
        return
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise UsageError(f"cannot write {what} {path}: no directory {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {what} {path}: permission denied on {parent}")


def _open_out(path: str, what: str):
    try:
        return open(path, "wb")
    except OSError as exc:
        raise UsageError(f"cannot write {what} {path}: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    err = sys.stderr

    def fail(msg: str, code: int) -> int:
        err.write(f"shopwatch replay: {msg}\n")
        err.flush()
        return code

    opened: list = []
    try:
        now_us = wall_now_us()
        try:
            until = parse_ts_us(args.until, "--until") if args.until else None
            min_us, max_us = time_window(until, now_us)
            rules = load_rules(args.rules)
        except (InvalidEvent, UsageError, RulesError) as exc:
            return fail(str(exc), 2)
        try:
            src = sys.stdin.buffer if args.events == "-" else open(args.events, "rb")
        except OSError as exc:
            return fail(f"cannot read {args.events}: {exc.strerror or exc}", 1)
        if src is not sys.stdin.buffer:
            opened.append(src)
        alerts_path = None if args.alerts_out in (None, "-") else args.alerts_out
        try:
            # both outputs are checked before either is created: no half-done run
            if alerts_path is not None:
                _check_out(alerts_path, "--alerts-out", src)
            if args.scores_out:
                if alerts_path is not None and os.path.realpath(args.scores_out) == os.path.realpath(alerts_path):
                    raise UsageError(f"--scores-out {args.scores_out} is also --alerts-out")
                _check_out(args.scores_out, "--scores-out", src)
            out = sys.stdout.buffer if alerts_path is None else _open_out(alerts_path, "--alerts-out")
            if out is not sys.stdout.buffer:
                opened.append(out)
            scores_f = None
            if args.scores_out:
                scores_f = _open_out(args.scores_out, "--scores-out")
                opened.append(scores_f)
        except UsageError as exc:
            return fail(str(exc), 2)
        return _replay(args, src, out, scores_f, rules, until, min_us, max_us, fail)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    finally:
        for f in opened:
            try:
                f.close()
            except OSError:
                pass


class _WriteFailed(Exception):
    def __init__(self, what: str, exc: OSError) -> None:
        super().__init__(what)
        self.what, self.exc = what, exc


def _replay(args, src, out, scores_f, rules: Rules, until, min_us: int, max_us: int, fail) -> int:
    err = sys.stderr
    engine = Engine(rules, until)
    counts = Counts()
    name = args.events

    def on_invalid(n: int, reason: str) -> None:
        if counts.invalid <= MAX_REPORTED_INVALID:
            reason = reason.replace("\r", "\\r").replace("\n", "\\n")
            if len(reason) > MAX_REASON_CHARS:
                reason = reason[:MAX_REASON_CHARS - 3] + "..."
            err.write(f"{name}:{n}: invalid event: {reason}\n")
        if counts.invalid == MAX_REPORTED_INVALID:
            err.write(f"shopwatch replay: {MAX_REPORTED_INVALID} invalid lines reported; "
                      f"further invalid lines are only counted\n")

    def on_alerts(alerts: list[dict]) -> None:
        try:
            out.write(b"".join(orjson.dumps(a) + b"\n" for a in alerts))
        except OSError as exc:
            raise _WriteFailed("alerts", exc) from None

    try:
        try:
            replay_lines(read_lines(src), engine, on_invalid, on_alerts, min_us, max_us, counts)
        except OSError as exc:
            return fail(f"cannot read {name}: {exc.strerror or exc}", 1)
        engine.finish(until)
        counts.alerts += len(engine.alerts)
        on_alerts(engine.alerts)
        engine.alerts.clear()
        try:
            out.flush()
        except OSError as exc:
            raise _WriteFailed("alerts", exc) from None
        if scores_f is not None:
            try:
                scores_f.write(orjson.dumps(engine.scores(), option=orjson.OPT_INDENT_2))
                scores_f.flush()
            except OSError as exc:
                raise _WriteFailed("scores", exc) from None
    except _WriteFailed as wf:
        if isinstance(wf.exc, BrokenPipeError):
            # the reader of stdout went away (| head): no second error when Python flushes at exit
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except OSError:
                pass
        dest = args.alerts_out if wf.what == "alerts" else args.scores_out
        return fail(f"cannot write {wf.what} to {'stdout' if dest in (None, '-') else dest}: "
                    f"{wf.exc.strerror or wf.exc}", 1)
    err.write(f"shopwatch replay: {summary(counts, len(engine.states[SHOP]))}\n")
    return 0
