"""Abstract Locust User for chat scenarios: wires simulated SDK clients to Locust's request
event (live stats) and to the journal (truth). One finished operation = one ``emit`` = one
journal row + one request event (events such as ``kicked_offline`` are journaled only:
``harness.results.journal.EVENT_OPS``), so the two always reconcile.

A row may carry ``expect``: the code the scenario provoked on purpose (e.g. 70001 for a login
with a stale UserSig). Getting it is a pass (Locust success); anything else is a Locust
failure, an accepted stale sig included (docs/JOURNAL.md).

``Device`` is one simulated SDK instance (a ChatClient) with its journaling listener; a
ChatUser owns one or more devices. Devices of users that hold sessions (``RECONNECT_SCENARIOS``,
or a User class with ``reconnect = True``) recover like the SDK when ``client.reconnect`` is on:
see :meth:`Device.on_disconnected`.
"""
from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import Event
from gevent.hub import Waiter
from greenlet import greenlet as _greenlet
from locust import User, constant

from harness.sdk.client import (Backoff, ChatClient, ClientListener, OpResult, parse_ws_url, resolve_addresses,
                                wake_schedule)
from harness.protocol import ERR_SDK_INTERFACE_NOT_SUPPORT, FRESH_SIG_CODES, code_label
from harness.results.journal import EVENT_OPS, judged
from harness.runner.live import STOPPED_BY_HARNESS
from harness.sources import SigFetchError
from harness.usersig import UserSigError, decode_usersig

if TYPE_CHECKING:  # pragma: no cover
    from harness.runner.runtime import Runtime

REQUEST_TYPES = {"connect": "WS", "login": "WS", "logout": "WS", "status": "WS", "heartbeat": "WS",
                 "relogin": "WS", "switch": "WS", "race": "WS", "disconnect": "WS",
                 "usersig_fetch": "REST", "query_online": "REST", "rest_kick": "REST",
                 "kicked_offline": "EVENT", "sig_expired": "EVENT", "reconnect": "WS",
                 "fault": "INTERNAL", "dropped": "INTERNAL"}

#: Scenarios whose users hold sessions: their devices reconnect by default (client.reconnect).
RECONNECT_SCENARIOS = frozenset({"mass_login", "relogin_expiry"})


_switch = _greenlet.switch

#: ws_url -> resolved addresses (a tuple shared by every connection of this process)
_ADDRESSES: dict[str, tuple] = {}


def wait_event(event: Event, timeout: float) -> bool:
    """``event.wait(timeout)`` (True when set, False after ``timeout`` s) with the caller parked
    on a ``Waiter`` woken by a raw loop timer or the event's link: no gevent ``Timeout`` object,
    a shallower saved stack. Killing the caller (GreenletExit) unlinks and stops the timer."""
    if event.is_set():
        return True
    hub = gevent.get_hub()
    waiter = Waiter(hub)
    wake = waiter.switch
    timer = hub.loop.timer(max(0.0, timeout))
    timer.start(wake, None, update=True)  # from now, not from the loop's stale iteration time
    event.rawlink(wake)
    try:
        waiter.get()
    finally:
        timer.close()
        event.unlink(wake)
    return event.is_set()


def _locust_fire_parts() -> tuple[Any, Any, tuple]:
    """Locust's ``EventHook`` class, its ``fire`` and the exceptions it lets through."""
    from locust.event import EventHook
    from locust.exception import InterruptTaskSet, RescheduleTask, RescheduleTaskImmediately, StopTest, StopUser

    return EventHook, EventHook.fire, (StopUser, StopTest, RescheduleTask, RescheduleTaskImmediately, InterruptTaskSet)


_EventHook, _EVENTHOOK_FIRE, _PASS_THROUGH = _locust_fire_parts()


