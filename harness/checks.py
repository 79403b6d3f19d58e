"""Correctness checks over a run's journals (RESULTS.md §1, docs/JOURNAL.md), plus the
server's session ledger when there is one (PROTOCOL.md §7). Jepsen-style: the whole history
is judged after the run, partitioned by user / session / connection.

Pure core, thin shell:

* :class:`History` folds journal rows (dicts) into compact per-session / per-connection
  indexes, keeping only the fields the checks need (a 10^6-row journal is streamed, never
  held as dicts). :class:`Ledger` does the same for ledger rows.
* One pure function per check, each ``check(rows_or_history, *, params, ...) -> CheckResult``:
  :func:`kick_exactly_once`, :func:`policy_limit`, :func:`last_login_wins`,
  :func:`switch_consistency`, :func:`relogin_recovers`, :func:`expiry_on_time`,
  :func:`journal_integrity`.
* :func:`run_checks` is the shell: it streams ``journal/*.jsonl`` (and ``ledger.jsonl``)
  of a run folder once and runs the enabled checks. ``python -m harness.checks RUN_DIR``
  prints one line per check; exit 4 on any violation, 0 when clean, 2 on a bad path/config.

Times are unix ns everywhere (ints); config durations are seconds. Every violation example
is a JSON-safe dict with ``kind``, ``t`` (unix ns of the violation, for the report's chart),
the user / sessions concerned, what was ``expected`` and what was ``found``.

The checks never need the ledger and work against any server speaking PROTOCOL.md; rows
with ``outcome == "info"`` (unknown effect) never count as evidence either way.
"""
from __future__ import annotations

import csv
import json
import sys
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, HarnessError
from harness.protocol import FRESH_SIG_CODES

__all__ = [
    "CHECK_NAMES",
    "EXPIRY_CODES",
    "CheckParams",
    "CheckResult",
    "ChecksInputError",
    "History",
    "Ledger",
    "kick_exactly_once",
    "policy_limit",
    "last_login_wins",
    "switch_consistency",
    "relogin_recovers",
    "expiry_on_time",
    "journal_integrity",
    "run_checks",
    "read_locust_total",
    "main",
]

#: Every check, in report order (config.yaml ``checks.enabled`` uses these names).
CHECK_NAMES: tuple[str, ...] = (
    "kick_exactly_once", "policy_limit", "last_login_wins", "switch_consistency",
    "relogin_recovers", "expiry_on_time", "journal_integrity",
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
        return out


@dataclass(frozen=True)
class CheckParams:
    """What the checks need from the run's effective config (durations in seconds)."""

    policy: str = "single_platform"
    native_instances: int = 1
    web_instances: int = 1
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
            leeway_s=_cfg(cfg, "target.leeway_s", d.leeway_s, float),
            settle_s=_cfg(cfg, "run.settle_s", d.settle_s, float),
            expiry_tolerance_s=_cfg(cfg, "checks.expiry_tolerance_s", d.expiry_tolerance_s, float),
            clock_skew_s=_cfg(cfg, "checks.clock_skew_s", d.clock_skew_s, float),
            relogin_bound_s=_cfg(cfg, "scenarios.relogin_expiry.relogin_bound_s", d.relogin_bound_s, float),
        )
        from harness.protocol import validate_policy

        problem = validate_policy(policy, values["native_instances"], values["web_instances"])
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

    def add(self, kind: str, t: int | None, example: dict, *, count: int = 1) -> None:
        self.count += count
        if t is not None and len(self.times) < _MAX_TIMES:
            self.times.extend([int(t)] * min(count, _MAX_TIMES - len(self.times)))
        bucket = self.by_kind.setdefault(kind, [])
        if len(bucket) < _MAX_EXAMPLES:
            bucket.append({"kind": kind, "t": None if t is None else int(t), **example})

    def result(self) -> CheckResult:
        examples: list[dict] = []
        buckets = [list(b) for b in self.by_kind.values()]
        while len(examples) < _MAX_EXAMPLES and any(buckets):
            for b in buckets:
                if b and len(examples) < _MAX_EXAMPLES:
                    examples.append(b.pop(0))
        return CheckResult(self.name, self.count, examples, sorted(self.times))


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

    __slots__ = ("sid", "user", "platform", "conn", "sent", "done", "expire_at", "kicked")

    def __init__(self, sid: str, user: str | None, platform: str | None, conn: Any, sent: int, done: int,
                 expire_at: int | None, kicked: tuple | None) -> None:
        self.sid = sid
        self.user = user
        self.platform = platform
        self.conn = conn
        self.sent = sent
        self.done = done
        self.expire_at = expire_at
        self.kicked = kicked

    def ref(self) -> dict[str, Any]:
        """The session as an example fragment."""
        return {"session": self.sid, "user": self.user, "platform": self.platform, "conn": _conn_str(self.conn),
                "login_sent": self.sent, "login_done": self.done}


def _conn_str(key: Any) -> Any:
    return key if isinstance(key, str) or key is None else "/".join(map(str, key))


