"""Read a run's journals once: every worker's ``journal/*.jsonl`` block by block, in
approximate time order across the files, each block parsed once (pyarrow) and handed to the
checks' :class:`~harness.results.checks.history.History` and to the summary's and report's
:class:`~harness.results.digest.Digest`.

A block that pyarrow refuses (a truncated last line, a stray non-JSON line, a field of an
odd type) is decoded line by line with the standard ``json`` module, so one bad line costs
only itself: the History records it as journal damage exactly as it always did, the Digest
counts it in ``bad_lines``. Nested fields (``data`` of race and switch rows) are decoded from
their own lines only; every other row's nesting is skipped by the parser unread.

Memory: one block per file in flight (4 MiB of text each), plus what History and Digest keep
(History: O(sessions + connections); Digest: O(seconds x ops), see its docstring).
"""
from __future__ import annotations

import gc
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from harness.errors import ConfigError
from harness.results.checks.history import History
from harness.results.digest import Digest, kick_login_pairs
from harness.results.report.load import _SCHEMA, _coerce_row, _fill_times

__all__ = ["Scan", "scan_run", "BLOCK_BYTES"]

#: Text read per block and file.
BLOCK_BYTES = 4 << 20
#: Ops whose nested ``data`` the consumers read (decoded from the raw line).
_NESTED_OPS = ("race", "switch", "reconnect", "fault")
_SCAN_SCHEMA = pa.schema(list(_SCHEMA) + [pa.field("kicked", pa.list_(pa.string())),
                                         pa.field("expire_at", pa.int64())])
_DIGEST_COLUMNS = [f.name for f in _SCHEMA]
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


@dataclass
class Scan:
    """The result of one pass: what the checks and what the summary/report need."""

    history: History | None
    digest: Digest | None
    files: int
    rows: int
    #: with ``recovery=True``: the rows :func:`harness.runner.faults.recovery_stats` reads
    #: (fault, disconnect, reconnect, ok login and every fail / info row), as dicts
    recovery: list[dict] | None = None


def _blocks(path: Path, size: int = BLOCK_BYTES) -> Iterator[tuple[bytes, int]]:
    """(text of whole lines, number of its first line), about ``size`` bytes each; a last line
    without a newline comes as its own final block."""
    lineno = 1
    rest = b""
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(size)
            if not chunk:
                if rest:
                    yield rest, lineno
                return
            data = rest + chunk if rest else chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            block, rest = data[: cut + 1], data[cut + 1:]
            yield block, lineno
            lineno += block.count(b"\n")


def _parse(data: bytes) -> pa.Table | None:
    """The block as a table of the scan schema, or None when pyarrow refuses any of it."""
    if not data.strip():
        return None
    opts = pa_json.ParseOptions(explicit_schema=_SCAN_SCHEMA, unexpected_field_behavior="ignore")
    try:
        return pa_json.read_json(io.BytesIO(data), read_options=pa_json.ReadOptions(use_threads=False,
                                 block_size=max(1 << 20, len(data) + 1)), parse_options=opts)
    except _ARROW_ERRORS:
        return None


def _decode_lines(data: bytes, lineno: int, name: str, h: History | None) -> tuple[list[dict], int]:
    """Line-by-line decoding (the slow path): (row dicts, undecodable lines). Undecodable lines
    and non-objects are reported to ``h`` as journal damage, where ``name:line``."""
    scan = json.JSONDecoder().scan_once
    rows: list[dict] = []
    bad = 0
    text = data.decode("utf-8", errors="replace")
    for i, line in enumerate(text.split("\n")):
        if not line.strip():
            continue
        try:
            row, end = scan(line, 0)
            if end != len(line) and line[end:].strip():
                raise ValueError("trailing data")
        except StopIteration:
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                row = None
        except (ValueError, RecursionError):
            row = None
        if type(row) is not dict:
            bad += 1
            if h is not None:
                h.add_bad_line(f"{name}:{lineno + i}", "undecodable JSON line" if row is None else "not a JSON object")
            continue
        rows.append(row)
    return rows, bad


