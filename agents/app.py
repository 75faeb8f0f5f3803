"""The Faust application of the Kafka workers, built from Settings.

``build_app(settings)`` returns a :class:`ShopwatchApp` (a ``faust.App``)
with the project's topics declared on it (``app.sw_topics``). Every topic
carries raw bytes (key and value): decoding and validation are ours
(``shopwatch.schemas.events.decode``), so that an undecodable record becomes
a dead letter instead of a crashed agent.

Topics are created by us, not by Faust: Faust only creates its *internal*
topics (changelogs, repartition topics, the leader topic), and a broker with
``auto.create.topics.enable`` would create ours with its own default
partition count. Before its consumer starts, the app creates whichever of
its topics (``app.sw_required``, extended with ``app.require_topic``) are
missing with ``settings.partitions`` partitions and
``settings.replication_factor`` replicas, and refuses to start when existing
co-partitioned topics (the three order-keyed input topics) disagree on their
partition count.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import faust
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from shopwatch.agents.settings import Settings
from shopwatch.agents.settings import settings as load_settings
from shopwatch.schemas.events import INPUT_TOPICS, TOPIC_CHATS, TOPIC_ORDERS, TOPIC_REFUNDS, TOPIC_SHIPMENTS

log = logging.getLogger(__name__)

TOPIC_DLQ = "shop.dlq"
TOPIC_ALERTS = "shop.alerts"
TOPIC_SCORES = "shop.scores"
ORDER_KEYED_TOPICS = (TOPIC_ORDERS, TOPIC_SHIPMENTS, TOPIC_REFUNDS)
OUTPUT_TOPICS = (TOPIC_DLQ, TOPIC_ALERTS, TOPIC_SCORES)
# Kafka topic configs per default topic name.
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    TOPIC_SCORES: {"cleanup.policy": "compact"},
}


class TopicSetupError(RuntimeError):
    """The topics on the cluster cannot be used as they are."""


@dataclass(frozen=True)
class Topics:
    """The app's topics; ``names`` maps a default name to the configured one."""

    orders: faust.TopicT
    shipments: faust.TopicT
    refunds: faust.TopicT
    chats: faust.TopicT
    dlq: faust.TopicT
    alerts: faust.TopicT
    scores: faust.TopicT
    names: dict[str, str]

    @property
    def default_of(self) -> dict[str, str]:
        """Configured topic name -> default name (``shop.orders``...)."""
        return {v: k for k, v in self.names.items()}

    @property
    def inputs(self) -> tuple[faust.TopicT, ...]:
        return (self.orders, self.shipments, self.refunds, self.chats)


class ShopwatchApp(faust.App):
    """faust.App that creates its topics before its consumer subscribes.

    ``sw_required`` maps every (configured) topic name the app needs to its
    Kafka topic configs; ``sw_copartitioned`` lists groups of topics that
    must have the same partition count. Code adding topics of its own (ticks,
    contributions...) registers them with :meth:`require_topic` before the
    worker starts.
    """

    sw_settings: Settings
    sw_topics: Topics
    sw_required: dict[str, dict[str, str]]
    sw_copartitioned: list[list[str]]

    def require_topic(
        self, name: str, *, config: dict[str, str] | None = None, copartition_with: str | None = None
    ) -> None:
        """Have the app create topic ``name`` (configured name) at startup if missing.

        ``copartition_with``: another required topic it must share the partition
        count with (its group is checked at startup).
        """
        self.sw_required[name] = dict(config or {})
        if copartition_with is not None:
            for group in self.sw_copartitioned:
                if copartition_with in group:
                    if name not in group:
                        group.append(name)
                    break
            else:
                self.sw_copartitioned.append([copartition_with, name])

    def _new_producer(self):
        producer = super()._new_producer()
        flush_completely(producer.buffer)
        return producer

    def _new_consumer(self):
        consumer = super()._new_consumer()
        seek_uncommitted_to_start(consumer)
        return consumer

    async def on_first_start(self) -> None:
        await super().on_first_start()
        await ensure_topics(
            self.sw_settings.bootstrap,
            self.sw_required,
            partitions=self.sw_settings.partitions,
            replication_factor=self.sw_settings.replication_factor,
            copartitioned=self.sw_copartitioned,
        )


def seek_uncommitted_to_start(consumer) -> None:
    """After each "seek to committed", put partitions without a committed offset
    back at their first record.

    Faust pauses source partitions while tables recover and drops the records
    the fetcher brings for paused partitions meanwhile; afterwards it seeks every
    partition to its committed offset to read them again. aiokafka's
    ``seek_to_committed`` leaves a partition without a committed offset (or with
    0) where the fetcher is, past the dropped records: after a rebalance those
    records were never processed by anyone (the kill test lost alerts this way:
    a partition nobody had committed yet started at its end). Such a partition
    would have started at its beginning (``auto_offset_reset=earliest``).
    """
    seek_to_committed = consumer.seek_to_committed

    async def seek() -> dict:
        offsets = await seek_to_committed()
        fresh = [tp for tp, off in offsets.items() if not off and not consumer._is_changelog_tp(tp)]
        if fresh:
            starts = await consumer.earliest_offsets(*fresh)
            # seek_wait seeks in the consumer's own thread (aiokafka's fetcher lives there)
            await consumer.seek_wait({tp: starts.get(tp) or 0 for tp in fresh})
        return offsets

    consumer.seek_to_committed = seek


