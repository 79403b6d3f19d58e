"""ChatClient's own handshake and background close against raw scripted servers (loopback only).

Each server is a gevent StreamServer whose handler reads the upgrade request and answers
whatever the test scripts: a bad Sec-WebSocket-Accept, a non-101 status, headers in pieces,
a frame glued to the 101, no answer to our close frame.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Iterator

import gevent
import pytest
from gevent.event import Event as GEvent
from gevent.server import StreamServer
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import CloseConnection, TextMessage

from harness import protocol
from harness.sdk.client import ChatClient, ClientListener, accept_token

SDKAPPID = 1400000000


def read_request(sock: Any) -> tuple[bytes, bytes]:
    """The upgrade request's Sec-WebSocket-Key and any bytes after the request."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(4096)
        if not data:
            return b"", b""
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            return value.strip(), rest
    return b"", rest


def answer_101(key: bytes, accept: bytes | None = None) -> bytes:
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + (accept if accept is not None else accept_token(key)) + b"\r\n\r\n")


class Scripted:
    """A loopback server running ``script(sock)`` per connection; records what it saw."""

    def __init__(self, script: Callable[[Any, "Scripted"], None]) -> None:
        self.script = script
        self.eof = GEvent()          # a connection's client side closed (recv returned b"")
        self.got_close: list[int] = []
        self.server = StreamServer(("127.0.0.1", 0), self._serve)
        self.server.start()
        self.url = f"ws://127.0.0.1:{self.server.server_port}/ws"

    def _serve(self, sock: Any, _addr: Any) -> None:
        try:
            self.script(sock, self)
        except OSError:
            pass
        finally:
            sock.close()

    def wait_eof(self, sock: Any, conn: Connection | None = None, reply_close: bool = False) -> None:
        """Read until the client closes; note its close frame (answering it when asked)."""
        while True:
            data = sock.recv(65536)
            if not data:
                self.eof.set()
                return
            if conn is not None:
                conn.receive_data(data)
                for ev in conn.events():
                    if isinstance(ev, CloseConnection):
                        self.got_close.append(ev.code)
                        if reply_close:
                            sock.sendall(conn.send(ev.response()))

    def stop(self) -> None:
        self.server.stop(timeout=1)


@pytest.fixture
def scripted() -> Iterator[Callable[..., Scripted]]:
    servers: list[Scripted] = []
    clients: list[ChatClient] = []

    def make(script: Callable[[Any, Scripted], None]) -> Scripted:
        srv = Scripted(script)
        servers.append(srv)
        return srv

    make.clients = clients  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        for c in clients:
            c.close()
        for s in servers:
            s.stop()


def client(make: Any, url: str, **kw: Any) -> tuple[ChatClient, list]:
    calls: list = []
    listener = ClientListener(
        on_connect_failed=lambda code, desc: calls.append(("connect_failed", code, desc)),
        on_kicked_offline=lambda sid, reason, by, at: calls.append(("kicked", sid, reason)),
        on_disconnected=lambda sid, by_client, reason, at: calls.append(("disconnected", sid, by_client, reason)))
    kw.setdefault("request_timeout", 2)
    kw.setdefault("connect_timeout", 2)
    c = ChatClient(url, sdk_app_id=SDKAPPID, listener=listener, **kw)
    make.clients.append(c)
    return c, calls


def wait_until(pred: Callable[[], bool], timeout: float = 3.0) -> bool:
    with gevent.Timeout(timeout, False):
        while not pred():
            gevent.sleep(0.005)
    return pred()


