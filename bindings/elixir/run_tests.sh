#!/usr/bin/env bash
# Elixir binding tests: builds libtinkex (release, with the test-only exports used by the
# panic tests) and tinkex-emulator, builds the NIF, then runs the ExUnit suite against the
# emulator. Installs nothing: Erlang/OTP (with erl_nif.h) and Elixir must be present, e.g.
#   apt-get install -y --no-install-recommends elixir erlang-dev
# Extra arguments go to `mix test` (e.g. `bindings/elixir/run_tests.sh test/training_test.exs`).
# The last lines are ExUnit's own summary.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

missing=()
for tool in elixir mix erl cargo make cc; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]} > 0)); then
  echo "run_tests.sh: missing: ${missing[*]}" >&2
  echo "  Elixir/Erlang: apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends elixir erlang-dev" >&2
  echo "  (cargo: the Rust toolchain; make/cc: build-essential)" >&2
  exit 2
fi
erl_include="$(erl -noshell -eval 'io:format("~ts/erts-~ts/include", [code:root_dir(), erlang:system_info(version)]), halt().')"
if [[ ! -f "$erl_include/erl_nif.h" ]]; then
  echo "run_tests.sh: erl_nif.h not found in $erl_include: install erlang-dev" >&2
  exit 2
fi

cd "$repo"
echo "== cargo build --release -p tinkex -p tinkex-emulator --features tinkex/testing"
cargo build --release -p tinkex -p tinkex-emulator --features tinkex/testing
target="${CARGO_TARGET_DIR:-$repo/target}/release"

cd "$here"
export MIX_ENV=test
export TINKEX_EMULATOR="$target/tinkex-emulator"
# Exported, so that the make run by `mix test` (mix.exs) sees the same build command.
export TINKEX_LIB_DIR="$target"
echo "== make (priv/tinkex_nif.so against $target/libtinkex.so, test build)"
make TINKEX_NIF_TESTING=1 TINKEX_NIF_TIMING=1

echo "== mix test (Elixir $(elixir -e 'IO.write(System.version())'), OTP $(erl -noshell -eval 'io:format("~s", [erlang:system_info(otp_release)]), halt().'))"
exec mix test "$@"
