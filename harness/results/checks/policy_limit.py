"""Check ``policy_limit``: No user ever has more live sessions in a policy group than the group's limit."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from harness.results.checks.history import (CheckParams, CheckResult, History, Ledger, _D_ALIVE, _D_INSTANCE, _D_PLATFORM, _D_SESSION, _Found, _NS, _Sess, _by_instance, _grouper, _history, _ledger, _ledger_replay, _overlaps)


def policy_limit(rows: Iterable[Any] | History, *, params: CheckParams | None = None,
                 ledger: Iterable[Any] | Ledger | None = None, found: _Found | None = None) -> CheckResult:
    """No user ever has more live sessions in a policy group than the group's limit.

    Evidence: ``race`` rows (devices the clients still believe alive, and the REST
    ``query_online_status`` Detail list); the journal's sessions of one user whose lives
    (login done -> first sign of their end) overlap beyond the limit for longer than
    ``settle_s``; and, with a ledger, a replay of login/end rows in server order.

    Under ``max_sessions`` the one group of all platforms has limit ``max_sessions``. Under
    ``unlimited`` every instanceID is a group of limit 1, so the only thing reported is two
    live sessions of one user with the same instanceID (the REST Detail list carries no
    instanceID: there, more Online entries than the race had instances).
    """
    p = params or CheckParams()
    h = _history(rows)
    led = _ledger(ledger)
    found = _Found("policy_limit") if found is None else found
    settle = int(p.settle_s * _NS)
    group = _grouper(p)
    by_instance = _by_instance(p)
    # 1. races
    for r in h.races:
        alive: dict[str, list] = {}
        limits: dict[str, int] = {}
        for d in r.devices:
            if d[_D_ALIVE]:
                g = group(d[_D_PLATFORM], d[_D_INSTANCE])
                if g:
                    alive.setdefault(g[0], []).append(d[_D_SESSION])
                    limits[g[0]] = g[1]
        for gname, sids in alive.items():
            if len(sids) > limits[gname]:
                found.add("race_survivors", r.t, {
                    "user": r.user, "race": r.race, "group": gname, "limit": limits[gname],
                    "survivors": sids, "expected": f"at most {limits[gname]} alive in group {gname!r}",
                    "found": f"{len(sids)} devices still logged in after settling"})
        if by_instance:
            instances = {d[_D_INSTANCE] for d in r.devices if d[_D_INSTANCE]}
            online_n = sum(1 for _pl, status in r.online or () if status == "Online")
            if instances and online_n > len(instances):
                found.add("race_online", r.t, {
                    "user": r.user, "race": r.race, "group": "instance", "limit": len(instances),
                    "online": [{"Platform": pl, "Status": st} for pl, st in r.online or ()],
                    "expected": f"query_online_status shows at most one Online per instanceID "
                    f"({len(instances)} in the race)",
                    "found": f"{online_n} Online: a same-instance login did not replace"})
            continue
        counts: dict[str, int] = {}
        for platform, status in r.online or ():
            if status == "Online":
                g = group(platform)
                if g:
                    counts[g[0]] = counts.get(g[0], 0) + 1
                    limits[g[0]] = g[1]
        for gname, c in counts.items():
            if c > limits[gname]:
                found.add("race_online", r.t, {
                    "user": r.user, "race": r.race, "group": gname, "limit": limits[gname],
                    "online": [{"Platform": pl, "Status": st} for pl, st in r.online or ()],
                    "expected": f"query_online_status shows at most {limits[gname]} Online in group {gname!r}",
                    "found": f"{c} Online"})
    # 2. journal sessions alive at once
    evicted = h.evictions()
    led_end = led.end_ts() if led is not None else {}
    by_user: dict[Any, list[_Sess]] = {}
    for s in h.sessions.values():
        by_user.setdefault(s.user, []).append(s)
    for user, sess in by_user.items():
        if len(sess) < 2:
            continue
        groups: dict[str, list] = {}
        for s in sess:
            g = group(s.platform, s.instance)
            if g:
                groups.setdefault(g[0], [g[1]]).append(s)
        for gname, (limit, *members) in groups.items():
            if len(members) <= limit:
                continue
            _overlaps(h, user, gname, limit, members, evicted, led_end, settle, found)
    # 3. ledger replay
    if led is not None:
        _ledger_replay(led, group, found)
    return found.result()
