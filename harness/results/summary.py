"""summary.json of a run (RESULTS.md §2): totals, per-op percentiles, codes, checks, gates,
exit code. :func:`build_summary` computes (writes nothing); :func:`write_summary` writes
atomically. Per-op numbers come from the report's aggregation (harness.results.report.aggregate),
so the summary and the report always agree.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.results.gates import SCHEDULE_LAG_KEY, evaluate_gates, exit_code
from harness.util import atomic_write

__all__ = ["SUMMARY_KEYS", "OP_KEYS", "build_summary", "write_summary", "json_safe"]

#: Top-level keys of summary.json, in order (RESULTS.md §2).
SUMMARY_KEYS: tuple[str, ...] = ("run_id", "started", "finished", "duration_s", "target", "policy",
                                 "users_peak", "ops", "codes", "checks", "gates", "exit_code")
#: Keys of each ``ops`` entry.
OP_KEYS: tuple[str, ...] = ("count", "ok", "fail", "info", "rate_per_s", "p50_ms", "p90_ms", "p95_ms",
                            "p99_ms", "p999_ms", "max_ms")
_INT_OP_KEYS = frozenset({"count", "ok", "fail", "info"})


def json_safe(value: Any) -> Any:
    """A deep copy of ``value`` that ``json.dumps(allow_nan=False)`` accepts: NaN/inf -> None,
    numpy scalars -> Python numbers, tuples/sets -> lists, other objects -> str."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalar
    if callable(item):
        try:
            return json_safe(item())
        except (TypeError, ValueError):
            pass
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat(timespec="milliseconds")


def _config(run_dir: Path) -> dict:
    from harness.results.report.load import load_config

    return load_config(run_dir)


def _check_dict(res: Any) -> dict[str, Any]:
    if hasattr(res, "to_dict"):
        return res.to_dict()
    if isinstance(res, Mapping):
        return {"violations": int(res.get("violations") or 0), "examples": list(res.get("examples") or [])}
    return {"violations": int(res or 0), "examples": []}


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def build_summary(run_dir: str | Path, *, meta: Mapping, checks: Mapping[str, Any], gates_cfg: Mapping,
                  extra: Mapping | None = None) -> dict:
    """The summary.json dict of a run folder (nothing is written).

    ``meta`` (all optional): ``run_id`` (default: folder name), ``started`` / ``finished``
    (default: first / last journal time, ISO 8601 UTC), ``duration_s`` (default: finished -
    started when both are numbers, else the journal span, s), ``target`` (default:
    ``embedded`` or config ``target.host``), ``policy`` (default: config
    ``target.policy``), ``users_peak`` (default: Locust's stats history), and the booleans
    ``config_error`` / ``target_error`` that force exit code 2 / 5.
    ``checks``: name -> CheckResult (or ``{"violations", "examples"}``) for every enabled
    check; ``gates_cfg``: config ``gates:``. ``extra`` entries are merged in last (new keys
    extend the summary; contract keys given there override the computed value).
    """
    import numpy as np

    from harness.results.report.aggregate import code_counts, journal_span_s, op_summary
    from harness.results.report.load import load_journal, load_users_history

    root = Path(run_dir)
    meta = meta or {}
    cfg = _config(root)
    df = load_journal(root, columns=["op", "outcome", "code"])
    first = last = None
    if len(df):
        first = int(min(df["intended"].min(), df["start"].min()))
        last = int(df["end"].max())
    started = meta.get("started") or (_iso(first) if first is not None else None)
    finished = meta.get("finished") or (_iso(last) if last is not None else None)
    duration = _num(meta.get("duration_s"))
    if duration is None and _num(meta.get("started")) is not None and _num(meta.get("finished")) is not None:
        duration = max(0.0, float(meta["finished"]) - float(meta["started"]))
    if duration is None:
        duration = journal_span_s(df)
    target_cfg = cfg.get("target") if isinstance(cfg.get("target"), Mapping) else {}
    target = meta.get("target") or (target_cfg.get("host") or "embedded")
    policy = meta.get("policy") or target_cfg.get("policy")
    users_peak = meta.get("users_peak")
    if users_peak is None:
        hist = load_users_history(root)
        users_peak = int(hist["users"].max()) if len(hist) else None

    table = op_summary(df, duration if duration > 0 else None)
    ops: dict[str, dict] = {}
    for op, row in table.iterrows():
        ops[str(op)] = {k: (int(row[k]) if k in _INT_OP_KEYS else json_safe(float(row[k]))) for k in OP_KEYS}
    for op, n in (meta.get("stopped") or {}).items():  # cut short by the harness's own stop
        if str(op) in ops and n:
            ops[str(op)]["stopped"] = int(n)
    codes = {str(int(r.code)): int(r.count) for r in code_counts(df).itertuples(index=False)}
    lag = None
    if len(df):
        lag_ns = df["start"].to_numpy(dtype="int64") - df["intended"].to_numpy(dtype="int64")
        lag = float(np.quantile(lag_ns, 0.99, method="inverted_cdf")) / 1e6
    del df

    check_dicts = {str(name): _check_dict(res) for name, res in checks.items()}
    summary: dict[str, Any] = {
        "run_id": meta.get("run_id") or root.resolve().name,
        "started": started,
        "finished": finished,
        "duration_s": duration,
        "target": target,
        "policy": policy,
        "users_peak": users_peak,
        "ops": ops,
        "codes": codes,
        "checks": check_dicts,
    }
    gates = evaluate_gates(gates_cfg or {}, {**summary, SCHEDULE_LAG_KEY: lag})
    summary["gates"] = gates
    summary["exit_code"] = exit_code(check_dicts, gates, config_error=bool(meta.get("config_error")),
                                     target_error=bool(meta.get("target_error")))
    if extra:
        summary.update(extra)
    return json_safe(summary)


def write_summary(run_dir: str | Path, summary: Mapping) -> Path:
    """Write ``<run_dir>/summary.json`` atomically (temp file + rename); returns its path."""
    root = Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "summary.json"
    text = json.dumps(json_safe(summary), indent=2, allow_nan=False, ensure_ascii=False)
    atomic_write(path, (text + "\n").encode("utf-8"))
    return path
