"""The web UI with workers (--processes 2): the live view merges the workers' journals and
CPU, each test gets its own complete folder, and quitting mid-test finishes that test first."""
from __future__ import annotations

import json
import signal
import subprocess
import urllib.parse
import urllib.request

from tests.e2e.conftest import LOCUST, ROOT
from tests.e2e.test_webui import _free_port, _get, _wait


def _post(url: str, data: list[tuple[str, str]] | None = None) -> dict:
    body = urllib.parse.urlencode(data or []).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=60) as resp:
        return json.loads(resp.read())


def test_master_and_workers_live_view_and_one_folder_per_test(tmp_path):
    results = tmp_path / "results"
    web, mport = _free_port(), _free_port()
    proc = subprocess.Popen([LOCUST, "-f", "locustfile.py", "--processes", "2", "--master-bind-host", "127.0.0.1",
                             "--master-bind-port", str(mport), "--master-port", str(mport), "--web-host", "127.0.0.1",
                             "--web-port", str(web), "--stop-timeout", "3", "--set", f"run.results_dir={results}"],
                            cwd=ROOT, stdout=open(tmp_path / "locust.log", "w"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{web}"
    try:
        _wait(lambda: len(_get(base + "/stats/requests").get("workers") or []) == 2, 90, "two workers")
        host = _get(base + "/harness/live")["host"]
        form = [("user_count", "8"), ("spawn_rate", "8"), ("host", host), ("chat_scenario", "mass_login"),
                ("chat_scenario", "kick_race"),
                ("chat_set", f"run.results_dir={results} scenarios.mass_login.hold_s=2 scenarios.kick_race.devices=2")]
        assert _post(base + "/swarm", form)["success"]
        live = _wait(lambda: (lambda r: r if r and r["rows"] > 100 and len(r["cpu"]["generators"]) == 2 else None)(
            _get(base + "/harness/live")["run"]), 90, "merged rows and both workers' CPU")
        assert live["checks"] and live["codes"]
        assert {"kick_exactly_once", "policy_limit"} <= set(live["checks"])
        _post(base + "/stop")
        done = _wait(lambda: (lambda r: r if r and r["finished"] else None)(_get(base + "/harness/live")["run"]),
                     120, "the first test's folder")
        run1 = results / done["run_id"]
        s1 = json.loads((run1 / "summary.json").read_text())
        assert s1["exit_code"] == 0, s1.get("gates")
        assert len(s1["workers"]) == 2 and all(w["finished"] for w in s1["workers"].values())
        assert len(list((run1 / "journal").glob("w*.jsonl"))) == 2
        rows = [json.loads(x) for p in (run1 / "journal").glob("w*.jsonl") for x in p.open() if x.strip()]
        assert s1["distributed"]["rows_reported"] == len(rows)
        from harness.results.journal import EVENT_OPS

        assert s1["locust_total"] == sum(1 for r in rows if r["op"] not in EVENT_OPS)  # events are not requests
        assert len(s1["cpu"]["generators"]) == 2
        assert {n: c["violations"] for n, c in done["checks"].items()} == \
            {n: c["violations"] for n, c in s1["checks"].items()}
        rows1 = sum(1 for p in (run1 / "journal").glob("*.jsonl") for _ in p.open())

        # a second test, then the process quits while it runs: its folder is finished first
        assert _post(base + "/swarm", form)["success"]
        second = _wait(lambda: (lambda r: r if r and r["run_id"] != done["run_id"] and r["rows"] > 50 else None)(
            _get(base + "/harness/live")["run"]), 90, "the second test's rows")
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        run2 = results / second["run_id"]
        s2 = json.loads((run2 / "summary.json").read_text())
        assert s2["run_id"] == second["run_id"] and s2["exit_code"] == 0, s2.get("gates")
        assert (run2 / "junit.xml").is_file() and (run2 / "report.html").is_file()
        assert (results / "latest").resolve() == run2.resolve()
        rows2 = [json.loads(line) for p in (run2 / "journal").glob("*.jsonl") for line in p.open()]
        assert rows2 and min(r["start"] for r in rows2) >= second["started_ns"]
        assert sum(1 for p in (run1 / "journal").glob("*.jsonl") for _ in p.open()) == rows1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
