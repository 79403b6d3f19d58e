"""SLO gates over a run's summary, and the headless exit code (RESULTS.md §3). Pure.

Gate names (config.yaml ``gates:``):

* ``latency.<op>.<pNN>_ms``  latency percentile of an op (ms, end - intended) <= limit;
  ``pNN`` is p50/p90/p95/p99/p999 or ``max``.
* ``error_ratio``            (fail + info) / all requests <= limit. Requests only: events
  (``ops.<op>.kind == "event"``: kicked_offline, sig_expired, disconnect, fault) are not
  operations; rows that got the code their scenario provoked (``expect``) are passes and
  counted in ``ops.<op>.expected``, not in ``fail``; rows the harness's own stop cut short
  (``ops.<op>.stopped``) count in neither.
* ``error_ratio.<code>``     request rows with that code (expected outcomes excluded) / all
  requests <= limit.
* ``min_rate.<op>``          achieved ops/s of an op >= limit.
* ``schedule_lag.p99_ms``    p99 of (start - intended) over all rows (ms) <= limit; off when 0.
* ``check.<name>``           violations of a correctness check <= ``violations``.

Each gate is ``{"limit", "value", "passed"}``; a gate that could not be measured (an op that
did not happen, no operations at all) has ``value`` null, ``passed`` false and a ``note``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from harness.errors import ConfigError
from harness.results.journal import EVENT_OPS

__all__ = ["PERCENTILE_KEYS", "SCHEDULE_LAG_KEY", "evaluate_gates", "exit_code", "failure_lines",
           "check_failed"]

#: config percentile key -> summary ``ops`` column.
PERCENTILE_KEYS: dict[str, str] = {
    "p50": "p50_ms", "p90": "p90_ms", "p95": "p95_ms", "p99": "p99_ms", "p999": "p999_ms", "max": "max_ms",
}
#: Key of the (start - intended) p99 in ms in the mapping given to :func:`evaluate_gates`;
#: build_summary computes it (it is not one of summary.json's contract keys).
SCHEDULE_LAG_KEY = "schedule_lag_p99_ms"


NOT_OPERATIONS = frozenset({"fault"})


def _request_error_codes(summary: Mapping, measured: Mapping, codes: Mapping) -> Mapping:
    """code -> rows over the requests only, minus the expected outcomes, from ``codes_by_op``
    and ``expected`` (summary.json); ``codes`` as it is when the summary has no ``codes_by_op``
    (a summary from workers' tallies)."""
    by_op = summary.get("codes_by_op")
    if not isinstance(by_op, Mapping):
        return codes
    expected = summary.get("expected") if isinstance(summary.get("expected"), Mapping) else {}
    out: dict[str, int] = {}
    for op, per in by_op.items():
        if op not in measured or not isinstance(per, Mapping):
            continue
        exp = expected.get(op) if isinstance(expected.get(op), Mapping) else {}
        for code, n in per.items():
            out[str(code)] = out.get(str(code), 0) + int(n or 0) - int(exp.get(code) or exp.get(str(code)) or 0)
    return out


def _number(value: Any, key: str, *, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
        raise ConfigError(key, f"expected a number >= {low:g}, got {value!r}")
    return float(value) if isinstance(value, float) else value


def _value(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _gate(limit: Any, value: Any, passed: bool, note: str | None = None) -> dict[str, Any]:
    g: dict[str, Any] = {"limit": limit, "value": value, "passed": bool(passed)}
    if note:
        g["note"] = note
    return g


def _mapping(node: Any, key: str) -> Mapping:
    if node is None:
        return {}
    if not isinstance(node, Mapping):
        raise ConfigError(key, f"expected a mapping, got {node!r}")
    return node


def evaluate_gates(gates_cfg: Mapping, summary: Mapping) -> dict[str, dict]:
    """Evaluate every configured gate against ``summary`` (summary.json's shape; plus the
    optional :data:`SCHEDULE_LAG_KEY`). Returns gate name -> ``{"limit", "value", "passed"}``
    (+ ``"note"`` when the value could not be measured). Raises :class:`ConfigError` naming
    the key for a malformed gate."""
    cfg = _mapping(gates_cfg, "gates")
    ops = summary.get("ops") if isinstance(summary.get("ops"), Mapping) else {}
    codes = summary.get("codes") if isinstance(summary.get("codes"), Mapping) else {}
    checks = summary.get("checks") if isinstance(summary.get("checks"), Mapping) else {}
    out: dict[str, dict] = {}

    for op, limits in _mapping(cfg.get("latency_ms"), "gates.latency_ms").items():
        for pct, limit in _mapping(limits, f"gates.latency_ms.{op}").items():
            key = f"gates.latency_ms.{op}.{pct}"
            if pct not in PERCENTILE_KEYS:
                raise ConfigError(key, f"expected one of {', '.join(PERCENTILE_KEYS)}")
            limit = _number(limit, key)
            name = f"latency.{op}.{pct}_ms"
            row = ops.get(op)
            value = _value(row.get(PERCENTILE_KEYS[pct])) if isinstance(row, Mapping) else None
            if value is None:
                why = (f"no {op} operations in this run" if not isinstance(row, Mapping) or not row.get("count")
                       else f"no successful {op} operations to measure")
                out[name] = _gate(limit, None, False, why)
            else:
                out[name] = _gate(limit, value, value <= limit)

    # requests only: events (server pushes, connection ends) and injected fault windows are not
    # operations of the system under test; nor are info rows the harness's own stop cut short
    # (``stopped``, detail "stopped by harness")
    measured = {op: r for op, r in ops.items() if isinstance(r, Mapping) and op not in NOT_OPERATIONS
                and r.get("kind", "event" if op in EVENT_OPS else "request") != "event"}
    total = sum(int(r.get("count") or 0) - int(r.get("stopped") or 0) for r in measured.values())
    failed = sum(int(r.get("fail") or 0) + int(r.get("info") or 0) - int(r.get("stopped") or 0)
                 for r in measured.values())
    codes = _request_error_codes(summary, measured, codes)
    er = _mapping(cfg.get("error_ratio"), "gates.error_ratio")
    for key, limit in er.items():
        if key == "overall":
            if limit is None:
                continue
            limit = _number(limit, "gates.error_ratio.overall")
            if total == 0:
                out["error_ratio"] = _gate(limit, None, False, "no operations in this run")
            else:
                value = failed / total
                out["error_ratio"] = _gate(limit, value, value <= limit)
        elif key == "per_code":
            for code, climit in _mapping(limit, "gates.error_ratio.per_code").items():
                ckey = f"gates.error_ratio.per_code.{code}"
                try:
                    code_i = int(str(code))
                except ValueError:
                    raise ConfigError(ckey, "expected an integer code") from None
                climit = _number(climit, ckey)
                name = f"error_ratio.{code_i}"
                if total == 0:
                    out[name] = _gate(climit, None, False, "no operations in this run")
                else:
                    value = int(codes.get(str(code_i)) or 0) / total
                    out[name] = _gate(climit, value, value <= climit)
        else:
            raise ConfigError(f"gates.error_ratio.{key}", "unknown key (expected overall or per_code)")

    for op, limit in _mapping(cfg.get("min_rate_per_s"), "gates.min_rate_per_s").items():
        limit = _number(limit, f"gates.min_rate_per_s.{op}")
        row = ops.get(op)
        value = _value(row.get("rate_per_s")) if isinstance(row, Mapping) else None
        name = f"min_rate.{op}"
        if value is None:
            why = (f"no {op} operations in this run" if not isinstance(row, Mapping) or not row.get("count")
                   else "rate not measured (run duration 0)")
            out[name] = _gate(limit, None, False, why)
        else:
            out[name] = _gate(limit, value, value >= limit)

    lag_limit = cfg.get("max_schedule_lag_ms")
    if lag_limit:
        lag_limit = _number(lag_limit, "gates.max_schedule_lag_ms")
        value = _value(summary.get(SCHEDULE_LAG_KEY))
        if value is None:
            out["schedule_lag.p99_ms"] = _gate(lag_limit, None, False, "schedule lag was not measured (no rows)")
        else:
            out["schedule_lag.p99_ms"] = _gate(lag_limit, value, value <= lag_limit)

    allowed = cfg.get("violations")
    if allowed is not None:
        for name, res in checks.items():
            limit = _allowed(allowed, name)
            value = _violations(res)
            out[f"check.{name}"] = _gate(limit, value, value <= limit)
    return out


def _allowed(allowed: Any, name: str) -> int:
    """``violations: N`` (every check) or ``violations: {check: N}`` (missing checks: 0)."""
    if isinstance(allowed, Mapping):
        value = allowed.get(name, allowed.get("default", 0))
        key = f"gates.violations.{name}"
    else:
        value, key = allowed, "gates.violations"
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(key, f"expected a whole number >= 0, got {value!r}")
    return value


def _violations(res: Any) -> int:
    v = getattr(res, "violations", None)
    if v is None and isinstance(res, Mapping):
        v = res.get("violations")
    try:
        return int(v or 0)
    except (TypeError, ValueError):
        return 0


def check_failed(name: str, result: Any, gates: Mapping[str, Mapping]) -> bool:
    """A check fails when its ``check.<name>`` gate failed, or (no such gate) it has any violation."""
    gate = gates.get(f"check.{name}")
    if isinstance(gate, Mapping) and "passed" in gate:
        return not gate["passed"]
    return _violations(result) > 0


def exit_code(checks: Mapping[str, Any], gates: Mapping[str, Mapping], *, config_error: bool = False,
              target_error: bool = False) -> int:
    """RESULTS.md §3: 2 bad config, 5 target unreachable, 4 a check violation (beats 3),
    3 a performance / error-rate gate failed, else 0."""
    if config_error:
        return 2
    if target_error:
        return 5
    if any(check_failed(name, res, gates) for name, res in checks.items()):
        return 4
    if any(isinstance(g, Mapping) and not g.get("passed") for name, g in gates.items()
           if not name.startswith("check.")):
        return 3
    return 0


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def failure_lines(checks: Mapping[str, Any], gates: Mapping[str, Mapping]) -> list[str]:
    """One human line per failed check and failed gate (for stderr), checks first."""
    import json

    lines = []
    for name, res in checks.items():
        if not check_failed(name, res, gates):
            continue
        examples = getattr(res, "examples", None)
        if examples is None and isinstance(res, Mapping):
            examples = res.get("examples")
        gate = gates.get(f"check.{name}")
        allowed = gate.get("limit") if isinstance(gate, Mapping) else 0
        line = f"check {name}: {_violations(res)} violation(s) (allowed {allowed})"
        if examples:
            ex = examples[0]
            text = ex.get("found") if isinstance(ex, Mapping) and ex.get("found") else json.dumps(ex, default=str)
            who = ""
            if isinstance(ex, Mapping):
                who = " ".join(f"{k}={ex[k]}" for k in ("user", "session") if ex.get(k))
            line += f"; e.g. {ex.get('kind', '') if isinstance(ex, Mapping) else ''} {who}: {text}".replace("  ", " ")
        lines.append(line[:500])
    for name, g in gates.items():
        if name.startswith("check.") or not isinstance(g, Mapping) or g.get("passed"):
            continue
        if g.get("value") is None:
            lines.append(f"gate {name} failed: {g.get('note') or 'not measured'} (limit {_fmt(g.get('limit'))})")
        else:
            rel = ">=" if name.startswith("min_rate.") else "<="
            lines.append(f"gate {name} failed: {_fmt(g['value'])}, expected {rel} {_fmt(g.get('limit'))}")
    return lines
