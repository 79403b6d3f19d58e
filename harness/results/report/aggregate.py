"""Pure aggregations of a loaded journal (see :func:`harness.results.report.load.load_journal`).

Every function here is a plain function of DataFrames / dicts: no files, no plotting.

Conventions (the report's HTML says the same):

* Latency = ``end - intended`` (includes queueing, so it is free of coordinated omission);
  service time = ``end - start``. Both in milliseconds (float).
* Percentiles and ``max_ms`` are computed over the **ok** rows of an op only (a timeout or a
  refused login says nothing about how fast the service answers); NaN when an op has no
  ok rows. Percentiles are *nearest-rank*: the p-th percentile of N values is the
  ceil(p*N)-th smallest, so it is always a latency that was actually measured.
* Time buckets are whole seconds of ``end`` time counted from the run origin
  (:func:`time_origin_ns`: the first ``intended`` time, floored to a whole unix second).
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "PERCENTILES",
    "OP_ORDER",
    "EVENT_OPS",
    "LEGACY_EVENT_OPS",
    "event_ops",
    "apply_expect",
    "expected_table",
    "expected_from_summary",
    "latency_gates",
    "sparse_ops",
    "latency_points",
    "scenarios_run",
    "EXIT_CODES",
    "code_name_short",
    "eq",
    "ordered_ops",
    "time_origin_ns",
    "journal_span_s",
    "op_summary",
    "code_counts",
    "error_code_counts",
    "per_second",
    "codes_per_second",
    "connections_per_second",
    "users_per_second",
    "fault_windows",
    "timed_ops",
    "latency_cdf",
    "ok_latencies",
    "race_survivors",
    "race_counts",
    "kick_delays",
    "gates_table",
    "checks_table",
    "check_violation_times",
    "headline",
    "plain_number",
    "cpu_warnings",
    "cpu_table",
    "expected_code_counts",
    "ops_from_summary",
    "codes_from_summary",
]

#: Column name -> quantile of the latency percentiles every summary carries.
PERCENTILES: dict[str, float] = {
    "p50_ms": 0.50, "p90_ms": 0.90, "p95_ms": 0.95, "p99_ms": 0.99, "p999_ms": 0.999,
}
#: Display order of the ops (docs/JOURNAL.md); unknown ops follow alphabetically.
OP_ORDER: tuple[str, ...] = (
    "connect", "usersig_fetch", "login", "logout", "status", "heartbeat", "relogin",
    "switch", "race", "rest_kick", "query_online", "kicked_offline", "sig_expired",
    "disconnect", "dropped", "fault",
)
#: Ops that are events or markers (start == end): no meaningful latency to chart.
EVENT_OPS: frozenset[str] = frozenset({"kicked_offline", "sig_expired", "disconnect", "fault"})
#: Events of runs whose summary.json has no ``ops[op]["kind"]`` (older runs).
LEGACY_EVENT_OPS: frozenset[str] = frozenset({"kicked_offline", "sig_expired", "disconnect"})
#: Markers: journal rows that are neither requests nor events (no latency either).
MARKER_OPS: frozenset[str] = frozenset({"fault"})
#: Exit codes of a headless run (RESULTS.md §3).
EXIT_CODES: dict[int, str] = {
    0: "every gate and every correctness check passed",
    2: "the config or command line is wrong",
    3: "a performance/error-rate gate failed",
    4: "a correctness check found a violation",
    5: "the target could not be reached or the embedded target did not start",
}
_OUTCOMES: tuple[str, ...] = ("ok", "fail", "info", "expected")
#: Outcomes that count as errors (an ``expected`` outcome is a pass, never an error).
ERROR_OUTCOMES: tuple[str, ...] = ("fail", "info")
_NS_PER_S = 1_000_000_000
_NO_OP = "(no op)"
_OP_SUMMARY_COLUMNS: tuple[str, ...] = (
    "count", "ok", "fail", "info", "expected", "rate_per_s", *PERCENTILES, "max_ms",
    "service_p50_ms", "service_p99_ms",
)
_LATENCY_COLUMNS: tuple[str, ...] = (*PERCENTILES, "max_ms", "service_p50_ms", "service_p99_ms")


# --------------------------------------------------------------------------- helpers


def code_name_short(code: int) -> str:
    """``"70001 USERSIG_EXPIRED"`` via ``harness.protocol.code_short``; ``str(code)`` without it."""
    try:
        from harness.protocol import code_short
    except ImportError:
        return str(code)
    try:
        return str(code_short(int(code)))
    except Exception:  # noqa: BLE001 - an unknown code must still get a label
        return str(code)


def ordered_ops(ops: Iterable[str]) -> list[str]:
    """Sort op names into :data:`OP_ORDER`, unknown ones after it alphabetically."""
    rank = {op: i for i, op in enumerate(OP_ORDER)}
    return sorted(set(ops), key=lambda op: (rank.get(op, len(rank)), op))


def event_ops(summary: Mapping[str, Any] | None = None) -> frozenset[str]:
    """Ops without a latency: events and markers.

    ``summary["ops"][op]["kind"]`` decides where present (``"event"`` or ``"request"``);
    ops without a kind (runs older than that key) fall back to :data:`LEGACY_EVENT_OPS`.
    Markers (:data:`MARKER_OPS`, fault windows) are always included.
    """
    ops = summary.get("ops") if isinstance(summary, Mapping) else None
    out = set(LEGACY_EVENT_OPS) | set(MARKER_OPS)
    if isinstance(ops, Mapping):
        for name, rec in ops.items():
            kind = rec.get("kind") if isinstance(rec, Mapping) else None
            if kind == "event":
                out.add(str(name))
            elif kind == "request" and str(name) not in MARKER_OPS:
                out.discard(str(name))
    return frozenset(out)


def apply_expect(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rows with an ``expect`` code (docs/JOURNAL.md) re-judged by :func:`load.apply_expect`
    (the journal's own rule, ``harness.results.journal.judged``): ``code == expect`` becomes
    ``"expected"`` (a pass, never an error), anything else ``"fail"`` (e.g. a stale sig
    accepted). Returns (frame, counts ``{"expected": n, "unexpected": n}``); the frame is the
    input itself when no row carries ``expect`` (old runs)."""
    from harness.results.report.load import apply_expect as judge_rows

    counts = {"expected": 0, "unexpected": 0}
    out = judge_rows(df)
    if out is df:
        return df, counts
    exp = df["expect"].to_numpy("float64")
    has = ~np.isnan(exp)
    match = has & (df["code"].to_numpy("int64").astype("float64") == exp)
    counts["expected"] = int(match.sum())
    counts["unexpected"] = int((has & ~match).sum())
    return out, counts


