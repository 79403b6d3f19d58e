"""The checks of a run kept on disk in parts (harness.results.checks.spill) judge exactly as
the checks of the same run in memory: same counts, same times, same examples (at most ten of a
kind: the same when there are ten or fewer), same notes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.results.checks import run_checks
from harness.results.checks.spill import SPILL_FROM_BYTES, parts_for
from harness.results.report import build_report
from harness.results.scan import scan_run
from tests.unit.test_scan import NS, T0, _damage, _journal, _results, small_blocks  # noqa: F401 (a fixture)


def _more_trouble(root: Path, *, lists: bool = True, flows: int = 120) -> None:
    """A fourth worker whose rows break the checks the base journal leaves alone: kicks by an
    older session (last_login_wins), expiries early / late / twice / missing (expiry_on_time),
    expiries without a relogin and login loops (relogin_recovers), kicks nobody announced and
    REST kicks (kick_exactly_once), logins of unknown outcome, connections that switch between
    accounts that also log in elsewhere. ``lists=False``: login answers name no evicted
    sessions (as XMPP's)."""
    rows: list[dict] = []

    def row(op: str, start: int, end: int, **kw) -> None:
        r = {"w": "w9", "n": 0, "scenario": kw.pop("scenario", "kick_race"), "op": op, "user": kw.pop("user", ""),
             "platform": kw.pop("platform", "Android"), "instance": kw.pop("instance", "i1"),
             "session": kw.pop("session", None), "intended": start, "start": start, "end": end,
             "outcome": kw.pop("outcome", "ok"), "code": kw.pop("code", 0), "detail": kw.pop("detail", "")}
        r.update(kw)
        rows.append(r)

    def login(t: int, user: str, sid: str, conn: str, kicked: list | None = None, **kw) -> None:
        extra = {"kicked": kicked or []} if lists else {}
        row("login", t, t + 4_000_000, user=user, session=sid, conn=conn, **extra, **kw)

    for i in range(flows):
        t = T0 + 3 * NS + i * 53_000_000
        user, c = f"x{i % 11}", f"w9/{i}"
        kind = i % 7
        if kind == 0:  # the older session evicts the newer one
            login(t, user, f"X{i}a", c + "a")
            login(t + 10_000_000, user, f"X{i}b", c + "b", kicked=[f"X{i}a"] if i % 12 else [])
            row("kicked_offline", t + 20_000_000, t + 20_000_000, user=user, session=f"X{i}b", conn=c + "b",
                by=f"X{i}a", detail="multi_device")
        elif kind == 1:  # expiry: early, late, twice, or never
            sid = f"Y{i}"
            exp = (t + 4_000_000) // NS + 1
            login(t, user, sid, c, expire_at=exp, scenario="relogin_expiry")
            deadline = (exp + 5) * NS
            at = {0: deadline - 3 * NS, 1: deadline + 9 * NS, 2: deadline, 3: None}[(i // 6) % 4]
            if at is not None:
                row("sig_expired", at, at, user=user, session=sid, conn=c, scenario="relogin_expiry")
                if (i // 6) % 4 == 2:
                    row("sig_expired", at + 5_000_000, at + 5_000_000, user=user, session=sid, conn=c,
                        scenario="relogin_expiry")
        elif kind == 2:  # a non-expiry failure retried at once; an expiry code never recovered
            row("login", t, t + 2_000_000, user=user, conn=c, outcome="fail", code=70013, scenario="relogin_expiry")
            row("login", t + 3_000_000, t + 5_000_000, user=user, conn=c, outcome="fail", code=6206,
                scenario="relogin_expiry")
            row("login", t + 6_000_000, t + 9_000_000, user=user, conn=c, outcome="info", code=-1,
                scenario="relogin_expiry")
        elif kind == 3:  # a kick nobody announced; a REST kick with and without its op
            login(t, user, f"Z{i}", c)
            row("kicked_offline", t + 30_000_000, t + 30_000_000, user=user, session=f"Z{i}", conn=c,
                by=None if i % 4 else f"Q{i}", detail="multi_device")
            if i % 4 == 3:
                row("rest_kick", t + 31_000_000, t + 32_000_000, user=user, conn=c)
            row("kicked_offline", t + 40_000_000, t + 40_000_000, user=user, session=f"Z{i}", conn=c,
                detail="rest_kick")
        elif kind == 4:  # one connection switching between accounts that also live elsewhere
            a, b = f"x{(i + 1) % 11}", f"x{(i + 5) % 11}"
            login(t, a, f"W{i}a", c)
            row("switch", t + 10_000_000, t + 18_000_000, user=b, session=f"W{i}b", conn=c, scenario="account_switch",
                data={"from_user": a, "from_session": f"W{i}a", "login_user": b, "server_user": b,
                      "server_status": 1, "online": {b: "Online", a: "Offline"}})
            if i % 4 == 0:  # and the switched-from session is told it was kicked
                row("kicked_offline", t + 20_000_000, t + 20_000_000, user=a, session=f"W{i}a", conn=c,
                    by=f"W{i}b", detail="multi_device")
            row("logout", t + 25_000_000, t + 26_000_000, user=b, session=f"W{i}b", conn=c)
            row("disconnect", t + 30_000_000, t + 30_000_000, user=b, conn=c, detail="closed_by_client")
        elif kind == 6:  # another account's login on the connection ends the session there (next login)
            a = f"s{i}"
            login(t, a, f"P{i}a", c)
            login(t + 5_000_000, a, f"P{i}z", c + "z")
            # the session's own relogin on the connection: not what ends it
            row("relogin", t + 50_000_000, t + 60_000_000, user=a, session=f"P{i}a", conn=c, scenario="relogin_expiry")
            later = t + (3 * NS if i % 14 == 6 else 200_000_000)  # within settle_s, or not
            login(later, f"t{i}", f"P{i}b", c)
        else:  # overlapping sessions of one account on two connections, nobody evicted
            user = f"v{i}"
            login(t, user, f"V{i}a", c + "a")
            login(t + 5_000_000, user, f"V{i}b", c + "b")
            # every other one ends within settle_s: no violation, if the disconnect reaches the check
            ended_by_a_failure = i % 3 == 0 and i % 12 != 5
            gone = t + (4 * NS if i % 12 == 5 or ended_by_a_failure else 300_000_000)
            if ended_by_a_failure:  # no: another account's failed login on it ends it (its next login)
                row("login", t + 200_000_000, t + 202_000_000, user=f"y{i}", conn=c + "a", outcome="fail",
                    code=70001)
            row("disconnect", gone, gone, user=user, conn=c + "a", detail="closed_by_client")
    for j in range(8):  # odd answers: an ok login without a session ID; a relogin row listing evictions
        t = T0 + 5 * NS + j * 97_000_000
        user, c = f"odd{j}", f"w9/odd{j}"
        row("login", t, t + 3_000_000, user=user, session="", conn=c)
        login(t + 10_000_000, user, f"O{j}a", c + "a")
        row("relogin", t + 20_000_000, t + 25_000_000, user=user, session=f"O{j}b", conn=c + "a",
            scenario="relogin_expiry", **({"kicked": [f"O{j - 1}b"] if j else []} if lists else {}))
    rows.sort(key=lambda r: r["end"])
    with open(root / "journal" / "w9.jsonl", "w") as fh:
        for k, r in enumerate(rows):
            r["n"] = k
            fh.write(json.dumps(r, separators=(",", ":")) + "\n")


def _both(root: Path, parts: int, **kw) -> tuple[dict, dict]:
    whole = run_checks(root, history=scan_run(root, digest=False, parts=1).history, **kw)
    scan = scan_run(root, digest=False, parts=parts)
    assert scan.history.spill is not None and scan.history.spill.n == parts
    split = run_checks(root, history=scan.history, **kw)
    return whole, split


def _notes(res: dict) -> dict:
    return {k: r.notes for k, r in res.items()}


@pytest.mark.parametrize("parts", [2, 5])
def test_a_run_checked_in_parts_gets_the_verdicts_of_one_checked_in_memory(tmp_path, parts):
    _journal(tmp_path, flows=700)
    _more_trouble(tmp_path)
    whole, split = _both(tmp_path, parts)
    assert _results(split) == _results(whole)
    assert _notes(split) == _notes(whole)
    # the journal has real problems of every check in it: the comparison compares something
    for name, res in whole.items():
        if name != "journal_integrity":
            assert res.violations > 0, name
    kinds = {e["kind"] for r in whole.values() for e in r.examples}
    assert {"newest_evicted", "early", "late", "twice", "missing", "login_loop", "no_relogin", "unreported",
            "duplicate", "sessions_overlap", "mismatch", "accepted"} <= kinds, kinds
    assert sum(r.violations for r in whole.values()) > 20
    # the parts are gone when the checks are done; the run folder keeps only what it had
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".checks-parts-")]


def test_a_protocol_without_eviction_lists_judges_the_same_in_parts(tmp_path):
    (tmp_path / "journal").mkdir()
    (tmp_path / "config.yaml").write_text("target:\n  policy: single_platform\nrun:\n  settle_s: 1\n")
    _more_trouble(tmp_path, lists=False, flows=300)
    whole, split = _both(tmp_path, 4)
    assert _results(split) == _results(whole)
    assert _notes(split) == _notes(whole)
    assert whole["kick_exactly_once"].notes and whole["kick_exactly_once"].violations > 0


def test_damaged_journals_and_a_ledger_judge_the_same_in_parts(tmp_path):
    _journal(tmp_path, flows=500)
    _damage(tmp_path)
    # a ledger where some evictions are wrong: last_login_wins and policy_limit read it
    rows, seq = [], 0
    for i in range(60):
        user = f"u{i % 7}"
        for k in range(2):
            seq += 1
            rows.append({"seq": seq, "ts": T0 + seq * NS, "event": "login", "sessionID": f"L{i}-{k}",
                         "userID": user, "platform": "Android", "instanceID": f"i{k}"})
        seq += 1
        by, ended = (f"L{i}-1", f"L{i}-0") if i % 5 else (f"L{i}-0", f"L{i}-1")  # every 5th: the newest ends
        rows.append({"seq": seq, "ts": T0 + seq * NS, "event": "end", "sessionID": ended, "userID": user,
                     "reason": "multi_device", "by": by})
        if i % 9 == 0:  # and a login that is never balanced by an end: over the limit
            seq += 1
            rows.append({"seq": seq, "ts": T0 + seq * NS, "event": "login", "sessionID": f"L{i}-x",
                         "userID": user, "platform": "Android"})
    with open(tmp_path / "ledger.jsonl", "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
        fh.write("not json\n")
    whole, split = _both(tmp_path, 3, locust_total=123)
    assert _results(split) == _results(whole)
    assert _notes(split) == _notes(whole)
    assert whole["journal_integrity"].violations > 0
    assert whole["last_login_wins"].violations > 0
    assert whole["policy_limit"].violations > 0


def test_many_blocks_some_damaged_judge_the_same_in_parts(tmp_path, small_blocks):
    """4 KiB blocks: a connection's rows, a user's sessions and the damaged blocks (read row by
    row, between blocks read as columns) are spread over many chunks of every part."""
    _journal(tmp_path, flows=400)
    _more_trouble(tmp_path)
    _damage(tmp_path)
    whole, split = _both(tmp_path, 3)
    assert _results(split) == _results(whole)
    assert _notes(split) == _notes(whole)
    assert whole["journal_integrity"].violations > 0
    assert sum(r.violations for r in whole.values()) > 20


def test_rows_read_row_by_row_keep_their_place_among_rows_read_as_columns(tmp_path, small_blocks):
    """A session logged out twice: the first logout (in a damaged block, read row by row) ends
    it, not the second (in a later clean block, read as columns), in parts as in memory; else
    it would overlap the account's next session and break policy_limit."""
    _journal(tmp_path, flows=60)
    t = T0 + 100 * NS
    rows = []

    def row(op: str, start: int, end: int, **kw) -> None:
        rows.append({"w": "w8", "n": len(rows), "scenario": "mass_login", "op": op, "user": "once",
                     "platform": "Android", "instance": "i1", "session": kw.pop("session", None), "intended": start,
                     "start": start, "end": end, "outcome": "ok", "code": 0, "detail": "", **kw})

    row("login", t, t + 2_000_000, session="T1", conn="w8/1", kicked=[])
    row("logout", t + 100_000_000, t + 101_000_000, session="T1", conn="w8/1")
    lines = [json.dumps(r) for r in rows] + ["not json"]
    rows.clear()
    for k in range(80):  # more than a 4 KiB block of rows nobody indexes
        row("heartbeat", t + 200_000_000 + k, t + 200_000_001 + k, conn="w8/1")
    row("login", t + 3 * NS, t + 3 * NS + 2_000_000, session="T2", conn="w8/2", kicked=[])
    row("logout", t + 20 * NS, t + 20 * NS + 1_000_000, session="T1", conn="w8/1")
    row("disconnect", t + 30 * NS, t + 30 * NS, conn="w8/1", detail="closed_by_client")
    row("disconnect", t + 31 * NS, t + 31 * NS, conn="w8/2", detail="closed_by_client")
    for r in rows:
        r["n"] += 2
    lines += [json.dumps(r) for r in rows]
    (tmp_path / "journal" / "w8.jsonl").write_text("\n".join(lines) + "\n")
    whole, split = _both(tmp_path, 2)
    assert _results(split) == _results(whole)
    assert not [e for e in whole["policy_limit"].examples if e.get("user") == "once"]


@pytest.mark.parametrize("spool_every", [7, 1 << 16])
def test_the_report_s_kick_delays_come_out_the_same_from_parts(tmp_path, monkeypatch, spool_every):
    """A big run's kicks wait for the report on disk (digest.KickSpool), written a few at a
    time and joined partition by partition: the delays are those of the run joined in memory."""
    import harness.results.digest as digest_mod

    monkeypatch.setattr(digest_mod, "_KICK_SPOOL", spool_every)
    _journal(tmp_path, flows=300)
    whole = scan_run(tmp_path, parts=1).digest.kick_delays()
    split_scan = scan_run(tmp_path, parts=4)
    kicks = split_scan.digest.kicks
    assert kicks.spool is not None and len(kicks.store) == 0 and len(kicks) > 10  # nothing kept in memory
    assert len(list(Path(kicks.spool.dir).glob("kicks-*.arrow"))) == 4
    split = split_scan.digest.kick_delays()  # not judged: read from the parts
    assert len(whole) > 10
    assert whole.sort_values(list(whole.columns)).reset_index(drop=True).equals(
        split.sort_values(list(split.columns)).reset_index(drop=True))
    judged_scan = scan_run(tmp_path, parts=4)
    run_checks(tmp_path, history=judged_scan.history)
    judged = judged_scan.digest.kick_delays()  # judged first: gathered while the checks ran
    assert whole.sort_values(list(whole.columns)).reset_index(drop=True).equals(
        judged.sort_values(list(judged.columns)).reset_index(drop=True))
    # what the report draws: the same values in a sketch; then the kick files are gone
    sk = judged_scan.digest.kick_delay_sketch()
    assert sk.exact and sorted(sk.values()) == sorted(whole["delay_ms"])
    assert not Path(judged_scan.digest.kicks.spool.dir).exists()
    assert judged_scan.digest.kick_delay_sketch() is sk


def test_a_run_keeps_no_kick_files_once_its_report_is_written(tmp_path):
    _journal(tmp_path, flows=120)
    scan = scan_run(tmp_path, parts=3)
    run_checks(tmp_path, history=scan.history)
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".report-kicks-")]
    build_report(tmp_path, charts=False, digest=scan.digest)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".report-kicks-", ".checks-parts-"))]
    dropped = scan_run(tmp_path, parts=3)  # a run abandoned before its report: dropped with its digest
    folder = Path(dropped.digest.kicks.spool.dir)
    assert folder.exists()
    del dropped
    import gc

    gc.collect()
    assert not folder.exists()


