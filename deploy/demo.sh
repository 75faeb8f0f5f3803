#!/usr/bin/env bash
# make demo: a worker on the local broker (or KAFKA_BOOTSTRAP), the simulator
# playing a few simulated days of events in, the live alerts and a per-shop
# scoreboard (`shopwatch watch`), then the end of the last day (`shopwatch
# tick`), the final scoreboard of every shop and the totals, checked against
# `shopwatch replay` of the same stream. Then it stops the worker and deletes
# its topics and its directory var/demo-<ts>-<pid>, also when interrupted
# (DEMO_KEEP=1 keeps both; a demo that fails keeps the directory, with the
# worker's log).
#
#   DEMO_SHOPS    shops, one per platform round-robin (default 5)
#   DEMO_DAYS     simulated days (default 3)
#   DEMO_RATE     records per second into Kafka (default 500)
#   DEMO_TIMEOUT  seconds before the demo gives up on the worker (default 300)
#   DEMO_KEEP     1: keep the topics and var/demo-<ts>-<pid>
#
# SHOPWATCH_* settings of the environment are ignored: the demo runs its own
# app id, topic prefix, data directory and port, on the event clock, and posts
# to no chat.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
SHOPS=${DEMO_SHOPS:-5}
DAYS=${DEMO_DAYS:-3}
RATE=${DEMO_RATE:-500}
TIMEOUT=${DEMO_TIMEOUT:-300}
KEEP=${DEMO_KEEP:-0}
SEED=42
[[ -x $BIN/shopwatch ]] || { echo "demo: no $BIN/shopwatch: run it as make demo (which sets up the venv and the broker)"; exit 1; }
if [[ -n "${DEMO_SECONDS:-}" ]]; then
  echo "demo: DEMO_SECONDS is no longer used: the demo ends when the worker has processed the whole stream (DEMO_TIMEOUT=$TIMEOUT caps it)"
fi
for v in $(compgen -e | grep '^SHOPWATCH_' || true); do unset "$v"; done

# The helper (readiness, progress, totals, topic deletion): Python from the venv, no curl.
IFS= read -r -d '' DEMO_PY <<'PY' || true
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import UTC, date, datetime, timedelta

ALERT_LINE = re.compile(r"^\[\w+\s*\] (firing|resolved)\s+(\S+)  ")  # shopwatch watch's alert line
CLI = [sys.executable, "-m", "shopwatch.agents.cli"]


def say(msg):
    print("demo: " + msg, flush=True)


def metrics(port, pid=None):
    """The worker's counters summed over their labels; ``pid``: wait while the worker lives."""
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
            break
        except OSError:
            if pid is None or not alive(pid):
                say("the worker does not answer (died?)")
                sys.exit(1)
            time.sleep(1)
    out = Counter()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name.split("{", 1)[0]] += float(value)
    return out


def alive(pid):
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return True
    except OSError:
        return False


def shown(watch_out):
    """(alert_id, status) of every alert line `shopwatch watch` printed."""
    with open(watch_out, encoding="utf-8") as f:
        return [(m[2], m[1]) for m in map(ALERT_LINE.match, f) if m]


async def topics_state():
    """(records on shop.alerts, latest snapshot per shop on shop.scores)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from shopwatch.agents.settings import settings
    from shopwatch.schemas.events import TOPIC_ALERTS, TOPIC_SCORES

    s = settings()
    c = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, enable_auto_commit=False)
    await c.start()
    try:
        tps = {t: [TopicPartition(s.topic(t), p) for p in range(s.partitions)] for t in (TOPIC_ALERTS, TOPIC_SCORES)}
        n_alerts = sum((await c.end_offsets(tps[TOPIC_ALERTS])).values())
        stps = tps[TOPIC_SCORES]
        snaps = {}
        ends = await c.end_offsets(stps)
        c.assign(stps)
        await c.seek_to_beginning(*stps)
        while True:
            left = [tp for tp in stps if await c.position(tp) < ends[tp]]
            if not left:
                break
            for msgs in (await c.getmany(*left, timeout_ms=1000)).values():
                for m in msgs:
                    d = json.loads(m.value)
                    snaps[(d["platform"], d["shop_id"])] = d
        return n_alerts, snaps
    finally:
        await c.stop()


def cmd_port():
    """6066 when it is free, else a free port."""
    for port in (6066, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            print(s.getsockname()[1])
            return 0
    return 1


def cmd_days(days):
    """The first and the last simulated day and the end of the last one: the simulator's
    default start (2026-10-01), or earlier when the last day would not yet be over on this
    machine's clock (an event too far in the future is invalid)."""
    from shopwatch.agents.simulator import DEFAULT_START

    days = int(days)
    start = date.fromisoformat(DEFAULT_START)
    today = (datetime.now(UTC) + timedelta(hours=8)).date()
    if start + timedelta(days=days) > today:
        start = today - timedelta(days=days + 1)
    end = start + timedelta(days=days)
    print(start, end - timedelta(days=1), f"{end}T00:00:00+08:00")
    return 0


