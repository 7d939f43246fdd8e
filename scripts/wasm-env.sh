# Sourced by build-plugins.sh and build-examples.sh: picks and installs the wasm toolchain
# and sets, for `cargo build` of guest crates:
#   wasm_env, wasm_cargo       how to run cargo for wasm32-unknown-unknown
#   target_base, wasm_target   the target dirs (core modules go to $wasm_target)
#   encoded_rustflags          path remaps that make the modules reproducible across checkouts
# Needs $root (the repository) and a `step` function for progress lines.
#
# Toolchain, chosen explicitly (never switched behind your back): KOMOKU_WASM_TOOLCHAIN=debian
# (the default; the toolchain the committed components come from, so `build-plugins.sh
# --check` compares like with like) uses Debian's rustc-web, cargo-web, rust-web-src and
# lld-22 (installed here when missing), which build std from source;
# KOMOKU_WASM_TOOLCHAIN=rustup uses rustup's wasm32-unknown-unknown target (another compiler:
# other bytes, so --check reports every component as stale). Without apt (not Debian), set
# KOMOKU_WASM_TOOLCHAIN=rustup.

# --- toolchain -------------------------------------------------------------------------
rustup_has_wasm=false
if command -v rustup >/dev/null 2>&1 &&
    rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    rustup_has_wasm=true
fi
toolchain=${KOMOKU_WASM_TOOLCHAIN:-debian}
if [[ $toolchain == debian && -z ${KOMOKU_WASM_TOOLCHAIN:-} ]]; then
    if ! command -v dpkg-query >/dev/null 2>&1; then
        echo "no Debian packaging here: set KOMOKU_WASM_TOOLCHAIN=rustup (needs rustup's wasm32-unknown-unknown target)" >&2
        exit 2
    fi
    if $rustup_has_wasm; then
        step "note: rustup's wasm32-unknown-unknown is installed but not used (KOMOKU_WASM_TOOLCHAIN=rustup uses it; its bytes differ from the committed components)"
    fi
fi

case $toolchain in
    rustup)
        step "toolchain: rustup $(rustc --version) with wasm32-unknown-unknown"
        wasm_env=()
        wasm_cargo=(cargo build)
        rust_src="$(rustc --print sysroot)/lib/rustlib/src/rust"
        ;;
    debian)
        packages=(rustc-web cargo-web rust-web-src lld-22)
        missing=()
        for package in "${packages[@]}"; do
            if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
                missing+=("$package")
            fi
        done
        if ((${#missing[@]})); then
            sudo=()
            if [[ $(id -u) != 0 ]]; then sudo=(sudo); fi
            step "installing ${missing[*]} (apt)"
            "${sudo[@]}" apt-get update
            DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y "${missing[@]}"
        fi
        step "toolchain: Debian $(/usr/bin/rustc --version), std built from source"
        # RUSTC_BOOTSTRAP unlocks -Zbuild-std on this stable compiler.
        wasm_env=(RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1)
        wasm_cargo=(/usr/bin/cargo build -Zbuild-std=std,panic_abort)
        rust_src=/usr/lib/rustlib/src/rust
        ;;
    *)
        echo "KOMOKU_WASM_TOOLCHAIN must be rustup or debian, not $toolchain" >&2
        exit 2
        ;;
esac

target_base=${CARGO_TARGET_DIR:-$root/target}
wasm_target=$target_base/wasm
cargo_home=${CARGO_HOME:-$HOME/.cargo}

# Remap every absolute path that could reach the modules (the last matching prefix wins,
# so the more specific ones come later). Encoded flags survive spaces in paths.
remaps=(
    "--remap-path-prefix=$root=/komoku"
    "--remap-path-prefix=$target_base=/target"
    "--remap-path-prefix=$cargo_home=/cargo"
    "--remap-path-prefix=$rust_src=/rust-src"
)
encoded_rustflags=$(
    IFS=$'\x1f'
    echo "${remaps[*]}"
)