def test_how_many_parts(tmp_path, monkeypatch):
    assert parts_for(0) == 1
    assert parts_for(SPILL_FROM_BYTES) == 1
    assert parts_for(SPILL_FROM_BYTES + 1) >= 2
    assert parts_for(100 * SPILL_FROM_BYTES) >= 9 * parts_for(10 * SPILL_FROM_BYTES)  # parts grow with the run
    _journal(tmp_path, flows=50)
    monkeypatch.setenv("HARNESS_CHECK_PARTS", "3")
    assert scan_run(tmp_path, digest=False).history.spill.n == 3
    monkeypatch.setenv("HARNESS_CHECK_PARTS", "many")
    with pytest.raises(ConfigError, match="HARNESS_CHECK_PARTS"):
        scan_run(tmp_path, digest=False)
    monkeypatch.setenv("HARNESS_CHECK_PARTS", "1")
    assert scan_run(tmp_path, digest=False).history.spill is None


def test_the_parts_folder_goes_when_the_history_is_dropped_unjudged(tmp_path):
    _journal(tmp_path, flows=50)
    scan = scan_run(tmp_path, parts=2)
    folder = Path(scan.history.spill.dir)
    assert folder.is_dir() and folder.parent == tmp_path
    scan.history.spill.close()
    assert not folder.exists()


