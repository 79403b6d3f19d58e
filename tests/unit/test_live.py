"""The web UI's live view: the checks fed row by row end where the end-of-test checks do;
CPU figures and saturation; one test's share of a shared ledger; safe file serving; the
harness options as the start form and the command line give them."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from harness.results.checks import run_checks
from harness.runner.live import LiveChecks, cpu_summary, ledger_slice
from harness.runner.plugin import NameList, add_arguments, set_values
from harness.runner.webui import safe_path
from tests.unit.test_checks import J, dev, handover, race_row, switch, ts

CONFIG = {"target": {"policy": "single_platform"}, "run": {"settle_s": 2},
          "gates": {"error_ratio": {"overall": 0.5}, "min_rate_per_s": {"login": 0.001},
                    "latency_ms": {"login": {"p99": 10_000}}}}


def faulty_journal() -> J:
    """Rows with several kinds of violation (duplicate kick, missing kick, race with two
    survivors, switch mismatch) among clean ones, from two workers."""
    j = J()
    handover(j, kick_rows=2)                                   # duplicate kick
    j.login("C", "c3", 3.0, 3.1, user="u2")
    j.login("D", "c4", 4.0, 4.1, user="u2", kicked=("C",))     # C never told
    race_row(j, [dev("Android", "R1", 1.0, 1.1, True), dev("iOS", "R2", 1.2, 1.3, True)],
             online=[{"Platform": "Android", "Status": "Online"}, {"Platform": "iOS", "Status": "Online"}])
    switch(j, 5.0, server_user="alice")
    for i in range(30):
        j.add("heartbeat", 5 + i * 0.1, 5 + i * 0.1 + 0.01, w="w1", conn="w1/1", user="x")
    j.add("connect", 6.0, 6.2, outcome="fail", code=-1, conn="w1/2", w="w1")
    j.tick(20)
    return j


def write_run(tmp_path: Path, rows: list[dict]) -> Path:
    run = tmp_path / "run"
    (run / "journal").mkdir(parents=True)
    by_w: dict[str, list[dict]] = {}
    for r in rows:
        by_w.setdefault(r["w"], []).append(r)
    for w, rs in by_w.items():
        (run / "journal" / f"{w}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs))
    return run


def test_checks_fed_in_batches_end_where_the_end_of_test_checks_do(tmp_path):
    j = faulty_journal()
    run = write_run(tmp_path, j.rows)
    final = run_checks(run, config=CONFIG)
    live = LiveChecks(CONFIG, started_ns=ts(0))
    seen = []
    for i in range(0, len(j.rows), 4):  # as the flusher hands them over, re-evaluated in between
        live.feed(j.rows[i:i + 4], where="batch")
        seen.append(sum(r.violations for r in live.evaluate().values()))
    assert seen[-1] > 0 and seen == sorted(seen)  # violations only grow as rows arrive
    last = live.evaluate()
    assert {n: (r.violations, r.examples) for n, r in last.items()} == \
           {n: (r.violations, r.examples) for n, r in final.items()}
    snap = live.snapshot(ts(20))
    assert {n: c["violations"] for n, c in snap["checks"].items()} == {n: r.violations for n, r in final.items()}
    live.set_final(final)
    assert live.evaluate() is live.results and live.snapshot(ts(20))["checks_final"] is True


def test_live_counters_codes_and_gates():
    j = faulty_journal()
    live = LiveChecks(CONFIG, started_ns=ts(0))
    live.feed(j.rows)
    live.evaluate()
    snap = live.snapshot(ts(10))
    assert snap["rows"] == len(j.rows)
    codes = {c["code"]: c for c in snap["codes"]}
    assert codes[-1]["count"] == 1 and codes[-1]["name"].startswith("-1 ")
    assert codes[0]["name"] == "0 OK"
    assert snap["ops"]["login"]["count"] == 4 and snap["ops"]["login"]["rate_per_s"] == pytest.approx(0.4)
    assert snap["ops"]["login"]["p99_ms"] == pytest.approx(100, abs=1)
    gates = snap["gates"]
    assert gates["error_ratio"]["passed"] and gates["min_rate.login"]["value"] == pytest.approx(0.4)
    assert gates["latency.login.p99_ms"]["passed"]


def test_sessions_online_from_the_ledger():
    live = LiveChecks(CONFIG, started_ns=0)
    assert live.sessions_online() is None
    live.feed_ledger([{"seq": 0, "event": "login", "sessionID": "a"}, {"seq": 1, "event": "login", "sessionID": "b"},
                      {"seq": 2, "event": "end", "sessionID": "a"}])
    assert live.sessions_online() == 1


def test_cpu_summary_flags_saturation_with_a_note():
    calm = cpu_summary({"local": [10.0, 20.0, 30.0]}, [5.0, 5.0])
    assert calm["generators"]["local"] == {"mean": 20.0, "p95": 30.0, "max": 30.0}
    assert calm["target"]["max"] == 5.0
    assert not calm["generator_saturated"] and not calm["target_saturated"] and "notes" not in calm
    hot = cpu_summary({"w0": [95.0] * 20, "w1": [10.0] * 20}, [99.0] * 19 + [50.0])
    assert hot["generator_saturated"] and hot["target_saturated"]
    assert any("w0" in n and "not valid" in n for n in hot["notes"])
    assert any("the latency is the target's" in n for n in hot["notes"])
    assert cpu_summary({"local": []}, None) == {"generators": {}, "target": None, "generator_saturated": False,
                                                "target_saturated": False}


def test_ledger_slice_keeps_whole_sessions_of_the_test(tmp_path):
    src = tmp_path / "ledger.jsonl"
    rows = [{"seq": 0, "ts": 100, "event": "login", "sessionID": "old"},
            {"seq": 1, "ts": 250, "event": "login", "sessionID": "new"},
            {"seq": 2, "ts": 260, "event": "end", "sessionID": "old"},
            {"seq": 3, "ts": 300, "event": "end", "sessionID": "new"},
            {"seq": 4, "ts": 900, "event": "login", "sessionID": "later"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    dst = tmp_path / "out.jsonl"
    assert ledger_slice(src, dst, 200, 500) == 2
    got = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [(r["seq"], r["sessionID"], r["event"]) for r in got] == [(0, "new", "login"), (1, "new", "end")]


def test_safe_path_serves_only_files_inside_the_run_folder(tmp_path):
    run = tmp_path / "run"
    (run / "charts").mkdir(parents=True)
    (run / "report.html").write_text("x")
    (run / "charts" / "a.png").write_bytes(b"png")
    (run / ".master-token").write_text("secret")
    (tmp_path / "outside.txt").write_text("no")
    (run / "link").symlink_to(tmp_path / "outside.txt")
    assert safe_path(run, "report.html") == (run / "report.html").resolve()
    assert safe_path(run, "charts/a.png") == (run / "charts" / "a.png").resolve()
    for bad in ("../outside.txt", "charts/../../outside.txt", "/etc/passwd", "link", ".master-token",
                "charts", "", "..", "a\\..\\b", "nope.html"):
        assert safe_path(run, bad) is None, bad


def test_set_values_from_the_command_line_and_from_the_form():
    assert set_values(None) == [] and set_values("") == []
    assert set_values(["faults=[{kind: cut, at_s: 5}]", "a.b=1"]) == ["faults=[{kind: cut, at_s: 5}]", "a.b=1"]
    assert set_values("a.b=1  target.policy=dual_platform 'faults=[{kind: cut, at_s: 5}]'") == \
        ["a.b=1", "target.policy=dual_platform", "faults=[{kind: cut, at_s: 5}]"]


def test_harness_options_have_their_own_section_and_show_in_the_web_ui():
    from locust.argument_parser import LocustArgumentParser

    parser = LocustArgumentParser(prog="locust", add_help=False)
    parser.add_argument("--config", help="File to read additional configuration from")
    add_arguments(parser)
    ui = parser.args_included_in_web_ui
    assert {"chat_config", "chat_scenario", "chat_set", "chat_no_report", "chat_policy"} <= set(ui)
    assert "chat_local_journal" not in ui
    assert list(ui["chat_scenario"].choices) == ["mass_login", "relogin_expiry", "account_switch", "kick_race"]
    assert "chat_scenario" in parser.multiple_args_included_in_web_ui
    assert "single_platform" in ui["chat_policy"].choices
    text = parser.format_help()
    section = text.split("Chat login harness options:")[1]
    assert "--scenario" in section and "--set" in section and "--no-report" in section and "--policy" in section
    assert "additional configuration" not in text and "not Locust's locust.conf" in section
    opts = parser.parse_args(["--scenario", "kick_race,mass_login", "--set", "a=1", "--set", "b=2"])
    assert opts.chat_scenario == "kick_race,mass_login" and opts.chat_set == ["a=1", "b=2"]
    # the harness, not argparse, says what is wrong with a value (tests/e2e/test_cli.py)
    assert parser.parse_args(["--scenario", "mass_logon"]).chat_scenario == "mass_logon"
    assert list(NameList(["a"])) == ["a"]


def test_operations_cut_short_by_the_harness_stop_are_info_not_failures(tmp_path):
    from types import SimpleNamespace

    from locust.event import Events

    from harness.results.journal import Journal, read_journal
    from harness.runner.users import STOPPED_BY_HARNESS, ChatUser

    j = Journal(tmp_path / "j.jsonl", "local").open()
    failures = []
    events = Events()
    events.request.add_listener(lambda exception=None, **kw: failures.append(exception) if exception else None)
    rt = SimpleNamespace(journal=j, stopping=False)
    me = SimpleNamespace(rt=rt, environment=SimpleNamespace(events=events), scenario="mass_login")
    ChatUser.emit(me, "connect", outcome="fail", code=-1, start=1, end=2, desc="refused")
    rt.stopping = True  # from test_stopping on
    ChatUser.emit(me, "connect", outcome="fail", code=-1, start=3, end=4, desc="refused")
    ChatUser.emit(me, "login", outcome="fail", code=70001, start=5, end=6)  # the server said so: stays a failure
    ChatUser.emit(me, "disconnect", outcome="info", code=0, start=7, end=7, desc="closed_by_client")
    j.close()
    rows = read_journal(tmp_path / "j.jsonl")
    assert [(r["outcome"], r["detail"]) for r in rows] == [
        ("fail", "refused"), ("info", STOPPED_BY_HARNESS), ("fail", rows[2]["detail"]), ("info", "closed_by_client")]
    assert rows[2]["code"] == 70001 and j.stopped == {"connect": 1}
    live = LiveChecks(CONFIG, started_ns=0)
    live.feed(rows + [{**rows[0], "n": 4, "outcome": "ok", "code": 0, "detail": ""}])
    assert live.stopped == {"connect": 1}
    ops = live.ops_summary(10)
    assert ops["connect"]["stopped"] == 1
    from harness.results.gates import evaluate_gates

    # 1 failure of 2 real connects (one ok): the stopped one counts in neither
    g = evaluate_gates({"error_ratio": {"overall": 1.0}}, {"ops": {"connect": ops["connect"]}})
    assert g["error_ratio"]["value"] == 0.5
