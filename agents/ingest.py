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
import logging
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import orjson
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, Counter, generate_latest

from shopwatch.schemas.events import INPUT_TOPICS, TOPIC_CHATS, InvalidEvent, decode

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


def dead_letter(error: str, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> DeadLetter:
    record: dict = {"error": error, "topic": topic, "partition": partition, "offset": offset}
    if value is None:
        record["raw"] = None
    else:
        try:
            record["raw"] = value.decode("utf-8")
        except UnicodeDecodeError:
            record["raw"] = base64.b64encode(value).decode("ascii")
            record["raw_encoding"] = "base64"
    return DeadLetter(key, record)


def ingest(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    *,
    default_topic: str | None = None,
) -> dict | DeadLetter:
    """One raw record -> the validated event, or the dead letter for it.

    ``default_topic`` is the default name (``shop.orders``...) of ``topic``
    when topic names are configured; it decides which event types belong.
    """
    if value is None:
        reason = "empty record: null value"
    else:
        try:
            ev = decode(value, default_topic or topic)
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


def make_ingest(app) -> Callable[[str, int, int, bytes | None, bytes | None], dict | None]:
    """``ingest`` for synchronous call sites (the stateful topology's agents).

    Returns the validated event, or None after queueing the dead letter on
    the app's DLQ topic (``send_soon``: buffered by Faust's producer, flushed
    before offsets are committed).
    """
    default_of = app.sw_topics.default_of
    dlq = app.sw_topics.dlq

    def ingest_record(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> dict | None:
        out = ingest(topic, partition, offset, key, value, default_topic=default_of.get(topic))
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
    order_keyed = [n for d, n in topics.names.items() if d in ("shop.orders", "shop.shipments", "shop.refunds")]

    async def process(stream) -> None:
        async for event in stream.events():
            msg = event.message
            t, p, o, k, v = msg.topic, msg.partition, msg.offset, event.key, event.value
            out = ingest(t, p, o, k, v, default_topic=default_of.get(t))
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
        return {"status": "ok", "ready": ready, "app_id": app.conf.id, "assigned_input_partitions": len(assigned)}

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
