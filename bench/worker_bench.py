"""Worker speed on the real broker, side by side with three baseline consumers.

usage: python bench/worker_bench.py [--events N] [--seed S] [--shops N] [--days D]
           [--bootstrap HOST:PORT] [--latency-seconds S] [--latency-cap R] [--latency-shops N]
           [--steps a,b,d,c,w1,w2,latency] [--keep]

One run, one broker (loopback only), one input: ``shopwatch simulate`` output
produced once into four prefixed input topics (4 partitions each, keyed by
order_id / session_id as the tests do). Then, one after another (the machine
may have 2 cores), each in its own subprocess:

- ``a`` bare aiokafka consumer + ``orjson.loads`` (``getmany`` loop);
- ``b`` a no-op Faust app: one agent per input topic, ``orjson.loads`` and a
  dict increment, no table;
- ``d`` the same Faust app without agents: each topic's channel drained in
  batches by a task (how much of ``b`` is Faust's per-message ``Stream``);
- ``c`` the same Faust app with one RocksDB table write per record (a counter
  keyed by the record key);
- the shopwatch worker on the event clock, 1 worker and then 2 workers (own app
  id, data dir and topic prefix for their internal topics; the input topics are
  the shared ones, through ``SHOPWATCH_TOPIC_ORDERS`` ...).

Baselines are timed inside the child from its first record to its last (Faust
takes seconds to start; bench/worker_bench_baselines.py). The workers are
timed from the first record any of them consumed (their /metrics) until the
group has committed the four input topics to their end and the shop agents
have committed ``shop.contribs`` to where it ended then; CPU is user+system
time of the worker processes (``/proc/<pid>/stat``) over that span. The 2
workers start together; the first to join the group starts alone and hands
half its partitions over at the rebalance when the second joins (records it
had not committed are processed again). Each worker run then ends its
backfill with ``shopwatch tick --until <last event time>`` and waits until
the workers are idle; that part is shown apart, and the whole backfill's
rates with it (with 2 workers, Faust's standby replicas are still reading
each other's changelogs when the input is committed).

After the 1-worker run: the bytes (key + value) of its changelog topics and of
its shop.contribs / shop.ticks / shop.alerts / shop.scores / shop.dlq per
input record, beside the bytes the broker stores for each (its log size: the
producer's lz4 batches with their headers; from ``kafka-log-dirs.sh
--describe`` when it is on the PATH or in $KAFKA_HOME/bin, else the same Admin
API call through the Kafka jars deploy/kafka/kafka.sh caches and ``java``;
"n/a" without either), and its RSS after the backfill. Then a worker on the wall
clock: RSS and CPU idle, and the latency from producing a
``shipment.exception`` (for an order paid a minute earlier; orders spread over
``--latency-shops`` shops) to its ``carrier_exception`` alert on shop.alerts,
at half the 1-worker events/s (capped at ``--latency-cap``) for
``--latency-seconds``, by the consumer's receipt time and by the alert
record's CreateTime. RSS per order = (RSS after the 1-worker backfill - idle
RSS of the wall-clock worker) / distinct order_ids of the input: an upper
bound, as it includes the RocksDB memtables and caches the backfill filled.

Prints progress on stderr and one table on stdout. A benchmark, not a test:
ratios are printed, nothing is asserted. Every topic it creates (one unique
prefix), every subprocess and its temporary directory are removed at the end.
Wall figures depend on what else runs on the machine (the load average is in
the header); CPU figures much less.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
from _common import (  # bench/ is on sys.path when a bench runs
    BenchError,
    Proc,
    begin,
    cpu_s,
    create_topics,
    delete_topics,
    free_port,
    list_topics,
    loadavg,
    machine,
    not_loopback,
    rss_mib,
    say,
    set_label,
    stop_all,
)

from shopwatch.schemas.events import TOPIC_OF_TYPE, InvalidEvent, decode, key_of

set_label("worker-bench")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
P = 4
INPUTS = ("shop.orders", "shop.shipments", "shop.refunds", "shop.chats")
INTERNAL = ("shop.contribs", "shop.ticks", "shop.alerts", "shop.scores", "shop.dlq")
CST = timezone(timedelta(hours=8))


# ---------------------------------------------------------------- machine


# ------------------------------------------------------------ processes


# ---------------------------------------------------------------- Kafka


async def produce(bootstrap: str, records: list[tuple[str, bytes | None, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        futs = [await producer.send(t, key=k, value=v) for t, k, v in records]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def topic_bytes(bootstrap: str, topics: list[str]) -> dict[str, tuple[int, int]]:
    """{topic: (records, key+value bytes)} of everything on ``topics`` now."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", max_partition_fetch_bytes=4 << 20)
    await c.start()
    try:
        tps = []
        for t in topics:
            parts = c.partitions_for_topic(t)
            if parts is None:
                await c._client.force_metadata_update()
                parts = c.partitions_for_topic(t) or set()
            tps += [TopicPartition(t, p) for p in sorted(parts)]
        ends = await c.end_offsets(tps)
        todo = {tp for tp in tps if ends[tp] > 0}
        out = {t: [0, 0] for t in topics}
        if not todo:
            return {t: (0, 0) for t in topics}
        c.assign(list(todo))
        await c.seek_to_beginning(*todo)
        deadline = time.monotonic() + 120
        while todo and time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=500)
            for tp, msgs in batch.items():
                acc = out[tp.topic]
                for m in msgs:
                    if m.offset < ends[tp]:
                        acc[0] += 1
                        acc[1] += len(m.key or b"") + len(m.value or b"")
            for tp in list(todo):
                if await c.position(tp) >= ends[tp]:
                    todo.discard(tp)
        if todo:
            raise BenchError(f"could not read {sorted(str(tp) for tp in todo)} to the end")
        return {t: (n, b) for t, (n, b) in out.items()}
    finally:
        await c.stop()


