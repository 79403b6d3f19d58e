"""The simulated Chat SDK, protocol-free: one ``ChatClient`` = one SDK instance = one connection,
talking to the server through one driver (:mod:`harness.sdk.driver`; ``tim`` for PROTOCOL.md,
``xmpp`` for XMPP servers, see ``harness.drivers``).

Mirrors V2TIMManager (login / logout / getLoginUser / getLoginStatus + listener callbacks).
Every call returns an :class:`OpResult` with timing (unix ns) and an outcome (``ok`` /
``fail`` / ``info``), so the Locust layer (harness/runner/users.py) can turn it into a request
event and a journal row. Calls never raise on network trouble. No heartbeat greenlet unless
``heartbeat_interval`` is set.

Login status (V2TIM_STATUS_*: LOGINED=1, LOGINING=2, LOGOUT=3) follows the table
``protocol.SDK_TRANSITIONS`` (``protocol.next_status``), driven by these happenings:

* ``login_sent``: a login goes on the wire (a login while one is in flight is refused locally
  with 7501 and changes nothing);
* ``login_ok``: the server accepted it (user and session = the answer's);
* ``login_failed``: a code other than 0, a timeout or connection loss (user "", session None);
* ``logout``: the logout's answer arrived, or it timed out / was lost (status 3 whatever the
  answer: 6014 means there was no session);
* ``kicked_offline`` / ``user_sig_expired``: an event for the *current* session;
* ``disconnect``: the connection closed (the server ends the session with it).

Whenever the status becomes 3, ``get_login_user()`` is "" and ``session_id`` None.
Events for a session that is not the current one (stale) still reach the listener but do
not change the state. The driver applies a login's answer (``Sink.login_answered``) and events
in its reader, in wire order, so an event that follows a response is always applied after it.
"""
from __future__ import annotations

import heapq
import logging
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import gevent

from harness import protocol
from harness.drivers.websocket import (Addresses, accept_token, check_upgrade_response, parse_ws_url,  # noqa: F401
                                       resolve_addresses, upgrade_request)
from harness.sdk.driver import Driver, Reply

__all__ = [
    "STATUS_LOGINED",
    "STATUS_LOGINING",
    "STATUS_LOGOUT",
    "CODE_LOGIN_IN_PROCESS",
    "Backoff",
    "ChatClient",
    "ClientListener",
    "Expiry",
    "Kick",
    "OpResult",
    "WakeSchedule",
    "make_driver",
    "wake_schedule",
]

log = logging.getLogger(__name__)

STATUS_LOGINED: int = protocol.STATUS_LOGINED
STATUS_LOGINING: int = protocol.STATUS_LOGINING
STATUS_LOGOUT: int = protocol.STATUS_LOGOUT

#: A login was asked for while another login on this client is still in flight.
CODE_LOGIN_IN_PROCESS: int = protocol.ERR_SDK_ACCOUNT_LOGIN_IN_PROCESS  # 7501
#: Transport-level trouble (not connected, timeout, connection lost, handshake failed).
CODE_TRANSPORT: int = protocol.ERR_TRANSPORT  # -1
#: The protocol has no such call (e.g. ``status`` on XMPP: no server-side view of a connection).
CODE_UNSUPPORTED: int = protocol.ERR_SDK_INTERFACE_NOT_SUPPORT


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect schedule: exponential backoff with full jitter, bounded.

    Attempt ``k`` (0-based) waits ``uniform(0, min(cap_s, base_s * 2**k))`` seconds before it
    starts; there are at most ``max_attempts`` attempts. Full jitter spreads a reconnect storm
    (every client losing its connection at the same moment) over the whole window instead of
    synchronising the retries.
    """

    base_s: float = 0.2
    cap_s: float = 5.0
    max_attempts: int = 8

    def ceiling(self, attempt: int) -> float:
        """Upper bound of the wait before attempt ``attempt``, seconds."""
        return min(self.cap_s, self.base_s * (2.0 ** min(attempt, 64)))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait before attempt ``attempt`` (seconds), drawn from ``rng`` (default: ``random``)."""
        return (rng or random).uniform(0.0, self.ceiling(attempt))

    def worst_case_s(self) -> float:
        """Longest total wait over all attempts, seconds (request/connect time not included)."""
        return sum(self.ceiling(k) for k in range(self.max_attempts))


@dataclass(slots=True)
class OpResult:
    """What one operation did.

    ``outcome``: ``ok``; ``fail`` (it certainly did not take effect); ``info`` (unknown:
    timeout, connection lost). ``code``: protocol code, 0 ok, -1 transport errors.
    ``start_ns`` / ``end_ns``: ``time.time_ns()`` (unix ns) around the operation.
    """

    op: str
    outcome: str
    code: int
    desc: str
    start_ns: int
    end_ns: int
    data: dict | None = None
    session_id: str | None = None

    @property
    def ok(self) -> bool:
        """True when ``outcome == "ok"``."""
        return self.outcome == "ok"

    @property
    def duration_ms(self) -> float:
        """Service time in milliseconds."""
        return (self.end_ns - self.start_ns) / 1e6


@dataclass(slots=True, frozen=True)
class Kick:
    """A ``kickedOffline`` event as received: ``at_ns`` is the arrival time (unix ns)."""

    session_id: str | None
    reason: str
    by: dict | None
    at_ns: int


@dataclass(slots=True, frozen=True)
class Expiry:
    """A ``userSigExpired`` event as received: ``at_ns`` is the arrival time (unix ns)."""

    session_id: str | None
    at_ns: int


_CALLBACKS = frozenset(
    {
        "on_connecting",
        "on_connect_success",
        "on_connect_failed",
        "on_kicked_offline",
        "on_user_sig_expired",
        "on_disconnected",
        "on_heartbeat",
    }
)


class ClientListener:
    """SDK callbacks; subclass and override, or pass callables: ``ClientListener(on_kicked_offline=f)``.

    All are optional. Event callbacks run in the connection's reader greenlet and must not
    block (no client calls that wait for the wire); ``at_ns`` is the arrival time, unix ns.
    An exception raised by a callback is logged and otherwise ignored.
    """

    def __init__(self, **callbacks: Callable[..., None]) -> None:
        for name, fn in callbacks.items():
            if name not in _CALLBACKS:
                raise TypeError(f"ClientListener has no callback named {name!r}")
            setattr(self, name, fn)

    def on_connecting(self) -> None:
        """connect() started."""

    def on_connect_success(self) -> None:
        """The WebSocket handshake completed."""

    def on_connect_failed(self, code: int, desc: str) -> None:
        """connect() failed (TCP or handshake); ``code`` is -1."""

    def on_kicked_offline(self, session_id: str, reason: str, by: dict | None, at_ns: int) -> None:
        """The server ended ``session_id`` because of another login or a REST kick."""

    def on_user_sig_expired(self, session_id: str, at_ns: int) -> None:
        """The server ended ``session_id`` because its UserSig expired."""

    def on_disconnected(self, session_id: str | None, by_client: bool, reason: str, at_ns: int) -> None:
        """The connection closed (once per connection); ``reason`` is ``closed_by_client``,
        ``closed_by_server`` or ``error:<Class>``; ``session_id`` is the session held at close."""

    def on_heartbeat(self, result: OpResult) -> None:
        """A background heartbeat finished (only with ``heartbeat_interval``)."""


_NOT_CONNECTED = "not connected"


