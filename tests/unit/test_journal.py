"""The journal: gap-free n, every field of RESULTS.md §1, nothing lost on close."""
from __future__ import annotations

import json

from harness.results.journal import FIELDS, Journal, read_journal


def test_rows_are_gap_free_and_complete(tmp_path):
    j = Journal(tmp_path / "journal" / "w1.jsonl", "w1").open()
    for i in range(5):
        j.record(scenario="mass_login", op="login", outcome="ok", code=0, start=10 + i, end=20 + i,
                 user=f"u{i}", platform="iOS", instance="d1", session=f"S{i}", kicked=[], expire_at=99)
    j.record(scenario="kick_race", op="kicked_offline", outcome="ok", code=0, start=30, end=30, by="S9", detail="multi_device")
    assert j.rows == 6
    j.flush()
    j.record(scenario="kick_race", op="login", outcome="fail", code=70001, start=40, end=41, intended=35)
    j.close()
    rows = read_journal(tmp_path / "journal" / "w1.jsonl")
    assert [r["n"] for r in rows] == list(range(7))
    for r in rows:
        assert set(FIELDS) <= set(r)
        assert r["w"] == "w1"
    assert rows[0]["intended"] == rows[0]["start"] == 10
    assert rows[0]["kicked"] == [] and rows[0]["expire_at"] == 99
    assert rows[5]["by"] == "S9"
    assert rows[6]["intended"] == 35 and rows[6]["code"] == 70001


def test_close_is_idempotent_and_appends(tmp_path):
    path = tmp_path / "j.jsonl"
    j = Journal(path, "w").open()
    j.record(scenario="s", op="connect", outcome="ok", code=0, start=1, end=2)
    j.close()
    j.close()
    assert len(path.read_text().splitlines()) == 1
    json.loads(path.read_text())


def test_a_row_recorded_after_close_is_not_lost(tmp_path):
    path = tmp_path / "j.jsonl"
    j = Journal(path, "w").open()
    j.record(scenario="s", op="connect", outcome="ok", code=0, start=1, end=2)
    j.close()
    j.record(scenario="s", op="connect", outcome="info", code=-1, start=3, end=4)
    rows = read_journal(path)
    assert [r["n"] for r in rows] == [0, 1]
    assert j.late_rows == 1


def test_emit_fires_one_request_event_per_row(tmp_path):
    from locust.event import Events

    events = Events()
    seen = []
    events.request.add_listener(lambda **kw: seen.append(kw))
    j = Journal(tmp_path / "j.jsonl", "w").open()
    j.emit(events, request_type="WS", response_time_ms=1.5, exception=None, context={"scenario": "s"},
           scenario="s", op="login", outcome="ok", code=0, start=1, end=2)
    j.close()
    assert [(e["request_type"], e["name"], e["response_time"], e["exception"]) for e in seen] == [("WS", "login", 1.5, None)]
    assert [r["op"] for r in read_journal(tmp_path / "j.jsonl")] == ["login"]


def test_journal_lines_are_the_stdlib_encoders_bytes_whichever_encoder_writes_them(tmp_path) -> None:
    import json

    from harness.results.journal import Journal, _line

    stdlib = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode
    rows = [{"op": "login", "user": "ü-é", "n": 1, "session": None, "kicked": ["S1"], "data": {"a": [1, 2]}},
            {"op": "x", "big": 99999999999999999999, "neg": -(2 ** 70)},   # beyond 64 bits: the stdlib writes it
            {"op": "y", "data": {1: "int key"}},                           # non-str key: the stdlib writes it
            {"op": "z", "odd": object.__new__(type("Odd", (), {"__str__": lambda self: "odd!"}))}]
    for row in rows:
        assert _line(row) == stdlib(row).encode("utf-8")
    j = Journal(tmp_path / "j.jsonl", "w0").open()
    j.record(scenario="s", op="login", outcome="ok", code=0, start=1, end=2, extra_big=99999999999999999999)
    j.close()
    (row,) = [json.loads(line) for line in (tmp_path / "j.jsonl").read_text(encoding="utf-8").splitlines()]
    assert row["extra_big"] == 99999999999999999999 and row["op"] == "login"
