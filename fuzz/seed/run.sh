#!/usr/bin/env bash
# Re-records the seed corpora (fuzz/seeds/) from emulator traffic. Stable toolchain; shares
# the main workspace's release build cache.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
rm -rf "$root/fuzz/seeds"
CARGO_TARGET_DIR="$root/target" cargo run --release --manifest-path "$here/Cargo.toml" -- "$root/fuzz/seeds"
du -sh "$root/fuzz/seeds"
