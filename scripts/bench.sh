#!/usr/bin/env bash
# Side-by-side load test on loopback: direct-to-backend, Dispa, nginx and HAProxy as
# reverse proxies, interleaved (A B C D A B C D ...), each proxy with one worker pinned to
# CPU $PROXY_CPU while wrk and the nginx backend share CPU $LOAD_CPU.
# Prints one Markdown table: median RPS (and spread), p50/p99 latency, and proxy CPU time
# per request from /proc/PID/stat. Every process started here is stopped by PID.
#
#   scripts/bench.sh                 # 3 rounds x 10 s, 50 connections
#   ROUNDS=5 DURATION=15 CONNS=100 scripts/bench.sh
#   SCENARIOS="dispa dispa-plain dispa-defer dispa-epoll nginx" scripts/bench.sh   # ring flags
#   SCENARIOS="dispa dispa-norec nginx" scripts/bench.sh          # the cost of recording
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
NGINX_LOG=${NGINX_LOG:-off}          # "on" writes nginx's access log to a file
SCENARIOS=${SCENARIOS:-"direct dispa nginx haproxy"}
BACKEND_PORT=18091 NGINX_PORT=18093 HAPROXY_PORT=18094 DISPA_PORT=18100

need() { command -v "$1" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need wrk wrk; need nginx nginx-light; need haproxy haproxy
[ -x target/release/dispa ] || cargo build --release

WORK=$(mktemp -d /tmp/dispa-bench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 0.3
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# --- backend: nginx, one worker, 5-byte body ---------------------------------------------
cat > "$WORK/backend.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/backend.pid; error_log $WORK/backend.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$BACKEND_PORT reuseport; location / { return 200 "hello"; } } }
CONF
taskset -c "$LOAD_CPU" nginx -c "$WORK/backend.conf" -e "$WORK/backend.err" & PIDS+=($!)

# --- Dispa (and variants of it: dispa-epoll, dispa-plain, dispa-defer, dispa-norec) ----------
# Every variant records all traffic (gzip files + SQLite, under $WORK) except dispa-norec.
declare -A DISPA_PIDS DISPA_PORTS
dispa_extra() {
  case $1 in
    dispa|dispa-norec) echo "";;
    dispa-epoll) echo 'io_driver = "legacy"';;
    dispa-plain) echo 'uring_flags = []';;
    dispa-defer) echo 'uring_flags = ["single_issuer", "defer_taskrun"]';;
    *) echo "unknown Dispa variant $1" >&2; exit 2;;
  esac
}
dispa_logging() {
  case $1 in
    dispa-norec) printf '[logging]\nenabled = false\n';;
    *) printf '[logging]\ntype = "both"\n[logging.file]\ndirectory = "%s"\n[logging.database]\npath = "%s"\n' "$WORK/$1-logs" "$WORK/$1.db";;
  esac
}
port=$DISPA_PORT
for s in $SCENARIOS; do
  case $s in dispa*) ;; *) continue;; esac
  cat > "$WORK/$s.toml" <<CONF
[server]
bind = "127.0.0.1:$port"
workers = 1
$(dispa_extra "$s")
[domains]
intercept_domains = ["example.com"]
[[targets.targets]]
name = "backend"
url = "http://127.0.0.1:$BACKEND_PORT"
[monitoring]
health_bind = "127.0.0.1:$((port + 1))"
metrics_bind = "127.0.0.1:$((port + 2))"
$(dispa_logging "$s")
CONF
  taskset -c "$PROXY_CPU" target/release/dispa -c "$WORK/$s.toml" 2>"$WORK/$s.log" & PIDS+=($!)
  DISPA_PIDS[$s]=$!; DISPA_PORTS[$s]=$port
  port=$((port + 10))
done