def cmd_ready(port, pid, timeout):
    port, pid, end = int(port), int(pid), time.monotonic() + float(timeout)
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return 0
        except OSError:
            pass
        if not alive(pid):
            say("the worker died")
            return 1
        time.sleep(0.5)
    say(f"the worker was not ready after {timeout} s")
    return 1


def cmd_finish(port, pid, records, until, shops, watch_out, deadline):
    """After the simulator: wait until the worker has read every record, move its clock
    to the end of the last day, wait until every shop has its snapshot as of then and the
    worker has recorded every alert change the watch showed."""
    port, pid, records, shops, deadline = int(port), int(pid), int(records), int(shops), float(deadline)
    end = datetime.fromisoformat(until)
    last_note = time.time()

    def check_time(what):
        if time.time() > deadline:
            say(f"gave up after DEMO_TIMEOUT: {what}")
            sys.exit(1)
        if not alive(pid):
            say("the worker died")
            sys.exit(1)

    while True:
        m = metrics(port, pid)
        read = int(m["shopwatch_events_total"] + m["shopwatch_invalid_events_total"])
        if read >= records:
            break
        check_time(f"the worker had read {read} of {records} records")
        if time.time() - last_note >= 10:
            last_note = time.time()
            say(f"the worker has read {read} of {records} records")
        time.sleep(1)
    say(f"the worker has read all {records} records; the end of the last day: shopwatch tick --until {until}")
    subprocess.run(CLI + ["tick", "--until", until], check=True)
    stable = 0
    while stable < 2:
        time.sleep(1)
        n_topic, snaps = asyncio.run(topics_state())
        m = metrics(port, pid)
        recorded = int(m["shopwatch_alerts_total"] + m["shopwatch_alert_copies_total"])
        final = [k for k, s in snaps.items() if datetime.fromisoformat(s["as_of"]) >= end]
        ok = len(final) >= shops and n_topic == recorded == len(shown(watch_out))
        stable = stable + 1 if ok else 0
        check_time(f"{len(final)} of {shops} shops as of {until}; alert changes: {n_topic} on the topic, "
                   f"{recorded} recorded by the worker, {len(shown(watch_out))} shown")
    return 0


