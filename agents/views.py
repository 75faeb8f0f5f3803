"""The worker's HTTP views, installed by :func:`install_views` (from agents/topology.py).

| view | what | who answers |
|---|---|---|
| ``GET /shops/{platform}/{shop_id}/score`` | the shop's score snapshot | the shop's owner (forwarded) |
| ``GET /orders/{order_id}`` | state, deadlines, open alerts | the order's owner (forwarded) |
| ``GET /alerts`` | alerts across every shop, filtered and paged | any worker (fan-out) |
| ``GET /alerts?shop_id=S`` | one shop's alerts, oldest first (as before) | the shop's owner (forwarded) |
| ``GET /shops`` | every shop's snapshot, with bars and daily cap use | any worker (fan-out) |
| ``GET /page`` | the read-only HTML page (agents/page.py) | any worker |

agents/web.py removes Faust's own views and puts every view here behind the
bearer token (``SHOPWATCH_WEB_TOKEN``); ``/healthz``, ``/readyz`` and
``/metrics`` stay open.

**/alerts** (the on-call list). Query parameters, all optional:

- ``status``: ``firing`` (default), ``resolved`` or ``all`` (the latest change
  of each alert the books keep: resolved ones for 14 days, streams/outbox.py);
- filters ``platform``, ``shop_id``, ``kind``, ``severity``: repeat a
  parameter (``severity=critical&severity=warning``) or, except ``shop_id``,
  separate values by commas; a filter matches any of its values;
- ``sort``: ``at`` (default: newest change first) or ``due`` (the earliest
  deadline first: ``details.auto_at``, else ``due_at``; alerts without one
  last); ties by ``alert_id``;
- paging: ``limit`` (default 100, 1 to 1000) and ``offset`` (0 to 10,000)
  or ``cursor`` (``next_cursor`` of the previous page: stable while alerts
  come and go, and not bounded; ``offset`` then counts from the cursor).

The answer: ``{"status", "sort", "filters", "total" (every match, before
paging), "by_severity", "limit", "offset", "next_cursor" (null on the last
page), "alerts", "partitions": {"total", "answered", "missing"}, "partial",
"errors", "recovering"}``. ``partial`` is true when a partition of the
``alerts`` table was answered by no worker (a worker down or unreachable, the
group rebalancing): the list then lacks those partitions' shops, ``missing``
names them and ``errors`` says which worker failed how. ``recovering``: a
worker answering was still restoring its tables.

With exactly one ``shop_id`` and none of ``limit``, ``offset``, ``cursor``,
``sort``, the view answers as it always did: forwarded to the shop's owner,
``{"shop_id", "status", "alerts", "total"}`` with every alert of that shop
oldest first (by ``at``), the other filters applied. With one ``shop_id`` and
a paging parameter, the owner answers the paged format for that shop.

**Fan-out** (``/alerts`` without a single shop, ``/shops``). The worker
asked answers for the partitions it owns (the alert books of
``topo.alert_books``, or the table where no book is in memory yet; the shop
states of ``topo.shop_parts``, or the table) and asks every other worker of
the group, as Faust's assignor table metadata (``app.router.table_metadata``)
names them, for the partitions the metadata gives it:
``GET /alerts?local=1&partitions=1,3&…`` with the same filters, forwarding
the request's ``Authorization`` header (the configured token when the request
had none: every worker of one app id shares the token), concurrently, each
within ``REMOTE_TIMEOUT_S``. A worker asked with ``local=1`` answers only for
the partitions it owns among those asked and never asks further; each
partition is asked of one worker only, so nothing is counted twice. For
paging each worker returns its first ``offset + limit`` matches after the
cursor; the asking worker merges them, so any worker gives the whole list.

**/shops**: ``{"shops": [{"platform", "shop_id", "snapshot" (what
/shops/{platform}/{shop_id}/score answers), "indicators": {name: {"label",
"shown", "bar", "worse"}}, "cap_use"}], "total", "partitions", "partial",
"errors", "recovering"}``, ordered by platform (小红书, 抖音, 快手, 京东, 天猫)
and shop id, filtered by ``platform`` and ``shop_id`` as /alerts. ``bar`` and
``worse`` are the platform's bar and whether the value is worse than it, as
the morning summary has them (streams/summary.py ``bars``); ``cap_use`` (抖音
with a level): today's paid orders and GMV (the shop's day) against the
level's daily caps. Not paged: one entry per shop.

**The page and its token.** ``GET /page`` sits behind the same bearer-token
middleware as every view here. A browser cannot send an ``Authorization``
header when it opens a URL, so :func:`browser_token_middleware` (installed
in front of agents/web.py's check) turns two things into that header when a
request has none, and the token middleware then checks it as any other:

- ``?token=…`` on ``/page`` only (open ``http://worker:6066/page?token=…``
  once). The page answers with a ``shopwatch_token`` cookie (``HttpOnly``,
  ``SameSite=Strict``, ``Path=/``, for the browser session) and its script
  drops the token from the address bar (``history.replaceState``); the page
  is sent with ``Referrer-Policy: no-referrer`` and ``Cache-Control:
  no-store``. ``?token=`` on any other view is ignored (a token in URLs
  ends up in logs and histories: use the header there).
- the ``shopwatch_token`` cookie, on ``GET``/``HEAD`` of every protected
  view: the page's script fetches ``shops`` and ``alerts`` with it. The views
  only read; ``SameSite=Strict`` keeps other sites' pages from sending it
  and without CORS headers they could not read an answer anyway.

A wrong or missing token is the usual ``401 {"error": "unauthorized"}``.
Without ``SHOPWATCH_WEB_TOKEN`` (loopback only) nothing is needed and no
cookie is set. The page itself is one HTML document (agents/page.py) with
inline CSS and JS, no external asset; a Content-Security-Policy allows only
its own script and style (by hash) and requests to its own origin.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
import faust
import orjson
from aiohttp import web as aioweb
from multidict import CIMultiDict
from yarl import URL

from shopwatch.schemas.events import PLATFORMS, TOPIC_ALERTS, TOPIC_CONTRIBS, InvalidEvent, parse_ts_us
from shopwatch.streams import summary as sm
from shopwatch.streams.clock import day_str, fmt_ts, local_day
from shopwatch.streams.orders import OrderState
from shopwatch.streams.outbox import AlertBook
from shopwatch.streams.partition import PEND, REC
from shopwatch.streams.shop import ShopState

from .page import CONTENT_SECURITY_POLICY, PAGE_HTML
from .web import OPEN_PATHS

log = logging.getLogger(__name__)

PAGE_PATH = "/page"
TOKEN_COOKIE = "shopwatch_token"
STATUSES = ("firing", "resolved", "all")
SEVERITIES = ("critical", "warning", "info")
SORTS = ("at", "due")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_OFFSET = 10_000  # deeper: the cursor
REMOTE_TIMEOUT_S = 10.0
PAGING_PARAMS = ("limit", "offset", "cursor", "sort")
_PLATFORM_ORDER = {p: i for i, p in enumerate(PLATFORMS)}


# --------------------------------------------------------------------------- the alert list (pure)


class QueryError(ValueError):
    """A bad query parameter: the view answers 400 with this message."""


def _values(query: Any, name: str, commas: bool = True) -> list[str]:
    """Every value of parameter ``name`` (repeated, and comma-separated when ``commas``)."""
    if hasattr(query, "getall"):
        raw = query.getall(name, [])
    else:
        v = query.get(name)
        raw = [] if v is None else (list(v) if isinstance(v, list | tuple) else [v])
    out: list[str] = []
    for v in raw:
        out.extend(x.strip() for x in v.split(",")) if commas else out.append(v)
    return [v for v in out if v]


def _one(query: Any, name: str) -> str | None:
    vals = _values(query, name, commas=False)
    if len(vals) > 1:
        raise QueryError(f"{name} given more than once")
    return vals[0] if vals else None


def _int(query: Any, name: str, default: int, lo: int, hi: int) -> int:
    v = _one(query, name)
    if v is None:
        return default
    try:
        n = int(v)
    except ValueError:
        raise QueryError(f"{name} is an integer from {lo} to {hi}") from None
    if not lo <= n <= hi:
        raise QueryError(f"{name} is an integer from {lo} to {hi}")
    return n


def _us(ts: Any) -> int:
    """An RFC 3339 instant as epoch microseconds (0 when it is not one: sorted as the oldest)."""
    try:
        return parse_ts_us(ts, "at")
    except InvalidEvent:
        return 0


def due_of(a: Mapping[str, Any]) -> str | None:
    """The deadline an alert is about: the platform's automatic step (``details.auto_at``),
    else ``due_at``; None when it has neither (streams/digest.py ``deadline`` without
    its fall-back to ``at``)."""
    details = a.get("details")
    if isinstance(details, Mapping) and isinstance(details.get("auto_at"), str):
        return details["auto_at"]
    due = a.get("due_at")
    return due if isinstance(due, str) and due else None


def alert_key(a: Mapping[str, Any], sort: str) -> tuple:
    """The ascending sort key of ``a``: ``at`` newest first, ``due`` earliest deadline first
    (none last); ties by alert_id."""
    aid = str(a.get("alert_id", ""))
    if sort == "at":
        return (-_us(a.get("at")), aid)
    due = due_of(a)
    return (0, _us(due), aid) if due is not None else (1, 0, aid)


def encode_cursor(sort: str, key: tuple) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([sort, *key])).rstrip(b"=").decode()


def decode_cursor(text: str, sort: str) -> tuple:
    """The sort key a cursor names; QueryError when it is not one of ``sort``'s."""
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise QueryError("bad cursor") from None
    shapes = {"at": (int, str), "due": (int, int, str)}
    if not isinstance(raw, list) or not raw or raw[0] != sort:
        raise QueryError("bad cursor (or one of another sort)")
    key = tuple(raw[1:])
    shape = shapes[sort]
    if len(key) != len(shape) or not all(type(v) is t for v, t in zip(key, shape, strict=True)):
        raise QueryError("bad cursor")
    return key


