#!/usr/bin/env bash
# Packaging suite (issue 17): each ecosystem's ordinary install commands, run on a fresh clone
# of this repository's HEAD (commit first: uncommitted changes are not in the clone) against
# one tinkex-emulator, with nothing from the workspace but the emulator binary.
#
#   build     fresh clone -> `cargo build --release` (the shipping build: no `testing`)
#   python    `pip wheel ./bindings/python` -> a py3-none-<platform> wheel carrying
#             libtinkex -> installed in a new venv under the work directory -> the
#             training example run with only PATH, TINKER_BASE_URL and TINKER_API_KEY set;
#             then `mypy --strict` on the examples against the installed package
#   c         tools/install.sh PREFIX (soname, links, headers, pkg-config, CMake package) ->
#             the C example built with pkg-config and the C++ example with CMake (shared and
#             static), against the installed copy only -> all run against the emulator
#   elixir    `mix test` in the clone's bindings/elixir, nothing before it but the build
#   readme    every code block of README.md (tools/run_readme_blocks.py)
#
# Cargo: the clone builds into a private target directory, $TINKEX_PACKAGING_TARGET
# (default target/packaging of this workspace, kept between runs; the clone is made in it
# and removed at the end), seeded from
# target/release when new so that crates already compiled there are reused. It is not the
# workspace's target/ because the other suites build libtinkex with the `testing` feature:
# sharing one directory would rebuild the crate twice per run and leave whichever build
# came last in target/release. A cold run compiles libtinkex once more (minutes).
#
# The emulator is the workspace's target/release/tinkex-emulator (built here as the other
# suites build it). `mix test` gets it through TINKEX_EMULATOR; without that variable the
# suite builds the emulator in the clone itself (more minutes, same result).
#
# Needs cargo, python3 with venv, cc, c++, cmake, pkg-config, readelf, Elixir with
# erlang-dev, and the Python package index (setuptools for the build, numpy, mypy).
# Prints "N passed, M failed" last; exits non-zero if anything failed.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"

missing=()
for tool in cargo git python3 cc c++ cmake pkg-config readelf nm mix; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]} > 0)); then
  echo "tests/packaging/run.sh: missing: ${missing[*]} (.ci/run installs them)" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/tinkex-packaging.XXXXXX")"
emu_pid=""
cleanup() {
  if [[ -n "$emu_pid" ]]; then
    kill "$emu_pid" 2>/dev/null || true
    wait "$emu_pid" 2>/dev/null || true
  fi
  rm -rf "$work" "${clone:-}"
}
trap cleanup EXIT

passed=0
failed=0
failed_names=()
# check NAME CMD...: one step; its output goes to a log shown (the end of it) on failure.
check() {
  local name="$1"
  shift
  local log="$work/$name.log" started=$SECONDS rc
  # A subshell outside any `if`, so that `set -e` stops a step at its first failing command.
  set +e
  (set -e; "$@") >"$log" 2>&1
  rc=$?
  set -e
  if ((rc == 0)); then
    passed=$((passed + 1))
    echo "ok    $name ($((SECONDS - started)) s) $(tail -n 1 "$log" | cut -c1-100)"
  else
    failed=$((failed + 1))
    failed_names+=("$name")
    echo "FAIL  $name (exit $rc)"
    # ExUnit's and pytest's failure blocks first (a long log's tail may not hold them).
    grep -E -A20 '^ +[0-9]+\) test|^_{5,} ' "$log" | head -n 120 | sed 's/^/      /' || true
    tail -n 60 "$log" | sed 's/^/      /'
  fi
}
finish() {
  echo
  if ((failed > 0)); then
    echo "failed: ${failed_names[*]}"
  fi
  echo "$passed passed, $failed failed"
  ((failed == 0))
}

echo "== the emulator (workspace build, as the other suites build it)"
cargo build --release --quiet -p tinkex -p tinkex-emulator --features tinkex/testing
emulator="${CARGO_TARGET_DIR:-$repo/target}/release/tinkex-emulator"
"$emulator" --port 0 --state-dir "$work/emulator-state" >"$work/emulator.out" 2>"$work/emulator.err" &
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
key="tml-packaging-test"
echo "emulator $url (pid $emu_pid)"

