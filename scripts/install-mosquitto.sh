#!/usr/bin/env bash
# The MQTT bridge's tests and bench start their own Mosquitto (Debian's `mosquitto`, with
# `mosquitto_sub`/`mosquitto_pub` from `mosquitto-clients`). Installs both when missing;
# does nothing when they are there.
set -euo pipefail
if command -v mosquitto >/dev/null && command -v mosquitto_sub >/dev/null; then
    exit 0
fi
sudo=()
if [ "$(id -u)" != 0 ]; then
    sudo=(sudo)
fi
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    mosquitto mosquitto-clients >/dev/null
# The tests start their own broker on a free port; a service the package may have started
# on 1883 is not needed (and on a machine without systemd none was started).
command -v mosquitto >/dev/null
