"""Check ``journal_integrity``: The journal is whole: per worker ``n`` runs from 0 without gaps or duplicates; every"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from harness.results.checks.history import (CheckParams, CheckResult, History, _Found, _history,
                                             missing_runs)


def journal_integrity(rows: Iterable[Any] | History, *, params: CheckParams | None = None,
                      locust_total: int | None = None, found: _Found | None = None) -> CheckResult:
    """The journal is whole: per worker ``n`` runs from 0 without gaps or duplicates; every
    row has outcome ok/fail/info, int unix-ns times with intended <= start <= end; and the
    request row total (rows minus events, harness.results.journal.EVENT_OPS) equals Locust's
    request total (when ``locust_total`` is given)."""
    h = _history(rows)
    found = _Found("journal_integrity") if found is None else found
    for ex in h.bad_rows:
        found.add("bad_row", ex.get("t"), {k: v for k, v in ex.items() if k != "t"}, count=1)
    if h.bad_count > len(h.bad_rows):
        found.count += h.bad_count - len(h.bad_rows)
    for w, n, t in h.dup_n:
        found.add("duplicate_n", t, {"w": w, "n": n, "expected": "each n once", "found": f"n={n} twice"})
    if h.dup_count > len(h.dup_n):
        found.count += h.dup_count - len(h.dup_n)
    for w, seen in h._seen.items():
        top = h._max_n[w]
        for i, j in missing_runs(seen, top):
            found.add("gap", None, {"w": w, "missing_from": i, "missing_to": j - 1, "missing": j - i,
                                    "expected": f"n = 0..{top} without gaps",
                                    "found": f"n {i}..{j - 1} missing"})
    requests = h.rows - h.event_rows  # events (kicked_offline, ...) are journaled, never Locust requests
    if locust_total is not None and locust_total != requests:
        found.add("total_mismatch", h.last_t or None, {
            "journal_rows": h.rows, "journal_requests": requests, "locust_requests": int(locust_total),
            "expected": "one journal request row per Locust request event",
            "found": f"journal {requests} request rows vs Locust {locust_total} requests"})
    return found.result()
