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
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "PERCENTILES",
    "OP_ORDER",
    "EVENT_OPS",
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
    "kick_delays",
    "gates_table",
    "checks_table",
    "check_violation_times",
    "headline",
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
#: Exit codes of a headless run (RESULTS.md §3).
EXIT_CODES: dict[int, str] = {
    0: "every gate and every correctness check passed",
    2: "the config or command line is wrong",
    3: "a performance/error-rate gate failed",
    4: "a correctness check found a violation",
    5: "the target could not be reached or the embedded target did not start",
}
_OUTCOMES: tuple[str, ...] = ("ok", "fail", "info")
_NS_PER_S = 1_000_000_000
_NO_OP = "(no op)"
_OP_SUMMARY_COLUMNS: tuple[str, ...] = (
    "count", "ok", "fail", "info", "rate_per_s", *PERCENTILES, "max_ms",
    "service_p50_ms", "service_p99_ms",
)


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


def op_summary(df: pd.DataFrame, duration_s: float | None = None) -> pd.DataFrame:
    """Per-op totals and latency percentiles.

    Index ``op`` (ops present, in :data:`OP_ORDER`); columns ``count``, ``ok``, ``fail``,
    ``info`` (rows), ``rate_per_s`` (count / ``duration_s``; default duration is the
    journal span, :func:`journal_span_s`; NaN when that is 0), ``p50_ms`` … ``p999_ms``
    and ``max_ms`` of latency (end - intended, ms) and ``service_p50_ms`` /
    ``service_p99_ms`` (end - start, ms). Percentiles and max are nearest-rank over the
    op's **ok** rows only; NaN when the op has none.
    """
    if df.empty:
        out = pd.DataFrame({c: pd.Series([], dtype="int64" if c in _OUTCOMES or c == "count"
                                         else "float64") for c in _OP_SUMMARY_COLUMNS})
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
    return out.loc[ordered_ops(out.index)]


def code_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Rows per protocol code: columns ``code`` (int), ``name`` (code_short), ``count``.

    Sorted by count descending, then code. Only codes that occur are listed (0 included
    when present).
    """
    if df.empty:
        return pd.DataFrame({"code": pd.Series([], dtype="int64"),
                             "name": pd.Series([], dtype="str"),
                             "count": pd.Series([], dtype="int64")})
    vc = df["code"].value_counts()
    out = pd.DataFrame({"code": vc.index.to_numpy(dtype="int64"),
                        "count": vc.to_numpy(dtype="int64")})
    out = out.sort_values(["count", "code"], ascending=[False, True], kind="stable")
    out.insert(1, "name", [code_name_short(c) for c in out["code"]])
    out["name"] = out["name"].astype("str")
    return out.reset_index(drop=True)


def error_code_counts(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`code_counts` of the rows that did not succeed (outcome != ok, fault markers excluded)."""
    return code_counts(_error_rows(df))