def test_the_checks_command_prints_the_same_in_parts(tmp_path, monkeypatch, capsys):
    from harness.results.checks import main

    _journal(tmp_path, flows=400)
    _more_trouble(tmp_path, flows=60)
    monkeypatch.setenv("HARNESS_CHECK_PARTS", "1")
    rc_whole = main([str(tmp_path)])
    whole = capsys.readouterr().out
    monkeypatch.setenv("HARNESS_CHECK_PARTS", "3")
    rc_split = main([str(tmp_path)])
    split = capsys.readouterr().out
    assert rc_whole == rc_split == 4
    assert [ln.split("  first:")[0] for ln in split.splitlines()] == [ln.split("  first:")[0] for ln in whole.splitlines()]
    assert "journal_integrity    violations=0" in whole and len(whole.splitlines()) == 8
    monkeypatch.setenv("HARNESS_CHECK_PARTS", "zero")
    assert main([str(tmp_path)]) == 2
    assert "HARNESS_CHECK_PARTS" in capsys.readouterr().err


def test_the_heap_a_part_leaves_is_given_back_before_the_next_part(tmp_path, monkeypatch):
    """The scan and every part, connection and user, are followed by a trim; the verdicts are those of a run
    judged without trimming (it only returns memory)."""
    import harness.results.checks.spill as spill

    _journal(tmp_path, flows=400)
    _more_trouble(tmp_path)
    monkeypatch.setattr(spill, "_TRIM", None)
    untrimmed = run_checks(tmp_path, history=scan_run(tmp_path, digest=False, parts=3).history)
    calls = []
    monkeypatch.setattr(spill, "_TRIM", lambda pad: calls.append(pad) or 1)
    trimmed = run_checks(tmp_path, history=scan_run(tmp_path, digest=False, parts=3).history)
    assert calls == [0] * 7  # after the scan, then after each of 3 connection parts and 3 user parts
    assert _results(trimmed) == _results(untrimmed)
    assert _notes(trimmed) == _notes(untrimmed)


