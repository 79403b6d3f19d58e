"""--host: the same scenarios against a server the harness did not start (here: the reference
server started by the test, standing in for the user's own), with the local and the http
UserSig sources."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.e2e.conftest import ROOT

SECRET = "external-secret-0123"


@pytest.fixture
def external_server(tmp_path):
    env = dict(os.environ, CHAT_SECRET_KEY=SECRET)
    proc = subprocess.Popen([sys.executable, "-m", "harness.targets.server", "--host", "127.0.0.1", "--port", "0",
                             "--sdkappid", "1400000042", "--policy", "dual_platform"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://"), line
        yield line.split("http://", 1)[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_scenarios_run_against_a_given_host(locust_run, external_server):
    hostport = external_server
    run = locust_run("--host", f"ws://{hostport}", "--scenario", "kick_race,account_switch", "-u", "4", "-r", "4",
                     "-t", "4s", "--no-report", "--set", "target.policy=dual_platform",
                     "--set", "scenarios.kick_race.platforms=[iOS, Android, Web]",
                     "--set", "scenarios.kick_race.pause_s=0.1", "--set", "scenarios.kick_race.settle_ms=200",
                     env={"CHAT_SECRET_KEY": SECRET, "CHAT_SDKAPPID": "1400000042"})
    assert run.run_dir is not None, run.stderr
    assert run.summary["target"] == f"ws://{hostport}"
    assert not (run.run_dir / "ledger.jsonl").exists()          # not ours: no ledger, checks still run
    races = run.rows("race")
    assert races
    for r in races:                                             # dual_platform: one native + one Web survive
        alive = sorted(d["platform"] for d in r["data"]["devices"] if d["alive"])
        assert len(alive) == 2 and "Web" in alive, r
        assert sorted(o["Platform"] for o in r["data"]["online"]) == alive
    assert run.rows("switch") and all(s["outcome"] == "ok" for s in run.rows("switch"))
    assert SECRET not in (run.run_dir / "config.yaml").read_text()
    assert run.code == 0, run.stderr[-2000:]


def test_http_usersig_source_is_an_operation(locust_run, external_server):
    hostport = external_server
    url = f"http://{hostport}/biz/usersig?userID={{userID}}&expire={{expire}}"
    run = locust_run("--host", f"ws://{hostport}", "--scenario", "mass_login", "-u", "5", "-r", "5", "-t", "3s",
                     "--no-report", "--set", "usersig.source=http", "--set", f"usersig.url={url}",
                     "--set", "scenarios.mass_login.hold_s=0.2",
                     env={"CHAT_SDKAPPID": "1400000042", "CHAT_SECRET_KEY": SECRET})
    fetches = run.rows("usersig_fetch")
    logins = run.rows("login")
    assert fetches and all(f["outcome"] == "ok" for f in fetches)
    assert logins and all(r["outcome"] == "ok" for r in logins)
    assert len(fetches) >= len(logins)                          # every login's sig was fetched
    assert run.code == 0, run.stderr[-2000:]