def _error_rows(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return df
    mask = ~eq(df["outcome"], "ok") & ~eq(df["op"], "fault")
    return df.loc[mask]


def _seconds(df: pd.DataFrame, origin_ns: int) -> np.ndarray:
    """Whole seconds of ``end`` since ``origin_ns``."""
    return (df["end"].to_numpy(dtype="int64") - origin_ns) // _NS_PER_S


def per_second(df: pd.DataFrame, origin_ns: int | None = None) -> pd.DataFrame:
    """1 s buckets of ``end`` time per op.

    Columns: ``second`` (int, seconds since ``origin_ns``; default :func:`time_origin_ns`),
    ``unix_s`` (int, bucket start), ``op``, ``count``, ``ok``, ``fail``, ``info`` (rows
    finished in that second) and ``p50_ms``, ``p95_ms``, ``p99_ms`` (nearest-rank latency,
    end - intended, over that second's ok rows; NaN when none). Only (second, op) pairs
    with at least one row are listed; sorted by second then op order.
    """
    cols = ["second", "unix_s", "op", "count", "ok", "fail", "info", "p50_ms", "p95_ms", "p99_ms"]
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
    """Failed rows (outcome != ok, fault markers excluded) per second and code.

    Columns ``second`` (since ``origin_ns``), ``code``, ``name`` (code_short), ``count``.
    """
    err = _error_rows(df)
    if err.empty:
        return pd.DataFrame({"second": pd.Series([], dtype="int64"),
                             "code": pd.Series([], dtype="int64"),
                             "name": pd.Series([], dtype="str"),
                             "count": pd.Series([], dtype="int64")})
    origin = time_origin_ns(df) if origin_ns is None else int(origin_ns)
    frame = pd.DataFrame({"second": _seconds(err, origin), "code": err["code"].to_numpy("int64")})
    out = frame.groupby(["second", "code"]).size().rename("count").reset_index()
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


def timed_ops(df: pd.DataFrame) -> list[str]:
    """Ops that have a duration worth charting (not events/markers), in display order."""
    if df.empty:
        return []
    present = [str(o) for o in _op_series(df).unique()]
    return [o for o in ordered_ops(present) if o not in EVENT_OPS and o != _NO_OP]


def ok_latencies(df: pd.DataFrame, op: str, column: str = "latency_ms") -> np.ndarray:
    """The ok rows' ``column`` values (ms) of one op, as a float array (NaN dropped)."""
    if df.empty:
        return np.empty(0)
    mask = eq(df["op"], op) & eq(df["outcome"], "ok")
    vals = df[column].to_numpy("float64")[mask]
    return vals[~np.isnan(vals)]


def _cdf_points(values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted-sample CDF thinned to about ``max_points`` points, tails kept (x ms, y fraction)."""
    v = np.sort(values)
    n = len(v)
    if n <= max_points:
        return v, np.arange(1, n + 1) / n
    half = max_points // 2
    frac = np.concatenate([np.linspace(0.0, 1.0, half),
                           1.0 - np.geomspace(1.0, 1.0 / n, half)])
    ranks = np.unique(np.clip(np.ceil(frac * n).astype("int64"), 1, n))
    return v[ranks - 1], ranks / n


def latency_cdf(df: pd.DataFrame, ops: Sequence[str] | None = None,
                max_points: int = 600) -> pd.DataFrame:
    """Empirical CDFs of ok-row latency (and service time where it differs) per op.

    Long frame: ``op``, ``kind`` (``"latency"`` = end - intended, ``"service"`` = end -
    start; service is only listed for ops where some row has ``intended != start``),
    ``ms`` (float), ``fraction`` (0..1, share of ok rows finished within ``ms``) and ``n``
    (ok rows behind the curve).
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
        if len(svc) == len(lat) and not np.array_equal(np.sort(svc), np.sort(lat)):
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
            reasons.append(f"gate {rec.gate} failed: value {rec.value}, limit {rec.limit}")
    gates_cfg = config.get("gates") if isinstance(config.get("gates"), Mapping) else {}
    limit = gates_cfg.get("violations", 0) if isinstance(gates_cfg, Mapping) else 0
    limit = limit if isinstance(limit, int) and not isinstance(limit, bool) else 0
    for rec in checks_table(summary, limit).itertuples(index=False):
        if not rec.passed:
            reasons.append(f"check {rec.check}: {rec.violations} violation(s)")
    if exit_code is None:
        verdict = "UNKNOWN"
        if not summary:
            reasons.insert(0, "no summary.json: gates and checks were not evaluated")
    else:
        verdict = "PASS" if exit_code == 0 else "FAIL"
        meaning = EXIT_CODES.get(exit_code, "unknown exit code")
        if exit_code != 0 or not reasons:
            reasons.insert(0, f"exit code {exit_code}: {meaning}")
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
    }


def ops_from_summary(summary: Mapping[str, Any]) -> pd.DataFrame:
    """``summary["ops"]`` as an :func:`op_summary`-shaped frame (for runs without a journal)."""
    ops = summary.get("ops")
    names = ordered_ops(str(k) for k in ops) if isinstance(ops, Mapping) else []
    data: dict[str, list[Any]] = {c: [] for c in _OP_SUMMARY_COLUMNS}
    for name in names:
        rec = ops.get(name) if isinstance(ops, Mapping) else None
        rec = rec if isinstance(rec, Mapping) else {}
        for c in _OP_SUMMARY_COLUMNS:
            v = _num(rec.get(c))
            data[c].append(np.nan if v is None else v)
    out = pd.DataFrame({c: pd.Series(v, dtype="float64") for c, v in data.items()})
    for c in ("count", *_OUTCOMES):
        if out[c].notna().all():
            out[c] = out[c].astype("int64")
    out.index = pd.Index(names, name="op", dtype="str")
    return out


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
    return frame.reset_index(drop=True)
