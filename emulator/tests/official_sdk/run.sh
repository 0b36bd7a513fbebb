#!/usr/bin/env bash
# Runs the official Tinker Python SDK (tinker==0.38.0, unmodified) against the emulator:
# see conformance.py for the scenario. Prints one "mode <m>: PASS|FAIL" line per mode and
# "N passed, M failed" (one test per mode) as its last line; exits 0 when every mode passed.
#
#   run.sh                      the default mode (or $TINKEX_OFFICIAL_SDK_MODE)
#   run.sh --mode jwt           one mode
#   run.sh --all-modes          every mode, each against a fresh emulator
#
# Modes (the emulator's flags; conformance.py adds the mode's checks, CONFORMANCE_MODE):
#   default            no flag: plain API key, sampling polls retrieve_future
#   jwt                --client-config '{"pjwt_auth_enabled": true}' (PROTOCOL.md 2.5, 2.7)
#   retrieve_futures   --client-config '{"sample_use_retrieve_futures": true}'
#                      --dynamic-config '{"sample_cancel_enabled": true}' (8.2, 8.3)
#
# Environment:
#   TINKEX_SKIP_OFFICIAL_SDK=1   skip (exit 0)
#   TINKEX_OFFICIAL_SDK_MODE=M   the mode when no option is given (default: default)
#   TINKEX_EMULATOR_BIN=PATH     use this emulator binary instead of building one
#   TINKEX_EMULATOR_ARGS="..."   extra emulator flags (every mode), e.g. "--poll-hold-ms 50"
#   TINKER_TELEMETRY             passed through untouched (SDK default: on)
set -euo pipefail

if [[ "${TINKEX_SKIP_OFFICIAL_SDK:-}" == "1" ]]; then
  echo "official SDK conformance: skipped (TINKEX_SKIP_OFFICIAL_SDK=1)"
  exit 0
fi

MODES=(default jwt retrieve_futures)
mode_args() { # $1 = mode: prints the emulator flags of the mode, one per line
  case "$1" in
    default) ;;
    jwt) printf '%s\n' --client-config '{"pjwt_auth_enabled": true}' ;;
    retrieve_futures)
      printf '%s\n' --client-config '{"sample_use_retrieve_futures": true}' \
        --dynamic-config '{"sample_cancel_enabled": true}'
      ;;
    *) return 1 ;;
  esac
}
usage() { echo "usage: run.sh [--mode default|jwt|retrieve_futures | --all-modes]" >&2; exit 2; }
RUN_MODES=("${TINKEX_OFFICIAL_SDK_MODE:-default}")
while (($# > 0)); do
  case "$1" in
    --mode) (($# >= 2)) || usage; RUN_MODES=("$2"); shift 2 ;;
    --mode=*) RUN_MODES=("${1#--mode=}"); shift ;;
    --all-modes) RUN_MODES=("${MODES[@]}"); shift ;;
    *) usage ;;
  esac
done
for m in "${RUN_MODES[@]}"; do
  mode_args "$m" >/dev/null || { echo "official SDK conformance: unknown mode '$m' (${MODES[*]})" >&2; exit 2; }
done

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
SDK_VERSION="0.38.0"
VENV="$REPO/target/official-sdk-venv"
PY="$VENV/bin/python"
STARTUP_DEADLINE_S=60
RUN_TIMEOUT_S=600

EMU_PID=""
TMP=""
RESULT_LINE_PRINTED=0
PASSED=0
FAILED=0

# shellcheck disable=SC2317  # report and cleanup run from the EXIT trap
report() { # $1 = exit status
  if [[ "$RESULT_LINE_PRINTED" == "0" ]]; then
    RESULT_LINE_PRINTED=1
    # A failure before any mode ran (venv, build) counts as one failed test.
    if [[ "$1" != "0" && "$FAILED" == "0" ]]; then FAILED=1; fi
    echo "$PASSED passed, $FAILED failed"
  fi
}

# shellcheck disable=SC2317
stop_emulator() {
  if [[ -n "$EMU_PID" ]] && kill -0 "$EMU_PID" 2>/dev/null; then
    kill -TERM "$EMU_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$EMU_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$EMU_PID" 2>/dev/null; then
      echo "official SDK conformance: emulator (pid $EMU_PID) ignored SIGTERM; sending SIGKILL" >&2
      kill -KILL "$EMU_PID" 2>/dev/null || true
    fi
    wait "$EMU_PID" 2>/dev/null || true
  fi
  EMU_PID=""
  if [[ -n "$TMP" && -d "$TMP" ]]; then rm -rf "$TMP"; fi
  TMP=""
}

