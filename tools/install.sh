#!/usr/bin/env bash
# Installs libtinkex for C and C++ under a prefix:
#
#   tools/install.sh [--no-build] PREFIX
#
#   PREFIX/lib/libtinkex.so.<M>.<m>            the shared library (soname libtinkex.so.<M>)
#   PREFIX/lib/libtinkex.so.<M> -> libtinkex.so.<M>.<m>
#   PREFIX/lib/libtinkex.so     -> libtinkex.so.<M>
#   PREFIX/lib/libtinkex.a                     the static library
#   PREFIX/include/tinkex.h, tinkex.hpp        the C header and the header-only C++ wrapper
#   PREFIX/lib/pkgconfig/tinkex.pc             pkg-config --cflags --libs tinkex
#   PREFIX/lib/cmake/tinkex/tinkexConfig.cmake (+ tinkexConfigVersion.cmake)
#                                              find_package(tinkex) -> tinkex::tinkex,
#                                              tinkex::tinkex_static
#
# <M>.<m> is the C ABI version (TINKEX_ABI_VERSION_MAJOR/_MINOR of include/tinkex.h): the
# soname follows the major only, so a program linked against one minor keeps working after
# a newer minor (which only adds) is installed over it. Every installed file is relocatable
# (the .pc and CMake files locate the prefix from their own path), so the tree can be copied
# elsewhere as a whole.
#
# Builds first with `cargo build --release --lib -p tinkex` (the shipping build: no `testing`
# feature) unless --no-build is given, in which case the libraries already in the target
# directory are installed as they are (tests/c/run.sh installs its test build that way).
# Honours CARGO_TARGET_DIR, and DESTDIR (staged installs: files go to $DESTDIR$PREFIX).
# Linux only (the soname and the .so names).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() { sed -n '2,4p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
build=1
prefix=""
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    -h | --help) usage ;;
    -*) echo "install.sh: unknown option $arg" >&2; usage ;;
    *) [[ -z "$prefix" ]] || usage; prefix="$arg" ;;
  esac
done
[[ -n "$prefix" ]] || usage
[[ "$prefix" == /* ]] || prefix="$(pwd)/$prefix"

if ((build)); then
  echo "install.sh: cargo build --release --lib -p tinkex" >&2
  (cd "$repo" && cargo build --release --lib -p tinkex)
fi
target="${CARGO_TARGET_DIR:-$repo/target}"
[[ "$target" == /* ]] || target="$repo/$target"
target="$target/release"

header="$repo/include/tinkex.h"
define() { sed -n "s/^#define $1 \"\{0,1\}\([0-9.]*\)\"\{0,1\}\$/\1/p" "$header"; }
major="$(define TINKEX_ABI_VERSION_MAJOR)"
minor="$(define TINKEX_ABI_VERSION_MINOR)"
version="$(define TINKEX_VERSION)"
[[ -n "$major" && -n "$minor" && -n "$version" ]] || {
  echo "install.sh: cannot read the versions from $header" >&2
  exit 1
}
soname="libtinkex.so.$major"

for f in libtinkex.so libtinkex.a tinkex.pc; do
  [[ -f "$target/$f" ]] || {
    echo "install.sh: $target/$f is missing: run cargo build --release --lib -p tinkex (or drop --no-build)" >&2
    exit 1
  }
done
# A library built before the soname existed, or for another ABI, must not be installed
# under this name.
if command -v readelf >/dev/null; then
  got="$(readelf -d "$target/libtinkex.so" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')"
  [[ "$got" == "$soname" ]] || {
    echo "install.sh: $target/libtinkex.so has soname '${got:-none}', expected $soname (stale build?)" >&2
    exit 1
  }
fi

dest="${DESTDIR:-}$prefix"
lib="$dest/lib"
mkdir -p "$lib/pkgconfig" "$lib/cmake/tinkex" "$dest/include"
install -m 0755 "$target/libtinkex.so" "$lib/$soname.$minor"
ln -sfn "$soname.$minor" "$lib/$soname"
ln -sfn "$soname" "$lib/libtinkex.so"
install -m 0644 "$target/libtinkex.a" "$lib/libtinkex.a"
install -m 0644 "$header" "$repo/bindings/cpp/tinkex.hpp" "$dest/include/"
install -m 0644 "$target/tinkex.pc" "$lib/pkgconfig/tinkex.pc"
for f in tinkexConfig.cmake tinkexConfigVersion.cmake; do
  sed -e "s/@VERSION@/$version/g" -e "s/@ABI_MAJOR@/$major/g" -e "s/@ABI_MINOR@/$minor/g" \
    "$repo/cmake/$f.in" >"$lib/cmake/tinkex/$f"
done
echo "install.sh: installed libtinkex $version (C ABI $major.$minor, soname $soname) in $dest" >&2