def test_a_judged_user_part_is_gone_before_the_next_one_is_loaded(tmp_path, monkeypatch):
    """Only one part's sessions are in memory at a time: when the next user part is read, none
    of the last one's is alive (the kicker sessions written for the report's kick delays once
    kept a 10^7-row run's previous part, ~100 MiB, alive through the whole user stage)."""
    import gc

    import harness.results.checks.spill as spill
    from harness.results.checks.history import _Sess

    _journal(tmp_path, flows=400)
    scan = scan_run(tmp_path, parts=3)  # with the digest: its kicks spooled, so the kicker logins are written
    assert scan.digest.kicks.spool is not None and scan.digest.kicks.spool.n > 10
    alive: list[tuple[str, int, int]] = []
    orig, orig_conn = spill.Spill._part, spill.Spill._conn_part

    def part(self, parts, i, last_t):
        assert parts is self.user, "connection parts are read by _conn_part"
        alive.append(("user", i, sum(1 for o in gc.get_objects() if type(o) is _Sess)))
        h, rows = orig(self, parts, i, last_t)
        assert h.sessions, "every user part holds sessions: the count above measures something"
        return h, rows

    def conn_part(self, i, last_t, checks):
        alive.append(("conn", i, sum(1 for o in gc.get_objects() if type(o) is _Sess)))
        return orig_conn(self, i, last_t, checks)

    monkeypatch.setattr(spill.Spill, "_part", part)
    monkeypatch.setattr(spill.Spill, "_conn_part", conn_part)
    run_checks(tmp_path, history=scan.history)
    assert [a[:2] for a in alive] == [("conn", 0), ("conn", 1), ("conn", 2), ("user", 0), ("user", 1), ("user", 2)]
    assert [a[2] for a in alive] == [0] * 6, alive
    assert sum(1 for o in gc.get_objects() if type(o) is _Sess) == 0


