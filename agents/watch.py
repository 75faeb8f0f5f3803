"""`shopwatch watch`: follow shop.alerts and shop.scores and print a live scoreboard.

For the demo and for ops people at a terminal: every alert change as one line,
and every few seconds a table with one row per shop (its main indicators and
score or 抖音 level).
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson

from shopwatch.schemas.events import TOPIC_ALERTS, TOPIC_SCORES

from .settings import settings

MAIN = {
    "xiaohongshu": ("on_time_ship_rate", "pay_to_sign_hours", "reply_3min_rate"),
    "douyin": ("on_time_ship_rate", "fake_ship_rate", "product_good_rate"),
    "kuaishou": ("refund_only_hours", "merchant_dispute_rate", "quality_refund_rate"),
    "jd": ("reply_30s_rate",),
    "tmall": ("refund_rate", "refund_dispute_rate"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0 = until interrupted)")
    p.add_argument("--every", type=float, default=5.0, help="scoreboard refresh, seconds")
    p.add_argument("--from-beginning", action="store_true")
    p.set_defaults(func=run)


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def scoreboard(snaps: dict) -> str:
    lines = [f"{'shop':<28} {'score/level':>11}  indicators"]
    for (platform, shop), s in sorted(snaps.items()):
        lvl = s.get("level") or {}
        head = _fmt(s.get("score")) if s.get("score") is not None else (f"LV{lvl.get('level')}" if lvl else "-")
        inds = s.get("indicators", {})
        cols = "  ".join(f"{n}={_fmt((inds.get(n) or {}).get('value'))}" for n in MAIN.get(platform, ()))
        lines.append(f"{platform + ':' + shop:<28} {head:>11}  {cols}")
    return "\n".join(lines)


async def watch(seconds: float, every: float, from_beginning: bool) -> None:
    from aiokafka import AIOKafkaConsumer

    s = settings()
    consumer = AIOKafkaConsumer(s.topic(TOPIC_ALERTS), s.topic(TOPIC_SCORES), bootstrap_servers=s.bootstrap,
                                auto_offset_reset="earliest" if from_beginning else "latest",
                                enable_auto_commit=False)
    await consumer.start()
    snaps: dict = {}
    start = last = time.monotonic()
    try:
        while not seconds or time.monotonic() - start < seconds:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, msgs in batch.items():
                for m in msgs:
                    d = orjson.loads(m.value)
                    if tp.topic == s.topic(TOPIC_ALERTS):
                        print(f"[{d['severity']:<8}] {d['status']:<8} {d['alert_id']}  {d['summary']}", flush=True)
                    else:
                        snaps[(d["platform"], d["shop_id"])] = d
            if snaps and time.monotonic() - last >= every:
                last = time.monotonic()
                print("\n" + scoreboard(snaps) + "\n", flush=True)
    finally:
        await consumer.stop()


def run(args: argparse.Namespace) -> int:
    try:
        asyncio.run(watch(args.seconds, args.every, args.from_beginning))
    except KeyboardInterrupt:
        pass
    return 0
