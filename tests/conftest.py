"""Shared fixtures. Broker tests run on a REAL Kafka broker, never a mock:

- ``kafka_bootstrap`` (session): KAFKA_BOOTSTRAP if set, else the local
  single-node broker of ``deploy/kafka/kafka.sh up`` (started if needed, left
  running) on 127.0.0.1:$KAFKA_PORT (9092). If it cannot start, the tests
  that need it fail; they are never skipped.
- ``topic_prefix``: a prefix unique to one test (and one run), so reruns and
  other tests never see each other's records; its topics are deleted after
  the test.
- ``shopwatch_env``: the environment for a ``shopwatch`` subprocess wired to
  that broker, that prefix and a unique consumer group (app id). It carries
  only what the subprocess needs from this machine's environment (PATH, HOME,
  locale, temp dir, PYTHONPATH, ...; ``SUBPROCESS_ENV_KEYS``), never the rest,
  and its repr shows only the SHOPWATCH_*/KAFKA_* keys: a failing test never
  prints the machine's environment (nor a copy ``{**shopwatch_env, ...}``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from broker_helpers import KAFKA_SH, delete_topics, free_port, unique_prefix


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    if bootstrap:
        return bootstrap
    try:
        # The first run on a machine fetches Kafka with Maven: allow for it.
        r = subprocess.run(["bash", str(KAFKA_SH), "up"], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{KAFKA_SH} up timed out after {exc.timeout}s:\n{exc.stderr or ''}", pytrace=False)
    if r.returncode != 0:
        pytest.fail(
            f"{KAFKA_SH} up failed (exit {r.returncode}); the broker tests need a real Kafka "
            f"(or KAFKA_BOOTSTRAP):\n{r.stdout}\n{r.stderr}",
            pytrace=False,
        )
    return "127.0.0.1:" + os.environ.get("KAFKA_PORT", "9092")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item (``rep_call``: did the test itself fail?)."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def topic_prefix(request):
    """A unique topic prefix; the test's topics (and Faust's internal topics
    of an app id starting with it) are deleted afterwards, unless
    SHOPWATCH_KEEP_TEST_TOPICS=1 (to look at them), or
    SHOPWATCH_KEEP_FAILED_TOPICS=1 and the test failed (bench/kill_loop.sh)."""
    prefix = unique_prefix(request.node.name)
    yield prefix
    call = getattr(request.node, "rep_call", None)
    keep = os.environ.get("SHOPWATCH_KEEP_TEST_TOPICS") or (
        os.environ.get("SHOPWATCH_KEEP_FAILED_TOPICS") and call is not None and call.failed)
    if keep:
        print(f"kept the topics {prefix}*")
    elif "kafka_bootstrap" in request.fixturenames:
        delete_topics(request.getfixturevalue("kafka_bootstrap"), prefix)


#: What a `shopwatch` subprocess takes from this machine's environment: where programs
#: and the home directory are, the locale, the time zone, the temp dir and how Python
#: finds the package. Nothing else (no SHOPWATCH_* of the machine, no tokens or keys).
SUBPROCESS_ENV_KEYS = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
                       "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "SYSTEMROOT")
SUBPROCESS_ENV_PREFIXES = ("LC_",)


class SubprocessEnv(dict):
    """A subprocess environment whose repr (assertion messages, tracebacks, -l) shows
    only its SHOPWATCH_*/KAFKA_* settings and the names of the other keys."""

    def __repr__(self) -> str:
        shown = {k: v for k, v in sorted(self.items()) if k.startswith(("SHOPWATCH_", "KAFKA_"))}
        rest = sorted(k for k in self if k not in shown)
        return f"SubprocessEnv({shown!r}, also {', '.join(rest) or 'nothing'})"


def subprocess_env(**settings: str) -> SubprocessEnv:
    """The machine's SUBPROCESS_ENV_KEYS (and LC_*) plus ``settings``."""
    env = SubprocessEnv((k, v) for k, v in os.environ.items()
                        if k in SUBPROCESS_ENV_KEYS or k.startswith(SUBPROCESS_ENV_PREFIXES))
    env.update(settings)
    return env


@pytest.fixture
def shopwatch_env(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> SubprocessEnv:
    """Environment for a `shopwatch` subprocess: this test's topics, group, port and data dir."""
    return subprocess_env(
        KAFKA_BOOTSTRAP=kafka_bootstrap,
        SHOPWATCH_TOPIC_PREFIX=topic_prefix,
        SHOPWATCH_APP_ID=topic_prefix + "shopwatch",
        SHOPWATCH_WEB_PORT=str(free_port()),
        SHOPWATCH_WEB_BIND="127.0.0.1",
        SHOPWATCH_DATA_DIR=str(tmp_path / "data"),
        PYTHONUNBUFFERED="1",
    )
