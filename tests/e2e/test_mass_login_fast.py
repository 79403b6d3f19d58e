"""mass_login's connect+login+close storm (hold_s 0, no logout): the fast path keeps the
journal's contract: connect, login, disconnect per flow, no heartbeats, a reused UserSig."""
from __future__ import annotations

import json
from collections import Counter, defaultdict


def test_hold_zero_storm_journals_every_flow_and_reuses_the_sig(locust_run):
    users = 8
    run = locust_run("--scenario", "mass_login", "-u", str(users), "-r", str(users), "-t", "4s",
                     "--set", "scenarios.mass_login.hold_s=0", "--set", "scenarios.mass_login.logout=false")
    assert run.run_dir is not None, run.stderr
    assert run.code == 0, run.stderr[-2000:]
    rows = run.rows()
    assert sorted(r["n"] for r in rows) == list(range(len(rows)))            # gap-free
    ops = Counter(r["op"] for r in rows)
    assert not ops["heartbeat"] and not ops["logout"] and not ops["reconnect"]
    logins = [r for r in rows if r["op"] == "login"]
    assert len(logins) >= 3 * users                                          # users loop: many flows each
    assert all(r["outcome"] == "ok" and r["code"] == 0 for r in logins), Counter(r["code"] for r in logins)
    # each flow is one connection: connect ok, login ok, disconnect closed by us, in that order
    by_conn = defaultdict(list)
    for r in rows:
        by_conn[r["conn"]].append(r)
    for conn, conn_rows in by_conn.items():
        seq = [r["op"] for r in sorted(conn_rows, key=lambda r: r["n"])]
        assert seq in (["connect", "login", "disconnect"], ["connect", "login"], ["connect"]), (conn, seq)
        for r in conn_rows:
            if r["op"] == "disconnect":
                assert (r["outcome"], r["detail"]) == ("ok", "closed_by_client")
                assert r["session"] == next(x["session"] for x in conn_rows if x["op"] == "login")
    assert ops["disconnect"] >= len(logins) - users                          # only the last flows may be cut
    # one account per user, signed once: every login of an account shows the same sig expiry
    expiry = defaultdict(set)
    for r in logins:
        expiry[r["user"]].add(r["expire_at"])
    assert len(expiry) == users and all(len(v) == 1 for v in expiry.values()), expiry
    # the server saw every session end with its connection
    ledger = [json.loads(line) for line in (run.run_dir / "ledger.jsonl").read_text().splitlines() if line.strip()]
    ends = [e for e in ledger if e["event"] == "end"]
    assert ends and all(e["reason"] == "disconnect" for e in ends)
    assert len(ends) >= len(logins) - users
