#!/usr/bin/env bash
# Requests per second `dispa replay` sends from one core (issue 18), beside wrk on the
# same workload: an nginx backend answering "hello" (one worker, CPU 0), a recording of
# keep-alive GETs made through Dispa with [logging.capture], then, in turns, ROUNDS runs
# each of
#   replay: taskset -c 1 dispa replay --concurrency $CONNS --limit $REQUESTS (every answer
#           compared with its record: status, body bytes)
#   wrk:    taskset -c 1 wrk -t1 -c$CONNS -d$DURATION (no comparison, no record read)
# and the client's CPU time per request (user + system, from /proc/PID/stat). Every process
# is stopped by PID; every run is bounded by its request count or $DURATION.
#
#   scripts/replay-speed.sh
#   ROUNDS=5 CONNS=64 REQUESTS=300000 scripts/replay-speed.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
need wrk wrk
need nginx nginx
ROUNDS=${ROUNDS:-3}; CONNS=${CONNS:-64}; REQUESTS=${REQUESTS:-200000}; DURATION=${DURATION:-5}
BACKEND_PORT=${BACKEND_PORT:-18091}; PROXY_PORT=${PROXY_PORT:-18100}
BIN=$PWD/target/release/dispa
start_work replay-speed
chmod 755 "$WORK"

cat > "$WORK/backend.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/backend.pid; error_log $WORK/backend.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 120s;
  server { listen 127.0.0.1:$BACKEND_PORT reuseport; location / { return 200 "hello"; } } }
CONF
taskset -c 0 nginx -c "$WORK/backend.conf" -e "$WORK/backend.err" & PIDS+=($!)

# --- the recording: wrk through Dispa until REQUESTS are recorded -------------------------
cat > "$WORK/dispa.toml" <<CONF
[server]
bind = "127.0.0.1:$PROXY_PORT"
workers = 1
[domains]
intercept_domains = ["api.test.com"]
[[targets.targets]]
name = "nginx"
url = "http://127.0.0.1:$BACKEND_PORT"
[monitoring]
enabled = false
[logging]
type = "database"
[logging.database]
path = "$WORK/traffic.db"
[logging.capture]
domains = ["api.test.com"]
request_headers = ["*"]
response_headers = ["*"]
max_body_bytes = 65536
CONF
taskset -c 0 "$BIN" -c "$WORK/dispa.toml" 2>"$WORK/dispa.log" & DISPA=$!; PIDS+=($DISPA)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$PROXY_PORT") 2>/dev/null && break; sleep 0.1; done
taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" -H "Host: api.test.com" "http://127.0.0.1:$PROXY_PORT/items?id=1" >/dev/null
kill -TERM "$DISPA"; wait "$DISPA" || true
recorded=$("$BIN" traffic sql "SELECT count(*) FROM requests" --db "$WORK/traffic.db" | tail -n 1)
echo "recorded $recorded requests through Dispa (replaying at most $REQUESTS each run)"

# CPU seconds (user + system) a process has used so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"; }

declare -a REPLAY_RPS REPLAY_US WRK_RPS WRK_US
for round in $(seq "$ROUNDS"); do
  taskset -c 1 "$BIN" replay --db "$WORK/traffic.db" --target "http://127.0.0.1:$BACKEND_PORT" \
    --concurrency "$CONNS" --limit "$REQUESTS" --body bytes --report "$WORK/report.json" \
    >"$WORK/replay.out" 2>&1 & R=$!; PIDS+=($R)
  wait $R || true
  # The report's cpu_s is the CPU of sending only (reading the store comes before).
  rps=$(python3 -c "import json;r=json.load(open('$WORK/report.json'));print(round(r['requests_per_s']))")
  sent=$(python3 -c "import json;r=json.load(open('$WORK/report.json'));print(r['sent'], r['matched'], r['errors'])")
  REPLAY_RPS+=("$rps"); REPLAY_US+=("$(python3 -c "import json;r=json.load(open('$WORK/report.json'));print(round(r['cpu_s'] / r['sent'] * 1e6, 2))")")
  taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" -H "Host: api.test.com" \
    "http://127.0.0.1:$BACKEND_PORT/items?id=1" >"$WORK/wrk.out" & W=$!; PIDS+=($W)
  wlast=0; while kill -0 $W 2>/dev/null; do wlast=$(cpu $W 2>/dev/null || echo "$wlast"); sleep 0.05; done
  wait $W || true
  wrps=$(awk '/Requests\/sec/ { printf "%d", $2 }' "$WORK/wrk.out")
  wreq=$(awk '/requests in/ { print $1 }' "$WORK/wrk.out")
  WRK_RPS+=("$wrps"); WRK_US+=("$(python3 -c "print(round($wlast / $wreq * 1e6, 2))")")
  echo "round $round: replay $rps req/s (sent matched errors: $sent; ${REPLAY_US[-1]} us CPU/request), wrk $wrps req/s (${WRK_US[-1]} us CPU/request)"
done
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo
echo "| client (CPU 1, $CONNS connections) | median req/s | CPU µs/request |"
echo "|---|---|---|"
echo "| dispa replay (compares every answer) | $(median "${REPLAY_RPS[@]}") | $(median "${REPLAY_US[@]}") |"
echo "| wrk -t1 | $(median "${WRK_RPS[@]}") | $(median "${WRK_US[@]}") |"
