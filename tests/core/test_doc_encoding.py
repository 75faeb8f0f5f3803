"""The compact table documents (issue 11, "changelog <= 300 B per input event").

An order's and a chat session's state document is a list of format 1
(streams/orders.py, streams/sessions.py: positions instead of field names,
instants as offsets, no indicator items), and a keyed partition's document keeps
its queued events and its outbox in short forms (streams/partition.py). In a
time-sorted backfill about one document is written per input record, so the size
of these documents is the changelog's cost. Checked here:

- a JSON round trip gives back the same state, every slot (the items ``restore``
  recomputes, a refund's ``t``, the alert ids of open alerts too), and the same
  document; format 1 itself is frozen by a literal document;
- the dict documents of earlier workers (existing RocksDB tables and changelogs)
  still restore, to the same state as the new form;
- a keyed partition recovers the same queued records, outbox and states from its
  new documents as from the documents earlier workers wrote;
- the documents are small (the bounds are justified at the test).
"""

from __future__ import annotations

import random
import statistics

import orjson
import pytest
from core_helpers import HOUR, MINUTE, Shop, local, run, streams
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shopwatch.agents.simulator import generate
from shopwatch.schemas.events import TOPIC_CHATS, TOPIC_OF_TYPE, fmt_us, validate
from shopwatch.streams.clock import EVENT
from shopwatch.streams.orders import DOC_FORMAT, OrderLogic, OrderState, Refund, pack_ids, unpack_ids
from shopwatch.streams.partition import KeyedPartition, pack_event, unpack_event
from shopwatch.streams.replay_engine import Engine
from shopwatch.streams.rules import Rules
from shopwatch.streams.sessions import SessionState

T0 = local(2026, 10, 1, 10)
ORDER_SOURCES = ["shop.orders", "shop.shipments", "shop.refunds"]
TICKS = "shop.ticks"  # not a source of the partition: its outputs keep the topic's name
PROP = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def json(x):
    """What a table or changelog gives back: the document through JSON (Faust's codec is orjson)."""
    return orjson.loads(orjson.dumps(x))


def slots(s) -> dict:
    """Every slot of a state (refunds by their slots): what "the same state" means."""
    d = {k: getattr(s, k) for k in s.__slots__}
    if "refunds" in d:
        d["refunds"] = {k: {f: getattr(r, f) for f in Refund.__slots__} for k, r in s.refunds.items()}
    return d


# ------------------------------------------------------------- a simulated run

@pytest.fixture(scope="module")
def sim():
    """Four days of ten shops (37k events), every state as of the last event (open alerts included)."""
    evs = [validate(json(e)) for e in generate(seed=11, shops=10, days=4)]
    eng = Engine()
    for e in evs:
        eng.process(e)
    eng.finish(evs[-1]["ts_us"])
    return evs, eng


def test_every_state_of_a_simulated_run_survives_a_json_round_trip(sim):
    _evs, eng = sim
    seen = {"refund": 0, "complaint": 0, "review": 0, "numbered open": 0, "count": 0, "done": 0, "rating": 0,
            "messages": 0}
    for cls, states in ((OrderState, eng.states["order"]), (SessionState, eng.states["session"])):
        assert states
        for st_ in states.values():
            doc = st_.snapshot()
            assert type(doc) is list and doc[0] == DOC_FORMAT
            raw = orjson.dumps(doc)
            back = cls.restore(orjson.loads(raw))
            assert slots(back) == slots(st_)
            assert orjson.dumps(back.snapshot()) == raw
            if cls is OrderState:
                seen["refund"] += len(st_.refunds)
                seen["complaint"] += len(st_.complaints)
                seen["review"] += st_.review is not None
                seen["numbered open"] += sum(1 for k in st_.open if k.split("|")[0] in ("transit_timeout",
                                                                                         "delivery_timeout"))
                seen["count"] += len(st_.count)
                seen["done"] += len(st_.done)
            else:
                seen["rating"] += st_.rating is not None
                seen["messages"] += len(st_.msgs)
    assert all(seen.values()), seen  # the run exercises every part of the documents


