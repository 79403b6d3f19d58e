"""Load a run folder (RESULTS.md) into plain values and DataFrames.

The shell of the report pipeline: files in, DataFrames / dicts out, nothing else.
Every loader tolerates missing or damaged files: a missing optional file gives an empty
value, an undecodable journal line is skipped and counted (``df.attrs["bad_lines"]``).

Journal loading uses ``pyarrow.json`` with an explicit schema of the flat columns and
``unexpected_field_behavior="ignore"``: the nested extras (``kicked``, ``data``) are parsed
but never materialised, which keeps 10^6 rows at a few hundred MB and a few seconds.
A file the fast reader rejects (a truncated last line, a stray non-JSON line) is re-read
line by line with the standard ``json`` module so one bad line never loses a whole file.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from harness.errors import HarnessError

__all__ = [
    "JOURNAL_COLUMNS",
    "CATEGORY_COLUMNS",
    "ReportInputError",
    "check_run_dir",
    "load_journal",
    "load_rows",
    "load_summary",
    "load_config",
    "load_users_history",
    "apply_expect",
    "VERDICTS",
]

#: Verdicts of :func:`apply_expect`: the outcomes plus ``expected`` (a provoked code that came back).
VERDICTS: tuple[str, ...] = ("ok", "fail", "info", "expected")

#: Flat journal columns, in this order, in every frame :func:`load_journal` returns.
JOURNAL_COLUMNS: tuple[str, ...] = (
    "w", "n", "scenario", "op", "user", "platform", "instance", "session",
    "intended", "start", "end", "outcome", "code", "detail", "conn", "race", "by", "expect",
)
#: Low-cardinality string columns stored as pandas ``category``.
CATEGORY_COLUMNS: tuple[str, ...] = ("w", "scenario", "op", "outcome", "platform", "detail")
_INT_COLUMNS: tuple[str, ...] = ("n", "intended", "start", "end", "code", "expect")
_OPTIONAL_INT_COLUMNS: tuple[str, ...] = ("expect",)
_TIME_COLUMNS: tuple[str, ...] = ("intended", "start", "end")
_DERIVED_COLUMNS: tuple[str, ...] = ("latency_ms", "service_ms")
_SCHEMA = pa.schema(
    [(c, pa.int64() if c in _INT_COLUMNS else pa.string()) for c in JOURNAL_COLUMNS]
)


class ReportInputError(HarnessError):
    """The report was pointed at something that is not a run folder (exit code 2)."""

    exit_code = 2


def check_run_dir(run_dir: str | Path) -> Path:
    """Return ``run_dir`` as a Path, or raise :class:`ReportInputError` with one sentence when it
    does not exist, is not a folder, or is not a run folder (neither summary.json nor journal/)."""
    path = Path(run_dir)
    if not path.exists():
        raise ReportInputError(f"run folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise ReportInputError(f"{str(path)!r} is not a folder (expected results/<run-id>/)")
    if not (path / "summary.json").is_file() and not (path / "journal").is_dir():
        raise ReportInputError(f"{str(path)!r} is not a run folder (no summary.json and no journal/; "
                               "expected results/<run-id>/)")
    return path


# --------------------------------------------------------------------------- journal


def _schema(columns: Sequence[str]) -> pa.Schema:
    return pa.schema([_SCHEMA.field(c) for c in columns])


def _empty_table(schema: pa.Schema = _SCHEMA) -> pa.Table:
    return schema.empty_table()


_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)
_BLOCK_BYTES = 4 << 20  # streaming block: bounds the reader's working memory


def _fast_read(source: bytes | Path, schema: pa.Schema) -> pa.Table:
    """Parse JSONL with pyarrow into ``schema`` (other keys ignored, never materialised).

    A file is streamed block by block (memory stays bounded by the blocks in flight);
    bytes are parsed at once. Raises ``pa.ArrowInvalid`` on any bad line.
    """
    opts = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    if isinstance(source, bytes):
        if not source or source.isspace():
            return _empty_table(schema)
        return pa_json.read_json(io.BytesIO(source), parse_options=opts)
    reader = pa_json.open_json(str(source), read_options=pa_json.ReadOptions(
        block_size=_BLOCK_BYTES), parse_options=opts)
    return pa.Table.from_batches(list(reader), schema=schema)


def _coerce_row(obj: Any, columns: Sequence[str]) -> dict[str, Any] | None:
    """One decoded JSON value -> a flat row dict, or None when it does not fit the schema."""
    if not isinstance(obj, dict):
        return None
    row: dict[str, Any] = {}
    for col in columns:
        val = obj.get(col)
        if val is None:
            row[col] = None
        elif col in _OPTIONAL_INT_COLUMNS and (isinstance(val, bool) or not isinstance(
                val, (int, float)) or not math.isfinite(val) or not float(val).is_integer()):
            row[col] = None  # an odd optional extra never costs the row
        elif col in _INT_COLUMNS:
            if isinstance(val, bool):
                return None
            if isinstance(val, int):
                row[col] = val
            elif isinstance(val, float) and math.isfinite(val) and val.is_integer():
                row[col] = int(val)
            else:
                return None
            if not -(2**63) <= row[col] < 2**63:
                return None
        elif isinstance(val, str):
            row[col] = val
        elif isinstance(val, (int, float, bool)):
            row[col] = str(val)
        else:
            return None
    return row


def _slow_read(data: bytes, schema: pa.Schema) -> tuple[pa.Table, int]:
    """Line-by-line parse; returns (table, number of undecodable lines)."""
    rows: list[dict[str, Any]] = []
    bad = 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            row = _coerce_row(json.loads(line), schema.names)
        except (ValueError, RecursionError):
            row = None
        if row is None:
            bad += 1
        else:
            rows.append(row)
    if not rows:
        return _empty_table(schema), bad
    return pa.Table.from_pylist(rows, schema=schema), bad


def _read_journal_file(path: Path, schema: pa.Schema) -> tuple[pa.Table, int]:
    """Read one worker's JSONL file; returns (table, undecodable line count)."""
    try:
        if path.stat().st_size == 0:
            return _empty_table(schema), 0
        return _fast_read(path, schema), 0
    except _ARROW_ERRORS:
        pass
    except OSError:
        return _empty_table(schema), 1
    try:
        data = path.read_bytes()
    except OSError:
        return _empty_table(schema), 1
    # Common damage: the worker died mid-write, so only the last line is cut short.
    body = data.rstrip(b"\r\n")
    cut = body.rfind(b"\n")
    if cut > 0:
        try:
            return _fast_read(body[: cut + 1], schema), 1
        except _ARROW_ERRORS:
            pass
    return _slow_read(data, schema)


