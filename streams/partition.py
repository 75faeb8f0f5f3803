"""One Kafka partition's worth of the core, still without Kafka: what the Faust agents run.

``KeyedPartition`` serves the order-keyed input topics (shop.orders,
shop.shipments, shop.refunds are co-partitioned, so partition p of each holds
the same orders) or the session-keyed chats, plus the tick topic;
``ShopPartition`` serves one partition of the contributions topic. Both take
their steps through the loop replay's engine takes (streams/steps.py: apply an
event, fire the due timers, want the state's timers again); what differs is what
they do with a step's effects (an outbox and outputs, not a list).

Contributions travel as absolute items. In replay an entity's step hands its
shop the deltas (``Contribution``, streams/effects.py) in the same process. Over
Kafka a delta is not idempotent, so an entity sends its shop its whole items
with a version (an entity update) and the shop side turns a newer version into
the same ``Contribution`` deltas (``diff_items``) for ``ShopLogic.on_contribs``.

Event-time merge. Replay applies events in file order and fires every timer
due strictly before the next event. A Kafka partition sees several topics at
different speeds, so applying records as they arrive would let one topic's
clock fire another topic's timers early. In the ``event`` clock domain the
partition therefore merges its sources by event time: each source is a FIFO
queue (never reordered inside), and the head with the smallest ``ts`` is
applied once every other source has either a queued record, or has already
shown a later ``ts``, or is idle (the shell says which). In the ``wall`` domain
records are applied on arrival and ticks carry the wall clock.

Crash safety (at-least-once delivery, SIGKILL at any instant). The shell
writes each step's ``writes`` to one table and sends ``alerts`` and
``updates``; after a crash the table holds some prefix of those writes (the
worker drops its local store after an unclean stop, so the table is rebuilt
from the changelog) and the inputs come again from the last committed offset.
What makes that safe:

- one document per key holds the key's state, its still-queued records and its
  outbox, so a key is never half written;
- an entity sends its shop its *absolute* items with a version that grows with
  every change (``ver``), never a delta: the shop keeps, per entity, the last
  version and items it applied and turns a newer version into the delta
  itself, so a copy or a regenerated update is a no-op whichever record or
  timer caused it the second time; versions start at the hour of the entity's
  first event (``incarnation_base``), so after retirement a reborn entity's
  updates are above its earlier life's, and a retired entity's record keeps
  its version with no items until the notice is committed;
- the outputs of a step whose cause (source, offset) was not yet committed
  stay in the key's outbox; recovery sends them again (receivers drop copies),
  so an output lost in the producer's buffer while its state was written is
  not lost;
- on the shop side an entity record is written before its shop's document and
  stamped with the shop's application count ``g``; a record whose ``g`` is
  ahead of the recovered shop document was never counted there, and its
  previous version (kept in the record) is the one that was.
"""

from __future__ import annotations

from collections import deque

from shopwatch.schemas.events import parse_ts_us

from .clock import EVENT, clock_of, day_start_us
from .effects import Effects, diff_items
from .retention import RETIRE, Calendar, Retention
from .steps import Steps
from .timers import TimerHeap

REC = "rec/"  # table key prefix of the shop side's entity records
PEND = "pend/"  # table key prefix of the shop side's queued updates
_UPDATE_KEYS = frozenset(("shop", "e", "v", "at", "items"))

# Short forms of a keyed document's queued events (format 1; frozen: new values go
# at the end). An event type found here is stored as its index.
_EVENT_TYPES = (
    "order.paid", "order.shipped", "order.cancelled", "review.posted", "complaint.filed", "complaint.judged",
    "shipment.picked_up", "shipment.in_transit", "shipment.out_for_delivery", "shipment.signed", "shipment.customs",
    "shipment.exception", "shipment.fake_flagged", "refund.requested", "refund.approved", "refund.rejected",
    "refund.return_shipped", "refund.return_signed", "refund.received", "refund.intervened", "refund.judged",
    "refund.completed", "refund.closed", "refund.proof_uploaded", "chat.started", "chat.assigned", "chat.message",
    "chat.closed", "chat.rated",
)
_TYPE_CODE = {t: i for i, t in enumerate(_EVENT_TYPES)}
_KEY_FIELDS = ("order_id", "session_id")  # the field an event is keyed by (its document's key)
_EVENT_BASE = frozenset(("event_id", "type", "ts", "ts_us", "platform", "shop_id"))


