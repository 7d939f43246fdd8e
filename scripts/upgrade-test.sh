#!/usr/bin/env bash
# Upgrades keep data: the package of this tree installed over the package of an older
# commit, with data written by the older one, must answer every question the same.
#
#   scripts/upgrade-test.sh [OLD_COMMIT]      (default: main's first parent before this
#                                              branch, i.e. $(git merge-base HEAD main))
#
# The older binary is built from OLD_COMMIT in a temporary git worktree (sharing the target
# directory, so only the komoku crate is compiled again) and packed with this tree's
# packaging as version 0.0.0~COMMIT, lower than any release: commits before the packaging
# existed have no package of their own. Then scripts/release.sh builds this tree's package
# and scripts/package-test.sh --upgrade-from does the rest (root, port 7373, see there).
set -euo pipefail
cd "$(dirname "$0")/.."

old=$(git rev-parse --short=12 "${1:-$(git merge-base HEAD main)}")
[ "$(id -u)" = 0 ] || { echo "upgrade-test: needs root (dpkg -i)" >&2; exit 1; }
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export CARGO_TARGET_DIR=$target_dir
work=$(mktemp -d)
trap 'git worktree remove --force "$work/tree" 2>/dev/null; rm -rf "$work"' EXIT

echo "==> the older build: $old, in a worktree"
git worktree add --detach "$work/tree" "$old" >/dev/null
(cd "$work/tree" && cargo build --release --locked -p komoku)
echo "==> its package, as version 0.0.0~$old (this tree's packaging, less what its binary lacks)"
# The older tree gets this tree's packaging; its postinst loses the check-config call when
# the older binary has no such command.
cp -r packaging "$work/tree/"
sed -n '/^# The Debian package/,$p' host/Cargo.toml >>"$work/tree/host/Cargo.toml"
if ! "$target_dir/release/komoku" check-config --help >/dev/null 2>&1; then
    python3 - "$work/tree/packaging/debian/postinst" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path).read()
text, n = re.subn(r"    # A config that does not pass.*?\n    fi\n", "", text, flags=re.S)
assert n == 1, "the check-config block of postinst was not found"
open(path, "w").write(text)
PY
fi
(cd "$work/tree" && cargo deb -p komoku --no-build --strip --deb-version "0.0.0~$old" \
    --output "$work/old.deb" >/dev/null)
dpkg-deb -f "$work/old.deb" Version

echo "==> this tree's package"
# Both trees are the same workspace, so their artefacts have the same names in the shared
# target directory and the older build replaced this tree's build-script output: make cargo
# run this tree's build script again.
touch host/build.rs
scripts/release.sh
pkgid=$(cargo pkgid -p komoku)
new=dist/komoku_${pkgid##*[@#]}-1_$(dpkg --print-architecture).deb
# The release build must have replaced the older binary in the shared target directory.
if [ "$(dpkg-deb --fsys-tarfile "$new" | tar -xO ./usr/bin/komoku | sha256sum)" = \
     "$(dpkg-deb --fsys-tarfile "$work/old.deb" | tar -xO ./usr/bin/komoku | sha256sum)" ]; then
    echo "upgrade-test: the new package holds the older binary" >&2
    exit 1
fi

scripts/package-test.sh --upgrade-from "$work/old.deb" "$new"
