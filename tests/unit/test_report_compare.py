"""harness.results.report.compare: side-by-side per-op numbers and gates that flipped."""
from __future__ import annotations

import math

import pandas as pd

from harness.results.report.compare import compare_ops, gate_flips


def _ops(rows):
    df = pd.DataFrame(rows).set_index("op")
    for c in ("rate_per_s", "p95_ms", "max_ms"):
        df[c] = df.get(c, 1.0)
    return df


def test_compare_ops_change_pct():
    base = _ops([{"op": "login", "count": 100, "ok": 90, "fail": 10, "info": 0, "p50_ms": 10.0, "p99_ms": 100.0},
                 {"op": "logout", "count": 10, "ok": 10, "fail": 0, "info": 0, "p50_ms": 2.0, "p99_ms": 4.0}])
    this = _ops([{"op": "login", "count": 150, "ok": 147, "fail": 0, "info": 3, "p50_ms": 15.0, "p99_ms": 50.0},
                 {"op": "connect", "count": 5, "ok": 5, "fail": 0, "info": 0, "p50_ms": 1.0, "p99_ms": 1.0}])
    t = compare_ops(base, this)
    assert list(t.index) == ["connect", "login", "logout"]
    login = t.loc["login"]
    assert (login["count_base"], login["count_this"], login["count_change_pct"]) == (100, 150, 50.0)
    assert login["p50_ms_change_pct"] == 50.0 and login["p99_ms_change_pct"] == -50.0
    assert (login["error_pct_base"], login["error_pct_this"]) == (10.0, 2.0)
    assert login["error_pct_change_pct"] == -80.0
    assert math.isnan(t.loc["connect", "p50_ms_base"]) and math.isnan(t.loc["connect", "p50_ms_change_pct"])
    assert math.isnan(t.loc["logout", "count_this"])


def test_gate_flips():
    base = {"gates": {"a": {"limit": 1, "value": 0.5, "passed": True},
                      "b": {"limit": 1, "value": 2, "passed": False},
                      "c": {"limit": 1, "value": 0, "passed": True},
                      "old": {"limit": 1, "value": 0, "passed": True}}}
    this = {"gates": {"a": {"limit": 1, "value": 3, "passed": False},
                      "b": {"limit": 1, "value": 0.1, "passed": True},
                      "c": {"limit": 1, "value": 0, "passed": True},
                      "new": {"limit": 1, "value": 0, "passed": False}}}
    f = gate_flips(base, this).set_index("gate")
    assert f.loc["a", "change"] == "pass -> fail" and (f.loc["a", "base"], f.loc["a", "this"]) == ("pass", "fail")
    assert f.loc["b", "change"] == "fail -> pass"
    assert f.loc["c", "change"] == "unchanged"
    assert f.loc["new", "change"] == "new" and f.loc["new", "base"] == "-"
    assert f.loc["old", "change"] == "gone"
    assert list(gate_flips(base, this)["gate"][:2]) == ["a", "b"]  # flips first
    assert gate_flips({}, {}).empty