def test_documents_of_earlier_workers_restore_to_the_same_state(sim):
    """Every state of the run in the dict form of the first documents (field names, items stored)."""
    _evs, eng = sim
    for cls, states in ((OrderState, eng.states["order"]), (SessionState, eng.states["session"])):
        for st_ in states.values():
            old, new = json(st_.snapshot_dict()), json(st_.snapshot())
            assert type(old) is dict and "items" in old and type(new) is list
            from_old = cls.restore(old)
            assert slots(from_old) == slots(st_) == slots(cls.restore(new))
            assert from_old.snapshot() == new


# --------------------------------------------------------- one order with every fact

def full_events() -> list:
    """One 小红书 order with every fact an order state keeps, and one 抖音 chat session."""
    sh = Shop("xiaohongshu", "s-doc")
    evs = [
        # an event id with a space: ``seen`` is then stored as a list
        sh.paid("o-full", T0, amount_fen=12_900, category="fresh", cod=True, live=True, trade_type="bonded",
                event_id="ev 1"),
        sh.shipped("o-full", T0 + 50 * HOUR, carrier="SF", tracking_no="SF100200300", event_id="ev-2"),
        sh.scan("picked_up", "o-full", T0 + 51 * HOUR, event_id="ev-3"),
        sh.scan("customs", "o-full", T0 + 52 * HOUR, status="held", event_id="ev-4"),
        sh.scan("exception", "o-full", T0 + 53 * HOUR, reason="lost", event_id="ev-5"),
        sh.scan("out_for_delivery", "o-full", T0 + 60 * HOUR, event_id="ev-6"),
        sh.scan("fake_flagged", "o-full", T0 + 61 * HOUR, event_id="ev-7"),
        sh.scan("signed", "o-full", T0 + 62 * HOUR, event_id="ev-8"),
        sh.review("o-full", T0 + 70 * HOUR, product=2, service=4, event_id="ev-9"),
        sh.complaint("o-full", "c-1", T0 + 71 * HOUR, event_id="ev-10"),
        sh.judged("o-full", "c-1", T0 + 80 * HOUR, responsible="merchant", malicious=True, event_id="ev-11"),
        sh.requested("o-full", "r-1", T0 + 63 * HOUR, kind="return_refund", reason="spoiled", amount_fen=12_900,
                     damage_ratio=0.25, event_id="ev-12"),
        sh.refund("approved", "o-full", "r-1", T0 + 64 * HOUR, event_id="ev-13"),
        sh.refund("return_shipped", "o-full", "r-1", T0 + 65 * HOUR, event_id="ev-14"),
        sh.refund("judged", "o-full", "r-1", T0 + 66 * HOUR, responsible="both", event_id="ev-15"),
        sh.requested("o-full", "r-2", T0 + 90 * HOUR, kind="refund_only", reason="other", amount_fen=100,
                     event_id="ev-16"),
        sh.cancelled("o-full", T0 + 95 * HOUR, event_id="ev-17"),
    ]
    dy = Shop("douyin", "s-doc")
    evs += [dy.chat("started", "c-s", T0, event_id="ev-18"),
            dy.ev("chat.message", T0 + MINUTE, session_id="c-s", sender="buyer", event_id="ev-19"),
            dy.chat("assigned", "c-s", T0 + MINUTE, event_id="ev-20"),
            dy.ev("chat.message", T0 + 2 * MINUTE, session_id="c-s", sender="agent", event_id="ev-21"),
            dy.ev("chat.message", T0 + 2 * MINUTE, session_id="c-s", sender="bot", event_id="ev-22"),
            dy.chat("closed", "c-s", T0 + HOUR, event_id="ev-23"),
            dy.chat("rated", "c-s", T0 + 2 * HOUR, rating=2, event_id="ev-24")]
    return evs


