"""The checks catch real server bugs: each seeded fault of the reference server makes the
matching check report violations (exit code 4); a clean server passes >= 1,000 races."""
from __future__ import annotations

import pytest

RACE = ("--scenario", "kick_race", "-u", "6", "-r", "6", "-t", "5s",
        "--set", "scenarios.kick_race.pause_s=0.05", "--set", "scenarios.kick_race.settle_ms=300")
EXPIRY = ("--scenario", "relogin_expiry", "-u", "6", "-r", "6", "-t", "7s",
          "--set", "target.leeway_s=0", "--set", "scenarios.relogin_expiry.sig_lifetime_s=2",
          "--set", "scenarios.relogin_expiry.sig_jitter_s=0", "--set", "scenarios.relogin_expiry.stale_login_ratio=0",
          "--set", "checks.expiry_tolerance_s=1", "--set", "scenarios.relogin_expiry.relogin_bound_s=30")


@pytest.mark.parametrize("fault, args, check", [
    ("drop_kick:0.5", RACE, "kick_exactly_once"),
    ("dup_kick:0.5", RACE, "kick_exactly_once"),
    ("double_login:0.5", RACE, "policy_limit"),
    ("kick_newest:0.5", RACE, "last_login_wins"),
    ("delay_expiry:1.0", EXPIRY + ("--set", "target.faults=[delay_expiry]",), "expiry_on_time"),
])
def test_each_seeded_fault_is_caught(locust_run, fault, args, check):
    extra = () if "target.faults=[delay_expiry]" in args else ("--set", f"target.faults=[{fault}]")
    run = locust_run(*args, *extra, "--no-report")
    assert run.run_dir is not None, run.stderr
    summary = run.summary
    assert summary["checks"][check]["violations"] > 0, summary["checks"]
    assert summary["checks"][check]["examples"], "violations come with concrete examples"
    assert run.code == 4, run.stderr[-2000:]
    assert f"{check}" in run.stderr            # one line per failed check on stderr
    assert (run.run_dir / "junit.xml").read_text().count("<failure") >= 1


def test_clean_server_passes_a_thousand_races(locust_run):
    run = locust_run("--scenario", "kick_race", "-u", "24", "-r", "24", "-t", "12s", "--no-report",
                     "--set", "scenarios.kick_race.pause_s=0", "--set", "scenarios.kick_race.settle_ms=60",
                     "--set", "scenarios.kick_race.devices=3", timeout=180)
    assert run.run_dir is not None, run.stderr
    races = run.rows("race")
    assert len(races) >= 1000, len(races)
    assert {k: v["violations"] for k, v in run.summary["checks"].items()} == dict.fromkeys(run.summary["checks"], 0)
    assert run.code == 0, run.stderr[-2000:]
