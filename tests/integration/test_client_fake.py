"""ChatClient against a tiny in-test fake server (gevent StreamServer + wsproto, loopback only).

The fake answers like the reference server but lets each test script its behaviour:
hold a login, answer out of order, drop the connection, push events, fragment frames.
"""
from __future__ import annotations

import json
from typing import Any, Callable

import gevent
import pytest
from gevent.event import Event as GEvent
from gevent.lock import Semaphore
from gevent.server import StreamServer
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)

from harness import protocol
from harness.sdk.client import (
    CODE_LOGIN_IN_PROCESS,
    STATUS_LOGINED,
    STATUS_LOGINING,
    STATUS_LOGOUT,
    ChatClient,
    ClientListener,
    parse_ws_url,
)

SDKAPPID = 1400000000


class FakeConn:
    """Server side of one fake connection."""

    def __init__(self, sock: Any, server: "FakeServer") -> None:
        self.sock = sock
        self.server = server
        self.ws = WSConnection(ConnectionType.SERVER)
        self.lock = Semaphore(1)
        self.session: str | None = None
        self.user: str | None = None
        self.peer = sock.getpeername()
        self.got_pong = False
        self.got_close: int | None = None

    def send(self, event: Any) -> None:
        with self.lock:
            self.sock.sendall(self.ws.send(event))

    def send_text(self, text: str) -> None:
        self.send(TextMessage(data=text))

    def respond(self, seq: int, code: int = 0, desc: str = "ok", data: dict | None = None) -> None:
        self.send_text(protocol.encode_response(seq, code, desc, data))

    def drop(self) -> None:
        """Abrupt TCP close, no WebSocket close frame."""
        self.sock.close()


def default_handler(conn: FakeConn, msg: dict) -> None:
    """Answers like the reference server: sig "bad" -> 70001, else a new session."""
    cmd, seq = msg.get("cmd"), msg.get("seq")
    if cmd == "login":
        if msg["userSig"] == "bad":
            conn.session = conn.user = None
            conn.respond(seq, 70001, "expired")
            return
        conn.server.n_sessions += 1
        conn.session, conn.user = f"S{conn.server.n_sessions}", msg["userID"]
        conn.respond(seq, 0, "ok", {"sessionID": conn.session, "userID": conn.user, "kicked": []})
    elif cmd == "logout":
        if conn.session is None:
            conn.respond(seq, 6014, "not logged in")
        else:
            conn.session = conn.user = None
            conn.respond(seq)
    elif cmd == "status":
        conn.respond(seq, 0, "ok", {"status": 1 if conn.session else 3, "userID": conn.user,
                                    "sessionID": conn.session, "seqEcho": seq})
    elif cmd == "heartbeat":
        conn.respond(seq, 0, "ok", {"serverTime": 1})


class FakeServer:
    """gevent StreamServer speaking WebSocket (wsproto) on loopback; ``handler(conn, msg)`` per frame."""

    def __init__(self, handler: Callable[[FakeConn, dict], None] = default_handler, *,
                 host: str = "127.0.0.1", reject: bool = False) -> None:
        self.handler = handler
        self.reject = reject
        self.conns: list[FakeConn] = []
        self.frames: list[dict] = []
        self.n_sessions = 0
        self.connected = GEvent()
        self.server = StreamServer((host, 0), self._serve)
        self.server.start()
        self.url = f"ws://{'[' + host + ']' if ':' in host else host}:{self.server.server_port}/ws"

    def _serve(self, sock: Any, _addr: Any) -> None:
        conn = FakeConn(sock, self)
        self.conns.append(conn)
        parts: list[str] = []
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                conn.ws.receive_data(data)
                for ev in conn.ws.events():
                    if isinstance(ev, Request):
                        if self.reject:
                            conn.send(RejectConnection(status_code=404))
                            return
                        conn.send(AcceptConnection())
                        self.connected.set()
                    elif isinstance(ev, TextMessage):
                        parts.append(ev.data)
                        if ev.message_finished:
                            msg = json.loads("".join(parts))
                            parts.clear()
                            self.frames.append(msg)
                            self.handler(conn, msg)
                    elif isinstance(ev, Ping):
                        conn.send(ev.response())
                    elif isinstance(ev, Pong):
                        conn.got_pong = True
                    elif isinstance(ev, CloseConnection):
                        conn.got_close = ev.code
                        try:
                            conn.send(ev.response())
                        except Exception:
                            pass
                        return
        except OSError:
            return
        finally:
            sock.close()

    def cmds(self) -> list[str]:
        return [f.get("cmd") for f in self.frames]

    def stop(self) -> None:
        self.server.stop(timeout=1)