# The size of each partition's log on the broker (what it stores: the producer's compressed
# batches), from the Admin API of the Kafka jars deploy/kafka/kafka.sh caches, when the
# Kafka distribution's kafka-log-dirs.sh is not at hand (kafka.sh fetches no distribution).
LOG_DIRS_JAVA = r"""
import java.util.*;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;

public class LogDirs {
    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        Set<String> topics = new HashSet<>(Arrays.asList(args[1].split(",")));
        try (Admin admin = Admin.create(p)) {
            List<Integer> ids = new ArrayList<>();
            for (Node n : admin.describeCluster().nodes().get(60, TimeUnit.SECONDS)) ids.add(n.id());
            var all = admin.describeLogDirs(ids).allDescriptions().get(60, TimeUnit.SECONDS);
            for (var broker : all.entrySet())
                for (var dir : broker.getValue().values())
                    for (var r : dir.replicaInfos().entrySet()) {
                        TopicPartition tp = r.getKey();
                        if (topics.contains(tp.topic()) && !r.getValue().isFuture())
                            System.out.println(tp.topic() + "\t" + tp.partition() + "\t" + r.getValue().size());
                    }
        }
    }
}
"""


def kafka_jars() -> Path | None:
    """The Kafka jars deploy/kafka/kafka.sh fetched (its KAFKA_CACHE_DIR / KAFKA_VERSION defaults)."""
    cache = os.environ.get("KAFKA_CACHE_DIR") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shopwatch"
        / f"kafka-{os.environ.get('KAFKA_VERSION', '4.1.2')}")
    libs = Path(cache) / "libs"
    return libs if (libs / ".complete").exists() else None


def log_dir_bytes(bootstrap: str, topics: list[str], tmp: Path) -> tuple[dict[str, int] | None, str]:
    """({topic: bytes of its logs on the brokers, every partition and replica}, how it was asked),
    or (None, why not): kafka-log-dirs.sh --describe (on the PATH or in $KAFKA_HOME/bin), else the
    same Admin API call through the jars deploy/kafka/kafka.sh caches (java on the PATH)."""
    out: dict[str, int] = dict.fromkeys(topics, 0)
    tool = shutil.which("kafka-log-dirs.sh") or shutil.which("kafka-log-dirs")
    if tool is None and os.environ.get("KAFKA_HOME"):
        cand = Path(os.environ["KAFKA_HOME"]) / "bin" / "kafka-log-dirs.sh"
        tool = str(cand) if cand.exists() else None
    try:
        if tool is not None:
            r = subprocess.run([tool, "--describe", "--bootstrap-server", bootstrap, "--topic-list", ",".join(topics)],
                               capture_output=True, text=True, timeout=120)
            line = next((x for x in r.stdout.splitlines() if x.startswith("{")), None)
            if r.returncode != 0 or line is None:
                return None, f"{tool} failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-200:]}"
            for b in json.loads(line)["brokers"]:
                for d in b["logDirs"]:
                    for part in d.get("partitions") or ():
                        t = part["partition"].rsplit("-", 1)[0]
                        if t in out and not part.get("isFuture"):
                            out[t] += part["size"]
            return out, "kafka-log-dirs.sh"
        libs, java = kafka_jars(), shutil.which("java")
        if libs is None or java is None:
            return None, "no kafka-log-dirs.sh, and no Kafka jars of deploy/kafka/kafka.sh or no java"
        src = tmp / "LogDirs.java"
        src.write_text(LOG_DIRS_JAVA)
        log4j = tmp / "log4j2.properties"
        log4j.write_text("status = error\nrootLogger.level = ERROR\n")
        r = subprocess.run([java, "-Xmx128m", f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*", str(src),
                            bootstrap, ",".join(topics)], capture_output=True, text=True, timeout=180)
        if r.returncode != 0:
            return None, f"Admin.describeLogDirs failed ({r.returncode}): {r.stderr.strip()[-200:]}"
        for line in r.stdout.splitlines():
            t, _p, size = line.split("\t")
            if t in out:
                out[t] += int(size)
        return out, f"Admin.describeLogDirs (the Kafka jars in {libs.parent})"
    except (OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


class GroupWatch:
    """Committed offsets of a consumer group against topic end offsets (long-lived clients)."""

    def __init__(self, bootstrap: str, group: str) -> None:
        self.bootstrap = bootstrap
        self.group = group

    async def __aenter__(self):
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        self.admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
        await self.admin.start()
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc):
        await self.consumer.stop()
        await self.admin.close()

    async def ends(self, topics) -> dict:
        from aiokafka import TopicPartition

        return await self.consumer.end_offsets([TopicPartition(t, p) for t in topics for p in range(P)])

    async def behind(self, ends: dict) -> int:
        """Records of ``ends`` ({tp: end offset}) not committed by the group yet."""
        committed = await self.admin.list_consumer_group_offsets(self.group)
        return sum(max(0, end - (committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0))
                   for tp, end in ends.items())


