#!/usr/bin/env bash
# The benchmark suite of libtinkex, in one command (docs/benchmarks.md):
#
#   bench/run.sh            full run on a quiet machine (< 15 min on 2 cores with a warm
#                           build, plus the growth curves, ~20 min more; a cold build adds
#                           ~4-5 min): writes docs/benchmarks.md, docs/benchmarks.png and
#                           the curves' docs/benchmarks-{inflight,rss,batch}.png
#   bench/run.sh --smoke    tiny sizes, written to a temporary directory (the test-suite
#                           check that the harness still runs end to end; includes the
#                           faults family)
#   bench/run.sh faults --runs 3
#                           only the faults family (issue 13: training under 503s and
#                           resets, poll spin, recovery; Python binding vs official SDK,
#                           ~35 min): rewrites only its section of docs/benchmarks.md
#
# Builds (release, CARGO_TARGET_DIR=target/bench, so it never touches target/release):
# libtinkex.so, tinkex-emulator and tinkex-bench (bench/rust), all workspace members.
# --smoke builds in target/ instead, with the test suites' features (tinkex/testing, which
# only adds the panic-injection exports): it reuses their build rather than compiling every
# dependency a second time (minutes of CI), and its numbers mean nothing anyway.
# Python: target/bench-venv (numpy, matplotlib; runs the binding from bindings/python and
# the driver), target/official-sdk-venv (tinker==0.38.0; created if missing, shared with
# bindings/python/run_tests.sh). TINKEX_SKIP_OFFICIAL_SDK=1 leaves the official SDK out.
# Extra arguments go to bench/driver.py (e.g. --only w1,w3).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
BENCH_VENV="$REPO/target/bench-venv"
OFFICIAL_VENV="$REPO/target/official-sdk-venv"
OFFICIAL_VERSION="0.38.0"
PYTHON="${PYTHON:-python3}"
log() { echo "bench/run.sh: $*" >&2; }

SMOKE=0
for a in "$@"; do [[ "$a" == "--smoke" ]] && SMOKE=1; done

# --- 1. builds ---------------------------------------------------------------------------------
if [[ "$SMOKE" == "1" ]]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
  features=(--features tinkex/testing)
else
  export CARGO_TARGET_DIR="$REPO/target/bench"
  features=()
fi
export TINKEX_BENCH_TARGET="$CARGO_TARGET_DIR/release"
# One build of the three (tinkex-bench is a workspace member): one feature resolution, so in
# smoke mode every dependency is the one the C, Python and Elixir suites already built.
log "cargo build --release -p tinkex -p tinkex-emulator -p tinkex-bench ${features[*]} (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
(cd "$REPO" && cargo build --release --quiet -p tinkex -p tinkex-emulator -p tinkex-bench "${features[@]}")

# --- 2. Python environments --------------------------------------------------------------------
if [[ ! -x "$BENCH_VENV/bin/python" ]]; then
  log "creating $BENCH_VENV"
  "$PYTHON" -m venv "$BENCH_VENV"
fi
if ! "$BENCH_VENV/bin/python" -c "import numpy, matplotlib" >/dev/null 2>&1; then
  log "installing numpy, matplotlib into $BENCH_VENV"
  "$BENCH_VENV/bin/python" -m pip install --quiet --disable-pip-version-check numpy matplotlib
fi
have_official() {
  [[ -x "$OFFICIAL_VENV/bin/python" ]] && "$OFFICIAL_VENV/bin/python" - "$OFFICIAL_VERSION" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
sys.exit(0 if version("tinker") == sys.argv[1] else 1)
EOF
}
if [[ "${TINKEX_SKIP_OFFICIAL_SDK:-}" != "1" ]] && ! have_official; then
  log "creating $OFFICIAL_VENV with tinker==$OFFICIAL_VERSION"
  rm -rf "$OFFICIAL_VENV"
  "$PYTHON" -m venv "$OFFICIAL_VENV"
  "$OFFICIAL_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "tinker==$OFFICIAL_VERSION"
fi

# --- 3. the suite --------------------------------------------------------------------------------
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
export PYTHONDONTWRITEBYTECODE=1 TINKER_TELEMETRY=0
unset TINKER_API_KEY TINKER_BASE_URL
if [[ "$SMOKE" == "1" ]]; then
  # The generated parts of the report that need no run (growth sentences, goal links).
  (cd "$HERE" && "$BENCH_VENV/bin/python" -m unittest -q harness.test_growth)
  OUT="$(mktemp -d)"
  trap 'rm -rf "$OUT"' EXIT
  "$BENCH_VENV/bin/python" "$HERE/driver.py" --out "$OUT" "$@"
  # The smoke check: the driver exits non-zero when a workload produced no result for a
  # client; here, a report and a chart were written.
  grep -q "^| libtinkex Rust API |" "$OUT/benchmarks.md"
  test -s "$OUT/benchmarks.png"
  # The growth curves (unless a subset was asked for): a section, a table and a chart each.
  if [[ " $* " != *" --only"* ]]; then
    for c in "C1:inflight" "C2:rss" "C3:batch"; do
      grep -q "^### ${c%%:*}: " "$OUT/benchmarks.md"
      test -s "$OUT/benchmarks-${c#*:}.png"
    done
  fi
  log "smoke run OK (report in a temporary directory, removed)"
  echo "1 passed, 0 failed"
else
  exec "$BENCH_VENV/bin/python" "$HERE/driver.py" "$@"
fi
