"""ChatClient against the real reference server (``python -m harness.server``) on loopback.

One server subprocess per module (policy single_platform, leeway 0 so a short sig expires on
time); it is stopped by pid in the fixture's ``finally``.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import gevent
import pytest

from harness.sdk.client import STATUS_LOGINED, STATUS_LOGOUT, ChatClient, ClientListener, OpResult
from harness.usersig import gen_usersig

SDKAPPID = 1400000000
KEY = "integration-test-key-0123456789"
ROOT = Path(__file__).resolve().parents[2]
LISTEN_RE = re.compile(r"listening on http://([0-9.]+):(\d+)")


class RealServer:
    def __init__(self, proc: subprocess.Popen, host: str, port: int) -> None:
        self.proc = proc
        self.http = f"http://{host}:{port}"
        self.ws = f"ws://{host}:{port}/ws"

    def fetch_sig(self, user: str, expire: int = 600) -> str:
        """A UserSig from the server's business endpoint (GET /biz/usersig)."""
        with urllib.request.urlopen(f"{self.http}/biz/usersig?userID={user}&expire={expire}", timeout=5) as resp:
            return json.loads(resp.read())["userSig"]


def _start_server(out_path: Path, *extra: str) -> RealServer:
    env = dict(os.environ, PYTHONUNBUFFERED="1", CHAT_SECRET_KEY=KEY)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out = open(out_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.targets.server", "--host", "127.0.0.1", "--port", "0",
         "--sdkappid", str(SDKAPPID), *extra],
        stdout=out, stderr=subprocess.STDOUT, cwd=str(ROOT), env=env,
    )
    out.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        m = LISTEN_RE.search(out_path.read_text(errors="replace"))
        if m:
            return RealServer(proc, m.group(1), int(m.group(2)))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    _stop(proc)
    raise RuntimeError(f"server did not start: {out_path.read_text(errors='replace')[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def server() -> Iterator[RealServer]:
    with tempfile.TemporaryDirectory() as tmp:
        srv = _start_server(Path(tmp) / "server.out", "--policy", "single_platform", "--leeway-s", "0")
        try:
            yield srv
        finally:
            _stop(srv.proc)


class Recorder(ClientListener):
    def __init__(self) -> None:
        super().__init__()
        self.kicks: list[tuple] = []
        self.expiries: list[tuple] = []
        self.disconnects: list[tuple] = []
        self.heartbeats: list[OpResult] = []

    def on_kicked_offline(self, session_id: str, reason: str, by: dict | None, at_ns: int) -> None:
        self.kicks.append((session_id, reason, by, at_ns))

    def on_user_sig_expired(self, session_id: str, at_ns: int) -> None:
        self.expiries.append((session_id, at_ns))

    def on_disconnected(self, session_id: str | None, by_client: bool, reason: str, at_ns: int) -> None:
        self.disconnects.append((session_id, by_client, reason))

    def on_heartbeat(self, result: OpResult) -> None:
        self.heartbeats.append(result)


@pytest.fixture
def make_client(server: RealServer) -> Iterator[Callable[..., tuple[ChatClient, Recorder]]]:
    made: list[ChatClient] = []

    def factory(platform: str = "Android", connect: bool = True, **kw: Any) -> tuple[ChatClient, Recorder]:
        rec = Recorder()
        kw.setdefault("request_timeout", 5)
        kw.setdefault("connect_timeout", 5)
        c = ChatClient(server.ws, sdk_app_id=SDKAPPID, platform=platform, listener=rec, **kw)
        made.append(c)
        if connect:
            r = c.connect()
            assert r.outcome == "ok", r
        return c, rec

    try:
        yield factory
    finally:
        for c in made:
            c.close()


def sig(user: str, expire: int = 600, **kw: Any) -> str:
    return gen_usersig(SDKAPPID, KEY, user, expire, **kw)


def wait_until(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    with gevent.Timeout(timeout, False):
        while not pred():
            gevent.sleep(0.01)
    return pred()


_counter = iter(range(1_000_000))


def uid(prefix: str) -> str:
    """A user id unique in this test run (the server keeps state across tests)."""
    return f"{prefix}{os.getpid()}_{next(_counter)}"


# ---------------------------------------------------------------------------------------


def test_login_status_logout(make_client, server: RealServer) -> None:
    user = uid("ok")
    c, _ = make_client()
    r = c.login(user, server.fetch_sig(user))
    assert (r.outcome, r.code) == ("ok", 0), r
    assert r.session_id and r.data["userID"] == user and r.data["kicked"] == []
    assert isinstance(r.data["sigExpireAt"], int)
    assert c.get_login_status() == STATUS_LOGINED and c.get_login_user() == user
    s = c.status()
    assert s.outcome == "ok" and s.data["status"] == 1 and s.data["userID"] == user
    assert s.data["sessionID"] == r.session_id
    lo = c.logout()
    assert (lo.outcome, lo.code, lo.session_id) == ("ok", 0, r.session_id)
    assert c.get_login_status() == STATUS_LOGOUT and c.get_login_user() == ""
    assert c.status().data["status"] == 3
    again = c.logout()
    assert (again.outcome, again.code) == ("fail", 6014)


@pytest.mark.parametrize(
    "make_sig, code",
    [
        (lambda u: "", 70002),
        (lambda u: "not-a-sig", 70003),
        (lambda u: gen_usersig(SDKAPPID, "wrong-key", u, 600), 70009),
        (lambda u: sig("someone_else"), 70013),
        (lambda u: gen_usersig(SDKAPPID + 1, KEY, u, 600), 70014),
        (lambda u: sig(u, 10, now=int(time.time()) - 3600), 70001),
    ],
)
def test_bad_sig_codes_surface_and_leave_client_logged_out(make_client, make_sig, code: int) -> None:
    user = uid("bad")
    c, _ = make_client()
    r = c.login(user, make_sig(user))
    assert (r.outcome, r.code) == ("fail", code), r
    assert c.get_login_status() == STATUS_LOGOUT and c.get_login_user() == "" and c.session_id is None


def test_bad_user_id_gets_7003(make_client) -> None:
    c, _ = make_client()
    r = c.login("no spaces allowed", sig("x"))
    assert (r.outcome, r.code) == ("fail", 7003)


def test_kick_event_reaches_the_older_device_with_by(make_client) -> None:
    user = uid("kick")
    a, rec_a = make_client("Android")
    b, rec_b = make_client("iOS")
    ra = a.login(user, sig(user))
    assert ra.outcome == "ok"
    rb = b.login(user, sig(user))
    assert rb.outcome == "ok"
    assert [k["sessionID"] for k in rb.data["kicked"]] == [ra.session_id]
    assert wait_until(lambda: rec_a.kicks)
    session, reason, by, at_ns = rec_a.kicks[0]
    assert (session, reason) == (ra.session_id, "multi_device")
    assert by["sessionID"] == rb.session_id and by["platform"] == "iOS" and by["instanceID"] == b.instance_id
    assert at_ns >= ra.end_ns
    assert a.get_login_status() == STATUS_LOGOUT and a.get_login_user() == ""
    assert b.get_login_status() == STATUS_LOGINED and b.get_login_user() == user
    assert rec_b.kicks == []
    assert a.connected  # kicked, not disconnected: may log in again
    assert a.status().data["status"] == 3


def test_expiry_event_arrives_and_relogin_works(make_client) -> None:
    user = uid("exp")
    c, rec = make_client()
    r = c.login(user, sig(user, expire=1))
    assert r.outcome == "ok"
    assert wait_until(lambda: rec.expiries, timeout=6)
    session, at_ns = rec.expiries[0]
    assert session == r.session_id
    assert at_ns / 1e9 > r.data["sigExpireAt"]  # not before the sig stopped being valid
    assert c.get_login_status() == STATUS_LOGOUT and c.get_login_user() == ""
    assert c.connected
    r2 = c.login(user, sig(user))
    assert r2.outcome == "ok" and r2.session_id != r.session_id
    assert c.get_login_user() == user
    assert len(rec.expiries) == 1


def test_switching_accounts_needs_no_logout(make_client) -> None:
    alice, bob = uid("swa"), uid("swb")
    c, rec = make_client()
    ra = c.login(alice, sig(alice))
    rb = c.login(bob, sig(bob))
    assert ra.outcome == rb.outcome == "ok"
    assert rb.data["kicked"] == []  # the switch ends alice's session without a kick
    assert c.get_login_user() == bob and c.session_id == rb.session_id
    s = c.status()
    assert s.data["userID"] == bob and s.data["sessionID"] == rb.session_id
    gevent.sleep(0.1)
    assert rec.kicks == [] and rec.expiries == []


def test_heartbeats_foreground_and_background(make_client) -> None:
    c, _ = make_client()
    r = c.heartbeat()
    assert r.outcome == "ok" and isinstance(r.data["serverTime"], int)
    assert abs(r.data["serverTime"] - time.time() * 1000) < 60_000
    hb, rec = make_client(heartbeat_interval=0.05)
    assert wait_until(lambda: len(rec.heartbeats) >= 3)
    assert all(h.outcome == "ok" and h.op == "heartbeat" for h in rec.heartbeats)


def test_close_ends_the_session_on_the_server(make_client) -> None:
    user = uid("close")
    a, rec_a = make_client("Android")
    ra = a.login(user, sig(user))
    assert ra.outcome == "ok"
    a.close()
    assert rec_a.disconnects == [(ra.session_id, True, "closed_by_client")]
    b, _ = make_client("iOS")
    rb = b.login(user, sig(user))
    assert rb.outcome == "ok" and rb.data["kicked"] == []  # nothing left to evict
    assert rec_a.kicks == []


def test_wrong_path_is_rejected_at_handshake(server: RealServer) -> None:
    c = ChatClient(server.ws.replace("/ws", "/nope"), sdk_app_id=SDKAPPID, connect_timeout=5)
    try:
        r = c.connect()
        assert (r.outcome, r.code) == ("fail", -1)
        assert not c.connected
    finally:
        c.close()


def test_source_address_spread_over_loopback(make_client) -> None:
    user = uid("src")
    c, _ = make_client(source_address="127.0.0.3")
    assert c.login(user, sig(user)).outcome == "ok"
