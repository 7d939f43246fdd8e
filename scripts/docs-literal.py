#!/usr/bin/env python3
"""Follows docs/writing-a-key-type.md literally, as a new user would, from empty folders.

The page marks what a reader runs or writes with a tag in the fenced block's info string:

    ```sh literal:<track>                    commands, run as written (bash -eu -o pipefail)
    ```rust literal:<track> file=<path>     a file, written as shown (relative to where the
                                              commands before it left off)

Tracks: `setup` (system packages, run once), `rust` and `as` (from an empty folder to a built
`percent.wasm`, each in a folder of its own), `live` (run after each language's track, in the
folder it ended in: drops the component into a running Komoku and queries it).

Phases, so that CI can overlap the slow part with other work:
  build  the setup track, then the rust and as tracks (no server needed)
  live   per language: start the server (`--komoku`, e.g. target/debug/komoku-e2e) on a free
         port with an empty plugins folder, run the live track with `komoku` on the PATH,
         KOMOKU_URL and PLUGINS set, and check the query's figures
  all    both (default)

Environment of the page's commands: KOMOKU (this checkout; nothing is written into it),
PLUGINS and KOMOKU_URL (live), CARGO_TARGET_DIR unset (a reader has none), the rest as
inherited (HOME, PATH, the cargo and npm caches).

Usage: scripts/docs-literal.py [--phase build|live|all] [--work DIR] [--komoku BIN]
                               [--tracks rust,as]
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "writing-a-key-type.md"
FENCE = re.compile(r"^(\s*)```(\S*)(.*)$")

started = time.monotonic()


def say(message):
    print(f"==> [{time.monotonic() - started:6.1f}s] {message}", flush=True)


def blocks(track):
    """The page's blocks of `track`, in order: ("sh", text) or ("file", path, text)."""
    out = []
    lines = DOC.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, info = m.group(1), (m.group(2) + m.group(3)).split()
        body = []
        i += 1
        while i < len(lines) and not re.match(rf"^{indent}```\s*$", lines[i]):
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        i += 1
        tags = dict(t.split(":", 1) if ":" in t else (t, "") for t in info[1:] if ":" in t)
        files = [t.split("=", 1)[1] for t in info[1:] if t.startswith("file=")]
        if tags.get("literal") != track:
            continue
        text = "\n".join(body) + "\n"
        out.append(("file", files[0], text) if files else ("sh", text))
    if not out:
        sys.exit(f"docs-literal: {DOC} has no block tagged literal:{track}")
    return out


def script(track, ended_in=None):
    """A bash script running `track`'s blocks; files become quoted heredocs."""
    parts = ["set -euo pipefail"]
    for block in blocks(track):
        if block[0] == "sh":
            parts.append(block[1])
        else:
            _, path, text = block
            assert "KOMOKU_DOCS_LITERAL_EOF" not in text
            parts.append(f"mkdir -p \"$(dirname '{path}')\"\ncat > '{path}' <<'KOMOKU_DOCS_LITERAL_EOF'\n{text}KOMOKU_DOCS_LITERAL_EOF")
    if ended_in:
        parts.append(f'pwd > "{ended_in}"')
    return "\n".join(parts) + "\n"


def run(track, cwd, env, ended_in=None, capture=False):
    t0 = time.monotonic()
    say(f"track {track}: running its blocks in {cwd}")
    result = subprocess.run(
        ["bash", "-c", script(track, ended_in)],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE if capture else None,
    )
    if capture and result.stdout:
        print(result.stdout, end="", flush=True)
    if result.returncode != 0:
        sys.exit(f"docs-literal: track {track} failed (status {result.returncode}) after {time.monotonic() - t0:.0f} s")
    say(f"track {track}: done in {time.monotonic() - t0:.0f} s")
    return result.stdout


def base_env():
    env = dict(os.environ)
    env.pop("CARGO_TARGET_DIR", None)
    env["KOMOKU"] = str(ROOT)
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def live(lang, work, komoku):
    folder = Path((work / f"{lang}.ended-in").read_text().strip())
    server_dir = work / f"{lang}-server"
    shutil.rmtree(server_dir, ignore_errors=True)
    plugins = server_dir / "plugins"
    plugins.mkdir(parents=True)
    bin_dir = server_dir / "bin"
    bin_dir.mkdir()
    (bin_dir / "komoku").symlink_to(Path(komoku).resolve())
    port = free_port()
    log = open(server_dir / "server.log", "w")
    server = subprocess.Popen(
        [str(Path(komoku).resolve()), "--listen", f"127.0.0.1:{port}",
         "--data", str(server_dir / "data"), "--plugins", str(plugins)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"docs-literal: the server did not start; {server_dir / 'server.log'}:\n"
                             + (server_dir / "server.log").read_text())
                time.sleep(0.2)
        say(f"{lang}: server on 127.0.0.1:{port}, plugins {plugins}")
        env = base_env()
        env.update(PLUGINS=str(plugins), KOMOKU_URL=f"ws://127.0.0.1:{port}",
                   PATH=f"{bin_dir}:{env['PATH']}")
        out = run("live", folder, env, capture=True)
        answers = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"total"' in line]
        if not answers:
            sys.exit("docs-literal: the live track printed no query answer")
        total = answers[-1]["total"]
        want = {"time_above": 60, "mean": 50, "count": 2}
        got = {k: total.get(k) for k in want}
        if got != want:
            sys.exit(f"docs-literal: {lang}: the query's figures are {got}, the page says {want}")
        say(f"{lang}: the query's figures are as the page says: {got}")
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", choices=["build", "live", "all"], default="all")
    parser.add_argument("--work", type=Path, help="working folder (default: a new temporary one)")
    parser.add_argument("--komoku", help="the komoku binary for the live phase")
    parser.add_argument("--tracks", default="rust,as")
    args = parser.parse_args()
    langs = [t for t in args.tracks.split(",") if t]
    if args.phase != "build" and not args.komoku:
        parser.error("--komoku is needed for the live phase")
    work = args.work or Path(tempfile.mkdtemp(prefix="komoku-docs-literal-"))
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    say(f"following {DOC.relative_to(ROOT)} literally in {work}")
    if args.phase in ("build", "all"):
        setup = work / "setup"
        setup.mkdir(exist_ok=True)
        run("setup", setup, base_env())
        for lang in langs:
            folder = work / lang
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            run(lang, folder, base_env(), ended_in=work / f"{lang}.ended-in")
    if args.phase in ("live", "all"):
        for lang in langs:
            live(lang, work, args.komoku)
    say("done")


if __name__ == "__main__":
    main()