@pytest.mark.parametrize("answer, words", [
    (lambda key: answer_101(key, accept=b"c29tZXRoaW5nIGVsc2UgZW50aXJlbHk="), "bad Sec-WebSocket-Accept"),
    (lambda key: b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", "handshake rejected: HTTP 403"),
    (lambda key: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", "handshake rejected: HTTP 200"),
    (lambda key: b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "not an HTTP"),
    (lambda key: b"", "connection closed by server"),
    (lambda key: b"HTTP/1.1 101 OK\r\n" + b"X-Pad: " + b"x" * 20000, "exceeds"),
])
def test_a_bad_handshake_answer_is_a_clear_fail_and_the_socket_is_closed(scripted, answer, words) -> None:
    def script(sock: Any, srv: Scripted) -> None:
        key, _ = read_request(sock)
        data = answer(key)
        if not data:
            srv.eof.set()                        # hang up without a word (nothing left to leak)
            return
        sock.sendall(data)
        srv.wait_eof(sock)

    srv = scripted(script)
    c, calls = client(scripted, srv.url)
    r = c.connect()
    assert (r.op, r.outcome, r.code) == ("connect", "fail", -1)
    assert words in r.desc
    assert calls == [("connect_failed", -1, r.desc)]
    assert not c.connected
    assert srv.eof.wait(3)                       # the client did not leave the socket open
    assert (c.login("alice", "sig").outcome, c.login("alice", "sig").code) == ("fail", -1)


def test_an_answer_in_pieces_with_a_frame_glued_to_it_is_handled(scripted) -> None:
    """The 101 arrives a few bytes at a time and a server event rides in the same packet as
    its last bytes: the client connects and still delivers the event."""
    def script(sock: Any, srv: Scripted) -> None:
        key, _ = read_request(sock)
        conn = Connection(ConnectionType.SERVER)
        head = answer_101(key)
        event = conn.send(TextMessage(data=protocol.encode_kicked_offline("S-old", "rest_kick", None)))
        body, tail = head[:-5], head[-5:]
        for i in range(0, len(body), 7):
            sock.sendall(body[i:i + 7])
            gevent.sleep(0.002)
        sock.sendall(tail + event)
        srv.wait_eof(sock, conn, reply_close=True)

    srv = scripted(script)
    c, calls = client(scripted, srv.url)
    r = c.connect()
    assert (r.outcome, r.code) == ("ok", 0), r
    assert wait_until(lambda: any(k[0] == "kicked" for k in calls))
    assert ("kicked", "S-old", "rest_kick") in calls
    c.close()
    assert wait_until(lambda: srv.got_close == [1000])


def test_close_does_not_wait_for_a_server_that_never_answers_it(scripted) -> None:
    """close() ends the connection for the caller at once (disconnected fired, may connect
    again); the unanswered close handshake is given up in the background and the socket closed."""
    answered = {"login": 0}

    def script(sock: Any, srv: Scripted) -> None:
        key, _ = read_request(sock)
        conn = Connection(ConnectionType.SERVER)
        sock.sendall(answer_101(key))
        while True:
            data = sock.recv(65536)
            if not data:
                srv.eof.set()
                return
            conn.receive_data(data)
            for ev in conn.events():
                if isinstance(ev, TextMessage):
                    msg = json.loads(ev.data)
                    answered["login"] += 1
                    sock.sendall(conn.send(TextMessage(data=protocol.encode_response(
                        msg["seq"], 0, "ok", {"sessionID": f"S{answered['login']}", "userID": msg["userID"]}))))
                elif isinstance(ev, CloseConnection):
                    srv.got_close.append(ev.code)   # ... and never answered

    srv = scripted(script)
    c, calls = client(scripted, srv.url, request_timeout=0.3)
    assert c.connect().ok and c.login("alice", "sig").ok
    c.close()
    assert ("disconnected", "S1", True, "closed_by_client") in calls and not c.connected
    assert not srv.eof.is_set()                  # the handshake is still open in the background
    assert srv.eof.wait(3)                       # ... until the reader gives up and closes the socket
    assert srv.got_close == [1000]
    # the client is usable again and the old connection's reader left it alone
    assert c.connect().ok and c.login("bob", "sig").ok
    assert c.get_login_user() == "bob" and c.connected
    assert [x for x in calls if x[0] == "disconnected"] == [("disconnected", "S1", True, "closed_by_client")]


def test_a_late_close_reply_does_not_touch_the_next_connection(scripted) -> None:
    """Reconnect right after close(): the old connection's close reply (and a stray frame
    before it) arrive later and must not change the new connection's state or callbacks."""
    def script(sock: Any, srv: Scripted) -> None:
        key, _ = read_request(sock)
        conn = Connection(ConnectionType.SERVER)
        sock.sendall(answer_101(key))
        n = 0
        stray = b""
        while True:
            data = sock.recv(65536)
            if not data:
                srv.eof.set()
                return
            conn.receive_data(data)
            for ev in conn.events():
                if isinstance(ev, TextMessage):
                    msg = json.loads(ev.data)
                    n += 1
                    sid = f"S{id(conn) % 1000}-{n}"
                    sock.sendall(conn.send(TextMessage(data=protocol.encode_response(
                        msg["seq"], 0, "ok", {"sessionID": sid, "userID": msg["userID"]}))))
                    # a kick for this session, sent late: after the client's close frame
                    stray = conn.send(TextMessage(data=protocol.encode_kicked_offline(sid, "multi_device", None)))
                elif isinstance(ev, CloseConnection):
                    srv.got_close.append(ev.code)
                    gevent.sleep(0.2)
                    sock.sendall(stray + conn.send(ev.response()))

    srv = scripted(script)
    c, calls = client(scripted, srv.url)
    assert c.connect().ok and c.login("alice", "sig").ok
    c.close()
    assert c.connect().ok
    second = c.login("bob", "sig")
    assert second.ok
    assert wait_until(lambda: srv.got_close == [1000]) and srv.eof.wait(3)
    gevent.sleep(0.05)
    assert c.connected and c.get_login_user() == "bob" and c.session_id == second.session_id
    assert not [x for x in calls if x[0] == "kicked"]
    assert len([x for x in calls if x[0] == "disconnected"]) == 1


def test_a_name_is_resolved_once_and_kept_for_reconnects(scripted) -> None:
    def script(sock: Any, srv: Scripted) -> None:
        key, _ = read_request(sock)
        sock.sendall(answer_101(key))
        srv.wait_eof(sock, Connection(ConnectionType.SERVER), reply_close=True)

    srv = scripted(script)
    port = srv.server.server_port
    c, _ = client(scripted, f"ws://localhost:{port}/ws")
    assert c.connect().ok
    c.close()
    assert c.connect().ok                        # again, from the kept addresses
    given, _ = client(scripted, f"ws://never.invalid:{port}/ws", addresses=[(2, ("127.0.0.1", port))])
    assert given.connect().ok                    # pre-resolved addresses are used as given
