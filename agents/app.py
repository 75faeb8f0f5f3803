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

Local state (the RocksDB tables and the worker's clean-shutdown mark) lives
in :func:`state_dir`, ``data_dir/<app id>/<topic prefix>``, so that apps
sharing a data directory never read each other's tables; and a table
partition whose local files are ahead of its changelog (topics deleted and
recreated, another cluster) is dropped and restored from the changelog
instead of crashing the worker (``faust_fixes.ShopwatchRecovery``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import faust
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.codec import has_lz4
from aiokafka.errors import TopicAlreadyExistsError, for_code

from shopwatch.agents.faust_fixes import (
    ShopwatchTableManager,
    after_seek,
    bound_fetch_wait,
    flush_completely,
    seek_uncommitted_to_start,
    write_back_before_commit,
)
from shopwatch.agents.settings import Settings
from shopwatch.agents.settings import settings as load_settings
from shopwatch.schemas.events import (
    INPUT_TOPICS,
    ORDER_KEYED_TOPICS,
    TOPIC_ALERTS,
    TOPIC_DLQ,
    TOPIC_SCORES,
)

log = logging.getLogger(__name__)

OUTPUT_TOPICS = (TOPIC_DLQ, TOPIC_ALERTS, TOPIC_SCORES)
# Kafka topic configs per default topic name.
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    TOPIC_SCORES: {"cleanup.policy": "compact"},
}


class TopicSetupError(RuntimeError):
    """The topics on the cluster cannot be used as they are."""


@dataclass(frozen=True)
class Topics:
    """The topic names (``names``: a default name, ``shop.orders``..., to the configured
    one) and the dead-letter topic ingest sends to; the topology declares the topics
    its agents read and write (agents/topology.py)."""

    dlq: faust.TopicT
    names: dict[str, str]

    @property
    def default_of(self) -> dict[str, str]:
        """Configured topic name -> default name (``shop.orders``...)."""
        return {v: k for k, v in self.names.items()}


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
    sw_before_commit: list  # async callables run before each offset commit (write-back of state)
    sw_after_seek: list  # callables run once a rebalance's seek to the committed offsets is done
    sw_copartitioned: list[list[str]]
    sw_sink_status = None  # () -> {sink: what it owes, its last problem}: /healthz and /readyz

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
        bound_fetch_wait(consumer)
        seek_uncommitted_to_start(consumer)
        write_back_before_commit(consumer, self.sw_before_commit)
        after_seek(consumer, self.sw_after_seek)
        return consumer

    async def on_first_start(self) -> None:
        await super().on_first_start()
        await ensure_topics(
            self.sw_settings.bootstrap,
            {**self.sw_changelogs(), **self.sw_required},
            partitions=self.sw_settings.partitions,
            replication_factor=self.sw_settings.replication_factor,
            copartitioned=self.sw_copartitioned,
        )
        if not self.conf.topic_disable_leader:  # Faust's leader election topic: one partition
            await ensure_topics(
                self.sw_settings.bootstrap,
                {self._leader_assignor._leader_topic_name: {}},
                partitions=1,
                replication_factor=self.conf.topic_replication_factor,
            )

    def sw_changelogs(self) -> dict[str, dict[str, str]]:
        """The changelog topics of the app's tables, as Faust would create them, to be
        created (when missing) with the app's own topics, before the consumer subscribes.

        faust-streaming 0.15.3 creates its missing internal topics (the changelogs and
        the leader topic ``<app id>-__assignor-__leader``) just before its consumer
        subscribes (tens of milliseconds): when the consumer's first metadata does not
        have a new topic yet ("Topic ... not found in cluster metadata"), the
        assignment ignores it, for good: a table then sees its changelog with 0
        partitions and its agent crashes on every write with PartitionsMismatch, and
        without the leader topic no worker is leader (no ticks: on the event clock
        the orders stay queued). Seen on first starts and on restarts after the
        topics were deleted and recreated. ``ensure_topics`` waits until the topics
        it creates are in the metadata. Only plain compacted changelogs with the
        app's partition count are created here; Faust creates any other one itself."""
        out: dict[str, dict[str, str]] = {}
        for table in self.tables.values():
            topic = table.changelog_topic
            partitions = topic.partitions or self.conf.topic_partitions
            replicas = topic.replicas or self.conf.topic_replication_factor
            if (partitions != self.sw_settings.partitions or replicas != self.sw_settings.replication_factor
                    or not topic.compacting or topic.deleting or topic.retention or topic.config):
                continue
            out[topic.get_topic_name()] = {"cleanup.policy": "compact"}
        return out


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
NO_PREFIX_DIR = "_no-prefix"


def _dir_name(name: str) -> str:
    """``name`` as one directory name: itself when it is a plain name (letters, digits,
    ``.``, ``_``, ``-``, starting with a letter or digit, at most 100 characters); else
    ``_<name with other characters as _>-<hash>``. Escaped names start with ``_`` and
    plain ones cannot, so two different names never share a directory (no ``..``,
    ``/`` or braces either: Faust formats ``datadir`` with ``str.format``)."""
    if _SAFE_NAME.fullmatch(name):
        return name
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:60]
    return f"_{readable}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"