class WakeSchedule:
    """Coarse wake-ups of one event loop: ``obj._due(schedule)`` about ``delay`` s after
    ``add(obj, delay)`` (from the hub; it must not block), unless ``cancel(obj, key)`` came
    first. Slots of ``RES_S`` seconds (an int key each), a dict of the objects due in each slot,
    a heap of the slot keys and one loop timer armed for the earliest slot. What it is for: the
    clients' next heartbeats and the devices' holds, so a held connection costs a dict entry
    here instead of a loop timer with its callback of its own (~0.3-0.6 KiB each). A wake-up
    comes at most ``RES_S`` late (never early); a cancelled one keeps nothing referenced."""

    RES_S = 0.01

    __slots__ = ("loop", "slots", "keys", "timer", "armed")

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.slots: dict[int, dict[Any, None]] = {}
        self.keys: list[int] = []
        self.timer: Any = None
        self.armed: int | None = None  # the slot the timer is armed for

    def add(self, obj: Any, delay: float) -> int:
        """``obj._due(self)`` in ``delay`` s (from the hub); returns the slot key for cancel()."""
        key = -int(-(time.monotonic() + max(0.0, delay)) // self.RES_S)  # ceil: never early
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = {}
            heapq.heappush(self.keys, key)
            if self.armed is None or key < self.armed:
                self._arm(key)
        slot[obj] = None
        return key

    def cancel(self, obj: Any, key: int) -> None:
        slot = self.slots.get(key)
        if slot is not None:
            slot.pop(obj, None)
            if not slot:
                del self.slots[key]  # its key leaves the heap when it comes up

    def _arm(self, key: int) -> None:
        timer = self.timer
        if timer is not None:
            timer.close()
        self.armed = key
        timer = self.timer = self.loop.timer(max(0.0, key * self.RES_S - time.monotonic()))
        timer.start(self._fire, update=True)  # never early: from now, not the loop's stale time

    def _fire(self) -> None:
        self.timer.close()
        self.timer = None
        self.armed = None
        keys, slots = self.keys, self.slots
        now = time.monotonic()
        while keys and keys[0] * self.RES_S <= now:
            slot = slots.pop(heapq.heappop(keys), None)
            if slot:
                for obj in slot:
                    try:
                        obj._due(self)
                    except Exception:  # one object's trouble must not stop the others' wake-ups
                        log.exception("wake schedule: %r failed", obj)
        while keys and keys[0] not in slots:  # slots emptied by cancel()
            heapq.heappop(keys)
        if keys:
            self._arm(keys[0])


_SCHEDULE: list[WakeSchedule] = []  # the schedule of the current event loop (one hub per process here)


def wake_schedule() -> WakeSchedule:
    """The :class:`WakeSchedule` of the current event loop (a new one when the hub changed)."""
    loop = gevent.get_hub().loop
    if _SCHEDULE and _SCHEDULE[0].loop is loop:
        return _SCHEDULE[0]
    schedule = WakeSchedule(loop)
    _SCHEDULE[:] = [schedule]
    return schedule


def make_driver(url: str, *, protocol_name: str = "tim", **options: Any) -> Driver:
    """A driver for ``url``: ``tim`` (PROTOCOL.md over WebSocket; options ``sdk_app_id``,
    ``source_address``, ``conn_id``, ``addresses``) or any protocol registered in
    ``harness.drivers.DRIVERS`` (options as that driver takes them)."""
    from harness.drivers import get_driver_class

    return get_driver_class(protocol_name)(url, **options)


class ChatClient:
    """One simulated SDK instance on one connection, over a :class:`~harness.sdk.driver.Driver`.

    Times are seconds (``connect_timeout``, ``request_timeout``, ``heartbeat_interval``).
    ``driver``: the connection's driver; default a ``tim`` driver for ``url`` (``sdk_app_id``,
    ``source_address``, ``conn_id``, ``addresses`` go to it: ``addresses`` is where to connect,
    ``[(family, sockaddr), ...]`` as ``resolve_addresses`` gives them, for callers that make many
    clients for one URL). Methods are meant to be called from one user greenlet; the driver's
    reader and the heartbeat greenlets are internal. Methods never raise on network trouble;
    they return an :class:`OpResult`.

    Recovery: after a loss, ``connect()`` on the same client opens a fresh connection (set
    ``conn_id`` first to name it); the caller logs in again, pacing attempts with
    :class:`Backoff` (harness.runner.users.Device does this). With ``lost_on_heartbeat_timeout`` a
    background heartbeat that gets no answer within ``request_timeout`` ends the connection
    (``on_disconnected`` reason ``error:HeartbeatTimeout``), as the SDK treats a black-holed link.
    """

    __slots__ = (
        "url",
        "platform",
        "instance_id",
        "listener",
        "connect_timeout",
        "request_timeout",
        "heartbeat_interval",
        "lost_on_heartbeat_timeout",
        "last_kick",
        "last_expiry",
        "driver",
        "_heartbeater",
        "_hb_sleeping",
        "_hb_key",
        "_status",
        "_user",
        "_session",
        "_connected",
        "_closing",
        "_down",
        "_in_flight",
    )

    def __init__(
        self,
        url: str,
        *,
        sdk_app_id: int = 0,
        platform: str = "Android",
        instance_id: str | None = None,
        listener: ClientListener | None = None,
        connect_timeout: float = 10,
        request_timeout: float = 10,
        heartbeat_interval: float | None = None,
        source_address: str | None = None,
        conn_id: str = "",
        lost_on_heartbeat_timeout: bool = False,
        addresses: Addresses | None = None,
        driver: Driver | None = None,
    ) -> None:
        if driver is None:
            from harness.drivers.tim import TimDriver

            driver = TimDriver(url, sdk_app_id=sdk_app_id, source_address=source_address, conn_id=conn_id,
                               addresses=addresses, close_timeout=min(2.0, request_timeout))
        driver.sink = self
        self.driver = driver
        self.url = url
        self.platform = platform
        self.instance_id = instance_id if instance_id is not None else f"{platform}-{uuid.uuid4().hex[:16]}"
        self.listener = listener
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.heartbeat_interval = heartbeat_interval if heartbeat_interval and heartbeat_interval > 0 else None
        self.lost_on_heartbeat_timeout = lost_on_heartbeat_timeout
        self.last_kick: Kick | None = None
        self.last_expiry: Expiry | None = None
        self._heartbeater: Any = None  # the wake schedule while waiting for the next beat, or the beat's greenlet
        self._hb_sleeping = False
        self._hb_key = 0  # the schedule's slot of the next beat
        self._status = STATUS_LOGOUT
        self._user = ""
        self._session: str | None = None
        self._connected = False
        self._closing = False
        self._down = True
        self._in_flight = 0

    # ------------------------------------------------------------------ state
    def get_login_user(self) -> str:
        """The logged-in UserID; "" when not logged in, after a failed login, a kick or an expiry."""
        return self._user

    def get_login_status(self) -> int:
        """1 logged in, 2 logging in, 3 logged out (V2TIM_STATUS_*)."""
        return self._status

    @property
    def session_id(self) -> str | None:
        """The current session (from the last successful login), None when logged out."""
        return self._session

    @property
    def connected(self) -> bool:
        """True between a successful connect() and close() / connection loss."""
        return self._connected

    @property
    def conn_id(self) -> str:
        """Name of the current connection (logs); set it before a reconnect's connect()."""
        return getattr(self.driver, "conn_id", "")

    @conn_id.setter
    def conn_id(self, value: str) -> None:
        if hasattr(self.driver, "conn_id"):
            self.driver.conn_id = value

    @property
    def close_code(self) -> int | None:
        """The close code of the server's close frame (WebSocket drivers), None otherwise."""
        return getattr(self.driver, "close_code", None)

    def _apply(self, happening: str) -> None:
        self._status = protocol.next_status(self._status, happening)
        if self._status == STATUS_LOGOUT:
            self._user = ""
            self._session = None

    def _end_session(self, happening: str) -> None:
        """The current session ended on the server (``kicked_offline`` / ``user_sig_expired``)."""
        self._apply(happening)
        self._user = ""
        self._session = None

    def _emit(self, name: str, *args: Any) -> None:
        listener = self.listener
        if listener is None:
            return
        fn = getattr(listener, name, None)
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:  # a listener bug must not kill the reader or the caller
            log.exception("client %s: listener %s raised", self.conn_id, name)

    # ------------------------------------------------------- the driver's sink
    def login_answered(self, reply: Reply, user_id: str) -> None:
        """Driver (reader greenlet, wire order): a login's answer arrived."""
        if reply.code == 0:
            self._apply("login_ok")
            data = reply.data or {}
            uid = data.get("userID")
            self._session = reply.session_id
            # the caller's string when the server names the same user (one str less per session)
            self._user = uid if isinstance(uid, str) and uid and uid != user_id else user_id
        else:
            self._apply("login_failed")

    def kicked(self, session_id: str | None, reason: str, by: dict | None, at_ns: int) -> None:
        """Driver: the server ended ``session_id`` because of another login or an admin kick."""
        self.last_kick = Kick(session_id, reason, by, at_ns)
        if session_id is not None and session_id == self._session:
            self._end_session("kicked_offline")
        self._emit("on_kicked_offline", session_id, reason, by, at_ns)

    def credential_expired(self, session_id: str | None, at_ns: int) -> None:
        """Driver: the server ended ``session_id`` because its credential (UserSig) expired."""
        self.last_expiry = Expiry(session_id, at_ns)
        if session_id is not None and session_id == self._session:
            self._end_session("user_sig_expired")
        self._emit("on_user_sig_expired", session_id, at_ns)

    def lost(self, reason: str, at_ns: int) -> None:
        """Driver: the transport ended without close() (``closed_by_server``, ``error:...``)."""
        if not self._closing:
            self._teardown(False, reason, at_ns)

    # ---------------------------------------------------------------- connect
    def connect(self) -> OpResult:
        """Open the transport (TCP + handshake / stream) and start the driver's reader.

        ok 0; fail -1 when it certainly did not connect (refused, rejected handshake);
        info -1 on a timeout.
        """
        start = time.time_ns()
        if self._connected or not self._down:
            return OpResult("connect", "fail", CODE_TRANSPORT, "already connected", start, time.time_ns())
        self._emit("on_connecting")
        outcome = self.driver.connect(time.monotonic() + self.connect_timeout)
        if outcome is not None:
            end = time.time_ns()
            self._emit("on_connect_failed", CODE_TRANSPORT, outcome[1])
            return OpResult("connect", outcome[0], CODE_TRANSPORT, outcome[1], start, end)
        self._status, self._user, self._session = STATUS_LOGOUT, "", None
        self._connected, self._closing, self._down = True, False, False
        self._in_flight = 0
        if self.heartbeat_interval:
            # first beat after a random offset in [0, interval): heartbeats are staggered
            self._schedule_heartbeat(random.uniform(0, self.heartbeat_interval), self.heartbeat_interval)
        end = time.time_ns()
        self._emit("on_connect_success")
        return OpResult("connect", "ok", 0, "ok", start, end)

    # --------------------------------------------------------------- requests
    def login(self, user_id: str, user_sig: str) -> OpResult:
        """Log in ``user_id`` with ``user_sig`` (status 2 while in flight); switching accounts
        needs no logout (the server, or the driver, ends the old session).

        ok: status 1, ``session_id`` = the new session, ``data`` = the server's login data.
        fail (server code, or 7501 when another login is in flight: nothing is sent) /
        info -1 (timeout, connection lost): status 3 and user "" (except for 7501).
        """
        start = time.time_ns()
        if self._status == STATUS_LOGINING:
            return OpResult("login", "fail", CODE_LOGIN_IN_PROCESS, protocol.code_label(CODE_LOGIN_IN_PROCESS),
                            start, start)
        if not self._connected or self._closing:
            return OpResult("login", "fail", CODE_TRANSPORT, _NOT_CONNECTED, start, time.time_ns())
        self._apply("login_sent")
        reply = self.driver.login(user_id, user_sig, self.platform, self.instance_id, self.request_timeout)
        if reply.code != 0 and self._status == STATUS_LOGINING:
            self._apply("login_failed")  # no answer (send failed, timeout, lost) or a local refusal
        return OpResult("login", reply.outcome, reply.code, reply.desc, start, time.time_ns(), reply.data,
                        reply.session_id)

    def logout(self) -> OpResult:
        """Log out; afterwards status 3 whatever the answer (6014 when there was no session).

        ``session_id`` of the result is the session held when the logout was sent.
        """
        start = time.time_ns()
        if not self._connected or self._closing:
            return OpResult("logout", "fail", CODE_TRANSPORT, _NOT_CONNECTED, start, time.time_ns())
        held = self._session
        reply = self.driver.logout(self.request_timeout)
        if self._connected or reply.code != CODE_TRANSPORT:
            self._apply("logout")
        return OpResult("logout", reply.outcome, reply.code, reply.desc, start, time.time_ns(), reply.data, held)

    def status(self) -> OpResult:
        """Ask the server for its view of this connection; ``data`` = ``{"status", "userID", "sessionID", ...}``.
        fail with ``CODE_UNSUPPORTED`` where the protocol has no such view."""
        start = time.time_ns()
        if not self._connected or self._closing:
            return OpResult("status", "fail", CODE_TRANSPORT, _NOT_CONNECTED, start, time.time_ns())
        reply = self.driver.status(self.request_timeout)
        if reply is None:
            return OpResult("status", "fail", CODE_UNSUPPORTED, f"{self.driver.protocol}: no server-side status",
                            start, time.time_ns())
        return OpResult("status", reply.outcome, reply.code, reply.desc, start, time.time_ns(), reply.data,
                        reply.session_id)

    def heartbeat(self) -> OpResult:
        """One heartbeat request; ``data`` = ``{"serverTime": ms}`` (PROTOCOL.md)."""
        start = time.time_ns()
        if not self._connected or self._closing:
            return OpResult("heartbeat", "fail", CODE_TRANSPORT, _NOT_CONNECTED, start, time.time_ns())
        reply = self.driver.heartbeat(self.request_timeout)
        return OpResult("heartbeat", reply.outcome, reply.code, reply.desc, start, time.time_ns(), reply.data,
                        self._session)

    # -------------------------------------------------------------- heartbeat
    def _schedule_heartbeat(self, delay: float, interval: float) -> None:
        """The next beat in ``delay`` s. Between beats a connection holds only an entry in the
        process's :class:`WakeSchedule` (a few dozen bytes), not a loop timer of its
        own (~0.6 KiB with its callback), a sleeping greenlet's saved stack (~9 KiB) nor an
        unstarted greenlet (~1-2 KiB); the schedule spawns the beat's greenlet when it is due."""
        schedule = wake_schedule()
        self._hb_sleeping = True
        self._heartbeater = schedule
        self._hb_key = schedule.add(self, delay)

    def _due(self, schedule: WakeSchedule) -> None:
        """(hub) The next beat is due: run it in its own greenlet (it waits for the answer)."""
        if self._heartbeater is not schedule:
            return
        interval = self.heartbeat_interval
        if interval is None:
            self._heartbeater = None
            return
        self._heartbeater = gevent.spawn(self._heartbeat_loop, interval)  # still "sleeping" until it starts

    def _heartbeat_loop(self, interval: float) -> None:
        """One heartbeat, then the next one ``interval`` seconds later (the first one is
        scheduled by connect() after a random offset in [0, interval))."""
        self._hb_sleeping = False
        if not self._connected or self._closing:
            return
        if self._status != STATUS_LOGINED and "heartbeat_logged_out" not in self.driver.capabilities:
            # this protocol has nothing to ping with before a login (XMPP: no stanza before bind)
            self._hb_sleeping = True
            self._heartbeater = gevent.spawn_later(interval, self._heartbeat_loop, interval)
            return
        result = self.heartbeat()
        if result.desc == _NOT_CONNECTED:
            return
        self._emit("on_heartbeat", result)
        if not self._connected or self._closing:
            return
        if self.lost_on_heartbeat_timeout and result.outcome == "info" and result.desc.startswith("timeout"):
            # like the SDK: an unanswered heartbeat means the link is dead (black hole)
            self.driver.abort("error:HeartbeatTimeout")
            self._teardown(False, "error:HeartbeatTimeout", time.time_ns())
            return
        self._schedule_heartbeat(interval, interval)

    # ------------------------------------------------------------------ close
    def close(self) -> None:
        """Close the connection (idempotent): say goodbye, end the connection, stop greenlets.

        Returns without waiting for the server's reply (the driver reads it in the background,
        bounded). Pending calls end with info -1; ``on_disconnected(by_client=True)`` fires
        (before this returns) when the connection was still open. The client may connect()
        again at once.
        """
        if self._down or self._closing:
            return
        self._closing = True
        self.driver.close()
        self._teardown(True, "closed_by_client", time.time_ns())

    def _teardown(self, by_client: bool, reason: str, at: int) -> None:
        """End the connection once on the SDK side: stop the heartbeat, state -> 3, notify."""
        if self._down:
            return
        self._down = True
        was_connected = self._connected
        self._connected = False
        current = gevent.getcurrent()
        hb = self._heartbeater
        # A heartbeat waiting for its answer is woken by the driver's pending failure and
        # reports it (info); only a sleeping heartbeater is killed.
        if hb is not None and self._hb_sleeping:
            if isinstance(hb, gevent.Greenlet):
                if hb is not current and not hb.dead:
                    hb.kill(block=False)
            else:  # waiting in the wake schedule
                hb.cancel(self, self._hb_key)
        self._heartbeater = None
        session = self._session
        self._apply("disconnect")
        if was_connected:
            self._emit("on_disconnected", session, by_client, reason, at)

    def __repr__(self) -> str:
        return (
            f"ChatClient({self.url!r}, conn_id={self.conn_id!r}, connected={self._connected}, "
            f"status={self._status}, user={self._user!r}, session={self._session!r})"
        )
