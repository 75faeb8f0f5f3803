"""The alert log and what each chat still owes, per shop: pure, no I/O, no clock read.

The shell's alert agent feeds every record of ``shop.alerts`` to an
:class:`AlertBook` (one per partition; shop.alerts is keyed by ``shop_id``)
and its delivery loop asks a :class:`SinkPlan` per chat sink what to post and
when. Both take the time as an argument.

**The alert log** (events.md: "each firing alert is emitted once; each
resolution once"). shop.alerts is at-least-once: after a crash a change can
come again, identical, even after a later change of the same alert. The log
keeps each ``alert_id``'s latest change per shop; a change whose status the
log already has, or any change after the resolution, is a copy and is
dropped. Resolved alerts are forgotten RESOLVED_KEPT_DAYS of event time after
their resolution (a copy comes within seconds of the original, never weeks),
unless a sink still owes them.

**What a sink owes.** For every sink whose routing takes an alert, a new
change puts the alert in that sink's owed set of the shop, with the wall time
it became owed. The content posted is the alert's latest change in the log; an
alert whose firing was never delivered and which has resolved since is posted
once as "fired and resolved" (``folded``), never dropped. An owed alert
leaves the set only when the chat accepted a post that carried its current
status (:meth:`AlertBook.delivered`); a later change makes it owed again.

**Durability.** The owed sets and the log are one document per shop, written
back once per commit like every other partition state (``drain``). A crash
loses what was delivered since the last write-back, so the restarted worker
posts it again: a crash may post twice, never drop. Copies of records
(read again after the crash) find their status in the log and change nothing.

**When to post** (:class:`SinkPlan`, wall clock, domain ``delivery``; memory
only: a restart starts every group afresh). Alertmanager's grouping per
(sink, shop): a group's first post waits ``group_wait`` after it became owed,
later ones ``group_interval`` after the previous post; a firing critical goes
at once and takes the rest of its group with it. In quiet hours (Asia/Shanghai
wall time) ``info`` and ``warning`` alerts are held and go as one digest when
they end; criticals are never held. A token bucket at the vendor's rate gates
every post: while it is empty, groups keep growing rather than queueing
messages. A failed post backs off exponentially with jitter up to
``retry_max``; a throttled one waits what the vendor said; a rejected one
(bad token, signature, keyword) marks the sink misconfigured and retries
slowly, keeping everything owed for when the configuration is fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone

DELIVERY = "delivery"  # the clock domain of SinkPlan: wall seconds
RESOLVED_KEPT_DAYS = 14
CST = timezone(timedelta(hours=8))


# ----------------------------------------------------------------------------- the book


class ShopAlerts:
    """One shop's alert log and owed sets (one table document)."""

    __slots__ = ("shop_id", "log", "owed", "pruned")

    def __init__(self, shop_id: str) -> None:
        self.shop_id = shop_id
        self.pruned = ""  # the event-time day (YYYY-MM-DD) of the last pruning: once a day is enough
        self.log: dict[str, dict] = {}  # alert_id -> latest change
        # sink -> alert_id -> [owed since (wall s), firing undelivered (0/1)]
        self.owed: dict[str, dict[str, list]] = {}

    def snapshot(self) -> dict:
        # fresh containers: Faust serialises a changelog value later, after processing resumed
        return {"shop": self.shop_id, "log": dict(self.log),
                "owed": {k: {a: list(e) for a, e in v.items()} for k, v in self.owed.items()}}

    @classmethod
    def restore(cls, doc: dict, shop_id: str | None = None) -> ShopAlerts:
        if "log" not in doc:  # a document of a worker before the owed sets: {alert_id: latest change}
            s = cls(shop_id or next(iter(doc.values()))["shop_id"])
            s.log = dict(doc)
            return s
        s = cls(doc["shop"])
        s.log = dict(doc["log"])
        s.owed = {k: {a: list(e) for a, e in v.items()} for k, v in doc.get("owed", {}).items()}
        return s

    def entries(self, sink: str) -> list[dict]:
        """What ``sink`` owes of this shop: the latest changes, ``folded`` where the
        firing was never delivered and the alert has resolved since."""
        out = []
        for aid, (_since, fired) in (self.owed.get(sink) or {}).items():
            a = self.log[aid]
            if fired and a["status"] == "resolved":
                a = {**a, "folded": True}
            out.append(a)
        return out


def _is_copy(prev: dict | None, a: dict) -> bool:
    # an alert fires once and resolves once: a firing after its resolution is a late copy too
    return prev is not None and (prev["status"] == a["status"] or prev["status"] == "resolved")