def cmd_summary(port, sim_err, watch_out, until, started, seed, shops, days, start, directory):
    from shopwatch.agents.watch import scoreboard

    n_topic, snaps = asyncio.run(topics_state())
    m = metrics(port)
    lines = shown(watch_out)
    st = Counter(status for _aid, status in lines)
    with open(sim_err, encoding="utf-8") as f:
        sim = f.read().strip().splitlines()[-1]
    first = date.fromisoformat(start)
    last = first + timedelta(days=int(days) - 1)
    say(f"final scoreboard: every shop as of {until} (the end of the last simulated day)")
    print("\n" + scoreboard(snaps) + "\n", flush=True)
    # The same stream through replay, to the same instant: the alert changes and scores to compare.
    events = os.path.join(directory, "events.jsonl")
    r_alerts, r_scores = os.path.join(directory, "replay-alerts.jsonl"), os.path.join(directory, "replay-scores.json")
    subprocess.run(CLI + ["simulate", "--seed", seed, "--shops", shops, "--days", days, "--start", start,
                          "--out", events, "--quiet"], check=True)
    subprocess.run(CLI + ["replay", events, "--until", until, "--alerts-out", r_alerts, "--scores-out", r_scores],
                   check=True, stderr=subprocess.DEVNULL)
    with open(r_alerts, encoding="utf-8") as f:
        replay = Counter((a["alert_id"], a["status"]) for a in map(json.loads, f))
    with open(r_scores, encoding="utf-8") as f:
        r_snaps = {(s["platform"], s["shop_id"]): s for s in json.load(f)}
    worker = Counter(lines)
    same_alerts = worker == replay
    differ = sorted(f"{p}:{s}" for p, s in r_snaps.keys() | snaps.keys()
                    if (snaps.get((p, s)) or {}).get("indicators") != (r_snaps.get((p, s)) or {}).get("indicators")
                    or (snaps.get((p, s)) or {}).get("score") != (r_snaps.get((p, s)) or {}).get("score"))
    recorded, copies = int(m["shopwatch_alerts_total"]), int(m["shopwatch_alert_copies_total"])
    rows = [
        ("simulated", f"{first} .. {last}: {days} days of {shops} shops (seed {seed})"),
        ("simulator", sim.removeprefix("simulate: ")),
        ("worker read", f"{int(m['shopwatch_events_total'])} valid events (duplicates included), "
                        f"{int(m['shopwatch_invalid_events_total'])} invalid (to shop.dlq)"),
        ("alert changes shown", f"{len(lines)} ({st['firing']} firing, {st['resolved']} resolved); "
                                f"{n_topic} on shop.alerts"),
        ("worker recorded", f"shopwatch_alerts_total {recorded}, shopwatch_alert_copies_total {copies}"),
        ("replay, same stream", f"{sum(replay.values())} alert changes: "
                                + ("the same as shown" if same_alerts else
                                   f"DIFFERENT ({sum((worker - replay).values())} only shown, "
                                   f"{sum((replay - worker).values())} only in replay)")
                                + "; scores: " + ("the same for every shop" if not differ else
                                                  "DIFFERENT for " + ", ".join(differ))),
        ("run time", f"{time.time() - float(started):.0f} s"),
    ]
    say("totals")
    for k, v in rows:
        print(f"  {k:<20} {v}")
    agree = len(lines) == n_topic == recorded + copies and same_alerts and not differ
    if not agree:
        say("the totals do not agree: see the lines above")
    return 0 if agree else 1


async def _delete(prefixes):
    from aiokafka.admin import AIOKafkaAdminClient

    from shopwatch.agents.settings import settings

    admin = AIOKafkaAdminClient(bootstrap_servers=settings().bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefixes)]
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()


def cmd_delete_topics(run):
    names = asyncio.run(asyncio.wait_for(_delete((run + ".", run + "-")), 60))
    say(f"deleted its {len(names)} topics {run}.* and {run}-*")
    return 0


if __name__ == "__main__":
    sys.exit(globals()["cmd_" + sys.argv[1].replace("-", "_")](*sys.argv[2:]))
PY
PY=("$BIN/python" -c "$DEMO_PY")

RUN=demo-$(date +%s)-$$
DIR=var/$RUN
mkdir -p "$DIR"
STARTED=$(date +%s)
export SHOPWATCH_TOPIC_PREFIX=$RUN.
export SHOPWATCH_APP_ID=$RUN
export SHOPWATCH_DATA_DIR=$DIR/data
export SHOPWATCH_CLOCK=event  # the simulated events are from the past: the rules run on their event time
SHOPWATCH_WEB_PORT=$("${PY[@]}" port)
export SHOPWATCH_WEB_PORT
DAYS_OUT=$("${PY[@]}" days "$DAYS")
read -r START LAST UNTIL <<< "$DAYS_OUT"
WORKER= CTRL=

