#!/usr/bin/env bash
# Vendors uPlot (the web page's charting library) into host/web/vendor/: `npm pack` of the
# pinned version from the npm registry, its tarball checked against the pinned SHA-256, then
# the minified script, its stylesheet and its LICENSE copied in. The result is committed, so
# building the server needs neither npm nor a network; run this only to change the version
# (then update VERSION and SHA256 below). `--check` compares the committed files instead.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=1.6.32
SHA256=4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d
DEST=host/web/vendor

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "uplot@$VERSION" >/dev/null)
tarball="$work/uplot-$VERSION.tgz"
echo "$SHA256  $tarball" | sha256sum --check --quiet
tar -xzf "$tarball" -C "$work"

if [ "${1:-}" = "--check" ]; then
    cmp "$work/package/dist/uPlot.iife.min.js" "$DEST/uPlot.iife.min.js"
    cmp "$work/package/dist/uPlot.min.css" "$DEST/uPlot.min.css"
    cmp "$work/package/LICENSE" "$DEST/uPlot.LICENSE"
    echo "uPlot $VERSION in $DEST is current"
    exit 0
fi
mkdir -p "$DEST"
cp "$work/package/dist/uPlot.iife.min.js" "$DEST/uPlot.iife.min.js"
cp "$work/package/dist/uPlot.min.css" "$DEST/uPlot.min.css"
cp "$work/package/LICENSE" "$DEST/uPlot.LICENSE"
echo "uPlot $VERSION (sha256 $SHA256) vendored into $DEST"
