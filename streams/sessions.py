"""Per-session logic: consultations (shop.chats, keyed by ``session_id``).

A session contributes to 小红书 ``reply_3min_rate``, 京东 ``reply_30s_rate``,
抖音 ``im_first_response_minutes`` and ``im_dissatisfaction_rate``. Items are
recomputed from the whole session (messages sorted by ``ts``), so arrival order
and duplicates do not matter.

Choices where the spec is silent:
- 京东 counts a consultation like 小红书 (closed, at least one buyer message)
  but at any hour; first response = first agent message after the first buyer
  message; none means not within 30 s.
- 抖音 first response is measured from ``chat.assigned`` to the first agent
  message after it, for assigned sessions with such a message (closed or not).
- A session rated more than once counts its earliest rating (same ``ts``: the
  smallest ``event_id``).
- Messages with the same ``ts`` are ordered buyer first, then by sender, whatever
  their arrival order (an agent message at the buyer's instant is a 0 s reply).
"""

from __future__ import annotations

from .clock import MINUTE_US, US, local_second_of_day
from .effects import Effects
from .entity import EntityDocuments, admit, update_items
from .orders import _PLATFORM_CODE, pack_ids, restore_head, time_at, time_offset

SERVICE_START_S = 9 * 3600
SERVICE_END_S = 22 * 3600 + 59 * 60 + 59

# A session's table document, format 1 (like an order's, streams/orders.py): a list
# [1, session_id, platform, shop_id, seen, first_us, ver, started_us, assigned_us,
# closed_us, msgs, rating], ``seen`` as ``orders.pack_ids`` writes it, instants but
# ``first_us`` as offsets from it, messages flat ([ts, sender, ts, sender, ...], each
# ts an offset from the previous one), trailing nulls left out, and no ``items``:
# ``SessionLogic.items`` of the other facts, recomputed by ``restore`` (which also
# takes the dict of the first documents).
DOC_FORMAT = 1
# short forms of format 1 (frozen: new values go at the end): a value here is stored as its
# index (the platforms: the table of the order documents)
_SENDERS = ("buyer", "agent", "bot", "system")
_SENDER_CODE = {v: i for i, v in enumerate(_SENDERS)}
_SESSION_FIELDS = 12


class SessionState(EntityDocuments):
    __slots__ = ("session_id", "platform", "shop_id", "seen", "first_us", "started_us", "assigned_us",
                 "closed_us", "msgs", "rating", "items", "ver")

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self._init_entity()
        self.started_us = None
        self.assigned_us = None
        self.closed_us = None
        self.msgs: list[list] = []  # [ts_us, sender]
        self.rating = None  # [ts_us, rating, event_id]
        self.items: dict[str, tuple] = {}
        self.ver = 0  # how many times the items changed: the version a shop has applied

    def snapshot(self) -> list:
        """The state as a table document, format 1 (see above); nothing in it is shared with the state."""
        b = self.first_us or 0
        p = self.platform
        d = [DOC_FORMAT, self.session_id, _PLATFORM_CODE.get(p, p), self.shop_id, pack_ids(self.seen),
             self.first_us, self.ver, time_offset(self.started_us, b), time_offset(self.assigned_us, b),
             time_offset(self.closed_us, b)]
        if self.msgs:
            flat = []
            prev = b
            code = _SENDER_CODE
            for ts, sender in self.msgs:
                flat += (ts - prev, code.get(sender, sender))
                prev = ts
            d.append(flat)
        else:
            d.append(None)
        r = self.rating
        d.append(None if r is None else [r[0] - b, r[1], r[2]])
        return self._trimmed(d)

    _key, _what, _format, _fields = "session_id", "session", DOC_FORMAT, _SESSION_FIELDS

    @classmethod
    def _restore_fields(cls, d: list) -> SessionState:
        _f, sid, p, shop_id, seen, first, ver, started, assigned, closed, flat, rating = d
        b = first or 0
        s = restore_head(cls, sid, p, shop_id, seen, first, ver)
        s.started_us = time_at(started, b)
        s.assigned_us = time_at(assigned, b)
        s.closed_us = time_at(closed, b)
        if flat:
            msgs = s.msgs
            ts = b
            for i in range(0, len(flat), 2):
                ts += flat[i]
                sender = flat[i + 1]
                msgs.append([ts, _SENDERS[sender] if type(sender) is int else sender])
        if rating is not None:
            s.rating = [rating[0] + b, rating[1], rating[2]]
        # the items the logic keeps (SessionLogic.items of these facts; none before the first event)
        s.items = SessionLogic.items(s) if ver else {}
        return s

    def snapshot_dict(self) -> dict:
        """The dict of the first documents (field names, items included), which ``restore`` still takes."""
        return self._dict_head()


def _msg_key(m: list) -> tuple:
    """Messages in time order; at one instant a buyer message comes first (so an agent message with the
    same ``ts`` answers it), then the others by sender: never by arrival."""
    return m[0], m[1] != "buyer", m[1]