class Recorder(ClientListener):
    """Keeps every callback as (name, args)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple]] = []

    def _rec(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))

    def on_connecting(self) -> None:
        self._rec("connecting")

    def on_connect_success(self) -> None:
        self._rec("connect_success")

    def on_connect_failed(self, code: int, desc: str) -> None:
        self._rec("connect_failed", code, desc)

    def on_kicked_offline(self, session_id: str, reason: str, by: dict | None, at_ns: int) -> None:
        self._rec("kicked", session_id, reason, by, at_ns)

    def on_user_sig_expired(self, session_id: str, at_ns: int) -> None:
        self._rec("expired", session_id, at_ns)

    def on_disconnected(self, session_id: str | None, by_client: bool, reason: str, at_ns: int) -> None:
        self._rec("disconnected", session_id, by_client, reason, at_ns)

    def on_heartbeat(self, result: Any) -> None:
        self._rec("heartbeat", result)

    def named(self, name: str) -> list[tuple]:
        return [args for n, args in self.calls if n == name]


@pytest.fixture
def server():
    srv = FakeServer()
    try:
        yield srv
    finally:
        srv.stop()


def make_client(url: str, **kw: Any) -> tuple[ChatClient, Recorder]:
    rec = Recorder()
    kw.setdefault("request_timeout", 2)
    kw.setdefault("connect_timeout", 2)
    return ChatClient(url, sdk_app_id=SDKAPPID, listener=rec, **kw), rec


def wait_until(pred: Callable[[], bool], timeout: float = 3.0) -> bool:
    with gevent.Timeout(timeout, False):
        while not pred():
            gevent.sleep(0.005)
    return pred()


@pytest.fixture
def client_factory():
    made: list[ChatClient] = []

    def factory(url: str, **kw: Any) -> tuple[ChatClient, Recorder]:
        client, rec = make_client(url, **kw)
        made.append(client)
        return client, rec

    try:
        yield factory
    finally:
        for c in made:
            c.close()


# ----------------------------------------------------------------------------- pure


def test_parse_ws_url_forms() -> None:
    assert parse_ws_url("ws://127.0.0.1:8080/ws") == ("127.0.0.1", 8080, "/ws", "127.0.0.1:8080")
    assert parse_ws_url("ws://[::1]:9000/ws?x=1") == ("::1", 9000, "/ws?x=1", "[::1]:9000")
    assert parse_ws_url("ws://localhost:81") == ("localhost", 81, "/ws", "localhost:81")
    assert parse_ws_url("ws://h/chat")[1:3] == (80, "/chat")


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/ws", "wss://127.0.0.1:1/ws", "ws://:80/ws", "", "ws://h:99999/"])
def test_parse_ws_url_rejects_bad_urls_with_a_sentence(url: str) -> None:
    with pytest.raises(ValueError, match="url"):
        parse_ws_url(url)
    with pytest.raises(ValueError):
        ChatClient(url, sdk_app_id=SDKAPPID)


def test_listener_takes_callables_and_rejects_unknown_names() -> None:
    seen = []
    listener = ClientListener(on_kicked_offline=lambda *a: seen.append(a))
    listener.on_kicked_offline("S1", "multi_device", None, 5)
    listener.on_user_sig_expired("S1", 5)  # default: no-op
    assert seen == [("S1", "multi_device", None, 5)]
    with pytest.raises(TypeError, match="on_kiked"):
        ClientListener(on_kiked=lambda: None)


def test_default_instance_id_is_valid_and_unique() -> None:
    a = ChatClient("ws://127.0.0.1:1/ws", sdk_app_id=SDKAPPID, platform="Web")
    b = ChatClient("ws://127.0.0.1:1/ws", sdk_app_id=SDKAPPID, platform="Web")
    assert a.instance_id != b.instance_id
    assert protocol.INSTANCE_ID_RE.fullmatch(a.instance_id)


def test_calls_before_connect_fail_without_raising() -> None:
    c = ChatClient("ws://127.0.0.1:1/ws", sdk_app_id=SDKAPPID)
    for r in (c.login("u1", "sig"), c.logout(), c.status(), c.heartbeat()):
        assert (r.outcome, r.code) == ("fail", -1)
    assert c.get_login_status() == STATUS_LOGOUT and c.get_login_user() == ""
    c.close()
    c.close()


# ----------------------------------------------------------------------- connect


def test_connect_ok_then_login_logout_cycle(server: FakeServer, client_factory) -> None:
    c, rec = client_factory(server.url)
    r = c.connect()
    assert (r.op, r.outcome, r.code) == ("connect", "ok", 0)
    assert r.start_ns <= r.end_ns
    assert c.connected and c.get_login_status() == STATUS_LOGOUT and c.get_login_user() == ""
    assert [n for n, _ in rec.calls] == ["connecting", "connect_success"]

    r = c.login("alice", "good")
    assert (r.op, r.outcome, r.code, r.session_id) == ("login", "ok", 0, "S1")
    assert r.data["userID"] == "alice"
    assert c.get_login_status() == STATUS_LOGINED and c.get_login_user() == "alice" and c.session_id == "S1"
    login_frame = server.frames[-1]
    assert login_frame["sdkAppID"] == SDKAPPID and login_frame["platform"] == "Android"
    assert login_frame["instanceID"] == c.instance_id

    r = c.status()
    assert r.outcome == "ok" and r.data["status"] == 1 and r.session_id == "S1"
    r = c.heartbeat()
    assert (r.outcome, r.data) == ("ok", {"serverTime": 1})

    r = c.logout()
    assert (r.outcome, r.code, r.session_id) == ("ok", 0, "S1")
    assert c.get_login_status() == STATUS_LOGOUT and c.get_login_user() == "" and c.session_id is None
    r = c.logout()
    assert (r.outcome, r.code) == ("fail", 6014)
    assert c.connect().outcome == "fail"  # already connected


def test_connect_refused_is_fail_and_notifies(client_factory) -> None:
    srv = StreamServer(("127.0.0.1", 0), lambda s, a: None)
    srv.start()
    port = srv.server_port
    srv.stop()
    c, rec = client_factory(f"ws://127.0.0.1:{port}/ws")
    r = c.connect()
    assert (r.outcome, r.code) == ("fail", -1)
    assert "Refused" in r.desc
    assert not c.connected
    assert rec.named("connect_failed")[0][0] == -1
    assert rec.named("disconnected") == []


def test_rejected_handshake_is_fail(client_factory) -> None:
    srv = FakeServer(reject=True)
    try:
        c, rec = client_factory(srv.url)
        r = c.connect()
        assert (r.outcome, r.code) == ("fail", -1) and "404" in r.desc
        assert rec.named("connect_failed")
    finally:
        srv.stop()


def test_handshake_timeout_is_info(client_factory) -> None:
    held = []
    srv = StreamServer(("127.0.0.1", 0), lambda s, a: (held.append(s), gevent.sleep(2)))
    srv.start()
    try:
        c, _ = client_factory(f"ws://127.0.0.1:{srv.server_port}/ws", connect_timeout=0.2)
        r = c.connect()
        assert (r.outcome, r.code) == ("info", -1) and "timeout" in r.desc
    finally:
        srv.stop(timeout=0.1)


def test_source_address_and_ipv6(client_factory) -> None:
    srv = FakeServer()
    try:
        c, _ = client_factory(srv.url, source_address="127.0.0.2")
        assert c.connect().outcome == "ok"
        assert wait_until(lambda: len(srv.conns) == 1)
        assert srv.conns[0].peer[0] == "127.0.0.2"
    finally:
        srv.stop()
    srv6 = FakeServer(host="::1")
    try:
        c6, _ = client_factory(srv6.url)
        assert c6.connect().outcome == "ok"
        assert c6.login("bob", "good").outcome == "ok"
    finally:
        srv6.stop()


# ------------------------------------------------------------------- login states


def test_status_goes_3_2_1_3_and_second_login_in_flight_gets_7501(client_factory) -> None:
    release = GEvent()
    sessions = iter(["S1", "S2"])

    def handler(conn: FakeConn, msg: dict) -> None:
        if msg["cmd"] == "login":
            def later() -> None:
                release.wait(5)
                conn.respond(msg["seq"], 0, "ok", {"sessionID": next(sessions), "userID": msg["userID"]})
            gevent.spawn(later)
        else:
            default_handler(conn, msg)

    srv = FakeServer(handler)
    try:
        c, _ = client_factory(srv.url)
        c.connect()
        seen = [c.get_login_status()]
        g = gevent.spawn(c.login, "alice", "sig")
        assert wait_until(lambda: "login" in srv.cmds())
        seen.append(c.get_login_status())
        second = c.login("bob", "sig")
        assert (second.outcome, second.code) == ("fail", CODE_LOGIN_IN_PROCESS)
        assert "7501" in second.desc
        assert srv.cmds().count("login") == 1  # the second login never touched the wire
        assert c.get_login_status() == STATUS_LOGINING
        release.set()
        first = g.get(timeout=3)
        seen.append(c.get_login_status())
        assert first.outcome == "ok" and c.get_login_user() == "alice"
        c.logout()
        seen.append(c.get_login_status())
        assert seen == [STATUS_LOGOUT, STATUS_LOGINING, STATUS_LOGINED, STATUS_LOGOUT]
    finally:
        srv.stop()


def test_failed_login_clears_user_even_after_a_previous_login(server: FakeServer, client_factory) -> None:
    c, _ = client_factory(server.url)
    c.connect()
    assert c.login("alice", "good").outcome == "ok"
    r = c.login("bob", "bad")
    assert (r.outcome, r.code, r.session_id) == ("fail", 70001, None)
    assert c.get_login_status() == STATUS_LOGOUT and c.get_login_user() == "" and c.session_id is None
    # account switching without logout
    assert c.login("carol", "good").outcome == "ok"
    assert c.get_login_user() == "carol"
    r = c.login("dave", "good")
    assert r.outcome == "ok" and c.get_login_user() == "dave" and c.session_id == r.session_id


def test_responses_are_matched_by_seq_not_order(client_factory) -> None:
    held: list[tuple[FakeConn, dict]] = []

    def handler(conn: FakeConn, msg: dict) -> None:
        held.append((conn, msg))
        if len(held) == 3:
            for cn, m in reversed(held):
                default_handler(cn, m)

    srv = FakeServer(handler)
    try:
        c, _ = client_factory(srv.url)
        c.connect()
        greenlets = [gevent.spawn(c.status) for _ in range(3)]
        results = [g.get(timeout=3) for g in greenlets]
        sent_seqs = [m["seq"] for _, m in held]
        assert len(set(sent_seqs)) == 3
        # each caller got the answer to its own request
        assert [r.data["seqEcho"] for r in results] == sent_seqs
        assert all(r.outcome == "ok" for r in results)
    finally:
        srv.stop()


def test_timeout_is_info_and_late_answer_is_ignored(client_factory) -> None:
    silent = {"login", "status"}
    late: list[tuple[FakeConn, dict]] = []

    def handler(conn: FakeConn, msg: dict) -> None:
        if msg["cmd"] in silent:
            late.append((conn, msg))
        else:
            default_handler(conn, msg)

    srv = FakeServer(handler)
    try:
        c, _ = client_factory(srv.url, request_timeout=0.2)
        c.connect()
        r = c.status()
        assert (r.outcome, r.code) == ("info", -1) and "timeout" in r.desc
        r = c.login("alice", "good")
        assert (r.outcome, r.code) == ("info", -1)
        assert c.get_login_status() == STATUS_LOGOUT and c.get_login_user() == ""
        silent.clear()
        for conn, m in late:  # answers arrive after the callers gave up
            default_handler(conn, m)
        r = c.heartbeat()
        assert r.outcome == "ok" and r.data == {"serverTime": 1}
        assert c.get_login_status() == STATUS_LOGOUT and c.get_login_user() == ""
        assert c.connected
    finally:
        srv.stop()


def test_pipelined_calls_time_out_each_at_its_own_deadline_on_the_shared_timer() -> None:
    """The driver's calls on one connection share one request timer armed for the earliest
    deadline: a call with a shorter timeout made while a longer one waits still times out
    first, answered calls in between are not disturbed, and an idle connection keeps no timer."""
    from harness.drivers.tim import TimDriver

    def handler(conn: FakeConn, msg: dict) -> None:
        if msg["cmd"] != "status":  # status: never answered
            default_handler(conn, msg)

    srv = FakeServer(handler)
    try:
        d = TimDriver(srv.url, sdk_app_id=SDKAPPID)
        assert d.connect(__import__("time").monotonic() + 2) is None
        done: list[str] = []

        def call(name: str, timeout: float):
            r = d.status(timeout) if name.startswith("status") else d.heartbeat(timeout)
            done.append(name)
            return r

        slow = gevent.spawn(call, "status-long", 1.3)  # beyond RTIMER_MAX_S: the timer re-arms on the way
        gevent.sleep(0.02)
        fast = gevent.spawn(call, "status-short", 0.1)
        beat = gevent.spawn(call, "heartbeat", 1.0)
        results = {g: g.get(timeout=5) for g in (slow, fast, beat)}
        assert done == ["heartbeat", "status-short", "status-long"]
        assert results[beat].outcome == "ok"
        for g in (slow, fast):
            assert (results[g].outcome, results[g].code) == ("info", -1) and "timeout" in results[g].desc
        link = d._link
        assert d._pending is None and link is not None
        assert wait_until(lambda: link.rtimer is None, timeout=3)  # idle: the timer goes within RTIMER_MAX_S
        assert d.heartbeat(1.0).outcome == "ok"
        d.close()
    finally:
        srv.stop()


# ------------------------------------------------------------------ events


def test_kick_and_expiry_events_update_state_and_reach_listener(server: FakeServer, client_factory) -> None:
    c, rec = client_factory(server.url)
    c.connect()
    c.login("alice", "good")
    conn = server.conns[0]
    by = {"sessionID": "S9", "platform": "iOS", "instanceID": "i9"}
    conn.send_text(protocol.encode_kicked_offline("S1", "multi_device", by))
    assert wait_until(lambda: rec.named("kicked"))
    sid, reason, got_by, at_ns = rec.named("kicked")[0]
    assert (sid, reason, got_by) == ("S1", "multi_device", by) and at_ns > 0
    assert c.get_login_status() == STATUS_LOGOUT and c.get_login_user() == "" and c.session_id is None
    assert c.last_kick.session_id == "S1" and c.last_kick.by == by
    assert c.connected  # the connection stays open and may log in again

    assert c.login("alice", "good").session_id == "S2"
    conn.send_text(protocol.encode_user_sig_expired("S2"))
    assert wait_until(lambda: rec.named("expired"))
    assert rec.named("expired")[0][0] == "S2"
    assert c.get_login_status() == STATUS_LOGOUT and c.get_login_user() == ""
    assert c.last_expiry.session_id == "S2"


def test_event_for_another_session_does_not_log_out(server: FakeServer, client_factory) -> None:
    c, rec = client_factory(server.url)
    c.connect()
    c.login("alice", "good")
    server.conns[0].send_text(protocol.encode_kicked_offline("S-old", "rest_kick", None))
    server.conns[0].send_text(protocol.encode_user_sig_expired("S-old"))
    assert wait_until(lambda: rec.named("expired"))
    assert rec.named("kicked")[0][:3] == ("S-old", "rest_kick", None)
    assert c.get_login_status() == STATUS_LOGINED and c.get_login_user() == "alice" and c.session_id == "S1"


def test_event_right_after_login_response_is_applied_after_it(client_factory) -> None:
    def handler(conn: FakeConn, msg: dict) -> None:
        default_handler(conn, msg)
        if msg["cmd"] == "login":
            conn.send_text(protocol.encode_kicked_offline(conn.session, "multi_device", None))

    srv = FakeServer(handler)
    try:
        c, rec = client_factory(srv.url)
        c.connect()
        r = c.login("alice", "good")
        assert r.outcome == "ok"
        assert wait_until(lambda: rec.named("kicked"))
        assert c.get_login_status() == STATUS_LOGOUT and c.get_login_user() == ""
    finally:
        srv.stop()


def test_garbage_frames_and_a_raising_listener_do_not_break_the_client(server: FakeServer) -> None:
    def boom(*_a: Any) -> None:
        raise RuntimeError("listener bug")

    c = ChatClient(server.url, sdk_app_id=SDKAPPID, request_timeout=2,
                   listener=ClientListener(on_kicked_offline=boom, on_connect_success=boom))
    try:
        assert c.connect().outcome == "ok"
        c.login("alice", "good")
        conn = server.conns[0]
        for junk in ("not json", "[1,2]", '{"event":"nope"}', '{"seq":"x","code":0}'):
            conn.send_text(junk)
        conn.send_text(protocol.encode_kicked_offline("S1", "multi_device", None))
        assert wait_until(lambda: c.get_login_status() == STATUS_LOGOUT)
        assert c.status().outcome == "ok"
    finally:
        c.close()


def test_fragmented_message_and_ping_are_handled(client_factory) -> None:
    def handler(conn: FakeConn, msg: dict) -> None:
        if msg["cmd"] == "status":
            text = protocol.encode_response(msg["seq"], 0, "ok", {"status": 3, "pad": "x" * 300})
            conn.send(TextMessage(data=text[:10], message_finished=False))
            conn.send(Ping(payload=b"hi"))
            conn.send(TextMessage(data=text[10:100], message_finished=False))
            conn.send(TextMessage(data=text[100:], message_finished=True))
        else:
            default_handler(conn, msg)

    srv = FakeServer(handler)
    try:
        c, _ = client_factory(srv.url)
        c.connect()
        r = c.status()
        assert r.outcome == "ok" and r.data["pad"] == "x" * 300
        assert wait_until(lambda: srv.conns[0].got_pong)
    finally:
        srv.stop()


# ------------------------------------------------------------------ loss / close


def test_connection_loss_fails_pending_calls_and_fires_disconnected_once(client_factory) -> None:
    def handler(conn: FakeConn, msg: dict) -> None:
        if msg["cmd"] == "status":
            gevent.spawn_later(0.05, conn.drop)
        else:
            default_handler(conn, msg)

    srv = FakeServer(handler)
    try:
        c, rec = client_factory(srv.url, request_timeout=5)
        c.connect()
        c.login("alice", "good")
        r = c.status()
        assert (r.outcome, r.code) == ("info", -1) and "lost" in r.desc
        assert wait_until(lambda: rec.named("disconnected"))
        gevent.sleep(0.05)
        c.close()
        assert len(rec.named("disconnected")) == 1
        sid, by_client, reason, _at = rec.named("disconnected")[0]
        assert (sid, by_client, reason) == ("S1", False, "closed_by_server")
        assert not c.connected
        assert c.get_login_status() == STATUS_LOGOUT and c.get_login_user() == ""
        r = c.heartbeat()
        assert (r.outcome, r.code) == ("fail", -1)
    finally:
        srv.stop()


def test_server_close_frame_is_answered(client_factory) -> None:
    def handler(conn: FakeConn, msg: dict) -> None:
        if msg["cmd"] == "heartbeat":
            conn.send(CloseConnection(code=1001, reason="idle"))
        else:
            default_handler(conn, msg)

    srv = FakeServer(handler)
    try:
        c, rec = client_factory(srv.url)
        c.connect()
        r = c.heartbeat()
        assert r.outcome == "info"
        assert wait_until(lambda: srv.conns[0].got_close is not None)
        assert srv.conns[0].got_close == 1001  # our reply echoes the server's code
        assert c.close_code == 1001
        assert rec.named("disconnected")[0][1:3] == (False, "closed_by_server")
    finally:
        srv.stop()


def test_close_is_idempotent_sends_close_and_fails_pending(client_factory) -> None:
    never: list[dict] = []

    def handler(conn: FakeConn, msg: dict) -> None:
        if msg["cmd"] == "status":
            never.append(msg)
        else:
            default_handler(conn, msg)

    srv = FakeServer(handler)
    try:
        c, rec = client_factory(srv.url, request_timeout=5)
        c.connect()
        c.login("alice", "good")
        g = gevent.spawn(c.status)
        assert wait_until(lambda: never)
        c.close()
        c.close()
        r = g.get(timeout=2)
        assert (r.outcome, r.code) == ("info", -1)
        assert wait_until(lambda: srv.conns[0].got_close == 1000)
        assert rec.named("disconnected") == [("S1", True, "closed_by_client", rec.named("disconnected")[0][3])]
        assert c.get_login_user() == "" and not c.connected
        # a closed client may connect again
        assert c.connect().outcome == "ok"
        assert c.login("bob", "good").outcome == "ok"
    finally:
        srv.stop()


def test_close_from_inside_a_listener_callback(server: FakeServer) -> None:
    holder: dict = {}
    listener = ClientListener(on_kicked_offline=lambda *a: holder["c"].close())
    c = ChatClient(server.url, sdk_app_id=SDKAPPID, listener=listener, request_timeout=2)
    holder["c"] = c
    try:
        c.connect()
        c.login("alice", "good")
        server.conns[0].send_text(protocol.encode_kicked_offline("S1", "multi_device", None))
        assert wait_until(lambda: not c.connected)
        assert wait_until(lambda: server.conns[0].got_close == 1000)
    finally:
        c.close()


# ------------------------------------------------------------------ heartbeat


def test_background_heartbeats_report_to_listener_and_stop_on_close(server: FakeServer, client_factory) -> None:
    c, rec = client_factory(server.url, heartbeat_interval=0.02)
    c.connect()
    assert wait_until(lambda: len(rec.named("heartbeat")) >= 3)
    results = [args[0] for args in rec.named("heartbeat")]
    assert all(r.op == "heartbeat" and r.outcome == "ok" for r in results)
    c.close()
    gevent.sleep(0.01)
    count = server.cmds().count("heartbeat")
    gevent.sleep(0.1)
    assert server.cmds().count("heartbeat") == count


def test_many_clients_share_one_process(server: FakeServer, client_factory) -> None:
    clients = [client_factory(server.url)[0] for _ in range(50)]
    connects = [gevent.spawn(c.connect) for c in clients]
    gevent.joinall(connects, timeout=5)
    assert [g.value.outcome for g in connects] == ["ok"] * 50
    jobs = [gevent.spawn(c.login, f"u{i}", "good") for i, c in enumerate(clients)]
    gevent.joinall(jobs, timeout=5)
    assert [j.value.outcome for j in jobs] == ["ok"] * 50
    assert [c.get_login_user() for c in clients] == [f"u{i}" for i in range(50)]


def test_protocol_violation_by_server_closes_with_its_code(server: FakeServer, client_factory) -> None:
    c, rec = client_factory(server.url)
    c.connect()
    c.login("alice", "good")
    conn = server.conns[0]
    with conn.lock:
        conn.sock.sendall(b"\x81\x02\xff\xfe")  # a text frame that is not UTF-8
    assert wait_until(lambda: rec.named("disconnected"))
    assert rec.named("disconnected")[0][:3] == ("S1", False, "error:ProtocolError")
    assert wait_until(lambda: conn.got_close is not None)
    assert conn.got_close == 1007
    assert not c.connected and c.get_login_user() == ""


def test_a_text_frame_with_a_non_minimal_length_closes_1002(server: FakeServer, client_factory) -> None:
    """A read of exactly one text frame takes the driver's shortcut past the frame reader: it
    must refuse what the reader refuses (here a 16-bit length for a payload below 126 bytes)."""
    c, rec = client_factory(server.url)
    c.connect()
    c.login("alice", "good")
    conn = server.conns[0]
    payload = b'{"seq":99,"code":0,"desc":"ok"}'
    with conn.lock:
        conn.sock.sendall(b"\x81\x7e" + len(payload).to_bytes(2, "big") + payload)
    assert wait_until(lambda: rec.named("disconnected"))
    assert rec.named("disconnected")[0][:3] == ("S1", False, "error:ProtocolError")
    assert wait_until(lambda: conn.got_close is not None)
    assert conn.got_close == 1002


def test_oversized_message_closes_1009(server: FakeServer, client_factory) -> None:
    c, rec = client_factory(server.url)
    c.connect()
    conn = server.conns[0]
    chunk = "x" * 600_000
    conn.send(TextMessage(data='{"seq":1,"code":0,"desc":"' + chunk, message_finished=False))
    conn.send(TextMessage(data=chunk + '"}', message_finished=True))
    assert wait_until(lambda: rec.named("disconnected"))
    assert rec.named("disconnected")[0][2] == "error:MessageTooBig"
    assert wait_until(lambda: conn.got_close is not None)
    assert conn.got_close == 1009
