"""summary.json of a run (RESULTS.md §2): totals, per-op percentiles, codes, checks, gates,
exit code. :func:`build_summary` computes (writes nothing); :func:`write_summary` writes
atomically. Per-op numbers come from the report's aggregation (harness.results.report.aggregate),
so the summary and the report always agree.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.results.gates import SCHEDULE_LAG_KEY, evaluate_gates, exit_code
from harness.util import atomic_write

__all__ = ["SUMMARY_KEYS", "OP_KEYS", "OP_EXTRA_KEYS", "SUMMARY_EXTRA_KEYS", "build_summary", "write_summary",
           "json_safe", "verdict", "load_settings", "versions"]

#: Top-level keys of summary.json, in order (RESULTS.md §2).
SUMMARY_KEYS: tuple[str, ...] = ("run_id", "started", "finished", "duration_s", "target", "policy",
                                 "users_peak", "ops", "codes", "checks", "gates", "exit_code")
#: Keys of each ``ops`` entry.
OP_KEYS: tuple[str, ...] = ("count", "ok", "fail", "info", "rate_per_s", "p50_ms", "p90_ms", "p95_ms",
                            "p99_ms", "p999_ms", "max_ms")
#: Keys each ``ops`` entry has beyond :data:`OP_KEYS` (extensions, docs/JOURNAL.md "summary.json").
OP_EXTRA_KEYS: tuple[str, ...] = ("kind", "expected", "svc_p50_ms", "svc_p90_ms", "svc_p95_ms", "svc_p99_ms")
#: Top-level keys summary.json has beyond :data:`SUMMARY_KEYS`.
SUMMARY_EXTRA_KEYS: tuple[str, ...] = ("verdict", "reasons", "events", "expected", "codes_by_op", "load",
                                       "versions", "host", "target_kind")
_INT_OP_KEYS = frozenset({"count", "ok", "fail", "info"})
_LATENCY_KEYS = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms")
_SVC_QUANTILES = {"svc_p50_ms": 0.50, "svc_p90_ms": 0.90, "svc_p95_ms": 0.95, "svc_p99_ms": 0.99}


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
                  extra: Mapping | None = None, digest: Any = None) -> dict:
    """The summary.json dict of a run folder (nothing is written).

    ``meta`` (all optional): ``run_id`` (default: folder name), ``started`` / ``finished``
    (default: first / last journal time, ISO 8601 UTC), ``duration_s`` (default: finished -
    started when both are numbers, else the journal span, s), ``target`` (default:
    ``embedded`` or config ``target.host``), ``policy`` (default: config
    ``target.policy``), ``users_peak`` (default: Locust's stats history), ``load`` (the load
    settings, :func:`load_settings`; default null), ``host`` (the URL the load went to),
    ``target_kind`` (default ``embedded`` / ``external`` from ``target``) and the booleans
    ``config_error`` / ``target_error`` that force exit code 2 / 5.
    ``checks``: name -> CheckResult (or ``{"violations", "examples"}``) for every enabled
    check; ``gates_cfg``: config ``gates:``. ``extra`` entries are merged in last (new keys
    extend the summary; contract keys given there override the computed value).
    ``digest``: the run's :class:`harness.results.digest.Digest` when the caller has read the
    journals already (:func:`harness.results.scan.scan_run`); else they are read here.
    """
    from harness.results.digest import _V_EXPECTED
    from harness.results.report.load import load_users_history

    root = Path(run_dir)
    meta = meta or {}
    cfg = _config(root)
    if digest is None:
        from harness.results.scan import scan_run

        digest = scan_run(root, history=False).digest
    d = digest
    started = meta.get("started") or (_iso(d.first_ns) if d.first_ns is not None else None)
    finished = meta.get("finished") or (_iso(d.last_ns) if d.last_ns is not None else None)
    duration = _num(meta.get("duration_s"))
    if duration is None and _num(meta.get("started")) is not None and _num(meta.get("finished")) is not None:
        duration = max(0.0, float(meta["finished"]) - float(meta["started"]))
    if duration is None:
        duration = d.span_s()
    target_cfg = cfg.get("target") if isinstance(cfg.get("target"), Mapping) else {}
    target = meta.get("target") or (target_cfg.get("host") or "embedded")
    policy = meta.get("policy") or target_cfg.get("policy")
    users_peak = meta.get("users_peak")
    if users_peak is None:
        hist = load_users_history(root)
        users_peak = int(hist["users"].max()) if len(hist) else None

    from harness.results.journal import op_kind

    table = d.op_table(duration if duration > 0 else None)
    svc = d.service_quantiles(_SVC_QUANTILES)
    expected = d.codes_by_op(only=_V_EXPECTED) if (d.expected_rows or d.unexpected_rows) else {}
    ops: dict[str, dict] = {}
    for op, row in table.iterrows():
        op = str(op)
        entry = {k: (int(row[k]) if k in _INT_OP_KEYS else json_safe(float(row[k]))) for k in OP_KEYS}
        kind = op_kind(op)
        entry["kind"] = kind
        entry["expected"] = sum((expected.get(op) or {}).values())
        entry.update(svc.get(op) or dict.fromkeys(_SVC_QUANTILES))
        if kind == "event":  # an arrival (start == end) has no latency: null, not 0
            entry.update(dict.fromkeys((*_LATENCY_KEYS, *_SVC_QUANTILES)))
        ops[op] = entry
    for op, n in (meta.get("stopped") or {}).items():  # cut short by the harness's own stop
        if str(op) in ops and n:
            ops[str(op)]["stopped"] = int(n)
    codes = {str(int(r.code)): int(r.count) for r in d.code_table(with_expected=False).itertuples(index=False)}
    codes_by_op = d.codes_by_op()
    events = {op: {"count": e["count"], "rate_per_s": e["rate_per_s"]} for op, e in ops.items()
              if e["kind"] == "event"}
    lag = d.lag_p99_ms()

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
        "events": events,
        "expected": expected,
        "codes_by_op": codes_by_op,
        "load": meta.get("load"),
        "versions": versions(),
        "host": meta.get("host"),
        "target_kind": meta.get("target_kind") or ("embedded" if target == "embedded" else "external"),
    }
    gates = evaluate_gates(gates_cfg or {}, {**summary, SCHEDULE_LAG_KEY: lag})
    summary["gates"] = gates
    summary["exit_code"] = exit_code(check_dicts, gates, config_error=bool(meta.get("config_error")),
                                     target_error=bool(meta.get("target_error")))
    if extra:
        summary.update(extra)
    summary.update(verdict(summary))
    return json_safe(summary)


def versions() -> dict[str, str | None]:
    """``harness`` (``git rev-parse HEAD`` of this checkout; None when not a git repo), ``locust``
    and ``python`` versions."""
    import platform
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    commit = None
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5)
        if res.returncode == 0 and res.stdout.strip():
            commit = res.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None
    try:
        from importlib.metadata import version

        locust_v: str | None = version("locust")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        locust_v = None
    return {"harness": commit, "locust": locust_v, "python": platform.python_version()}


def load_settings(options: Any, config: Mapping | None, scenarios: Any = None,
                  argv: Sequence[str] | None = None) -> dict[str, Any]:
    """summary.json ``load``: what load was asked for. ``options``: Locust's parsed options
    (``num_users``, ``spawn_rate``, ``run_time`` s, ``processes``), ``config``: the effective
    config (``scenarios.<name>.weight``, ``scenarios.mass_login.arrival_rate``), ``scenarios``:
    the scenario names that ran; ``argv``: the command line (default ``sys.argv``; values after
    ``--set`` kept, as the config is masked where secret)."""
    import sys

    cfg = config if isinstance(config, Mapping) else {}
    sc_cfg = cfg.get("scenarios") if isinstance(cfg.get("scenarios"), Mapping) else {}
    names = list(scenarios) if scenarios else [n for n, c in sc_cfg.items()
                                                if isinstance(c, Mapping) and c.get("weight", 1)]
    weights = {}
    for name in names:
        c = sc_cfg.get(name)
        weights[str(name)] = c.get("weight") if isinstance(c, Mapping) else None
    ml = sc_cfg.get("mass_login") if isinstance(sc_cfg.get("mass_login"), Mapping) else {}
    get = (lambda k: getattr(options, k, None)) if options is not None else (lambda k: None)
    return {"users": get("num_users"), "spawn_rate": get("spawn_rate"), "run_time_s": get("run_time"),
            "processes": get("processes"), "scenarios": weights,
            "arrival_rate": ml.get("arrival_rate") if "mass_login" in weights else None,
            "argv": masked_argv(sys.argv if argv is None else argv)}


#: Command-line words whose value is a secret (masked in summary.json ``load.argv``).
_SECRET_WORDS = ("secret", "password", "token")


def masked_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with the value of every secret setting replaced by ``***``: ``--set
    target.secret_key=X`` (and ``--flag=X`` / ``--flag X`` forms of any option naming a secret)."""
    out: list[str] = []
    hide_next = False
    for arg in map(str, argv):
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        key, eq, _value = arg.partition("=")
        secret = any(w in key.lower() for w in _SECRET_WORDS)
        if eq and secret:
            out.append(f"{key}=***")
        elif secret and arg.startswith("--"):
            out.append(arg)
            hide_next = True
        else:
            out.append(arg)
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def verdict(summary: Mapping) -> dict[str, Any]:
    """``{"verdict": "PASS"|"FAIL", "reasons": [sentences]}`` from a summary's ``exit_code``,
    gates and checks: one sentence per failed gate (value vs limit), per failing check (how
    many violations), for an unreachable target or a bad config. PASS iff exit code 0."""
    from harness.results.gates import check_failed

    code = summary.get("exit_code")
    gates = summary.get("gates") if isinstance(summary.get("gates"), Mapping) else {}
    checks = summary.get("checks") if isinstance(summary.get("checks"), Mapping) else {}
    reasons: list[str] = []
    if code == 2:
        reasons.append("the config or command line is wrong (see the run's stderr)")
    if code == 5:
        reasons.append("the target could not be reached or the embedded target did not start")
    for name, res in checks.items():
        if check_failed(name, res, gates):
            n = res.get("violations") if isinstance(res, Mapping) else res
            gate = gates.get(f"check.{name}")
            allowed = gate.get("limit") if isinstance(gate, Mapping) else 0
            reasons.append(f"check {name} found {n} violation(s) (allowed {allowed})")
    for name, g in gates.items():
        if name.startswith("check.") or not isinstance(g, Mapping) or g.get("passed"):
            continue
        if g.get("value") is None:
            reasons.append(f"gate {name} could not be measured: {g.get('note') or 'no value'} "
                           f"(limit {_fmt(g.get('limit'))})")
        else:
            rel = "at least" if name.startswith("min_rate.") else "at most"
            reasons.append(f"gate {name} failed: {_fmt(g['value'])}, expected {rel} {_fmt(g.get('limit'))}")
    if code not in (0, None) and not reasons:
        reasons.append(f"exit code {code}")
    return {"verdict": "PASS" if code == 0 else "FAIL", "reasons": reasons}


def write_summary(run_dir: str | Path, summary: Mapping) -> Path:
    """Write ``<run_dir>/summary.json`` atomically (temp file + rename); returns its path."""
    root = Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "summary.json"
    summary = {**summary, **verdict(summary)}  # the exit code may have changed since build_summary
    text = json.dumps(json_safe(summary), indent=2, allow_nan=False, ensure_ascii=False)
    atomic_write(path, (text + "\n").encode("utf-8"))
    return path
