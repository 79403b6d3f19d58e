"""The default mix against real XMPP servers the harness starts itself (ejabberd, Prosody from
Debian; CI installs both). What a user of ``--set target.kind=ejabberd`` / ``prosody`` gets: the
server started on loopback with accounts, every scenario the server can run, every check judged
against the declared policy, the report, the server's log in the run folder, nothing left running.
"""
from __future__ import annotations

import re

QUICK = ("-u", "12", "-r", "12", "-t", "8s")


def test_prosody_default_mix(locust_run):
    run = locust_run("--set", "target.kind=prosody", *QUICK, timeout=240, report=True)
    assert run.run_dir is not None, run.stderr[-2000:]
    s = run.summary
    # Prosody has no expiring tickets: relogin_expiry is left out with a line, never a silent zero
    assert "relogin_expiry" in s["scenarios_not_run"] and "expiring" in s["scenarios_not_run"]["relogin_expiry"]
    assert "scenario relogin_expiry not run" in run.stderr
    assert set(s["scenarios"]) == {"mass_login", "account_switch", "kick_race"}
    assert s["policy"] == "unlimited" and s["target_server"]["kind"] == "prosody"
    assert s["target_server"]["version"].startswith("0.12")
    assert all(c["violations"] == 0 for c in s["checks"].values()), s["checks"]
    assert s["ops"]["login"]["ok"] > 50 and s["ops"]["race"]["count"] > 3 and s["ops"]["switch"]["ok"] > 5
    # the admin view (Prosody's admin socket) cross-checked the switches
    assert any(r["data"]["online"] for r in run.rows("switch") if r["outcome"] == "ok")
    assert (run.run_dir / "report.html").exists() and (run.run_dir / "prosody.log").exists()
    assert run.code == 0, run.stderr[-2000:]
    from harness.targets.xmpp_base import marker_pids

    assert not marker_pids(s["target_server"]["marker"])                # stopped everything it started


def test_ejabberd_default_mix_reports_the_expiry_finding(locust_run):
    """ejabberd 23.01 keeps sessions online after their JWT expired (tests/integration/
    test_xmpp_conformance.py proves it with the server's admin view): the harness reports it as
    expiry_on_time violations, exit 4; every other check passes."""
    run = locust_run("--set", "target.kind=ejabberd", "--set", "target.leeway_s=0",   # expiry due 2 s after login
                     "--set", "scenarios.relogin_expiry.sig_lifetime_s=2",
                     "--set", "scenarios.relogin_expiry.sig_jitter_s=0", *QUICK, timeout=240, report=True)
    assert run.run_dir is not None, run.stderr[-2000:]
    s = run.summary
    assert set(s["scenarios"]) == {"mass_login", "relogin_expiry", "account_switch", "kick_race"}
    assert s["policy"] == "max_sessions" and s["target_server"]["kind"] == "ejabberd"
    assert s["target_server"]["auth"] == "jwt"                # configured by the harness for relogin_expiry
    exp = s["checks"]["expiry_on_time"]
    assert exp["violations"] > 0, s["checks"]
    assert all(e["kind"] == "missing" and "still online" in e["found"] for e in exp["examples"]), exp["examples"]
    others = {k: c["violations"] for k, c in s["checks"].items() if k != "expiry_on_time"}
    assert not any(others.values()), others
    assert s["ops"]["login"]["ok"] > 50 and s["ops"]["switch"]["ok"] > 5
    assert any(r["data"]["online"] for r in run.rows("switch") if r["outcome"] == "ok")  # user_resources
    assert (run.run_dir / "report.html").exists() and (run.run_dir / "ejabberd.log").exists()
    assert run.code == 4, run.stderr[-2000:]
    assert re.search(r"check expiry_on_time: \d+ violation", run.stderr)


