"""A run's journal folded once into everything the summary and the report need, in memory
that does not grow with the number of rows (issue "long runs").

:class:`Digest` is fed Arrow tables of journal rows (the flat columns of
:data:`harness.results.report.load.JOURNAL_COLUMNS`, times already filled) by
:func:`harness.results.scan.scan_run`, which reads every worker's journal once, block by block,
in approximate time order. It keeps:

* counts per (op, verdict, code) and per (code, protocol condition): exact, tiny;
* per op, latency and service time of the ok rows in a :class:`Sketch`: every value while an
  op has at most :data:`EXACT_VALUES` of them (percentiles then equal the nearest-rank
  percentiles of :mod:`harness.results.report.aggregate` exactly), beyond that a log
  histogram of 1024 buckets per octave: a percentile is then the upper edge of the bucket the
  nearest-rank value lies in (never below the true value, at most 0.07 % above it; ``max`` stays
  exact);
* per (second, op): row counts by verdict (exact) and the ok rows' latencies until that second
  can no longer receive rows (all journals read past it + :data:`SLACK_S`), when its exact
  nearest-rank p50/p95/p99 are computed and the values dropped. Rows that arrive later than
  that (a journal out of order by more than SLACK_S) still count, but not in that second's
  percentiles (``late_rows``);
* per second: failed / expected rows by code, connections opened / closed;
* fault windows, race counts, and per op an evenly thinned sample of (end, latency) of
  ok rows (every row while an op has at most :data:`POINTS` of them) for the charts that
  draw single operations.

What grows with the run is its length (seconds x ops in the per-second table) and, with the row
count, one per-event list: per ``kicked_offline`` row with a ``by``, its start, ``by`` session
and detail (~32 bytes, as columns), for the kick-delay chart, joined at the report with the send
times of the logins they name. In a run big enough for the checks to spill their index to disk,
those go to disk too (:class:`KickSpool`) and are joined one partition at a time. Races are
counted per (survivors, devices, outcome, policy) as they come; nothing is kept per race.
Every other row costs nothing once folded. The outputs are the same DataFrames :mod:`harness.results.report.aggregate` computes
from a loaded journal (same columns, same order, same rules): tests compare the two.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Digest", "Sketch", "EXACT_VALUES", "POINTS", "SLACK_S"]

#: Values a :class:`Sketch` keeps exactly before it turns into a histogram.
EXACT_VALUES = 1 << 18
#: Histogram resolution: buckets per octave (relative width 2**(1/1024) - 1 = 0.068 %).
_SUB = 1024
_LO_EXP = -24          # 2**-24 ms ~ 0.06 ns: below that, the first bucket
_HI_EXP = 34           # 2**34 ms ~ 200 days: above that, the last bucket
_NBUCKETS = (_HI_EXP - _LO_EXP) * _SUB
#: (end, latency) points kept per op for point charts (thinned evenly beyond).
POINTS = 40_000
#: A second's percentiles are computed once every journal has been read this far past it.
SLACK_S = 30
_NS = 1_000_000_000
_NO_OP = "(no op)"
#: verdict indexes: the outcomes, ``expected`` (a provoked code that came back), anything else
_VERDICTS = ("ok", "fail", "info", "expected", "other")
_V_OK, _V_FAIL, _V_INFO, _V_EXPECTED, _V_OTHER = range(5)
_CONDITION_RE = re.compile(r"^(?:connection lost \()?(?:error:)?([a-z]+(?:-[a-z]+)+)\)?$")
_MAX_DETAILS = 20_000  # distinct detail texts whose condition is remembered


class Sketch:
    """Nearest-rank quantiles of a stream of non-negative-ish floats (ms), in bounded memory.

    Exact (every value kept) up to :data:`EXACT_VALUES` values; then a fixed log histogram
    (1024 buckets per octave) plus exact min, max and the count of values <= 0."""

    __slots__ = ("n", "_chunks", "_hist", "_low", "min", "max")

    def __init__(self) -> None:
        self.n = 0
        self._chunks: list[np.ndarray] | None = []
        self._hist: np.ndarray | None = None
        self._low = 0  # values <= 0 (or below the first bucket) in histogram mode
        self.min = math.inf
        self.max = -math.inf

    @property
    def exact(self) -> bool:
        return self._chunks is not None

    def add(self, values: np.ndarray) -> None:
        values = values[~np.isnan(values)]
        if not len(values):
            return
        self.n += len(values)
        self.min = min(self.min, float(values.min()))
        self.max = max(self.max, float(values.max()))
        if self._chunks is not None:
            self._chunks.append(values.astype("float64", copy=True))
            if self.n > EXACT_VALUES:
                allv = np.concatenate(self._chunks)
                self._chunks = None
                self._hist = np.zeros(_NBUCKETS, dtype="int64")
                self._bin(allv)
            return
        self._bin(values)

    def _bin(self, values: np.ndarray) -> None:
        pos = values > 0
        self._low += int((~pos).sum())
        v = values[pos]
        if not len(v):
            return
        # bucket k holds (2**((k-1)/SUB), 2**(k/SUB)] (relative to 2**LO): upper edges are exact powers
        k = np.ceil((np.log2(v) - _LO_EXP) * _SUB).astype("int64")
        np.clip(k, 0, _NBUCKETS - 1, out=k)
        self._hist += np.bincount(k, minlength=_NBUCKETS)  # type: ignore[operator]

    def values(self) -> np.ndarray:
        """Every value, sorted (exact mode only)."""
        if self._chunks is None:
            raise ValueError("sketch is a histogram")
        if len(self._chunks) != 1:
            self._chunks = [np.concatenate(self._chunks)] if self._chunks else [np.empty(0)]
        v = self._chunks[0]
        v.sort()
        return v

    def weighted(self) -> tuple[np.ndarray, np.ndarray]:
        """(values, how many of each): every value once (exact mode), or each non-empty bucket's
        upper edge (clipped to min..max; the values <= 0 at min) and its count: what a histogram
        of the values needs, in memory for the buckets."""
        if self._chunks is not None:
            v = self.values()
            return v, np.ones(len(v), dtype=np.int64)
        k = np.flatnonzero(self._hist)
        v = np.clip(2.0 ** (k / _SUB + _LO_EXP), self.min, self.max)
        c = self._hist[k]
        if self._low:
            v, c = np.r_[self.min, v], np.r_[self._low, c]
        return v, c

    def quantiles(self, qs: Sequence[float]) -> list[float]:
        """Nearest-rank quantiles (NaN when empty): the ceil(q*n)-th smallest value."""
        if self.n == 0:
            return [math.nan] * len(qs)
        ranks = [max(int(math.ceil(q * self.n - 1e-9)), 1) for q in qs]
        if self._chunks is not None:
            v = self.values()
            return [float(v[r - 1]) for r in ranks]
        cum = np.cumsum(self._hist)
        out = []
        for r in ranks:
            if r <= self._low:
                out.append(self.min)
                continue
            k = int(np.searchsorted(cum, r - self._low))
            edge = 2.0 ** (k / _SUB + _LO_EXP)
            out.append(float(min(max(edge, self.min), self.max)))
        return out

    def cdf(self, max_points: int) -> tuple[np.ndarray, np.ndarray]:
        """(x ms, fraction) points of the empirical CDF, about ``max_points`` of them, tails kept
        (as ``aggregate._cdf_points``; from the histogram: bucket upper edges)."""
        from harness.results.report.aggregate import cdf_ranks

        n = self.n
        ranks = cdf_ranks(n, max_points)
        if self._chunks is not None:
            return self.values()[ranks - 1], ranks / n
        return np.asarray(self.quantiles([r / n for r in ranks])), ranks / n


class _Points:
    """An evenly thinned sample of (end ns, value) pairs in arrival order: all of them up to
    ``cap``; beyond, every 2nd, 4th, ... (the stride doubles each time the buffer fills)."""

    __slots__ = ("cap", "stride", "seen", "t", "v")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.stride = 1
        self.seen = 0
        self.t: list[np.ndarray] = []
        self.v: list[np.ndarray] = []

    def add(self, t: np.ndarray, v: np.ndarray) -> None:
        if not len(t):
            return
        first = (-self.seen) % self.stride
        self.seen += len(t)
        # copies, not views: a strided view keeps its whole block alive (at stride 2^k the
        # sample held 2^k times its own size: 43 MiB traced at 10^7 rows; the 10^8 peak fell
        # from 2,197 to 1,549 MiB with the copies)
        self.t.append(t[first::self.stride].copy())
        self.v.append(v[first::self.stride].copy())
        if sum(len(x) for x in self.t) > self.cap:
            tt, vv = np.concatenate(self.t), np.concatenate(self.v)
            self.t, self.v = [tt[::2].copy()], [vv[::2].copy()]
            self.stride *= 2

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.t:
            return np.empty(0, dtype="int64"), np.empty(0)
        return np.concatenate(self.t), np.concatenate(self.v)


def _codes(arr: pa.ChunkedArray | pa.Array, names: list[str], index: dict[str, int],
           null: str | None) -> np.ndarray:
    """A string column as int indexes into the growing ``names`` list (nulls -> ``null``'s
    index, or -1 when ``null`` is None)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    enc = pc.dictionary_encode(arr)
    local = enc.dictionary.to_pylist()
    remap = np.empty(len(local) + 1, dtype="int64")
    for i, name in enumerate(local):
        j = index.get(name)
        if j is None:
            j = index[name] = len(names)
            names.append(name)
        remap[i] = j
    if null is None:
        remap[-1] = -1
    else:
        j = index.get(null)
        if j is None:
            j = index[null] = len(names)
            names.append(null)
        remap[-1] = j
    idx = enc.indices.fill_null(len(local)).to_numpy(zero_copy_only=False).astype("int64")
    return remap[idx]