def _nested_rows(table: pa.Table, data: bytes) -> dict[int, dict] | None:
    """Row index -> the fully decoded row, for rows whose ``data`` is read (race, switch);
    None when the block's lines cannot be matched to its rows."""
    mask = pc.fill_null(pc.is_in(table["op"], value_set=pa.array(_NESTED_OPS)), False)
    idx = pc.indices_nonzero(mask).to_pylist()
    if not idx:
        return {}
    nl = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    begins = np.r_[0, nl[:-1] + 1] if len(nl) else np.zeros(1, dtype="int64")
    ends = nl if len(nl) else np.asarray([len(data)])
    if len(nl) and nl[-1] != len(data) - 1:  # a last line without its newline
        begins, ends = np.r_[begins, nl[-1] + 1], np.r_[ends, len(data)]
    if len(begins) != table.num_rows or (ends - begins).min() < 2:
        # blank lines (pyarrow skips them): match rows to the non-blank lines one by one
        lines = [ln for ln in data.split(b"\n") if ln.strip()]
        if len(lines) != table.num_rows:
            return None
        pick = lines.__getitem__
    else:
        def pick(i: int) -> bytes:
            return data[begins[i]:ends[i]]
    out = {}
    for i, op in zip(idx, table["op"].take(pa.array(idx)).to_pylist()):
        try:
            row = json.loads(pick(i))
        except (ValueError, RecursionError):
            return None
        if type(row) is not dict or row.get("op") != op:
            return None
        out[i] = row
    return out


def _digest_table(rows: list[dict]) -> tuple[pa.Table, int]:
    flat = []
    bad = 0
    for r in rows:
        c = _coerce_row(r, _DIGEST_COLUMNS)
        if c is None:
            bad += 1
        else:
            flat.append(c)
    return pa.Table.from_pylist(flat, schema=_SCHEMA), bad


class _Source:
    __slots__ = ("path", "blocks", "last_end")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.blocks = _blocks(path)
        self.last_end = -1


def _feed_digest(d: Digest, table: pa.Table) -> None:
    before = table.num_rows
    table = _fill_times(table)
    d.bad_lines += before - table.num_rows
    d.feed(table)


def scan_run(run_dir: str | Path, *, history: bool = True, digest: bool = True, recovery: bool = False,
             parts: int | None = None) -> Scan:
    """One pass over ``run_dir/journal/*.jsonl`` (see the module docstring).

    ``parts``: how many parts the checks' index is kept in on disk
    (:mod:`harness.results.checks.spill`); default: 1 (in memory) up to
    ``SPILL_FROM_BYTES`` of journal text, more beyond, or ``HARNESS_CHECK_PARTS``."""
    # The indexes are millions of long-lived acyclic objects: automatic collections would
    # rescan them again and again. Instead, after each block the young generation (that
    # block's temporaries, whose cycles would otherwise pin its buffers) is collected and the
    # survivors frozen out of later passes; unfrozen at the end (refcounting frees them).
    gc_on = gc.isenabled()
    gc.disable()
    try:
        return _scan(Path(run_dir), history, digest, recovery, parts)
    finally:
        gc.unfreeze()
        if gc_on:
            gc.enable()


_RECOVERY_OPS = ("fault", "disconnect", "reconnect")


def _recovery_rows(table: pa.Table, nested: dict[int, dict], out: list[dict]) -> None:
    op, outcome = table["op"], table["outcome"]
    mask = pc.or_kleene(pc.is_in(op, value_set=pa.array(_RECOVERY_OPS)),
                        pc.is_in(outcome, value_set=pa.array(["fail", "info"])))
    mask = pc.or_kleene(mask, pc.and_kleene(pc.equal(op, "login"), pc.equal(outcome, "ok")))
    idx = pc.indices_nonzero(pc.fill_null(mask, False)).to_pylist()
    if not idx:
        return
    flat = table.take(pa.array(idx)).to_pylist()
    out.extend(nested.get(i, row) for i, row in zip(idx, flat))


