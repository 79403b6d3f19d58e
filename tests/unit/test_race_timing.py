"""A race row is timed from the barrier's release to the last answer; the settle is apart."""
from __future__ import annotations

from scenarios.kick_race import race_span

MS = 1_000_000


def test_race_is_timed_to_the_last_answer_and_settle_recorded_apart():
    released = 1_000 * MS
    rows = [{"i": 0, "done": released + 12 * MS}, {"i": 1, "done": released + 30 * MS}, {"i": 2, "done": None}]
    judged = released + 30 * MS + 510 * MS            # 500 ms settle + a 10 ms query_online
    start, end, settle = race_span(released, rows, judged)
    assert (start, end) == (released, released + 30 * MS)   # latency 30 ms, not 540 ms
    assert settle == 510.0


def test_race_without_any_answer_has_zero_latency():
    start, end, settle = race_span(5 * MS, [{"i": 0, "done": None}], 9 * MS)
    assert (start, end, settle) == (5 * MS, 5 * MS, 4.0)
