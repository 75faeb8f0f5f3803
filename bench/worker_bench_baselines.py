"""The baseline consumers of bench/worker_bench.py, one per subprocess.

usage: python bench/worker_bench_baselines.py {bare,faust-noop,faust-drain,faust-rocks} --bootstrap B
           --topics T1,T2,... --partitions P --expect N --out RESULT.json
           [--app-id ID] [--data-dir DIR] [--timeout S]

Each reads every record of the given topics once (from the beginning) and
writes ``{"records", "wall_s", "cpu_s", ...}`` to RESULT.json, measured from
the first record to the last one (``bare``: from its ``assign()``, as
aiokafka's first fetch can bring most of the input before the first record is
in hand): wall by ``time.perf_counter`` and CPU as user+system time of this
process (every thread: Faust's consumer thread included) by
``resource.getrusage(RUSAGE_SELF)``. Start-up (imports,
group join, Faust's service tree) is outside the span.

- ``bare``: an aiokafka consumer assigned every partition (no group), a
  ``getmany`` loop, ``orjson.loads`` of each value;
- ``faust-noop``: a Faust app, one agent per topic, ``orjson.loads`` and a
  dict increment per record, no table;
- ``faust-drain``: the same Faust app without agents or streams: each topic's
  channel is iterated by one task that takes whatever its queue holds at once
  (a batch below ``Stream``: Faust's consumer, conductor, group membership,
  acks and commits stay), ``orjson.loads`` and a dict increment per record, then
  acknowledges each record (``Message.ack``);
- ``faust-rocks``: the no-op agents plus one write per record to a RocksDB table
  (``app.Table(..., store='rocksdb://')``): a counter keyed by the record key.

The Faust apps stop themselves (SIGTERM to their own process) once they have
seen ``--expect`` records.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import sys
import time

import orjson


def _now() -> tuple[float, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), ru.ru_utime + ru.ru_stime


def _write(path: str, n: int, first, last, **extra) -> None:
    res = {"records": n, "wall_s": last[0] - first[0], "cpu_s": last[1] - first[1], **extra}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f)
    os.replace(tmp, path)


async def bare(args) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=args.bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest")
    await c.start()
    try:
        tps = [TopicPartition(t, p) for t in args.topics.split(",") for p in range(args.partitions)]
        loads = orjson.loads
        n = 0
        # aiokafka's fetcher starts on assign() and its first fetch can bring most of a small
        # input at once: the span starts here, before it, not at the first record in hand
        first = _now()
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        deadline = time.monotonic() + args.timeout
        while n < args.expect and time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=500)
            for msgs in batch.values():
                for m in msgs:
                    try:
                        loads(m.value)
                    except orjson.JSONDecodeError:
                        pass
                n += len(msgs)
        last = _now()
        _write(args.out, n, first, last)
    finally:
        await c.stop()


def faust_app(args, rocks: bool, drain: bool = False) -> None:
    import faust

    app = faust.App(
        args.app_id,
        broker="kafka://" + args.bootstrap,
        datadir=args.data_dir,
        store="rocksdb://" if rocks else "memory://",
        autodiscover=False,
        web_enabled=False,
        topic_partitions=args.partitions,
        topic_disable_leader=True,  # no timers: no leader topic
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
    )
    table = None
    if rocks:
        table = app.Table("counts", default=int, store="rocksdb://", partitions=args.partitions, key_type=bytes,
                          schema=faust.Schema(key_type=bytes, key_serializer="raw", value_serializer="json"),
                          options={"driver": "rocksdict"})
    state = {"n": 0, "first": None, "done": False}
    counts: dict = {}
    loads = orjson.loads
    expect = args.expect

    def seen() -> None:
        if state["first"] is None:
            state["first"] = _now()
        state["n"] += 1
        if state["n"] >= expect and not state["done"]:
            state["done"] = True
            _write(args.out, state["n"], state["first"], _now())
            os.kill(os.getpid(), signal.SIGTERM)  # Faust's worker stops cleanly on it

    def noop(ev) -> None:  # what the no-op agents (and the drained channels) do with a record
        try:
            loads(ev.value)
        except orjson.JSONDecodeError:
            pass
        counts[ev.key] = counts.get(ev.key, 0) + 1
        seen()

    async def drain_channel(chan) -> None:  # take whatever the channel's queue holds at once
        queue, consumer = chan.queue, app.consumer
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            for ev in batch:
                noop(ev)
                ev.message.ack(consumer)

    def drainer(chan):
        async def drain_task():  # (a task with no parameter: Faust passes the app to one)
            await drain_channel(chan)
        return drain_task

    for i, name in enumerate(args.topics.split(",")):
        topic = app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

        if drain:
            app.task(drainer(topic.__aiter__()))  # the conductor delivers to it from now on
            continue
        if rocks:
            async def agent(stream):
                async for ev in stream.events():
                    try:
                        d = loads(ev.value)
                    except orjson.JSONDecodeError:
                        d = None
                    del d
                    table[ev.key or b"-"] += 1
                    seen()
        else:
            async def agent(stream):
                async for ev in stream.events():
                    noop(ev)

        app.agent(topic, name=f"bench-{i}", concurrency=1)(agent)

    worker = faust.Worker(app, loglevel="warning", quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit:
        pass


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("bare", "faust-noop", "faust-drain", "faust-rocks"))
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topics", required=True)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--app-id", default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args()
    if args.mode == "bare":
        asyncio.run(bare(args))
    else:
        faust_app(args, rocks=args.mode == "faust-rocks", drain=args.mode == "faust-drain")
    return 0


if __name__ == "__main__":
    sys.exit(main())
