"""The conformance suite every driver must pass (the rules of harness/sdk/driver.py), run
against a live target. Plain functions that raise ``AssertionError``; the pytest module
``tests/integration/test_driver_conformance.py`` runs them for every driver and target, and a
new driver adds one :class:`ConformanceTarget` there (see docs/drivers.md).

Each case gets a fresh :class:`RecordingSink` and fresh drivers, and closes what it opened.
"""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import gevent

from harness.sdk.driver import Driver, Reply

__all__ = ["CASES", "ConformanceTarget", "RecordingSink", "run_case"]

TIMEOUT_S = 5.0


class RecordingSink:
    """A Sink that records every call as ``(name, args, monotonic s)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, float]] = []

    def login_answered(self, reply: Reply, user_id: str) -> None:
        self.calls.append(("login_answered", (reply, user_id), time.monotonic()))

    def kicked(self, session_id: str | None, reason: str, by: dict | None, at_ns: int) -> None:
        self.calls.append(("kicked", (session_id, reason, by, at_ns), time.monotonic()))

    def credential_expired(self, session_id: str | None, at_ns: int) -> None:
        self.calls.append(("credential_expired", (session_id, at_ns), time.monotonic()))

    def lost(self, reason: str, at_ns: int) -> None:
        self.calls.append(("lost", (reason, at_ns), time.monotonic()))

    def named(self, name: str) -> list[tuple]:
        return [args for n, args, _t in self.calls if n == name]

    def wait(self, name: str, count: int = 1, timeout: float = TIMEOUT_S) -> list[tuple]:
        deadline = time.monotonic() + timeout
        while len(self.named(name)) < count and time.monotonic() < deadline:
            gevent.sleep(0.02)
        return self.named(name)


@dataclass
class ConformanceTarget:
    """How to exercise one driver against one live target.

    ``make(sink)``: a fresh, unconnected driver; ``user(i)``: ``(user_id, valid credential)``
    for the i-th test account (distinct per i); ``bad_credential(user_id)``: one the server
    refuses; ``kick_mode``: what makes the server evict a session of one account:
    ``other_instance`` (the policy allows one session: a second instance evicts the first) or
    ``same_instance`` (only a login with the same instance evicts: e.g. Prosody's stock policy).
    """

    name: str
    make: Callable[[RecordingSink], Driver]
    user: Callable[[int], tuple[str, str]]
    bad_credential: Callable[[str], str]
    kick_mode: str = "other_instance"
    platform: str = "Android"
    cleanup: list[Driver] = field(default_factory=list)

    def driver(self, sink: RecordingSink | None = None) -> tuple[Driver, RecordingSink]:
        sink = sink or RecordingSink()
        d = self.make(sink)
        d.sink = sink
        self.cleanup.append(d)
        return d, sink

    def connected(self) -> tuple[Driver, RecordingSink]:
        d, sink = self.driver()
        out = d.connect(time.monotonic() + TIMEOUT_S)
        assert out is None, f"connect failed: {out}"
        assert d.connected
        return d, sink

    def close_all(self) -> None:
        for d in self.cleanup:
            try:
                d.close()
            except Exception as exc:  # noqa: BLE001 - rule 1: close never raises
                raise AssertionError(f"close() raised {exc!r}") from None
        self.cleanup.clear()


def _assert_reply(r: Any, what: str) -> Reply:
    assert isinstance(r, Reply), f"{what}: expected a Reply, got {r!r}"
    assert r.outcome in ("ok", "fail", "info"), f"{what}: outcome {r.outcome!r}"
    assert isinstance(r.code, int) and isinstance(r.desc, str), f"{what}: code/desc types {r!r}"
    assert (r.outcome == "ok") == (r.code == 0), f"{what}: ok iff code 0, got {r!r}"
    return r


# ----------------------------------------------------------------------------- cases
def case_connect_close_reconnect(t: ConformanceTarget) -> None:
    """connect -> connected; close returns at once, is idempotent, never calls lost; connect again works."""
    d, sink = t.connected()
    t0 = time.monotonic()
    d.close()
    d.close()
    assert time.monotonic() - t0 < 1.0, "close() must return at once"
    assert not d.connected
    assert d.connect(time.monotonic() + TIMEOUT_S) is None and d.connected
    d.close()
    gevent.sleep(0.2)
    assert not sink.named("lost"), f"close() must not report lost: {sink.named('lost')}"


def case_login_ok_in_wire_order(t: ConformanceTarget) -> None:
    """A valid login: ok 0, a session id, login_answered called once, before login() returns, same reply."""
    d, sink = t.connected()
    user, cred = t.user(0)
    r = _assert_reply(d.login(user, cred, t.platform, "conf-a", TIMEOUT_S), "login")
    assert r.outcome == "ok", f"login failed: {r}"
    assert isinstance(r.session_id, str) and r.session_id, f"no session id: {r}"
    answered = sink.named("login_answered")
    assert len(answered) == 1 and answered[0][0].session_id == r.session_id and answered[0][1] == user, answered


def case_distinct_sessions(t: ConformanceTarget) -> None:
    """Two logins (same account after a logout, or another account) never share a session id."""
    d, _ = t.connected()
    u0, c0 = t.user(1)
    u1, c1 = t.user(2)
    a = _assert_reply(d.login(u0, c0, t.platform, "conf-b", TIMEOUT_S), "login 1")
    b = _assert_reply(d.login(u1, c1, t.platform, "conf-b", TIMEOUT_S), "login 2 (switch)")
    assert a.outcome == b.outcome == "ok", (a, b)
    assert a.session_id != b.session_id


def case_bad_credential_fails(t: ConformanceTarget) -> None:
    """A refused credential: fail with a non-zero, non-transport code, no session, answer reported."""
    d, sink = t.connected()
    user, _ = t.user(3)
    r = _assert_reply(d.login(user, t.bad_credential(user), t.platform, "conf-c", TIMEOUT_S), "login")
    assert r.outcome == "fail" and r.code not in (0, -1), f"expected a refusal code: {r}"
    assert not r.session_id


def case_heartbeat_and_logout(t: ConformanceTarget) -> None:
    """Heartbeat ok while logged in; logout ok with the session; a second logout is 6014 (not logged in)."""
    d, _ = t.connected()
    user, cred = t.user(4)
    r = _assert_reply(d.login(user, cred, t.platform, "conf-d", TIMEOUT_S), "login")
    assert r.outcome == "ok", r
    assert _assert_reply(d.heartbeat(TIMEOUT_S), "heartbeat").outcome == "ok"
    out = _assert_reply(d.logout(TIMEOUT_S), "logout")
    assert out.outcome == "ok", out
    again = d.logout(TIMEOUT_S)
    _assert_reply(again, "second logout")
    assert again.code in (6014, -1) and again.outcome == "fail", f"second logout must fail: {again}"


def case_kick_reported_once(t: ConformanceTarget) -> None:
    """The server evicts a session: its driver reports kicked(session) exactly once, with the reason."""
    first, s1 = t.connected()
    second, s2 = t.connected()
    user, cred = t.user(5)
    a = _assert_reply(first.login(user, cred, t.platform, "conf-e1", TIMEOUT_S), "login 1")
    assert a.outcome == "ok", a
    instance = "conf-e1" if t.kick_mode == "same_instance" else "conf-e2"
    b = _assert_reply(second.login(user, cred, t.platform, instance, TIMEOUT_S), "login 2")
    assert b.outcome == "ok", b
    kicks = s1.wait("kicked")
    assert len(kicks) == 1, f"expected one kicked event, got {s1.calls}"
    session, reason = kicks[0][0], kicks[0][1]
    assert session == a.session_id, f"kicked session {session!r} != {a.session_id!r}"
    want = "same_instance" if t.kick_mode == "same_instance" else "multi_device"
    assert reason == want, f"reason {reason!r}, want {want!r}"
    gevent.sleep(0.3)
    assert len(s1.named("kicked")) == 1 and not s2.named("kicked"), (s1.calls, s2.calls)


def case_calls_when_not_connected(t: ConformanceTarget) -> None:
    """Calls on a driver that is not connected return fail -1 (logout: -1 or 6014) at once; never raise."""
    d, _ = t.driver()
    for name, call in (("login", lambda: d.login("u", "c", t.platform, "x", 1)), ("logout", lambda: d.logout(1)),
                       ("heartbeat", lambda: d.heartbeat(1))):
        r = _assert_reply(call(), name)
        allowed = (-1, 6014) if name == "logout" else (-1,)   # logout may say "not logged in" (6014)
        assert r.outcome == "fail" and r.code in allowed, f"{name} when not connected: {r}"
    st = d.status(1)
    assert st is None or _assert_reply(st, "status").outcome == "fail"


def case_silent_server_times_out(t: ConformanceTarget) -> None:
    """A server that accepts TCP and never answers: connect ends within its deadline, not ok."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    port = lsock.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        lsock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(lsock.accept()[0])
            except OSError:
                continue

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    try:
        d, sink = t.driver()
        retarget = getattr(d, "retarget", None)
        assert retarget is not None, "drivers take retarget(host, port) for this case (docs/drivers.md)"
        retarget("127.0.0.1", port)
        t0 = time.monotonic()
        out = d.connect(t0 + 1.0)
        spent = time.monotonic() - t0
        assert out is not None and out[0] in ("info", "fail"), f"connect to a silent server: {out}"
        assert spent < 3.0, f"connect overran its deadline by {spent - 1:.1f} s"
        assert not d.connected
    finally:
        stop.set()
        th.join(2)
        for s in held:
            s.close()
        lsock.close()


CASES: dict[str, Callable[[ConformanceTarget], None]] = {
    "connect_close_reconnect": case_connect_close_reconnect,
    "login_ok_in_wire_order": case_login_ok_in_wire_order,
    "distinct_sessions": case_distinct_sessions,
    "bad_credential_fails": case_bad_credential_fails,
    "heartbeat_and_logout": case_heartbeat_and_logout,
    "kick_reported_once": case_kick_reported_once,
    "calls_when_not_connected": case_calls_when_not_connected,
    "silent_server_times_out": case_silent_server_times_out,
}


def run_case(name: str, target: ConformanceTarget) -> None:
    """Run one case against ``target`` and close every driver it made (also on failure)."""
    try:
        CASES[name](target)
    finally:
        target.close_all()
