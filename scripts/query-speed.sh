#!/usr/bin/env bash
# How fast the traffic store answers on a large store: fills one with the generator the
# project ships (`dispa traffic generate`, RECORDS records spread over the last day) unless
# STORE already holds one, then times `dispa traffic summary --since 1h`,
# `dispa traffic tail --host H -n 20` and every query of docs/DATABASE.md's SQL blocks
# (through `dispa traffic sql`), each run once, wall time, and prints a Markdown table.
#
#   scripts/query-speed.sh                              # 10,000,000 records in a temp dir
#   RECORDS=1000000 scripts/query-speed.sh
#   STORE=/tmp/big.db scripts/query-speed.sh            # keep (or reuse) the store
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
RECORDS=${RECORDS:-10000000}
start_work query
STORE=${STORE:-$WORK/traffic.db}
D=target/release/dispa

if [ ! -f "$STORE" ]; then
  start=$(date +%s.%N)
  $D traffic generate --db "$STORE" -n "$RECORDS" >/dev/null
  echo "generated $RECORDS records in $(echo "$(date +%s.%N) - $start" | bc) s ($(du -h "$STORE" | cut -f1))" >&2
fi

timed() { # label, command...
  local label=$1; shift
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null
  end=$(date +%s.%N)
  printf '| %s | %.3f |\n' "$label" "$(echo "$end - $start" | bc)"
}

echo "| query (store of $($D traffic sql --db "$STORE" 'SELECT count(*) FROM requests' | tail -1) records) | seconds |"
echo "|---|---|"
timed 'dispa traffic summary --since 1h' $D traffic summary --since 1h --db "$STORE"
timed 'dispa traffic summary (all time)' $D traffic summary --db "$STORE"
timed 'dispa traffic tail --host h7.example.com -n 20' $D traffic tail --host h7.example.com -n 20 --db "$STORE"
# Each statement of DATABASE.md's SQL blocks (the schema block, with CREATE, aside): lines up to one
# that ends with ';', comment lines dropped.
awk '/^```sql/ {on = 1; block = ""; next}
     /^```/ && on {on = 0; if (block !~ /CREATE/) printf "%s", block; next}
     on && !/^ *--/ {block = block $0 "\n"}' docs/DATABASE.md \
  | awk 'BEGIN {RS = ";\n"} /SELECT/ {gsub(/\n/, " "); print}' \
  | while IFS= read -r q; do
      timed "\`${q:0:70}...\`" $D traffic sql --db "$STORE" "$q"
    done