def fire_request(hook: Any, request_type: str, name: str, response_time: float, exception: BaseException | None,
                 context: dict) -> None:
    """``hook.fire(request_type=..., name=..., response_time=..., response_length=0, exception=...,
    context=...)``: the same listeners called the same way, with the same error handling, but
    without ``fire``'s packing of the keywords into a dict (and of the listener's unpacking
    of it): ~0.7 us less per request here. A hook that is not a plain Locust ``EventHook`` (a
    subclass, a patched ``fire``) gets ``hook.fire``."""
    if type(hook) is not _EventHook or _EventHook.fire is not _EVENTHOOK_FIRE:
        hook.fire(request_type=request_type, name=name, response_time=response_time, response_length=0,
                  exception=exception, context=context)
        return
    for handler in hook._handlers.copy():  # a copy, like fire(): listeners may add or remove listeners
        try:
            handler(request_type=request_type, name=name, response_time=response_time, response_length=0,
                    exception=exception, context=context)
        except _PASS_THROUGH:
            raise
        except Exception:
            import logging
            import traceback

            from locust import log as locust_log

            logging.error("Uncaught exception in event handler: \n%s", traceback.format_exc())
            locust_log.unhandled_greenlet_exception = True


class OpFailure(Exception):
    """What Locust shows in its failures table: the code label (low cardinality)."""


def failure_text(outcome: str, code: int, desc: str) -> str:
    """The failure text Locust shows for a failed op: the code label, or ``-1 <what>`` for transport trouble."""
    if code == -1:
        return f"-1 {desc or 'transport error'}" if outcome == "fail" else f"-1 no answer ({desc or 'unknown'})"
    if code == 0:
        return desc or "check failed"
    return code_label(code)


def unexpected_text(op: str, code: int, expect: int) -> str:
    """Locust's failure text for a row whose provoked code did not come back."""
    if code == 0 and expect in FRESH_SIG_CODES:
        return "stale UserSig accepted"
    if code == 0:
        return f"{op} succeeded, expected {code_label(expect)}"
    return f"{code_label(code)} (expected {expect})"


