#!/usr/bin/env bash
# Builds the key-type plugins in guest-types/ into wasm components:
#   plugins/<type>.wasm                        the built-in types the server ships
#   tests/fixtures/plugins/trap_fixture.wasm   the test-only fixture every test server loads
#   tests/fixtures/plugins-extra/<name>.wasm   test-only fixtures a test copies into its own
#                                              plugins directory (misbehaving, reloaded, or
#                                              refused plugins); garbage.wasm there is a
#                                              committed non-wasm file, not built nor checked,
#                                              and reload_v1-before-default-retention.wasm the
#                                              bytes of reload_v1.wasm as built before the WIT
#                                              gained `default-retention` (an old plugin, kept
#                                              as committed: neither built nor checked);
#                                              numeric-0.1.0.wasm is plugins/numeric.wasm as
#                                              built for komoku:types@0.1.0 (the adapter's
#                                              test; kept as committed, neither built nor
#                                              checked)
#
# Usage: scripts/build-plugins.sh [--check]
#   --check  build into a temporary directory and exit non-zero, listing the stale files,
#            if a committed component differs from the fresh build (what CI runs).
#
# Toolchain: Debian's rustc-web, cargo-web, rust-web-src and lld-22 (installed here when
# missing), which build std from source; the committed components come from it (what CI
# machines get). KOMOKU_WASM_TOOLCHAIN=rustup uses rustup's wasm32-unknown-unknown target
# instead, only when asked (another compiler gives other bytes: --check then fails). See
# scripts/wasm-env.sh.
#
# The build is reproducible across checkout directories: the repository, target, cargo home
# and Rust source paths are remapped, and componentizing depends only on the pinned
# wit-component. Core modules go to <target>/wasm, the componentizer to <target>/debug.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

check=false
case "${1:-}" in
    "") ;;
    --check) check=true ;;
    *)
        echo "usage: $0 [--check]" >&2
        exit 2
        ;;
esac

# crate:output, the output relative to the repository root.
outputs=(
    komoku-type-numeric:plugins/numeric.wasm
    komoku-type-counter:plugins/counter.wasm
    komoku-type-boolean:plugins/boolean.wasm
    komoku-type-uptime:plugins/uptime.wasm
    komoku-type-string:plugins/string.wasm
    komoku-type-decimal:plugins/decimal.wasm
    komoku-type-meter:plugins/meter.wasm
    komoku-fixture-trap:tests/fixtures/plugins/trap_fixture.wasm
    komoku-fixture-loop:tests/fixtures/plugins-extra/loop_fixture.wasm
    komoku-fixture-hog:tests/fixtures/plugins-extra/hog_fixture.wasm
    komoku-fixture-garbage:tests/fixtures/plugins-extra/garbage_fixture.wasm
    komoku-fixture-reload-v1:tests/fixtures/plugins-extra/reload_v1.wasm
    komoku-fixture-reload-v2:tests/fixtures/plugins-extra/reload_v2.wasm
    komoku-fixture-wrong-version:tests/fixtures/plugins-extra/wrong_version.wasm
    komoku-fixture-trap-on-load:tests/fixtures/plugins-extra/trap_on_load.wasm
    komoku-fixture-bad-retention:tests/fixtures/plugins-extra/bad_retention.wasm
    komoku-fixture-options-v1:tests/fixtures/plugins-extra/options_v1.wasm
    komoku-fixture-options-v2:tests/fixtures/plugins-extra/options_v2.wasm
    komoku-fixture-options-v2-migrates:tests/fixtures/plugins-extra/options_v2_migrates.wasm
)

started=$SECONDS
step() { printf '==> [%4ss] %s\n' "$((SECONDS - started))" "$*"; }

# --- toolchain (shared with build-examples.sh) ------------------------------------------
# shellcheck source=scripts/wasm-env.sh
source "$root/scripts/wasm-env.sh"

# --- build -----------------------------------------------------------------------------
crates=()
for output in "${outputs[@]}"; do
    crates+=(-p "${output%%:*}")
done

step "building ${#outputs[@]} guest crates for wasm32-unknown-unknown (profile wasm)"
env "${wasm_env[@]}" CARGO_ENCODED_RUSTFLAGS="$encoded_rustflags" \
    "${wasm_cargo[@]}" --locked --profile wasm --target wasm32-unknown-unknown \
    --target-dir "$wasm_target" "${crates[@]}"

host_cargo=$(command -v cargo || echo /usr/bin/cargo)
step "building komoku-componentize"
"$host_cargo" build --locked --quiet -p komoku-componentize
componentize=$target_base/debug/komoku-componentize

if $check; then
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
else
    out=$root
fi

for output in "${outputs[@]}"; do
    crate=${output%%:*}
    file=${output#*:}
    module=$wasm_target/wasm32-unknown-unknown/wasm/${crate//-/_}.wasm
    mkdir -p "$(dirname "$out/$file")"
    "$componentize" "$module" "$out/$file"
    step "componentized $crate -> $file ($(wc -c <"$out/$file") bytes)"
done

# --- check -----------------------------------------------------------------------------
if $check; then
    stale=()
    for output in "${outputs[@]}"; do
        file=${output#*:}
        if ! cmp -s "$out/$file" "$root/$file"; then
            stale+=("$file")
        fi
    done
    if ((${#stale[@]})); then
        echo "stale plugin components (differ from a fresh build):" >&2
        printf '  %s\n' "${stale[@]}" >&2
        echo "run scripts/build-plugins.sh and commit the result" >&2
        exit 1
    fi
    step "all ${#outputs[@]} committed components match a fresh build"
fi
step "done"