def pack_event(ev: dict, key: str, st) -> list | dict:
    """A queued event in a keyed document (format 1): [event_id, type, ts, platform, shop_id,
    key field, other fields], trailing nulls left out. ``type`` is its index in _EVENT_TYPES (or
    itself); ``platform`` and ``shop_id`` are null when they are the state's; the key field is
    the index in _KEY_FIELDS of the field holding the document's key (left out of the other
    fields); ``ts_us`` is left out when it is ``parse_ts_us(ts)`` (so the validator's). An event
    without these fields stays the dict it is."""
    if not _EVENT_BASE <= ev.keys():
        return ev
    t, p, shop, ts = ev["type"], ev["platform"], ev["shop_id"], ev["ts"]
    if p is None or shop is None:
        return ev
    rest = {k: v for k, v in ev.items() if k not in _EVENT_BASE}
    kf = None
    for i, f in enumerate(_KEY_FIELDS):
        if f in rest and rest[f] == key:
            del rest[f]
            kf = i
            break
    try:
        derived = parse_ts_us(ts) == ev["ts_us"]
    except ValueError:
        derived = False
    if not derived:
        rest["ts_us"] = ev["ts_us"]
    d = [ev["event_id"], _TYPE_CODE.get(t, t), ts,
         None if st is not None and p == st.platform else p,
         None if st is not None and shop == st.shop_id else shop, kf, rest or None]
    while d[-1] is None:
        d.pop()
    return d


def unpack_event(d, key: str, st) -> dict:
    if type(d) is dict:
        return d
    n = len(d)
    if n < 7:
        d = [*d, *(None,) * (7 - n)]
    eid, t, ts, p, shop, kf, rest = d
    ev = {"event_id": eid, "type": _EVENT_TYPES[t] if type(t) is int else t, "ts": ts,
          "platform": st.platform if p is None else p, "shop_id": st.shop_id if shop is None else shop}
    if kf is not None:
        ev[_KEY_FIELDS[kf]] = key
    if rest:
        ev.update(rest)
    if "ts_us" not in ev:
        ev["ts_us"] = parse_ts_us(ts)
    return ev


def _shift(x, b: int):
    return x - b if type(x) is int else x


def _unshift(x, b: int):
    return x + b if type(x) is int else x


class Outputs:
    """What one step produced, for the shell to send and write."""

    __slots__ = ("alerts", "updates", "writes", "snapshots", "changed")

    def __init__(self) -> None:
        self.alerts: list[dict] = []
        # entity updates for the shops: {"shop", "e", "v", "at", "items"}
        self.updates: list[dict] = []
        # table documents to write, in this order: (key, doc), doc None deletes the key
        self.writes: list[tuple[str, dict | None]] = []
        self.snapshots: list[dict] = []  # score snapshots asked for by shop timers (小红书 12:00)
        self.changed: set = set()  # shop keys whose aggregate changed


class Merger:
    """Merges FIFO sources by time: the head with the smallest time is released once
    every other source has a queued item, has already shown a later time, or is
    idle; ``flush`` releases everything. Sources never seen hold the merge back
    until they go idle."""

    def __init__(self, sources) -> None:
        self.sources = list(sources)
        self.queues: dict[str, deque] = {s: deque() for s in self.sources}
        self.last: dict[str, int] = {}

    def push(self, source: str, ts: int, item) -> None:
        if self.last.get(source, ts - 1) < ts:
            self.last[source] = ts
        q = self.queues.get(source)
        if q is None:
            q = self.queues[source] = deque()
        q.append((ts, item))

    def promise(self, source: str, ts: int) -> None:
        """The source says it will bring nothing earlier than ``ts`` (a watermark)."""
        if self.last.get(source, ts - 1) < ts:
            self.last[source] = ts

    def pop_ready(self, idle: frozenset = frozenset(), flush: bool = False):
        queues = self.queues
        while True:
            best = None
            for src, q in queues.items():
                if q and (best is None or q[0][0] < best[0]):
                    best = (q[0][0], src)
            if best is None:
                return
            ts, src = best
            if not flush:
                for other, q in queues.items():
                    if other != src and not q and other not in idle and self.last.get(other, ts - 1) < ts:
                        return  # that source may still bring something earlier
            yield src, queues[src].popleft()[1]


class DocStates:
    """Dict-like states over a mapping of documents (the shell's table), restored
    lazily and kept in memory (the partition has one owner, so its table only holds
    what this object wrote); ``trim`` forgets them when there are more than
    ``limit``, once their documents have been drained."""

    def __init__(self, docs, state_cls, limit: int = 20_000) -> None:
        self.docs = docs
        self.cls = state_cls
        self.cache: dict = {}
        self.limit = limit
        self.gone: set = set()  # retired since the last write-back: their documents still hold a state

    def get(self, key, default=None):
        st = self.cache.get(key)
        if st is not None:
            return st
        if key in self.gone:
            return default
        doc = self.docs.get(key)
        if doc is None or doc.get("s") is None:
            return default
        st = self.cache[key] = self.cls.restore(doc["s"])
        return st

    def __setitem__(self, key, st) -> None:
        self.cache[key] = st
        self.gone.discard(key)

    def __delitem__(self, key) -> None:
        self.cache.pop(key, None)
        self.gone.add(key)

    def __contains__(self, key) -> bool:
        return self.get(key) is not None

    def trim(self) -> None:
        """After a write-back (every changed key's document written, retired ones without a state)."""
        self.gone.clear()
        if len(self.cache) > self.limit:
            self.cache.clear()


