#!/usr/bin/env bash
# Every system package the CI steps use, installed with one `apt-get update` and one
# `apt-get install` (the steps' own scripts install what they miss, one package set at a
# time, when run alone; here they find everything present). Meant to run in the background
# while the first steps compile: it only downloads and unpacks, and holds the dpkg lock, so
# `.ci/run` waits for it before the first step that may call apt itself.
#
#   scripts/ci-deps.sh
#
# - rustc-web cargo-web rust-web-src lld-22: the Debian wasm toolchain (scripts/wasm-env.sh)
# - nodejs npm: AssemblyScript examples and the AS SDK (scripts/build-examples.sh), uPlot
#   (scripts/vendor-uplot.sh)
# - g++: libFuzzer (scripts/fuzz.sh)
# - mosquitto mosquitto-clients: the MQTT bridge's tests (scripts/install-mosquitto.sh)
# - chromium chromium-driver: the web page's browser tests (tests/ui/browser_test.py)
# - systemd: systemd-analyze for the package test (scripts/package-test.sh)
# - python3-pip: selenium and websocket-client for the browser tests (pinned, from PyPI)
set -euo pipefail

packages=(rustc-web cargo-web rust-web-src lld-22 nodejs npm g++ mosquitto mosquitto-clients
    chromium chromium-driver systemd python3-pip)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$package")
    fi
done
sudo=()
if [ "$(id -u)" != 0 ]; then
    sudo=(sudo)
fi
if ((${#missing[@]})); then
    echo "ci-deps: installing ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq \
        "${missing[@]}"
else
    echo "ci-deps: every package is installed"
fi
python3 -c "import selenium, websocket" 2>/dev/null \
    || PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet \
        "selenium==4.51.0" "websocket-client==1.9.2"
echo "ci-deps: done"
