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


def test_events_are_journaled_but_not_fired_as_requests(tmp_path):
    from locust.event import Events

    from harness.results.journal import EVENT_OPS, op_kind

    events = Events()
    seen = []
    events.request.add_listener(lambda **kw: seen.append(kw["name"]))
    j = Journal(tmp_path / "j.jsonl", "w").open()
    for op in ("login", "kicked_offline", "sig_expired", "disconnect", "race", "fault"):
        j.emit(events, request_type="WS", response_time_ms=0.0, scenario="s", op=op, outcome="ok", code=0,
               start=1, end=1)
    j.close()
    assert seen == ["login", "race"]
    assert [r["op"] for r in read_journal(tmp_path / "j.jsonl")] == [
        "login", "kicked_offline", "sig_expired", "disconnect", "race", "fault"]
    assert {op_kind(op) for op in EVENT_OPS} == {"event"} and op_kind("login") == op_kind("race") == "request"


def _emit_as_user(tmp_path, **row):
    """ChatUser.emit on a stand-in user: (request events fired, journal rows)."""
    from types import SimpleNamespace

    from locust.event import Events

    from harness.runner.users import ChatUser

    events = Events()
    seen = []
    events.request.add_listener(lambda **kw: seen.append(kw))
    j = Journal(tmp_path / "j.jsonl", "w").open()
    fake = SimpleNamespace(rt=SimpleNamespace(journal=j), environment=SimpleNamespace(events=events),
                           scenario="relogin_expiry")
    ChatUser.emit(fake, "login", start=1, end=2, user="u1", **row)
    j.close()
    return seen, read_journal(tmp_path / "j.jsonl")


def test_expected_rejection_is_a_locust_success(tmp_path):
    seen, rows = _emit_as_user(tmp_path, outcome="fail", code=70001, expect=70001)
    assert seen[0]["exception"] is None
    assert rows[0]["expect"] == 70001 and rows[0]["outcome"] == "fail" and rows[0]["code"] == 70001


def test_stale_sig_accepted_is_a_locust_failure(tmp_path):
    seen, rows = _emit_as_user(tmp_path, outcome="ok", code=0, session="S1", expect=70001)
    assert str(seen[0]["exception"]) == "stale UserSig accepted"
    assert rows[0]["expect"] == 70001 and rows[0]["outcome"] == "ok"


def test_other_code_than_provoked_is_a_locust_failure(tmp_path):
    seen, _rows = _emit_as_user(tmp_path, outcome="fail", code=70009, expect=70001)
    assert "70009" in str(seen[0]["exception"]) and "expected 70001" in str(seen[0]["exception"])


def test_judged_verdicts():
    from harness.results.journal import judged

    assert judged("fail", 70001, 70001) == "expected"
    assert judged("ok", 0, 70001) == "fail"
    assert judged("info", -1, 70001) == "fail"
    assert judged("fail", 70001, None) == "fail" and judged("ok", 0, None) == "ok" and judged("info", -1, None) == "info"

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


def test_journal_bytes_are_the_same_with_and_without_a_row_listener(tmp_path) -> None:
    """Rows are serialised at record() when nobody listens, kept as dicts for a listener (the
    live checks): the file is the same, and the listener gets every row as the dict."""
    from harness.results.journal import Journal, _line

    def write(path, listen: bool) -> list:
        seen: list = []
        j = Journal(path, "w0").open()
        if listen:
            j.listeners.append(seen.extend)
        j.record(scenario="s", op="login", outcome="ok", code=0, start=1, end=2, user="ü", kicked=["S1"], data=None)
        j.record(scenario="s", op="login", outcome="ok", code=0, start=3, end=4, extra_big=99999999999999999999)
        j.flush()
        j.record(scenario="s", op="status", outcome="fail", code=6014, start=5, end=6,
                 data={"odd": object.__new__(type("Odd", (), {"__str__": lambda self: "odd!"}))})
        j.close()
        return seen

    assert write(tmp_path / "a.jsonl", False) == []
    seen = write(tmp_path / "b.jsonl", True)
    a, b = (tmp_path / "a.jsonl").read_bytes(), (tmp_path / "b.jsonl").read_bytes()
    assert a == b and a.count(b"\n") == 3
    assert [r["n"] for r in seen] == [0, 1, 2] and b"\n".join(map(_line, seen)) + b"\n" == b
    assert b'"extra_big":99999999999999999999' in a and b'"odd":"odd!"' in a and '"user":"ü"'.encode() in a


def test_chunked_rows_are_the_bytes_of_one_line_per_row(tmp_path) -> None:
    """record() serialises rows CHUNK at a time: the file holds exactly the
    per-row lines, across chunk boundaries, with rows whose strings look like the separators,
    a row orjson refuses in the middle of a chunk, and a listener coming and going mid-batch;
    rows_written counts rows."""
    from harness.results.journal import CHUNK, Journal, _chunk, _line

    odd = [{"op": "a", "detail": "x,\n,y},{\"z\"", "user": "\u2028ü\x00"}, {"op": "b", "v": float("nan")},
           {"op": "c", "big": 2 ** 70}, {"op": "d", "data": {1: "int key"}}, {"op": "e", "kicked": []}]
    for rows in ([odd[0]], odd, odd[:2] + odd[4:]):
        assert _chunk(rows) == b"\n".join(map(_line, rows))

    j = Journal(tmp_path / "j.jsonl", "w0").open()
    gone: list = []
    seen: list = []
    total = 3 * CHUNK + 7
    for i in range(total):
        if i == CHUNK + 3:
            j.listeners.append(gone.extend)
        if i == CHUNK + 10:
            j.listeners.clear()  # gone before the flush: it never gets a batch
        if i == 2 * CHUNK:
            j.flush()
        if i == 2 * CHUNK + 1:
            j.listeners.append(seen.extend)
        j.record(scenario="s", op="heartbeat", outcome="ok", code=0, start=i, end=i + 1, user=f"u{i}",
                 detail="},{" if i % 5 == 0 else "", big=2 ** 70 if i == CHUNK + 20 else None)
    j.close()
    lines = (tmp_path / "j.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == total + 1
    rows = [json.loads(x) for x in lines[:-1]]
    assert [r["n"] for r in rows] == list(range(total)) and rows[CHUNK + 20]["big"] == 2 ** 70
    assert b"\n".join(map(_line, rows)) + b"\n" == (tmp_path / "j.jsonl").read_bytes()
    assert gone == [] and [r["n"] for r in seen] == list(range(2 * CHUNK + 1, total))
    assert j.rows_written == total
