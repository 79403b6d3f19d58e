"""The one read of a run's journals (harness.results.scan) and what it feeds: the checks'
History (fast column path == row-by-row path) and the Digest (== the DataFrame aggregates
the report used to compute from a fully loaded journal)."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.results import digest as digest_mod
from harness.results import scan as scan_mod
from harness.results.checks import History, run_checks
from harness.results.checks.history import _Race, _Sess
from harness.results.report import aggregate as agg
from harness.results.report import build_report
from harness.results.report.load import load_journal
from harness.results.scan import scan_run
from harness.results.summary import build_summary

NS = 1_000_000_000
T0 = 1_760_000_000 * NS


class _W:
    """One worker's journal rows."""

    def __init__(self, w: str, rng: random.Random) -> None:
        self.w, self.rng, self.n, self.rows = w, rng, 0, []

    def row(self, scenario: str, op: str, start: int, end: int, **kw) -> dict:
        r = {"w": self.w, "n": self.n, "scenario": scenario, "op": op, "user": kw.pop("user", ""),
             "platform": kw.pop("platform", "Android"), "instance": kw.pop("instance", "i1"),
             "session": kw.pop("session", None), "intended": kw.pop("intended", start), "start": start,
             "end": end, "outcome": kw.pop("outcome", "ok"), "code": kw.pop("code", 0),
             "detail": kw.pop("detail", "")}
        r.update(kw)
        self.rows.append(r)
        self.n += 1
        return r