class AlertBook:
    """One partition of shop.alerts: the shops' alert logs and owed sets.

    ``sinks``: (name, routes) pairs; ``routes(alert) -> bool`` says whether the
    sink takes the alert (its routing rules and minimum severity). ``docs``:
    the shell's table (``get(shop_id)`` -> document or None), read lazily."""

    def __init__(self, sinks: Iterable[tuple[str, Callable[[dict], bool]]], partition: int, docs=None) -> None:
        self.sinks = list(sinks)
        self.partition = partition
        self.docs = docs
        self.shops: dict[str, ShopAlerts] = {}
        self.dirty: dict[str, None] = {}

    def recover(self, docs: Iterable[tuple[str, dict]]) -> None:
        """The partition's documents after a (re)assignment: every owed alert is
        owed again, so the delivery loop picks it up without waiting for a record."""
        for key, doc in docs:
            if doc:
                self.shops[key] = ShopAlerts.restore(doc, key)

    def shop(self, shop_id: str, create: bool = False) -> ShopAlerts | None:
        s = self.shops.get(shop_id)
        if s is None:
            doc = self.docs.get(shop_id) if self.docs is not None else None
            if doc:
                s = self.shops[shop_id] = ShopAlerts.restore(doc, shop_id)
            elif create:
                s = self.shops[shop_id] = ShopAlerts(shop_id)
        return s

    def on_change(self, a: dict, now_s: float) -> bool:
        """Record one alert change of shop.alerts; True when it is new (not a copy)."""
        s = self.shop(a["shop_id"], create=True)
        aid = a["alert_id"]
        if _is_copy(s.log.get(aid), a):
            return False
        s.log[aid] = a
        resolved = a["status"] == "resolved"
        for name, routes in self.sinks:
            if not routes(a):
                continue
            owed = s.owed.setdefault(name, {})
            e = owed.get(aid)
            if e is None:
                owed[aid] = [now_s, 0 if resolved else 1]
            # else: still owed; the log now holds the latest change (a firing still
            # undelivered and now resolved is posted as fired-and-resolved)
        if a["at"][:10] != s.pruned:
            s.pruned = a["at"][:10]
            self._forget_resolved(s, a["at"])
        self.dirty[s.shop_id] = None
        return True

    def _forget_resolved(self, s: ShopAlerts, now_at: str) -> None:
        horizon = datetime.fromisoformat(now_at) - timedelta(days=RESOLVED_KEPT_DAYS)
        owed = set()
        for o in s.owed.values():
            owed.update(o)
        old = [aid for aid, a in s.log.items()
               if a["status"] == "resolved" and aid not in owed and datetime.fromisoformat(a["at"]) < horizon]
        for aid in old:
            del s.log[aid]

    def owed(self, sink: str) -> list[tuple[str, float, list[dict]]]:
        """What ``sink`` owes, one group per (platform, shop): (group key
        ``platform:shop_id``, owed since (oldest, wall s), entries)."""
        out = []
        for s in self.shops.values():
            o = s.owed.get(sink)
            if not o:
                continue
            groups: dict[str, tuple[list, list]] = {}
            for a in s.entries(sink):
                g = groups.setdefault(f"{a['platform']}:{s.shop_id}", ([], []))
                g[0].append(o[a["alert_id"]][0])
                g[1].append(a)
            out.extend((k, min(since), entries) for k, (since, entries) in groups.items())
        return out

    def owes(self, sink: str, shop_id: str, platform: str) -> bool:
        """Whether ``sink`` still owes something of (platform, shop)."""
        s = self.shops.get(shop_id)
        o = s.owed.get(sink) if s is not None else None
        return bool(o) and any(s.log[aid]["platform"] == platform for aid in o)

    def delivered(self, sink: str, shop_id: str, sent: Iterable[dict]) -> int:
        """The chat accepted a post carrying ``sent`` (entries as ``owed`` gave them):
        each alert whose status then is still its latest leaves the owed set; one
        that changed since stays owed with its new status. Returns how many left."""
        s = self.shops.get(shop_id)
        o = s.owed.get(sink) if s is not None else None
        if not o:
            return 0
        n = 0
        for a in sent:
            aid = a["alert_id"]
            e = o.get(aid)
            if e is None:
                continue
            if s.log[aid]["status"] == a["status"]:
                del o[aid]
                n += 1
            elif a["status"] == "firing":
                e[1] = 0  # its firing is in the chat now; the resolution is still owed
        if not o:
            del s.owed[sink]
        self.dirty[shop_id] = None
        return n

    def shops_by_platform(self) -> list[tuple[str, str, list[dict]]]:
        """(platform, shop_id, alerts firing now) of every shop the log knows."""
        out: dict[tuple[str, str], list[dict]] = {}
        for s in self.shops.values():
            for a in s.log.values():
                firing = out.setdefault((a["platform"], s.shop_id), [])
                if a["status"] == "firing":
                    firing.append(a)
        return [(p, shop, firing) for (p, shop), firing in out.items()]

    def open_alerts(self) -> list[dict]:
        """Every alert firing now, across the partition's shops."""
        return [a for s in self.shops.values() for a in s.log.values() if a["status"] == "firing"]

    def depth(self, sink: str) -> tuple[int, float | None]:
        """(alerts owed, owed since (oldest wall s) or None) for ``sink``."""
        n, oldest = 0, None
        for s in self.shops.values():
            o = s.owed.get(sink)
            if o:
                n += len(o)
                m = min(e[0] for e in o.values())
                oldest = m if oldest is None or m < oldest else oldest
        return n, oldest

    def trim(self) -> None:
        """The shops stay in memory: one document each, bounded by the shops of the partition."""

    def drain(self) -> list[tuple[str, dict | None]]:
        """The documents changed since the last drain (once per commit)."""
        p = self.partition
        writes = [(k, {"p": p, **self.shops[k].snapshot()}) for k in self.dirty if k in self.shops]
        self.dirty = {}
        return writes


