#!/usr/bin/env bash
# Builds libtinkex and the emulator, prepares the Python venvs, installs the tinkex package
# and runs its pytest suite against the tinkex-emulator binary. The last line printed is
# pytest's own summary line; the exit status is pytest's.
#
#   bindings/python/run_tests.sh [extra pytest args]
#
# Environment:
#   TINKEX_SKIP_BUILD=1        do not run cargo (use the binaries already in target/release)
#   TINKEX_SKIP_OFFICIAL_SDK=1 do not create the official-SDK venv (those example runs skip)
#   TINKEX_GC_ITERATIONS=N     rounds of the garbage-collection test (default 150)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="$REPO/target/python-venv"
OFFICIAL_VENV="$REPO/target/official-sdk-venv"
OFFICIAL_VERSION="0.38.0"
PYTHON="${PYTHON:-python3}"

log() { echo "run_tests.sh: $*" >&2; }

# --- 1. libtinkex and the emulator ---------------------------------------------------------
if [[ "${TINKEX_SKIP_BUILD:-}" != "1" ]]; then
  # The same feature set as the other suites (the testing feature adds the panic-injection
  # exports the panic test needs), so the suites share one build.
  log "cargo build --release -p tinkex -p tinkex-emulator --features tinkex/testing"
  (cd "$REPO" && cargo build --release --quiet -p tinkex -p tinkex-emulator --features tinkex/testing)
fi
LIB="$REPO/target/release/libtinkex.so"
EMU="$REPO/target/release/tinkex-emulator"
[[ -f "$LIB" ]] || { log "missing $LIB"; exit 1; }
[[ -x "$EMU" ]] || { log "missing $EMU"; exit 1; }

# --- 2. the test venv (numpy, pytest; tqdm: progress bar; jsonschema: docs/schema checks) ---
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import numpy, pytest, tqdm, jsonschema" >/dev/null 2>&1; then
  log "installing numpy, pytest, tqdm, jsonschema into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check numpy pytest tqdm jsonschema
fi

# --- 3. the official SDK venv (for the drop-in runs of the examples) -----------------------
have_official() {
  [[ -x "$OFFICIAL_VENV/bin/python" ]] && "$OFFICIAL_VENV/bin/python" - "$OFFICIAL_VERSION" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
sys.exit(0 if version("tinker") == sys.argv[1] else 1)
EOF
}
if [[ "${TINKEX_SKIP_OFFICIAL_SDK:-}" != "1" ]]; then
  if have_official; then
    log "reusing $OFFICIAL_VENV (tinker $OFFICIAL_VERSION)"
  else
    log "creating $OFFICIAL_VENV with tinker==$OFFICIAL_VERSION"
    rm -rf "$OFFICIAL_VENV"
    "$PYTHON" -m venv "$OFFICIAL_VENV"
    "$OFFICIAL_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "tinker==$OFFICIAL_VERSION"
    have_official || { log "tinker $OFFICIAL_VERSION is not importable from $OFFICIAL_VENV"; exit 1; }
  fi
  export TINKEX_OFFICIAL_SDK_PYTHON="$OFFICIAL_VENV/bin/python"
fi

# --- 4. install the package (a regular, non-editable install) -------------------------------
# Without bundling a library (TINKEX_BUNDLE_LIBRARY=0): the installed package loads the test
# build above from the workspace it records, instead of a shipping build made by setup.py.
log "pip install $HERE"
TINKEX_BUNDLE_LIBRARY=0 "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall "$HERE"
rm -rf "$HERE/build" "$HERE"/*.egg-info

# --- 5. pytest (from outside the source tree, so the installed package is what is tested) --
export TINKEX_EMULATOR_BIN="$EMU"
export TINKER_TELEMETRY=0
unset TINKEX_LIBRARY PYTHONPATH
cd "$REPO/target"
exec "$VENV/bin/python" -m pytest -p no:cacheprovider -q -rs "$HERE/tests" "$@"
