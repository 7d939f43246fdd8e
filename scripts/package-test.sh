#!/usr/bin/env bash
# Installs a komoku .deb on this machine, runs the packaged service, and removes it all again.
#
#   scripts/package-test.sh NEW.deb
#       install; start the service; write data and record the answers; restart; check the
#       answers are the same; systemd-analyze verify the installed unit; purge
#   scripts/package-test.sh --upgrade-from OLD.deb NEW.deb
#       the same, but the data is written by OLD and checked after NEW is installed over it
#
# For CI and throwaway machines: needs root, Debian, python3 and port 7373 free, and refuses
# to run where komoku is already installed or /var/lib/komoku or the user komoku exist. On
# exit (success or not) it stops the server it started, purges the package, and removes
# /var/lib/komoku and the komoku user, so nothing is left behind.
# Where systemd runs (PID 1), the service is started and stopped with systemctl; elsewhere
# (a container) the binary is started as the komoku user with the packaged config, as the
# unit would (setpriv, util-linux).
set -euo pipefail
cd "$(dirname "$0")/.."

old=""
if [ "${1:-}" = "--upgrade-from" ]; then
    old=$2
    shift 2
fi
new=${1:?usage: scripts/package-test.sh [--upgrade-from OLD.deb] NEW.deb}
[ "$(id -u)" = 0 ] || { echo "package-test: needs root (dpkg -i)" >&2; exit 1; }
if dpkg -s komoku >/dev/null 2>&1 || [ -e /var/lib/komoku ] || getent passwd komoku >/dev/null; then
    echo "package-test: komoku is installed here (or /var/lib/komoku or the user exist); this test installs and purges it, so run it on a machine without" >&2
    exit 1
fi
port_busy() { (exec 3<>/dev/tcp/127.0.0.1/7373) 2>/dev/null; }
if port_busy; then
    echo "package-test: port 7373 is busy" >&2
    exit 1
fi

work=$(mktemp -d)
server_pid=""
systemd_runs() { [ -d /run/systemd/system ]; }

start_server() {
    if systemd_runs; then
        systemctl start komoku
    else
        # As komoku.service would: its user, its working directory, its config, no new
        # privileges. setpriv execs the server, so $! is the server itself (runuser would
        # stay its parent and answer SIGTERM by killing it).
        (cd /var/lib/komoku && exec setpriv --reuid=komoku --regid=komoku --init-groups \
            --no-new-privs /usr/bin/komoku --config /etc/komoku/komoku.toml) >"$work/server.log" 2>&1 &
        server_pid=$!
    fi
    for _ in $(seq 1 300); do
        if port_busy; then
            echo "    listening on 127.0.0.1:7373"
            return 0
        fi
        if [ -n "$server_pid" ] && ! kill -0 "$server_pid" 2>/dev/null; then
            break
        fi
        sleep 0.2
    done
    echo "package-test: the server did not start; its log:" >&2
    if systemd_runs; then journalctl -u komoku --no-pager -n 50 >&2 || true; else cat "$work/server.log" >&2; fi
    return 1
}

stop_server() {
    if systemd_runs; then
        systemctl stop komoku
    elif [ -n "$server_pid" ]; then
        kill -TERM "$server_pid"
        local status=0
        wait "$server_pid" || status=$?
        server_pid=""
        if [ "$status" != 0 ]; then
            echo "package-test: the server exited with status $status on SIGTERM; its log:" >&2
            cat "$work/server.log" >&2
            return 1
        fi
    fi
    for _ in $(seq 1 50); do port_busy || { echo "    stopped; port 7373 free"; return 0; }; sleep 0.2; done
    echo "package-test: port 7373 still busy after the stop" >&2
    return 1
}

cleanup() {
    local status=$?
    set +e
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null
        wait "$server_pid" 2>/dev/null
    fi
    if dpkg -s komoku >/dev/null 2>&1; then
        dpkg --purge komoku >"$work/purge.log" 2>&1 || cat "$work/purge.log" >&2
    fi
    rm -rf /var/lib/komoku /var/cache/komoku
    getent passwd komoku >/dev/null && deluser --quiet komoku >/dev/null 2>&1
    getent group komoku >/dev/null && delgroup --quiet komoku >/dev/null 2>&1
    rm -rf "$work"
    if port_busy; then
        echo "package-test: port 7373 is still busy after cleanup" >&2
        status=1
    fi
    exit "$status"
}
trap cleanup EXIT

install() {
    echo "==> dpkg -i $1"
    dpkg -i "$1"
    echo "    $(/usr/bin/komoku --version | paste -sd ' ')"
}

install "${old:-$new}"
test "$(stat -c %U /var/lib/komoku)" = komoku
dpkg-query -W -f='${Conffiles}\n' komoku | grep -q '^ /etc/komoku/komoku.toml '
echo "==> write data${old:+ with the older package}, record the answers"
start_server
python3 scripts/package-data.py write "$work/answers.json"
stop_server
if [ -n "$old" ]; then
    install "$new"
    echo "==> upgraded: the data is still owned by komoku and answers the same"
    test "$(stat -c %U /var/lib/komoku)" = komoku
else
    echo "==> restart: the same answers"
fi
start_server
python3 scripts/package-data.py check "$work/answers.json"
stop_server
echo "==> the compiled built-in types are cached in /var/cache/komoku, owned by komoku"
ls /var/cache/komoku/*.cwasm >/dev/null
test "$(stat -c %U /var/cache/komoku)" = komoku

echo "==> systemd-analyze verify /usr/lib/systemd/system/komoku.service"
if ! command -v systemd-analyze >/dev/null; then
    apt-get install -y --no-install-recommends systemd >/dev/null
fi
# Without a running systemd, verify still loads and checks the unit file offline; it needs
# the unit's executables to exist, which the package has just installed.
# It only warns about unknown keys and bad values (exit status 0): any output fails here.
verify=$(systemd-analyze verify /usr/lib/systemd/system/komoku.service 2>&1) || {
    echo "$verify" >&2
    exit 1
}
if [ -n "$verify" ]; then
    echo "package-test: systemd-analyze verify warns:" >&2
    echo "$verify" >&2
    exit 1
fi
echo "    unit verified, no warnings"

echo "==> dpkg --purge komoku"
dpkg --purge komoku
test ! -e /etc/komoku/komoku.toml
test ! -e /usr/bin/komoku
test ! -e /var/cache/komoku
echo "==> package test passed"
