"""The hot path's shortcuts agree with the plain ways they stand in for.

- ``parse_ts_us``: the integer fast path for canonical RFC 3339 timestamps gives
  exactly what the general path gives (fractions of 1-9 digits truncated to µs,
  any offset), and leaves everything else to it;
- ``validate``: the per-type fast validators accept exactly what the reference
  validators accept, with the same defaults in the same key order, and leave
  every reason to them;
- ``Engine``: skipping stale heap entries, unchanged timers, unchanged shop
  timers and unchanged indicator items changes no alert, snapshot, score or
  state: a plain loop (every popped entry to ``on_timer``, every step wanting
  all its timers) gives the same, and after every step each state's items are
  the ones ``items`` computes and ``_due`` is ``timers().get``.
"""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from core_helpers import streams, until_of
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shopwatch.agents import simulator as simulate
from shopwatch.schemas import events as E
from shopwatch.schemas.events import InvalidEvent, parse_ts_us, validate
from shopwatch.streams.replay_engine import ORDER, SESSION, SHOP, Engine, group_of

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- timestamps
def general(s):
    """(value, None) or (None, reason) of the general path."""
    try:
        return E._parse_ts_us_general(s), None
    except InvalidEvent as exc:
        return None, str(exc)


def public(s):
    try:
        return parse_ts_us(s), None
    except InvalidEvent as exc:
        return None, str(exc)


def two(lo: int, hi: int):
    return st.integers(lo, hi).map(lambda v: f"{v:02d}")


DIGITS = st.sampled_from("0123456789")
ODD_DIGITS = st.sampled_from("0123456789０٣²")  # fullwidth, Arabic-Indic, superscript: not ASCII digits


@st.composite
def timestamps(draw):
    """Strings near the canonical form: every part sometimes out of range or malformed."""
    year = draw(st.one_of(st.integers(0, 9999).map(lambda v: f"{v:04d}"), st.sampled_from(["２026", "026", "20266"])))
    month, day = draw(two(0, 13)), draw(two(0, 32))
    hour, minute, sec = draw(two(0, 25)), draw(two(0, 61)), draw(two(0, 61))
    sep = draw(st.sampled_from("TTTTt "))
    frac = draw(st.one_of(st.just(""), st.lists(DIGITS, min_size=1, max_size=10).map(lambda d: "." + "".join(d)),
                          st.lists(ODD_DIGITS, min_size=0, max_size=7).map(lambda d: "." + "".join(d))))
    off = draw(st.one_of(
        st.sampled_from(["Z", "Z", "z", "", "+08:00", "-00:00", "+8:00", "+0800", "+08:00:00"]),
        st.tuples(st.sampled_from("+-"), two(0, 25), two(0, 61)).map(lambda t: f"{t[0]}{t[1]}:{t[2]}")))
    tail = draw(st.sampled_from(["", "", "", "\n", " ", "x"]))
    return f"{year}-{month}-{day}{sep}{hour}:{minute}:{sec}{frac}{off}{tail}"


@SETTINGS
@given(s=timestamps())
@example(s="2026-10-01T00:00:15.769789+08:00")
@example(s="0001-01-01T00:00:00+23:59")
@example(s="9999-12-31T23:59:59.999999999-23:59")
@example(s="2024-02-29T12:00:00.5Z")
@example(s="2023-02-29T12:00:00Z")
@example(s="2026-10-01T24:00:00+08:00")
@example(s="2026-10-01T10:00:60+08:00")
@example(s="2026-10-01T10:00:00+24:00")
@example(s="2026-10-01T10:00:00.+08:00")
@example(s="2026-10-01T10:00:00.1234567890+08:00")
@example(s="2026-10-01T10:00:00+08:00\n")
@example(s="2026-10-01T10:00:00Z\n")
@example(s="1969-12-31T23:59:59.999999Z")
def test_fast_timestamp_path_agrees_with_the_general_one(s):
    fast = E._fast_ts_us(s)
    ref = general(s)
    if fast is not None:
        assert ref == (fast, None), s
    assert public(s) == ref, s


OFFSETS = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))


@SETTINGS
@given(dt=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)), tz=OFFSETS,
       digits=st.integers(0, 9), z=st.booleans(), data=st.data())