def _journal(root: Path, *, seed: int = 3, flows: int = 400) -> list[list[dict]]:
    """A realistic small run: mass logins with heartbeats, kick races (eviction lists, kicks,
    a lost and a duplicate kick), relogins (expect codes, one accepted stale sig), switches,
    failures with XMPP-like conditions, a fault window, queueing lag. Three worker files."""
    rng = random.Random(seed)
    workers = [_W(f"w{k}", rng) for k in range(3)]
    for i in range(flows):
        wr = workers[i % 3]
        t = T0 + i * 37_000_000 + rng.randrange(5_000_000)
        c = f"{wr.w}/{i}"
        kind = i % 7
        user = f"u{i % 90}"
        lag = rng.choice((0, 0, 0, 3_000_000, 40_000_000))
        wr.row("mass_login", "connect", t, t + 2_000_000, conn=c, user=user, intended=t - lag)
        if kind < 3:
            sid = f"S{i}"
            ok = rng.random() < 0.9
            code, detail, outcome = rng.choice(((70500, "error:not-authorized", "fail"), (6206, "timeout", "fail"),
                                                (-1, "connection lost (error:conflict)", "info")))
            wr.row("mass_login", "login", t + 3_000_000, t + 3_000_000 + rng.randrange(1, 40) * 1_000_000,
                   user=user, session=sid if ok else None, conn=c, kicked=[], expire_at=t // NS + 600,
                   outcome="ok" if ok else outcome, code=0 if ok else code, detail="" if ok else detail)
            for h in range(rng.randrange(4)):
                ht = t + (h + 1) * 200_000_000
                wr.row("mass_login", "heartbeat", ht, ht + rng.randrange(100_000, 3_000_000), user=user, conn=c)
            if ok:
                wr.row("mass_login", "status", t + 900_000_000, t + 901_000_000, user=user, conn=c)
                wr.row("mass_login", "logout", t + 950_000_000, t + 952_000_000, user=user, session=sid, conn=c)
            wr.row("mass_login", "disconnect", t + 960_000_000, t + 960_000_000, user=user, conn=c,
                   detail="closed_by_client")
        elif kind < 5:
            race = f"r{i}"
            devs, prev = [], None
            for d, plat in enumerate(("Android", "iOS")):
                dc, sid = f"{c}-{d}", f"R{i}-{d}"
                sent, done = t + d * 2_000_000, t + d * 2_000_000 + 6_000_000
                wr.row("kick_race", "login", sent, done, user=user, session=sid, platform="Android", conn=dc,
                       race=race, kicked=[prev] if prev else [], expire_at=t // NS + 600, instance=f"i{d}")
                if prev and i % 29 != 0:  # every 29th race loses its kick notice
                    for _ in range(2 if i % 31 == 0 else 1):  # every 31st gets it twice
                        wr.row("kick_race", "kicked_offline", done + 500_000, done + 500_000, user=user,
                               session=prev, conn=f"{c}-{d - 1}", race=race, by=sid, detail="multi_device")
                devs.append({"platform": plat, "instance": f"i{d}", "session": sid, "code": 0, "sent": sent,
                             "done": done, "kicked_by": None, "alive": d == 1})
                prev = sid
            wr.row("kick_race", "query_online", t + 20_000_000, t + 24_000_000, user=user, conn=c)
            wr.row("kick_race", "race", t, t + 30_000_000, user=user, race=race, detail=race, settle_ms=300,
                   data={"devices": devs, "settle_ms": 300, "survivors": [devs[-1]["session"]],
                         "online": [{"Platform": "Android", "Status": "Online"}], "policy": "single_platform"})
        elif kind == 5:
            sid = f"E{i}"
            exp_code = 70001
            got = 0 if i % 50 == 5 else exp_code  # one in 50 expiry logins is (wrongly) accepted
            wr.row("relogin_expiry", "login", t + 1_000_000, t + 5_000_000, user=user, conn=c, session=None if got else sid,
                   outcome="ok" if got == 0 else "fail", code=got, expect=exp_code)
            wr.row("relogin_expiry", "usersig_fetch", t + 6_000_000, t + 9_000_000, user=user, conn=c)
            wr.row("relogin_expiry", "relogin", t + 5_000_000, t + 15_000_000, user=user, session=sid + "b", conn=c,
                   data={"trigger": "login_failed", "attempts": 1})
            wr.row("relogin_expiry", "sig_expired", t + 500_000_000, t + 500_000_000, user=user, session=sid + "b",
                   conn=c)
            wr.row("relogin_expiry", "disconnect", t + 510_000_000, t + 510_000_000, user=user, conn=c,
                   detail="closed_by_client")
        else:
            a, b = f"a{i}", f"b{i}"
            wr.row("account_switch", "login", t + 1_000_000, t + 4_000_000, user=f"alice{i}", session=a, conn=c,
                   kicked=[], expire_at=t // NS + 600)
            wr.row("account_switch", "switch", t + 10_000_000, t + 18_000_000, user=f"bob{i}", session=b, conn=c,
                   data={"from_user": f"alice{i}", "from_session": a, "login_user": f"bob{i}",
                         "server_user": f"bob{i}", "server_status": 1,
                         "online": {f"bob{i}": "Online", f"alice{i}": "Offline" if i % 13 else "Online"}})
            wr.row("account_switch", "disconnect", t + 40_000_000, t + 40_000_000, user=f"bob{i}", conn=c,
                   detail="closed_by_client")
    workers[0].row("faults", "fault", T0 + 2 * NS, T0 + 4 * NS, outcome="info", detail="server_stall")
    (root / "journal").mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text("target:\n  policy: single_platform\nrun:\n  settle_s: 1\n")
    for wr in workers:
        # journals are written when operations end: in end order, as the harness writes them
        wr.rows.sort(key=lambda r: r["end"])
        for k, r in enumerate(wr.rows):
            r["n"] = k
        with open(root / "journal" / f"{wr.w}.jsonl", "w") as fh:
            for r in wr.rows:
                fh.write(json.dumps(r, separators=(",", ":")) + "\n")
    return [wr.rows for wr in workers]


def _damage(root: Path) -> None:
    """Journal damage of every kind the checks report: an undecodable line, a non-object, a
    duplicate sequence number, a row with a missing time, a truncated last line."""
    p = root / "journal" / "w1.jsonl"
    lines = p.read_text().splitlines(keepends=True)
    dup = json.loads(lines[10])
    bad_time = json.loads(lines[20])
    del bad_time["intended"], bad_time["start"]
    lines[30:30] = ["not json at all\n", "[1, 2]\n", json.dumps(dup) + "\n", json.dumps(bad_time) + "\n", "\n"]
    p.write_text("".join(lines) + '{"w": "w1", "n": 99999, "op": "lo')


def _rows_in_file_order(root: Path, h: History) -> None:
    """The reference: every journal line decoded and fed row by row (the checks' own path)."""
    for path in sorted((root / "journal").glob("*.jsonl")):
        rows = []
        for lineno, line in enumerate(path.read_text().split("\n"), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                h.add_bad_line(f"{path.name}:{lineno}", "undecodable JSON line")
                continue
            if type(obj) is not dict:
                h.add_bad_line(f"{path.name}:{lineno}", "not a JSON object")
                continue
            rows.append(obj)
        h.feed(rows, where=path.name)


def _state(h: History) -> dict:
    def sess(s: _Sess) -> tuple:
        return tuple(getattr(s, k) for k in _Sess.__slots__)

    def race(r: _Race) -> tuple:
        return tuple(getattr(r, k) for k in _Race.__slots__)

    def anyorder(lst: list) -> list:  # across worker files the scan goes by time, not file by file
        return sorted(lst, key=repr)

    h._prepare()
    return {
        "rows": h.rows, "event_rows": h.event_rows, "expected_rows": h.expected_rows,
        "unexpected": h.unexpected_count, "unexpected_ex": anyorder(h.unexpected), "expect_unknown": h.expect_unknown,
        "last_t": h.last_t, "sessions": {k: sess(v) for k, v in h.sessions.items()},
        "kicks": {k: anyorder(v) for k, v in h.kicks.items()}, "expiries": {k: sorted(v) for k, v in h.expiries.items()},
        "expiry_rows": anyorder(h.expiry_rows), "logouts": h.logouts,
        "conn_logins": h.conn_logins, "conn_disc": h.conn_disc, "rest_kicks": h.rest_kicks,
        "races": anyorder([race(r) for r in h.races]), "switches": anyorder(h.switches), "max_n": h._max_n,
        "seen": {k: bytes(v).rstrip(b"\0") for k, v in h._seen.items()}, "dup": (h.dup_count, anyorder(h.dup_n)),
        "bad": (h.bad_count, sorted(json.dumps(b, sort_keys=True, default=str) for b in h.bad_rows)),
    }


def _results(res: dict) -> dict:
    """Check results, examples in any order (the first ten of a kind may differ in order only)."""
    return {k: (r.violations, r.times, sorted(map(repr, r.examples)) if r.violations <= 10 else len(r.examples))
            for k, r in res.items()}


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 4 KiB, so a small journal crosses many block boundaries."""
    real = scan_mod._blocks
    monkeypatch.setattr(scan_mod, "_blocks", lambda path, size=4096: real(path, size))


def _count_slow_blocks(monkeypatch) -> list[int]:
    calls = [0]
    real = scan_mod._decode_lines

    def counting(*a, **k):
        calls[0] += 1
        return real(*a, **k)

    monkeypatch.setattr(scan_mod, "_decode_lines", counting)
    return calls


def test_history_from_the_scan_equals_row_by_row_feeding(tmp_path, small_blocks, monkeypatch):
    _journal(tmp_path)
    slow = _count_slow_blocks(monkeypatch)
    scan = scan_run(tmp_path)
    assert slow[0] == 0, "a clean journal must take the fast column path"
    ref = History()
    _rows_in_file_order(tmp_path, ref)
    assert scan.history.rows == ref.rows > 2000
    assert _state(scan.history) == _state(ref)
    a = run_checks(tmp_path, history=scan.history)
    b = run_checks(tmp_path, history=ref)
    assert _results(a) == _results(b)
    # the journal has real problems in it, and the checks see them through the scan
    assert a["kick_exactly_once"].violations > 0
    assert a["expected_rejections"].violations > 0
    assert a["switch_consistency"].violations > 0


def test_damaged_journal_is_reported_the_same_way(tmp_path, small_blocks, monkeypatch):
    _journal(tmp_path)
    _damage(tmp_path)
    slow = _count_slow_blocks(monkeypatch)
    scan = scan_run(tmp_path)
    assert 0 < slow[0] < 10, "only the damaged blocks are decoded line by line"
    ref = History()
    _rows_in_file_order(tmp_path, ref)
    assert _state(scan.history) == _state(ref)
    integrity = run_checks(tmp_path, history=scan.history)["journal_integrity"]
    kinds = {e["kind"] for e in integrity.examples}
    assert integrity.violations >= 5 and {"bad_row", "duplicate_n"} <= kinds, integrity.examples
    # the report's side counts the same damage: 3 undecodable / non-object lines + 1 without times
    assert scan.digest.bad_lines == 4


def _frame_eq(a: pd.DataFrame, b: pd.DataFrame, **kw) -> None:
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=False, **kw)


def test_digest_equals_the_aggregates_of_the_loaded_journal(tmp_path, small_blocks):
    _journal(tmp_path)
    d = scan_run(tmp_path).digest
    df, judged = agg.apply_expect(load_journal(tmp_path))
    events = agg.EVENT_OPS
    assert d.rows == len(df) and d.unexpected_rows == judged["unexpected"] > 0
    assert d.origin_ns() == agg.time_origin_ns(df)
    assert d.span_s() == pytest.approx(agg.journal_span_s(df))
    pd.testing.assert_frame_equal(d.op_table(12.5, events), agg.op_summary(df, 12.5, events), check_dtype=False)
    pd.testing.assert_frame_equal(d.op_table(), agg.op_summary(df), check_dtype=False)
    _frame_eq(d.code_table(), agg.code_counts(df))
    _frame_eq(d.code_table((1, 2), with_expected=False, skip_fault=True), agg.error_code_counts(df))
    _frame_eq(d.code_table((3,), with_expected=False), agg.expected_code_counts(df))
    assert any("(" in n for n in d.code_table()["name"]), "protocol conditions are named"
    _frame_eq(d.per_second(), agg.per_second(df))
    _frame_eq(d.codes_per_second(), agg.codes_per_second(df))
    _frame_eq(d.expected_table(), agg.expected_table(df))
    _frame_eq(d.fault_windows(), agg.fault_windows(df))
    timed = agg.timed_ops(df, events)
    assert d.timed_ops(events) == timed
    _frame_eq(d.latency_cdf(timed), agg.latency_cdf(df, timed))
    # (the DataFrame version goes through float64 unix ns: ~0.1 us off; the digest is exact)
    _frame_eq(d.kick_delays().sort_values(["delay_ms", "reason"]),
              agg.kick_delays(df).sort_values(["delay_ms", "reason"]), atol=1e-3, rtol=0)
    for op in ("relogin", "switch", "login"):
        assert sorted(d.ok_latencies(op)) == sorted(agg.ok_latencies(df, op))
    pts = ["switch", "relogin"]
    _frame_eq(d.latency_points(pts).sort_values(["op", "second"]),
              agg.latency_points(df, pts, agg.time_origin_ns(df)).sort_values(["op", "second"]))
    assert d.scenario_names() - {"faults"} == agg.scenarios_run(df, {})
    race_rows = [r for p in sorted((tmp_path / "journal").glob("*.jsonl"))
                 for r in map(json.loads, p.read_text().splitlines()) if r["op"] == "race"]
    _frame_eq(d.race_survivors(), agg.race_counts(agg.race_survivors(race_rows)))
    assert d.race_survivors()["races"].sum() == len(agg.race_survivors(race_rows)) > 0
    assert d.race_settle_note() == agg.race_settle_note(race_rows) is not None
    lag = (df["start"] - df["intended"]).to_numpy("int64")
    assert d.lag_p99_ms() == float(np.quantile(lag, 0.99, method="inverted_cdf")) / 1e6


def test_sketch_beyond_exact_values_is_never_below_and_at_most_0_07_percent_above(monkeypatch):
    monkeypatch.setattr(digest_mod, "EXACT_VALUES", 1000)
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.lognormal(2.0, 1.2, 50_000), [0.0, 0.0, 123456.0]])
    sk = digest_mod.Sketch()
    for part in np.array_split(values, 17):
        sk.add(part)
    assert not sk.exact and sk.n == len(values)
    qs = [0.001, 0.5, 0.9, 0.99, 0.999, 1.0]
    v = np.sort(values)
    exact = [v[max(int(np.ceil(q * len(v) - 1e-9)), 1) - 1] for q in qs]
    for got, want in zip(sk.quantiles(qs), exact):
        assert want <= got <= want * 1.0007 + 1e-12, (got, want)
    assert sk.max == 123456.0 and sk.quantiles([1.0])[0] == 123456.0
    small = digest_mod.Sketch()
    small.add(np.array([3.0, 1.0, 2.0]))
    assert small.exact and small.quantiles([0.5, 1.0]) == [2.0, 3.0]


def test_the_latency_sample_stays_evenly_thinned_and_does_not_hold_the_blocks_it_came_from():
    """The chart's (time, latency) sample keeps at most ~cap points however many rows pass, and
    the memory behind them is its own: a view into each block's arrays kept every block alive
    (the sample's memory grew with the run's rows: 43 MiB at 10^7)."""
    cap, block, blocks = 1_000, 5_000, 400
    pts = digest_mod._Points(cap)
    for b in range(blocks):
        t = np.arange(b * block, (b + 1) * block, dtype="int64")
        pts.add(t, t.astype("float64") * 0.5)
    t, v = pts.arrays()
    assert 0 < len(t) <= cap + block // pts.stride + 1
    assert np.all(np.diff(t) == pts.stride) and t[0] == 0  # every stride-th row, in arrival order
    assert np.array_equal(v, t * 0.5)

    def held(a: np.ndarray) -> int:
        while a.base is not None and isinstance(a.base, np.ndarray):
            a = a.base
        return a.nbytes

    kept = sum(held(a) for a in pts.t + pts.v)
    own = sum(a.nbytes for a in pts.t + pts.v)
    assert kept == own and own <= 2 * 8 * (cap + block), (kept, own)


def test_per_second_latencies_are_dropped_once_every_journal_is_past_them(tmp_path):
    """The digest holds the values of the last seconds only (SLACK_S behind the slowest
    journal), not of the whole run: memory stays flat however long the run."""
    wr = _W("w0", random.Random(1))
    for s in range(200):
        for k in range(20):
            t = T0 + s * NS + k * 40_000_000
            wr.row("mass_login", "heartbeat", t, t + 1_000_000, conn="w0/1")
    (tmp_path / "journal").mkdir()
    with open(tmp_path / "journal" / "w0.jsonl", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in wr.rows)
    real = scan_mod._blocks
    held = []
    orig_advance = digest_mod.Digest.advance

    def spy(self, wm):
        orig_advance(self, wm)
        held.append(len(self._open))

    scan_mod_blocks = lambda path, size=8192: real(path, size)  # noqa: E731
    try:
        scan_mod._blocks = scan_mod_blocks
        digest_mod.Digest.advance = spy
        d = scan_run(tmp_path).digest
    finally:
        scan_mod._blocks = real
        digest_mod.Digest.advance = orig_advance
    assert max(held) <= digest_mod.SLACK_S + 5, max(held)
    ps = d.per_second()
    assert len(ps) == 200 and (ps["count"] == 20).all() and ps["p99_ms"].notna().all()
    assert d.late_rows == 0


def test_rows_far_out_of_order_still_count_and_are_named(tmp_path):
    """A journal written out of time order by more than SLACK_S: its rows count everywhere;
    only their second's percentiles (already final) leave them out, and the report says so."""
    (tmp_path / "journal").mkdir()
    wr = _W("w0", random.Random(1))
    for s in list(range(0, 100)) + [10, 11]:  # two rows 90 s late
        t = T0 + s * NS
        wr.row("mass_login", "heartbeat", t, t + 2_000_000, conn="w0/1")
    with open(tmp_path / "journal" / "w0.jsonl", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in wr.rows)
    real = scan_mod._blocks
    scan_mod._blocks = lambda path, size=2048: real(path, size)
    try:
        d = scan_run(tmp_path).digest
    finally:
        scan_mod._blocks = real
    assert d.late_rows == 2
    ps = d.per_second()
    assert int(ps.loc[ps["second"] == 10, "count"].iloc[0]) == 2
    assert d.op_table().loc["heartbeat", "count"] == 102


def test_the_end_of_a_run_reads_the_journals_once(tmp_path):
    """checks, summary and report from one scan: with the journal emptied after it, they give
    exactly what they give reading it themselves."""
    _journal(tmp_path)
    other = tmp_path.parent / (tmp_path.name + "-copy")
    shutil.copytree(tmp_path, other)
    scan = scan_run(tmp_path)
    for p in (tmp_path / "journal").glob("*.jsonl"):
        p.write_text("")  # whatever reads it again now finds nothing
    checks = run_checks(tmp_path, history=scan.history)
    summary = build_summary(tmp_path, meta={"run_id": "r"}, checks=checks, gates_cfg={}, digest=scan.digest)
    build_report(tmp_path, charts=False, digest=scan.digest)
    checks2 = run_checks(other)
    summary2 = build_summary(other, meta={"run_id": "r"}, checks=checks2, gates_cfg={})
    build_report(other, charts=False)
    assert {k: r.to_dict() for k, r in checks.items()} == {k: r.to_dict() for k, r in checks2.items()}
    summary.pop("versions"), summary2.pop("versions")
    assert summary == summary2 and summary["ops"]["login"]["count"] > 100
    for name in ("ops.csv", "codes.csv", "per_second.csv", "expected.csv"):
        assert (tmp_path / "tables" / name).read_text() == (other / "tables" / name).read_text(), name


def test_recovery_figures_come_from_the_same_read(tmp_path):
    """A fault run's reconnect-storm figures from the rows the scan keeps == from every row."""
    from harness.runner.faults import recovery_stats

    (tmp_path / "journal").mkdir()
    wr = _W("w0", random.Random(2))
    wr.row("faults", "fault", T0 + 10 * NS, T0 + 12 * NS, outcome="info", detail="server_restart",
           data={"kind": "server_restart", "pid_before": 1, "pid_after": 2})
    for i in range(60):
        t = T0 + 10 * NS + i * 20_000_000
        wr.row("mass_login", "heartbeat", t - NS, t - NS + 1_000_000, conn=f"w0/{i}")
        wr.row("mass_login", "disconnect", t, t, conn=f"w0/{i}", session=f"S{i}", outcome="info",
               detail="connection lost")
        back = t + (2 + i % 5) * NS
        wr.row("mass_login", "reconnect", t + 1_000_000, back, conn=f"w0/r{i}", outcome="ok" if i % 7 else "fail",
               code=0 if i % 7 else 70500, data={"old_conn": f"w0/{i}", "attempts": 1 + i % 3})
        wr.row("mass_login", "login", back - 5_000_000, back, conn=f"w0/r{i}", session=f"T{i}")
    with open(tmp_path / "journal" / "w0.jsonl", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in sorted(wr.rows, key=lambda r: r["end"]))
    scan = scan_run(tmp_path, recovery=True)
    want = recovery_stats(wr.rows)
    assert recovery_stats(scan.recovery) == want
    assert want["faults"][0]["lost"] == 60 and want["faults"][0]["failed"] > 0
    assert want["faults"][0]["kind"] == "server_restart"


def test_the_report_names_ops_whose_percentiles_come_from_the_histogram(tmp_path, monkeypatch):
    monkeypatch.setattr(digest_mod, "EXACT_VALUES", 100)
    _journal(tmp_path)
    d = scan_run(tmp_path).digest
    big = d.histogram_ops()
    assert "heartbeat" in big and "relogin" not in big  # hundreds of heartbeats, ~57 relogins
    build_report(tmp_path, charts=False, digest=d)
    assert "come from a histogram" in (tmp_path / "report.html").read_text()


def test_races_are_counted_not_kept_and_the_settle_median_survives_a_long_run(monkeypatch):
    """A race row costs the digest a count: 20,000 races of three kinds leave three keys, the
    survivors chart gets their counts, and the settle note's median is that of every race
    (np.median while the sketch holds them all; beyond, the nearest-rank median within 0.07 %)."""
    monkeypatch.setattr(digest_mod, "EXACT_VALUES", 1000)
    d = digest_mod.Digest()
    settle = []
    for i in range(20_000):
        kind = i % 4
        s = 400 + (i % 201)
        settle.append(s)
        d.add_race({"op": "race", "race": f"r{i}", "outcome": "fail" if kind == 3 else "ok", "settle_ms": s,
                    "data": {"survivors": ["a", "b"][: 2 if kind == 3 else 1], "devices": [{}] * (2 + (kind == 0)),
                             "policy": "single_platform"}})
    assert len(d.races) == 20_000 and len(d.races.counts) == 3
    surv = d.race_survivors()
    assert surv[["survivors", "devices", "outcome", "races"]].values.tolist() == [
        [1, 2, "ok", 10_000], [1, 3, "ok", 5_000], [2, 2, "fail", 5_000]]
    note = d.race_settle_note()
    med = float(sorted(settle)[len(settle) // 2 - 1])  # the nearest-rank median (np.median: 499.5)
    got = float(note.split("median ")[1].split(" ms")[0])
    assert not d.races.settle.exact and med <= got <= med * 1.0007, note
