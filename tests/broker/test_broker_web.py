"""The worker's HTTP server (agents/web.py): only the project's views, behind a bearer token.

On the real broker a worker bound to 0.0.0.0 with SHOPWATCH_WEB_TOKEN (reached
through 127.0.0.1 only) answers Faust's own views (/router/, /table/…/, /) with
404, the project's views with 401 without the token, and leaves /healthz,
/readyz and /metrics open; without a token it refuses to start. Two workers
forward a request for a key the other one owns, token included. The first
tests need no broker.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from broker_helpers import Worker, free_port, shopwatch_cmd

from shopwatch.agents import web as sw_web
from shopwatch.agents.settings import Settings

TOKEN = "broker-test-web-token-0123456789abcdef"
FAUST_PATHS = ["/router/", "/router", "/table/orders/x/", "/table/orders/o-dup/", "/table/alerts/s/", "/",
               "/graph/", "/stats/", "/performance/"]
OPEN_PATHS = ["/healthz", "/readyz", "/metrics"]
PROTECTED = ["/orders/x", "/alerts?shop_id=s", "/shops/jd/s/score"]


def get(port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 10.0):
    """GET http://127.0.0.1:port/path (never any other address): (status, headers, body)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_unauthorized(status, headers, body, what) -> None:
    assert status == 401, (what, status, body)
    assert json.loads(body) == {"error": "unauthorized"}, what
    assert headers.get("WWW-Authenticate", "").startswith("Bearer"), what


def assert_answered(path: str, status: int, body: bytes) -> None:
    """The view itself answered: 200, or its own 404 for an unknown key."""
    if path.startswith("/orders/"):
        assert (status, json.loads(body).get("error")) in ((200, None), (404, "unknown order")), (path, status, body)
    elif path.startswith("/shops/"):
        assert (status, json.loads(body).get("error")) in ((200, None), (404, "unknown shop")), (path, status, body)
    else:
        assert status == 200, (path, status, body)
        assert json.loads(body)["alerts"] == [], body


# --------------------------------------------------------------------------- no broker


@pytest.mark.parametrize(("bind", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LocalHost", True), ("::ffff:127.0.0.1", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.5", False), ("192.168.1.2", False),
    ("example.com", False), ("localhost.example.com", False),
])
def test_is_loopback(bind, loopback):
    assert sw_web.is_loopback(bind) is loopback


def test_check_bind_refuses_a_public_bind_without_a_token():
    with pytest.raises(sw_web.InsecureBind) as exc:
        sw_web.check_bind(Settings(web_bind="0.0.0.0", web_token=""))
    msg = str(exc.value)
    assert "\n" not in msg and "SHOPWATCH_WEB_TOKEN" in msg and "0.0.0.0" in msg
    with pytest.raises(sw_web.InsecureBind):
        sw_web.check_bind(Settings(web_bind="0.0.0.0", web_token="   "))
    sw_web.check_bind(Settings(web_bind="0.0.0.0", web_token=TOKEN))
    sw_web.check_bind(Settings(web_bind="127.0.0.1", web_token=""))


def test_bearer_ok():
    assert sw_web.bearer_ok(f"Bearer {TOKEN}", TOKEN)
    assert sw_web.bearer_ok(f"bearer  {TOKEN} ", TOKEN)
    for header in (None, "", "Bearer", "Bearer ", f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}",
                   TOKEN, "Bearer é"):
        assert not sw_web.bearer_ok(header, TOKEN), header


def _in_process(s: Settings, paths: list[tuple[str, dict]], secure: bool = True) -> list[int]:
    """Statuses of ``paths`` on a worker's web server started in-process (no Kafka)."""
    from aiohttp.test_utils import TestServer

    from shopwatch.agents import ingest
    from shopwatch.agents.app import build_app

    async def run() -> list[int]:
        app = build_app(s)
        ingest.install_views(app)

        @app.page("/orders/{order_id}")
        async def order_view(web, request, order_id):
            return web.json({"order_id": order_id})

        if secure:
            sw_web.secure(app, s)
        app.web.init_server()
        server = TestServer(app.web.web_app, host="127.0.0.1", port=free_port())
        await server.start_server()
        try:
            import aiohttp

            out = []
            async with aiohttp.ClientSession() as http:
                for path, headers in paths:
                    async with http.get(server.make_url(path), headers=headers) as r:
                        out.append(r.status)
            return out
        finally:
            await server.close()

    return asyncio.run(run())


def test_secure_removes_faust_views_in_process(tmp_path):
    s = Settings(web_bind="0.0.0.0", web_token=TOKEN, data_dir=str(tmp_path), store="memory://")
    paths = [("/router/", bearer(TOKEN)), ("/table/orders/x/", bearer(TOKEN)), ("/", bearer(TOKEN)),
             ("/orders/x", {}), ("/orders/x", bearer("wrong")), ("/orders/x", bearer(TOKEN)), ("/healthz", {})]
    assert _in_process(s, paths) == [404, 404, 404, 401, 401, 200, 200]
    # the control: without secure() Faust serves its views (and ours need no token)
    unsecured = _in_process(s, paths, secure=False)
    assert unsecured[0] != 404 and unsecured[2] != 404 and unsecured[3:] == [200, 200, 200, 200]