pkg_target="${TINKEX_PACKAGING_TARGET:-$repo/target/packaging}"
if [[ ! -d "$pkg_target/release" && -d "$repo/target/release" ]]; then
  mkdir -p "$pkg_target"
  cp -r --reflink=auto "$repo/target/release" "$pkg_target/release"
fi
# Always the same path: cargo names a path package's artifacts after its location, so a new
# path per run would add another copy of them to the target directory every time.
clone="$pkg_target/clone"
echo "== fresh clone of HEAD ($(git rev-parse --short HEAD)) in $clone"
rm -rf "$clone"
git clone --quiet "$repo" "$clone"
export CARGO_TARGET_DIR="$pkg_target"
unset TINKEX_LIBRARY TINKEX_LIB_DIR TINKEX_INCLUDE_DIR TINKEX_PREFIX PYTHONPATH PKG_CONFIG_PATH

# --- build: the acceptance's first command ----------------------------------------------
check build bash -c "cd '$clone' && cargo build --release"
lib="$pkg_target/release/libtinkex.so"
abi_major="$(sed -n 's/^#define TINKEX_ABI_VERSION_MAJOR \([0-9]*\)$/\1/p' "$clone/include/tinkex.h")"
abi_minor="$(sed -n 's/^#define TINKEX_ABI_VERSION_MINOR \([0-9]*\)$/\1/p' "$clone/include/tinkex.h")"
# (`grep -q` would stop reading early: with pipefail the writer's SIGPIPE would then turn a
# match into a failure, so every pipeline here greps without -q.)
# shipping_lib FILE: the shipping build (soname libtinkex.so.<major>, no test-only exports).
shipping_lib() {
  readelf -d "$1" | grep "Library soname: \[libtinkex.so.$abi_major\]" >/dev/null ||
    { echo "$1: soname is not libtinkex.so.$abi_major"; readelf -d "$1" | grep -i soname; return 1; }
  if nm -D --defined-only "$1" | grep tinkex_testing_ >/dev/null; then
    echo "$1 exports tinkex_testing_* (built with the testing feature)"
    return 1
  fi
  echo "$1: soname libtinkex.so.$abi_major, no test-only exports"
}
check build-is-shipping shipping_lib "$lib"