def _add_counts(acc: dict, keys: np.ndarray) -> None:
    if not len(keys):
        return
    uniq, cnt = np.unique(keys, return_counts=True)
    get = acc.get
    for k, c in zip(uniq.tolist(), cnt.tolist()):
        acc[k] = get(k, 0) + c



#: Chunks a column store merges into one (a block's few hundred events are a chunk of their own
#: until then: an Arrow array per block would cost more in headers than in values).
_MERGE_CHUNKS = 64


def _one_chunk(a: Any) -> pa.Array:
    return a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a


class _Chunks:
    """Append-only columns of one kind of event: numpy and Arrow chunks, no Python object per
    value. ``add`` takes one chunk per column; every :data:`_MERGE_CHUNKS` chunks since the last
    merge become one (chunks already merged stay as they are: no array ever holds a whole run's
    strings, so 32-bit string offsets cannot overflow)."""

    __slots__ = ("cols", "n", "_since")

    def __init__(self, names: Sequence[str]) -> None:
        self.cols: dict[str, list] = {k: [] for k in names}
        self.n = 0
        self._since = 0

    def add(self, **chunks: Any) -> None:
        lens = {len(v) for v in chunks.values()}
        if lens == {0}:
            return
        for k, v in chunks.items():
            self.cols[k].append(v)
        self.n += lens.pop()
        self._since += 1
        if self._since >= _MERGE_CHUNKS:
            self._merge()

    def _merge(self) -> None:
        k = self._since
        for lst in self.cols.values():
            tail = lst[-k:]
            del lst[-k:]
            lst.append(np.concatenate(tail) if isinstance(tail[0], np.ndarray) else pa.concat_arrays(tail))
        self._since = 0

    def numpy(self, name: str, dtype: str) -> np.ndarray:
        lst = self.cols[name]
        return np.concatenate(lst) if lst else np.zeros(0, dtype=dtype)

    def arrow(self, name: str) -> pa.ChunkedArray:
        """A string column."""
        return pa.chunked_array(self.cols[name], type=pa.string())

    def __len__(self) -> int:
        return self.n


def _nan(value: Any) -> float:
    from harness.results.report.aggregate import _num

    v = _num(value)
    return math.nan if v is None else v


class _Races:
    """The facts the report draws from the ``race`` rows, folded as they come: the number of
    races per (survivors, devices, outcome, policy) (a handful of keys however long the run)
    and sketches of their ``settle_ms`` (top level) and ``data.settle_ms`` values. Nothing is
    kept per race: a race costs a dict increment, and 10^8 journal rows hold as little as 10^3."""

    __slots__ = ("counts", "n", "_settle", "_data_settle", "_pending")

    def __init__(self) -> None:
        self.counts: dict[tuple[int, int, str, str], int] = {}
        self.n = 0  # every race row, with or without a survivors list
        self._settle = Sketch()
        self._data_settle = Sketch()
        self._pending: tuple[list[float], list[float]] = ([], [])  # settle values not yet in the sketches

    def append(self, survivors: int | None, devices: int, outcome: str, policy: str, settle: Any,
               data_settle: Any) -> None:
        self.n += 1
        if survivors is not None:
            key = (survivors, devices, outcome, policy)
            self.counts[key] = self.counts.get(key, 0) + 1
        p = self._pending
        p[0].append(_nan(settle))
        p[1].append(_nan(data_settle))
        if len(p[0]) >= _RACE_BATCH:
            self._seal()

    def _seal(self) -> None:
        p = self._pending
        if p[0]:
            self._settle.add(np.array(p[0], dtype=np.float64))  # (NaN, "no such value", is dropped)
            self._data_settle.add(np.array(p[1], dtype=np.float64))
            self._pending = ([], [])

    @property
    def settle(self) -> Sketch:
        self._seal()
        return self._settle

    @property
    def data_settle(self) -> Sketch:
        self._seal()
        return self._data_settle

    def __len__(self) -> int:
        return self.n

    @staticmethod
    def median(sk: Sketch) -> float | None:
        """np.median of the values while the sketch holds them all; beyond, its nearest-rank
        median (within 0.07 %)."""
        if not sk.n:
            return None
        return float(np.median(sk.values())) if sk.exact else sk.quantiles([0.5])[0]