# ------------------------------------------------------------- HTTP

def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


_SAMPLE = re.compile(rb"^(shopwatch_(?:events|invalid_events)_total)\{[^}]*\} ([0-9.eE+-]+)$", re.M)


def consumed(port: int) -> float:
    """Valid + invalid input records the worker counted (its /metrics); -1 while it does not answer."""
    try:
        st, body = http_get(port, "/metrics", timeout=2.0)
    except OSError:
        return -1.0
    if st != 200:
        return -1.0
    return sum(float(v) for _name, v in _SAMPLE.findall(body))


def wait_ready(w: Proc, port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        w.check()
        try:
            st, _ = http_get(port, "/readyz")
            if st == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise BenchError(f"{w.name} not ready after {timeout:.0f}s:\n{w.tail()}")


# ------------------------------------------------------------- the bench

def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, CST).isoformat()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    i = min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))
    return xs[i]


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.bootstrap = args.bootstrap
        self.base = f"wbench-{int(time.time())}-{uuid.uuid4().hex[:8]}-"
        self.tmp = Path(tempfile.mkdtemp(prefix="shopwatch-worker-bench-"))
        self.inputs = {t: f"{self.base}in.{t}" for t in INPUTS}
        self.rows: dict[str, dict] = {}
        self.notes: list[str] = []
        self.extra: dict = {}
        self.load_start = loadavg()
        self.wanted: set[str] = set()

    # ---------------------------------------------------------- input
    def make_input(self) -> None:
        path = self.tmp / "events.jsonl"
        a = self.args
        cmd = [sys.executable, "-m", "shopwatch.agents.cli", "simulate", "--seed", str(a.seed), "--shops",
               str(a.shops), "--days", str(a.days), "--events", str(a.events), "--out", str(path), "--quiet"]
        say("simulating: " + " ".join(cmd[3:]))
        subprocess.run(cmd, check=True, cwd=ROOT)
        records = []
        orders = set()
        invalid = 0
        max_us, max_ts = 0, None
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                ev = decode(line)
            except InvalidEvent:
                invalid += 1
                records.append((self.inputs["shop.orders"], None, line))  # dead-lettered by the worker
                continue
            records.append((self.inputs[TOPIC_OF_TYPE[ev["type"]]], key_of(ev).encode(), line))
            if ev.get("order_id"):
                orders.add(ev["order_id"])
            if ev["ts_us"] > max_us:
                max_us, max_ts = ev["ts_us"], ev["ts"]
        self.records = records
        self.n = len(records)
        self.orders = len(orders)
        self.invalid = invalid
        self.until = max_ts
        self.input_bytes = sum(len(k or b"") + len(v) for _t, k, v in records)
        per_topic = {t: sum(1 for r in records if r[0] == name) for t, name in self.inputs.items()}
        say(f"input: {self.n} records ({invalid} malformed), {self.orders} orders, last event {max_ts}; "
            + ", ".join(f"{t} {n}" for t, n in per_topic.items()))
        asyncio.run(create_topics(self.bootstrap, list(self.inputs.values()), P))
        w0 = time.perf_counter()
        asyncio.run(produce(self.bootstrap, records))
        say(f"produced {self.n} records to {self.base}in.* in {time.perf_counter() - w0:.1f}s")

    # ------------------------------------------------------- baselines
    def baseline(self, key: str, label: str, mode: str) -> None:
        out = self.tmp / f"{mode}.json"
        app_id = f"{self.base}{mode}"
        data = self.tmp / f"data-{mode}"
        data.mkdir()
        if mode == "faust-rocks":  # Faust's own creation of a changelog can race its first metadata
            asyncio.run(create_topics(self.bootstrap, [f"{app_id}-counts-changelog"], P,
                                      configs={f"{app_id}-counts-changelog": {"cleanup.policy": "compact"}}))
        cmd = [sys.executable, str(HERE / "worker_bench_baselines.py"), mode, "--bootstrap", self.bootstrap,
               "--topics", ",".join(self.inputs.values()), "--partitions", str(P), "--expect", str(self.n),
               "--out", str(out), "--app-id", app_id, "--data-dir", str(data), "--timeout", "240"]
        say(f"baseline {key}: {label}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPWATCH_")}
        p = Proc(f"baseline {mode}", cmd, env, self.tmp / f"{mode}.log", self.tmp)
        try:
            deadline = time.monotonic() + 240
            while not out.exists():
                if not p.alive():
                    raise BenchError(f"{mode} exited with {p.proc.returncode} before its result:\n{p.tail()}")
                if time.monotonic() > deadline:
                    raise BenchError(f"{mode}: no result after 240s:\n{p.tail()}")
                time.sleep(0.2)
            res = json.loads(out.read_text())
        finally:
            p.stop(timeout=30)
        self.rows[key] = {"label": label, "n": res["records"], "wall": res["wall_s"], "cpu": res["cpu_s"]}
        say(f"  {res['records']} records in {res['wall_s']:.2f}s wall, {res['cpu_s']:.2f}s CPU")
        if res["records"] != self.n:
            self.notes.append(f"{key}: read {res['records']} of {self.n} records")

    # --------------------------------------------------------- workers
    def worker_env(self, prefix: str, clock: str, port: int, data: Path, shared_inputs: bool) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPWATCH_")}
        env.update(KAFKA_BOOTSTRAP=self.bootstrap, SHOPWATCH_TOPIC_PREFIX=prefix, SHOPWATCH_APP_ID=prefix + "shopwatch",
                   SHOPWATCH_PARTITIONS=str(P), SHOPWATCH_CLOCK=clock, SHOPWATCH_DATA_DIR=str(data),
                   SHOPWATCH_WEB_PORT=str(port), SHOPWATCH_WEB_BIND="127.0.0.1", PYTHONUNBUFFERED="1")
        if shared_inputs:
            for t, name in self.inputs.items():
                env["SHOPWATCH_TOPIC_" + t.split(".", 1)[1].upper()] = name
        return env

    def start_worker(self, name: str, env: dict) -> Proc:
        cmd = [sys.executable, "-m", "shopwatch.agents.cli", "worker", "-l", "info"]
        return Proc(name, cmd, env, self.tmp / f"{name}.log", self.tmp)

    def worker_run(self, key: str, k: int) -> None:
        prefix = f"{self.base}{key}."
        group = prefix + "shopwatch"
        envs = [self.worker_env(prefix, "event", free_port(), self.tmp / f"data-{key}-{i}", True) for i in range(k)]
        say(f"{k} worker(s), event clock, app id {group}")
        workers = [self.start_worker(f"{key}-w{i}", e) for i, e in enumerate(envs)]
        ports = [int(e["SHOPWATCH_WEB_PORT"]) for e in envs]
        try:
            # the span starts at the first record any of them consumed
            deadline = time.monotonic() + 120
            while True:
                for w in workers:
                    w.check()
                if any(consumed(p) > 0 for p in ports):
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"no worker consumed anything within 120s:\n{workers[0].tail()}")
                time.sleep(0.1)
            t_first = time.perf_counter()
            c_first = [cpu_s(w.pid) for w in workers]
            say("  first record consumed; waiting for the input to be committed and the shops to catch up")
            asyncio.run(self._wait_drained(workers, group, prefix))
            t_end = time.perf_counter()
            c_end = [cpu_s(w.pid) for w in workers]
            rss = [rss_mib(w.pid) for w in workers]
            counted = sum(max(0.0, consumed(p)) for p in ports)
            wall, cpu = t_end - t_first, sum(c_end) - sum(c_first)
            row = {"label": f"shopwatch worker x{k} (event clock)", "n": self.n, "wall": wall, "cpu": cpu,
                   "rss": rss, "counted": counted,
                   "cpu_each": [e - f for e, f in zip(c_end, c_first, strict=True)]}
            say(f"  drained in {wall:.1f}s wall, {cpu:.1f}s CPU ({', '.join(f'{c:.1f}' for c in row['cpu_each'])}); "
                f"RSS {', '.join(f'{r:.0f}' for r in rss)} MiB; records counted by the workers: {counted:.0f}")
            if counted != self.n:
                self.notes.append(f"x{k}: the workers counted {counted:.0f} input records for {self.n} produced "
                                  "(records processed again after a rebalance count twice)")
            # end of the backfill: the clock moved to the last event time, then until the workers
            # are idle (with 2 workers, Faust's standby replicas are still reading each other's
            # changelogs when the input is committed)
            say(f"  shopwatch tick --until {self.until}, then until the workers are idle")
            r = subprocess.run([sys.executable, "-m", "shopwatch.agents.cli", "tick", "--until", self.until],
                               env=envs[0], cwd=self.tmp, capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                raise BenchError(f"tick failed ({r.returncode}): {r.stderr.strip()}")
            asyncio.run(self._wait_tick(workers, group, prefix))
            t_q, c_q = self._quiesce(workers)
            row["end_wall"], row["end_cpu"] = t_q - t_end, c_q - sum(c_end)
            say(f"  tick applied and workers idle after {row['end_wall']:.1f}s wall, {row['end_cpu']:.1f}s CPU more")
            self.rows[key] = row
            if k == 1:
                self.measure_bytes(prefix, group)
        finally:
            for w in workers:
                code = w.stop(timeout=60)
                if code not in (0, None):
                    self.notes.append(f"{w.name} exited with {code} on SIGTERM")

    @staticmethod
    def _quiesce(workers, per_worker: float = 0.2, quiet: float = 2.0, timeout: float = 90.0) -> tuple[float, float]:
        """(perf_counter time, summed CPU s) from which on the workers used less than
        ``per_worker`` of a core each for ``quiet`` seconds (or at ``timeout``)."""
        deadline = time.perf_counter() + timeout
        prev = (time.perf_counter(), sum(cpu_s(w.pid) for w in workers))
        since = None
        while time.perf_counter() < deadline:
            time.sleep(0.5)
            now = (time.perf_counter(), sum(cpu_s(w.pid) for w in workers))
            if (now[1] - prev[1]) / (now[0] - prev[0]) < per_worker * len(workers):
                since = since or prev
                if now[0] - since[0] >= quiet:
                    return since
            else:
                since = None
            prev = now
        return prev

    async def _wait_drained(self, workers, group: str, prefix: str, timeout: float = 300.0) -> None:
        async with GroupWatch(self.bootstrap, group) as gw:
            in_ends = await gw.ends(self.inputs.values())
            deadline = time.monotonic() + timeout
            contrib_ends = None
            while time.monotonic() < deadline:
                for w in workers:
                    w.check()
                if contrib_ends is None:
                    if await gw.behind(in_ends) == 0:
                        contrib_ends = await gw.ends([prefix + "shop.contribs"])
                        continue
                elif await gw.behind(contrib_ends) == 0:
                    return
                await asyncio.sleep(0.25)
            left = await gw.behind(in_ends)
            raise BenchError(f"not drained after {timeout:.0f}s (input records not committed: {left}):\n"
                             + workers[0].tail())

    async def _wait_tick(self, workers, group: str, prefix: str, timeout: float = 120.0) -> None:
        """Until the order agents committed shop.ticks past the tick, then the shops shop.contribs."""
        async with GroupWatch(self.bootstrap, group) as gw:
            deadline = time.monotonic() + timeout
            for topic in (prefix + "shop.ticks", prefix + "shop.contribs"):
                ends = await gw.ends([topic])
                while await gw.behind(ends):
                    for w in workers:
                        w.check()
                    if time.monotonic() > deadline:
                        raise BenchError(f"tick not settled after {timeout:.0f}s ({topic})")
                    await asyncio.sleep(0.25)

    def measure_bytes(self, prefix: str, group: str) -> None:
        names = asyncio.run(list_topics(self.bootstrap))
        changelogs = sorted(t for t in names if t.startswith(group + "-") and t.endswith("-changelog"))
        internal = [prefix + t for t in INTERNAL if prefix + t in names]
        say(f"  reading {len(changelogs)} changelog and {len(internal)} output topics")
        got = asyncio.run(topic_bytes(self.bootstrap, changelogs + internal))

        def short(t: str) -> str:
            return t[len(group) + 1:] if t in changelogs else t[len(prefix):]

        self.extra["bytes"] = {short(t): v for t, v in got.items()}
        self.extra["changelogs"] = [t[len(group) + 1:] for t in changelogs]
        disk, how = log_dir_bytes(self.bootstrap, changelogs + internal, self.tmp)
        self.extra["disk"] = None if disk is None else {short(t): v for t, v in disk.items()}
        self.extra["disk_how"] = how
        say(f"  log sizes on the broker: {how}")

    # --------------------------------------------------------- latency
    def latency(self) -> None:
        prefix = f"{self.base}lat."
        port = free_port()
        env = self.worker_env(prefix, "wall", port, self.tmp / "data-lat", False)
        rate1 = self.rows.get("w1")
        rate = self.args.latency_cap if rate1 is None else min(self.args.latency_cap, 0.5 * rate1["n"] / rate1["wall"])
        rate = max(1.0, rate)
        n = max(1, int(rate * self.args.latency_seconds))
        say(f"wall-clock worker: latency at {rate:.0f} shipment.exception/s for {self.args.latency_seconds:.0f}s "
            f"({n} orders)")
        w = self.start_worker("lat-w0", env)
        try:
            wait_ready(w, port)
            time.sleep(2)
            idle0 = self._idle_cpu(w)
            self.extra["idle_rss"] = rss_mib(w.pid)
            say(f"  idle RSS {self.extra['idle_rss']:.0f} MiB, idle CPU {idle0:.0f}% of a core")
            res = asyncio.run(self._latency(prefix, port, w, rate, n))
            res["idle_cpu_before"] = idle0
            res["idle_cpu_after"] = self._idle_cpu(w)
            res["rss_after"] = rss_mib(w.pid)
            say(f"  after the run (nothing produced any more): CPU {res['idle_cpu_after']:.0f}% of a core, "
                f"RSS {res['rss_after']:.0f} MiB")
            self.extra["latency"] = res
        finally:
            code = w.stop(timeout=60)
            if code not in (0, None):
                self.notes.append(f"{w.name} exited with {code} on SIGTERM")

    @staticmethod
    def _idle_cpu(w: Proc, seconds: float = 5.0) -> float:
        """CPU use of ``w`` over ``seconds`` with no input, in % of one core."""
        c0, t0 = cpu_s(w.pid), time.perf_counter()
        time.sleep(seconds)
        return 100 * (cpu_s(w.pid) - c0) / (time.perf_counter() - t0)

    async def _latency(self, prefix: str, port: int, w: Proc, rate: float, n: int) -> dict:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

        platforms = ("xiaohongshu", "douyin", "kuaishou", "jd", "tmall")
        shops = max(1, self.args.latency_shops or n)

        def order(i: int) -> tuple[str, str, str]:
            return f"lat-{i:06d}", platforms[i % 5], f"lat-shop-{i % shops}"

        now = time.time()
        paid = []
        for i in range(n):
            oid, pf, shop = order(i)
            ev = {"event_id": f"lat-p-{i}", "type": "order.paid", "ts": iso(now - 60), "platform": pf,
                  "shop_id": shop, "order_id": oid, "amount_fen": 1000}
            paid.append((prefix + "shop.orders", oid.encode(), orjson.dumps(ev)))
        await produce(self.bootstrap, paid)
        deadline = time.monotonic() + 120
        while consumed(port) < n:
            w.check()
            if time.monotonic() > deadline:
                raise BenchError(f"the wall-clock worker did not consume the {n} order.paid within 120s")
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)

        c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="latest")
        tps = [TopicPartition(prefix + "shop.alerts", p) for p in range(P)]
        await c.start()
        c.assign(tps)
        await c.seek_to_end(*tps)
        for tp in tps:
            await c.position(tp)
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=0)
        await producer.start()
        sent: dict[str, float] = {}
        got: dict[str, tuple[float, float]] = {}
        stop = asyncio.Event()

        async def receive():
            while not stop.is_set():
                batch = await c.getmany(timeout_ms=200)
                t = time.time()
                for msgs in batch.values():
                    for m in msgs:
                        a = orjson.loads(m.value)
                        if a.get("kind") == "carrier_exception" and a.get("status") == "firing":
                            got.setdefault(a["order_id"], (t, m.timestamp / 1000))
                if len(got) >= n and len(sent) >= n:
                    stop.set()

        rx = asyncio.create_task(receive())
        c0 = cpu_s(w.pid)
        try:
            loop = asyncio.get_running_loop()
            start = loop.time()
            futs = []
            for i in range(n):
                delay = start + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                oid, pf, shop = order(i)
                t = time.time()
                ev = {"event_id": f"lat-x-{i}", "type": "shipment.exception", "ts": iso(t), "platform": pf,
                      "shop_id": shop, "order_id": oid, "reason": "lost"}
                sent[oid] = t
                futs.append(await producer.send(prefix + "shop.shipments", orjson.dumps(ev), key=oid.encode()))
            achieved = n / max(1e-9, loop.time() - start)
            await asyncio.gather(*futs)
            try:
                await asyncio.wait_for(stop.wait(), 20)
            except TimeoutError:
                pass
            worker_cpu = cpu_s(w.pid) - c0  # from the first exception sent to the last alert seen (or 20 s)
        finally:
            stop.set()
            await rx
            await producer.stop()
            await c.stop()
        # in the order sent (dicts keep insertion order)
        recv = [(got[o][0] - t) * 1000 for o, t in sent.items() if o in got]
        kts = [(got[o][1] - t) * 1000 for o, t in sent.items() if o in got]
        say(f"  {len(got)} of {n} alerts seen; p50 {pct(recv, .5):.0f} ms, p99 {pct(recv, .99):.0f} ms")
        return {"rate": rate, "achieved": achieved, "n": n, "seen": len(got), "recv": recv, "kts": kts,
                "cpu_ms": 1000 * worker_cpu / n, "shops": shops}

    # ------------------------------------------------------------- table
    def table(self) -> str:
        L = []
        L.append(machine() + f"; load average {self.load_start} at the start, {loadavg()} at the end")
        L.append(f"broker {self.bootstrap} (Kafka, 1 node); input: {self.n:,} records ({self.invalid} malformed) "
                 f"of `shopwatch simulate --seed {self.args.seed} --shops {self.args.shops} --days {self.args.days} "
                 f"--events {self.args.events}`, {self.orders:,} orders, on 4 topics x {P} partitions; "
                 "one run, one after another")
        head = f"{'':42s} {'records':>8s} {'wall s':>8s} {'events/s':>10s} {'CPU s':>8s} {'events/CPU-s':>13s}"
        L.append(head)
        L.append("-" * len(head))
        for key in ("a", "b", "d", "c", "w1", "w2"):
            r = self.rows.get(key)
            label = {"a": "a  bare aiokafka + orjson.loads", "b": "b  Faust no-op agents (loads + dict +=)",
                     "d": "d  Faust no agent, channel drained (batch)",
                     "c": "c  Faust + RocksDB table write/record",
                     "w1": "shopwatch worker x1 (event clock)", "w2": "shopwatch worker x2 (event clock)"}[key]
            if r is None:
                what = "failed (see the notes)" if key in self.wanted else "not run (--steps)"
                L.append(f"{label:42s} {what:>51s}")
                continue
            L.append(f"{label:42s} {r['n']:8,d} {r['wall']:8.2f} {r['n'] / r['wall']:10,.0f} {r['cpu']:8.2f} "
                     f"{r['n'] / r['cpu']:13,.0f}")
        L.append("-" * len(head))
        for wk in ("w1", "w2"):
            w = self.rows.get(wk)
            if w is None:
                continue
            parts_cpu, parts_wall = [], []
            for b in ("a", "b", "d", "c"):
                r = self.rows.get(b)
                if r is None:
                    continue
                parts_cpu.append(f"/{b} {(w['n'] / w['cpu']) / (r['n'] / r['cpu']):.3f}")
                parts_wall.append(f"/{b} {(w['n'] / w['wall']) / (r['n'] / r['wall']):.3f}")
            L.append(f"ratio worker x{wk[1]} per CPU-s: {'  '.join(parts_cpu):28s} per wall s: {'  '.join(parts_wall)}")
        w1, w2 = self.rows.get("w1"), self.rows.get("w2")
        if w1 and w2:
            L.append(f"ratio x2/x1: events/s {w1['wall'] / w2['wall']:.2f}, events/CPU-s {w1['cpu'] / w2['cpu']:.2f}; "
                     f"CPU per worker x2: {', '.join(f'{c:.1f}' for c in w2['cpu_each'])} s")
        for wk in ("w1", "w2"):
            w = self.rows.get(wk)
            if w is not None and "end_wall" in w:
                wall, cpu = w["wall"] + w["end_wall"], w["cpu"] + w["end_cpu"]
                L.append(f"x{wk[1]} then tick --until the last event and idle: +{w['end_wall']:.1f} s wall, "
                         f"+{w['end_cpu']:.1f} s CPU; whole backfill {w['n'] / wall:,.0f} events/s, "
                         f"{w['n'] / cpu:,.0f} events/CPU-s")
        L.append("-" * len(head))
        b = self.extra.get("bytes")
        if b:
            disk = self.extra.get("disk")
            how = (f"the broker's log size, the producer's lz4 batches, by {self.extra.get('disk_how')}"
                   if disk is not None else f"n/a ({self.extra.get('disk_how')})")
            L.append(f"bytes per input record (x1 run, key+value; input {self.input_bytes / self.n:,.0f} B/record; "
                     f"on disk: {how}):")
            total_n = total_b = total_d = 0
            for name in self.extra["changelogs"] + [t for t in INTERNAL if t in b]:
                n, by = b[name]
                total_n += n
                total_b += by
                kind = "changelog" if name in self.extra["changelogs"] else "topic"
                if disk is not None:
                    total_d += disk[name]
                    on_disk = f"{disk[name] / self.n:10,.1f} B/record on disk"
                else:
                    on_disk = f"{'n/a':>10s} B/record on disk"
                L.append(f"  {kind:9s} {name:34s} {n:9,d} records {by / self.n:10,.1f} B/record {on_disk}")
            on_disk = f"{total_d / self.n:10,.1f} B/record on disk" if disk is not None else f"{'n/a':>10s} B/record on disk"
            L.append(f"  {'total':44s} {total_n:9,d} records {total_b / self.n:10,.1f} B/record {on_disk} "
                     f"({total_b / self.input_bytes:.2f}x the input bytes"
                     + (f", {total_d / self.input_bytes:.2f}x on disk)" if disk is not None else ")"))
        lat = self.extra.get("latency")
        if lat:
            L.append(f"wall-clock latency, shipment.exception -> its alert on shop.alerts, {lat['seen']}/{lat['n']} "
                     f"seen at {lat['achieved']:.0f}/s (target {lat['rate']:.0f}/s; {lat['shops']} shops; worker CPU "
                     f"{lat['cpu_ms']:.1f} ms/exception): "
                     f"consumer receipt p50 {pct(lat['recv'], .5):.0f} ms, p99 {pct(lat['recv'], .99):.0f} ms; "
                     f"alert CreateTime p50 {pct(lat['kts'], .5):.0f} ms, p99 {pct(lat['kts'], .99):.0f} ms")
            L.append(f"  wall-clock worker with no input: CPU {lat['idle_cpu_before']:.0f}% of a core before the "
                     f"{lat['n']} orders, {lat['idle_cpu_after']:.0f}% after them (RSS {lat['rss_after']:.0f} MiB)")
            third = max(1, len(lat["recv"]) // 3)
            early, late = pct(lat["recv"][:third], .5), pct(lat["recv"][-third:], .5)
            behind = " (rising: the worker fell behind this rate)" if late > 2 * early + 50 else ""
            L.append(f"  receipt p50 of the first / last third sent: {early:.0f} / {late:.0f} ms{behind}; "
                     f"max {max(lat['recv'], default=float('nan')):.0f} ms")
        idle = self.extra.get("idle_rss")
        if w1 and idle is not None:
            rss = w1["rss"][0]
            L.append(f"RSS per order: ({rss:.0f} MiB after the x1 backfill - {idle:.0f} MiB idle wall-clock worker) "
                     f"/ {self.orders:,} orders = {(rss - idle) * 1024 * 1024 / self.orders:,.0f} B/order")
        for note in self.notes:
            L.append("note: " + note)
        return "\n".join(L)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--events", type=int, default=60_000, help="input records (default 60000)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--shops", type=int, default=20)
    ap.add_argument("--days", type=int, default=6)
    ap.add_argument("--bootstrap", default="127.0.0.1:" + os.environ.get("KAFKA_PORT", "9092"),
                    help="a loopback broker (default 127.0.0.1:$KAFKA_PORT or 9092)")
    ap.add_argument("--latency-seconds", type=float, default=30.0)
    ap.add_argument("--latency-cap", type=float, default=300.0, help="most shipment.exception/s (default 300)")
    ap.add_argument("--latency-shops", type=int, default=20,
                    help="shops the latency orders are spread over (default 20; 0: one shop per order)")
    ap.add_argument("--steps", default="a,b,d,c,w1,w2,latency",
                    help="comma-separated subset of a,b,d,c,w1,w2,latency (default all; without w1 the latency "
                         "runs at --latency-cap)")
    ap.add_argument("--keep", action="store_true", help="keep the topics and the temporary directory")
    args = ap.parse_args()
    if not_loopback("worker_bench", args.bootstrap):
        return 2
    begin()
    bench = Bench(args)
    say(f"topics {bench.base}*, temporary files in {bench.tmp}")
    code = 0
    try:
        bench.make_input()
        steps = [
            ("a", lambda: bench.baseline("a", "bare aiokafka + orjson.loads", "bare")),
            ("b", lambda: bench.baseline("b", "Faust no-op agents", "faust-noop")),
            ("d", lambda: bench.baseline("d", "Faust, no agent: channel drained in batches", "faust-drain")),
            ("c", lambda: bench.baseline("c", "Faust + RocksDB table write", "faust-rocks")),
            ("w1", lambda: bench.worker_run("w1", 1)),
            ("w2", lambda: bench.worker_run("w2", 2)),
            ("latency", bench.latency),
        ]
        bench.wanted = wanted = set(args.steps.split(","))
        for name, step in steps:
            if name not in wanted:
                continue
            try:
                step()
            except (BenchError, subprocess.SubprocessError, OSError) as exc:
                code = 1
                bench.notes.append(f"{name}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
                say(f"{name} failed: {exc}")
        print(bench.table(), flush=True)
    except KeyboardInterrupt:
        say("interrupted")
        code = 130
    finally:
        stop_all()
        if not args.keep:
            try:
                deleted = asyncio.run(asyncio.wait_for(delete_topics(args.bootstrap, bench.base), 60))
                say(f"deleted {len(deleted)} topics {bench.base}*")
            except Exception as exc:
                say(f"could not delete the topics {bench.base}*: {exc!r}")
            shutil.rmtree(bench.tmp, ignore_errors=True)
        else:
            say(f"kept the topics {bench.base}* and {bench.tmp}")
    return code


if __name__ == "__main__":
    sys.exit(main())
