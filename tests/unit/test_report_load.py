"""harness.results.report.load: journal files -> one flat DataFrame; damaged input is counted, not fatal."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.results.report.load import (JOURNAL_COLUMNS, ReportInputError, check_run_dir, load_config,
                                 load_journal, load_rows, load_summary, load_users_history)
from tests.unit.test_report_data import T0_NS, ms, row, write_run


def test_columns_dtypes_and_derived_times(tmp_path):
    write_run(tmp_path, [
        row("connect", 5, latency_ms=5, conn="w0/0", w="w0"),
        row("login", 20, start_ms=12, intended_ms=10, session="S1", conn="w0/0", w="w0",
            kicked=["S0"], expire_at=1_700_086_400, data={"x": {"deep": [1, 2]}}),
        row("login", 30, latency_ms=4, outcome="fail", code=70001, w="w1",
            detail="70001 ERR_SVR_ACCOUNT_USERSIG_EXPIRED"),
    ])
    df = load_journal(tmp_path)
    assert list(df.columns) == list(JOURNAL_COLUMNS) + ["latency_ms", "service_ms"]
    assert len(df) == 3 and df.attrs["bad_lines"] == 0 and df.attrs["files"] == 2
    for c in ("intended", "start", "end", "code", "n"):
        assert df[c].dtype == "int64"
    for c in ("op", "scenario", "outcome", "platform", "w", "detail"):
        assert isinstance(df[c].dtype, pd.CategoricalDtype)
    login = df[df["session"] == "S1"].iloc[0]
    assert login["start"] == ms(12) and login["intended"] == ms(10)
    assert login["latency_ms"] == 10.0 and login["service_ms"] == 8.0
    # extras absent from a row are null, present ones kept
    assert pd.isna(df.loc[df["op"] == "connect", "session"].iloc[0])
    assert df.loc[df["op"] == "connect", "conn"].iloc[0] == "w0/0"
    assert pd.isna(df["race"]).all() and pd.isna(df["by"]).all()
    assert sorted(df["code"].tolist()) == [0, 0, 70001]


def test_damaged_lines_are_skipped_and_counted(tmp_path):
    good = [row("login", 10 + i, latency_ms=1) for i in range(3)]
    write_run(tmp_path, good, raw_lines=[
        "this is not json",
        "[1, 2, 3]",
        json.dumps({"op": "login", "start": "yesterday", "end": 5, "intended": 5}),
        json.dumps({"op": "login", "outcome": "ok"}),  # no times at all
        '{"w": "w0", "n": 9, "op": "lo',  # cut short by a crash
    ])
    df = load_journal(tmp_path)
    assert len(df) == 3
    assert df.attrs["bad_lines"] == 5
    assert (df["latency_ms"] == 1.0).all()


def test_truncated_last_line_only(tmp_path):
    write_run(tmp_path, [row("login", 10 + i, latency_ms=2) for i in range(50)],
              raw_lines=['{"w": "w0", "n": 50, "op": "log'])
    df = load_journal(tmp_path)
    assert len(df) == 50 and df.attrs["bad_lines"] == 1


def test_missing_fields_are_filled(tmp_path):
    r1 = row("login", 10, latency_ms=3)
    del r1["intended"]  # -> start
    r2 = row("login", 12, latency_ms=3, outcome="fail")
    del r2["code"]  # failed row without code -> -1
    r3 = row("heartbeat", 14, latency_ms=1)
    del r3["code"]  # ok row without code -> 0
    write_run(tmp_path, [r1, r2, r3])
    df = load_journal(tmp_path).set_index("end")
    assert df.loc[ms(10), "intended"] == ms(7)
    assert df.loc[ms(12), "code"] == -1
    assert df.loc[ms(14), "code"] == 0


def test_empty_and_missing_journals_give_empty_frame(tmp_path):
    for root in (tmp_path / "nothing", tmp_path / "empty"):
        root.mkdir()
    (tmp_path / "empty" / "journal").mkdir()
    (tmp_path / "empty" / "journal" / "w0.jsonl").write_text("")
    for root in (tmp_path / "nothing", tmp_path / "empty"):
        df = load_journal(root)
        assert df.empty
        assert list(df.columns) == list(JOURNAL_COLUMNS) + ["latency_ms", "service_ms"]
        assert df["end"].dtype == "int64" and df.attrs["bad_lines"] == 0


def test_columns_subset_keeps_times(tmp_path):
    write_run(tmp_path, [row("login", 10, latency_ms=3, session="S1")])
    df = load_journal(tmp_path, columns=["op"])
    assert {"op", "outcome", "code", "intended", "start", "end", "latency_ms"} <= set(df.columns)
    assert "session" not in df.columns and "user" not in df.columns


def test_load_rows_keeps_nested_data_for_one_op(tmp_path):
    race = row("race", 600, latency_ms=600, race="r1", scenario="kick_race",
               data={"survivors": ["S2"], "devices": [{"session": "S1"}, {"session": "S2"}]})
    write_run(tmp_path, [row("login", 10, latency_ms=1, detail="race"), race],
              raw_lines=['{"op": "race", broken'])
    rows = load_rows(tmp_path, "race")
    assert len(rows) == 1
    assert rows[0]["data"]["survivors"] == ["S2"] and rows[0]["race"] == "r1"
    assert load_rows(tmp_path, "switch") == []
    assert load_rows(tmp_path / "missing", "race") == []


def test_summary_config_history(tmp_path):
    assert load_summary(tmp_path) == {} and load_config(tmp_path) == {}
    assert load_users_history(tmp_path).empty
    (tmp_path / "summary.json").write_text("[1, 2]")
    assert load_summary(tmp_path) == {}
    (tmp_path / "summary.json").write_text('{"run_id": "r"}')
    assert load_summary(tmp_path) == {"run_id": "r"}
    (tmp_path / "config.yaml").write_text("target: {policy: dual_platform}\n")
    assert load_config(tmp_path)["target"]["policy"] == "dual_platform"
    (tmp_path / "config.yaml").write_text("target: [unclosed\n")
    assert load_config(tmp_path) == {}
    t0 = T0_NS // 10**9
    (tmp_path / "locust_stats_history.csv").write_text(
        '"Timestamp","User Count","Type","Name","Requests/s"\n'
        f'"{t0}","10","","Aggregated","1.0"\n'
        f'"{t0 + 1}","20","WS","login","1.0"\n'
        f'"{t0 + 1}","20","","Aggregated","1.0"\n')
    hist = load_users_history(tmp_path)
    assert hist["users"].tolist() == [10, 20]
    assert hist["unix_s"].tolist() == [float(t0), float(t0 + 1)]


def test_check_run_dir(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "run" / "journal").mkdir(parents=True)
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "summary.json").write_text("{}")
    assert check_run_dir(tmp_path / "run") == tmp_path / "run"
    assert check_run_dir(tmp_path / "done") == tmp_path / "done"
    for bad in (tmp_path / "nope", tmp_path / "file.txt", tmp_path / "empty", tmp_path):
        with pytest.raises(ReportInputError) as info:
            check_run_dir(bad)
        assert info.value.exit_code == 2 and str(bad) in str(info.value)


def test_matching_lines_across_chunk_boundaries(tmp_path):
    from harness.results.report.load import _matching_lines

    lines = [b'{"op":"race","i":%d}' % i if i % 3 == 0 else b'{"op":"login","i":%d}' % i
             for i in range(20)]
    path = tmp_path / "w.jsonl"
    path.write_bytes(b"\n".join(lines))  # no trailing newline on the last line
    want = [ln for ln in lines if b'"race"' in ln]
    for chunk in (5, 7, 16, 64, 1 << 20):
        assert _matching_lines(path, b'"race"', chunk_size=chunk) == want


def test_expect_column_and_verdicts(tmp_path):
    from harness.results.report.load import apply_expect, load_journal

    (tmp_path / "journal").mkdir()
    rows = [{"w": "w0", "n": 0, "op": "login", "intended": 1, "start": 1, "end": 2, "outcome": "fail", "code": 70001,
             "expect": 70001},
            {"w": "w0", "n": 1, "op": "login", "intended": 1, "start": 1, "end": 2, "outcome": "ok", "code": 0,
             "expect": 70001},
            {"w": "w0", "n": 2, "op": "login", "intended": 1, "start": 1, "end": 2, "outcome": "info", "code": -1}]
    (tmp_path / "journal" / "w0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    df = load_journal(tmp_path, columns=["op", "expect"])
    assert df["expect"].iloc[0] == 70001 and df["expect"].isna().tolist() == [False, False, True]
    assert list(df["outcome"].astype(str)) == ["fail", "ok", "info"]          # the rows' own outcomes
    assert list(apply_expect(df)["outcome"].astype(str)) == ["expected", "fail", "info"]
    plain = load_journal(tmp_path, columns=["op"])
    assert "expect" not in plain.columns and apply_expect(plain) is plain
