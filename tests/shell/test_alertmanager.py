"""Alertmanager sink (shopwatch.agents.alertmanager) against a REAL Alertmanager.

The tests start ``prometheus-alertmanager`` (Debian package
``prometheus-alertmanager``, installed by ``make setup``) on free loopback
ports, clustering disabled, a temporary storage path and a null receiver,
and look at what it holds through its API (``GET /api/v2/alerts``). The
deploy example (deploy/alertmanager.yml) is checked with ``amtool`` and
loaded into a real Alertmanager to see its grouping.

When the binaries are missing the tests fail under CI (``CI=true``, where
``make setup`` should have installed them) and skip elsewhere.

Response classes Alertmanager does not produce on demand (429, 503, a slow
answer) come from a local aiohttp stub. Each test is a sync function running
its coroutine with ``asyncio.run`` (as tests/shell/test_sinks.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from shopwatch.agents.alertmanager import AlertmanagerSink, Outcome
from shopwatch.agents.sinks import SinkConfigError

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_CONFIG = ROOT / "deploy" / "alertmanager.yml"
NULL_CONFIG = 'route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n'
LABELS = {"alertname", "platform", "shop_id", "severity", "alert_id"}


def tool(name: str, package: str) -> str:
    """The path of ``name``; missing, a failure under CI and a skip elsewhere."""
    path = shutil.which(name)
    if path:
        return path
    msg = f"{name} not installed (Debian package {package}; `make setup` installs it)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{msg}: CI must run the Alertmanager tests", pytrace=False)
    pytest.skip(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Alertmanager:
    """One real Alertmanager process on 127.0.0.1."""

    def __init__(self, workdir: Path, config: str | Path = NULL_CONFIG) -> None:
        self.binary = tool("prometheus-alertmanager", "prometheus-alertmanager")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        if isinstance(config, Path):
            self.config = config
        else:
            self.config = workdir / "alertmanager.yml"
            self.config.write_text(config, encoding="utf-8")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Alertmanager:
        self.log = open(self.workdir / "alertmanager.log", "ab")  # closed in stop()
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={self.config}", f"--storage.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        log = (self.workdir / "alertmanager.log").read_text(errors="replace")
        pytest.fail(f"Alertmanager on {self.url} not ready within 30 s:\n{log[-3000:]}", pytrace=False)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        self.log.close()

    def get(self, path: str, **filters: str) -> list[dict]:
        query = urllib.parse.urlencode([("filter", f'{k}="{v}"') for k, v in filters.items()])
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=5) as r:
            return json.loads(r.read())

    def alerts(self, **filters: str) -> list[dict]:
        """Alertmanager's current (not resolved) alerts matching the label filters."""
        return self.get("/api/v2/alerts", **filters)

    def processed(self, **filters: str) -> list[dict]:
        """Like :meth:`alerts`, once the dispatcher has seen them all (state no longer unprocessed)."""
        deadline = time.monotonic() + 5
        while True:
            found = self.alerts(**filters)
            if all(a["status"]["state"] != "unprocessed" for a in found) or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


@pytest.fixture(scope="module")
def am(tmp_path_factory) -> Alertmanager:
    server = Alertmanager(tmp_path_factory.mktemp("alertmanager")).start()
    yield server
    server.stop()


def shop() -> str:
    return "s-" + uuid.uuid4().hex[:10]


def alert(shop_id: str, order_id: str, *, kind: str = "ship_overdue", status: str = "firing",
          at: str = "2026-11-22T10:00:00+08:00", severity: str = "critical", **extra) -> dict:
    a = {
        "alert_id": f"{kind}:douyin:{order_id}",
        "kind": kind,
        "severity": severity,
        "status": status,
        "platform": "douyin",
        "shop_id": shop_id,
        "order_id": order_id,
        "at": at,
        "due_at": "2026-11-22T10:00:00+08:00",
        "summary": (f"订单 {order_id}（非直播订单）已超过最晚发货时间 2026-11-22 10:00，仍未发货" if status == "firing"
                    else f"已恢复：订单 {order_id} 已发货"),
        "details": {},
    }
    a.update(extra)
    return a


def sink(url: str, **kw) -> AlertmanagerSink:
    kw.setdefault("name", "am-" + uuid.uuid4().hex[:8])
    return AlertmanagerSink(url=url, **kw)


def send(s: AlertmanagerSink, request) -> Outcome:
    async def go() -> Outcome:
        async with aiohttp.ClientSession() as session:
            return await s.post(session, request)
    return asyncio.run(go())