def _empty_frame() -> pd.DataFrame:
    cols: dict[str, pd.Series] = {}
    for c in JOURNAL_COLUMNS:
        if c in _INT_COLUMNS:
            cols[c] = pd.Series([], dtype="int64")
        elif c in CATEGORY_COLUMNS:
            cols[c] = pd.Series([], dtype="category")
        else:
            cols[c] = pd.Series([], dtype="str")
    for c in _DERIVED_COLUMNS:
        cols[c] = pd.Series([], dtype="float64")
    df = pd.DataFrame(cols)
    df.attrs["bad_lines"] = 0
    df.attrs["files"] = 0
    return df


def load_journal(run_dir: str | Path, *, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Load every ``journal/*.jsonl`` of a run into one flat DataFrame.

    Columns: the flat journal fields (:data:`JOURNAL_COLUMNS`; absent extras -> null),
    ``intended``/``start``/``end`` as int64 unix ns, ``code`` int64, the low-cardinality
    strings (:data:`CATEGORY_COLUMNS`) as ``category``, plus ``latency_ms`` = (end -
    intended) / 1e6 and ``service_ms`` = (end - start) / 1e6 (float ms).
    ``columns`` (optional) keeps only those journal columns (the time columns are always
    kept), which saves memory on very large runs.

    Never raises on content: undecodable lines, rows that are not objects, fields of the
    wrong type and rows without an ``end`` time (or without both ``intended`` and
    ``start``) are skipped and counted in ``df.attrs["bad_lines"]``. A missing
    ``intended`` is taken as ``start`` and vice versa; a missing ``code`` becomes 0 for
    ``ok`` rows and -1 otherwise. ``df.attrs["files"]`` is the number of journal files.
    """
    root = Path(run_dir)
    files = sorted((root / "journal").glob("*.jsonl")) if (root / "journal").is_dir() else []
    keep = list(JOURNAL_COLUMNS) if columns is None else [
        c for c in JOURNAL_COLUMNS if c in set(columns) | set(_TIME_COLUMNS) | {"code", "outcome"}
    ]
    schema = _schema(keep)
    tables: list[pa.Table] = []
    bad = 0
    for path in files:
        table, nbad = _read_journal_file(path, schema)
        bad += nbad
        if table.num_rows:
            tables.append(table)
    if not tables:
        df = _empty_frame()[keep + list(_DERIVED_COLUMNS)]
        df.attrs["bad_lines"] = bad
        df.attrs["files"] = len(files)
        return df
    table = pa.concat_tables(tables)
    del tables
    before = table.num_rows
    table = _fill_times(table)
    bad += before - table.num_rows
    df = _table_to_frame(table)
    del table
    end = df["end"].to_numpy()
    df["latency_ms"] = (end - df["intended"].to_numpy()) / 1e6
    df["service_ms"] = (end - df["start"].to_numpy()) / 1e6
    df.attrs["bad_lines"] = bad
    df.attrs["files"] = len(files)
    return df


def apply_expect(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``outcome`` replaced by each row's verdict (harness.results.journal.judged):
    rows with ``expect`` that got that code become ``"expected"`` (a pass, not an error), rows
    with ``expect`` that got anything else become ``"fail"`` (an accepted stale UserSig
    included); other rows keep their outcome. ``expect`` is float in the frame (NaN = absent).
    Returns ``df`` itself when no row carries ``expect`` (or the column is absent)."""
    if df.empty or "expect" not in df.columns:
        return df
    exp = df["expect"].to_numpy(dtype="float64")
    has = ~np.isnan(exp)
    if not has.any():
        return df
    code = df["code"].to_numpy(dtype="float64")
    verdict = df["outcome"].astype("object").to_numpy().copy()
    match = has & (code == exp)
    verdict[match] = "expected"
    verdict[has & ~match] = "fail"
    out = df.copy()
    out["outcome"] = pd.Categorical(verdict, categories=list(VERDICTS))
    return out


def _fill_times(table: pa.Table) -> pa.Table:
    """Fill missing intended/start/code/n, drop rows that still lack a time (Arrow side)."""
    intended = pc.coalesce(table["intended"], table["start"])
    start = pc.coalesce(table["start"], table["intended"])
    table = table.set_column(table.schema.get_field_index("intended"), "intended", intended)
    table = table.set_column(table.schema.get_field_index("start"), "start", start)
    good = pc.and_(pc.is_valid(table["end"]), pc.is_valid(table["intended"]))
    if good.null_count or not pc.all(good).as_py():
        table = table.filter(good)
    if table["code"].null_count:
        default = pc.if_else(pc.equal(table["outcome"], "ok"), 0, -1).cast(pa.int64())
        default = pc.fill_null(default, -1)
        idx = table.schema.get_field_index("code")
        table = table.set_column(idx, "code", pc.coalesce(table["code"], default))
    if "n" in table.column_names and table["n"].null_count:
        idx = table.schema.get_field_index("n")
        table = table.set_column(idx, "n", pc.fill_null(table["n"], -1))
    return table


def _table_to_frame(table: pa.Table) -> pd.DataFrame:
    """Arrow table of the schema -> DataFrame with categoricals (string nulls kept)."""
    arrays = []
    for name in table.column_names:
        col = table.column(name)
        if name in CATEGORY_COLUMNS:
            col = col.dictionary_encode()
        arrays.append(col)
    return pa.table(arrays, names=table.column_names).to_pandas(self_destruct=True)


def _matching_lines(path: Path, needle: bytes, chunk_size: int = 1 << 24) -> list[bytes]:
    """Lines of ``path`` that contain ``needle`` (found with ``bytes.find`` on big chunks,
    so rare matches in a multi-GB file cost one fast pass)."""
    out: list[bytes] = []
    rest = b""
    with path.open("rb") as fh:
        while True:
            block = fh.read(chunk_size)
            if not block:
                break
            data = rest + block
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 1:]
            pos = 0
            while True:
                hit = data.find(needle, pos, cut)
                if hit < 0:
                    break
                begin = data.rfind(b"\n", 0, hit) + 1
                stop = data.find(b"\n", hit)
                out.append(data[begin:stop])
                pos = stop + 1
    if needle in rest:
        out.append(rest)
    return out


def load_rows(run_dir: str | Path, op: str) -> list[dict[str, Any]]:
    """Return the full decoded journal rows (nested ``kicked``/``data`` kept) of one op.

    Meant for small subsets such as ``"race"`` rows: lines are pre-filtered on the raw
    bytes (``"<op>"`` must occur) before decoding. Undecodable lines are skipped. Rows come
    in file order (worker files sorted by name).
    """
    jdir = Path(run_dir) / "journal"
    if not jdir.is_dir():
        return []
    needle = json.dumps(op).encode()
    out: list[dict[str, Any]] = []
    for path in sorted(jdir.glob("*.jsonl")):
        try:
            lines = _matching_lines(path, needle)
        except OSError:
            continue
        for line in lines:
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(obj, dict) and obj.get("op") == op:
                out.append(obj)
    return out


# --------------------------------------------------------------------------- other files


def load_summary(run_dir: str | Path) -> dict[str, Any]:
    """Return ``summary.json`` as a dict; ``{}`` when missing or not a JSON object."""
    path = Path(run_dir) / "summary.json"
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return obj if isinstance(obj, dict) else {}


def load_config(run_dir: str | Path) -> dict[str, Any]:
    """Return the run's effective ``config.yaml`` as a dict; ``{}`` when missing or bad."""
    path = Path(run_dir) / "config.yaml"
    try:
        import yaml

        obj = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - any unreadable config just means "no config"
        return {}
    return obj if isinstance(obj, dict) else {}


def load_users_history(run_dir: str | Path) -> pd.DataFrame:
    """Locust's user count over time from ``locust_stats_history.csv``.

    Returns columns ``unix_s`` (float, unix seconds) and ``users`` (int), one row per
    history line of the ``Aggregated`` row; empty when the file is missing or unreadable.
    """
    empty = pd.DataFrame({"unix_s": pd.Series([], dtype="float64"),
                          "users": pd.Series([], dtype="int64")})
    path = Path(run_dir) / "locust_stats_history.csv"
    if not path.is_file():
        cands = sorted(Path(run_dir).glob("*stats_history*.csv"))
        if not cands:
            return empty
        path = cands[0]
    times: list[float] = []
    users: list[int] = []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            for rec in csv.DictReader(fh):
                if rec.get("Name") not in ("Aggregated", None):
                    continue
                try:
                    times.append(float(rec["Timestamp"]))
                    users.append(int(float(rec["User Count"])))
                except (KeyError, TypeError, ValueError):
                    continue
    except (OSError, UnicodeDecodeError, csv.Error):
        return empty
    if not times:
        return empty
    return pd.DataFrame({"unix_s": np.asarray(times, dtype="float64"),
                         "users": np.asarray(users, dtype="int64")})