# What the first workers wrote for these two states (the code before format 1).
OLD_ORDER = orjson.loads(
    '{"order_id":"o-full","platform":"xiaohongshu","shop_id":"s-doc","seen":["ev 1","ev-10","ev-11","ev-12",'
    '"ev-13","ev-14","ev-15","ev-16","ev-17","ev-2","ev-3","ev-4","ev-5","ev-6","ev-7","ev-8","ev-9"],'
    '"first_us":1790820000000000,"paid":{"amount_fen":12900,"trade_type":"bonded","category":"fresh",'
    '"cod":true,"virtual":false,"live":true},"paid_us":1790820000000000,"lst_us":1791079200000000,'
    '"due_passed":true,"shipped_us":1791000000000000,"carrier":"SF","tracking_no":"SF100200300",'
    '"no_logistics":false,"cancelled_us":1791162000000000,"fake_us":1791039600000000,'
    '"first_scan_us":1791003600000000,"last_scan_us":1791043200000000,"scans":5,'
    '"last_ofd_us":1791036000000000,"signed_us":1791043200000000,"review":[1791072000000000,2,4,"ev-9"],'
    '"complaints":{"c-1":[1791075600000000,1791108000000000,"merchant",true,"ev-11"]},'
    '"refunds":{"r-1":{"rid":"r-1","kind":"return_refund","reason":"spoiled","no_return":false,"amount":12900,'
    '"damage_ratio":0.25,"t":{"requested":1791046800000000,"approved":1791050400000000,'
    '"return_shipped":1791054000000000,"judged":1791057600000000},"seq":[[1791046800000000,"requested"],'
    '[1791050400000000,"approved"],[1791054000000000,"return_shipped"],[1791057600000000,"judged"]],'
    '"responsible":"both","judged_us":1791057600000000,"judged_eid":"ev-15"},"r-2":{"rid":"r-2",'
    '"kind":"refund_only","reason":"other","no_return":false,"amount":100,"damage_ratio":null,'
    '"t":{"requested":1791144000000000},"seq":[[1791144000000000,"requested"]],"responsible":null,'
    '"judged_us":null,"judged_eid":null}},"open":{"fresh_claim|r-1":"fresh_claim:xiaohongshu:r-1"},'
    '"count":{"customs_exception|o-full":1,"carrier_exception|o-full":1},'
    '"done":["fresh_claim|r-1","ship_warning|o-full"],"marks":{"customs_exception":2,"carrier_exception":3},'
    '"items":{"_seen":["_seen",1790820000000000,1790820000000000,0],'
    '"ots":["on_time_ship_rate",1791079200000000,1,1],"pts":["pay_to_sign_hours",1791043200000000,62.0,1],'
    '"pts.tt":["pay_to_sign_hours.bonded",1791043200000000,62.0,1],"rev":["review_avg",1791043200000000,2,1],'
    '"qrr":["quality_refund_rate",1791043200000000,1,1],"cr":["complaint_rate",1791043200000000,0,1]},"ver":7}')
OLD_SESSION = orjson.loads(
    '{"session_id":"c-s","platform":"douyin","shop_id":"s-doc","seen":["ev-18","ev-19","ev-20","ev-21",'
    '"ev-22","ev-23","ev-24"],"first_us":1790820000000000,"started_us":1790820000000000,'
    '"assigned_us":1790820060000000,"closed_us":1790823600000000,"msgs":[[1790820060000000,"buyer"],'
    '[1790820120000000,"agent"],[1790820120000000,"bot"]],"rating":[1790827200000000,2,"ev-24"],'
    '"items":{"_seen":["_seen",1790820000000000,1790820000000000,0],'
    '"fr":["im_first_response_minutes",1790820060000000,1.0,1],'
    '"rt":["im_dissatisfaction_rate",1790827200000000,1,1]},"ver":3}')