# ----------------------------------------------------------------------------- when to post


def parse_quiet_hours(text: str) -> tuple[int, int]:
    """``"22:00-08:00"`` -> (start, end) minutes of the day (Asia/Shanghai); may wrap midnight."""
    try:
        a, b = text.split("-")
        out = []
        for t in (a, b):
            h, m = t.strip().split(":")
            h, m = int(h), int(m)
            if not (0 <= h < 24 and 0 <= m < 60):
                raise ValueError
            out.append(h * 60 + m)
    except ValueError:
        raise ValueError(f"quiet hours must look like 22:00-08:00, got {text!r}") from None
    if out[0] == out[1]:
        raise ValueError(f"quiet hours {text!r} are empty")
    return out[0], out[1]


def next_time_of_day(minute: int, now_s: float) -> float:
    """The next instant (wall s) after ``now_s`` at ``minute`` of the day, Asia/Shanghai."""
    t = datetime.fromtimestamp(now_s, CST)
    at = t.replace(hour=minute // 60, minute=minute % 60, second=0, microsecond=0)
    if at <= t:
        at += timedelta(days=1)
    return at.timestamp()


def quiet_until(quiet: tuple[int, int] | None, now_s: float) -> float | None:
    """The end (wall s) of the quiet hours ``now_s`` is in, or None outside them."""
    if quiet is None:
        return None
    start, end = quiet
    t = datetime.fromtimestamp(now_s, CST)
    minute = t.hour * 60 + t.minute
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    if not inside:
        return None
    midnight = t.replace(hour=0, minute=0, second=0, microsecond=0)
    end_t = midnight + timedelta(minutes=end)
    if end_t <= t:
        end_t += timedelta(days=1)
    return end_t.timestamp()


class SinkPlan:
    """When one sink may post what (wall seconds, passed in; ``rng()`` in [0, 1) for jitter).

    ``rate`` messages per minute with ``burst`` tokens (None: no limit);
    ``group_wait`` / ``group_interval`` as Alertmanager's; ``quiet``: (start,
    end) minutes or None; retries back off from ``retry_min`` doubling to
    ``retry_max``, each delay jittered by ±25 %."""

    def __init__(self, name: str, *, rate: float | None, burst: int = 1, group_wait: float = 30.0,
                 group_interval: float = 300.0, quiet: tuple[int, int] | None = None,
                 retry_min: float = 1.0, retry_max: float = 300.0, rejected_retry: float = 600.0,
                 rng: Callable[[], float] = lambda: 0.5) -> None:
        self.name = name
        self.rate = rate
        self.burst = max(1, int(burst))
        self.group_wait = group_wait
        self.group_interval = group_interval
        self.quiet = quiet
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.rejected_retry = rejected_retry
        self.rng = rng
        self.tokens = float(self.burst)
        self.refilled: float | None = None
        self.paused_until = 0.0
        self.failures = 0
        self.problem: str | None = None  # why the last post failed ("rejected: ..." when misconfigured)
        self.rejected = False
        self.first_owed: dict[str, float] = {}  # group -> when it became owed (this process)
        self.last_post: dict[str, float] = {}  # group -> last accepted post

    # -- the token bucket
    def _refill(self, now: float) -> None:
        if self.rate is None:
            return
        if self.refilled is not None and now > self.refilled:
            self.tokens = min(float(self.burst), self.tokens + (now - self.refilled) * self.rate / 60.0)
        self.refilled = now if self.refilled is None else max(self.refilled, now)

    def _token_at(self, now: float) -> float:
        self._refill(now)
        if self.rate is None or self.tokens >= 1.0:
            return now
        return now + (1.0 - self.tokens) * 60.0 / self.rate

    def take(self, now: float) -> float:
        """A token for a post that is not a digest (the morning summary): ``now`` when
        one was taken, else when to look again (paused, or the bucket is empty)."""
        if now < self.paused_until:
            return self.paused_until
        t = self._token_at(now)
        if t > now:
            return t
        if self.rate is not None:
            self.tokens -= 1.0
        return now

    # -- what is due
    def _ready_at(self, group: str, since: float, entries: list[dict], now: float) -> tuple[float, list[dict]]:
        """When ``group`` may post, and what it may post then."""
        first = self.first_owed.setdefault(group, since)
        crit = [a for a in entries if a["status"] == "firing" and a.get("severity") == "critical"]
        q_end = quiet_until(self.quiet, now)
        postable = entries if q_end is None else [a for a in entries if a.get("severity") == "critical"]
        if crit:
            return now, postable
        if not postable:
            return q_end, []  # all held by the quiet hours: look again when they end
        last = self.last_post.get(group)
        at = first + self.group_wait
        if last is not None:
            at = max(at, last + self.group_interval)
        return at, postable

    def next_posts(self, groups: list[tuple[str, float, list[dict]]],
                   now: float) -> tuple[list[tuple[str, list[dict]]], float | None]:
        """Given every group with something owed (group key, owed since, entries), the posts to
        make now (at most as many as there are tokens: critical groups first, then
        the longest owed) and when to look again (None: only on a new change)."""
        live = {g for g, _, _ in groups}
        for g in [g for g in self.first_owed if g not in live]:
            del self.first_owed[g]
        wake: float | None = None
        ready = []
        for g, since, entries in groups:
            at, postable = self._ready_at(g, since, entries, now)
            if at <= now and postable:
                crit = any(a["status"] == "firing" and a.get("severity") == "critical" for a in postable)
                ready.append((0 if crit else 1, self.first_owed[g], g, postable))
            else:
                wake = at if wake is None else min(wake, at)
        if ready and now < self.paused_until:
            return [], self.paused_until if wake is None else min(wake, self.paused_until)
        ready.sort(key=lambda r: (r[0], r[1], r[2]))
        posts = []
        for _, _, g, postable in ready:
            t = self._token_at(now)
            if t > now:
                wake = t if wake is None else min(wake, t)
                break
            if self.rate is not None:
                self.tokens -= 1.0
            posts.append((g, postable))
        return posts, wake

    # -- outcomes of one post
    def accepted(self, group: str, now: float, emptied: bool) -> None:
        self.failures = 0
        self.problem = None
        self.rejected = False
        self.paused_until = 0.0
        self.last_post[group] = now
        if emptied:
            self.first_owed.pop(group, None)

    def failed(self, now: float, detail: str) -> float:
        """A retryable failure (5xx, timeout, connection): back off; returns the delay."""
        self.failures += 1
        base = min(self.retry_max, self.retry_min * 2 ** min(self.failures - 1, 30))
        delay = min(self.retry_max, base * (0.75 + 0.5 * self.rng()))
        self.paused_until = now + delay
        self.problem = detail
        return delay

    def throttled(self, now: float, retry_after: float | None, detail: str) -> float:
        """The vendor said "too fast": wait what it said (else one token's time); the
        bucket is emptied, since the vendor counts more than this process did."""
        delay = retry_after if retry_after is not None else (60.0 / self.rate if self.rate else self.retry_min)
        self.paused_until = max(self.paused_until, now + delay)
        self.tokens = 0.0
        self.refilled = self.paused_until
        self.problem = detail
        return delay

    def rejected_post(self, now: float, detail: str) -> float:
        """A post that will never succeed as configured: keep everything owed, say so,
        and try again now and then (the configuration may be fixed elsewhere)."""
        self.rejected = True
        self.problem = detail
        self.paused_until = now + self.rejected_retry
        return self.rejected_retry