def test_what_a_connection_part_routes_is_on_disk_before_the_next_part_is_read(tmp_path, monkeypatch):
    """The facts one connection part sends to the user parts are written when it is routed, not
    buffered across parts: records kept from part to part hold their part's strings, which pin
    the allocator's arenas (2 x 10^6 rows in 40 parts: the floor crept 198 -> 225 MiB). The
    verdicts stay those of the in-memory History."""
    import harness.results.checks.spill as spill

    _journal(tmp_path, flows=400)
    _more_trouble(tmp_path)
    left: list[int] = []
    orig = spill.Spill._conn_part

    def conn_part(self, i, last_t, checks):
        orig(self, i, last_t, checks)
        left.append(sum(len(v) for buf in self.user.bufs for v in buf.values()))

    monkeypatch.setattr(spill.Spill, "_conn_part", conn_part)
    whole, split = _both(tmp_path, 4)
    assert left == [0, 0, 0, 0]
    assert _results(split) == _results(whole)
    assert _notes(split) == _notes(whole)


def _rss_mib() -> float:
    import os

    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="RSS is read from /proc (Linux)")
def test_release_heap_returns_freed_memory_to_the_system():
    """What a dropped part leaves behind: blocks freed below a block still in use, which glibc
    keeps mapped on its own. On glibc, release_heap gives them back; elsewhere it says it did not."""
    from harness.results.checks.spill import _TRIM, release_heap

    if _TRIM is None:
        assert release_heap() is False
        return
    blocks = [bytes(4000) + bytes([i % 256]) for i in range(40_000)]  # ~160 MiB of malloc'd blocks
    keep = bytes(4000) + b"!"  # allocated above them: the heap's top cannot shrink past it
    before = _rss_mib()
    del blocks
    held = _rss_mib()
    assert release_heap() is True
    after = _rss_mib()
    assert keep
    assert held - after > 100, (before, held, after)


