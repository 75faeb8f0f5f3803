"""What the benches share (bench/worker_bench.py, bench/state_bench.py): their log line, the
machine they ran on, process figures from /proc, a subprocess with its log, and topics on
the loopback broker. Each bench names itself once with ``set_label``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

T0 = time.monotonic()
_LABEL = ["bench"]


class BenchError(RuntimeError):
    """One measurement could not be made (the others go on)."""


def set_label(label: str) -> None:
    _LABEL[0] = label


def say(msg: str) -> None:
    print(f"[{_LABEL[0]} {time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- machine

def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:
        ncpu = os.cpu_count()
    vers = []
    for dist in ("faust-streaming", "aiokafka", "rocksdict", "orjson"):
        with contextlib.suppress(Exception):
            vers.append(f"{dist} {version(dist)}")
    return (f"machine: nproc {ncpu}, {model}, RAM {mem}; Linux {platform.release()}, "
            f"Python {platform.python_version()}, {', '.join(vers)}")


def loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def loopback(bootstrap: str) -> bool:
    for hp in bootstrap.split(","):
        host = hp.strip().rsplit(":", 1)[0].strip("[]")
        if not (host == "localhost" or host.startswith("127.") or host == "::1"):
            return False
    return True


# ------------------------------------------------------------ processes

def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def rss_mib(pid: int | str = "self") -> float:
    return rss_bytes(pid) / (1024 * 1024)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A subprocess with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    running: list[Proc] = []

    def __init__(self, name: str, cmd: list[str], env: dict, log_path: Path, cwd: Path | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.t_spawn = time.time()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=cwd or log_path.parent)
        self.pid = self.proc.pid
        Proc.running.append(self)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def check(self) -> None:
        if not self.alive():
            raise BenchError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                say(f"{self.name} (pid {self.pid}) still up {timeout:.0f}s after SIGTERM: SIGKILL")
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        if self in Proc.running:
            Proc.running.remove(self)
        return self.proc.returncode


def stop_all() -> None:
    for p in list(Proc.running):
        try:
            p.stop(timeout=20)
        except Exception as exc:  # cleanup goes on
            say(f"could not stop {p.name}: {exc!r}")


def not_loopback(name: str, bootstrap: str) -> bool:
    """Whether to refuse ``bootstrap`` (said on stderr): a bench loads loopback brokers only."""
    if loopback(bootstrap):
        return False
    print(f"{name}: {bootstrap} is not a loopback address; this bench loads loopback brokers only",
          file=sys.stderr)
    return True


def begin() -> None:
    """A SIGTERM stops a bench like Ctrl-C (its processes stopped, its topics deleted); warnings
    on stderr, aiokafka's retried errors (NotLeaderForPartition while a new topic gets its
    leaders) left out."""

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)


# ---------------------------------------------------------------- Kafka

async def _admin(bootstrap: str):
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=60_000)
    await admin.start()
    return admin


async def create_topics(bootstrap: str, names: list[str], partitions: int, configs: dict | None = None) -> None:
    """Create the topics of ``names`` not there yet (``configs``: name -> topic configs) and wait
    until all have ``partitions`` partitions."""
    from aiokafka.admin import NewTopic

    admin = await _admin(bootstrap)
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(n, partitions, 1, topic_configs=(configs or {}).get(n, {})) for n in names
               if n not in existing]
        if new:
            await admin.create_topics(new)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            described = await admin.describe_topics(names)
            if all(not t["error_code"] and len(t["partitions"]) == partitions for t in described):
                return
            await asyncio.sleep(0.2)
        raise BenchError(f"topics not ready: {names}")
    finally:
        await admin.close()


async def list_topics(bootstrap: str) -> list[str]:
    admin = await _admin(bootstrap)
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, prefix: str) -> list[str]:
    """Every topic whose name starts with ``prefix`` (as tests/broker_helpers.py delete_topics)."""
    admin = await _admin(bootstrap)
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()
