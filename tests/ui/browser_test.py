#!/usr/bin/env python3
"""The web page in a real browser: Debian's chromium, driven through chromedriver
(WebDriver, the `selenium` package), against the real server binary.

Checks: the list shows the keys and their values; a put over the websocket shows on the open
page in under a second; a numeric, a boolean and a string key's pages draw charts whose data
equal the JSON API's answer for the same range; the page is usable 375 px wide; with auth on
the token prompt refuses a wrong token, takes the right one, and the token never appears in
a URL. Screenshots go to target/ui-screenshots/.

    tests/ui/browser_test.py [path/to/komoku]     (CI runs it; needs chromium, chromium-driver,
                                                  and pip's selenium and websocket-client)
Prints one line per check and "N passed, N failed" at the end; exits 1 if any failed.
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request

import websocket  # websocket-client
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHOTS = os.path.join(ROOT, "target", "ui-screenshots")
TOKEN = "ui-test-secret"
WAIT = 10.0


class Server:
    """The komoku binary on 127.0.0.1:0 with a fresh data dir (and a config, if given)."""

    def __init__(self, binary, config_text=None):
        self.dir = tempfile.TemporaryDirectory()
        args = [binary]
        if config_text is not None:
            path = os.path.join(self.dir.name, "komoku.toml")
            with open(path, "w", encoding="utf-8") as f:
                f.write(config_text)
            args += ["--config", path]
        args += ["--listen", "127.0.0.1:0", "--data", os.path.join(self.dir.name, "data"),
                 "--plugins", os.path.join(self.dir.name, "plugins")]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "RUST_LOG": "warn"})
        line = self.proc.stdout.readline().strip()
        prefix = "komoku listening on "
        if not line.startswith(prefix):
            self.stop()
            raise RuntimeError(f"unexpected first line {line!r}")
        self.addr = line[len(prefix):]
        self.base = f"http://{self.addr}"

    def api(self, path, method="GET", body=None, token=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + "/api/v1/" + path, data=data, method=method)
        if token:
            req.add_header("Authorization", "Bearer " + token)
        with urllib.request.urlopen(req, timeout=WAIT) as r:
            return json.loads(r.read())

    def websocket(self, token=None):
        ws = websocket.create_connection(f"ws://{self.addr}/v2", timeout=WAIT)
        if token:
            assert json.loads(ask(ws, {"auth": {"token": token}}))["result"] == "ok"
        return ws

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.dir.cleanup()


def ask(ws, request):
    ws.send(json.dumps(request))
    while True:
        reply = ws.recv()
        if '"pub"' not in reply[:10]:
            return reply


def seed(server, token=None):
    """Two days of a temperature (every 5 min), a door (open 10 min of each 50) and an
    alarm's state (home / away / night by the hour), written as past times."""
    ws = server.websocket(token)
    now = int(time.time())
    start = now - 2 * 86400
    start -= start % 300
    puts = []
    for t in range(start, now - 60, 300):
        hour = (t // 3600) % 24
        puts.append({"put": {"key": "house.living.temp", "value": round(20 + 3 * ((hour - 12) / 12) ** 2 + (t % 7) / 10, 2), "time": t}})
    for t in range(start, now - 60, 600):
        puts.append({"put": {"key": "house.door.open", "value": (t // 600) % 5 == 0, "time": t}})
    for t in range(start, now - 60, 3600):
        puts.append({"put": {"key": "house.alarm.state", "value": ["home", "away", "night"][(t // 3600) % 3], "time": t}})
    for i, t in enumerate(range(start, now - 60, 900)):
        puts.append({"put": {"key": "house.power.pulses", "value": i * 3 + (t // 3600) % 2, "time": t}})
    for t in range(start, now - 60, 7200):
        puts.append({"put": {"key": "house.log.events", "value": f"backup finished at {t}", "time": t}})
    puts.sort(key=lambda p: p["put"]["time"])
    assert json.loads(ask(ws, [{"define": {"house.power.pulses": {"type": "counter"}}},
                               {"define": {"house.log.events": {"type": "string", "mode": "log"}}}])) \
        == [{"result": "ok"}, {"result": "ok"}]
    for i in range(0, len(puts), 500):
        replies = json.loads(ask(ws, puts[i:i + 500]))
        bad = [r for r in replies if r.get("result") != "ok"]
        assert not bad, bad[:3]
    ask(ws, {"put": {"key": "garden.rain", "value": 0}})
    ws.close()
    server.seeded_until = now - 3600 - (now % 3600)


def browser(width=1280, height=900):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}"]:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_window_size(width, height)
    return driver


def wait_for(driver, script, what, timeout=WAIT):
    """Runs `return <script>` until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script("return " + script)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}")
        time.sleep(0.02)


def shot(driver, name):
    os.makedirs(SHOTS, exist_ok=True)
    path = os.path.join(SHOTS, name + ".png")
    driver.save_screenshot(path)
    return path


def row_value(driver, key):
    return driver.execute_script(
        "const r = document.querySelector(`[data-key=\"${arguments[0]}\"] .value`);"
        "return r ? r.textContent : null;", key)


def past_window(server):
    """A window that ended before the last seeded point: its answers no longer change as the
    clock moves (a window reaching now does: the last value holds until now)."""
    return server.seeded_until - 86400, server.seeded_until


def open_key(driver, server, key, window=None):
    query = "" if window is None else f"?since={window[0]}&until={window[1]}"
    driver.get(server.base + "/ui/key/" + key + query)
    wait_for(driver, "window.komoku && window.komoku.draws >= 1 && window.komoku.charts.main", f"{key}'s chart")
    wait_for(driver, "window.komoku.charts.main.plot || window.komoku.charts.main.series", "the plot")
    return driver.execute_script(
        "const c = window.komoku.charts; const out = {};"
        "for (const [id, v] of Object.entries(c)) out[id] = {url: v.url, x: v.x, series: v.series,"
        "  drawn: v.plot ? v.plot.data : null};"
        "return out;")


def close(a, b):
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def same_series(got, want, what):
    assert len(got) == len(want), f"{what}: {len(got)} points drawn, the API has {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert close(g, w), f"{what}[{i}]: drawn {g}, the API says {w}"


# ---- the checks ---------------------------------------------------------------------------

def check_list(driver, server):
    driver.get(server.base + "/")
    wait_for(driver, "window.komoku && window.komoku.listed >= 1", "the list")
    groups = driver.execute_script("return [...document.querySelectorAll('.group h3')].map(h => h.textContent)")
    assert groups == ["garden", "house.alarm", "house.door", "house.living", "house.log", "house.power"], groups
    listed = server.api("keys")["keys"]
    for k in listed:
        shown = row_value(driver, k["name"])
        want = k["value"] if isinstance(k["value"], str) else json.dumps(k["value"])
        assert shown == want, f"{k['name']}: shown {shown!r}, the API says {want!r}"
    # The search narrows the list.
    box = driver.find_element(By.ID, "search")
    box.send_keys("door")
    visible = driver.execute_script("return [...document.querySelectorAll('.row')].filter(r => !r.hidden).map(r => r.dataset.key)")
    assert visible == ["house.door.open"], visible
    box.clear()
    driver.execute_script("document.getElementById('search').dispatchEvent(new Event('input'))")
    shot(driver, "list")


def check_live(driver, server):
    driver.get(server.base + "/")
    wait_for(driver, "window.komoku && window.komoku.listed >= 1", "the list")
    wait_for(driver, "document.querySelector('#status.live')", "the websocket")
    ws = server.websocket()
    worst = 0.0
    for value in [17.25, 18.5, 3]:
        started = time.monotonic()
        assert json.loads(ask(ws, {"put": {"key": "garden.rain", "value": value}}))["result"] == "ok"
        wait_for(driver, f"document.querySelector('[data-key=\"garden.rain\"] .value').textContent === '{value}'",
                 "the put on the page", timeout=1.0)
        worst = max(worst, time.monotonic() - started)
    ws.close()
    print(f"    put over the websocket to the open page: {worst * 1000:.0f} ms at worst of 3")


def check_numeric(driver, server):
    charts = open_key(driver, server, "house.living.temp", past_window(server))
    main = charts["main"]
    answer = server.api(main["url"])
    want_mean = [b.get("mean") for b in answer["buckets"]]
    same_series(main["series"]["mean"], want_mean, "mean")
    same_series(main["series"]["min"], [b.get("min") for b in answer["buckets"]], "min")
    same_series(main["series"]["max"], [b.get("max") for b in answer["buckets"]], "max")
    same_series(main["x"], [b["start"] for b in answer["buckets"]], "bucket starts")
    # What uPlot holds is what it draws: x, min, max, mean.
    same_series(main["drawn"][3], want_mean, "plotted mean")
    typical = charts["typical"]
    groups = server.api(typical["url"])["groups"]
    same_series(typical["series"]["mean"], [g.get("mean") for g in groups], "typical day")
    assert len(groups) == 24, len(groups)
    # Drawn for the asked window, at a step chosen from its length (a day: 5 minutes).
    since, until = past_window(server)
    assert f"since={since}&until={until}&step=5M" in main["url"], main["url"]
    driver.get(server.base + "/ui/key/house.living.temp")
    wait_for(driver, "window.komoku && window.komoku.draws >= 1 && window.komoku.charts.main.plot", "the 24 h chart")
    shot(driver, "numeric")
    # Another range: 7 days, from the buttons.
    driver.find_element(By.CSS_SELECTOR, "button[data-range='7d']").click()
    wait_for(driver, "window.komoku.draws >= 2", "the 7 d chart")
    main = driver.execute_script("return {url: window.komoku.charts.main.url, mean: window.komoku.charts.main.series.mean}")
    assert "step=30M" in main["url"], main["url"]
    # Dragging across the chart zooms into that window (a custom range, finer step).
    draws = driver.execute_script("return window.komoku.draws")
    over = driver.find_element(By.CSS_SELECTOR, "#chart-main .u-over")
    width = over.size["width"]
    ActionChains(driver).move_to_element_with_offset(over, -width // 4, 0).click_and_hold() \
        .move_by_offset(width // 4, 0).release().perform()
    wait_for(driver, f"window.komoku.draws > {draws}", "the zoomed chart")
    zoomed = driver.execute_script("return window.komoku.charts.main.url")
    assert "step=5M" in zoomed or "step=1M" in zoomed or "step=15M" in zoomed, zoomed
    assert "since=" in driver.current_url and "until=" in driver.current_url, driver.current_url
    assert driver.find_element(By.CSS_SELECTOR, "button[data-range='custom']").get_attribute("class") == "on"
    same_series(driver.execute_script("return window.komoku.charts.main.series.mean"),
                [b.get("mean") for b in server.api(zoomed)["buckets"]], "zoomed mean")
    shot(driver, "numeric-zoomed")
    # Up to now: the last bucket's mean moves with the clock, the others are settled.
    same_series(main["mean"][:-1], [b.get("mean") for b in server.api(main["url"])["buckets"]][:-1], "7 d mean")


def check_boolean(driver, server):
    charts = open_key(driver, server, "house.door.open", past_window(server))
    main = charts["main"]
    answer = server.api(main["url"])
    same_series(main["series"]["fraction_true"], [b.get("fraction_true") for b in answer["buckets"]], "fraction true")
    shown = driver.find_element(By.ID, "uptime").text
    assert shown == f"{answer['total']['fraction_true'] * 100:.2f} %", shown
    outages = driver.execute_script("return document.querySelectorAll('#outages tr').length")
    assert outages > 1, "no outages listed"
    shot(driver, "boolean")


def check_string(driver, server):
    charts = open_key(driver, server, "house.alarm.state", past_window(server))
    main = charts["main"]
    answer = server.api(main["url"])
    for state in ["home", "away", "night"]:
        want = []
        for b in answer["buckets"]:
            t = b.get("time_per_state") or {}
            total = sum(t.values())
            want.append(t.get(state, 0) / total if total > 0 else None)
        same_series(main["series"][state], want, f"share of {state}")
    rows = driver.execute_script("return [...document.querySelectorAll('#time-per-state tr td:first-child')].map(td => td.textContent)")
    assert sorted(rows) == ["away", "home", "night"], rows
    shot(driver, "string")


def check_counter_and_log(driver, server):
    charts = open_key(driver, server, "house.power.pulses", past_window(server))
    main = charts["main"]
    answer = server.api(main["url"])
    same_series(main["series"]["increase"], [b.get("increase") for b in answer["buckets"]], "increase")
    assert any(v for v in main["series"]["increase"]), "no increase drawn"
    shot(driver, "counter")
    charts = open_key(driver, server, "house.log.events", past_window(server))
    points = server.api(charts["main"]["url"])
    assert charts["main"]["series"]["value"] == [p[1] for p in points]
    rows = driver.execute_script("return [...document.querySelectorAll('#entries td:last-child')].map(td => td.textContent)")
    assert rows == [p[1] for p in reversed(points)] and len(rows) == 12, rows
    shot(driver, "log")


def check_phone(server):
    driver = browser(375, 812)
    try:
        driver.get(server.base + "/")
        wait_for(driver, "window.komoku && window.komoku.listed >= 1", "the list")
        overflow = driver.execute_script("return document.documentElement.scrollWidth")
        assert overflow <= 375, f"the list is {overflow} px wide on a 375 px screen"
        shot(driver, "phone")
        driver.get(server.base + "/ui/key/house.living.temp")
        wait_for(driver, "window.komoku && window.komoku.draws >= 1 && window.komoku.charts.main.plot", "the chart")
        overflow = driver.execute_script("return document.documentElement.scrollWidth")
        assert overflow <= 375, f"the key page is {overflow} px wide on a 375 px screen"
        shot(driver, "phone-numeric")
    finally:
        driver.quit()


def check_token_prompt(binary):
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    config = f"""
[auth]
enabled = true
[[auth.tokens]]
name = "ui"
hash = "sha256:{digest}"
read = ["*"]
write = ["*"]
subscribe = ["*"]
define = ["*"]
"""
    server = Server(binary, config)
    driver = browser()
    try:
        seed(server, TOKEN)
        driver.get(server.base + "/")
        wait_for(driver, "!document.getElementById('login').hidden", "the token prompt")
        shot(driver, "token-prompt")
        driver.find_element(By.ID, "token").send_keys("wrong")
        driver.find_element(By.ID, "login-button").click()
        wait_for(driver, "!document.getElementById('login-error').hidden", "the wrong token refused")
        field = driver.find_element(By.ID, "token")
        field.clear()
        field.send_keys(TOKEN)
        driver.find_element(By.ID, "login-button").click()
        wait_for(driver, "document.getElementById('login').hidden && window.komoku.listed >= 1", "the list after the token")
        assert row_value(driver, "garden.rain") == "0"
        assert TOKEN not in driver.current_url
        # Live values need the token too (the websocket's first message).
        wait_for(driver, "document.querySelector('#status.live')", "the websocket")
        ws = server.websocket(TOKEN)
        ask(ws, {"put": {"key": "garden.rain", "value": 42}})
        ws.close()
        wait_for(driver, "document.querySelector('[data-key=\"garden.rain\"] .value').textContent === '42'", "the live value", timeout=1.0)
        # A reload keeps the token (this browser's storage), still outside any URL.
        driver.get(server.base + "/ui/key/house.living.temp")
        wait_for(driver, "window.komoku && window.komoku.draws >= 1 && window.komoku.charts.main", "the chart with the token")
        assert TOKEN not in driver.current_url
        shot(driver, "token-accepted")
    finally:
        driver.quit()
        server.stop()


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "debug", "komoku")
    results = []

    def run(name, check, *args):
        started = time.monotonic()
        try:
            check(*args)
            results.append(True)
            print(f"ok   {name} ({time.monotonic() - started:.1f} s)", flush=True)
        except Exception:  # noqa: BLE001 - report every failure and go on
            results.append(False)
            print(f"FAIL {name}", flush=True)
            traceback.print_exc()

    server = Server(binary)
    try:
        seed(server)
        driver = browser()
        try:
            run("the list shows keys grouped by prefix, with their values", check_list, driver, server)
            run("a put over the websocket shows on the open page within 1 s", check_live, driver, server)
            run("a numeric key's charts equal the API's answer", check_numeric, driver, server)
            run("a boolean key's chart, uptime and outages equal the API's answer", check_boolean, driver, server)
            run("a string key's state timeline equals the API's answer", check_string, driver, server)
            run("a counter's increase and a log's entries equal the API's answer", check_counter_and_log, driver, server)
        finally:
            driver.quit()
        run("the page fits a 375 px wide phone", check_phone, server)
    finally:
        server.stop()
    run("with auth on, the token prompt refuses a wrong token and takes the right one", check_token_prompt, binary)
    print(f"screenshots in {SHOTS}")
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
