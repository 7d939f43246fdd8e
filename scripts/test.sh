#!/usr/bin/env bash
# The whole test suite: rebuild the plugin components from source and check the committed
# ones are current, build the example plugins (Rust and AssemblyScript, with the AS SDK's
# tests), then every test of the workspace (unit, plugin-native, end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> plugins: rebuild from guest-types/ and compare with plugins/"
scripts/build-plugins.sh --check

echo "==> examples: the custom type in Rust and AssemblyScript (and the AS SDK's own tests)"
scripts/build-examples.sh --sdk-tests

echo "==> cargo test --workspace"
cargo test --workspace --no-fail-fast
