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
instead of crashing the worker (:class:`ShopwatchRecovery`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import faust
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.codec import has_lz4
from aiokafka.errors import TopicAlreadyExistsError, for_code
from faust.tables import TableManager
from faust.tables.recovery import Recovery

from shopwatch.agents.settings import Settings
from shopwatch.agents.settings import settings as load_settings
from shopwatch.schemas.events import (
    INPUT_TOPICS,
    TOPIC_ALERTS,
    TOPIC_CHATS,
    TOPIC_DLQ,
    TOPIC_ORDERS,
    TOPIC_REFUNDS,
    TOPIC_SCORES,
    TOPIC_SHIPMENTS,
)

log = logging.getLogger(__name__)

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


def after_seek(consumer, hooks: list) -> None:
    """Fetch a rebalance's stream partitions only from their committed offsets, and
    run ``hooks`` (no arguments) once ``_committed_offset`` holds them.

    faust-streaming 0.15.3 resumes the stream partitions and then seeks them to
    their committed offsets (``Recovery._resume_streams`` and
    ``on_recovery_completed``: ``resume_partitions``, then ``await
    perform_seek()``, which fills ``_committed_offset`` only at its end). The
    fetcher delivers records in between, from wherever it stood, while Faust's
    flow control is still suspended: the streams skip them unacknowledged, and
    the fetch loop, finishing that batch after the seek, moves the read offset
    past them again, so their copies from the committed offset are dropped as
    already read. The kill test showed both ends of it: a partition whose
    commits stopped for good at such a hole (the input never drained), and a
    record lost when a partition rebuilt its state before the seek (it did not
    know its queued records were committed, dropped them to be read again, and
    the seek went past them). So stream partitions resumed during a rebalance
    stay paused until the seek is done."""
    perform_seek = consumer.perform_seek
    resume = consumer.resume_partitions
    held: set = set()

    def resume_partitions(tps) -> None:
        tps = set(tps)
        if getattr(consumer.app, "rebalancing", False):
            stream = {tp for tp in tps if not consumer._is_changelog_tp(tp)}
            held.update(stream)
            tps -= stream
        if tps:
            resume(tps)

    async def seek() -> None:
        # Faust also seeks when its fetch loop finds the flow stopped (the start of a
        # rebalance): only the seek that follows the recovery's resume is the one awaited
        recovered = bool(held)
        await perform_seek()
        if recovered:
            assigned = consumer.assignment()
            resume({tp for tp in held if tp in assigned})
            held.clear()
            for hook in hooks:
                hook()

    consumer.resume_partitions = resume_partitions
    consumer.perform_seek = seek


def write_back_before_commit(consumer, hooks: list) -> None:
    """Run ``hooks`` (async, no arguments) at the start of every offset commit.

    faust-streaming 0.15.3's ``Consumer._commit_offsets`` flushes the producer and
    then commits the offsets it was given (acked records). State kept in memory
    and written back here, before that flush, is on the changelog before the
    offsets of the records that changed it are committed (Kafka Streams flushes
    its record cache at the same point)."""
    commit_offsets = consumer._commit_offsets

    async def commit(offsets, start_new_transaction: bool = True):
        for hook in hooks:
            await hook()
        return await commit_offsets(offsets, start_new_transaction=start_new_transaction)

    consumer._commit_offsets = commit


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


def drop_table_partition(table, partition: int) -> bool:
    """Delete the local RocksDB files of one partition of ``table`` (reopened empty).

    Returns False (nothing done) for a store that is not Faust's RocksDB store."""
    store = table.data
    dbs = getattr(store, "_dbs", None)
    partition_path = getattr(store, "partition_path", None)
    if dbs is None or partition_path is None:
        return False
    db = dbs.pop(partition, None)
    if db is not None:
        db.close()  # releases the RocksDB lock (rocksdict)
    key_index = getattr(store, "_key_index", None)
    if key_index is not None:
        key_index.clear()  # key -> partition cache: may point at the dropped partition
    shutil.rmtree(partition_path(partition), ignore_errors=True)
    store._db_for_partition(partition)  # assigned partitions stay open, as Faust has them
    return True


class ShopwatchRecovery(Recovery):
    """Faust's table recovery, dropping a partition whose local state is ahead of its changelog.

    faust-streaming 0.15.3 (``faust/tables/recovery.py``, ``Recovery._restart_recovery``)
    reads every assigned changelog partition from the offset persisted in the local
    RocksDB store (``Store.persisted_offset``) and, when that offset is above the
    changelog's last offset (its "highwater"), raises ``ConsistencyError`` ("The
    persisted offset for changelog topic partition ... is higher than the last offset
    in that topic (highwater)"): the Recovery service crashes and the worker with it.
    It happens whenever the changelog lost records the local files have: the topics
    were deleted and recreated, or the worker points at another cluster. (When the
    highwater or the offset is 0 it does not even raise, and silently keeps the stale
    local state.)

    The local files then hold state the changelog does not, so the only consistent
    state is the changelog's: before Faust builds its start offsets
    (``_build_offsets``, called for the active and for the standby partitions, before
    either consistency check), we compare each partition's offset with the
    changelog's end offset and, if it is ahead, delete that partition's local store
    and forget the offset, so that Faust restores the partition from the start of
    its changelog. A warning is logged for every partition dropped.
    """

    async def _build_offsets(self, consumer, tps, destination, title: str) -> None:
        # destination: the offset each partition resumes after (its persisted offset), or None
        known = {tp: destination[tp] for tp in tps if destination.get(tp) is not None}
        if known:
            ends = await consumer.highwaters(*known)  # end offsets: the next offset to be written
            for tp, offset in known.items():
                end = ends.get(tp)
                if end is None or offset < end:
                    continue
                table = self.tp_to_table.get(tp)
                if table is None or not drop_table_partition(table, tp.partition):
                    continue  # not ours to fix: Faust's own check decides
                log.warning(
                    "table %s: local state of changelog %s[%d] is ahead of the changelog "
                    "(persisted offset %d, changelog end offset %d: topic deleted and recreated, "
                    "or another cluster?): dropped it, restoring from the changelog",
                    table.name, tp.topic, tp.partition, offset, end,
                )
                destination[tp] = None
        await super()._build_offsets(consumer, tps, destination, title)


class ShopwatchTableManager(TableManager):
    """Faust's TableManager with :class:`ShopwatchRecovery` as its recovery service."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = ShopwatchRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


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
        key_serializer="raw",
        value_serializer="raw",
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
