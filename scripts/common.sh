# Shared by the load scripts (bench.sh, slow-clients.sh, idle-memory.sh); sourced, not run.
# Gives: need CMD PACKAGE (apt-get install when CMD is missing), an up-to-date release build,
# NOFILE (the open-files hard limit, now also the soft limit), and
# start_work NAME: a temp directory $WORK plus the PIDS array; every PID in it is
# stopped (TERM, then KILL) and $WORK removed on exit or interruption.

need() { command -v "$1" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }

# Always: a no-op when up to date, and never a stale binary measured after a change.
cargo build --release -q

NOFILE=$(ulimit -Hn); [ "$NOFILE" = unlimited ] && NOFILE=1048576
ulimit -n "$NOFILE"

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 0.3
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
start_work() {
  WORK=$(mktemp -d "/tmp/dispa-$1.XXXXXX")
  trap cleanup EXIT INT TERM
}
