"""Faults end to end (locust headless on the embedded target): restarts and proxy faults are
journaled, sessions come back through reconnect, checks still hold, the secret never leaks.
Plus the pure recovery figures (:func:`harness.runner.faults.recovery_stats`) on hand-made rows."""
from __future__ import annotations

import json
import secrets
import socket

from harness.runner.faults import recovery_stats

S = 1_000_000_000
RELAXED = ("--set", "gates.error_ratio.overall=1")   # refused reconnects are failures by design
QUICK = ("--stop-timeout", "0", "--no-report")      # held sessions end at once; no charts


def _by_conn(rows, op):
    return {r["conn"]: r for r in rows if r["op"] == op}


def test_server_restart_every_held_session_reconnects_and_logs_in_again(locust_run):
    run = locust_run("--scenario", "mass_login", "-u", "10", "-r", "10", "-t", "6s",
                     "--set", "scenarios.mass_login.hold_s=60", "--set", "scenarios.mass_login.heartbeat_s=0.5",
                     "--set", "faults=[{kind: server_restart, at_s: 2, down_s: 0.5}]",
                     "--set", "client.reconnect_base_s=0.1", "--set", "client.reconnect_cap_s=1", *RELAXED, *QUICK)
    assert run.run_dir is not None, run.stderr
    rows = run.rows()
    faults = run.rows("fault")
    assert len(faults) == 1
    f = faults[0]
    assert (f["outcome"], f["code"], f["detail"], f["scenario"]) == ("info", 0, "server_restart", "faults")
    assert f["data"]["pid_after"] != f["data"]["pid_before"] and f["end"] - f["start"] >= 0.5 * S
    # every session held at the kill was lost then, and came back on a new connection
    lost = [r for r in run.rows("disconnect") if r["outcome"] == "info" and f["start"] <= r["end"] <= f["end"]]
    assert len(lost) == 10 and all(r["session"] for r in lost)
    recon = {r["data"]["old_conn"]: r for r in run.rows("reconnect")}
    logins = _by_conn(rows, "login")
    for d in lost:
        r = recon[d["conn"]]
        assert r["outcome"] == "ok" and r["start"] == d["end"] and r["end"] >= f["start"] + 0.5 * S
        assert r["user"] == d["user"] and r["data"]["old_session"] == d["session"] and r["conn"] != d["conn"]
        new_login = logins[r["conn"]]                    # the new connection logged in, same account
        assert new_login["outcome"] == "ok" and new_login["user"] == d["user"]
        assert new_login["session"] == r["session"] != d["session"]
    stats = recovery_stats(rows)["faults"][0]
    assert (stats["lost"], stats["back"], stats["failed"]) == (10, 10, 0)
    assert stats["back_s"]["100"] is not None and stats["back_s"]["100"] >= stats["window_s"]
    assert stats["codes"].get("-1", 0) >= 1              # the refused attempts while it was down
    # the killed incarnation's ledger is kept aside; the new one starts clean
    assert (run.run_dir / "ledger.before-restart-1.jsonl").exists()
    new_ledger = [json.loads(x) for x in (run.run_dir / "ledger.jsonl").read_text().splitlines() if x]
    assert {r["sessionID"] for r in new_ledger if r["event"] == "login"} >= {r["session"] for r in recon.values()}
    assert all(c["violations"] == 0 for c in run.summary["checks"].values()), run.summary["checks"]
    rec = run.summary["recovery"]["faults"][0]          # the reconnect storm, in summary.json
    assert (rec["kind"], rec["lost"], rec["back"]) == ("server_restart", 10, 10)
    assert run.code == 0, run.stderr[-2000:]


def test_expired_sigs_are_refreshed_when_reconnecting_after_a_restart(locust_run):
    run = locust_run("--scenario", "relogin_expiry", "-u", "8", "-r", "8", "-t", "6s",
                     "--set", "target.leeway_s=0", "--set", "scenarios.relogin_expiry.sig_lifetime_s=1",
                     "--set", "scenarios.relogin_expiry.sig_jitter_s=0", "--set", "scenarios.relogin_expiry.cycles=100",
                     "--set", "scenarios.relogin_expiry.stale_login_ratio=0",
                     "--set", "faults=[{kind: server_restart, at_s: 2, down_s: 1}]",
                     "--set", "client.reconnect_cap_s=1", *RELAXED, *QUICK)
    assert run.run_dir is not None, run.stderr
    # a recovery cut short by the end of the run (detail "stopped...") is not a failed one
    recon = [r for r in run.rows("reconnect") if not str(r["detail"]).startswith("stopped")]
    assert len(recon) >= 8 and all(r["outcome"] == "ok" for r in recon), recon
    # 1 s sigs, down for more than 1 s: the cached sig had expired, a fresh one was fetched
    assert all(r["data"]["fresh_sig"] for r in recon)
    assert not [r for r in run.rows("login") if r["outcome"] == "fail"]   # never tried the stale sig
    assert run.summary["checks"]["relogin_recovers"]["violations"] == 0
    assert run.code == 0, run.stderr[-2000:]


