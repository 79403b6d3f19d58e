"""Compare two runs: per-op side-by-side numbers and gates that flipped, what changed from
base to run, load differences, and regression thresholds (``--fail-on``) for a CI step. Pure
functions of DataFrames / summary.json dicts."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.results.report.aggregate import gates_table, ordered_ops

__all__ = ["COMPARE_METRICS", "compare_ops", "gate_flips", "Threshold", "FailOnError", "parse_fail_on",
           "metric_value", "changes", "load_differences", "regressions", "regression_exit_code",
           "format_changes", "EXIT_PERF_REGRESSION", "EXIT_NEW_VIOLATIONS"]

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


# --------------------------------------------------------------------------- regressions (a CI step)

from harness.results.thresholds import (EXIT_NEW_VIOLATIONS, EXIT_PERF_REGRESSION, PCT as _PCT,  # noqa: E402
                                        FailOnError, Threshold, parse_fail_on)


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _requests(summary: Mapping[str, Any]) -> dict[str, Mapping]:
    from harness.results.journal import op_kind

    ops = summary.get("ops") if isinstance(summary.get("ops"), Mapping) else {}
    return {str(op): r for op, r in ops.items() if isinstance(r, Mapping)
            and r.get("kind", op_kind(str(op))) == "request"}


def error_ratio(summary: Mapping[str, Any], op: str | None = None) -> float | None:
    """(fail + info) / count over the requests (one op, or all); None without requests."""
    reqs = _requests(summary)
    rows = [reqs[op]] if op is not None and op in reqs else ([] if op is not None else list(reqs.values()))
    total = sum(int(r.get("count") or 0) for r in rows)
    bad = sum(int(r.get("fail") or 0) + int(r.get("info") or 0) for r in rows)
    return bad / total if total else None


def violations(summary: Mapping[str, Any], check: str | None = None) -> int | None:
    """Violations of one check, or of all; None when the summary has no checks (or not that one)."""
    checks = summary.get("checks")
    if not isinstance(checks, Mapping) or not checks:
        return None
    if check is not None:
        res = checks.get(check)
        return int(res.get("violations") or 0) if isinstance(res, Mapping) else None
    return sum(int(r.get("violations") or 0) for r in checks.values() if isinstance(r, Mapping))


def metric_value(summary: Mapping[str, Any], metric: str) -> float | None:
    """The value of a :class:`Threshold` metric in one run's summary.json dict."""
    parts = metric.split(".")
    if parts[0] == "latency":
        row = _requests(summary).get(parts[1])
        return _num(row.get(_PCT[parts[2]])) if row is not None else None
    if parts[0] == "error_ratio":
        return error_ratio(summary, parts[1] if len(parts) > 1 else None)
    v = violations(summary, parts[1] if len(parts) > 1 else None)
    return None if v is None else float(v)


def _pct(base: float | None, this: float | None) -> float | None:
    if base is None or this is None or base == 0:
        return None
    return (this - base) / base * 100.0


