#!/usr/bin/env bash
# Records per second one logging thread sends to PostgreSQL (issue 16's "≥ 200k/s with
# COPY"): a PostgreSQL server of its own in a temp directory (as the postgres user) on
# CPU 1, the sending thread on CPU 0; `cargo test --release --lib pg_sink_speed` does the
# sending (batches of 1,024 records, one transaction each, as the logging thread).
#
#   scripts/pg-speed.sh            # default durability (fsync, synchronous_commit on)
#   PG_FAST=1 scripts/pg-speed.sh  # fsync off: the protocol and COPY alone
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
PORT=${PORT:-18498}
start_work pg-speed
chmod 755 "$WORK"
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | tail -n 1)
mkdir -p "$WORK/pg"; echo speed > "$WORK/pg/pw"; chown -R postgres "$WORK/pg"
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
as_pg "$PG_BIN/initdb" -D "$WORK/pg/data" -U dispa --auth-host=scram-sha-256 --pwfile="$WORK/pg/pw" >/dev/null
extra=(); [ "${PG_FAST:-0}" = 1 ] && extra=(-c fsync=off -c synchronous_commit=off)
taskset -c 1 setpriv --reuid=postgres --regid=postgres --init-groups "$PG_BIN/postgres" \
  -D "$WORK/pg/data" -p "$PORT" -k "$WORK/pg" -c listen_addresses=127.0.0.1 "${extra[@]}" \
  >"$WORK/pg/log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.1; done
# ROUNDS runs of 512,000 records each, into one table that grows.
for round in $(seq "${ROUNDS:-3}"); do
  DISPA_PG_URL="postgres://dispa:speed@127.0.0.1:$PORT/postgres" \
    taskset -c 0 cargo test --release -q --lib pg_sink_speed -- --ignored --nocapture 2>&1 |
    grep -E "postgres sink"
done
