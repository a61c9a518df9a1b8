#!/usr/bin/env bash
# Side-by-side load test on loopback: direct-to-backend, the floor relay, Dispa, nginx and HAProxy as
# reverse proxies, interleaved (A B C D A B C D ...), each proxy with one worker pinned to
# CPU $PROXY_CPU while wrk and the nginx backend share CPU $LOAD_CPU. For every workload
# it prints one Markdown table: median RPS (and spread), p50/p99/p99.9 latency, proxy CPU
# time per request (from /proc/PID/stat of every proxy process), the proxy's peak RSS,
# upstream connections opened per 1,000 requests (from the backend's stub_status), errors,
# and ratios against nginx and direct, and each proxy's CPU per request over the floor's.
# The floor (bench/floor.c, built here with cc) is a single-threaded epoll relay that
# pairs every client connection with a new backend connection and copies bytes with
# read/write: the socket work any proxy must do, without parsing, pooling or logging. Every process started here is stopped by PID, also
# when the script is interrupted; every load run is bounded by $DURATION.
#
#   scripts/bench.sh                                   # keep-alive, 5-byte body, 3 x 10 s
#   WORKLOADS="small close 16k 1m c1000 c10000 post rate" scripts/bench.sh   # all of them
#   ROUNDS=5 DURATION=15 CONNS=100 scripts/bench.sh
#   SCENARIOS="dispa dispa-norec nginx" LOG=on scripts/bench.sh   # the cost of recording
#   SCENARIOS="dispa dispa-spare dispa-norec nginx" LOG=on scripts/bench.sh   # ... with a spare CPU
#   SCENARIOS="dispa dispa-plain dispa-defer dispa-epoll nginx" scripts/bench.sh   # ring flags
#   BASE_BIN=/tmp/dispa-old SCENARIOS="dispa dispa-base dispa-norec dispa-base-norec nginx" \
#     scripts/bench.sh   # before/after a change: dispa-base* run the binary $BASE_BIN
#
# Workloads: small (keep-alive GET, 5-byte body), close (Connection: close per request),
# 16k / 1m (static 16 KiB / 1 MiB bodies), c1000 / c10000 (1,000 / 10,000 keep-alive
# connections), post (chunked 16 KiB uploads), rate (a fixed rate, $RATE or half of
# nginx's small-body median, for latency without saturation; needs oha).
# TLS workloads (every proxy also terminates TLS for "localhost" with the same certificate,
# ECDSA P-256, or RSA 2048 with TLS_KEY=rsa; nginx with ssl_session_cache and tickets):
# tls-small (keep-alive 5-byte GETs over TLS), tls-1m (1 MiB responses over TLS),
# tls-resume (a new connection per request: wrk resumes each session with a ticket) and
# tls-new (full TLS 1.3 handshakes, no request: openssl s_time -new; CPU per handshake).
#   TLS_KEY=ecdsa WORKLOADS="tls-small tls-1m tls-resume tls-new" SCENARIOS="dispa nginx haproxy" LOG=on scripts/bench.sh
# Dispa records every request (gzip files + SQLite) except in dispa-norec; dispa-pg records
# to gzip files + PostgreSQL (a server of its own on $PG_CPU, its CPU reported apart:
# needs the postgresql package); dispa-spare is
# dispa allowed both CPUs: its one worker still pins itself to $PROXY_CPU (the first CPU it
# may use) and the logging and control threads may run on $LOAD_CPU's idle time, the layout
# of a machine where Dispa runs one worker fewer than CPUs. LOG=on turns on
# nginx's and HAProxy's access logs (to files), the fair comparison with recording.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
LOG=${LOG:-${NGINX_LOG:-off}}
WORKLOADS=${WORKLOADS:-small}
SCENARIOS=${SCENARIOS:-"direct floor dispa nginx haproxy"}
RATE=${RATE:-auto}
BASE_BIN=${BASE_BIN:-target/release/dispa}
UPSTREAM_CONNS=${UPSTREAM_CONNS:-1024}
PG_CPU=${PG_CPU:-$PROXY_CPU}
BACKEND_PORT=18091 NGINX_PORT=18093 HAPROXY_PORT=18094 DISPA_PORT=18100
NGINX_TLS_PORT=18095 HAPROXY_TLS_PORT=18096 FLOOR_PORT=18097 PG_PORT=18098 TLS_KEY=${TLS_KEY:-ecdsa}