def _parts(files: list[Path], parts: int | None) -> int:
    from harness.results.checks.spill import parts_for

    if parts is None:
        env = os.environ.get("HARNESS_CHECK_PARTS", "").strip()
        if env:
            try:
                parts = int(env)
            except ValueError:
                raise ConfigError("HARNESS_CHECK_PARTS", f"expected a whole number of parts, got {env!r}") from None
            if parts < 1:
                raise ConfigError("HARNESS_CHECK_PARTS", f"expected 1 or more parts, got {parts}")
            return parts
        size = 0
        for p in files:
            try:
                size += p.stat().st_size
            except OSError:
                pass
        return parts_for(size)
    return max(1, int(parts))


def _scan(root: Path, history: bool, digest: bool, recovery: bool = False, parts: int | None = None) -> Scan:
    jdir = root / "journal"
    files = sorted(jdir.glob("*.jsonl")) if jdir.is_dir() else []
    h = History() if history else None
    spill = None
    if h is not None:
        n_parts = _parts(files, parts)
        if n_parts > 1:
            from harness.results.checks.spill import Spill

            spill = Spill(n_parts, folder=root if os.access(root, os.W_OK) else None)
            spill.attach(h)
    d = Digest() if digest else None
    if d is not None:
        d.files = len(files)
        if spill is not None:  # a big run: its kicks wait on disk for the report too
            d.kicks.spool_to(spill.n, str(root) if os.access(root, os.W_OK) else None)
    active = [_Source(p) for p in files]
    rows = 0
    rec: list[dict] | None = [] if recovery else None
    while active:
        src = min(active, key=lambda s: s.last_end)
        try:
            item = next(src.blocks, None)
        except OSError:
            item = None
            if h is not None:
                h.add_bad_line(src.path.name, "unreadable journal file")
            if d is not None:
                d.bad_lines += 1
        if item is None:
            active.remove(src)
            if d is not None:
                d.advance(min(s.last_end for s in active) if active else None)
            continue
        data, lineno = item
        table = _parse(data)
        nested = _nested_rows(table, data) if table is not None else None
        if table is not None and nested is not None:
            rows += table.num_rows
            if h is not None:
                h.feed_table(table, nested, where=src.path.name)
            if d is not None:
                _feed_digest(d, table.select(_DIGEST_COLUMNS))
                for i, row in nested.items():
                    if row.get("op") == "race":
                        d.add_race(row)
            if rec is not None:
                _recovery_rows(table, nested, rec)
            end = table["end"]
        else:
            dicts, bad = _decode_lines(data, lineno, src.path.name, h)
            rows += len(dicts)
            if h is not None:
                h.feed(dicts, where=src.path.name)
            if d is not None:
                d.bad_lines += bad
                flat, nbad = _digest_table(dicts)
                d.bad_lines += nbad
                _feed_digest(d, flat)
                for row in dicts:
                    if row.get("op") == "race":
                        d.add_race(row)
            if rec is not None:
                rec.extend(dicts)  # recovery_stats skips what it does not read
            end = pa.array([r.get("end") if type(r.get("end")) is int else None for r in dicts], type=pa.int64())
        top = pc.max(end).as_py() if len(end) else None
        if top is not None and top > src.last_end:
            src.last_end = top
        if d is not None:
            d.advance(min(s.last_end for s in active))
        if spill is not None:
            spill.flush(h)
        gc.collect(0)
        gc.freeze()
    if spill is not None:
        spill.flush(h)
        if d is not None:
            d.kicks.spool.seal()
            spill.kick_spool = d.kicks.spool
            d.kick_login_from = spill
    elif d is not None and h is not None:
        ids, sent = [], []
        for by in d.kicks.by_values():
            s = h.sessions.get(by)
            if s is not None and s.via == "login":
                ids.append(by)
                sent.append(s.sent)
        d.kick_login = kick_login_pairs([pa.array(ids, type=pa.string())], [np.array(sent, dtype=np.int64)])
    return Scan(history=h, digest=d, files=len(files), rows=rows, recovery=rec)
