"""The worker's page and its cross-shop views (agents/views.py, agents/page.py) on the real broker.

- One worker (event clock, a token on loopback) fed by ``shopwatch simulate
  --kafka``: Debian's ``chromium`` opens ``/page?token=…`` headless, and the
  DOM it renders (``--dump-dom``) has every shop of ``/shops`` with the same
  numbers, the same firing alerts as ``/alerts``, and a screenshot is a real
  picture. The JSON is read before and after the browser: the DOM is compared
  with it only when both reads agree (the numbers did not move meanwhile).
- Two workers of one group, 4 partitions: each answers ``/alerts`` for every
  shop, with the same list as the other and as the per-shop views of the
  owners, and the paging (cursor and offset) and filters agree with it.

When chromium is missing the page test fails under CI (``CI=true``, where
``make setup`` installs it) and skips elsewhere, as tests/shell/test_alertmanager.py
does for Alertmanager. Every wait polls with a deadline: the machine is loaded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import time
import urllib.error
import urllib.request
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from broker_helpers import Worker, _wait_consumed, free_port, shopwatch_cmd

pytestmark = [pytest.mark.broker]

TOKEN = "broker-test-page-token-0123456789abcdef"
START = "2026-10-01"
UNTIL = "2026-10-03T18:00:00+08:00"  # two simulated days and the next day's morning: deadlines pass
ALERTS = "/alerts?status=firing&sort=due&limit=1000"  # what the page fetches
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=10000"]


# --------------------------------------------------------------------------- helpers


def chromium() -> str:
    """The chromium binary; missing, a failure under CI and a skip elsewhere."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    msg = "chromium not installed (Debian package chromium; `make setup` installs it)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{msg}: CI must run the page tests", pytrace=False)
    pytest.skip(msg)