def _never_committed(_source: str):
    return None


INCARNATION_SHIFT = 40
VERSION_COUNT = (1 << INCARNATION_SHIFT) - 1
HOUR_US = 3_600_000_000


def incarnation_base(ts_us: int) -> int:
    """The first version of an entity whose first event is at ``ts_us``: its hour since the
    epoch in the high bits, so an entity reborn after retirement (streams/retention.py) has
    versions above every version of its earlier life; a shop tells the two lives apart
    without the retirement notice (which a crash can put after the new life's updates)."""
    return (ts_us // HOUR_US) << INCARNATION_SHIFT


def _qid(u: dict) -> tuple:
    """An update in ``ShopPartition.queued``: (entity, version), and a retirement notice apart."""
    return (u["e"], u["v"], "x") if u.get("x") else (u["e"], u["v"])


def _pend_key(o) -> str:
    """Document key of a queued update: the offset and index of its contributions message."""
    return f"{PEND}{o[0]}.{o[1]}"


class KeyedPartition(Steps):
    """``kind`` names the entities ("orders", "chats") in the ids sent to shops;
    ``committed(source)`` is the committed offset of ``source`` on this partition
    (None before the first commit); ``docs`` is the table (key -> document) the
    shell writes ``writes`` to — without it states stay in memory.

    A key's document, what ``drain`` writes: ``{"p": partition, "s": state,
    "q": queued records, "o": outbox}``, ``s`` the state's ``snapshot()`` (a
    compact list, streams/orders.py and streams/sessions.py), each part left out
    when there is none. The source of a queued record or an outbox entry is its
    index in ``sources`` (so the order of ``sources`` is part of the format; a
    source not in it, the tick topic, stays a name). A queued record is
    ``[source, offset, event]``, the event in the short form of ``pack_event``.
    An outbox entry is ``[source, offset, "a", alert]``, or for an update
    ``[source, offset, at]`` when it is of the state's own version (shop, id,
    version and items are the state's, made again at recovery) and ``[source,
    offset, version, at, items]`` for an earlier one (instants as offsets from
    the state's ``first_us``); an update that is not the state's is kept whole,
    ``[source, offset, "u", update]``. Documents of earlier workers (``s`` a
    dict with field names, sources by name, whole events and updates, empty
    ``q``/``o`` written out) are read as well."""

    def __init__(self, logic, partition: int, sources: list[str], clock=EVENT,
                 key_of=None, kind: str = "orders", committed=None, docs=None) -> None:
        self.logic = logic
        self.partition = partition
        self.sources = list(sources)
        self._source_code = {src: i for i, src in enumerate(self.sources)}
        self.clock = clock_of(clock)  # its policy: merge or not, what moves the clock (streams/clock.py)
        self.domain = self.clock.domain
        self.key_of = key_of
        self.kind = kind
        self.committed = committed or _never_committed
        self.states = DocStates(docs, logic.new_state) if docs is not None else {}
        # the step loop's tables (streams/steps.py): one group, "k", of this partition's keys
        self._group_logic, self._group_states = {"k": logic}, {"k": self.states}
        self._stepped = {"k": self._key_stepped}
        self._out = Outputs()  # the outputs of the step in progress (_begin)
        self.pending: dict = {}  # key -> list of [source, offset, event] still queued
        self.outbox: dict = {}  # key -> [[source, offset, "a", alert] | [source, offset, "u", update]]
        self.merger = Merger(self.sources)
        self.timers = TimerHeap()
        self.fx = Effects()
        self.watermark: int | None = None
        self._cause = (None, -1)
        self._touched: dict = {}
        self.dirty: dict = {}  # keys changed since the last drain(), in order
        # retention (streams/retention.py): keys filed by retirement day, one sweep timer a day
        self.retention = Retention(logic.rules)
        self.calendar = Calendar()
        self.retired = 0
        self._gone_boxes: set = set()  # retired keys whose document still holds an outbox

    # ---------------------------------------------------------------- recovery
    def recover(self, docs) -> Outputs:
        """Rebuild from this partition's restored documents ((key, doc) pairs): states,
        queued records, the timer heap and the outbox. Returns the outputs of steps
        whose cause was not committed, to send again.

        Documents are written once per commit (drain), and a crash during the
        write-back leaves some keys as of this drain and others as of the previous
        one. Only queued records read before the committed offset are queued
        again: later ones are read again, in their order (a record queued at drain
        N whose key was written while an earlier record's key was not would
        otherwise run ahead of it in the merge). The outputs to send again were
        all delivered before the drain (see drain()), so sending them again is
        only a copy."""
        out = Outputs()
        recs = []
        restore = self.logic.new_state.restore
        for key, doc in docs:
            st = None
            if doc.get("s") is not None:
                st = restore(doc["s"])
                if not isinstance(self.states, DocStates):
                    self.states[key] = st
                wanted = self.logic.timers(st)
                self.timers.want("k", key, wanted)
                self._file(key, st, wanted)
            plist = [r for r in (self._unpack_queued(key, st, r) for r in doc.get("q") or ())
                     if self._is_committed(r)]
            if plist:
                self.pending[key] = plist
                recs.extend(plist)
            box = [e for e in (self._unpack_out(key, st, e) for e in doc.get("o") or ()) if not self._is_committed(e)]
            if box:
                self.outbox[key] = box
                for e in box:
                    (out.alerts if e[2] == "a" else out.updates).append(e[3])
                if st is None:
                    self._gone_boxes.add(key)
            elif st is None and not plist:
                out.writes.append((key, None))  # a retired key whose outbox was committed: forget it
        for src, off, ev in sorted(recs, key=lambda r: (r[0], r[1])):
            self.merger.push(src, ev["ts_us"], (off, ev))
        # in the order they first went out: a shop merges each stream as a time-ordered queue
        out.updates.sort(key=lambda u: (u["at"], u["v"]))
        return out

    # ------------------------------------------------------------- documents
    def _pack(self, key, st, q, box) -> dict:
        """A key's document (see the class docstring)."""
        code = self._source_code
        doc = {"p": self.partition}
        if st is not None:
            doc["s"] = st.snapshot()
        if q:
            doc["q"] = [[code.get(r[0], r[0]), r[1], pack_event(r[2], key, st)] for r in q]
        if box:
            if st is not None:
                b = st.first_us or 0
                shop, e_id, ver = f"{st.platform}:{st.shop_id}", f"{self.kind}/{key}", st.ver
            out = []
            for e in box:
                src = code.get(e[0], e[0])
                u = e[3]
                if e[2] == "u" and st is not None and u.keys() == _UPDATE_KEYS and u["shop"] == shop \
                        and u["e"] == e_id:
                    if u["v"] == ver:  # the state's own version: its items are the state's
                        out.append([src, e[1], _shift(u["at"], b)])
                    else:
                        out.append([src, e[1], u["v"], _shift(u["at"], b),
                                    [[it[0], it[1], _shift(it[2], b), *it[3:]] for it in u["items"]]])
                else:
                    out.append([src, e[1], e[2], u])
            doc["o"] = out
        return doc

    def _source(self, x) -> str:
        """A source as a document names it: its index in ``sources``, or its name."""
        return self.sources[x] if type(x) is int else x

    def _unpack_queued(self, key, st, r) -> list:
        return [self._source(r[0]), r[1], unpack_event(r[2], key, st)]

    def _unpack_out(self, key, st, e) -> list:
        n = len(e)
        if n == 4:  # [source, offset, "a" | "u", alert | update]
            return [self._source(e[0]), e[1], e[2], e[3]]
        b = st.first_us or 0
        if n == 3:  # the update of the state's own version, made again from the state
            return [self._source(e[0]), e[1], "u", self._update(key, st, _unshift(e[2], b))]
        _src, off, v, at, items = e  # an earlier version: [source, offset, version, at, items]
        return [self._source(e[0]), off, "u",
                {"shop": f"{st.platform}:{st.shop_id}", "e": f"{self.kind}/{key}", "v": v, "at": _unshift(at, b),
                 "items": [[it[0], it[1], _unshift(it[2], b), *it[3:]] for it in items]}]

    def _is_committed(self, entry) -> bool:
        c = self.committed(entry[0])
        return c is not None and entry[1] < c

    # ------------------------------------------------------------------ input
    def is_late(self, ev: dict) -> bool:
        """Whether ``ev`` (not applied before) is earlier than the partition's clock: the merge
        let a later record of another source go first (a source counted idle too soon)."""
        wm = self.watermark
        if wm is None or ev["ts_us"] >= wm:
            return False
        st = self.states.get(self.key_of(ev))
        return st is None or ev["event_id"] not in st.seen

    def on_record(self, source: str, offset: int, ev: dict, idle: frozenset = frozenset()) -> Outputs:
        out = self._begin(source, offset)
        key = self.key_of(ev)
        st = self.states.get(key)
        if st is not None and ev["event_id"] in st.seen:
            return out  # applied before; what it produced is in the outbox until committed
        if not self.clock.merges or len(self.sources) == 1:
            # nothing to merge: one source is already in order
            self._apply(key, ev)
        else:
            plist = self.pending.setdefault(key, [])
            if any(r[2]["event_id"] == ev["event_id"] for r in plist):
                return out
            plist.append([source, offset, ev])
            self._touched[key] = None
            self.merger.push(source, ev["ts_us"], (offset, ev))
            self._merge(idle, flush=False)
        return self._finish(out)

    def on_tick(self, source: str, offset: int, now_us: int | None, flush: bool = False,
                idle: frozenset = frozenset()) -> Outputs:
        """A tick: in ``event`` mode ``flush`` releases every queued record and
        ``now_us`` (if given) moves the clock there, firing timers due at or before
        it (replay's end of file); in ``wall`` mode ``now_us`` is the wall clock
        and timers due strictly before it fire."""
        out = self._begin(source, offset)
        if self.clock.merges:
            self._merge(idle, flush=flush)
        if now_us is not None:
            self._fire(now_us, self.clock.ticks_inclusive)
        self._prune_outbox()
        return self._finish(out)

    # ------------------------------------------------------------------ steps
    def _begin(self, source: str, offset: int) -> Outputs:
        self._cause = (source, offset)
        self._touched = {}
        self._out = Outputs()
        return self._out

    def _finish(self, out: Outputs) -> Outputs:
        self.dirty.update(self._touched)
        return out

    def drain(self) -> list:
        """The documents of the keys changed since the last drain, to write now: Kafka
        Streams' record cache. A key's document is its state, queued records and
        outbox as of now, so a crash that delivers only some of these writes leaves
        each key as of the previous drain or as of this one.

        The write-back protocol (the shell's, once per commit): with no record in
        process, (1) send every output held so far and wait until the broker has
        them all, (2) drain and write the documents, (3) flush them, (4) commit
        the offsets. So a document on the changelog never holds an output the
        broker may not have: the outputs it would send again after a crash are
        copies, and the shops never see a stream's updates out of order."""
        writes = []
        for key in self.dirty:
            st = self.states.get(key)
            q = self.pending.get(key)
            box = self.outbox.get(key)
            if st is None and not q and not box:
                writes.append((key, None))
            else:
                writes.append((key, self._pack(key, st, q, box)))
        self.dirty = {}
        return writes

    def trim(self) -> None:
        """After the drained documents are written: bound the states kept in memory."""
        if isinstance(self.states, DocStates):
            self.states.trim()

    def _merge(self, idle: frozenset, flush: bool) -> None:
        for _src, (_off, ev) in self.merger.pop_ready(idle, flush):
            key = self.key_of(ev)
            plist = self.pending.get(key)
            if plist is not None:
                plist[:] = [r for r in plist if r[2]["event_id"] != ev["event_id"]]
                if not plist:
                    del self.pending[key]
                self._touched[key] = None
            self._apply(key, ev)

    def _apply(self, key, ev: dict) -> None:
        ts = ev["ts_us"]
        if self.clock.events_advance:
            self.fire(ts, False)
            if self.watermark is None or ts > self.watermark:
                self.watermark = ts
        self.step("k", key, ev)

    def _fire(self, limit_us: int, inclusive: bool) -> None:
        self.fire(limit_us, inclusive)
        if self.clock.events_advance and inclusive and (self.watermark is None or limit_us > self.watermark):
            self.watermark = limit_us

    # the step loop's hooks (streams/steps.py)
    def _new_state(self, group: str, key, ev: dict):
        st = self.logic.new_state(key)
        st.ver = incarnation_base(ev["ts_us"])
        self._gone_boxes.discard(key)
        return st

    def _key_stepped(self, key, st) -> None:
        wanted = self.logic.timers(st)
        self.timers.want("k", key, wanted, exact=True)
        self._file(key, st, wanted)
        self._collect(key, st, self._out)

    # ------------------------------------------------------------ retention
    def _file(self, key, st, wanted) -> None:
        d = self.retention.day_of(self.logic, st, wanted)
        if d is not None and self.calendar.file(key, d):
            self.timers.want(RETIRE, d, {RETIRE: day_start_us(d)})

    def _sweep(self, day: int) -> None:
        """The midnight beginning ``day`` (the engine's rule): retire the keys filed there whose
        day did not move. The state goes (its document is written without it, or deleted once
        no queued record or uncommitted output is left) and its shop is told, so that its entity
        record goes too: a later event for the key starts a fresh entity, counted from nothing."""
        for key in self.calendar.take(day):
            st = self.states.get(key)
            if st is None:
                continue
            wanted = self.logic.timers(st)
            d = self.retention.day_of(self.logic, st, wanted)
            if d is not None and d > day:
                if self.calendar.file(key, d):
                    self.timers.want(RETIRE, d, {RETIRE: day_start_us(d)})
                continue
            del self.states[key]
            self.timers.scheduled.get("k", {}).pop(key, None)
            self.retired += 1
            self._touched[key] = None
            if st.ver & VERSION_COUNT:  # its shop has a record of it
                notice = {"shop": f"{st.platform}:{st.shop_id}", "e": f"{self.kind}/{key}", "v": st.ver,
                          "at": day_start_us(day), "items": [], "x": 1}
                src, off = self._cause
                self._out.updates.append(notice)
                self._box(key).append([src, off, "u", notice])
                self._gone_boxes.add(key)

    def _collect(self, key, st, out: Outputs) -> None:
        self._touched[key] = None
        fx = self.fx
        if not fx.alerts and not fx.contribs:
            return
        box = self._box(key)
        src, off = self._cause
        for a in fx.alerts:
            out.alerts.append(a)
            box.append([src, off, "a", a])
        fx.alerts.clear()
        if fx.contribs:
            # every version, not only the last: a shop counts each at its own time (daily caps)
            u = self._update(key, st, fx.contribs[0].at_us)
            fx.contribs.clear()
            out.updates.append(u)
            box.append([src, off, "u", u])

    def _box(self, key) -> list:
        box = self.outbox.get(key)
        if box is None:
            box = self.outbox[key] = []
        else:
            box[:] = [e for e in box if not self._is_committed(e)]
        return box

    def _prune_outbox(self) -> None:
        """Forget (in memory) outputs whose cause is committed; documents keep them
        until their key is written again, and recovery skips them."""
        for key in list(self.outbox):
            box = [e for e in self.outbox[key] if not self._is_committed(e)]
            if box:
                self.outbox[key] = box
            else:
                del self.outbox[key]
                if key in self._gone_boxes:  # a retired key: its document can go now
                    self._gone_boxes.discard(key)
                    if key not in self.pending and self.states.get(key) is None:
                        self.dirty[key] = None

    def _update(self, key, st, at_us: int) -> dict:
        return {"shop": f"{st.platform}:{st.shop_id}", "e": f"{self.kind}/{key}", "v": st.ver, "at": at_us,
                "items": [[k, *v] for k, v in st.items.items()]}


class ShopPartition(Steps):
    """The shop side of one partition of the contributions topic.

    Entity updates come from every order and chat partition ("streams"), each
    stream in event-time order. In the ``event`` domain they are merged by time
    like the keyed side's sources, so shop timers (midnight cap resets, 抖音
    level evaluation) and the daily-cap crossing see replay's order. Shop states
    are few and stay in memory; entity records are read from ``docs`` (the
    shell's table) when an update needs them.
    """

    def __init__(self, logic, clock=EVENT, streams=(), partition: int = 0, committed=None,
                 docs=None) -> None:
        self.logic = logic
        self.clock = clock_of(clock)  # its policy: merge or not, what moves the clock (streams/clock.py)
        self.domain = self.clock.domain
        self.partition = partition
        self.committed = committed or (lambda: None)  # committed offset of this contributions partition
        self.docs = docs if docs is not None else {}
        self.states: dict = {}
        self.gen: dict = {}  # shop key -> updates applied so far (stamps the entity records)
        self.queued: set = set()  # (entity, version) of the updates waiting in the merge
        self.outbox: dict = {}  # shop key -> [[offset, alert]] not yet known committed
        self.timers = TimerHeap()
        self.fx = Effects()
        self.watermark: int | None = None
        self.merger = Merger(streams)
        # the step loop's tables (streams/steps.py): one group, "s", of this partition's shops
        self._group_logic, self._group_states = {"s": logic}, {"s": self.states}
        self._stepped = {"s": self._shop_stepped}
        self._out = Outputs()  # the outputs of the step in progress (_begin)
        # changed since the last drain(): entity records, queued updates written and
        # released (keyed by their document key), shop documents
        self._w_recs: dict = {}
        self._w_pend: dict = {}
        self._w_del: dict = {}
        self._w_shops: dict = {}
        self._repaired: dict = {}  # entity records put back by recover(), until the shell wrote them
        # retired entities (a notice applied) -> the notice's offset: their record stays, with no
        # items, until that offset is committed (a copy of an earlier update, read again after a
        # crash, must still find the version it had), then goes
        self.retired_recs: dict = {}
        self._w_rdel: dict = {}  # entity records of retired entities, to delete
        self._touched: dict = {}
        self._offset = -1
        self.wms: dict = {}  # stream -> [greatest watermark, greatest flushed watermark]
        self.final: int | None = None  # the last backfill end flushed
        self._dirty: set = set()  # shops changed since the last snapshot round

    # ---------------------------------------------------------------- recovery
    def recover(self, docs) -> Outputs:
        """Rebuild from this partition's restored documents (shop documents, queued
        updates, entity records); returns the alerts of steps whose cause was not
        committed, to send again."""
        out = Outputs()
        recs = []
        records = []
        c = self.committed()
        for key, doc in docs:
            if key.startswith(PEND):
                recs.append(doc["u"])
            elif key.startswith(REC):
                records.append((key, doc))
            elif doc.get("s") is not None:
                st = self.states[key] = self.logic.new_state.restore(doc["s"])
                self.gen[key] = doc.get("g", 0)
                self.timers.want("s", key, self.logic.timers(st))
                box = [e for e in doc.get("o") or () if c is None or e[0] >= c]
                if box:
                    self.outbox[key] = box
                    out.alerts.extend(e[1] for e in box)
        for key, doc in records:
            v, items, g, pv, pitems, pg = doc["r"]
            if g > self.gen.get(doc["shop"], 0):
                # written just before the crash, but its shop's document was not: the
                # shop counts the previous version (whose document came earlier)
                fixed = self._repaired[key[len(REC):]] = {"p": doc["p"], "shop": doc["shop"],
                                                          "r": [pv, pitems, pg, pv, pitems, pg]}
                out.writes.append((key, fixed))
            elif "x" in doc:
                if c is not None and doc["x"] < c:
                    self._w_rdel[key[len(REC):]] = None
                else:
                    self.retired_recs[key[len(REC):]] = doc["x"]
        for u in sorted(recs, key=lambda u: u["o"]):
            if c is None or u["o"][0] >= c:
                # read again from the committed offset, in its stream's order (its document
                # can be from a write-back that reached the changelog only in part)
                out.writes.append((_pend_key(u["o"]), None))
            elif u["v"] > self._record(u["e"])[0] or (u.get("x") and u["v"] == self._record(u["e"])[0]
                                                       and u["e"] not in self.retired_recs):
                self._queue(u)
            else:  # applied just before the crash, its deletion was lost
                out.writes.append((_pend_key(u["o"]), None))
        return out

    # ------------------------------------------------------------------ input
    def on_update(self, u: dict, offset: int, idle: frozenset = frozenset(), index: int = 0) -> Outputs:
        """Take one entity update (with the ``stream`` it came from), the ``index``-th of
        the message at ``offset``."""
        out = self._begin(offset)
        if not self.clock.merges:
            self._apply(u)
            self._dirty |= out.changed
            return self._finish(out)
        if u.get("x"):  # an entity retired: for the version its record holds once the queue before it is applied
            if u["v"] < self._record(u["e"])[0] or _qid(u) in self.queued:
                return out
        elif u["v"] <= self._record(u["e"])[0] or (u["e"], u["v"]) in self.queued:
            return out  # a copy (a reborn entity's versions are above its earlier life's)
        u = {**u, "o": [offset, index]}
        self._queue(u)
        self._w_pend[_pend_key(u["o"])] = {"p": self.partition, "u": u}
        self._release(idle, False)
        self._dirty |= out.changed
        return self._finish(out)

    def on_watermark(self, offset: int, stream: str, wm: int, flush: bool = False) -> Outputs:
        """A stream's clock, sent after its updates: once every stream has spoken, the
        shops move to the lowest watermark and the shops changed since the last
        round get a score snapshot. When every stream has sent a flushed watermark
        (the end of a backfill, `shopwatch tick --until T`), everything queued is
        released, timers due at T fire too (like replay's end) and every shop gets
        its snapshot as of T."""
        w = self.wms.setdefault(stream, [wm, None])
        w[0] = max(w[0], wm)
        if flush:
            w[1] = wm if w[1] is None else max(w[1], wm)
        self.merger.promise(stream, wm)
        if len(self.wms) < len(self.merger.sources):
            return self.on_tick(offset, None, False)
        low = min(x[0] for x in self.wms.values())
        flushed = [x[1] for x in self.wms.values()]
        final = None if None in flushed else min(flushed)
        end = final is not None and final != self.final
        if end:
            self.final = low = final
        out = self.on_tick(offset, low, self.clock.ticks_inclusive and end, flush=end)
        keys = set(self.states) if end else self._dirty | out.changed
        self._dirty = set()
        for key in sorted(keys):
            out.snapshots.append(self.logic.snapshot(self.states[key], low))
        return out

    def on_tick(self, offset: int, now_us: int | None, inclusive: bool, flush: bool = False,
                idle: frozenset = frozenset()) -> Outputs:
        """Release merged updates (all of them on ``flush``), then fire shop timers due
        before ``now_us`` (at or before, if ``inclusive``)."""
        out = self._begin(offset)
        if self.clock.merges:
            self._release(idle, flush)
        if now_us is not None:
            self.fire(now_us, inclusive)
            if self.watermark is None or now_us > self.watermark:
                self.watermark = now_us
        out.snapshots.extend(self.fx.snapshots)
        self.fx.snapshots.clear()
        c = self.committed()
        if c is not None:
            for key in list(self.outbox):
                box = [e for e in self.outbox[key] if e[0] >= c]
                if box:
                    self.outbox[key] = box
                else:
                    del self.outbox[key]
        return self._finish(out)

    # ------------------------------------------------------------------ steps
    def _begin(self, offset: int) -> Outputs:
        self._offset = offset
        self._repaired = {}
        self._touched = {}
        self._out = Outputs()
        return self._out

    def _queue(self, u: dict) -> None:
        self.queued.add(_qid(u))
        self.merger.push(u["stream"], u["at"], u)

    def _finish(self, out: Outputs) -> Outputs:
        self._w_shops.update(self._touched)
        return out

    def drain(self) -> list:
        """The documents changed since the last drain, to write now (once per commit,
        before the producer flush that precedes the offset commit).

        In this order, so that any prefix of the writes is safe: queued updates
        first; then entity records, so a crash before their shop's document leaves
        records stamped ahead of the shop, which recover() puts back to their
        previous version -- the one written by the previous drain, which is what
        the shop document then on the changelog counted; released updates last,
        so a crash before their deletion leaves updates that _record shows as
        applied. An update queued and released between two drains is never written."""
        writes = [(k, d) for k, d in self._w_pend.items() if k not in self._w_del]
        for e, doc in self._w_recs.items():
            base = self.docs.get(REC + e)
            prev = base["r"][:3] if base is not None else [0, [], 0]
            writes.append((REC + e, {**doc, "r": [*doc["r"], *prev]}))
        c = self.committed()
        if c is not None:
            for e, off in list(self.retired_recs.items()):
                if off < c and e not in self._w_recs:
                    del self.retired_recs[e]
                    self._w_rdel[e] = None
        writes.extend((REC + e, None) for e in self._w_rdel)
        self._w_rdel = {}
        p = self.partition
        for key in self._w_shops:
            st = self.states.get(key)
            if st is not None:
                writes.append((key, {"p": p, "s": st.snapshot(), "g": self.gen.get(key, 0),
                                     "o": self.outbox.get(key) or []}))
        writes.extend((k, None) for k in self._w_del if k not in self._w_pend)
        self._w_recs, self._w_pend, self._w_del, self._w_shops = {}, {}, {}, {}
        return writes

    def trim(self) -> None:
        """Shop states are few and all stay in memory: nothing to forget."""

    def _record(self, e: str) -> tuple[int, dict]:
        """(version, items) of entity ``e`` as counted in its shop's state."""
        doc = self._w_recs.get(e)
        if doc is None:
            if e in self._w_rdel:
                return 0, {}
            doc = self._repaired.get(e) or self.docs.get(REC + e)
        if doc is None:
            return 0, {}
        v, items = doc["r"][:2]
        return v, {it[0]: tuple(it[1:]) for it in items}

    def _release(self, idle: frozenset, flush: bool) -> None:
        for _stream, u in self.merger.pop_ready(idle, flush):
            self.queued.discard(_qid(u))
            self._w_del[_pend_key(u["o"])] = None
            self._apply(u)

    def _apply(self, u: dict) -> None:
        key = u["shop"]
        v, items = self._record(u["e"])
        if u.get("x"):
            # retired (streams/retention.py): its items stay counted; its record keeps the
            # version with no items until the notice is committed (drain), then goes
            if u["v"] == v and u["e"] not in self.retired_recs:
                rec = self._w_recs.get(u["e"]) or self._repaired.get(u["e"]) or self.docs.get(REC + u["e"])
                self._w_recs[u["e"]] = {"p": self.partition, "shop": key, "r": [v, [], rec["r"][2]],
                                        "x": self._offset}
                self.retired_recs[u["e"]] = self._offset
            return
        if u["v"] <= v:
            return
        if u["v"] >> INCARNATION_SHIFT > v >> INCARNATION_SHIFT:
            items = {}  # a new life of a retired entity (its notice may come later): counted from nothing
        self.retired_recs.pop(u["e"], None)
        self._w_rdel.pop(u["e"], None)
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = self.logic.new_state(key)
        at = u["at"]
        if self.clock.events_advance:
            self.fire(at, False)
            if self.watermark is None or at > self.watermark:
                self.watermark = at
        new = {it[0]: tuple(it[1:]) for it in u["items"]}
        contribs: list = []
        diff_items(items, new, st.platform, st.shop_id, at, contribs)
        self.logic.on_contribs(st, contribs, self.fx)
        g = self.gen[key] = self.gen.get(key, 0) + 1
        # the previous version (what the shop document on the changelog counted) is added by drain()
        self._w_recs[u["e"]] = {"p": self.partition, "shop": key, "r": [u["v"], u["items"], g]}
        self._shop_stepped(key, st)

    def _shop_stepped(self, key, st) -> None:
        """After a shop's step (its contributions applied, or a timer fired): the step loop's hook."""
        self.timers.want("s", key, self.logic.timers(st))
        self._touched[key] = None
        self._out.changed.add(key)
        self._collect(key, self._out)

    def _collect(self, key, out: Outputs) -> None:
        if self.fx.alerts:
            box = self.outbox.setdefault(key, [])
            for a in self.fx.alerts:
                out.alerts.append(a)
                box.append([self._offset, a])
            self.fx.alerts.clear()