@dataclass(frozen=True)
class AlertQuery:
    """A parsed /alerts query. Empty filter sets match everything."""

    status: str = "firing"
    platforms: frozenset[str] = field(default_factory=frozenset)
    shop_ids: frozenset[str] = field(default_factory=frozenset)
    kinds: frozenset[str] = field(default_factory=frozenset)
    severities: frozenset[str] = field(default_factory=frozenset)
    sort: str = "at"
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    after: tuple | None = None  # the cursor's sort key: only alerts after it
    paged: bool = True  # False: the single-shop answer of old (every alert, oldest first)

    def matches(self, a: Mapping[str, Any]) -> bool:
        return ((self.status == "all" or a.get("status") == self.status)
                and (not self.platforms or a.get("platform") in self.platforms)
                and (not self.shop_ids or a.get("shop_id") in self.shop_ids)
                and (not self.kinds or a.get("kind") in self.kinds)
                and (not self.severities or a.get("severity") in self.severities))

    def key(self, a: Mapping[str, Any]) -> tuple:
        return alert_key(a, self.sort)

    def filters(self) -> dict[str, list[str]]:
        return {"platform": sorted(self.platforms), "shop_id": sorted(self.shop_ids), "kind": sorted(self.kinds),
                "severity": sorted(self.severities)}

    def params(self) -> list[tuple[str, str]]:
        """The query again, as parameters (what a worker asks the others with)."""
        out = [("status", self.status), ("sort", self.sort), ("limit", str(self.limit)),
               ("offset", str(self.offset))]
        if self.after is not None:
            out.append(("cursor", encode_cursor(self.sort, self.after)))
        for name, vals in self.filters().items():
            out.extend((name, v) for v in vals)
        return out