def state_dir(s: Settings, app_id: str | None = None) -> Path:
    """The worker's local state directory: ``data_dir/<app id>/<topic prefix>``
    (``data_dir/<app id>/_no-prefix`` without a prefix).

    Faust keeps its tables in ``<datadir>/v1/tables/<table>-<partition>.db``, named
    after the table only: faust-streaming 0.15.3 puts the app id in the path only
    through its default ``datadir`` (``{conf.name}-data``, ``str.format``-ed with
    ``conf``), not in a ``datadir`` given to it, as ours is. A data directory
    reused by another app id would hand it the tables, and the persisted changelog
    offsets, of the first one. So the app id and the topic prefix are part of the
    directory given to Faust as ``datadir``, and the worker keeps its clean-shutdown
    mark there too (a clean stop of one app says nothing about another's tables).
    """
    return (Path(s.data_dir) / _dir_name(app_id or s.app_id)
            / (_dir_name(s.topic_prefix) if s.topic_prefix else NO_PREFIX_DIR))


def advertised_host(s: Settings) -> str:
    """The host the other workers forward requests to: SHOPWATCH_WEB_HOST, else the bind
    address, else (a wildcard bind, as in containers) this machine's name. It was
    "localhost" for a wildcard bind: every worker then took every key for its own."""
    if s.web_host:
        return s.web_host
    if s.web_bind in ("0.0.0.0", "::", ""):
        return socket.gethostname()
    return s.web_bind


def broker_urls(bootstrap: str) -> list[str]:
    """'h1:9092,h2:9092' -> ['kafka://h1:9092', 'kafka://h2:9092']."""
    return ["kafka://" + h.strip() for h in bootstrap.split(",") if h.strip()]


_RAW = {"key_serializer": "raw", "value_serializer": "raw"}  # keys and values: bytes as they are


def build_app(s: Settings | None = None, *, app_id: str | None = None) -> ShopwatchApp:
    """A Faust app for Settings ``s`` (default: from the environment)."""
    s = s or load_settings()
    app = ShopwatchApp(
        app_id or s.app_id,
        broker=broker_urls(s.bootstrap),
        store=s.store,
        # data_dir/<app id>/<topic prefix>: apps sharing a data directory keep apart
        datadir=str(state_dir(s, app_id)),
        # its recovery drops local table state ahead of the changelog instead of crashing
        TableManager=ShopwatchTableManager,
        autodiscover=False,
        **_RAW,
        topic_partitions=s.partitions,
        topic_replication_factor=s.replication_factor,
        # A new consumer group starts from the beginning of the input topics:
        # events produced before the first worker joined are not skipped.
        consumer_auto_offset_reset="earliest",
        # Kafka Streams' defaults in spirit: batch on the producer (records produced
        # within 10 ms share a request) and compress the batches.
        producer_linger_ms=10,
        producer_compression_type="lz4" if has_lz4() else "gzip",
        web_enabled=True,
        web_port=s.web_port,
        web_bind=s.web_bind,
        web_host=advertised_host(s),
    )
    app.sw_settings = s
    app.sw_before_commit = []
    app.sw_after_seek = []
    names = {d: s.topic(d) for d in (*INPUT_TOPICS, *OUTPUT_TOPICS)}
    app.sw_required = {names[d]: dict(TOPIC_CONFIGS.get(d, {})) for d in names}
    app.sw_copartitioned = [[names[d] for d in ORDER_KEYED_TOPICS]]

    def topic(default_name: str) -> faust.TopicT:
        compact = TOPIC_CONFIGS.get(default_name, {}).get("cleanup.policy") == "compact"
        return app.topic(
            names[default_name],
            key_type=bytes,
            value_type=bytes,
            **_RAW,
            partitions=s.partitions,
            replicas=s.replication_factor,
            compacting=True if compact else None,
        )

    app.sw_topics = Topics(dlq=topic(TOPIC_DLQ), names=names)
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
