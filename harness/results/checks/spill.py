"""The checks' index of a big run, kept on disk in parts, so that judging a run needs memory
for one part at a time, not for the whole run (issue 13, item 5: "flat in memory").

Why two partitionings. The checks join a session with facts of its *connection* (the next
login on it, its disconnect, its relogins; a switch's switched-from session) and with facts of
its *user* (the other sessions of that account, evictions, races, the ledger). Connections
join users (account switching puts several accounts on one connection), so there is no key
that keeps every join inside one part. The index is therefore split twice:

1. **While the journals are scanned**, after every block: the block's login / relogin / switch,
   disconnect and logout rows go to their *connection's* part, and the rows among them that
   made a session also to their *user's* part, as Arrow columns taken straight from the scan's
   table (no Python object is made for them until a part is read); kicks, expiries (and, from
   a damaged block read row by row, whatever :class:`~harness.results.checks.history.History`
   indexed) go to the connection parts as records; races and REST kicks, which are a user's,
   to the user parts. Only the run's totals stay in memory (integrity bookkeeping, ``expect``
   rows, the last time).
2. **By connection** once the scan is done: each connection part is loaded as a History of its
   own and judged by the checks that need only connections (``relogin_recovers``,
   ``switch_consistency``); then, for every session its login entries made, the connection's
   disconnect and the session's next login on it go to the session's user part, and kicks,
   expiries and logouts follow the session they name.
3. **By user**: each user part is loaded (its sessions, with those connection facts) and
   judged by the checks that need users (``kick_exactly_once``, ``policy_limit``,
   ``last_login_wins``, ``expiry_on_time``), with the ledger rows of its users.
   Each user part also writes, to the report's kick spool (``digest.KickSpool``), the sessions
   its logins made that a kick may name, with their send times (the report's kick delays).

Every check keeps one ``_Found`` across the parts, so counts, examples (the first ten of a
kind) and notes come out as one result. Totals of the whole run that no part can tell on its
own are handed to each part: the run's last time, whether login answers list evicted sessions
(``History.kicked_lists``), and the users with a login of unknown outcome
(``History.info_users``).

What a part cannot see (README.md "What a run leaves"): an eviction is joined to the evicted
session only within one user, so a server that evicts *another account's* session is judged
as if the evicted session were unknown; the ledger replay (policy_limit) goes through each
part's users in server order, so a login and its eviction ``end`` rows with another user's
row between them are not reported (a single-part run reports that as over the limit); a
session ID reused by two accounts counts as two sessions.

Parts are files of length-prefixed ``pickle`` chunks (Arrow streams inside for the columns) in
a temporary folder inside the run folder (removed when the checks are done, or when the
History is dropped), written and read sequentially.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import pickle
import os
import shutil
import tempfile
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from harness.results.checks.history import (
    RELOGIN_SCENARIO,
    _L_CODE,
    _L_END,
    _L_OP,
    _L_OUT,
    _L_SID,
    _L_START,
    _L_USER,
    _LOW_CARD,
    History,
    Ledger,
    _disc_order,
    _intern,
    _pylist,
    _Race,
    _s,
    _Sess,
    _share_int,
    _start,
    _switch_data,
    ledger_lines,
)

__all__ = ["Spill", "parts_for", "SPILL_FROM_BYTES", "PART_BYTES", "release_heap"]


def _libc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where there is none (musl, macOS, Windows)."""
    try:
        name = ctypes.util.find_library("c")
        if not name:
            return None
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_TRIM = _libc_trim()


def release_heap() -> bool:
    """Give the heap a dropped part leaves behind back to the system (glibc ``malloc_trim``).

    A part is millions of small tuples, lists and strings; when it is dropped, glibc keeps
    most of the freed arenas mapped (measured at 10^7 rows: the traced Python heap fell to
    49 MiB while RSS stayed near 700 MiB), so every part's peak stacks on the previous one's
    leftovers. Trimming before the next part is loaded returns them (10^7: peak 638 -> 588 MiB,
    CPU within noise; bench/README.md). Returns whether a trim ran (False off glibc)."""
    import sys

    pa = sys.modules.get("pyarrow")
    if pa is not None:  # Arrow's own allocator (mimalloc, jemalloc) keeps freed pages too
        pa.default_memory_pool().release_unused()
    if _TRIM is None:
        return False
    _TRIM(0)
    return True

_NOBODY = object()  # no session of that ID was made on the part's connections


def _record(*fields: Any) -> tuple:
    """A session as a record tuple (the fields of ``_Sess``, in its order)."""
    return fields

#: A run whose journals hold more than this is checked in parts (about 4-5 million rows).
SPILL_FROM_BYTES = 1 << 30
#: Journal text per part: each part's History then stays around 300 MiB.
PART_BYTES = 384 << 20
#: Write a part's buffer once it holds this many records, and every part's once they hold
#: ``_PENDING_RECORDS`` together (what the parts keep in memory does not grow with their number).
_FLUSH_RECORDS = 20_000
_PENDING_RECORDS = 150_000

#: Checks judged on connection parts, and on user parts.
CONN_CHECKS = ("relogin_recovers", "switch_consistency")
USER_CHECKS = ("kick_exactly_once", "policy_limit", "last_login_wins", "expiry_on_time")


