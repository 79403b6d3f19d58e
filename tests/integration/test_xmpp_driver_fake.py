"""XmppDriver against a tiny in-test fake XMPP server (gevent StreamServer, loopback only).

The fake speaks just enough RFC 6120 (stream header, features, SASL PLAIN / SCRAM-SHA-1/256
with a real server-side SCRAM check, restart, bind, presence, ping, close) and lets each
test script what happens after the login: a conflict, garbage, an oversize stanza, silence,
a half-close, a reset. Every wait is bounded.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import socket as stdsocket
import struct
import time
from typing import Any, Callable

import gevent
import pytest
from gevent import socket as gsocket
from gevent import ssl as gssl
from gevent.server import StreamServer
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from harness import protocol
from harness.drivers.xmpp import XmppDriver
from harness.drivers.xmpp.jwt import make_token

DOMAIN = "localhost"
USERS = {"alice": "secret-a", "bob": "secret-b"}
SALT = b"fake-salt-123456"
ITERS = 4096
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"

RE_HEADER = re.compile(rb"<stream:stream[^>]*>")
RE_OPEN = re.compile(rb"<open [^>]*/>")
RE_STARTTLS = re.compile(rb"<starttls [^>]*/>")
RE_AUTH = re.compile(rb"<auth[^>]*mechanism='([^']+)'[^>]*>([^<]*)</auth>")
RE_RESPONSE = re.compile(rb"<response[^>]*>([^<]*)</response>")
RE_BIND = re.compile(rb"<iq[^>]*id='([^']+)'[^>]*><bind[^>]*>(?:<resource>([^<]*)</resource>)?</bind></iq>")
RE_PRESENCE = re.compile(rb"<presence[^>]*/>")
RE_SESSION_OR_PRESENCE = re.compile(rb"<iq[^>]*id='([^']+)'[^>]*><session[^>]*/></iq>|<presence[^>]*/>")
RE_ANY = re.compile(rb"(</stream:stream>|<close [^>]*/>)|<iq[^>]*type='get' id='([^']+)'[^>]*><ping|(<presence[^>]*type='unavailable'[^>]*/>)|<iq[^>]*type='result'[^>]*/>")

HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
          "id='{sid}' from='localhost' version='1.0' xml:lang='en'>")
WS_OPEN = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' id='{sid}' from='localhost' version='1.0'/>"
WS_CLOSE = "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"
STARTTLS_REQUIRED = ("<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
                     "</stream:features>")
FEATURES_AUTH = ("<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{mechs}</mechanisms>"
                 "</stream:features>")
FEATURES_BIND = ("<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
                 "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session></stream:features>")
FEATURES_BIND_SESSION = ("<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
                         "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></stream:features>")
FEATURES_NO_BIND = "<stream:features><sm xmlns='urn:xmpp:sm:3'/></stream:features>"


class Closed(Exception):
    pass


class FakeConn:
    def __init__(self, sock: Any, server: "FakeXmpp", n: int) -> None:
        self.sock = sock
        self.server = server
        self.n = n
        self.buf = b""
        self.received = b""
        self.wsc: Any = None
        self.frames: list[str] = []

    def log(self, what: str) -> None:
        self.server.events.append((time.monotonic(), self.n, what))

    def send(self, text: str | bytes) -> None:
        if self.server.ws:
            if isinstance(text, bytes):
                text = text.decode()
            if text.startswith("<stream:features>"):
                text = text.replace("<stream:features>",
                                    "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>", 1)
            self.sock.sendall(self.wsc.send(TextMessage(data=text)))
        else:
            self.sock.sendall(text.encode() if isinstance(text, str) else text)

    def header(self, sid: str) -> None:
        self.send(WS_OPEN.format(sid=sid) if self.server.ws else HEADER.format(sid=sid))

    def expect_header(self) -> None:
        self.expect(RE_OPEN if self.server.ws else RE_HEADER)

    def ws_accept(self) -> None:
        self.wsc = WSConnection(ConnectionType.SERVER)
        end = time.monotonic() + 5
        while time.monotonic() < end:
            data = self.sock.recv(65536)
            if not data:
                raise Closed("eof in handshake")
            self.wsc.receive_data(data)
            for ev in self.wsc.events():
                if isinstance(ev, Request):
                    self.server.subprotocols = list(ev.subprotocols)
                    self.sock.sendall(self.wsc.send(AcceptConnection(subprotocol="xmpp")))
                    return
        raise Closed("handshake timeout")

    def _more(self) -> bytes:
        data = self.sock.recv(65536)
        if not data or not self.server.ws:
            return data
        self.wsc.receive_data(data)
        out = b""
        for ev in self.wsc.events():
            if isinstance(ev, TextMessage):
                out += ev.data.encode()
                self.frames.append(ev.data)
            elif isinstance(ev, CloseConnection):
                self.sock.sendall(self.wsc.send(ev.response()))
                raise Closed("ws-close")
        return out or b" "

    def expect(self, pattern: re.Pattern, timeout: float = 5.0) -> re.Match:
        end = time.monotonic() + timeout
        while True:
            m = pattern.search(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise Closed("timeout")
            self.sock.settimeout(remaining)
            data = self._more()
            if not data:
                raise Closed("eof")
            self.buf += data
            self.received += data


class FakeXmpp:
    """Scripted fake server. ``after_login(conn)`` runs once the client sent its presence."""

    def __init__(self, mechs: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"),
                 after_login: Callable[[FakeConn], None] | None = None, reject: bool = False,
                 silent_auth: bool = False, bad_server_sig: bool = False, ws: bool = False,
                 tls_context: Any = None, success_delay_s: float = 0.0,
                 restart_features: str = FEATURES_BIND, bind_error: str = "") -> None:
        self.success_delay_s = success_delay_s
        self.restart_features = restart_features  # what the restarted stream offers (may change between logins)
        self.bind_error = bind_error  # a stanza error condition answering the bind
        self.ws = ws
        self.tls_context = tls_context
        self.subprotocols: list[str] = []
        self.mechs = mechs
        self.after_login = after_login
        self.reject = reject
        self.silent_auth = silent_auth
        self.bad_server_sig = bad_server_sig
        self.events: list[tuple[float, int, str]] = []
        self.conns: list[FakeConn] = []
        self.server = StreamServer(("127.0.0.1", 0), self.handle)
        self.server.start()
        self.port = self.server.server_port

    def stop(self) -> None:
        self.server.stop(timeout=1)

    def what(self) -> list[str]:
        return [f"{n}:{w}" for _t, n, w in self.events]

    def handle(self, sock: Any, _addr: Any) -> None:
        sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
        conn = FakeConn(sock, self, len(self.conns) + 1)
        self.conns.append(conn)
        try:
            self.session(conn)
        except (Closed, OSError) as exc:
            conn.log(f"closed:{exc}")
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def session(self, conn: FakeConn) -> None:
        if self.ws:
            conn.ws_accept()
        conn.expect_header()
        conn.log("header")
        if self.tls_context is not None:
            conn.send(HEADER.format(sid=f"s{conn.n}t") + STARTTLS_REQUIRED)
            conn.expect(RE_STARTTLS)
            conn.send("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            conn.sock = self.tls_context.wrap_socket(conn.sock, server_side=True)
            conn.log("tls")
            conn.buf = b""
            conn.expect_header()
        mechs = "".join(f"<mechanism>{m}</mechanism>" for m in self.mechs)
        conn.header(f"s{conn.n}a")
        conn.send(FEATURES_AUTH.format(mechs=mechs))
        while True:
            m = conn.expect(RE_AUTH)
            mech = m.group(1).decode()
            payload = base64.b64decode(m.group(2)) if m.group(2) not in (b"", b"=") else b""
            if self.silent_auth:
                conn.log("auth-ignored")
                conn.expect(re.compile(rb"</stream:stream>"), timeout=10)
                conn.log("client-close")
                return
            if mech == "PLAIN":
                _authz, user, password = payload.decode().split("\0")
                conn.log(f"auth:{user}")
                ok = USERS.get(user) == password and not self.reject
                if ok and self.success_delay_s:
                    gevent.sleep(self.success_delay_s)
                if not ok:
                    conn.send(f"<failure xmlns='{SASL}'><not-authorized/><text xml:lang='en'>Invalid username or password"
                              "</text></failure>")
                    conn.log("auth-failed")
                    continue
                conn.send(f"<success xmlns='{SASL}'/>")
            else:
                h = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}[mech]
                bare = payload.decode()[3:]  # after "n,,"
                attrs = dict(p.split("=", 1) for p in bare.split(","))
                user, cnonce = attrs["n"], attrs["r"]
                conn.log(f"auth:{user}:{mech}")
                snonce = cnonce + "srvnonce"
                server_first = f"r={snonce},s={base64.b64encode(SALT).decode()},i={ITERS}"
                conn.send(f"<challenge xmlns='{SASL}'>{base64.b64encode(server_first.encode()).decode()}</challenge>")
                r = conn.expect(RE_RESPONSE)
                final = base64.b64decode(r.group(1)).decode()
                without_proof, _, proof_b64 = final.rpartition(",p=")
                salted = hashlib.pbkdf2_hmac(h, USERS.get(user, "?").encode(), SALT, ITERS)
                client_key = hmac.digest(salted, b"Client Key", h)
                stored = hashlib.new(h, client_key).digest()
                auth_msg = f"{bare},{server_first},{without_proof}".encode()
                sig = hmac.digest(stored, auth_msg, h)
                proof = base64.b64decode(proof_b64)
                recovered = bytes(a ^ b for a, b in zip(proof, sig))
                if self.reject or hashlib.new(h, recovered).digest() != stored:
                    conn.send(f"<failure xmlns='{SASL}'><not-authorized/></failure>")
                    conn.log("auth-failed")
                    continue
                server_sig = hmac.digest(hmac.digest(salted, b"Server Key", h), auth_msg, h)
                if self.bad_server_sig:
                    server_sig = bytes(len(server_sig))
                v = base64.b64encode(f"v={base64.b64encode(server_sig).decode()}".encode()).decode()
                conn.send(f"<success xmlns='{SASL}'>{v}</success>")
            break
        conn.expect_header()
        conn.log("restart")
        conn.header(f"s{conn.n}b")
        features = self.restart_features
        conn.send(features)
        b = conn.expect(RE_BIND)
        resource = (b.group(2) or b"res").decode()
        conn.log(f"bind:{resource}")
        if self.bind_error or "xmpp-bind" not in features:
            cond = self.bind_error or "not-allowed"
            conn.send(f"<iq xmlns='jabber:client' type='error' id='{b.group(1).decode()}'><error type='cancel'>"
                      f"<{cond} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
            conn.log("bind-refused")
            self.loop(conn)
            return
        conn.send(f"<iq xmlns='jabber:client' type='result' id='{b.group(1).decode()}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  f"<jid>{user}@{DOMAIN}/{resource}</jid></bind></iq>")
        if "xmpp-session'/>" in features:  # <session/> required: wait for it (and the presence, any order)
            need = {"session", "presence"}
            while need:
                m = conn.expect(RE_SESSION_OR_PRESENCE)
                if m.group(1):
                    conn.log("session")
                    conn.send(f"<iq xmlns='jabber:client' type='result' id='{m.group(1).decode()}'/>")
                    need.discard("session")
                else:
                    conn.log("presence")
                    need.discard("presence")
        else:
            conn.expect(RE_PRESENCE)
            conn.log("presence")
        if self.after_login is not None:
            self.after_login(conn)
            return
        self.loop(conn)

    def loop(self, conn: FakeConn) -> None:
        while True:
            m = conn.expect(RE_ANY, timeout=10)
            if m.group(1):
                conn.log("client-close")
                conn.send(WS_CLOSE if self.ws else "</stream:stream>")
                if self.ws:
                    conn.sock.sendall(conn.wsc.send(CloseConnection(code=1000)))
                return
            if m.group(2):
                conn.log("ping")
                conn.send(f"<iq xmlns='jabber:client' type='result' id='{m.group(2).decode()}' from='{DOMAIN}'/>")
            elif m.group(3):
                conn.log("unavailable")
            else:
                conn.log("pong")


class RecSink:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def login_answered(self, reply: Any, user_id: str) -> None:
        self.calls.append(("login_answered", reply.outcome, reply.code, reply.desc, user_id))

    def kicked(self, session_id: Any, reason: str, by: Any, at_ns: int) -> None:
        self.calls.append(("kicked", session_id, reason, by))

    def credential_expired(self, session_id: Any, at_ns: int) -> None:
        self.calls.append(("credential_expired", session_id))

    def lost(self, reason: str, at_ns: int) -> None:
        self.calls.append(("lost", reason))

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def wait_for(self, name: str, timeout: float = 3.0) -> tuple:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for c in self.calls:
                if c[0] == name:
                    return c
            gevent.sleep(0.01)
        raise AssertionError(f"no {name} call in {self.calls}")


@pytest.fixture
def make():
    servers: list[FakeXmpp] = []
    drivers: list[XmppDriver] = []

    def _make(mechanism: str = "PLAIN", driver_kw: dict | None = None,
              **server_kw: Any) -> tuple[FakeXmpp, XmppDriver, RecSink]:
        srv = FakeXmpp(**server_kw)
        servers.append(srv)
        sink = RecSink()
        drv = XmppDriver(host="127.0.0.1", port=srv.port, domain=DOMAIN, sink=sink, mechanism=mechanism,
                         connect_timeout=3, max_stanza_bytes=8192, **(driver_kw or {}))
        drivers.append(drv)
        return srv, drv, sink

    yield _make
    for d in drivers:
        d.close()
    for s in servers:
        s.stop()


def _connect(drv: XmppDriver) -> None:
    assert drv.connect(time.monotonic() + 3) is None
    assert drv.connected


def test_login_plain_ok_then_logout(make):
    srv, drv, sink = make("PLAIN")
    _connect(drv)
    r = drv.login("alice", USERS["alice"], "Android", "inst1", 3)
    assert (r.outcome, r.code) == ("ok", 0), r
    assert r.session_id == "s1b:alice@localhost/inst1"
    assert r.data["jid"] == "alice@localhost/inst1"
    assert sink.calls[0] == ("login_answered", "ok", 0, "ok", "alice")
    assert drv.describe()["mechanism"] == "PLAIN"
    hb = drv.heartbeat(2)
    assert (hb.outcome, hb.code, hb.session_id) == ("ok", 0, r.session_id)
    out = drv.logout(2)
    assert (out.outcome, out.code, out.session_id) == ("ok", 0, r.session_id)
    assert not drv.connected
    gevent.sleep(0.05)
    assert srv.what()[:6] == ["1:header", "1:auth:alice", "1:restart", "1:bind:inst1", "1:presence", "1:ping"]
    assert "1:unavailable" in srv.what() and "1:client-close" in srv.what()
    assert "lost" not in sink.names()
    again = drv.logout(1)
    assert (again.outcome, again.code) == ("fail", protocol.ERR_SDK_NOT_LOGGED_IN)


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_login_scram_ok(make, mech):
    srv, drv, sink = make(mech)
    _connect(drv)
    r = drv.login("bob", USERS["bob"], "iOS", "dev-2", 3)
    assert (r.outcome, r.code) == ("ok", 0), r
    assert f"1:auth:bob:{mech}" in srv.what()


def test_auto_picks_best_scram(make):
    srv, drv, _sink = make("auto", mechs=("PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"))
    _connect(drv)
    assert drv.login("bob", USERS["bob"], "iOS", "d", 3).outcome == "ok"
    assert drv.describe()["mechanism"] == "SCRAM-SHA-256"


def test_scram_bad_server_signature_is_a_failure(make):
    _srv, drv, sink = make("SCRAM-SHA-256", bad_server_sig=True)
    _connect(drv)
    r = drv.login("bob", USERS["bob"], "iOS", "d", 3)
    assert (r.outcome, r.desc) == ("fail", "scram-server-signature-mismatch")
    assert not drv.connected  # the stream the server thinks is authenticated is abandoned
    assert "lost" not in sink.names()


@pytest.mark.parametrize("mech", ["PLAIN", "SCRAM-SHA-256"])
def test_not_authorized_maps_to_70009(make, mech):
    _srv, drv, sink = make(mech)
    _connect(drv)
    r = drv.login("alice", "wrong", "Android", "i", 3)
    assert (r.outcome, r.code, r.desc) == ("fail", 70009, "not-authorized")
    assert sink.calls == [("login_answered", "fail", 70009, "not-authorized", "alice")]
    # the stream survives a SASL failure: a retry on it works
    ok = drv.login("alice", USERS["alice"], "Android", "i", 3)
    assert ok.outcome == "ok", ok
    assert ok.session_id.startswith("s1b:")


def test_expired_jwt_refused_locally_without_bytes(make):
    srv, drv, sink = make("PLAIN")
    _connect(drv)
    token = make_token(b"k" * 32, "alice@localhost", exp=time.time() - 5)
    r = drv.login("alice", token, "Android", "i", 3)
    assert (r.outcome, r.code) == ("fail", protocol.ERR_USER_SIG_EXPIRED)
    assert r.desc == "token expired before sending"
    gevent.sleep(0.05)
    assert srv.what() == ["1:header"]
    assert b"<auth" not in srv.conns[0].received
    assert sink.calls == []


def _conflict(text: str) -> Callable[[FakeConn], None]:
    def act(conn: FakeConn) -> None:
        conn.send("<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                  f"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>{text}</text></stream:error></stream:stream>")
        gevent.sleep(0.1)
    return act


@pytest.mark.parametrize("shared,reason", [(False, "multi_device"), (True, "same_instance")])
def test_conflict_is_a_kick(make, shared, reason):
    _srv, drv, sink = make("PLAIN", after_login=_conflict("Replaced by new connection"))
    drv.resource_shared = shared
    _connect(drv)
    r = drv.login("alice", USERS["alice"], "Android", "i", 3)
    assert r.outcome == "ok"
    kick = sink.wait_for("kicked")
    assert kick == ("kicked", r.session_id, reason, {"condition": "conflict", "text": "Replaced by new connection"})
    assert sink.wait_for("lost") == ("lost", "error:conflict")
    assert sink.names() == ["login_answered", "kicked", "lost"]
    assert not drv.connected
    assert drv.logout(1).code == protocol.ERR_SDK_NOT_LOGGED_IN


def test_conflict_with_admin_text_is_rest_kick(make):
    _srv, drv, sink = make("PLAIN", after_login=_conflict("Kicked by admin: maintenance"))
    _connect(drv)
    assert drv.login("alice", USERS["alice"], "Android", "i", 3).outcome == "ok"
    assert sink.wait_for("kicked")[2] == "rest_kick"


def _send_then_wait(data: bytes) -> Callable[[FakeConn], None]:
    def act(conn: FakeConn) -> None:
        conn.send(data)
        try:
            conn.expect(re.compile(rb"</stream:stream>"), timeout=2)
            conn.log("client-close")
        except Closed:
            conn.log("no-close")
    return act


def test_malformed_xml_from_server_is_lost_without_traceback(make, caplog):
    srv, drv, sink = make("PLAIN", after_login=_send_then_wait(b"<message><<< not xml &&&"))
    _connect(drv)
    with caplog.at_level(logging.WARNING):
        assert drv.login("alice", USERS["alice"], "Android", "i", 3).outcome == "ok"
        assert sink.wait_for("lost") == ("lost", "error:xml-not-well-formed")
        gevent.sleep(0.1)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert b"xml-not-well-formed" in srv.conns[0].received  # answered with a stream error
    assert "1:client-close" in srv.what()


def test_stanza_over_limit_is_lost(make):
    big = b"<message to='alice@localhost'><body>" + b"x" * 20000 + b"</body></message>"
    _srv, drv, sink = make("PLAIN", after_login=_send_then_wait(big))
    _connect(drv)
    assert drv.login("alice", USERS["alice"], "Android", "i", 3).outcome == "ok"
    assert sink.wait_for("lost") == ("lost", "error:stanza-too-big")


def test_doctype_from_server_is_refused(make):
    _srv, drv, sink = make("PLAIN", after_login=_send_then_wait(b"<!DOCTYPE x [<!ENTITY a 'aaaa'>]>"))
    _connect(drv)
    assert drv.login("alice", USERS["alice"], "Android", "i", 3).outcome == "ok"
    assert sink.wait_for("lost") == ("lost", "error:restricted-xml")


def test_silent_server_login_times_out(make):
    srv, drv, sink = make("PLAIN", silent_auth=True)
    _connect(drv)
    t0 = time.monotonic()
    r = drv.login("alice", USERS["alice"], "Android", "i", 0.3)
    assert (r.outcome, r.code, r.desc) == ("info", -1, "timeout after 0.3 s")
    assert time.monotonic() - t0 < 1.5
    assert sink.calls == []
    assert not drv.connected  # no late session behind the SDK's back
    gevent.sleep(0.1)
    assert "1:client-close" in srv.what()


def test_silent_server_heartbeat_times_out(make):
    def mute(conn: FakeConn) -> None:
        gevent.sleep(3)
    _srv, drv, sink = make("PLAIN", after_login=mute)
    _connect(drv)
    assert drv.login("alice", USERS["alice"], "Android", "i", 3).outcome == "ok"
    hb = drv.heartbeat(0.2)
    assert (hb.outcome, hb.code, hb.desc) == ("info", -1, "timeout after 0.2 s")
    assert drv.connected


def test_half_closed_stream_is_lost_closed_by_server(make):
    def half(conn: FakeConn) -> None:
        conn.sock.shutdown(stdsocket.SHUT_WR)
        gevent.sleep(1)
    _srv, drv, sink = make("PLAIN", after_login=half)
    _connect(drv)
    assert drv.login("alice", USERS["alice"], "Android", "i", 3).outcome == "ok"
    assert sink.wait_for("lost") == ("lost", "closed_by_server")
    assert not drv.connected


def test_reset_is_lost_econnreset(make):
    def rst(conn: FakeConn) -> None:
        conn.sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.sock.close()
    _srv, drv, sink = make("PLAIN", after_login=rst)
    _connect(drv)
    assert drv.login("alice", USERS["alice"], "Android", "i", 3).outcome == "ok"
    assert sink.wait_for("lost") == ("lost", "error:ECONNRESET")


def test_server_ping_is_answered(make):
    def pinger(conn: FakeConn) -> None:
        conn.send(f"<iq type='get' id='srv1' from='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
        m = conn.expect(re.compile(rb"<iq[^>]*type='result'[^>]*id='srv1'[^>]*/>"), timeout=2)
        conn.log("pong")
        conn.server.loop(conn)
    srv, drv, sink = make("PLAIN", after_login=pinger)
    _connect(drv)
    assert drv.login("alice", USERS["alice"], "Android", "i", 3).outcome == "ok"
    end = time.monotonic() + 2
    while "1:pong" not in srv.what() and time.monotonic() < end:
        gevent.sleep(0.01)
    assert "1:pong" in srv.what()


def test_account_switch_closes_first_stream_before_second_auth(make):
    srv, drv, sink = make("PLAIN")
    _connect(drv)
    a = drv.login("alice", USERS["alice"], "Android", "i", 3)
    b = drv.login("bob", USERS["bob"], "Android", "i", 3)
    assert a.outcome == b.outcome == "ok"
    assert a.session_id != b.session_id and b.session_id == "s2b:bob@localhost/i"
    assert drv.connected
    ev = srv.what()
    assert ev.index("1:client-close") < ev.index("2:auth:bob"), ev
    assert "1:unavailable" in ev
    assert "lost" not in sink.names()
    assert [c[4] for c in sink.calls] == ["alice", "bob"]


def test_login_reconnects_after_logout(make):
    srv, drv, _sink = make("PLAIN")
    _connect(drv)
    assert drv.login("alice", USERS["alice"], "Android", "i", 3).outcome == "ok"
    assert drv.logout(2).outcome == "ok"
    r = drv.login("alice", USERS["alice"], "Android", "i", 3)
    assert r.outcome == "ok" and r.session_id.startswith("s2b:")


def test_login_before_connect_is_not_connected(make):
    _srv, drv, _sink = make("PLAIN")
    r = drv.login("alice", USERS["alice"], "Android", "i", 1)
    assert (r.outcome, r.code, r.desc) == ("fail", -1, "not connected")
    assert drv.heartbeat(1).desc == "not connected"
    assert drv.status(1) is None


def test_connect_refused_and_close_is_prompt(make):
    sink = RecSink()
    s = gsocket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    drv = XmppDriver(host="127.0.0.1", port=port, domain=DOMAIN, sink=sink)
    verdict = drv.connect(time.monotonic() + 1)
    assert verdict is not None and verdict[0] == "fail"
    _srv, drv2, _ = make("PLAIN")
    _connect(drv2)
    t0 = time.monotonic()
    drv2.close()
    assert time.monotonic() - t0 < 0.1
    assert not drv2.connected
    assert drv2.connect(time.monotonic() + 2) is None


@pytest.fixture(scope="module")
def tls_server_context(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    key, cert = d / "key.pem", d / "cert.pem"
    import subprocess
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
                   check=True, capture_output=True, timeout=30)
    ctx = gssl.SSLContext(gssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def test_starttls_when_required(make, tls_server_context):
    srv, drv, sink = make("SCRAM-SHA-1", tls_context=tls_server_context)
    _connect(drv)
    assert drv.describe()["tls"] is True
    r = drv.login("alice", USERS["alice"], "Android", "i", 3)
    assert r.outcome == "ok", r
    assert r.session_id == "s1b:alice@localhost/i"
    assert drv.heartbeat(2).outcome == "ok"
    assert drv.logout(2).outcome == "ok"
    assert srv.what()[:3] == ["1:header", "1:tls", "1:auth:alice:SCRAM-SHA-1"]


def test_tls_never_refuses_a_server_that_requires_it(make, tls_server_context):
    _srv, drv, _sink = make("PLAIN", tls_context=tls_server_context, driver_kw={"tls": "never"})
    # tls='never' does not negotiate: the server offers no mechanism before TLS, so the login fails locally
    _connect(drv)
    r = drv.login("alice", USERS["alice"], "Android", "i", 1)
    assert (r.outcome, r.desc) == ("fail", "invalid-mechanism")


def test_websocket_transport(make):
    srv, drv, sink = make("auto", ws=True, driver_kw={"transport": "ws", "ws_path": "/xmpp-websocket"})
    _connect(drv)
    assert srv.subprotocols == ["xmpp"]
    r = drv.login("bob", USERS["bob"], "Web", "web-1", 3)
    assert r.outcome == "ok", r
    assert r.session_id == "s1b:bob@localhost/web-1"
    assert drv.describe()["mechanism"] == "SCRAM-SHA-256"
    assert drv.heartbeat(2).outcome == "ok"
    assert drv.logout(2).outcome == "ok"
    frames = srv.conns[0].frames
    assert frames[0] == "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>"
    assert all(f.count("<") >= 1 for f in frames)
    assert "<presence xmlns='jabber:client'/>" in frames  # one element per frame, with jabber:client
    assert frames[-1] == "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"
    assert "lost" not in sink.names()


def test_websocket_server_close_is_lost(make):
    def bye(conn: FakeConn) -> None:
        conn.send(WS_CLOSE)
        conn.sock.sendall(conn.wsc.send(CloseConnection(code=1001)))
        gevent.sleep(0.2)
    _srv, drv, sink = make("PLAIN", ws=True, after_login=bye, driver_kw={"transport": "ws"})
    _connect(drv)
    assert drv.login("bob", USERS["bob"], "Web", "w", 3).outcome == "ok"
    assert sink.wait_for("lost") == ("lost", "closed_by_server")


def test_stream_error_during_auth_fails_the_login(make):
    """ejabberd's mod_fail2ban answers a banned address with a policy-violation stream error."""
    srv = FakeXmpp()
    def banned(sock: Any, _addr: Any) -> None:
        conn = FakeConn(sock, srv, 1)
        try:
            conn.expect(RE_HEADER)
            conn.send(HEADER.format(sid="ban") + FEATURES_AUTH.format(mechs="<mechanism>PLAIN</mechanism>"))
            conn.expect(RE_AUTH)
            conn.send("<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns="
                      "'urn:ietf:params:xml:ns:xmpp-streams'>Too many (20) failed authentications</text>"
                      "</stream:error></stream:stream>")
            gevent.sleep(0.2)
        except (Closed, OSError):
            pass
        finally:
            sock.close()
    srv.server.stop()
    server = StreamServer(("127.0.0.1", 0), banned)
    server.start()
    try:
        sink = RecSink()
        drv = XmppDriver(host="127.0.0.1", port=server.server_port, domain=DOMAIN, sink=sink, mechanism="PLAIN")
        _connect(drv)
        r = drv.login("alice", USERS["alice"], "Android", "i", 3)
        assert (r.outcome, r.code, r.desc) == ("fail", protocol.ERR_SVR_ACCOUNT_FREQ_LIMIT, "policy-violation")
        assert sink.wait_for("lost") == ("lost", "error:policy-violation")
        assert sink.names() == ["login_answered", "lost"]
        drv.close()
    finally:
        server.stop(timeout=1)


