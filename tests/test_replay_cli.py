"""`shopwatch replay` (events.md "Replay (no Kafka)") run as a command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from core_helpers import DAY, HOUR, Shop, iso, local, run

ROOT = Path(__file__).resolve().parents[1]
T0 = local(2026, 10, 1, 10)
UNTIL = T0 + 5 * DAY


def cli() -> list[str]:
    exe = ROOT / ".venv" / "bin" / "shopwatch"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "shopwatch.agents.cli"]


def replay(*args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*cli(), "replay", *map(str, args)], capture_output=True, text=True, input=stdin,
                          cwd=ROOT, timeout=120)


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