need wrk wrk; need nginx nginx-light; need haproxy haproxy; need curl curl; need openssl openssl; need cc gcc
# common.sh raised the open-files limit to the hard limit (NOFILE). A proxy holds a
# client and an upstream connection per request in flight, so "c10000" is capped at
# half the limit (a container's hard limit of 20,000 gives 9,900 connections).
HUGE=${HUGE:-$(( (NOFILE - 200) / 2 < 10000 ? (NOFILE - 200) / 2 : 10000 ))}

start_work bench

# --- one certificate for "localhost", used by every proxy's TLS listener -----------------
case $TLS_KEY in
  ecdsa) KEYOPT=(-newkey ec -pkeyopt ec_paramgen_curve:P-256);;
  rsa) KEYOPT=(-newkey rsa:2048);;
  *) echo "TLS_KEY is ecdsa or rsa" >&2; exit 2;;
esac
openssl req -x509 "${KEYOPT[@]}" -nodes -days 2 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost" -keyout "$WORK/tls.key" -out "$WORK/tls.pem" 2>/dev/null
cat "$WORK/tls.pem" "$WORK/tls.key" > "$WORK/tls-haproxy.pem"
chmod 644 "$WORK/tls.pem" "$WORK/tls.key" "$WORK/tls-haproxy.pem"

# --- backend: nginx, one worker: 5-byte answers, static 16 KiB and 1 MiB files -----------
mkdir -p "$WORK/www"
head -c 16384 /dev/zero | tr '\0' 'a' > "$WORK/www/16k"
head -c 1048576 /dev/zero | tr '\0' 'b' > "$WORK/www/1m"
chmod 755 "$WORK" "$WORK/www"; chmod 644 "$WORK/www/"*   # nginx workers run unprivileged
cat > "$WORK/backend.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/backend.pid; error_log $WORK/backend.err;
worker_rlimit_nofile $NOFILE;
events { worker_connections 30000; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 120s;
  server { listen 127.0.0.1:$BACKEND_PORT reuseport backlog=16384; root $WORK/www;
    location = / { return 200 "hello"; }
    location = /upload { return 200 "ok"; }
    location = /stub { stub_status; } } }
CONF
taskset -c "$LOAD_CPU" nginx -c "$WORK/backend.conf" -e "$WORK/backend.err" & PIDS+=($!)

# --- Dispa (and variants of it: dispa-epoll, dispa-plain, dispa-defer, dispa-norec, dispa-spare)
declare -A DISPA_PIDS DISPA_PORTS
dispa_extra() {
  case $1 in
    dispa|dispa-norec|dispa-spare|dispa-base|dispa-base-norec|dispa-pg) echo "";;
    dispa-epoll) echo 'io_driver = "legacy"';;
    dispa-plain) echo 'uring_flags = []';;
    dispa-defer) echo 'uring_flags = ["single_issuer", "defer_taskrun"]';;
    *) echo "unknown Dispa variant $1" >&2; exit 2;;
  esac
}
dispa_logging() {
  case $1 in
    dispa-norec|dispa-base-norec) printf '[logging]\nenabled = false\n';;
    # As dispa, with PostgreSQL instead of SQLite beside the gzip files.
    dispa-pg) printf '[logging]\ntype = "both"\n[logging.file]\ndirectory = "%s"\n[logging.database]\nurl = "postgres://dispa:bench@127.0.0.1:%s/postgres"\ninstance = "bench"\n' "$WORK/$1-logs" "$PG_PORT";;
    *) printf '[logging]\ntype = "both"\n[logging.file]\ndirectory = "%s"\n[logging.database]\npath = "%s"\n' "$WORK/$1-logs" "$WORK/$1.db";;
  esac
}
# As nginx's "keepalive 1024" below: at most $UPSTREAM_CONNS connections to the backend, in use
# and idle together; at c10000 the other requests wait for one (0 = no limit, Dispa's
# default). Not for dispa-base*: binaries before 2026-11-30 do not know the key.
dispa_upstream() {
  case $1 in
    dispa-base*) ;;
    *) printf '[upstream]\nmax_connections_per_target = %s\n' "$UPSTREAM_CONNS";;
  esac
}
# --- PostgreSQL for dispa-pg: its own server in $WORK (as the postgres user), on $PG_CPU
# (default: the proxy's CPU, where the logging thread waits for it; on the load CPU, busy
# with wrk and the backend, it fell behind and records were dropped); its CPU per
# request is reported apart from Dispa's.
PG_PID=""
if [[ " $SCENARIOS " == *" dispa-pg "* ]]; then
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | tail -n 1)
  mkdir -p "$WORK/pg"; echo bench > "$WORK/pg/pw"; chown -R postgres "$WORK/pg"
  as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
  as_pg "$PG_BIN/initdb" -D "$WORK/pg/data" -U dispa --auth-host=scram-sha-256 \
    --pwfile="$WORK/pg/pw" >/dev/null
  taskset -c "$PG_CPU" setpriv --reuid=postgres --regid=postgres --init-groups \
    "$PG_BIN/postgres" -D "$WORK/pg/data" -p "$PG_PORT" -k "$WORK/pg" \
    -c listen_addresses=127.0.0.1 >"$WORK/pg/log" 2>&1 & PIDS+=($!)
  PG_PID=$!
  wait_port_early() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
  wait_port_early "$PG_PORT" || { echo "PostgreSQL did not start" >&2; cat "$WORK/pg/log" >&2; exit 1; }
fi
port=$DISPA_PORT
for s in $SCENARIOS; do
  case $s in dispa*) ;; *) continue;; esac
  cat > "$WORK/$s.toml" <<CONF
[server]
bind = "127.0.0.1:$port"
workers = 1
backlog = 16384
$(dispa_extra "$s")
[server.tls]
bind = "127.0.0.1:$((port + 5))"
[[server.tls.certificates]]
cert = "$WORK/tls.pem"
key = "$WORK/tls.key"
[domains]
intercept_domains = ["example.com", "localhost"]
[[targets.targets]]
name = "backend"
url = "http://127.0.0.1:$BACKEND_PORT"
$(dispa_upstream "$s")
[monitoring]
health_bind = "127.0.0.1:$((port + 1))"
metrics_bind = "127.0.0.1:$((port + 2))"
$(dispa_logging "$s")
CONF
  cpus=$PROXY_CPU; [ "$s" = dispa-spare ] && cpus="$PROXY_CPU,$LOAD_CPU"
  bin=target/release/dispa; case $s in dispa-base*) bin=$BASE_BIN;; esac
  taskset -c "$cpus" "$bin" -c "$WORK/$s.toml" 2>"$WORK/$s.log" & PIDS+=($!)
  DISPA_PIDS[$s]=$!; DISPA_PORTS[$s]=$port
  port=$((port + 10))
done

# --- the floor relay ----------------------------------------------------------------------
FLOOR_PID=""
if [[ " $SCENARIOS " == *" floor "* ]]; then
  cc -O2 -o "$WORK/floor" bench/floor.c
  taskset -c "$PROXY_CPU" "$WORK/floor" "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$BACKEND_PORT" 2>"$WORK/floor.err" & PIDS+=($!)
  FLOOR_PID=$!
fi

# --- nginx as a reverse proxy -------------------------------------------------------------
if [ "$LOG" = on ]; then NLOG="access_log $WORK/nginx-access.log;"; else NLOG="access_log off;"; fi
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/nginx.pid; error_log $WORK/nginx.err;
worker_rlimit_nofile $NOFILE;
events { worker_connections 30000; }
http { $NLOG keepalive_requests 1000000; client_max_body_size 0;
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 1024; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$NGINX_PORT reuseport backlog=16384; server_name example.com;
    location / { proxy_pass http://backend; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_set_header Host \$host;
      proxy_request_buffering off; } }
  server { listen 127.0.0.1:$NGINX_TLS_PORT ssl reuseport backlog=16384; server_name localhost;
    ssl_certificate $WORK/tls.pem; ssl_certificate_key $WORK/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m; ssl_session_tickets on;
    location / { proxy_pass http://backend; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_set_header Host \$host;
      proxy_request_buffering off; } } }
CONF
taskset -c "$PROXY_CPU" nginx -c "$WORK/nginx.conf" -e "$WORK/nginx.err" & PIDS+=($!)
NGINX_PID=$!

# --- HAProxy --------------------------------------------------------------------------------
if [ "$LOG" = on ]; then HLOG="  log stdout format raw local0"; HOPT="  option httplog"; else HLOG=""; HOPT=""; fi
cat > "$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn $(( (NOFILE - 200) / 2 ))
$HLOG
defaults
  mode http
  log global
