"""Correctness checks over a run's journals (RESULTS.md §1, docs/JOURNAL.md), plus the
server's session ledger when there is one (PROTOCOL.md §7). Jepsen-style: the whole history
is judged after the run, partitioned by user / session / connection.

Pure core, thin shell:

* :class:`History` (``history.py``) folds journal rows (dicts) into compact per-session / per-connection
  indexes, keeping only the fields the checks need (a 10^6-row journal is streamed, never
  held as dicts). :class:`Ledger` does the same for ledger rows.
* One pure function per check, one module each (``harness/results/checks/<name>.py``), each ``check(rows_or_history, *, params, ...) -> CheckResult``:
  :func:`kick_exactly_once`, :func:`policy_limit`, :func:`last_login_wins`,
  :func:`switch_consistency`, :func:`relogin_recovers`, :func:`expiry_on_time`,
  :func:`journal_integrity`, :func:`expected_rejections`.
* :func:`run_checks` is the shell: it reads ``journal/*.jsonl`` once
  (:mod:`harness.results.scan`, or takes the History the end of a run already built) and
  ``ledger.jsonl``, and runs the enabled checks. ``python -m harness.checks RUN_DIR``
  prints one line per check; exit 4 on any violation, 0 when clean, 2 on a bad path/config.

Times are unix ns everywhere (ints); config durations are seconds. Every violation example
is a JSON-safe dict with ``kind``, ``t`` (unix ns of the violation, for the report's chart),
the user / sessions concerned, what was ``expected`` and what was ``found``.

The checks never need the ledger and work against any server speaking PROTOCOL.md; rows
with ``outcome == "info"`` (unknown effect) never count as evidence either way.
"""
from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from harness.errors import ConfigError, HarnessError
from harness.results.checks.history import (CHECK_NAMES, EXPIRY_CODES, CheckParams, CheckResult, ChecksInputError, History, Ledger)
from harness.results.checks.kick_exactly_once import kick_exactly_once
from harness.results.checks.policy_limit import policy_limit
from harness.results.checks.last_login_wins import last_login_wins
from harness.results.checks.switch_consistency import switch_consistency
from harness.results.checks.relogin_recovers import relogin_recovers
from harness.results.checks.expiry_on_time import expiry_on_time
from harness.results.checks.journal_integrity import journal_integrity
from harness.results.checks.expected_rejections import expected_rejections

__all__ = [
    "CHECK_NAMES",
    "EXPIRY_CODES",
    "CheckParams",
    "CheckResult",
    "ChecksInputError",
    "History",
    "Ledger",
    "kick_exactly_once",
    "policy_limit",
    "last_login_wins",
    "switch_consistency",
    "relogin_recovers",
    "expiry_on_time",
    "journal_integrity",
    "expected_rejections",
    "run_checks",
    "read_locust_total",
    "main",
]

# --------------------------------------------------------------------------- shell

_CHECKS: dict[str, Callable[..., CheckResult]] = {  # (history, params, ledger, locust_total, found=None)
    "kick_exactly_once": lambda h, p, led, lt, f=None: kick_exactly_once(h, params=p, ledger=led, found=f),
    "policy_limit": lambda h, p, led, lt, f=None: policy_limit(h, params=p, ledger=led, found=f),
    "last_login_wins": lambda h, p, led, lt, f=None: last_login_wins(h, params=p, ledger=led, found=f),
    "switch_consistency": lambda h, p, led, lt, f=None: switch_consistency(h, params=p, found=f),
    "relogin_recovers": lambda h, p, led, lt, f=None: relogin_recovers(h, params=p, found=f),
    "expiry_on_time": lambda h, p, led, lt, f=None: expiry_on_time(h, params=p, ledger=led, found=f),
    "journal_integrity": lambda h, p, led, lt, f=None: journal_integrity(h, params=p, locust_total=lt, found=f),
    "expected_rejections": lambda h, p, led, lt, f=None: expected_rejections(h, params=p, found=f),
}


def _enabled(enabled: Sequence[str] | None, config: Mapping) -> list[str]:
    key = "checks.enabled"
    if enabled is None:
        checks = config.get("checks") if isinstance(config, Mapping) else None
        enabled = checks.get("enabled") if isinstance(checks, Mapping) else None
        if enabled is None:
            return list(CHECK_NAMES)
    if isinstance(enabled, str) or not isinstance(enabled, Sequence):
        raise ConfigError(key, f"expected a list of check names, got {enabled!r}")
    out = []
    for i, name in enumerate(enabled):
        if name not in _CHECKS:
            raise ConfigError(f"{key}[{i}]", f"expected one of {', '.join(CHECK_NAMES)}, got {name!r}")
        if name not in out:
            out.append(name)
    return out