# Format 1 of the same states: frozen (a change of format 1 breaks the documents already written).
NEW_ORDER = orjson.loads(
    '[1,"o-full",0,"s-doc",["ev 1","ev-10","ev-11","ev-12","ev-13","ev-14","ev-15","ev-16","ev-17","ev-2",'
    '"ev-3","ev-4","ev-5","ev-6","ev-7","ev-8","ev-9"],1790820000000000,7,[12900,1,"fresh",5],0,259200000000,1,'
    '180000000000,"SF","SF100200300",0,183600000000,223200000000,5,216000000000,223200000000,342000000000,'
    '219600000000,[252000000000,2,4,"ev-9"],["c-1",255600000000,288000000000,"merchant",true,"ev-11"],'
    '[["r-1",1,4,0,12900,0.25,[226800000000,0,230400000000,1,234000000000,3,237600000000,7],2,237600000000,'
    '"ev-15"],["r-2",0,9,0,100,null,[324000000000,0]]],["fresh_claim|r-1"],'
    '{"customs_exception":1,"carrier_exception":1},["fresh_claim|r-1","ship_warning"],'
    '{"customs_exception":2,"carrier_exception":3}]')
NEW_SESSION = orjson.loads(
    '[1,"c-s",1,"s-doc","ev- 18 19 20 21 22 23 24",1790820000000000,3,0,60000000,3600000000,'
    '[60000000,0,60000000,1,0,2],[7200000000,2,"ev-24"]]')


def _full_states():
    eng = run(full_events(), until=T0 + 100 * HOUR)
    return eng.states["order"]["o-full"], eng.states["session"]["c-s"]


def test_a_state_with_every_fact_and_format_1_is_frozen():
    order, session = _full_states()
    assert all(v not in (None, {}, set(), 0, False) for k, v in slots(order).items() if k != "no_logistics")
    for st_, new in ((order, NEW_ORDER), (session, NEW_SESSION)):
        assert json(st_.snapshot()) == new
        back = type(st_).restore(new)
        assert slots(back) == slots(st_)
        assert type(st_).restore(json(st_.snapshot_dict())).snapshot() == new


def test_the_dict_documents_of_earlier_workers_restore_to_the_same_state():
    order, session = _full_states()
    for st_, old, new in ((order, OLD_ORDER, NEW_ORDER), (session, OLD_SESSION, NEW_SESSION)):
        assert json(st_.snapshot_dict()) == old  # the old form, field for field
        from_old, from_new = type(st_).restore(old), type(st_).restore(new)
        assert slots(from_old) == slots(from_new) == slots(st_)
        assert json(from_old.snapshot()) == new


def test_the_open_alert_id_is_kept_when_it_is_not_the_one_its_key_makes():
    order, _ = _full_states()
    order.open["fresh_claim|r-1"] = "fresh_claim:xiaohongshu:r-1:legacy"
    order.open["transit_timeout|o-full"] = "transit_timeout:xiaohongshu:o-full:1"
    order.count["transit_timeout|o-full"] = 1
    doc = json(order.snapshot())
    assert ["fresh_claim|r-1", "fresh_claim:xiaohongshu:r-1:legacy"] in doc[25] and "transit_timeout" in doc[25]
    assert slots(OrderState.restore(doc)) == slots(order)


# ----------------------------------------------------------------- properties

@PROP
@given(evs=streams(), cut=st.integers(0, 40))
def test_states_of_generated_streams_round_trip(evs, cut):
    """One order and one chat session of a shop (tests/core/test_properties.py), restored after a prefix."""
    eng = Engine()
    for e in evs[:cut]:
        eng.process(validate(dict(e)))
    for group in ("order", "session"):
        for st_ in eng.states[group].values():
            doc = json(st_.snapshot())
            assert type(doc) is list
            back = type(st_).restore(doc)
            assert slots(back) == slots(st_)
            assert slots(type(st_).restore(json(st_.snapshot_dict()))) == slots(st_)
            assert json(back.snapshot()) == doc


