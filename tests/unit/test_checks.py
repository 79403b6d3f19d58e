"""Correctness checks over hand-written journals (docs/JOURNAL.md rows), one history per
behaviour: a clean run passes, every kind of fault is counted with a useful example."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.results.checks import (
    CHECK_NAMES,
    CheckParams,
    ChecksInputError,
    History,
    expiry_on_time,
    journal_integrity,
    kick_exactly_once,
    last_login_wins,
    main,
    policy_limit,
    read_locust_total,
    relogin_recovers,
    run_checks,
    expected_rejections,
    switch_consistency,
)
from harness.errors import ConfigError

NS = 1_000_000_000
T0 = 1_700_000_000  # unix s
REPO = Path(__file__).resolve().parents[2]


def ts(s: float) -> int:
    """Seconds after T0 -> unix ns."""
    return T0 * NS + int(s * NS)


class J:
    """A tiny journal writer: rows as users.py writes them, n assigned per worker."""

    def __init__(self, scenario: str = "kick_race") -> None:
        self.rows: list[dict] = []
        self.n: dict[str, int] = {}
        self.scenario = scenario

    def add(self, op: str, start: float, end: float | None = None, *, w: str = "w0", user: str = "u1",
            outcome: str = "ok", code: int = 0, session: str | None = None, platform: str = "Android",
            instance: str = "i0", conn: str | None = "w0/1", detail: str = "", scenario: str | None = None,
            **extra: object) -> dict:
        n = self.n.get(w, 0)
        self.n[w] = n + 1
        row = {"w": w, "n": n, "scenario": scenario or self.scenario, "op": op, "user": user,
               "platform": platform, "instance": instance, "session": session, "intended": ts(start),
               "start": ts(start), "end": ts(start if end is None else end), "outcome": outcome,
               "code": code, "detail": detail}
        if conn is not None:
            row["conn"] = conn
        row.update({k: v for k, v in extra.items() if v is not None})
        self.rows.append(row)
        return row

    def login(self, session: str, conn: str, sent: float, done: float, *, kicked: tuple = (), user: str = "u1",
              platform: str = "Android", expire_at: int | None = None, **kw: object) -> dict:
        return self.add("login", sent, done, user=user, session=session, conn=conn, platform=platform,
                        kicked=list(kicked), expire_at=expire_at, **kw)

    def kick(self, session: str, conn: str, t: float, by: str | None, reason: str = "multi_device",
             user: str = "u1") -> dict:
        return self.add("kicked_offline", t, user=user, session=session, conn=conn, by=by, detail=reason)

    def expired(self, session: str, conn: str, t: float, user: str = "u1") -> dict:
        return self.add("sig_expired", t, user=user, session=session, conn=conn)

    def tick(self, t: float, conn: str = "w0/99") -> dict:
        """Some unrelated later row (moves the run's last row time)."""
        return self.add("heartbeat", t, t, conn=conn, user="other")


def kinds(res) -> list[str]:
    return [e["kind"] for e in res.examples]


# --------------------------------------------------------------------------- kick_exactly_once


def handover(j: J, *, kick_rows: int = 1) -> None:
    """A on conn c1, then B on c2 evicts A (B's response lists A)."""
    j.login("A", "c1", 1.0, 1.1)
    j.login("B", "c2", 2.0, 2.1, kicked=("A",))
    for i in range(kick_rows):
        j.kick("A", "c1", 2.05 + i * 0.01, by="B")


def test_kick_clean_handover_has_no_violations():
    j = J()
    handover(j)
    j.tick(10)
    res = kick_exactly_once(j.rows)
    assert res.violations == 0 and res.examples == []


def test_kick_missing_notification_is_counted_as_never_arrived():  # fault drop_kick
    j = J()
    handover(j, kick_rows=0)
    j.tick(10)
    res = kick_exactly_once(j.rows, params=CheckParams(settle_s=2))
    assert res.violations == 1
    ex = res.examples[0]
    assert ex["kind"] == "missing" and ex["session"] == "A" and ex["evicted_by"] == "B"
    assert ex["user"] == "u1" and "never arrived within settle" in ex["found"]
    assert ex["t"] == ts(2.1) and res.times == [ts(2.1)]


def test_kick_missing_is_excused_when_run_ended_within_settle():
    j = J()
    handover(j, kick_rows=0)
    j.tick(3.0)  # the run ends 0.9 s after the eviction, settle is 2 s
    assert kick_exactly_once(j.rows, params=CheckParams(settle_s=2)).violations == 0


def test_kick_missing_is_excused_when_client_disconnected_first():
    j = J()
    handover(j, kick_rows=0)
    j.add("disconnect", 2.05, session="A", conn="c1", detail="closed_by_client")
    j.tick(10)
    assert kick_exactly_once(j.rows).violations == 0


def test_kick_duplicate_notification_is_counted():  # fault dup_kick
    j = J()
    handover(j, kick_rows=2)
    j.tick(10)
    res = kick_exactly_once(j.rows)
    assert res.violations == 1
    assert kinds(res) == ["duplicate"] and res.examples[0]["session"] == "A" and res.examples[0]["count"] == 2


def test_kick_for_session_never_evicted_is_counted():  # fault kick_newest, as kick_exactly_once sees it
    j = J()
    j.login("A", "c1", 1.0, 1.1)
    j.login("B", "c2", 2.0, 2.1, kicked=())
    j.kick("B", "c2", 2.15, by="A")
    j.tick(10)
    res = kick_exactly_once(j.rows)
    assert res.violations == 1
    ex = res.examples[0]
    assert ex["kind"] == "unreported" and ex["session"] == "B" and ex["by"] == "A"


def _xmpp_login(j: J, session: str, conn: str, sent: float, done: float, instance: str) -> dict:
    """A login row as the xmpp driver journals it: no ``kicked`` list (XMPP names no evicted sessions)."""
    return j.add("login", sent, done, session=session, conn=conn, instance=instance)


def test_kick_without_eviction_lists_is_explained_by_the_newer_login():
    """XMPP: the evicting login's answer names nobody; the newer login of the account explains the
    kick (a false 'unreported' on every ejabberd/Prosody kick before this rule)."""
    j = J()
    _xmpp_login(j, "A", "c1", 1.0, 1.1, "i1")
    _xmpp_login(j, "B", "c2", 2.0, 2.1, "i2")
    j.kick("A", "c1", 2.05, by=None)
    j.tick(10)
    res = kick_exactly_once(j.rows)
    assert res.violations == 0, res.examples
    assert res.notes and "name no evicted sessions" in res.notes[0]


def test_kick_without_eviction_lists_of_the_newest_session_is_counted():
    j = J()
    _xmpp_login(j, "A", "c1", 1.0, 1.1, "i1")
    _xmpp_login(j, "B", "c2", 2.0, 2.1, "i2")
    j.kick("B", "c2", 2.15, by=None)          # nobody logged in after B: B was not evicted
    j.tick(10)
    res = kick_exactly_once(j.rows)
    assert res.violations == 1 and res.examples[0]["kind"] == "unreported" and res.examples[0]["session"] == "B"


def test_same_instance_kick_without_lists_needs_a_login_of_that_instance():
    j = J()
    _xmpp_login(j, "A", "c1", 1.0, 1.1, "i1")
    _xmpp_login(j, "B", "c2", 2.0, 2.1, "i2")   # another instance: cannot explain a same_instance kick
    j.kick("A", "c1", 2.05, by=None, reason="same_instance")
    j.tick(10)
    assert kick_exactly_once(j.rows).violations == 1
    _xmpp_login(j, "C", "c3", 2.01, 2.2, "i1")
    assert kick_exactly_once(j.rows).violations == 0


def test_eviction_lists_present_keep_the_strict_rule():
    """A tim run (login answers list evictions): a kick no answer listed stays 'unreported' even
    when a newer login exists."""
    j = J()
    j.login("A", "c1", 1.0, 1.1)
    j.login("B", "c2", 2.0, 2.1, kicked=())
    j.kick("A", "c1", 2.05, by="B")
    j.tick(10)
    assert kick_exactly_once(j.rows).violations == 1


def test_rest_kick_event_is_legit_only_after_a_rest_kick_op():
    j = J()
    j.login("A", "c1", 1.0, 1.1)
    j.add("rest_kick", 2.0, 2.2, conn=None, user="u1")
    j.kick("A", "c1", 2.1, by=None, reason="rest_kick")
    j.tick(10)
    assert kick_exactly_once(j.rows).violations == 0
    j2 = J()
    j2.login("A", "c1", 1.0, 1.1)
    j2.kick("A", "c1", 2.1, by=None, reason="rest_kick")
    j2.tick(10)
    res = kick_exactly_once(j2.rows)
    assert res.violations == 1 and "rest_kick" in res.examples[0]["found"]


def test_kick_uses_ledger_evictions_when_present():
    j = J()
    j.login("A", "c1", 1.0, 1.1)
    j.add("rest_kick", 2.0, 2.2, conn=None)
    j.tick(10)
    ledger = [
        {"seq": 1, "ts": ts(1.05), "event": "login", "sessionID": "A", "userID": "u1", "platform": "Android",
         "instanceID": "i0", "reason": None, "by": None},
        {"seq": 2, "ts": ts(2.1), "event": "end", "sessionID": "A", "userID": "u1", "platform": "Android",
         "instanceID": "i0", "reason": "rest_kick", "by": None},
    ]
    res = kick_exactly_once(j.rows, ledger=ledger)
    assert res.violations == 1 and res.examples[0]["kind"] == "missing"
    assert res.examples[0]["reported_by"] == "ledger"
    j.kick("A", "c1", 2.15, by=None, reason="rest_kick")
    assert kick_exactly_once(j.rows, ledger=ledger).violations == 0


# --------------------------------------------------------------------------- policy_limit


def race_row(j: J, devices: list[dict], online: list | None = None, policy: str = "single_platform") -> dict:
    return j.add("race", 1.0, 3.0, conn=None, race="r1",
                 data={"devices": devices, "settle_ms": 500, "send_spread_ms": 1.0,
                       "survivors": [d["session"] for d in devices if d["alive"]], "online": online,
                       "policy": policy})


def dev(platform: str, session: str, sent: float, done: float, alive: bool, kicked_by: str | None = None) -> dict:
    return {"platform": platform, "instance": f"r1-{session}", "session": session, "code": 0,
            "sent": ts(sent), "done": ts(done), "kicked_by": kicked_by, "alive": alive}


def test_policy_race_clean():
    j = J()
    race_row(j, [dev("Android", "A", 1.0, 1.1, False, "B"), dev("iOS", "B", 1.2, 1.3, True)],
             online=[{"Platform": "iOS", "Status": "Online"}])
    assert policy_limit(j.rows).violations == 0


def test_policy_two_survivors_in_single_platform_is_a_violation():  # fault double_login in a race
    j = J()
    race_row(j, [dev("Android", "A", 1.0, 1.1, True), dev("iOS", "B", 1.2, 1.3, True)],
             online=[{"Platform": "Android", "Status": "Online"}, {"Platform": "iOS", "Status": "Online"}])
    res = policy_limit(j.rows)
    assert res.violations == 2
    assert sorted(kinds(res)) == ["race_online", "race_survivors"]
    surv = next(e for e in res.examples if e["kind"] == "race_survivors")
    assert surv["survivors"] == ["A", "B"] and surv["limit"] == 1 and surv["race"] == "r1"


def test_policy_groups_follow_the_policy():
    j = J()
    race_row(j, [dev("Android", "A", 1.0, 1.1, True), dev("Web", "B", 1.2, 1.3, True)])
    assert policy_limit(j.rows, params=CheckParams(policy="dual_platform")).violations == 0
    assert policy_limit(j.rows, params=CheckParams(policy="single_platform")).violations == 1


def test_policy_double_login_seen_from_journal_sessions():  # fault double_login outside races
    j = J()
    j.login("A", "c1", 1.0, 1.1)
    j.login("B", "c2", 2.0, 2.1, kicked=())
    j.add("logout", 9.0, 9.1, session="A", conn="c1")
    j.add("logout", 9.0, 9.1, session="B", conn="c2")
    j.tick(12)
    res = policy_limit(j.rows, params=CheckParams(settle_s=2))
    assert res.violations == 1
    ex = res.examples[0]
    assert ex["kind"] == "sessions_overlap" and {s["session"] for s in ex["sessions"]} == {"A", "B"}
    assert ex["overlap_s"] == pytest.approx(6.9, abs=0.01)


def test_policy_handover_with_eviction_is_clean():
    j = J()
    handover(j)
    j.add("logout", 9.0, 9.1, session="B", conn="c2")
    j.tick(12)
    assert policy_limit(j.rows).violations == 0


def ledger_rows(*spec: tuple) -> list[dict]:
    out = []
    for i, (ev, sid, platform, reason, by) in enumerate(spec, 1):
        out.append({"seq": i, "ts": ts(i), "event": ev, "sessionID": sid, "userID": "u1", "platform": platform,
                    "instanceID": sid, "reason": reason, "by": by})
    return out


def test_policy_ledger_replay():
    clean = ledger_rows(("login", "A", "Android", None, None), ("end", "A", "Android", "multi_device", "B"),
                        ("login", "B", "iOS", None, None))
    assert policy_limit([], ledger=clean).violations == 0
    late_end = ledger_rows(("login", "A", "Android", None, None), ("login", "B", "iOS", None, None),
                           ("end", "A", "Android", "multi_device", "B"))
    assert policy_limit([], ledger=late_end).violations == 0  # the end is written right after: tolerated
    double = ledger_rows(("login", "A", "Android", None, None), ("login", "B", "iOS", None, None),
                         ("end", "A", "Android", "logout", None))
    res = policy_limit([], ledger=double)
    assert res.violations == 1
    assert res.examples[0]["kind"] == "ledger_over_limit" and res.examples[0]["live"] == ["A", "B"]
    assert res.examples[0]["seq"] == 2


# --------------------------------------------------------------------------- last_login_wins


def test_newest_kicked_instead_of_oldest_is_a_violation():  # fault kick_newest
    j = J()
    j.login("A", "c1", 1.0, 1.1)
    j.login("B", "c2", 2.0, 2.1, kicked=())
    j.kick("B", "c2", 2.15, by="A")
    j.tick(10)
    res = last_login_wins(j.rows)
    assert res.violations == 1
    ex = res.examples[0]
    assert ex["kind"] == "newest_evicted" and ex["session"] == "B" and ex["by"] == "A"
    assert ex["older"]["session"] == "A" and ex["newer"]["session"] == "B"


def test_last_login_wins_clean_and_concurrent_logins_are_not_judged():
    j = J()
    handover(j)
    # concurrent: C sent before D completed, D kicked by C: order unknown, not a violation
    j.login("C", "c3", 5.0, 5.3, user="u2")
    j.login("D", "c4", 5.1, 5.2, user="u2", kicked=())
    j.kick("D", "c4", 5.25, by="C", user="u2")
    assert last_login_wins(j.rows).violations == 0


def test_last_login_wins_race_older_alive_newer_dead():
    j = J()
    race_row(j, [dev("Android", "A", 1.0, 1.1, True), dev("iOS", "B", 1.2, 1.3, False, kicked_by="A")])
    res = last_login_wins(j.rows)
    assert res.violations == 1 and res.examples[0]["kind"] == "older_survived"
    assert res.examples[0]["older"] == "A" and res.examples[0]["newer"] == "B"


def test_last_login_wins_from_ledger_order():
    led = ledger_rows(("login", "A", "Android", None, None), ("login", "B", "iOS", None, None),
                      ("end", "B", "iOS", "multi_device", "A"))
    res = last_login_wins([], ledger=led)
    assert res.violations == 1 and res.examples[0]["session"] == "B"
    good = ledger_rows(("login", "A", "Android", None, None), ("end", "A", "Android", "multi_device", "B"),
                       ("login", "B", "iOS", None, None))
    assert last_login_wins([], ledger=good).violations == 0


# --------------------------------------------------------------------------- switch_consistency


def switch(j: J, t: float, **data_over: object) -> dict:
    data = {"from_user": "alice", "from_session": "S1", "login_user": "bob", "server_user": "bob",
            "server_status": 1, "online": {"bob": "Online", "alice": "Offline"}}
    data.update(data_over)
    return j.add("switch", t, t + 0.2, user="bob", session="S2", conn="c1", data=data)


def test_switch_clean():
    j = J("account_switch")
    j.login("S1", "c1", 0.5, 0.6, user="alice")
    switch(j, 1.0)
    switch(j, 2.0, online=None)
    assert switch_consistency(j.rows).violations == 0


def test_switch_mismatch_is_counted_with_what_differed():
    j = J("account_switch")
    switch(j, 1.0, server_user="alice")
    switch(j, 2.0, online={"bob": "Online", "alice": "Online"})
    res = switch_consistency(j.rows)
    assert res.violations == 2
    assert "server status userID = 'alice'" in res.examples[0]["found"]
    assert "'alice' is 'Online', expected Offline" in res.examples[1]["found"]


def test_switch_from_session_must_not_be_kicked():
    j = J("account_switch")
    switch(j, 1.0)
    j.kick("S1", "c1", 1.1, by="X", user="alice")
    res = switch_consistency(j.rows)
    assert res.violations == 1 and "switched-from session S1 got kicked_offline" in res.examples[0]["found"]


def test_switch_whose_login_failed_is_not_judged():
    j = J("account_switch")
    j.add("switch", 1.0, 1.2, user="bob", outcome="fail", code=70001, conn="c1", data=None)
    assert switch_consistency(j.rows).violations == 0


# --------------------------------------------------------------------------- relogin_recovers


def expiry_cycle(j: J, t: float, *, relogin_end: float | None, outcome: str = "ok") -> None:
    j.expired("S1", "c1", t)
    if relogin_end is not None:
        j.add("login", t + 0.1, relogin_end, session="S2" if outcome == "ok" else None, conn="c1",
              outcome=outcome, code=0 if outcome == "ok" else 70001, kicked=[], expire_at=T0 + 100)
        j.add("relogin", t, relogin_end, session="S2" if outcome == "ok" else None, conn="c1", outcome=outcome,
              code=0 if outcome == "ok" else 70001,
              data={"trigger": "sig_expired", "old_session": "S1", "attempts": 1})


def test_relogin_clean():
    j = J("relogin_expiry")
    j.login("S1", "c1", 0.0, 0.1)
    expiry_cycle(j, 10.0, relogin_end=10.5)
    j.tick(40)
    assert relogin_recovers(j.rows).violations == 0


def test_no_relogin_after_expiry_is_a_violation():
    j = J("relogin_expiry")
    j.login("S1", "c1", 0.0, 0.1)
    expiry_cycle(j, 10.0, relogin_end=None)
    j.add("heartbeat", 15.0, 15.01, conn="c1")
    j.tick(40)
    res = relogin_recovers(j.rows, params=CheckParams(relogin_bound_s=10))
    assert res.violations == 1
    ex = res.examples[0]
    assert ex["kind"] == "no_relogin" and ex["session"] == "S1" and ex["trigger"] == "sig_expired"
    assert ex["found"] == "no relogin attempt on this connection"


def test_relogin_failed_or_too_late_is_a_violation():
    j = J("relogin_expiry")
    j.login("S1", "c1", 0.0, 0.1)
    expiry_cycle(j, 10.0, relogin_end=10.5, outcome="fail")
    j.tick(40)
    res = relogin_recovers(j.rows)
    assert res.violations == 2  # the expiry, and the failed 70001 login inside the relogin
    assert "70001" in res.examples[0]["found"]
    j2 = J("relogin_expiry")
    j2.login("S1", "c1", 0.0, 0.1)
    expiry_cycle(j2, 10.0, relogin_end=25.0)
    j2.tick(40)
    res2 = relogin_recovers(j2.rows, params=CheckParams(relogin_bound_s=10))
    assert res2.violations == 1 and "after 15.0 s" in res2.examples[0]["found"]


def test_relogin_excused_when_run_ends_within_bound():
    j = J("relogin_expiry")
    j.login("S1", "c1", 0.0, 0.1)
    expiry_cycle(j, 10.0, relogin_end=None)
    j.tick(12)
    assert relogin_recovers(j.rows, params=CheckParams(relogin_bound_s=10)).violations == 0


def test_expired_sig_login_failure_needs_a_relogin():
    j = J("relogin_expiry")
    j.add("login", 1.0, 1.1, conn="c1", outcome="fail", code=70001)
    j.tick(40)
    res = relogin_recovers(j.rows)
    assert res.violations == 1 and res.examples[0]["trigger"] == "login failed 70001"
    j.add("relogin", 1.1, 1.6, session="S2", conn="c1", data={"trigger": 70001, "old_session": None,
                                                              "attempts": 1})
    assert relogin_recovers(j.rows).violations == 0


def test_login_loop_is_a_violation():
    j = J("relogin_expiry")
    j.add("login", 1.0, 1.1, conn="c1", outcome="fail", code=70050)
    j.add("login", 1.3, 1.4, conn="c1", outcome="fail", code=70050)
    j.add("login", 5.0, 5.1, conn="c1", session="S1", kicked=[])
    j.tick(40)
    res = relogin_recovers(j.rows)
    assert res.violations == 1
    ex = res.examples[0]
    assert ex["kind"] == "login_loop" and ex["failed_code"] == 70050 and ex["gap_s"] == pytest.approx(0.2)


# --------------------------------------------------------------------------- expiry_on_time


def expiring_session(j: J, expire_at_s: int = 10) -> None:
    j.login("S1", "c1", 0.0, 0.1, expire_at=T0 + expire_at_s)


def test_expiry_on_time_clean():
    j = J("relogin_expiry")
    expiring_session(j)
    j.expired("S1", "c1", 15.4)  # deadline = 10 + leeway 5
    j.tick(40)
    assert expiry_on_time(j.rows, params=CheckParams(leeway_s=5)).violations == 0


def test_expiry_late_is_a_violation():  # fault delay_expiry (8 s late)
    j = J("relogin_expiry")
    expiring_session(j)
    j.expired("S1", "c1", 23.0)
    j.tick(40)
    res = expiry_on_time(j.rows, params=CheckParams(leeway_s=5, expiry_tolerance_s=3))
    assert res.violations == 1
    ex = res.examples[0]
    assert ex["kind"] == "late" and ex["session"] == "S1" and ex["deadline"] == ts(15)
    assert "8.0 s after the deadline" in ex["found"]


def test_expiry_early_is_a_violation():
    j = J("relogin_expiry")
    expiring_session(j)
    j.expired("S1", "c1", 13.0)
    j.tick(40)
    res = expiry_on_time(j.rows, params=CheckParams(leeway_s=5, clock_skew_s=1))
    assert res.violations == 1 and res.examples[0]["kind"] == "early"


def test_expiry_twice_is_a_violation():
    j = J("relogin_expiry")
    expiring_session(j)
    j.expired("S1", "c1", 15.2)
    j.expired("S1", "c1", 15.9)
    j.tick(40)
    res = expiry_on_time(j.rows)
    assert res.violations == 1 and res.examples[0]["kind"] == "twice"


def test_expiry_missing_is_a_violation_unless_session_ended_or_run_ended():
    j = J("relogin_expiry")
    expiring_session(j)
    for t in range(2, 40, 2):
        j.add("heartbeat", t, t + 0.01, conn="c1")
    res = expiry_on_time(j.rows)
    assert res.violations == 1 and res.examples[0]["kind"] == "missing"
    j2 = J("relogin_expiry")
    expiring_session(j2)
    j2.add("logout", 12.0, 12.1, session="S1", conn="c1")
    j2.tick(40)
    assert expiry_on_time(j2.rows).violations == 0
    j3 = J("relogin_expiry")
    expiring_session(j3)
    j3.tick(16)  # run ended before deadline + tolerance
    assert expiry_on_time(j3.rows).violations == 0


def test_expiry_event_for_a_kicked_session_is_a_violation():
    j = J()
    handover(j)
    j.expired("A", "c1", 3.0)
    j.tick(10)
    res = expiry_on_time(j.rows)
    assert res.violations == 1 and res.examples[0]["kind"] == "two_events"


# --------------------------------------------------------------------------- journal_integrity


def requests_of(rows: list[dict]) -> int:
    """Rows Locust counts as requests: events (kicked_offline, sig_expired, disconnect, fault) are not."""
    return sum(r["op"] not in ("kicked_offline", "sig_expired", "disconnect", "fault") for r in rows)


def test_integrity_clean_and_matching_locust_total():
    j = J()
    handover(j)
    j.add("heartbeat", 3.0, 3.01, w="w1")
    assert journal_integrity(j.rows, locust_total=requests_of(j.rows)).violations == 0


def test_integrity_compares_locust_with_request_rows_only():
    j = J()
    handover(j)                                 # two logins + one kicked_offline event
    j.add("disconnect", 3.0, detail="closed_by_client")
    assert requests_of(j.rows) == 2
    assert journal_integrity(j.rows, locust_total=2).violations == 0
    res = journal_integrity(j.rows, locust_total=len(j.rows))   # events are not Locust requests
    assert res.violations == 1
    ex = res.examples[0]
    assert (ex["journal_rows"], ex["journal_requests"], ex["locust_requests"]) == (4, 2, 4)


# --------------------------------------------------------------------------- expected_rejections


def test_expected_rejection_got_is_no_violation():
    j = J("relogin_expiry")
    j.add("login", 1.0, 1.1, outcome="fail", code=70001, conn="c1", expect=70001)
    j.login("S1", "c1", 1.2, 1.3)
    res = expected_rejections(j.rows)
    assert res.violations == 0


def test_stale_sig_accepted_is_a_violation():
    j = J("relogin_expiry")
    j.login("S1", "c1", 1.0, 1.1, expect=70001)                  # the server took an expired sig
    j.add("login", 2.0, 2.1, outcome="fail", code=70009, conn="c2", expect=70001)  # wrong refusal
    j.add("login", 3.0, 8.0, outcome="info", code=-1, conn="c3", expect=70001)     # no answer: no evidence
    res = expected_rejections(j.rows)
    assert res.violations == 2
    kinds = {e["kind"]: e for e in res.examples}
    assert kinds["accepted"]["session"] == "S1" and "stale UserSig" in kinds["accepted"]["found"]
    assert kinds["accepted"]["expected"].startswith("code 70001")
    assert "70009" in kinds["wrong_code"]["found"]
    assert len(res.times) == 2


def test_expected_rejections_runs_from_the_run_folder(tmp_path):
    j = J("relogin_expiry")
    j.login("S1", "c1", 1.0, 1.1, expect=70001)
    j.tick(30)
    run = write_run(tmp_path, {"w0": j.rows})
    res = run_checks(run)
    assert "expected_rejections" in CHECK_NAMES and res["expected_rejections"].violations == 1


def test_integrity_gap_in_n():
    j = J()
    for t in range(6):
        j.add("heartbeat", t, t + 0.01)
    del j.rows[2:4]
    res = journal_integrity(j.rows)
    assert res.violations == 1
    ex = res.examples[0]
    assert ex["kind"] == "gap" and ex["w"] == "w0" and (ex["missing_from"], ex["missing_to"]) == (2, 3)


@pytest.mark.parametrize("chunk", [1, 3, 1 << 20])
def test_integrity_gaps_and_duplicates_over_a_long_n_range(tmp_path, monkeypatch, chunk):
    """The seen-n bitmap (one bit per n) and the gap finder that reads it a chunk at a time:
    gaps that start, end or span chunk edges, at the first and last n, and duplicates."""
    from harness.results.checks import history as hist

    monkeypatch.setattr(hist, "_RUN_CHUNK", chunk)
    top = 200
    gone = {0, 7, 8, 15, 16, 17, 23, *range(40, 97), 130, 199, 200}
    rows = []
    for n in range(top + 1):
        if n not in gone:
            rows.append({"w": "w0", "n": n, "op": "heartbeat", "start": 10 + n, "end": 11 + n, "intended": 10 + n,
                         "outcome": "ok"})
    rows.insert(50, dict(rows[3]))   # n=4 again
    rows.append(dict(rows[-1]))      # n=198 again
    for res in (journal_integrity(rows), run_checks(write_run(tmp_path, {"w0": rows}))["journal_integrity"]):
        runs = sorted((e["missing_from"], e["missing_to"]) for e in res.examples if e["kind"] == "gap")
        # n 199 and 200 were never written and nothing came after them: the top is 198, no gap there
        assert runs == [(0, 0), (7, 8), (15, 17), (23, 23), (40, 96), (130, 130)]
        assert sorted(e["n"] for e in res.examples if e["kind"] == "duplicate_n") == [4, 198]
        assert res.violations == 8


def test_integrity_duplicate_n_and_bad_rows():
    j = J()
    j.add("heartbeat", 1.0, 1.01)
    j.rows.append(dict(j.rows[0]))
    j.add("login", 2.0, 1.5, outcome="maybe")
    res = journal_integrity(j.rows)
    assert res.violations == 2
    bad = next(e for e in res.examples if e["kind"] == "bad_row")
    assert any("outcome" in p for p in bad["problems"]) and any("end < start" in p for p in bad["problems"])
    assert any(e["kind"] == "duplicate_n" and e["n"] == 0 for e in res.examples)


def test_integrity_locust_total_mismatch():
    j = J()
    handover(j)
    res = journal_integrity(j.rows, locust_total=requests_of(j.rows) + 2)
    assert res.violations == 1
    assert res.examples[0]["journal_requests"] == 2 and res.examples[0]["locust_requests"] == 4


def test_history_never_raises_on_garbage_rows():
    rows = [None, 5, {"op": "login", "session": ["x"], "user": {"a": 1}, "kicked": "A"},
            {"w": "w0", "n": 0, "op": "kicked_offline", "session": {"x": 1}, "start": 1, "end": 1,
             "intended": 1, "outcome": "ok", "by": [1]},
            {"w": "w0", "n": 1, "op": "race", "start": 1, "end": 2, "intended": 1, "outcome": "ok",
             "data": {"devices": [None, {"platform": ["x"], "alive": True}], "online": "nope"}}]
    h = History.from_rows(rows)
    for check in (kick_exactly_once, policy_limit, last_login_wins, switch_consistency, relogin_recovers,
                  expiry_on_time, journal_integrity, expected_rejections):
        check(h)
    assert journal_integrity(h).violations == 3  # two non-objects and one row without w/n/times


# --------------------------------------------------------------------------- run_checks + CLI


def write_run(tmp_path: Path, rows_by_worker: dict[str, list[dict]], *, config: str | None = None,
              locust_total: int | None = None, junk: bytes = b"") -> Path:
    run = tmp_path / "20250101-000000-kick_race"
    (run / "journal").mkdir(parents=True)
    for w, rows in rows_by_worker.items():
        data = "".join(json.dumps(r) + "\n" for r in rows).encode() + junk
        (run / "journal" / f"{w}.jsonl").write_bytes(data)
    (run / "config.yaml").write_text(config or "target:\n  policy: single_platform\nrun:\n  settle_s: 2\n")
    if locust_total is not None:
        (run / "locust_stats.csv").write_text(
            "Type,Name,Request Count,Failure Count\nWS,login,3,0\n,Aggregated,%d,0\n" % locust_total)
    return run


def test_run_checks_on_a_run_folder(tmp_path):
    j = J()
    handover(j)
    j.tick(10)
    run = write_run(tmp_path, {"w0": j.rows}, locust_total=requests_of(j.rows))
    assert read_locust_total(run) == requests_of(j.rows)
    res = run_checks(run, locust_total=read_locust_total(run))
    assert list(res) == list(CHECK_NAMES)
    assert all(r.violations == 0 for r in res.values())
    only = run_checks(run, enabled=["kick_exactly_once"])
    assert list(only) == ["kick_exactly_once"]


def test_run_checks_counts_a_damaged_line_and_rejects_bad_config(tmp_path):
    j = J()
    handover(j)
    run = write_run(tmp_path, {"w0": j.rows}, junk=b'{"w": "w0", "n": 4, "op"')
    assert run_checks(run)["journal_integrity"].violations == 1
    with pytest.raises(ConfigError, match="checks.enabled"):
        run_checks(run, enabled=["no_such_check"])
    with pytest.raises(ConfigError, match="target.policy"):
        run_checks(run, config={"target": {"policy": "everything"}})
    with pytest.raises(ChecksInputError):
        run_checks(tmp_path / "missing")


def test_cli_exit_codes(tmp_path, capsys):
    j = J()
    handover(j, kick_rows=0)  # drop_kick
    j.tick(10)
    bad = write_run(tmp_path / "bad", {"w0": j.rows})
    assert main([str(bad)]) == 4
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert len(lines) == len(CHECK_NAMES)
    assert lines[0].startswith("kick_exactly_once") and "violations=1" in lines[0] and '"session": "A"' in lines[0]
    good = J()
    handover(good)
    ok_run = write_run(tmp_path / "good", {"w0": good.rows})
    assert main([str(ok_run)]) == 0
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_cli_runs_as_a_module(tmp_path):
    j = J()
    handover(j, kick_rows=2)  # dup_kick
    j.tick(10)
    run = write_run(tmp_path, {"w0": j.rows})
    proc = subprocess.run([sys.executable, "-m", "harness.checks", str(run)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 4, proc.stderr
    assert "kick_exactly_once" in proc.stdout and "Traceback" not in proc.stderr


def test_last_login_wins_race_without_survivor():
    j = J()
    race_row(j, [dev("Android", "A", 1.0, 1.1, False, kicked_by="B"),
                 dev("iOS", "B", 1.2, 1.3, False, kicked_by="A")])
    res = last_login_wins(j.rows)
    assert res.violations == 1 and res.examples[0]["kind"] == "no_survivor"
    assert res.examples[0]["newest"] == "B"


def test_missing_kick_seen_by_a_race_is_not_excused_by_the_later_disconnect():  # drop_kick in kick_race
    j = J()
    handover(j, kick_rows=0)
    race_row(j, [dev("Android", "A", 1.0, 1.1, True), dev("Android", "B", 2.0, 2.1, True)])
    j.add("disconnect", 2.6, session="A", conn="c1", detail="closed_by_client")
    j.tick(10)
    res = kick_exactly_once(j.rows, params=CheckParams(settle_s=2))
    assert res.violations == 1 and res.examples[0]["kind"] == "missing"
    assert "race still saw the device logged in" in res.examples[0]["found"]
    # the server did pick the right device: not a last_login_wins problem
    assert last_login_wins(j.rows).violations == 0


def test_failed_relogin_then_close_is_not_excused_but_leaving_without_trying_is():
    j = J("relogin_expiry")
    j.login("S1", "c1", 0.0, 0.1)
    expiry_cycle(j, 10.0, relogin_end=10.5, outcome="fail")
    j.add("disconnect", 11.0, conn="c1", detail="closed_by_client")
    j.tick(40)
    assert relogin_recovers(j.rows).violations == 1
    j2 = J("mass_login")
    j2.login("S1", "c1", 0.0, 0.1)
    j2.expired("S1", "c1", 10.0)
    j2.add("disconnect", 11.0, conn="c1", detail="closed_by_client")
    j2.tick(40)
    assert relogin_recovers(j2.rows).violations == 0


# --------------------------------------------------------------------------- policies max_sessions / unlimited

MAX2 = CheckParams(policy="max_sessions", max_sessions=2, settle_s=2)
UNLIMITED = CheckParams(policy="unlimited", settle_s=2)


def test_params_read_max_sessions_and_name_a_bad_one():
    p = CheckParams.from_config({"target": {"policy": "max_sessions", "max_sessions": 4}})
    assert (p.policy, p.max_sessions) == ("max_sessions", 4)
    assert CheckParams.from_config({}).max_sessions == 10
    with pytest.raises(ConfigError) as exc:
        CheckParams.from_config({"target": {"policy": "max_sessions", "max_sessions": 0}})
    assert exc.value.key == "target.max_sessions"


def test_max_sessions_2_three_live_sessions_across_platforms_is_a_violation():
    j = J()
    j.login("A", "c1", 1.0, 1.1, platform="Android", instance="a")
    j.login("B", "c2", 2.0, 2.1, platform="Web", instance="b")
    j.login("C", "c3", 3.0, 3.1, platform="Mac", instance="c")  # nobody evicted: 3 > 2
    for sid, conn in (("A", "c1"), ("B", "c2"), ("C", "c3")):
        j.add("logout", 9.0, 9.1, session=sid, conn=conn)
    j.tick(12)
    res = policy_limit(j.rows, params=MAX2)
    assert res.violations == 1
    ex = res.examples[0]
    assert ex["kind"] == "sessions_overlap" and ex["group"] == "all" and ex["limit"] == 2
    assert {x["session"] for x in ex["sessions"]} == {"A", "B", "C"}
    # the same journal is fine with a limit of 3, and a violation of single_platform's limit of 1
    assert policy_limit(j.rows, params=CheckParams(policy="max_sessions", max_sessions=3)).violations == 0
    assert policy_limit(j.rows, params=CheckParams(policy="single_platform")).violations == 1


def test_max_sessions_2_race_and_ledger():
    j = J()
    race_row(j, [dev("Android", "A", 1.0, 1.1, False, "C"), dev("Web", "B", 1.2, 1.3, True),
                 dev("iOS", "C", 1.4, 1.5, True)], online=[{"Platform": "Web", "Status": "Online"},
                                                           {"Platform": "iOS", "Status": "Online"}],
             policy="max_sessions")
    assert policy_limit(j.rows, params=MAX2).violations == 0
    assert last_login_wins(j.rows, params=MAX2).violations == 0
    j2 = J()
    race_row(j2, [dev("Android", "A", 1.0, 1.1, True), dev("Web", "B", 1.2, 1.3, True),
                  dev("iOS", "C", 1.4, 1.5, True)], policy="max_sessions")
    res = policy_limit(j2.rows, params=MAX2)
    assert res.violations == 1 and res.examples[0]["kind"] == "race_survivors" and res.examples[0]["limit"] == 2
    over = ledger_rows(("login", "A", "Android", None, None), ("login", "B", "Web", None, None),
                       ("login", "C", "iOS", None, None), ("end", "A", "Android", "logout", None))
    res = policy_limit([], params=MAX2, ledger=over)
    assert res.violations == 1 and res.examples[0]["kind"] == "ledger_over_limit"
    fits = ledger_rows(("login", "A", "Android", None, None), ("login", "B", "Web", None, None),
                       ("login", "C", "iOS", None, None), ("end", "A", "Android", "multi_device", "C"))
    assert policy_limit([], params=MAX2, ledger=fits).violations == 0


def five_concurrent(j: J) -> None:
    for i, platform in enumerate(["Android", "iOS", "Web", "Web", "Mac"]):
        j.login(f"S{i}", f"c{i}", 1.0 + i, 1.1 + i, platform=platform, instance=f"inst-{i}")
    for i in range(5):
        j.add("logout", 9.0, 9.1, session=f"S{i}", conn=f"c{i}")
    j.tick(12)


def test_unlimited_five_concurrent_sessions_is_clean():
    j = J()
    five_concurrent(j)
    race_row(j, [{**dev(p, f"R{i}", 1.0 + i / 10, 1.05 + i / 10, True), "instance": f"r1-d{i}"}
                 for i, p in enumerate(["Android", "iOS", "Web", "Web", "Mac"])],
             online=[{"Platform": p, "Status": "Online"} for p in ["Android", "iOS", "Web", "Web", "Mac"]],
             policy="unlimited")
    led = ledger_rows(*[("login", f"S{i}", p, None, None) for i, p in enumerate(["Android", "iOS", "Web", "Web", "Mac"])])
    assert policy_limit(j.rows, params=UNLIMITED, ledger=led).violations == 0
    assert last_login_wins(j.rows, params=UNLIMITED, ledger=led).violations == 0
    # the same history breaks every platform policy
    assert policy_limit(j.rows, params=CheckParams(policy="single_platform")).violations > 0


def test_unlimited_same_instance_duplicate_is_the_only_policy_limit_violation():
    j = J()
    j.login("A", "c1", 1.0, 1.1, platform="Android", instance="phone")
    j.login("B", "c2", 2.0, 2.1, platform="Android", instance="phone")  # should have replaced A
    j.login("C", "c3", 3.0, 3.1, platform="Web", instance="tab")
    for sid, conn in (("A", "c1"), ("B", "c2"), ("C", "c3")):
        j.add("logout", 9.0, 9.1, session=sid, conn=conn)
    j.tick(12)
    res = policy_limit(j.rows, params=UNLIMITED)
    assert res.violations == 1
    ex = res.examples[0]
    assert ex["kind"] == "sessions_overlap" and ex["group"] == "instance:phone"
    assert {x["session"] for x in ex["sessions"]} == {"A", "B"}
    same = [{**dev("iOS", f"R{i}", 1.0 + i / 10, 1.05 + i / 10, True), "instance": "r1-same"} for i in range(2)]
    j2 = J()
    race_row(j2, same, online=[{"Platform": "iOS", "Status": "Online"}] * 2, policy="unlimited")
    assert sorted(kinds(policy_limit(j2.rows, params=UNLIMITED))) == ["race_online", "race_survivors"]
    j3 = J()
    race_row(j3, [{**same[0], "alive": False, "kicked_by": "R1"}, same[1]],
             online=[{"Platform": "iOS", "Status": "Online"}], policy="unlimited")
    assert policy_limit(j3.rows, params=UNLIMITED).violations == 0
    assert last_login_wins(j3.rows, params=UNLIMITED).violations == 0
    dup = ledger_rows(("login", "A", "iOS", None, None), ("login", "B", "iOS", None, None))
    for r in dup:
        r["instanceID"] = "phone"
    assert kinds(policy_limit([], params=UNLIMITED, ledger=dup)) == ["ledger_over_limit"]


def test_unlimited_kick_of_another_instance_is_a_last_login_wins_violation():
    """A wrongful eviction breaks no limit (fewer sessions, not more), so policy_limit stays
    clean; last_login_wins judges who a login may evict and reports it."""
    j = J()
    j.login("A", "c1", 1.0, 1.1, platform="Android", instance="phone")
    j.login("B", "c2", 2.0, 2.1, platform="Web", instance="tab", kicked=("A",))
    j.kick("A", "c1", 2.05, by="B")
    j.tick(10)
    assert policy_limit(j.rows, params=UNLIMITED).violations == 0
    res = last_login_wins(j.rows, params=UNLIMITED)
    assert res.violations == 1
    ex = res.examples[0]
    assert ex["kind"] == "evicted_across_instances" and ex["session"] == "A" and ex["by"] == "B"
    assert ex["instances"] == {"A": "phone", "B": "tab"}
    # the same handover is the expected behaviour of single_platform
    assert last_login_wins(j.rows).violations == 0
    # same instance: allowed
    j2 = J()
    j2.login("A", "c1", 1.0, 1.1, platform="Android", instance="phone")
    j2.login("B", "c2", 2.0, 2.1, platform="Android", instance="phone", kicked=("A",))
    j2.kick("A", "c1", 2.05, by="B", reason="same_instance")
    j2.tick(10)
    assert last_login_wins(j2.rows, params=UNLIMITED).violations == 0
    # from the ledger alone
    led = ledger_rows(("login", "A", "Android", None, None), ("login", "B", "Web", None, None),
                      ("end", "A", "Android", "multi_device", "B"))
    res = last_login_wins([], params=UNLIMITED, ledger=led)
    assert kinds(res) == ["evicted_across_instances"] and "ledger" in res.examples[0]["found"]
    assert last_login_wins([], ledger=led).violations == 0


def test_a_connections_first_disconnect_is_its_earliest_row_whatever_the_file_order():
    """Two disconnect rows for one connection (a damaged or merged journal): the earliest one is
    the connection's end, in whatever order they were written, and equal times with a missing
    detail never break the comparison."""
    j = J("relogin_expiry")
    j.login("S1", "c1", 0.0, 0.1)
    j.expired("S1", "c1", 10.0)
    j.add("disconnect", 30.0, conn="c1", outcome="fail", detail="connection lost")  # written first
    j.add("disconnect", 11.0, conn="c1", outcome="ok")       # the client left 1 s after the expiry
    j.add("disconnect", 11.0, conn="c1", outcome="ok", detail=None)
    j.tick(60)
    h = History.from_rows(j.rows)
    assert h.disconnect_of("c1") == (ts(11.0), "ok", "")
    assert relogin_recovers(h, params=CheckParams(relogin_bound_s=10)).violations == 0  # left without trying
    j2 = J("relogin_expiry")
    j2.login("S1", "c1", 0.0, 0.1)
    j2.expired("S1", "c1", 10.0)
    j2.add("disconnect", 30.0, conn="c1", outcome="fail", detail="connection lost")
    j2.tick(60)
    assert relogin_recovers(j2.rows, params=CheckParams(relogin_bound_s=10)).violations == 1
