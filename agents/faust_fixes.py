"""Every workaround of faust-streaming's internals, in one place (faust-streaming 0.15.3,
aiokafka 0.13). Each names what it changes and why; the tests that prove them:

| fix | what it works around | test |
|---|---|---|
| ``bound_fetch_wait`` | a hard-coded 1500 ms broker fetch wait (up to 1.5 s added to an alert) | tests/shell/test_app_conf.py, the kill test |
| ``seek_uncommitted_to_start`` | partitions without a committed offset left past dropped records | tests/shell/test_kafka_fixes.py, the kill test |
| ``after_seek`` | stream partitions resumed before the seek to the committed offsets; fetched by aiokafka while Faust has them paused | tests/shell/test_kafka_fixes.py, the kill test |
| ``write_back_before_commit`` | no hook between "offsets chosen" and "producer flushed" | tests/shell/test_kafka_fixes.py, the kill test |
| ``flush_completely`` | a producer flush that gives up after 0.1 s per message | tests/shell/test_kafka_fixes.py |
| ``ShopwatchRecovery`` / ``drop_table_partition`` | ConsistencyError on local state ahead of its changelog | tests/broker/test_broker_datadir.py |
| ``write_documents`` / ``partition_documents`` | table writes outside an event; a scan of one partition | tests/broker/test_broker_topology.py |
| ``committed_offset`` / ``leave_unacknowledged`` | the consumer's committed offsets; a record taken but not to be committed | tests/shell/test_kafka_fixes.py |

Nothing else in the project reaches into Faust's or aiokafka's private attributes
(agents/web.py replaces Faust's web blueprints through its public attribute).
"""

from __future__ import annotations

import asyncio
import logging
import shutil

from aiokafka.structs import TopicPartition
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP

log = logging.getLogger("shopwatch.faust_fixes")

FETCH_MAX_WAIT_MS = 100


def bound_fetch_wait(consumer, wait_ms: int = FETCH_MAX_WAIT_MS) -> None:
    """Have the worker's aiokafka consumer ask the broker to answer a fetch within
    ``wait_ms`` (Kafka's own default is 500 ms) instead of Faust's 1500 ms.

    faust-streaming 0.15.3 creates it with a hard-coded ``fetch_max_wait_ms=1500``
    (``faust/transport/drivers/aiokafka.py``, ``_create_worker_consumer``; there is
    no setting for it). aiokafka sends one fetch per broker at a time, for the
    partitions with nothing buffered when it is sent; a partition left out (its
    previous records not consumed yet) can only be fetched again once that request
    returns, which with fetch.min.bytes=1 is up to ``fetch_max_wait_ms`` when the
    partitions in it have nothing new. The consumer thread builds the consumer when
    it starts, so its factory is wrapped here (before the thread starts). Only the
    fetch cadence changes; offsets, commits and delivery are untouched (with it, the
    kill test found the rebalance paths ``after_seek`` closes)."""
    thread = getattr(consumer, "_thread", None)
    create = getattr(thread, "_create_worker_consumer", None)
    if create is None:  # another transport: nothing to do
        return

    def create_worker_consumer(transport):
        client = create(transport)
        if getattr(client, "_fetch_max_wait_ms", None) is not None:
            client._fetch_max_wait_ms = min(client._fetch_max_wait_ms, wait_ms)
        return client

    thread._create_worker_consumer = create_worker_consumer


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
    stay paused until the seek is done, in aiokafka too: Faust's pause is its own
    bookkeeping only, aiokafka keeps fetching, and a batch Faust then takes while
    the partitions are not active is dropped with their position past it (the
    kill test again: the first record taken after a seek was 78 past the
    committed offset, and the commit covered the hole)."""
    perform_seek = consumer.perform_seek
    resume = consumer.resume_partitions
    held: set = set()
    thread = getattr(consumer, "_thread", None)

    async def aiokafka_pause(tps, paused: bool) -> None:
        # paused in aiokafka, a partition keeps its position and returns nothing
        # (a buffered batch of it is dropped, its position unchanged)
        if thread is None or not tps or not hasattr(thread, "_ensure_consumer"):
            return

        async def call() -> None:
            client = thread._ensure_consumer()
            assigned = client.assignment()
            mine = [t for t in (TopicPartition(tp.topic, tp.partition) for tp in tps) if t in assigned]
            if mine:
                (client.pause if paused else client.resume)(*mine)

        await thread.call_thread(call)

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
        if recovered:
            await aiokafka_pause(set(held), True)
        await perform_seek()
        if recovered:
            assigned = consumer.assignment()
            tps = {tp for tp in held if tp in assigned}
            resume(tps)  # (active for Faust first: once aiokafka returns them, Faust takes them)
            held.clear()
            await aiokafka_pause(tps, False)
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


def committed_offset(consumer, tp: TP) -> int | None:
    """The group's committed offset of ``tp`` as the consumer knows it (None: not committed,
    or not known yet: filled by the seek after a rebalance, see after_seek)."""
    return consumer._committed_offset.get(tp)


def read_offset(consumer, tp: TP) -> int | None:
    """The offset the consumer has read ``tp`` up to (Faust's ``_read_offset``)."""
    return consumer._read_offset.get(tp)


def leave_unacknowledged(message) -> None:
    """A record taken from a stream that must not count as processed: faust-streaming
    0.15.3's ``Message.ack`` skips a message already marked acked, so its offset stays
    out of every commit, and Faust's revocation (which waits for each message taken to
    be acknowledged) does not wait for it."""
    message.acked = True


def partition_documents(table, p: int) -> list:
    """(key bytes, value) of partition ``p`` of ``table``: the RocksDB store keeps one
    database per changelog partition, and only that one is read (recovery only)."""
    store = table.data
    dbs = getattr(store, "_dbs", None)
    if dbs is not None and p in dbs and hasattr(store, "_visible_items"):
        return [(store._decode_key(k), store._decode_value(v)) for k, v in store._visible_items(dbs[p])]
    return list(table.items())  # the memory store, or a partition not opened here


def write_documents(table, p: int, writes) -> None:
    """Write ``(key bytes, value or None)`` to partition ``p`` of ``table``: its local
    store and its changelog.

    Not through the table's mapping API: Faust takes the partition of a table write
    from the event being processed, and the write-back runs in the commit, outside
    any event (faust-streaming 0.15.3: RocksDB ``Store._set`` and
    ``Table.partition_for_key`` read ``current_event()``). The changelog record is the
    one ``Table.on_key_set``/``on_key_del`` would send, with its persisted-offset
    callback."""
    store = table.data
    rocks = hasattr(store, "_db_for_partition")
    db = store._db_for_partition(p) if rocks else None
    for k, doc in writes:
        if doc is None:
            if rocks:
                ek = store._encode_key(k)
                db.delete(ek)
                store._key_index.pop(ek, None)
            else:
                store.data.pop(k, None)
            table.send_changelog(p, k, None, value_serializer="raw")
        else:
            if rocks:
                ek = store._encode_key(k)
                db.put(ek, store._encode_value(doc))
                store._key_index[ek] = p
            else:
                store.data[k] = doc
                store._key_partition[k] = p
            table.send_changelog(p, k, doc)
