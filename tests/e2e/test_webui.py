"""The web UI as a first-class way to run, driven in headless Chromium (selenium + Debian's
chromium-driver): harness options in the start form, the Host field, the live Harness tab,
the verdict and report after Stop, and a second test whose folder holds only its own rows.

Screenshots of each step go to ``$HARNESS_SCREENSHOTS`` or a temp dir (printed)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import LOCUST, ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                                reason="needs chromium and chromium-driver")


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _get(url: str, timeout: float = 5) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def _wait(pred, timeout: float, what: str, step: float = 0.25):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@pytest.fixture
def web(tmp_path):
    """``locust -f locustfile.py`` with the web UI on a free loopback port."""
    port = _free_port()
    results = tmp_path / "results"
    log = open(tmp_path / "locust.log", "w")
    proc = subprocess.Popen([LOCUST, "-f", "locustfile.py", "--web-host", "127.0.0.1", "--web-port", str(port),
                             "--stop-timeout", "3", "--set", f"run.results_dir={results}"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _get(base + "/harness/live")["state"] == "ready", 60, "the web UI")
        yield {"base": base, "results": results, "proc": proc, "log": tmp_path / "locust.log"}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


@pytest.fixture
def browser(tmp_path):
    # gevent's monkey-patching (locust) must come before urllib3 (selenium) in this process, or
    # a later test that imports locust meets the ssl recursion of a half-patched urllib3
    import locust  # noqa: F401
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
                f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1400,1500"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def shots():
    root = Path(os.environ.get("HARNESS_SCREENSHOTS") or tempfile.mkdtemp(prefix="harness-webui-shots-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {root}")
    n = [0]

    def shot(driver, name: str) -> Path:
        n[0] += 1
        p = root / f"{n[0]:02d}-{name}.png"
        driver.save_screenshot(str(p))
        return p

    return shot


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for p in sorted((run_dir / "journal").glob("*.jsonl"))
            for line in p.read_text().splitlines() if line.strip()]


def _fill_form(driver, *, users: int, scenarios: list[str], set_text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    for name, value in (("userCount", str(users)), ("spawnRate", str(users))):
        el = driver.find_element(By.NAME, name)
        el.send_keys(Keys.CONTROL, "a")  # clear() does not reach React's state
        el.send_keys(value)
    _open_custom_parameters(driver)
    sel = Select(driver.find_element(By.NAME, "chatScenario"))
    sel.deselect_all()
    for s in scenarios:
        sel.select_by_value(s)
    field = driver.find_element(By.NAME, "chatSet")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(set_text)


def _open_custom_parameters(driver) -> None:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.NAME, "chatScenario")
    if not found or not found[0].is_displayed():
        driver.find_element(By.XPATH, "//*[text()='Custom parameters']").click()
        _wait(lambda: driver.find_element(By.NAME, "chatScenario").is_displayed(), 10, "custom parameters")


def _click_button(driver, text: str) -> None:
    from selenium.webdriver.common.by import By

    btn = _wait(lambda: next((b for b in driver.find_elements(By.TAG_NAME, "button")
                              if b.text.strip().lower() == text.lower() and b.is_displayed()), None), 20,
                f"button {text}")
    btn.click()


def _harness_tab_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def test_a_web_ui_user_gets_options_live_checks_verdict_and_a_report_per_test(web, browser, shots):
    from selenium.webdriver.common.by import By

    base, results = web["base"], web["results"]
    d = browser
    d.get(base + "/")
    _wait(lambda: d.find_element(By.NAME, "userCount"), 30, "the start form")
    host = d.find_element(By.NAME, "host").get_attribute("value")
    assert host.startswith("ws://127.0.0.1:"), host
    body = d.find_element(By.TAG_NAME, "body").text
    assert "host attribute" not in body and "no host" not in body.lower()
    shots(d, "start-form")

    # the harness options, with choices
    _open_custom_parameters(d)
    for name in ("chatScenario", "chatSet", "chatPolicy", "chatConfig", "chatNoReport"):  # chat_* on submit
        assert d.find_elements(By.NAME, name), name
    options = [o.get_attribute("value") for o in d.find_elements(By.CSS_SELECTOR, "select[name=chatScenario] option")]
    assert options == ["mass_login", "relogin_expiry", "account_switch", "kick_race"]
    shots(d, "harness-options")

    # test 1: two scenarios and a --set value from the form
    _fill_form(d, users=8, scenarios=["kick_race", "account_switch"],
               set_text=f"run.results_dir={results} scenarios.kick_race.devices=3")
    shots(d, "form-filled")
    _click_button(d, "Start")
    _wait(lambda: (_get(base + "/harness/live").get("run") or {}).get("rows", 0) > 200, 60, "journal rows")
    d.get(base + "/?tab=harness")
    _wait(lambda: "kick_exactly_once" in _harness_tab_text(d) and "0 OK" in _harness_tab_text(d), 30,
          "checks and codes in the Harness tab")
    text = _harness_tab_text(d)
    assert "violations so far" in text and "running" in text and "generator local" in text
    assert "sessions online" in text and "embedded target" in text
    shots(d, "harness-tab-running")
    live = _get(base + "/harness/live")["run"]
    live_checks = {n: c["violations"] for n, c in live["checks"].items()}
    run1 = results / live["run_id"]
    assert not (results / "latest").exists()  # latest moves only to a finished folder
    _click_button(d, "Reset")  # zeroes Locust's counts mid-test; the test's journal (and verdict) stay whole
    time.sleep(2)

    _click_button(d, "Stop")
    done = _wait(lambda: (lambda r: r if r and r["finished"] else None)(_get(base + "/harness/live")["run"]), 120,
                 "the first test's folder to be finished")
    assert done["verdict"] == "PASS", done
    assert (results / "latest").resolve() == run1.resolve()
    for f in ("summary.json", "junit.xml", "report.html", "locust_stats.csv", "ledger.jsonl", "config.yaml"):
        assert (run1 / f).is_file(), f
    summary = json.loads((run1 / "summary.json").read_text())
    assert summary["exit_code"] == 0 and set(summary["scenarios"]) == {"kick_race", "account_switch"}
    assert {n: c["violations"] for n, c in summary["checks"].items()} == \
        {n: c["violations"] for n, c in done["checks"].items()}  # the live view's last word is the verdict's input
    assert set(live_checks) == set(summary["checks"])
    assert summary["duration_s"] < (time.time_ns() - done["started_ns"]) / 1e9 + 1
    assert "cpu" in summary and "local" in summary["cpu"]["generators"]
    races = [r for r in _rows(run1) if r["op"] == "race"]
    assert races and all(len(r["data"]["devices"]) == 3 for r in races)  # the form's --set took effect
    d.get(base + "/?tab=harness")
    _wait(lambda: "PASS" in _harness_tab_text(d), 30, "the verdict in the Harness tab")
    assert "violations final" in _harness_tab_text(d)
    shots(d, "harness-tab-verdict")

    # the harness page: verdict and links served by the web UI
    d.get(base + "/harness")
    link = _wait(lambda: d.find_element(By.ID, "report-link"), 20, "the report link")
    shots(d, "harness-page")
    link.click()
    _wait(lambda: live["run_id"] in d.page_source, 30, "report.html")
    assert d.current_url.endswith(f"/harness/runs/{live['run_id']}/report.html")
    shots(d, "report")
    d.get(base + f"/harness/runs/{live['run_id']}/")
    assert "summary.json" in d.page_source and ".master-token" not in d.page_source
    shots(d, "files")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(base + f"/harness/runs/{live['run_id']}/..%2F..%2Flocust.log", timeout=5)

    # test 2: New -> another scenario; a fresh folder with only its own rows
    rows1 = len(_rows(run1))
    d.get(base + "/")
    _click_button(d, "New")
    _wait(lambda: d.find_element(By.NAME, "userCount").is_displayed(), 20, "the start form again")
    _fill_form(d, users=5, scenarios=["mass_login"], set_text=f"run.results_dir={results}")
    shots(d, "second-form")
    _click_button(d, "Start")
    second = _wait(lambda: (lambda r: r if r and r["run_id"] != live["run_id"] and r["rows"] > 20 else None)(
        _get(base + "/harness/live")["run"]), 60, "the second test's rows")
    d.get(base + "/?tab=harness")
    _wait(lambda: second["run_id"] in _harness_tab_text(d), 30, "the second test in the Harness tab")
    shots(d, "second-running")
    _click_button(d, "Stop")
    done2 = _wait(lambda: (lambda r: r if r and r["finished"] and r["run_id"] == second["run_id"] else None)(
        _get(base + "/harness/live")["run"]), 120, "the second test's folder")
    run2 = results / done2["run_id"]
    rows2 = _rows(run2)
    assert rows2 and {r["scenario"] for r in rows2} == {"mass_login"}
    assert min(r["start"] for r in rows2) >= done2["started_ns"]
    assert len(_rows(run1)) == rows1  # nothing of the second test leaked into the first
    assert (results / "latest").resolve() == run2.resolve()
    s2 = json.loads((run2 / "summary.json").read_text())
    assert s2["exit_code"] == 0 and s2["duration_s"] < 60
    from harness.results.journal import op_kind

    assert s2["locust_total"] == sum(1 for r in rows2 if op_kind(r["op"]) == "request")  # events are not requests
    d.get(base + "/harness")
    _wait(lambda: len(d.find_elements(By.LINK_TEXT, "report.html")) >= 2, 20, "both tests listed")
    shots(d, "harness-page-two-tests")
