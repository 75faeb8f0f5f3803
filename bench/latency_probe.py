"""Where does a Faust worker's input -> output latency come from? A small probe.

    .venv/bin/python bench/latency_probe.py [--rate 150] [--seconds 20] [--variants base,fw100,...]

For each variant: a minimal Faust app (the Faust/aiokafka settings of
shopwatch's ``build_app``: raw serializers, earliest, linger 10 ms, lz4) runs
in a subprocess with one agent reading topic A and ``send_soon``-ing each
record to topic B (value: A's CreateTime). The parent feeds A at ``--rate``
records/s for ``--seconds`` and prints p50/p99 of B.CreateTime - A.CreateTime
(both set by the producers, i.e. the delay inside the worker + its producer).

Variant knobs (one spec per variant, ``+``-joined): ``fwN`` fetch_max_wait_ms=N
on the worker's aiokafka consumer (Faust 0.15.3 hard-codes 1500); ``gate``
shopwatch's commit hook (agents.faust_fixes.write_back_before_commit: before each commit
the agent is paused while the producer is flushed) and ``flush_completely``
on the producer buffer; ``ciS`` commit_interval=S; ``lingerN``
producer_linger_ms=N; ``idle`` the agent also reads 3 more (idle) topics, as
shopwatch's agents do; ``app`` fetch wait as set by agents.app (whatever it
does now). Topics are created with the prefix ``lprobe-<pid>-`` and deleted at
the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
P = 4


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(q * len(xs)))]


# ---------------------------------------------------------------- worker
def worker(args) -> None:
    import faust
    from aiokafka.codec import has_lz4

    spec = set(args.spec.split("+"))
    knobs = {k: v for k, v in (s.split("=", 1) if "=" in s else (s, "") for s in spec)}
    fw = next((int(s[2:]) for s in spec if s.startswith("fw")), None)
    ci = next((float(s[2:]) for s in spec if s.startswith("ci")), None)
    linger = next((int(s[6:]) for s in spec if s.startswith("linger")), 10)
    gate_on = "gate" in spec
    use_app = "app" in spec
    del knobs

    hooks: list = []

    if use_app:  # shopwatch's own App subclass hooks (whatever agents/app.py does now)
        from shopwatch.agents import app as swapp
        class Base(swapp.ShopwatchApp):  # its consumer/producer hooks, not its topic set-up
            async def on_first_start(self) -> None:
                await faust.App.on_first_start(self)
    else:
        Base = faust.App

    class ProbeApp(Base):
        sw_before_commit = hooks

        def _new_producer(self):
            producer = super()._new_producer()
            if gate_on and not use_app:
                from shopwatch.agents.faust_fixes import flush_completely
                flush_completely(producer.buffer)
            return producer

        def _new_consumer(self):
            consumer = super()._new_consumer()
            if gate_on and not use_app:
                from shopwatch.agents.faust_fixes import write_back_before_commit
                write_back_before_commit(consumer, hooks)
            if fw is not None:
                thread = consumer._thread
                create = thread._create_worker_consumer

                def create_worker_consumer(transport, _create=create):
                    c = _create(transport)
                    c._fetch_max_wait_ms = fw  # read by AIOKafkaConsumer.start() for its Fetcher
                    return c

                thread._create_worker_consumer = create_worker_consumer
            return consumer

    extra = {}
    if ci is not None:
        extra["broker_commit_interval"] = ci
    app = ProbeApp(
        f"{args.prefix}app",
        broker=f"kafka://{args.bootstrap}",
        datadir=args.datadir,
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=P,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        producer_linger_ms=linger,
        producer_compression_type="lz4" if has_lz4() else "gzip",
        web_enabled=False,
        topic_disable_leader=True,
        **extra,
    )

    def topic(name):
        return app.topic(args.prefix + name, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw", partitions=P, replicas=1)

    a, b = topic("A"), topic("B")
    ins = [a] + ([topic(f"idle{i}") for i in range(3)] if "idle" in spec else [])
    gate = asyncio.Event()
    gate.set()

    async def write_back():  # what topology.write_back does around the records: pause, flush
        gate.clear()
        try:
            await app.producer.flush()
        finally:
            gate.set()

    if gate_on:
        hooks.append(write_back)

    @app.agent(app.topic(*[t.get_topic_name() for t in ins], key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw"), name="probe", concurrency=1)
    async def probe(stream):
        async for event in stream.events():
            if not gate.is_set():
                await gate.wait()
            m = event.message
            b.send_soon(key=m.key, value=str(int(m.timestamp * 1000)).encode())

    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
    app.main()


# ---------------------------------------------------------------- driver
async def create_topics(bootstrap, names):
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, P, 1) for n in names])
    finally:
        await admin.close()


async def delete_topics(bootstrap, prefix):
    from aiokafka.admin import AIOKafkaAdminClient
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


async def run_variant(args, spec: str, idx: int) -> dict:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    prefix = f"lprobe-{os.getpid()}-{idx}-"
    names = [prefix + n for n in ("A", "B", "idle0", "idle1", "idle2")]
    await create_topics(args.bootstrap, names)
    await asyncio.sleep(2)  # leaders elected
    datadir = tempfile.mkdtemp(prefix="lprobe-")
    cmd = [sys.executable, __file__, "_worker", "--spec", spec, "--prefix", prefix,
           "--bootstrap", args.bootstrap, "--datadir", datadir]
    log = open(Path(datadir) / "worker.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT))
    c = AIOKafkaConsumer(bootstrap_servers=args.bootstrap, group_id=None, auto_offset_reset="earliest",
                         enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=0)
    await c.start()
    await producer.start()
    c.assign([TopicPartition(prefix + "B", p) for p in range(P)])
    lat: list[float] = []
    try:
        # warm-up: wait until the worker forwards
        t0 = time.monotonic()
        seen = False
        while not seen:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited {proc.returncode}; see {log.name}")
            if time.monotonic() - t0 > 90:
                raise RuntimeError("worker not forwarding after 90 s")
            await producer.send_and_wait(prefix + "A", b"warm", key=b"warm")
            batch = await c.getmany(timeout_ms=1000)
            seen = any(batch.values())
        await asyncio.sleep(3)
        while any((await c.getmany(timeout_ms=300)).values()):
            pass
        n = int(args.rate * args.seconds)
        stop = asyncio.Event()
        got = 0

        async def receive():
            nonlocal got
            while not stop.is_set():
                batch = await c.getmany(timeout_ms=200)
                for msgs in batch.values():
                    for m in msgs:
                        if m.key and m.key.startswith(b"k"):
                            lat.append(m.timestamp - int(m.value))
                            got += 1
                if got >= n:
                    stop.set()

        rx = asyncio.create_task(receive())
        loop = asyncio.get_running_loop()
        start = loop.time()
        futs = []
        for i in range(n):
            d = start + i / args.rate - loop.time()
            if d > 0:
                await asyncio.sleep(d)
            futs.append(await producer.send(prefix + "A", b"x", key=f"k{i}".encode()))
        await asyncio.gather(*futs)
        try:
            await asyncio.wait_for(stop.wait(), 15)
        except TimeoutError:
            pass
        stop.set()
        await rx
    finally:
        await producer.stop()
        await c.stop()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        await delete_topics(args.bootstrap, prefix)
    return {"spec": spec, "n": int(args.rate * args.seconds), "seen": len(lat), "p50": pct(lat, .5),
            "p90": pct(lat, .9), "p99": pct(lat, .99), "max": max(lat) if lat else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", nargs="?", default="run", choices=["run", "_worker"])
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    ap.add_argument("--rate", type=float, default=150)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--variants", default="base,fw100,gate,gate+fw100,gate+ci1,gate+linger0,idle,idle+fw100")
    ap.add_argument("--spec", default="base")
    ap.add_argument("--prefix", default="")
    ap.add_argument("--datadir", default="")
    args = ap.parse_args()
    if args.mode == "_worker":
        worker(args)
        return
    print(f"{'variant':28s} {'seen':>9s} {'p50 ms':>7s} {'p90 ms':>7s} {'p99 ms':>7s} {'max ms':>7s}", flush=True)
    for i, spec in enumerate(args.variants.split(",")):
        try:
            r = asyncio.run(run_variant(args, spec, i))
        except Exception as exc:  # noqa: BLE001
            print(f"{spec:28s} failed: {exc!r}", flush=True)
            continue
        print(f"{spec:28s} {r['seen']:4d}/{r['n']:4d} {r['p50']:7.0f} {r['p90']:7.0f} {r['p99']:7.0f} "
              f"{r['max']:7.0f}", flush=True)
        if args.__dict__.get("json"):
            print(json.dumps(r))


if __name__ == "__main__":
    main()
