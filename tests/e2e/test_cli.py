"""Command-line behaviour a user meets first: bad config, unreachable host."""
from __future__ import annotations

import socket


def test_bad_config_value_exits_2_naming_the_key(locust_run):
    run = locust_run("-u", "1", "-t", "2s", "--set", "scenarios.kick_race.devices=0", timeout=60)
    assert run.code == 2
    assert "scenarios.kick_race.devices: expected 2..50, got 0" in run.stderr
    assert "Traceback" not in run.stderr


def test_unknown_scenario_exits_2(locust_run):
    run = locust_run("-u", "1", "-t", "2s", "--scenario", "mass_logon", timeout=60)
    assert run.code == 2
    assert "unknown scenario 'mass_logon'" in run.stderr


def test_unreachable_host_exits_5_with_one_line(locust_run):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    run = locust_run("-u", "1", "-t", "2s", "--host", f"ws://127.0.0.1:{port}", "--scenario", "mass_login",
                     env={"CHAT_SECRET_KEY": "k"}, timeout=60)
    assert run.code == 5
    assert "cannot be reached" in run.stderr
    assert "Traceback" not in run.stderr


def test_help_lists_the_harness_options_in_their_own_section():
    import subprocess

    from tests.e2e.conftest import ROOT

    out = subprocess.run([str(ROOT / "scripts" / "locust"), "-f", "locustfile.py", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60).stdout
    section = out.split("Chat login harness options:")[1].split("Examples:")[0]
    for opt in ("--config PATH", "--scenario NAME[,NAME]", "--set KEY=VALUE", "--no-report", "--policy"):
        assert opt in section, opt
    assert "not Locust's locust.conf" in section
    assert "File to read additional configuration" not in out  # Locust's own --config gave way
