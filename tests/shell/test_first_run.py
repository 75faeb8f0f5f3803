"""What a new user meets first (issue 15): the README's command table, `make demo`'s
script and the broker tests' subprocess environment. No broker, no network."""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "deploy" / "demo.sh"


# ------------------------------------------------------------ README's command table

class _Parser(Exception):
    pass


def _subcommands(monkeypatch) -> dict[str, argparse.ArgumentParser]:
    """The subparsers `shopwatch` really builds (agents/cli.py), caught at parse_args."""
    from shopwatch.agents import cli

    def grab(self, *args, **kwargs):
        raise _Parser(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
    with pytest.raises(_Parser) as caught:
        cli.main([])
    parser = caught.value.args[0]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _table_rows() -> dict[str, list[str]]:
    """command -> the tokens of its usage in the README's "## Commands" table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `shopwatch (\w+)(.*?)(?<!\\)` \|", line)
        if m:
            usage = m[2].replace("\\|", "|")
            rows[m[1]] = re.findall(r"\[|\]|\(|\)|\||[^\s\[\]()|]+", usage)
    return rows


def _documented(tokens: list[str]) -> dict[str, tuple[bool, bool]]:
    """option -> (inside brackets, followed by a value) for each option of a usage."""
    out, depth = {}, 0
    for i, t in enumerate(tokens):
        if t == "[":
            depth += 1
        elif t == "]":
            depth -= 1
        elif t.startswith("-"):
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            out[t] = (depth > 0, nxt is not None and re.fullmatch(r"[\w.|-]+", nxt) is not None
                      and not nxt.startswith("-"))
    assert depth == 0, tokens
    return out


def test_readme_command_table_matches_the_cli(monkeypatch):
    subs = _subcommands(monkeypatch)
    rows = _table_rows()
    assert set(rows) == set(subs), "README's command table and agents/cli.py name different commands"
    problems = []
    for name, parser in subs.items():
        doc = _documented(rows[name])
        actions = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
        known = {o for a in actions for o in a.option_strings}
        problems += [f"{name}: README has {o}, which the command does not take" for o in doc if o not in known]
        for a in actions:
            if not a.option_strings:
                continue
            shown = [o for o in a.option_strings if o in doc]
            if not shown:
                problems.append(f"{name}: {'/'.join(a.option_strings)} is missing from the README")
                continue
            optional, valued = doc[shown[0]]
            if optional == a.required:
                problems.append(f"{name}: {shown[0]} is {'required' if a.required else 'optional'}, "
                                f"the README shows it {'in' if optional else 'outside'} brackets")
            if valued != (a.nargs != 0):
                problems.append(f"{name}: {shown[0]} {'takes' if a.nargs != 0 else 'takes no'} value")
        positionals = [a for a in actions if not a.option_strings]
        leading = 0
        for t in rows[name]:
            if not re.fullmatch(r"[A-Z][A-Z0-9_.]*", t):
                break
            leading += 1
        if leading != len(positionals):
            problems.append(f"{name}: {len(positionals)} positional argument(s), the README shows {leading}")
    assert not problems, "\n".join(problems)


def test_readme_names_the_simulators_shop_ids():
    from shopwatch.agents.simulator import ABBR
    from shopwatch.schemas.events import PLATFORMS

    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "`<abbr>-shop-<i div 5>`" in text
    ids = [f"{ABBR[PLATFORMS[i % len(PLATFORMS)]]}-shop-{i // len(PLATFORMS)}" for i in range(5)]
    assert ", ".join(f"`{s}`" for s in ids) in text


# ------------------------------------------------------------ make demo's script

def _demo_helper() -> str:
    text = DEMO.read_text(encoding="utf-8")
    return re.split(r"<<'PY'.*\n", text, maxsplit=1)[1].split("\nPY\n", 1)[0]


def test_demo_script_parses():
    r = subprocess.run(["bash", "-n", str(DEMO)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_demo_helper_compiles_and_has_every_step_the_script_calls():
    source = _demo_helper()
    code = compile(source, "deploy/demo.sh:DEMO_PY", "exec")
    defined = {n.removeprefix("cmd_").replace("_", "-") for n in code.co_names if n.startswith("cmd_")}
    called = set(re.findall(r'"\$\{PY\[@\]\}" ([a-z-]+)', DEMO.read_text(encoding="utf-8")))
    assert called and called <= defined, called - defined


def test_demo_helper_reads_the_watch_lines(tmp_path):
    """The totals count the alert lines `shopwatch watch` prints: the helper's pattern
    must match watch's format."""
    ns: dict = {}
    exec(compile(_demo_helper().split('\nif __name__ == "__main__":', 1)[0], "demo", "exec"), ns)
    out = tmp_path / "watch.out"
    line = "[{:<8}] {:<8} {}  {}"
    out.write_text("\n".join([
        line.format("warning", "firing", "ship_warning:douyin:o00000294-do", "订单 o00000294-do …"),
        line.format("critical", "resolved", "ship_overdue:jd:o00000001-jd", "已恢复：ship_overdue"),
        "", "shop                         score/level  indicators",
        "douyin:do-shop-0                     LV1  on_time_ship_rate=-",
    ]) + "\n", encoding="utf-8")
    assert ns["shown"](str(out)) == [("ship_warning:douyin:o00000294-do", "firing"),
                                     ("ship_overdue:jd:o00000001-jd", "resolved")]
    src = (ROOT / "agents" / "watch.py").read_text(encoding="utf-8")
    assert "{d['severity']:<8}] {d['status']:<8} {d['alert_id']}  {d['summary']}" in src


# ------------------------------------------------------------ the broker tests' environment

def test_subprocess_env_keeps_the_machines_environment_out(monkeypatch):
    import conftest

    monkeypatch.setenv("SOME_API_TOKEN", "s3cret-value")
    monkeypatch.setenv("SHOPWATCH_SINKS", "[]")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    env = conftest.subprocess_env(SHOPWATCH_APP_ID="t-x", KAFKA_BOOTSTRAP="127.0.0.1:1")
    assert "SOME_API_TOKEN" not in env and "SHOPWATCH_SINKS" not in env
    assert env["PATH"] and env["LC_ALL"] == "C.UTF-8" and env["SHOPWATCH_APP_ID"] == "t-x"
    for shown in (repr(env), str(env), f"{env}", repr({"env": env})):
        assert "'SHOPWATCH_APP_ID': 't-x'" in shown and "'KAFKA_BOOTSTRAP': '127.0.0.1:1'" in shown
        assert "s3cret" not in shown and env["PATH"] not in shown
    # what the tests pass on ({**shopwatch_env, ...}) holds no more than that either
    assert "s3cret-value" not in repr({**env, "SHOPWATCH_CLOCK": "event"})
