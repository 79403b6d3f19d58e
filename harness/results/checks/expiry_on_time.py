"""Check ``expiry_on_time``: Every session still online at its deadline gets exactly one ``sig_expired``, on time."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from harness.results.checks.history import (CheckParams, CheckResult, History, Ledger, _Found, _NS, _history, _ledger, _life_end, _secs, _strict_end)


def expiry_on_time(rows: Iterable[Any] | History, *, params: CheckParams | None = None,
                   ledger: Iterable[Any] | Ledger | None = None, found: _Found | None = None) -> CheckResult:
    """Every session still online at its deadline gets exactly one ``sig_expired``, on time.

    Deadline = (``expire_at`` + ``leeway_s``) s. On time = within
    [deadline - ``clock_skew_s``, deadline + ``expiry_tolerance_s``]. Violations: ``early``,
    ``late``, ``twice``, ``two_events`` (sig_expired and kicked_offline for one session),
    ``after_end`` (after the client ended the session on that connection), ``missing``
    (excused when the session ended first or the run ended before the tolerance ran out).
    """
    p = params or CheckParams()
    h = _history(rows)
    led = _ledger(ledger)
    found = _Found("expiry_on_time") if found is None else found
    lee, skew, tol = int(p.leeway_s * _NS), int(p.clock_skew_s * _NS), int(p.expiry_tolerance_s * _NS)
    evicted = h.evictions()
    led_end = led.end_ts() if led is not None else {}
    for sid, times in h.expiries.items():
        s = h.sessions.get(sid) if isinstance(sid, str) else None
        ref = s.ref() if s else {"session": sid}
        if len(times) > 1:
            found.add("twice", sorted(times)[1], {**ref, "arrivals": sorted(times)[:5],
                                                  "expected": "exactly one sig_expired",
                                                  "found": f"{len(times)} sig_expired rows"},
                      count=len(times) - 1)
        t = min(times)
        if h.kicks.get(sid):
            found.add("two_events", t, {**ref, "kicked_at": h.kicks[sid][0][0], "expired_at": t,
                                        "expected": "at most one event per ended session",
                                        "found": "both kicked_offline and sig_expired"})
            continue
        if s is None:
            continue
        end_evidence = _strict_end(h, s)
        if end_evidence is not None and t > end_evidence[0]:
            found.add("after_end", t, {**ref, "ended": end_evidence[0], "ended_by": end_evidence[1],
                                       "expected": "no event for a session that already ended",
                                       "found": f"sig_expired {_secs(t - end_evidence[0])} s after {end_evidence[1]}"})
            continue
        if s.expire_at is None:
            continue
        deadline = s.expire_at * _NS + lee
        if t < deadline - skew:
            found.add("early", t, {**ref, "expire_at": s.expire_at, "deadline": deadline,
                                   "expected": f"not before expire_at + leeway_s - clock_skew_s "
                                   f"({p.leeway_s} s, {p.clock_skew_s} s)",
                                   "found": f"{_secs(deadline - t)} s before the deadline"})
        elif t > deadline + tol:
            found.add("late", t, {**ref, "expire_at": s.expire_at, "deadline": deadline,
                                  "expected": f"within expiry_tolerance_s={p.expiry_tolerance_s} s of the deadline",
                                  "found": f"{_secs(t - deadline)} s after the deadline"})
    for s in h.sessions.values():
        if s.expire_at is None or s.sid in h.expiries:
            continue
        due = s.expire_at * _NS + lee + tol
        if due > h.last_t:
            continue  # the run ended before the event was due
        ended = _life_end(h, s, evicted, led_end)
        if ended[0] < due:
            continue
        found.add("missing", s.expire_at * _NS + lee, {
            **s.ref(), "expire_at": s.expire_at, "deadline": s.expire_at * _NS + lee,
            "expected": f"one sig_expired within expiry_tolerance_s={p.expiry_tolerance_s} s of the deadline",
            "found": "none; the session was still online"})
    return found.result()
