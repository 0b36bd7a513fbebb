#!/usr/bin/env bash
# Checks that docs/c-api.md names every function of include/tinkex.h (no build needed), then
# builds libtinkex (release, with the test-only exports) and the tinkex-emulator, stages an
# install prefix (lib, headers, pkg-config file), then builds and runs the C and C++ tests
# against one emulator process: plain, under AddressSanitizer+UBSan, and under valgrind.
# Prints "N passed, M failed" last; exits non-zero if anything failed.
#
#   tests/c/run.sh            # everything
#   TINKEX_SKIP_VALGRIND=1 tests/c/run.sh
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"

work="$(mktemp -d "${TMPDIR:-/tmp}/tinkex-c-tests.XXXXXX")"
emu_pid=""
cleanup() {
  if [[ -n "$emu_pid" ]]; then
    kill "$emu_pid" 2>/dev/null || true
    wait "$emu_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
failed_names=()

# run NAME CMD...: one test; its output goes to a log shown on failure.
run() {
  local name="$1"
  shift
  local log="$work/$name.log"
  local started=$SECONDS
  if "$@" >"$log" 2>&1; then
    passed=$((passed + 1))
    echo "ok    $name ($((SECONDS - started)) s) $(tail -n 1 "$log" | cut -c1-100)"
  else
    local rc=$?
    failed=$((failed + 1))
    failed_names+=("$name")
    echo "FAIL  $name (exit $rc)"
    tail -n 60 "$log" | sed 's/^/      /'
  fi
}

echo "== checks that need no build"
run "c-api-doc" python3 tests/c/check_c_api_doc.py

echo "== cargo build --release -p tinkex -p tinkex-emulator --features tinkex/testing"
cargo build --release -p tinkex -p tinkex-emulator --features tinkex/testing
target="${CARGO_TARGET_DIR:-$repo/target}/release"

# A staged install, used exactly as an installed copy would be: through pkg-config.
# tools/install.sh --no-build installs this test build (soname libtinkex.so.<ABI major>).
prefix="$work/prefix"
bash tools/install.sh --no-build "$prefix"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
read -r -a cflags <<<"$(pkg-config --cflags tinkex)"
read -r -a libs <<<"$(pkg-config --libs tinkex)"
link=("${libs[@]}" -pthread "-Wl,-rpath,$prefix/lib")
echo "pkg-config: ${cflags[*]} ${libs[*]}"

c_flags=(-std=c11 -Wall -Wextra -Werror -pedantic -g -DTINKEX_TESTING)
cxx_flags=(-std=c++17 -Wall -Wextra -Werror -pedantic -g -DTINKEX_TESTING)
san=(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)

echo "== build the test programs"
bin="$work/bin"
mkdir -p "$bin"
for t in training training_api misuse example sampling typed_results; do
  src="tests/c/test_$t.c"
  [[ "$t" == example ]] && src="tests/c/example.c"
  run "build-c-$t" cc "${c_flags[@]}" "${cflags[@]}" "$src" -o "$bin/test_$t" "${link[@]}"
  run "build-c-$t-asan" cc "${c_flags[@]}" "${san[@]}" "${cflags[@]}" "$src" -o "$bin/test_$t.asan" "${link[@]}"
done
# The static library too: libtinkex.a plus the pkg-config Libs.private.
read -r -a static_libs <<<"$(pkg-config --static --libs-only-l tinkex | sed 's/-ltinkex//')"
run "build-c-example-static" cc "${c_flags[@]}" "${cflags[@]}" tests/c/example.c \
  -o "$bin/test_example_static" "$prefix/lib/libtinkex.a" "${static_libs[@]}"
run "build-c-secrets" cc "${c_flags[@]}" "${cflags[@]}" tests/c/test_secrets.c -o "$bin/test_secrets" "${link[@]}"
run "build-c-rest" cc "${c_flags[@]}" "${cflags[@]}" tests/c/test_rest.c -o "$bin/test_rest" "${link[@]}"
run "build-c-rest-asan" cc "${c_flags[@]}" "${san[@]}" "${cflags[@]}" tests/c/test_rest.c -o "$bin/test_rest.asan" "${link[@]}"
run "build-c-hostile" cc "${c_flags[@]}" "${cflags[@]}" tests/c/test_hostile.c -o "$bin/test_hostile" "${link[@]}"
cpp_src=(tests/cpp/*.cpp)
run "cpp-rest-generated" python3 bindings/cpp/tools/gen_rest.py --check
run "cpp-abi-coverage" python3 bindings/cpp/tools/check_coverage.py
run "build-cpp" c++ "${cxx_flags[@]}" "${cflags[@]}" -Itests/cpp "${cpp_src[@]}" -o "$bin/test_cpp" "${link[@]}"
run "build-cpp-asan" c++ "${cxx_flags[@]}" "${san[@]}" "${cflags[@]}" -Itests/cpp "${cpp_src[@]}" -o "$bin/test_cpp.asan" "${link[@]}"

echo "== start tinkex-emulator"
"$target/tinkex-emulator" --port 0 --state-dir "$work/emulator-state" --poll-hold-ms 200 \
  >"$work/emulator.out" 2>"$work/emulator.err" &
emu_pid=$!
for _ in $(seq 1 100); do
  [[ -s "$work/emulator.out" ]] && break
  sleep 0.1
done
url="$(head -n 1 "$work/emulator.out")"
if [[ -z "$url" ]]; then
  cat "$work/emulator.err"
  echo "0 passed, 1 failed"
  exit 1
fi
echo "emulator $url (pid $emu_pid)"

echo "== plain"
for t in training training_api misuse example example_static cpp secrets rest sampling typed_results; do
  [[ -x "$bin/test_$t" ]] && run "$t" "$bin/test_$t" "$url"
done

echo "== hostile server (tests/hostile): one case per line, each in a forked child"
# The hostile server is its own cargo workspace (tests/hostile/server).
cargo build --release --quiet --manifest-path tests/hostile/server/Cargo.toml \
  --target-dir "${CARGO_TARGET_DIR:-$repo/target}"
hostile_bin="${CARGO_TARGET_DIR:-$repo/target}/release/hostile-server"
hostile_target() { # the hostile target of an operation of test_hostile.c
  case "$1" in
    get_server_capabilities) echo /api/v1/get_server_capabilities ;;
    create_session) echo /api/v1/create_session ;;
    create_model_result) echo result:/api/v1/create_model ;;
    get_info) echo /api/v1/get_info ;;
    forward_backward_result) echo result:/api/v1/forward_backward ;;
    optim_step_result) echo result:/api/v1/optim_step ;;
    save_state_result) echo result:/api/v1/save_weights ;;
    save_weights_for_sampler_result) echo result:/api/v1/save_weights_for_sampler ;;
    create_sampling_client) echo /api/v1/create_sampling_session ;;
    sample_result | compute_logprobs_result) echo result:/api/v1/asample ;;
    list_training_runs) echo /api/v1/training_runs ;;
    list_user_checkpoints) echo /api/v1/checkpoints ;;
    get_weights_info) echo /api/v1/weights_info ;;
  esac
}
hostile_case() { # MODE OP
  local mode="$1" op="$2" out="$work/hostile-$1-$2.out" rec="$work/hostile-$1-$2.other"
  local hpid url
  "$hostile_bin" --mode "$mode" --target "$(hostile_target "$op")" --upstream "$url_emu" \
    --record-other "$rec" --cap-bytes $((512 << 20)) >"$out" 2>&1 &
  hpid=$!
  for _ in $(seq 1 100); do
    [[ -s "$out" ]] && break
    sleep 0.05
  done
  url="$(sed -n 's/^URL=\([^ ]*\) .*/\1/p' "$out")"
  "$bin/test_hostile" "$mode" "$op" "$url" "$rec"
  local rc=$?
  kill "$hpid" 2>/dev/null
  wait "$hpid" 2>/dev/null
  if ! grep -q '^HIT ' "$out"; then
    echo "the hostile answer never landed (test setup?)"
    return 1
  fi
  return $rc
}
url_emu="$url"
if [[ -x "$bin/test_hostile" ]]; then
  for mode in malformed_json wrong_content_type truncated huge_announced endless_chunked \
    big_detail slow_drip header_bomb huge_header redirect_same_301 redirect_same_302 \
    redirect_same_303 redirect_same_307 redirect_same_308 redirect_other_301 \
    redirect_other_302 redirect_other_303 redirect_other_307 redirect_other_308 redirect_loop \
    deep_json invalid_utf8_json invalid_utf8_header gzip_bomb zstd_bomb; do
    run "hostile-$mode-create_session" hostile_case "$mode" create_session
  done
  for c in truncated:forward_backward_result lying_num_datums:forward_backward_result \
    lying_offsets:forward_backward_result lying_topk:sample_result \
    lying_topk:compute_logprobs_result endless_chunked:sample_result \
    gzip_bomb:forward_backward_result big_detail:optim_step_result; do
    run "hostile-${c%%:*}-${c#*:}" hostile_case "${c%%:*}" "${c#*:}"
  done
  for op in get_server_capabilities create_model_result get_info forward_backward_result \
    optim_step_result save_state_result save_weights_for_sampler_result create_sampling_client \
    sample_result compute_logprobs_result list_training_runs list_user_checkpoints \
    get_weights_info; do
    for mode in endless_chunked redirect_other_307; do
      run "hostile-$mode-$op" hostile_case "$mode" "$op"
    done
  done
fi

echo "== AddressSanitizer + UBSan"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=23"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
for t in training training_api misuse example cpp rest sampling typed_results; do
  [[ -x "$bin/test_$t.asan" ]] && run "$t-asan" "$bin/test_$t.asan" "$url"
done
unset ASAN_OPTIONS UBSAN_OPTIONS

echo "== valgrind"
if [[ "${TINKEX_SKIP_VALGRIND:-0}" == 1 ]]; then
  echo "skipped (TINKEX_SKIP_VALGRIND=1)"
else
  if ! command -v valgrind >/dev/null && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
  fi
  if command -v valgrind >/dev/null; then
    # The bar: no invalid access and no definitely, indirectly or possibly lost block.
    # "Still reachable" blocks (process-lifetime statics) are not errors; see
    # tests/c/valgrind.supp for what they are and why no suppression is needed.
    vg=(valgrind --error-exitcode=9 --leak-check=full --show-leak-kinds=definite,indirect,possible
        --errors-for-leak-kinds=definite,indirect,possible --suppressions=tests/c/valgrind.supp
        --num-callers=30)
    for t in training training_api misuse example cpp sampling typed_results; do
      [[ -x "$bin/test_$t" ]] && run "$t-valgrind" "${vg[@]}" "$bin/test_$t" "$url"
    done
  else
    echo "valgrind not installed: skipped"
  fi
fi

echo
if ((failed > 0)); then
  echo "failed: ${failed_names[*]}"
fi
echo "$passed passed, $failed failed"
((failed == 0))
