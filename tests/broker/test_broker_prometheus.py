"""The operator metrics (agents/metrics.py) through a REAL Prometheus, on the real broker.

One worker (event clock, 2 partitions) takes a small simulation (`shopwatch
simulate --kafka`); a real ``prometheus`` (Debian package ``prometheus``,
installed by ``make setup``) on a free loopback port scrapes its /metrics every
second into a temporary TSDB, and the test reads back through Prometheus's
HTTP query API (``/api/v1/query``): the consumer lag of every input partition
(down to 0 once the worker has committed everything), the partitions' event
clocks, the event-to-alert latency histogram, and one 小红书 shop's score and
indicators equal to the worker's ``/shops/{platform}/{shop_id}/score`` view.

When ``prometheus`` is missing the test fails under CI (``CI=true``) and skips
elsewhere. Every wait polls against a deadline (the machine is small and
loaded); nothing relies on a fixed sleep.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from broker_helpers import Worker, _http, free_port, shopwatch_cmd

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

P = 2
INPUTS = ("shop.orders", "shop.shipments", "shop.refunds", "shop.chats")
PLATFORM, SHOP = "xiaohongshu", "xi-shop-0"  # simulate's shops go round-robin over the platforms
SIM = ["--seed", "2", "--shops", "5", "--days", "3", "--orders-per-shop-day", "30"]


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path:
        return path
    msg = "prometheus not installed (Debian package prometheus; `make setup` installs it)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{msg}: CI must run the Prometheus test", pytrace=False)
    pytest.skip(msg)


class Prometheus:
    """One real Prometheus on 127.0.0.1 scraping ``target``'s /metrics every second."""

    def __init__(self, binary: str, workdir: Path, target: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "shopwatch", "metrics_path": "/metrics",
                                "static_configs": [{"targets": [target]}]}],
        }
        cfg = workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config), encoding="utf-8")
        self._log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [binary, f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join((self.workdir / "prometheus.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def _get(self, path: str, timeout: float = 10.0):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return r.status, r.read()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited with {self.proc.returncode}:\n{self.log_tail()}", pytrace=False)
            try:
                if self._get("/-/ready", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"prometheus not ready on {self.url} after {timeout}s:\n{self.log_tail()}", pytrace=False)

    def query(self, promql: str) -> list[tuple[dict, float]]:
        """An instant query: (labels, value) of each series."""
        status, body = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        doc = json.loads(body)
        assert status == 200 and doc["status"] == "success", (promql, doc)
        assert doc["data"]["resultType"] == "vector", doc
        return [(r["metric"], float(r["value"][1])) for r in doc["data"]["result"]]

    def targets(self) -> list[dict]:
        try:
            return json.loads(self._get("/api/v1/targets")[1])["data"]["activeTargets"]
        except (OSError, ValueError, KeyError):
            return []

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def poll(what: str, check, timeout: float, every: float = 0.5, context=lambda: ""):
    """``check()`` until it returns something true (returned); a failure naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"{what} not seen within {timeout:.0f}s (last: {last!r})\n{context()}", pytrace=False)


def _score_view(port: int) -> dict | None:
    try:
        status, body = _http(port, f"/shops/{PLATFORM}/{SHOP}/score", timeout=10.0)
    except (OSError, urllib.error.URLError):
        return None
    return json.loads(body) if status == 200 else None


def test_prometheus_reads_lag_clocks_latency_and_scores(kafka_bootstrap, shopwatch_env, topic_prefix, tmp_path):
    binary = prometheus_binary()
    t0 = time.monotonic()
    env = {**shopwatch_env, "SHOPWATCH_CLOCK": "event", "SHOPWATCH_PARTITIONS": str(P)}
    worker = Worker(env, tmp_path / "worker.log")
    prom = Prometheus(binary, tmp_path / "prometheus", f"127.0.0.1:{worker.port}")

    def context() -> str:
        return (f"targets: {[(t.get('health'), t.get('lastError')) for t in prom.targets()]}\n"
                f"--- worker\n{worker.log_tail(30)}\n--- prometheus\n{prom.log_tail(10)}")

    try:
        prom.wait_ready()
        worker.wait_ready(timeout=120)
        # the scrape works before any input: Prometheus has the worker up
        poll("the worker's target up", lambda: [v for _l, v in prom.query('up{job="shopwatch"}') if v == 1],
             timeout=30, context=context)

        sim = subprocess.run(shopwatch_cmd("simulate", *SIM, "--kafka"), env=env, capture_output=True, text=True,
                             timeout=180, stdin=subprocess.DEVNULL)
        assert sim.returncode == 0, sim.stderr
        records = int(re.search(r"(\d+) records", sim.stderr).group(1))
        assert records > 1000, sim.stderr

        def consumed() -> float:
            valid = sum(v for _l, v in prom.query("sum(shopwatch_events_total)"))
            invalid = sum(v for _l, v in prom.query("sum(shopwatch_invalid_events_total)"))
            return valid + invalid if valid + invalid >= records else 0

        poll(f"all {records} records consumed (Prometheus' view)", consumed, timeout=120, context=context)

        # consumer lag: a series for every input partition, all 0 once the worker committed them
        inputs = {topic_prefix + t for t in INPUTS}
        want = {(t, str(p)) for t in inputs for p in range(P)}

        def lag_drained():
            lag = {(m["topic"], m["partition"]): v for m, v in prom.query("shopwatch_consumer_lag")
                   if m["topic"] in inputs}
            return lag if set(lag) == want and not any(lag.values()) else None

        lag = poll("consumer lag 0 on every input partition", lag_drained, timeout=90, every=1.0, context=context)
        assert len(lag) == len(INPUTS) * P
        internal = {m["topic"] for m, _v in prom.query("shopwatch_consumer_lag")} - inputs
        assert topic_prefix + "shop.ticks" in internal and topic_prefix + "shop.contribs" in internal

        # one shop's score and indicators: as the worker's score view answers them
        def same_score():
            before = _score_view(worker.port)
            score = prom.query(f'shopwatch_shop_score{{platform="{PLATFORM}", shop="{SHOP}"}}')
            indicators = {m["indicator"]: v for m, v in
                          prom.query(f'shopwatch_shop_indicator{{platform="{PLATFORM}", shop="{SHOP}"}}')}
            after = _score_view(worker.port)
            if before is None or before != after or before["score"] is None or len(score) != 1:
                return None
            view_indicators = {k: i["value"] for k, i in before["indicators"].items() if i["value"] is not None}
            if score[0][1] != before["score"] or indicators != view_indicators:
                return None
            return before

        view = poll(f"{PLATFORM}/{SHOP}'s score in Prometheus equal to /shops/{PLATFORM}/{SHOP}/score", same_score,
                    timeout=60, every=1.0, context=lambda: f"view {_score_view(worker.port)}\n{context()}")
        assert 3.0 <= view["score"] <= 5.0 and view["indicators"]
        [(_labels, n_shops)] = prom.query("shopwatch_shops")
        assert n_shops == 5
        assert prom.query("shopwatch_shop_metrics_suppressed")[0][1] == 0

        # the event clocks: every partition of each kind, dated in the simulated days (event clock)
        clocks = {(m["kind"], m["partition"]): v for m, v in prom.query("shopwatch_watermark_lag_seconds")}
        assert set(clocks) == {(k, str(p)) for k in ("orders", "chats", "shops") for p in range(P)}, clocks
        assert all(v > 86400 for v in clocks.values()), clocks  # the simulated data is weeks old
        assert prom.query("shopwatch_event_clock")[0][1] == 1
        assert sum(v for _l, v in prom.query('sum(shopwatch_open_entities{kind="orders"})')) > 0

        # event -> alert latency: alerts made by records were observed
        [(_l, observed)] = prom.query('sum(shopwatch_event_alert_latency_seconds_count{cause="record"})')
        assert observed > 0
        [(_l, p99)] = prom.query('histogram_quantile(0.99, sum by (le) '
                                 '(shopwatch_event_alert_latency_seconds_bucket{cause="record"}))')
        assert not math.isnan(p99) and 0 < p99 <= 3600, p99
        print(f"{records} records; lag 0 on {len(lag)} input partitions; {PLATFORM}/{SHOP} score "
              f"{view['score']}; {observed:.0f} alerts observed, p99 {p99:.2f}s; {time.monotonic() - t0:.0f}s")
    finally:
        prom.stop()
        code = worker.stop()
    assert code == 0, worker.log_tail()
