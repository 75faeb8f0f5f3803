#!/usr/bin/env bash
# The kill test N times in a row with a busy loop on each core (issue 11: it must hold
# on a loaded machine). A failed run keeps its topics (SHOPWATCH_KEEP_FAILED_TOPICS) and
# its pytest directory (worker logs, RocksDB data dirs) under $OUT/run-N.
# usage: bench/kill_loop.sh [N] [OUT]     (from the project root, broker up)
set -u
N=${1:-10}
OUT=${2:-var/kill-loop}
mkdir -p "$OUT"
pass=0
fail=0
for i in $(seq 1 "$N"); do
  busy=()
  for _ in $(seq 1 "$(nproc)"); do python3 -c "while True: pass" & busy+=($!); done
  start=$(date +%s)
  SHOPWATCH_KEEP_FAILED_TOPICS=1 timeout 900 .venv/bin/python -m pytest -q -x -p no:cacheprovider \
    tests/broker/test_broker_topology.py -k killed --basetemp="$OUT/run-$i" > "$OUT/run-$i.log" 2>&1
  rc=$?
  kill "${busy[@]}" 2>/dev/null
  if [ "$rc" -eq 0 ]; then pass=$((pass + 1)); rm -rf "$OUT/run-$i"; else fail=$((fail + 1)); fi
  echo "run $i: exit $rc in $(( $(date +%s) - start )) s: $(tail -n 1 "$OUT/run-$i.log")" | tee -a "$OUT/summary"
done
echo "$pass passed, $fail failed" | tee -a "$OUT/summary"
[ "$fail" -eq 0 ]