def counted(s: AlertmanagerSink, outcome: str) -> float:
    return REGISTRY.get_sample_value("shopwatch_sink_deliveries_total", {"sink": s.name, "outcome": outcome}) or 0


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- the real Alertmanager


def test_firing_alert_shows_with_labels_and_annotations(am):
    s = sink(am.url, generator_url="http://worker-1:6066/", resend=60)
    sid = shop()
    a = alert(sid, "o-1001", details={"compensation_fen": 500})
    now = time.time()
    out = send(s, s.render_batch([a], now, mentions=["@ops"]))
    assert out == Outcome("ok", "HTTP 200", None)
    assert counted(s, "delivered") == 1

    [got] = am.processed(shop_id=sid)
    assert got["labels"] == {"alertname": "ship_overdue", "platform": "douyin", "shop_id": sid,
                             "severity": "critical", "alert_id": "ship_overdue:douyin:o-1001"}
    assert "order_id" not in got["labels"]
    ann = got["annotations"]
    assert ann["summary"] == a["summary"]
    assert ann["order_id"] == "o-1001" and ann["alert_id"] == a["alert_id"]
    assert ann["due_at"] == "2026-11-22T10:00:00+08:00"
    assert "订单：o-1001" in ann["description"] and "平台：抖音 (douyin)" in ann["description"]
    assert json.loads(ann["details"]) == {"compensation_fen": 500}
    assert got["status"]["state"] == "active"
    assert parse(got["startsAt"]) == datetime.fromisoformat(a["at"])
    # endsAt: now + 4 × resend
    assert abs(parse(got["endsAt"]).timestamp() - (now + 240)) < 1
    assert got["generatorURL"] == "http://worker-1:6066/orders/o-1001"


def test_resolve_makes_it_gone(am):
    s = sink(am.url)
    sid = shop()
    send(s, s.render_batch([alert(sid, "o-1")], time.time()))
    assert len(am.processed(shop_id=sid)) == 1
    out = send(s, s.render_batch([alert(sid, "o-1", status="resolved", at="2026-11-22T11:00:00+08:00")],
                                 time.time()))
    assert out.kind == "ok"
    assert am.alerts(shop_id=sid) == []
    assert am.get("/api/v2/alerts", shop_id=sid) == []  # neither active nor any other state

    # a resolve whose firing was never delivered: accepted, nothing appears
    out = send(s, s.render_batch([alert(sid, "o-2", status="resolved", folded=True)], time.time()))
    assert out.kind == "ok"
    assert am.alerts(shop_id=sid) == []


def test_two_orders_of_one_shop_and_kind_stay_two_alerts(am):
    s = sink(am.url)
    sid = shop()
    out = send(s, s.render_batch([alert(sid, "o-1"), alert(sid, "o-2"),
                                  alert(sid, "o-1", kind="ship_warning", severity="warning")], time.time()))
    assert out.kind == "ok" and counted(s, "delivered") == 3
    got = am.processed(shop_id=sid, alertname="ship_overdue")
    assert sorted(a["annotations"]["order_id"] for a in got) == ["o-1", "o-2"]
    # resolving one leaves the other firing
    send(s, s.render_batch([alert(sid, "o-1", status="resolved")], time.time()))
    [left] = am.alerts(shop_id=sid, alertname="ship_overdue")
    assert left["annotations"]["order_id"] == "o-2" and left["status"]["state"] == "active"


def test_resend_keeps_it_active(am):
    s = sink(am.url, resend=1)
    sid = shop()
    kept, dropped = alert(sid, "o-kept"), alert(sid, "o-dropped")
    # sent 3.5 s "ago": endsAt = then + 4 × 1 s, 0.5 s from now
    then = time.time() - 3.5
    assert send(s, s.render_batch([kept, dropped], then)).kind == "ok"
    assert len(am.processed(shop_id=sid)) == 2
    # the delivery loop's re-send, with a resolved alert among the open ones (left out)
    request = s.resend_batch([kept, alert(sid, "o-gone", status="resolved")], time.time())
    assert [a["annotations"]["order_id"] for a in json.loads(request[2])] == ["o-kept"]
    assert send(s, request).kind == "ok"
    time.sleep(max(0.0, then + 4 - time.time()) + 0.5)
    [got] = am.alerts(shop_id=sid)
    assert got["annotations"]["order_id"] == "o-kept" and got["status"]["state"] == "active"
    assert parse(got["endsAt"]).timestamp() > time.time() + 2