def parts_for(journal_bytes: int) -> int:
    """How many parts a run of ``journal_bytes`` of journal text is checked in (1: in memory)."""
    if journal_bytes <= SPILL_FROM_BYTES:
        return 1
    return max(2, -(-journal_bytes // PART_BYTES))


# ---------------------------------------------------------------------- columns, not objects
# A clean block's login-ish, disconnect and logout rows (most of what the parts hold) go to the
# parts as Arrow columns, straight from the scan's table: no Python object is made for them
# until a part is read, where the same records come out as History._login and friends make them
# (tests/unit/test_spill.py compares every check with the in-memory History).
#: kinds whose records are Arrow tables: "A" (connection parts: login / relogin / switch,
#: disconnect and logout rows), "AS" (user parts: the rows that made a session), "AR" (user
#: parts: the connection rows a connection part routed to them, see Spill._route_columns)
_TABLE_KINDS = ("A", "AS", "AR")
_BULK_OPS = ("login", "relogin", "switch", "disconnect", "logout")
_BULK_COLUMNS = ["op", "w", "n", "start", "end", "outcome", "session", "user", "code", "conn", "scenario", "detail",
                 "kicked", "platform", "expire_at", "instance"]


def _arrow_bytes(tables: list) -> bytes:
    import pyarrow as pa

    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _arrow_table(data: bytes) -> Any:
    import pyarrow as pa

    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def _columns(table: Any, names: tuple[str, ...]) -> list[list]:
    return [_pylist(table[c], c in _LOW_CARD) for c in names]


def _split(table: Any, where: Any) -> Iterator[tuple[int, Any]]:
    """(part, its rows of ``table``, in table order) for every part in ``where`` (one take,
    then slices)."""
    import numpy as np
    import pyarrow as pa

    order = np.argsort(where, kind="stable")
    srt = where[order]
    table = table.take(pa.array(order))
    cuts = np.flatnonzero(srt[1:] != srt[:-1]) + 1
    begin = 0
    for end in [*cuts.tolist(), len(srt)]:
        yield int(srt[begin]), table.slice(begin, end - begin)
        begin = end


def _key(conn: Any, w: Any, user: Any) -> Any:
    """A row's connection key, as ``history._ckey``."""
    return conn if type(conn) is str and conn else ("user", str(w), str(user))


def _part_of(col: Any, n: int, fallback: Callable[[int], Any] | None = None) -> Any:
    """Part number (numpy int array) of every value of a string column, by ``hash`` of the
    value (None for a null) as the records' keys are routed; with ``fallback``, a null or empty
    value's key is ``fallback(row)`` instead."""
    import numpy as np
    import pyarrow.compute as pc

    enc = pc.dictionary_encode(col.combine_chunks() if hasattr(col, "combine_chunks") else col)
    uniq = enc.dictionary.to_pylist()
    if fallback is None:
        codes = np.fromiter((hash(u) % n for u in uniq), dtype=np.int64, count=len(uniq))
        codes = np.append(codes, hash(None) % n)
        return codes[enc.indices.fill_null(len(uniq)).to_numpy(zero_copy_only=False)]
    codes = np.fromiter((hash(u) % n if u else -1 for u in uniq), dtype=np.int64, count=len(uniq))
    codes = np.append(codes, -1)
    out = codes[enc.indices.fill_null(len(uniq)).to_numpy(zero_copy_only=False)]
    for i in np.flatnonzero(out < 0).tolist():
        out[i] = hash(fallback(i)) % n
    return out


def _session_records(table: Any, shared: dict) -> Iterator[tuple]:
    """A user part's columns of rows that made a session as session records (the fields of
    ``_Sess``, as ``History._login`` makes them)."""
    names = ("op", "session", "user", "platform", "conn", "w", "start", "end", "expire_at", "kicked", "instance")
    for op, sid, user, plat, conn, w, st, en, exp, kicked, inst in zip(*_columns(table, names)):
        if exp is not None:
            exp = _share_int(shared, exp)
        if op != "login" or kicked is None:
            kicked_t = None
        elif not kicked:
            kicked_t = ()
        else:
            kicked_t = tuple(_intern(k) for k in kicked if type(k) is str)
        yield (sid, user, plat, _key(conn, w, user), st, en, exp, kicked_t, inst, op)


def _spool_kickers(spool: Any, sessions: Mapping) -> None:
    """Give ``spool`` the login-made sessions of one user part with their send times (it keeps
    those a kick may name). A function of its own: its lists (and so the part's sessions, which they
    reference) are gone when it returns, not kept by the judge loop's locals while the next part
    is loaded (that kept ~100 MiB of a 10^7-row run's first user part alive through the stage)."""
    made = [(k, s.sent) for k, s in sessions.items() if type(k) is str and s.via == "login"]
    spool.add_logins([k for k, _ in made], [t for _, t in made])


class _Parts:
    """``n`` append-only files of pickled chunks; each chunk a dict kind -> list of records.

    pickle, not marshal: its loads is ~1.5x faster on these records (its dumps ~20 % slower),
    and loads is what the parts do most. The files are this process's own, in a folder only its
    user can open (``mkdtemp``), written and read within one run's checks."""

    def __init__(self, folder: str, prefix: str, n: int) -> None:
        self.paths = [os.path.join(folder, f"{prefix}{i}.bin") for i in range(n)]
        self.files: list[Any] = [None] * n
        self.bufs: list[dict[str, list]] = [{} for _ in range(n)]
        self.table_rows = [0] * n
        self.n = n

    def buckets(self, kind: str) -> list[list]:
        """Part i's buffer of ``kind`` records, for every i (append to them, then :meth:`settle`)."""
        out = []
        for buf in self.bufs:
            lst = buf.get(kind)
            if lst is None:
                lst = buf[kind] = []
            out.append(lst)
        return out

    def add(self, i: int, kind: str, rec: Any) -> None:
        self.bufs[i].setdefault(kind, []).append(rec)

    def add_table(self, i: int, kind: str, table: Any) -> None:
        """A block's rows of ``kind`` for part ``i`` as a pyarrow Table (written as one Arrow
        stream per chunk: no Python objects until the part is read)."""
        self.bufs[i].setdefault(kind, []).append(table)
        self.table_rows[i] += table.num_rows

    def settle(self) -> None:
        """Write every buffer that has grown to ``_FLUSH_RECORDS`` records, or all of them once
        they hold ``_PENDING_RECORDS`` together (many parts: each would fill slowly, and a
        block's columns stay in memory until every part's share of them is written)."""
        sizes = [sum(map(len, buf.values())) + rows for buf, rows in zip(self.bufs, self.table_rows)]
        every = sum(sizes) >= _PENDING_RECORDS
        for i, size in enumerate(sizes):
            if size and (every or size >= _FLUSH_RECORDS):
                self.write(i)

    def write_all(self) -> None:
        for i in range(self.n):
            self.write(i)

    def write(self, i: int) -> None:
        buf = {k: v for k, v in self.bufs[i].items() if v}
        self.bufs[i] = {}
        self.table_rows[i] = 0
        if not buf:
            return
        for kind in _TABLE_KINDS:
            if kind in buf:
                buf[kind] = [_arrow_bytes(buf[kind])]
        fh = self.files[i]
        if fh is None:
            fh = self.files[i] = open(self.paths[i], "ab")
        data = pickle.dumps(buf, pickle.HIGHEST_PROTOCOL)
        fh.write(len(data).to_bytes(8, "little"))
        fh.write(data)

    def close(self) -> None:
        for i in range(self.n):
            self.write(i)
            if self.files[i] is not None:
                self.files[i].close()
                self.files[i] = None

    def chunks(self, i: int) -> Iterator[dict[str, list]]:
        """Part ``i``'s chunks in write order (the part must be closed)."""
        if not os.path.exists(self.paths[i]):
            return
        with open(self.paths[i], "rb") as fh:
            while True:
                head = fh.read(8)
                if len(head) < 8:
                    return
                # the whole chunk at once: loading from the file object reads it through the
                # file's Python methods, several times slower
                yield pickle.loads(fh.read(int.from_bytes(head, "little")))

    def remove(self, i: int) -> None:
        try:
            os.unlink(self.paths[i])
        except FileNotFoundError:
            pass


class Spill:
    """The on-disk parts of one run's History (see the module docstring)."""

    def __init__(self, parts: int, folder: str | Path | None = None) -> None:
        if parts < 2:
            raise ValueError("a spilled History has at least 2 parts")
        self.n = parts
        self.dir = tempfile.mkdtemp(prefix=".checks-parts-", dir=None if folder is None else str(folder))
        self.conn = _Parts(self.dir, "c", parts)
        self.user = _Parts(self.dir, "u", parts)
        self.kicked_lists = False
        #: the report's kicks on disk (digest.KickSpool), set by the scan: the user parts write
        #: the send times of the logins the kicks may name to it while they are judged
        self.kick_spool: Any = None
        self.info_users: set = set()
        self.stage = "scan"

    # ------------------------------------------------------------------ stage 1: the scan
    def attach(self, h: History) -> None:
        """Make ``h`` (the scan's History) index into these parts: its sessions are kept as
        record tuples until :meth:`flush` moves them out."""
        h.spill = self
        h._new_sess = _record

    def take_bulk(self, h: History, table: Any, nested: Mapping[int, dict]) -> None:
        """(The scan, a clean block: ``History.feed_table``.) The block's login / relogin /
        switch, disconnect and logout rows, as columns: all of them to their connections' parts,
        the rows that made a session also to their users' parts. ``h`` indexes none of them."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        op = table["op"]
        idx = pc.indices_nonzero(pc.fill_null(pc.is_in(op, value_set=pa.array(_BULK_OPS)), False))
        if not len(idx):
            return
        sub = table.select(_BULK_COLUMNS).take(idx)
        op = sub["op"]
        is_switch = pc.fill_null(pc.equal(op, "switch"), False)
        data: list = [None] * sub.num_rows
        if pc.any(is_switch).as_py():
            rows = idx.to_numpy()
            for k in np.flatnonzero(is_switch.to_numpy(zero_copy_only=False)).tolist():
                row = nested.get(int(rows[k]))
                data[k] = pickle.dumps(_switch_data(row.get("data") if row is not None else None))
        sub = sub.append_column("switch_data", pa.array(data, type=pa.binary()))
        n = self.n
        w, user = sub["w"], sub["user"]
        where = _part_of(sub["conn"], n, lambda i: _key(None, w[i].as_py(), user[i].as_py()))
        for p, part in _split(sub, where):
            self.conn.add_table(p, "A", part)
        sid, out = sub["session"], sub["outcome"]
        made = pc.and_kleene(pc.is_in(op, value_set=pa.array(("login", "relogin", "switch"))),
                             pc.and_kleene(pc.is_valid(sid), pc.not_equal(sid, "")))
        made = pc.and_kleene(made, pc.or_kleene(pc.equal(out, "ok"), pc.and_kleene(
            is_switch, pc.and_kleene(pc.equal(out, "fail"), pc.equal(sub["code"], 0)))))
        made = pc.fill_null(made, False)
        if not pc.any(made).as_py():
            return
        sess = sub.filter(made)
        if not self.kicked_lists and pc.any(pc.fill_null(pc.and_kleene(
                pc.equal(sess["op"], "login"), pc.is_valid(sess["kicked"])), False)).as_py():
            self.kicked_lists = True
        where = _part_of(sess["user"], n)
        for q, part in _split(sess, where):
            self.user.add_table(q, "AS", part)
        self.conn.settle()
        self.user.settle()

    def flush(self, h: History) -> None:
        """Move what ``h`` indexed so far to the parts and empty its indexes."""
        n = self.n
        # Rows a block could not give as columns (journal damage: History.feed row by row) were
        # indexed by h: their records go in chunks of their own, after everything before them
        # and before anything after, so every part reads its rows in the journal's order.
        rows_path = bool(h.conn_logins or h.conn_disc or h.sessions or h.logouts or h.switches)
        if rows_path:
            self.conn.write_all()
            self.user.write_all()
        b = self.conn.buckets("L")
        for key, lst in h.conn_logins.items():
            b[hash(key) % n].append((key, lst))
        b = self.conn.buckets("D")
        for key, d in h.conn_disc.items():
            b[hash(key) % n].append((key, d))
        kl = self.kicked_lists
        b = self.user.buckets("S")  # straight to their users' parts: see _route
        for t in h.sessions.values():  # record tuples (see attach)
            if t[7] is not None:
                kl = True
            b[hash(t[1]) % n].append(t)
        self.kicked_lists = kl
        b = self.conn.buckets("K")
        for sid, lst in h.kicks.items():
            for k in lst:
                b[hash(k[3]) % n].append((sid, k))
        b = self.conn.buckets("E")
        for e in h.expiry_rows:
            b[hash(e[2]) % n].append(e)
        b = self.conn.buckets("O")
        for sid, lo in h.logouts.items():
            b[hash(lo[2]) % n].append((sid, lo))
        b = self.conn.buckets("W")
        for sw in h.switches:
            b[hash(sw[9]) % n].append(sw)
        b = self.user.buckets("R")
        for r in h.races:
            b[hash(r.user) % n].append((r.w, r.n, r.user, r.race, r.t, r.devices, r.online))
        b = self.user.buckets("Q")
        for user, starts in h.rest_kicks.items():
            b[hash(user) % n].append((user, starts))
        if rows_path:
            self.conn.write_all()
            self.user.write_all()
        else:
            self.conn.settle()
            self.user.settle()
        h.conn_logins, h.conn_disc, h.sessions, h.kicks = {}, {}, {}, {}
        h.expiries, h.expiry_rows, h.logouts, h.switches = {}, [], {}, []
        h.races, h.rest_kicks = [], {}
        h._evictions = None
        h._starts = None

    # ------------------------------------------------------------------ stage 2
    def _part(self, parts: _Parts, i: int, last_t: int) -> tuple[History, list | None]:
        """Part ``i`` of ``parts`` as a History of its own (connection parts hold no sessions,
        races or REST kicks; user parts hold sessions with their connections' facts)."""
        return self._part_of(parts.chunks(i), last_t)

    def _part_of(self, chunks: Any, last_t: int) -> tuple[History, list | None]:
        h = History()
        h.last_t = last_t
        ledger_rows: list | None = None
        logins, disc, kicks, sessions = h.conn_logins, h.conn_disc, h.kicks, h.sessions
        for chunk in chunks:
            for data in chunk.get("A", ()):
                self._fold_bulk(h, _arrow_table(data))
            for data in chunk.get("AR", ()):  # routed by _route_columns: no switch is judged here
                self._fold_bulk(h, _arrow_table(data), switches=False)
            for data in chunk.get("AS", ()):
                for t in _session_records(_arrow_table(data), h._ints):
                    sid = t[0]
                    if t[9] == "login" or sid not in sessions:
                        sessions[sid] = _Sess(*t)
            for key, lst in chunk.get("L", ()):
                got = logins.get(key)
                if got is None:
                    logins[key] = lst
                else:
                    got.extend(lst)
            for key, d in chunk.get("D", ()):
                first = disc.get(key)
                if first is None or _disc_order(d) < _disc_order(first):
                    disc[key] = d
            for t in chunk.get("S", ()):
                sid = t[0]
                if t[9] == "login" or sid not in sessions:  # a login row is the authoritative record
                    sessions[sid] = _Sess(*t)
            for sid, k in chunk.get("K", ()):
                lst = kicks.get(sid)
                if lst is None:
                    kicks[sid] = [k]
                else:
                    lst.append(k)
            for e in chunk.get("E", ()):
                h.expiries.setdefault(e[1], []).append(e[0])
                h.expiry_rows.append(e)
            for sid, lo in chunk.get("O", ()):
                if sid not in h.logouts:
                    h.logouts[sid] = lo
            h.switches.extend(chunk.get("W", ()))
            for w, nn, user, race, t, devices, online in chunk.get("R", ()):
                r = _Race.__new__(_Race)
                r.w, r.n, r.user, r.race, r.t, r.devices, r.online = w, nn, user, race, t, devices, online
                h.races.append(r)
            for user, starts in chunk.get("Q", ()):
                h.rest_kicks.setdefault(user, []).extend(starts)
            if "G" in chunk:
                if ledger_rows is None:
                    ledger_rows = []
                ledger_rows.extend(chunk["G"])
        h.kicked_lists = self.kicked_lists
        return h, ledger_rows

    @staticmethod
    def _fold_bulk(h: History, table: Any, switches: bool = True) -> None:
        """A connection part's columns of login-ish, disconnect and logout rows into ``h``, as
        ``History._login`` / ``_fold_columns`` index them (``switches``: also the switch rows
        as ``History.switches``, which only the connection checks read)."""
        names = ("op", "w", "n", "start", "end", "outcome", "session", "user", "code", "conn", "scenario", "detail",
                 "switch_data")
        logins, disc, logouts, shared = h.conn_logins, h.conn_disc, h.logouts, h._ints
        for op, w, nn, st, en, out, sid, user, code, conn, scen, det, sw in zip(*_columns(table, names)):
            key = _key(conn, w, user)
            if op == "disconnect":
                d = (en, out, det)
                first = disc.get(key)
                if first is None or _disc_order(d) < _disc_order(first):
                    disc[key] = d
                continue
            if op == "logout":
                if out == "ok" and type(sid) is str and sid not in logouts:
                    logouts[sid] = (st, en, key)
                continue
            if code is not None:
                code = _share_int(shared, code)
            entry = (st, en, op, sid, out, code, user, scen)
            lst = logins.get(key)
            if lst is None:
                logins[key] = [entry]
            else:
                lst.append(entry)
            if op == "switch" and switches:
                h.switches.append((w, nn, user, sid, en, out, code, _s(det),
                                   pickle.loads(sw) if sw is not None else None, key))

    @staticmethod
    def _made(h1: History) -> tuple[list[tuple], dict[str, Any]]:
        """The sessions one connection part's login entries made, by ``History._login``'s rule
        applied per connection (in feeding order: a login row is the authoritative record,
        else the first): [(conn, [(sid, user, done), ...])] for the connections where any
        was made, and sid -> its user (a login row's first)."""
        made: list[tuple] = []
        owner: dict[str, Any] = {}
        for key, lst in h1.conn_logins.items():
            mine: dict[str, tuple] = {}
            for e in lst:
                sid, out = e[_L_SID], e[_L_OUT]
                if type(sid) is not str or not sid:
                    continue
                if out != "ok" and not (e[_L_OP] == "switch" and out == "fail" and e[_L_CODE] == 0):
                    continue
                if e[_L_OP] == "login" or sid not in mine:
                    mine[sid] = (sid, e[_L_USER], e[_L_END])
            if mine:
                made.append((key, list(mine.values())))
                for sid, m in mine.items():
                    if sid not in owner:
                        owner[sid] = m[1]
        return made, owner

    def _conn_part(self, i: int, last_t: int, conn_checks: Mapping[str, Callable[[History], None]]) -> None:
        """Judge connection part ``i`` and route its facts to the user parts.

        A part whose rows all came as columns (every clean block) is routed on its columns
        (:meth:`_route_columns`): only the connections the connection checks read become
        Python entries. A part with rows a damaged block gave row by row goes through the
        History of the whole part and :meth:`_route` (the same facts, found entry by entry)."""
        chunks = list(self.conn.chunks(i))
        if any(v for c in chunks for k, v in c.items() if k not in ("A", "K", "E")):
            h1, _ = self._part_of(chunks, last_t)
            del chunks
            self._route(h1)  # first: which row made a session reads the feeding order (the checks sort)
            for fn in conn_checks.values():
                fn(h1)
            return
        tables = [_arrow_table(d) for c in chunks for d in c.get("A", ())]
        h1, _ = self._part_of([{k: c[k] for k in ("K", "E") if k in c} for c in chunks], last_t)
        del chunks
        if not tables:
            self._route(h1)
            for fn in conn_checks.values():
                fn(h1)
            return
        import pyarrow as pa

        table = pa.concat_tables(tables).combine_chunks()
        del tables
        self._route_columns(h1, table, conn_checks)

    def _route_columns(self, h1: History, table: Any, conn_checks: Mapping[str, Callable[[History], None]]) -> None:
        """:meth:`_route` on a connection part's columns (``table``: its login-ish, disconnect
        and logout rows in feeding order; ``h1``: its kicks and expiries). The same rules, as
        array operations: a session is made per (connection, ID) by the connection's last ok
        login row of that ID, else its first row that made one (``History._login``); its next
        login is the first entry of its connection, sorted by (start, end), whose start is not
        before the session was made and whose ID is another; the connection's first disconnect
        by (time, outcome, detail); a session ID's owner is the user of its first connection's
        session; a logout is an ID's first ok one."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        n = self.n
        rows = table.num_rows

        def col(name: str) -> Any:
            return table.column(name).combine_chunks()

        op = col("op")

        def mask(arr: Any) -> Any:
            return pc.fill_null(arr, False).to_numpy(zero_copy_only=False)

        loginish = mask(pc.is_in(op, value_set=pa.array(("login", "relogin", "switch"))))
        is_login = mask(pc.equal(op, "login"))
        # connection keys as codes (a row without a connection: ("user", w, user), as _key)
        conn = col("conn")
        enc = pc.dictionary_encode(conn)
        kc = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        keys: list = enc.dictionary.to_pylist()
        fb = np.flatnonzero(~mask(pc.and_kleene(pc.is_valid(conn), pc.not_equal(conn, ""))))
        if len(fb):
            extra: dict = {}
            fbi = pa.array(fb)
            for j, w, user in zip(fb.tolist(), col("w").take(fbi).to_pylist(), col("user").take(fbi).to_pylist()):
                key = _key(None, w, user)
                c = extra.get(key)
                if c is None:
                    c = extra[key] = len(keys)
                    keys.append(key)
                kc[j] = c
        senc_src = col("session")
        senc = pc.dictionary_encode(senc_src)
        sc = senc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        nsid = len(senc.dictionary) + 1
        start = table["start"].to_numpy()
        end = table["end"].to_numpy()
        uq = _part_of(col("user"), n)  # each row's user's part
        out = col("outcome")
        sid = senc_src
        # the rows that made a session (History._login)
        made = loginish & mask(pc.and_kleene(pc.is_valid(sid), pc.not_equal(sid, ""))) & mask(pc.or_kleene(
            pc.equal(out, "ok"), pc.and_kleene(pc.equal(op, "switch"),
                                               pc.and_kleene(pc.equal(out, "fail"), pc.equal(col("code"), 0)))))
        mr = np.flatnonzero(made)
        group = kc[mr] * nsid + sc[mr] + 1
        uniq, first_at = np.unique(group, return_index=True)
        pick = mr[first_at]  # a (connection, ID)'s first row that made it ...
        lm = mr[is_login[mr]]
        if len(lm):  # ... unless a login row made it: then its last one
            lg = kc[lm] * nsid + sc[lm] + 1
            lu, last_at = np.unique(lg[::-1], return_index=True)
            pick[np.searchsorted(uniq, lu)] = lm[::-1][last_at]
        s_kc, s_sc, s_q, s_done = kc[pick], sc[pick], uq[pick], end[pick]
        routed: list[list] = [[] for _ in range(n)]  # per user part: row numbers of the table
        # each session's next login on its connection
        ent = np.flatnonzero(loginish)
        ent = ent[np.lexsort((ent, end[ent], start[ent], kc[ent]))]
        ekc, esc = kc[ent], sc[ent]
        if len(pick):
            ranks = np.unique(np.concatenate((start[ent], s_done)), return_inverse=True)[1]
            span = int(ranks.max()) + 2
            pos = np.searchsorted(ekc * span + ranks[:len(ent)], s_kc * span + ranks[len(ent):], side="left")
            key_end = np.searchsorted(ekc, s_kc, side="right")
            cut = np.flatnonzero(np.concatenate(([True], (ekc[1:] != ekc[:-1]) | (esc[1:] != esc[:-1]))))
            run_end = np.append(cut[1:], len(ent))[np.cumsum(np.isin(np.arange(len(ent)), cut)) - 1]
            has = pos < key_end
            p = pos[has]
            p = np.where(esc[p] == s_sc[has], run_end[p], p)
            ok = p < key_end[has]
            nxt_rows, nxt_q = ent[p[ok]], s_q[has][ok]
            for q in range(n):
                routed[q].append(nxt_rows[nxt_q == q])
        # each connection's first disconnect, to the parts of its sessions' users
        dr = np.flatnonzero(mask(pc.equal(op, "disconnect")))
        if len(dr) and len(pick):
            dri = pa.array(dr)
            order = pc.sort_indices(pa.table({
                "k": kc[dr], "e": end[dr], "o": pc.fill_null(out.take(dri), ""),
                "d": pc.fill_null(col("detail").take(dri), ""), "r": dr}),
                sort_keys=[("k", "ascending"), ("e", "ascending"), ("o", "ascending"), ("d", "ascending"),
                           ("r", "ascending")]).to_numpy()
            dk = kc[dr][order]
            firsts = dr[order][np.concatenate(([True], dk[1:] != dk[:-1]))]
            disc_of = np.full(len(keys), -1, dtype=np.int64)
            disc_of[kc[firsts]] = firsts
            pairs = np.unique(s_kc * n + s_q)
            d_rows, d_q = disc_of[pairs // n], pairs % n
            for q in range(n):
                routed[q].append(d_rows[(d_q == q) & (d_rows >= 0)])
        # a session ID's owner: the user of its session on the connection seen first
        key_first = np.full(len(keys), rows, dtype=np.int64)
        np.minimum.at(key_first, ekc, ent)
        owner_q = np.full(nsid, -1, dtype=np.int64)
        owner_row = np.full(nsid, -1, dtype=np.int64)
        if len(pick):
            o = np.lexsort((key_first[s_kc], s_sc))
            sfirst = o[np.concatenate(([True], s_sc[o][1:] != s_sc[o][:-1]))]
            owner_q[s_sc[sfirst] + 1] = s_q[sfirst]
            owner_row[s_sc[sfirst] + 1] = pick[sfirst]
        # logouts: an ID's first ok one, to its owner's part (no owner here: to every part)
        lr = np.flatnonzero(mask(pc.and_kleene(pc.equal(op, "logout"), pc.and_kleene(
            pc.equal(out, "ok"), pc.is_valid(sid)))))
        if len(lr):
            lr = lr[np.unique(sc[lr], return_index=True)[1]]
            lq = owner_q[sc[lr] + 1]
            every = lr[lq < 0]
            for q in range(n):
                routed[q].append(lr[lq == q])
                routed[q].append(every)
        # kicks and expiries (records) by their sessions' owners
        wanted = {sid_ for sid_ in h1.kicks if isinstance(sid_, str)}
        wanted.update(e[1] for e in h1.expiry_rows if isinstance(e[1], str))
        owner: dict[str, Any] = {}
        if wanted:
            names = list(wanted)
            codes = pc.index_in(pa.array(names, type=pa.string()), value_set=senc.dictionary)
            codes = codes.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
            at = owner_row[codes + 1]
            found = np.flatnonzero((codes >= 0) & (at >= 0))
            if len(found):
                users = col("user").take(pa.array(at[found])).to_pylist()
                owner = {names[j]: u for j, u in zip(found.tolist(), users)}
        b = self.user.buckets("K")
        for sid_, lst in h1.kicks.items():
            user = owner.get(sid_, _NOBODY) if isinstance(sid_, str) else _NOBODY
            for k in lst:
                b[hash(user if user is not _NOBODY else k[4]) % n].append((sid_, k))
        b = self.user.buckets("E")
        for e in h1.expiry_rows:
            user = owner.get(e[1], _NOBODY) if isinstance(e[1], str) else _NOBODY
            b[hash(user if user is not _NOBODY else e[3]) % n].append(e)
        for q in range(n):
            got = np.unique(np.concatenate(routed[q])) if routed[q] else ()
            if len(got):
                self.user.add_table(q, "AR", table.take(pa.array(got)))
        routed = []
        self.user.write_all()  # at once: see _route
        # users with a login of unknown outcome
        self.info_users.update(pc.unique(col("user").filter(pa.array(loginish & mask(pc.equal(out, "info"))))
                                         ).to_pylist())
        # the connection checks: on the connections they read (relogin_recovers: those with an
        # expiry or a failed login in relogin_expiry; switch_consistency: switch rows and kicks)
        look = np.zeros(len(keys) + 1, dtype=bool)
        look[kc[mask(pc.and_kleene(pc.and_kleene(pc.equal(op, "login"), pc.equal(out, "fail")),
                                   pc.equal(col("scenario"), RELOGIN_SCENARIO)))]] = True
        if h1.expiry_rows:
            at = {k: c for c, k in enumerate(keys)}
            for e in h1.expiry_rows:
                c = at.get(e[2])
                if c is not None:
                    look[c] = True
        pickr = np.flatnonzero(look[kc] | mask(pc.equal(op, "switch")))
        if len(pickr):
            self._fold_bulk(h1, table.take(pa.array(pickr)))
        for fn in conn_checks.values():
            fn(h1)

    def _route(self, h1: History) -> None:
        """Send one connection part's facts to the user parts that need them: for every session
        its login entries made (the sessions themselves went to their users' parts during the
        scan), the connection's disconnect and the session's *next login* on it; kicks, expiries
        and logouts to their sessions' users.

        Of a connection's login entries, a user part gets only each of its sessions' next
        login (``History.next_login``: the first entry sent after the session was made that is
        not its own): that is all the user checks read of them, and it is found the same in
        the smaller list (every entry the larger list has before it is the session's own). A
        connection that switches between many accounts for an hour is not copied whole into
        every part. Sessions are taken per connection, so a session ID reused on two
        connections gets both connections' facts: a superset, judged the same."""
        n = self.n
        bd = self.user.buckets("D")
        next_of: dict[tuple, dict[int, tuple]] = {}  # (conn, part) -> entry index -> entry
        made, owner = self._made(h1)  # before _prepare: the rule reads feeding order
        logins, disc = h1.conn_logins, h1.conn_disc
        h1._prepare()  # the entries sorted by start
        for conn, sessions in made:
            entries = logins[conn]
            last = entries[-1][_L_START]
            d = disc.get(conn)
            shipped: set = set()  # the parts this connection's disconnect went to
            for sid, user, done in sessions:
                q = hash(user) % n
                if d is not None and q not in shipped:
                    shipped.add(q)
                    bd[q].append((conn, d))
                if last < done:
                    continue
                i = bisect_left(entries, done, key=_start)
                while i < len(entries) and entries[i][_L_SID] == sid:
                    i += 1
                if i < len(entries):
                    next_of.setdefault((conn, q), {})[i] = entries[i]
        bl = self.user.buckets("L")
        for (conn, q), picked in next_of.items():
            bl[q].append((conn, [picked[i] for i in sorted(picked)]))
        b = self.user.buckets("K")
        for sid, lst in h1.kicks.items():
            user = owner.get(sid, _NOBODY) if isinstance(sid, str) else _NOBODY
            for k in lst:
                b[hash(user if user is not _NOBODY else k[4]) % n].append((sid, k))
        b = self.user.buckets("E")
        for e in h1.expiry_rows:
            user = owner.get(e[1], _NOBODY) if isinstance(e[1], str) else _NOBODY
            b[hash(user if user is not _NOBODY else e[3]) % n].append(e)
        b = self.user.buckets("O")
        for sid, lo in h1.logouts.items():
            user = owner.get(sid, _NOBODY)
            if user is not _NOBODY:
                b[hash(user) % n].append((sid, lo))
            else:  # a logout on another connection than its session's: every part may need it
                for q in range(n):
                    b[q].append((sid, lo))
        # written now, not buffered until the next parts add more: records kept across parts hold this
        # part's strings and pin the allocator's arenas (2 x 10^6 rows in 40 parts: 198 -> 225 MiB)
        self.user.write_all()
        # users with a login of unknown outcome: a fact of the whole run, bounded by the account pool
        self.info_users.update(e[_L_USER] for lst in h1.conn_logins.values() for e in lst if e[_L_OUT] == "info")

    def spool_logins(self, spool: Any) -> None:
        """Write to ``spool`` (digest.KickSpool) the sessions made by a login that its kicks may
        name, with their send times, read from the user parts when the checks did not run
        (a session's last login record counts, as in the checks)."""
        if self.stage == "judged":
            return  # written while the user parts were judged
        self.user.close()
        for i in range(self.n):
            for chunk in self.user.chunks(i):
                records = [t for data in chunk.get("AS", ()) for t in _session_records(_arrow_table(data), {})]
                logins = [t for t in records + chunk.get("S", []) if t[9] == "login" and type(t[0]) is str]
                spool.add_logins([t[0] for t in logins], [t[4] for t in logins])

    def add_ledger(self, path: Path) -> int:
        """Route ``ledger.jsonl``'s rows to their users' parts; returns the lines skipped."""
        bad = [0]
        for routed, row in enumerate(ledger_lines(path, bad), 1):
            if not isinstance(row, Mapping):
                bad[0] += 1
                continue
            user = row.get("userID")
            self.user.add(hash(user if isinstance(user, str) else None) % self.n, "G", row)
            if routed % 10_000 == 0:
                self.user.settle()
        return bad[0]

    def judge(self, main: History, conn_checks: Mapping[str, Callable[[History], None]],
              user_checks: Mapping[str, Callable[[History, Ledger | None], None]], *,
              ledger: Path | None = None) -> None:
        """Run the checks part by part: ``conn_checks`` name -> fn(part) on every connection
        part, ``user_checks`` name -> fn(part, its ledger or None) on every user part."""
        if self.stage != "scan":
            raise RuntimeError("a spilled History is judged once")
        self.stage = "judged"
        # A part is millions of acyclic tuples and lists: automatic collections would rescan
        # them again and again (at 10^7 rows that made the checks 5x slower than in memory).
        # Refcounting frees a part when it is dropped.
        gc_on = gc.isenabled()
        gc.disable()
        try:
            self._judge(main, conn_checks, user_checks, ledger)
        finally:
            if gc_on:
                gc.enable()

    def _judge(self, main: History, conn_checks: Mapping[str, Callable[[History], None]],
               user_checks: Mapping[str, Callable[[History, Ledger | None], None]], ledger: Path | None) -> None:
        self.conn.close()
        ledger_bad = self.add_ledger(ledger) if ledger is not None else 0
        release_heap()  # what the scan's blocks left behind (10^7 rows: ~120 MiB before the first part)
        for i in range(self.n):
            self._conn_part(i, main.last_t, conn_checks)
            self.conn.remove(i)
            release_heap()
        self.user.close()
        spool = self.kick_spool
        for i in range(self.n):
            h2, rows = self._part(self.user, i, main.last_t)
            if spool is not None and spool.n:
                _spool_kickers(spool, h2.sessions)
            led = None
            if ledger is not None:
                led = Ledger(rows or ())
                led.bad += ledger_bad if i == 0 else 0
            h2.info_users = self.info_users
            for fn in user_checks.values():
                fn(h2, led)
            del h2, led, rows
            self.user.remove(i)
            release_heap()
        if spool is not None:
            spool.finish_logins()

    def close(self) -> None:
        """Remove the parts' folder (idempotent)."""
        for p in (self.conn, self.user):
            for fh in p.files:
                if fh is not None:
                    fh.close()
            p.files = [None] * p.n
        shutil.rmtree(self.dir, ignore_errors=True)

    def __del__(self) -> None:  # pragma: no cover - best effort when a run is abandoned
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