@PROP
@given(ids=st.sets(st.text(st.sampled_from("ab 1é|"), max_size=5), max_size=8))
def test_sets_of_ids_round_trip(ids):
    packed = json(pack_ids(ids))
    assert unpack_ids(packed) == ids
    if ids and not any(" " in i for i in ids):
        assert type(packed) is str


_STATE = OrderState("o-1")
_STATE.platform, _STATE.shop_id = "douyin", "s-1"


@PROP
@given(data=st.data())
def test_queued_events_round_trip(data):
    """Any event dict, in a document with or without a state (whose platform and shop may be the event's)."""
    draw = data.draw
    ts_us = draw(st.integers(946_656_000_000_000, 2_000_000_000_000_000))
    ev = {"event_id": draw(st.text(max_size=4)),
          "type": draw(st.sampled_from(["order.paid", "shipment.signed", "chat.message", "x.unknown"])),
          "ts": draw(st.sampled_from([fmt_us(ts_us), "not a time", fmt_us(ts_us + 1)])), "ts_us": ts_us,
          "platform": draw(st.sampled_from(["douyin", "jd", None])),
          "shop_id": draw(st.sampled_from(["s-1", "s-2", None]))}
    for f in ("order_id", "session_id", "amount_fen", "ts_us_extra"):
        if draw(st.booleans()):
            ev[f] = draw(st.sampled_from(["o-1", "o-2", 5, None]))
    for f in ("event_id", "type", "platform", "shop_id", "ts_us"):
        if draw(st.integers(0, 9)) == 0:
            del ev[f]
    state = draw(st.sampled_from([None, _STATE]))
    packed = json(pack_event(ev, "o-1", state))
    assert unpack_event(packed, "o-1", state) == ev
    complete = all(ev.get(f) is not None for f in ("event_id", "type", "platform", "shop_id", "ts_us"))
    assert (type(packed) is list) == complete  # the short form, unless a field it names is missing


# ------------------------------------------------------------ keyed partitions

def _order_events(evs):
    return [e for e in evs if TOPIC_OF_TYPE[e["type"]] != TOPIC_CHATS]


def _feed(kp, evs, rng, after_batch=None, stop=None):
    """The order events of ``evs`` on one partition, source by source in batches of random size
    (one topic runs ahead of the others, so records queue in the merge), a tick now and then
    (some releasing everything queued: outputs caused by a tick). Returns the positions read
    (the ticks' too); with ``stop``, ends after that many records with the last batch taken
    from the source furthest ahead, no tick after it: records are queued."""
    queues = {s: [e for e in evs if TOPIC_OF_TYPE[e["type"]] == s] for s in ORDER_SOURCES}
    pos = dict.fromkeys([*ORDER_SOURCES, TICKS], 0)
    n = 0

    def idle():
        return frozenset(s for s in ORDER_SOURCES if pos[s] >= len(queues[s]))

    while True:
        ready = [s for s in ORDER_SOURCES if pos[s] < len(queues[s])]
        if not ready:
            return pos
        last = stop is not None and n >= stop
        src = max(ready, key=lambda s: kp.merger.last.get(s, 0)) if last else rng.choice(ready)
        for _ in range(40 if last else rng.choice([1, 20, 150])):
            off = pos[src]
            if off >= len(queues[src]):
                break
            pos[src] = off + 1
            n += 1
            kp.on_record(src, off, dict(queues[src][off]), idle=idle())
        if last:
            return pos
        if rng.random() < 0.3:
            kp.on_tick(TICKS, pos[TICKS], None, flush=rng.random() < 0.2, idle=idle())
            pos[TICKS] += 1
        if after_batch is not None:
            after_batch(pos)


def _partition(committed):
    return KeyedPartition(OrderLogic(Rules()), 0, ORDER_SOURCES, EVENT, key_of=lambda ev: ev["order_id"],
                          kind="orders", committed=committed)


