#!/usr/bin/env bash
# Packs the AssemblyScript SDK (guest-types/assemblyscript, npm package komoku-key-type) into
# an npm tarball that a project anywhere installs by path, build tool (komoku-build) included:
#
#   npm install --save-dev /path/to/komoku-key-type-<version>.tgz
#
# npm then installs the SDK's own dependencies (assemblyscript, @bytecodealliance/jco-transpile)
# into that project; nothing is written into this checkout but the tarball.
#
# Usage: scripts/pack-as-sdk.sh [OUT_DIR]
#   OUT_DIR  where the tarball goes (created if missing); default ${CARGO_TARGET_DIR:-target}/sdk
# Prints the tarball's absolute path on its last line.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-${CARGO_TARGET_DIR:-$root/target}/sdk}
mkdir -p "$out"
out=$(cd "$out" && pwd)

if ! command -v npm >/dev/null 2>&1; then
    echo "npm is missing: apt-get install -y nodejs npm (node >= 20)" >&2
    exit 1
fi
started=$SECONDS
# npm pack reads package.json's "files" (assembly, build.mjs, wit) and needs no node_modules.
name=$(cd "$root/guest-types/assemblyscript" &&
    npm pack --silent --pack-destination "$out" | tail -n 1)
echo "packed komoku-key-type in $((SECONDS - started)) s ($(wc -c <"$out/$name") bytes):" >&2
echo "$out/$name"