def _min(a, b):
    return b if a is None or b < a else a


def reply_facts(msgs: list, closed_us: int) -> tuple[int | None, int | None, bool]:
    """(first response us, longest reply interval us, every turn answered) of sorted messages."""
    first_buyer = None
    first_resp = None
    longest = 0
    turn_start = None
    answered = True
    for ts, sender in msgs:
        if ts > closed_us:
            break
        if sender == "buyer":
            if first_buyer is None:
                first_buyer = ts
            if turn_start is None:
                turn_start = ts
                answered = False
        elif sender == "agent":
            if turn_start is not None:
                gap = ts - turn_start
                if first_resp is None:
                    first_resp = gap
                if gap > longest:
                    longest = gap
                turn_start = None
                answered = True
    return first_resp, longest, answered


class SessionLogic:
    has_timers = False  # ``timers`` is always empty: a shell may skip asking

    def __init__(self, rules) -> None:
        self.rules = rules

    new_state = SessionState

    def on_event(self, s: SessionState, ev: dict, fx: Effects) -> None:
        moved = admit(s, ev)  # whether first_us moved
        if moved is None:
            return
        ts = ev["ts_us"]
        step = ev["type"][5:]
        if step == "message":
            msgs = s.msgs
            sender = ev["sender"]
            if msgs:
                last = msgs[-1]
                # _msg_key(new) < _msg_key(last), without building the keys when the times differ
                out_of_order = ts < last[0] or (ts == last[0] and _msg_key([ts, sender]) < _msg_key(last))
            else:
                out_of_order = False
            msgs.append([ts, sender])
            if out_of_order:
                msgs.sort(key=_msg_key)
        elif step == "started":
            s.started_us = _min(s.started_us, ts)
        elif step == "assigned":
            s.assigned_us = _min(s.assigned_us, ts)
        elif step == "closed":
            s.closed_us = _min(s.closed_us, ts)
        elif step == "rated":
            eid = ev["event_id"]
            if s.rating is None or (ts, eid) < (s.rating[0], s.rating[2]):
                s.rating = [ts, ev["rating"], eid]
        if not moved:
            # the items cannot have changed when, besides "_seen", they are only built from
            # facts that are not all known yet (小红书, 京东: a started and closed session),
            # or from none at all (other platforms than 抖音)
            p = s.platform
            if p == "xiaohongshu" or p == "jd":
                if s.started_us is None or s.closed_us is None:
                    return
            elif p != "douyin":
                return
        update_items(s, self.items(s), ts, fx)

    def timers(self, s: SessionState) -> dict[str, int]:
        return {}

    def on_timer(self, s: SessionState, name: str, due_us: int, fx: Effects) -> None:
        return None

    @staticmethod
    def latest_us(s: SessionState):
        """The latest instant of the session's facts (streams/retention.py); None before its first event."""
        m = s.first_us
        if m is None:
            return None
        for v in (s.started_us, s.assigned_us, s.closed_us):
            if v is not None and v > m:
                m = v
        if s.msgs and s.msgs[-1][0] > m:  # (kept sorted by ts)
            m = s.msgs[-1][0]
        if s.rating is not None and s.rating[0] > m:
            m = s.rating[0]
        return m

    @staticmethod
    def items(s: SessionState) -> dict[str, tuple]:
        """The session's indicator items: a function of its facts alone (no rules), so a
        compact document leaves them out and ``SessionState.restore`` recomputes them."""
        p = s.platform
        out: dict[str, tuple] = {"_seen": ("_seen", s.first_us, s.first_us, 0)}
        if p in ("xiaohongshu", "jd"):
            start, closed = s.started_us, s.closed_us
            if start is not None and closed is not None and any(m[1] == "buyer" for m in s.msgs):
                first_resp, longest, answered = reply_facts(s.msgs, closed)
                if p == "xiaohongshu":
                    sec = local_second_of_day(start)
                    if SERVICE_START_S <= sec <= SERVICE_END_S:
                        queue = s.assigned_us - start if s.assigned_us is not None else 0
                        limit = 180 * US
                        good = (first_resp is not None and answered and queue <= limit
                                and first_resp <= limit and longest <= limit)
                        out["c"] = ("reply_3min_rate", start, 1 if good else 0, 1)
                else:
                    good = first_resp is not None and first_resp <= 30 * US
                    out["c"] = ("reply_30s_rate", start, 1 if good else 0, 1)
        elif p == "douyin":
            a = s.assigned_us
            if a is not None:
                first_agent = next((m[0] for m in s.msgs if m[1] == "agent" and m[0] >= a), None)
                if first_agent is not None:
                    out["fr"] = ("im_first_response_minutes", a, (first_agent - a) / MINUTE_US, 1)
            if s.rating is not None:
                out["rt"] = ("im_dissatisfaction_rate", s.rating[0], 1 if s.rating[1] <= 3 else 0, 1)
        return out
