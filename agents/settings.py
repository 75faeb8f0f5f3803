"""Settings of the shells, all from the environment (documented in README.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env(name: str, default: str) -> str:
    v = os.environ.get(name)
    return v if v not in (None, "") else default


@dataclass(frozen=True)
class Settings:
    bootstrap: str = field(default_factory=lambda: _env("KAFKA_BOOTSTRAP", "127.0.0.1:" + _env("KAFKA_PORT", "9092")))
    app_id: str = field(default_factory=lambda: _env("SHOPWATCH_APP_ID", "shopwatch"))
    topic_prefix: str = field(default_factory=lambda: _env("SHOPWATCH_TOPIC_PREFIX", ""))
    partitions: int = field(default_factory=lambda: int(_env("SHOPWATCH_PARTITIONS", "4")))
    replication_factor: int = field(default_factory=lambda: int(_env("SHOPWATCH_REPLICATION", "1")))
    data_dir: str = field(default_factory=lambda: _env("SHOPWATCH_DATA_DIR", "var/shopwatch"))
    web_port: int = field(default_factory=lambda: int(_env("SHOPWATCH_WEB_PORT", "6066")))
    clock: str = field(default_factory=lambda: _env("SHOPWATCH_CLOCK", "wall"))  # "wall" or "event"
    # Faust table store: RocksDB (rocksdict) for the stateful workers.
    store: str = field(default_factory=lambda: _env("SHOPWATCH_STORE", "rocksdb://"))
    # Address the worker's HTTP server (/metrics, /healthz) listens on.
    web_bind: str = field(default_factory=lambda: _env("SHOPWATCH_WEB_BIND", "127.0.0.1"))
    # Host name other workers reach this one at (Faust forwards a request for a key to the
    # worker owning it): default the bind address, or this machine's name for a wildcard bind.
    web_host: str = field(default_factory=lambda: _env("SHOPWATCH_WEB_HOST", ""))
    # Bearer token for the project's HTTP views (/shops, /orders, /alerts); required when
    # web_bind is not a loopback address. /healthz, /readyz and /metrics stay open.
    web_token: str = field(default_factory=lambda: _env("SHOPWATCH_WEB_TOKEN", ""), repr=False)
    # The sane window of event time: an event dated after min(its Kafka timestamp, the wall
    # clock) + max_future_skew_s, or before min_event_time, is invalid (dead letter).
    max_future_skew_s: float = field(default_factory=lambda: float(_env("SHOPWATCH_MAX_FUTURE_SKEW_S", "86400")))
    min_event_time: str = field(default_factory=lambda: _env("SHOPWATCH_MIN_EVENT_TIME", "2000-01-01T00:00:00+08:00"))
    # Per-shop score and indicator series on /metrics (agents/metrics.py) only while the worker
    # owns at most this many shops (bounded cardinality); above it none, and a warning.
    shop_metrics_max: int = field(default_factory=lambda: int(_env("SHOPWATCH_SHOP_METRICS_MAX", "200")))

    def topic(self, default_name: str) -> str:
        """Topic names are configurable: SHOPWATCH_TOPIC_ORDERS=... or a common prefix."""
        env = "SHOPWATCH_TOPIC_" + default_name.split(".", 1)[1].upper()
        return _env(env, self.topic_prefix + default_name)


def settings() -> Settings:
    return Settings()
