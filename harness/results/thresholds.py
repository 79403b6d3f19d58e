"""Regression thresholds of ``python -m harness.report RUN --compare BASE --fail-on ...`` and
config ``report.compare.fail_on`` (pure; no pandas, so the config can validate them at load)."""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PCT", "EXIT_PERF_REGRESSION", "EXIT_NEW_VIOLATIONS", "FailOnError", "Threshold", "parse_fail_on"]

#: Percentile names ``--fail-on latency.<op>.<pNN>`` accepts -> summary ``ops`` column.
PCT = {"p50": "p50_ms", "p90": "p90_ms", "p95": "p95_ms", "p99": "p99_ms", "p999": "p999_ms", "max": "max_ms"}
#: Exit codes of ``python -m harness.report RUN --compare BASE --fail-on ...`` (RESULTS.md §3's meanings).
EXIT_PERF_REGRESSION = 3
EXIT_NEW_VIOLATIONS = 4


class FailOnError(ValueError):
    """A ``--fail-on`` / ``report.compare.fail_on`` threshold that cannot be read (exit code 2)."""


@dataclass(frozen=True)
class Threshold:
    """One regression threshold: ``metric`` may grow by at most ``allowed`` from base to run
    (relative: a fraction of the base value when ``relative``; else absolute, in the metric's unit)."""

    spec: str
    metric: str          # "latency.<op>.<pNN>", "error_ratio", "error_ratio.<op>", "violations", "violations.<check>"
    allowed: float
    relative: bool

    @property
    def kind(self) -> str:
        """``violations`` or ``perf`` (decides exit 4 or 3)."""
        return "violations" if self.metric.split(".")[0] == "violations" else "perf"


def parse_fail_on(spec: str) -> Threshold:
    """``latency.login.p99:+10%`` (relative), ``latency.login.p99:+50`` (ms), ``error_ratio:+0.01``
    (absolute ratio), ``error_ratio.login:+0.01``, ``violations:0`` / ``violations.<check>:0``
    (more violations than base + N). Raises :class:`FailOnError` with one sentence."""
    text = str(spec).strip()
    metric, sep, value = text.partition(":")
    metric, value = metric.strip(), value.strip().replace(" ", "")
    if not sep or not metric or not value:
        raise FailOnError(f"--fail-on {text!r}: expected METRIC:LIMIT, e.g. 'latency.login.p99:+10%'")
    parts = metric.split(".")
    if parts[0] == "latency":
        if len(parts) != 3 or not parts[1] or parts[2] not in PCT:
            raise FailOnError(f"--fail-on {text!r}: expected latency.<op>.<{'|'.join(PCT)}>")
    elif parts[0] in ("error_ratio", "violations"):
        if len(parts) > 2 or (len(parts) == 2 and not parts[1]):
            raise FailOnError(f"--fail-on {text!r}: expected {parts[0]} or {parts[0]}.<name>")
    else:
        raise FailOnError(f"--fail-on {text!r}: unknown metric {parts[0]!r} (expected latency, error_ratio "
                          "or violations)")
    relative = value.endswith("%")
    number = value[:-1] if relative else value
    if number.endswith("ms") and parts[0] == "latency" and not relative:
        number = number[:-2]
    try:
        allowed = float(number)
    except ValueError:
        raise FailOnError(f"--fail-on {text!r}: {value!r} is not a number (e.g. +10%, +0.01, 0)") from None
    if not math.isfinite(allowed) or allowed < 0:
        raise FailOnError(f"--fail-on {text!r}: the allowed increase must be a number >= 0")
    if relative and parts[0] != "latency":
        raise FailOnError(f"--fail-on {text!r}: {parts[0]} takes an absolute increase (e.g. "
                          f"{'+0.01' if parts[0] == 'error_ratio' else '0'}), not a percentage")
    return Threshold(text, metric, allowed / 100.0 if relative else allowed, relative)