def test_empty_batch_is_accepted(am):
    s = sink(am.url, min_severity="critical")
    sid = shop()
    request = s.render_batch([alert(sid, "o-1", kind="ship_warning", severity="warning")], time.time())
    assert request[2] == b"[]"
    assert send(s, request).kind == "ok"
    assert am.alerts(shop_id=sid) == []


def test_invalid_alert_is_rejected(am):
    s = sink(am.url)
    out = send(s, (s.endpoint, s.headers(), b'[{"labels": {}}]'))
    assert out.kind == "reject" and out.retry_after is None
    assert "HTTP 400" in out.detail and "at least one label pair required" in out.detail
    assert counted(s, "rejected") == 1


def test_stopped_alertmanager_gives_retry(tmp_path):
    server = Alertmanager(tmp_path / "am").start()
    s = sink(server.url)
    request = s.render_batch([alert(shop(), "o-1")], time.time())
    try:
        assert send(s, request).kind == "ok"
    finally:
        server.stop()
    out = send(s, request)
    assert out.kind == "retry" and out.retry_after is None
    assert "ClientConnectorError" in out.detail, out.detail
    assert counted(s, "retry") == 1


def test_deploy_config_groups_per_shop(tmp_path):
    """deploy/alertmanager.yml in a real Alertmanager: a shop's critical alerts are one group
    of the critical receiver, its warnings one of the warning receiver."""
    server = Alertmanager(tmp_path / "am", DEPLOY_CONFIG).start()
    try:
        s = sink(server.url)
        sid = shop()
        batch = [alert(sid, "o-1"), alert(sid, "o-2"), alert(sid, "o-3", kind="ship_warning", severity="warning")]
        assert send(s, s.render_batch(batch, time.time())).kind == "ok"
        server.processed(shop_id=sid)
        groups = {g["receiver"]["name"]: g for g in server.get("/api/v2/alerts/groups", shop_id=sid)}
        assert set(groups) == {"ops-critical", "ops-warning"}
        assert groups["ops-critical"]["labels"] == {"platform": "douyin", "shop_id": sid}
        assert sorted(a["annotations"]["order_id"] for a in groups["ops-critical"]["alerts"]) == ["o-1", "o-2"]
        assert [a["annotations"]["order_id"] for a in groups["ops-warning"]["alerts"]] == ["o-3"]
    finally:
        server.stop()