def test_connection_lost_during_login_is_info(make):
    srv = FakeXmpp()
    def drop(sock: Any, _addr: Any) -> None:
        conn = FakeConn(sock, srv, 1)
        try:
            conn.expect(RE_HEADER)
            conn.send(HEADER.format(sid="x") + FEATURES_AUTH.format(mechs="<mechanism>PLAIN</mechanism>"))
            conn.expect(RE_AUTH)
        except (Closed, OSError):
            pass
        finally:
            sock.close()
    srv.server.stop()
    server = StreamServer(("127.0.0.1", 0), drop)
    server.start()
    try:
        sink = RecSink()
        drv = XmppDriver(host="127.0.0.1", port=server.server_port, domain=DOMAIN, sink=sink, mechanism="PLAIN")
        _connect(drv)
        r = drv.login("alice", USERS["alice"], "Android", "i", 3)
        assert (r.outcome, r.code) == ("info", -1) and r.desc.startswith("connection lost"), r
        assert sink.names() == ["lost"]
    finally:
        server.stop(timeout=1)


def _scripted(script: Callable[[FakeConn], None]) -> tuple[StreamServer, FakeXmpp]:
    """A server running ``script`` per connection (exceptions end the connection quietly)."""
    holder = FakeXmpp()
    holder.server.stop()

    def handle(sock: Any, _addr: Any) -> None:
        conn = FakeConn(sock, holder, len(holder.conns) + 1)
        holder.conns.append(conn)
        try:
            script(conn)
        except (Closed, OSError):
            pass
        finally:
            sock.close()
    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    return server, holder


