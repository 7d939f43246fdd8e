#!/usr/bin/env bash
# Every system package the test suite and CI use, installed with one `apt-get update` and
# one `apt-get install`, and only what is missing (a command already on the PATH counts, from
# whatever source: node from NodeSource, python's pip from pyenv). scripts/test.sh runs it
# first; .ci/run starts it in the background while the first steps compile.
#
#   scripts/install-test-deps.sh
#
# - rustc-web cargo-web rust-web-src lld-22: the Debian wasm toolchain (scripts/wasm-env.sh;
#   not needed with KOMOKU_WASM_TOOLCHAIN=rustup), also what docs/writing-a-key-type.md installs
# - nodejs npm: AssemblyScript examples and the AS SDK (scripts/build-examples.sh), uPlot
#   (scripts/vendor-uplot.sh)
# - g++: libFuzzer (scripts/fuzz.sh)
# - mosquitto mosquitto-clients: the MQTT bridge's tests (they start their own broker)
# - chromium chromium-driver: the web page's browser test (tests/ui/browser_test.py)
# - systemd: systemd-analyze for the package test (scripts/package-test.sh)
# - python3-pip, then selenium and websocket-client (pinned, from PyPI): the browser test
set -euo pipefail

missing=()
# Adds the Debian packages "$@" unless `command` ($1 of the pair) is on the PATH.
want() {
    local command=$1
    shift
    command -v "$command" >/dev/null || missing+=("$@")
}
want node nodejs
want npm npm
want c++ g++
want mosquitto mosquitto
want mosquitto_sub mosquitto-clients
want chromium chromium
want chromedriver chromium-driver
want systemd-analyze systemd
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if [[ ${KOMOKU_WASM_TOOLCHAIN:-debian} == debian ]]; then
    for package in rustc-web cargo-web rust-web-src lld-22; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$package")
        fi
    done
fi

sudo=()
if [ "$(id -u)" != 0 ]; then
    sudo=(sudo)
fi
if ((${#missing[@]})); then
    echo "install-test-deps: installing ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}"
else
    echo "install-test-deps: every package is there"
fi
python3 -c "import selenium, websocket" 2>/dev/null \
    || PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet \
        "selenium==4.51.0" "websocket-client==1.9.2"
echo "install-test-deps: done"
