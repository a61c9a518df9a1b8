#!/usr/bin/env bash
# Slow-client attacks against the release binary with slowhttptest (Debian package):
# slowloris (slow headers), slow body (R-U-Dead-Yet) and slow read, 1,000 connections
# each, bounded to $LENGTH seconds. While each attack runs, wrk measures a normal client
# (10 connections, keep-alive) through the same Dispa; the script prints its success rate
# and p99, and Dispa's peak RSS and open files. Loopback only; every process started here
# is stopped by PID.
#
#   scripts/slow-clients.sh              # 3 attacks x 30 s
#   LENGTH=10 CONNS=500 scripts/slow-clients.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh

LENGTH=${LENGTH:-30}
CONNS=${CONNS:-1000}
BACKEND_PORT=18191 DISPA_PORT=18200

need wrk wrk; need nginx nginx-light; need slowhttptest slowhttptest

start_work slow

mkdir -p "$WORK/www"
head -c 1048576 /dev/zero > "$WORK/www/big"
cat > "$WORK/backend.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/backend.pid; error_log $WORK/backend.err;
events { worker_connections 8192; }
http { access_log off;
  server { listen 127.0.0.1:$BACKEND_PORT; root $WORK/www;
    location = / { return 200 "hello"; } } }
CONF
nginx -c "$WORK/backend.conf" -e "$WORK/backend.err" & PIDS+=($!)

cat > "$WORK/dispa.toml" <<CONF
[server]
bind = "127.0.0.1:$DISPA_PORT"
workers = 1
[domains]
intercept_domains = ["example.com"]
[[targets.targets]]
name = "backend"
url = "http://127.0.0.1:$BACKEND_PORT"
[monitoring]
health_bind = "127.0.0.1:$((DISPA_PORT + 1))"
metrics_bind = "127.0.0.1:$((DISPA_PORT + 2))"
[logging]
type = "both"
[logging.file]
directory = "$WORK/logs"
[logging.database]
path = "$WORK/traffic.db"
CONF
target/release/dispa -c "$WORK/dispa.toml" 2>"$WORK/dispa.err" & DISPA=$!; PIDS+=($DISPA)
for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$((DISPA_PORT + 1))/health" && break; sleep 0.1; done

echo "| attack | slow connections open | normal client: requests | non-2xx or errors | p99 | Dispa peak RSS | Dispa open files | probe saw it down |"
echo "|---|---|---|---|---|---|---|---|"
run() {
  local name=$1; shift
  slowhttptest "$@" -c "$CONNS" -r 500 -l "$LENGTH" -d "127.0.0.1:$DISPA_PORT" \
    -p 3 >"$WORK/$name.slow" 2>&1 & local slow=$!; PIDS+=($slow)
  sleep 3   # let the slow connections open
  wrk -t1 -c10 -d"$((LENGTH - 5))s" --latency -H 'Host: example.com' \
    "http://127.0.0.1:$DISPA_PORT/" >"$WORK/$name.wrk" 2>&1 || true
  local fds; fds=$(ls "/proc/$DISPA/fd" | wc -l)
  wait "$slow" || true
  local total errors p99 hwm
  total=$(awk '/requests in/ {print $1}' "$WORK/$name.wrk")
  errors=$(awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(",", ""); n+=$4+$6+$8+$10} END {print n+0}' "$WORK/$name.wrk")
  p99=$(awk '$1 == "99%" {print $2}' "$WORK/$name.wrk")
  hwm=$(awk '/VmHWM/ {printf "%.1f MiB", $2 / 1024}' "/proc/$DISPA/status")
  # slowhttptest redraws a coloured status: strip the colours, keep the most connected
  # at once and whether its own probe ever found the service unavailable.
  local open down
  open=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/$name.slow" | awk '/^connected:/ && $2 > m {m = $2} END {print m + 0}')
  down=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/$name.slow" | grep -c '^service available:[[:space:]]*NO' || true)
  echo "| $name | $open of $CONNS | $total | $errors | $p99 | $hwm | $fds | $down |"
}
run slowloris -H -i 5 -x 16 -u "http://example.com/"
run slow-body -B -i 5 -s 1000000 -x 16 -u "http://example.com/"
run slow-read -X -k 4 -n 5 -w 32 -y 64 -z 32 -u "http://example.com/big"
kill -0 "$DISPA" && echo && echo "Dispa still running (pid $DISPA); its errors: $(grep -c ERROR "$WORK/dispa.err" || true)"
