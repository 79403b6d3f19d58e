"""The history the checks judge: journal rows folded into per-session / per-connection
indexes (:class:`History`), the server ledger (:class:`Ledger`), result values and the
queries several checks share. Pure: no I/O.

Times are unix ns everywhere (ints); config durations are seconds."""
from __future__ import annotations

import json
import sys
from bisect import bisect_left
from operator import itemgetter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from harness.errors import ConfigError, HarnessError
from harness.protocol import FRESH_SIG_CODES
from harness.results.journal import EVENT_OPS

#: Every check, in report order (config.yaml ``checks.enabled`` uses these names).
CHECK_NAMES: tuple[str, ...] = (
    "kick_exactly_once", "policy_limit", "last_login_wins", "switch_consistency",
    "relogin_recovers", "expiry_on_time", "journal_integrity", "expected_rejections",
)
#: Login failure codes that mean "get a new UserSig and log in again".
EXPIRY_CODES: frozenset[int] = FRESH_SIG_CODES
#: kickedOffline / ledger end reasons that are evictions (the evicted client gets an event).
KICK_REASONS: frozenset[str] = frozenset({"multi_device", "same_instance", "rest_kick"})
#: The scenario whose login failures must be recovered by a relogin.
RELOGIN_SCENARIO = "relogin_expiry"

_OUTCOMES = frozenset({"ok", "fail", "info"})
_LOGIN_OPS = frozenset({"login", "relogin", "switch"})
#: Ops no check looks at beyond journal_integrity.
_SKIP_OPS = frozenset({"heartbeat", "connect", "status", "usersig_fetch", "query_online", "fault", "dropped"})
_MAX_EXAMPLES = 10
_MAX_TIMES = 100_000
_MAX_N = 100_000_000  # a sequence number beyond this is treated as damage, not allocated
_NS = 1_000_000_000
_LOOP_WINDOW_NS = _NS  # a retry within 1 s of a non-expiry failure is a login loop
_EPS_NS = 1_000_000  # 1 ms slack when matching "starts at the same moment"


