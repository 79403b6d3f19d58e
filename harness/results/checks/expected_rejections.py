"""Check ``expected_rejections``: a request the scenario made to be refused was refused with
the provoked code (docs/JOURNAL.md ``expect``)."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from harness.results.checks.history import CheckParams, CheckResult, History, _Found, _history


def expected_rejections(rows: Iterable[Any] | History, *, params: CheckParams | None = None, found: _Found | None = None) -> CheckResult:
    """Every row carrying ``expect`` (the code a scenario provoked on purpose, e.g. 70001 for
    a login with an already-expired UserSig in relogin_expiry) got exactly that code.

    A success (code 0: the server accepted a stale sig) or another code is a violation. Rows
    with outcome ``info`` (no answer) are not evidence either way (they count as errors in
    ``error_ratio``)."""
    h = _history(rows)
    found = _Found("expected_rejections") if found is None else found
    for t, w, n, op, user, scenario, expect, code, outcome, session in h.unexpected:
        accepted = code == 0 and outcome == "ok"
        found.add("accepted" if accepted else "wrong_code", t, {
            "w": w, "n": n, "op": op, "user": user, "scenario": scenario, "session": session,
            "expected": f"code {expect} (provoked on purpose)",
            "found": ("accepted: stale UserSig logged in (code 0)" if accepted and expect == 70001
                      else "accepted (code 0)" if accepted else f"code {code} ({outcome})")})
    extra = h.unexpected_count - len(h.unexpected)
    if extra > 0:
        found.count += extra
        found.times.extend(h.unexpected_times[len(h.unexpected):])
    return found.result()
