#!/usr/bin/env bash
# The whole test suite: rebuild the plugin components from source and check the committed
# ones are current, then every test of the workspace (unit, plugin-native, end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> plugins: rebuild from guest-types/ and compare with plugins/"
scripts/build-plugins.sh --check

echo "==> cargo test --workspace"
cargo test --workspace --all-targets