class ChecksInputError(HarnessError):
    """The checks were pointed at something that is not a run folder (exit code 2)."""

    exit_code = 2


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check.

    ``violations`` counts problems; ``examples`` holds at most 10 concrete ones (dicts with
    ``kind``, ``t`` in unix ns, users / sessions, ``expected``, ``found``), mixing kinds;
    ``times`` lists the unix-ns time of every violation (capped at 100,000) for charts.
    """

    name: str
    violations: int
    examples: list[dict] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    #: what the check could not judge and why (e.g. a cross-check the protocol has no view for)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.violations == 0

    def to_dict(self) -> dict[str, Any]:
        """``{"violations", "examples"}`` as summary.json carries it (RESULTS.md §2), plus
        ``times`` (unix ns of up to 10,000 violations, for the report's time chart)."""
        out: dict[str, Any] = {"violations": int(self.violations), "examples": list(self.examples)}
        times = list(getattr(self, "times", None) or [])
        if times:
            out["times"] = sorted(int(t) for t in times[:10_000])
        notes = list(getattr(self, "notes", None) or [])
        if notes:
            out["notes"] = notes
        return out


@dataclass(frozen=True)
class CheckParams:
    """What the checks need from the run's effective config (durations in seconds)."""

    policy: str = "single_platform"
    native_instances: int = 1
    web_instances: int = 1
    max_sessions: int = 10
    leeway_s: float = 5.0
    settle_s: float = 2.0
    expiry_tolerance_s: float = 3.0
    clock_skew_s: float = 1.0
    relogin_bound_s: float = 10.0

    @classmethod
    def from_config(cls, config: Mapping | None) -> "CheckParams":
        """Read ``target.*``, ``run.settle_s``, ``checks.*`` and
        ``scenarios.relogin_expiry.relogin_bound_s``; missing keys keep their defaults.
        Raises :class:`ConfigError` naming the key for a wrong type or an unknown policy."""
        cfg = config if isinstance(config, Mapping) else {}
        d = cls()
        policy = _cfg(cfg, "target.policy", d.policy, str)
        values = dict(
            policy=policy,
            native_instances=_cfg(cfg, "target.native_instances", d.native_instances, int),
            web_instances=_cfg(cfg, "target.web_instances", d.web_instances, int),
            max_sessions=_cfg(cfg, "target.max_sessions", d.max_sessions, int),
            leeway_s=_cfg(cfg, "target.leeway_s", d.leeway_s, float),
            settle_s=_cfg(cfg, "run.settle_s", d.settle_s, float),
            expiry_tolerance_s=_cfg(cfg, "checks.expiry_tolerance_s", d.expiry_tolerance_s, float),
            clock_skew_s=_cfg(cfg, "checks.clock_skew_s", d.clock_skew_s, float),
            relogin_bound_s=_cfg(cfg, "scenarios.relogin_expiry.relogin_bound_s", d.relogin_bound_s, float),
        )
        from harness.protocol import validate_policy

        problem = validate_policy(policy, values["native_instances"], values["web_instances"],
                                  values["max_sessions"])
        if problem:
            key = "target.policy" if problem.startswith("policy") else "target." + problem.split(" ", 1)[0]
            raise ConfigError(key, problem)
        return cls(**values)


def _cfg(cfg: Mapping, path: str, default: Any, kind: type) -> Any:
    node: Any = cfg
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    if node is None:
        return default
    if kind is str:
        if not isinstance(node, str):
            raise ConfigError(path, f"expected text, got {node!r}")
        return node
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        raise ConfigError(path, f"expected a number, got {node!r}")
    if kind is int:
        if node != int(node):
            raise ConfigError(path, f"expected an integer, got {node!r}")
        return int(node)
    return float(node)


class _Found:
    """Collects the violations of one check: count, mixed-kind examples, times."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.by_kind: dict[str, list[dict]] = {}
        self.times: list[int] = []
        self.notes: list[str] = []
        self.tally: dict[str, int] = {}  # counters a check keeps across calls (see switch_consistency)
        self.finisher: Callable[["_Found"], None] | None = None  # adds notes from ``tally`` at result()

    def note(self, text: str) -> None:
        """Something the check could not judge (shown beside its result, never a violation)."""
        if text not in self.notes:
            self.notes.append(text)

    def add(self, kind: str, t: int | None, example: dict, *, count: int = 1) -> None:
        self.count += count
        if t is not None and len(self.times) < _MAX_TIMES:
            self.times.extend([int(t)] * min(count, _MAX_TIMES - len(self.times)))
        bucket = self.by_kind.setdefault(kind, [])
        if len(bucket) < _MAX_EXAMPLES:
            bucket.append({"kind": kind, "t": None if t is None else int(t), **example})

    def result(self) -> CheckResult:
        notes = list(self.notes)
        if self.finisher is not None:
            self.finisher(self)
            notes, self.notes = list(self.notes), notes  # a later result() of the same _Found notes afresh
        examples: list[dict] = []
        buckets = [list(b) for b in self.by_kind.values()]
        while len(examples) < _MAX_EXAMPLES and any(buckets):
            for b in buckets:
                if b and len(examples) < _MAX_EXAMPLES:
                    examples.append(b.pop(0))
        return CheckResult(self.name, self.count, examples, sorted(self.times), notes)


def _secs(ns: int | float) -> float:
    return round(ns / 1e9, 3)


def _int(value: Any) -> int | None:
    """An int from a JSON value (ints, integral floats); None otherwise."""
    if type(value) is int:
        return value
    if isinstance(value, float) and value == value and abs(value) < 9.2e18:
        return int(value)
    return None


# --------------------------------------------------------------------------- history


class _Sess:
    """One session the journal saw succeed (ok login / relogin / switch row)."""

    __slots__ = ("sid", "user", "platform", "conn", "sent", "done", "expire_at", "kicked", "instance", "via")

    def __init__(self, sid: str, user: str | None, platform: str | None, conn: Any, sent: int, done: int,
                 expire_at: int | None, kicked: tuple | None, instance: str | None = None,
                 via: str | None = None) -> None:
        self.via = via  # the op of the row that made it (login / relogin / switch)
        self.sid = sid
        self.user = user
        self.platform = platform
        self.conn = conn
        self.sent = sent
        self.done = done
        self.expire_at = expire_at
        self.kicked = kicked
        self.instance = instance

    def ref(self) -> dict[str, Any]:
        """The session as an example fragment."""
        return {"session": self.sid, "user": self.user, "platform": self.platform, "conn": _conn_str(self.conn),
                "login_sent": self.sent, "login_done": self.done}


def _conn_str(key: Any) -> Any:
    return key if isinstance(key, str) or key is None else "/".join(map(str, key))


class _Race:
    """A ``race`` row, compact: devices as (platform, session, code, sent, done, alive, dead,
    kicked_by, instance) tuples and the REST Detail list as (Platform, Status) tuples (None when absent)."""

    __slots__ = ("w", "n", "user", "race", "t", "devices", "online")

    def __init__(self, w: Any, n: Any, user: str | None, race: str | None, t: int, data: Any) -> None:
        self.w, self.n, self.user, self.race, self.t = w, n, user, race, t
        data = data if isinstance(data, Mapping) else {}
        devices = data.get("devices")
        self.devices = tuple(
            (_s(d.get("platform")), _s(d.get("session")), _int(d.get("code")), _int(d.get("sent")),
             _int(d.get("done")), d.get("alive") is True, d.get("alive") is False, _s(d.get("kicked_by")),
             _s(d.get("instance")))
            for d in (devices if isinstance(devices, list) else ()) if isinstance(d, Mapping))
        online = data.get("online")
        self.online = tuple(
            (_s(d.get("Platform")), _s(d.get("Status")))
            for d in online if isinstance(d, Mapping)) if isinstance(online, list) else None


# _Race.devices fields
_D_PLATFORM, _D_SESSION, _D_CODE, _D_SENT, _D_DONE, _D_ALIVE, _D_DEAD, _D_KICKED_BY, _D_INSTANCE = range(9)
_SWITCH_KEYS = ("from_user", "from_session", "login_user", "server_user", "server_status", "online", "server_view")


def _switch_data(data: Any) -> tuple | None:
    """The fields switch_consistency reads from a ``switch`` row's data (None when absent)."""
    if not isinstance(data, Mapping):
        return None
    online = data.get("online")
    online = {str(k): v for k, v in online.items()} if isinstance(online, Mapping) else None
    return tuple(online if k == "online" else data.get(k, True) if k == "server_view" else data.get(k)
                 for k in _SWITCH_KEYS)


_EMPTY: list = []


def _by_start_end(e: tuple) -> tuple:
    return (e[0], e[1])


_start = itemgetter(0)  # an entry's start (bisect key)


def _disc_order(d: tuple) -> tuple:
    """Which of a connection's disconnect rows is its first: earliest, then by outcome, detail."""
    return (d[0], d[1] or "", d[2] or "")


# Per-connection login-ish entry: (start, end, op, session, outcome, code, user, scenario)
_L_START, _L_END, _L_OP, _L_SID, _L_OUT, _L_CODE, _L_USER, _L_SCEN = range(8)



#: bytes of the ``n`` bitmap :func:`missing_runs` unpacks at a time (8 MB of bits)
_RUN_CHUNK = 1 << 20


def missing_runs(seen: bytearray, top: int) -> Iterator[tuple[int, int]]:
    """The runs ``[i, j)`` of ``n`` in ``0..top`` whose bit in ``seen`` (one bit per ``n``,
    little-endian within a byte) is clear; unpacks ~1 MB at a time."""
    import numpy as np

    view = np.frombuffer(seen, dtype=np.uint8)
    step = _RUN_CHUNK
    run_from = -1  # start of the run of clear bits still open at a chunk's end
    for lo in range(0, (top >> 3) + 1, step):
        bits = np.unpackbits(view[lo:lo + step], bitorder="little")
        base = lo << 3
        bits = bits[:top + 1 - base]
        if bits.all() and run_from < 0:
            continue
        edge = np.flatnonzero(np.diff(bits.astype(np.int8))) + 1  # first index of every new value
        starts = np.concatenate(([0], edge))
        for k in starts.tolist():
            if bits[k]:
                if run_from >= 0:
                    yield run_from, base + k
                    run_from = -1
            elif run_from < 0:
                run_from = base + k
    if run_from >= 0:
        yield run_from, top + 1

class History:
    """Compact index of journal rows for the checks (feed rows with :meth:`add`).

    Keeps per session: who/where/when and the server's ``kicked`` list; per connection:
    its login attempts and disconnects; events by session; integrity bookkeeping per
    worker. Memory is O(sessions + connections + events), not O(rows).
    """

    #: makes a session record (the arguments of :class:`_Sess`); a History whose index goes to
    #: disk in parts keeps them as plain tuples (:mod:`harness.results.checks.spill`)
    _new_sess: Callable[..., Any] = _Sess

    def __init__(self) -> None:
        self.rows = 0
        self.event_rows = 0                           # rows of EVENT_OPS (never Locust requests)
        self.expected_rows = 0                        # rows with ``expect`` that got it
        self.unexpected: list[tuple] = []             # (t, w, n, op, user, scenario, expect, code, outcome) examples
        self.unexpected_count = 0
        self.expect_unknown = 0                       # rows with ``expect`` and outcome info
        self.unexpected_times: list[int] = []
        self.last_t = 0
        self.sessions: dict[str, _Sess] = {}
        self.kicks: dict[Any, list[tuple]] = {}       # sid -> [(t, by, reason, conn, user, w, n)]
        self.expiries: dict[Any, list[int]] = {}      # sid -> [t]
        self.expiry_rows: list[tuple] = []            # (t, sid, connkey, user, scenario, w, n)
        self.logouts: dict[str, tuple] = {}  # sid -> (start, end, connkey) of the ok logout
        self.conn_logins: dict[Any, list[tuple]] = {}  # connkey -> login-ish entries
        self.conn_disc: dict[Any, tuple] = {}          # connkey -> its first disconnect (t, outcome, detail)
        self.rest_kicks: dict[str, list[int]] = {}     # user -> [start]
        self.races: list[_Race] = []
        self.switches: list[tuple] = []  # (w, n, user, session, end, outcome, code, detail, _switch_data, connkey)
        # set on one part of a partitioned History (harness.results.checks.spill): facts of the
        # whole run that one part's rows cannot tell
        self.kicked_lists: bool | None = None   # does any login answer list the sessions it evicted?
        self.info_users: set | None = None      # users with a login of unknown outcome (whole run)
        #: a :class:`~harness.results.checks.spill.Spill` when the index is kept on disk in parts
        self.spill: Any = None
        # integrity
        #: per worker, one bit per ``n`` seen (bit ``n & 7`` of byte ``n >> 3``): 10^8 rows
        #: cost 12 MB, not 100 (see :func:`missing_runs`)
        self._seen: dict[Any, bytearray] = {}
        self._max_n: dict[Any, int] = {}
        self.dup_n: list[tuple] = []                  # (w, n, t)
        self.dup_count = 0
        self.bad_rows: list[dict] = []
        self.bad_count = 0
        self._starts: bool | None = None  # True once the per-connection lists are sorted
        self._ints: dict[int, int] = {}   # see _share_int
        self._evictions: dict[str, tuple] | None = None

    # ------------------------------------------------------------------ feeding
    @classmethod
    def from_rows(cls, rows: Iterable[Any]) -> "History":
        h = cls()
        h.feed(rows)
        return h

    def add_bad_line(self, where: str, why: str) -> None:
        """Count a line that is not a JSON object (journal damage)."""
        self.bad_count += 1
        if len(self.bad_rows) < _MAX_EXAMPLES:
            self.bad_rows.append({"where": where, "problems": [why]})

    def add(self, row: Any, where: str | None = None) -> None:
        """Fold one journal row (a dict) into the index. Never raises on content."""
        self.feed((row,), where)

    def feed(self, rows: Iterable[Any], where: str | None = None) -> None:
        """Fold journal rows (dicts) into the index; the hot loop of :func:`run_checks`.

        The common case (well-formed row) is checked inline; anything else goes through
        :meth:`_slow_integrity`, which records what is wrong. Never raises on content.
        """
        self._starts = None
        seen_by_w = self._seen
        max_n = self._max_n
        handler = self._handlers().get
        last_t = self.last_t
        count = self.rows
        cur_w: Any = None
        seen = bytearray()
        top = -1
        outcomes = _OUTCOMES
        skip = _SKIP_OPS  # fast exit for the most common rows (heartbeats ...)
        events = EVENT_OPS
        try:
            for row in rows:
                if type(row) is not dict:
                    if not isinstance(row, Mapping):
                        self.rows = count
                        self.add_bad_line(where or f"row {count}", "not a JSON object")
                        continue
                count += 1
                get = row.get
                w = get("w")
                n = get("n")
                outcome = get("outcome")
                st = get("start")
                en = get("end")
                it = get("intended")
                if not (type(n) is int and type(st) is int and type(en) is int and type(it) is int
                        and type(w) is str and type(outcome) is str and outcome in outcomes
                        and it <= st <= en and 0 <= n <= _MAX_N):
                    self.rows = count
                    w, n, st, en = self._slow_integrity(row, where)
                if w == cur_w:
                    w = cur_w  # one shared string per worker id
                if n is not None:
                    if w != cur_w:
                        if cur_w is not None:
                            max_n[cur_w] = top
                        cur_w = w = _intern(w)
                        seen = seen_by_w.get(w)
                        if seen is None:
                            seen = seen_by_w[w] = bytearray(1024)
                            max_n[w] = -1
                        top = max_n[w]
                    byte = n >> 3
                    if byte >= len(seen):
                        seen.extend(bytes(max(byte + 1 - len(seen), len(seen))))
                    bit = 1 << (n & 7)
                    b = seen[byte]
                    if b & bit:
                        self.dup_count += 1
                        if len(self.dup_n) < _MAX_EXAMPLES:
                            self.dup_n.append((w, n, en))
                    else:
                        seen[byte] = b | bit
                    if n > top:
                        top = n
                if st is None or en is None:
                    continue  # no usable times: counted by journal_integrity, useless as evidence
                if en > last_t:
                    last_t = en
                op = get("op")
                if op in events:
                    self.event_rows += 1
                exp = get("expect")
                if exp is not None:
                    self._add_expect(row, op, w, n, en, outcome, exp)
                if type(op) is not str or op in skip:
                    continue
                add = handler(op)
                if add is not None:
                    add(row, op, w, n, st, en, outcome)
        finally:
            if cur_w is not None:
                max_n[cur_w] = top
            self.last_t = last_t
            self.rows = count

    def feed_table(self, table: Any, nested: Mapping[int, dict] | None = None, where: str | None = None) -> None:
        """Fold a block of journal rows given as a pyarrow Table (the scan's schema:
        :mod:`harness.results.scan`); the same result as :meth:`feed` of the same rows as dicts.

        ``nested`` maps row index -> the fully decoded row for rows whose nested ``data`` the
        checks read (race, switch). A block with any row the fast path cannot vouch for (a
        missing or inconsistent time, sequence number, worker or outcome) goes through
        :meth:`feed` row by row, so damage is reported exactly as there. Otherwise integrity
        bookkeeping is done on whole columns and only the rows an index keeps become dicts.
        """
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        nested = nested or {}
        rows_n = table.num_rows
        if not rows_n:
            return
        n_col, it, st, en = table["n"], table["intended"], table["start"], table["end"]
        clean = pc.and_kleene(pc.is_valid(table["w"]), pc.is_in(table["outcome"], value_set=pa.array(sorted(_OUTCOMES))))
        clean = pc.and_kleene(clean, pc.and_kleene(pc.less_equal(it, st), pc.less_equal(st, en)))
        clean = pc.and_kleene(clean, pc.and_kleene(pc.greater_equal(n_col, 0), pc.less_equal(n_col, _MAX_N)))
        if pc.sum(pc.fill_null(clean, False)).as_py() != rows_n:
            rows = table.to_pylist()
            for i, row in nested.items():
                rows[i] = row
            self.feed(rows, where)
            return
        self._starts = None
        self.rows += rows_n
        end = en.to_numpy()
        top_t = int(end.max())
        if top_t > self.last_t:
            self.last_t = top_t
        ns = n_col.to_numpy()
        wenc = pc.dictionary_encode(table["w"].combine_chunks())
        wcodes = wenc.indices.to_numpy(zero_copy_only=False)
        dup_rows: list[int] = []
        for j, wname in enumerate(wenc.dictionary.to_pylist()):
            idx = np.flatnonzero(wcodes == j) if len(wenc.dictionary) > 1 else np.arange(rows_n)
            wn = ns[idx]
            wname = _intern(wname)
            seen = self._seen.get(wname)
            if seen is None:
                seen = self._seen[wname] = bytearray(1024)
                self._max_n[wname] = -1
            top = int(wn.max())
            if top >> 3 >= len(seen):
                seen.extend(bytes(max((top >> 3) + 1 - len(seen), len(seen))))
            view = np.frombuffer(seen, dtype=np.uint8)
            byte = wn >> 3
            bit = np.left_shift(1, wn & 7).astype(np.uint8)
            dup = (view[byte] & bit) != 0
            order = np.argsort(wn, kind="stable")
            srt = wn[order]
            again = np.flatnonzero(srt[1:] == srt[:-1]) + 1
            if len(again):
                dup[order[again]] = True
            sb = srt >> 3  # set the bits: OR of each byte's new bits, one write per byte
            first = np.flatnonzero(np.concatenate(([True], sb[1:] != sb[:-1])))
            view[sb[first]] |= np.bitwise_or.reduceat(np.left_shift(1, srt & 7).astype(np.uint8), first)
            del view
            if top > self._max_n[wname]:
                self._max_n[wname] = top
            if dup.any():
                dup_rows.extend(idx[dup].tolist())
        if dup_rows:
            dup_rows.sort()
            wl = table["w"].take(pa.array(dup_rows)).to_pylist()
            for i, wname in zip(dup_rows, wl):
                self.dup_count += 1
                if len(self.dup_n) < _MAX_EXAMPLES:
                    self.dup_n.append((_intern(wname), int(ns[i]), int(end[i])))
        op = table["op"]
        self.event_rows += pc.sum(pc.fill_null(pc.is_in(op, value_set=pa.array(sorted(EVENT_OPS))), False)).as_py() or 0
        self._fold_columns(table, nested)

    def _fold_columns(self, table: Any, nested: Mapping[int, dict]) -> None:
        """The index part of :meth:`feed_table`: the bulk ops (login / relogin / switch,
        disconnect, logout) from column lists, the rare ones and rows with ``expect`` as dicts."""
        import pyarrow as pa
        import pyarrow.compute as pc

        op = table["op"]

        def rows_of(ops: tuple[str, ...]) -> Any:
            mask = pc.fill_null(pc.is_in(op, value_set=pa.array(ops)), False)
            return pc.indices_nonzero(mask)

        def columns(idx: Any, names: tuple[str, ...]) -> list[list]:
            sub = table.select(list(names)).take(idx)
            return [_pylist(sub[c], c in _LOW_CARD) for c in names]

        if self.spill is not None:  # the index is kept on disk in parts: they take these rows as columns
            self.spill.take_bulk(self, table, nested)
            idx = ()
        else:
            idx = rows_of(("login", "relogin", "switch"))
        if len(idx):
            names = ("op", "w", "n", "start", "end", "outcome", "session", "user", "code", "conn", "scenario",
                     "detail", "kicked", "platform", "expire_at", "instance")
            cols = columns(idx, names)
            login = self._login
            data: list = [None] * len(idx)
            if nested:
                for k, i in enumerate(idx.to_pylist()):
                    row = nested.get(i)
                    if row is not None:
                        data[k] = row.get("data")
            for (o, w, n, st, en, out, sid, user, code, conn, scen, det, kicked, plat, exp_at, inst), dat in zip(
                    zip(*cols), data):
                login(o, _intern(w), n, st, en, out, sid, user, code, conn, scen, det, dat, kicked, plat, exp_at,
                      inst)
        idx = rows_of(("disconnect",)) if self.spill is None else ()
        if len(idx):
            disc = self.conn_disc
            for conn, w, user, en, out, det in zip(*columns(idx, ("conn", "w", "user", "end", "outcome", "detail"))):
                key = _intern(conn) if type(conn) is str and conn else ("user", str(w), str(user))
                d = (en, _si(out), _si(det))
                first = disc.get(key)
                if first is None or _disc_order(d) < _disc_order(first):
                    disc[key] = d
        idx = rows_of(("logout",)) if self.spill is None else ()
        if len(idx):
            logouts = self.logouts
            for sid, st, en, out, conn, w, user in zip(*columns(idx, ("session", "start", "end", "outcome", "conn",
                                                                     "w", "user"))):
                if out == "ok" and type(sid) is str and sid not in logouts:
                    key = _intern(conn) if type(conn) is str and conn else ("user", str(w), str(user))
                    logouts[_intern(sid)] = (st, en, key)
        handlers = self._handlers()
        for bulk in ("login", "relogin", "switch", "disconnect", "logout"):
            handlers.pop(bulk)
        want = pc.fill_null(pc.is_in(op, value_set=pa.array(sorted(handlers))), False)
        idx = pc.indices_nonzero(pc.or_(want, pc.is_valid(table["expect"]))).to_numpy()
        if not len(idx):
            return
        sub = table.take(pa.array(idx))
        if set(handlers) == set(_RARE_OPS) and not pc.any(pc.is_valid(sub["expect"])).as_py():
            self._fold_rare(sub, idx, nested)
            return
        names = table.column_names
        cols = [sub[c].to_pylist() for c in names]
        get_handler = handlers.get
        for k, i in enumerate(idx.tolist()):
            row = nested.get(i)
            if row is None:
                row = {c: col[k] for c, col in zip(names, cols)}
            w, n, s_, e_, outcome, opv = (row["w"], row["n"], row["start"], row["end"], row["outcome"], row["op"])
            exp = row.get("expect")
            if exp is not None:
                self._add_expect(row, opv, _intern(w), n, e_, outcome, exp)
            add = get_handler(opv) if type(opv) is str else None
            if add is not None:
                add(row, opv, _intern(w), n, s_, e_, outcome)

    def _fold_rare(self, sub: Any, idx: Any, nested: Mapping[int, dict]) -> None:
        """The rows of the rare indexed ops (kicks, expiries, REST kicks, races; none with
        ``expect``) from column lists, as their ``_add_*`` methods index them from dicts."""
        names = ("op", "w", "n", "start", "end", "outcome", "session", "user", "by", "detail", "conn", "scenario",
                 "race")
        cols = [_pylist(sub[c], c in _LOW_CARD) for c in names]
        kicks, expiries, expiry_rows = self.kicks, self.expiries, self.expiry_rows
        races, rest_kicks = self.races, self.rest_kicks
        for i, (op, w, n, st, en, out, sid, user, by, det, conn, scen, race) in zip(idx.tolist(), zip(*cols)):
            if op == "kicked_offline":
                key = _intern(conn) if type(conn) is str and conn else ("user", str(w), str(user))
                kicks.setdefault(_s(sid), []).append((en, _s(by), _si(det), key, _s(user), _intern(w), n))
            elif op == "sig_expired":
                key = _intern(conn) if type(conn) is str and conn else ("user", str(w), str(user))
                sid = _s(sid)
                expiries.setdefault(sid, []).append(en)
                expiry_rows.append((en, sid, key, _s(user), _si(scen), _intern(w), n))
            elif op == "race":
                row = nested.get(i)
                races.append(_Race(_intern(w), n, _s(user), _s(race), en, row.get("data") if row is not None else None))
            elif op == "rest_kick":
                if out != "fail" and type(user) is str:
                    rest_kicks.setdefault(user, []).append(st)

    def _add_expect(self, row: Mapping, op: Any, w: Any, n: Any, en: int, outcome: str, exp: Any) -> None:
        """A row that provoked ``expect`` on purpose: count it, or keep it as a violation
        example when the answer was anything else (docs/JOURNAL.md ``expect``)."""
        code = row.get("code")
        if type(exp) is int and type(code) is int and code == exp:
            self.expected_rows += 1
            return
        if outcome == "info":
            self.expect_unknown += 1  # no answer (timeout, connection lost): an error, not evidence
            return
        self.unexpected_count += 1
        if len(self.unexpected_times) < _MAX_TIMES:
            self.unexpected_times.append(en)
        if len(self.unexpected) < _MAX_EXAMPLES:
            self.unexpected.append((en, w, n, op, _s(row.get("user")), _s(row.get("scenario")), exp, code, outcome,
                                    _s(row.get("session"))))

    def _handlers(self) -> dict[str, Callable[..., None]]:
        """op -> the method that indexes a row of that op (ops not listed are not indexed)."""
        return {"login": self._add_login, "relogin": self._add_login, "switch": self._add_login,
                "kicked_offline": self._add_kick, "sig_expired": self._add_expiry,
                "logout": self._add_logout, "disconnect": self._add_disconnect,
                "rest_kick": self._add_rest_kick, "race": self._add_race}

    def _add_kick(self, row: Mapping, op: str, w: Any, n: Any, st: int, en: int, outcome: str) -> None:
        get = row.get
        sid = _s(get("session"))
        self.kicks.setdefault(sid, []).append(
            (en, _s(get("by")), _si(get("detail")), _ckey(row), _s(get("user")), w, n))

    def _add_expiry(self, row: Mapping, op: str, w: Any, n: Any, st: int, en: int, outcome: str) -> None:
        get = row.get
        sid = _s(get("session"))
        self.expiries.setdefault(sid, []).append(en)
        self.expiry_rows.append((en, sid, _ckey(row), _s(get("user")), _si(get("scenario")), w, n))

    def _add_logout(self, row: Mapping, op: str, w: Any, n: Any, st: int, en: int, outcome: str) -> None:
        sid = row.get("session")
        if outcome == "ok" and type(sid) is str and sid not in self.logouts:
            self.logouts[_intern(sid)] = (st, en, _ckey(row))

    def _add_disconnect(self, row: Mapping, op: str, w: Any, n: Any, st: int, en: int, outcome: str) -> None:
        key = _ckey(row)
        d = (en, _si(outcome), _si(row.get("detail")))
        first = self.conn_disc.get(key)
        if first is None or _disc_order(d) < _disc_order(first):
            self.conn_disc[key] = d

    def _add_rest_kick(self, row: Mapping, op: str, w: Any, n: Any, st: int, en: int, outcome: str) -> None:
        user = row.get("user")
        if outcome != "fail" and type(user) is str:
            self.rest_kicks.setdefault(user, []).append(st)

    def _add_race(self, row: Mapping, op: str, w: Any, n: Any, st: int, en: int, outcome: str) -> None:
        get = row.get
        self.races.append(_Race(w, n, _s(get("user")), _s(get("race")), en, get("data")))

    def _add_login(self, row: Mapping, op: str, w: Any, n: Any, st: int, en: int, outcome: str) -> None:
        get = row.get
        self._login(op, w, n, st, en, outcome, get("session"), get("user"), get("code"), get("conn"),
                    get("scenario"), get("detail"), get("data"), get("kicked"), get("platform"),
                    get("expire_at"), get("instance"))

    def _login(self, op: str, w: Any, n: Any, st: int, en: int, outcome: str, sid: Any, user: Any, code: Any,
               key: Any, scenario: Any, detail: Any, data: Any, kicked: Any, platform: Any, expire_at: Any,
               instance: Any) -> None:
        """One login / relogin / switch row, as values (both feeding paths end here)."""
        sid = _intern(sid) if type(sid) is str else None
        key = _intern(key) if type(key) is str and key else ("user", str(w), str(user))
        user = _intern(user) if type(user) is str else None
        if type(code) is not int:
            code = _int(code)
        shared = self._ints
        if code is not None:
            code = _share_int(shared, code)  # a handful of codes: one int object each, not one per row
        exp = _int(expire_at)
        if exp is not None:
            exp = _share_int(shared, exp)
        op = _intern(op)
        outcome = _intern(outcome)
        lst = self.conn_logins.get(key)
        if lst is None:
            lst = self.conn_logins[key] = []
        lst.append((st, en, op, sid, outcome, code, user, _intern(scenario) if type(scenario) is str else None))
        if op == "switch":
            self.switches.append((w, n, user, sid, en, outcome, code, _s(detail), _switch_data(data), key))
        if not isinstance(sid, str) or not sid:
            return
        # an ok row made a session; so did a switch whose login worked (fail 0 = checks disagreed)
        if outcome != "ok" and not (op == "switch" and outcome == "fail" and code == 0):
            return
        if op == "login":
            if type(kicked) is not list:
                kicked_t = None
            elif not kicked:
                kicked_t = ()
            else:
                kicked_t = tuple(_intern(k) for k in kicked if type(k) is str)
            # a login row is the authoritative record
            self.sessions[sid] = self._new_sess(sid, user, _si(platform), key, st, en, exp, kicked_t, _si(instance),
                                                op)
        elif sid not in self.sessions:
            # relogin / switch rows without a login row of their own: kicked list unknown
            self.sessions[sid] = self._new_sess(sid, user, _si(platform), key, st, en, exp, None, _si(instance), op)

    def _slow_integrity(self, row: Mapping, where: str | None) -> tuple:
        """Validate a row that failed the fast path; returns (w, n, start, end), each
        None when unusable."""
        get = row.get
        problems = []
        w = get("w")
        if not isinstance(w, str) or not w:
            problems.append(f"w is {w!r}, expected a worker id")
            w = str(w)
        n = _int(get("n"))
        if n is None or type(get("n")) is not int:
            problems.append(f"n is {get('n')!r}, expected an int")
        if n is not None and not 0 <= n <= _MAX_N:
            problems.append(f"n is {n}, expected 0..{_MAX_N}")
            n = None
        if not isinstance(get("outcome"), str) or get("outcome") not in _OUTCOMES:
            problems.append(f"outcome is {get('outcome')!r}, expected ok/fail/info")
        times = {}
        for k in ("intended", "start", "end"):
            v = _int(get(k))
            if v is None or type(get(k)) is not int:
                problems.append(f"{k} is {get(k)!r}, expected unix ns (int)")
            times[k] = v
        st, en, it = times["start"], times["end"], times["intended"]
        if st is not None and en is not None and en < st:
            problems.append(f"end < start by {_secs(st - en)} s")
        if it is not None and st is not None and it > st:
            problems.append(f"intended > start by {_secs(it - st)} s")
        if problems:
            self.bad_count += 1
            if len(self.bad_rows) < _MAX_EXAMPLES:
                self.bad_rows.append({"where": where or f"row {self.rows - 1}", "w": w, "n": get("n"),
                                      "op": get("op"), "t": en if en is not None else st,
                                      "problems": problems})
        if st is not None and en is not None:
            en = max(st, en)
        return w, n, st, en

    # ------------------------------------------------------------------ queries
    def _prepare(self) -> None:
        """Sort the per-connection lists by start (once, after feeding). Lookups by time bisect
        the entries themselves (``key=``): no second list of start times per connection."""
        for lst in self.conn_logins.values():
            if len(lst) > 1:
                lst.sort(key=_by_start_end)
        self._evictions = None
        self._starts = True

    def _conn_starts(self, key: Any) -> list[tuple]:
        """The connection's login-ish entries sorted by start (bisect them with ``key=_start``)."""
        if self._starts is None:
            self._prepare()
        return self.conn_logins.get(key, _EMPTY)

    def first_entry_from(self, key: Any, t: int) -> int:
        """Index of the connection's first login-ish entry whose start is >= ``t``."""
        return bisect_left(self._conn_starts(key), t, key=_start)

    def conn_entries(self, key: Any) -> list[tuple]:
        """Login / relogin / switch entries of one connection, sorted by start."""
        self._conn_starts(key)
        return self.conn_logins.get(key, [])

    def next_login(self, s: _Sess) -> tuple | None:
        """The first login-ish entry on ``s``'s connection sent after ``s`` was established."""
        entries = self._conn_starts(s.conn)
        if not entries or entries[-1][_L_START] < s.done:
            return None
        i = bisect_left(entries, s.done, key=_start)
        while i < len(entries):
            e = entries[i]
            if e[_L_SID] != s.sid:
                return e
            i += 1
        return None

    def disconnect_of(self, key: Any) -> tuple | None:
        """The first disconnect row of a connection (a connection closes once)."""
        if self._starts is None:
            self._prepare()
        return self.conn_disc.get(key)

    def client_end(self, s: _Sess) -> tuple[int, str] | None:
        """Earliest client-side evidence that ``s`` ended: (time ns, what). Events, an ok
        logout (its start), a later login on the same connection (its start), a disconnect."""
        best: tuple[int, str] | None = None

        def consider(t: int | None, what: str) -> None:
            nonlocal best
            if t is not None and (best is None or t < best[0]):
                best = (t, what)

        k = self.kicks.get(s.sid)
        if k:
            consider(min(e[0] for e in k), "kicked_offline")
        e = self.expiries.get(s.sid)
        if e:
            consider(min(e), "sig_expired")
        lo = self.logouts.get(s.sid)
        if lo:
            consider(lo[0], "logout")
        nl = self.next_login(s)
        if nl:
            consider(nl[_L_START], f"{nl[_L_OP]} on the same connection")
        d = self.disconnect_of(s.conn)
        if d and d[0] >= s.sent:
            consider(d[0], "disconnect")
        return best

    def has_kicked_lists(self) -> bool:
        """Does any login answer of the run list the sessions it evicted (PROTOCOL.md ``kicked``)?
        XMPP's answers do not: its kicks are judged differently (kick_exactly_once)."""
        if self.kicked_lists is not None:
            return self.kicked_lists
        return any(s.kicked is not None for s in self.sessions.values())

    def evictions(self) -> dict[str, tuple]:
        """Sessions the server's login responses reported as evicted:
        sid -> (evicting session, its login start, its login end). Computed once."""
        if self._starts is None:
            self._prepare()
        if self._evictions is not None:
            return self._evictions
        out: dict[str, tuple] = {}
        for s in self.sessions.values():
            if s.kicked:
                for k in s.kicked:
                    if k not in out or out[k][2] > s.done:
                        out[k] = (s.sid, s.sent, s.done)
        self._evictions = out
        return out


_intern = sys.intern
_MAX_SHARED_INTS = 100_000


def _share_int(shared: dict[int, int], v: int) -> int:
    """One object per distinct value of a low-cardinality int (codes, UserSig expiry seconds) in
    ``shared`` (the History's): a million sessions whose sigs expire in the same few thousand
    seconds share those ints instead of holding one 32-byte int each."""
    if -5 <= v <= 256:
        return v
    got = shared.get(v)
    if got is None:
        if len(shared) >= _MAX_SHARED_INTS:
            return v
        got = shared[v] = v
    return got
#: journal columns with a handful of distinct values: decoded once per block, interned once
_LOW_CARD = frozenset({"w", "op", "outcome", "scenario", "platform", "detail"})
#: the ops History indexes that are not bulk ops (History._fold_rare)
_RARE_OPS = ("kicked_offline", "sig_expired", "rest_kick", "race")


def _pylist(col: Any, low_card: bool) -> list:
    """A pyarrow column as a list of Python values; a low-cardinality string column through its
    dictionary (each distinct text decoded and interned once, the rows share those objects)."""
    if not low_card or not len(col):
        return col.to_pylist()
    import numpy as np
    import pyarrow.compute as pc

    enc = pc.dictionary_encode(col.combine_chunks() if hasattr(col, "combine_chunks") else col)
    values = np.asarray([None if v is None else _intern(v) for v in enc.dictionary.to_pylist()] + [None],
                        dtype=object)
    idx = enc.indices.fill_null(len(values) - 1).to_numpy(zero_copy_only=False)
    return values[idx].tolist()


def _s(value: Any) -> str | None:
    """A JSON text value, interned (one object per distinct id however many rows name it:
    the index's main memory saving), or None (keeps malformed values out of dict keys)."""
    return _intern(value) if type(value) is str else None


_si = _s


def _ckey(row: Mapping) -> Any:
    conn = row.get("conn")
    if type(conn) is str and conn:
        return _intern(conn)
    return ("user", str(row.get("w")), str(row.get("user")))


class Ledger:
    """Compact server ledger (PROTOCOL.md §7) sorted by ``seq``.

    ``rows``: (seq, ts ns, event, session, user, platform, reason, by); ``instances``:
    session -> instanceID of its login row (what the unlimited policy groups by).
    """

    def __init__(self, rows: Iterable[Any] = ()) -> None:
        out = []
        self.bad = 0
        self.instances: dict[str, str] = {}
        for r in rows:
            if not isinstance(r, Mapping):
                self.bad += 1
                continue
            seq = _int(r.get("seq"))
            ev = r.get("event")
            sid = r.get("sessionID")
            if seq is None or ev not in ("login", "end") or not isinstance(sid, str):
                self.bad += 1
                continue
            out.append((seq, _int(r.get("ts")) or 0, ev, sid, _s(r.get("userID")), _s(r.get("platform")),
                        _s(r.get("reason")), _s(r.get("by"))))
            inst = r.get("instanceID")
            if ev == "login" and type(inst) is str and inst:
                self.instances[_intern(sid)] = _intern(inst)
        out.sort(key=lambda x: x[0])
        self.rows = out

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def read(cls, path: str | Path) -> "Ledger":
        """Read ``ledger.jsonl``; undecodable lines are skipped and counted in ``bad``."""
        bad = [0]
        led = cls(ledger_lines(path, bad))
        led.bad += bad[0]
        return led

    def login_seq(self) -> dict[str, int]:
        return {r[3]: r[0] for r in self.rows if r[2] == "login"}

    def kick_ends(self) -> dict[str, tuple]:
        """sid -> (by, ts, reason) of the first ``end`` row with an eviction reason."""
        out: dict[str, tuple] = {}
        for r in self.rows:
            if r[2] == "end" and r[6] in KICK_REASONS and r[3] not in out:
                out[r[3]] = (r[7], r[1], r[6])
        return out

    def end_ts(self) -> dict[str, int]:
        return {r[3]: r[1] for r in self.rows if r[2] == "end"}


def ledger_lines(path: str | Path, bad: list[int]) -> Iterator[Any]:
    """The decoded lines of a ledger file; blank lines skipped, undecodable ones counted in ``bad[0]``."""
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except (ValueError, RecursionError):
                bad[0] += 1


def _history(rows: Iterable[Any] | History) -> History:
    return rows if isinstance(rows, History) else History.from_rows(rows)


def _ledger(ledger: Iterable[Any] | Ledger | None) -> Ledger | None:
    if ledger is None or isinstance(ledger, Ledger):
        return ledger
    return Ledger(ledger)


def _by_instance(params: CheckParams, policy: str | None = None) -> bool:
    """True when the policy groups sessions by instanceID (``unlimited``): the only eviction
    it allows is ``same_instance``."""
    from harness.protocol import groups_by_instance

    try:
        return groups_by_instance(policy or params.policy)
    except ValueError:
        return False


def _grouper(params: CheckParams, policy: str | None = None) -> Callable[..., tuple[str, int] | None]:
    """(platform, instance=None) -> (group name, limit) under the policy; None for an unknown
    platform, or (policy unlimited, which groups by instanceID) an unknown instance."""
    from harness.protocol import group_limit, policy_group

    pol = policy or params.policy
    by_instance = _by_instance(params, pol)
    cache: dict[Any, tuple[str, int] | None] = {}

    def limit_of(platform: str) -> int:
        return group_limit(pol, platform, params.native_instances, params.web_instances, params.max_sessions)

    def group(platform: Any, instance: Any = None) -> tuple[str, int] | None:
        if not isinstance(platform, str):
            return None
        if by_instance:
            if not isinstance(instance, str) or not instance:
                return None
            try:
                return (policy_group(pol, platform, instance), limit_of(platform))
            except (ValueError, TypeError):
                return None
        if platform not in cache:
            try:
                cache[platform] = (policy_group(pol, platform), limit_of(platform))
            except (ValueError, TypeError):
                cache[platform] = None
        return cache[platform]

    return group


# --------------------------------------------------------------------------- checks

def _info_users(h: History) -> set:
    """Users with a login of unknown outcome (it may have made a session we never saw)."""
    if h.info_users is not None:
        return h.info_users
    return {e[_L_USER] for lst in h.conn_logins.values() for e in lst if e[_L_OUT] == "info"}


def _client_closed_before(h: History, s: _Sess, deadline: int) -> bool:
    """The session's client ended it (disconnect, logout, or its own sig_expired) before ``deadline``."""
    d = h.disconnect_of(s.conn)
    if d is not None and s.sent <= d[0] < deadline:
        return True
    lo = h.logouts.get(s.sid)
    if lo is not None and lo[0] < deadline:
        return True
    return any(t < deadline for t in h.expiries.get(s.sid, ()))



def _life_end(h: History, s: _Sess, evicted: Mapping, led_end: Mapping) -> tuple[int, str]:
    best = h.client_end(s) or (h.last_t, "end of run")
    ev = evicted.get(s.sid)
    if ev is not None and ev[1] < best[0]:
        best = (ev[1], f"evicted by {ev[0]}")
    le = led_end.get(s.sid)
    if le is not None and le < best[0]:
        best = (le, "ledger end")
    return best


def _overlaps(h: History, user: Any, gname: str, limit: int, members: list, evicted: Mapping,
              led_end: Mapping, settle: int, found: _Found) -> None:
    events = []
    ends = {}
    for s in members:
        end, why = _life_end(h, s, evicted, led_end)
        if end > s.done:
            events.append((s.done, 1, s))
            events.append((end, -1, s))
            ends[s.sid] = (end, why)
    events.sort(key=lambda e: (e[0], e[1]))
    live: dict[str, _Sess] = {}
    breach_at: int | None = None
    breach: list[_Sess] = []
    for t, delta, s in events:
        if delta > 0:
            live[s.sid] = s
            if len(live) > limit and breach_at is None:
                breach_at, breach = t, list(live.values())
        else:
            live.pop(s.sid, None)
            if breach_at is not None and len(live) <= limit:
                if t - breach_at > settle:
                    found.add("sessions_overlap", breach_at, {
                        "user": user, "group": gname, "limit": limit,
                        "sessions": [{**b.ref(), "ended": ends[b.sid][0], "ended_by": ends[b.sid][1]}
                                     for b in breach],
                        "overlap_s": _secs(t - breach_at),
                        "expected": f"at most {limit} live session(s) in group {gname!r}; "
                        "the newest login evicts the oldest",
                        "found": f"{len(breach)} sessions live at once for {_secs(t - breach_at)} s, "
                        "none reported evicted"})
                breach_at, breach = None, []


def _ledger_replay(led: Ledger, group: Callable, found: _Found) -> None:
    live: dict[tuple, set] = {}
    where: dict[str, tuple] = {}
    pending: tuple | None = None  # (key, limit, login row)

    def flag(pend: tuple) -> None:
        key, limit, row = pend
        found.add("ledger_over_limit", row[1], {
            "user": key[0], "group": key[1], "limit": limit, "seq": row[0], "session": row[3],
            "live": sorted(live.get(key, ())), "expected": f"at most {limit} live session(s) at every ledger seq",
            "found": f"{len(live.get(key, ()))} live after login {row[3]}"})

    for row in led.rows:
        seq, ts, ev, sid, user, platform, reason, by = row
        if pending is not None:
            key, limit, lrow = pending
            if ev == "end" and where.get(sid) == key and (by == lrow[3] or reason in ("relogin", "switch")):
                live[key].discard(sid)
                where.pop(sid, None)
                if len(live[key]) <= limit:
                    pending = None
                continue
            flag(pending)
            pending = None
        if ev == "login":
            g = group(platform, led.instances.get(sid))
            if g is None:
                continue
            key = (user, g[0])
            bucket = live.setdefault(key, set())
            bucket.add(sid)
            where[sid] = key
            if len(bucket) > g[1]:
                pending = (key, g[1], row)
        else:
            key = where.pop(sid, None)
            if key is not None:
                live[key].discard(sid)
    if pending is not None:
        flag(pending)



def _strict_end(h: History, s: _Sess) -> tuple[int, str] | None:
    """When the session had certainly ended on its own connection (server order): the end of
    an ok logout or of a later login on it, or a disconnect."""
    best: tuple[int, str] | None = None
    lo = h.logouts.get(s.sid)
    if lo:
        best = (lo[1], "logout")
    nl = h.next_login(s)
    if nl and (best is None or nl[_L_END] < best[0]):
        best = (nl[_L_END], f"{nl[_L_OP]} on the same connection")
    d = h.disconnect_of(s.conn)
    if d and d[0] >= s.sent and (best is None or d[0] < best[0]):
        best = (d[0], "disconnect")
    return best


