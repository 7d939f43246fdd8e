#!/usr/bin/env bash
# The release: a stripped `komoku` binary (the built-in types are embedded in it) and the
# Debian package (cargo-deb; packaging/ and host/Cargo.toml's [package.metadata.deb]), in
# dist/:
#
#   scripts/release.sh                                       # for this machine (x86_64, or
#                                                            # aarch64 when run on a Pi)
#   scripts/release.sh --target aarch64-unknown-linux-gnu    # cross-build for a 64-bit Pi
#
# dist/komoku-VERSION-TARGET        the binary, stripped
# dist/komoku_VERSION-1_ARCH.deb    the package
# dist/SHA256SUMS
#
# Needs cargo (the workspace's rust-version), a C compiler, and dpkg (for the .deb);
# installs cargo-deb from crates.io when missing. A native build uses the ordinary release
# build (target/release), so it reuses what `cargo run --release` built. Cross-building
# needs that target's Rust standard library (rustup target add TARGET) and a cross C
# compiler and binutils (Debian: gcc-aarch64-linux-gnu); without them the script stops and
# says so. The other way for a Pi: run this script on the Pi (README, Install).
set -euo pipefail
cd "$(dirname "$0")/.."

target=""
while [ $# -gt 0 ]; do
    case $1 in
        --target) target=${2:?--target needs a target triple}; shift 2 ;;
        -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "release: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
host=$(rustc -vV | sed -n 's/^host: //p')
target=${target:-$host}
pkgid=$(cargo pkgid -p komoku)
version=${pkgid##*[@#]}
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
    echo "release: warning: the checkout has uncommitted changes; komoku --version names the commit, not them" >&2
fi

strip="strip"
build_args=(--release --locked -p komoku)
deb_args=(-p komoku --no-build --strip)
if [ "$target" = "$host" ]; then
    binary=$target_dir/release/komoku
else
    if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
        cat >&2 <<EOF
release: the Rust standard library for $target is not installed, so this machine cannot
build for it. Install it with: rustup target add $target
Where that cannot be downloaded, build on the target machine itself (a Raspberry Pi with a
64-bit OS): install rustup there and run scripts/release.sh (README, Install).
EOF
        exit 1
    fi
    prefix=""
    case $target in
        aarch64-unknown-linux-gnu) prefix=aarch64-linux-gnu ;;
        *) echo "release: no cross toolchain known for $target (only aarch64-unknown-linux-gnu)" >&2; exit 1 ;;
    esac
    if ! command -v "$prefix-gcc" >/dev/null || ! command -v "$prefix-strip" >/dev/null; then
        echo "release: cross-building for $target needs $prefix-gcc and $prefix-strip (Debian: apt-get install gcc-$prefix)" >&2
        exit 1
    fi
    triple_var=$(echo "$target" | tr 'a-z-' 'A-Z_')
    export "CARGO_TARGET_${triple_var}_LINKER=$prefix-gcc"
    export "CC_${target//-/_}=$prefix-gcc" "AR_${target//-/_}=$prefix-ar"
    strip=$prefix-strip
    build_args+=(--target "$target")
    deb_args+=(--target "$target")
    binary=$target_dir/$target/release/komoku
fi

echo "==> cargo build ${build_args[*]}"
cargo build "${build_args[@]}"

if ! command -v cargo-deb >/dev/null; then
    echo "==> cargo install cargo-deb --locked (not installed)"
    cargo install cargo-deb --locked
fi

mkdir -p dist
out=dist/komoku-$version-$target
cp "$binary" "$out"
"$strip" "$out"
if [ "$target" = "$host" ]; then
    echo "==> $out --version"
    "$out" --version
fi

echo "==> cargo deb ${deb_args[*]}"
deb=$(cargo deb "${deb_args[@]}" --output dist/ | tail -n 1)
echo "    $deb"
(cd dist && sha256sum "$(basename "$out")" "$(basename "$deb")" >SHA256SUMS)
echo "==> dist/"
ls -l "$out" "$deb"
