"""`shopwatch replay` (events.md "Replay (no Kafka)") run as a command."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from core_helpers import DAY, HOUR, Shop, iso, local, run

ROOT = Path(__file__).resolve().parents[2]
T0 = local(2026, 10, 1, 10)
UNTIL = T0 + 5 * DAY


def cli() -> list[str]:
    exe = ROOT / ".venv" / "bin" / "shopwatch"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "shopwatch.agents.cli"]


def replay(*args, stdin: str | None = None, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*cli(), "replay", *map(str, args)], capture_output=True, text=True, input=stdin,
                          cwd=ROOT, timeout=timeout, env={**os.environ, **(env or {})})


def valid_events() -> list[dict]:
    x, d = Shop("xiaohongshu", "s-x"), Shop("douyin", "s-d")
    return [
        x.paid("o-late", T0, event_id="x1"),
        x.paid("o-ok", T0, event_id="x2"),
        x.shipped("o-ok", T0 + HOUR, event_id="x3"),
        d.paid("o-d", T0, event_id="d1"),
        x.shipped("o-late", T0 + 50 * HOUR, event_id="x4"),
        d.chat("started", "c-1", T0 + HOUR, event_id="d2"),
    ]


@pytest.fixture
def events_file(tmp_path) -> Path:
    ev = valid_events()
    lines = [
        json.dumps(ev[0], ensure_ascii=False),
        json.dumps(ev[1]),
        '{"event_id": "broken", "type": ',  # line 3: bad JSON
        "",  # line 4: blank, skipped silently
        json.dumps({**Shop("xiaohongshu", "s-x").review("o-ok", T0 + DAY, product=7), "event_id": "bad-rating"}),
        json.dumps(ev[2]),
        json.dumps({**ev[3], "ts": "2026-10-01T10:00:00"}),  # line 7: no offset
        json.dumps(ev[3]),
        json.dumps(ev[4]),
        json.dumps(ev[0]),  # a duplicate: no effect
        json.dumps({**ev[5], "type": "chat.teleported"}),  # line 11: unknown type
        json.dumps(ev[5]),
    ]
    p = tmp_path / "events.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def test_replay_writes_alerts_and_scores_and_reports_invalid_lines(events_file, tmp_path):
    a_out, s_out = tmp_path / "alerts.jsonl", tmp_path / "scores.json"
    p = replay(events_file, "--until", iso(UNTIL), "--alerts-out", a_out, "--scores-out", s_out)
    assert p.returncode == 0, p.stderr
    err = p.stderr.splitlines()
    bad = {int(line.split(":")[1]): line for line in err if line.startswith(f"{events_file}:")}
    assert set(bad) == {3, 5, 7, 11}, p.stderr
    assert "JSON" in bad[3]
    assert "rating" in bad[5]
    assert "offset" in bad[7]
    assert "chat.teleported" in bad[11]

    alerts = [json.loads(line) for line in a_out.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [(a["alert_id"], a["status"], a["at"]) for a in alerts]
    lst = T0 + 48 * HOUR
    assert ("ship_overdue:xiaohongshu:o-late", "firing", iso(lst)) in rows
    assert ("ship_overdue:xiaohongshu:o-late", "resolved", iso(T0 + 50 * HOUR)) in rows
    assert ("ship_overdue:douyin:o-d", "firing", iso(lst)) in rows
    assert not [r for r in rows if "o-ok" in r[0] and r[0].startswith("ship_")]
    assert len(rows) == len(set(rows))  # each change once, the duplicate had no effect
    # the same as the engine fed the valid lines in file order
    eng = run(valid_events(), until=UNTIL, sort=False)
    assert alerts == json.loads(json.dumps(eng.alerts))

    scores = json.loads(s_out.read_text(encoding="utf-8"))
    assert isinstance(scores, list)
    assert sorted((s["platform"], s["shop_id"]) for s in scores) == [("douyin", "s-d"), ("xiaohongshu", "s-x")]
    for s in scores:
        assert s["as_of"] == iso(UNTIL)
    x = next(s for s in scores if s["platform"] == "xiaohongshu")
    ots = x["indicators"]["on_time_ship_rate"]
    assert (ots["value"], ots["num"], ots["den"], ots["window_days"]) == (0.5, 1, 2, 180)
    d = next(s for s in scores if s["platform"] == "douyin")
    assert d["level"]["level"] == 1


def test_replay_defaults_alerts_to_stdout_and_until_to_the_last_ts(events_file):
    p = replay(events_file)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    assert rows and all("alert_id" in a for a in rows)
    # the clock stops at the greatest ts seen (T0 + 50 h): the pickup timeout of o-late is not due yet
    assert not [a for a in rows if a["alert_id"] == "pickup_timeout:xiaohongshu:o-late"]
    assert [a for a in rows if a["alert_id"] == "pickup_timeout:xiaohongshu:o-ok"]


def test_replay_reads_stdin(events_file, tmp_path):
    s_out = tmp_path / "scores.json"
    p = replay("-", "--until", iso(UNTIL), "--scores-out", s_out, stdin=events_file.read_text(encoding="utf-8"))
    assert p.returncode == 0, p.stderr
    assert len(json.loads(s_out.read_text(encoding="utf-8"))) == 2


def test_replay_missing_file_fails(tmp_path):
    missing = tmp_path / "nope.jsonl"
    p = replay(missing, "--alerts-out", tmp_path / "a.jsonl")
    assert p.returncode != 0
    assert str(missing) in p.stderr


def test_replay_bad_until_fails(events_file):
    p = replay(events_file, "--until", "2026-10-01T10:00:00")
    assert p.returncode != 0
    assert "until" in p.stderr


# ------------------------------------------------------------------ hostile input (issue)
SUMMARY = "shopwatch replay: "


def one_line_error(p: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """The command failed with ``code`` and said why in exactly one line, no traceback."""
    assert p.returncode == code, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("shopwatch "), lines[0]
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def summary_of(p: subprocess.CompletedProcess) -> str:
    last = p.stderr.splitlines()[-1]
    assert last.startswith(SUMMARY) and " lines, " in last, p.stderr
    return last[len(SUMMARY):]


def write_rules(tmp_path, text: str) -> Path:
    r = tmp_path / "rules.json"
    r.write_text(text, encoding="utf-8")
    return r


@pytest.mark.parametrize("text, words", [
    ("{not json", ["not JSON"]),
    ("[1, 2]", ["JSON object"]),
    ('{"ship_after_payment_hours": {"domestic": "48h"}}', ["ship_after_payment_hours.domestic", "number"]),
    ('{"ship_after_payment_hour": 36}', ["unknown rule", "ship_after_payment_hour"]),
    ('{"platforms": {"amazon": {"pickup_timeout_hours": 1}}}', ["amazon"]),
    ('{"xiaohongshu_curves": {"review_avg": [4.0]}}', ["review_avg"]),
])
def test_replay_malformed_rules_is_a_usage_error_before_any_work(events_file, tmp_path, text, words):
    a_out = tmp_path / "alerts.jsonl"
    p = replay(events_file, "--rules", write_rules(tmp_path, text), "--alerts-out", a_out)
    one_line_error(p, 2, "shopwatch replay: ", "rules", *words)
    assert not a_out.exists()


def test_replay_accepts_a_well_formed_rules_file(events_file, tmp_path):
    rules = write_rules(tmp_path, json.dumps({
        "ship_after_payment_hours": {"domestic": 36},
        "platforms": {"douyin": {"pickup_timeout_hours": 12}},
        "douyin_caps": [[50, 5000], None, [2000, 200000], [6000, 600000], [15000, 1500000],
                        [30000, 3000000], [50000, 5000000], None],
        "xiaohongshu_profiles": {"mine": {"product": 1}},
        "score_half_life_days": 30,
    }))
    p = replay(events_file, "--rules", rules, "--until", iso(UNTIL))
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr


def test_replay_missing_rules_file(events_file, tmp_path):
    p = replay(events_file, "--rules", tmp_path / "nope.json", "--alerts-out", tmp_path / "a.jsonl")
    one_line_error(p, 2, "shopwatch replay: ", "nope.json")
    assert not (tmp_path / "a.jsonl").exists()


def test_replay_alerts_out_into_a_missing_directory(events_file, tmp_path):
    p = replay(events_file, "--alerts-out", tmp_path / "no-such-dir" / "a.jsonl")
    one_line_error(p, 2, "shopwatch replay: ", "--alerts-out", "no-such-dir")


def test_replay_scores_out_into_a_missing_directory_fails_before_any_work(events_file, tmp_path):
    a_out = tmp_path / "alerts.jsonl"
    p = replay(events_file, "--alerts-out", a_out, "--scores-out", tmp_path / "no-such-dir" / "s.json")
    one_line_error(p, 2, "shopwatch replay: ", "--scores-out", "no-such-dir")
    assert not a_out.exists()  # checked up front: the alerts were not written
    assert p.stdout == ""


def test_replay_output_onto_the_input_is_refused(events_file):
    before = events_file.read_bytes()
    p = replay(events_file, "--alerts-out", events_file)
    one_line_error(p, 2, "shopwatch replay: ", "input")
    assert events_file.read_bytes() == before


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_replay_unreadable_input_exits_1(tmp_path, kind):
    src = tmp_path / "nope.jsonl"
    if kind == "directory":
        src.mkdir()
    a_out = tmp_path / "a.jsonl"
    p = replay(src, "--alerts-out", a_out)
    one_line_error(p, 1, "shopwatch replay: ", "cannot read", str(src))
    assert not a_out.exists()


@pytest.mark.parametrize("until, words", [
    ("2026-10-01T10:00:00", ["--until", "offset"]),
    ("1999-06-01T00:00:00+08:00", ["--until", "before the earliest"]),
])
def test_replay_bad_until_is_one_line_exit_2(events_file, until, words):
    one_line_error(replay(events_file, "--until", until), 2, "shopwatch replay: ", *words)


@pytest.mark.parametrize("env, words", [
    ({"SHOPWATCH_MIN_EVENT_TIME": "last tuesday"}, ["SHOPWATCH_MIN_EVENT_TIME"]),
    ({"SHOPWATCH_MAX_FUTURE_SKEW_S": "a day"}, ["a day"]),
    ({"SHOPWATCH_MAX_FUTURE_SKEW_S": "-5"}, ["SHOPWATCH_MAX_FUTURE_SKEW_S"]),
])
def test_replay_bad_window_setting_is_one_line_exit_2(events_file, tmp_path, env, words):
    a_out = tmp_path / "a.jsonl"
    p = replay(events_file, "--alerts-out", a_out, env=env)
    one_line_error(p, 2, "shopwatch replay: ", *words)
    assert not a_out.exists()


def test_replay_ends_with_a_summary_line(tmp_path):
    x, d = Shop("xiaohongshu", "s-x"), Shop("douyin", "s-d")
    ev = [
        x.paid("o-1", T0, event_id="e1"),
        x.shipped("o-1", T0 + 50 * HOUR, event_id="e2"),
        d.paid("o-2", T0, event_id="e3"),
        d.chat("started", "c-1", T0 + HOUR, event_id="e4"),
    ]
    lines = [
        json.dumps(ev[0]),
        json.dumps(ev[2]),
        json.dumps(ev[0]),  # duplicate of an order event
        json.dumps(ev[3]),
        "",  # blank
        '{"type": "order.paid"',  # invalid
        json.dumps(ev[3]),  # duplicate of a chat event
        json.dumps(ev[1]),
    ]
    src = tmp_path / "small.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    a_out = tmp_path / "a.jsonl"
    p = replay(src, "--until", iso(UNTIL), "--alerts-out", a_out)
    assert p.returncode == 0, p.stderr
    n_alerts = len([line for line in a_out.read_text(encoding="utf-8").splitlines() if line.strip()])
    assert n_alerts == len(run(ev, until=UNTIL, sort=False).alerts) > 0
    assert summary_of(p) == (f"8 lines, 4 events applied, 1 invalid, 2 duplicates, {n_alerts} alerts, "
                             f"2 shops, 1 blank")
    # the invalid line is still reported on its own, before the summary
    assert [line for line in p.stderr.splitlines() if line.startswith(f"{src}:")] == \
        [line for line in p.stderr.splitlines() if line.startswith(f"{src}:6: invalid event")]


def test_replay_summary_without_blank_lines(events_file, tmp_path):
    src = tmp_path / "clean.jsonl"
    src.write_text("\n".join(json.dumps(e) for e in valid_events()) + "\n", encoding="utf-8")
    p = replay(src, "--alerts-out", tmp_path / "a.jsonl")
    assert p.returncode == 0, p.stderr
    assert p.stderr.splitlines() == [p.stderr.splitlines()[-1]]
    assert summary_of(p).startswith("6 lines, 6 events applied, 0 invalid, 0 duplicates, ")
    assert summary_of(p).endswith(" 2 shops")


def test_replay_of_a_binary_file_is_bounded_and_ends_with_the_summary(tmp_path):
    rnd = random.Random(7)
    blob = rnd.randbytes(400_000) + b"\n".join(bytes([rnd.randrange(256)]) * 3 for _ in range(300))
    src = tmp_path / "blob.bin"
    src.write_bytes(blob)
    p = replay(src, "--alerts-out", tmp_path / "a.jsonl", timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    err = p.stderr.splitlines()
    assert len(err) <= 102, len(err)
    assert sum(1 for line in err if ": invalid event: " in line) == 100
    assert any("only counted" in line for line in err)
    s = summary_of(p)
    invalid = int(s.split(", ")[2].split()[0])
    assert invalid > 300
    assert ", 0 events applied, " in s


@pytest.mark.skipif(not Path("/bin/ls").exists(), reason="no /bin/ls")
def test_replay_of_bin_ls(tmp_path):
    p = replay("/bin/ls", "--alerts-out", tmp_path / "a.jsonl", timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    assert len(p.stderr.splitlines()) <= 102
    summary_of(p)


def test_replay_too_large_lines_are_invalid_and_skipped(tmp_path):
    ev = valid_events()
    big = {**Shop("xiaohongshu", "s-x").paid("o-big", T0, event_id="big"), "category": "x" * 70_000}
    lines = [json.dumps(ev[0]), json.dumps(big), json.dumps(ev[1])]
    src = tmp_path / "big.jsonl"
    # and a last line of 2 MB without a line end
    src.write_bytes(("\n".join(lines) + "\n").encode() + b"{" + b"a" * 2_000_000)
    p = replay(src, "--alerts-out", tmp_path / "a.jsonl")
    assert p.returncode == 0, p.stderr[-2000:]
    err = p.stderr.splitlines()
    assert err[0].startswith(f"{src}:2: invalid event: record too large"), err
    assert err[1].startswith(f"{src}:4: invalid event: record too large: 2000001 bytes"), err
    assert summary_of(p).startswith("4 lines, 2 events applied, 2 invalid, 0 duplicates, ")


def test_replay_rejects_events_outside_the_time_window(tmp_path):
    x, d = Shop("xiaohongshu", "s-x"), Shop("douyin", "s-d")
    good = valid_events()
    hostile = [
        (1, {**x.paid("o-future", T0, event_id="f1"), "ts": "9999-12-31T23:59:59+08:00"}, "in the future"),
        (3, {**x.shipped("o-late", T0, event_id="f2"), "ts": "2999-01-01T00:00:00+08:00"}, "in the future"),
        (4, {**d.paid("o-old", T0, event_id="f3"), "ts": "1970-01-01T00:00:00Z"}, "before the earliest"),
        (6, {**d.chat("started", "c-9", T0, event_id="f4"), "ts": "9999-12-31T00:00:00Z"}, "in the future"),
    ]
    lines = [json.dumps(e) for e in good]
    for pos, e, _ in hostile:
        lines.insert(pos, json.dumps(e))
    src, clean = tmp_path / "window.jsonl", tmp_path / "clean.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    clean.write_text("\n".join(json.dumps(e) for e in good) + "\n", encoding="utf-8")

    t = time.monotonic()
    q = replay(clean, "--alerts-out", tmp_path / "a2.jsonl", "--scores-out", tmp_path / "s2.json")
    baseline = time.monotonic() - t  # mostly the start-up of the command
    assert q.returncode == 0, q.stderr
    t = time.monotonic()
    p = replay(src, "--alerts-out", tmp_path / "a1.jsonl", "--scores-out", tmp_path / "s1.json", timeout=30)
    elapsed = time.monotonic() - t
    assert p.returncode == 0, p.stderr
    # a year-9999 clock would fire day timers for millions of days (minutes); allow for a busy machine
    assert elapsed < baseline + 5, (elapsed, baseline)
    bad = {int(line.split(":")[1]): line for line in p.stderr.splitlines() if line.startswith(f"{src}:")}
    want = {pos + 1: reason for pos, _e, reason in hostile}  # each inserted after the earlier ones
    assert set(bad) == set(want), p.stderr
    for n, reason in want.items():
        assert reason in bad[n], bad[n]
    assert summary_of(p).startswith(f"{len(lines)} lines, {len(good)} events applied, {len(hostile)} invalid, ")
    assert (tmp_path / "a1.jsonl").read_text() == (tmp_path / "a2.jsonl").read_text()
    assert json.loads((tmp_path / "s1.json").read_text()) == json.loads((tmp_path / "s2.json").read_text())


def _now_us() -> int:
    return int(datetime.now(UTC).timestamp()) * 1_000_000


def test_replay_window_now_is_the_later_of_the_wall_clock_and_until(tmp_path):
    soon = _now_us() + 2 * DAY  # past the default skew of one day
    sh = Shop("jd", "s-j")
    src = tmp_path / "future.jsonl"
    src.write_text(json.dumps(sh.paid("o-f", soon, event_id="f")) + "\n", encoding="utf-8")
    p = replay(src, "--alerts-out", tmp_path / "a.jsonl")
    assert p.returncode == 0, p.stderr
    assert "in the future" in p.stderr
    assert summary_of(p).startswith("1 lines, 0 events applied, 1 invalid")
    # a future-dated scenario given with its --until runs
    p = replay(src, "--until", iso(soon + DAY), "--alerts-out", tmp_path / "a.jsonl")
    assert p.returncode == 0, p.stderr
    assert summary_of(p).startswith("1 lines, 1 events applied, 0 invalid")
    # the skew is a setting
    p = replay(src, "--alerts-out", tmp_path / "a.jsonl", env={"SHOPWATCH_MAX_FUTURE_SKEW_S": str(3 * 86400)})
    assert summary_of(p).startswith("1 lines, 1 events applied, 0 invalid"), p.stderr


def test_replay_min_event_time_is_a_setting(events_file, tmp_path):
    p = replay(events_file, "--alerts-out", tmp_path / "a.jsonl",
               env={"SHOPWATCH_MIN_EVENT_TIME": iso(T0 + HOUR)})
    assert p.returncode == 0, p.stderr
    early = [line for line in p.stderr.splitlines() if "before the earliest" in line]
    assert len(early) == 4, p.stderr  # the three valid events at T0 and the duplicate of one


# ------------------------------------------------------------------ tick
def tick(*args) -> subprocess.CompletedProcess:
    # no broker on port 1: a refused --until must fail before connecting
    return subprocess.run([*cli(), "tick", *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, env={**os.environ, "KAFKA_BOOTSTRAP": "127.0.0.1:1"})


@pytest.mark.parametrize("until, words", [
    ("9999-12-31T00:00:00Z", ["in the future"]),
    ("1999-06-01T00:00:00+08:00", ["before the earliest"]),
    ("2026-10-01", ["RFC 3339"]),
])
def test_tick_refuses_until_outside_the_window(until, words):
    one_line_error(tick("--until", until), 2, "shopwatch tick: ", "--until", *words)


def test_tick_unreachable_broker_is_one_line():
    p = tick("--until", iso(_now_us()))
    one_line_error(p, 1, "shopwatch tick: ", "127.0.0.1:1")


def test_the_replay_path_does_not_load_faust_or_aiohttp():
    code = ("import shopwatch.agents.cli, sys; "
            "print(sorted(m for m in ('faust', 'aiohttp', 'aiokafka', 'mode') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
