#!/usr/bin/env bash
# CI's short fuzz step (docs/fuzzing.md): builds every fuzz target and runs each for a few
# seconds on its committed seed corpus (fuzz/seeds/<target>). Fails on any crash, leak,
# timeout or out-of-memory report; crashing inputs land in fuzz/artifacts/<target>/.
#
# Without a nightly toolchain it prints a loud SKIPPED line and exits 0 (ENVIRONMENT.md:
# the step says so and skips; it never passes silently). cargo-fuzz is installed when
# missing. Seconds per target: FUZZ_SECONDS (default 10).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
secs="${FUZZ_SECONDS:-10}"

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "=================================================================="
  echo "SKIPPED: no nightly toolchain (rustup toolchain install nightly); fuzz smoke did not run"
  echo "=================================================================="
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked || exit 1
fi

targets=$(cargo +nightly fuzz list) || exit 1
start=$SECONDS
cargo +nightly fuzz build -O || exit 1
echo "fuzz targets built in $((SECONDS - start)) s"

failed=()
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for t in $targets; do
  mkdir -p "$work/$t" "artifacts/$t"
  echo "== fuzz $t (${secs} s, $(ls "seeds/$t" 2>/dev/null | wc -l) seeds)"
  # First corpus dir: scratch (new inputs go there); the committed seeds are read only.
  # fuzz/regressions/<target>: inputs that once failed (kept as regression inputs).
  extra=()
  [[ -d "regressions/$t" ]] && extra+=("regressions/$t")
  if cargo +nightly fuzz run -O "$t" "$work/$t" "seeds/$t" "${extra[@]}" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
      >"$work/$t.log" 2>&1; then
    grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "$work/$t.log" | tr '\n' ' '
    echo
  else
    failed+=("$t")
    tail -40 "$work/$t.log"
    echo "== fuzz $t FAILED (artifacts in fuzz/artifacts/$t)"
  fi
done
echo "fuzz smoke: $(( $(wc -w <<<"$targets") - ${#failed[@]} )) targets ok, ${#failed[@]} failed, $((SECONDS - start)) s"
((${#failed[@]} == 0))
