"""The reference server's state machine (sans-IO): sessions, policy, expiry, lockout, faults.

Every entry point is a plain synchronous method that mutates the hub and returns an
*outbox*: ``[(conn, frame), ...]`` in the order the frames must be written. The shell
(harness/targets/server/app.py) writes them without awaiting anything in between, so the order
of effects on the wire is exactly the order decided here. Because nothing here awaits,
each request is handled atomically: concurrent logins of one user are serialised by the
event loop and the policy can never be exceeded (barring the seeded faults).

Rules (shared PROTOCOL.md sections 3-5, 7):

* login check order: sdkAppID (70020) -> require_import (70107) -> lockout (70050) ->
  UserSig (section 1 codes; each counts as a failure towards the lockout).
* A login first ends the connection's own session (``switch`` / ``relogin``, no event),
  then evicts per ``harness.protocol.plan_login`` (``same_instance`` then ``multi_device``;
  a ``kickedOffline`` event each), then creates the new session.
* Ledger: evicted/ended sessions' ``end`` rows are written before the new ``login`` row.
* Expiry: one heap keyed by ``time + expire + leeway`` with lazy deletion (ended sessions
  stay in the heap until popped; the heap is rebuilt when dead entries dominate).
* Every ended session gets at most one event; a live session none (``dup_kick`` aside).
* Frames that ``parse_request`` refuses (6017 / 7003) count as malformed; ``max_bad_frames``
  of them in a row close the connection (1008); any valid request resets the count.

Seeded faults (each visible to a client; off unless configured):

==============  =========================================================================
drop_kick       an evicted/kicked session ends but no kickedOffline is sent
dup_kick        kickedOffline is sent twice
double_login    single_platform: a login that should evict (multi_device) does not
kick_newest     when a multi_device eviction is due, the NEW session is ended instead
                (after its success response) with ``by`` = the old session, which stays
delay_expiry    userSigExpired (and the end of the session) comes ``fault_delay_s`` late
==============  =========================================================================

Times: ``clock()`` returns Unix seconds (float); ``loginTime``/``serverTime`` are ms.
"""
from __future__ import annotations

import heapq
import os
import random
import time
from collections import deque
from typing import Any, Callable, Iterable

from harness.protocol import (
    BadRequest,
    Heartbeat,
    LiveSession,
    Login,
    Logout,
    Status,
    encode_kicked_offline,
    encode_response,
    encode_user_sig_expired,
    parse_request,
    plan_login,
)
from harness.targets.server.ledger import Ledger
from harness.targets.server.settings import ServerSettings
from harness.usersig import UserSigError, verify_usersig

OK = 0
ERR_NOT_LOGGED_IN = 6014
ERR_SDKAPPID_NOT_FOUND = 70020
ERR_FREQ_LIMIT = 70050
ERR_ACCOUNT_NOT_FOUND = 70107

STATUS_LOGINED, STATUS_LOGOUT = 1, 3


class Conn:
    """One WebSocket connection = one simulated SDK instance. ``sink`` is the shell's socket."""

    __slots__ = ("cid", "sink", "session", "bad_frames", "closed")

    def __init__(self, cid: int, sink: Any = None) -> None:
        self.cid = cid
        self.sink = sink
        self.session: Session | None = None
        self.bad_frames = 0
        self.closed = False


class Session:
    """A login session. ``expire_at`` is the sig's ``time + expire`` (Unix s); ``deadline`` the
    moment the sweeper ends it (``expire_at + leeway`` [+ fault delay]); ``order`` server order."""

    __slots__ = ("session_id", "user_id", "platform", "instance_id", "order", "login_ms",
                 "expire_at", "deadline", "conn", "alive")

    def __init__(self, session_id: str, user_id: str, platform: str, instance_id: str, order: int,
                 login_ms: int, expire_at: int, deadline: float, conn: Conn) -> None:
        self.session_id = session_id
        self.user_id = user_id
        self.platform = platform
        self.instance_id = instance_id
        self.order = order
        self.login_ms = login_ms
        self.expire_at = expire_at
        self.deadline = deadline
        self.conn = conn
        self.alive = True

    def ref(self) -> dict[str, str]:
        """``{"sessionID","platform","instanceID"}`` as used in ``kicked`` and ``by``."""
        return {"sessionID": self.session_id, "platform": self.platform, "instanceID": self.instance_id}

    def live(self) -> LiveSession:
        return LiveSession(self.session_id, self.platform, self.instance_id, self.order)


