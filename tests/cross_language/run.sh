#!/usr/bin/env bash
# A sampler handle made in Python samples from Elixir and from C against the same emulator,
# concurrently with the original, with no seq_id collision (issue 14, acceptance 3).
#
#   tests/cross_language/run.sh        (after the Python and Elixir suites have built their parts:
#                                       target/python-venv with tinkex, bindings/elixir/priv/tinkex_nif.so)
# Environment: TINKEX_CROSS_SAMPLES (per clone, default 20), TINKEX_CROSS_DEADLINE_S (default 180).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}/release"
n="${TINKEX_CROSS_SAMPLES:-20}"
deadline="${TINKEX_CROSS_DEADLINE_S:-180}"
python="$repo/target/python-venv/bin/python"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

for f in "$target/tinkex-emulator" "$target/libtinkex.so" "$python" "$repo/bindings/elixir/priv/tinkex_nif.so"; do
  [[ -e "$f" ]] || { echo "cross_language: missing $f (run the Python and Elixir suites first)" >&2; exit 2; }
done

echo "== build the C clone"
cc -std=c11 -Wall -Werror -O1 -I"$repo/include" "$here/clone.c" -L"$target" -ltinkex \
  -Wl,-rpath,"$target" -o "$work/clone"

echo "== start tinkex-emulator"
"$target/tinkex-emulator" --port 0 --state-dir "$work/state" >"$work/emu.out" 2>"$work/emu.err" &
pids+=($!)
# Wait (bounded) for the emulator to print its URL.
for _ in $(seq 1 200); do [[ -s "$work/emu.out" ]] && break; sleep 0.05; done
url="$(head -n 1 "$work/emu.out")"
[[ "$url" == http* ]] || { cat "$work/emu.err" >&2; exit 1; }

echo "== Python origin (samples until both clones finish)"
PYTHONPATH="$repo/bindings/python" TINKEX_LIBRARY="$target/libtinkex.so" \
  "$python" "$here/origin.py" "$url" "$work" "$n" "$deadline" &
origin=$!
pids+=($origin)
for _ in $(seq 1 $((deadline * 20))); do
  [[ -s "$work/handle" ]] && break
  kill -0 "$origin" 2>/dev/null || { echo "cross_language: the origin exited before writing its handle" >&2; exit 1; }
  sleep 0.05
done
[[ -s "$work/handle" ]] || { echo "cross_language: no handle within ${deadline} s" >&2; exit 1; }

echo "== Elixir and C clones"
(cd "$repo/bindings/elixir" && MIX_ENV=test TINKEX_LIB_DIR="$target" mix run "$here/clone.exs" "$url" "$work" "$n") &
elixir_clone=$!
"$work/clone" "$url" "$work" "$n" &
c_clone=$!
status=0
wait "$c_clone" || { echo "cross_language: the C clone failed" >&2; status=1; }
wait "$elixir_clone" || { echo "cross_language: the Elixir clone failed" >&2; status=1; }
# A failed clone leaves no done-file: let the origin stop rather than wait for its deadline.
((status == 0)) || { touch "$work/elixir.done" "$work/c.done"; wait "$origin" || true; exit 1; }
wait "$origin"

"$python" "$here/check.py" "$url" "$work" "$n"
