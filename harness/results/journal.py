"""Per-process JSONL history of finished operations (RESULTS.md §1, docs/JOURNAL.md).

``record()`` is on the request path: it assigns the gap-free sequence number ``n`` and
appends the row to an in-memory list. Rows are serialised ``CHUNK`` at a time and joined into
one bytes object at once (``_chunk``): a per-row ``orjson.dumps`` result kept until the next
flush costs ~4 us a row here (its buffer is shrunk by ``realloc`` and thousands of such
blocks stay alive: glibc's slow paths), a chunk ~1 us a row. While a listener wants the rows
themselves (the web UI's live checks) they are kept as dicts and serialised the same way at
flush. Writing happens in ``flush()``, called by one background greenlet every
``flush_interval`` seconds, and on stop, on SIGINT/SIGTERM and at interpreter exit
(``close()`` is idempotent), so rows are never lost; the bytes on disk are the same either
way (``_line`` per row).
"""
from __future__ import annotations

import atexit
import json
import os
import threading
from pathlib import Path
from typing import Any

FIELDS = ("w", "n", "scenario", "op", "user", "platform", "instance", "session",
          "intended", "start", "end", "outcome", "code", "detail")
OUTCOMES = ("ok", "fail", "info")

#: Ops that are not requests: server pushes and connection ends (start == end) and injected
#: fault windows. They are journaled like every row but never fired as Locust request events,
#: so Locust's req/s and Aggregated row, the summary's request aggregates and the error-ratio
#: gates count requests only (docs/JOURNAL.md "Kinds").
EVENT_OPS: frozenset[str] = frozenset({"kicked_offline", "sig_expired", "disconnect", "fault"})


def op_kind(op: str) -> str:
    """``"event"`` for :data:`EVENT_OPS`, else ``"request"`` (summary.json ``ops.<op>.kind``)."""
    return "event" if op in EVENT_OPS else "request"


def judged(outcome: str, code: int, expect: int | None) -> str:
    """A row's verdict: ``"expected"`` when the scenario provoked ``expect`` on purpose and
    got it (a pass, not an error); ``"fail"`` when it provoked ``expect`` and got anything
    else (whatever the outcome: an accepted stale UserSig is a failure); otherwise the
    row's ``outcome`` (``ok`` / ``fail`` / ``info``)."""
    if expect is None or isinstance(expect, bool) or not isinstance(expect, int):
        return outcome
    return "expected" if code == expect else "fail"

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode

try:  # orjson writes the same compact UTF-8 JSON ~5x faster; the stdlib encoder takes what it refuses
    from orjson import dumps as _fast_dumps
except ImportError:  # pragma: no cover - orjson is in requirements.txt
    _fast_dumps = None

#: rows serialised and joined together (record() buffers them as dicts until then; few enough
#: that the first is still in the CPU cache when the chunk is serialised)
CHUNK = 32


def _line(row: dict) -> bytes:
    """One journal line (without the newline): compact JSON, UTF-8, ``str()`` of odd values.

    orjson when it takes the row (the same bytes as the stdlib encoder for the str / int /
    None / list / dict rows the harness writes); the stdlib encoder otherwise (ints beyond 64
    bits, non-str keys). One difference: a NaN/Infinity float is ``null`` from orjson (valid
    JSON) where the stdlib writes ``NaN``."""
    if _fast_dumps is not None:
        try:
            return _fast_dumps(row, default=str)
        except TypeError:
            pass
    return _dumps(row).encode("utf-8")


def _chunk(rows: list[dict]) -> bytes:
    """The journal lines of ``rows``, joined by newlines, no newline at the end: the bytes of
    ``b"\\n".join(map(_line, rows))``. orjson per row, the lines joined at once (each row's
    bytes freed right after the join); a row orjson refuses (an int beyond 64 bits, a non-str
    key) sends the chunk through ``_line``."""
    if _fast_dumps is not None:
        try:
            return b"\n".join([_fast_dumps(row, default=str) for row in rows])
        except TypeError:
            pass
    return b"\n".join(map(_line, rows))


def _lines(rows: list[dict]) -> bytes:
    """The journal lines of ``rows``, each ending in a newline: the bytes of ``_line`` per row."""
    if not rows:
        return b""
    return b"\n".join([_chunk(rows[i:i + CHUNK]) for i in range(0, len(rows), CHUNK)]) + b"\n"


