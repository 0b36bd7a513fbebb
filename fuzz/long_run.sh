#!/usr/bin/env bash
# The long fuzz run (docs/fuzzing.md): every target in turn, two at a time, at nice 19,
# each for FUZZ_LONG_SECONDS (default 900 s = 15 min; 7 targets = 1.75 CPU-hours), on a
# growing corpus outside the repository (seeded from fuzz/seeds; never committed).
# Logs: $FUZZ_LONG_DIR/<target>.log (default /work/fuzz-long); crashes:
# $FUZZ_LONG_DIR/artifacts/<target>/. Detaches itself (setsid + nohup) and prints its PID.
#
#   fuzz/long_run.sh            # start in the background
#   tail -f /work/fuzz-long/summary.log
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
secs="${FUZZ_LONG_SECONDS:-900}"
out="${FUZZ_LONG_DIR:-/work/fuzz-long}"
jobs="${FUZZ_LONG_JOBS:-2}"

if [[ "${1:-}" != "--foreground" ]]; then
  mkdir -p "$out"
  setsid nohup "$0" --foreground >"$out/long_run.out" 2>&1 < /dev/null &
  echo "long fuzz run started: pid $! (process group $!), logs in $out"
  exit 0
fi

cd "$here"
cargo +nightly fuzz build -O || exit 1
run_one() {
  local t="$1"
  mkdir -p "$out/corpus/$t" "$out/artifacts/$t"
  echo "$(date -Is) start $t" >>"$out/summary.log"
  nice -n 19 cargo +nightly fuzz run -O "$t" "$out/corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 \
    -artifact_prefix="$out/artifacts/$t/" >"$out/$t.log" 2>&1
  local rc=$?
  echo "$(date -Is) end $t rc=$rc corpus=$(ls "$out/corpus/$t" | wc -l) files" \
    "$(grep -E '^stat::number_of_executed_units' "$out/$t.log")" >>"$out/summary.log"
}
active=0
for t in $(cargo +nightly fuzz list); do
  run_one "$t" &
  active=$((active + 1))
  if ((active >= jobs)); then
    wait -n
    active=$((active - 1))
  fi
done
wait
echo "$(date -Is) all done" >>"$out/summary.log"
