"""Helpers of the broker tests (fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import re
import socket
import sys
import time
import uuid
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"


def unique_prefix(label: str = "t") -> str:
    """A topic-name prefix unique to this call, e.g. 't-ingest-1795425575-3f9a1c2e.'."""
    label = re.sub(r"[^A-Za-z0-9_-]+", "-", label).strip("-")[:40] or "t"
    return f"t-{label}-{int(time.time())}-{uuid.uuid4().hex[:8]}."


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shopwatch_cmd(*args: str) -> list[str]:
    """The `shopwatch` command of the interpreter running the tests."""
    return [sys.executable, "-m", "shopwatch.agents.cli", *args]


def delete_topics(bootstrap: str, prefix: str, timeout: float = 30.0) -> None:
    """Best effort: delete every topic whose name starts with ``prefix``."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
        await admin.start()
        try:
            names = [t for t in await admin.list_topics() if t.startswith(prefix)]
            if names:
                await admin.delete_topics(names)
        finally:
            await admin.close()

    try:
        asyncio.run(asyncio.wait_for(run(), timeout))
    except Exception as exc:  # cleanup must not fail a test
        warnings.warn(f"could not delete test topics {prefix}*: {exc!r}", stacklevel=2)
