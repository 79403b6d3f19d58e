"""Check ``switch_consistency``: An account switch (login of B on a connection holding A) leaves exactly B logged in."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from harness.results.checks.history import (CheckParams, CheckResult, History, _Found, _history)


def switch_consistency(rows: Iterable[Any] | History, *, params: CheckParams | None = None, found: _Found | None = None) -> CheckResult:
    """An account switch (login of B on a connection holding A) leaves exactly B logged in.

    Per ``switch`` row whose login succeeded: ``data.login_user`` == ``user`` ==
    ``data.server_user``, ``data.server_status`` == 1, REST ``online`` (when present) shows
    B Online and A Offline, and the switched-from session never gets a ``kicked_offline``.
    """
    h = _history(rows)
    found = _Found("switch_consistency") if found is None else found
    tally = found.tally  # counts over every call sharing ``found`` (a partitioned run: one call per part)
    unseen_server = unseen_online = judged = 0
    for w, n, user, sid, t, outcome, code, _detail, data, *_ in h.switches:
        if outcome == "info" or code != 0:
            continue
        judged += 1
        problems = []
        from_user = from_session = None
        if data is None:
            problems.append("switch row has no data to check")
        else:
            from_user, from_session, login_user, server_user, server_status, online, server_view = data
            if login_user != user:
                problems.append(f"getLoginUser() = {login_user!r}, expected {user!r}")
            if server_view is False:  # the protocol has no server-side status (XMPP): nothing observed
                unseen_server += 1
            else:
                if server_user != user:
                    problems.append(f"server status userID = {server_user!r}, expected {user!r}")
                if server_status != 1:
                    problems.append(f"server status = {server_status!r}, expected 1 (logged in)")
            if online is None:
                unseen_online += 1
            else:
                if user in online and online[user] != "Online":
                    problems.append(f"query_online_status says {user!r} is {online[user]!r}, expected Online")
                if (isinstance(from_user, str) and from_user != user and from_user in online
                        and online[from_user] != "Offline"):
                    problems.append(f"query_online_status says {from_user!r} is {online[from_user]!r}, "
                                    "expected Offline")
            if isinstance(from_session, str) and h.kicks.get(from_session):
                k = h.kicks[from_session][0]
                problems.append(f"the switched-from session {from_session} got kicked_offline "
                                f"({k[2]}, by {k[1]}); a switch ends it silently")
        if problems:
            found.add("mismatch", t, {
                "w": w, "n": n, "user": user, "session": sid, "from_user": from_user,
                "from_session": from_session,
                "expected": "only the new account logged in, on the client, the server and REST",
                "found": "; ".join(problems)})
    for k, v in (("unseen_server", unseen_server), ("unseen_online", unseen_online), ("judged", judged)):
        tally[k] = tally.get(k, 0) + v
    found.finisher = _notes
    return found.result()


def _notes(found: _Found) -> None:
    tally = found.tally
    unseen_server, unseen_online, judged = (tally.get(k, 0) for k in ("unseen_server", "unseen_online", "judged"))
    if unseen_server:
        found.note(f"{unseen_server} of {judged} switches: the protocol has no server-side status of a "
                   "connection; judged on the client and the admin view only")
    if unseen_online and judged:
        found.note(f"{unseen_online} of {judged} switches: no admin view of who is online "
                   "(query_online_status or the server's own) was available; not cross-checked")
