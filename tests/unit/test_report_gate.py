"""python -m harness.report RUN --compare BASE as a CI step: what changed, load warnings,
--fail-on thresholds -> exit 3 / 4, and nothing written for a folder that is not a run."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from harness.results.report.__main__ import main
from harness.results.report.compare import FailOnError, parse_fail_on, regressions
from tests.unit.test_report_data import row, write_run

LOAD = {"users": 100, "spawn_rate": 10, "run_time_s": 60, "processes": None, "scenarios": {"mass_login": 1},
        "arrival_rate": 0, "argv": ["locust"]}


def summary(p99: float, *, fail: int = 0, violations: int = 0, load: dict | None = None,
            scenarios: tuple = ("mass_login",)) -> dict:
    return {"run_id": "r", "exit_code": 0, "scenarios": list(scenarios), "load": load or LOAD,
            "ops": {"login": {"count": 100, "ok": 100 - fail, "fail": fail, "info": 0, "expected": 0,
                              "kind": "request", "p50_ms": p99 / 2, "p99_ms": p99},
                    "disconnect": {"count": 50, "ok": 0, "fail": 0, "info": 50, "kind": "event",
                                   "p50_ms": None, "p99_ms": None}},
            "checks": {"policy_limit": {"violations": violations, "examples": []},
                       "kick_exactly_once": {"violations": 0, "examples": []}},
            "gates": {}}


def make(root: Path, s: dict, config: str | None = None) -> Path:
    write_run(root, [row("login", 10 + i, latency_ms=1 + i) for i in range(5)], summary=s, config=config)
    return root


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_compare_prints_changes_and_passes_within_thresholds(tmp_path, capsys):
    base = make(tmp_path / "base", summary(100.0))
    run = make(tmp_path / "run", summary(105.0))
    code = main([str(run), "--compare", str(base), "--no-charts", "--fail-on", "latency.login.p99:+10%",
                 "--fail-on", "error_ratio:+0.01", "--fail-on", "violations:0"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "latency.login.p99" in out and "100 -> 105  (+5.0%)" in out
    assert "latency.login.p50" in out and "50 -> 52.5" in out
    assert "error_ratio.login" in out and "violations.policy_limit" in out
    assert "disconnect" not in out          # events are not compared as requests
    assert out.strip().splitlines()[-1] == str(run / "report.html")
    assert "warning" not in err and "regression" not in err


def test_latency_regression_exits_3(tmp_path, capsys):
    base = make(tmp_path / "base", summary(100.0))
    run = make(tmp_path / "run", summary(111.0))
    code = main([str(run), "--compare", str(base), "--no-charts", "--fail-on", "latency.login.p99:+10%"])
    err = capsys.readouterr().err
    assert code == 3
    assert "regression: latency.login.p99: 100 -> 111, +11.0%, allowed up to 110" in err


def test_error_ratio_regression_is_absolute_and_exits_3(tmp_path, capsys):
    base = make(tmp_path / "base", summary(100.0, fail=1))
    run = make(tmp_path / "run", summary(100.0, fail=3))       # 0.01 -> 0.03
    assert main([str(run), "--compare", str(base), "--no-charts", "--fail-on", "error_ratio:+0.01"]) == 3
    assert "error_ratio: 0.01 -> 0.03" in capsys.readouterr().err
    assert main([str(run), "--compare", str(base), "--no-charts", "--fail-on", "error_ratio:+0.05"]) == 0


def test_new_violations_exit_4_and_beat_a_perf_regression(tmp_path, capsys):
    base = make(tmp_path / "base", summary(100.0))
    run = make(tmp_path / "run", summary(200.0, violations=2))
    code = main([str(run), "--compare", str(base), "--no-charts", "--fail-on", "latency.login.p99:+10%",
                 "--fail-on", "violations:0"])
    err = capsys.readouterr().err
    assert code == 4 and "regression: violations: 0 -> 2" in err and "latency.login.p99" in err


def test_thresholds_from_the_run_config(tmp_path, capsys):
    base = make(tmp_path / "base", summary(100.0))
    run = make(tmp_path / "run", summary(150.0), config="report:\n  compare:\n    fail_on: ['latency.login.p99:+20%']\n")
    assert main([str(run), "--compare", str(base), "--no-charts"]) == 3
    assert "(latency.login.p99:+20%)" in capsys.readouterr().err


def test_warns_when_load_or_scenarios_differ(tmp_path, capsys):
    base = make(tmp_path / "base", summary(100.0))
    run = make(tmp_path / "run", summary(100.0, load={**LOAD, "users": 500}, scenarios=("mass_login", "kick_race")))
    assert main([str(run), "--compare", str(base), "--no-charts"]) == 0
    err = capsys.readouterr().err
    assert "warning: different load: users 100 (base) vs 500 (this run)" in err
    assert "warning: different scenarios: mass_login (base) vs mass_login, kick_race (this run)" in err


@pytest.mark.parametrize("spec", ["latency.login:+10%", "bogus:1", "error_ratio:+1%", "violations:-1",
                                  "latency.login.p99:fast", "latency.login.p42:+1%", "error_ratio"])
def test_a_bad_threshold_exits_2_and_writes_nothing(tmp_path, capsys, spec):
    base = make(tmp_path / "base", summary(100.0))
    run = make(tmp_path / "run", summary(100.0))
    before = files(tmp_path)
    assert main([str(run), "--compare", str(base), "--no-charts", "--fail-on", spec]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and spec.split(":")[0] in err and "Traceback" not in err
    assert files(tmp_path) == before


def test_a_folder_that_is_not_a_run_exits_2_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.txt").write_text("hello")
    run = make(tmp_path / "run", summary(100.0))
    before = files(tmp_path)
    assert main([str(tmp_path / "notes"), "--no-charts"]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    assert main([str(run), "--compare", str(tmp_path / "notes"), "--no-charts"]) == 2   # nothing in run either
    assert main([str(tmp_path), "--no-charts"]) == 2   # the results folder itself
    assert files(tmp_path) == before


def test_result_files_are_0644(tmp_path):
    old = os.umask(0o022)
    try:
        run = make(tmp_path / "run", summary(100.0))
        assert main([str(run), "--no-charts"]) == 0
        from harness.results.summary import write_summary

        write_summary(run, {"exit_code": 0})
    finally:
        os.umask(old)
    for name in ("report.html", "summary.json", "tables/ops.csv"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o644, name


def test_a_metric_gone_from_the_run_is_a_regression():
    gone = summary(100.0)
    del gone["ops"]["login"]
    found = regressions([parse_fail_on("latency.login.p99:+10%")], summary(100.0), gone)
    assert len(found) == 1 and "not measured in this run" in found[0].reason
    assert regressions([parse_fail_on("latency.login.p99:+10%")], gone, summary(100.0)) == []
    with pytest.raises(FailOnError):
        parse_fail_on("latency.login.p99")
