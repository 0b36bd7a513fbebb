#!/usr/bin/env bash
# Runs every test of the workspace: Rust unit and integration tests (client and emulator),
# then the official Python SDK against the emulator.
#
# Needs: Rust (cargo), python3 with venv, network access to the Rust and Python package
# registries on the first run. Set TINKEX_SKIP_OFFICIAL_SDK=1 to skip the official-SDK run.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

echo "== cargo test (workspace)"
cargo test --workspace --release

echo "== official Python SDK (tinker 0.38.0) against tinkex-emulator"
bash emulator/tests/official_sdk/run.sh
