#!/usr/bin/env bash
# Runs every test of the project, suite by suite, and ends with one summary line.
#
#   1. Rust: unit and integration tests of the client, the C ABI and the emulator
#      (cargo test --workspace --release), with the committed C header verified (and
#      compiled as C11 and C++17: TINKEX_REQUIRE_CC=1 makes a missing compiler a failure,
#      as does a non-empty CI). Every
#      suite builds with the `testing` feature (panic-injection exports for the panic
#      tests), so they share one build; release artifacts for shipping are built without it.
#   2. C and C++ programs against the C ABI (plain, ASan/UBSan, valgrind).
#   3. The Python binding (pytest) and its drop-in check with the official SDK.
#   4. The Elixir binding (ExUnit), then one sampler handle shared by Python, Elixir and C
#      (tests/cross_language/run.sh), then the parity suite: every scenario through the
#      Rust, C, C++, Python and Elixir APIs, transcripts compared (tests/parity/run.sh).
#   5. The unmodified official Python SDK (tinker 0.38.0) against the emulator, in every
#      mode (default, jwt, retrieve_futures: emulator/tests/official_sdk/run.sh --all-modes).
#   6. The benchmark harness on tiny sizes (bench/run.sh --smoke: it still runs end to end).
#   7. Packaging (tests/packaging/run.sh): a fresh clone installed the way each ecosystem
#      installs things (wheel, mix test, install prefix with pkg-config and CMake) and every
#      README code block, against the emulator.
#
# Needs Rust, gcc/g++, valgrind, python3 with venv, Elixir + erlang-dev, and the Rust and
# Python package registries on the first run (.ci/run installs what a fresh machine lacks).
# Skip a suite with TINKEX_SKIP=<name>[,<name>...] (rust, c, python, elixir, cross-language,
# parity, official-sdk, bench-smoke, fuzz-smoke, packaging).
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

passed=0
failed=0
failed_names=()
timings=()
# Every suite's output is also kept in target/run_all/<suite>.log; the end of the run repeats
# the failure lines of each failed suite (tools/failure_digest.py), so a log viewer that
# shows only the head and the tail of a long run still shows what failed.
logs="$repo/target/run_all"
mkdir -p "$logs"

suite() { # name, command...
  local name="$1"
  shift
  if [[ ",${TINKEX_SKIP:-}," == *",$name,"* ]]; then
    echo "== $name: skipped (TINKEX_SKIP)"
    return
  fi
  echo "== $name"
  local start=$SECONDS rc
  # Through a FIFO, not a pipe: a process a suite left behind that still holds its stdout
  # must not keep the run waiting for the end of the output (tee gets at most 5 s more).
  local fifo="$logs/.$name.fifo"
  rm -f "$fifo"
  mkfifo "$fifo"
  tee "$logs/$name.log" <"$fifo" &
  local tee_pid=$!
  "$@" >"$fifo" 2>&1
  rc=$?
  for _ in $(seq 1 50); do
    kill -0 "$tee_pid" 2>/dev/null || break
    sleep 0.1
  done
  rm -f "$fifo"
  timings+=("$name $((SECONDS - start)) s")
  if ((rc == 0)); then
    passed=$((passed + 1))
    echo "== $name: ok ($((SECONDS - start)) s)"
  else
    failed=$((failed + 1))
    failed_names+=("$name")
    echo "== $name: FAILED ($((SECONDS - start)) s)"
  fi
}

suite rust env TINKEX_VERIFY_HEADER=1 TINKEX_REQUIRE_CC=1 cargo test --workspace --release --features tinkex/testing,tinkex/schema
suite c bash tests/c/run.sh
suite python bash bindings/python/run_tests.sh
suite elixir bash bindings/elixir/run_tests.sh
suite cross-language bash tests/cross_language/run.sh
suite parity bash tests/parity/run.sh
suite official-sdk bash emulator/tests/official_sdk/run.sh --all-modes
suite bench-smoke bash bench/run.sh --smoke
suite fuzz-smoke bash fuzz/smoke.sh
suite packaging bash tests/packaging/run.sh

echo "suite times: $(IFS=,; echo "${timings[*]}" | sed 's/,/, /g')"
for name in "${failed_names[@]}"; do
  echo "== failure lines of $name (all of it: $logs/$name.log)"
  python3 tools/failure_digest.py "$logs/$name.log"
done
if ((failed > 0)); then
  echo "failed suites: ${failed_names[*]}"
fi
echo "suites: $passed passed, $failed failed"
((failed == 0))