class Journal:
    """Append-only journal of one process; ``w`` is this process's worker id."""

    def __init__(self, path: str | Path, worker: str, *, flush_interval: float = 0.5) -> None:
        self.path = Path(path)
        self.worker = worker
        self.flush_interval = flush_interval
        self._n = 0
        #: rows since the last flush: chunks of lines (bytes, no newline at the end), or the row
        #: dicts themselves while a listener wants them (``_dicts``: the buffer holds one at least)
        self._buf: list[Any] = []
        self._dicts = False
        self._pend: list[dict] = []  # rows not serialised yet (fewer than CHUNK; before all of _buf's)
        self._nbuf = 0  # rows in _buf and _pend
        self._lock = threading.Lock()  # flush may run from atexit / signal context
        self._fh: Any = None
        self._greenlet: Any = None
        self._closed = False
        self.rows_written = 0
        self.late_rows = 0  # rows recorded after close(), written synchronously
        self.counts: dict[str, int] = {}
        self.stopped: dict[str, int] = {}  # op -> rows the harness's own stop cut short
        #: called with each batch of rows right after flush() wrote it (the live checks):
        #: from the flusher greenlet, never on the request path
        self.listeners: list[Any] = []

    @property
    def rows(self) -> int:
        """Rows recorded so far (written or buffered)."""
        return self._n

    def open(self) -> "Journal":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")
        atexit.register(self.close)
        return self

    def start_flusher(self) -> None:
        """Spawn the background flusher greenlet (gevent)."""
        import gevent

        def loop() -> None:
            while not self._closed:
                gevent.sleep(self.flush_interval)
                self.flush()

        self._greenlet = gevent.spawn(loop)

    def record(self, *, scenario: str, op: str, outcome: str, code: int, start: int, end: int,
               intended: int | None = None, user: str = "", platform: str = "", instance: str = "",
               session: str | None = None, detail: str = "", **extra: Any) -> int:
        """Append one row (times in unix ns); returns its ``n``. Never blocks on I/O."""
        row = {"w": self.worker, "n": 0, "scenario": scenario, "op": op, "user": user,
               "platform": platform, "instance": instance, "session": session,
               "intended": start if intended is None else intended, "start": start, "end": end,
               "outcome": outcome, "code": code, "detail": detail}
        if extra:
            for k, v in extra.items():
                if v is not None:
                    row[k] = v
        return self.add_row(row)

    def add_row(self, row: dict) -> int:
        """Append a row built by the caller: the keys of :data:`FIELDS` in that order (``w`` this
        journal's worker, ``n`` a placeholder: it is assigned here), then the extra keys with a
        value (no None); returns its ``n``. The request path's record() without keyword
        packing; never blocks on I/O."""
        n = self._n
        self._n = n + 1
        row["n"] = n
        op = row["op"]
        counts = self.counts
        counts[op] = counts.get(op, 0) + 1
        if self._closed:
            # a straggler after close (e.g. a greenlet finishing during shutdown): never lose it
            with open(self.path, "ab") as fh:
                fh.write(_line(row) + b"\n")
            self.rows_written += 1
            self.late_rows += 1
            return n
        self._nbuf += 1
        if self.listeners:
            if self._pend:
                self._seal()  # rows before this one keep their place
            self._buf.append(row)  # the listeners get the row itself; flush() serialises it
            self._dicts = True
        else:
            pend = self._pend
            pend.append(row)
            if len(pend) >= CHUNK:
                self._seal()
        return n

    def _seal(self) -> None:
        """Serialise the pending rows into one chunk of ``_buf``."""
        pend = self._pend
        if pend:
            self._pend = []
            self._buf.append(_chunk(pend))

    def emit(self, events: Any, *, request_type: str, response_time_ms: float,
             exception: BaseException | None = None, context: dict | None = None, **row: Any) -> int:
        """One finished operation = one journal row + (for requests) one Locust request event
        (``name`` = ``op``), so the journal's request rows always equal Locust's request totals.
        Events (:data:`EVENT_OPS`) are journaled only. ``row`` as for record()."""
        if row["op"] not in EVENT_OPS:
            events.request.fire(request_type=request_type, name=row["op"], response_time=response_time_ms,
                                response_length=0, exception=exception, context=context or {})
        return self.record(**row)

    def emit_row(self, events: Any, request_type: str, response_time_ms: float, exception: BaseException | None,
                 context: dict, row: dict) -> int:
        """:meth:`emit` with the row built by the caller as for :meth:`add_row`."""
        op = row["op"]
        if op not in EVENT_OPS:
            events.request.fire(request_type=request_type, name=op, response_time=response_time_ms,
                                response_length=0, exception=exception, context=context)
        return self.add_row(row)

    def flush(self) -> None:
        """Write buffered rows to disk (and fsync-free flush to the OS)."""
        if not (self._buf or self._pend) or self._fh is None:
            return
        with self._lock:
            self._seal()
            buf, self._buf = self._buf, []
            dicts, self._dicts = self._dicts, False
            nrows, self._nbuf = self._nbuf, 0
            if not buf:
                return
            if not dicts:
                self._fh.write(b"\n".join(buf) + b"\n")
            elif type(buf[0]) is dict and type(buf[-1]) is dict and all(type(r) is dict for r in buf):
                self._fh.write(_lines(buf))
            else:  # a listener came or went within this batch
                self._fh.write(b"\n".join([r if type(r) is bytes else _chunk([r]) for r in buf]) + b"\n")
            self._fh.flush()
            self.rows_written += nrows
        if not dicts:
            return
        rows = buf if type(buf[0]) is dict and all(type(r) is dict for r in buf) else \
            [r for r in buf if type(r) is dict]
        for cb in list(self.listeners):
            try:
                cb(rows)
            except Exception:  # pragma: no cover - a viewer must never lose rows
                import logging

                logging.getLogger("harness").exception("journal listener failed")

    def close(self) -> None:
        if self._fh is None:
            return
        self._closed = True
        try:
            self.flush()
        finally:
            with self._lock:
                if self._fh is not None:
                    try:
                        os.fsync(self._fh.fileno())
                    except OSError:
                        pass
                    self._fh.close()
                    self._fh = None
        g, self._greenlet = self._greenlet, None
        if g is not None:
            try:
                g.kill(block=False)
            except Exception:  # pragma: no cover - interpreter teardown
                pass


def read_journal(path: str | Path) -> list[dict]:
    """All rows of one journal file (test helper; large runs use harness.results.report.load)."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows
