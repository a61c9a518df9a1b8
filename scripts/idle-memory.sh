#!/usr/bin/env bash
# Memory per idle keep-alive connection, Dispa (recording off) against nginx, same run:
# $CONNS client connections each send one GET through the proxy and then stay open; the
# proxy's RSS (VmRSS of the process and its children) is read before and $SETTLE seconds
# after. Proxies on CPU 0, the nginx backend on CPU 1, loopback only; every process
# started here is stopped by PID.
#
#   scripts/idle-memory.sh                  # 10,000 connections
#   CONNS=2000 scripts/idle-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
CONNS=${CONNS:-10000}
SETTLE=${SETTLE:-4}
BACKEND_PORT=18291 NGINX_PORT=18293 DISPA_PORT=18300
need nginx nginx-light

start_work idle

cat > "$WORK/backend.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/backend.pid; error_log $WORK/backend.err;
worker_rlimit_nofile $NOFILE;
events { worker_connections $((NOFILE - 100)); }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  server { listen 127.0.0.1:$BACKEND_PORT backlog=16384; location / { return 200 "hello"; } } }
CONF
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/nginx.pid; error_log $WORK/nginx.err;
worker_rlimit_nofile $NOFILE;
events { worker_connections $((NOFILE - 100)); }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 1024; }
  server { listen 127.0.0.1:$NGINX_PORT backlog=16384;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
cat > "$WORK/dispa.toml" <<CONF
[server]
bind = "127.0.0.1:$DISPA_PORT"
workers = 1
backlog = 16384
[domains]
intercept_domains = ["example.com"]
[[targets.targets]]
name = "backend"
url = "http://127.0.0.1:$BACKEND_PORT"
[monitoring]
enabled = false
[timeouts]
keepalive = 300
[logging]
enabled = false
CONF
taskset -c 1 nginx -c "$WORK/backend.conf" -e "$WORK/backend.err" & PIDS+=($!)
taskset -c 0 nginx -c "$WORK/nginx.conf" -e "$WORK/nginx.err" & NGINX=$!; PIDS+=($NGINX)
taskset -c 0 env ${DISPA_ENV:-} target/release/dispa -c "$WORK/dispa.toml" 2>"$WORK/dispa.err" & DISPA=$!; PIDS+=($DISPA)
sleep 1

cat > "$WORK/idle.py" <<'PY'
import os, socket, sys, time
port, n, pid, settle = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
def rss(p):
    pids = [p] + [int(x) for x in os.popen(f"pgrep -P {p}").read().split()]
    return sum(int(l.split()[1]) for q in pids for l in open(f"/proc/{q}/status") if l.startswith("VmRSS"))
before = rss(pid)
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    socks.append(s)
ok = 0
for s in socks:
    s.settimeout(10)
    ok += s.recv(4096).startswith(b"HTTP/1.1 200")
time.sleep(settle)
after = rss(pid)
print(f"| {ok}/{n} | {before / 1024:.1f} | {after / 1024:.1f} | {(after - before) / n:.2f} |")
for s in socks:
    s.close()
PY
echo "| proxy | answered | RSS before (MiB) | RSS with idle connections (MiB) | KiB per connection |"
echo "|---|---|---|---|---|"
printf "| dispa "; python3 "$WORK/idle.py" "$DISPA_PORT" "$CONNS" "$DISPA" "$SETTLE"
printf "| nginx "; python3 "$WORK/idle.py" "$NGINX_PORT" "$CONNS" "$NGINX" "$SETTLE"
