"""Delivery to the chats, apart from scoring: one task per sink over the alert books.

The alert agent (topology.py) only records alert changes in the partition's
:class:`~shopwatch.streams.outbox.AlertBook` and wakes these tasks; it never
waits for a chat. Each sink's task asks its
:class:`~shopwatch.streams.outbox.SinkPlan` which (platform, shop) groups may
post now, renders each as one digest (``sink.render_batch``), posts it once
(``sink.post``) and tells the book and the plan what the chat answered. So a
chat that is down, slow or throttling holds back only its own queue; the
scoring agents and the other sinks go on.

What is owed survives a restart: the books are table documents written back
once per commit, and a restarted (or newly assigned) worker posts what its
partitions' books still owe. A post the chat accepted after the last
write-back may be posted again after a crash; nothing is dropped.

Each worker delivers for the shop.alerts partitions it owns, with a token
bucket per sink at the vendor's rate: with N workers on one bot the bot may
see N times that rate, which its throttling answers (130101, 45009, 429 ...)
then slow down without losing anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

import aiohttp

from shopwatch.agents.metrics import OLDEST_OWED, QUEUE_DEPTH, SINK_REJECTED
from shopwatch.streams.outbox import AlertBook, SinkPlan, next_time_of_day, parse_quiet_hours
from shopwatch.streams.summary import build_summary

log = logging.getLogger("shopwatch.delivery")

LOOK_AGAIN_S = 15.0  # refresh the gauges at least this often


def routes_of(sink) -> Callable[[dict], bool]:
    routes = getattr(sink, "routes", None)
    return routes if callable(routes) else sink.wants


def plan_for(sink, rng: Callable[[], float]) -> SinkPlan:
    quiet = getattr(sink, "quiet_hours", None)
    if isinstance(quiet, str):
        quiet = parse_quiet_hours(quiet)
    return SinkPlan(sink.name, rate=getattr(sink, "rate", None), burst=getattr(sink, "burst", 1) or 1,
                    group_wait=getattr(sink, "group_wait", 30.0), group_interval=getattr(sink, "group_interval", 300.0),
                    quiet=quiet, retry_min=getattr(sink, "retry_min", 1.0), retry_max=getattr(sink, "retry_max", 300.0),
                    rejected_retry=getattr(sink, "rejected_retry", 600.0), rng=rng)


class Delivery:
    """Posts what the books owe. ``books()`` gives the alert books of the partitions
    this worker owns now ({partition: AlertBook})."""

    def __init__(self, sinks, books: Callable[[], dict[int, AlertBook]], *,
                 clock: Callable[[], float] = time.time, rng: Callable[[], float] = random.random,
                 scores: Callable[[str, str], Awaitable[dict | None]] | None = None, rules=None) -> None:
        """``scores(platform, shop_id)``: the shop's latest score snapshot (or None),
        for the morning summaries; ``rules``: the rules their thresholds come from."""
        self.sinks = list(sinks)
        self.books = books
        self.scores = scores
        self.rules = rules
        # sink -> when its next morning summary is due (memory: a worker started after
        # the time sends the next day's), and the shops whose summary is still to post
        self.next_summary: dict[str, float] = {}
        self.summaries_owed: dict[str, list[tuple[str, str, list[dict]]]] = {}
        self.clock = clock
        self.plans = {s.name: plan_for(s, rng) for s in self.sinks}
        self.wakeups = {s.name: asyncio.Event() for s in self.sinks}
        self.next_resend: dict[str, float] = {}
        self._session: aiohttp.ClientSession | None = None

    def routes(self) -> list[tuple[str, Callable[[dict], bool]]]:
        return [(s.name, routes_of(s)) for s in self.sinks]

    def wake(self) -> None:
        for ev in self.wakeups.values():
            ev.set()

    def status(self) -> dict:
        """Per sink: what it owes and why its last post failed (for /readyz and /healthz)."""
        now = self.clock()
        out = {}
        for s in self.sinks:
            n, oldest = self._depth(s.name)
            plan = self.plans[s.name]
            out[s.name] = {"owed": n, "oldest_owed_s": round(now - oldest, 1) if oldest is not None else None,
                           "misconfigured": plan.rejected, "problem": plan.problem}
        return out

    def _depth(self, name: str) -> tuple[int, float | None]:
        n, oldest = 0, None
        for book in list(self.books().values()):
            k, o = book.depth(name)
            n += k
            if o is not None and (oldest is None or o < oldest):
                oldest = o
        return n, oldest

    async def run(self) -> None:
        """One task per sink until cancelled (the worker stops)."""
        try:
            await asyncio.gather(*(self._run(s) for s in self.sinks))
        finally:
            if self._session is not None and not self._session.closed:
                await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _run(self, sink) -> None:
        wakeup = self.wakeups[sink.name]
        while True:
            try:
                wake = await self._round(sink)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sink %s: delivery round failed", sink.name)
                wake = self.clock() + 5.0
            if wake == 0:
                continue  # posted something: look again at once
            timeout = LOOK_AGAIN_S if wake is None else min(LOOK_AGAIN_S, max(0.0, wake - self.clock()))
            wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), timeout)

    async def _round(self, sink) -> float | None:
        """One look at what ``sink`` owes: make the posts due now. Returns 0 after a
        post, else when to look again (None: on the next change)."""
        name = sink.name
        plan = self.plans[name]
        now = self.clock()
        where: dict[str, AlertBook] = {}
        groups = []
        for book in list(self.books().values()):
            for g, since, entries in book.owed(name):
                where[g] = book
                groups.append((g, since, entries))
        wake = await self._resend(sink, now)
        summary_at = await self._summaries(sink, now)
        if summary_at is not None:
            wake = summary_at if wake is None else min(wake, summary_at)
        posts, next_at = plan.next_posts(groups, now)
        self._gauges(name, now)
        if next_at is not None:
            wake = next_at if wake is None else min(wake, next_at)
        for g, entries in posts:
            platform, shop_id = g.split(":", 1)
            mentions = sink.mentions(shop_id) if hasattr(sink, "mentions") else None
            try:
                if hasattr(sink, "render_digest"):
                    # past the body limit a digest only counts the rest ("另有 N 条"): those stay owed
                    rendered = sink.render_digest(entries, now, mentions)
                    request, listed = rendered.request, set(rendered.listed)
                    sent = [a for a in entries if a["alert_id"] in listed]
                else:
                    request, sent = sink.render_batch(entries, now, mentions), entries
            except Exception:
                log.exception("sink %s: cannot render a digest of %d alerts for %s", name, len(entries), g)
                plan.failed(now, "render error")
                return plan.paused_until
            outcome = await sink.post(self._http(), request)
            now = self.clock()
            if outcome.kind == "ok":
                book = where[g]
                book.delivered(name, shop_id, sent)
                plan.accepted(g, now, emptied=not book.owes(name, shop_id, platform))
                continue
            if outcome.kind == "throttled":
                delay = plan.throttled(now, outcome.retry_after, outcome.detail)
                log.warning("sink %s: throttled (%s); next post in %.0fs, digests grow meanwhile",
                            name, outcome.detail, delay)
            elif outcome.kind == "reject":
                delay = plan.rejected_post(now, outcome.detail)
                log.error("sink %s: rejected as configured (%s); %d alerts kept owed, trying again in %.0fs",
                          name, outcome.detail, self._depth(name)[0], delay)
            else:
                delay = plan.failed(now, outcome.detail)
                log.warning("sink %s: post failed (%s, %d in a row); retrying in %.1fs",
                            name, outcome.detail, plan.failures, delay)
            self._gauges(name, now)
            return plan.paused_until
        self._gauges(name, now)
        return 0 if posts else wake

    async def _summaries(self, sink, now: float) -> float | None:
        """The morning summary (``sink.morning_summary``, minutes of the day, Asia/Shanghai):
        once a day, one message per (platform, shop) of this worker's partitions whose
        alerts the sink routes (open alerts, indicators against their bars). Returns
        when to look again."""
        minute = getattr(sink, "morning_summary", None)
        if minute is None or not hasattr(sink, "render_summary"):
            return None
        name = sink.name
        due = self.next_summary.setdefault(name, next_time_of_day(minute, now))
        if now >= due:
            self.next_summary[name] = next_time_of_day(minute, now)
            routes = routes_of(sink)
            owed = self.summaries_owed.setdefault(name, [])
            for book in list(self.books().values()):
                for platform, shop_id, firing in book.shops_by_platform():
                    shop_alerts = book.shops[shop_id].log.values()
                    if any(a["platform"] == platform and routes(a) for a in shop_alerts):
                        owed.append((platform, shop_id, [a for a in firing if routes(a)]))
        plan = self.plans[name]
        owed = self.summaries_owed.get(name) or []
        while owed:
            at = plan.take(now)
            if at > now:
                return at
            platform, shop_id, firing = owed[0]
            snapshot = await self.scores(platform, shop_id) if self.scores is not None else None
            summary = build_summary(platform, shop_id, firing, snapshot, self.rules, now)
            request = sink.render_summary(summary, now, sink.mentions(shop_id) if hasattr(sink, "mentions") else None)
            outcome = await sink.post(self._http(), request)
            now = self.clock()
            if outcome.kind == "ok":
                owed.pop(0)
                continue
            if outcome.kind == "throttled":
                return plan.throttled(now, outcome.retry_after, outcome.detail) + now
            if outcome.kind == "reject":
                return plan.rejected_post(now, outcome.detail) + now
            return plan.failed(now, outcome.detail) + now
        return self.next_summary[name]

    async def _resend(self, sink, now: float) -> float | None:
        """Alertmanager forgets a firing alert that is not re-sent: post every open
        one (of the partitions owned here) each ``sink.resend`` seconds."""
        every = getattr(sink, "resend", None)
        if not every or not hasattr(sink, "resend_batch"):
            return None
        due = self.next_resend.get(sink.name, 0.0)
        if now < due:
            return due
        routes = routes_of(sink)
        open_alerts = [a for b in list(self.books().values()) for a in b.open_alerts() if routes(a)]
        self.next_resend[sink.name] = now + every
        if open_alerts:
            outcome = await sink.post(self._http(), sink.resend_batch(open_alerts, now))
            if outcome.kind != "ok":
                log.warning("sink %s: re-sending %d firing alerts: %s", sink.name, len(open_alerts), outcome.detail)
                self.next_resend[sink.name] = now + min(every, 10.0)
        return self.next_resend[sink.name]

    def _gauges(self, name: str, now: float) -> None:
        n, oldest = self._depth(name)
        QUEUE_DEPTH.labels(name).set(n)
        OLDEST_OWED.labels(name).set(now - oldest if oldest is not None else 0.0)
        SINK_REJECTED.labels(name).set(1 if self.plans[name].rejected else 0)