$HOPT
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend be
frontend fe_tls
  bind 127.0.0.1:$HAPROXY_TLS_PORT ssl crt $WORK/tls-haproxy.pem alpn http/1.1
  default_backend be
backend be
  server s1 127.0.0.1:$BACKEND_PORT
CONF
taskset -c "$PROXY_CPU" haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy-access.log" 2>"$WORK/haproxy.err" & PIDS+=($!)
HAPROXY_PID=$!

wait_port() {
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "port $1 never opened" >&2; tail -n 5 "$WORK"/*.err "$WORK"/*.log >&2 2>/dev/null; exit 1
}
for p in $BACKEND_PORT "${DISPA_PORTS[@]}" $NGINX_PORT $HAPROXY_PORT $NGINX_TLS_PORT $HAPROXY_TLS_PORT; do wait_port "$p"; done
[ -n "$FLOOR_PID" ] && wait_port $FLOOR_PORT

# CPU ticks (utime+stime) of a process and its children (nginx's worker), and peak RSS.
ticks() {
  local total=0 pid
  for pid in $1 $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}
peak_rss_kib() {
  local total=0 pid
  for pid in $1 $(pgrep -P "$1" || true); do
    total=$((total + $(awk '/VmHWM/ {print $2}' "/proc/$pid/status")))
  done
  echo "$total"
}
backend_accepts() { curl -s "http://127.0.0.1:$BACKEND_PORT/stub" | awk 'NR == 3 {print $1}'; }
HZ=$(getconf CLK_TCK)

port_of() { case $1 in direct) echo $BACKEND_PORT;; floor) echo $FLOOR_PORT;; dispa*) echo "${DISPA_PORTS[$1]}";; nginx) echo $NGINX_PORT;; haproxy) echo $HAPROXY_PORT;; esac; }
tls_port_of() { case $1 in dispa*) echo $(( ${DISPA_PORTS[$1]} + 5 ));; nginx) echo $NGINX_TLS_PORT;; haproxy) echo $HAPROXY_TLS_PORT;; esac; }
pid_of() { case $1 in direct) echo "";; floor) echo "$FLOOR_PID";; dispa*) echo "${DISPA_PIDS[$1]}";; nginx) echo $NGINX_PID;; haproxy) echo $HAPROXY_PID;; esac; }

# wrk scripts: p99.9 on exit (wrk --latency stops at p99), and a chunked 16 KiB upload.
cat > "$WORK/latency.lua" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("P999 %d\n", latency:percentile(99.9)))
end
LUA
cat "$WORK/latency.lua" > "$WORK/post.lua"
cat >> "$WORK/post.lua" <<'LUA'
local chunk = string.rep("x", 4096)
local body = ""
for i = 1, 4 do body = body .. string.format("%x", #chunk) .. "\r\n" .. chunk .. "\r\n" end
local req = "POST /upload HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n" .. body .. "0\r\n\r\n"
request = function() return req end
LUA

HAS_OHA=0; command -v oha >/dev/null 2>&1 && HAS_OHA=1
RESULTS="$WORK/results.txt"; : > "$RESULTS"

# One bounded load run of workload $1 against scenario $2; appends a line to $RESULTS.
run() {
  local w=$1 s=$2 round=$3 path=/ conns=$CONNS args=(-s "$WORK/latency.lua")
  case $w in
    small) ;;
    close) args+=(-H 'Connection: close');;
    16k) path=/16k;;
    1m) path=/1m;;
    c1000) conns=1000;;
    c10000) conns=$HUGE;;
    post) path=/upload; args=(-s "$WORK/post.lua");;
    rate) ;;
    tls-small|tls-new) ;;
    tls-1m) path=/1m;;
    tls-resume) args+=(-H 'Connection: close');;
    *) echo "unknown workload $w" >&2; exit 2;;
  esac
  case $w in tls-*) case $s in direct|floor) return 0;; esac;; esac
  local pid before=0 after=0 acc_before acc_after out rps reqs p50 p99 p999 errs
  pid=$(pid_of "$s")
  acc_before=$(backend_accepts)
  [ -n "$pid" ] && before=$(ticks "$pid")
  local pg_before=0; [ "$s" = dispa-pg ] && pg_before=$(ticks "$PG_PID")
  if [ "$w" = tls-new ]; then
    # Full handshakes only (s_time -new sends no request and resumes nothing).
    out=$(taskset -c "$LOAD_CPU" openssl s_time -connect "127.0.0.1:$(tls_port_of "$s")" -new \
      -time "$DURATION" 2>&1 | tail -n 2)
    reqs=$(awk '/connections in .* real seconds/ {print $1}' <<<"$out")
    rps=$(awk -v n="$reqs" -v d="$DURATION" 'BEGIN {printf "%.2f", n / d}')
    p50=-; p99=-; p999=-; errs=""
  elif [[ $w == tls-* ]]; then
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${DURATION}s" --timeout 5s --latency "${args[@]}" \
      "https://localhost:$(tls_port_of "$s")$path")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out"); p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    p999="$(awk '$1=="P999" {print $2}' <<<"$out")us"
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  elif [ "$w" = rate ]; then
    out=$(taskset -c "$LOAD_CPU" oha -z "${DURATION}s" -q "$RATE_RPS" -c "$CONNS" --no-tui \
      -H 'Host: example.com' "http://127.0.0.1:$(port_of "$s")/" 2>&1)
    rps=$(awk '/Requests\/sec:/ {print $2}' <<<"$out")
    reqs=$(awk -v r="$rps" -v d="$DURATION" 'BEGIN {printf "%d", r * d}')
    # "  99.00% in 1.2345 ms"
    p50=$(awk '$1 == "50.00%" {print $3 $4}' <<<"$out"); p99=$(awk '$1 == "99.00%" {print $3 $4}' <<<"$out")
    p999=$(awk '$1 == "99.90%" {print $3 $4}' <<<"$out")
    # Statuses other than 200, and errors other than oha's own cut-off at the deadline.
    errs=$(awk '/^Status code distribution/ {s = 1; next} /^Error distribution/ {e = 1; next}
      /^[^ ]/ {s = 0; e = 0} s && /\[/ && !/\[200\]/ {print} e && /\[/ && !/deadline/ {print}' <<<"$out" | tr '\n' ' ')
  else
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${DURATION}s" --timeout 5s --latency "${args[@]}" \
      -H 'Host: example.com' "http://127.0.0.1:$(port_of "$s")$path")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out"); p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    p999="$(awk '$1=="P999" {print $2}' <<<"$out")us"
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  fi
  [ -n "$pid" ] && after=$(ticks "$pid")
  if [ "$s" = dispa-pg ]; then
    awk -v w="$w" -v r="$round" -v t=$(( $(ticks "$PG_PID") - pg_before )) -v hz="$HZ" -v n="$reqs" \
      'BEGIN { if (n > 0) printf "%s %s %.2f\n", w, r, t / hz * 1e6 / n }' >> "$WORK/pg-cpu.txt"
  fi
  acc_after=$(backend_accepts)
  local cpu_us rss up
  cpu_us=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$reqs" 'BEGIN { if (t > 0 && n > 0) printf "%.2f", t / hz * 1e6 / n; else print "-" }')
  rss=-; [ -n "$pid" ] && rss=$(peak_rss_kib "$pid")
  # Minus the one stub_status request itself.
  up=$(awk -v a=$((acc_after - acc_before - 1)) -v n="$reqs" 'BEGIN { if (n > 0) printf "%.2f", a * 1000 / n; else print "-" }')
  echo "$w $s $round $rps $p50 $p99 $p999 $cpu_us $rss $up ${errs:-none}" | tee -a "$RESULTS" >&2
}

RATE_RPS=$RATE
for w in $WORKLOADS; do
  if [ "$w" = rate ]; then
    if [ "$HAS_OHA" = 0 ]; then echo "rate: oha not installed (cargo install oha --locked); skipped" >&2; continue; fi
    if [ "$RATE" = auto ]; then
      RATE_RPS=$(awk '$1 == "small" && $2 == "nginx" {print $4}' "$RESULTS" | sort -n | awk '{a[NR] = $1} END {if (NR) printf "%d", a[int((NR + 1) / 2)] / 2; else print 30000}')
    fi
    echo "rate: $RATE_RPS requests/s" >&2
  fi
  # Warm up every path once (short, fewer connections).
  for s in $SCENARIOS; do
    case $w in
      tls-*) [ "$s" = direct ] || [ "$s" = floor ] || taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d1s "https://localhost:$(tls_port_of "$s")/" >/dev/null;;
      *) taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d1s -H 'Host: example.com' "http://127.0.0.1:$(port_of "$s")/" >/dev/null;;
    esac
  done
  for round in $(seq "$ROUNDS"); do
    for s in $SCENARIOS; do run "$w" "$s" "$round"; done
  done
done

# Records dropped by each recording Dispa (must be 0), from its metrics endpoint.
DROPS=""
for s in $SCENARIOS; do
  case $s in dispa-norec|dispa-base-norec|direct|floor|nginx|haproxy) continue;; esac
  port=${DISPA_PORTS[$s]}
  metrics=$(curl -s "http://127.0.0.1:$((port + 2))/metrics")
  dropped=$(awk '$1=="dispa_traffic_records_dropped_total" {print $2}' <<<"$metrics")
  written=$(awk '$1=="dispa_traffic_records_total{sink=\"database\"}" {print $2}' <<<"$metrics")
  DROPS="$DROPS$s: traffic records dropped ${dropped:-?}, written to the database ${written:-?}. "
done

python3 - "$RESULTS" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$DROPS" "$LOG" <<'PY'
import statistics, sys
rows = [l.split(None, 10) for l in open(sys.argv[1]) if l.strip()]
def ms(t):
    t = t.strip()
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if t.endswith(unit):
            try: return float(t[: -len(unit)]) * f
            except ValueError: return None
    return None
by = {}
for w, s, _r, rps, p50, p99, p999, cpu, rss, up, errs in rows:
    by.setdefault(w, {}).setdefault(s, []).append(
        (float(rps or 0), ms(p50), ms(p99), ms(p999), cpu, rss, up, errs.strip()))
print(f"\ncommit {sys.argv[2]}; access logs {sys.argv[4]}; {sys.argv[3]}")
def med(xs): return statistics.median(xs) if xs else None
def fmt(x, f): return "-" if x is None else f.format(x)
for w, scen in by.items():
    base = {s: med([r[0] for r in v]) for s, v in scen.items()}
    print(f"\n### {w}\n")
    cpu_of = {s: med([float(r[4]) for r in v if r[4] != "-"]) for s, v in scen.items()}
    floor = cpu_of.get("floor")
    print("| scenario | RPS (median) | spread | vs nginx | vs direct | p50 ms | p99 ms | p99.9 ms | proxy CPU µs/request | CPU over floor | peak RSS MiB | upstream conns / 1k req | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s, v in scen.items():
        rps = [r[0] for r in v]; m = base[s]
        lat = [med([r[i] for r in v if r[i] is not None]) for i in (1, 2, 3)]
        cpu = [float(r[4]) for r in v if r[4] != "-"]
        rss = max((int(r[5]) for r in v if r[5] != "-"), default=None)
        up = [float(r[6]) for r in v if r[6] != "-"]
        errs = [r[7] for r in v if r[7] != "none"]
        vs_n = f"{m / base['nginx']:.2f}x" if base.get("nginx") else "-"
        vs_d = f"{m / base['direct']:.2f}x" if base.get("direct") else "-"
        print(f"| {s} | {m:,.0f} | {min(rps):,.0f}-{max(rps):,.0f} | {vs_n} | {vs_d} | "
              f"{fmt(lat[0], '{:.2f}')} | {fmt(lat[1], '{:.2f}')} | {fmt(lat[2], '{:.2f}')} | "
              f"{fmt(med(cpu), '{:.2f}')} | {fmt(floor and med(cpu) and med(cpu) / floor, '{:.2f}x')} | "
              f"{fmt(rss and rss / 1024, '{:.1f}')} | {fmt(med(up), '{:.2f}')} | "
              f"{'; '.join(errs) if errs else '0'} |")
PY
if [ -s "$WORK/pg-cpu.txt" ]; then
  echo
  echo "PostgreSQL's own CPU per request of dispa-pg (not in its proxy CPU column), median of rounds:"
  awk '{v[$1] = v[$1] " " $3} END {for (w in v) print w, v[w]}' "$WORK/pg-cpu.txt" |
    while read -r w xs; do
      printf '%s: %s µs\n' "$w" "$(tr ' ' '\n' <<<"$xs" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')"
    done
fi
