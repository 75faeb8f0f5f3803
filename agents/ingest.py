"""Ingestion: raw input records -> validated events, or dead letters.

``ingest(topic, partition, offset, key, value)`` is the whole decision for one
record and has no I/O (it only bumps the Prometheus counters):

- a valid event comes back as the validated dict (``shopwatch.schemas.events``),
  counted in ``shopwatch_events_total{topic,type}``;
- anything else comes back as a :class:`DeadLetter`: the record for the DLQ
  topic, ``{"error", "topic", "partition", "offset", "raw"}``, keyed by the
  input key, counted in ``shopwatch_invalid_events_total{topic}``. ``raw`` is
  the value as UTF-8 text; a value that is not UTF-8 is base64 with
  ``"raw_encoding": "base64"``; a null value (tombstone) is ``null``.

A dead letter always fits in a Kafka record (issue: a 900 KB poison pill made
a 1.2 MB dead letter, the producer refused it and the worker crashed, then the
next worker in turn): ``raw`` keeps at most ``RAW_KEPT_BYTES`` of the value,
and a longer value adds ``"raw_truncated": true``, ``"raw_bytes"`` (its full
length) and ``"raw_sha256"``; a key longer than ``KEY_KEPT_BYTES`` is
replaced by its SHA-256 (hex) with ``"key_bytes"`` and ``"key_sha256"`` in
the record.

Beyond the event contract, the shell refuses records that would break the
partitioning or the clocks:
- a key that is not the event's ``order_id`` (order-keyed topics) or
  ``session_id`` (chats): the record sits on a partition that may not own that
  entity, so co-partitioning and deduplication would break silently;
- an event time outside the sane window: before ``min_event_time``, or after
  min(the record's Kafka timestamp, the wall clock) + ``max_future_skew_s``.
  The Kafka timestamp makes the verdict a function of the record (a record
  read again after a restart is judged the same way); the wall clock bounds a
  producer whose own clock, or whose CreateTime, is wrong.

``topic`` labels and DLQ ``topic`` fields are the Kafka topic names as
configured (``SHOPWATCH_TOPIC_*``/``SHOPWATCH_TOPIC_PREFIX``), so a dead
letter points at the exact record (topic, partition, offset) it came from.

``install(app, on_valid)`` adds the Faust agents that run it over the four
input topics, send dead letters to the DLQ topic and hand every valid event
to ``on_valid(event, source)`` -- the one call site where the stateful core
plugs in -- plus the ``/metrics`` and ``/healthz`` (``/readyz``) web views.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import orjson
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, Counter, generate_latest

from shopwatch.schemas.events import (
    INPUT_TOPICS,
    ORDER_KEYED_TOPICS,
    TOPIC_CHATS,
    InvalidEvent,
    decode,
    parse_ts_us,
)

log = logging.getLogger(__name__)

EVENTS = Counter("shopwatch_events_total", "Valid input events, by topic and event type", ["topic", "type"])
INVALID = Counter(
    "shopwatch_invalid_events_total", "Invalid input events (sent to the dead-letter topic), by topic", ["topic"]
)
PROCESSING_ERRORS = Counter(
    "shopwatch_processing_errors_total",
    "Valid events whose processing raised (sent to the dead-letter topic), by topic",
    ["topic"],
)


class Source(NamedTuple):
    """Where a record came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    timestamp: float | None = None  # Kafka record timestamp, seconds (not the event time)


class DeadLetter(NamedTuple):
    key: bytes | None
    record: dict

    def encode(self) -> bytes:
        return orjson.dumps(self.record)


RAW_KEPT_BYTES = 16 * 1024  # in JSON at most ~6x that (\u escapes): far below Kafka's 1 MB
KEY_KEPT_BYTES = 1024


