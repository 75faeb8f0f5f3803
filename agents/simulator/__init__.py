"""`shopwatch simulate`: realistic, deterministic event streams (shared/spec/events.md).

Three parts, one module each:

- ``world.py``: :func:`generate`, a pure generator of *valid* events (dicts
  exactly per the contract) in event-time order, ties in generation order. It
  models shops on the five platforms (round-robin), each with its own profile
  (volume, on-time rate, refund behaviour, chat responsiveness, ...), and every
  order's whole life: payment (domestic / bonded / direct-mail, pre-sale,
  promised ship-by, virtual, cash on delivery, live-stream, fresh),
  cancellation, on-time and late shipment, 无物流发货, missing or late pickups,
  transit stalls, customs steps, carrier exceptions, re-delivery, signing,
  fake-shipment flags, refunds of every kind with slow merchants, rejections,
  platform intervention and judgement, returns, COD proof, reviews (some twice)
  and complaints (some malicious); plus consultations (queueing, buyer / agent /
  bot / system messages, slow and night-time replies, ratings). Timestamps are
  RFC 3339 in +08:00 with microseconds; one order's or one session's events are
  strictly increasing along every causal chain. Everything comes from
  ``random.Random(seed)``: never the global generator, never the wall clock.
- ``dirt.py``: :func:`records` turns that into output records ``(kind, topic,
  key, bytes)`` and mixes in the dirt of a real feed: a fraction ``dirty`` of
  the records are dirty, half of them *duplicates* (a byte-identical copy of an
  earlier event, re-delivered 1-2,000 records later; at-least-once delivery)
  and half *malformed* (bad JSON, unknown type or platform, a missing or
  mistyped field, a timestamp without offset, a rating out of range, a negative
  amount), each of which fails ``shopwatch.schemas.events.decode``. The dirt has
  its own random generator, so the valid events of a seed are the same whatever
  ``dirty`` is.
- ``cli.py``: the command, writing JSONL or producing to Kafka, paced or not.

A run of ``days`` days keeps only events before the end of the last day (the
stream is a cut of a live feed, so some orders are still in flight at the
end). Without ``days`` (``None``) the stream is endless; ``events`` stops it.
Ordering: with the duplicates left out (they are re-deliveries of earlier
records), the valid records are sorted by ``ts``.
"""

from .dirt import MALFORMS, malform, records
from .world import ABBR, DEFAULT_START, generate, parse_start

__all__ = ["ABBR", "DEFAULT_START", "MALFORMS", "generate", "malform", "parse_start", "records"]