def _old_documents(kp, keys) -> dict:
    """The documents the drain of earlier workers wrote for the same partition."""
    out = {}
    for key in keys:
        st_, q, box = kp.states.get(key), kp.pending.get(key), kp.outbox.get(key)
        out[key] = json({"p": kp.partition, "s": st_.snapshot_dict() if st_ is not None else None,
                         "q": q or [], "o": box or []})
    return out


def test_keyed_documents_recover_the_same_queued_records_outbox_and_states(sim):
    evs, _eng = sim
    kp = _partition(lambda src: None)  # nothing committed: the outbox keeps every output
    _feed(kp, _order_events(evs), random.Random(3), stop=9_000)
    new = {k: json(d) for k, d in kp.drain() if d is not None}
    assert set(new) == set(kp.states) | set(kp.pending) | set(kp.outbox)
    # the run exercised every short form
    entries = [e for d in new.values() for e in d.get("o", ())]
    assert {3, 4, 5} <= {len(e) for e in entries}  # own version, an alert, an earlier version
    assert {type(e[0]) for e in entries} == {int, str}  # a source and the tick topic
    queued = [r[2] for d in new.values() for r in d.get("q", ())]
    assert queued and all(type(ev) is list for ev in queued)
    assert {ev[3] is None for ev in queued} == {True, False}  # with and without the state's platform
    old = _old_documents(kp, list(new))

    def recovered(docs, committed):
        kp2 = _partition(committed)
        out = kp2.recover(list(docs.items()))
        return kp2, out

    for committed, part in ((lambda src: None, "outbox"), (lambda src: 10**12, "pending")):
        a, out_a = recovered(new, committed)
        b, out_b = recovered(old, committed)
        want = getattr(kp, part)
        assert want and getattr(a, part) == want == getattr(b, part)
        assert (out_a.alerts, out_a.updates) == (out_b.alerts, out_b.updates)
        assert sorted(a.timers.heap) == sorted(b.timers.heap)
        for key, st_ in kp.states.items():
            assert slots(OrderState.restore(new[key]["s"])) == slots(st_)


# ------------------------------------------------------------------- sizes

def test_documents_are_small(sim):
    """The mean document size of the run, against bounds the old encoding is far above.

    A state: a busy order holds ~6 event ids (~45 B with their common prefix
    written once), ~10 instants as offsets (~12 B each), its own, shop and
    tracking ids (~40 B), the order.paid facts (~20 B), small counts and flags:
    ~190 B measured, bound 260 B (the dicts with field names and stored items of
    the first documents: ~890 B for orders, ~625 B for sessions). A keyed
    partition's document (key included), written once per commit as the worker
    does (here every ~500 records, each commit then committing what was read):
    the state plus queued events and outputs since the last commit, ~300 B
    measured, bound 400 B (~1,200 B with whole events, whole updates and the
    states' dicts)."""
    _evs, eng = sim
    for group in ("order", "session"):
        sizes = [len(orjson.dumps(s.snapshot())) for s in eng.states[group].values()]
        old = statistics.mean(len(orjson.dumps(s.snapshot_dict())) for s in eng.states[group].values())
        assert statistics.mean(sizes) < 260 < old / 2, (group, statistics.mean(sizes), old)

    committed: dict = {}
    kp = _partition(committed.get)
    docs = []

    def commit(pos, force=False):
        if force or sum(pos[s] - committed.get(s, 0) for s in ORDER_SOURCES) >= 500:
            docs.extend(len(k) + len(orjson.dumps(d)) for k, d in kp.drain() if d is not None)
            committed.update(pos)

    pos = _feed(kp, _order_events(sim[0]), random.Random(5), after_batch=commit)
    kp.on_tick(TICKS, pos[TICKS], None, flush=True)
    pos[TICKS] += 1
    commit(pos, force=True)
    assert len(docs) > 10_000
    assert statistics.mean(docs) < 400, statistics.mean(docs)
