"""Distributed runs, pure parts: what workers report to the master, how the master merges it,
and how a cross-worker kick race is split over workers. No sockets, no gevent, no Locust.

* :class:`LogHist`: an HDR-like histogram of non-negative integers (we feed microseconds):
  exact below 64, then 32 sub-buckets per power of two (relative error <= 1/32 ~ 3 %).
  Mergeable, serialisable as ``[[bucket, count], ...]`` (msgpack/JSON-safe).
* :class:`Tally`: per op ``count/ok/fail/info``, a latency histogram of ok rows
  (``end - intended``) and the exact max, per-code counts, a schedule-lag histogram
  (``start - intended``) and the time span. A worker tallies every journal row
  (:class:`TalliedJournal`), ships the *delta* since the last report inside Locust's
  ``report_to_master`` and the rest in its ``chat_done``; the master merges the deltas per
  worker. When not every worker's journal is on the master's disk (a worker on another host),
  the summary's ``ops`` / ``codes`` / schedule lag come from :func:`summary_parts`.
* :func:`assign_devices`: device i of a cross-worker race goes to worker ``(owner + i) % n``.
* :func:`missing_share`: what a worker that went away took with it, in one dict.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.results.journal import Journal, judged, op_kind

__all__ = ["LogHist", "Tally", "TalliedJournal", "summary_parts", "assign_devices", "missing_share",
           "PERCENTILES", "merge_tallies"]

#: summary.json percentile columns -> quantile (RESULTS.md §2).
PERCENTILES: dict[str, float] = {"p50_ms": 0.50, "p90_ms": 0.90, "p95_ms": 0.95, "p99_ms": 0.99, "p999_ms": 0.999}
_OUTCOME_COL = {"ok": 1, "fail": 2, "info": 3}
_SUB_BITS = 5
_SUB = 1 << _SUB_BITS          # 32 sub-buckets per power of two
_LINEAR = 2 * _SUB             # values below this have their own bucket


def bucket_of(value: int) -> int:
    """Bucket index of a non-negative int (negative values count as 0)."""
    if value < _LINEAR:
        return value if value > 0 else 0
    shift = value.bit_length() - (_SUB_BITS + 1)
    return _LINEAR + (shift - 1) * _SUB + ((value >> shift) - _SUB)


def bucket_bounds(index: int) -> tuple[int, int]:
    """Smallest and largest value that fall into bucket ``index``."""
    if index < _LINEAR:
        return index, index
    shift = (index - _LINEAR) // _SUB + 1
    mant = (index - _LINEAR) % _SUB + _SUB
    lo = mant << shift
    return lo, lo + (1 << shift) - 1


class LogHist:
    """Counts of values in log buckets (see module doc). Values are ints (we use µs)."""

    __slots__ = ("counts", "n")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0

    def add(self, value: int, count: int = 1) -> None:
        b = bucket_of(value)
        self.counts[b] = self.counts.get(b, 0) + count
        self.n += count

    def merge(self, other: "LogHist") -> "LogHist":
        for b, c in other.counts.items():
            self.counts[b] = self.counts.get(b, 0) + c
        self.n += other.n
        return self

    def quantile(self, q: float, cap: int | None = None) -> int | None:
        """Nearest-rank quantile (rank ``ceil(q * n)``): the upper bound of its bucket,
        never above ``cap`` (the exact max, when known). None when empty."""
        if self.n <= 0:
            return None
        rank = max(1, math.ceil(q * self.n))
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                hi = bucket_bounds(b)[1]
                return min(hi, cap) if cap is not None else hi
        return None  # pragma: no cover - counts and n disagree

    def to_wire(self) -> list[list[int]]:
        return [[b, c] for b, c in self.counts.items()]

    @classmethod
    def from_wire(cls, data: Any) -> "LogHist":
        h = cls()
        for item in data if isinstance(data, list) else ():
            try:
                b, c = int(item[0]), int(item[1])
            except (TypeError, ValueError, IndexError):
                continue
            if b >= 0 and c > 0:
                h.counts[b] = h.counts.get(b, 0) + c
                h.n += c
        return h


class Tally:
    """Mergeable per-op counters and latency histograms of journal rows (times in unix ns)."""

    __slots__ = ("rows", "ops", "lat", "lat_max", "codes", "lag", "first_ns", "last_ns", "expected", "op_codes")

    def __init__(self) -> None:
        self.rows = 0
        self.ops: dict[str, list[int]] = {}      # op -> [count, ok, fail, info]
        self.lat: dict[str, LogHist] = {}        # op -> latency of ok rows, µs
        self.lat_max: dict[str, int] = {}        # op -> max latency of ok rows, ns
        self.codes: dict[int, int] = {}
        self.lag = LogHist()                     # start - intended, µs, all rows
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.expected: dict[str, dict[int, int]] = {}  # op -> code -> rows that got their provoked code
        self.op_codes: dict[tuple[str, int], int] = {}  # (op, code) -> rows

    def add(self, op: str, outcome: str, code: int, intended: int, start: int, end: int) -> None:
        """Count one row (on the request path: kept to a handful of dict operations, ~2 µs).
        ``outcome`` is the row's verdict (harness.results.journal.judged): ``expected`` rows
        are counted in ``expected``, not in ok/fail/info."""
        self.rows += 1
        if outcome == "expected":
            per = self.expected.setdefault(op, {})
            per[code] = per.get(code, 0) + 1
        c = self.ops.get(op)
        if c is None:
            c = self.ops[op] = [0, 0, 0, 0]
        c[0] += 1
        codes = self.codes
        codes[code] = codes.get(code, 0) + 1
        key = (op, code)
        oc = self.op_codes
        oc[key] = oc.get(key, 0) + 1
        if outcome == "ok":
            c[1] += 1
            lat = end - intended
            us = lat // 1000
            if us < _LINEAR:
                b = us if us > 0 else 0
            else:  # bucket_of(), inlined
                shift = us.bit_length() - (_SUB_BITS + 1)
                b = _LINEAR + (shift - 1) * _SUB + ((us >> shift) - _SUB)
            h = self.lat.get(op)
            if h is None:
                h = self.lat[op] = LogHist()
            hc = h.counts
            hc[b] = hc.get(b, 0) + 1
            h.n += 1
            if lat > self.lat_max.get(op, -1):
                self.lat_max[op] = lat
        elif outcome == "fail":
            c[2] += 1
        elif outcome == "info":
            c[3] += 1
        if start != intended:
            self.lag.add((start - intended) // 1000)
        else:  # closed model: no lag; counted in bucket 0 without the call
            lc = self.lag.counts
            lc[0] = lc.get(0, 0) + 1
            self.lag.n += 1
        first = intended if intended < start else start
        if self.first_ns is None or first < self.first_ns:
            self.first_ns = first
        if self.last_ns is None or end > self.last_ns:
            self.last_ns = end

    def merge(self, other: "Tally") -> "Tally":
        self.rows += other.rows
        for op, c in other.ops.items():
            mine = self.ops.setdefault(op, [0, 0, 0, 0])
            for i in range(4):
                mine[i] += c[i]
        for op, h in other.lat.items():
            self.lat.setdefault(op, LogHist()).merge(h)
        for op, m in other.lat_max.items():
            if m > self.lat_max.get(op, -1):
                self.lat_max[op] = m
        for code, n in other.codes.items():
            self.codes[code] = self.codes.get(code, 0) + n
        for key, n in other.op_codes.items():
            self.op_codes[key] = self.op_codes.get(key, 0) + n
        for op, per in other.expected.items():
            mine_e = self.expected.setdefault(op, {})
            for code, n in per.items():
                mine_e[code] = mine_e.get(code, 0) + n
        self.lag.merge(other.lag)
        for t in (other.first_ns,):
            if t is not None and (self.first_ns is None or t < self.first_ns):
                self.first_ns = t
        if other.last_ns is not None and (self.last_ns is None or other.last_ns > self.last_ns):
            self.last_ns = other.last_ns
        return self

    def to_wire(self) -> dict[str, Any]:
        """A msgpack/JSON-safe dict (string keys only)."""
        return {"rows": self.rows, "ops": {k: list(v) for k, v in self.ops.items()},
                "lat": {k: h.to_wire() for k, h in self.lat.items()},
                "lat_max": dict(self.lat_max), "codes": [[c, n] for c, n in self.codes.items()],
                "lag": self.lag.to_wire(), "first_ns": self.first_ns, "last_ns": self.last_ns,
                "expected": [[op, c, n] for op, per in self.expected.items() for c, n in per.items()],
                "op_codes": [[op, c, n] for (op, c), n in self.op_codes.items()]}

    @classmethod
    def from_wire(cls, data: Any) -> "Tally":
        """Inverse of :meth:`to_wire`; malformed parts are skipped, never raised on."""
        t = cls()
        if not isinstance(data, Mapping):
            return t
        t.rows = _int(data.get("rows")) or 0
        ops = data.get("ops")
        for op, c in ops.items() if isinstance(ops, Mapping) else ():
            if isinstance(c, (list, tuple)) and len(c) == 4 and all(_int(x) is not None for x in c):
                t.ops[str(op)] = [int(x) for x in c]
        lat = data.get("lat")
        for op, h in lat.items() if isinstance(lat, Mapping) else ():
            t.lat[str(op)] = LogHist.from_wire(h)
        lmax = data.get("lat_max")
        for op, m in lmax.items() if isinstance(lmax, Mapping) else ():
            if _int(m) is not None:
                t.lat_max[str(op)] = int(m)
        codes = data.get("codes")
        for item in codes if isinstance(codes, list) else ():
            if isinstance(item, (list, tuple)) and len(item) == 2 and _int(item[0]) is not None \
                    and _int(item[1]) is not None:
                t.codes[int(item[0])] = t.codes.get(int(item[0]), 0) + int(item[1])
        for item in data.get("expected") if isinstance(data.get("expected"), list) else ():
            if isinstance(item, (list, tuple)) and len(item) == 3 and isinstance(item[0], str) \
                    and _int(item[1]) is not None and _int(item[2]) is not None:
                per = t.expected.setdefault(item[0], {})
                per[int(item[1])] = per.get(int(item[1]), 0) + int(item[2])
        for item in data.get("op_codes") if isinstance(data.get("op_codes"), list) else ():
            if isinstance(item, (list, tuple)) and len(item) == 3 and isinstance(item[0], str) \
                    and _int(item[1]) is not None and _int(item[2]) is not None:
                key = (item[0], int(item[1]))
                t.op_codes[key] = t.op_codes.get(key, 0) + int(item[2])
        t.lag = LogHist.from_wire(data.get("lag"))
        t.first_ns = _int(data.get("first_ns"))
        t.last_ns = _int(data.get("last_ns"))
        return t


def _int(v: Any) -> int | None:
    return v if type(v) is int else None


def merge_tallies(tallies: Iterable[Tally]) -> Tally:
    out = Tally()
    for t in tallies:
        out.merge(t)
    return out


class TalliedJournal(Journal):
    """A :class:`Journal` that also tallies every row it records (worker processes).

    :meth:`take` returns the tally since the previous call and starts a new one, so every
    row is shipped to the master exactly once (in a report or in the final ``chat_done``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tally = Tally()

    def add_row(self, row: dict) -> int:  # every row goes through here (record() too)
        n = Journal.add_row(self, row)
        start = row["start"]
        intended = row.get("intended")
        expect = row.get("expect")
        outcome = row["outcome"] if expect is None else judged(row["outcome"], row["code"], expect)
        self.tally.add(row["op"], outcome, row["code"], start if intended is None else intended, start,
                       row["end"])
        return n

    def take(self) -> Tally:
        t, self.tally = self.tally, Tally()
        return t


def summary_parts(tally: Tally, duration_s: float | None) -> dict[str, Any]:
    """summary.json's ``ops`` and ``codes`` and the schedule lag p99 (ms) from a merged tally.

    Percentiles are nearest-rank over ok rows, like the journal-based summary, within the
    histogram's ~3 % (reported as the bucket's upper bound, capped by the exact max).
    ``rate_per_s`` = count / ``duration_s`` (the tally's span when None or 0).
    """
    if not duration_s or duration_s <= 0:
        span = (tally.last_ns - tally.first_ns) / 1e9 if tally.first_ns is not None and tally.last_ns else 0.0
        duration_s = span if span > 0 else None
    ops: dict[str, dict] = {}
    for op, (count, ok, fail, info) in sorted(tally.ops.items()):
        h = tally.lat.get(op) or LogHist()
        mx = tally.lat_max.get(op)
        cap = None if mx is None else -(-mx // 1000)
        kind = op_kind(op)
        row: dict[str, Any] = {"count": count, "ok": ok, "fail": fail, "info": info,
                               "rate_per_s": count / duration_s if duration_s else None}
        for col, q in PERCENTILES.items():
            v = h.quantile(q, cap)
            row[col] = None if v is None or kind == "event" else v / 1000.0
        row["max_ms"] = None if mx is None or kind == "event" else mx / 1e6
        row["kind"] = kind
        row["expected"] = sum(tally.expected.get(op, {}).values())
        ops[op] = row
    codes = {str(c): n for c, n in sorted(tally.codes.items(), key=lambda kv: (-kv[1], kv[0]))}
    lag = tally.lag.quantile(0.99)
    expected = {op: {str(c): n for c, n in sorted(per.items())} for op, per in sorted(tally.expected.items()) if per}
    codes_by_op: dict[str, dict[str, int]] = {}
    for (op, c), n in sorted(tally.op_codes.items()):
        codes_by_op.setdefault(op, {})[str(c)] = n
    return {"ops": ops, "codes": codes, "schedule_lag_p99_ms": None if lag is None else lag / 1000.0,
            "rows": tally.rows, "expected": expected, "codes_by_op": codes_by_op,
            "events": {op: {"count": r["count"], "rate_per_s": r["rate_per_s"]} for op, r in ops.items()
                       if r["kind"] == "event"}}


def assign_devices(devices: int, workers: Sequence[str], owner: str) -> dict[str, list[int]]:
    """Which worker runs which device of a cross-worker race: device ``i`` goes to
    ``workers[(pos(owner) + i) % len(workers)]`` (the owner takes device 0). Workers in the
    given order; an owner not in the list is put first."""
    order = list(dict.fromkeys(workers))
    if owner in order:
        k = order.index(owner)
        order = order[k:] + order[:k]
    else:
        order.insert(0, owner)
    out: dict[str, list[int]] = {}
    for i in range(devices):
        out.setdefault(order[i % len(order)], []).append(i)
    return out


def missing_share(name: str, *, users: int | None, users_total: int | None, rows_reported: int,
                  rows_on_disk: int | None, last_seen_s: float | None, reason: str) -> dict[str, Any]:
    """The summary's description of a worker that did not finish: which, why, and its share."""
    share = None
    if users is not None and users_total:
        share = round(users / users_total, 4)
    return {"worker": name, "reason": reason, "users": users, "user_share": share,
            "rows_reported": rows_reported, "rows_on_disk": rows_on_disk,
            "last_seen_s_before_end": None if last_seen_s is None else round(last_seen_s, 1)}