def get(port: int, path: str, token: str | None = TOKEN, timeout: float = 30.0) -> tuple[int, dict | str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        body, status = e.read(), e.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


def get_ok(port: int, path: str) -> dict:
    status, body = get(port, path)
    assert status == 200, (path, status, body)
    return body


def simulate(env: dict, shops: int, orders: int, seed: int) -> int:
    """``shopwatch simulate --kafka`` into the test's topics; the records it produced."""
    r = subprocess.run(shopwatch_cmd("simulate", "--seed", str(seed), "--shops", str(shops), "--days", "2",
                                     "--start", START, "--orders-per-shop-day", str(orders), "--dirty", "0",
                                     "--kafka"),
                       env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    m = re.search(r"simulate: (\d+) records to kafka", r.stderr)
    assert m, r.stderr
    return int(m.group(1))


def tick(env: dict) -> None:
    r = subprocess.run(shopwatch_cmd("tick", "--until", UNTIL), env=env, capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr


def settled(read, done, timeout: float = 120.0, what: str = "views"):
    """``read()`` once ``done(value)`` holds and two reads 1.5 s apart agree."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        value = read()
        if done(value) and value == last:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not settle within {timeout}s; last: {str(value)[:2000]}", pytrace=False)
        last = value
        time.sleep(1.5)


def start_workers(envs: list[dict], tmp_path: Path, partitions: int) -> list[Worker]:
    """The workers, ready, each with some of the partitions once the group settled."""
    workers = [Worker(e, tmp_path / f"w{i}.log") for i, e in enumerate(envs)]
    try:
        deadline = time.monotonic() + 150
        while True:
            states = [w.wait_ready(timeout=150) for w in workers]
            want = 4 * partitions  # the four input topics
            if all(0 < st["assigned_input_partitions"] for st in states) and (
                    sum(st["assigned_input_partitions"] for st in states) == want):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the group did not settle: {states}", pytrace=False)
            time.sleep(1)
    except BaseException:
        for w in workers:
            w.stop()
        raise
    return workers


class Dom(HTMLParser):
    """The elements of a serialised DOM as (tag, attrs, text, ancestors' attrs)."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[dict] = []
        self.elements: list[dict] = []
        self.shown: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        e = {"tag": tag, "attrs": {k: (v if v is not None else "") for k, v in attrs}, "text": [],
             "parents": [p["attrs"] for p in self.stack]}
        self.elements.append(e)
        if tag not in self.VOID:
            self.stack.append(e)

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i]["tag"] == tag:
                del self.stack[i:]
                break

    def handle_data(self, data):
        for e in self.stack:
            e["text"].append(data)
        if not any(e["tag"] in ("script", "style", "title") for e in self.stack):
            self.shown.append(data)

    def visible_text(self) -> str:
        """The document's text, scripts and styles left out."""
        return " ".join(self.shown)

    def find(self, tag: str | None = None, cls: str | None = None, **attrs) -> list[dict]:
        out = []
        for e in self.elements:
            a = e["attrs"]
            if tag and e["tag"] != tag:
                continue
            if cls and cls not in a.get("class", "").split():
                continue
            if all(a.get(k.replace("_", "-")) == v for k, v in attrs.items()):
                out.append(e)
        return out


def text(e: dict) -> str:
    return "".join(e["text"])


def num(s: str | None):
    return None if s in (None, "null") else float(s)


def png_facts(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct byte values of the decoded image data) of a PNG, stdlib only."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


def run_chromium(browser: str, tmp_path: Path, name: str, url: str, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"chromium-{name}"
    profile.mkdir()
    cmd = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"chromium did not finish within {exc.timeout}s: {cmd}", pytrace=False)


# --------------------------------------------------------------------------- the page


def _assert_dom_equals_views(dom: Dom, shops: dict, alerts: dict) -> None:
    status = dom.find(id="status")
    assert status, "no #status"
    st = status[0]["attrs"]
    assert st.get("data-state") == "ok", (st, [text(e) for e in dom.find(cls="note")])
    assert st.get("data-shops") == str(len(shops["shops"])) and st.get("data-alerts") == str(alerts["total"])
    # every shop, with its numbers
    cards = dom.find("article", cls="shop")
    assert {(c["attrs"]["data-platform"], c["attrs"]["data-shop-id"]) for c in cards} == {
        (e["platform"], e["shop_id"]) for e in shops["shops"]}
    firing_of = {}
    for a in alerts["alerts"]:
        firing_of[(a["platform"], a["shop_id"])] = firing_of.get((a["platform"], a["shop_id"]), 0) + 1
    for e in shops["shops"]:
        snap = e["snapshot"]
        key = {"data-platform": e["platform"], "data-shop-id": e["shop_id"]}
        (card,) = [c for c in cards if c["attrs"]["data-platform"] == e["platform"]
                   and c["attrs"]["data-shop-id"] == e["shop_id"]]
        assert card["attrs"]["data-firing"] == str(firing_of.get((e["platform"], e["shop_id"]), 0))

        def inside(elements, key=key):
            return [x for x in elements if any(key.items() <= p.items() for p in x["parents"])]

        rows = {r["attrs"]["data-name"]: r for r in inside(dom.find("tr", cls="ind"))}
        assert set(rows) == set(snap["indicators"]), e["shop_id"]
        for name, ind in snap["indicators"].items():
            r = rows[name]["attrs"]
            assert num(r.get("data-value")) == ind["value"], (e["shop_id"], name, r, ind)
            if "den" in ind:
                assert (num(r["data-num"]), num(r["data-den"])) == (ind["num"], ind["den"]), (e["shop_id"], name)
            assert r["data-worse"] == ("true" if e["indicators"][name]["worse"] else "false"), (e["shop_id"], name)
            assert ("worse" in rows[name]["attrs"]["class"].split()) == e["indicators"][name]["worse"]
            assert e["indicators"][name]["shown"] in text(rows[name])
        if e["platform"] == "xiaohongshu":
            (score,) = inside(dom.find(cls="score"))
            assert num(score["attrs"]["data-score"]) == snap["score"]
            dims = {d["attrs"]["data-name"]: num(d["attrs"]["data-value"]) for d in inside(dom.find(cls="dim"))}
            assert dims == snap["dimensions"]
        if e["platform"] == "douyin":
            lv = snap["level"]
            (level,) = inside(dom.find(cls="level"))
            assert level["attrs"]["data-level"] == str(lv["level"])
            conds = {c["attrs"]["data-name"]: c["attrs"]["data-met"] for c in inside(dom.find(cls="cond"))}
            assert conds == {k: json.dumps(v) for k, v in lv["outlook"]["upgrade"].items()}
            caps = {c["attrs"]["data-measure"]: c["attrs"] for c in inside(dom.find(cls="cap"))}
            use = e["cap_use"]
            assert num(caps["orders"]["data-used"]) == use["orders"]
            assert num(caps["orders"]["data-cap"]) == lv["daily_caps"]["orders"]
            assert num(caps["gmv"]["data-used"]) == use["gmv_fen"]
            assert num(caps["gmv"]["data-cap"]) == lv["daily_caps"]["gmv_fen"]
    # the firing alerts, in the view's order, with their deadlines
    rows = dom.find("tr", cls="alert")
    assert [r["attrs"]["data-alert-id"] for r in rows] == [a["alert_id"] for a in alerts["alerts"]]
    for r, a in zip(rows, alerts["alerts"], strict=True):
        due = (a.get("details") or {}).get("auto_at") or a.get("due_at")
        assert r["attrs"].get("data-due", "null") == (due if due else "null"), a
        assert a["shop_id"] in text(r) and a["summary"] in text(r)


@pytest.mark.timeout(420)
def test_page_in_chromium_shows_every_shop_and_the_firing_alerts(kafka_bootstrap, shopwatch_env, topic_prefix,
                                                               tmp_path):
    browser = chromium()
    env = {**shopwatch_env, "SHOPWATCH_PARTITIONS": "2", "SHOPWATCH_CLOCK": "event", "SHOPWATCH_WEB_TOKEN": TOKEN}
    (w,) = start_workers([env], tmp_path, partitions=2)
    try:
        # the page is behind the token: ?token= (page only) or the cookie it sets
        assert get(w.port, "/page", token=None)[0] == 401
        assert get(w.port, "/page?token=wrong-token", token=None)[0] == 401
        assert get(w.port, f"/alerts?token={TOKEN}", token=None)[0] == 401
        status, body = get(w.port, f"/page?token={TOKEN}", token=None)
        assert status == 200 and isinstance(body, str) and "<script>" in body
        assert get(w.port, "/healthz", token=None)[0] == 200

        n = simulate(env, shops=5, orders=12, seed=7)  # one shop on each platform
        _wait_consumed([w], n)
        tick(env)

        def read():
            return get_ok(w.port, "/shops"), get_ok(w.port, ALERTS)

        settled(read, lambda v: (len(v[0]["shops"]) == 5 and v[1]["total"] > 0
                                 and not v[0]["partial"] and not v[1]["partial"]), what="/shops and /alerts")
        url = f"http://127.0.0.1:{w.port}/page?token={TOKEN}"
        for attempt in range(3):  # the DOM against the JSON it was made of: the same before and after
            before = read()
            r = run_chromium(browser, tmp_path, f"dom-{attempt}", url, "--dump-dom")
            after = read()
            assert r.returncode == 0, r.stderr[-3000:]
            if before == after:
                break
        else:
            pytest.fail("the views kept changing while chromium rendered the page", pytrace=False)
        (tmp_path / "page.html").write_text(r.stdout)
        shops, alerts = before
        assert {e["platform"] for e in shops["shops"]} == {"xiaohongshu", "douyin", "kuaishou", "jd", "tmall"}
        assert alerts["total"] == len(alerts["alerts"]) > 0
        for e in shops["shops"]:  # /shops carries what each shop's score view answers
            assert get_ok(w.port, f"/shops/{e['platform']}/{e['shop_id']}/score") == e["snapshot"]
        dom = Dom(r.stdout)
        _assert_dom_equals_views(dom, shops, alerts)
        shown = dom.visible_text()
        assert not re.search(r"\b(null|undefined|NaN)\b", shown), shown
        print(f"{len(shops['shops'])} shops, {alerts['total']} alerts firing")

        shot = tmp_path / "page.png"
        r = run_chromium(browser, tmp_path, "shot", url, f"--screenshot={shot}", "--window-size=1400,2000")
        assert r.returncode == 0 and shot.exists(), r.stderr[-3000:]
        width, height, distinct = png_facts(shot)
        assert (width, height) == (1400, 2000)
        assert shot.stat().st_size > 20_000 and distinct > 50, (shot.stat().st_size, distinct)
    finally:
        assert w.stop() == 0, w.log_tail()


# --------------------------------------------------------------------------- /alerts across shops, two workers


def _page_through(port: int, query: str, limit: int) -> list[dict]:
    out, cursor = [], None
    for _ in range(1000):
        body = get_ok(port, f"/alerts?{query}&limit={limit}" + (f"&cursor={cursor}" if cursor else ""))
        assert not body["partial"], body
        out.extend(body["alerts"])
        cursor = body["next_cursor"]
        if cursor is None:
            return out
    pytest.fail("the cursor never ended", pytrace=False)


@pytest.mark.timeout(420)
def test_alerts_of_every_shop_from_either_of_two_workers(kafka_bootstrap, shopwatch_env, topic_prefix, tmp_path):
    partitions = 4
    base = {**shopwatch_env, "SHOPWATCH_PARTITIONS": str(partitions), "SHOPWATCH_CLOCK": "event",
            "SHOPWATCH_WEB_TOKEN": TOKEN}
    envs = [{**base, "SHOPWATCH_WEB_PORT": str(free_port()), "SHOPWATCH_DATA_DIR": str(tmp_path / f"data-{i}")}
            for i in range(2)]
    workers = start_workers(envs, tmp_path, partitions)
    a, b = (w.port for w in workers)
    try:
        n = simulate(envs[0], shops=10, orders=8, seed=3)
        _wait_consumed(workers, n)
        tick(envs[0])

        def read():
            lists = [get_ok(p, "/alerts?status=all&limit=1000") for p in (a, b)]
            shops = get_ok(a, "/shops")
            per_shop = sorted((x for e in shops["shops"]
                               for x in get_ok(b, f"/alerts?shop_id={e['shop_id']}&status=all")["alerts"]),
                              key=lambda x: x["alert_id"])
            return lists, len(shops["shops"]), per_shop

        def done(v):
            lists, n_shops, per_shop = v
            return (n_shops == 10 and all(not x["partial"] for x in lists) and lists[0]["total"] > 0
                    and lists[0]["total"] == len(per_shop))

        (full_a, full_b), _n, per_shop = settled(read, done, what="the alert lists")
        # either worker gives the whole list, the same, newest first; it is the owners' per-shop lists
        assert full_a == full_b
        assert full_a["partitions"]["answered"] == list(range(partitions)) and not full_a["errors"]
        assert sorted(full_a["alerts"], key=lambda x: x["alert_id"]) == per_shop
        assert len({x["shop_id"] for x in full_a["alerts"]}) > 1
        ats = [x["at"] for x in full_a["alerts"]]
        from datetime import datetime
        assert ats == sorted(ats, key=datetime.fromisoformat, reverse=True)
        assert full_a["by_severity"] == {s: sum(1 for x in full_a["alerts"] if x["severity"] == s)
                                         for s in ("critical", "warning", "info")}
        # each worker owns some partitions: the other's alerts came over HTTP
        local = [get_ok(p, "/alerts?status=all&limit=1000&local=1") for p in (a, b)]
        assert all(x["partitions"] for x in local)
        assert sorted(local[0]["partitions"] + local[1]["partitions"]) == list(range(partitions))
        assert local[0]["total"] + local[1]["total"] == full_a["total"]
        print(f"{full_a['total']} alerts of {len({x['shop_id'] for x in full_a['alerts']})} shops; partitions "
              f"{local[0]['partitions']} ({local[0]['total']} alerts) and {local[1]['partitions']} "
              f"({local[1]['total']})")
        # the default: firing only, across shops
        firing = get_ok(b, "/alerts")
        want = [x for x in full_a["alerts"] if x["status"] == "firing"]
        assert firing["total"] == len(want) and firing["alerts"] == want[:100]
        # paging: the cursor from one worker walks the other's whole list; offset pages are its slices
        assert _page_through(b, "status=all", 7) == full_a["alerts"]
        page = get_ok(a, "/alerts?status=all&limit=5&offset=5")
        assert page["alerts"] == full_a["alerts"][5:10] and page["total"] == full_a["total"]
        by_due = _page_through(a, "status=all&sort=due", 9)
        assert by_due == get_ok(b, "/alerts?status=all&sort=due&limit=1000")["alerts"]
        assert sorted(by_due, key=lambda x: x["alert_id"]) == per_shop
        # filters
        for query, keep in (("platform=douyin", lambda x: x["platform"] == "douyin"),
                            ("severity=critical,warning", lambda x: x["severity"] in ("critical", "warning")),
                            (f"shop_id={per_shop[0]['shop_id']}&shop_id={per_shop[-1]['shop_id']}",
                             lambda x: x["shop_id"] in (per_shop[0]["shop_id"], per_shop[-1]["shop_id"])),
                            (f"kind={per_shop[0]['kind']}", lambda x: x["kind"] == per_shop[0]["kind"])):
            got = get_ok(a, f"/alerts?status=all&limit=1000&{query}")
            assert got["alerts"] == [x for x in full_a["alerts"] if keep(x)], query
        assert get(a, "/alerts?status=sometimes")[0] == 400
        assert get(a, "/alerts?limit=1001")[0] == 400
        assert get(a, "/alerts", token=None)[0] == 401
        # /shops from either worker: every shop
        shops = [get_ok(p, "/shops") for p in (a, b)]
        assert shops[0]["shops"] == shops[1]["shops"] and shops[0]["total"] == 10 and not shops[0]["partial"]
        for e in shops[0]["shops"]:
            assert get_ok(b, f"/shops/{e['platform']}/{e['shop_id']}/score") == e["snapshot"]
    finally:
        for w in workers:
            w.stop()