stop_pid() {  # stop_pid PID SECONDS: TERM, then KILL after SECONDS
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < $2 * 2; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$? f
  set +e
  trap - EXIT INT TERM
  [[ -n $CTRL ]] && kill "$CTRL" 2>/dev/null
  for f in step watch; do  # the background's current step, the watch
    [[ -s $DIR/$f.pid ]] && kill "$(cat "$DIR/$f.pid")" 2>/dev/null
  done
  if [[ -n $WORKER ]]; then stop_pid "$WORKER" 30; wait "$WORKER" 2>/dev/null; fi
  if [[ $KEEP == 1 ]]; then
    echo "demo: kept (DEMO_KEEP=1) the topics $RUN.* and $RUN-* and the directory $DIR"
  else
    "${PY[@]}" delete-topics "$RUN" || echo "demo: could not delete the topics $RUN.* and $RUN-*"
    if [[ $status == 0 || $status == 130 || $status == 143 ]]; then  # done, or interrupted
      rm -rf "$DIR" && echo "demo: removed $DIR (DEMO_KEEP=1 keeps it and the topics)"
    else
      echo "demo: failed (exit $status); kept $DIR (the worker's log: $DIR/worker.log)"
    fi
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "demo: $DAYS simulated days ($START .. $LAST) of $SHOPS shops, played in at $RATE records/s"
echo "demo: worker on ${KAFKA_BOOTSTRAP:-127.0.0.1:${KAFKA_PORT:-9092}}, topics $RUN.shop.*, log $DIR/worker.log"
"$BIN/shopwatch" worker -l warning > "$DIR/worker.log" 2>&1 &
WORKER=$!
if ! "${PY[@]}" ready "$SHOPWATCH_WEB_PORT" "$WORKER" 120; then tail -30 "$DIR/worker.log"; exit 1; fi
echo "demo: worker ready on http://127.0.0.1:$SHOPWATCH_WEB_PORT (while the demo runs: /shops/douyin/do-shop-0/score, /alerts?shop_id=xi-shop-0, /metrics)"

# In the background: the simulator, then the end of the last day, then it stops the watch
# once the worker has recorded every alert change the watch showed.
step() {  # one step of the background, its pid in step.pid for the cleanup
  local rc=0
  "$@" & echo $! > "$DIR/step.pid"
  wait $! || rc=$?
  : > "$DIR/step.pid"
  return $rc
}
(
  trap '[[ -s $DIR/watch.pid ]] && kill "$(cat "$DIR/watch.pid")" 2>/dev/null' EXIT
  sleep 1
  if ! step "$BIN/shopwatch" simulate --seed "$SEED" --shops "$SHOPS" --days "$DAYS" --start "$START" \
      --kafka --rate "$RATE" 2> "$DIR/simulate.err"; then
    echo "demo: the simulator failed:"; cat "$DIR/simulate.err"; exit 1
  fi
  echo "demo: $(tail -1 "$DIR/simulate.err")"
  RECORDS=$(sed -n 's/^simulate: \([0-9]*\) records.*/\1/p' "$DIR/simulate.err")
  step "${PY[@]}" finish "$SHOPWATCH_WEB_PORT" "$WORKER" "$RECORDS" "$UNTIL" "$SHOPS" "$DIR/watch.out" \
    $((STARTED + TIMEOUT))
  echo ok > "$DIR/finished"
) &
CTRL=$!

# Every alert change, and a scoreboard every 10 s, until the background stops it (a job the
# script waits for, so that an interrupt or a TERM reaches the cleanup at once).
# (the watch's errors go to fd 3, the terminal; the group's stderr, where bash would report
# the TERM that stops the watch, goes nowhere)
exec 3>&2
{ bash -c 'echo $$ > "$0"; exec "$@"' "$DIR/watch.pid" \
    "$BIN/shopwatch" watch --from-beginning --every 10 --seconds "$((TIMEOUT + 60))" 2>&3 |
    tee "$DIR/watch.out"; } 2>/dev/null &
wait $! || true
: > "$DIR/watch.pid"
wait "$CTRL" || true
CTRL=
[[ -f $DIR/finished ]] || exit 1
"${PY[@]}" summary "$SHOPWATCH_WEB_PORT" "$DIR/simulate.err" "$DIR/watch.out" "$UNTIL" "$STARTED" \
  "$SEED" "$SHOPS" "$DAYS" "$START" "$DIR"
