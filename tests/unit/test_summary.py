"""summary.json (RESULTS.md §2) and junit.xml built from a small run folder."""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.results.checks import CHECK_NAMES, run_checks
from harness.results.junit import write_junit
from harness.results.summary import (OP_EXTRA_KEYS, OP_KEYS, SUMMARY_EXTRA_KEYS, SUMMARY_KEYS, build_summary,
                                     load_settings, write_summary)

NS = 1_000_000_000
T0 = 1_700_000_000 * NS


def row(w: str, n: int, op: str, start_s: float, end_s: float, *, outcome: str = "ok", code: int = 0,
        user: str = "u1", session: str | None = None, **extra: object) -> dict:
    r = {"w": w, "n": n, "scenario": "mass_login", "op": op, "user": user, "platform": "Android",
         "instance": "i1", "session": session, "intended": T0 + int(start_s * NS), "start": T0 + int(start_s * NS),
         "end": T0 + int(end_s * NS), "outcome": outcome, "code": code, "detail": "", "conn": f"{w}/1"}
    r.update(extra)
    return r


def make_run(tmp_path: Path, *, drop_kick: bool = False) -> Path:
    run = tmp_path / "20250101-000000-mass_login"
    (run / "journal").mkdir(parents=True)
    rows = [
        row("w0", 0, "connect", 0.0, 0.01),
        row("w0", 1, "login", 0.02, 0.12, session="A", kicked=[], expire_at=T0 // NS + 86400),
        row("w0", 2, "heartbeat", 1.0, 1.01),
        row("w0", 3, "login", 2.0, 2.3, outcome="fail", code=70001, user="u2", conn="w0/2"),
        row("w0", 4, "logout", 9.0, 9.05, session="A"),
    ]
    rows2 = [
        row("w1", 0, "connect", 0.5, 0.51, user=""),
        row("w1", 1, "login", 1.0, 1.2, session="B", kicked=["A"], expire_at=T0 // NS + 86400, user="u1"),
        row("w1", 2, "status", 3.0, 3.0, outcome="info", code=-1),  # an op with no ok rows
        row("w1", 3, "logout", 10.0, 10.1, session="B"),
    ]
    if not drop_kick:
        rows.insert(3, row("w0", 3, "kicked_offline", 1.21, 1.21, session="A", by="B", detail="multi_device"))
        for i, r in enumerate(rows):
            r["n"] = i
    (run / "journal" / "w0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "journal" / "w1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows2))
    (run / "config.yaml").write_text("target:\n  host: ''\n  policy: single_platform\nrun:\n  settle_s: 2\n")
    return run


GATES = {"latency_ms": {"login": {"p99": 2000}}, "error_ratio": {"overall": 0.5}, "violations": 0}


def test_summary_has_exactly_the_contract_keys_and_every_enabled_check(tmp_path):
    run = make_run(tmp_path)
    checks = run_checks(run)
    s = build_summary(run, meta={"target": "embedded", "users_peak": 2}, checks=checks, gates_cfg=GATES)
    # the contract keys, in order, plus only the documented extensions (extend, never rename)
    assert [k for k in s if k in SUMMARY_KEYS] == list(SUMMARY_KEYS)
    assert set(s) == set(SUMMARY_KEYS) | set(SUMMARY_EXTRA_KEYS)
    assert s["run_id"] == run.name and s["policy"] == "single_platform" and s["target"] == "embedded"
    assert s["users_peak"] == 2 and s["duration_s"] > 0 and s["started"] < s["finished"]
    assert set(s["checks"]) == set(CHECK_NAMES)
    assert all(c == {"violations": 0, "examples": []} for c in s["checks"].values())
    login = s["ops"]["login"]
    assert (login["count"], login["ok"], login["fail"], login["info"]) == (3, 2, 1, 0)
    assert set(login) == {"count", "ok", "fail", "info", "rate_per_s", "p50_ms", "p90_ms", "p95_ms",
                          "p99_ms", "p999_ms", "max_ms"} | set(OP_EXTRA_KEYS)
    assert set(OP_KEYS) < set(login)
    assert s["codes"] == {"0": 8, "70001": 1, "-1": 1}
    assert s["gates"]["latency.login.p99_ms"]["passed"] is True
    assert s["exit_code"] == 0


def test_summary_is_json_safe_and_written_atomically(tmp_path):
    run = make_run(tmp_path)
    s = build_summary(run, meta={}, checks=run_checks(run), gates_cfg=GATES)
    assert s["ops"]["status"]["p99_ms"] is None  # no ok rows -> NaN -> null
    path = write_summary(run, s)
    assert path == run / "summary.json"
    text = path.read_text()
    assert "NaN" not in text
    back = json.loads(text)
    assert back["exit_code"] == 0 and back["ops"]["status"]["p50_ms"] is None
    assert not [p for p in run.iterdir() if p.name.startswith(".summary.")]
    assert all(not (isinstance(v, float) and math.isnan(v)) for v in back["ops"]["login"].values())


def test_summary_exit_code_reflects_violations_and_target_errors(tmp_path):
    run = make_run(tmp_path, drop_kick=True)
    checks = run_checks(run)
    s = build_summary(run, meta={}, checks=checks, gates_cfg=GATES)
    assert s["checks"]["kick_exactly_once"]["violations"] == 1
    assert s["checks"]["kick_exactly_once"]["examples"][0]["session"] == "A"
    assert s["gates"]["check.kick_exactly_once"]["passed"] is False
    assert s["exit_code"] == 4
    assert build_summary(run, meta={"target_error": True}, checks=checks, gates_cfg=GATES)["exit_code"] == 5
    strict = dict(GATES, error_ratio={"overall": 0.01})
    ok_checks = {k: v for k, v in checks.items() if k != "kick_exactly_once"}
    assert build_summary(run, meta={}, checks=ok_checks, gates_cfg=strict)["exit_code"] == 3


def test_summary_of_an_empty_run(tmp_path):
    run = tmp_path / "empty"
    (run / "journal").mkdir(parents=True)
    s = build_summary(run, meta={}, checks={}, gates_cfg={"latency_ms": {"login": {"p99": 10}}})
    assert s["ops"] == {} and s["codes"] == {}
    assert s["gates"]["latency.login.p99_ms"]["value"] is None and s["exit_code"] == 3
    json.dumps(s, allow_nan=False)


def test_junit_has_one_case_per_check_and_gate(tmp_path):
    run = make_run(tmp_path, drop_kick=True)
    checks = run_checks(run)
    s = build_summary(run, meta={}, checks=checks, gates_cfg=GATES)
    path = write_junit(run, checks, s["gates"])
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == "chat-login-harness"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    gate_names = [g for g in s["gates"] if not g.startswith("check.")]
    assert set(cases) == set(CHECK_NAMES) | set(gate_names)
    failed = {name for name, c in cases.items() if c.find("failure") is not None}
    assert failed == {"kick_exactly_once"}
    fail = cases["kick_exactly_once"].find("failure")
    assert "1 violation" in fail.get("message") and '"session": "A"' in fail.text
    assert suite.get("tests") == str(len(cases)) and suite.get("failures") == "1"


def make_stale_run(tmp_path: Path, *, accepted: bool = False) -> Path:
    """relogin_expiry-like: two stale-sig logins answered 70001 on purpose (``expect``), one real
    login; events (kicked_offline, disconnect) and a slow race whose settle is not latency."""
    run = tmp_path / "20250101-000000-relogin_expiry"
    (run / "journal").mkdir(parents=True)
    rows = [
        row("w0", 0, "login", 0.0, 0.1, outcome="fail", code=70001, expect=70001),
        row("w0", 1, "login", 0.2, 0.3, outcome="fail", code=70001, expect=70001, user="u2"),
        row("w0", 2, "login", 0.4, 0.6, session="A", kicked=[]),
        row("w0", 3, "kicked_offline", 1.0, 1.0, session="A", by="B", detail="rest_kick"),
        row("w0", 4, "disconnect", 1.1, 1.1, outcome="info", code=-1, detail="closed_by_server"),
        row("w0", 5, "connect", 1.2, 1.25),
    ]
    if accepted:
        rows[1] = row("w0", 1, "login", 0.2, 0.3, session="S", kicked=[], expect=70001, user="u2")
    for r in rows:
        r["scenario"] = "relogin_expiry"
    (run / "journal" / "w0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "config.yaml").write_text("target:\n  host: ''\n  policy: single_platform\n")
    return run


STRICT = {"error_ratio": {"overall": 0.0, "per_code": {"70001": 0.0, "-1": 0.0}}, "violations": 0}


def test_expected_outcomes_are_passes_and_counted_apart(tmp_path):
    run = make_stale_run(tmp_path)
    s = build_summary(run, meta={}, checks=run_checks(run, enabled=["expected_rejections"]), gates_cfg=STRICT)
    login = s["ops"]["login"]
    assert (login["count"], login["ok"], login["fail"], login["info"], login["expected"]) == (3, 1, 0, 0, 2)
    assert s["expected"] == {"login": {"70001": 2}}
    assert s["codes_by_op"]["login"] == {"0": 1, "70001": 2}
    assert s["codes"]["70001"] == 2                       # codes still count every row
    # the expected 70001s and the disconnect event's -1 are not errors: every error gate passes
    assert s["gates"]["error_ratio"]["value"] == 0 and s["gates"]["error_ratio"]["passed"]
    assert s["gates"]["error_ratio.70001"]["value"] == 0 and s["gates"]["error_ratio.-1"]["value"] == 0
    assert s["exit_code"] == 0 and s["verdict"] == "PASS" and s["reasons"] == []


def test_stale_sig_accepted_fails_error_ratio_and_the_check(tmp_path):
    run = make_stale_run(tmp_path, accepted=True)
    checks = run_checks(run, enabled=["expected_rejections"])
    s = build_summary(run, meta={}, checks=checks, gates_cfg=STRICT)
    login = s["ops"]["login"]
    assert (login["ok"], login["fail"], login["expected"]) == (1, 1, 1)
    assert s["gates"]["error_ratio"]["value"] == 1 / 4 and not s["gates"]["error_ratio"]["passed"]
    assert s["checks"]["expected_rejections"]["violations"] == 1
    assert s["exit_code"] == 4 and s["verdict"] == "FAIL"
    assert "check expected_rejections found 1 violation(s) (allowed 0)" in s["reasons"]
    assert any(r.startswith("gate error_ratio failed: 0.25, expected at most 0") for r in s["reasons"])


def test_events_are_kind_event_without_latency_and_out_of_request_totals(tmp_path):
    run = make_stale_run(tmp_path)
    s = build_summary(run, meta={"duration_s": 2.0}, checks={}, gates_cfg=STRICT)
    kinds = {op: e["kind"] for op, e in s["ops"].items()}
    assert kinds == {"login": "request", "connect": "request", "kicked_offline": "event", "disconnect": "event"}
    for op in ("kicked_offline", "disconnect"):
        e = s["ops"][op]
        assert all(e[k] is None for k in ("p50_ms", "p99_ms", "max_ms", "svc_p50_ms", "svc_p99_ms"))
        assert e["rate_per_s"] == 0.5
    assert s["events"] == {"kicked_offline": {"count": 1, "rate_per_s": 0.5},
                           "disconnect": {"count": 1, "rate_per_s": 0.5}}
    # error ratio over the 4 requests only (the disconnect's info -1 is not one)
    assert s["gates"]["error_ratio"]["value"] == 0


def test_service_time_percentiles_beside_latency(tmp_path):
    run = make_run(tmp_path)
    rows = (run / "journal" / "w1.jsonl").read_text().splitlines()
    r = json.loads(rows[1])
    r["intended"] = r["start"] - 500 * NS // 1000   # queued 500 ms before it started
    rows[1] = json.dumps(r)
    (run / "journal" / "w1.jsonl").write_text("\n".join(rows) + "\n")
    s = build_summary(run, meta={}, checks={}, gates_cfg={})
    login = s["ops"]["login"]
    assert math.isclose(login["svc_p99_ms"], 200.0, rel_tol=1e-6)   # end - start of the slowest
    assert math.isclose(login["p99_ms"], 700.0, rel_tol=1e-6)       # end - intended
    assert math.isclose(login["svc_p50_ms"], 100.0, rel_tol=1e-6)


def test_summary_carries_load_versions_host_and_target_kind(tmp_path):
    import subprocess
    from types import SimpleNamespace

    run = make_run(tmp_path)
    opts = SimpleNamespace(num_users=50, spawn_rate=10.0, run_time=30, processes=None)
    cfg = {"scenarios": {"mass_login": {"weight": 3, "arrival_rate": 0}, "kick_race": {"weight": 1}}}
    load = load_settings(opts, cfg, ["mass_login", "kick_race"], argv=["locust", "-u", "50"])
    assert load == {"users": 50, "spawn_rate": 10.0, "run_time_s": 30, "processes": None,
                    "scenarios": {"mass_login": 3, "kick_race": 1}, "arrival_rate": 0,
                    "argv": ["locust", "-u", "50"]}
    s = build_summary(run, meta={"load": load, "host": "ws://127.0.0.1:9/ws"}, checks={}, gates_cfg={})
    assert s["load"] == load and s["host"] == "ws://127.0.0.1:9/ws" and s["target_kind"] == "embedded"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parents[2], capture_output=True,
                          text=True).stdout.strip() or None
    assert s["versions"]["harness"] == head
    assert s["versions"]["python"].count(".") == 2 and s["versions"]["locust"]
    ext = build_summary(run, meta={"target": "ws://10.0.0.1:9000"}, checks={}, gates_cfg={})
    assert ext["target_kind"] == "external"


def test_verdict_names_unreachable_target_and_write_refreshes_it(tmp_path):
    run = make_run(tmp_path)
    s = build_summary(run, meta={"target_error": True}, checks={}, gates_cfg={})
    assert s["verdict"] == "FAIL" and any("could not be reached" in r for r in s["reasons"])
    s = build_summary(run, meta={}, checks={}, gates_cfg={})
    assert s["verdict"] == "PASS"
    s["exit_code"] = 3   # e.g. a worker went away after build_summary
    s["gates"]["workers.missing"] = {"limit": 0, "value": 1, "passed": False}
    back = json.loads(write_summary(run, s).read_text())
    assert back["verdict"] == "FAIL" and back["reasons"] == ["gate workers.missing failed: 1, expected at most 0"]


def test_junit_passing_cases_carry_value_and_limit_and_the_suite_its_time(tmp_path):
    run = make_run(tmp_path, drop_kick=True)
    checks = run_checks(run)
    s = build_summary(run, meta={"started": "2025-01-01T00:00:00.000+00:00", "duration_s": 12.5}, checks=checks,
                      gates_cfg=GATES)
    write_summary(run, s)
    root = ET.parse(write_junit(run, checks, s["gates"])).getroot()   # suite time from summary.json
    suite = root.find("testsuite")
    assert suite.get("timestamp") == "2025-01-01T00:00:00.000+00:00" and suite.get("time") == "12.500"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    lat = cases["latency.login.p99_ms"]
    props = {p.get("name"): p.get("value") for p in lat.find("properties")}
    assert lat.find("failure") is None
    assert float(props["value"]) == s["gates"]["latency.login.p99_ms"]["value"] and props["limit"] == "2000"
    assert "limit <= 2000" in lat.find("system-out").text and "value " in lat.find("system-out").text
    ok_check = cases["policy_limit"]
    assert {p.get("name"): p.get("value") for p in ok_check.find("properties")} == {"value": "0", "limit": "0"}
    assert "value 0, limit 0" in ok_check.find("system-out").text
    bad = cases["kick_exactly_once"]
    assert {p.get("name"): p.get("value") for p in bad.find("properties")}["value"] == "1"


def test_load_argv_never_carries_the_secret_key():
    from harness.results.summary import masked_argv

    argv = ["locust", "--set", "target.secret_key=s3cr3t", "--secret-key", "s3cr3t", "--secret-key=s3cr3t",
            "-u", "5", "--set", "target.policy=dual_platform"]
    got = load_settings(None, {}, ["mass_login"], argv=argv)["argv"]
    assert "s3cr3t" not in " ".join(got)
    assert got == ["locust", "--set", "target.secret_key=***", "--secret-key", "***", "--secret-key=***",
                   "-u", "5", "--set", "target.policy=dual_platform"]
    assert masked_argv(["a", "b"]) == ["a", "b"]