def _random_journal(root: Path, seed: int, rows: int = 900, own_ids: bool = False) -> None:
    """Rows of every kind a connection part routes, drawn from small pools so that IDs, times
    and connections collide: sessions made twice on one connection (by a relogin, then a
    login), equal start times, connections without an ID, logouts on another connection,
    kicks and expiries naming sessions made elsewhere, failed and unknown logins.
    ``own_ids``: every session ID is one account's (the parts judge a session ID reused by
    two accounts as two sessions: README.md "What a run leaves"), and its kicks, expiries and
    logouts come on one connection (the parts take the first of each per connection part)."""
    import random

    rnd = random.Random(seed)
    (root / "journal").mkdir(exist_ok=True)
    conns = [f"c{i}" for i in range(14)] + ["", None]
    users = [f"u{i}" for i in range(6)] + [None]
    sids = [f"s{i}" for i in range(10)] + [None, ""]
    ops = ["login"] * 5 + ["relogin"] * 2 + ["switch"] * 2 + ["disconnect"] * 2 + ["logout"] * 2 + [
        "kicked_offline", "sig_expired", "heartbeat"]
    for w in ("w0", "w1", "w2"):
        with open(root / "journal" / f"{w}.jsonl", "w") as fh:
            for n in range(rows // 3):
                op = rnd.choice(ops)
                start = T0 + rnd.randrange(40) * 1_000_000
                end = start + rnd.choice((0, 1_000_000, 3_000_000, 20_000_000))
                r = {"w": w, "n": n, "scenario": rnd.choice(("relogin_expiry", "mass_login")), "op": op,
                     "user": rnd.choice(users), "platform": "Android", "instance": "i", "session": rnd.choice(sids),
                     "intended": start, "start": start, "end": end,
                     "outcome": rnd.choice(("ok", "ok", "ok", "fail", "info")), "code": rnd.choice((0, 0, 6206, 70013)),
                     "detail": rnd.choice(("", "closed_by_client", "multi_device", None)), "conn": rnd.choice(conns)}
                if own_ids and (op in ("kicked_offline", "sig_expired", "logout") or type(r["session"]) is str
                                and r["session"]):
                    r["session"] = f"{r['user']}.{rnd.choice(sids[:10])}"
                    if op in ("kicked_offline", "sig_expired", "logout"):  # on one connection per session
                        r["conn"] = conns[sum(map(ord, r["session"])) % 14]
                if op == "login" and rnd.random() < 0.5:
                    r["kicked"] = [rnd.choice(sids[:10])]
                if op == "switch" and rnd.random() < 0.8:
                    r["data"] = {"from_user": rnd.choice(users), "from_session": rnd.choice(sids), "login_user": r["user"],
                                 "server_user": r["user"], "server_status": 1}
                if op == "kicked_offline":
                    r["by"] = rnd.choice(sids)
                    if own_ids and r["by"]:
                        r["by"] = f"{r['user']}.{r['by']}"
                fh.write(json.dumps(r) + "\n")


def _routed(root: Path, parts: int, columns: bool) -> tuple[list, set, dict]:
    """What every user part holds once the connection parts are routed (by the columns, or by
    the History of each whole part), the users with unknown logins, the connection checks'
    results."""
    from harness.results.checks.history import _Found
    from harness.results.checks.relogin_recovers import relogin_recovers
    from harness.results.checks.switch_consistency import switch_consistency

    scan = scan_run(root, digest=False, parts=parts)
    sp, last_t = scan.history.spill, scan.history.last_t
    found = {"relogin_recovers": _Found("relogin_recovers"), "switch_consistency": _Found("switch_consistency")}
    checks = {"relogin_recovers": lambda h: relogin_recovers(h, found=found["relogin_recovers"]),
              "switch_consistency": lambda h: switch_consistency(h, found=found["switch_consistency"])}
    sp.conn.close()
    for i in range(parts):
        if columns:
            chunks = list(sp.conn.chunks(i))
            assert chunks and all(set(c) <= {"A", "K", "E"} for c in chunks), "clean blocks: columns only"
            sp._conn_part(i, last_t, checks)
        else:
            h1, _ = sp._part(sp.conn, i, last_t)
            sp._route(h1)
            for fn in checks.values():
                fn(h1)
    sp.user.close()
    held = []
    for i in range(parts):
        h, _ = sp._part(sp.user, i, last_t)
        h._prepare()
        held.append((h.conn_logins, h.conn_disc, h.logouts, h.kicks, h.expiry_rows,
                     {k: tuple(getattr(s, a) for a in s.__slots__) for k, s in h.sessions.items()}))
    sp.close()
    return held, set(sp.info_users), {k: _results({k: f.result()}) for k, f in found.items()}


@pytest.mark.parametrize("seed", range(6))
def test_routing_a_connection_part_by_its_columns_sends_what_its_whole_history_sends(tmp_path, seed):
    """The connection stage reads a clean part as columns (Spill._route_columns) and builds
    Python entries only for the connections its checks read; every user part must get exactly
    the facts the part's whole History routes (Spill._route), entry for entry and in order."""
    _random_journal(tmp_path, seed)
    by_rows = _routed(tmp_path, 3, columns=False)
    by_columns = _routed(tmp_path, 3, columns=True)
    for q, (a, b) in enumerate(zip(by_rows[0], by_columns[0])):
        for what, x, y in zip(("next logins", "disconnects", "logouts", "kicks", "expiries", "sessions"), a, b):
            assert y == x, (q, what)
    assert by_columns[1] == by_rows[1]
    assert by_columns[2] == by_rows[2]
    assert sum(len(p[0]) for p in by_rows[0]) > 20 and sum(len(p[2]) for p in by_rows[0]) > 5


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("damaged", [False, True])
def test_colliding_ids_and_times_judge_the_same_in_parts(tmp_path, seed, damaged):
    """The same random journals, judged whole: in parts as in memory, whether the connection
    parts are read as columns or (a damaged line: row by row) through their whole History."""
    _random_journal(tmp_path, seed, own_ids=True)
    if damaged:
        with open(tmp_path / "journal" / "w1.jsonl", "a") as fh:
            fh.write('{"w": "w1", "n": \n')
    whole, split = _both(tmp_path, 3)
    assert _results(split) == _results(whole)
    assert _notes(split) == _notes(whole)


def test_the_rare_rows_folded_from_columns_index_as_row_by_row(tmp_path, monkeypatch):
    """Kicks, expiries, REST kicks and races of a clean block are indexed from column lists
    (History._fold_rare), not one dict per row: the same index as feeding the rows one by one."""
    from harness.results.checks.history import History
    from tests.unit.test_scan import _rows_in_file_order, _state

    _journal(tmp_path, flows=300)
    _more_trouble(tmp_path)
    calls = [0]
    real = History._fold_rare

    def counting(self, *a):
        calls[0] += 1
        return real(self, *a)

    monkeypatch.setattr(History, "_fold_rare", counting)
    scan = scan_run(tmp_path, digest=False, parts=1)
    assert calls[0] > 0
    ref = History()
    _rows_in_file_order(tmp_path, ref)
    got, want = _state(scan.history), _state(ref)
    assert want["rest_kicks"] and want["races"] and want["expiry_rows"] and want["kicks"]
    assert got == want