def _load_run_config(root: Path) -> dict:
    path = root / "config.yaml"
    if not path.is_file():
        return {}
    try:
        import yaml

        obj = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001 - unreadable config -> one sentence
        raise ChecksInputError(f"{path} is not readable YAML ({type(exc).__name__})") from None
    return obj if isinstance(obj, dict) else {}


def run_checks(run_dir: str | Path, *, config: Mapping | None = None, enabled: Sequence[str] | None = None,
               locust_total: int | None = None, history: History | None = None) -> dict[str, CheckResult]:
    """Run the enabled checks on a run folder; name -> :class:`CheckResult` (in check order).

    ``config``: the effective config (default: the folder's ``config.yaml``); ``enabled``:
    check names (default ``checks.enabled``, else all); ``locust_total``: Locust's total
    request count for journal_integrity (see :func:`read_locust_total`); ``history``: the
    journals already folded by :func:`harness.results.scan.scan_run` (the end of a run reads
    them once for checks, summary and report); else they are read here, once.
    ``ledger.jsonl`` is used when present. Raises :class:`ChecksInputError`
    for a missing folder and :class:`ConfigError` for a bad config value.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise ChecksInputError(f"run folder {str(root)!r} does not exist or is not a folder")
    cfg = _load_run_config(root) if config is None else config
    names = _enabled(enabled, cfg)
    params = CheckParams.from_config(cfg)
    if history is None:
        from harness.results.scan import scan_run

        history = scan_run(root, digest=False).history
    h = history
    led_path = root / "ledger.jsonl"
    if h.spill is not None:
        return _run_in_parts(h, names, params, led_path if led_path.is_file() else None, locust_total)
    ledger = Ledger.read(led_path) if led_path.is_file() else None
    return {name: _CHECKS[name](h, params, ledger, locust_total) for name in names}


def _run_in_parts(h: History, names: list[str], params: CheckParams, ledger_path: Path | None,
                  locust_total: int | None) -> dict[str, CheckResult]:
    """The checks of a History kept on disk in parts (:mod:`harness.results.checks.spill`):
    every check keeps one ``_Found`` across the parts."""
    from harness.results.checks.history import _Found
    from harness.results.checks.spill import CONN_CHECKS, USER_CHECKS

    found = {name: _Found(name) for name in names}
    conn = {n: (lambda part, n=n: _CHECKS[n](part, params, None, None, found[n])) for n in names if n in CONN_CHECKS}
    user = {n: (lambda part, led, n=n: _CHECKS[n](part, params, led, None, found[n]))
            for n in names if n in USER_CHECKS}
    try:
        h.spill.judge(h, conn, user, ledger=ledger_path)
    finally:
        h.spill.close()
    # the run's totals (integrity, expect rows) stayed in the scan's History
    return {n: found[n].result() if n in CONN_CHECKS or n in USER_CHECKS
            else _CHECKS[n](h, params, None, locust_total, found[n]) for n in names}


def read_locust_total(run_dir: str | Path) -> int | None:
    """Locust's Aggregated "Request Count" from ``locust_stats.csv`` (None when absent/unreadable)."""
    root = Path(run_dir)
    path = root / "locust_stats.csv"
    if not path.is_file():
        cands = [p for p in sorted(root.glob("*_stats.csv"))]
        if not cands:
            return None
        path = cands[0]
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            for rec in csv.DictReader(fh):
                if rec.get("Name") == "Aggregated":
                    return int(float(rec.get("Request Count") or 0))
    except (OSError, UnicodeDecodeError, csv.Error, ValueError, TypeError):
        return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.checks RUN_DIR``: one line per check; exit 4 / 0 / 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m harness.checks results/<run-id>", file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    root = Path(args[0])
    if not root.is_dir() or not ((root / "journal").is_dir() or (root / "config.yaml").is_file()):
        print(f"error: {str(root)!r} is not a run folder (expected results/<run-id>/ with journal/)",
              file=sys.stderr)
        return 2
    try:
        results = run_checks(root, locust_total=read_locust_total(root))
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    width = max(len(n) for n in results) if results else 0
    for name, res in results.items():
        line = f"{name:<{width}}  violations={res.violations}"
        if res.examples:
            line += "  first: " + json.dumps(res.examples[0], default=str)[:400]
        print(line)
    return 4 if any(r.violations for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