def parse_alert_query(query: Any) -> AlertQuery:
    """An :class:`AlertQuery` from request parameters (aiohttp's ``request.query``, or a
    mapping of a name to a value or list of values); QueryError on a bad one."""
    status = _one(query, "status") or "firing"
    if status not in STATUSES:
        raise QueryError("status is firing, resolved or all")
    platforms = frozenset(_values(query, "platform"))
    if platforms - set(PLATFORMS):
        raise QueryError(f"platform is one of {', '.join(PLATFORMS)}")
    severities = frozenset(_values(query, "severity"))
    if severities - set(SEVERITIES):
        raise QueryError(f"severity is one of {', '.join(SEVERITIES)}")
    sort = _one(query, "sort") or "at"
    if sort not in SORTS:
        raise QueryError("sort is at or due")
    cursor = _one(query, "cursor")
    shop_ids = frozenset(_values(query, "shop_id", commas=False))
    paged = len(shop_ids) != 1 or any(_values(query, n, commas=False) for n in PAGING_PARAMS)
    return AlertQuery(
        status=status, platforms=platforms, shop_ids=shop_ids, kinds=frozenset(_values(query, "kind")),
        severities=severities, sort=sort, limit=_int(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        offset=_int(query, "offset", 0, 0, MAX_OFFSET),
        after=decode_cursor(cursor, sort) if cursor is not None else None, paged=paged)


def rank_alerts(alerts: Iterable[Mapping[str, Any]], q: AlertQuery) -> dict:
    """One worker's share of a page: ``total`` matches, ``by_severity``, ``after`` (matches
    after the cursor) and the first ``offset + limit`` of those in order (``alerts``)."""
    matching = [a for a in alerts if q.matches(a)]
    by_sev = Counter(a.get("severity") for a in matching)
    keyed = sorted(((q.key(a), a) for a in matching), key=lambda t: t[0])
    if q.after is not None:
        keyed = [t for t in keyed if t[0] > q.after]
    return {"total": len(matching), "after": len(keyed),
            "by_severity": {s: by_sev.get(s, 0) for s in SEVERITIES},
            "alerts": [a for _k, a in keyed[:q.offset + q.limit]]}


def merge_alert_pages(parts: Iterable[Mapping[str, Any]], q: AlertQuery) -> dict:
    """The page of ``q`` from the workers' shares (:func:`rank_alerts`), each of its own partitions."""
    parts = list(parts)
    keyed = sorted(((q.key(a), a) for p in parts for a in p["alerts"]), key=lambda t: t[0])
    page = keyed[q.offset:q.offset + q.limit]
    after = sum(p["after"] for p in parts)
    more = after > q.offset + q.limit
    return {
        "status": q.status, "sort": q.sort, "filters": q.filters(),
        "total": sum(p["total"] for p in parts),
        "by_severity": {s: sum((p.get("by_severity") or {}).get(s, 0) for p in parts) for s in SEVERITIES},
        "limit": q.limit, "offset": q.offset,
        "next_cursor": encode_cursor(q.sort, page[-1][0]) if more and page else None,
        "alerts": [a for _k, a in page],
    }


def select_alerts(alerts: Iterable[Mapping[str, Any]], q: AlertQuery) -> dict:
    """Filter, sort and page ``alerts`` (one worker holding them all)."""
    return merge_alert_pages([rank_alerts(alerts, q)], q)


def shop_alerts_of_old(alerts: Iterable[Mapping[str, Any]], q: AlertQuery) -> list:
    """The single-shop answer of old: every matching alert, oldest first."""
    return sorted((a for a in alerts if q.matches(a)), key=lambda a: a["at"])


# --------------------------------------------------------------------------- the shop list (pure)


def shop_filters(query: Any) -> tuple[frozenset[str], frozenset[str]]:
    platforms = frozenset(_values(query, "platform"))
    if platforms - set(PLATFORMS):
        raise QueryError(f"platform is one of {', '.join(PLATFORMS)}")
    return platforms, frozenset(_values(query, "shop_id", commas=False))


def shop_entry(snapshot: Mapping[str, Any], rules, cap_use: dict | None = None) -> dict:
    """A /shops entry: the snapshot, each indicator's label, value as shown, platform
    bar and whether the value is worse than it (the morning summary's bars), cap use."""
    platform = snapshot["platform"]
    level = (snapshot.get("level") or {}).get("level")
    the_bars = sm.bars(platform, rules, level)
    inds = {}
    for name, ind in (snapshot.get("indicators") or {}).items():
        bar = the_bars.get(name)
        inds[name] = {
            "label": sm.indicator_name(platform, name),
            "shown": sm.fmt_value(platform, name, ind.get("value")),
            "bar": bar.text if bar is not None else None,
            "worse": bool(bar is not None and bar.worse(ind.get("value"), ind.get("num"))),
        }
    return {"platform": platform, "shop_id": snapshot["shop_id"], "snapshot": snapshot, "indicators": inds,
            "cap_use": cap_use}


def shop_order(entry: Mapping[str, Any]) -> tuple:
    return (_PLATFORM_ORDER.get(entry["platform"], len(_PLATFORM_ORDER)), entry["platform"], entry["shop_id"])


# --------------------------------------------------------------------------- the token of a browser


def browser_token_middleware(page_path: str = PAGE_PATH):
    """aiohttp middleware, in front of agents/web.py's token check: a request without an
    ``Authorization`` header gets ``Bearer <token>`` from ``?token=`` (``page_path``
    only) or the ``shopwatch_token`` cookie (GET/HEAD of a protected view); the token
    check then decides as for any request. See the module docstring."""

    @aioweb.middleware
    async def browser_token(request: aioweb.Request, handler):
        if "Authorization" in request.headers or request.method not in ("GET", "HEAD"):
            return await handler(request)
        match = request.match_info
        resource = match.route.resource if match.http_exception is None else None
        path = resource.canonical if resource is not None else None
        if path is None or path in OPEN_PATHS:
            return await handler(request)
        token = request.query.get("token") if path == page_path else None
        if not token:
            cookie = request.cookies.get(TOKEN_COOKIE)
            token = unquote(cookie) if cookie else None
        if token:
            headers = CIMultiDict(request.headers)
            headers["Authorization"] = f"Bearer {token}"
            request = request.clone(headers=headers)
        return await handler(request)

    return browser_token


# --------------------------------------------------------------------------- the views


def install_views(app: faust.App, topo) -> None:
    """The views of the module docstring on ``app``, over ``topo`` (agents.topology.Topology)."""
    alerts_topic = topo.names[TOPIC_ALERTS]
    contribs_topic = topo.names[TOPIC_CONTRIBS]
    web_app = getattr(app.web, "web_app", None)
    if isinstance(web_app, aioweb.Application):
        # first: outside agents/web.py's token check, which secure() appends later
        web_app.middlewares.insert(0, browser_token_middleware(PAGE_PATH))

    async def owner(table, key: bytes, web, request):
        """The owner's answer when another worker owns ``key``, else None."""
        try:
            return await app.router.route_req(table.name, key, web, request)
        except faust.exceptions.SameNode:
            return None

    def bad(web, exc: QueryError):
        return web.json({"error": str(exc)}, status=400)

    # ------------------------------------------------------------ fan-out
    def mine(topic: str) -> set[int]:
        """Partitions of ``topic`` this worker owns (its active assignment)."""
        try:
            return {tp.partition for tp in app.consumer.assignment() if tp.topic == topic}
        except Exception:  # not started
            return set()

    def others(table, have: set[int]) -> dict[str, list[int]]:
        """url -> partitions of ``table`` (not in ``have``) the assignor metadata gives
        another worker; each partition to one worker only."""
        try:
            meta = app.router.table_metadata(table.name)
        except Exception:  # no assignment yet
            return {}
        me = URL(str(app.conf.canonical_url))
        taken = set(have)
        out: dict[str, list[int]] = {}
        for url in sorted(meta):
            u = URL(url)
            if (u.host, u.port) == (me.host, me.port):
                continue
            parts = sorted({p for ps in meta[url].values() for p in ps} - taken)
            if parts:
                taken.update(parts)
                out[url] = parts
        return out

    def asked_partitions(request) -> set[int] | None:
        vals = _values(request.query, "partitions")
        if not vals:
            return None
        try:
            return {int(v) for v in vals}
        except ValueError:
            raise QueryError("partitions is a comma-separated list of partition numbers") from None

    def recovering() -> bool:
        return bool(app.rebalancing or getattr(app, "in_recovery", False))

    async def ask(request, url: str, path: str, params: list[tuple[str, str]]) -> dict:
        auth = request.headers.get("Authorization")
        if not auth and topo.s.web_token:
            auth = f"Bearer {topo.s.web_token}"
        headers = {"Authorization": auth, "Accept": "application/json"} if auth else {"Accept": "application/json"}
        target = URL(url).with_path(path).with_query(params)
        async with app.http_client.get(target, headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=REMOTE_TIMEOUT_S)) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {body[:200].decode(errors='replace')}")
            return orjson.loads(body)

    async def gather(request, table, topic: str, path: str, params: list[tuple[str, str]], local_answer):
        """(answers, partitions answered, errors, recovering): this worker's answer for
        its partitions and the other workers' (``?local=1``) for theirs."""
        have = mine(topic)
        answers = [local_answer(sorted(have))]
        answered = set(have)
        errors: list[dict] = []
        rec = recovering()
        targets = others(table, have)

        async def one(url: str, parts: list[int]):
            try:
                return url, await ask(request, url, path,
                                      [*params, ("local", "1"), ("partitions", ",".join(map(str, parts)))])
            except Exception as exc:  # down, slow, refusing: its partitions are missing
                log.warning("%s of %s: %r", path, url, exc)
                return url, exc

        for url, got in await asyncio.gather(*(one(u, ps) for u, ps in targets.items())):
            if isinstance(got, Exception):
                errors.append({"worker": url, "error": repr(got)[:300]})
                continue
            parts = set(got.get("partitions") or ()) & set(targets[url])
            answered |= parts
            rec = rec or bool(got.get("recovering"))
            answers.append(got)
        return answers, answered, errors, rec

    def coverage(answered: set[int], errors: list, rec: bool) -> dict:
        total = topo.s.partitions
        missing = sorted(set(range(total)) - answered)
        return {"partitions": {"total": total, "answered": sorted(answered), "missing": missing},
                "partial": bool(missing or errors), "errors": errors, "recovering": rec}

    def local_request(request) -> tuple[bool, set[int] | None]:
        local = (_one(request.query, "local") or "").lower() in ("1", "true", "yes")
        return local, asked_partitions(request) if local else None

    # ------------------------------------------------------------ alerts
    def book_of(p: int) -> AlertBook:
        book = topo.alert_books.get(p)  # in memory: newer than the table
        if book is None:
            book = AlertBook([], p, docs=topo.alerts_docs)
            book.recover(topo.alerts_docs.of_partition(p))
        return book

    def alerts_of(parts: Iterable[int]) -> list[dict]:
        return [a for p in parts for s in book_of(p).shops.values() for a in s.log.values()]

    # ------------------------------------------------------------ shops
    def states_of(p: int) -> list[ShopState]:
        part = topo.shop_parts.get(p)
        if part is not None:  # in memory: newer than the table
            return list(part.states.values())
        return [ShopState.restore(doc["s"]) for key, doc in topo.shops_docs.of_partition(p)
                if not key.startswith((REC, PEND)) and doc.get("s") is not None]

    def cap_use(st: ShopState, snap: Mapping[str, Any]) -> dict | None:
        """抖音: the shop's paid orders and GMV of its day (its clock's), against the level's caps."""
        if st.platform != "douyin" or st.level is None or st.now_us is None:
            return None
        caps = (snap.get("level") or {}).get("daily_caps")
        today = local_day(st.now_us)
        orders = topo.shop_logic.window(st, "cumulative_orders", today, today)[0]
        gmv = topo.shop_logic.window(st, "_paid_gmv", today, today)[0]
        return {"date": day_str(today), "orders": orders, "gmv_fen": gmv,
                "orders_cap": caps["orders"] if caps else None, "gmv_cap_fen": caps["gmv_fen"] if caps else None}

    def shops_of(parts: Iterable[int], platforms: frozenset[str], shop_ids: frozenset[str]) -> list[dict]:
        out = []
        for p in parts:
            for st in states_of(p):
                if (platforms and st.platform not in platforms) or (shop_ids and st.shop_id not in shop_ids):
                    continue
                snap = topo.shop_logic.snapshot(st, st.now_us or 0)
                out.append(shop_entry(snap, topo.rules, cap_use(st, snap)))
        return out

    # ------------------------------------------------------------ views
    @app.page("/shops/{platform}/{shop_id}/score")
    async def shop_score(web, request, platform, shop_id):
        key = f"{platform}:{shop_id}"
        routed = await owner(topo.shops_table, key.encode(), web, request)
        if routed is not None:
            return routed
        part = topo.shop_parts.get(topo.partition_of(key))
        st = part.states.get(key) if part is not None else None  # in memory: newer than the table
        if st is None:
            doc = topo.shops_docs.get(key)
            if doc is None or doc.get("s") is None:
                return web.json({"error": "unknown shop", "shop": key}, status=404)
            st = ShopState.restore(doc["s"])
        return web.json(topo.shop_logic.snapshot(st, st.now_us or 0))

    @app.page("/orders/{order_id}")
    async def order_view(web, request, order_id):
        routed = await owner(topo.orders_table, order_id.encode(), web, request)
        if routed is not None:
            return routed
        kp = topo.order_parts.get(topo.partition_of(order_id))
        if kp is not None:  # in memory: newer than the table
            st = kp.states.get(order_id)
            queued = len(kp.pending.get(order_id) or ())
        else:
            doc = topo.orders_docs.get(order_id)
            st = OrderState.restore(doc["s"]) if doc is not None and doc.get("s") is not None else None
            queued = len(doc.get("q") or ()) if doc is not None else 0
        if st is None:
            return web.json({"error": "unknown order", "order_id": order_id}, status=404)
        return web.json({
            "order_id": order_id, "platform": st.platform, "shop_id": st.shop_id,
            "paid_at": fmt_ts(st.paid_us) if st.paid_us else None,
            "latest_ship_time": fmt_ts(st.lst_us) if st.lst_us else None,
            "shipped_at": fmt_ts(st.shipped_us) if st.shipped_us else None,
            "cancelled_at": fmt_ts(st.cancelled_us) if st.cancelled_us else None,
            "signed_at": fmt_ts(st.signed_us) if st.signed_us else None,
            "deadlines": {n: fmt_ts(d) for n, d in topo.order_logic.timers(st).items()},
            "open_alerts": sorted(st.open.values()),
            "refunds": sorted(st.refunds),
            "queued_events": queued,
        })

    @app.page("/alerts")
    async def alerts_view(web, request):
        try:
            q = parse_alert_query(request.query)
            local, asked = local_request(request)
        except QueryError as exc:
            return bad(web, exc)
        if len(q.shop_ids) == 1 and not local:
            # one shop: its owner answers (the format of old unless paging was asked for)
            (shop_id,) = q.shop_ids
            routed = await owner(topo.alerts_table, shop_id.encode(), web, request)
            if routed is not None:
                return routed
            p = topo.partition_of(shop_id)
            book = topo.alert_books.get(p) or AlertBook([], p, docs=topo.alerts_docs)
            shop = book.shop(shop_id)  # in memory: newer than the table
            log_ = list(shop.log.values()) if shop else []
            if not q.paged:
                items = shop_alerts_of_old(log_, q)
                return web.json({"shop_id": shop_id, "status": q.status, "alerts": items, "total": len(items)})
            return web.json({**select_alerts(log_, q), **coverage(set(range(topo.s.partitions)), [], recovering())})
        if local:  # another worker asks for the partitions it was told are ours
            parts = mine(alerts_topic) if asked is None else mine(alerts_topic) & asked
            return web.json({"partitions": sorted(parts), "recovering": recovering(),
                             **rank_alerts(alerts_of(parts), q)})
        answers, answered, errors, rec = await gather(
            request, topo.alerts_table, alerts_topic, "/alerts", q.params(),
            lambda parts: rank_alerts(alerts_of(parts), q))
        return web.json({**merge_alert_pages(answers, q), **coverage(answered, errors, rec)})

    @app.page("/shops")
    async def shops_view(web, request):
        try:
            platforms, shop_ids = shop_filters(request.query)
            local, asked = local_request(request)
        except QueryError as exc:
            return bad(web, exc)
        if local:
            parts = mine(contribs_topic) if asked is None else mine(contribs_topic) & asked
            return web.json({"partitions": sorted(parts), "recovering": recovering(),
                             "shops": shops_of(parts, platforms, shop_ids)})
        params = [*(("platform", p) for p in sorted(platforms)), *(("shop_id", s) for s in sorted(shop_ids))]
        answers, answered, errors, rec = await gather(
            request, topo.shops_table, contribs_topic, "/shops", params,
            lambda parts: {"shops": shops_of(parts, platforms, shop_ids)})
        seen: dict[tuple[str, str], dict] = {}
        for ans in answers:
            for e in ans.get("shops") or ():
                seen.setdefault((e["platform"], e["shop_id"]), e)
        shops = sorted(seen.values(), key=shop_order)
        return web.json({"shops": shops, "total": len(shops), **coverage(answered, errors, rec)})

    @app.page(PAGE_PATH)
    async def page_view(web, request):
        resp = web.html(PAGE_HTML, headers={
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        })
        token = topo.s.web_token.strip()
        if token:  # the request passed the token check: the browser keeps the token for the page's requests
            resp.set_cookie(TOKEN_COOKIE, quote(token, safe=""), httponly=True, samesite="Strict", path="/")
        return resp
