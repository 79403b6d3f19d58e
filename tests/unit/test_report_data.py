"""Builders of tiny run folders for the report tests (no tests in this module)."""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

T0_NS = 1_700_000_000 * 1_000_000_000  # a whole unix second


def ms(v: float) -> int:
    """``v`` ms after T0 as unix ns."""
    return T0_NS + int(round(v * 1_000_000))


def row(op: str, end_ms: float, *, latency_ms: float | None = None, start_ms: float | None = None,
        intended_ms: float | None = None, outcome: str = "ok", code: int = 0,
        scenario: str = "mass_login", w: str = "w0", n: int = 0, **extra: Any) -> dict[str, Any]:
    """One journal row; times in ms after T0. ``latency_ms`` sets intended = start = end - it."""
    if latency_ms is not None:
        start_ms = end_ms - latency_ms if start_ms is None else start_ms
        intended_ms = end_ms - latency_ms if intended_ms is None else intended_ms
    start_ms = end_ms if start_ms is None else start_ms
    intended_ms = start_ms if intended_ms is None else intended_ms
    r = {"w": w, "n": n, "scenario": scenario, "op": op, "user": "u1", "platform": "iOS",
         "instance": "i1", "session": None, "intended": ms(intended_ms), "start": ms(start_ms),
         "end": ms(end_ms), "outcome": outcome, "code": code, "detail": ""}
    r.update(extra)
    return r


def write_run(root: Path, rows: Iterable[Mapping[str, Any]] | Mapping[str, Iterable[Mapping[str, Any]]],
              *, summary: Mapping[str, Any] | None = None, config: str | None = None,
              history: str | None = None, raw_lines: Iterable[str] = ()) -> Path:
    """Write a run folder: journal/<w>.jsonl (rows grouped by their ``w``), optional files."""
    (root / "journal").mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[str]] = {}
    items = rows.values() if isinstance(rows, Mapping) else [rows]
    for group in items:
        for i, r in enumerate(group):
            r = dict(r)
            r.setdefault("n", i)
            groups.setdefault(str(r.get("w", "w0")), []).append(json.dumps(r))
    extra = list(raw_lines)
    if extra:
        groups.setdefault("w0", []).extend(extra)
    for w, lines in groups.items():
        (root / "journal" / f"{w}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if summary is not None:
        (root / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    if config is not None:
        (root / "config.yaml").write_text(config, encoding="utf-8")
    if history is not None:
        (root / "locust_stats_history.csv").write_text(history, encoding="utf-8")
    return root
