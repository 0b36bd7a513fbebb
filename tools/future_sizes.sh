#!/usr/bin/env bash
# Sizes of the operations' futures (the state a pending operation keeps in its task), from
# rustc's -Zprint-type-sizes (nightly toolchain; own target dir, ~3 min cold):
#
#   tools/future_sizes.sh [N]     the N largest async blocks/fns of src/core (default 15),
#                                 then the task of ApiFuture::spawn and the sample operation
#
# The figures quoted in bench/NOTES.md (W1, W5) and src/core/api_future.rs come from here.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
n="${1:-15}"
out="$repo/target/typesizes/print-type-sizes.txt"
mkdir -p "$(dirname "$out")"
# rustc prints the sizes only when it compiles the crate: make cargo compile it again.
(cd "$repo" && CARGO_TARGET_DIR="$repo/target/typesizes" cargo +nightly clean --quiet --release -p tinkex)
(cd "$repo" && CARGO_TARGET_DIR="$repo/target/typesizes" cargo +nightly rustc --quiet --release \
  --lib -p tinkex --crate-type rlib -- -Zprint-type-sizes >"$out")
# "print-type-size type: `{async block@src/core/x.rs:L:C: L:C}`: N bytes, alignment: 8 bytes"
# (Into a file, then read with sed/grep: `head` closing a pipe would fail under pipefail.)
sorted="$out.sorted"
grep -E "^print-type-size type: \`\{async (block|fn body)[^\`]*src/core/" "$out" |
  sed -E 's/^print-type-size type: `(.*)`: ([0-9]+) bytes.*/\2 \1/' | sort -rn -u >"$sorted"
echo "== the $n largest futures of src/core (bytes)"
sed -n "1,${n}p" "$sorted" | cut -c1-200
echo "== the task of ApiFuture::spawn (its largest instance)"
grep -m1 "api_future.rs" "$sorted" | cut -c1-200
echo "== the sampling client's futures (the sample operation, its retry path, its stages)"
grep -m4 "^[0-9]* {async block@src/core/sampling.rs" "$sorted" | cut -c1-200