def flush_completely(buffer) -> None:
    """Make ``buffer.flush()`` (a Faust ProducerBuffer) return only once every message
    put before it has been handed over to aiokafka.

    Faust flushes the producer before it commits offsets, so that table writes
    (changelog messages, queued in this buffer) reach Kafka before the offsets of
    the records that caused them. faust-streaming 0.15.3's ``flush`` is
    ``flush_atmost(None)``, which returns as soon as one message takes more than
    0.1 s to hand over, leaving the rest queued: under load a commit then runs
    ahead of its changelog writes, and a worker killed right after loses table
    writes of committed records (the kill test saw an alert agent's writes for a
    whole second vanish). Waiting until every message put before the flush is
    handed over keeps the commit after its changelog writes.
    """
    step = buffer.flush_atmost
    counts = {"put": 0, "handed": 0}
    put = buffer.put
    hand_over = buffer._send_pending

    def counted_put(fut) -> None:
        put(fut)
        counts["put"] += 1

    async def tracked(fut) -> None:
        try:
            await hand_over(fut)
        finally:
            counts["handed"] += 1

    async def flush() -> None:
        # every message put before this flush (the queue is FIFO and handed over one
        # at a time); not those put meanwhile, or a busy worker would never commit
        target = counts["put"]
        while counts["handed"] < target:
            if buffer.state != "running":  # stopping: Faust's own flush
                await step(None)
                return
            await asyncio.sleep(0.005)

    buffer.put = counted_put
    buffer._send_pending = tracked
    buffer.flush = flush


def broker_urls(bootstrap: str) -> list[str]:
    """'h1:9092,h2:9092' -> ['kafka://h1:9092', 'kafka://h2:9092']."""
    return ["kafka://" + h.strip() for h in bootstrap.split(",") if h.strip()]


def build_app(s: Settings | None = None, *, app_id: str | None = None) -> ShopwatchApp:
    """A Faust app for Settings ``s`` (default: from the environment)."""
    s = s or load_settings()
    app = ShopwatchApp(
        app_id or s.app_id,
        broker=broker_urls(s.bootstrap),
        store=s.store,
        datadir=s.data_dir,
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=s.partitions,
        topic_replication_factor=s.replication_factor,
        # A new consumer group starts from the beginning of the input topics:
        # events produced before the first worker joined are not skipped.
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        web_port=s.web_port,
        web_bind=s.web_bind,
        web_host=s.web_bind if s.web_bind not in ("0.0.0.0", "::") else "localhost",
    )
    app.sw_settings = s
    names = {d: s.topic(d) for d in (*INPUT_TOPICS, *OUTPUT_TOPICS)}
    app.sw_required = {names[d]: dict(TOPIC_CONFIGS.get(d, {})) for d in names}
    app.sw_copartitioned = [[names[d] for d in ORDER_KEYED_TOPICS]]

    def topic(default_name: str) -> faust.TopicT:
        compact = TOPIC_CONFIGS.get(default_name, {}).get("cleanup.policy") == "compact"
        return app.topic(
            names[default_name],
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=s.partitions,
            replicas=s.replication_factor,
            compacting=True if compact else None,
        )

    app.sw_topics = Topics(
        orders=topic(TOPIC_ORDERS),
        shipments=topic(TOPIC_SHIPMENTS),
        refunds=topic(TOPIC_REFUNDS),
        chats=topic(TOPIC_CHATS),
        dlq=topic(TOPIC_DLQ),
        alerts=topic(TOPIC_ALERTS),
        scores=topic(TOPIC_SCORES),
        names=names,
    )
    return app


async def ensure_topics(
    bootstrap: str,
    required: dict[str, dict[str, str]],
    *,
    partitions: int,
    replication_factor: int,
    copartitioned: list[list[str]] = (),
    timeout: float = 60.0,
) -> dict[str, int]:
    """Create the missing topics of ``required`` ({name: topic configs}) with
    ``partitions`` partitions; check each group of ``copartitioned`` has one
    partition count. Existing topics are left as they are.

    Returns {topic name: partition count}. Raises TopicSetupError.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    await asyncio.wait_for(admin.start(), timeout)
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name=n, num_partitions=partitions, replication_factor=replication_factor, topic_configs=cfg)
            for n, cfg in required.items()
            if n not in existing
        ]
        if wanted:
            resp = await admin.create_topics(wanted, timeout_ms=int(timeout * 1000))
            for name, code, *rest in resp.topic_errors:
                if code and code != TopicAlreadyExistsError.errno:  # another worker won the race
                    msg = rest[0] if rest else ""
                    raise TopicSetupError(f"cannot create topic {name}: {for_code(code).__name__} {msg or ''}")
            log.info("created topics %s", ", ".join(t.name for t in wanted))
        names = list(required)
        counts: dict[str, int] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:  # a topic just created may not be in the metadata yet
            described = await admin.describe_topics(names)
            counts = {t["topic"]: len(t["partitions"]) for t in described if not t["error_code"] and t["partitions"]}
            if all(n in counts for n in names) or loop.time() > deadline:
                break
            await asyncio.sleep(0.2)
        missing = [n for n in names if n not in counts]
        if missing:
            raise TopicSetupError(f"topics not available after {timeout:.0f}s: {', '.join(missing)}")
        odd = {n: c for n, c in counts.items() if c != partitions}
        if odd:  # e.g. auto-created by a producer with the broker's num.partitions
            log.warning(
                "topics with a partition count other than the configured %d: %s", partitions,
                ", ".join(f"{n}={c}" for n, c in sorted(odd.items())),
            )
        for group in copartitioned:
            found = {n: counts[n] for n in group if n in counts}
            if len(set(found.values())) > 1:
                raise TopicSetupError(
                    "co-partitioned topics must have the same partition count, found "
                    + ", ".join(f"{n}={c}" for n, c in found.items())
                )
        return counts
    finally:
        await admin.close()
