"""Ctrl-C during a headless run: the users stop first, then the target; the harness's own
stop makes no failures, no violations and no traceback."""
from __future__ import annotations

import json
import signal
import subprocess
import time

from tests.e2e.conftest import LOCUST, ROOT


def test_sigint_mid_run_is_a_clean_pass(tmp_path):
    results = tmp_path / "results"
    cmd = [LOCUST, "-f", "locustfile.py", "--headless", "--only-summary", "--stop-timeout", "3",
           "--set", f"run.results_dir={results}", "--no-report", "-u", "40", "-r", "40", "-t", "120s"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(results.glob("*/journal/local.jsonl")):
            time.sleep(0.2)
        time.sleep(8)  # users mid-flight: holding sessions, racing, switching, relogging in
        t_int = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "KeyboardInterrupt" not in err and "Traceback" not in err, err[-3000:]
    assert proc.returncode == 0, err[-3000:]
    run_dir = (results / "latest").resolve()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {k: v["violations"] for k, v in summary["checks"].items() if v["violations"]} == {}
    assert all(g["passed"] for g in summary["gates"].values()), summary["gates"]
    assert summary["duration_s"] < time.monotonic() - t_int + 60  # the test's own time, stopped at Ctrl-C
    rows = [json.loads(line) for p in (run_dir / "journal").glob("*.jsonl") for line in p.read_text().splitlines()
            if line.strip()]
    # nothing the shutdown cut short is a failure: the target outlived the users
    assert [r for r in rows if r["outcome"] == "fail" and r["code"] in (0, -1)] == []
    assert [r for r in rows if r["op"] == "disconnect" and r.get("detail") == "closed_by_server"] == []
