#!/usr/bin/env python3
"""Writes data to a running Komoku and records its answers; later, checks it answers the same.

    scripts/package-data.py write ANSWERS.json [--port 7373]   # write, then record the answers
    scripts/package-data.py check ANSWERS.json [--port 7373]   # ask again, compare

scripts/package-test.sh runs `write` with one build and `check` after a restart or after
the package was upgraded to another build: every answer (keys, latest values, full
histories, summaries over a fixed past window, stored retention policies) must be equal.
Times are fixed relative to the moment of `write`, so the answers do not drift with the
clock. Python's standard library only: the websocket client is the README check's.
"""

import argparse
import importlib.util
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "readme_first_command", os.path.join(HERE, "readme-first-command.py")
)
assert _spec is not None and _spec.loader is not None
_readme = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_readme)
WebSocket = _readme.WebSocket


def write(ws, base: float) -> None:
    """One key of each stateless built-in type, each with a history in the last hour."""
    def put(key, value, t):
        answer = ws.ask({"put": {"key": key, "value": value, "time": base + t}})
        if answer != "ack":
            sys.exit(f"put {key} = {value!r} answered {answer!r}")

    for i, v in enumerate([20.5, 21.0, 21.5, 22.25, 19.75]):
        put("pkg.temperature", v, i * 60)
    for i, v in enumerate([True, False, True]):
        put("pkg.door", v, i * 300)
    if ws.ask({"define": {"pkg.mode": {"type": "string", "allowed": ["home", "away"]}}}) != "ack":
        sys.exit("define pkg.mode was refused")
    for i, v in enumerate(["home", "away", "home"]):
        put("pkg.mode", v, i * 600)
    for _ in range(3):
        ws.ask({"increment": {"key": "pkg.visits"}})
    answer = ws.ask({"retention": {"key": "pkg.*", "raw": "30d", "tiers": [["1H", None]]}})
    if answer != "ack":
        sys.exit(f"retention answered {answer!r}")


def questions(base: float) -> list:
    """The same requests for `write` and `check`; every one deterministic after `write`."""
    keys = ["pkg.temperature", "pkg.door", "pkg.mode", "pkg.visits"]
    asked = [{"keys": {}}, {"retention": {}}]
    for key in keys:
        asked.append({"get": {"key": key}})
        asked.append({"fetch": {"key": key}})
    window = {"since": base - 60, "until": base + 1800}  # all in the past
    asked.append({"query": {"key": "pkg.temperature", "step": "10M", **window}})
    asked.append({"query": {"key": "pkg.door", **window}})
    asked.append({"query": {"key": "pkg.mode", **window}})
    return asked


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["write", "check"])
    parser.add_argument("answers")
    parser.add_argument("--port", type=int, default=7373)
    args = parser.parse_args()
    ws = WebSocket("127.0.0.1", args.port)
    if args.mode == "write":
        base = float(int(time.time()) - 3600)
        write(ws, base)
        answers = [[q, ws.ask(q)] for q in questions(base)]
        with open(args.answers, "w", encoding="utf-8") as f:
            json.dump({"base": base, "answers": answers}, f, indent=1)
        print(f"    wrote 4 keys and a retention policy; recorded {len(answers)} answers")
        return
    with open(args.answers, encoding="utf-8") as f:
        recorded = json.load(f)
    differ = 0
    for question, before in recorded["answers"]:
        now = ws.ask(question)
        if now != before:
            differ += 1
            print(f"    DIFFERS {json.dumps(question)}\n      before: {before!r}\n      now:    {now!r}")
    if differ:
        sys.exit(f"{differ} of {len(recorded['answers'])} answers differ")
    print(f"    all {len(recorded['answers'])} recorded answers are the same")


if __name__ == "__main__":
    main()