def test_black_hole_is_noticed_by_heartbeat_timeouts_and_recovered(locust_run):
    run = locust_run("--scenario", "mass_login", "-u", "6", "-r", "6", "-t", "5s",
                     "--set", "scenarios.mass_login.hold_s=60", "--set", "scenarios.mass_login.heartbeat_s=0.3",
                     "--set", "client.request_timeout_s=0.6", "--set", "client.reconnect_cap_s=1",
                     "--set", "faults=[{kind: blackhole, at_s: 1.5, duration_s: 0.5}]", *RELAXED, *QUICK)
    assert run.run_dir is not None, run.stderr
    (fault,) = run.rows("fault")
    assert fault["data"]["affected"] == 6
    lost = [r for r in run.rows("disconnect") if r["outcome"] == "info"]
    assert len(lost) == 6 and {r["detail"] for r in lost} == {"error:HeartbeatTimeout"}
    stats = recovery_stats(run.rows())["faults"][0]
    assert (stats["lost"], stats["back"]) == (6, 6)
    assert all(c["violations"] == 0 for c in run.summary["checks"].values()), run.summary["checks"]
    assert run.code == 0, run.stderr[-2000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_proxy_faults_reach_workers_through_their_own_proxies(locust_run):
    port = str(_free_port())  # a private master port: no cross-talk with other runs on this host
    run = locust_run("--processes", "2", "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
                     "--master-port", port, "--scenario", "mass_login", "-u", "8", "-r", "8", "-t", "6s",
                     "--set", "scenarios.mass_login.hold_s=60", "--set", "scenarios.mass_login.heartbeat_s=0.3",
                     "--set", "faults=[{kind: reset, at_s: 2, duration_s: 0.3, name: rst},"
                              " {kind: latency, at_s: 4, duration_s: 1.5, latency_ms: 100}]", *RELAXED, *QUICK)
    assert run.run_dir is not None, run.stderr
    assert len(list(run.run_dir.glob("faultproxy-w*.log"))) == 2          # one proxy per worker
    faults = {r["detail"]: r for r in run.rows("fault")}
    assert set(faults) == {"rst", "latency"} and all(r["w"] == "master" for r in faults.values())
    rst, lat = faults["rst"], faults["latency"]
    assert rst["data"]["proxies"] == 2 and rst["data"]["affected"] >= 8    # every held connection was reset
    assert lat["data"]["affected"] >= 8
    stats = {s["name"]: s for s in recovery_stats(run.rows())["faults"]}["rst"]
    assert stats["lost"] >= 6 and stats["back"] == stats["lost"] - stats["abandoned"] and stats["failed"] == 0
    # heartbeats inside the latency window paid ~100 ms each way: traffic went through the proxies
    inside = [r for r in run.rows("heartbeat") if lat["start"] + 0.3 * S <= r["start"] and r["end"] <= lat["end"]]
    assert inside and all(r["end"] - r["start"] >= 0.19 * S for r in inside)
    assert all(c["violations"] == 0 for c in run.summary["checks"].values()), run.summary["checks"]
    assert run.code == 0, run.stderr[-2000:]


def test_the_secret_key_never_leaves_the_process(locust_run):
    key = "S3CRET-" + secrets.token_hex(20)
    run = locust_run("-u", "8", "-r", "8", "-t", "4s",
                     "--set", "faults=[{kind: server_restart, at_s: 1, down_s: 0.2},"
                              " {kind: latency, at_s: 0.5, duration_s: 1, latency_ms: 5}]",
                     *RELAXED, "--stop-timeout", "0", env={"CHAT_SECRET_KEY": key}, report=True)  # the report too must not leak it
    assert run.run_dir is not None, run.stderr
    assert run.rows("login") and run.rows("fault")               # it really ran, with the key
    files = [p for p in run.run_dir.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"config.yaml", "server.log", "summary.json", "report.html"} <= names
    leaks = [str(p) for p in files if key.encode() in p.read_bytes()]
    assert leaks == []
    assert key not in run.stdout and key not in run.stderr
    assert "***" in (run.run_dir / "config.yaml").read_text()


def test_bad_fault_config_exits_2_naming_the_key(locust_run):
    run = locust_run("--set", "faults=[{kind: server_restart, at_s: 1, dwon_s: 1}]")
    assert run.code == 2 and "faults.schedule[0].dwon_s" in run.stderr and "down_s" in run.stderr
    assert "Traceback" not in run.stderr
    run = locust_run("--host", "ws://127.0.0.1:9/ws", "--set", "faults=[{kind: server_stall, at_s: 1, duration_s: 1}]")
    assert run.code == 2 and "faults.schedule[0].kind" in run.stderr and "embedded target" in run.stderr


# ----------------------------------------------------------------------------- recovery_stats (pure)
def _row(op, t, **kw):
    r = {"op": op, "start": t, "end": t, "outcome": "ok", "code": 0, "detail": "", "w": "x", "n": 0}
    r.update(kw)
    return r


def test_recovery_stats_counts_back_failed_abandoned_and_quantiles():
    t0 = 1_000 * S
    fault = _row("fault", t0, end=t0 + 2 * S, outcome="info", detail="server_restart",
                 data={"kind": "server_restart"})
    rows = [fault]
    for i in range(10):                      # 10 sessions lost at t0 + 10 ms
        rows.append(_row("disconnect", t0 + 10_000_000, outcome="info", code=-1, session=f"s{i}", conn=f"c{i}"))
    for i in range(7):                       # 7 back at t0 + 3 s + i * 0.1 s
        end = t0 + 3 * S + i * S // 10
        rows.append(_row("reconnect", t0 + 10_000_000, end=end, conn=f"n{i}", data={"old_conn": f"c{i}", "attempts": i + 1}))
        rows.append(_row("login", end, conn=f"n{i}"))
    rows.append(_row("reconnect", t0, end=t0 + 9 * S, outcome="fail", code=70050, data={"old_conn": "c7", "attempts": 8}))
    rows.append(_row("reconnect", t0, end=t0 + 5 * S, outcome="info", code=-1, detail="stopped: device closed",
                     data={"old_conn": "c8", "attempts": 2}))
    # c9: no reconnect row (recovery off for that device)
    rows += [_row("connect", t0 + S, outcome="fail", code=-1)] * 5
    rows += [_row("login", t0 - 5 * S)] * 20  # 20 logins in the 10 s before: 2/s
    s = recovery_stats(rows)["faults"][0]
    assert (s["lost"], s["back"], s["failed"], s["abandoned"], s["no_reconnect"]) == (10, 7, 1, 1, 1)
    # percentages over back + failed = 8 sessions: 50 % = 4th back, 99 % / 100 % never (one failed)
    assert s["back_s"] == {"50": 3.3, "99": None, "100": None}
    assert s["back_after_end_s"]["50"] == 1.3
    assert s["attempts"] == {"mean": 4.22, "max": 8}   # (1+..+7 + 8 + 2) / 9
    assert s["login_rate_peak_per_s"] == 7 and s["login_rate_before_per_s"] == 2.0
    assert s["codes"] == {"-1": 6, "70050": 1}      # 5 refused connects, the stopped and the failed recovery
    assert s["name"] == "server_restart" and s["kind"] == "server_restart"


def test_recovery_stats_gives_each_loss_to_the_latest_fault_and_reaches_100_percent():
    a = _row("fault", 100 * S, end=101 * S, outcome="info", detail="a")
    b = _row("fault", 105 * S, end=106 * S, outcome="info", detail="b")
    rows = [a, b]
    for i, t in enumerate([100.5, 100.6, 105.2, 108.0, 130.0]):   # the last one is too late for b (grace 10 s)
        rows.append(_row("disconnect", int(t * S), outcome="info", code=-1, session=f"s{i}", conn=f"c{i}"))
        rows.append(_row("reconnect", int(t * S), end=int((t + 1) * S), data={"old_conn": f"c{i}"}))
    got = {s["name"]: s for s in recovery_stats(rows, [a, b])["faults"]}
    assert (got["a"]["lost"], got["b"]["lost"]) == (2, 2)
    assert got["a"]["back_s"] == {"50": 1.5, "99": 1.6, "100": 1.6}
    assert got["b"]["back_s"]["100"] == 4.0
    assert recovery_stats([])["faults"] == []