#: Races whose settle values are buffered as Python floats before they join the sketches.
_RACE_BATCH = 4096


#: Kicks a spooled :class:`_Kicks` holds in memory before it writes them to its partitions.
_KICK_SPOOL = 1 << 16
#: log2 of the bits in a spool's filter of kicker sessions (2**27 bits: 16 MiB; with 5 million
#: kickers, 3.5 % of the other sessions pass it and cost a row on disk, nothing more).
_KICK_BITS = 27


class KickSpool:
    """The kicks of a run too big for memory, on disk, and the login send times they join.

    A big run (one whose checks index is spilled: :mod:`harness.results.checks.spill`) has
    millions of ``kicked_offline`` rows; kept in memory until the report they were the digest's
    one store that grew with the run. Here they go to ``parts`` Arrow IPC files by the Python
    ``hash`` of their ``by`` session, :data:`_KICK_SPOOL` at a time, and each ``by`` hash sets a
    bit of a fixed filter. While the checks' user parts are judged, every session a login made
    whose ID passes the filter is written, with its login's send time, to the logins file of the
    same partition (:meth:`add_logins`). Each partition is then joined on its own
    (:meth:`Digest.kick_delay_parts`): a kick and the login it names share a partition, so the
    result is the join of the whole run, in memory for one partition at a time.

    The files live in a temporary folder of their own (inside the run folder when it is
    writable), removed by :meth:`close` or when the spool is dropped."""

    def __init__(self, parts: int, folder: str | None = None) -> None:
        import shutil
        import tempfile
        import weakref

        self.parts = parts
        self.dir = tempfile.mkdtemp(prefix=".report-kicks-", dir=folder)
        self._gone = weakref.finalize(self, shutil.rmtree, self.dir, True)
        self.bits = np.zeros(1 << (_KICK_BITS - 3), dtype=np.uint8)
        self.n = 0
        self._buf = _Chunks(("start", "by", "detail", "hash"))
        self.sealed = False
        self.logins_done = False

    # -- writing
    def add(self, start: np.ndarray, by: pa.Array, detail: pa.Array, hashes: np.ndarray) -> None:
        if self.sealed:
            raise RuntimeError("kicks added to a sealed spool")
        slot = hashes & ((1 << _KICK_BITS) - 1)
        np.bitwise_or.at(self.bits, slot >> 3, (1 << (slot & 7)).astype(np.uint8))
        self._buf.add(start=start, by=by, detail=detail, hash=hashes)
        self.n += len(start)
        if len(self._buf) >= _KICK_SPOOL:
            self._flush()

    def _write(self, kind: str, table: pa.Table, q: np.ndarray) -> None:
        """Append each partition's rows to its file as one length-prefixed Arrow IPC stream
        (a file is opened only to append: no handle is held between writes)."""
        order = np.argsort(q, kind="stable")
        cuts = np.searchsorted(q[order], np.arange(self.parts + 1)).tolist()
        table = table.take(pa.array(order))
        for p in range(self.parts):
            if cuts[p + 1] > cuts[p]:
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, table.schema) as w:
                    w.write_table(table.slice(cuts[p], cuts[p + 1] - cuts[p]))
                data = sink.getvalue()
                with open(self._path(kind, p), "ab") as fh:
                    fh.write(len(data).to_bytes(8, "little"))
                    fh.write(data)

    def _flush(self) -> None:
        b = self._buf
        if not len(b):
            return
        table = pa.table({"start": b.numpy("start", "int64"), "by": b.arrow("by").combine_chunks(),
                          "detail": b.arrow("detail").combine_chunks()})
        self._write("kicks", table, b.numpy("hash", "int64") % self.parts)
        self._buf = _Chunks(("start", "by", "detail", "hash"))

    def seal(self) -> None:
        """Every kick is in: write what is buffered (idempotent)."""
        if not self.sealed:
            self._flush()
            self.sealed = True

    def add_logins(self, ids: Sequence[str], sent: Sequence[int]) -> None:
        """Sessions made by a login and the send times of those logins, in the order the checks
        see them (a session given twice keeps its last time). Only the IDs that pass the filter
        of the kicks' ``by`` hashes are written (a false positive costs a row, nothing more)."""
        if not len(ids):
            return
        h = np.fromiter(map(hash, ids), dtype=np.int64, count=len(ids))
        slot = h & ((1 << _KICK_BITS) - 1)
        keep = np.flatnonzero((self.bits[slot >> 3] >> (slot & 7).astype(np.uint8)) & 1)
        if not len(keep):
            return
        table = pa.table({"sid": pa.array([ids[i] for i in keep.tolist()], type=pa.string()),
                          "sent": np.asarray(sent, dtype=np.int64)[keep]})
        self._write("logins", table, h[keep] % self.parts)

    def finish_logins(self) -> None:
        self.seal()
        self.logins_done = True

    # -- reading
    def _path(self, kind: str, p: int) -> str:
        import os

        return os.path.join(self.dir, f"{kind}-{p}.arrow")

    def _read(self, kind: str, p: int) -> pa.Table | None:
        import os

        path = self._path(kind, p)
        if not os.path.exists(path):
            return None
        tables = []
        with open(path, "rb") as fh:
            while True:
                head = fh.read(8)
                if len(head) < 8:
                    break
                with pa.ipc.open_stream(pa.py_buffer(fh.read(int.from_bytes(head, "little")))) as r:
                    tables.append(r.read_all())
        return pa.concat_tables(tables) if tables else None

    def partition(self, p: int) -> tuple[pa.Table | None, tuple[pa.Array, np.ndarray]]:
        """(kicks, (session IDs, login send times)) of partition ``p`` (see kick_login_pairs)."""
        if not self.logins_done:
            raise RuntimeError("the spool's logins are not all in")
        if not self._gone.alive:
            raise RuntimeError("the spool is closed: its kicks are gone")
        kicks = self._read("kicks", p)
        logins = self._read("logins", p) if kicks is not None else None
        if logins is None or not logins.num_rows:
            return kicks, kick_login_pairs((), ())
        return kicks, kick_login_pairs([logins["sid"].combine_chunks()], [logins["sent"].to_numpy()])

    def close(self) -> None:
        self._gone()