def test_relogin_expiry_by_name_on_prosody_is_refused_in_one_line(locust_run):
    run = locust_run("--set", "target.kind=prosody", "--scenario", "relogin_expiry", *QUICK, timeout=60)
    assert run.code == 2
    lines = [x for x in run.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "relogin_expiry" in lines[0] and "expiring tickets" in lines[0], run.stderr
    assert "Traceback" not in run.stderr


def test_a_policy_the_server_cannot_enforce_is_refused(locust_run):
    run = locust_run("--set", "target.kind=prosody", "--set", "target.policy=single_platform",
                     "--scenario", "kick_race", *QUICK, timeout=60)
    assert run.code == 2, run.stderr[-1500:]
    assert "prosody cannot enforce single_platform" in run.stderr and "Traceback" not in run.stderr


def test_a_hostile_xmpp_server_never_breaks_the_run(locust_run, tmp_path):
    """Malformed XML, an oversized stanza, an unknown stream error, a half-closed stream,
    silence, garbage during SASL (tests/e2e/hostile_xmpp.py): every operation ends fail/info
    with a code and the condition in its detail, the run goes on, no traceback, the journal
    is complete (journal_integrity)."""
    import subprocess
    import sys
    from pathlib import Path

    srv = subprocess.Popen([sys.executable, str(Path(__file__).with_name("hostile_xmpp.py"))],
                           stdout=subprocess.PIPE, text=True)
    try:
        port = int(srv.stdout.readline().split()[1])
        run = locust_run("--host", f"xmpp://127.0.0.1:{port}", "--scenario", "mass_login",
                         "--set", "target.xmpp.password=pw", "--set", "client.connect_timeout_s=2",
                         "--set", "client.request_timeout_s=2", "--set", "client.reconnect=false",
                         "--set", "gates.error_ratio.overall=1", "--set", "gates.latency_ms={}",
                         "--set", "scenarios.mass_login.hold_s=1", "-u", "14", "-r", "14", "-t", "7s",
                         timeout=120)
    finally:
        srv.kill()
        srv.wait()
    assert run.run_dir is not None, run.stderr[-2000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    details = {r["detail"] for r in run.rows() if r["outcome"] != "ok"}
    joined = " ".join(sorted(details))
    for condition in ("xml-not-well-formed", "stanza-too-big", "made-up-condition", "closed_by_server", "timeout"):
        assert condition in joined, (condition, details)
    assert all(isinstance(r["code"], int) for r in run.rows())
    s = run.summary
    assert s["checks"]["journal_integrity"]["violations"] == 0
    assert s["ops"]["login"]["ok"] > 0            # the well-behaved connections still logged in
    assert run.code == 0, run.stderr[-2000:]


def test_ejabberd_single_session_limit_finding_is_reported(locust_run):
    """ejabberd 23.01 with max_user_sessions 1 lets near-simultaneous logins of one account
    exceed the limit (proved with the server's admin view in tests/integration/
    test_xmpp_conformance.py): kick races report race_survivors over the limit, the server view
    agrees, and the kicks that did happen are all explained (kick_exactly_once clean)."""
    run = locust_run("--set", "target.kind=ejabberd", "--set", "target.policy=single_platform",
                     "--scenario", "kick_race", "-u", "12", "-r", "12", "-t", "8s", timeout=240)
    assert run.run_dir is not None, run.stderr[-2000:]
    s = run.summary
    pl = s["checks"]["policy_limit"]
    assert pl["violations"] > 0, s["checks"]
    assert any(e["kind"] == "race_survivors" for e in pl["examples"])
    assert s["checks"]["kick_exactly_once"]["violations"] == 0, s["checks"]["kick_exactly_once"]
    assert "name no evicted sessions" in " ".join(s["checks"]["kick_exactly_once"].get("notes", []))
    over = [r for r in run.rows("race") if "server view over limit" in (r["detail"] or "")]
    assert over, "the server's own view (user_resources) must show the extra session too"
    assert run.code == 4