class _Race:
    """A ``race`` row, compact: devices as (platform, session, code, sent, done, alive, kicked_by)
    tuples and the REST Detail list as (Platform, Status) tuples (None when absent)."""

    __slots__ = ("w", "n", "user", "race", "t", "devices", "online")

    def __init__(self, w: Any, n: Any, user: str | None, race: str | None, t: int, data: Any) -> None:
        self.w, self.n, self.user, self.race, self.t = w, n, user, race, t
        data = data if isinstance(data, Mapping) else {}
        devices = data.get("devices")
        self.devices = tuple(
            (_s(d.get("platform")), _s(d.get("session")), _int(d.get("code")), _int(d.get("sent")),
             _int(d.get("done")), d.get("alive") is True, d.get("alive") is False, _s(d.get("kicked_by")))
            for d in (devices if isinstance(devices, list) else ()) if isinstance(d, Mapping))
        online = data.get("online")
        self.online = tuple(
            (_s(d.get("Platform")), _s(d.get("Status")))
            for d in online if isinstance(d, Mapping)) if isinstance(online, list) else None


# _Race.devices fields
_D_PLATFORM, _D_SESSION, _D_CODE, _D_SENT, _D_DONE, _D_ALIVE, _D_DEAD, _D_KICKED_BY = range(8)
_SWITCH_KEYS = ("from_user", "from_session", "login_user", "server_user", "server_status", "online")


def _switch_data(data: Any) -> tuple | None:
    """The fields switch_consistency reads from a ``switch`` row's data (None when absent)."""
    if not isinstance(data, Mapping):
        return None
    online = data.get("online")
    online = {str(k): v for k, v in online.items()} if isinstance(online, Mapping) else None
    return tuple(data.get(k) if k != "online" else online for k in _SWITCH_KEYS)


_EMPTY: list = []


def _by_start_end(e: tuple) -> tuple:
    return (e[0], e[1])


# Per-connection login-ish entry: (start, end, op, session, outcome, code, user, scenario)
_L_START, _L_END, _L_OP, _L_SID, _L_OUT, _L_CODE, _L_USER, _L_SCEN = range(8)