class _Kicks:
    """(start ns, by session, detail) of every ``kicked_offline`` row with a ``by``, as columns
    (numpy and Arrow chunks: ~32 bytes a kick); in a big run, in a :class:`KickSpool` on disk
    with the Python ``hash`` of each ``by`` (its partition and filter bit)."""

    __slots__ = ("store", "spool")

    def __init__(self) -> None:
        self.store = _Chunks(("start", "by", "detail"))
        self.spool: KickSpool | None = None

    def spool_to(self, parts: int, folder: str | None) -> KickSpool:
        """Send every kick from now on to a :class:`KickSpool` of ``parts`` partitions."""
        self.spool = KickSpool(parts, folder)
        return self.spool

    def extend(self, start: np.ndarray, by: pa.Array, detail: pa.Array | None) -> None:
        by = by.cast(pa.string())
        detail = pa.nulls(len(by), pa.string()) if detail is None else detail.cast(pa.string())
        if self.spool is not None:
            hashes = np.fromiter(map(hash, by.to_pylist()), dtype=np.int64, count=len(by))
            self.spool.add(np.asarray(start, dtype=np.int64), by, detail, hashes)
            return
        self.store.add(start=np.asarray(start, dtype=np.int64), by=by, detail=detail)

    def __len__(self) -> int:
        return len(self.store) + (self.spool.n if self.spool is not None else 0)

    def start(self) -> np.ndarray:
        return self.store.numpy("start", "int64")

    def by(self) -> pa.ChunkedArray:
        return self.store.arrow("by")

    def detail(self) -> pa.ChunkedArray:
        return self.store.arrow("detail")

    def by_values(self) -> Iterator[str]:
        """Every kick's ``by``, one chunk at a time (for a small in-memory run)."""
        for chunk in self.store.cols["by"]:
            yield from chunk.to_pylist()


def kick_login_pairs(ids: Sequence[pa.Array], sent: Sequence[np.ndarray]) -> tuple[pa.Array, np.ndarray]:
    """(session IDs, login send times) for :attr:`Digest.kick_login` from chunks gathered in
    order; a session given twice keeps its last time (as a dict filled in that order would)."""
    if not ids:
        return pa.array([], type=pa.string()), np.zeros(0, dtype=np.int64)
    a = pa.concat_arrays([x.cast(pa.string()) for x in ids])
    t = np.concatenate(sent).astype(np.int64)
    rev = pa.array(np.arange(len(a) - 1, -1, -1))
    return a.take(rev), t[::-1].copy()  # index_in finds the first of equal values: the last given


