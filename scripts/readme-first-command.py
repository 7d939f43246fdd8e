#!/usr/bin/env python3
"""Runs the README's first command exactly as written and checks it serves.

The command is read from README.md (the first line of its first ```sh block), so the README
and this check cannot drift apart. It is started in the repository root, as a user on a
fresh clone would; then a websocket client puts a value and gets it back, SIGTERM stops the
server, and the script waits for a clean exit. Python's standard library only: the
websocket client below speaks just enough RFC 6455 for text frames.

    scripts/readme-first-command.py      (CI runs it; needs port 7373 free and no ./data)
"""

import base64
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_TIMEOUT = 40 * 60  # a cold release build on a 2-core machine
STOP_TIMEOUT = 30


def first_command() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    block = re.search(r"```sh\n(.*?)```", readme, re.S)
    if not block:
        sys.exit("README.md has no ```sh block")
    line = block.group(1).splitlines()[0]
    return line.split("#", 1)[0].strip()


class WebSocket:
    """A websocket client for text frames (masked, as RFC 6455 requires of clients)."""

    def __init__(self, host: str, port: int, path: str = "/"):
        self.sock = socket.create_connection((host, port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"upgrade refused: {head.decode(errors='replace')}")

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed")
        return chunk

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.buf += self._recv()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, text: str) -> None:
        payload = text.encode()
        header = bytes([0x81])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def recv(self) -> str:
        first, second = self._take(2)
        n = second & 0x7F
        if n == 126:
            (n,) = struct.unpack(">H", self._take(2))
        elif n == 127:
            (n,) = struct.unpack(">Q", self._take(8))
        payload = self._take(n)
        if first & 0x0F != 0x1:
            raise RuntimeError(f"expected a text frame, got opcode {first & 0x0F}")
        return payload.decode()

    def ask(self, request: dict):
        self.send(json.dumps(request))
        return json.loads(self.recv())


def main() -> None:
    command = first_command()
    if not command.startswith("cargo run"):
        sys.exit(f"the README's first command is not a server start: {command!r}")
    if os.path.exists(os.path.join(ROOT, "data")):
        sys.exit("./data exists: this check runs the command as on a fresh clone; move it away")
    print(f"==> README's first command: {command}", flush=True)
    server = subprocess.Popen(
        ["bash", "-c", command],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: cargo and the server stop together
    )
    try:
        started = time.monotonic()
        assert server.stdout is not None
        for line in server.stdout:
            print(f"    {line.rstrip()}", flush=True)
            if line.startswith("komoku listening on "):
                address = line.split()[-1]
                break
            if time.monotonic() - started > BUILD_TIMEOUT:
                sys.exit("the server did not start in time")
        else:
            sys.exit(f"the command ended before listening (exit {server.wait()})")
        print(f"    listening after {time.monotonic() - started:.1f} s on {address}", flush=True)

        host, port = address.rsplit(":", 1)
        ws = WebSocket(host.strip("[]"), int(port))
        put = ws.ask({"put": {"key": "readme.first", "value": 21.5}})
        got = ws.ask({"get": {"key": "readme.first"}})
        print(f"    put -> {put!r}, get -> {got!r}", flush=True)
        if put != "ack" or got != 21.5:
            sys.exit("the server did not answer put and get as the protocol says")
        ws.sock.close()

        os.killpg(server.pid, signal.SIGTERM)
        code = server.wait(timeout=STOP_TIMEOUT)
        print(f"    stopped by SIGTERM, exit status {code}", flush=True)
        if code != 0:
            sys.exit("the server did not stop cleanly")
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        shutil.rmtree(os.path.join(ROOT, "data"), ignore_errors=True)
    print("==> README's first command: serves, answers put and get, stops on SIGTERM")


if __name__ == "__main__":
    main()