class History:
    """Compact index of journal rows for the checks (feed rows with :meth:`add`).

    Keeps per session: who/where/when and the server's ``kicked`` list; per connection:
    its login attempts and disconnects; events by session; integrity bookkeeping per
    worker. Memory is O(sessions + connections + events), not O(rows).
    """

    def __init__(self) -> None:
        self.rows = 0
        self.last_t = 0
        self.sessions: dict[str, _Sess] = {}
        self.kicks: dict[Any, list[tuple]] = {}       # sid -> [(t, by, reason, conn, user, w, n)]
        self.expiries: dict[Any, list[int]] = {}      # sid -> [t]
        self.expiry_rows: list[tuple] = []            # (t, sid, connkey, user, scenario, w, n)
        self.logouts: dict[str, tuple[int, int]] = {}  # sid -> (start, end) of the ok logout
        self.conn_logins: dict[Any, list[tuple]] = {}  # connkey -> login-ish entries
        self.conn_disc: dict[Any, list[tuple]] = {}    # connkey -> [(t, outcome, detail)]
        self.rest_kicks: dict[str, list[int]] = {}     # user -> [start]
        self.races: list[_Race] = []
        self.switches: list[tuple] = []  # (w, n, user, session, end, outcome, code, detail, _switch_data)
        # integrity
        self._seen: dict[Any, bytearray] = {}
        self._max_n: dict[Any, int] = {}
        self.dup_n: list[tuple] = []                  # (w, n, t)
        self.dup_count = 0
        self.bad_rows: list[dict] = []
        self.bad_count = 0
        self._starts: dict[Any, list[int]] | None = None
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
                    if n >= len(seen):
                        seen.extend(bytes(max(n + 1 - len(seen), len(seen))))
                    if seen[n]:
                        self.dup_count += 1
                        if len(self.dup_n) < _MAX_EXAMPLES:
                            self.dup_n.append((w, n, en))
                    else:
                        seen[n] = 1
                    if n > top:
                        top = n
                if st is None or en is None:
                    continue  # no usable times: counted by journal_integrity, useless as evidence
                if en > last_t:
                    last_t = en
                op = get("op")
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
            self.logouts[_intern(sid)] = (st, en)

    def _add_disconnect(self, row: Mapping, op: str, w: Any, n: Any, st: int, en: int, outcome: str) -> None:
        self.conn_disc.setdefault(_ckey(row), []).append((en, _si(outcome), _si(row.get("detail"))))

    def _add_rest_kick(self, row: Mapping, op: str, w: Any, n: Any, st: int, en: int, outcome: str) -> None:
        user = row.get("user")
        if outcome != "fail" and type(user) is str:
            self.rest_kicks.setdefault(user, []).append(st)

    def _add_race(self, row: Mapping, op: str, w: Any, n: Any, st: int, en: int, outcome: str) -> None:
        get = row.get
        self.races.append(_Race(w, n, _s(get("user")), _s(get("race")), en, get("data")))

    def _add_login(self, row: Mapping, op: str, w: Any, n: Any, st: int, en: int, outcome: str) -> None:
        get = row.get
        sid = get("session")
        sid = _intern(sid) if type(sid) is str else None
        user = get("user")
        user = _intern(user) if type(user) is str else None
        code = get("code")
        if type(code) is not int:
            code = _int(code)
        key = get("conn")
        key = _intern(key) if type(key) is str and key else _ckey(row)
        op = _intern(op)
        outcome = _intern(outcome)
        scenario = get("scenario")
        lst = self.conn_logins.get(key)
        if lst is None:
            lst = self.conn_logins[key] = []
        lst.append((st, en, op, sid, outcome, code, user, _intern(scenario) if type(scenario) is str else None))
        if op == "switch":
            self.switches.append((w, n, user, sid, en, outcome, code, _s(get("detail")), _switch_data(get("data"))))
        if not isinstance(sid, str) or not sid:
            return
        # an ok row made a session; so did a switch whose login worked (fail 0 = checks disagreed)
        if outcome != "ok" and not (op == "switch" and outcome == "fail" and code == 0):
            return
        if op == "login":
            kicked = get("kicked")
            if type(kicked) is not list:
                kicked_t = None
            elif not kicked:
                kicked_t = ()
            else:
                kicked_t = tuple(_intern(k) for k in kicked if type(k) is str)
            sess = _Sess(sid, user, _si(get("platform")), key, st, en, _int(get("expire_at")), kicked_t)
            self.sessions[sid] = sess  # a login row is the authoritative record
        elif sid not in self.sessions:
            # relogin / switch rows without a login row of their own: kicked list unknown
            self.sessions[sid] = _Sess(sid, user, _si(get("platform")), key, st, en, _int(get("expire_at")), None)

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
        """Sort the per-connection lists and index their start times (once, after feeding)."""
        starts: dict[Any, list[int]] = {}
        for key, lst in self.conn_logins.items():
            if len(lst) > 1:
                lst.sort(key=_by_start_end)
            starts[key] = [e[0] for e in lst]
        for lst in self.conn_disc.values():
            if len(lst) > 1:
                lst.sort()
        self._evictions = None
        self._starts = starts

    def _conn_starts(self, key: Any) -> list[int]:
        if self._starts is None:
            self._prepare()
        return self._starts.get(key, _EMPTY)  # type: ignore[union-attr]

    def conn_entries(self, key: Any) -> list[tuple]:
        """Login / relogin / switch entries of one connection, sorted by start."""
        self._conn_starts(key)
        return self.conn_logins.get(key, [])

    def next_login(self, s: _Sess) -> tuple | None:
        """The first login-ish entry on ``s``'s connection sent after ``s`` was established."""
        starts = self._conn_starts(s.conn)
        if not starts or starts[-1] < s.done:
            return None
        entries = self.conn_logins[s.conn]
        i = bisect_left(starts, s.done)
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
        d = self.conn_disc.get(key)
        return d[0] if d else None

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

    ``rows``: (seq, ts ns, event, session, user, platform, reason, by).
    """

    def __init__(self, rows: Iterable[Any] = ()) -> None:
        out = []
        self.bad = 0
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
        out.sort(key=lambda x: x[0])
        self.rows = out

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def read(cls, path: str | Path) -> "Ledger":
        """Read ``ledger.jsonl``; undecodable lines are skipped and counted in ``bad``."""
        bad = 0

        def gen() -> Iterator[Any]:
            nonlocal bad
            with open(path, "rb") as fh:
                for line in fh:
                    if not line.strip():
                        continue
                    try:
                        yield json.loads(line)
                    except (ValueError, RecursionError):
                        bad += 1

        led = cls(gen())
        led.bad += bad
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


def _history(rows: Iterable[Any] | History) -> History:
    return rows if isinstance(rows, History) else History.from_rows(rows)


def _ledger(ledger: Iterable[Any] | Ledger | None) -> Ledger | None:
    if ledger is None or isinstance(ledger, Ledger):
        return ledger
    return Ledger(ledger)


def _grouper(params: CheckParams, policy: str | None = None) -> Callable[[Any], tuple[str, int] | None]:
    """platform -> (group name, limit) under the policy; None for an unknown platform."""
    from harness.protocol import group_limit, policy_group

    pol = policy or params.policy
    cache: dict[Any, tuple[str, int] | None] = {}

    def group(platform: Any) -> tuple[str, int] | None:
        if not isinstance(platform, str):
            return None
        if platform not in cache:
            try:
                cache[platform] = (policy_group(pol, platform),
                                   group_limit(pol, platform, params.native_instances, params.web_instances))
            except (ValueError, TypeError):
                cache[platform] = None
        return cache[platform]

    return group


# --------------------------------------------------------------------------- checks


def kick_exactly_once(rows: Iterable[Any] | History, *, params: CheckParams | None = None,
                      ledger: Iterable[Any] | Ledger | None = None) -> CheckResult:
    """Every session the server reported evicted gets exactly one ``kicked_offline``.

    Evicted = listed in an ok login's ``kicked`` (or a ledger ``end`` with reason
    multi_device / same_instance / rest_kick). Violations: ``missing`` (never arrived within
    ``settle_s``; excused when the client ended the session first, or the run ended less
    than ``settle_s`` after the eviction), ``duplicate`` (2+ rows for one session),
    ``unreported`` (a kick for a session no response or ledger row said was evicted; a
    rest_kick is legit after a ``rest_kick`` op for that user).
    """
    p = params or CheckParams()
    h = _history(rows)
    led = _ledger(ledger)
    settle = int(p.settle_s * _NS)
    found = _Found("kick_exactly_once")
    evicted: dict[Any, tuple] = {}  # sid -> (by, t_evicted, source, reason)
    for sid, (by, _sent, done) in h.evictions().items():
        evicted[sid] = (by, done, "login response", None)
    if led is not None:
        for sid, (by, ts, reason) in led.kick_ends().items():
            if sid not in evicted:
                evicted[sid] = (by, ts, "ledger", reason)
    # sessions a race row reports still logged in after settling: the client waited with the
    # connection open, so closing it afterwards does not excuse a missing notification
    race_alive = {d[_D_SESSION] for r in h.races for d in r.devices if d[_D_ALIVE] and d[_D_SESSION]}
    for sid, (by, t_ev, source, reason) in evicted.items():
        got = h.kicks.get(sid, ())
        s = h.sessions.get(sid)
        if len(got) > 1:
            found.add("duplicate", got[1][0], {
                "user": got[0][4], "session": sid, "evicted_by": by, "count": len(got),
                "arrivals": [e[0] for e in got[:5]],
                "expected": "exactly one kicked_offline", "found": f"{len(got)} kicked_offline rows"},
                count=len(got) - 1)
        elif not got:
            if s is None:
                continue  # not a session this journal knows: nobody could have been told
            deadline = t_ev + settle
            if sid not in race_alive and _client_closed_before(h, s, deadline):
                continue
            if deadline > h.last_t:
                continue  # the run ended before the notification was due
            found.add("missing", t_ev, {
                **s.ref(), "evicted_by": by, "evicted_at": t_ev, "reported_by": source,
                "reason": reason or "multi_device/same_instance",
                "expected": f"one kicked_offline within settle_s={p.settle_s} s of the eviction",
                "found": "never arrived within settle" + (
                    "; the race still saw the device logged in after settling" if sid in race_alive else "")})
    info_users: set | None = None
    for sid, got in h.kicks.items():
        if sid in evicted:
            continue
        first = got[0]
        t, by, reason, _conn, user = first[:5]
        legit = False
        why = "no login response or ledger row reported this session evicted"
        if reason == "rest_kick":
            legit = any(st <= t for st in h.rest_kicks.get(user, ()))
            why = "rest_kick event without a preceding rest_kick op for this user"
        elif isinstance(sid, str) and (by is None or by not in h.sessions or h.sessions[by].kicked is None):
            # the evicting login's response is unknown to us (timed out, or not journaled)
            if by is None and info_users is None:
                info_users = _info_users(h)
            legit = by is not None or user in (info_users or ())
        if not legit:
            s = h.sessions.get(sid) if isinstance(sid, str) else None
            found.add("unreported", t, {
                **(s.ref() if s else {"session": sid, "user": user}), "by": by, "reason": reason,
                "expected": "no kicked_offline for a session that was not evicted", "found": why})
        if len(got) > 1:
            found.add("duplicate", got[1][0], {
                "user": user, "session": sid, "count": len(got), "arrivals": [e[0] for e in got[:5]],
                "expected": "at most one kicked_offline", "found": f"{len(got)} kicked_offline rows"},
                count=len(got) - 1)
    return found.result()


def _info_users(h: History) -> set:
    """Users with a login of unknown outcome (it may have made a session we never saw)."""
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


def policy_limit(rows: Iterable[Any] | History, *, params: CheckParams | None = None,
                 ledger: Iterable[Any] | Ledger | None = None) -> CheckResult:
    """No user ever has more live sessions in a policy group than the group's limit.

    Evidence: ``race`` rows (devices the clients still believe alive, and the REST
    ``query_online_status`` Detail list); the journal's sessions of one user whose lives
    (login done -> first sign of their end) overlap beyond the limit for longer than
    ``settle_s``; and, with a ledger, a replay of login/end rows in server order.
    """
    p = params or CheckParams()
    h = _history(rows)
    led = _ledger(ledger)
    found = _Found("policy_limit")
    settle = int(p.settle_s * _NS)
    group = _grouper(p)
    # 1. races
    for r in h.races:
        alive: dict[str, list] = {}
        limits: dict[str, int] = {}
        for d in r.devices:
            if d[_D_ALIVE]:
                g = group(d[_D_PLATFORM])
                if g:
                    alive.setdefault(g[0], []).append(d[_D_SESSION])
                    limits[g[0]] = g[1]
        for gname, sids in alive.items():
            if len(sids) > limits[gname]:
                found.add("race_survivors", r.t, {
                    "user": r.user, "race": r.race, "group": gname, "limit": limits[gname],
                    "survivors": sids, "expected": f"at most {limits[gname]} alive in group {gname!r}",
                    "found": f"{len(sids)} devices still logged in after settling"})
        counts: dict[str, int] = {}
        for platform, status in r.online or ():
            if status == "Online":
                g = group(platform)
                if g:
                    counts[g[0]] = counts.get(g[0], 0) + 1
                    limits[g[0]] = g[1]
        for gname, c in counts.items():
            if c > limits[gname]:
                found.add("race_online", r.t, {
                    "user": r.user, "race": r.race, "group": gname, "limit": limits[gname],
                    "online": [{"Platform": pl, "Status": st} for pl, st in r.online or ()],
                    "expected": f"query_online_status shows at most {limits[gname]} Online in group {gname!r}",
                    "found": f"{c} Online"})
    # 2. journal sessions alive at once
    evicted = h.evictions()
    led_end = led.end_ts() if led is not None else {}
    by_user: dict[Any, list[_Sess]] = {}
    for s in h.sessions.values():
        by_user.setdefault(s.user, []).append(s)
    for user, sess in by_user.items():
        if len(sess) < 2:
            continue
        groups: dict[str, list] = {}
        for s in sess:
            g = group(s.platform)
            if g:
                groups.setdefault(g[0], [g[1]]).append(s)
        for gname, (limit, *members) in groups.items():
            if len(members) <= limit:
                continue
            _overlaps(h, user, gname, limit, members, evicted, led_end, settle, found)
    # 3. ledger replay
    if led is not None:
        _ledger_replay(led, group, found)
    return found.result()


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
            g = group(platform)
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


def last_login_wins(rows: Iterable[Any] | History, *, params: CheckParams | None = None,
                    ledger: Iterable[Any] | Ledger | None = None) -> CheckResult:
    """The newest login always wins: a session is never evicted (multi_device) by an older one.

    Older = its login completed before the other's was sent (or, with a ledger, an earlier
    login ``seq``). Evidence: ``kicked_offline`` rows' ``by``, ledger ``end`` rows' ``by``,
    ``race`` rows where an older device is still alive while a newer one of the same group
    is not, and races where nobody survived although the newest device was kicked.
    """
    p = params or CheckParams()
    h = _history(rows)
    led = _ledger(ledger)
    found = _Found("last_login_wins")
    group = _grouper(p)
    seq = led.login_seq() if led is not None else {}
    flagged: set = set()

    def older(a: str, b: str, sa: _Sess | None, sb: _Sess | None) -> bool | None:
        if a in seq and b in seq:
            return seq[a] < seq[b]
        if sa is not None and sb is not None:
            return sa.done < sb.sent
        return None

    for sid, got in h.kicks.items():
        for t, by, reason, _conn, user, _w, _n in got:
            if reason not in ("multi_device", "same_instance") or not isinstance(by, str) or sid in flagged:
                continue
            sb, sa = h.sessions.get(sid), h.sessions.get(by)
            if sa is not None and sb is not None:
                ga, gb = group(sa.platform), group(sb.platform)
                if ga is None or gb is None or ga[0] != gb[0]:
                    continue
            if older(by, sid, sa, sb):
                flagged.add(sid)
                found.add("newest_evicted", t, {
                    "user": user, "session": sid, "by": by,
                    "newer": sb.ref() if sb else {"session": sid}, "older": sa.ref() if sa else {"session": by},
                    "expected": f"{by} (older) evicted by {sid} (newer)",
                    "found": f"kicked_offline for the newer session {sid} by the older {by}"})
    if led is not None:
        for r in led.rows:
            _seq, ts, ev, sid, user, _pl, reason, by = r
            if (ev == "end" and reason in ("multi_device", "same_instance") and isinstance(by, str)
                    and sid not in flagged):
                if by in seq and sid in seq and seq[by] < seq[sid]:
                    flagged.add(sid)
                    found.add("newest_evicted", ts, {
                        "user": user, "session": sid, "by": by, "login_seq": {sid: seq[sid], by: seq[by]},
                        "expected": f"{by} (login seq {seq[by]}) evicted by {sid} (seq {seq[sid]})",
                        "found": f"ledger: {sid} ended multi_device by the older {by}"})
    reported = set(h.evictions()) | (set(led.kick_ends()) if led is not None else set())
    for r in h.races:
        devs = [d for d in r.devices if d[_D_CODE] == 0 and d[_D_SESSION]
                and d[_D_SENT] is not None and d[_D_DONE] is not None]
        if devs and not any(d[_D_ALIVE] for d in devs):
            newest = max(devs, key=lambda d: d[_D_SENT])
            if newest[_D_KICKED_BY] and newest[_D_SESSION] not in flagged:
                flagged.add(newest[_D_SESSION])
                found.add("no_survivor", r.t, {
                    "user": r.user, "race": r.race, "newest": newest[_D_SESSION],
                    "kicked_by": newest[_D_KICKED_BY], "devices": len(devs),
                    "expected": "the newest login survives the race",
                    "found": f"no device alive; the newest ({newest[_D_SESSION]}) was kicked by "
                    f"{newest[_D_KICKED_BY]}"})
        for a in devs:
            if not a[_D_ALIVE] or a[_D_SESSION] in reported:
                continue  # an older device the server did evict: a lost notification, not a wrong choice
            for b in devs:
                if not b[_D_DEAD] or b[_D_SESSION] in flagged or not a[_D_DONE] < b[_D_SENT]:
                    continue
                ga, gb = group(a[_D_PLATFORM]), group(b[_D_PLATFORM])
                if ga is None or gb is None or ga[0] != gb[0]:
                    continue
                flagged.add(b[_D_SESSION])
                found.add("older_survived", r.t, {
                    "user": r.user, "race": r.race, "older": a[_D_SESSION], "newer": b[_D_SESSION],
                    "older_done": a[_D_DONE], "newer_sent": b[_D_SENT], "newer_kicked_by": b[_D_KICKED_BY],
                    "expected": f"newer {b[_D_SESSION]} survives, older {a[_D_SESSION]} is evicted",
                    "found": "the older device is alive and the newer one is not"})
    return found.result()


def switch_consistency(rows: Iterable[Any] | History, *, params: CheckParams | None = None) -> CheckResult:
    """An account switch (login of B on a connection holding A) leaves exactly B logged in.

    Per ``switch`` row whose login succeeded: ``data.login_user`` == ``user`` ==
    ``data.server_user``, ``data.server_status`` == 1, REST ``online`` (when present) shows
    B Online and A Offline, and the switched-from session never gets a ``kicked_offline``.
    """
    h = _history(rows)
    found = _Found("switch_consistency")
    for w, n, user, sid, t, outcome, code, _detail, data in h.switches:
        if outcome == "info" or code != 0:
            continue
        problems = []
        from_user = from_session = None
        if data is None:
            problems.append("switch row has no data to check")
        else:
            from_user, from_session, login_user, server_user, server_status, online = data
            if login_user != user:
                problems.append(f"getLoginUser() = {login_user!r}, expected {user!r}")
            if server_user != user:
                problems.append(f"server status userID = {server_user!r}, expected {user!r}")
            if server_status != 1:
                problems.append(f"server status = {server_status!r}, expected 1 (logged in)")
            if online is not None:
                if user in online and online[user] != "Online":
                    problems.append(f"query_online_status says {user!r} is {online[user]!r}, expected Online")
                if (isinstance(from_user, str) and from_user != user and from_user in online
                        and online[from_user] != "Offline"):
                    problems.append(f"query_online_status says {from_user!r} is {online[from_user]!r}, "
                                    "expected Offline")
            if isinstance(from_session, str) and h.kicks.get(from_session):
                k = h.kicks[from_session][0]
                problems.append(f"the switched-from session {from_session} got kicked_offline "
                                f"({k[2]}, by {k[1]}); a switch ends it silently")
        if problems:
            found.add("mismatch", t, {
                "w": w, "n": n, "user": user, "session": sid, "from_user": from_user,
                "from_session": from_session,
                "expected": "only the new account logged in, on the client, the server and REST",
                "found": "; ".join(problems)})
    return found.result()


def relogin_recovers(rows: Iterable[Any] | History, *, params: CheckParams | None = None) -> CheckResult:
    """After a UserSig expiry the client is back online within ``relogin_bound_s``.

    Every ``sig_expired`` row, and every failed login with an expiry code (6206, 70001,
    70052) in scenario relogin_expiry, is followed by an ok ``relogin`` (or ``login``) on
    the same connection that ends within the bound; excused when the run ended within the
    bound, or the client closed its connection without trying. Also: no login loop (in relogin_expiry, a login failing with
    a non-expiry code retried on the same connection within 1 s for the same user).
    """
    p = params or CheckParams()
    h = _history(rows)
    found = _Found("relogin_recovers")
    bound = int(p.relogin_bound_s * _NS)

    def check(key: Any, t: int, what: str, ref: dict) -> None:
        starts = h._conn_starts(key)
        entries = h.conn_logins.get(key, [])
        i = bisect_left(starts, t - _EPS_NS)
        attempts = []
        while i < len(entries) and entries[i][_L_START] <= t + bound:
            e = entries[i]
            if e[_L_OP] in ("relogin", "login"):
                if e[_L_OUT] == "ok" and e[_L_END] <= t + bound:
                    return
                attempts.append(e)
            i += 1
        if t + bound > h.last_t:
            return  # the run ended within the bound
        d = h.disconnect_of(key)
        if not attempts and d is not None and t <= d[0] <= t + bound and d[1] == "ok":
            return  # the client chose to leave (closed the connection) without trying
        if attempts:
            last = attempts[-1]
            if last[_L_OUT] == "ok":
                seen = f"back online only after {_secs(last[_L_END] - t)} s ({last[_L_OP]})"
            else:
                seen = f"{len(attempts)} attempt(s), last {last[_L_OP]} {last[_L_OUT]} code {last[_L_CODE]}"
        else:
            seen = "no relogin attempt on this connection"
        found.add("no_relogin", t, {
            **ref, "conn": _conn_str(key), "trigger": what,
            "expected": f"an ok relogin within relogin_bound_s={p.relogin_bound_s} s", "found": seen})

    for t, sid, key, user, _scen, w, n in h.expiry_rows:
        check(key, t, "sig_expired", {"user": user, "session": sid, "w": w, "n": n})
    for key, entries in h.conn_logins.items():
        h._conn_starts(key)
        prev = None
        for e in entries:
            if e[_L_SCEN] == RELOGIN_SCENARIO and e[_L_OP] == "login" and e[_L_OUT] == "fail":
                if e[_L_CODE] in EXPIRY_CODES:
                    check(key, e[_L_END], f"login failed {e[_L_CODE]}", {"user": e[_L_USER]})
            if e[_L_OP] == "login":
                if (prev is not None and prev[_L_OUT] == "fail" and prev[_L_CODE] not in EXPIRY_CODES
                        and prev[_L_SCEN] == RELOGIN_SCENARIO and prev[_L_USER] == e[_L_USER]
                        and e[_L_START] - prev[_L_END] < _LOOP_WINDOW_NS):
                    found.add("login_loop", e[_L_START], {
                        "user": e[_L_USER], "conn": _conn_str(key), "failed_code": prev[_L_CODE],
                        "failed_at": prev[_L_END], "retried_at": e[_L_START],
                        "gap_s": _secs(e[_L_START] - prev[_L_END]),
                        "expected": "no immediate retry after a non-expiry login failure",
                        "found": f"login retried {_secs(e[_L_START] - prev[_L_END])} s after code {prev[_L_CODE]}"})
                prev = e
    return found.result()


def expiry_on_time(rows: Iterable[Any] | History, *, params: CheckParams | None = None,
                   ledger: Iterable[Any] | Ledger | None = None) -> CheckResult:
    """Every session still online at its deadline gets exactly one ``sig_expired``, on time.

    Deadline = (``expire_at`` + ``leeway_s``) s. On time = within
    [deadline - ``clock_skew_s``, deadline + ``expiry_tolerance_s``]. Violations: ``early``,
    ``late``, ``twice``, ``two_events`` (sig_expired and kicked_offline for one session),
    ``after_end`` (after the client ended the session on that connection), ``missing``
    (excused when the session ended first or the run ended before the tolerance ran out).
    """
    p = params or CheckParams()
    h = _history(rows)
    led = _ledger(ledger)
    found = _Found("expiry_on_time")
    lee, skew, tol = int(p.leeway_s * _NS), int(p.clock_skew_s * _NS), int(p.expiry_tolerance_s * _NS)
    evicted = h.evictions()
    led_end = led.end_ts() if led is not None else {}
    for sid, times in h.expiries.items():
        s = h.sessions.get(sid) if isinstance(sid, str) else None
        ref = s.ref() if s else {"session": sid}
        if len(times) > 1:
            found.add("twice", sorted(times)[1], {**ref, "arrivals": sorted(times)[:5],
                                                  "expected": "exactly one sig_expired",
                                                  "found": f"{len(times)} sig_expired rows"},
                      count=len(times) - 1)
        t = min(times)
        if h.kicks.get(sid):
            found.add("two_events", t, {**ref, "kicked_at": h.kicks[sid][0][0], "expired_at": t,
                                        "expected": "at most one event per ended session",
                                        "found": "both kicked_offline and sig_expired"})
            continue
        if s is None:
            continue
        end_evidence = _strict_end(h, s)
        if end_evidence is not None and t > end_evidence[0]:
            found.add("after_end", t, {**ref, "ended": end_evidence[0], "ended_by": end_evidence[1],
                                       "expected": "no event for a session that already ended",
                                       "found": f"sig_expired {_secs(t - end_evidence[0])} s after {end_evidence[1]}"})
            continue
        if s.expire_at is None:
            continue
        deadline = s.expire_at * _NS + lee
        if t < deadline - skew:
            found.add("early", t, {**ref, "expire_at": s.expire_at, "deadline": deadline,
                                   "expected": f"not before expire_at + leeway_s - clock_skew_s "
                                   f"({p.leeway_s} s, {p.clock_skew_s} s)",
                                   "found": f"{_secs(deadline - t)} s before the deadline"})
        elif t > deadline + tol:
            found.add("late", t, {**ref, "expire_at": s.expire_at, "deadline": deadline,
                                  "expected": f"within expiry_tolerance_s={p.expiry_tolerance_s} s of the deadline",
                                  "found": f"{_secs(t - deadline)} s after the deadline"})
    for s in h.sessions.values():
        if s.expire_at is None or s.sid in h.expiries:
            continue
        due = s.expire_at * _NS + lee + tol
        if due > h.last_t:
            continue  # the run ended before the event was due
        ended = _life_end(h, s, evicted, led_end)
        if ended[0] < due:
            continue
        found.add("missing", s.expire_at * _NS + lee, {
            **s.ref(), "expire_at": s.expire_at, "deadline": s.expire_at * _NS + lee,
            "expected": f"one sig_expired within expiry_tolerance_s={p.expiry_tolerance_s} s of the deadline",
            "found": "none; the session was still online"})
    return found.result()


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


def journal_integrity(rows: Iterable[Any] | History, *, params: CheckParams | None = None,
                      locust_total: int | None = None) -> CheckResult:
    """The journal is whole: per worker ``n`` runs from 0 without gaps or duplicates; every
    row has outcome ok/fail/info, int unix-ns times with intended <= start <= end; and the
    row total equals Locust's request total (when ``locust_total`` is given)."""
    h = _history(rows)
    found = _Found("journal_integrity")
    for ex in h.bad_rows:
        found.add("bad_row", ex.get("t"), {k: v for k, v in ex.items() if k != "t"}, count=1)
    if h.bad_count > len(h.bad_rows):
        found.count += h.bad_count - len(h.bad_rows)
    for w, n, t in h.dup_n:
        found.add("duplicate_n", t, {"w": w, "n": n, "expected": "each n once", "found": f"n={n} twice"})
    if h.dup_count > len(h.dup_n):
        found.count += h.dup_count - len(h.dup_n)
    for w, seen in h._seen.items():
        top = h._max_n[w]
        i = seen.find(0, 0, top + 1)
        while 0 <= i <= top:
            j = seen.find(1, i, top + 1)
            j = top + 1 if j < 0 else j
            found.add("gap", None, {"w": w, "missing_from": i, "missing_to": j - 1, "missing": j - i,
                                    "expected": f"n = 0..{top} without gaps",
                                    "found": f"n {i}..{j - 1} missing"})
            i = seen.find(0, j, top + 1)
    if locust_total is not None and locust_total != h.rows:
        found.add("total_mismatch", h.last_t or None, {
            "journal_rows": h.rows, "locust_requests": int(locust_total),
            "expected": "one journal row per Locust request event",
            "found": f"journal {h.rows} rows vs Locust {locust_total} requests"})
    return found.result()