def dead_letter(error: str, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> DeadLetter:
    record: dict = {"error": error, "topic": topic, "partition": partition, "offset": offset}
    if value is None:
        record["raw"] = None
    else:
        kept = value[:RAW_KEPT_BYTES]
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            record["raw"] = base64.b64encode(kept).decode("ascii")
            record["raw_encoding"] = "base64"
        else:  # a cut inside a character drops only that character
            record["raw"] = kept.decode("utf-8", "ignore")
        if len(value) > RAW_KEPT_BYTES:
            record["raw_truncated"] = True
            record["raw_bytes"] = len(value)
            record["raw_sha256"] = hashlib.sha256(value).hexdigest()
    if key is not None and len(key) > KEY_KEPT_BYTES:
        record["key_bytes"] = len(key)
        record["key_sha256"] = digest = hashlib.sha256(key).hexdigest()
        key = digest.encode()
    return DeadLetter(key, record)


class Window(NamedTuple):
    """The sane window of event time (settings ``min_event_time``, ``max_future_skew_s``)."""

    min_us: int
    skew_us: int

    @classmethod
    def of(cls, settings) -> Window:
        return cls(parse_ts_us(settings.min_event_time, "SHOPWATCH_MIN_EVENT_TIME"),
                   int(settings.max_future_skew_s * 1_000_000))

    def max_us(self, timestamp: float | None, now: float | None = None) -> int:
        """The latest acceptable event time for a record with Kafka ``timestamp`` (seconds)."""
        now = time.time() if now is None else now
        if timestamp is not None and 0 < timestamp < now:
            now = timestamp
        return int(now * 1_000_000) + self.skew_us


DEFAULT_WINDOW = Window(parse_ts_us("2000-01-01T00:00:00+08:00"), 86_400_000_000)


def ingest(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    *,
    default_topic: str | None = None,
    timestamp: float | None = None,
    window: Window = DEFAULT_WINDOW,
    now: float | None = None,
) -> dict | DeadLetter:
    """One raw record -> the validated event, or the dead letter for it.

    ``default_topic`` is the default name (``shop.orders``...) of ``topic``
    when topic names are configured; it decides which event types belong.
    ``timestamp`` is the record's Kafka timestamp (seconds), ``now`` the wall
    clock (default: read here): with ``window`` they bound the event time.
    """
    if value is None:
        reason = "empty record: null value"
    else:
        dtopic = default_topic or topic
        try:
            ev = decode(value, dtopic, window.max_us(timestamp, now), window.min_us)
            field = "session_id" if dtopic == TOPIC_CHATS else "order_id"
            if key is None or key != ev[field].encode():
                raise InvalidEvent(f"key does not match {field}: key {key if key is None else key[:200]!r}, "
                                   f"{field} {ev[field]!r}")
        except InvalidEvent as exc:
            reason = str(exc)
        except Exception as exc:  # a validator bug must not stop the stream
            log.exception("validation of %s[%d]@%d raised", topic, partition, offset)
            reason = f"validation error: {type(exc).__name__}: {exc}"
        else:
            EVENTS.labels(topic, ev["type"]).inc()
            return ev
    INVALID.labels(topic).inc()
    return dead_letter(reason, topic, partition, offset, key, value)


OnValid = Callable[[dict, Source], Awaitable[None]]


async def ignore(event: dict, source: Source) -> None:
    """The default ``on_valid``: events are only counted (until the stateful core)."""


def make_ingest(app) -> Callable[..., dict | None]:
    """``ingest`` for synchronous call sites (the stateful topology's agents).

    Returns the validated event, or None after queueing the dead letter on
    the app's DLQ topic (``send_soon``: buffered by Faust's producer, flushed
    before offsets are committed).
    """
    default_of = app.sw_topics.default_of
    dlq = app.sw_topics.dlq
    window = Window.of(app.sw_settings)

    def ingest_record(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                      timestamp: float | None = None) -> dict | None:
        out = ingest(topic, partition, offset, key, value, default_topic=default_of.get(topic), timestamp=timestamp,
                     window=window)
        if isinstance(out, DeadLetter):
            dlq.send_soon(key=out.key, value=out.encode())
            return None
        return out

    return ingest_record


def install(app, on_valid: OnValid | None = None) -> None:
    """Add the ingestion agents and the /metrics, /healthz, /readyz views to ``app``.

    ``app`` is a :class:`shopwatch.agents.app.ShopwatchApp`. Two agents: one
    over the three co-partitioned order-keyed topics, one over chats.
    Exceptions raised by ``on_valid`` are logged, counted in
    ``shopwatch_processing_errors_total`` and the record is dead-lettered
    (``"error": "processing failed: ..."``) so one poison event cannot stall
    its partitions.
    """
    handler = on_valid or ignore
    topics = app.sw_topics
    default_of = topics.default_of
    dlq = topics.dlq
    chats = topics.names[TOPIC_CHATS]
    order_keyed = [topics.names[d] for d in ORDER_KEYED_TOPICS]
    window = Window.of(app.sw_settings)

    async def process(stream) -> None:
        async for event in stream.events():
            msg = event.message
            t, p, o, k, v = msg.topic, msg.partition, msg.offset, event.key, event.value
            out = ingest(t, p, o, k, v, default_topic=default_of.get(t), timestamp=msg.timestamp, window=window)
            if isinstance(out, DeadLetter):
                await dlq.send(key=out.key, value=out.encode())
                continue
            try:
                await handler(out, Source(t, p, o, k, msg.timestamp))
            except Exception as exc:
                log.exception("processing %s[%d]@%d (%s) failed", t, p, o, out.get("event_id"))
                PROCESSING_ERRORS.labels(t).inc()
                dl = dead_letter(f"processing failed: {type(exc).__name__}: {exc}", t, p, o, k, v)
                await dlq.send(key=dl.key, value=dl.encode())

    def raw_topic(*names: str):
        return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    async def ingest_orders(stream) -> None:
        await process(stream)

    async def ingest_chats(stream) -> None:
        await process(stream)

    app.agent(raw_topic(*order_keyed), name="shopwatch.ingest.orders")(ingest_orders)
    app.agent(raw_topic(chats), name="shopwatch.ingest.chats")(ingest_chats)
    install_views(app)


def install_views(app) -> None:
    """/metrics, /healthz and /readyz."""
    topics = app.sw_topics
    input_names = {n for d, n in topics.names.items() if d in INPUT_TOPICS}

    def status() -> dict:
        try:
            assigned = [tp for tp in app.consumer.assignment() if tp.topic in input_names]
        except Exception:  # consumer not started yet
            assigned = []
        ready = bool(assigned) and not app.rebalancing
        st = {"status": "ok", "ready": ready, "app_id": app.conf.id, "assigned_input_partitions": len(assigned)}
        sinks = app.sw_sink_status
        if sinks is not None:  # what each chat still owes, and why its last post failed
            st["sinks"] = sinks()
        return st

    @app.page("/metrics")
    async def metrics(web, request):
        return web.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

    @app.page("/healthz")
    async def healthz(web, request):
        return web.json(status())

    @app.page("/readyz")
    async def readyz(web, request):
        st = status()
        return web.json(st, status=200 if st["ready"] else 503)
