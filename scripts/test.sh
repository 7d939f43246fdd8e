#!/usr/bin/env bash
# The whole test suite: install the system packages it uses (once), rebuild the plugin
# components from source and check the committed ones are current, build the example plugins
# (Rust and AssemblyScript, with the AS SDK's tests), then every test of the workspace (unit,
# plugin-native, end-to-end, the MQTT bridge against a real Mosquitto), then the web page in
# a real chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> system packages (scripts/install-test-deps.sh: only what is missing)"
scripts/install-test-deps.sh

echo "==> plugins: rebuild from guest-types/ and compare with plugins/"
scripts/build-plugins.sh --check

echo "==> examples: the custom type in Rust and AssemblyScript (and the AS SDK's own tests)"
scripts/build-examples.sh --sdk-tests

echo "==> cargo test --workspace"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo's last line is only the last doc-test crate's).
passed=$(grep -oE '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{sum += $4} END {print sum + 0}')
failed=$(grep -oE '^test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' "$log" | awk '{sum += $6} END {print sum + 0}')
echo "total: $passed passed, $failed failed"

echo "==> the web page in a real browser (tests/ui/browser_test.py; screenshots in target/ui-screenshots/)"
# komoku-e2e is the real command line, built by the tests above (a `cargo build -p komoku`
# alone would resolve other dependency features and compile wasmtime once more).
browser=0
python3 tests/ui/browser_test.py "${CARGO_TARGET_DIR:-target}/debug/komoku-e2e" || browser=$?
if [ "$status" != 0 ]; then
    exit "$status"
fi
exit "$browser"