# --------------------------------------------------------------------------- shell

_CHECKS: dict[str, Callable[..., CheckResult]] = {
    "kick_exactly_once": lambda h, p, led, lt: kick_exactly_once(h, params=p, ledger=led),
    "policy_limit": lambda h, p, led, lt: policy_limit(h, params=p, ledger=led),
    "last_login_wins": lambda h, p, led, lt: last_login_wins(h, params=p, ledger=led),
    "switch_consistency": lambda h, p, led, lt: switch_consistency(h, params=p),
    "relogin_recovers": lambda h, p, led, lt: relogin_recovers(h, params=p),
    "expiry_on_time": lambda h, p, led, lt: expiry_on_time(h, params=p, ledger=led),
    "journal_integrity": lambda h, p, led, lt: journal_integrity(h, params=p, locust_total=lt),
}


def _enabled(enabled: Sequence[str] | None, config: Mapping) -> list[str]:
    key = "checks.enabled"
    if enabled is None:
        checks = config.get("checks") if isinstance(config, Mapping) else None
        enabled = checks.get("enabled") if isinstance(checks, Mapping) else None
        if enabled is None:
            return list(CHECK_NAMES)
    if isinstance(enabled, str) or not isinstance(enabled, Sequence):
        raise ConfigError(key, f"expected a list of check names, got {enabled!r}")
    out = []
    for i, name in enumerate(enabled):
        if name not in _CHECKS:
            raise ConfigError(f"{key}[{i}]", f"expected one of {', '.join(CHECK_NAMES)}, got {name!r}")
        if name not in out:
            out.append(name)
    return out


