#!/usr/bin/env bash
# make demo: a worker on the local broker, the simulator playing events in,
# live alerts and a refreshing per-shop scoreboard. Runs DEMO_SECONDS (90).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
SECONDS_TOTAL=${DEMO_SECONDS:-90}
RUN=demo-$(date +%s)
export SHOPWATCH_TOPIC_PREFIX=${SHOPWATCH_TOPIC_PREFIX:-$RUN.}
export SHOPWATCH_APP_ID=${SHOPWATCH_APP_ID:-$RUN}
export SHOPWATCH_DATA_DIR=${SHOPWATCH_DATA_DIR:-var/$RUN}
export SHOPWATCH_WEB_PORT=${SHOPWATCH_WEB_PORT:-6066}
# the simulated events are from the past: run the rules on their event time
export SHOPWATCH_CLOCK=${SHOPWATCH_CLOCK:-event}
mkdir -p var
echo "demo: worker on ${KAFKA_BOOTSTRAP:-127.0.0.1:${KAFKA_PORT:-9092}} (topics ${SHOPWATCH_TOPIC_PREFIX}shop.*), log var/$RUN-worker.log"
$BIN/shopwatch worker -l warning > "var/$RUN-worker.log" 2>&1 &
WORKER=$!
trap 'kill $WORKER 2>/dev/null; wait $WORKER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  if curl -sf "http://127.0.0.1:$SHOPWATCH_WEB_PORT/readyz" >/dev/null; then break; fi
  kill -0 $WORKER 2>/dev/null || { echo "worker died:"; tail -30 "var/$RUN-worker.log"; exit 1; }
  sleep 1
done
echo "demo: worker ready on http://127.0.0.1:$SHOPWATCH_WEB_PORT (try /shops/douyin/do-shop-0/score, /metrics)"
$BIN/shopwatch simulate --seed 42 --shops 10 --days 5 --kafka --rate 400 --quiet &
SIM=$!
$BIN/shopwatch watch --seconds "$SECONDS_TOTAL" --every 10 --from-beginning || true
kill $SIM 2>/dev/null || true
echo "demo: events counted by the worker:"
curl -s "http://127.0.0.1:$SHOPWATCH_WEB_PORT/metrics" | grep -E '^shopwatch_(events|invalid_events|alerts)_total' | awk '{split($1,a,"{"); s[a[1]]+=$2} END {for (k in s) print "  " k, s[k]}'