Outbox = list[tuple[Conn, str]]


class Hub:
    """All server state. Not thread-safe: use from one event loop."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        clock: Callable[[], float] = time.time,
        ledger: Ledger | None = None,
        session_prefix: str | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._ledger = ledger
        self._prefix = session_prefix if session_prefix is not None else os.urandom(3).hex() + "-"
        self._order = 0
        self._next_cid = 0
        self._by_user: dict[str, dict[str, Session]] = {}
        self._heap: list[tuple[float, int, Session]] = []
        self._heap_dead = 0
        self._accounts: set[str] = set()
        self._revoked: dict[str, int] = {}
        self._failures: dict[str, deque[float]] = {}
        self._locked: dict[str, float] = {}
        self._next_prune = 0.0
        self._fault_rates = settings.fault_rates
        self._rng = random.Random(settings.fault_seed)
        self.live_sessions = 0
        self.conns: set[Conn] = set()

    # ------------------------------------------------------------------ faults
    def _fault(self, name: str) -> bool:
        rate = self._fault_rates.get(name)
        if rate is None or rate <= 0.0:
            return False
        return rate >= 1.0 or self._rng.random() < rate

    # ------------------------------------------------------------------ connections
    def connect(self, sink: Any = None) -> Conn:
        """Register a new connection (``sink`` is whatever the shell writes frames to)."""
        self._next_cid += 1
        conn = Conn(self._next_cid, sink)
        self.conns.add(conn)
        return conn

    def disconnect(self, conn: Conn) -> None:
        """The connection closed: its session ends at once (reason ``disconnect``, no event)."""
        if conn.closed:
            return
        conn.closed = True
        self.conns.discard(conn)
        if conn.session is not None:
            self._end(conn.session, "disconnect", None)

    # ------------------------------------------------------------------ frames
    def handle_text(self, conn: Conn, text: str) -> tuple[Outbox, bool]:
        """Handle one text frame; returns (outbox, close_for_too_many_bad_frames)."""
        req = parse_request(text)
        if isinstance(req, BadRequest):
            conn.bad_frames += 1
            out: Outbox = [(conn, encode_response(req.seq, req.code, req.desc))]
            return out, conn.bad_frames >= self.settings.max_bad_frames
        conn.bad_frames = 0
        if isinstance(req, Login):
            return self.login(conn, req), False
        if isinstance(req, Heartbeat):
            return [(conn, encode_response(req.seq, OK, "", {"serverTime": int(self._clock() * 1000)}))], False
        if isinstance(req, Status):
            return [(conn, encode_response(req.seq, OK, "", self.status(conn)))], False
        if isinstance(req, Logout):
            return [(conn, self.logout(conn, req.seq))], False
        raise AssertionError(f"unhandled request {req!r}")  # pragma: no cover

    def status(self, conn: Conn) -> dict[str, Any]:
        """The server's view of ``conn`` (status 1 = logged in, 3 = logged out)."""
        s = conn.session
        if s is None:
            return {"status": STATUS_LOGOUT, "userID": None, "sessionID": None, "platform": None, "instanceID": None}
        return {"status": STATUS_LOGINED, "userID": s.user_id, "sessionID": s.session_id,
                "platform": s.platform, "instanceID": s.instance_id}

    def logout(self, conn: Conn, seq: int) -> str:
        """End the connection's session (reason ``logout``); 6014 when there is none."""
        if conn.session is None:
            return encode_response(seq, ERR_NOT_LOGGED_IN, "Not logged in.")
        self._end(conn.session, "logout", None)
        return encode_response(seq, OK, "")

    # ------------------------------------------------------------------ login
    def check_login(self, req: Login, now: float) -> tuple[int, str, int]:
        """Run the server-side login checks; returns (code, desc, sig expire_at)."""
        st = self.settings
        user = req.user_id
        if req.sdk_app_id != st.sdkappid:
            return ERR_SDKAPPID_NOT_FOUND, f"sdkAppID {req.sdk_app_id} is not served by this server.", 0
        if st.require_import and user not in self._accounts:
            return ERR_ACCOUNT_NOT_FOUND, "Account is not imported (this server requires account_import).", 0
        if self._locked_out(user, now):
            return ERR_FREQ_LIMIT, "Too many failed logins for this userID; try again later.", 0
        try:
            info = verify_usersig(req.user_sig, sdk_app_id=st.sdkappid, secret_key=st.secret_key, user_id=user,
                                  now=now, leeway=st.leeway_s, revoked_at=self._revoked.get(user))
        except UserSigError as exc:
            self._note_failure(user, now)
            return exc.code, exc.desc, 0
        return OK, "", info.expire_at

    def login(self, conn: Conn, req: Login) -> Outbox:
        """Handle a parsed login; returns the response first, then any events."""
        now = self._clock()
        code, desc, expire_at = self.check_login(req, now)
        if code != OK:
            return [(conn, encode_response(req.seq, code, desc))]
        st = self.settings
        user = req.user_id
        old = conn.session
        if old is not None:
            self._end(old, "switch" if old.user_id != user else "relogin", None)

        self._order += 1
        order = self._order
        sid = f"{self._prefix}{order}"
        mine = self._by_user.get(user)
        plan: list[tuple[LiveSession, str]] = []
        if mine:
            plan = plan_login(st.policy, [s.live() for s in mine.values()],
                              LiveSession(sid, req.platform, req.instance_id, order),
                              st.native_instances, st.web_instances, st.max_sessions)
        blocker: Session | None = None  # kick_newest: the old session that ends up kicking the new one
        if plan and any(reason == "multi_device" for _, reason in plan):
            if st.policy == "single_platform" and self._fault("double_login"):
                plan = [p for p in plan if p[1] != "multi_device"]
            elif self._fault("kick_newest"):
                blocker = mine[next(p[0].session_id for p in plan if p[1] == "multi_device")]  # type: ignore[index]
                plan = [p for p in plan if p[1] != "multi_device"]

        by = {"sessionID": sid, "platform": req.platform, "instanceID": req.instance_id}
        events: Outbox = []
        kicked: list[dict[str, str]] = []
        for live, reason in plan:
            victim = mine[live.session_id]  # type: ignore[index]
            kicked.append(victim.ref())
            self._end(victim, reason, sid)
            self._kick_frames(victim, reason, by, events)

        deadline = float(expire_at + st.leeway_s)
        if self._fault("delay_expiry"):
            deadline += st.fault_delay_s
        session = Session(sid, user, req.platform, req.instance_id, order, int(now * 1000), expire_at, deadline, conn)
        self._start(session)
        data = {"sessionID": sid, "userID": user, "platform": req.platform, "instanceID": req.instance_id,
                "loginTime": session.login_ms, "sigExpireAt": expire_at, "kicked": kicked}
        out: Outbox = [(conn, encode_response(req.seq, OK, "", data))]
        if blocker is not None:
            self._end(session, "multi_device", blocker.session_id)
            out.append((conn, encode_kicked_offline(sid, "multi_device", blocker.ref())))
        out.extend(events)
        return out

    def _kick_frames(self, victim: Session, reason: str, by: dict[str, str] | None, out: Outbox) -> None:
        """Append the kickedOffline event(s) for an ended session (drop_kick / dup_kick apply)."""
        if victim.conn.closed or self._fault("drop_kick"):
            return
        frame = encode_kicked_offline(victim.session_id, reason, by)
        out.append((victim.conn, frame))
        if self._fault("dup_kick"):
            out.append((victim.conn, frame))

    # ------------------------------------------------------------------ session bookkeeping
    def _start(self, s: Session) -> None:
        mine = self._by_user.get(s.user_id)
        if mine is None:
            mine = self._by_user[s.user_id] = {}
        mine[s.session_id] = s
        s.conn.session = s
        self.live_sessions += 1
        heapq.heappush(self._heap, (s.deadline, s.order, s))
        if self._ledger is not None:
            self._ledger.record("login", s.session_id, s.user_id, s.platform, s.instance_id)

    def _end(self, s: Session, reason: str, by: str | None) -> None:
        if not s.alive:
            return
        s.alive = False
        mine = self._by_user.get(s.user_id)
        if mine is not None:
            mine.pop(s.session_id, None)
            if not mine:
                del self._by_user[s.user_id]
        if s.conn.session is s:
            s.conn.session = None
        self.live_sessions -= 1
        if reason != "sig_expired":
            self._heap_dead += 1
            if self._heap_dead > 1024 and self._heap_dead * 2 > len(self._heap):
                self._heap = [e for e in self._heap if e[2].alive]
                heapq.heapify(self._heap)
                self._heap_dead = 0
        if self._ledger is not None:
            self._ledger.record("end", s.session_id, s.user_id, s.platform, s.instance_id, reason, by)

    # ------------------------------------------------------------------ expiry
    def sweep(self, now: float | None = None) -> Outbox:
        """End every session whose deadline has passed (reason ``sig_expired``); one event each.

        Cost is O(expired · log n): only the heap's head is looked at.
        """
        if now is None:
            now = self._clock()
        heap = self._heap
        out: Outbox = []
        while heap and heap[0][0] < now:
            _, _, s = heapq.heappop(heap)
            if not s.alive:
                self._heap_dead -= 1
                continue
            self._end(s, "sig_expired", None)
            if not s.conn.closed:
                out.append((s.conn, encode_user_sig_expired(s.session_id)))
        if now >= self._next_prune:
            self._prune_failures(now)
        return out

    def next_deadline(self) -> float | None:
        """Earliest pending expiry deadline (Unix s), or None."""
        return self._heap[0][0] if self._heap else None

    # ------------------------------------------------------------------ lockout
    def _locked_out(self, user: str, now: float) -> bool:
        until = self._locked.get(user)
        if until is None:
            return False
        if now < until:
            return True
        del self._locked[user]
        return False

    def _note_failure(self, user: str, now: float) -> None:
        st = self.settings
        q = self._failures.get(user)
        if q is None:
            q = self._failures[user] = deque()
        q.append(now)
        horizon = now - st.lockout_window_s
        while q and q[0] <= horizon:
            q.popleft()
        if len(q) >= st.lockout_failures:
            del self._failures[user]
            if st.lockout_s > 0:
                self._locked[user] = now + st.lockout_s

    def _prune_failures(self, now: float) -> None:
        """Forget failure records older than the window (runs once per window, not per tick)."""
        window = self.settings.lockout_window_s
        self._next_prune = now + max(window, 1.0)
        stale = [u for u, q in self._failures.items() if not q or q[-1] <= now - window]
        for u in stale:
            del self._failures[u]
        for u in [u for u, until in self._locked.items() if until <= now]:
            del self._locked[u]

    # ------------------------------------------------------------------ admin (REST)
    def import_account(self, user_id: str) -> None:
        """Mark an account as imported (idempotent)."""
        self._accounts.add(user_id)

    def is_imported(self, user_id: str) -> bool:
        return user_id in self._accounts

    def kick_user(self, user_id: str) -> Outbox:
        """REST kick: end all the user's sessions (``rest_kick`` event, by null) and revoke every
        sig issued at or before the current second."""
        self._revoked[user_id] = int(self._clock())
        out: Outbox = []
        mine = self._by_user.get(user_id)
        if mine:
            for s in list(mine.values()):
                self._end(s, "rest_kick", None)
                self._kick_frames(s, "rest_kick", None, out)
        return out

    def revoked_at(self, user_id: str) -> int | None:
        """Unix second of the user's last REST kick, or None."""
        return self._revoked.get(user_id)

    def sessions_of(self, user_id: str) -> list[Session]:
        """The user's live sessions in login order."""
        mine = self._by_user.get(user_id)
        return list(mine.values()) if mine else []

    def all_sessions(self) -> Iterable[Session]:
        """Every live session (for shutdown)."""
        for mine in list(self._by_user.values()):
            yield from list(mine.values())

    def end_all(self, reason: str = "disconnect") -> None:
        """End every live session without events (server shutdown)."""
        for s in list(self.all_sessions()):
            self._end(s, reason, None)
