"""Check ``last_login_wins``: The newest login always wins: a session is never evicted (multi_device) by an older one.
Under policy ``unlimited`` it also judges who may evict at all: only a login with the same instanceID."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from harness.results.checks.history import (CheckParams, CheckResult, History, Ledger, _D_ALIVE, _D_CODE, _D_DEAD, _D_DONE, _D_INSTANCE, _D_KICKED_BY, _D_PLATFORM, _D_SENT, _D_SESSION, _Found, _Sess, _by_instance, _grouper, _history, _ledger)


def last_login_wins(rows: Iterable[Any] | History, *, params: CheckParams | None = None,
                    ledger: Iterable[Any] | Ledger | None = None, found: _Found | None = None) -> CheckResult:
    """The newest login always wins: a session is never evicted (multi_device) by an older one.

    Older = its login completed before the other's was sent (or, with a ledger, an earlier
    login ``seq``). Evidence: ``kicked_offline`` rows' ``by``, ledger ``end`` rows' ``by``,
    ``race`` rows where an older device is still alive while a newer one of the same group
    is not, and races where nobody survived although the newest device was kicked.

    Under ``unlimited`` (sessions grouped by instanceID) a login never evicts another
    instance: every ``multi_device`` eviction, and every ``same_instance`` one between two
    different instanceIDs, is a violation (``evicted_across_instances``). It belongs here, not
    in policy_limit: a wrongful eviction breaks no limit (fewer sessions live, not more); it
    is a wrong answer to "who does the new login evict", which this check judges.
    """
    p = params or CheckParams()
    h = _history(rows)
    led = _ledger(ledger)
    found = _Found("last_login_wins") if found is None else found
    group = _grouper(p)
    by_instance = _by_instance(p)
    seq = led.login_seq() if led is not None else {}
    flagged: set = set()

    def across(sid: str, by: str, reason: str, inst_sid: str | None, inst_by: str | None) -> bool:
        """Under unlimited: an eviction of another instance (multi_device, or instanceIDs differ)."""
        return by_instance and (reason == "multi_device" or (inst_sid is not None and inst_by is not None
                                                             and inst_sid != inst_by))

    def flag_across(t: int, user: Any, sid: str, by: str, reason: str, inst_sid: Any, inst_by: Any,
                    source: str) -> None:
        flagged.add(sid)
        found.add("evicted_across_instances", t, {
            "user": user, "session": sid, "by": by, "reason": reason,
            "instances": {sid: inst_sid, by: inst_by},
            "expected": "policy unlimited: a login evicts only a live session with its own instanceID",
            "found": f"{source}: {sid} (instance {inst_sid}) ended {reason} by {by} (instance {inst_by})"})

    def older(a: str, b: str, sa: _Sess | None, sb: _Sess | None) -> bool | None:
        if a in seq and b in seq:
            return seq[a] < seq[b]
        if sa is not None and sb is not None:
            return sa.done < sb.sent
        return None

    for sid, got in h.kicks.items():
        for t, by, reason, _conn, user, _w, _n in got:
            if reason not in ("multi_device", "same_instance") or not isinstance(by, str) or sid in flagged:
                continue
            sb, sa = h.sessions.get(sid), h.sessions.get(by)
            if across(sid, by, reason, sb.instance if sb else None, sa.instance if sa else None):
                flag_across(t, user, sid, by, reason, sb.instance if sb else None, sa.instance if sa else None,
                            "kicked_offline")
                continue
            if sa is not None and sb is not None:
                ga, gb = group(sa.platform, sa.instance), group(sb.platform, sb.instance)
                if ga is None or gb is None or ga[0] != gb[0]:
                    continue
            if older(by, sid, sa, sb):
                flagged.add(sid)
                found.add("newest_evicted", t, {
                    "user": user, "session": sid, "by": by,
                    "newer": sb.ref() if sb else {"session": sid}, "older": sa.ref() if sa else {"session": by},
                    "expected": f"{by} (older) evicted by {sid} (newer)",
                    "found": f"kicked_offline for the newer session {sid} by the older {by}"})
    if led is not None:
        for r in led.rows:
            _seq, ts, ev, sid, user, _pl, reason, by = r
            if (ev == "end" and reason in ("multi_device", "same_instance") and isinstance(by, str)
                    and sid not in flagged):
                if across(sid, by, reason, led.instances.get(sid), led.instances.get(by)):
                    flag_across(ts, user, sid, by, reason, led.instances.get(sid), led.instances.get(by), "ledger")
                    continue
                if by in seq and sid in seq and seq[by] < seq[sid]:
                    flagged.add(sid)
                    found.add("newest_evicted", ts, {
                        "user": user, "session": sid, "by": by, "login_seq": {sid: seq[sid], by: seq[by]},
                        "expected": f"{by} (login seq {seq[by]}) evicted by {sid} (seq {seq[sid]})",
                        "found": f"ledger: {sid} ended multi_device by the older {by}"})
    reported = set(h.evictions()) | (set(led.kick_ends()) if led is not None else set())
    for r in h.races:
        devs = [d for d in r.devices if d[_D_CODE] == 0 and d[_D_SESSION]
                and d[_D_SENT] is not None and d[_D_DONE] is not None]
        if devs and not any(d[_D_ALIVE] for d in devs):
            newest = max(devs, key=lambda d: d[_D_SENT])
            if newest[_D_KICKED_BY] and newest[_D_SESSION] not in flagged:
                flagged.add(newest[_D_SESSION])
                found.add("no_survivor", r.t, {
                    "user": r.user, "race": r.race, "newest": newest[_D_SESSION],
                    "kicked_by": newest[_D_KICKED_BY], "devices": len(devs),
                    "expected": "the newest login survives the race",
                    "found": f"no device alive; the newest ({newest[_D_SESSION]}) was kicked by "
                    f"{newest[_D_KICKED_BY]}"})
        for a in devs:
            if not a[_D_ALIVE] or a[_D_SESSION] in reported:
                continue  # an older device the server did evict: a lost notification, not a wrong choice
            for b in devs:
                if not b[_D_DEAD] or b[_D_SESSION] in flagged or not a[_D_DONE] < b[_D_SENT]:
                    continue
                ga, gb = group(a[_D_PLATFORM], a[_D_INSTANCE]), group(b[_D_PLATFORM], b[_D_INSTANCE])
                if ga is None or gb is None or ga[0] != gb[0]:
                    continue
                flagged.add(b[_D_SESSION])
                found.add("older_survived", r.t, {
                    "user": r.user, "race": r.race, "older": a[_D_SESSION], "newer": b[_D_SESSION],
                    "older_done": a[_D_DONE], "newer_sent": b[_D_SENT], "newer_kicked_by": b[_D_KICKED_BY],
                    "expected": f"newer {b[_D_SESSION]} survives, older {a[_D_SESSION]} is evicted",
                    "found": "the older device is alive and the newer one is not"})
    return found.result()