# shellcheck disable=SC2317
cleanup() {
  local status=$?
  stop_emulator
  report "$status"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. venv with the official SDK ----------------------------------------------------------
have_sdk() {
  [[ -x "$PY" ]] && "$PY" - "$SDK_VERSION" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
sys.exit(0 if version("tinker") == sys.argv[1] else 1)
EOF
}
if have_sdk; then
  echo "official SDK conformance: reusing $VENV (tinker $SDK_VERSION)"
else
  echo "official SDK conformance: creating $VENV with tinker==$SDK_VERSION"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
  "$PY" -m pip install --quiet --disable-pip-version-check "tinker==$SDK_VERSION"
  have_sdk || { echo "official SDK conformance: tinker $SDK_VERSION not importable from $VENV" >&2; exit 1; }
fi

# --- 2. emulator binary ---------------------------------------------------------------------
if [[ -n "${TINKEX_EMULATOR_BIN:-}" ]]; then
  EMU_BIN="$TINKEX_EMULATOR_BIN"
  [[ -x "$EMU_BIN" ]] || { echo "official SDK conformance: TINKEX_EMULATOR_BIN=$EMU_BIN is not executable" >&2; exit 1; }
else
  echo "official SDK conformance: building tinkex-emulator (release)"
  (cd "$REPO" && cargo build --release --quiet -p tinkex-emulator)
  EMU_BIN="$REPO/target/release/tinkex-emulator"
fi

# --- 3. each mode: a fresh emulator, then the conformance script ----------------------------
run_mode() { # $1 = mode; returns the conformance script's status
  local mode="$1"
  local -a MODE_ARGS=()
  mapfile -t MODE_ARGS < <(mode_args "$mode")
  echo "official SDK conformance: === mode $mode (emulator flags: ${MODE_ARGS[*]:-none})"
  TMP="$(mktemp -d "${TMPDIR:-/tmp}/tinkex-official-sdk.XXXXXX")"
  mkdir -p "$TMP/state"
  : >"$TMP/emulator.out"
  read -r -a EXTRA_ARGS <<<"${TINKEX_EMULATOR_ARGS:-}"
  "$EMU_BIN" --port 0 --state-dir "$TMP/state" "${MODE_ARGS[@]}" "${EXTRA_ARGS[@]}" >"$TMP/emulator.out" 2>"$TMP/emulator.err" &
  EMU_PID=$!

  BASE_URL=""
  deadline=$((SECONDS + STARTUP_DEADLINE_S))
  while :; do
    # `read` succeeds only once a complete (newline-terminated) first line is there.
    if IFS= read -r BASE_URL <"$TMP/emulator.out" && [[ -n "$BASE_URL" ]]; then
      break
    fi
    if ! kill -0 "$EMU_PID" 2>/dev/null; then
      echo "official SDK conformance: emulator exited before printing its URL; stderr:" >&2
      cat "$TMP/emulator.err" >&2 || true
      return 1
    fi
    if ((SECONDS >= deadline)); then
      echo "official SDK conformance: emulator printed no URL within ${STARTUP_DEADLINE_S}s; stderr:" >&2
      cat "$TMP/emulator.err" >&2 || true
      return 1
    fi
    sleep 0.1
  done
  BASE_URL="${BASE_URL%$'\r'}"
  echo "official SDK conformance: emulator pid $EMU_PID at $BASE_URL"

  local status=0
  TINKER_BASE_URL="$BASE_URL" TINKER_API_KEY="tml-conformance-test" CONFORMANCE_MODE="$mode" \
    timeout "$RUN_TIMEOUT_S" "$PY" "$HERE/conformance.py" || status=$?
  if [[ "$status" == "124" ]]; then
    echo "official SDK conformance: timed out after ${RUN_TIMEOUT_S}s" >&2
  fi
  if [[ "$status" != "0" ]]; then
    echo "official SDK conformance: FAILED (exit $status); emulator stderr (last 40 lines):" >&2
    tail -n 40 "$TMP/emulator.err" >&2 || true
  fi
  return "$status"
}

overall=0
for m in "${RUN_MODES[@]}"; do
  mode_status=0
  run_mode "$m" || mode_status=$?
  stop_emulator
  if [[ "$mode_status" == "0" ]]; then
    PASSED=$((PASSED + 1))
    echo "official SDK conformance: mode $m: PASS"
  else
    FAILED=$((FAILED + 1))
    overall=1
    echo "official SDK conformance: mode $m: FAIL (exit $mode_status)"
  fi
done
exit "$overall"
