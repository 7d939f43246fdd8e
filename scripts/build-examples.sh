#!/usr/bin/env bash
# Builds the custom key type examples into wasm components:
#   target/examples/temperature-rust.wasm   examples/temperature-rust (Rust, komoku-guest SDK)
#   target/examples/temperature-as.wasm     examples/temperature-as (AssemblyScript SDK)
#   target/examples/percent-rust.wasm       examples/percent-rust (Rust, komoku-guest SDK)
#   target/examples/percent-as.wasm         examples/percent-as (AssemblyScript SDK)
# tests/tests/custom_types.rs loads them all.
#
# Usage: scripts/build-examples.sh [--sdk-tests]
#   --sdk-tests  also run the AssemblyScript SDK's own tests (npm test in
#                guest-types/assemblyscript)
#
# Rust: the same toolchain and flags as scripts/build-plugins.sh (Debian's rustc-web with std
# built from source, installed here when missing; KOMOKU_WASM_TOOLCHAIN=rustup for rustup's
# wasm32-unknown-unknown target instead),
# sharing its <target>/wasm directory, then the komoku-componentize tool.
# AssemblyScript: node >= 20 and npm (apt-get install nodejs npm when node is missing), then
# `npm ci` in each example (lockfiles committed; the examples' .npmrc sets install-links, so
# the SDK is installed as a packed copy with its own dependencies, nothing written into
# guest-types/assemblyscript) and `npm run build`, which compiles with asc and componentizes
# with node alone. The SDK's own tests (--sdk-tests) need `npm ci` in the SDK.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

sdk_tests=false
case "${1:-}" in
    "") ;;
    --sdk-tests) sdk_tests=true ;;
    *)
        echo "usage: $0 [--sdk-tests]" >&2
        exit 2
        ;;
esac

started=$SECONDS
step() { printf '==> [%4ss] %s\n' "$((SECONDS - started))" "$*"; }

sudo=()
if [[ $(id -u) != 0 ]]; then sudo=(sudo); fi
apt_updated=false
apt_install() {
    if ! $apt_updated; then
        "${sudo[@]}" apt-get update
        apt_updated=true
    fi
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y "$@"
}

target_base=${CARGO_TARGET_DIR:-$root/target}
out_dir=$target_base/examples
mkdir -p "$out_dir"

# --- Rust: the toolchain of scripts/build-plugins.sh ------------------------------------
# shellcheck source=scripts/wasm-env.sh
source "$root/scripts/wasm-env.sh"

# crate:component
rust_examples=(komoku-example-temperature:temperature-rust komoku-example-percent:percent-rust)
crates=()
for example in "${rust_examples[@]}"; do crates+=(-p "${example%%:*}"); done
step "building ${rust_examples[*]%%:*} for wasm32-unknown-unknown (profile wasm)"
env "${wasm_env[@]}" CARGO_ENCODED_RUSTFLAGS="$encoded_rustflags" \
    "${wasm_cargo[@]}" --locked --profile wasm --target wasm32-unknown-unknown \
    --target-dir "$wasm_target" "${crates[@]}"

host_cargo=$(command -v cargo || echo /usr/bin/cargo)
step "building komoku-componentize"
"$host_cargo" build --locked --quiet -p komoku-componentize
for example in "${rust_examples[@]}"; do
    crate=${example%%:*}
    out=$out_dir/${example#*:}.wasm
    "$target_base/debug/komoku-componentize" \
        "$wasm_target/wasm32-unknown-unknown/wasm/${crate//-/_}.wasm" "$out"
    step "componentized $crate -> $out ($(wc -c <"$out") bytes)"
done

# --- AssemblyScript ---------------------------------------------------------------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    step "installing nodejs npm (apt)"
    apt_install nodejs npm
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if ((node_major < 20)); then
    echo "node $(node --version) is too old: AssemblyScript 0.28 needs node >= 20" >&2
    exit 1
fi
step "node $(node --version), npm $(npm --version)"

npm_ci=(npm ci --prefer-offline --no-audit --no-fund)
if $sdk_tests; then
    step "npm ci + npm test: guest-types/assemblyscript"
    (cd guest-types/assemblyscript && "${npm_ci[@]}" && npm test)
fi
for example in temperature-as:temperature_celsius percent-as:percent; do
    dir=examples/${example%%:*}
    built=$dir/build/${example#*:}.wasm
    step "npm ci: $dir"
    (cd "$dir" && "${npm_ci[@]}")
    as_started=$SECONDS
    (cd "$dir" && npm run --silent build)
    cp "$built" "$out_dir/${example%%:*}.wasm"
    step "built $dir -> $out_dir/${example%%:*}.wasm ($(wc -c <"$out_dir/${example%%:*}.wasm") bytes, $((SECONDS - as_started)) s)"
done
step "done"