# --- python: pip wheel -> new venv -> the example with only the URL and the key ----------
python_wheel() {
  (cd "$clone" && python3 -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$work/wheels" ./bindings/python)
  local wheels=("$work"/wheels/tinkex-*.whl)
  [[ ${#wheels[@]} == 1 ]] || { echo "expected one wheel: ${wheels[*]}"; return 1; }
  local tag
  tag="py3-none-$(python3 -c 'import sysconfig; print(sysconfig.get_platform().replace("-", "_").replace(".", "_"))')"
  [[ "$(basename "${wheels[0]}")" == "tinkex-0.1.0-$tag.whl" ]] ||
    { echo "wheel $(basename "${wheels[0]}"), expected the tag $tag"; return 1; }
  python3 - "${wheels[0]}" "$work/wheel-lib.so" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
for need in ("tinkex/libtinkex.so", "tinkex/py.typed", "tinkex/__init__.py", "tinkex/_build_info.py"):
    assert need in names, f"{need} is not in the wheel"
wheel = zipfile.ZipFile(sys.argv[1])
assert "WORKSPACE = None" in wheel.read("tinkex/_build_info.py").decode(), "a build workspace is recorded"
open(sys.argv[2], "wb").write(wheel.read("tinkex/libtinkex.so"))
EOF
  shipping_lib "$work/wheel-lib.so"
  echo "$(basename "${wheels[0]}")"
}
check python-wheel python_wheel

venv="$work/venv"
python_install() {
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$work"/wheels/tinkex-*.whl
  # The bundled copy is the one loaded, from a directory that is not the clone.
  (cd "$work" && env -i PATH="$venv/bin:/usr/bin:/bin" python -c \
    'import tinkex, sys; print(tinkex.LIBRARY_PATH); sys.exit(0 if tinkex.LIBRARY_PATH.startswith(sys.prefix) else 1)')
}
check python-install python_install
# Only PATH (for the venv's interpreter), the base URL and the key.
check python-example bash -c "cd '$work' && env -i PATH='$venv/bin:/usr/bin:/bin' \
  TINKER_BASE_URL='$url' TINKER_API_KEY='$key' python '$clone/bindings/python/examples/sl_loop.py'"
python_mypy() {
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check mypy
  cd "$work" && "$venv/bin/python" -m mypy --strict --no-incremental "$clone/bindings/python/examples/sl_loop.py"
}
check python-mypy-strict python_mypy

# --- c: install into a prefix; C with pkg-config, C++ with CMake; run both --------------
prefix="$work/prefix"
c_install() {
  bash "$clone/tools/install.sh" "$prefix"
  local so="$prefix/lib/libtinkex.so.$abi_major.$abi_minor"
  [[ -f "$so" && ! -L "$so" ]] || { echo "missing $so"; return 1; }
  [[ "$(readlink "$prefix/lib/libtinkex.so.$abi_major")" == "libtinkex.so.$abi_major.$abi_minor" ]] || return 1
  [[ "$(readlink "$prefix/lib/libtinkex.so")" == "libtinkex.so.$abi_major" ]] || return 1
  for f in lib/libtinkex.a include/tinkex.h include/tinkex.hpp lib/pkgconfig/tinkex.pc \
    lib/cmake/tinkex/tinkexConfig.cmake lib/cmake/tinkex/tinkexConfigVersion.cmake; do
    [[ -f "$prefix/$f" ]] || { echo "missing $prefix/$f"; return 1; }
  done
  shipping_lib "$so"
}
check c-install c_install
# needs_prefix BIN: the program loads libtinkex.so.<major> from the prefix.
needs_prefix() {
  readelf -d "$1" | grep "NEEDED.*\[libtinkex.so.$abi_major\]" >/dev/null || { echo "$1 does not need libtinkex.so.$abi_major"; return 1; }
  ldd "$1" | grep "libtinkex.so.$abi_major => $prefix/lib/" >/dev/null || { ldd "$1"; return 1; }
}
c_example() {
  export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
  local flags
  read -r -a flags <<<"$(pkg-config --cflags --libs tinkex)"
  cc -std=c11 -Wall -Wextra -Werror "$clone/tests/c/example.c" "${flags[@]}" -Wl,-rpath,"$prefix/lib" -o "$work/example-c"
  needs_prefix "$work/example-c"
  "$work/example-c" "$url"
}
check c-example-pkg-config c_example
cpp_example() {
  cmake -S "$clone/examples/cpp" -B "$work/cpp" -DCMAKE_PREFIX_PATH="$prefix"
  cmake --build "$work/cpp"
  needs_prefix "$work/cpp/train"
  if readelf -d "$work/cpp/train_static" | grep "NEEDED.*libtinkex" >/dev/null; then
    echo "train_static needs libtinkex.so"
    return 1
  fi
  TINKER_BASE_URL="$url" TINKER_API_KEY="$key" "$work/cpp/train"
  TINKER_BASE_URL="$url" TINKER_API_KEY="$key" "$work/cpp/train_static"
}
check cpp-example-cmake cpp_example

# --- elixir: mix test, nothing else (the build above made libtinkex) --------------------
# The scheduler-timing checks of the Elixir suite are skipped here: this step checks that a
# fresh clone's plain `mix test` builds and loads the NIF; the elixir suite checks the timing.
check elixir-mix-test bash -c "cd '$clone/bindings/elixir' && TINKEX_EMULATOR='$emulator' TINKEX_SKIP_SCHED_CHECK=1 mix test"

# --- readme: every block of README.md ------------------------------------------------
check readme-blocks bash -c "cd '$clone' && TINKER_BASE_URL='$url' TINKER_API_KEY='$key' \
  python3 tools/run_readme_blocks.py --python '$venv/bin/python'"

finish
