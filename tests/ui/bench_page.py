#!/usr/bin/env python3
"""Bench: the web page's load-to-chart time for a year of one key at 10 s (answered from the
compacted tiers) in headless chromium, and the JSON API's summary latency beside the
websocket `query`'s for the same question. Figures only, no assertions.

    cargo build --release -p komoku
    tests/ui/bench_page.py target/release/komoku [--days 365] [--every 10] [--loads 5]

Loads the points over the v2 websocket (arrays of 10 000 puts), compacts, then opens
/ui/key/bench.temp?range=1y LOADS times (a fresh page each, cache off) and asks the summary
behind it 20 times each way.
"""

import argparse
import json
import os
import statistics
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser_test import Server, ask, browser, wait_for  # noqa: E402

KEY = "bench.temp"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()

    server = Server(args.binary)
    try:
        ws = server.websocket()
        now = int(time.time())
        start = now - args.days * 86400
        started = time.monotonic()
        n = 0
        batch = []
        for t in range(start, now - 60, args.every):
            batch.append({"put": {"key": KEY, "value": round(20 + 5 * ((t % 86400) / 86400), 3), "time": t}})
            if len(batch) == 10_000:
                ask(ws, batch)
                n += len(batch)
                batch = []
        if batch:
            ask(ws, batch)
            n += len(batch)
        load_s = time.monotonic() - started
        print(f"loaded {n} points ({args.days} d at {args.every} s) in {load_s:.1f} s ({n / load_s:,.0f}/s)")
        started = time.monotonic()
        report = json.loads(ask(ws, {"compact": {}}))
        print(f"compacted in {time.monotonic() - started:.1f} s: {json.dumps(report)[:200]}")

        driver = browser()
        try:
            driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
            times = []
            for _ in range(args.loads):
                driver.get("about:blank")
                driver.get(f"{server.base}/ui/key/{KEY}?range=1y")
                wait_for(driver, "window.komoku && window.komoku.draws >= 1 && window.komoku.charts.main && window.komoku.charts.main.plot", "the chart", timeout=60)
                drawn = driver.execute_script("return {at: window.komoku.drawnAt, resolution: window.komoku.resolution, url: window.komoku.charts.main.url, buckets: window.komoku.charts.main.x.length}")
                times.append(drawn["at"])
            print(f"page load to chart, 1 y ({drawn['buckets']} buckets, resolution {drawn['resolution']}): "
                  f"median {statistics.median(times):.0f} ms, min {min(times):.0f} ms of {len(times)} loads")
        finally:
            driver.quit()

        url = drawn["url"]
        query = dict(kv.split("=", 1) for kv in url.split("?", 1)[1].split("&"))
        request = {"query": {"key": KEY, "since": int(query["since"]), "until": int(query["until"]),
                             "step": query["step"], "tz": urllib.request.unquote(query["tz"]),
                             "figures": query["figures"].split(",")}}
        api_ms, ws_ms = [], []
        for _ in range(20):
            t = time.monotonic()
            with urllib.request.urlopen(server.base + "/api/v1/" + url, timeout=60) as r:
                r.read()
            api_ms.append((time.monotonic() - t) * 1000)
            t = time.monotonic()
            reply = json.loads(ask(ws, request))
            ws_ms.append((time.monotonic() - t) * 1000)
            assert "result" in reply, reply
        print(f"summary of the year, {query['step']} step: HTTP API median {statistics.median(api_ms):.1f} ms, "
              f"websocket query median {statistics.median(ws_ms):.1f} ms (20 each)")
        ws.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
