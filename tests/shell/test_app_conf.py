"""The Faust app's settings derived from ours (no broker)."""

from __future__ import annotations

import asyncio
import socket

from shopwatch.agents.app import advertised_host, build_app
from shopwatch.agents.settings import Settings


def test_a_wildcard_bind_advertises_the_machine_name_not_localhost(tmp_path):
    s = Settings(web_bind="0.0.0.0", web_token="t" * 20, data_dir=str(tmp_path))
    assert advertised_host(s) == socket.gethostname() != "localhost"
    assert build_app(s).conf.web_host == socket.gethostname()


def test_the_advertised_host_can_be_set_and_defaults_to_the_bind(tmp_path):
    assert advertised_host(Settings(web_bind="0.0.0.0", web_host="shopwatch-0.shopwatch")) == "shopwatch-0.shopwatch"
    assert advertised_host(Settings(web_bind="127.0.0.1")) == "127.0.0.1"


def test_the_producer_batches_and_compresses(tmp_path):
    conf = build_app(Settings(data_dir=str(tmp_path))).conf
    assert conf.producer_linger == 0.01
    assert conf.producer_compression_type == "lz4"



def test_the_consumer_fetches_within_100_ms_not_fausts_1500(tmp_path):
    from shopwatch.agents.faust_fixes import FETCH_MAX_WAIT_MS

    app = build_app(Settings(data_dir=str(tmp_path)))

    async def build():  # aiokafka builds its consumer on a running loop
        return app.consumer._thread._create_worker_consumer(app.transport)

    client = asyncio.run(build())
    assert client._fetch_max_wait_ms == FETCH_MAX_WAIT_MS == 100