class Digest:
    """The streaming fold of a run's journal (see the module docstring)."""

    def __init__(self) -> None:
        self.rows = 0
        self.bad_lines = 0
        self.files = 0
        self.late_rows = 0
        self.ops: list[str] = []
        self._op_index: dict[str, int] = {}
        self.scenarios: list[str] = []
        self._scen_index: dict[str, int] = {}
        self.first_ns: int | None = None     # min(intended, start)
        self.last_ns: int | None = None      # max(end)
        self.expected_rows = 0
        self.unexpected_rows = 0
        self._counts: dict[int, int] = {}    # (op, verdict, code index) -> rows
        self._code_list: list[int] = []
        self._code_index: dict[int, int] = {}
        self._cond: dict[tuple[int, int, str], int] = {}  # (code, verdict*2+fault, condition) -> rows (code != 0)
        self._cond_total: dict[tuple[int, int], int] = {}  # (code, verdict*2+fault) -> rows (code != 0)
        self._detail_cond: dict[str, str | None] = {}
        self.latency: dict[int, Sketch] = {}
        self.service: dict[int, Sketch] = {}
        self.lag = Sketch()                  # start - intended, ms, every row
        self.points: dict[int, _Points] = {}
        self._sec_counts: dict[int, int] = {}          # sec << 23 | op << 3 | verdict -> rows
        self._open: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}  # sec -> [(op, latency ms)]
        self._closed_through: int | None = None         # seconds <= this are final
        self._sec_quant: dict[tuple[int, int], tuple[float, float, float]] = {}
        self._err_ps: dict[int, int] = {}               # ((sec * 2 + expected) * ncode_slots + code idx)
        self._conn_open: dict[int, int] = {}            # sec -> connect rows starting then
        self._conn_close: dict[int, int] = {}           # sec -> disconnect rows ending then
        self.faults: list[tuple[int, int, str]] = []
        self.races = _Races()
        self.kicks = _Kicks()  # (start, by, detail) of kicked_offline rows with by
        #: (by sessions, start of their ok login rows), set by the scan of a run in memory (see
        #: kick_login_pairs); a spilled run's are in the kick spool
        self.kick_login: tuple[pa.Array, np.ndarray] = kick_login_pairs((), ())
        self.kick_login_from: Any = None  # a spilled run's checks index, which writes them to the spool
        self._kick_sketch: Sketch | None = None

    # ------------------------------------------------------------------ feeding
    def _code_idx(self, codes: np.ndarray) -> np.ndarray:
        uniq, inv = np.unique(codes, return_inverse=True)
        remap = np.empty(len(uniq), dtype="int64")
        for i, c in enumerate(uniq.tolist()):
            j = self._code_index.get(c)
            if j is None:
                j = self._code_index[c] = len(self._code_list)
                self._code_list.append(c)
            remap[i] = j
        return remap[inv]

    def feed(self, table: pa.Table) -> None:
        """Fold one block of rows (columns of JOURNAL_COLUMNS; intended/start/end/code filled,
        rows without times already dropped)."""
        n = table.num_rows
        if not n:
            return
        self.rows += n
        names = table.column_names
        op = _codes(table["op"], self.ops, self._op_index, _NO_OP)
        if len(self.ops) >= 1 << 20 or len(self._code_list) >= 1 << 24:
            raise ValueError("more than 2**20 distinct ops or 2**24 distinct codes: not a journal")
        intended = table["intended"].to_numpy()
        start = table["start"].to_numpy()
        end = table["end"].to_numpy()
        code = table["code"].to_numpy()
        first = int(min(intended.min(), start.min()))
        last = int(end.max())
        self.first_ns = first if self.first_ns is None else min(self.first_ns, first)
        self.last_ns = last if self.last_ns is None else max(self.last_ns, last)
        outcome = table["outcome"]
        verdict = np.full(n, _V_OTHER, dtype="int64")
        for i, name in enumerate(("ok", "fail", "info")):
            verdict[pc.fill_null(pc.equal(outcome, name), False).to_numpy(zero_copy_only=False)] = i
        if "expect" in names and table["expect"].null_count < n:
            exp = table["expect"].to_numpy(zero_copy_only=False)
            has = ~np.isnan(exp.astype("float64"))
            match = has & (code.astype("float64") == exp)
            verdict[match] = _V_EXPECTED
            verdict[has & ~match] = _V_FAIL
            self.expected_rows += int(match.sum())
            self.unexpected_rows += int((has & ~match).sum())
        cidx = self._code_idx(code)
        _add_counts(self._counts, ((op * 8 + verdict) << 40) + cidx)
        if "scenario" in names:
            _codes(table["scenario"], self.scenarios, self._scen_index, None)
        if "detail" in names:
            self._conditions(code, cidx, verdict * 2 + (op == self._op_index.get("fault", -1)), table["detail"])
        lat = (end - intended) / 1e6
        svc = (end - start) / 1e6
        self.lag.add((start - intended) / 1e6)
        ok = verdict == _V_OK
        ok_ops = op[ok]
        if ok.any():
            for o in np.unique(ok_ops).tolist():
                sel = ok_ops == o
                self.latency.setdefault(o, Sketch()).add(lat[ok][sel])
                self.service.setdefault(o, Sketch()).add(svc[ok][sel])
                self.points.setdefault(o, _Points(POINTS)).add(end[ok][sel], lat[ok][sel])
        sec = end // _NS
        _add_counts(self._sec_counts, (sec << 23) + op * 8 + verdict)
        self._buffer_seconds(sec[ok], ok_ops, lat[ok])
        fault = self._op_index.get("fault", -1)
        err = ((verdict == _V_FAIL) | (verdict == _V_INFO) | (verdict == _V_EXPECTED)) & (op != fault)
        if err.any():
            _add_counts(self._err_ps, ((sec[err] * 2 + (verdict[err] == _V_EXPECTED)) << 24) + cidx[err])
        for opname, store, t in (("connect", self._conn_open, start), ("disconnect", self._conn_close, end)):
            j = self._op_index.get(opname)
            if j is not None:
                sel = op == j
                if sel.any():
                    _add_counts(store, t[sel] // _NS)
        if fault >= 0 and (op == fault).any():
            sel = np.flatnonzero(op == fault)
            det = table["detail"].take(pa.array(sel)).to_pylist() if "detail" in names else [None] * len(sel)
            for i, d in zip(sel.tolist(), det):
                self.faults.append((int(start[i]), int(end[i]), d if isinstance(d, str) and d else "fault"))
        kick = self._op_index.get("kicked_offline")
        if kick is not None and "by" in names:
            sel = np.flatnonzero((op == kick) & table["by"].is_valid().to_numpy(zero_copy_only=False))
            if len(sel):
                idx = pa.array(sel)
                by = _one_chunk(table["by"].take(idx))
                det = _one_chunk(table["detail"].take(idx)) if "detail" in names else None
                self.kicks.extend(start[sel], by, det)

    def _conditions(self, code: np.ndarray, cidx: np.ndarray, group: np.ndarray, detail: Any) -> None:
        nz = code != 0
        if not nz.any():
            return
        sel = np.flatnonzero(nz)
        key = (cidx[sel] << 4) + group[sel]  # code index, verdict*2 + is_fault
        codes = self._code_list
        for k, cnt in zip(*np.unique(key, return_counts=True)):
            kk = (codes[int(k) >> 4], int(k) & 15)
            self._cond_total[kk] = self._cond_total.get(kk, 0) + int(cnt)
        det = detail.take(pa.array(sel))
        enc = pc.dictionary_encode(det.combine_chunks() if isinstance(det, pa.ChunkedArray) else det)
        local = enc.dictionary.to_pylist()
        idx = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False)
        for j, d in enumerate(local):
            c = self._detail_cond.get(d, False)
            if c is False:
                m = _CONDITION_RE.match(str(d))
                c = m.group(1) if m else None
                if len(self._detail_cond) < _MAX_DETAILS:
                    self._detail_cond[d] = c
            if c is None:
                continue
            hit = idx == j
            for k, cnt in zip(*np.unique(key[hit], return_counts=True)):
                kk = (codes[int(k) >> 4], int(k) & 15, c)
                self._cond[kk] = self._cond.get(kk, 0) + int(cnt)

    def _buffer_seconds(self, sec: np.ndarray, ops: np.ndarray, lat: np.ndarray) -> None:
        if not len(sec):
            return
        closed = self._closed_through
        if closed is not None:
            late = sec <= closed
            if late.any():
                self.late_rows += int(late.sum())
                keep = ~late
                sec, ops, lat = sec[keep], ops[keep], lat[keep]
                if not len(sec):
                    return
        order = np.argsort(sec, kind="stable")
        sec, ops, lat = sec[order], ops[order], lat[order]
        cuts = np.flatnonzero(np.r_[True, sec[1:] != sec[:-1], True])
        for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
            self._open.setdefault(int(sec[a]), []).append((ops[a:b], lat[a:b]))

    def add_race(self, row: Mapping[str, Any]) -> None:
        """A full ``race`` row (nested data kept): the compact facts the charts use."""
        data = row.get("data")
        data = data if isinstance(data, Mapping) else {}
        surv = data.get("survivors")
        devices = data.get("devices")
        self.races.append(len(surv) if isinstance(surv, list) else None,
                          len(devices) if isinstance(devices, list) else 0,
                          str(row.get("outcome") or ""), str(data.get("policy") or ""),
                          row.get("settle_ms"), data.get("settle_ms"))

    def advance(self, watermark_ns: int | None) -> None:
        """Every journal has been read up to ``watermark_ns`` (None: to its end): compute and
        drop the per-second latencies of the seconds that can no longer change."""
        if not self._open:
            return
        if watermark_ns is None:
            limit = max(self._open)
        else:
            limit = watermark_ns // _NS - SLACK_S - 1
        done = [s for s in self._open if s <= limit]
        if not done:
            return
        for s in sorted(done):
            chunks = self._open.pop(s)
            ops = np.concatenate([c[0] for c in chunks])
            lat = np.concatenate([c[1] for c in chunks])
            order = np.lexsort((lat, ops))
            g, v = ops[order], lat[order]
            starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
            counts = np.diff(np.r_[starts, len(g)])
            qs = []
            for q in (0.50, 0.95, 0.99):
                rank = np.maximum(np.ceil(q * counts - 1e-9).astype("int64"), 1)
                qs.append(v[starts + rank - 1])
            for i, o in enumerate(g[starts].tolist()):
                self._sec_quant[(s, o)] = (float(qs[0][i]), float(qs[1][i]), float(qs[2][i]))
        self._closed_through = max(limit if self._closed_through is None else max(self._closed_through, limit),
                                   max(done))

    # ------------------------------------------------------------------ results
    def origin_ns(self) -> int:
        """As ``aggregate.time_origin_ns``: the earliest intended/start, floored to a second."""
        return 0 if self.first_ns is None else (self.first_ns // _NS) * _NS

    def span_s(self) -> float:
        if self.first_ns is None or self.last_ns is None:
            return 0.0
        return max(0.0, (self.last_ns - self.first_ns) / 1e9)

    @property
    def empty(self) -> bool:
        return self.rows == 0

    def _count_items(self) -> Iterable[tuple[int, int, int, int]]:
        """(op, verdict, code, rows)."""
        for key, cnt in self._counts.items():
            ov, ci = key >> 40, key & ((1 << 40) - 1)
            o, v = divmod(ov, 8)
            yield o, v, self._code_list[ci], cnt

    def present_ops(self) -> list[str]:
        seen = {o for o, _, _, c in self._count_items() if c}
        return [self.ops[o] for o in sorted(seen)]

    def op_table(self, duration_s: float | None = None, events: frozenset[str] = frozenset()) -> pd.DataFrame:
        """``aggregate.op_summary`` of the judged rows."""
        from harness.results.report import aggregate as agg

        if self.empty:
            return agg.op_summary(pd.DataFrame(), duration_s, events)
        nops = len(self.ops)
        counts = np.zeros((nops, 5), dtype="int64")
        for o, v, _, c in self._count_items():
            counts[o, v] += c
        total = counts.sum(axis=1)
        span = self.span_s() if duration_s is None else float(duration_s)
        res: dict[str, Any] = {"count": total, "ok": counts[:, 0], "fail": counts[:, 1], "info": counts[:, 2],
                               "expected": counts[:, 3]}
        res["rate_per_s"] = total / span if span > 0 else np.full(nops, np.nan)
        qs = list(agg.PERCENTILES.values())
        for c in (*agg.PERCENTILES, "max_ms", "service_p50_ms", "service_p99_ms"):
            res[c] = np.full(nops, np.nan)
        for o, sk in self.latency.items():
            vals = sk.quantiles(qs)
            for i, c in enumerate(agg.PERCENTILES):
                res[c][o] = vals[i]
            res["max_ms"][o] = sk.max
        for o, sk in self.service.items():
            p50, p99 = sk.quantiles([0.50, 0.99])
            res["service_p50_ms"][o] = p50
            res["service_p99_ms"][o] = p99
        out = pd.DataFrame(res, index=pd.Index(self.ops, name="op", dtype="str"))
        out = out.loc[out["count"] > 0, list(agg._OP_SUMMARY_COLUMNS)]
        out = out.loc[agg.ordered_ops(out.index)]
        return agg._mark_events(out, events)

    def service_quantiles(self, qs: Mapping[str, float]) -> dict[str, dict[str, float]]:
        """op -> {key: nearest-rank service-time quantile of its ok rows}."""
        out = {}
        for o, sk in self.service.items():
            if sk.n:
                vals = sk.quantiles(list(qs.values()))
                out[self.ops[o]] = dict(zip(qs, vals))
        return out

    def _conditions_map(self, verdicts: Sequence[int] | None, skip_fault: bool, share: float = 0.8) -> dict[int, str]:
        """``aggregate.protocol_conditions`` of the same rows ``code_table`` counts."""

        def take(g: int) -> bool:
            return (verdicts is None or g // 2 in verdicts) and not (skip_fault and g % 2)

        per: dict[tuple[int, str], int] = {}
        for (code, g, cond), cnt in self._cond.items():
            if take(g):
                per[(code, cond)] = per.get((code, cond), 0) + cnt
        total: dict[int, int] = {}
        for (code, g), cnt in self._cond_total.items():
            if take(g):
                total[code] = total.get(code, 0) + cnt
        best: dict[int, tuple[int, str]] = {}
        for (code, cond), cnt in per.items():
            if code not in best or cnt > best[code][0] or (cnt == best[code][0] and cond < best[code][1]):
                best[code] = (cnt, cond)
        return {c: cond for c, (cnt, cond) in best.items() if cnt >= share * total.get(c, 0)}

    def code_table(self, verdicts: Sequence[int] | None = None, with_expected: bool = True,
                   skip_fault: bool = False) -> pd.DataFrame:
        """``aggregate.code_counts`` of the rows whose verdict is in ``verdicts`` (all rows when None)."""
        from harness.results.report.aggregate import code_name_short

        fault = self._op_index.get("fault", -1)
        cnt: dict[int, int] = {}
        exp: dict[int, int] = {}
        for o, v, c, n in self._count_items():
            if verdicts is not None and v not in verdicts:
                continue
            if skip_fault and o == fault:
                continue
            cnt[c] = cnt.get(c, 0) + n
            if v == _V_EXPECTED:
                exp[c] = exp.get(c, 0) + n
        cnt = {c: n for c, n in cnt.items() if n}
        out = pd.DataFrame({"code": np.asarray(list(cnt), dtype="int64"),
                            "count": np.asarray(list(cnt.values()), dtype="int64")})
        out = out.sort_values(["count", "code"], ascending=[False, True], kind="stable")
        conditions = self._conditions_map(verdicts, skip_fault)
        out.insert(1, "name", [code_name_short(c) + (f" ({conditions[c]})" if c in conditions else "")
                               for c in out["code"]])
        out["name"] = out["name"].astype("str")
        if with_expected:
            out["expected"] = out["code"].map(exp).fillna(0).astype("int64")
        return out.reset_index(drop=True)

    def codes_by_op(self, only: int | None = None) -> dict[str, dict[str, int]]:
        """op -> code -> rows (rows of verdict ``only`` when given), sorted."""
        acc: dict[tuple[str, int], int] = {}
        for o, v, c, n in self._count_items():
            if only is not None and v != only:
                continue
            key = (self.ops[o], c)
            acc[key] = acc.get(key, 0) + n
        out: dict[str, dict[str, int]] = {}
        for (op, code), n in sorted(acc.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            if n:
                out.setdefault(op, {})[str(int(code))] = int(n)
        return out

    def expected_table(self) -> pd.DataFrame:
        from harness.results.report import aggregate as agg

        recs: dict[tuple[str, int], int] = {}
        for o, v, c, n in self._count_items():
            if v == _V_EXPECTED and n:
                recs[(self.ops[o], c)] = recs.get((self.ops[o], c), 0) + n
        cols = {"op": pd.Series([], dtype="str"), "code": pd.Series([], dtype="int64"),
                "name": pd.Series([], dtype="str"), "count": pd.Series([], dtype="int64")}
        if not recs:
            return pd.DataFrame(cols)
        rank = {o: i for i, o in enumerate(agg.ordered_ops({k[0] for k in recs}))}
        items = sorted(recs.items(), key=lambda kv: (rank[kv[0][0]], kv[0][1]))
        return pd.DataFrame({"op": pd.Series([k[0] for k, _ in items], dtype="str"),
                             "code": pd.Series([k[1] for k, _ in items], dtype="int64"),
                             "name": pd.Series([agg.code_name_short(k[1]) for k, _ in items], dtype="str"),
                             "count": pd.Series([n for _, n in items], dtype="int64")})

    def per_second(self) -> pd.DataFrame:
        """``aggregate.per_second`` (seconds since :meth:`origin_ns`)."""
        from harness.results.report import aggregate as agg

        self.advance(None)
        cols = ["second", "unix_s", "op", "count", "ok", "fail", "info", "expected", "p50_ms", "p95_ms", "p99_ms"]
        if self.empty:
            return agg.per_second(pd.DataFrame())
        cells: dict[tuple[int, int], list[int]] = {}
        for key, cnt in self._sec_counts.items():
            s, rest = key >> 23, key & ((1 << 23) - 1)
            o, v = divmod(rest, 8)
            cell = cells.get((s, o))
            if cell is None:
                cell = cells[(s, o)] = [0, 0, 0, 0, 0]
            cell[v] += cnt
        origin_s = self.origin_ns() // _NS
        rank = {name: i for i, name in enumerate(agg.ordered_ops(self.ops))}
        keys = sorted(cells, key=lambda k: (k[0], rank[self.ops[k[1]]]))
        nan3 = (math.nan, math.nan, math.nan)
        q = [self._sec_quant.get(k, nan3) for k in keys]
        out = pd.DataFrame({
            "second": np.asarray([k[0] - origin_s for k in keys], dtype="int64"),
            "unix_s": np.asarray([k[0] for k in keys], dtype="int64"),
            "op": pd.Series([self.ops[k[1]] for k in keys], dtype="str"),
            "count": np.asarray([sum(cells[k]) for k in keys], dtype="int64"),
            "ok": np.asarray([cells[k][0] for k in keys], dtype="int64"),
            "fail": np.asarray([cells[k][1] for k in keys], dtype="int64"),
            "info": np.asarray([cells[k][2] for k in keys], dtype="int64"),
            "expected": np.asarray([cells[k][3] for k in keys], dtype="int64"),
            "p50_ms": np.asarray([x[0] for x in q], dtype="float64"),
            "p95_ms": np.asarray([x[1] for x in q], dtype="float64"),
            "p99_ms": np.asarray([x[2] for x in q], dtype="float64"),
        })
        return out[cols]

    def codes_per_second(self) -> pd.DataFrame:
        from harness.results.report.aggregate import code_name_short

        if not self._err_ps:
            return pd.DataFrame({"second": pd.Series([], dtype="int64"), "code": pd.Series([], dtype="int64"),
                                 "name": pd.Series([], dtype="str"), "expected": pd.Series([], dtype="bool"),
                                 "count": pd.Series([], dtype="int64")})
        origin_s = self.origin_ns() // _NS
        recs = []
        for key, cnt in self._err_ps.items():
            se, ci = key >> 24, key & 0xFFFFFF
            s, e = divmod(se, 2)
            recs.append((s - origin_s, self._code_list[ci], bool(e), cnt))
        recs.sort(key=lambda r: (r[0], r[1], r[2]))
        out = pd.DataFrame({"second": np.asarray([r[0] for r in recs], dtype="int64"),
                            "code": np.asarray([r[1] for r in recs], dtype="int64"),
                            "expected": np.asarray([r[2] for r in recs], dtype="bool"),
                            "count": np.asarray([r[3] for r in recs], dtype="int64")})
        out.insert(2, "name", out["code"].map({c: code_name_short(c) for c in out["code"].unique()}).astype("str"))
        return out

    def connections_per_second(self) -> pd.DataFrame:
        """Connections open per second: from each ``connect`` row's start to its connection's
        ``disconnect`` row's end (connections that never closed: to the last second)."""
        empty = pd.DataFrame({"second": pd.Series([], dtype="int64"), "connections": pd.Series([], dtype="int64")})
        if not self._conn_open:
            return empty
        origin_s = self.origin_ns() // _NS
        lo = min(self._conn_open)
        hi = max([*self._conn_open, *self._conn_close, (self.last_ns or 0) // _NS])
        diff = np.zeros(hi - lo + 2, dtype="int64")
        for s, c in self._conn_open.items():
            diff[s - lo] += c
        for s, c in self._conn_close.items():
            if s >= lo:
                diff[s - lo + 1] -= c
        open_ = np.maximum(np.cumsum(diff)[:-1], 0)
        return pd.DataFrame({"second": np.arange(lo, hi + 1, dtype="int64") - origin_s, "connections": open_})

    def fault_windows(self) -> pd.DataFrame:
        if not self.faults:
            return pd.DataFrame({"start_s": pd.Series([], dtype="float64"), "end_s": pd.Series([], dtype="float64"),
                                 "label": pd.Series([], dtype="str")})
        origin = self.origin_ns()
        faults = sorted(self.faults)
        return pd.DataFrame({"start_s": [(a - origin) / 1e9 for a, _, _ in faults],
                             "end_s": [(b - origin) / 1e9 for _, b, _ in faults],
                             "label": pd.Series([lab for _, _, lab in faults], dtype="str")})

    def timed_ops(self, events: frozenset[str]) -> list[str]:
        from harness.results.report import aggregate as agg

        skip = events | agg.MARKER_OPS
        return [o for o in agg.ordered_ops(self.present_ops()) if o not in skip and o != _NO_OP]

    def latency_cdf(self, ops: Sequence[str], max_points: int = 600) -> pd.DataFrame:
        frames = []
        for name in ops:
            o = self._op_index.get(name)
            lat = self.latency.get(o) if o is not None else None
            if lat is None or not lat.n:
                continue
            x, y = lat.cdf(max_points)
            frames.append(pd.DataFrame({"op": name, "kind": "latency", "ms": x, "fraction": y, "n": lat.n}))
            svc = self.service.get(o)
            if svc is not None and svc.n:
                x, y = svc.cdf(max_points)
                frames.append(pd.DataFrame({"op": name, "kind": "service", "ms": x, "fraction": y, "n": svc.n}))
        if not frames:
            return pd.DataFrame({"op": pd.Series([], dtype="str"), "kind": pd.Series([], dtype="str"),
                                 "ms": pd.Series([], dtype="float64"), "fraction": pd.Series([], dtype="float64"),
                                 "n": pd.Series([], dtype="int64")})
        out = pd.concat(frames, ignore_index=True)
        out["op"] = out["op"].astype("str")
        out["kind"] = out["kind"].astype("str")
        return out

    def ok_latencies(self, name: str) -> np.ndarray:
        """The ok rows' latencies (ms) of one op: all of them, or an even sample beyond POINTS."""
        o = self._op_index.get(name)
        if o is None or o not in self.points:
            return np.empty(0)
        return self.points[o].arrays()[1]

    def latency_points(self, ops: Sequence[str], max_points: int = 20_000) -> pd.DataFrame:
        from harness.results.report.aggregate import thin_points

        origin = self.origin_ns()
        frames = []
        for name in ops:
            o = self._op_index.get(name)
            if o is None or o not in self.points:
                continue
            t, lat = self.points[o].arrays()
            if not len(t):
                continue
            sec, lat = thin_points((t - origin) / 1e9, lat, max_points)
            frames.append(pd.DataFrame({"op": name, "second": sec, "latency_ms": lat}))
        if not frames:
            return pd.DataFrame({"op": pd.Series([], dtype="str"), "second": pd.Series([], dtype="float64"),
                                 "latency_ms": pd.Series([], dtype="float64")})
        out = pd.concat(frames, ignore_index=True)
        out["op"] = out["op"].astype("str")
        return out

    def scenario_names(self) -> set[str]:
        return {s for s in self.scenarios if s}

    def histogram_ops(self) -> list[str]:
        """Ops whose latency percentiles come from the histogram (more than EXACT_VALUES ok rows)."""
        return [op for op in self.present_ops()
                if self._op_index[op] in self.latency and not self.latency[self._op_index[op]].exact]

    def race_survivors(self) -> pd.DataFrame:
        """``aggregate.race_counts(aggregate.race_survivors(rows))``: races per (survivors,
        devices, outcome, policy), column ``races``."""
        from harness.results.report.aggregate import race_counts

        rows = [(*k, v) for k, v in self.races.counts.items()]
        frame = pd.DataFrame(rows, columns=["survivors", "devices", "outcome", "policy", "races"])
        return race_counts(frame.astype({"survivors": "int64", "devices": "int64", "races": "int64",
                                         "outcome": "str", "policy": "str"}))

    def race_settle_note(self) -> str | None:
        """``aggregate.race_settle_note`` of the race rows, from their sketches."""
        from harness.results.report.aggregate import settle_text

        r = self.races
        return settle_text(r.median(r.settle), r.median(r.data_settle))

    def kick_delay_parts(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``aggregate.kick_delays`` (kicks whose ``by`` session has an ok login row) as
        (reasons, delay ms) chunks: one for a run in memory, one per partition of a spooled one."""
        sp = self.kicks.spool
        if sp is None:  # kick_login was set by the scan
            k = self.kicks
            if len(k):
                yield self._kick_join(k.start(), k.by(), k.detail(), *self.kick_login)
            return
        if not sp.logins_done:
            if self.kick_login_from is not None:
                self.kick_login_from.spool_logins(sp)
                self.kick_login_from = None
            sp.finish_logins()
        for p in range(sp.parts):
            kicks, (ids, sent) = sp.partition(p)
            if kicks is not None and kicks.num_rows:
                yield self._kick_join(kicks["start"].to_numpy(), kicks["by"], kicks["detail"], ids, sent)

    @staticmethod
    def _kick_join(start: np.ndarray, by: pa.ChunkedArray, detail: pa.ChunkedArray, ids: pa.Array,
                   sent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not len(ids):
            return np.empty(0, dtype=object), np.empty(0)
        pos = pc.index_in(by, value_set=ids)
        pos = pos.combine_chunks() if isinstance(pos, pa.ChunkedArray) else pos
        pick = np.flatnonzero(pos.is_valid().to_numpy(zero_copy_only=False))
        if not len(pick):
            return np.empty(0, dtype=object), np.empty(0)
        login = sent[pos.drop_null().to_numpy()]
        det = detail.take(pa.array(pick))
        det = det.combine_chunks() if isinstance(det, pa.ChunkedArray) else det
        det = pc.if_else(pc.fill_null(pc.equal(det, ""), True), pa.scalar("kick"), det)
        enc = pc.dictionary_encode(det)
        texts = np.asarray(enc.dictionary.to_pylist(), dtype=object)  # one str per distinct reason
        return texts[enc.indices.to_numpy(zero_copy_only=False)], (start[pick] - login) / 1e6

    def kick_delays(self) -> pd.DataFrame:
        """``aggregate.kick_delays``: kicks whose ``by`` session has an ok login row (one row per
        kick: for a big run, :meth:`kick_delay_sketch` is what the report draws)."""
        parts = list(self.kick_delay_parts())
        if not parts:
            return pd.DataFrame({"reason": pd.Series([], dtype="str"), "delay_ms": pd.Series([], dtype="float64")})
        return pd.DataFrame({"reason": pd.Series(np.concatenate([r for r, _ in parts]), dtype="str"),
                             "delay_ms": np.concatenate([d for _, d in parts]).astype(np.float64)})

    def kick_delay_sketch(self) -> Sketch:
        """The kick delays (ms) of :meth:`kick_delays` in a :class:`Sketch`: every value up to
        EXACT_VALUES, a histogram beyond; memory for one partition at a time. Computed once: a
        spooled run's kick files are removed then (:meth:`kick_delays` needs them: call it first)."""
        if self._kick_sketch is None:
            sk = Sketch()
            for _, delay in self.kick_delay_parts():
                sk.add(np.asarray(delay, dtype=np.float64))
            self._kick_sketch = sk
            self.close()
        return self._kick_sketch

    def close(self) -> None:
        """Remove what the digest keeps on disk (a big run's kicks); idempotent."""
        sp = self.kicks.spool
        if sp is not None:
            sp.close()

    def lag_p99_ms(self) -> float | None:
        return None if not self.lag.n else float(self.lag.quantiles([0.99])[0])