def _load_run_config(root: Path) -> dict:
    path = root / "config.yaml"
    if not path.is_file():
        return {}
    try:
        import yaml

        obj = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001 - unreadable config -> one sentence
        raise ChecksInputError(f"{path} is not readable YAML ({type(exc).__name__})") from None
    return obj if isinstance(obj, dict) else {}


def _journal_rows(path: Path, h: History) -> Iterator[Any]:
    """Decoded rows of one JSONL file; undecodable lines are reported to ``h`` and skipped.

    Uses the C scanner of the standard ``json`` module directly (about twice as fast as
    ``json.loads`` per line, the dominant cost on big journals)."""
    scan = json.JSONDecoder().scan_once
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            try:
                row, end = scan(line, 0)
                if end != len(line) and line[end:].strip():
                    raise ValueError("trailing data")
            except StopIteration:  # no value at position 0: blank line or leading space
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (ValueError, RecursionError):
                    h.add_bad_line(f"{path.name}:{lineno}", "undecodable JSON line")
                    continue
            except (ValueError, RecursionError):
                h.add_bad_line(f"{path.name}:{lineno}", "undecodable JSON line")
                continue
            if type(row) is dict:
                yield row
            else:
                h.add_bad_line(f"{path.name}:{lineno}", "not a JSON object")


