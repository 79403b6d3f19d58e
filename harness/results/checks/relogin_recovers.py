"""Check ``relogin_recovers``: After a UserSig expiry the client is back online within ``relogin_bound_s``."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from harness.results.checks.history import (CheckParams, CheckResult, EXPIRY_CODES, History, RELOGIN_SCENARIO, _EPS_NS, _Found, _LOOP_WINDOW_NS, _L_CODE, _L_END, _L_OP, _L_OUT, _L_SCEN, _L_START, _L_USER, _NS, _conn_str, _history, _secs)


def relogin_recovers(rows: Iterable[Any] | History, *, params: CheckParams | None = None, found: _Found | None = None) -> CheckResult:
    """After a UserSig expiry the client is back online within ``relogin_bound_s``.

    Every ``sig_expired`` row, and every failed login with an expiry code (6206, 70001,
    70052) in scenario relogin_expiry, is followed by an ok ``relogin`` (or ``login``) on
    the same connection that ends within the bound; excused when the run ended within the
    bound, or the client closed its connection without trying. Also: no login loop (in relogin_expiry, a login failing with
    a non-expiry code retried on the same connection within 1 s for the same user).
    """
    p = params or CheckParams()
    h = _history(rows)
    found = _Found("relogin_recovers") if found is None else found
    bound = int(p.relogin_bound_s * _NS)

    def check(key: Any, t: int, what: str, ref: dict) -> None:
        entries = h._conn_starts(key)
        i = h.first_entry_from(key, t - _EPS_NS)
        attempts = []
        while i < len(entries) and entries[i][_L_START] <= t + bound:
            e = entries[i]
            if e[_L_OP] in ("relogin", "login"):
                if e[_L_OUT] == "ok" and e[_L_END] <= t + bound:
                    return
                attempts.append(e)
            i += 1
        if t + bound > h.last_t:
            return  # the run ended within the bound
        d = h.disconnect_of(key)
        if not attempts and d is not None and t <= d[0] <= t + bound and d[1] == "ok":
            return  # the client chose to leave (closed the connection) without trying
        if attempts:
            last = attempts[-1]
            if last[_L_OUT] == "ok":
                seen = f"back online only after {_secs(last[_L_END] - t)} s ({last[_L_OP]})"
            else:
                seen = f"{len(attempts)} attempt(s), last {last[_L_OP]} {last[_L_OUT]} code {last[_L_CODE]}"
        else:
            seen = "no relogin attempt on this connection"
        found.add("no_relogin", t, {
            **ref, "conn": _conn_str(key), "trigger": what,
            "expected": f"an ok relogin within relogin_bound_s={p.relogin_bound_s} s", "found": seen})

    for t, sid, key, user, _scen, w, n in h.expiry_rows:
        check(key, t, "sig_expired", {"user": user, "session": sid, "w": w, "n": n})
    for key, entries in h.conn_logins.items():
        h._conn_starts(key)
        prev = None
        for e in entries:
            if e[_L_SCEN] == RELOGIN_SCENARIO and e[_L_OP] == "login" and e[_L_OUT] == "fail":
                if e[_L_CODE] in EXPIRY_CODES:
                    check(key, e[_L_END], f"login failed {e[_L_CODE]}", {"user": e[_L_USER]})
            if e[_L_OP] == "login":
                if (prev is not None and prev[_L_OUT] == "fail" and prev[_L_CODE] not in EXPIRY_CODES
                        and prev[_L_SCEN] == RELOGIN_SCENARIO and prev[_L_USER] == e[_L_USER]
                        and e[_L_START] - prev[_L_END] < _LOOP_WINDOW_NS):
                    found.add("login_loop", e[_L_START], {
                        "user": e[_L_USER], "conn": _conn_str(key), "failed_code": prev[_L_CODE],
                        "failed_at": prev[_L_END], "retried_at": e[_L_START],
                        "gap_s": _secs(e[_L_START] - prev[_L_END]),
                        "expected": "no immediate retry after a non-expiry login failure",
                        "found": f"login retried {_secs(e[_L_START] - prev[_L_END])} s after code {prev[_L_CODE]}"})
                prev = e
    return found.result()
