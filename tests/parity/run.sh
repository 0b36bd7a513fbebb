#!/usr/bin/env bash
# The cross-binding parity suite (issue 16; docs/parity.md): every scenario of
# tests/parity/scenarios through the Rust, C, C++, Python and Elixir drivers, each against a
# fresh tinkex-emulator; fails on any difference between a language's normalised transcript
# and Rust's, printing the first differing line per pair.
#
#   tests/parity/run.sh [--only SUBSTR] [--drivers rust,c,cpp,python,elixir] [--write-doc]
#                       [--keep DIR] [--jobs N] [-v]
#
# Builds (unless TINKEX_SKIP_BUILD=1) libtinkex, the emulator and the Rust driver with the
# feature set the other suites use (tinkex/testing), so they share one build. Needs
# python3, cc/c++, Elixir (mix) and target/python-venv with numpy (created here if missing).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
if [[ "${TINKEX_SKIP_BUILD:-}" != "1" ]]; then
  echo "== cargo build (libtinkex, tinkex-emulator, the Rust parity driver)"
  cargo build --release --quiet -p tinkex -p tinkex-emulator --features tinkex/testing \
    --lib --bins --example parity_driver
fi
venv="$repo/target/python-venv"
if ! "$venv/bin/python" -c "import numpy" >/dev/null 2>&1; then
  echo "== creating $venv (numpy)"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check numpy
fi
exec python3 "$here/runner.py" "$@"