def test_garbage_instead_of_stream_header_fails_connect():
    def script(conn: FakeConn) -> None:
        conn.expect(RE_HEADER)
        conn.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        gevent.sleep(0.3)
    server, _ = _scripted(script)
    try:
        sink = RecSink()
        drv = XmppDriver(host="127.0.0.1", port=server.server_port, domain=DOMAIN, sink=sink)
        verdict = drv.connect(time.monotonic() + 2)
        assert verdict == ("fail", "stream: xml-not-well-formed")
        assert not drv.connected and sink.calls == []
    finally:
        server.stop(timeout=1)


def test_silent_server_connect_times_out():
    def script(conn: FakeConn) -> None:
        conn.expect(RE_HEADER)
        gevent.sleep(2)
    server, _ = _scripted(script)
    try:
        drv = XmppDriver(host="127.0.0.1", port=server.server_port, domain=DOMAIN, sink=RecSink())
        t0 = time.monotonic()
        verdict = drv.connect(time.monotonic() + 0.3)
        assert verdict is not None and verdict[0] == "info", verdict
        assert time.monotonic() - t0 < 1.5
    finally:
        server.stop(timeout=1)


def test_garbage_during_auth_loses_the_login():
    def script(conn: FakeConn) -> None:
        conn.expect(RE_HEADER)
        conn.send(HEADER.format(sid="g") + FEATURES_AUTH.format(mechs="<mechanism>PLAIN</mechanism>"))
        conn.expect(RE_AUTH)
        conn.send(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%%%</success>")
        gevent.sleep(0.5)
    server, _ = _scripted(script)
    try:
        sink = RecSink()
        drv = XmppDriver(host="127.0.0.1", port=server.server_port, domain=DOMAIN, sink=sink, mechanism="PLAIN")
        _connect(drv)
        r = drv.login("alice", USERS["alice"], "Android", "i", 2)
        assert (r.outcome, r.code) == ("info", -1) and "xml-not-well-formed" in r.desc, r
        assert sink.names() == ["lost"] and sink.calls[0][1] == "error:xml-not-well-formed"
    finally:
        server.stop(timeout=1)


def test_server_iq_get_is_answered_with_service_unavailable(make):
    def asker(conn: FakeConn) -> None:
        conn.send("<iq type='get' id='ver1' from='localhost'><query xmlns='jabber:iq:version'/></iq>")
        conn.expect(re.compile(rb"<iq[^>]*type='error'[^>]*id='ver1'[^>]*><error type='cancel'>"
                               rb"<service-unavailable"), timeout=2)
        conn.log("answered")
        conn.server.loop(conn)
    srv, drv, _sink = make("PLAIN", after_login=asker)
    _connect(drv)
    assert drv.login("alice", USERS["alice"], "Android", "i", 3).outcome == "ok"
    end = time.monotonic() + 2
    while "1:answered" not in srv.what() and time.monotonic() < end:
        gevent.sleep(0.01)
    assert "1:answered" in srv.what()


def test_websocket_conflict_is_a_kick(make):
    def kick(conn: FakeConn) -> None:
        conn.send("<stream:error xmlns:stream='http://etherx.jabber.org/streams'>"
                  "<conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>")
        conn.send(WS_CLOSE)
        gevent.sleep(0.2)
    _srv, drv, sink = make("PLAIN", ws=True, after_login=kick, driver_kw={"transport": "ws"})
    _connect(drv)
    r = drv.login("bob", USERS["bob"], "Web", "w", 3)
    assert r.outcome == "ok"
    assert sink.wait_for("kicked") == ("kicked", r.session_id, "multi_device", {"condition": "conflict", "text": None})
    assert sink.wait_for("lost") == ("lost", "error:conflict")


def test_driver_matches_the_sdk_interface():
    """Every member of harness.sdk.driver.Driver exists with the same parameters."""
    import inspect

    from harness.sdk.driver import Driver
    assert XmppDriver.protocol == "xmpp" and XmppDriver.capabilities == frozenset()
    for name in ("connect", "login", "logout", "heartbeat", "status", "close", "describe"):
        want = list(inspect.signature(getattr(Driver, name)).parameters)
        got = list(inspect.signature(getattr(XmppDriver, name)).parameters)
        assert got == want, name
    assert isinstance(XmppDriver.connected, property)


def test_websocket_handshake_rejected():
    def script(conn: FakeConn) -> None:
        conn.sock.recv(65536)
        conn.send(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        gevent.sleep(0.2)
    server, _ = _scripted(script)
    try:
        drv = XmppDriver(host="127.0.0.1", port=server.server_port, domain=DOMAIN, sink=RecSink(), transport="ws")
        assert drv.connect(time.monotonic() + 2) == ("fail", "handshake rejected: HTTP 404")
    finally:
        server.stop(timeout=1)


def test_heartbeat_during_a_login_waits_until_bound(make):
    """A heartbeat while a login owns the stream is not sent before bind (RFC 6120; ejabberd
    answers a ping between <success/> and the restart with a stream error: found under load)."""
    srv, drv, _sink = make("PLAIN", success_delay_s=0.3)
    _connect(drv)
    g = gevent.spawn(drv.login, "alice", USERS["alice"], "Android", "i", 3)
    gevent.sleep(0.1)                       # the login is waiting for <success/>
    hb = drv.heartbeat(3)
    res = g.get(timeout=5)
    assert res.outcome == "ok" and hb.outcome == "ok", (res, hb)
    seen = srv.what()
    assert "ping" in [w.split(":")[1] for w in seen], seen
    assert seen.index("1:presence") < seen.index("1:ping"), seen   # the ping came after the login


def test_heartbeat_before_any_login_is_not_sent(make):
    srv, drv, _sink = make("PLAIN")
    _connect(drv)
    hb = drv.heartbeat(1)
    assert (hb.outcome, hb.code) == ("fail", 6014), hb
    gevent.sleep(0.2)
    assert "1:ping" not in srv.what()


# ---------------------------------------------------------------------------- pipelining and its fallbacks

def _login_ok(drv: XmppDriver, user: str = "alice", res: str = "i") -> Any:
    _connect(drv)
    r = drv.login(user, USERS[user], "Android", res, 3)
    assert (r.outcome, r.code) == ("ok", 0), r
    return r


def _after_bind(srv: FakeXmpp, n: int) -> list[str]:
    """What connection ``n`` of the fake saw after its bind (session / presence, in order)."""
    return [w for w in srv.what() if w.startswith(f"{n}:") and w.split(":")[1] in ("session", "presence")]


def test_pipelined_header_bind_presence_in_one_write(make):
    srv, drv, sink = make("PLAIN")
    _login_ok(drv)  # first login to this target: header + bind together, the presence after the result
    drv.close()
    _login_ok(drv)  # the hint says no session needed: the presence rides with the bind
    gevent.sleep(0.05)
    second = srv.conns[1].received
    after_success = second[second.index(b"</auth>"):]
    assert re.search(rb"<stream:stream[^>]*>\s*<iq[^>]*><bind[^>]*>.*</iq>\s*<presence[^>]*/>", after_success), after_success
    assert [c[:3] for c in sink.calls] == [("login_answered", "ok", 0)] * 2


def test_session_required_gets_session_then_presence(make):
    srv, drv, sink = make("PLAIN", restart_features=FEATURES_BIND_SESSION)
    r = _login_ok(drv)
    assert r.session_id == "s1b:alice@localhost/i"
    drv.close()
    _login_ok(drv)  # the hint learnt that this target needs <session/>: presence not pipelined
    gevent.sleep(0.05)
    assert _after_bind(srv, 1) == ["1:session", "1:presence"]
    assert _after_bind(srv, 2) == ["2:session", "2:presence"]
    assert "lost" not in sink.names()


def test_features_changed_to_session_required_still_do_the_session(make):
    srv, drv, sink = make("PLAIN")
    _login_ok(drv)
    drv.close()
    srv.restart_features = FEATURES_BIND_SESSION  # the hint is now stale: the presence is already out
    _login_ok(drv)
    drv.close()
    _login_ok(drv)  # hint corrected
    gevent.sleep(0.05)
    assert _after_bind(srv, 2) == ["2:presence", "2:session"]
    assert _after_bind(srv, 3) == ["3:session", "3:presence"]


def test_bind_not_offered_fails_the_login(make):
    srv, drv, sink = make("PLAIN", restart_features=FEATURES_NO_BIND)
    _connect(drv)
    r = drv.login("alice", USERS["alice"], "Android", "i", 3)
    assert (r.outcome, r.code, r.desc) == ("fail", protocol.ERR_SVR_ACCOUNT_INTERNAL_ERROR, "bind-not-offered")
    assert sink.calls == [("login_answered", "fail", protocol.ERR_SVR_ACCOUNT_INTERNAL_ERROR, "bind-not-offered", "alice")]
    assert drv.session_id is None
    # the next login on a target without bind sends no presence ahead either
    drv.close()
    r2 = drv.login("alice", USERS["alice"], "Android", "i", 3)
    assert r2.desc == "bind-not-offered"
    gevent.sleep(0.05)
    assert b"<presence" not in srv.conns[1].received


def test_pipelined_bind_error_maps_like_a_bind_error(make):
    _srv, drv, sink = make("PLAIN", bind_error="resource-constraint")
    _connect(drv)
    r = drv.login("alice", USERS["alice"], "Android", "i", 3)
    assert (r.outcome, r.code, r.desc) == ("fail", protocol.ERR_SVR_ACCOUNT_FREQ_LIMIT, "resource-constraint")
    assert drv.session_id is None


@pytest.mark.parametrize("features", [FEATURES_BIND, FEATURES_BIND_SESSION])
def test_pipeline_off_waits_for_each_step(make, features):
    srv, drv, _sink = make("PLAIN", driver_kw={"pipeline": False}, restart_features=features)
    for _ in range(2):
        _login_ok(drv)
        drv.close()
    gevent.sleep(0.05)
    for conn in srv.conns:
        after = conn.received[conn.received.index(b"</auth>"):]
        # the header went alone: the bind came in a later read, after the features
        assert re.search(rb"<stream:stream[^>]*>$", after[:after.index(b"<iq")]), after
    expected = ["session", "presence"] if features == FEATURES_BIND_SESSION else ["presence"]
    assert [w.split(":")[1] for w in _after_bind(srv, 2)] == expected


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_scram_pipelines_after_the_signature_verified(make, mech):
    srv, drv, _sink = make(mech)
    _login_ok(drv, "bob")
    drv.close()
    _login_ok(drv, "bob")
    gevent.sleep(0.05)
    second = srv.conns[1].received
    # the header, bind and presence went together (after the success, whose signature verified)
    assert re.search(rb"<stream:stream[^>]*>\s*<iq[^>]*><bind[^>]*>.*</iq>\s*<presence", second[second.index(b"</response>"):])


def test_websocket_pipelines_as_separate_frames(make):
    srv, drv, _sink = make("PLAIN", ws=True, driver_kw={"transport": "ws"})
    _login_ok(drv)
    drv.close()
    _login_ok(drv)
    gevent.sleep(0.05)
    frames = srv.conns[1].frames
    i = next(k for k, f in enumerate(frames) if f.startswith("<open") and k > 0)
    assert frames[i + 1].startswith("<iq") and "<bind" in frames[i + 1]
    assert frames[i + 2].startswith("<presence")


# ---------------------------------------------------------------------------- connect without an event-loop trip

def test_refused_connect_reads_as_before():
    s = gsocket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    drv = XmppDriver(host="127.0.0.1", port=port, domain=DOMAIN, sink=RecSink())
    assert drv.connect(time.monotonic() + 1) == ("fail", "ConnectionRefusedError: Connection refused")


def test_fast_connect_falls_back_while_in_progress():
    import errno

    from harness.drivers.xmpp import driver as D

    class Raw:
        def __init__(self, answers):
            self.answers = list(answers)

        def connect_ex(self, _addr):
            return self.answers.pop(0)

    class Sock:
        def __init__(self, answers):
            self._sock = Raw(answers)

    assert D._fast_connect(Sock([errno.EINPROGRESS, errno.EALREADY]), ("10.0.0.1", 5222)) is False  # remote: wait
    assert D._fast_connect(Sock([errno.EINPROGRESS, 0]), ("127.0.0.1", 5222)) is True
    assert D._fast_connect(Sock([errno.EINPROGRESS, errno.EISCONN]), ("127.0.0.1", 5222)) is True
    with pytest.raises(ConnectionRefusedError):
        D._fast_connect(Sock([errno.EINPROGRESS, errno.ECONNREFUSED]), ("127.0.0.1", 5222))
    with pytest.raises(OSError):
        D._fast_connect(Sock([errno.ENETUNREACH]), ("127.0.0.1", 5222))


def test_login_answer_wakes_times_out_and_survives_a_killed_waiter():
    from harness.drivers.xmpp.driver import _Answer

    a = _Answer()
    a.set("early")
    a.wait(5)  # already set: no wait at all
    assert a.ready() and a.value == "early"
    b = _Answer()
    gevent.spawn_later(0.01, b.set, "late")
    t0 = time.monotonic()
    b.wait(5)
    assert b.value == "late" and time.monotonic() - t0 < 1
    c = _Answer()
    t0 = time.monotonic()
    c.wait(0.05)
    assert not c.ready() and 0.04 <= time.monotonic() - t0 < 1
    d = _Answer()
    g = gevent.spawn(d.wait, 5)
    gevent.sleep(0.01)
    g.kill()
    d.set("after")  # no waiter left: nothing to wake, no error
    gevent.sleep(0.01)
    assert d.value == "after" and g.dead