def test_canonical_timestamps_take_the_fast_path(dt, tz, digits, z, data):
    """Every canonical form: any valid date and time, 0-9 fraction digits, Z or any offset."""
    frac = "".join(data.draw(st.lists(DIGITS, min_size=digits, max_size=digits), label="fraction"))
    off = "Z" if z else dt.replace(tzinfo=tz).isoformat()[-6:]
    s = f"{dt.year:04d}-{dt:%m-%dT%H:%M:%S}" + ("." + frac if frac else "") + off
    us = E._fast_ts_us(s)
    assert us is not None, s
    assert (us, None) == general(s)
    # and the instant is the one the string names
    aware = dt.replace(microsecond=0, tzinfo=UTC if z else tz)
    expect = (aware - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert us == expect + (int((frac + "000000")[:6]) if frac else 0)


@SETTINGS
@given(s=st.one_of(timestamps(), st.datetimes(min_value=datetime(1999, 12, 30), max_value=datetime(2027, 1, 2)).map(
    lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%f") + "+08:00")), field=st.sampled_from(["ts", "promised_ship_by"]))
@example(s="2026-10-01T10:00:60.000000+08:00", field="ts")
@example(s="2026-10-01T10:00:59.999999+08:00", field="ts")
@example(s="2026-10-01T10:00:5x.000000+08:00", field="ts")
@example(s="2026-10-01T10:00:00.00000٣+08:00", field="ts")
@example(s="2026-10-01T10:00:00.000000+24:00", field="ts")
@example(s="2026-10-01T10:00:00.000000-23:59", field="ts")
@example(s="2026-10-01T10:00:00X000000+08:00", field="ts")
@example(s="2026-10-01T10:00:00.1234567+0800", field="ts")
@example(s="2026-10-01 10:00:00.000000+08:00", field="ts")
@example(s="2026-10-01T10:00:00.123456Z\n\n", field="ts")
def test_validate_reads_timestamps_like_the_general_path(s, field):
    """``validate`` parses ``ts`` inline: the same instants and reasons as parse_ts_us, any window."""
    ev = {"event_id": "e-1", "type": "order.paid", "ts": "2026-10-01T10:00:00+08:00", "platform": "jd",
          "shop_id": "s-1", "order_id": "o-1", "amount_fen": 1}
    ev[field] = s
    for window in ((None, None), (E.parse_ts_us("2026-12-01T00:00:00Z"), None),
                   (None, E.parse_ts_us("2026-10-01T00:00:00+08:00"))):
        got = run_validate(validate, ev, None, *window)
        assert got == run_validate(E._validate_reference, ev, None, *window)
        if got[0] == "valid" and field == "ts":
            assert dict(got[1])["ts_us"] == general(s)[0]


def test_prefix_cache_is_bounded():
    E._PREFIXES.clear()
    start = datetime(2026, 1, 1)
    for i in range(E._MAX_PREFIXES + 10):
        s = f"{start + timedelta(minutes=i):%Y-%m-%dT%H:%M}:00Z"
        assert E._fast_ts_us(s) == general(s)[0]
    assert len(E._PREFIXES) <= E._MAX_PREFIXES


# ---------------------------------------------------------------- validators
ID = st.sampled_from(["o-1", "x" * 128, "x" * 129, "x" * 64, "x" * 65, "", "ok\u3000id", "bad\x00id", "a\x85b",
                      "del\x7f", "订单-1", "tab\tid", "y", "\u00ad", "x" * 127 + "\x9f"])
ID_FIELDS = ("event_id", "shop_id", "order_id", "carrier", "tracking_no", "complaint_id", "refund_id", "session_id",
             "buyer_id", "agent_id")
ANY = st.one_of(st.none(), st.booleans(), st.integers(-2, 7), st.sampled_from([0.0, 0.5, 1.0, 1.5, -0.1]),
                ID, st.just([]), st.just({}), st.just(["x"]))
ENUMS = {
    "trade_type": E.TRADE_TYPES, "responsible": E.RESPONSIBLE, "kind": E.REFUND_KINDS,
    "status": E.CUSTOMS_STATUSES, "sender": E.SENDERS,
}
FIELDS = ("order_id", "amount_fen", "trade_type", "category", "cod", "virtual", "live", "presale",
          "promised_ship_by", "promised_ship_by_us", "carrier", "tracking_no", "no_logistics", "reason",
          "product_rating", "service_rating", "logistics_rating", "complaint_id", "responsible", "malicious",
          "location", "status", "refund_id", "kind", "no_return", "damage_ratio", "note", "session_id",
          "buyer_id", "agent_id", "sender", "rating")
GOOD = {
    "order_id": "o-1", "amount_fen": 100, "trade_type": "bonded", "category": "fresh", "cod": True,
    "carrier": "SF", "tracking_no": "SF1", "no_logistics": False, "product_rating": 4, "service_rating": 5,
    "complaint_id": "c-1", "responsible": "merchant", "malicious": False, "location": "杭州", "status": "held",
    "refund_id": "r-1", "kind": "return_refund", "damage_ratio": 0.2, "note": "n", "session_id": "s-1",
    "buyer_id": "b-1", "agent_id": "a-1", "sender": "buyer", "rating": 2,
}


# the fields each type's validator looks at, with a valid value
TYPE_FIELDS = {
    "order.paid": ("order_id", "amount_fen", "trade_type", "category", "cod", "virtual", "live", "presale",
                   "promised_ship_by", "promised_ship_by_us"),
    "order.shipped": ("order_id", "carrier", "tracking_no", "no_logistics"),
    "order.cancelled": ("order_id", "reason"),
    "review.posted": ("order_id", "product_rating", "service_rating", "logistics_rating"),
    "complaint.filed": ("order_id", "complaint_id"),
    "complaint.judged": ("order_id", "complaint_id", "responsible", "malicious"),
    "shipment.customs": ("order_id", "tracking_no", "location", "status"),
    "shipment.exception": ("order_id", "tracking_no", "location", "reason"),
    "refund.requested": ("order_id", "refund_id", "kind", "reason", "amount_fen", "no_return", "damage_ratio"),
    "refund.rejected": ("order_id", "refund_id", "note"),
    "refund.return_shipped": ("order_id", "refund_id", "tracking_no"),
    "refund.judged": ("order_id", "refund_id", "responsible"),
    "refund.completed": ("order_id", "refund_id", "amount_fen"),
    "chat.started": ("session_id", "buyer_id"),
    "chat.assigned": ("session_id", "agent_id"),
    "chat.message": ("session_id", "sender"),
    "chat.rated": ("session_id", "rating"),
}
for _t in E.EVENT_TYPES:
    TYPE_FIELDS.setdefault(_t, ("order_id", "tracking_no", "location") if _t.startswith("shipment.")
                           else ("order_id", "refund_id") if _t.startswith("refund.") else ("session_id",))
VALID = GOOD | {"reason": "damaged", "presale": {"ship_by": "2026-10-05"}, "logistics_rating": 3}
EXC_VALID = {"shipment.exception": "lost", "order.cancelled": "buyer changed mind"}
BAD = {
    "reason": st.sampled_from(["quality", "lost", "nope", 3]),
    "presale": st.sampled_from([{"ship_by": "2026-10-05"}, {"ship_within_days": 3}, {"ship_by": "2028-01-01"},
                                {"ship_within_days": 400}, {"ship_within_days": -1}, {"ship_by": "2026-02-30"},
                                {"ship_by": "2026-10-05", "ship_within_days": 1}, {}, "2026-10-05"]),
    "promised_ship_by": st.sampled_from(["2026-10-03T10:00:00+08:00", "2028-10-03T10:00:00+08:00",
                                         "1999-10-03T10:00:00+08:00", "2026-10-03T10:00:00", "soon", 5]),
    "promised_ship_by_us": st.integers(0, 5),
}


@st.composite
def raw_events(draw):
    """A valid event of some type, with a few fields changed (removed, null, or a boundary or wrong value)."""
    t = draw(st.sampled_from(sorted(E.EVENT_TYPES)))
    ev = {"event_id": "e-1", "type": t, "ts": "2026-10-01T10:00:00.250+08:00", "platform": "douyin",
          "shop_id": "s-1"}
    for f in TYPE_FIELDS[t]:
        if draw(st.integers(0, 2)):  # sometimes absent: optional ones take their defaults
            ev[f] = EXC_VALID.get(t, VALID.get(f)) if f == "reason" else VALID.get(f)
    ev = {k: v for k, v in ev.items() if v is not None or draw(st.booleans())}
    for _ in range(draw(st.integers(0, 2))):
        f = draw(st.sampled_from(("event_id", "ts", "platform", "shop_id", "type") + TYPE_FIELDS[t] * 3 + FIELDS))
        how = draw(st.integers(0, 5))
        if how == 0:
            ev.pop(f, None)
        elif how == 1:
            ev[f] = None
        elif f in ENUMS and how == 2:
            ev[f] = draw(st.sampled_from(ENUMS[f]))
        elif f in BAD and how <= 3:
            ev[f] = draw(BAD[f])
        elif f == "ts":
            ev[f] = draw(st.one_of(timestamps(), st.sampled_from(["1999-12-31T23:59:59+08:00",
                                                                   "2099-01-01T00:00:00+08:00"])))
        elif f == "platform":
            ev[f] = draw(st.sampled_from(E.PLATFORMS + ("amazon", "", 3)))
        elif f in ID_FIELDS and how <= 4:
            ev[f] = draw(ID)
        elif f == "type":
            ev[f] = draw(st.sampled_from([None, 1, ["order.paid"], "order.unknown", "chat.message"]))
        else:
            ev[f] = draw(ANY)
    return ev


def run_validate(fn, ev, *args):
    ev = copy.deepcopy(ev)
    try:
        out = fn(ev, *args)
    except InvalidEvent as exc:
        return "invalid", str(exc), list(ev.items()) if isinstance(ev, dict) else ev
    assert out is ev
    return "valid", list(out.items())


@pytest.mark.slow
@settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ev=raw_events(), topic=st.sampled_from([None, None, E.TOPIC_ORDERS, E.TOPIC_CHATS]),
       max_ts=st.sampled_from([None, E.parse_ts_us("2026-12-01T00:00:00+08:00")]),
       min_ts=st.sampled_from([None, E.parse_ts_us("2026-10-01T10:00:00+08:00")]))
def test_fast_validators_agree_with_the_reference(ev, topic, max_ts, min_ts):
    """Same verdict, same reason, same event afterwards (values and key order), valid or not."""
    assert run_validate(validate, ev, topic, max_ts, min_ts) == \
        run_validate(E._validate_reference, ev, topic, max_ts, min_ts)


VALUES = [None, True, False, 0, 1, 2, 5, 6, -1, 0.0, 0.5, 1.0, 1.5, "", "y", "x" * 64, "x" * 65, "x" * 128,
          "x" * 129, "bad\x00id", "a\x85b", "del\x7f", "\u00ad", "订单", [], {}, ["x"], {"ship_by": "2026-10-05"},
          {"ship_within_days": 400}, "2026-10-03T10:00:00+08:00", "2028-10-03T10:00:00+08:00"]
VALUES += sorted({v for vs in ENUMS.values() for v in vs} | set(E.REFUND_REASONS) | set(E.EXCEPTION_REASONS))


@pytest.mark.parametrize("t", sorted(E.EVENT_TYPES))
def test_every_single_field_change_is_judged_alike(t):
    """Exhaustively: a valid event of each type with one field absent, or set to each of many values."""
    base = {"event_id": "e-1", "type": t, "ts": "2026-10-01T10:00:00.250+08:00", "platform": "douyin",
            "shop_id": "s-1"}
    for f in TYPE_FIELDS[t]:
        v = EXC_VALID.get(t, VALID.get(f)) if f == "reason" else VALID.get(f)
        if v is not None:
            base[f] = v
    assert run_validate(validate, base)[0] == "valid"
    for f in ("event_id", "ts", "platform", "shop_id") + TYPE_FIELDS[t]:
        for v in VALUES + ["absent"]:
            ev = dict(base)
            if v == "absent":
                ev.pop(f, None)
            else:
                ev[f] = v
            for args in ((), (E.TOPIC_OF_TYPE[t],), (E.TOPIC_CHATS,)):
                assert run_validate(validate, ev, *args) == run_validate(E._validate_reference, ev, *args), (f, v)


def test_every_type_has_a_fast_validator_that_takes_the_common_case():
    assert E._FAST.keys() == E.EVENT_TYPES.keys()
    seen = set()
    for _kind, _, _, b in simulate.records(seed=3, shops=5, days=3, orders_per_shop_day=20, dirty=0.0):
        ev = orjson.loads(b)
        t = ev["type"]
        fast = E._FAST[t]
        assert fast(copy.deepcopy(ev), ev["event_id"] + ev["shop_id"], parse_ts_us(ev["ts"])), ev  # the fast way
        seen.add(t)
    assert len(seen) > 15


def test_simulated_records_decode_alike_on_both_paths():
    for _kind, topic, _, b in simulate.records(seed=11, shops=6, days=3, orders_per_shop_day=25, dirty=0.2):
        try:
            ev = orjson.loads(b)
        except orjson.JSONDecodeError:
            continue
        for args in ((None, None, None), (topic, None, None)):
            assert run_validate(validate, ev, *args) == run_validate(E._validate_reference, ev, *args)


# ---------------------------------------------------------------- engine
class PlainEngine(Engine):
    """The engine's loop without its shortcuts, checking the logic's after every step."""

    def process(self, ev: dict) -> None:
        ts = ev["ts_us"]
        self.advance(ts, inclusive=False)
        self.clock.observe(ts)
        group = group_of(ev)
        key = ev["session_id"] if group == SESSION else ev["order_id"]
        states, logic = self.states[group], self.logic[group]
        st_ = states.get(key)
        if st_ is None:
            st_ = states[key] = logic.new_state(key)
        logic.on_event(st_, ev, self.fx)
        self._check(group, st_)
        self.timers.want(group, key, logic.timers(st_))
        self._plain_drain()

    def advance(self, limit_us: int, inclusive: bool) -> None:
        for group, key, name, due in self.timers.pop_due(limit_us, inclusive):
            st_ = self.states[group].get(key)
            if st_ is None:
                continue
            logic = self.logic[group]
            logic.on_timer(st_, name, due, self.fx)
            self._check(group, st_)
            self.timers.want(group, key, logic.timers(st_))
            self._plain_drain()

    def _check(self, group: str, st_) -> None:
        logic = self.logic[group]
        if group != SHOP:
            assert st_.items == logic.items(st_)  # items skipped only when they could not change
        if group == ORDER:
            wanted = logic.timers(st_)
            for name, due in wanted.items():
                assert logic._due(st_, name) == due
            for name in ("ship_overdue", "transit_timeout", "refund_response_warning|r0", "cod_proof_overdue|zz"):
                assert logic._due(st_, name) == wanted.get(name)
        if group == SESSION:
            assert logic.timers(st_) == {}

    def _plain_drain(self) -> None:
        fx = self.fx
        shops, shop_logic = self.states[SHOP], self.logic[SHOP]
        touched = set()
        for c in fx.contribs:
            k = (c[0], c[1])
            if k not in shops:
                shops[k] = shop_logic.new_state(k)
            shop_logic.on_contrib(shops[k], c, fx)
            touched.add(k)
        fx.contribs.clear()
        for k in touched:
            self.timers.want(SHOP, k, shop_logic.timers(shops[k]))
        self.alerts.extend(fx.alerts)
        fx.alerts.clear()
        self.snapshots.extend(fx.snapshots)
        fx.snapshots.clear()


def states_of(eng: Engine):
    return {g: {k: orjson.dumps(s.snapshot(), option=orjson.OPT_NON_STR_KEYS) for k, s in sts.items()}
            for g, sts in eng.states.items()}


def both(evs, until, cut=None):
    out = []
    for cls in (Engine, PlainEngine):
        eng = cls(until_us=cut)
        for ev in evs:
            eng.process(validate(copy.deepcopy(ev)))
        eng.finish(until)
        out.append((eng.alerts, eng.snapshots, eng.scores(), states_of(eng)))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(evs=streams(), data=st.data())
def test_engine_shortcuts_change_nothing(evs, data):
    if data.draw(st.booleans(), label="shuffled"):
        evs = data.draw(st.permutations(evs), label="arrival order")
    until = until_of(evs)
    cut = data.draw(st.sampled_from([None, until - 29 * 86_400_000_000]), label="cut")
    fast, plain = both(evs, until, cut)
    assert fast == plain


@pytest.mark.parametrize("seed,shuffle", [(1, False), (2, True), (5, False)])
def test_engine_shortcuts_change_nothing_on_a_simulated_run(seed, shuffle):
    evs = []
    for _kind, _, _, b in simulate.records(seed=seed, shops=6, days=6, orders_per_shop_day=15, dirty=0.02):
        try:
            evs.append(E.decode(b))
        except InvalidEvent:
            pass
    if shuffle:
        random.Random(seed).shuffle(evs)
    until = max(e["ts_us"] for e in evs)
    fast, plain = both(evs, until + 40 * 86_400_000_000, cut=until - 86_400_000_000)
    assert fast[0] and fast == plain