def _stream_journals(root: Path, h: History) -> int:
    """Feed every ``journal/*.jsonl`` into ``h``; returns the number of files."""
    jdir = root / "journal"
    files = sorted(jdir.glob("*.jsonl")) if jdir.is_dir() else []
    for path in files:
        h.feed(_journal_rows(path, h), where=path.name)
    return len(files)


def run_checks(run_dir: str | Path, *, config: Mapping | None = None, enabled: Sequence[str] | None = None,
               locust_total: int | None = None) -> dict[str, CheckResult]:
    """Run the enabled checks on a run folder; name -> :class:`CheckResult` (in check order).

    ``config``: the effective config (default: the folder's ``config.yaml``); ``enabled``:
    check names (default ``checks.enabled``, else all); ``locust_total``: Locust's total
    request count for journal_integrity (see :func:`read_locust_total`). Journals are
    streamed once; ``ledger.jsonl`` is used when present. Raises :class:`ChecksInputError`
    for a missing folder and :class:`ConfigError` for a bad config value.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise ChecksInputError(f"run folder {str(root)!r} does not exist or is not a folder")
    cfg = _load_run_config(root) if config is None else config
    names = _enabled(enabled, cfg)
    params = CheckParams.from_config(cfg)
    h = History()
    _stream_journals(root, h)
    ledger = Ledger.read(root / "ledger.jsonl") if (root / "ledger.jsonl").is_file() else None
    return {name: _CHECKS[name](h, params, ledger, locust_total) for name in names}


def read_locust_total(run_dir: str | Path) -> int | None:
    """Locust's Aggregated "Request Count" from ``locust_stats.csv`` (None when absent/unreadable)."""
    root = Path(run_dir)
    path = root / "locust_stats.csv"
    if not path.is_file():
        cands = [p for p in sorted(root.glob("*_stats.csv"))]
        if not cands:
            return None
        path = cands[0]
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            for rec in csv.DictReader(fh):
                if rec.get("Name") == "Aggregated":
                    return int(float(rec.get("Request Count") or 0))
    except (OSError, UnicodeDecodeError, csv.Error, ValueError, TypeError):
        return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.checks RUN_DIR``: one line per check; exit 4 / 0 / 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m harness.checks results/<run-id>", file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    root = Path(args[0])
    if not root.is_dir() or not ((root / "journal").is_dir() or (root / "config.yaml").is_file()):
        print(f"error: {str(root)!r} is not a run folder (expected results/<run-id>/ with journal/)",
              file=sys.stderr)
        return 2
    try:
        results = run_checks(root, locust_total=read_locust_total(root))
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    width = max(len(n) for n in results) if results else 0
    for name, res in results.items():
        line = f"{name:<{width}}  violations={res.violations}"
        if res.examples:
            line += "  first: " + json.dumps(res.examples[0], default=str)[:400]
        print(line)
    return 4 if any(r.violations for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