def _op_series(df: pd.DataFrame) -> pd.Series:
    """The ``op`` column as a categorical with nulls shown as ``"(no op)"``."""
    op = df["op"]
    if not isinstance(op.dtype, pd.CategoricalDtype):
        op = op.astype("category")
    if op.isna().any():
        if _NO_OP not in op.cat.categories:
            op = op.cat.add_categories([_NO_OP])
        op = op.fillna(_NO_OP)
    return op


def eq(s: pd.Series, value: str) -> np.ndarray:
    """Boolean mask ``s == value`` (nulls False); fast on categoricals (compares codes)."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = s.cat.categories
        if value not in cats:
            return np.zeros(len(s), dtype=bool)
        return s.cat.codes.to_numpy() == cats.get_loc(value)
    return (s == value).fillna(False).to_numpy(dtype=bool)


def _str_values(s: pd.Series) -> np.ndarray:
    """A string column as an object ndarray (categoricals decoded), nulls as None."""
    return s.astype("object").where(s.notna(), None).to_numpy()


def _nearest_rank(group: np.ndarray, values: np.ndarray, qs: Sequence[float]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nearest-rank quantiles of ``values`` per integer ``group`` (NaN values ignored).

    Returns (groups, counts, quantiles[len(qs), groups], max per group).
    """
    keep = ~np.isnan(values)
    group, values = group[keep], values[keep]
    if len(values) == 0:
        empty = np.array([], dtype="int64")
        return empty, empty, np.empty((len(qs), 0)), np.empty(0)
    order = np.lexsort((values, group))
    g = group[order]
    v = values[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    counts = np.diff(np.r_[starts, len(g)])
    out = np.empty((len(qs), len(starts)))
    for i, q in enumerate(qs):
        rank = np.maximum(np.ceil(q * counts - 1e-9).astype("int64"), 1)
        out[i] = v[starts + rank - 1]
    return g[starts], counts, out, v[starts + counts - 1]


def time_origin_ns(df: pd.DataFrame) -> int:
    """Run origin for time axes: the earliest ``intended``/``start``, floored to a unix second (ns)."""
    if df.empty:
        return 0
    first = min(int(df["intended"].min()), int(df["start"].min()))
    return (first // _NS_PER_S) * _NS_PER_S


def journal_span_s(df: pd.DataFrame) -> float:
    """Seconds from the earliest ``intended``/``start`` to the latest ``end``; 0.0 when empty."""
    if df.empty:
        return 0.0
    first = min(int(df["intended"].min()), int(df["start"].min()))
    return max(0.0, (int(df["end"].max()) - first) / 1e9)


# --------------------------------------------------------------------------- tables


def _kind(op: str, events: frozenset[str]) -> str:
    if op in MARKER_OPS:
        return "marker"
    return "event" if op in events else "request"


def op_summary(df: pd.DataFrame, duration_s: float | None = None,
               events: frozenset[str] = frozenset()) -> pd.DataFrame:
    """Per-op totals and latency percentiles.

    Index ``op`` (ops present, in :data:`OP_ORDER`); columns ``count``, ``ok``, ``fail``,
    ``info``, ``expected`` (rows; ``expected`` = the code the scenario provoked on purpose,
    see :func:`apply_expect`), ``rate_per_s`` (count / ``duration_s``; default duration is
    the journal span, :func:`journal_span_s`; NaN when that is 0), ``p50_ms`` … ``p999_ms``
    and ``max_ms`` of latency (end - intended, ms), ``service_p50_ms`` / ``service_p99_ms``
    (end - start, ms) and ``kind`` (``request``, ``event`` or ``marker``). Percentiles and
    max are nearest-rank over the op's **ok** rows only; NaN when the op has none, and
    always NaN for ``events`` (ops without a latency: the report passes
    :func:`event_ops`, markers included; the default blanks none, so other callers'
    numbers are unchanged).
    """
    if df.empty:
        out = pd.DataFrame({c: pd.Series([], dtype="int64" if c in _OUTCOMES or c == "count"
                                         else "float64") for c in _OP_SUMMARY_COLUMNS})
        out["kind"] = pd.Series([], dtype="str")
        out.index = pd.Index([], name="op", dtype="str")
        return out
    op = _op_series(df)
    names = list(op.cat.categories)
    codes = op.cat.codes.to_numpy().astype("int64")
    ncat = len(names)
    count = np.bincount(codes, minlength=ncat)
    res: dict[str, np.ndarray] = {"count": count}
    for name in _OUTCOMES:
        res[name] = np.bincount(codes[eq(df["outcome"], name)], minlength=ncat)
    span = journal_span_s(df) if duration_s is None else float(duration_s)
    res["rate_per_s"] = count / span if span > 0 else np.full(ncat, np.nan)
    ok = eq(df["outcome"], "ok")
    qs = list(PERCENTILES.values())
    for col, values, cols in (
        ("latency_ms", df["latency_ms"].to_numpy(dtype="float64"), list(PERCENTILES) + ["max_ms"]),
        ("service_ms", df["service_ms"].to_numpy(dtype="float64"), ["service_p50_ms", "service_p99_ms"]),
    ):
        groups, _, quant, vmax = _nearest_rank(codes[ok], values[ok], qs)
        for c in cols:
            res[c] = np.full(ncat, np.nan)
        if col == "latency_ms":
            for i, c in enumerate(PERCENTILES):
                res[c][groups] = quant[i]
            res["max_ms"][groups] = vmax
        else:
            res["service_p50_ms"][groups] = quant[qs.index(0.50)]
            res["service_p99_ms"][groups] = quant[qs.index(0.99)]
    out = pd.DataFrame(res, index=pd.Index(names, name="op", dtype="str"))
    out = out.loc[out["count"] > 0, list(_OP_SUMMARY_COLUMNS)]
    out = out.loc[ordered_ops(out.index)]
    return _mark_events(out, events)


def _mark_events(out: pd.DataFrame, events: frozenset[str]) -> pd.DataFrame:
    """Blank the latency columns of events/markers and add the ``kind`` column."""
    out = out.copy()
    is_event = out.index.isin(list(events))
    if is_event.any():
        out.loc[is_event, list(_LATENCY_COLUMNS)] = np.nan
    out["kind"] = pd.Series([_kind(str(o), events) for o in out.index], index=out.index,
                            dtype="str")
    return out


#: a protocol's own error condition in a row's detail (XMPP: ``not-authorized``, ``conflict``,
#: ``policy-violation``; also inside ``error:...`` / ``connection lost (error:...)``)
_CONDITION_RE = re.compile(r"^(?:connection lost \()?(?:error:)?([a-z]+(?:-[a-z]+)+)\)?$")


def protocol_conditions(df: pd.DataFrame, share: float = 0.8) -> dict[int, str]:
    """code -> the protocol condition its rows carry in ``detail`` when one condition accounts
    for at least ``share`` of them (a protocol that maps several conditions onto one code, as
    the xmpp driver does, names them in charts and tables this way). Codes 0/-1 excluded."""
    if df.empty or "detail" not in df.columns:
        return {}
    sub = df.loc[~df["code"].isin([0]), ["code", "detail"]]
    if sub.empty:
        return {}
    out: dict[int, str] = {}
    for code, details in sub.groupby("code", observed=True)["detail"]:
        conds = details.astype("str").str.extract(_CONDITION_RE, expand=False).dropna()
        if conds.empty:
            continue
        top = conds.value_counts()
        if top.iloc[0] >= share * len(details):
            out[int(code)] = str(top.index[0])
    return out


def code_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Rows per protocol code: columns ``code`` (int), ``name`` (code_short), ``count``
    and ``expected`` (of those rows, how many carried that code as their ``expect``: an
    expected outcome, not an error).

    Sorted by count descending, then code. Only codes that occur are listed (0 included
    when present).
    """
    if df.empty:
        return pd.DataFrame({"code": pd.Series([], dtype="int64"),
                             "name": pd.Series([], dtype="str"),
                             "count": pd.Series([], dtype="int64"),
                             "expected": pd.Series([], dtype="int64")})
    vc = df["code"].value_counts()
    out = pd.DataFrame({"code": vc.index.to_numpy(dtype="int64"),
                        "count": vc.to_numpy(dtype="int64")})
    out = out.sort_values(["count", "code"], ascending=[False, True], kind="stable")
    conditions = protocol_conditions(df)
    out.insert(1, "name", [code_name_short(c) + (f" ({conditions[c]})" if c in conditions else "")
                           for c in out["code"]])
    out["name"] = out["name"].astype("str")
    exp = eq(df["outcome"], "expected")
    if exp.any():
        ev = df["code"].to_numpy("int64")[exp]
        uniq, cnt = np.unique(ev, return_counts=True)
        out["expected"] = out["code"].map(dict(zip(uniq.tolist(), cnt.tolist()))).fillna(0)
        out["expected"] = out["expected"].astype("int64")
    else:
        out["expected"] = np.zeros(len(out), dtype="int64")
    return out.reset_index(drop=True)


def error_code_counts(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`code_counts` of the rows that did not succeed (outcome fail or info, fault
    markers excluded; expected outcomes are not errors)."""
    return code_counts(_error_rows(df)).drop(columns="expected")


def expected_code_counts(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`code_counts` (without the ``expected`` column) of the expected outcomes."""
    if df.empty:
        return code_counts(df).drop(columns="expected")
    return code_counts(df.loc[eq(df["outcome"], "expected")]).drop(columns="expected")


def _error_rows(df: pd.DataFrame, with_expected: bool = False) -> pd.DataFrame:
    if df.empty:
        return df
    mask = eq(df["outcome"], "fail") | eq(df["outcome"], "info")
    if with_expected:
        mask |= eq(df["outcome"], "expected")
    return df.loc[mask & ~eq(df["op"], "fault")]


def expected_table(df: pd.DataFrame) -> pd.DataFrame:
    """Expected outcomes per op and code: columns ``op``, ``code``, ``name``, ``count``."""
    cols = {"op": pd.Series([], dtype="str"), "code": pd.Series([], dtype="int64"),
            "name": pd.Series([], dtype="str"), "count": pd.Series([], dtype="int64")}
    if df.empty:
        return pd.DataFrame(cols)
    rows = df.loc[eq(df["outcome"], "expected")]
    if rows.empty:
        return pd.DataFrame(cols)
    frame = pd.DataFrame({"op": _str_values(rows["op"]), "code": rows["code"].to_numpy("int64")})
    out = frame.groupby(["op", "code"]).size().rename("count").reset_index()
    out.insert(2, "name", [code_name_short(c) for c in out["code"]])
    rank = {o: i for i, o in enumerate(ordered_ops(out["op"]))}
    out = out.assign(_r=out["op"].map(rank)).sort_values(["_r", "code"]).drop(columns="_r")
    return out.astype({"op": "str", "name": "str"}).reset_index(drop=True)


def expected_from_summary(summary: Mapping[str, Any]) -> pd.DataFrame:
    """``summary["expected"]`` as an :func:`expected_table` frame (for runs without a journal).

    Accepts ``{op: {code: count}}``, ``{code: count}`` (op shown as ``(any)``) or a list
    of ``{"op", "code", "count"}`` records; anything else gives an empty frame.
    """
    raw = summary.get("expected") if isinstance(summary, Mapping) else None
    recs: list[tuple[str, int, int]] = []

    def add(op: Any, code: Any, count: Any) -> None:
        try:
            c = int(code)
        except (TypeError, ValueError):
            return
        n = _num(count)
        if n is not None:
            recs.append((str(op), c, int(n)))

    if isinstance(raw, Mapping):
        for k, v in raw.items():
            if isinstance(v, Mapping):
                for code, n in v.items():
                    add(k, code, n)
            else:
                add("(any)", k, v)
    elif isinstance(raw, list):
        for r in raw:
            if isinstance(r, Mapping):
                add(r.get("op", "(any)"), r.get("code"), r.get("count"))
    out = pd.DataFrame({"op": pd.Series([r[0] for r in recs], dtype="str"),
                        "code": pd.Series([r[1] for r in recs], dtype="int64"),
                        "count": pd.Series([r[2] for r in recs], dtype="int64")})
    out.insert(2, "name", pd.Series([code_name_short(c) for c in out["code"]], dtype="str"))
    return out


def _seconds(df: pd.DataFrame, origin_ns: int) -> np.ndarray:
    """Whole seconds of ``end`` since ``origin_ns``."""
    return (df["end"].to_numpy(dtype="int64") - origin_ns) // _NS_PER_S


def per_second(df: pd.DataFrame, origin_ns: int | None = None) -> pd.DataFrame:
    """1 s buckets of ``end`` time per op.

    Columns: ``second`` (int, seconds since ``origin_ns``; default :func:`time_origin_ns`),
    ``unix_s`` (int, bucket start), ``op``, ``count``, ``ok``, ``fail``, ``info``,
    ``expected`` (rows finished in that second) and ``p50_ms``, ``p95_ms``, ``p99_ms`` (nearest-rank latency,
    end - intended, over that second's ok rows; NaN when none). Only (second, op) pairs
    with at least one row are listed; sorted by second then op order.
    """
    cols = ["second", "unix_s", "op", "count", "ok", "fail", "info", "expected",
            "p50_ms", "p95_ms", "p99_ms"]
    if df.empty:
        return pd.DataFrame({c: pd.Series([], dtype="str" if c == "op" else
                                          ("float64" if c.endswith("_ms") else "int64"))
                             for c in cols})
    origin = time_origin_ns(df) if origin_ns is None else int(origin_ns)
    sec = _seconds(df, origin)
    base = int(sec.min())
    sec = sec - base  # >= 0 for the key below
    op = _op_series(df)
    names = list(op.cat.categories)
    codes = op.cat.codes.to_numpy().astype("int64")
    width = int(sec.max()) + 1
    key = codes * width + sec
    uniq, inverse = np.unique(key, return_inverse=True)
    res: dict[str, Any] = {"count": np.bincount(inverse, minlength=len(uniq))}
    for name in _OUTCOMES:
        res[name] = np.bincount(inverse[eq(df["outcome"], name)], minlength=len(uniq))
    ok = eq(df["outcome"], "ok")
    groups, _, quant, _ = _nearest_rank(inverse[ok], df["latency_ms"].to_numpy("float64")[ok],
                                        [0.50, 0.95, 0.99])
    for i, c in enumerate(("p50_ms", "p95_ms", "p99_ms")):
        res[c] = np.full(len(uniq), np.nan)
        res[c][groups] = quant[i]
    second = (uniq % width) + base
    out = pd.DataFrame({
        "second": second.astype("int64"),
        "unix_s": (second + origin // _NS_PER_S).astype("int64"),
        "op": pd.Series(np.asarray(names, dtype=object)[uniq // width], dtype="str"),
        **res,
    })
    rank = {o: i for i, o in enumerate(ordered_ops(names))}
    out["_r"] = out["op"].map(rank)
    out = out.sort_values(["second", "_r"], kind="stable").drop(columns="_r")
    return out[cols].reset_index(drop=True)


def codes_per_second(df: pd.DataFrame, origin_ns: int | None = None) -> pd.DataFrame:
    """Failed rows (outcome fail or info, fault markers excluded) and expected outcomes
    per second and code.

    Columns ``second`` (since ``origin_ns``), ``code``, ``name`` (code_short), ``expected``
    (bool: these rows are expected outcomes, not errors) and ``count``.
    """
    err = _error_rows(df, with_expected=True)
    if err.empty:
        return pd.DataFrame({"second": pd.Series([], dtype="int64"),
                             "code": pd.Series([], dtype="int64"),
                             "name": pd.Series([], dtype="str"),
                             "expected": pd.Series([], dtype="bool"),
                             "count": pd.Series([], dtype="int64")})
    origin = time_origin_ns(df) if origin_ns is None else int(origin_ns)
    frame = pd.DataFrame({"second": _seconds(err, origin), "code": err["code"].to_numpy("int64"),
                          "expected": eq(err["outcome"], "expected")})
    out = frame.groupby(["second", "code", "expected"]).size().rename("count").reset_index()
    names = {c: code_name_short(c) for c in out["code"].unique()}
    out.insert(2, "name", out["code"].map(names).astype("str"))
    return out


def connections_per_second(df: pd.DataFrame, origin_ns: int | None = None) -> pd.DataFrame:
    """Distinct connections open in each second (from the journal's ``conn`` column).

    A connection counts as open from its first row's ``start`` to its last row's ``end``.
    Columns ``second`` (since ``origin_ns``) and ``connections``; empty when no row has a conn.
    """
    empty = pd.DataFrame({"second": pd.Series([], dtype="int64"),
                          "connections": pd.Series([], dtype="int64")})
    if df.empty or "conn" not in df.columns:
        return empty
    has = df["conn"].notna().to_numpy()
    if not has.any():
        return empty
    origin = time_origin_ns(df) if origin_ns is None else int(origin_ns)
    sub = pd.DataFrame({"conn": df["conn"].to_numpy()[has],
                        "start": df["start"].to_numpy("int64")[has],
                        "end": df["end"].to_numpy("int64")[has]})
    span = sub.groupby("conn", sort=False).agg(first=("start", "min"), last=("end", "max"))
    first = (span["first"].to_numpy("int64") - origin) // _NS_PER_S
    last = (span["last"].to_numpy("int64") - origin) // _NS_PER_S
    lo = int(first.min())
    hi = int(last.max())
    diff = np.zeros(hi - lo + 2, dtype="int64")
    np.add.at(diff, first - lo, 1)
    np.add.at(diff, last - lo + 1, -1)
    return pd.DataFrame({"second": np.arange(lo, hi + 1, dtype="int64"),
                         "connections": np.cumsum(diff)[:-1]})


def users_per_second(history: pd.DataFrame, origin_ns: int) -> pd.DataFrame:
    """Locust's user count (``load_users_history``) on the report's time axis.

    Columns ``second`` (float, seconds since ``origin_ns``) and ``users``.
    """
    if history.empty:
        return pd.DataFrame({"second": pd.Series([], dtype="float64"),
                             "users": pd.Series([], dtype="int64")})
    return pd.DataFrame({"second": history["unix_s"].to_numpy("float64") - origin_ns / 1e9,
                         "users": history["users"].to_numpy("int64")})


def fault_windows(df: pd.DataFrame, origin_ns: int | None = None) -> pd.DataFrame:
    """Injected fault windows (``fault`` rows): columns ``start_s``, ``end_s`` (float, since origin), ``label``."""
    empty = pd.DataFrame({"start_s": pd.Series([], dtype="float64"),
                          "end_s": pd.Series([], dtype="float64"),
                          "label": pd.Series([], dtype="str")})
    if df.empty:
        return empty
    rows = df.loc[eq(df["op"], "fault")]
    if rows.empty:
        return empty
    origin = time_origin_ns(df) if origin_ns is None else int(origin_ns)
    labels = [d if isinstance(d, str) and d else "fault" for d in _str_values(rows["detail"])]
    out = pd.DataFrame({"start_s": (rows["start"].to_numpy("int64") - origin) / 1e9,
                        "end_s": (rows["end"].to_numpy("int64") - origin) / 1e9,
                        "label": pd.Series(labels, dtype="str")})
    return out.sort_values("start_s", kind="stable").reset_index(drop=True)


def timed_ops(df: pd.DataFrame, events: frozenset[str] = EVENT_OPS) -> list[str]:
    """Ops that have a duration worth charting (not ``events``/markers), in display order."""
    if df.empty:
        return []
    present = [str(o) for o in _op_series(df).unique()]
    skip = events | MARKER_OPS
    return [o for o in ordered_ops(present) if o not in skip and o != _NO_OP]


def ok_latencies(df: pd.DataFrame, op: str, column: str = "latency_ms") -> np.ndarray:
    """The ok rows' ``column`` values (ms) of one op, as a float array (NaN dropped)."""
    if df.empty:
        return np.empty(0)
    mask = eq(df["op"], op) & eq(df["outcome"], "ok")
    vals = df[column].to_numpy("float64")[mask]
    return vals[~np.isnan(vals)]


def cdf_ranks(n: int, max_points: int) -> np.ndarray:
    """The 1-based ranks of the CDF points kept out of ``n`` sorted values: all of them up to
    ``max_points``, else about ``max_points`` spread evenly with the upper tail kept dense."""
    if n <= max_points:
        return np.arange(1, n + 1)
    half = max_points // 2
    frac = np.concatenate([np.linspace(0.0, 1.0, half),
                           1.0 - np.geomspace(1.0, 1.0 / n, half)])
    return np.unique(np.clip(np.ceil(frac * n).astype("int64"), 1, n))


def _cdf_points(values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted-sample CDF thinned to about ``max_points`` points, tails kept (x ms, y fraction)."""
    v = np.sort(values)
    ranks = cdf_ranks(len(v), max_points)
    return v[ranks - 1], ranks / len(v)


def thin_points(sec: np.ndarray, lat: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most about ``max_points`` of the (second, latency) points, evenly thinned, the
    fastest and the slowest kept."""
    if len(lat) <= max_points:
        return sec, lat
    keep = np.unique(np.r_[np.linspace(0, len(lat) - 1, max_points).astype("int64"),
                           np.argmax(lat), np.argmin(lat)])
    return sec[keep], lat[keep]


def latency_cdf(df: pd.DataFrame, ops: Sequence[str] | None = None,
                max_points: int = 600) -> pd.DataFrame:
    """Empirical CDFs of ok-row latency (and service time where it differs) per op.

    Long frame: ``op``, ``kind`` (``"latency"`` = end - intended, ``"service"`` = end -
    start; both are listed for every op), ``ms`` (float), ``fraction`` (0..1, share of ok
    rows finished within ``ms``) and ``n`` (ok rows behind the curve).
    At most about ``max_points`` points per curve (the tails are kept).
    """
    frames = []
    for op in (timed_ops(df) if ops is None else list(ops)):
        lat = ok_latencies(df, op)
        if len(lat) == 0:
            continue
        x, y = _cdf_points(lat, max_points)
        frames.append(pd.DataFrame({"op": op, "kind": "latency", "ms": x, "fraction": y,
                                    "n": len(lat)}))
        svc = ok_latencies(df, op, "service_ms")
        if len(svc):
            x, y = _cdf_points(svc, max_points)
            frames.append(pd.DataFrame({"op": op, "kind": "service", "ms": x, "fraction": y,
                                        "n": len(svc)}))
    if not frames:
        return pd.DataFrame({"op": pd.Series([], dtype="str"), "kind": pd.Series([], dtype="str"),
                             "ms": pd.Series([], dtype="float64"),
                             "fraction": pd.Series([], dtype="float64"),
                             "n": pd.Series([], dtype="int64")})
    out = pd.concat(frames, ignore_index=True)
    out["op"] = out["op"].astype("str")
    out["kind"] = out["kind"].astype("str")
    return out


def latency_gates(config: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """``gates.latency_ms`` of the run's config as ``{op: {"p99_ms": limit_ms, ...}}``.

    Keys ``p99`` and ``p99_ms`` both map to ``p99_ms``; non-numeric limits are skipped.
    """
    gates = config.get("gates") if isinstance(config, Mapping) else None
    lat = gates.get("latency_ms") if isinstance(gates, Mapping) else None
    out: dict[str, dict[str, float]] = {}
    if not isinstance(lat, Mapping):
        return out
    for op, limits in lat.items():
        if not isinstance(limits, Mapping):
            continue
        for pct, limit in limits.items():
            v = _num(limit)
            key = str(pct) if str(pct).endswith("_ms") else f"{pct}_ms"
            if v is not None and v > 0:
                out.setdefault(str(op), {})[key] = v
    return out


def sparse_ops(per_sec: pd.DataFrame, ops: Sequence[str], min_per_bucket: int = 10) -> list[str]:
    """Ops whose typical 1 s bucket holds fewer than ``min_per_bucket`` ok rows: their
    per-second percentiles collapse onto one value, so they are charted as points."""
    if per_sec.empty:
        return []
    out = []
    for op in ops:
        ok = per_sec.loc[(per_sec["op"] == op) & (per_sec["ok"] > 0), "ok"]
        if len(ok) and float(np.median(ok.to_numpy("float64"))) < min_per_bucket:
            out.append(op)
    return out


def latency_points(df: pd.DataFrame, ops: Sequence[str], origin_ns: int,
                   max_points: int = 20_000) -> pd.DataFrame:
    """Every ok row of ``ops``: ``op``, ``second`` (float, end time since ``origin_ns``),
    ``latency_ms``. At most ``max_points`` rows per op (evenly thinned, extremes kept)."""
    frames = []
    for op in ops:
        mask = eq(df["op"], op) & eq(df["outcome"], "ok")
        if not mask.any():
            continue
        sec, lat = thin_points((df["end"].to_numpy("int64")[mask] - origin_ns) / 1e9,
                               df["latency_ms"].to_numpy("float64")[mask], max_points)
        frames.append(pd.DataFrame({"op": op, "second": sec, "latency_ms": lat}))
    if not frames:
        return pd.DataFrame({"op": pd.Series([], dtype="str"),
                             "second": pd.Series([], dtype="float64"),
                             "latency_ms": pd.Series([], dtype="float64")})
    out = pd.concat(frames, ignore_index=True)
    out["op"] = out["op"].astype("str")
    return out


def scenarios_run(df: pd.DataFrame, summary: Mapping[str, Any]) -> set[str]:
    """Names of the scenarios that ran: those with journal rows; without a journal, the
    summary's ``load.scenarios`` with weight > 0, else its ``scenarios`` list/dict."""
    if not df.empty and "scenario" in df.columns:
        names = {str(v) for v in pd.unique(_str_values(df["scenario"])) if v}
        names.discard("faults")
        if names:
            return names
    load = summary.get("load") if isinstance(summary, Mapping) else None
    weights = load.get("scenarios") if isinstance(load, Mapping) else None
    if isinstance(weights, Mapping) and weights:
        return {str(k) for k, w in weights.items() if (_num(w) or 0) > 0}
    listed = summary.get("scenarios") if isinstance(summary, Mapping) else None
    if isinstance(listed, Mapping):
        return {str(k) for k in listed}
    if isinstance(listed, list):
        return {str(k) for k in listed}
    return set()


# --------------------------------------------------------------------------- scenarios


def race_survivors(race_rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Survivors per kick race from full ``race`` rows (``load_rows(run, "race")``).

    One row per race: ``race`` (id), ``survivors`` (int, ``len(data.survivors)``),
    ``devices`` (int), ``outcome``, ``policy``. Races without a survivors list are left out.
    """
    recs = []
    for row in race_rows:
        data = row.get("data")
        if not isinstance(data, Mapping):
            continue
        surv = data.get("survivors")
        if not isinstance(surv, list):
            continue
        devices = data.get("devices")
        recs.append({
            "race": str(row.get("race") or row.get("detail") or ""),
            "survivors": len(surv),
            "devices": len(devices) if isinstance(devices, list) else 0,
            "outcome": str(row.get("outcome") or ""),
            "policy": str(data.get("policy") or ""),
        })
    if not recs:
        return pd.DataFrame({"race": pd.Series([], dtype="str"),
                             "survivors": pd.Series([], dtype="int64"),
                             "devices": pd.Series([], dtype="int64"),
                             "outcome": pd.Series([], dtype="str"),
                             "policy": pd.Series([], dtype="str")})
    return pd.DataFrame(recs).astype({"race": "str", "outcome": "str", "policy": "str"})


def race_counts(races: pd.DataFrame) -> pd.DataFrame:
    """Races per (survivors, devices, outcome, policy), column ``races``, sorted by those keys:
    what the survivors chart draws, from :func:`race_survivors` (one row per race) or from rows
    already counted (a ``races`` column, summed)."""
    keys = ["survivors", "devices", "outcome", "policy"]
    if races.empty:
        return pd.DataFrame({"survivors": pd.Series([], dtype="int64"), "devices": pd.Series([], dtype="int64"),
                             "outcome": pd.Series([], dtype="str"), "policy": pd.Series([], dtype="str"),
                             "races": pd.Series([], dtype="int64")})
    frame = races if "races" in races.columns else races.assign(races=1)
    if "devices" not in frame.columns:
        frame = frame.assign(devices=0)
    out = frame.groupby(keys, as_index=False, sort=True)["races"].sum()
    out = out[out["races"] > 0].reset_index(drop=True)
    return out.astype({"survivors": "int64", "devices": "int64", "races": "int64", "outcome": "str", "policy": "str"})


def race_settle_note(race_rows: Sequence[Mapping[str, Any]]) -> str | None:
    """One sentence on whether the ``race`` latencies include the settle wait.

    Rows with a top-level ``settle_ms`` (newer journals) have it excluded from their
    latency; older rows only carry ``data.settle_ms`` and their latency includes it.
    None when there are no race rows or neither key is present.
    """
    new = [_num(r.get("settle_ms")) for r in race_rows if _num(r.get("settle_ms")) is not None]
    old = [_num(r["data"].get("settle_ms")) for r in race_rows
           if isinstance(r.get("data"), Mapping) and _num(r["data"].get("settle_ms")) is not None]
    return settle_note(new, old)


def settle_note(new: Sequence[float], old: Sequence[float]) -> str | None:
    """:func:`race_settle_note` of the races' top-level ``settle_ms`` values (``new``) and
    their ``data.settle_ms`` values (``old``), numbers only."""
    return settle_text(float(np.median(new)) if len(new) else None,
                       float(np.median(old)) if len(old) else None)


def settle_text(new_median: float | None, old_median: float | None) -> str | None:
    """:func:`settle_note` from the two medians (None: no such values)."""
    if new_median is not None:
        return (f"race latency excludes the settle wait after the logins (settle_ms, "
                f"median {plain_number(new_median)} ms per race)")
    if old_median is not None:
        return (f"race latency includes the settle wait of about "
                f"{plain_number(old_median)} ms per race (a journal from before "
                "settle_ms was split out): compare race latencies across runs with care")
    return None


def kick_delays(df: pd.DataFrame) -> pd.DataFrame:
    """Time from a competing login to the kick it caused.

    For every ``kicked_offline`` row with a ``by`` session: ``delay_ms`` = its ``start``
    (event arrival) minus the ``start`` (send time) of the ok ``login`` row whose
    ``session`` is ``by``. Columns ``reason`` (the row's detail) and ``delay_ms`` (float ms).
    Kicks whose login is not in the journal are left out.
    """
    empty = pd.DataFrame({"reason": pd.Series([], dtype="str"),
                          "delay_ms": pd.Series([], dtype="float64")})
    if df.empty or "by" not in df.columns or "session" not in df.columns:
        return empty
    kicks = df.loc[eq(df["op"], "kicked_offline") & df["by"].notna().to_numpy()]
    if kicks.empty:
        return empty
    logins = df.loc[eq(df["op"], "login") & eq(df["outcome"], "ok")
                    & df["session"].notna().to_numpy()]
    if logins.empty:
        return empty
    sent = pd.Series(logins["start"].to_numpy("int64"), index=logins["session"].to_numpy())
    sent = sent[~sent.index.duplicated(keep="first")]
    login_start = kicks["by"].map(sent).to_numpy("float64")
    have = ~np.isnan(login_start)
    delay = (kicks["start"].to_numpy("int64")[have] - login_start[have].astype("int64")) / 1e6
    reason = [r if isinstance(r, str) and r else "kick" for r in _str_values(kicks["detail"])]
    return pd.DataFrame({"reason": pd.Series(np.asarray(reason, dtype=object)[have], dtype="str"),
                         "delay_ms": delay})


# --------------------------------------------------------------------------- summary.json


def _scalar(value: Any) -> Any:
    """A table cell: scalars as they are, containers as compact JSON."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(value)


def gates_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """``summary["gates"]`` as rows: ``gate``, ``limit``, ``value``, ``passed`` (bool or None)."""
    gates = summary.get("gates")
    recs = []
    if isinstance(gates, Mapping):
        for name in sorted(gates, key=str):
            g = gates[name]
            g = g if isinstance(g, Mapping) else {"value": g}
            passed = g.get("passed")
            recs.append({"gate": str(name), "limit": _scalar(g.get("limit")),
                         "value": _scalar(g.get("value")),
                         "passed": passed if isinstance(passed, bool) else None})
    if not recs:
        return pd.DataFrame({"gate": pd.Series([], dtype="str"),
                             "limit": pd.Series([], dtype="object"),
                             "value": pd.Series([], dtype="object"),
                             "passed": pd.Series([], dtype="object")})
    out = pd.DataFrame(recs)
    out["gate"] = out["gate"].astype("str")
    return out.astype({"limit": "object", "value": "object", "passed": "object"})


def checks_table(summary: Mapping[str, Any], max_violations: int = 0) -> pd.DataFrame:
    """``summary["checks"]`` as rows: ``check``, ``violations`` (int), ``passed``
    (violations <= ``max_violations``), ``examples`` (count shown) and ``first_example`` (JSON text).
    """
    checks = summary.get("checks")
    recs = []
    if isinstance(checks, Mapping):
        for name in sorted(checks, key=str):
            c = checks[name]
            c = c if isinstance(c, Mapping) else {"violations": c}
            try:
                viol = int(c.get("violations") or 0)
            except (TypeError, ValueError):
                viol = 0
            ex = c.get("examples")
            ex = ex if isinstance(ex, list) else []
            first = _scalar(ex[0]) if ex else ""
            if isinstance(first, str) and len(first) > 300:
                first = first[:297] + "..."
            recs.append({"check": str(name), "violations": viol,
                         "passed": viol <= max_violations, "examples": len(ex),
                         "first_example": first})
    if not recs:
        return pd.DataFrame({"check": pd.Series([], dtype="str"),
                             "violations": pd.Series([], dtype="int64"),
                             "passed": pd.Series([], dtype="bool"),
                             "examples": pd.Series([], dtype="int64"),
                             "first_example": pd.Series([], dtype="object")})
    out = pd.DataFrame(recs)
    out["check"] = out["check"].astype("str")
    return out


_TIME_KEYS: tuple[str, ...] = ("t", "time", "ts", "at", "when", "end", "start", "intended",
                               "t_ns", "time_ns", "ts_ns")


def _as_unix_ns(value: Any) -> int | None:
    """A time found in a check example -> unix ns (ns/us/ms/s by magnitude, or ISO text)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        v = float(value)
        for limit, scale in ((1e17, 1), (1e14, 1e3), (1e11, 1e6), (1e8, 1e9)):
            if v >= limit:
                return int(v * scale)
        return None
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if dt.tzinfo is None:
            return None
        return int(dt.timestamp() * 1e9)
    return None


def _example_time(example: Any, depth: int = 0) -> int | None:
    if not isinstance(example, Mapping) or depth > 2:
        return None
    for key in _TIME_KEYS:
        if key in example:
            t = _as_unix_ns(example[key])
            if t is not None:
                return t
    for val in example.values():
        if isinstance(val, Mapping):
            t = _example_time(val, depth + 1)
            if t is not None:
                return t
    return None


def check_violation_times(summary: Mapping[str, Any], origin_ns: int) -> pd.DataFrame:
    """Times of the violation examples in ``summary["checks"]`` that carry one.

    A check's optional ``times`` list (every violation's time) wins over its examples. An
    example's time is the first of the keys ``t``, ``time``, ``ts``, ``at``, ``when``,
    ``end``, ``start``, ``intended`` (also one level down) holding unix ns/us/ms/s or ISO
    text. Columns ``check`` and ``second`` (float, since ``origin_ns``).
    """
    checks = summary.get("checks")
    recs = []
    if isinstance(checks, Mapping):
        for name, c in checks.items():
            if not isinstance(c, Mapping):
                continue
            times = c.get("times")
            if isinstance(times, list) and times:
                stamps = [_as_unix_ns(t) for t in times]
            else:
                ex = c.get("examples")
                stamps = [_example_time(e) for e in (ex if isinstance(ex, list) else [])]
            recs.extend({"check": str(name), "second": (t - origin_ns) / 1e9}
                        for t in stamps if t is not None)
    if not recs:
        return pd.DataFrame({"check": pd.Series([], dtype="str"),
                             "second": pd.Series([], dtype="float64")})
    out = pd.DataFrame(recs)
    out["check"] = out["check"].astype("str")
    return out


def _when(value: Any) -> str | None:
    """A start/finish time for display: unix s/ms/ns numbers as ISO 8601 UTC, text as is."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        ns = _as_unix_ns(value)
        if ns is None:
            return str(value)
        return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat(timespec="seconds")
    return str(_scalar(value))


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def headline(summary: Mapping[str, Any], config: Mapping[str, Any], df: pd.DataFrame,
             users_peak: int | None, run_name: str) -> dict[str, Any]:
    """The report's headline as plain values.

    Keys: ``run_id``, ``target``, ``policy``, ``users_peak`` (int or None), ``duration_s``
    (float s; summary's, else the journal span), ``started``/``finished`` (text or None),
    ``exit_code`` (int or None), ``verdict`` (``"PASS"``/``"FAIL"``/``"UNKNOWN"``) and
    ``reasons`` (list of one-line strings: failed gates, checks with violations, the exit
    code's meaning).
    """
    target_cfg = config.get("target") if isinstance(config.get("target"), Mapping) else {}
    target = summary.get("target")
    if not isinstance(target, str) or not target:
        host = target_cfg.get("host") if isinstance(target_cfg, Mapping) else None
        target = host if isinstance(host, str) and host else ("embedded" if target_cfg else "unknown")
    policy = summary.get("policy")
    if not isinstance(policy, str) or not policy:
        p = target_cfg.get("policy") if isinstance(target_cfg, Mapping) else None
        policy = p if isinstance(p, str) and p else "unknown"
    peak = _num(summary.get("users_peak"))
    duration = _num(summary.get("duration_s"))
    exit_code = summary.get("exit_code")
    exit_code = exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool) else None
    reasons: list[str] = []
    gates = gates_table(summary)
    for rec in gates.itertuples(index=False):
        if rec.passed is False:
            reasons.append(f"gate {rec.gate} failed: value {plain_number(rec.value)}, "
                           f"limit {plain_number(rec.limit)}")
    gates_cfg = config.get("gates") if isinstance(config.get("gates"), Mapping) else {}
    limit = gates_cfg.get("violations", 0) if isinstance(gates_cfg, Mapping) else 0
    limit = limit if isinstance(limit, int) and not isinstance(limit, bool) else 0
    examples: list[dict[str, str]] = []
    for rec in checks_table(summary, limit).itertuples(index=False):
        if not rec.passed:
            reasons.append(f"check {rec.check}: {rec.violations} violation(s)")
            examples.append({"check": rec.check, "example": str(rec.first_example or
                                                                "(no example recorded)")})
    if exit_code is None:
        verdict = "UNKNOWN"
        if not summary:
            reasons.insert(0, "no summary.json: gates and checks were not evaluated")
    else:
        verdict = "PASS" if exit_code == 0 else "FAIL"
        meaning = EXIT_CODES.get(exit_code, "unknown exit code")
        if exit_code != 0 or not reasons:
            reasons.insert(0, f"exit code {exit_code}: {meaning}")
    if summary.get("verdict") in ("PASS", "FAIL"):
        verdict = str(summary["verdict"])
    given = summary.get("reasons")
    if isinstance(given, list) and given and all(isinstance(r, str) for r in given):
        reasons = list(given) + [r for r in reasons if r.startswith("exit code")
                                 and not any(r in g for g in given)][:1]
    return {
        "run_id": str(summary.get("run_id") or run_name),
        "target": target,
        "policy": policy,
        "users_peak": int(peak) if peak is not None else users_peak,
        "duration_s": duration if duration is not None else journal_span_s(df),
        "started": _when(summary.get("started")),
        "finished": _when(summary.get("finished")),
        "exit_code": exit_code,
        "verdict": verdict,
        "reasons": reasons,
        "check_examples": examples,
        "target_kind": _text(summary.get("target_kind")),
        "host": _text(summary.get("host")),
        "load": _load_profile(summary, config),
        "scenarios_ran": sorted(scenarios_run(df, summary)),
        "versions": _versions(summary),
        "cpu_warnings": cpu_warnings(summary),
    }


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def plain_number(value: Any) -> str:
    """A number for a sentence: no scientific notation, 3 significant digits below 1000."""
    v = _num(value)
    if v is None:
        return str(value)
    if v.is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return np.format_float_positional(v, precision=3, unique=False, fractional=False,
                                      trim="-")


def _load_profile(summary: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """``summary["load"]`` (users, spawn_rate, run_time, scenarios, arrival_rate, argv);
    missing values are absent keys (the config's weights are not used: ``--scenario``
    may have overridden them; :func:`headline` lists the scenarios that ran instead)."""
    load = summary.get("load")
    out: dict[str, Any] = {}
    if isinstance(load, Mapping):
        for key in ("users", "spawn_rate", "run_time", "arrival_rate"):
            v = load.get(key)
            if v is not None and v != "" and not isinstance(v, (Mapping, list)):
                out[key] = v
        sc = load.get("scenarios")
        if isinstance(sc, Mapping):
            out["scenarios"] = {str(k): v for k, v in sc.items()}
        argv = load.get("argv")
        if isinstance(argv, list):
            out["argv"] = " ".join(str(a) for a in argv)
        elif isinstance(argv, str):
            out["argv"] = argv
    return out


def _versions(summary: Mapping[str, Any]) -> dict[str, str]:
    v = summary.get("versions")
    if not isinstance(v, Mapping):
        return {}
    return {str(k): str(val) for k, val in v.items() if val is not None and val != ""}


def cpu_warnings(summary: Mapping[str, Any]) -> list[str]:
    """Sentences about CPU saturation from ``summary["cpu"]``; empty when all was well.

    A saturated load generator makes the latency figures invalid (they include the
    generator's own delays); a saturated target means the latency is the target's limit.
    The summary's own ``cpu.notes`` follow.
    """
    cpu = summary.get("cpu")
    if not isinstance(cpu, Mapping):
        return []
    out = []
    if cpu.get("generator_saturated") is True:
        out.append("The load generator's CPU was saturated: latency figures are not valid "
                   "(they include the generator's own delays).")
    if cpu.get("target_saturated") is True:
        out.append("The target's CPU was saturated: latency is the target's (it shows the "
                   "target at its limit, not the network or the harness).")
    notes = cpu.get("notes")
    if isinstance(notes, list):
        out.extend(str(n) for n in notes if n and str(n) not in out)
    return out


def cpu_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """``summary["cpu"]`` as rows: ``process`` (generator id or ``target``), ``mean``,
    ``p95``, ``max`` (CPU %, as the summary gives them); empty without that key."""
    cpu = summary.get("cpu")
    recs = []
    if isinstance(cpu, Mapping):
        gens = cpu.get("generators")
        if isinstance(gens, Mapping):
            for w in sorted(gens, key=str):
                g = gens[w] if isinstance(gens[w], Mapping) else {}
                recs.append({"process": f"generator {w}", **{k: _num(g.get(k))
                                                             for k in ("mean", "p95", "max")}})
        tgt = cpu.get("target")
        if isinstance(tgt, Mapping):
            recs.append({"process": "target", **{k: _num(tgt.get(k))
                                                 for k in ("mean", "p95", "max")}})
    cols = ["process", "mean", "p95", "max"]
    if not recs:
        return pd.DataFrame({c: pd.Series([], dtype="str" if c == "process" else "float64")
                             for c in cols})
    out = pd.DataFrame(recs, columns=cols)
    return out.astype({"process": "str", "mean": "float64", "p95": "float64", "max": "float64"})


def ops_from_summary(summary: Mapping[str, Any]) -> pd.DataFrame:
    """``summary["ops"]`` as an :func:`op_summary`-shaped frame (for runs without a journal)."""
    ops = summary.get("ops")
    names = ordered_ops(str(k) for k in ops) if isinstance(ops, Mapping) else []
    data: dict[str, list[Any]] = {c: [] for c in _OP_SUMMARY_COLUMNS}
    alias = {"service_p50_ms": "svc_p50_ms", "service_p99_ms": "svc_p99_ms"}
    for name in names:
        rec = ops.get(name) if isinstance(ops, Mapping) else None
        rec = rec if isinstance(rec, Mapping) else {}
        for c in _OP_SUMMARY_COLUMNS:
            v = _num(rec.get(c, rec.get(alias.get(c, c))))
            if v is None and c == "expected":
                v = 0.0
            data[c].append(np.nan if v is None else v)
    out = pd.DataFrame({c: pd.Series(v, dtype="float64") for c, v in data.items()})
    for c in ("count", *_OUTCOMES):
        if out[c].notna().all():
            out[c] = out[c].astype("int64")
    out.index = pd.Index(names, name="op", dtype="str")
    return _mark_events(out, event_ops(summary))


def codes_from_summary(summary: Mapping[str, Any]) -> pd.DataFrame:
    """``summary["codes"]`` (code -> count) as a :func:`code_counts`-shaped frame."""
    codes = summary.get("codes")
    recs = []
    if isinstance(codes, Mapping):
        for k, v in codes.items():
            try:
                code = int(k)
            except (TypeError, ValueError):
                continue
            n = _num(v)
            if n is not None:
                recs.append((code, int(n)))
    frame = pd.DataFrame({"code": pd.Series([c for c, _ in recs], dtype="int64"),
                          "count": pd.Series([n for _, n in recs], dtype="int64")})
    frame = frame.sort_values(["count", "code"], ascending=[False, True], kind="stable")
    frame.insert(1, "name", pd.Series([code_name_short(c) for c in frame["code"]],
                                      dtype="str", index=frame.index))
    exp = expected_from_summary(summary)
    per_code = exp.groupby("code")["count"].sum().to_dict() if not exp.empty else {}
    frame["expected"] = frame["code"].map(per_code).fillna(0).astype("int64")
    return frame.reset_index(drop=True)