# --- nginx as a reverse proxy -------------------------------------------------------------
if [ "$NGINX_LOG" = on ]; then NLOG="access_log $WORK/nginx-access.log;"; else NLOG="access_log off;"; fi
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/nginx.pid; error_log $WORK/nginx.err;
events { worker_connections 4096; }
http { $NLOG keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 64; }
  server { listen 127.0.0.1:$NGINX_PORT reuseport; server_name example.com;
    location / { proxy_pass http://backend; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_set_header Host \$host; } } }
CONF
taskset -c "$PROXY_CPU" nginx -c "$WORK/nginx.conf" -e "$WORK/nginx.err" & PIDS+=($!)
NGINX_PID=$!

# --- HAProxy --------------------------------------------------------------------------------
cat > "$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend be
backend be
  server s1 127.0.0.1:$BACKEND_PORT
CONF
taskset -c "$PROXY_CPU" haproxy -db -f "$WORK/haproxy.cfg" 2>"$WORK/haproxy.err" & PIDS+=($!)
HAPROXY_PID=$!

wait_port() {
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "port $1 never opened" >&2; tail -n 5 "$WORK"/*.err "$WORK"/*.log >&2 2>/dev/null; exit 1
}
for p in $BACKEND_PORT "${DISPA_PORTS[@]}" $NGINX_PORT $HAPROXY_PORT; do wait_port "$p"; done

# CPU ticks (utime+stime) of a process and all its children (nginx's worker).
ticks() {
  local total=0 pid
  for pid in $1 $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}
HZ=$(getconf CLK_TCK)

port_of() { case $1 in direct) echo $BACKEND_PORT;; dispa*) echo "${DISPA_PORTS[$1]}";; nginx) echo $NGINX_PORT;; haproxy) echo $HAPROXY_PORT;; esac; }
pid_of() { case $1 in direct) echo "";; dispa*) echo "${DISPA_PIDS[$1]}";; nginx) echo $NGINX_PID;; haproxy) echo $HAPROXY_PID;; esac; }

# Warm up every path once.
for s in $SCENARIOS; do taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s -H 'Host: example.com' "http://127.0.0.1:$(port_of "$s")/" >/dev/null; done

RESULTS="$WORK/results.txt"; : > "$RESULTS"
for round in $(seq "$ROUNDS"); do
  for s in $SCENARIOS; do
    pid=$(pid_of "$s")
    before=0; [ -n "$pid" ] && before=$(ticks "$pid")
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H 'Host: example.com' "http://127.0.0.1:$(port_of "$s")/")
    after=0; [ -n "$pid" ] && after=$(ticks "$pid")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out"); p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
    cpu_us=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$reqs" 'BEGIN { if (t > 0) printf "%.2f", t / hz * 1e6 / n; else print "-" }')
    echo "$s $round $rps $p50 $p99 $cpu_us ${errs:-none}" | tee -a "$RESULTS" >&2
  done
done

# Records dropped by each recording Dispa (must be 0), from its metrics endpoint.
for s in $SCENARIOS; do
  case $s in dispa-norec|direct|nginx|haproxy) continue;; esac
  port=${DISPA_PORTS[$s]}
  dropped=$(curl -s "http://127.0.0.1:$((port + 2))/metrics" | awk '$1=="dispa_traffic_records_dropped_total" {print $2}')
  written=$(curl -s "http://127.0.0.1:$((port + 2))/metrics" | awk '$1=="dispa_traffic_records_total{sink=\"database\"}" {print $2}')
  echo "$s: traffic records dropped ${dropped:-?}, written to SQLite ${written:-?}" >&2
done

python3 - "$RESULTS" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" <<'PY'
import statistics, sys
rows = [l.split(None, 6) for l in open(sys.argv[1]) if l.strip()]
by = {}
for s, _r, rps, p50, p99, cpu, errs in rows:
    by.setdefault(s, []).append((float(rps), p50, p99, cpu, errs.strip()))
def med(xs): return statistics.median(xs)
base = {s: med([r[0] for r in v]) for s, v in by.items()}
print(f"\ncommit {sys.argv[2]}; rounds per proxy: {len(next(iter(by.values())))}\n")
print("| scenario | RPS (median) | spread | vs nginx | vs direct | p50 | p99 | proxy CPU µs/request | errors |")
print("|---|---|---|---|---|---|---|---|---|")
for s, v in by.items():
    rps = [r[0] for r in v]; m = base[s]
    cpu = [float(r[3]) for r in v if r[3] != "-"]
    vs_n = f"{m / base['nginx']:.2f}x" if "nginx" in base else "-"
    vs_d = f"{m / base['direct']:.2f}x" if "direct" in base else "-"
    mid = sorted(v, key=lambda r: r[0])[len(v) // 2]
    print(f"| {s} | {m:,.0f} | {min(rps):,.0f}-{max(rps):,.0f} | {vs_n} | {vs_d} | {mid[1]} | {mid[2]} | "
          f"{(f'{med(cpu):.2f}' if cpu else '-')} | {mid[4] if mid[4] != 'none' else '0'} |")
PY