class Device(ClientListener):
    """One simulated SDK instance of a user, journaling everything it sees.

    Recovery (``reconnect``; default: ``client.reconnect`` for users that hold sessions): when
    the connection is lost while a session is held (closed by the server or the network, not
    by us) the device reconnects in the background, pacing attempts with :class:`Backoff`
    (``client.reconnect_base_s``/``_cap_s``/``_max_attempts``), and logs in again with the same
    account: with the cached UserSig, or a fresh one (same lifetime) once it has expired or
    the server answers 70001/6206/70052. Each attempt is journaled (``connect`` and ``login``
    rows on a new ``conn``), then one ``reconnect`` row: start = the loss, end = back online
    (ok) or the last attempt (fail/info with its code; info "stopped" when the device was
    closed meanwhile). ``disconnected`` is set only when the device is down for good. With
    recovery on, a first ``connect()`` that is refused is retried on the same schedule too.
    """

    def __init__(self, user: "ChatUser", platform: str, instance: str, *, race: str | None = None,
                 heartbeat_s: float | None = None, reconnect: bool | None = None, same_instance: bool = False) -> None:
        super().__init__()
        self.user = user
        self.rt = user.rt
        self.platform = platform
        self.instance = instance
        self.race = race
        self.conn = self.rt.next_conn_id()
        self.account = ""  # the account currently logged in (or last tried)
        cc = self.rt.cfg.client
        if reconnect is None:
            wanted = getattr(user, "reconnect", None)
            reconnect = cc.reconnect and (wanted if isinstance(wanted, bool) else user.scenario in RECONNECT_SCENARIOS)
        self.backoff: Backoff | None = user.backoff() if reconnect else None
        self.sig = ""                     # the UserSig of the last login sent (the SDK's cached sig)
        self.expire_at: int | None = None  # sigExpireAt of the current session, unix s
        driver = self.rt.make_driver(conn_id=self.conn, source_address=self.rt.next_source_address(),
                                     addresses=user.addresses())
        if same_instance and hasattr(driver, "resource_shared"):
            driver.resource_shared = True   # XMPP: a <conflict/> on a shared resource is same_instance
        self.client = ChatClient(
            self.rt.ws_url, platform=platform, instance_id=instance, listener=self,
            connect_timeout=cc.connect_timeout_s, request_timeout=cc.request_timeout_s,
            heartbeat_interval=heartbeat_s, lost_on_heartbeat_timeout=self.backoff is not None, driver=driver)

    # Made on first use (class-level None until then): a held session's Device carries only what
    # it uses. kicks: (session, reason, by, at_ns); expiries: (session, at_ns); reconnects: the
    # outcome of each recovery, in order.
    _kicks: list[tuple[str, str, Any, int]] | None = None
    _expiries: list[tuple[str, int]] | None = None
    _reconnects: list[OpResult] | None = None
    _kicked: Event | None = None
    _expired: Event | None = None
    _recovering: gevent.Greenlet | None = None
    _stopped = False                 # set by close(): no more recovery
    _stop_event: Event | None = None  # what a backoff wait waits on (made by the first one)
    _down = False                    # down for good (``disconnected``)
    _disconnected: Event | None = None
    _hold: Any = None                # the greenlet parked in wait_disconnected()

    @property
    def disconnected(self) -> Event:
        """Set when the device is down for good (no recovery, or the recovery gave up)."""
        e = self._disconnected
        if e is None:
            e = self._disconnected = Event()
            if self._down:
                e.set()
        return e

    def _set_disconnected(self) -> None:
        """The device is down for good: set ``disconnected``, wake a wait_disconnected()."""
        self._down = True
        e = self._disconnected
        if e is not None:
            e.set()
        hold = self._hold
        if hold is not None:  # wake it from the hub, whoever calls (the reader, the user, a recovery)
            gevent.get_hub().loop.run_callback(self._wake, hold)

    def _due(self, schedule: Any) -> None:
        """(hub) The wake schedule: wait_disconnected()'s timeout is up."""
        hold = self._hold
        if hold is not None:
            self._wake(hold)

    def _wake(self, hold: Any) -> None:
        """(hub) Resume ``hold`` if it is still parked in wait_disconnected() (a second wake,
        e.g. the timeout and the disconnect in one loop iteration, finds it gone and does nothing)."""
        if self._hold is hold:
            self._hold = None
            hold.switch()

    @property
    def kicks(self) -> list[tuple[str, str, Any, int]]:
        """Every ``kickedOffline`` this device received: ``(session, reason, by, at_ns)``, in order."""
        k = self._kicks
        if k is None:
            k = self._kicks = []
        return k

    @property
    def expiries(self) -> list[tuple[str, int]]:
        """Every ``userSigExpired`` this device received: ``(session, at_ns)``, in order."""
        e = self._expiries
        if e is None:
            e = self._expiries = []
        return e

    @property
    def reconnects(self) -> list[OpResult]:
        """The outcome of each recovery, in order."""
        r = self._reconnects
        if r is None:
            r = self._reconnects = []
        return r

    def _stop_wait(self, seconds: float) -> bool:
        """Wait ``seconds`` unless close() comes first; True when the device was closed."""
        if self._stopped:
            return True
        e = self._stop_event
        if e is None:
            e = self._stop_event = Event()
        return e.wait(seconds)

    def wait_disconnected(self, timeout: float) -> bool:
        """``disconnected.wait(timeout)``: True once the device is down for good, False after
        ``timeout`` s. A held session's user greenlet waits here for the whole hold, so it is
        parked by a plain switch to the hub with its timeout in the process's wake schedule: no
        Event, no Waiter, no gevent ``Timeout``, no loop timer of its own (~1.2 KiB less per held
        session than ``Event.wait``)."""
        if self._down:
            return True
        hub = gevent.get_hub()
        me = gevent.getcurrent()
        if self._hold is not None or me is hub:  # a second waiter, or the hub itself: the general way
            return wait_event(self.disconnected, timeout)
        schedule = wake_schedule()
        self._hold = me
        key = schedule.add(self, timeout)
        try:
            # straight to the hub (no Waiter, no Python-level Hub.switch frame on the saved
            # stack); only _wake() switches back here, or a kill (GreenletExit) ends the wait
            _switch(hub)
        finally:
            schedule.cancel(self, key)
            if self._hold is me:
                self._hold = None
        return self._down

    @property
    def kicked(self) -> Event:
        """Set when a ``kickedOffline`` arrived for this device."""
        e = self._kicked
        if e is None:
            e = self._kicked = Event()
        return e

    @property
    def expired(self) -> Event:
        """Set when a ``userSigExpired`` arrived for this device."""
        e = self._expired
        if e is None:
            e = self._expired = Event()
        return e

    # ---------------------------------------------------------------- journaling
    def _fields(self) -> dict:
        return {"platform": self.platform, "instance": self.instance, "conn": self.conn, "race": self.race}

    def record(self, res: OpResult, *, op: str | None = None, user: str | None = None,
               intended: int | None = None, **extra: Any) -> OpResult:
        """Emit ``res`` (request event + journal row) with this device's fields; ``extra`` may
        override ``session`` and add keys (docs/JOURNAL.md). Returns ``res``."""
        session = extra.pop("session", res.session_id) if extra else res.session_id
        fields = {"conn": self.conn, "race": self.race}
        if extra:
            fields.update(extra)
        self.user.emit_op(op or res.op, res.outcome, res.code, res.start_ns, res.end_ns, intended,
                          self.account if user is None else user, session, res.desc, self.platform, self.instance,
                          fields)
        return res

    # ---------------------------------------------------------------- operations
    def connect(self, intended: int | None = None) -> OpResult:
        """Connect (journaled). With recovery on, a refused/failed connect is retried with backoff."""
        res = self._connect_once(intended)
        attempt = 1
        while (not res.ok and self.backoff is not None and attempt < self.backoff.max_attempts
               and not self._stopped):
            if self._stop_wait(self.backoff.delay(attempt, self.user.rng)):
                break
            self._new_conn()
            res = self._connect_once(None)
            attempt += 1
        return res

    def _connect_once(self, intended: int | None) -> OpResult:
        return self.record(self.client.connect(), user="", intended=intended)

    def _new_conn(self) -> None:
        """A new connection id (a reconnect is a new connection in the journal)."""
        self.conn = self.rt.next_conn_id()
        self.client.conn_id = self.conn

    def login(self, account: str, sig: str, intended: int | None = None, *, expect: int | None = None) -> OpResult:
        """One login (journaled). ``expect``: the code this login provokes on purpose (a stale
        sig: 70001); journaled as the row's ``expect`` (docs/JOURNAL.md)."""
        self.account = account
        self.sig = sig
        res = self.client.login(account, sig)
        extra: dict[str, Any] = {}
        if res.outcome == "ok" and res.data:
            if "kicked" in res.data:  # only protocols whose answer names the evicted sessions (tim; not xmpp)
                extra["kicked"] = [k.get("sessionID") for k in res.data.get("kicked") or [] if isinstance(k, dict)]
            extra["expire_at"] = res.data.get("sigExpireAt")
            self.expire_at = extra["expire_at"] if isinstance(extra["expire_at"], int) else None
        if expect is not None:
            extra["expect"] = int(expect)
        return self.record(res, user=account, intended=intended, **extra)

    def logout(self) -> OpResult:
        session = self.client.session_id
        res = self.client.logout()
        return self.record(res, session=session)

    def status(self) -> OpResult:
        """The server's view of this connection (journaled); where the protocol has none (XMPP) the
        result is fail 7013 and nothing is journaled: no request was made."""
        res = self.client.status()
        if res.code == ERR_SDK_INTERFACE_NOT_SUPPORT:
            return res
        data = res.data or {}
        return self.record(res, session=data.get("sessionID"),
                           data={"status": data.get("status"), "userID": data.get("userID"),
                                 "sessionID": data.get("sessionID")} if res.outcome == "ok" else None)

    def heartbeat(self) -> OpResult:
        return self.record(self.client.heartbeat())

    def close(self) -> None:
        """Close for good: stops a recovery in progress (its ``reconnect`` row says ``stopped``)."""
        self._stopped = True
        e = self._stop_event
        if e is not None:
            e.set()
        self.client.close()
        g = self._recovering
        if g is not None and g is not gevent.getcurrent() and not g.dead:
            g.join(timeout=1.0)
            if not g.dead:
                g.kill(block=True, timeout=2.0)
            self.client.close()  # a connection the recovery opened meanwhile

    @property
    def logged_in(self) -> bool:
        return self.client.get_login_status() == 1

    @property
    def recovering(self) -> bool:
        """True while a reconnect is in progress."""
        g = self._recovering
        return g is not None and not g.dead

    # ---------------------------------------------------------------- recovery
    def _fresh_sig(self) -> str | None:
        """A new UserSig for the account with the lifetime of the cached one (journaled fetch)."""
        lifetime = self.rt.cfg.usersig.expire_s
        try:
            lifetime = decode_usersig(self.sig)[0].expire
        except UserSigError:
            pass
        return self.user.fetch_sig(self.account, max(1, int(lifetime)), platform=self.platform, conn=self.conn,
                                   fresh=True)

    def _relogin(self) -> tuple[OpResult | None, bool]:
        """Log in again on the new connection; (result or None when no sig, fresh sig used?)."""
        fresh = self.expire_at is not None and time.time() >= self.expire_at
        sig = self._fresh_sig() if fresh or not self.sig else self.sig
        if sig is None:
            return None, fresh
        res = self.login(self.account, sig)
        if not res.ok and res.code in FRESH_SIG_CODES and not fresh:
            fresh = True
            sig = self._fresh_sig()
            if sig is None:
                return None, fresh
            res = self.login(self.account, sig)
        return res, fresh

    def _recover(self, old_session: str | None, reason: str, lost_ns: int) -> None:
        """Reconnect + log in again (runs in its own greenlet); journals one ``reconnect`` row."""
        assert self.backoff is not None
        old_conn = self.conn
        last: OpResult | None = None
        attempts = 0
        fresh_sig = False
        outcome, stopped = "info", False
        try:
            for attempt in range(self.backoff.max_attempts):
                if self._stop_wait(self.backoff.delay(attempt, self.user.rng)):
                    stopped = True
                    break
                attempts += 1
                self._new_conn()
                last = self._connect_once(None)
                if not last.ok:
                    continue
                if self._stopped:
                    stopped = True
                    break
                res, fresh = self._relogin()
                fresh_sig = fresh_sig or fresh
                if res is None:  # no UserSig (source down): try again later on a new connection
                    self.client.close()
                    continue
                last = res
                if res.ok:
                    outcome = "ok"
                    break
                if res.outcome == "fail" and res.code != -1:
                    outcome = "fail"  # the server refused the account: no login loop
                    break
                self.client.close()  # no answer: start over on a new connection
            else:
                outcome = last.outcome if last is not None else "info"
        except gevent.GreenletExit:
            stopped = True
            raise
        finally:
            if stopped or self._stopped:
                outcome = "info" if outcome != "ok" else outcome
            end = last.end_ns if last is not None and outcome != "info" else time.time_ns()
            code = 0 if outcome == "ok" else (last.code if last is not None else -1)
            desc = "" if outcome == "ok" else ("stopped: device closed" if stopped else (last.desc if last else ""))
            result = OpResult("reconnect", outcome, code, desc, lost_ns, max(end, lost_ns),
                              session_id=last.session_id if outcome == "ok" and last is not None else None)
            self.reconnects.append(result)
            self.record(result, user=self.account, session=result.session_id,
                        data={"trigger": reason, "old_conn": old_conn, "old_session": old_session,
                              "attempts": attempts, "fresh_sig": fresh_sig})
            if outcome != "ok":
                self._set_disconnected()

    # ---------------------------------------------------------------- listener callbacks
    def on_kicked_offline(self, session_id: str, reason: str, by: dict | None, at_ns: int) -> None:
        self.kicks.append((session_id, reason, by, at_ns))
        by_sid = by.get("sessionID") if isinstance(by, dict) else None
        self.user.emit("kicked_offline", outcome="ok", code=0, start=at_ns, end=at_ns, user=self.account,
                       session=session_id, desc=reason, by=by_sid, **self._fields())
        self.kicked.set()

    def on_user_sig_expired(self, session_id: str, at_ns: int) -> None:
        self.expiries.append((session_id, at_ns))
        self.user.emit("sig_expired", outcome="ok", code=0, start=at_ns, end=at_ns, user=self.account,
                       session=session_id, **self._fields())
        self.expired.set()

    def on_disconnected(self, session_id: str | None, by_client: bool, reason: str, at_ns: int) -> None:
        self.user.emit("disconnect", outcome="ok" if by_client else "info", code=0 if by_client else -1,
                       start=at_ns, end=at_ns, user=self.account, session=session_id,
                       desc="closed_by_client" if by_client else (reason or "closed_by_server"), **self._fields())
        if self.recovering:
            return  # a connection the recovery opened was lost: the recovery goes on
        if (not by_client and session_id is not None and self.backoff is not None and self.account
                and not self._stopped):
            self._recovering = gevent.spawn(self._recover, session_id, reason or "closed_by_server", at_ns)
            return
        self._set_disconnected()

    def on_heartbeat(self, result: OpResult) -> None:
        self.record(result)


