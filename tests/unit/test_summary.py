"""summary.json (RESULTS.md §2) and junit.xml built from a small run folder."""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.results.checks import CHECK_NAMES, run_checks
from harness.results.junit import write_junit
from harness.results.summary import SUMMARY_KEYS, build_summary, write_summary

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
    assert list(s) == list(SUMMARY_KEYS)
    assert s["run_id"] == run.name and s["policy"] == "single_platform" and s["target"] == "embedded"
    assert s["users_peak"] == 2 and s["duration_s"] > 0 and s["started"] < s["finished"]
    assert set(s["checks"]) == set(CHECK_NAMES)
    assert all(c == {"violations": 0, "examples": []} for c in s["checks"].values())
    login = s["ops"]["login"]
    assert (login["count"], login["ok"], login["fail"], login["info"]) == (3, 2, 1, 0)
    assert set(login) == {"count", "ok", "fail", "info", "rate_per_s", "p50_ms", "p90_ms", "p95_ms",
                          "p99_ms", "p999_ms", "max_ms"}
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
