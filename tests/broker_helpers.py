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


class SlackReceiver:
    """A Slack-format webhook endpoint on a thread, for the workers' chat sink: checks the
    signature and records each message as (alert_id, status, at)."""

    SECRET = "broker-test-signing-secret"
    PATH = "/services/T000/B000/broker"

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.got: list[tuple[str, str, str]] = []
        self.rejected = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                import hashlib
                import hmac
                import json

                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ts = self.headers.get("X-Slack-Request-Timestamp", "")
                want = "v0=" + hmac.new(outer.SECRET.encode(), f"v0:{ts}:".encode() + body,
                                        hashlib.sha256).hexdigest()
                if self.path != outer.PATH or not hmac.compare_digest(want, self.headers.get("X-Slack-Signature", "")):
                    with lock:
                        outer.rejected += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                blocks = json.loads(body)["blocks"]
                header = blocks[0]["text"]["text"]
                fields = {f["text"].split("\n", 1)[0].strip("*"): f["text"].split("\n", 1)[1]
                          for f in blocks[2]["fields"]}
                alert_id = blocks[3]["elements"][0]["text"].split("`")[1]
                status = "resolved" if "已恢复" in header else "firing"
                at = fields.get("恢复时间") or fields.get("发生时间")
                with lock:
                    outer.got.append((alert_id, status, at))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def sinks_env(self) -> str:
        import json

        host, port = self.server.server_address[:2]
        return json.dumps([{"type": "slack", "url": f"http://{host}:{port}{self.PATH}",
                            "signing_secret": self.SECRET}])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
