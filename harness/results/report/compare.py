"""Compare two runs: per-op side-by-side numbers and gates that flipped (pure functions)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from harness.results.report.aggregate import gates_table, ordered_ops

__all__ = ["COMPARE_METRICS", "compare_ops", "gate_flips"]

#: Metrics of the side-by-side table; ``error_pct`` = (fail + info) / count * 100.
COMPARE_METRICS: tuple[str, ...] = (
    "count", "rate_per_s", "error_pct", "p50_ms", "p95_ms", "p99_ms", "max_ms",
)


def _with_error_pct(ops: pd.DataFrame) -> pd.DataFrame:
    out = ops.copy()
    if out.empty:
        out["error_pct"] = pd.Series([], dtype="float64")
        return out
    count = out["count"].to_numpy("float64")
    bad = out["fail"].to_numpy("float64") + out["info"].to_numpy("float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        out["error_pct"] = np.where(count > 0, bad / count * 100.0, np.nan)
    return out


def compare_ops(base_ops: pd.DataFrame, this_ops: pd.DataFrame) -> pd.DataFrame:
    """Side-by-side per-op table of two :func:`aggregate.op_summary` frames.

    Index ``op`` (union of both runs, display order). For each metric M of
    :data:`COMPARE_METRICS`: ``M_base``, ``M_this`` and ``M_change_pct`` = (this - base) /
    base * 100 (NaN when base is 0 or missing; an op missing from one run has NaN there).
    """
    base = _with_error_pct(base_ops)
    this = _with_error_pct(this_ops)
    ops = ordered_ops([str(o) for o in base.index] + [str(o) for o in this.index])
    cols: dict[str, np.ndarray] = {}
    for m in COMPARE_METRICS:
        b = base[m].reindex(ops).to_numpy("float64") if m in base else np.full(len(ops), np.nan)
        t = this[m].reindex(ops).to_numpy("float64") if m in this else np.full(len(ops), np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            change = np.where((b != 0) & np.isfinite(b) & np.isfinite(t), (t - b) / b * 100.0,
                              np.nan)
        cols[f"{m}_base"] = b
        cols[f"{m}_this"] = t
        cols[f"{m}_change_pct"] = change
    return pd.DataFrame(cols, index=pd.Index(ops, name="op", dtype="str"))


def _passed(value: Any) -> str:
    if value is True:
        return "pass"
    if value is False:
        return "fail"
    return "n/a"


def gate_flips(base_summary: Mapping[str, Any], this_summary: Mapping[str, Any]) -> pd.DataFrame:
    """Gates of both runs side by side.

    Columns ``gate``, ``base`` / ``this`` (``"pass"``, ``"fail"``, ``"n/a"``; ``"-"`` when the
    gate is absent from that run), ``base_value``, ``this_value`` and ``change``:
    ``"pass -> fail"``, ``"fail -> pass"``, ``"unchanged"``, ``"new"`` (only in this run)
    or ``"gone"`` (only in base). Flipped gates come first.
    """
    b = gates_table(base_summary).set_index("gate")
    t = gates_table(this_summary).set_index("gate")
    recs = []
    for gate in sorted(set(b.index) | set(t.index)):
        in_b, in_t = gate in b.index, gate in t.index
        bp = _passed(b.at[gate, "passed"]) if in_b else "-"
        tp = _passed(t.at[gate, "passed"]) if in_t else "-"
        if not in_b:
            change = "new"
        elif not in_t:
            change = "gone"
        elif bp == "pass" and tp == "fail":
            change = "pass -> fail"
        elif bp == "fail" and tp == "pass":
            change = "fail -> pass"
        else:
            change = "unchanged"
        recs.append({"gate": gate, "base": bp, "this": tp,
                     "base_value": b.at[gate, "value"] if in_b else None,
                     "this_value": t.at[gate, "value"] if in_t else None,
                     "change": change})
    cols = ["gate", "base", "this", "base_value", "this_value", "change"]
    if not recs:
        return pd.DataFrame({c: pd.Series([], dtype="object") for c in cols})
    out = pd.DataFrame(recs, columns=cols).astype("object")
    flipped = out["change"].isin(["pass -> fail", "fail -> pass"])
    return pd.concat([out[flipped], out[~flipped]], ignore_index=True)
