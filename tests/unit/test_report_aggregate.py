"""harness.results.report.aggregate: exact tables from tiny journals with known answers."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from harness.protocol import code_short
from harness.results.report import aggregate as agg
from harness.results.report.load import load_journal
from tests.unit.test_report_data import T0_NS, row, write_run


@pytest.fixture
def mixed(tmp_path):
    """login: 100 ok rows of 1..100 ms + 5 slow failures + 2 infos; heartbeat queued 5 ms;
    logout: failures only; one kicked_offline event."""
    rows = []
    for i in range(1, 101):
        rows.append(row("login", 1000 + i * 10, latency_ms=i, w="w0"))
    for i in range(5):
        rows.append(row("login", 2000 + i, latency_ms=1000, outcome="fail",
                        code=70001 if i < 3 else 6206, w="w1"))
    for i in range(2):
        rows.append(row("login", 2100 + i, latency_ms=500, outcome="info", code=-1, w="w1"))
    for i in range(10):
        rows.append(row("heartbeat", 3000 + i, start_ms=3000 + i - 10, intended_ms=3000 + i - 15))
    for i in range(3):
        rows.append(row("logout", 4000 + i, latency_ms=2, outcome="fail", code=6014))
    rows.append(row("kicked_offline", 4500, by="S9", detail="multi_device"))
    write_run(tmp_path, rows)
    return load_journal(tmp_path)


def test_op_summary_percentiles_over_ok_rows(mixed):
    s = agg.op_summary(mixed, duration_s=10.0)
    assert list(s.index) == ["login", "logout", "heartbeat", "kicked_offline"]
    assert list(s.columns) == ["count", "ok", "fail", "info", "expected", "rate_per_s",
                               "p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms",
                               "service_p50_ms", "service_p99_ms", "kind"]
    assert s["expected"].tolist() == [0, 0, 0, 0]  # no row of this journal carries expect
    assert s["kind"].tolist() == ["request", "request", "request", "request"]  # no events given
    assert s.loc["kicked_offline", "p50_ms"] == 0.0  # other callers (summary.py) see no change
    r = agg.op_summary(mixed, duration_s=10.0, events=agg.event_ops({}))
    assert r["kind"].tolist() == ["request", "request", "request", "event"]
    # an event has no latency: every latency cell is empty, never 0
    assert all(math.isnan(r.loc["kicked_offline", c]) for c in [*agg.PERCENTILES, "max_ms"])
    assert r.drop(index="kicked_offline").equals(s.drop(index="kicked_offline").assign(
        kind=r["kind"].drop(index="kicked_offline")))
    login = s.loc["login"]
    assert (login["count"], login["ok"], login["fail"], login["info"]) == (107, 100, 5, 2)
    assert login["rate_per_s"] == pytest.approx(10.7)
    # nearest rank over the 100 ok latencies 1..100 ms; the 1000 ms failures do not count
    assert [login[c] for c in agg.PERCENTILES] == [50.0, 90.0, 95.0, 99.0, 100.0]
    assert login["max_ms"] == 100.0
    assert (login["service_p50_ms"], login["service_p99_ms"]) == (50.0, 99.0)
    hb = s.loc["heartbeat"]
    assert hb["p50_ms"] == 15.0 and hb["service_p50_ms"] == 10.0  # queueing shows in latency only
    logout = s.loc["logout"]
    assert logout["count"] == 3 and logout["fail"] == 3
    assert all(math.isnan(logout[c]) for c in [*agg.PERCENTILES, "max_ms", "service_p50_ms"])


def test_op_summary_nearest_rank_small_sample(tmp_path):
    write_run(tmp_path, [row("switch", 100 * (i + 1), latency_ms=v)
                         for i, v in enumerate([40, 10, 30, 20])])
    s = agg.op_summary(load_journal(tmp_path)).loc["switch"]
    assert (s["p50_ms"], s["p90_ms"], s["p99_ms"], s["max_ms"]) == (20.0, 40.0, 40.0, 40.0)
    # default duration = journal span: first intended (0.06 s) .. last end (0.4 s)
    assert s["rate_per_s"] == pytest.approx(4 / 0.34)


def test_op_summary_empty():
    s = agg.op_summary(agg.pd.DataFrame(columns=["op"]).iloc[:0])
    assert s.empty and "p99_ms" in s.columns and s.index.name == "op"


def test_code_counts_sorted_and_named(mixed):
    c = agg.code_counts(mixed)
    assert c["code"].tolist() == [0, 6014, 70001, -1, 6206]
    assert c["count"].tolist() == [111, 3, 3, 2, 2]
    assert c["name"].tolist() == [code_short(x) for x in c["code"]]
    assert c.loc[c["code"] == 70001, "name"].item() == "70001 USERSIG_EXPIRED"
    err = agg.error_code_counts(mixed)
    assert 0 not in err["code"].tolist() and err["count"].sum() == 10


def test_per_second_buckets(tmp_path):
    write_run(tmp_path, [
        row("login", 500, latency_ms=100),
        row("login", 700, latency_ms=300),
        row("login", 1200, latency_ms=50),
        row("login", 1900, latency_ms=900, outcome="fail", code=70001),
        row("heartbeat", 2500, latency_ms=1),
        row("heartbeat", 2600, latency_ms=3, outcome="info", code=-1),
    ])
    ps = agg.per_second(load_journal(tmp_path))
    expect = pd.DataFrame({
        "second": [0, 1, 2], "unix_s": [T0_NS // 10**9 + k for k in range(3)],
        "op": ["login", "login", "heartbeat"], "count": [2, 2, 2], "ok": [2, 1, 1],
        "fail": [0, 1, 0], "info": [0, 0, 1], "expected": [0, 0, 0],
        "p50_ms": [100.0, 50.0, 1.0], "p95_ms": [300.0, 50.0, 1.0], "p99_ms": [300.0, 50.0, 1.0],
    })
    pd.testing.assert_frame_equal(ps, expect, check_dtype=False)
    assert ps["second"].dtype == "int64"


def test_per_second_only_failures_has_nan_latency(tmp_path):
    write_run(tmp_path, [row("login", 100 + i, latency_ms=5, outcome="fail", code=70001)
                         for i in range(3)])
    ps = agg.per_second(load_journal(tmp_path))
    assert ps["fail"].tolist() == [3] and ps["p50_ms"].isna().all()


def test_codes_per_second(mixed):
    c = agg.codes_per_second(mixed)
    got = {(int(r.second), int(r.code)): int(r.count) for r in c.itertuples()}
    # origin = first intended (1.000 s after T0) floored to a second, so 2.0xx s is second 1
    assert agg.time_origin_ns(mixed) == T0_NS + 10**9
    assert got == {(1, 70001): 3, (1, 6206): 2, (1, -1): 2, (3, 6014): 3}


def test_connections_per_second(tmp_path):
    write_run(tmp_path, [
        row("connect", 100, latency_ms=50, conn="w0/0"),
        row("heartbeat", 2500, latency_ms=1, conn="w0/0"),
        row("connect", 1600, latency_ms=100, conn="w0/1"),
        row("disconnect", 1700, conn="w0/1"),
        row("fault", 900, start_ms=800),  # no conn: not a connection
    ])
    c = agg.connections_per_second(load_journal(tmp_path))
    assert c["second"].tolist() == [0, 1, 2] and c["connections"].tolist() == [1, 2, 1]


def test_fault_windows_and_timed_ops(tmp_path):
    write_run(tmp_path, [
        row("login", 500, latency_ms=100),
        row("fault", 3000, start_ms=1000, outcome="info", detail="server_stall"),
        row("sig_expired", 3500),
        row("relogin", 3600, latency_ms=80),
    ])
    df = load_journal(tmp_path)
    f = agg.fault_windows(df)
    assert f.to_dict("records") == [{"start_s": 1.0, "end_s": 3.0, "label": "server_stall"}]
    assert agg.timed_ops(df) == ["login", "relogin"]


def test_latency_cdf(tmp_path):
    write_run(tmp_path, [row("switch", 100 * (i + 1), latency_ms=v) for i, v in enumerate([40, 10, 30, 20])]
              + [row("login", 1000, start_ms=995, intended_ms=990)])
    cdf = agg.latency_cdf(load_journal(tmp_path))
    sw = cdf[cdf["op"] == "switch"]
    # the service-time curve is always there, beside latency (here nothing queued: equal)
    assert sw["kind"].unique().tolist() == ["latency", "service"]
    assert sw.loc[sw["kind"] == "service", "ms"].tolist() == [10.0, 20.0, 30.0, 40.0]
    sw = sw[sw["kind"] == "latency"]
    assert sw["ms"].tolist() == [10.0, 20.0, 30.0, 40.0]
    assert sw["fraction"].tolist() == [0.25, 0.5, 0.75, 1.0]
    lg = cdf[cdf["op"] == "login"].set_index("kind")["ms"]
    assert lg["latency"] == 10.0 and lg["service"] == 5.0


def test_latency_cdf_thins_but_keeps_tail():
    df = pd.DataFrame({"op": pd.Categorical(["login"] * 100_000), "outcome": pd.Categorical(["ok"] * 100_000),
                       "latency_ms": np.arange(1, 100_001, dtype="float64"),
                       "service_ms": np.arange(1, 100_001, dtype="float64")})
    cdf = agg.latency_cdf(df, ["login"], max_points=400)
    assert cdf.groupby("kind").size().max() <= 400  # per curve
    assert cdf["ms"].max() == 100_000.0 and cdf["fraction"].max() == 1.0
    assert (cdf["fraction"] >= 0.999).sum() >= 20  # the tail is drawn with many points


def test_kick_delays(tmp_path):
    write_run(tmp_path, [
        row("login", 120, start_ms=100, session="S2"),
        row("kicked_offline", 130, session="S1", by="S2", detail="multi_device"),
        row("kicked_offline", 140, session="S0", by="S-unknown", detail="multi_device"),
        row("kicked_offline", 150, session="S3", detail="rest_kick"),
    ])
    k = agg.kick_delays(load_journal(tmp_path))
    assert k.to_dict("records") == [{"reason": "multi_device", "delay_ms": 30.0}]


def test_race_survivors():
    rows = [{"op": "race", "race": "r1", "outcome": "ok",
             "data": {"survivors": ["S2"], "devices": [{}, {}, {}], "policy": "single_platform"}},
            {"op": "race", "race": "r2", "outcome": "fail",
             "data": {"survivors": ["S1", "S2"], "devices": [{}, {}], "policy": "single_platform"}},
            {"op": "race", "race": "r3", "data": None}]
    r = agg.race_survivors(rows)
    assert r[["race", "survivors", "devices", "outcome"]].values.tolist() == [
        ["r1", 1, 3, "ok"], ["r2", 2, 2, "fail"]]
    assert agg.race_survivors([]).empty


SUMMARY = {
    "run_id": "r1", "target": "ws://127.0.0.1:9", "policy": "dual_platform", "users_peak": 50,
    "duration_s": 12.5, "exit_code": 4,
    "gates": {"latency_ms.login.p99": {"limit": 2000, "value": 2500.0, "passed": False},
              "error_ratio.overall": {"limit": 0.05, "value": 0.01, "passed": True}},
    "checks": {"kick_exactly_once": {"violations": 2, "examples": [
        {"kind": "double_kick", "t": T0_NS + 3 * 10**9}, {"kind": "x", "t": None}]},
        "policy_limit": {"violations": 0, "examples": []}},
}


def test_gates_and_checks_tables():
    g = agg.gates_table(SUMMARY)
    assert g.to_dict("records") == [
        {"gate": "error_ratio.overall", "limit": 0.05, "value": 0.01, "passed": True},
        {"gate": "latency_ms.login.p99", "limit": 2000, "value": 2500.0, "passed": False}]
    c = agg.checks_table(SUMMARY)
    assert c[["check", "violations", "passed", "examples"]].values.tolist() == [
        ["kick_exactly_once", 2, False, 2], ["policy_limit", 0, True, 0]]
    assert "double_kick" in c.loc[0, "first_example"]
    assert agg.gates_table({}).empty and agg.checks_table({"checks": "junk"}).empty


def test_check_violation_times():
    t = agg.check_violation_times(SUMMARY, T0_NS)
    assert t.to_dict("records") == [{"check": "kick_exactly_once", "second": 3.0}]
    odd = {"checks": {"a": {"violations": 3, "examples": [
        {"at": "2023-11-14T22:13:25Z"}, {"row": {"end": (T0_NS + 10**9) // 10**6}}, {"t": "soon"}]}}}
    got = agg.check_violation_times(odd, T0_NS)["second"].tolist()
    assert got == [pytest.approx(5.0), pytest.approx(1.0)]
    full = {"checks": {"a": {"violations": 2, "times": [T0_NS, T0_NS + 2 * 10**9], "examples": []}}}
    assert agg.check_violation_times(full, T0_NS)["second"].tolist() == [0.0, 2.0]


def test_headline_verdicts(mixed):
    h = agg.headline(SUMMARY, {}, mixed, None, "folder")
    assert (h["run_id"], h["target"], h["policy"], h["users_peak"], h["duration_s"]) == (
        "r1", "ws://127.0.0.1:9", "dual_platform", 50, 12.5)
    assert h["verdict"] == "FAIL" and h["exit_code"] == 4
    assert h["reasons"][0].startswith("exit code 4: a correctness check")
    assert any("latency_ms.login.p99" in r and "2,500" in r for r in h["reasons"])
    assert any("kick_exactly_once: 2 violation" in r for r in h["reasons"])
    ok = agg.headline({"exit_code": 0}, {"target": {"host": "", "policy": "single_platform"}},
                      mixed, 7, "folder")
    assert (ok["verdict"], ok["run_id"], ok["target"], ok["users_peak"]) == ("PASS", "folder", "embedded", 7)
    unknown = agg.headline({}, {}, mixed, None, "folder")
    assert unknown["verdict"] == "UNKNOWN" and "no summary.json" in unknown["reasons"][0]
    assert unknown["duration_s"] == pytest.approx(agg.journal_span_s(mixed))


def test_summary_fallback_tables():
    s = {"ops": {"login": {"count": 3, "ok": 2, "fail": 1, "info": 0, "p50_ms": 5.0}, "connect": {"count": 1}},
         "codes": {"0": 3, "70001": 1, "junk": 2}}
    ops = agg.ops_from_summary(s)
    assert list(ops.index) == ["connect", "login"]
    assert ops.loc["login", "p50_ms"] == 5.0 and math.isnan(ops.loc["connect", "p50_ms"])
    codes = agg.codes_from_summary(s)
    assert codes[["code", "count"]].values.tolist() == [[0, 3], [70001, 1]]


def test_codes_name_the_protocol_condition_a_code_stands_for():
    """The xmpp driver maps not-authorized onto 70009: charts and tables say so."""
    import pandas as pd

    from harness.results.report.aggregate import code_counts, protocol_conditions

    df = pd.DataFrame({"code": [70009, 70009, 70009, -1, -1, -1, 0],
                       "detail": ["not-authorized"] * 3 + ["connection lost (error:conflict)", "error:conflict",
                                                           "timeout after 2 s", "ok"],
                       "outcome": ["fail"] * 3 + ["info"] * 3 + ["ok"]})
    assert protocol_conditions(df) == {70009: "not-authorized"}       # -1: conflict is only 2 of 3
    names = dict(zip(code_counts(df)["code"], code_counts(df)["name"]))
    assert names[70009].endswith("(not-authorized)") and names[-1] == "-1 TRANSPORT"
    tim = pd.DataFrame({"code": [70001, 70001], "detail": ["UserSig expired", "UserSig expired"],
                        "outcome": ["fail", "fail"]})
    assert protocol_conditions(tim) == {}


def test_race_counts_count_races_per_kind_and_sum_counted_rows():
    rows = [{"op": "race", "race": f"r{i}", "outcome": "ok" if i % 3 else "fail",
             "data": {"survivors": ["S"] * (1 if i % 3 else 2), "devices": [{}, {}, {}], "policy": "single_platform"}}
            for i in range(9)]
    c = agg.race_counts(agg.race_survivors(rows))
    assert c.values.tolist() == [[1, 3, "ok", "single_platform", 6], [2, 3, "fail", "single_platform", 3]]
    twice = agg.race_counts(pd.concat([c, c]))  # counted rows are summed, not counted as one race each
    assert twice["races"].tolist() == [12, 6]
    assert agg.race_counts(agg.race_survivors([])).empty