class ChatUser(User):
    """Abstract base of scenario Users. Subclasses set ``scenario`` and write tasks."""

    abstract = True
    scenario = ""
    wait_time = constant(0)

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.rt: Runtime = environment.chat
        self.cfg = self.rt.cfg
        self.devices: list[Device] = []

    _rng: random.Random | None = None  # made on first use (class-level None until then: one key less per user)
    _backoff: Backoff | None = None

    @property
    def rng(self) -> random.Random:
        """This user's random source (reconnect jitter), made on first use: seeding one from
        urandom costs more than a whole connect, so devices share their user's."""
        rng = self._rng
        if rng is None:
            rng = self._rng = random.Random()
        return rng

    def backoff(self) -> Backoff:
        """The reconnect schedule from ``client.reconnect_*`` (one immutable value per user)."""
        b = self._backoff
        if b is None:
            cc = self.cfg.client
            b = self._backoff = Backoff(cc.reconnect_base_s, cc.reconnect_cap_s, cc.reconnect_max_attempts)
        return b

    def addresses(self) -> tuple | None:
        """The target's resolved addresses (``harness.sdk.client.resolve_addresses``), once per
        process and URL (one shared tuple: a held connection does not carry its own copy); None
        when the name does not resolve now (the client then resolves, and reports the failure, at
        connect; the next user tries again)."""
        url = self.rt.ws_url
        addrs = _ADDRESSES.get(url)
        if addrs is None:
            try:
                host, port, _target, _hh = parse_ws_url(url)
                addrs = _ADDRESSES[url] = tuple(resolve_addresses(host, port))
            except (OSError, ValueError):
                return None
        return addrs

    # ---------------------------------------------------------------- emit
    def emit(self, op: str, *, outcome: str, code: int, start: int, end: int, intended: int | None = None,
             user: str = "", session: str | None = None, desc: str = "", platform: str = "", instance: str = "",
             **extra: Any) -> None:
        """Fire Locust's request event and append the journal row for one finished operation."""
        ChatUser.emit_op(self, op, outcome, code, start, end, intended, user, session, desc, platform, instance, extra)

    def emit_op(self, op: str, outcome: str, code: int, start: int, end: int, intended: int | None, user: str,
                session: str | None, desc: str, platform: str, instance: str, extra: dict | None) -> None:
        """:meth:`emit` with positional fields and the extra keys as one dict (or None): the
        request path's form (Device.record), without keyword packing and unpacking."""
        began = start if intended is None else intended
        rt = self.rt
        journal = rt.journal
        if outcome == "ok":
            exc = None
            detail = desc
        else:
            if outcome == "fail" and (code == 0 or code == -1) and rt.stopping:
                # cut short by the harness's own stop (users being stopped): unknown effect, not a failure
                outcome, desc = "info", STOPPED_BY_HARNESS
                stopped = journal.stopped
                stopped[op] = stopped.get(op, 0) + 1
            exc = None if outcome == "ok" else OpFailure(failure_text(outcome, code, desc))
            detail = desc if outcome == "ok" or code == 0 or code == -1 else code_label(code)
        expect = extra.get("expect") if extra else None
        if expect is not None:
            verdict = judged(outcome, code, expect)
            if verdict == "expected":
                exc = None  # the scenario provoked this answer: the server behaved correctly
            elif exc is None or code != -1:
                exc = OpFailure(unexpected_text(op, code, expect))
        scenario = self.scenario
        # the journal row (RESULTS.md section 1), built once: FIELDS in order, then the extras with a value
        row = {"w": journal.worker, "n": 0, "scenario": scenario, "op": op, "user": user, "platform": platform,
               "instance": instance, "session": session, "intended": began, "start": start, "end": end,
               "outcome": outcome, "code": code, "detail": detail}
        if extra:
            for k, v in extra.items():
                if v is not None:
                    row[k] = v
        # one finished op = one journal row + (requests only) one request event (Journal.emit_row)
        if op not in EVENT_OPS:
            fire_request(self.environment.events.request, REQUEST_TYPES.get(op, "WS"), op,
                         max(0.0, (end - began) / 1e6), exc, {"scenario": scenario, "user": user, "code": code})
        journal.add_row(row)

    # ---------------------------------------------------------------- helpers
    def device(self, platform: str | None = None, instance: str | None = None, **kw: Any) -> Device:
        d = Device(self, platform or self.cfg.client.platform, instance or self.rt.new_instance_id(), **kw)
        self.devices.append(d)
        return d

    def drop_device(self, d: Device) -> None:
        d.close()
        d.client.listener = None  # break the Device <-> ChatClient cycle: freed by refcount (even after gc.freeze)
        if d in self.devices:
            self.devices.remove(d)

    def fetch_sig(self, account: str, expire: int, *, platform: str = "", conn: str | None = None,
                  fresh: bool = True) -> str | None:
        """A UserSig (lifetime ``expire`` s) from the configured source; http fetches are journaled
        as ``usersig_fetch``. ``fresh=False`` lets the local source reuse the sig it issued last for
        the account while most of its lifetime remains (``LocalSigSource.get``); http always fetches."""
        src = self.rt.sig_source
        if not src.journaled:
            return src.get(account, expire) if fresh else src.get(account, expire, fresh=False)
        start = time.time_ns()
        try:
            sig = src.get(account, expire)
        except SigFetchError as exc:
            self.emit("usersig_fetch", outcome="fail" if exc.code != -1 else "info", code=exc.code, start=start,
                      end=time.time_ns(), user=account, desc=exc.desc, platform=platform, conn=conn)
            return None
        self.emit("usersig_fetch", outcome="ok", code=0, start=start, end=time.time_ns(), user=account,
                  platform=platform, conn=conn)
        return sig

    def forget_sig(self, account: str) -> None:
        """The server refused ``account``'s sig (expired / revoked): the next ``fetch_sig`` issues a new one."""
        forget = getattr(self.rt.sig_source, "forget", None)
        if forget is not None:
            forget(account)

    def query_online(self, accounts: list[str], *, conn: str | None = None, race: str | None = None) -> dict | None:
        """REST query_online_status (journaled as ``query_online``); None when REST is unavailable."""
        rest = self.rt.rest
        if rest is None or not rest.available:
            return None
        start = time.time_ns()
        code, body = rest.query_online(accounts)
        end = time.time_ns()
        ok = code == 0
        result = body.get("QueryResult") if ok else None
        self.emit("query_online", outcome="ok" if ok else ("info" if code == -1 else "fail"), code=code,
                  start=start, end=end, user=",".join(accounts)[:200], desc="" if ok else str(body.get("ErrorInfo", "")),
                  conn=conn, race=race, data={"QueryResult": result} if ok else None)
        return {r.get("To_Account"): r for r in result or [] if isinstance(r, dict)} if ok else None

    def acquire(self, scenario: str | None = None) -> str:
        """An account from this scenario's pool; stops this user when the pool is exhausted."""
        from locust.exception import StopUser

        acc = self.rt.pool(scenario or self.scenario).acquire()
        if acc is None:
            import logging

            logging.getLogger("harness").warning("%s: account pool exhausted (scenarios.%s.accounts); user stops",
                                                 self.scenario, self.scenario)
            raise StopUser()
        return acc

    def release(self, account: str, scenario: str | None = None) -> None:
        self.rt.pool(scenario or self.scenario).release(account)

    def on_start(self) -> None:
        if not self.rt.wait_ready(60):
            from locust.exception import StopUser

            raise StopUser()
        self.cfg = self.rt.cfg  # a worker adopts the master's config when the target is bound

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            gevent.sleep(seconds)

    def on_stop(self) -> None:
        for d in list(self.devices):
            d.close()
        self.devices.clear()