def test_amtool_checks_the_deploy_config():
    amtool = tool("amtool", "prometheus-alertmanager")
    r = subprocess.run([amtool, "check-config", str(DEPLOY_CONFIG)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    routes = {
        "alertname=ship_overdue platform=douyin shop_id=s-1 severity=critical alert_id=x": "ops-critical",
        "alertname=ship_warning platform=jd shop_id=s-1 severity=warning": "ops-warning",
        "alertname=level_changed platform=douyin shop_id=s-1 severity=info": "ops-info",
        "alertname=ShopwatchWorkerDown instance=w:6066 severity=critical": "ops-infra",
    }
    for labels, receiver in routes.items():
        r = subprocess.run([amtool, "config", "routes", "test", f"--config.file={DEPLOY_CONFIG}",
                            f"--verify.receivers={receiver}", *labels.split()],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"{labels}: {r.stdout}{r.stderr}"


# --------------------------------------------------------------------------- other answers (a stub)


def test_throttled_server_errors_and_timeouts():
    async def go() -> dict[str, Outcome]:
        async def handler(request: web.Request) -> web.StreamResponse:
            case = request.match_info["case"]
            if case == "throttled":
                return web.Response(status=429, headers={"Retry-After": "7"}, text="slow down")
            if case == "throttled-date":
                when = datetime.now(UTC) + timedelta(seconds=30)
                return web.Response(status=429, headers={"Retry-After": format_datetime(when, usegmt=True)})
            if case == "throttled-bare":
                return web.Response(status=429)
            if case == "busy":
                return web.Response(status=503, headers={"Retry-After": "2"}, text="unavailable")
            if case == "missing":
                return web.Response(status=404, text="404 page not found")
            if case == "moved":
                raise web.HTTPFound("/elsewhere")
            await asyncio.sleep(3)  # "slow": answers after the sink's 1 s
            return web.Response(status=200)

        app = web.Application()
        app.router.add_post("/{case}/api/v2/alerts", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            out = {}
            async with aiohttp.ClientSession() as session:
                for case in ("throttled", "throttled-date", "throttled-bare", "busy", "missing", "moved", "slow"):
                    # the answered cases get room on a loaded machine; "slow" outlasts its 1 s
                    s = sink(f"http://127.0.0.1:{port}/{case}", timeout=10 if case != "slow" else 1)
                    out[case] = await s.post(session, s.render_batch([alert("s-1", "o-1")], time.time()))
            return out
        finally:
            await runner.cleanup()

    out = asyncio.run(go())
    assert out["throttled"] == Outcome("throttled", "HTTP 429: slow down", 7.0)
    assert out["throttled-date"].kind == "throttled" and 25 < out["throttled-date"].retry_after <= 30
    assert out["throttled-bare"].kind == "throttled" and out["throttled-bare"].retry_after is None
    assert out["busy"] == Outcome("retry", "HTTP 503: unavailable", 2.0)
    assert out["missing"].kind == "reject" and "404" in out["missing"].detail
    assert out["moved"].kind == "reject" and "302" in out["moved"].detail
    assert out["slow"].kind == "retry" and "Timeout" in out["slow"].detail


# --------------------------------------------------------------------------- rendering (pure)


def test_render_batch():
    s = sink("http://am:9093/", generator_url="http://w:6066", min_severity="warning", resend=30,
             bearer_token="tok-123")
    now = datetime(2026, 11, 22, 3, 0, tzinfo=UTC).timestamp()  # 11:00 +08:00
    fired = alert("s 1", "o/1")
    info = alert("s-1", "o-2", kind="level_changed", severity="info")
    future = alert("s-1", "o-3", at="2026-11-22T12:00:00+08:00")  # an event clock ahead of the wall clock
    resolved = alert("s-1", "o-4", status="resolved", at="2026-11-22T10:30:00+08:00",
                     fired_at="2026-11-22T09:00:00+08:00")
    resolved_later = alert("s-1", "o-5", status="resolved", at="2026-11-22T12:00:00+08:00")
    shop_level = {**alert("s-1", "x", kind="daily_cap_reached"), "alert_id": "daily_cap_reached:douyin:s-1:2026-11-22"}
    del shop_level["order_id"]
    url, headers, body = s.render_batch([fired, info, future, resolved, resolved_later, shop_level], now,
                                        mentions={"critical": ["@oncall"]})
    assert url == "http://am:9093/api/v2/alerts"
    assert headers == {"Content-Type": "application/json", "Authorization": "Bearer tok-123"}
    got = json.loads(body)
    assert [a["labels"]["alert_id"] for a in got] == [
        fired["alert_id"], future["alert_id"], resolved["alert_id"], resolved_later["alert_id"],
        shop_level["alert_id"]]  # info is below min_severity
    f, fu, r, rl, sl = got
    assert set(f["labels"]) == LABELS and f["labels"]["shop_id"] == "s 1"
    assert (f["startsAt"], f["endsAt"]) == ("2026-11-22T02:00:00.000Z", "2026-11-22T03:02:00.000Z")
    assert f["generatorURL"] == "http://w:6066/orders/o%2F1"
    assert (fu["startsAt"], fu["endsAt"]) == ("2026-11-22T04:00:00.000Z", "2026-11-22T04:02:00.000Z")
    assert (r["startsAt"], r["endsAt"]) == ("2026-11-22T01:00:00.000Z", "2026-11-22T02:30:00.000Z")
    assert r["annotations"]["summary"].startswith("已恢复") and "恢复时间" in r["annotations"]["description"]
    assert (rl["startsAt"], rl["endsAt"]) == ("2026-11-22T03:00:00.000Z",) * 2  # never ends after now
    assert sl["generatorURL"] == "http://w:6066/alerts?shop_id=s-1" and "order_id" not in sl["annotations"]
    assert "details" not in f["annotations"]  # empty details are left out

    # no generator_url: no generatorURL; basic auth
    s2 = AlertmanagerSink(url="http://am:9093", username="u", password="p w")
    _, headers, body = s2.render_batch([fired], now)
    assert "generatorURL" not in json.loads(body)[0]
    assert headers["Authorization"] == "Basic dTpwIHc="
    # a re-send only carries what is firing and wanted
    assert [a["labels"]["alert_id"] for a in json.loads(s.resend_batch([fired, info, resolved], now)[2])] == [
        fired["alert_id"]]


# --------------------------------------------------------------------------- configuration


def test_from_config():
    s = AlertmanagerSink.from_config({
        "type": "alertmanager", "url": "https://am.example:9443/alertmanager/", "name": "am-prod",
        "generator_url": "http://w:6066/", "resend": 30, "timeout": 5, "min_severity": "warning",
        "username": "shopwatch", "password": "hunter2-secret"})
    assert (s.name, s.resend, s.timeout, s.min_severity) == ("am-prod", 30.0, 5.0, "warning")
    assert s.endpoint == "https://am.example:9443/alertmanager/api/v2/alerts"
    assert s.generator_url == "http://w:6066"
    assert "hunter2" not in repr(s) and "shopwatch" not in repr(s)
    d = AlertmanagerSink.from_config({"type": "alertmanager", "url": "http://127.0.0.1:9093"})
    assert (d.name, d.resend, d.timeout, d.min_severity, d.generator_url) == ("alertmanager", 60.0, 10.0, "info", None)
    assert "Authorization" not in d.headers()
    t = AlertmanagerSink.from_config({"type": "alertmanager", "url": "http://am:9093", "bearer_token": "tok-secret"})
    assert "tok-secret" not in repr(t)

    bad = {
        "not an object": ([], "must be an object"),
        "wrong type": ({"type": "slack", "url": "http://am"}, "'type' must be 'alertmanager'"),
        "unknown key": ({"type": "alertmanager", "url": "http://am", "resend_every": 5}, "unknown key(s) resend_every"),
        "no url": ({"type": "alertmanager"}, "'url' (the Alertmanager base URL) is required"),
        "not http": ({"type": "alertmanager", "url": "am:9093"}, "'url' must be an http(s) URL"),
        "credentials": ({"type": "alertmanager", "url": "http://u:sekrit@am:9093"}, "must not carry credentials"),
        "query": ({"type": "alertmanager", "url": "http://am:9093?x=1"}, "without query"),
        "api path": ({"type": "alertmanager", "url": "http://am:9093/api/v2/alerts"}, "without /api/v2/alerts"),
        "bad port": ({"type": "alertmanager", "url": "http://am:99999"}, "invalid port"),
        "generator": ({"type": "alertmanager", "url": "http://am", "generator_url": "w:6066"}, "'generator_url'"),
        "resend 0": ({"type": "alertmanager", "url": "http://am", "resend": 0}, "'resend' must be a number of seconds in [1, 3600]"),
        "resend str": ({"type": "alertmanager", "url": "http://am", "resend": "60"}, "'resend' must be"),
        "timeout": ({"type": "alertmanager", "url": "http://am", "timeout": True}, "'timeout' must be"),
        "severity": ({"type": "alertmanager", "url": "http://am", "min_severity": "high"}, "'min_severity' must be one of"),
        "name": ({"type": "alertmanager", "url": "http://am", "name": ""}, "'name' must be a non-empty string"),
        "half auth": ({"type": "alertmanager", "url": "http://am", "username": "u"}, "go together"),
        "both auths": ({"type": "alertmanager", "url": "http://am", "username": "u", "password": "sekrit",
                        "bearer_token": "sekrit"}, "not both"),
        "empty token": ({"type": "alertmanager", "url": "http://am", "bearer_token": ""}, "'bearer_token' must be"),
    }
    for case, (item, message) in bad.items():
        with pytest.raises(SinkConfigError) as exc:
            AlertmanagerSink.from_config(item, where="SHOPWATCH_SINKS[0]")
        assert message in str(exc.value), f"{case}: {exc.value}"
        assert "sekrit" not in str(exc.value), case
        assert isinstance(exc.value, ValueError)


def test_delivery_loop_posts_changes_at_once():
    """Alertmanager groups notifications itself: the delivery loop's digest timing is off."""
    s = AlertmanagerSink(url="http://am:9093")
    assert (s.group_wait, s.group_interval) == (0.0, 0.0)
    assert s.wants(alert("s-1", "o-1", severity="info"))


def test_shopwatch_sinks_takes_an_alertmanager_entry():
    from shopwatch.agents.sinks import SinkConfigError, load_sinks

    [sink] = load_sinks('[{"type": "alertmanager", "url": "http://127.0.0.1:9093", "resend": 30}]')
    assert isinstance(sink, AlertmanagerSink) and sink.resend == 30 and sink.name == "alertmanager"
    with pytest.raises(SinkConfigError, match="alertmanager"):
        load_sinks('[{"type": "alertmanager", "url": "http://127.0.0.1:9093", "group_wait": 1}]')
