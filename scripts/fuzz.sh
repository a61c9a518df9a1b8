#!/usr/bin/env bash
# Fuzz Dispa's parsers with cargo-fuzz (nightly toolchain): the request head parser and
# encoder, the response head parser and encoder, and the chunked decoder. Each target
# runs for $SECONDS_PER_TARGET seconds from the seeds in fuzz/seeds/<target> (the
# growing corpus stays in fuzz/corpus/, ignored by git). A crash leaves its input in
# fuzz/artifacts/<target>/; turn it into a test under src/http before fixing it.
#
#   scripts/fuzz.sh                       # 3 targets x 60 s
#   SECONDS_PER_TARGET=600 scripts/fuzz.sh chunked
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${SECONDS_PER_TARGET:-60}
TARGETS=${*:-request_head response_head chunked}
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
status=0
for t in $TARGETS; do
  mkdir -p "fuzz/corpus/$t"
  cp -n fuzz/seeds/"$t"/* "fuzz/corpus/$t/"
  echo "== $t: ${SECONDS_PER_TARGET}s"
  cargo +nightly fuzz run -O "$t" "fuzz/corpus/$t" -- \
    -max_total_time="$SECONDS_PER_TARGET" -max_len=4096 2>&1 | grep -E "^Done|panicked|SUMMARY|artifact" || status=1
  # grep finds "Done" on a clean run; a crash prints the panic and the artifact path.
  ls "fuzz/artifacts/$t"/crash-* >/dev/null 2>&1 && status=1
done
exit $status