def changes(base: Mapping[str, Any], this: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What changed, base -> run: per request op p50/p99 latency (ms) and error ratio, then the
    violations per check and in all. Each ``{"metric", "base", "this", "delta", "delta_pct"}``
    (None where a side lacks the value)."""
    out: list[dict[str, Any]] = []
    b_ops, t_ops = _requests(base), _requests(this)
    for op in ordered_ops(set(b_ops) | set(t_ops)):
        for metric in (f"latency.{op}.p50", f"latency.{op}.p99", f"error_ratio.{op}"):
            out.append(_change(metric, metric_value(base, metric), metric_value(this, metric)))
    out.append(_change("error_ratio", metric_value(base, "error_ratio"), metric_value(this, "error_ratio")))
    names = [str(n) for n in (this.get("checks") or base.get("checks") or {})]
    for name in names:
        out.append(_change(f"violations.{name}", metric_value(base, f"violations.{name}"),
                           metric_value(this, f"violations.{name}")))
    out.append(_change("violations", metric_value(base, "violations"), metric_value(this, "violations")))
    return out


def _change(metric: str, b: float | None, t: float | None) -> dict[str, Any]:
    return {"metric": metric, "base": b, "this": t,
            "delta": None if b is None or t is None else t - b, "delta_pct": _pct(b, t)}


def load_differences(base: Mapping[str, Any], this: Mapping[str, Any]) -> list[str]:
    """Sentences naming what differs in the load the two runs were given (summary.json ``load``
    and ``scenarios``): a comparison of different loads compares different things."""
    out: list[str] = []
    bl = base.get("load") if isinstance(base.get("load"), Mapping) else None
    tl = this.get("load") if isinstance(this.get("load"), Mapping) else None
    if bl is None or tl is None:
        which = " and ".join(n for n, v in (("base", bl), ("this run", tl)) if v is None)
        out.append(f"the load settings of {which} are unknown (no 'load' in summary.json): "
                   "the runs may have had different loads")
    else:
        for key in ("users", "spawn_rate", "run_time_s", "processes", "arrival_rate", "scenarios"):
            if bl.get(key) != tl.get(key):
                out.append(f"different load: {key} {bl.get(key)!r} (base) vs {tl.get(key)!r} (this run)")
    bs, ts = base.get("scenarios"), this.get("scenarios")
    if bs is not None and ts is not None and sorted(map(str, bs)) != sorted(map(str, ts)):
        out.append(f"different scenarios: {', '.join(map(str, bs))} (base) vs {', '.join(map(str, ts))} (this run)")
    for key in ("policy", "target"):
        if base.get(key) is not None and this.get(key) is not None and base.get(key) != this.get(key):
            out.append(f"different {key}: {base.get(key)!r} (base) vs {this.get(key)!r} (this run)")
    return out


@dataclass(frozen=True)
class Regression:
    threshold: Threshold
    base: float | None
    this: float | None
    reason: str

    @property
    def kind(self) -> str:
        return self.threshold.kind


def regressions(thresholds: Sequence[Threshold], base: Mapping[str, Any], this: Mapping[str, Any]
                ) -> list[Regression]:
    """The thresholds this run broke. A metric that cannot be measured in this run while the
    base has it is a regression too (an op or check that disappeared cannot be called fine);
    missing in the base only: nothing to compare, not a regression."""
    out: list[Regression] = []
    for th in thresholds:
        b, t = metric_value(base, th.metric), metric_value(this, th.metric)
        if b is None:
            continue
        if t is None:
            out.append(Regression(th, b, t, f"{th.metric}: {_f(b)} in base, not measured in this run ({th.spec})"))
            continue
        limit = b * (1 + th.allowed) if th.relative else b + th.allowed
        if t > limit + 1e-12:
            rel = f", {_pct(b, t):+.1f}%" if _pct(b, t) is not None else ""
            out.append(Regression(th, b, t, f"{th.metric}: {_f(b)} -> {_f(t)}{rel}, allowed up to {_f(limit)} "
                                            f"({th.spec})"))
    return out


def regression_exit_code(found: Sequence[Regression]) -> int:
    """4 when violations grew beyond their threshold (beats 3), 3 for any other regression, else 0."""
    if any(r.kind == "violations" for r in found):
        return EXIT_NEW_VIOLATIONS
    return EXIT_PERF_REGRESSION if found else 0


def _f(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4g}"


def format_changes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The :func:`changes` rows as aligned text lines (``metric  base -> this  (delta %)``)."""
    lines = []
    width = max((len(str(r["metric"])) for r in rows), default=10)
    for r in rows:
        pct = r.get("delta_pct")
        tail = f"  ({pct:+.1f}%)" if pct is not None else ("  (+{:.4g})".format(r["delta"])
                                                          if r.get("delta") not in (None, 0) else "")
        lines.append(f"{str(r['metric']).ljust(width)}  {_f(r['base'])} -> {_f(r['this'])}{tail}")
    return lines
