"""Check ``kick_exactly_once``: Every session the server reported evicted gets exactly one ``kicked_offline``."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from harness.results.checks.history import (CheckParams, CheckResult, History, Ledger, _D_ALIVE, _D_SESSION, _Found, _NS, _client_closed_before, _history, _info_users, _ledger)


def kick_exactly_once(rows: Iterable[Any] | History, *, params: CheckParams | None = None,
                      ledger: Iterable[Any] | Ledger | None = None, found: _Found | None = None) -> CheckResult:
    """Every session the server reported evicted gets exactly one ``kicked_offline``.

    Evicted = listed in an ok login's ``kicked`` (or a ledger ``end`` with reason
    multi_device / same_instance / rest_kick). Violations: ``missing`` (never arrived within
    ``settle_s``; excused when the client ended the session first, or the run ended less
    than ``settle_s`` after the eviction), ``duplicate`` (2+ rows for one session),
    ``unreported`` (a kick for a session no response or ledger row said was evicted; a
    rest_kick is legit after a ``rest_kick`` op for that user).
    """
    p = params or CheckParams()
    h = _history(rows)
    led = _ledger(ledger)
    settle = int(p.settle_s * _NS)
    found = _Found("kick_exactly_once") if found is None else found
    evicted: dict[Any, tuple] = {}  # sid -> (by, t_evicted, source, reason)
    for sid, (by, _sent, done) in h.evictions().items():
        evicted[sid] = (by, done, "login response", None)
    if led is not None:
        for sid, (by, ts, reason) in led.kick_ends().items():
            if sid not in evicted:
                evicted[sid] = (by, ts, "ledger", reason)
    # sessions a race row reports still logged in after settling: the client waited with the
    # connection open, so closing it afterwards does not excuse a missing notification
    race_alive = {d[_D_SESSION] for r in h.races for d in r.devices if d[_D_ALIVE] and d[_D_SESSION]}
    for sid, (by, t_ev, source, reason) in evicted.items():
        got = h.kicks.get(sid, ())
        s = h.sessions.get(sid)
        if len(got) > 1:
            found.add("duplicate", got[1][0], {
                "user": got[0][4], "session": sid, "evicted_by": by, "count": len(got),
                "arrivals": [e[0] for e in got[:5]],
                "expected": "exactly one kicked_offline", "found": f"{len(got)} kicked_offline rows"},
                count=len(got) - 1)
        elif not got:
            if s is None:
                continue  # not a session this journal knows: nobody could have been told
            deadline = t_ev + settle
            if sid not in race_alive and _client_closed_before(h, s, deadline):
                continue
            if deadline > h.last_t:
                continue  # the run ended before the notification was due
            found.add("missing", t_ev, {
                **s.ref(), "evicted_by": by, "evicted_at": t_ev, "reported_by": source,
                "reason": reason or "multi_device/same_instance",
                "expected": f"one kicked_offline within settle_s={p.settle_s} s of the eviction",
                "found": "never arrived within settle" + (
                    "; the race still saw the device logged in after settling" if sid in race_alive else "")})
    # Protocols whose login answers name no evicted sessions (XMPP: the server only tells the
    # evicted stream): an eviction is explained by a newer login of the same account (the same
    # instance for same_instance) sent before the kick arrived; a missing kick shows as a race
    # survivor over the limit (policy_limit) instead.
    lists = h.has_kicked_lists()
    by_user: dict[Any, list] = {}
    if not lists and h.kicks:
        for s in h.sessions.values():
            by_user.setdefault(s.user, []).append(s)
        found.note("this protocol's login answers name no evicted sessions: a kick is judged by the newer "
                   "login of the account that explains it; missing kicks show as race survivors (policy_limit)")
    info_users: set | None = None
    for sid, got in h.kicks.items():
        if sid in evicted:
            continue
        first = got[0]
        t, by, reason, _conn, user = first[:5]
        legit = False
        why = "no login response or ledger row reported this session evicted"
        if reason == "rest_kick":
            legit = any(st <= t for st in h.rest_kicks.get(user, ()))
            why = "rest_kick event without a preceding rest_kick op for this user"
        elif isinstance(sid, str) and (by is None or by not in h.sessions or h.sessions[by].kicked is None):
            # the evicting login's response is unknown to us (timed out, or not journaled)
            if by is None and info_users is None:
                info_users = _info_users(h)
            legit = by is not None or user in (info_users or ())
            if not legit and not lists:
                mine = h.sessions.get(sid)
                legit = mine is not None and any(
                    o.sid != sid and o.sent <= t and o.done >= mine.sent
                    and (reason != "same_instance" or o.instance == mine.instance)
                    for o in by_user.get(user, ()))
                why = ("no newer login of this account (same instance for same_instance) was sent before "
                       "the kick arrived")
        if not legit:
            s = h.sessions.get(sid) if isinstance(sid, str) else None
            found.add("unreported", t, {
                **(s.ref() if s else {"session": sid, "user": user}), "by": by, "reason": reason,
                "expected": "no kicked_offline for a session that was not evicted", "found": why})
        if len(got) > 1:
            found.add("duplicate", got[1][0], {
                "user": user, "session": sid, "count": len(got), "arrivals": [e[0] for e in got[:5]],
                "expected": "at most one kicked_offline", "found": f"{len(got)} kicked_offline rows"},
                count=len(got) - 1)
    return found.result()