def test_secure_with_a_token_on_loopback_still_requires_it(tmp_path):
    s = Settings(web_bind="127.0.0.1", web_token=TOKEN, data_dir=str(tmp_path), store="memory://")
    assert _in_process(s, [("/orders/x", {}), ("/orders/x", bearer(TOKEN)), ("/metrics", {})]) == [401, 200, 200]
    s = Settings(web_bind="127.0.0.1", web_token="", data_dir=str(tmp_path), store="memory://")
    assert _in_process(s, [("/orders/x", {}), ("/router/", {})]) == [200, 404]


# --------------------------------------------------------------------------- real broker


@pytest.mark.broker
@pytest.mark.timeout(240)
def test_public_bind_serves_only_our_views_behind_the_token(kafka_bootstrap, shopwatch_env, topic_prefix, tmp_path):
    env = {**shopwatch_env, "SHOPWATCH_WEB_BIND": "0.0.0.0", "SHOPWATCH_WEB_TOKEN": TOKEN}
    w = Worker(env, tmp_path / "worker.log")
    try:
        w.wait_ready()
        for path in FAUST_PATHS:
            for headers in ({}, bearer(TOKEN)):
                status, _h, body = get(w.port, path, headers)
                assert status == 404, (path, headers, status, body[:300])
        for path in PROTECTED:
            for headers in ({}, bearer("wrong-token"), {"Authorization": f"Basic {TOKEN}"},
                            {"Authorization": TOKEN}, bearer(TOKEN + "x")):
                assert_unauthorized(*get(w.port, path, headers), (path, headers))
            status, _h, body = get(w.port, path, bearer(TOKEN))
            assert_answered(path, status, body)
        for path in OPEN_PATHS:
            status, _h, body = get(w.port, path)
            assert status == 200, (path, status, body)
    finally:
        assert w.stop() == 0, w.log_tail()


@pytest.mark.broker
@pytest.mark.timeout(60)
def test_public_bind_without_a_token_refuses_to_start(shopwatch_env, tmp_path):
    # nothing listens at this bootstrap: the worker must stop before any connection attempt
    env = {**shopwatch_env, "SHOPWATCH_WEB_BIND": "0.0.0.0", "KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    env.pop("SHOPWATCH_WEB_TOKEN", None)
    t0 = time.monotonic()
    r = subprocess.run(shopwatch_cmd("worker"), env=env, capture_output=True, text=True, timeout=45, cwd=tmp_path,
                       stdin=subprocess.DEVNULL)
    assert r.returncode != 0, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert "refusing" in lines[0] and "SHOPWATCH_WEB_TOKEN" in lines[0], lines
    assert time.monotonic() - t0 < 30
    assert not (Path(env["SHOPWATCH_DATA_DIR"]) / "clean-shutdown").exists()


def _keys_on_every_partition(partitions: int, per_partition: int = 2) -> list[str]:
    """Order ids whose keys fall on every one of ``partitions`` partitions (Kafka's default partitioner,
    which Faust's router uses to find a key's owner)."""
    from aiokafka.partitioner import DefaultPartitioner

    part = DefaultPartitioner()
    ids: dict[int, list[str]] = {}
    i = 0
    while any(len(ids.get(p, [])) < per_partition for p in range(partitions)):
        oid = f"o-route-{i}"
        p = part(oid.encode(), list(range(partitions)), list(range(partitions)))
        if len(ids.setdefault(p, [])) < per_partition:
            ids[p].append(oid)
        i += 1
    return [oid for p in sorted(ids) for oid in ids[p]]


@pytest.mark.broker
@pytest.mark.timeout(300)
def test_two_workers_forward_the_token_to_the_owner(kafka_bootstrap, shopwatch_env, topic_prefix, tmp_path):
    """Either worker answers for keys the other owns: the request it forwards carries the token."""
    partitions = 4
    base = {**shopwatch_env, "SHOPWATCH_WEB_BIND": "0.0.0.0", "SHOPWATCH_WEB_TOKEN": TOKEN,
            "SHOPWATCH_PARTITIONS": str(partitions)}
    envs = [{**base, "SHOPWATCH_WEB_PORT": str(free_port()), "SHOPWATCH_DATA_DIR": str(tmp_path / f"data-{i}")}
            for i in range(2)]
    workers = [Worker(e, tmp_path / f"w{i}.log") for i, e in enumerate(envs)]
    try:
        deadline = time.monotonic() + 120
        while True:  # both in the group, each with some of the partitions
            states = [w.wait_ready() for w in workers]
            if all(0 < st["assigned_input_partitions"] < 4 * partitions for st in states):
                break
            assert time.monotonic() < deadline, states
            time.sleep(1)
        time.sleep(3)  # let the assignment settle
        ids = _keys_on_every_partition(partitions)
        for w in workers:
            for oid in ids:
                path = f"/orders/{oid}"
                assert_unauthorized(*get(w.port, path), path)
                status, _h, body = get(w.port, path, bearer(TOKEN))
                assert (status, json.loads(body)) == (404, {"error": "unknown order", "order_id": oid}), (
                    w.port, path, status, body)
            status, _h, body = get(w.port, "/shops/jd/s/score", bearer(TOKEN))
            assert_answered("/shops/jd/s/score", status, body)
    finally:
        for w in workers:
            w.stop()
