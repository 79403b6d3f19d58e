"""SLO gates, exit-code precedence (RESULTS.md §3) and the failure lines a user reads."""
from __future__ import annotations

import pytest

from harness.results.checks import CheckResult
from harness.errors import ConfigError
from harness.results.gates import SCHEDULE_LAG_KEY, evaluate_gates, exit_code, failure_lines


def op(count: int, *, fail: int = 0, info: int = 0, p99: float | None = 100.0, rate: float = 50.0) -> dict:
    return {"count": count, "ok": count - fail - info, "fail": fail, "info": info, "rate_per_s": rate,
            "p50_ms": 10.0, "p90_ms": 50.0, "p95_ms": 70.0, "p99_ms": p99, "p999_ms": 300.0, "max_ms": 400.0}


def summary(**over: object) -> dict:
    s = {"ops": {"login": op(100, fail=2, p99=1500.0), "heartbeat": op(900)},
         "codes": {"0": 998, "70001": 2},
         "checks": {"kick_exactly_once": {"violations": 0, "examples": []},
                    "policy_limit": {"violations": 0, "examples": []}}}
    s.update(over)
    return s


def test_latency_gate_pass_and_fail():
    g = evaluate_gates({"latency_ms": {"login": {"p99": 2000, "p50": 5}}}, summary())
    assert g["latency.login.p99_ms"] == {"limit": 2000, "value": 1500.0, "passed": True}
    assert g["latency.login.p50_ms"]["passed"] is False and g["latency.login.p50_ms"]["value"] == 10.0


def test_gate_on_an_op_that_did_not_happen_fails_and_says_so():
    g = evaluate_gates({"latency_ms": {"relogin": {"p99": 2000}}, "min_rate_per_s": {"switch": 1}}, summary())
    lat = g["latency.relogin.p99_ms"]
    assert lat["value"] is None and lat["passed"] is False and "no relogin operations" in lat["note"]
    assert g["min_rate.switch"]["value"] is None and g["min_rate.switch"]["passed"] is False
    lines = failure_lines({}, g)
    assert any("latency.relogin.p99_ms" in ln and "no relogin operations" in ln for ln in lines)


def test_error_ratio_overall_and_per_code():
    g = evaluate_gates({"error_ratio": {"overall": 0.001, "per_code": {"70001": 0.01, 70050: 0.0}}}, summary())
    assert g["error_ratio"]["value"] == pytest.approx(2 / 1000) and g["error_ratio"]["passed"] is False
    assert g["error_ratio.70001"] == {"limit": 0.01, "value": pytest.approx(0.002), "passed": True}
    assert g["error_ratio.70050"]["value"] == 0.0 and g["error_ratio.70050"]["passed"] is True


def test_min_rate_and_schedule_lag():
    s = summary()
    s[SCHEDULE_LAG_KEY] = 12.5
    g = evaluate_gates({"min_rate_per_s": {"login": 60}, "max_schedule_lag_ms": 10}, s)
    assert g["min_rate.login"] == {"limit": 60, "value": 50.0, "passed": False}
    assert g["schedule_lag.p99_ms"] == {"limit": 10, "value": 12.5, "passed": False}
    assert "schedule_lag.p99_ms" not in evaluate_gates({"max_schedule_lag_ms": 0}, s)  # 0 = off


def test_violation_gates_per_check():
    s = summary(checks={"kick_exactly_once": {"violations": 3, "examples": [{"kind": "missing"}]},
                        "policy_limit": {"violations": 0, "examples": []}})
    g = evaluate_gates({"violations": 0}, s)
    assert g["check.kick_exactly_once"] == {"limit": 0, "value": 3, "passed": False}
    assert g["check.policy_limit"]["passed"] is True
    assert evaluate_gates({"violations": 5}, s)["check.kick_exactly_once"]["passed"] is True


def test_bad_gate_config_names_the_key():
    with pytest.raises(ConfigError, match=r"gates\.latency_ms\.login\.p42"):
        evaluate_gates({"latency_ms": {"login": {"p42": 10}}}, summary())
    with pytest.raises(ConfigError, match=r"gates\.error_ratio\.overall"):
        evaluate_gates({"error_ratio": {"overall": "lots"}}, summary())


def test_exit_code_precedence():
    clean = {"kick_exactly_once": CheckResult("kick_exactly_once", 0)}
    dirty = {"kick_exactly_once": CheckResult("kick_exactly_once", 2, [{"kind": "missing", "user": "u1"}])}
    gate_ok = {"latency.login.p99_ms": {"limit": 1, "value": 0.5, "passed": True}}
    gate_bad = {"latency.login.p99_ms": {"limit": 1, "value": 5, "passed": False}}
    assert exit_code(clean, gate_ok) == 0
    assert exit_code(clean, gate_bad) == 3
    assert exit_code(dirty, gate_ok) == 4
    assert exit_code(dirty, gate_bad) == 4  # a violation beats a failed gate
    assert exit_code(dirty, gate_bad, target_error=True) == 5
    assert exit_code(clean, gate_ok, config_error=True) == 2
    # violations within the allowed number are not a failure
    allowed = {"check.kick_exactly_once": {"limit": 5, "value": 2, "passed": True}}
    assert exit_code(dirty, allowed) == 0
    # summary-shaped checks work too
    assert exit_code({"policy_limit": {"violations": 1, "examples": []}}, {}) == 4


def test_failure_lines_one_per_failure():
    checks = {"kick_exactly_once": CheckResult("kick_exactly_once", 2, [
        {"kind": "missing", "user": "u1", "session": "S1", "found": "never arrived within settle"}]),
        "policy_limit": CheckResult("policy_limit", 0)}
    gates = {"latency.login.p99_ms": {"limit": 2000, "value": 2500.0, "passed": False},
             "error_ratio": {"limit": 0.05, "value": 0.01, "passed": True}}
    lines = failure_lines(checks, gates)
    assert len(lines) == 2
    assert lines[0].startswith("check kick_exactly_once: 2 violation(s)") and "S1" in lines[0]
    assert "never arrived within settle" in lines[0]
    assert lines[1] == "gate latency.login.p99_ms failed: 2500, expected <= 2000"


def test_injected_fault_rows_do_not_count_as_errors():
    from harness.results.gates import evaluate_gates

    summary = {"ops": {"login": {"count": 100, "ok": 99, "fail": 1, "info": 0},
                       "fault": {"count": 3, "ok": 0, "fail": 0, "info": 3}}, "checks": {}}
    gates = evaluate_gates({"error_ratio": {"overall": 0.02}}, summary)
    assert gates["error_ratio"]["value"] == 0.01
    assert gates["error_ratio"]["passed"] is True
